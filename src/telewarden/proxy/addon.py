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
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.utils import human

from telewarden.proxy import contentview
from telewarden.audit.trail import AuditError, AuditTrail
from telewarden.cli import parse_waivers
from telewarden.engine.judge import DEFAULT_MAX_BODY, UNVERIFIABLE, Engine, Limits
from telewarden.proxy.judge_client import JudgePool, Judged
from telewarden.proxy.exchange import apply_to_request, candidate_hosts, http_exchange, websocket_exchange
from telewarden.engine.names import normalize_host
from telewarden.engine.model import Decision, Exchange, Finding, Mode, Severity, Transport, Verdict
from telewarden.engine.packs import PackError, file_stamps, load_packs
from telewarden.audit.render import record
from telewarden.proxy.transport import GUARD_KEY, TransportGuard, install_websocket_guard

log = logging.getLogger("telewarden")

_LAST_VERDICTS = 20
_WORST_MARKS = {"blocked": ":no_entry:", "scrubbed": ":broom:", "forwarded": ":warning:"}
_OPTIONS = ("telewarden_mode", "telewarden_rules", "telewarden_bundled", "telewarden_audit",
            "telewarden_max_body", "telewarden_allow", "telewarden_block_status",
            "telewarden_audit_max_bytes", "telewarden_audit_key", "telewarden_workers",
            "telewarden_worker_timeout_ms")
_RESOLVE_HOSTS, _RESOLVE_ADDRESSES, _RESOLVE_TIMEOUT = 256, 64, 5.0  # bounds of one resolver round
# mitmproxy hands every log record to every addon (~100 us a call on a busy proxy), so judged
# messages are not logged one by one: the trail has each of them, and the log gets a summary line
# every _SUMMARY_S seconds when something was judged, plus the first _BLOCK_LINES blocked messages
# of each such period, one line each (a blocked product notices; its operator should too).
_SUMMARY_S, _BLOCK_LINES = 10.0, 5
_PENDING_HUMAN = 512  # audit.log blocks rendered after the request went on; rendered inline beyond this
_NOT_HTTP = {
    "tcp": "the connection to a claimed destination does not start with an HTTP request (no ALPN, first bytes "
           "not a request line); relayed raw, nothing in it could be judged",
    "udp": "UDP to a claimed destination; relayed raw, nothing in it could be judged",
    "rawquic": "QUIC without HTTP/3 to a claimed destination; relayed raw, nothing in it could be judged",
    "dns": "DNS to a claimed destination's address; relayed raw, nothing in it could be judged",
}


