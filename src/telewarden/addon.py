"""The mitmproxy addon: judge telemetry as it leaves, and forward, scrub or block it.

Load it with `mitmdump -s <path to this file>` or through `telewarden run`. Written in the shape of
mitmproxy's own addons: options declared in `load`, parsed once in `configure` (a bad value raises
OptionsError and the last good configuration stays in force), small hooks.

mitmproxy forwards a flow whose hook raised, so every hook here catches everything and, in the
enforcing modes, blocks what it could not judge (fail closed). Audit mode is the one fail-open
mode: it exists to observe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.utils import human

from telewarden.audit import AuditError, AuditTrail
from telewarden.cli import parse_waivers
from telewarden.engine import DEFAULT_MAX_BODY, UNVERIFIABLE, Engine, Limits
from telewarden.mitmexchange import apply_to_request, candidate_hosts, http_exchange, websocket_exchange
from telewarden.model import Decision, Exchange, Finding, Mode, Severity, Transport, Verdict
from telewarden.packs import PackError, load_packs
from telewarden.render import record

log = logging.getLogger("telewarden")

_LAST_VERDICTS = 20
_MARKS = {Decision.BLOCKED: ":no_entry:", Decision.SCRUBBED: ":broom:", Decision.FORWARDED: ":warning:"}
_OPTIONS = ("telewarden_mode", "telewarden_rules", "telewarden_bundled", "telewarden_audit",
            "telewarden_max_body", "telewarden_allow", "telewarden_block_status",
            "telewarden_audit_max_bytes")


class Telewarden:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.trail: AuditTrail | None = None
        self.mode = Mode.SCRUB
        self.block_status = 403
        self.stream_limit: int | None = None  # stream_large_bodies, parsed once in configure
        self._watched: dict[Path, tuple[int, int]] = {}  # pack and schema files -> (mtime, size)
        self._watcher: asyncio.Task | None = None

    # -- configuration ----------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        loader.add_option("telewarden_mode", str, "scrub",
                          "audit: forward and record; scrub: repair what breaks a rule, block the rest; "
                          "block: never forward a message that breaks a rule.",
                          choices=[m.value for m in Mode])
        loader.add_option("telewarden_rules", Sequence[str], [],
                          "Rule pack files or folders; a pack replaces the bundled pack with the same id.")
        loader.add_option("telewarden_bundled", bool, True, "Load the bundled rule packs.")
        loader.add_option("telewarden_audit", str, "telewarden-audit",
                          "Audit folder (audit.log, audit.jsonl). It must be writable.")
        loader.add_option("telewarden_audit_max_bytes", int, 64 << 20,
                          "Rotate audit.jsonl past this size; the hash chain continues across files.")
        loader.add_option("telewarden_max_body", int, DEFAULT_MAX_BODY,
                          "Largest telemetry body (decoded bytes) inspected; larger bodies are not forwarded "
                          "in scrub/block mode.")
        loader.add_option("telewarden_allow", Sequence[str], [],
                          "Waive a rule: RULE_ID=REASON (glob allowed). Waived findings are recorded, not enforced.")
        loader.add_option("telewarden_block_status", int, 403,
                          "HTTP status of the response a blocked request gets.")
        loader.add_option("telewarden_ws_keep", int, 0,
                          "Keep only the last N messages of a WebSocket flow in memory once judged (0: keep all, "
                          "as mitmproxy does). mitmproxy holds every frame of a live connection; a long console "
                          "session then grows without bound. The audit trail keeps every frame's verdict.")
        loader.add_option("telewarden_reload_ms", int, 2000,
                          "Milliseconds between checks of the rule pack and schema files for changes (0: never). "
                          "A change reloads the packs; a broken pack keeps the last good ones in force.")

    def configure(self, updated: set[str]) -> None:
        if "stream_large_bodies" in updated:
            self.stream_limit = human.parse_size(ctx.options.stream_large_bodies)
        if not updated.intersection(_OPTIONS):
            return
        self._configure(updated)

    def _configure(self, updated: set[str]) -> None:
        opts = ctx.options
        try:
            mode = Mode(opts.telewarden_mode)
        except ValueError:
            raise exceptions.OptionsError(f"telewarden_mode must be audit, scrub or block, not {opts.telewarden_mode!r}")
        if opts.telewarden_max_body <= 0:
            raise exceptions.OptionsError("telewarden_max_body must be positive")
        if not 200 <= opts.telewarden_block_status <= 599:
            raise exceptions.OptionsError("telewarden_block_status must be an HTTP status (200-599)")
        try:
            waivers = parse_waivers(list(opts.telewarden_allow))
            packs = load_packs([Path(p) for p in opts.telewarden_rules], include_bundled=opts.telewarden_bundled)
        except (ValueError, PackError) as e:
            raise exceptions.OptionsError(f"telewarden: {e}") from None
        if not packs:
            raise exceptions.OptionsError("telewarden: no rule packs loaded")
        trail = self.trail
        if trail is None or "telewarden_audit" in updated or "telewarden_audit_max_bytes" in updated:
            try:
                trail = AuditTrail(Path(opts.telewarden_audit).expanduser(), max_bytes=opts.telewarden_audit_max_bytes)
            except AuditError as e:
                raise exceptions.OptionsError(f"telewarden: {e}") from None
        engine = Engine(packs, digest_key=trail.key, limits=Limits(max_body=opts.telewarden_max_body),
                        waivers=waivers)
        # Only now, with everything built, does the new configuration take over.
        if self.trail is not None and trail is not self.trail:
            self.trail.close()
        self.engine, self.trail, self.mode = engine, trail, mode
        self.block_status = opts.telewarden_block_status
        self._watched = _stat_all({f for p in packs for f in p.files()})
        log.info(f"telewarden: mode={mode.value}, packs={', '.join(p.id for p in packs)}, audit={trail.folder}")

    def running(self) -> None:
        # An option that mitmproxy could not apply (e.g. a script option given twice) leaves the
        # addon unconfigured without an OptionsError; an error now makes mitmdump exit at startup.
        if self.engine is None:
            log.error("telewarden: not configured (see the option errors above); refusing to run")
        elif self._watcher is None and ctx.options.telewarden_reload_ms > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    @command.command("telewarden.reload")
    def reload(self) -> None:
        """Reload the rule packs now; on an error the last good configuration stays in force."""
        try:
            self._configure({"telewarden_rules"})
            log.info("telewarden: rule packs reloaded")
        except exceptions.OptionsError as e:
            log.error(f"telewarden: reload failed, keeping the last good rule packs: {e}")

    async def _watch(self) -> None:
        """Poll the pack and schema files (off the request path) and reload when one changes."""
        while True:
            await asyncio.sleep(max(ctx.options.telewarden_reload_ms, 200) / 1000)
            try:
                now = _stat_all(set(self._watched))
            except Exception:  # noqa: BLE001 - never let the watcher die
                continue
            if now != self._watched:
                self._watched = now  # a broken edit is reported once, not every interval
                self.reload()

    def done(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self.trail is not None:
            self.trail.close()

    # -- hooks ------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Keep telemetry bodies whole so they can be judged.

        mitmproxy re-enables streaming for a body that outgrows `stream_large_bodies` while it is
        read, and then runs the `request` hook only after the body went upstream. So in the
        enforcing modes a telemetry request whose body may exceed that limit is refused here,
        before anything is sent; audit mode lets it stream and records it as not inspected.
        """
        try:
            if self.engine is None or not self._claimed(flow):
                return
            flow.request.stream = False
            limit = self.stream_limit
            if limit is None or self.mode is Mode.AUDIT:
                return
            length = flow.request.headers.get("content-length")
            if length is None or not length.isdigit() or int(length) > limit:
                ex = http_exchange(flow)
                reason = (f"streamed: the body may exceed stream_large_bodies ({limit} bytes) and would "
                          f"pass the proxy uninspected; refused before sending")
                finding = Finding("telewarden.body.streamed", "body", reason, UNVERIFIABLE, Severity.HIGH)
                verdict = Verdict(ex.id, Decision.BLOCKED, self.mode, findings=[finding], error=reason,
                                  pack=self.engine.claim(ex.hosts).id)
                self._record(verdict, ex, flow)
                self._annotate(flow, verdict)
                flow.kill()
        except Exception as e:  # noqa: BLE001 - fail closed
            if self.mode is not Mode.AUDIT:
                log.error(f"telewarden: requestheaders failed ({type(e).__name__}); refusing the request")
                flow.kill()

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None or not flow.live:
            return
        ex = None
        try:
            ex = http_exchange(flow, self.engine.limits.max_body if self.engine else DEFAULT_MAX_BODY)
            verdict = self._inspect(ex)
            if verdict.decision is Decision.PASSED_THROUGH:
                return
            if verdict.decision is Decision.SCRUBBED and verdict.repaired is not None:
                apply_to_request(flow.request, verdict.repaired)
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict = self._failure(ex, e)
        self._record(verdict, ex, flow)
        if verdict.decision is Decision.BLOCKED:
            self._block_http(flow, verdict)
        self._annotate(flow, verdict)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if not message.from_client:
            self._trim(flow)
            return
        ex = None
        try:
            ex = websocket_exchange(flow, message.content, message.is_text, message.timestamp)
            verdict = self._inspect(ex)
            if verdict.decision is Decision.PASSED_THROUGH:
                self._trim(flow)
                return
            if verdict.decision is Decision.SCRUBBED and verdict.repaired and verdict.repaired.body is not None:
                message.content = verdict.repaired.body
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict = self._failure(ex, e)
        self._record(verdict, ex, flow)
        if verdict.decision is Decision.BLOCKED:
            message.drop()
        self._annotate(flow, verdict)
        self._trim(flow)

    @staticmethod
    def _trim(flow: http.HTTPFlow) -> None:
        # mitmproxy's WebSocket layer relays through its own reference to the message, so dropping
        # older entries (never the current, last one) is safe.
        keep = ctx.options.telewarden_ws_keep
        if keep > 0 and flow.websocket is not None and len(flow.websocket.messages) > keep:
            del flow.websocket.messages[:-keep]

    # -- helpers ----------------------------------------------------------------------------

    def _claimed(self, flow: http.HTTPFlow) -> bool:
        return self.engine is not None and self.engine.claim(candidate_hosts(flow)) is not None

    def _inspect(self, ex: Exchange) -> Verdict:
        if self.engine is None:
            raise RuntimeError("telewarden is not configured")
        return self.engine.inspect(ex, self.mode)

    def _failure(self, ex: Exchange | None, e: BaseException) -> Verdict:
        """An internal error: block in the enforcing modes, forward (loudly) in audit mode."""
        log.error(f"telewarden: internal error while judging a message: {type(e).__name__}", exc_info=True)
        ex_id = ex.id if ex is not None else "?"
        decision = Decision.FORWARDED if self.mode is Mode.AUDIT else Decision.BLOCKED
        reason = f"internal error ({type(e).__name__}); not judged"
        finding = Finding("telewarden.internal-error", "", reason,
                          "telewarden could not judge this message, so it cannot be shown to keep the vendor's promises",
                          Severity.HIGH)
        return Verdict(ex_id, decision, self.mode, findings=[finding], error=reason)

    def _record(self, verdict: Verdict, ex: Exchange | None, flow: http.HTTPFlow) -> None:
        if ex is None:
            # the failure came before an Exchange existed: describe the request as it stands
            ex = Exchange(transport=Transport.HTTP, method=flow.request.method, hosts=(flow.request.pretty_host,),
                          port=flow.request.port, path=flow.request.path.split("?", 1)[0], timestamp=time.time())
        try:
            if self.trail is None:
                raise AuditError("no audit trail configured")
            self.trail.write(record(verdict, ex))
        except Exception as e:  # noqa: BLE001 - an unaudited message must not leave in enforcing modes
            log.error(f"telewarden: AUDIT TRAIL FAILED: {e}")
            if self.mode is not Mode.AUDIT and verdict.decision is not Decision.BLOCKED:
                verdict.decision = Decision.BLOCKED
                verdict.error = f"audit trail unwritable: {e}"
        if verdict.decision is Decision.BLOCKED or verdict.active_findings:
            log.warning(f"telewarden: {verdict.decision.value.upper()} {verdict.pack}/{verdict.kind or verdict.endpoint} "
                        f"{ex.destination} rules={','.join(verdict.rule_ids) or '-'}")

    def _block_http(self, flow: http.HTTPFlow, verdict: Verdict) -> None:
        body = {"telewarden": "blocked", "message": verdict.exchange_id, "rules": verdict.rule_ids}
        if verdict.error:
            body["reason"] = verdict.error
        flow.response = http.Response.make(self.block_status, json.dumps(body).encode(),
                                           {"Content-Type": "application/json", "X-Telewarden": "blocked"})

    @staticmethod
    def _annotate(flow: http.HTTPFlow, verdict: Verdict) -> None:
        """Verdict on the flow for mitmweb users (~meta, ~comment, ~marked) and saved flows.

        Bounded: a WebSocket flow can carry frames for hours, so it keeps counts per decision,
        the set of rules and the last few verdicts, not one entry per frame."""
        meta = flow.metadata.setdefault("telewarden", {"counts": {}, "rules": [], "last": []})
        counts = meta["counts"]
        counts[verdict.decision.value] = counts.get(verdict.decision.value, 0) + 1
        meta["rules"] = sorted(set(meta["rules"]).union(verdict.rule_ids))
        meta["last"] = [*meta["last"][-(_LAST_VERDICTS - 1):],
                        {"decision": verdict.decision.value, "kind": verdict.kind, "rules": verdict.rule_ids,
                         "message": verdict.exchange_id}]
        meta["pack"] = verdict.pack
        worst = next((d for d in (Decision.BLOCKED, Decision.SCRUBBED, Decision.FORWARDED) if counts.get(d.value)),
                     Decision.FORWARDED)
        meta["decision"] = worst.value
        summary = ", ".join(f"{counts[d]} {d}" for d in ("blocked", "scrubbed", "forwarded") if counts.get(d))
        flow.comment = f"telewarden: {worst.value.upper()} ({summary}) {' '.join(meta['rules'])}".rstrip()
        if worst is not Decision.FORWARDED or meta["rules"]:
            flow.marked = _MARKS.get(worst, ":warning:")


def _stat_all(paths: set[Path]) -> dict[Path, tuple[int, int]]:
    out = {}
    for p in paths:
        try:
            st = p.stat()
            out[p] = (st.st_mtime_ns, st.st_size)
        except OSError:
            out[p] = (-1, -1)  # removed: a change too
    return out


addons = [Telewarden()]
