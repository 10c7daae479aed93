"""The encapsulated HTTP request -> Exchange, and the Verdict -> the ICAP answer.

Judgement is the proxy's: the same Engine, packs and AuditTrail, the same destination and path
normalisation (mitmexchange.normalize_host / normalize_path), the same 403 answer and record.
Fail closed: in scrub and block mode an internal error, an unwritable trail or a body over
max_body answers with a block; audit mode forwards and records loudly.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass

from ..audit.render import record
from ..audit.trail import AuditError, AuditTrail
from ..engine import decoding
from ..engine.judge import UNVERIFIABLE, Engine
from ..engine.model import Decision, Exchange, Finding, Mode, Severity, Transport, Verdict
from ..engine.names import normalize_host, normalize_path, target_problem
from . import protocol
from .protocol import HTTPHead

log = logging.getLogger("telewarden")

_ABSOLUTE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)$")
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
UPGRADE_RULE = "telewarden.upgrade.uninspectable"
UPGRADE_REASON = ("an HTTP Upgrade (WebSocket) to a telemetry host: ICAP sees only the handshake, never "
                  "the frames that follow, so in scrub and block mode the upgrade is refused")


@dataclass(slots=True)
class Target:
    scheme: str
    authority: str | None  # from an absolute-form request target
    raw_path: str  # path and query as sent ("*" or authority-form for OPTIONS/CONNECT)
    absolute: bool


def split_target(head: HTTPHead) -> Target:
    m = _ABSOLUTE.match(head.target)
    if m:
        authority = m.group(2).rsplit("@", 1)[-1]  # never judge (or keep) userinfo as the host
        return Target(m.group(1).lower(), authority, m.group(3) or "/", True)
    if head.method.upper() == "CONNECT":
        return Target("https", head.target, "/", False)
    return Target("http", None, head.target, False)


def _port(authority: str | None) -> int | None:
    if not authority:
        return None
    tail = authority.rsplit("]", 1)[-1] if authority.startswith("[") else authority
    if tail.count(":") == 1:
        p = tail.split(":", 1)[1]
        if p.isdigit() and 0 < int(p) < 65536:
            return int(p)
    return None


def candidate_hosts(head: HTTPHead, target: Target) -> tuple[str, ...]:
    """Every name the request could be going to: the request-URI authority and every Host header,
    normalised as the proxy normalises them."""
    out: list[str] = []
    for name in (target.authority, *head.all("host")):
        h = normalize_host(name)
        if h and h not in out:
            out.append(h)
    return tuple(out)


def canonical_target(target: Target, path: str, query: str) -> str:
    """The request target in canonical form (the form the engine judged), keeping its form."""
    query = query.split("#", 1)[0]
    tail = path + (f"?{query}" if query else "")
    return f"{target.scheme}://{target.authority}{tail}" if target.absolute else tail


def is_upgrade(head: HTTPHead) -> bool:
    return bool(head.get("upgrade"))


def build_exchange(head: HTTPHead, target: Target, hosts: tuple[str, ...], raw_body: bytes, overflow: bool,
                   max_body: int) -> Exchange:
    """The request as the engine sees it; the body is decoded with a ceiling (as the proxy does)."""
    problem = None
    body = raw_body
    encoding = head.get("content-encoding") or ""
    if overflow:
        body = raw_body[: max_body + 1]  # the engine reports too-large
    elif encoding:
        try:
            body = decoding.decode(raw_body, encoding, max_body)
        except decoding.DecodeError:
            shown = encoding if encoding.replace(",", " ").replace("-", "").replace(" ", "").isalpha() and len(encoding) < 40 else "(unusual value)"
            problem = f"bad-encoding: the body does not decode as Content-Encoding {shown}"
            body = b""
    path, query = normalize_path(target.raw_path)
    headers = tuple((k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in head.raw_headers)
    port = _port(target.authority) or _port(head.get("host")) or _DEFAULT_PORTS.get(target.scheme, 80)
    # as the proxy does: a target that is not canonical is a finding, and scrub forwards the
    # canonical form; the names sent on are the Host headers (ICAP never sees the TLS SNI)
    return Exchange(transport=Transport.HTTP, method=head.method.upper(), hosts=hosts, port=port, path=path,
                    query=query, headers=headers, body=body, body_problem=problem, scheme=target.scheme,
                    timestamp=time.time(), target_problem=target_problem(target.raw_path, path),
                    raw_target=target.raw_path, sent_names=tuple(("header:host", v) for v in head.all("host")))


class Judge:
    """Engine + trail + mode: judges one encapsulated request and says what to answer."""

    def __init__(self, engine: Engine, trail: AuditTrail, mode: Mode, *, block_status: int = 403) -> None:
        self.engine, self.trail, self.mode, self.block_status = engine, trail, mode, block_status

    def claims(self, hosts: tuple[str, ...]) -> bool:
        return self.engine.claim(hosts) is not None

    def judge(self, head: HTTPHead, target: Target, hosts: tuple[str, ...], raw_body: bytes,
              overflow: bool) -> tuple[Verdict, Exchange | None]:
        ex = None
        try:
            ex = build_exchange(head, target, hosts, raw_body, overflow, self.engine.limits.max_body)
            verdict = self.engine.inspect(ex, self.mode)
            if is_upgrade(head) and verdict.decision is not Decision.PASSED_THROUGH:
                self._refuse_upgrade(verdict)
        except Exception as e:  # noqa: BLE001 - fail closed
            verdict = self.failure(ex, e)
        if verdict.decision is not Decision.PASSED_THROUGH:
            self.record(verdict, ex, head, hosts)
        return verdict, ex

    def malformed(self, head: HTTPHead, target: Target, hosts: tuple[str, ...], reason: str, size: int) -> Verdict:
        """A request to a claimed (or unnamed) destination whose head does not parse strictly:
        servers could read it differently from any judgement, so it is blocked (audit: recorded)."""
        pack = self.engine.claim(hosts)
        # the parser's message may quote the sender's bytes: it goes to the log, never the trail
        log.info(f"telewarden icap: malformed request head ({reason})")
        finding = Finding("telewarden.request.malformed", "", "the HTTP request head does not parse strictly: "
                          "a server could read it differently from how it would be judged", UNVERIFIABLE, Severity.HIGH)
        ex = Exchange(transport=Transport.HTTP, method=head.method.upper(), hosts=hosts or ("?",),
                      port=_port(target.authority) or _DEFAULT_PORTS.get(target.scheme, 80), path="/",
                      scheme=target.scheme, timestamp=time.time())
        decision = Decision.FORWARDED if self.mode is Mode.AUDIT else Decision.BLOCKED
        verdict = Verdict(ex.id, decision, self.mode, pack=pack.id if pack else None,
                          host=next((h for h in hosts if pack and pack.claims(h)), None), findings=[finding],
                          error="malformed request head", size_in=size)
        self.record(verdict, ex, head, hosts)
        return verdict

    def _refuse_upgrade(self, verdict: Verdict) -> None:
        verdict.findings.append(Finding(UPGRADE_RULE, "header:upgrade", UPGRADE_REASON, UNVERIFIABLE, Severity.HIGH))
        if self.mode is not Mode.AUDIT:
            verdict.decision = Decision.BLOCKED
            verdict.repaired = None
            verdict.size_out = 0
            verdict.error = verdict.error or UPGRADE_REASON

    def failure(self, ex: Exchange | None, e: BaseException) -> Verdict:
        """An internal error: block in the enforcing modes, forward (loudly) in audit mode."""
        log.error(f"telewarden icap: internal error while judging a message: {type(e).__name__}", exc_info=True)
        decision = Decision.FORWARDED if self.mode is Mode.AUDIT else Decision.BLOCKED
        reason = f"internal error ({type(e).__name__}); not judged"
        finding = Finding("telewarden.internal-error", "", reason,
                          "telewarden could not judge this message, so it cannot be shown to keep the vendor's promises",
                          Severity.HIGH)
        return Verdict(ex.id if ex is not None else "?", decision, self.mode, findings=[finding], error=reason)

    def record(self, verdict: Verdict, ex: Exchange | None, head: HTTPHead, hosts: tuple[str, ...]) -> None:
        """Write the record before anything is answered; an unwritable trail blocks (enforcing modes)."""
        if ex is None:
            ex = Exchange(transport=Transport.HTTP, method=head.method.upper(), hosts=hosts or ("?",), port=0,
                          path="/", timestamp=time.time())
        try:
            self.trail.write(record(verdict, ex))
        except Exception as e:  # noqa: BLE001 - an unaudited message must not leave in enforcing modes
            log.error(f"telewarden icap: AUDIT TRAIL FAILED: {e}")
            if self.mode is not Mode.AUDIT and verdict.decision is not Decision.BLOCKED:
                verdict.decision = Decision.BLOCKED
                verdict.error = f"audit trail unwritable: {e if isinstance(e, AuditError) else type(e).__name__}"
        if verdict.decision is Decision.BLOCKED or verdict.active_findings:
            log.warning(f"telewarden icap: {verdict.decision.value.upper()} {verdict.pack}/{verdict.kind or verdict.endpoint} "
                        f"{ex.destination} rules={','.join(verdict.rule_ids) or '-'}")

    # -- answers ------------------------------------------------------------------------------

    def answer(self, req: protocol.Request, head: HTTPHead, target: Target, raw_body: bytes, body_complete: bool,
               verdict: Verdict, ex: Exchange | None, istag: str) -> bytes:
        hdrs = [("ISTag", istag)]
        if verdict.decision is Decision.BLOCKED:
            return protocol.response(200, hdrs, [("res-hdr", self.block_head(verdict))], self.block_body(verdict))
        rewrite = verdict.decision is Decision.SCRUBBED or (
            self.mode is Mode.SCRUB and ex is not None and verdict.decision is Decision.FORWARDED
            and _path_only(target.raw_path) != ex.path)
        if rewrite and ex is not None and body_complete:
            new_head, new_body = self.repaired_request(head, target, ex, verdict, raw_body, req.has_body)
            return protocol.response(200, hdrs, [("req-hdr", new_head)], new_body)
        if req.allow_204 or req.preview is not None and not body_complete:
            return protocol.response(204, hdrs)
        # 204 not allowed: the unchanged request, whole.
        return protocol.response(200, hdrs, [("req-hdr", req.http_head)], raw_body if req.has_body else None)

    def block_body(self, verdict: Verdict) -> bytes:
        body = {"telewarden": "blocked", "message": verdict.exchange_id, "rules": verdict.rule_ids}
        if verdict.error:
            body["reason"] = verdict.error
        return json.dumps(body).encode()

    def block_head(self, verdict: Verdict) -> bytes:
        reason = {403: "Forbidden"}.get(self.block_status, "Blocked")
        return (f"HTTP/1.1 {self.block_status} {reason}\r\nContent-Type: application/json\r\n"
                f"X-Telewarden: blocked\r\nContent-Length: {len(self.block_body(verdict))}\r\n"
                f"Cache-Control: no-store\r\n\r\n").encode()

    @staticmethod
    def repaired_request(head: HTTPHead, target: Target, ex: Exchange, verdict: Verdict, raw_body: bytes,
                         has_body: bool) -> tuple[bytes, bytes | None]:
        """The request to forward: canonical target, dropped headers, repaired body sent
        identity-encoded (Content-Encoding dropped) with its Content-Length."""
        repaired = verdict.repaired
        drop = {n for n in (repaired.drop_headers if repaired else ()) if not n.startswith("trailer:")}
        query = "" if repaired is not None and repaired.clear_query else ex.query
        new_host = getattr(repaired, "host", None)
        if new_host is not None:
            drop.add("host")
        body = raw_body if has_body else None
        framing = {"content-length", "transfer-encoding"}
        if repaired is not None and repaired.body is not None:
            body = repaired.body
            framing.add("content-encoding")
        lines = [f"{head.method} {canonical_target(target, ex.path, query)} HTTP/{head.version}".encode("latin-1")]
        for k, v in head.raw_headers:
            lk = k.decode("latin-1").lower()
            if lk in drop or lk in framing:
                continue
            lines.append(k + b": " + v)
        if new_host is not None:
            port = _port(target.authority) or _port(head.get("host"))
            name = f"[{new_host}]" if ":" in new_host else new_host
            lines.append(f"Host: {name}{f':{port}' if port else ''}".encode("latin-1"))
        if body is not None and (body or head.method.upper() not in ("GET", "HEAD")):
            lines.append(f"Content-Length: {len(body)}".encode())
        return b"\r\n".join(lines) + b"\r\n\r\n", body


def _path_only(raw: str) -> str:
    return raw.partition("?")[0].split("#", 1)[0]