class Telewarden:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.trail: AuditTrail | None = None
        self.mode = Mode.SCRUB
        self.block_status = 403
        self.stream_limit: int | None = None  # stream_large_bodies, parsed once in configure
        self.sink = False  # telewarden_sink, kept in step by configure
        self._watched: dict[Path, tuple[int, int]] = {}  # pack and schema files -> (mtime, size)
        self._watcher: asyncio.Task | None = None
        self._resolver: asyncio.Task | None = None
        # server connection id -> the name the client asked for, before any addon rewrote the
        # address (an upstream rewrite must not make a claimed tunnel look unclaimed)
        self._asked: dict[str, str] = {}
        self._counts: dict[str, int] = {}  # decisions since the last summary line
        self._passed = 0  # messages no pack claimed, since the last summary line
        self._block_lines = 0  # blocked messages logged one by one in this period
        self._summary: asyncio.Task | None = None
        self._flush_scheduled = False
        self.judges: JudgePool | None = None  # telewarden_workers > 0: judged in other processes

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
        loader.add_option("telewarden_audit_key", str, "",
                          "Digest key file (default $XDG_CONFIG_HOME/telewarden/audit.key or "
                          "~/.config/telewarden/audit.key; TELEWARDEN_AUDIT_KEY wins). Must be outside the audit "
                          "folder: whoever holds it can test guesses against the trail's digests.")
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
        loader.add_option("telewarden_sink", bool, False,
                          "Capture without sending: claimed messages are judged and recorded, never sent upstream; "
                          "telewarden answers each itself with the response the pack declares for the endpoint.")
        loader.add_option("telewarden_resolve_s", int, 300,
                          "Seconds between resolutions of the packs' host names (0: never). A connection to one "
                          "of their addresses (or a pack's `addresses:`) is claimed even when it names nothing "
                          "(CONNECT to an IP without SNI, transparent mode). Never resolved per request.")
        loader.add_option("telewarden_workers", int, 0,
                          "Judge claimed messages in this many worker processes (0: in the proxy's own process). "
                          "The proxy's event loop then only hands each message over and awaits its verdict, "
                          "so other cores do the judging; the proxy still writes the audit trail before it "
                          "forwards. A worker that dies or does not answer in time: the message is blocked "
                          "(scrub, block) or forwarded and recorded as not judged (audit).")
        loader.add_option("telewarden_worker_timeout_ms", int, 10000,
                          "Milliseconds a worker may take to answer before it is killed and restarted and the "
                          "messages it holds are treated as not judged.")
        # Scripts load before mitmproxy's NextLayer addon, so the guard that sees its choice is
        # added to the end of the chain; control frames need mitmproxy's WebSocket layer guarded.
        guard = ctx.master.addons.get(TransportGuard.name)
        if guard is None:
            ctx.master.addons.add(TransportGuard(self._transport_decision, self._connection_claimed))
        else:  # the script was reloaded: the guard asks this instance from now on
            guard.decide, guard.claimed = self._transport_decision, self._connection_claimed
        install_websocket_guard(self._control_frame)
        contentview.register(lambda: self.engine, lambda: self.mode)  # mitmweb's `telewarden` view

    def configure(self, updated: set[str]) -> None:
        if "stream_large_bodies" in updated:
            self.stream_limit = human.parse_size(ctx.options.stream_large_bodies)
        if "telewarden_sink" in updated:  # read per message: an attribute, not an options lookup
            self.sink = bool(ctx.options.telewarden_sink)
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
        if not 0 <= opts.telewarden_workers <= 64:
            raise exceptions.OptionsError("telewarden_workers must be between 0 and 64")
        if opts.telewarden_worker_timeout_ms < 100:
            raise exceptions.OptionsError("telewarden_worker_timeout_ms must be at least 100")
        try:
            waivers = parse_waivers(list(opts.telewarden_allow))
            packs = load_packs([Path(p) for p in opts.telewarden_rules], include_bundled=opts.telewarden_bundled)
        except (ValueError, PackError) as e:
            raise exceptions.OptionsError(f"telewarden: {e}") from None
        if not packs:
            raise exceptions.OptionsError("telewarden: no rule packs loaded")
        trail = self.trail
        if trail is None or updated & {"telewarden_audit", "telewarden_audit_max_bytes", "telewarden_audit_key"}:
            key_path = Path(opts.telewarden_audit_key).expanduser() if opts.telewarden_audit_key else None
            try:
                trail = AuditTrail(Path(opts.telewarden_audit).expanduser(), max_bytes=opts.telewarden_audit_max_bytes,
                                   key_path=key_path)
            except AuditError as e:
                raise exceptions.OptionsError(f"telewarden: {e}") from None
        engine = Engine(packs, digest_key=trail.key, limits=Limits(max_body=opts.telewarden_max_body),
                        waivers=waivers)
        if self.engine is not None:
            engine.set_resolved(self.engine.resolved)
        # Only now, with everything built, does the new configuration take over.
        if self.trail is not None and trail is not self.trail:
            self.trail.close()
        self.engine, self.trail, self.mode = engine, trail, mode
        self.block_status = opts.telewarden_block_status
        self._configure_judges(opts, waivers, trail.key)
        self._watched = file_stamps({f for p in packs for f in p.files()})
        log.info(f"telewarden: mode={mode.value}, packs={', '.join(p.id for p in packs)}, audit={trail.folder}")

    def _configure_judges(self, opts: Any, waivers: dict[str, str], key: bytes) -> None:
        """Workers get the same packs (loaded from the same files), key, limits and waivers."""
        count, timeout = opts.telewarden_workers, opts.telewarden_worker_timeout_ms / 1000
        config = {"rules": [str(Path(p).resolve()) for p in opts.telewarden_rules], "bundled": opts.telewarden_bundled,
                  "key": key, "max_body": opts.telewarden_max_body, "waivers": waivers,
                  "resolved": self.engine.resolved if self.engine is not None else {}}
        judges = self.judges
        if judges is not None and (len(judges.workers) != count or judges.timeout != timeout):
            judges.close()
            judges = self.judges = None
        if count == 0:
            return
        if judges is None:
            self.judges = JudgePool(count, config, timeout)
            try:
                self.judges.start()  # a running proxy (reconfigured); else started in running()
            except RuntimeError:  # no event loop yet
                pass
            except OSError as e:  # messages fail closed; a later message tries to start them again
                log.error(f"telewarden: cannot start the judge workers: {e.strerror or e}")
        else:
            judges.configure(config)

    def running(self) -> None:
        # An option that mitmproxy could not apply (e.g. a script option given twice) leaves the
        # addon unconfigured without an OptionsError; an error now makes mitmdump exit at startup.
        if self.engine is None:
            log.error("telewarden: not configured (see the option errors above); refusing to run")
            return
        loop = asyncio.get_running_loop()
        if self._watcher is None and ctx.options.telewarden_reload_ms > 0:
            self._watcher = loop.create_task(self._watch())
        if self._resolver is None and ctx.options.telewarden_resolve_s > 0:
            self._resolver = loop.create_task(self._resolve_forever())
        if self._summary is None:
            self._summary = loop.create_task(self._summarize_forever())
        if self.judges is not None:
            try:
                self.judges.start()
            except OSError as e:  # logged at startup: mitmdump exits rather than run without judges
                log.error(f"telewarden: cannot start the judge workers: {e.strerror or e}")
        # mitmproxy listens before its startup ends, and an error logged until then (a client's
        # request that crashes a connection, say) makes mitmdump exit: say when startup is over.
        log.info("telewarden: running")

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
                now = file_stamps(set(self._watched))
            except Exception:  # noqa: BLE001 - never let the watcher die
                continue
            if now != self._watched:
                self._watched = now  # a broken edit is reported once, not every interval
                self.reload()

    async def _resolve_forever(self) -> None:
        """Resolve the packs' literal host names now and then, off the request path (bounded in
        names, addresses and time), so their addresses are claimed too."""
        while True:
            try:
                await self._resolve_once()
            except Exception as e:  # noqa: BLE001 - never let the resolver die
                log.debug(f"telewarden: resolving the packs' hosts failed: {type(e).__name__}")
            await asyncio.sleep(max(ctx.options.telewarden_resolve_s, 5))

    async def _resolve_once(self) -> None:
        engine = self.engine
        if engine is None:
            return
        loop = asyncio.get_running_loop()
        names = [(h, p.id) for p in engine.packs for h in sorted(p.hosts)][:_RESOLVE_HOSTS]

        async def one(host: str) -> set[str]:
            try:
                infos = await asyncio.wait_for(loop.getaddrinfo(host, None), _RESOLVE_TIMEOUT)
            except (OSError, TimeoutError):
                return set()
            return {str(info[4][0]).split("%", 1)[0].lower() for info in infos[:_RESOLVE_ADDRESSES]}

        found = await asyncio.gather(*(one(h) for h, _ in names))
        addresses: dict[str, str] = {}
        for (_, pack_id), ips in zip(names, found):
            for ip in ips:
                addresses.setdefault(ip, pack_id)
        if engine is self.engine:
            engine.set_resolved(addresses)
            if self.judges is not None:
                self.judges.set_resolved(addresses)

    async def _summarize_forever(self) -> None:
        while True:
            await asyncio.sleep(_SUMMARY_S)
            try:
                self._log_summary()
            except Exception:  # noqa: BLE001 - never let the summary die
                pass

    def _log_summary(self) -> None:
        counts, passed, lines = self._counts, self._passed, self._block_lines
        self._counts, self._passed, self._block_lines = {}, 0, 0
        if not counts:
            return
        judged = sum(counts.values())
        blocked = counts.get("blocked", 0)
        parts = ", ".join(f"{counts[d]} {d}" for d in ("forwarded", "scrubbed", "blocked") if counts.get(d))
        more = f"; {blocked - lines} blocked not logged one by one" if blocked > lines else ""
        log.info(f"telewarden: {judged} messages judged ({parts}), {passed} passed through unclaimed"
                 f"{more}; each one is in {self.trail.folder if self.trail else 'the audit trail'}")

    def done(self) -> None:
        for task in (self._resolver, self._watcher, self._summary):
            if task is not None:
                task.cancel()
        try:
            self._log_summary()
        except Exception:  # noqa: BLE001
            pass
        if self.judges is not None:
            self.judges.close()
        if self.trail is not None:
            self.trail.close()

    # -- hooks ------------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A tunnel to a claimed destination connects upstream only once a message in it is judged
        and allowed (mitmproxy's lazy strategy, for this tunnel alone): every attempt is recorded
        even when the vendor is unreachable, and a blocked or sunk message opens no connection."""
        try:
            if flow.response is None and self._claimed(flow):
                flow.response = http.Response(flow.request.data.http_version, 200, b"Connection established",
                                              http.Headers(), b"", None, time.time(), time.time())
        except Exception:  # noqa: BLE001 - the eager default is still judged at request time
            log.error("telewarden: http_connect failed; the tunnel connects eagerly", exc_info=True)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Keep telemetry bodies whole so they can be judged.

        mitmproxy re-enables streaming for a body that outgrows `stream_large_bodies` while it is
        read, and then runs the `request` hook only after the body went upstream. So in the
        enforcing modes a telemetry request whose body may exceed that limit is refused here,
        before anything is sent; audit mode lets it stream and records it as not inspected.
        """
        try:
            if self.engine is None:
                return
            asked = self._asked.get(flow.server_conn.id)
            hosts = candidate_hosts(flow, asked)
            pack = self.engine.claim(hosts)
            if pack is None:
                return
            flow.request.stream = False
            limit = self.stream_limit
            if limit is None or (self.mode is Mode.AUDIT and not self.sink):
                return
            if not _may_exceed(flow.request, limit):
                return
            ex = http_exchange(flow, asked=asked, hosts=hosts)
            reason = (f"streamed: the body may exceed stream_large_bodies ({limit} bytes) and would "
                      f"pass the proxy uninspected; refused before sending")
            finding = Finding("telewarden.body.streamed", "body", reason, UNVERIFIABLE, Severity.HIGH)
            verdict = Verdict(ex.id, Decision.BLOCKED, self.mode, findings=[finding], error=reason, pack=pack.id)
            self._record(verdict, ex, flow)
            self._annotate(flow, verdict)
            flow.kill()
        except Exception as e:  # noqa: BLE001 - fail closed
            if self.mode is not Mode.AUDIT:
                log.error(f"telewarden: requestheaders failed ({type(e).__name__}); refusing the request")
                flow.kill()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Judge a claimed request, then forward, repair, block or sink it. With workers the
        judging is awaited (mitmproxy awaits what a hook returns) and the rest is the same."""
        if flow.response is not None or flow.error is not None or not flow.live:
            return None
        ex = None
        try:
            claimed = self._claim(flow)
            if claimed is None:
                return None
            asked, hosts, pack = claimed
            engine = self.engine
            ex = http_exchange(flow, engine.limits.max_body if engine else DEFAULT_MAX_BODY, asked, hosts)
            if self.judges is not None and pack is not None:
                return self._request_judged_elsewhere(flow, ex, pack)
            verdict = self._inspect(ex)
            if verdict.decision is Decision.PASSED_THROUGH:
                self._passed += 1
                return None
            if verdict.decision is Decision.SCRUBBED and verdict.repaired is not None:
                apply_to_request(flow.request, verdict.repaired)
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict = self._failure(ex, e)
        if self.sink and verdict.decision is not Decision.BLOCKED:
            verdict.sunk = True
        self._conclude_request(flow, ex, verdict)
        return None

    async def _request_judged_elsewhere(self, flow: http.HTTPFlow, ex: Exchange, pack: str) -> None:
        assert self.judges is not None
        encoded = None
        try:
            verdict, encoded = await self.judges.judge(ex, self.mode, self.sink, pack)
            if verdict.decision is Decision.SCRUBBED and verdict.repaired is not None:
                apply_to_request(flow.request, verdict.repaired)
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict, encoded = self._failure(ex, e), None
            if self.sink and verdict.decision is not Decision.BLOCKED:
                verdict.sunk = True
        self._conclude_request(flow, ex, verdict, encoded)

    def _conclude_request(self, flow: http.HTTPFlow, ex: Exchange | None, verdict: Verdict | Judged,
                          encoded: tuple[str, str] | None = None) -> None:
        """Record (before anything leaves), then block, sink or let the request go."""
        self._record(verdict, ex, flow, encoded)
        if verdict.decision is Decision.BLOCKED:
            self._block_http(flow, verdict)
        elif verdict.sunk:
            flow.response = self._sink_response(verdict)
        self._annotate(flow, verdict)

    def _sink_response(self, verdict: Verdict | Judged) -> http.Response:
        """The answer the vendor's endpoint would give (`respond:` in the pack), so the product
        behaves as usual; a WebSocket handshake cannot be answered without a server: refused."""
        endpoint = None
        if self.engine is not None:
            pack = next((p for p in self.engine.packs if p.id == verdict.pack), None)
            endpoint = next((e for e in pack.endpoints if e.id == verdict.endpoint), None) if pack else None
        respond = getattr(endpoint, "respond", None) or {}
        if endpoint is not None and endpoint.transport is Transport.WEBSOCKET:
            return http.Response.make(403, b"", {"X-Telewarden": "sink"})
        headers = {"X-Telewarden": "sink", **respond.get("headers", {})}
        return http.Response.make(respond.get("status", 200), respond.get("body", "").encode(), headers)

    def websocket_message(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if not message.from_client:
            self._trim(flow)
            return None
        ex = None
        try:
            claimed = self._claim(flow)
            if claimed is None:
                self._trim(flow)
                return None
            asked, hosts, pack = claimed
            ex = websocket_exchange(flow, message.content, message.is_text, message.timestamp, asked, hosts)
            if self.judges is not None and pack is not None:
                return self._message_judged_elsewhere(flow, message, ex, pack)
            verdict = self._inspect(ex)
            if verdict.decision is Decision.PASSED_THROUGH:
                self._trim(flow)
                return None
            if verdict.decision is Decision.SCRUBBED and verdict.repaired and verdict.repaired.body is not None:
                message.content = verdict.repaired.body
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict = self._failure(ex, e)
        self._conclude_message(flow, message, ex, verdict)
        return None

    async def _message_judged_elsewhere(self, flow: http.HTTPFlow, message: Any, ex: Exchange, pack: str) -> None:
        assert self.judges is not None
        encoded = None
        try:
            verdict, encoded = await self.judges.judge(ex, self.mode, False, pack)
            if verdict.decision is Decision.SCRUBBED and verdict.repaired and verdict.repaired.body is not None:
                message.content = verdict.repaired.body
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict, encoded = self._failure(ex, e), None
        self._conclude_message(flow, message, ex, verdict, encoded)

    def _conclude_message(self, flow: http.HTTPFlow, message: Any, ex: Exchange | None, verdict: Verdict | Judged,
                          encoded: tuple[str, str] | None = None) -> None:
        self._record(verdict, ex, flow, encoded)
        if verdict.decision is Decision.BLOCKED:
            message.drop()
        self._annotate(flow, verdict)
        self._trim(flow)

    def server_connect(self, data: Any) -> None:
        address = data.server.address
        if address:
            if len(self._asked) >= 65536:  # bounded: disconnects normally keep it small
                self._asked.clear()
            self._asked[data.server.id] = address[0]

    def server_disconnected(self, data: Any) -> None:
        self._asked.pop(data.server.id, None)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        """Mark a claimed WebSocket so its client's control frames are emptied (scrub/block) or
        recorded (audit): mitmproxy relays them without a hook (see transport.py)."""
        try:
            if self._claimed(flow):
                flow.metadata[GUARD_KEY] = "record" if self.mode is Mode.AUDIT else "strip"
        except Exception:  # noqa: BLE001 - fail closed: guard what could not be decided
            flow.metadata[GUARD_KEY] = "strip"

    def _control_frame(self, flow: http.HTTPFlow, what: str, payload: bytes) -> None:
        """A ping/pong payload or close reason from the client of a claimed WebSocket."""
        stripped = flow.metadata.get(GUARD_KEY) != "record"
        ex = websocket_exchange(flow, b"", True, time.time(), self._asked_for(flow))
        finding = Finding(f"telewarden.websocket.control-frame", f"frame:{what}",
                          f"a WebSocket {what} frame carries a payload the sender chose (control frames are "
                          f"relayed without being judged)", UNVERIFIABLE, Severity.HIGH,
                          digest=self.engine.digest(payload.decode("utf-8", "surrogateescape")) if self.engine else None,
                          preview=f"bytes, {len(payload)}",
                          repair="payload removed (code kept)" if what == "close" else "payload removed")
        verdict = Verdict(ex.id, Decision.SCRUBBED if stripped else Decision.FORWARDED, self.mode,
                          findings=[finding], pack=self._pack_id(ex.hosts))
        self._record(verdict, ex, flow)
        self._annotate(flow, verdict)

    def _connection_names(self, names: tuple[str, ...], context: Any) -> tuple[str, ...]:
        asked = normalize_host(self._asked.get(context.server.id))
        return (asked, *names) if asked and asked not in names else names

    def _connection_claimed(self, names: tuple[str, ...], context: Any) -> bool:
        try:
            return self.engine is not None and self.engine.claim(self._connection_names(names, context)) is not None
        except Exception:  # noqa: BLE001 - unknown: treat as claimed (lazy costs nothing)
            return True

    def _transport_decision(self, names: tuple[str, ...], what: str, context: Any) -> str | None:
        """Called by the TransportGuard when mitmproxy would relay a connection raw: None when no
        pack claims it; otherwise record, and "audit" (relay) or "refuse" (HTTP or close)."""
        names = self._connection_names(names, context)
        try:
            pack = self.engine.claim(names) if self.engine is not None else None
        except Exception:  # noqa: BLE001 - fail closed
            pack = None
            if self.mode is not Mode.AUDIT:
                return "refuse"
        if pack is None:
            return None
        enforcing = self.mode is not Mode.AUDIT
        reason = _NOT_HTTP.get(what, _NOT_HTTP["tcp"])
        if enforcing:
            reason = reason.replace("relayed raw, nothing in it could be judged",
                                    "parsed as HTTP instead of relayed raw" if what == "tcp" else "connection closed")
        port = context.server.address[1] if context.server.address else 0
        ex = Exchange(transport=Transport.TCP if what == "tcp" else Transport.UDP, method="CONNECT", hosts=names,
                      port=port, path="", scheme="tcp" if what == "tcp" else "udp", timestamp=time.time())
        finding = Finding(f"telewarden.transport.{what}", "connection", reason, UNVERIFIABLE, Severity.HIGH,
                          repair="parsed as HTTP" if what == "tcp" else None)
        verdict = Verdict(ex.id, Decision.BLOCKED if enforcing else Decision.FORWARDED, self.mode,
                          pack=pack.id, findings=[finding], error=reason)
        verdict.host = next((h for h in names if self.engine.claims_name(pack, h)), None)
        self._record(verdict, ex, None)
        return "refuse" if enforcing else "audit"

    def _pack_id(self, hosts: tuple[str, ...]) -> str | None:
        pack = self.engine.claim(hosts) if self.engine is not None else None
        return pack.id if pack is not None else None

    @staticmethod
    def _trim(flow: http.HTTPFlow) -> None:
        # mitmproxy's WebSocket layer relays through its own reference to the message, so dropping
        # older entries (never the current, last one) is safe.
        keep = ctx.options.telewarden_ws_keep
        if keep > 0 and flow.websocket is not None and len(flow.websocket.messages) > keep:
            del flow.websocket.messages[:-keep]

    # -- helpers ----------------------------------------------------------------------------

    def _claim(self, flow: http.HTTPFlow) -> tuple[str | None, tuple[str, ...], str | None] | None:
        """(asked, hosts, pack id) of a message to judge, or None when no pack claims it (counted
        as passed through): the claim comes first, so traffic no pack claims costs its names and
        no more. With no engine configured the message goes on to be judged, which fails closed."""
        asked = self._asked.get(flow.server_conn.id)
        hosts = candidate_hosts(flow, asked)
        if self.engine is None:
            return asked, hosts, None
        pack = self.engine.claim(hosts)
        if pack is None:
            self._passed += 1
            return None
        return asked, hosts, pack.id

    def _claimed(self, flow: http.HTTPFlow) -> bool:
        return self.engine is not None and self.engine.claim(candidate_hosts(flow, self._asked_for(flow))) is not None

    def _asked_for(self, flow: http.HTTPFlow) -> str | None:
        return self._asked.get(flow.server_conn.id)

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

    def _record(self, verdict: Verdict | Judged, ex: Exchange | None, flow: http.HTTPFlow | None,
                encoded: tuple[str, str] | None = None) -> None:
        """Write the record before anything is forwarded (`encoded`: built by a worker)."""
        if ex is None:
            assert flow is not None
            # the failure came before an Exchange existed: describe the request as it stands
            ex = Exchange(transport=Transport.HTTP, method=flow.request.method, hosts=(flow.request.pretty_host,),
                          port=flow.request.port, path=flow.request.path.split("?", 1)[0], timestamp=time.time())
        try:
            trail = self.trail
            if trail is None:
                raise AuditError("no audit trail configured")
            if encoded is None:
                trail.write(record(verdict, ex))  # audit.jsonl, written before anything is forwarded
            else:
                trail.write_encoded(*encoded)
        except Exception as e:  # noqa: BLE001 - an unaudited message must not leave in enforcing modes
            log.error(f"telewarden: AUDIT TRAIL FAILED: {e}")
            if self.mode is not Mode.AUDIT and verdict.decision is not Decision.BLOCKED:
                verdict.decision = Decision.BLOCKED
                verdict.error = f"audit trail unwritable: {e}"
        else:
            self._render_soon(trail)
        decision = verdict.decision.value
        self._counts[decision] = self._counts.get(decision, 0) + 1
        if verdict.decision is Decision.BLOCKED and self._block_lines < _BLOCK_LINES:
            self._block_lines += 1
            log.warning(f"telewarden: BLOCKED {verdict.pack}/{verdict.kind or verdict.endpoint} "
                        f"{ex.destination} rules={','.join(verdict.rule_ids) or '-'}")

    def _render_soon(self, trail: AuditTrail) -> None:
        """audit.log (the human view) is rendered after the hook returns, a batch per turn of the
        event loop: off the request's path, one write for many records. audit.jsonl, the record
        that counts, is already written; a crash before the batch is rendered is repaired when the
        trail is next opened (AuditTrail regenerates a human log that lags behind its chain)."""
        if self._flush_scheduled:
            if trail.pending_human() >= _PENDING_HUMAN:
                trail.flush_human()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (tests, offline use): render now
            trail.flush_human()
            return
        trail.defer_human = True
        self._flush_scheduled = True
        loop.call_soon(self._flush_human, trail)

    def _flush_human(self, trail: AuditTrail) -> None:
        self._flush_scheduled = False
        try:
            trail.flush_human()
            if self.trail is not None and self.trail is not trail:  # reconfigured meanwhile
                self.trail.flush_human()
        except Exception:  # noqa: BLE001 - the chain has every record; never break the loop
            log.error("telewarden: rendering audit.log failed (audit.jsonl has the records)", exc_info=True)

    def _block_http(self, flow: http.HTTPFlow, verdict: Verdict | Judged) -> None:
        body = {"telewarden": "blocked", "message": verdict.exchange_id, "rules": verdict.rule_ids}
        if verdict.error:
            body["reason"] = verdict.error
        flow.response = http.Response.make(self.block_status, json.dumps(body).encode(),
                                           {"Content-Type": "application/json", "X-Telewarden": "blocked"})

    @staticmethod
    def _annotate(flow: http.HTTPFlow, verdict: Verdict | Judged) -> None:
        """Verdict on the flow for mitmweb users (~meta, ~comment, ~marked) and saved flows.

        Bounded: a WebSocket flow can carry frames for hours, so it keeps counts per decision,
        the set of rules and the last few verdicts, not one entry per frame."""
        meta = flow.metadata.get("telewarden")
        if meta is None:
            meta = flow.metadata["telewarden"] = {"counts": {}, "rules": [], "last": []}
        counts = meta["counts"]
        decision = verdict.decision.value
        counts[decision] = counts.get(decision, 0) + 1
        rule_ids = verdict.rule_ids
        rules = meta["rules"]
        if rule_ids and not set(rule_ids).issubset(rules):
            meta["rules"] = rules = sorted(set(rules).union(rule_ids))
        last = meta["last"]
        if len(last) >= _LAST_VERDICTS:
            del last[:len(last) - _LAST_VERDICTS + 1]
        last.append({"decision": decision, "kind": verdict.kind, "rules": rule_ids, "message": verdict.exchange_id})
        meta["pack"] = verdict.pack
        worst = "blocked" if counts.get("blocked") else "scrubbed" if counts.get("scrubbed") else "forwarded"
        meta["decision"] = worst
        summary = ", ".join(f"{counts[d]} {d}" for d in ("blocked", "scrubbed", "forwarded") if counts.get(d))
        flow.comment = (f"telewarden: {worst.upper()} ({summary}) {' '.join(rules)}" if rules
                        else f"telewarden: {worst.upper()} ({summary})")
        if worst != "forwarded" or rules:
            flow.marked = _WORST_MARKS[worst]


def _may_exceed(req: http.Request, limit: int) -> bool:
    """Whether a request's body could outgrow `limit` (and so be streamed past the hooks). An
    HTTP/1 request with neither Content-Length nor Transfer-Encoding has no body at all (RFC 9112
    6.3), the WebSocket handshake among them; HTTP/2 and 3 can carry one without announcing it."""
    length = req.headers.get("content-length")
    if length is not None:
        return not length.isdigit() or int(length) > limit
    return "transfer-encoding" in req.headers or not req.http_version.startswith("HTTP/1")


addons = [Telewarden()]
