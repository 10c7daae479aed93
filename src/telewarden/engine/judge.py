"""Engine.inspect(exchange) -> Verdict: pure, no I/O, nothing compiled per message.

Order of judgement (the precedence the README documents):
  1. destination: the first pack claiming any of the exchange's host names; none -> passed-through
  2. endpoint: path, method and transport; none -> `<pack>.endpoint.unknown` (cannot be repaired)
  3. query string and headers: header rules, then the endpoint's header allow-list, then detectors
  4. body: adapter-reported problems and strict parsing -> `telewarden.body.<reason>` (unrepairable)
  5. kind: the first kind whose `when`/`has` conditions hold; none -> `<pack>.kind.unknown`
  6. schema of the kind -> `<pack>.schema.<keyword>`; unknown keys are dropped by scrub, the rest
     cannot be repaired
  7. the pack's rules, in file order; every pointer a rule names is owned by it
  8. detectors on every string no rule owns -> `<pack>.detector.<name>`; scrub masks the match
A message can be the query string (an endpoint's `message: query`): parsed into a JSON object and
judged from step 4 like a body. A kind with a `batch` holds events: each is judged from step 5 by
its own event kind (findings point into it, `/events/3/...`), and scrub can drop an event it cannot
repair instead of blocking the whole message.
Scrub applies every repair, re-serialises, and inspects the result again from step 1: anything
still found blocks the message. Waived rules are reported but neither decide nor get repaired.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_to_bytes

from . import strictjson
from .detectors import mask
from .names import normalize_host
from .model import Decision, Exchange, Finding, Mode, Repaired, Severity, Transport, Verdict, shown_method
from .packs import DROP, Endpoint, Kind, Pack, Rule, format_pointer

UNVERIFIABLE = "telewarden could not verify this message, so it cannot be shown to keep the vendor's promises"
UNVERIFIABLE_TARGET = "what is forwarded is exactly what was judged"


DEFAULT_MAX_BODY = 1 << 20  # bytes of decoded body inspected; larger is a finding
DEFAULT_MAX_DEPTH = 64


@dataclass(slots=True)
class Limits:
    max_body: int = DEFAULT_MAX_BODY
    max_depth: int = DEFAULT_MAX_DEPTH
    max_query_params: int = 256  # key=value pairs of a query-string message


@dataclass(slots=True)
class _Fix:
    path: tuple[str | int, ...]
    repair: Any  # callable(value) -> new value or DROP


@dataclass(slots=True)
class _Work:
    """What one inspection accumulates."""

    findings: list[Finding] = field(default_factory=list)
    fixes: list[_Fix] = field(default_factory=list)
    drop_headers: list[str] = field(default_factory=list)
    clear_query: bool = False
    query_message: bool = False  # the message is the query string (the endpoint's `message: query`)
    canonical_target: bool = False
    set_host: bool = False
    unrepairable: bool = False
    error: str | None = None


class Engine:
    def __init__(self, packs: list[Pack], *, digest_key: bytes, limits: Limits | None = None,
                 waivers: dict[str, str] | None = None) -> None:
        self.packs = packs
        self.limits = limits or Limits()
        self._key = digest_key
        self._waivers = list((waivers or {}).items())
        self._waiver_cache: dict[str, str | None] = {}
        self._host_cache: dict[str, Pack | None] = {}
        self._resolved: dict[str, Pack] = {}

    # -- public -----------------------------------------------------------------------------

    def inspect(self, ex: Exchange, mode: Mode) -> Verdict:
        t0 = time.perf_counter_ns()
        pack = self.claim(ex.hosts)
        if pack is None:
            return Verdict(ex.id, Decision.PASSED_THROUGH, mode, size_in=len(ex.body), size_out=len(ex.body))
        verdict, work, doc = self._judge(pack, ex)
        verdict.mode = mode
        verdict.host = next((h for h in ex.hosts if self.claims_name(pack, h)), None)
        if work.findings and mode is not Mode.AUDIT:
            active = [f for f in work.findings if f.waived is None]
            if not active:
                verdict.decision = Decision.FORWARDED
            elif mode is Mode.BLOCK or work.unrepairable:
                verdict.decision = Decision.BLOCKED
            else:
                self._scrub(pack, ex, verdict, work, doc)
        # a query-string message's size is its query's
        verdict.size_in = len(ex.query) if work.query_message else len(ex.body)
        if verdict.size_out == 0 and verdict.decision is not Decision.BLOCKED:
            verdict.size_out = verdict.size_in
        verdict.micros = (time.perf_counter_ns() - t0) // 1000
        return verdict

    def digest(self, value: Any) -> str:
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else strictjson.dumps(value)
        return "hmac-sha256:" + hmac.new(self._key, data, hashlib.sha256).hexdigest()[:32]

    # -- steps ------------------------------------------------------------------------------

    def claim(self, hosts: tuple[str, ...]) -> Pack | None:
        """The first pack that claims any of these (normalised) host names or addresses, or None."""
        for host in hosts:
            try:
                pack = self._host_cache[host]
            except KeyError:
                pack = next((p for p in self.packs if p.claims(host)), None) or self._claim_address(host)
                if len(self._host_cache) < 4096:
                    self._host_cache[host] = pack
            if pack is not None:
                return pack
        return None

    def set_resolved(self, addresses: dict[str, str]) -> None:
        """Addresses the packs' host names resolved to (address -> pack id), from the adapter's
        periodic resolver: a connection to one of them is claimed even when it names nothing."""
        by_id = {p.id: p for p in self.packs}
        self._resolved = {a: by_id[i] for a, i in addresses.items() if i in by_id}
        self._host_cache.clear()

    @property
    def resolved(self) -> dict[str, str]:
        """The resolved addresses in force (address -> pack id)."""
        return {a: p.id for a, p in self._resolved.items()}

    def _claim_address(self, host: str) -> Pack | None:
        if host in self._resolved:
            return self._resolved[host]
        if not any(p.addresses for p in self.packs):
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        return next((p for p in self.packs if any(ip in net for net in p.addresses)), None)

    def claims_name(self, pack: Pack, host: str) -> bool:
        """Whether this pack claims this name or address (declared or resolved)."""
        return pack.claims(host) or self._claim_address(host) is pack

    def _judge(self, pack: Pack, ex: Exchange) -> tuple[Verdict, _Work, Any]:
        verdict = Verdict(ex.id, Decision.FORWARDED, Mode.AUDIT, pack=pack.id)
        work = _Work()
        doc = None
        endpoint = None
        for e in pack.endpoint_for(ex.path):
            if ex.transport is Transport.WEBSOCKET and e.transport is Transport.WEBSOCKET:
                endpoint = e
            elif ex.transport is Transport.HTTP and ex.method in e.methods:
                endpoint = e
        if endpoint is None:
            # the path is the sender's to choose, so it is shown by digest, never verbatim
            self._add(work, pack, f"{pack.id}.endpoint.unknown", "path", ex.path,
                      f"{shown_method(ex.method)} to a path that is not a known telemetry endpoint of {pack.title}",
                      pack.generic_promise, Severity.HIGH, None, unrepairable=True)
        else:
            verdict.endpoint = endpoint.id
            if ex.transport is Transport.HTTP:
                self._check_request_line(pack, endpoint, ex, work)
            handshake = ex.transport is Transport.HTTP and endpoint.transport is Transport.WEBSOCKET
            if handshake:
                if ex.body:
                    self._unverifiable(work, "body-unexpected", "a WebSocket handshake carries no body")
            else:
                doc = self._body(pack, endpoint, ex, verdict, work)
        verdict.findings = work.findings
        verdict.error = work.error
        return verdict, work, doc

    def _check_request_line(self, pack: Pack, endpoint: Any, ex: Exchange, work: _Work) -> None:
        if ex.target_problem:
            # the raw target is the sender's to choose: shown by digest, never verbatim
            self._add(work, pack, "telewarden.request.target", "path", ex.raw_target or ex.path,
                      f"the request target is not in canonical form ({ex.target_problem}): a server could "
                      f"read it differently from how it was judged", UNVERIFIABLE_TARGET, Severity.HIGH, None,
                      repair_text="forwarded in canonical form")
            work.canonical_target = True
        self._check_names(pack, ex, work)
        if ex.query and endpoint.forbid_query:
            self._add(work, pack, f"{pack.id}.query", "query", ex.query,
                      "the endpoint takes no query string", pack.generic_promise, Severity.HIGH, None)
            work.clear_query = True
        for name, value in ex.headers:
            lname = name.lower()
            where = f"header:{lname}" if lname in endpoint.header_rules or (
                endpoint.header_allow is not None and lname in endpoint.header_allow) else \
                "header:" + self._safe_pointer(pack, (lname,))[1:]
            rules = endpoint.header_rules.get(lname)
            if rules:
                for rule in rules:
                    problem = rule.check(value)
                    if problem:
                        self._rule_finding(work, pack, rule, where, value, problem, None)
                        if rule.repair is not None and lname not in work.drop_headers:
                            work.drop_headers.append(lname)
            elif endpoint.header_allow is not None and lname not in endpoint.header_allow:
                self._add(work, pack, f"{pack.id}.header.unexpected", where, value,
                          "a header this endpoint does not expect", pack.generic_promise,
                          Severity.MEDIUM, None, repair_text="header removed")
                if lname not in work.drop_headers:
                    work.drop_headers.append(lname)
            elif lname not in ("host", "content-length"):
                hits = pack.detectors.scan(value) if pack.detectors.first(value) else []
                if hits:
                    self._add(work, pack, f"{pack.id}.detector.{hits[0].detector}", where, value,
                              f"looks like {_kinds(hits)}", pack.generic_promise, Severity.HIGH, None,
                              repair_text="header removed", preview_kind=_kinds(hits))
                    if lname not in work.drop_headers:
                        work.drop_headers.append(lname)

    def _check_names(self, pack: Pack, ex: Exchange, work: _Work) -> None:
        """Every name the request sends on (Host, :authority, SNI) names the claimed destination,
        once: another name is data the sender chose (`Host: db.internal.example`)."""
        hosts = 0
        for where, raw in ex.sent_names:
            if where == "header:host":
                hosts += 1
            name = normalize_host(raw)
            if name is not None and (name in ex.connected or self.claims_name(pack, name)):
                continue
            sni = where == "tls:sni"
            self._add(work, pack, "telewarden.request.other-host", where, raw,
                      "names a host the pack does not claim" + (" (sent in the TLS handshake: cannot be "
                                                                "repaired)" if sni else ""),
                      pack.generic_promise, Severity.HIGH, None, unrepairable=sni,
                      repair_text=None if sni else "set to the claimed host name")
            if not sni:
                work.set_host = True
        if hosts > 1:
            self._add(work, pack, "telewarden.request.other-host", "header:host", None,
                      f"{hosts} Host headers: servers disagree on which one counts", pack.generic_promise,
                      Severity.HIGH, None, repair_text="one Host header, the claimed host name")
            work.set_host = True

    def _body(self, pack: Pack, endpoint: Endpoint, ex: Exchange, verdict: Verdict, work: _Work) -> Any:
        if endpoint.message == "query":
            work.query_message = True
            if ex.body or ex.body_problem:
                self._unverifiable(work, "body-unexpected", "this endpoint's message is its query string: it carries no body")
                return None
            try:
                doc = parse_query(ex.query, max_bytes=self.limits.max_body, max_params=self.limits.max_query_params)
            except QueryError as e:
                self._unverifiable(work, e.code, str(e))
                return None
        elif ex.body_problem:
            self._unverifiable(work, ex.body_problem.split(":", 1)[0], ex.body_problem)
            return None
        else:
            try:
                doc = strictjson.loads(ex.body, max_bytes=self.limits.max_body, max_depth=self.limits.max_depth)
            except strictjson.StrictJSONError as e:
                self._unverifiable(work, e.code, str(e))
                return None
        kind = self._kind(pack, verdict.endpoint, doc)
        if kind is None:
            self._add(work, pack, f"{pack.id}.kind.unknown", "", None,
                      f"the {'query' if work.query_message else 'body'} matches no known message kind (topic or shape)",
                      pack.generic_promise, Severity.HIGH, None, unrepairable=True)
            return doc
        verdict.kind = kind.id
        self._judge_kind(pack, kind, doc, (), work)
        if kind.batch is not None:
            self._judge_batch(pack, kind, doc, work)
        return doc

    def _judge_kind(self, pack: Pack, kind: Kind, doc: Any, prefix: tuple, work: _Work) -> None:
        """Schema, rules and detectors of one kind on `doc`, which sits at `prefix` in the message."""
        valid = kind.validator.is_valid(doc)
        if not valid:
            self._schema_findings(pack, kind, doc, work, prefix)
        for rule, pointer, wild in kind.checks:
            if wild:
                for path, value in _resolve(doc, pointer):
                    if problem := rule.check(value):
                        full = (*prefix, *path)
                        self._rule_finding(work, pack, rule, format_pointer(full), value, problem, full)
            else:
                value = _get(doc, pointer, _MISSING)
                if value is not _MISSING and (problem := rule.check(value)):
                    full = (*prefix, *pointer)
                    self._rule_finding(work, pack, rule, format_pointer(full), value, problem, full)
        # A valid message can hold free strings only where the schema allows them; an invalid one
        # may hide anything anywhere, so it gets the full walk.
        plan = kind.scan if valid else True
        if plan is not None:  # None: the schema fixes every value, no free string to scan
            self._walk(pack, doc, prefix, kind.owned, work, plan)

    def _judge_batch(self, pack: Pack, kind: Kind, doc: Any, work: _Work) -> None:
        """Each event of the batch by its own event kind. An event scrub cannot repair is dropped
        (`unrepairable: drop`), so the others still go; otherwise it blocks the message."""
        batch = kind.batch
        events = _get(doc, batch.at, None)
        if type(events) is not list:
            return  # the batch kind's schema judges what is there instead
        for i, event in enumerate(events):
            at = (*batch.at, i)
            ew = _Work()
            if batch.index is not None:
                name = _get(event, batch.index[0], None)
                ekind = batch.index[1].get(name) if type(name) is str else None
            else:
                ekind = next((k for k in batch.kinds if _holds(k, event)), None)
            if ekind is None:
                self._add(ew, pack, f"{pack.id}.kind.unknown", "", event,
                          "the event matches no known event kind", pack.generic_promise, Severity.HIGH,
                          at, unrepairable=True)
            else:
                self._judge_kind(pack, ekind, event, at, ew)
            work.findings.extend(ew.findings)
            if ew.unrepairable and batch.drop:
                for f in ew.findings:
                    if f.waived is None:
                        f.repair = "the event is dropped" + ("" if f.repair is None else f" (instead: {f.repair})")
                work.fixes.append(_Fix(at, _drop))
            else:
                work.fixes.extend(ew.fixes)
                work.unrepairable = work.unrepairable or ew.unrepairable

    def _kind(self, pack: Pack, endpoint_id: str | None, doc: Any) -> Kind | None:
        for kind in pack.kinds:
            if endpoint_id not in kind.endpoints or kind.within is not None:
                continue
            if _holds(kind, doc):
                return kind
        return None

    def _schema_findings(self, pack: Pack, kind: Kind, doc: Any, work: _Work, prefix: tuple = ()) -> None:
        for err in kind.validator.iter_errors(doc):
            path = tuple(err.instance_path)
            keyword = err.kind.name
            if keyword == "additionalProperties":
                for key in err.kind.as_dict().get("unexpected", []):
                    kpath = (*prefix, *path, key)
                    parent = _get(doc, path, None)
                    value = parent.get(key) if isinstance(parent, dict) else None
                    # _add shows the pointer through _safe_pointer: an unknown key is the sender's
                    self._add(work, pack, f"{pack.id}.schema.unknown-key", "", value,
                              f"key not in the {kind.id} schema", pack.generic_promise, Severity.HIGH,
                              kpath, repair=lambda v: DROP, repair_text="dropped")
            else:
                value = _get(doc, path, None)
                # the schema path is the pack's own text; the instance path goes through _safe_pointer
                # (a path without a repair adds no fix)
                self._add(work, pack, f"{pack.id}.schema.{_kebab(keyword)}", "", value,
                          f"fails {keyword!r} of the {kind.id} schema ({'/'.join(map(str, err.schema_path))})",
                          pack.generic_promise, Severity.HIGH, (*prefix, *path), unrepairable=True)

    def _walk(self, pack: Pack, value: Any, path: tuple, owned: dict | None, work: _Work, plan: Any = True) -> None:
        """Run the detectors on every string that no rule owns, where the plan says one may be."""
        t = type(value)
        if t is str:
            if pack.detectors.first(value):
                hits = pack.detectors.scan(value)
                kinds = _kinds(hits)
                self._add(work, pack, f"{pack.id}.detector.{hits[0].detector}", format_pointer(path), value,
                          f"looks like {kinds}", pack.generic_promise, Severity.HIGH, path,
                          repair=lambda v, d=pack.detectors: mask(v, d.scan(v)),
                          repair_text=f"masked as [{hits[0].detector}]", preview_kind=kinds)
        elif t is dict:
            for k, v in value.items():
                tv = type(v)
                if tv is str or tv is dict or tv is list:
                    sub_plan = plan if plan is True else plan.get(k) or plan.get("*")
                    if sub_plan is None:
                        continue  # the schema fixes everything here: no free string
                    sub = (owned.get(k) or owned.get("*")) if owned else None
                    if sub is None or None not in sub:  # None marks a pointer a rule judges
                        self._walk(pack, v, (*path, k), sub, work, sub_plan)
        elif t is list:
            sub_plan = plan if plan is True else plan.get("*")
            sub = owned.get("*") if owned else None
            if sub_plan is not None and (sub is None or None not in sub):
                for i, v in enumerate(value):
                    tv = type(v)
                    if tv is str or tv is dict or tv is list:
                        self._walk(pack, v, (*path, i), sub, work, sub_plan)

    def _scrub(self, pack: Pack, ex: Exchange, verdict: Verdict, work: _Work, doc: Any) -> None:
        body = ex.body
        query = None
        if work.fixes:
            # a private copy; the strict parse already succeeded
            fixed = parse_query(ex.query) if work.query_message else json.loads(ex.body)
            # deepest first; among siblings the highest list index first, so dropping one item never
            # shifts another that is still to be repaired (stable: same path keeps rule order)
            for fix in sorted(work.fixes, key=_fix_order, reverse=True):
                fixed = _apply(fixed, fix)
            if work.query_message:
                try:
                    query = encode_query(fixed)
                except QueryError as e:
                    verdict.decision = Decision.BLOCKED
                    verdict.error = f"the repaired message cannot be written as a query string: {e}"
                    return
            else:
                body = strictjson.dumps(fixed)
        host = verdict.host if work.set_host else None
        repaired = Repaired(body=body if work.fixes and query is None else None, drop_headers=tuple(work.drop_headers),
                            clear_query=work.clear_query, target=ex.path if work.canonical_target else None,
                            host=host, query=query)
        if work.set_host and host is None:
            verdict.decision = Decision.BLOCKED
            verdict.error = "no claimed host name to put in Host"
            return
        names = ex.sent_names if host is None else (
            *((w, n) for w, n in ex.sent_names if w == "tls:sni"), ("header:host", host))
        again = Exchange(ex.transport, ex.method, ex.hosts, ex.port, ex.path,
                         query if query is not None else "" if work.clear_query else ex.query,
                         tuple(h for h in ex.headers if h[0].lower() not in work.drop_headers),
                         body, None, ex.frame_is_text, ex.scheme,
                         target_problem=None if work.canonical_target else ex.target_problem,
                         sent_names=names, connected=ex.connected, id=ex.id, timestamp=ex.timestamp)
        _, recheck, _ = self._judge(pack, again)
        left = [f for f in recheck.findings if f.waived is None]
        if left:
            verdict.decision = Decision.BLOCKED
            verdict.error = "repair did not pass the checks again: " + ", ".join(sorted({f.rule for f in left}))
            return
        verdict.decision = Decision.SCRUBBED
        verdict.repaired = repaired
        verdict.size_out = len(body) if query is None else len(query)

    # -- findings ---------------------------------------------------------------------------

    def _rule_finding(self, work: _Work, pack: Pack, rule: Rule, pointer: str, value: Any,
                      problem: str, path: tuple | None) -> None:
        self._add(work, pack, rule.id, pointer, value, f"{rule.message}: {problem}", rule.promise,
                  rule.severity, path, repair=rule.repair, repair_text=rule.repair_text,
                  unrepairable=rule.repair is None)

    def _unverifiable(self, work: _Work, code: str, message: str) -> None:
        finding = Finding(f"telewarden.body.{code}", "body", message, UNVERIFIABLE, Severity.HIGH,
                          waived=self._waived(f"telewarden.body.{code}"))
        work.findings.append(finding)
        work.unrepairable = work.unrepairable or finding.waived is None
        work.error = message

    def _add(self, work: _Work, pack: Pack, rule_id: str, pointer: str, value: Any, message: str,
             promise: str, severity: Severity, path: tuple | None, *, repair: Any = None,
             repair_text: str | None = None, preview_kind: str | None = None,
             unrepairable: bool = False) -> None:
        """Every finding is made here. A body finding's pointer is rebuilt from its `path` through
        _safe_pointer, so no caller can put a key the sender chose into a record."""
        waived = self._waived(rule_id)
        if unrepairable and waived is None:
            work.unrepairable = True
        if path is not None:
            pointer = self._safe_pointer(pack, path)
        finding = Finding(rule_id, pointer, message, promise, severity,
                          digest=self.digest(value) if value is not None else None,
                          preview=_preview(value, preview_kind) if value is not None else None,
                          repair=repair_text, waived=waived)
        if self.keep_values:  # local reports only (check --show-values): never in to_dict()
            finding.value = value
            if path is not None:
                finding.raw_pointer = format_pointer(path)
            elif pointer.startswith("header:"):
                raw_names = self.__dict__.get("_raw_names", {})
                finding.raw_pointer = "header:" + raw_names.get(pointer[7:], pointer[7:])
        work.findings.append(finding)
        if waived is None and repair is not None and path is not None:
            work.fixes.append(_Fix(path, repair))

    def _waived(self, rule_id: str) -> str | None:
        try:
            return self._waiver_cache[rule_id]
        except KeyError:
            reason = next((r for pat, r in self._waivers if fnmatch.fnmatchcase(rule_id, pat)), None)
            self._waiver_cache[rule_id] = reason
            return reason

    # Set True by a local caller (check --show-values) to get each finding's raw value and pointer
    # in Finding.value / Finding.raw_pointer; neither is ever serialised (Finding.to_dict).
    keep_values = False

    def _safe_pointer(self, pack: Pack, path: tuple) -> str:
        """Known names only: array indices and the names the pack or its schemas know are shown;
        any other key (or header name) is the sender's to choose, and could be a table name, a flag
        or an escape sequence, so it is shown as `(key:<hmac 12 hex>, N chars)` instead."""
        known = _known_names(pack)
        out: list[str | int] = []
        hidden = False
        for p in path:
            if type(p) is int or p in known or (p[:8] == "trailer:" and p[8:] in known):
                out.append(p)
            elif p[:8] == "trailer:":  # the adapter's prefix for a trailer is ours to show
                out.append("trailer:" + self._key_preview(pack, p[8:]))
                hidden = True
            else:
                out.append(self._key_preview(pack, p))
                hidden = True
        safe = format_pointer(out)
        if hidden and self.keep_values and len(path) == 1:  # a header name, for the local report
            raw_names = self.__dict__.setdefault("_raw_names", {})
            if len(raw_names) < 4096:
                raw_names[safe[1:]] = format_pointer(path)[1:]
        return safe

    def _key_preview(self, pack: Pack, key: Any) -> str:
        key = str(key)
        looks = pack.detectors.scan(key) if pack.detectors.first(key) else []
        return (f"(key:{self.digest(key)[12:24]}, {len(key)} chars"
                + (f", looks like {_kinds(looks)})" if looks else ")"))


_MISSING = object()


def _drop(value: Any) -> Any:
    return DROP


def _holds(kind: Kind, doc: Any) -> bool:
    """A kind's `when` values and `has` pointers hold for this document."""
    for p, values in kind.when:
        if _get(doc, p, _MISSING) not in values:
            return False
    for p in kind.has:
        if _get(doc, p, _MISSING) is _MISSING:
            return False
    return True


# -- a message in the query string ----------------------------------------------------------------

class QueryError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # bad-query, too-large, too-many-params


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _decode_component(text: str, what: str) -> str:
    if _BAD_ESCAPE.search(text):
        raise QueryError("bad-query", f"a {what} holds a '%' that is not a percent-escape: servers decode it differently")
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise QueryError("bad-query", f"a {what} does not decode as UTF-8") from None


def parse_query(query: str, *, max_bytes: int = DEFAULT_MAX_BODY, max_params: int = 256) -> dict[str, Any]:
    """The query string as a JSON object, form-decoded (`+` is a space): `a=1&b=2&b=3` ->
    {"a": "1", "b": ["2", "3"]} (a repeated key's values as an array, in order; a key without `=`
    has the value ""). Strict, so that no server reads it differently from how it was judged: an
    undecodable escape, invalid UTF-8, a NUL, a raw `;` (some servers split on it, Go refuses
    it), an empty key, too many pairs or too many bytes raise QueryError (a telewarden.body.*
    finding). Empty pairs (`a=1&&b=2`) are skipped, as every form parser does."""
    query = query.split("#", 1)[0]
    if len(query) > max_bytes:
        raise QueryError("too-large", f"query string of {len(query)} characters exceeds the limit of {max_bytes}")
    if ";" in query:
        raise QueryError("bad-query", "the query string holds a raw ';': servers disagree on whether it separates pairs")
    out: dict[str, Any] = {}
    pairs = [p for p in query.split("&") if p] if query else []
    if len(pairs) > max_params:
        raise QueryError("too-many-params", f"{len(pairs)} pairs in the query string exceed the limit of {max_params}")
    for pair in pairs:
        raw_key, _, raw_value = pair.partition("=")
        key = _decode_component(raw_key, "key")
        value = _decode_component(raw_value, "value")
        if not key:
            raise QueryError("bad-query", "a pair of the query string has an empty key")
        if "\x00" in key or "\x00" in value:
            raise QueryError("bad-query", "the query string holds a NUL: parsers disagree where it ends")
        if key in out:
            old = out[key]
            if type(old) is list:
                old.append(value)
            else:
                out[key] = [old, value]
        else:
            out[key] = value
    return out


def encode_query(doc: Any) -> str:
    """The inverse of parse_query for a repaired message: form encoding (space as `+`, every
    reserved character escaped), an array as the key repeated, in the object's key order."""
    if type(doc) is not dict:
        raise QueryError("bad-query", "a query-string message must be an object")
    parts: list[str] = []
    for key, value in doc.items():
        for v in value if type(value) is list else [value]:
            if type(v) is bool:
                v = "true" if v else "false"
            elif v is None:
                continue
            elif type(v) in (int, float):
                v = str(v)
            elif type(v) is not str:
                raise QueryError("bad-query", f"the value of a query key is a {type(v).__name__}")
            parts.append(f"{quote_plus(str(key), safe='')}={quote_plus(v, safe='')}")
    return "&".join(parts)

# Header names from the HTTP standards (RFC 9110/9111/9112/9113, 6265, 6455, Fetch): public
# vocabulary, not the sender's data, so `header:cookie` can be named. Any other header name
# (`x-acme-customers`) is shown like an unknown JSON key.
STANDARD_HEADERS = frozenset("""
accept accept-charset accept-encoding accept-language accept-ranges access-control-request-headers
access-control-request-method age allow authorization cache-control connection content-disposition
content-encoding content-language content-length content-location content-range content-type cookie
date dnt early-data etag expect forwarded from host if-match if-modified-since if-none-match if-range
if-unmodified-since keep-alive last-modified link location max-forwards origin pragma priority
proxy-authorization proxy-connection range referer retry-after sec-fetch-dest sec-fetch-mode
sec-fetch-site sec-fetch-user sec-websocket-extensions sec-websocket-key sec-websocket-protocol
sec-websocket-version server set-cookie te trailer transfer-encoding upgrade
upgrade-insecure-requests user-agent via warning www-authenticate x-forwarded-for
x-forwarded-host x-forwarded-proto x-requested-with :authority :method :path :scheme :protocol
""".split())

_KNOWN_NAMES: dict[int, tuple[Pack, frozenset[str]]] = {}


def _known_names(pack: Pack) -> frozenset[str]:
    """The names a record may show verbatim for this pack, computed once per loaded pack (first
    use) and cached by identity: property names its kinds' JSON Schemas declare, the tokens of
    its rule and kind pointers, its endpoints' header allow-lists and header rules, and the
    standard HTTP header names."""
    hit = _KNOWN_NAMES.get(id(pack))
    if hit is not None and hit[0] is pack:
        return hit[1]
    from . import schemaplan  # noqa: PLC0415

    names: set[str] = set(STANDARD_HEADERS)
    for kind in pack.kinds:
        names |= schemaplan.known_names(kind.schema)
        for pointer, _ in kind.when:
            names.update(pointer)
        for pointer in kind.has:
            names.update(pointer)
    for rule in pack.rules:
        for pointer in rule.pointers:
            names.update(pointer)
        names.update(rule.headers)
    for endpoint in pack.endpoints:
        names.update(endpoint.header_allow or ())
        names.update(endpoint.header_rules)
    names.discard("*")
    known = frozenset(names)
    if len(_KNOWN_NAMES) >= 64:  # packs are replaced on reload: keep the cache bounded
        _KNOWN_NAMES.clear()
    _KNOWN_NAMES[id(pack)] = (pack, known)
    return known


def _get(doc: Any, path: tuple, default: Any) -> Any:
    for tok in path:
        if type(doc) is dict:
            doc = doc.get(tok, _MISSING)
            if doc is _MISSING:
                return default
        elif type(doc) is list:
            i = tok if type(tok) is int else int(tok) if tok.isdigit() else -1
            if not 0 <= i < len(doc):
                return default
            doc = doc[i]
        else:
            return default
    return doc


def _resolve(doc: Any, pointer: tuple[str, ...]):
    """Yield (path, value) for every place a pointer with `*` segments reaches."""
    frontier: list[tuple[tuple, Any]] = [((), doc)]
    for tok in pointer:
        nxt = []
        for path, node in frontier:
            if type(node) is dict:
                keys = node.keys() if tok == "*" else ([tok] if tok in node else [])
                nxt.extend(((*path, k), node[k]) for k in keys)
            elif type(node) is list:
                idx = range(len(node)) if tok == "*" else ([int(tok)] if tok.isdigit() and int(tok) < len(node) else [])
                nxt.extend(((*path, i), node[i]) for i in idx)
        frontier = nxt
    yield from frontier


def _apply(doc: Any, fix: _Fix) -> Any:
    if not fix.path:
        new = fix.repair(doc)
        return {} if new is DROP else new
    parent = _get(doc, fix.path[:-1], None)
    key = fix.path[-1]
    if isinstance(parent, dict) and key in parent:
        new = fix.repair(parent[key])
        if new is DROP:
            del parent[key]
        else:
            parent[key] = new
    elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
        new = fix.repair(parent[key])
        if new is DROP:
            del parent[key]
        else:
            parent[key] = new
    return doc


def _fix_order(fix: _Fix) -> tuple:
    return len(fix.path), tuple((1, p) if type(p) is int else (0, p) for p in fix.path)


def _kinds(hits: list) -> str:
    return ", ".join(dict.fromkeys(h.detector for h in hits))


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _preview(value: Any, kind: str | None) -> str:
    """Type and size, plus what a detector thinks it is: enough to judge, nothing to leak."""
    if isinstance(value, str):
        text = f"string, {len(value)} chars"
    elif isinstance(value, bool) or value is None:
        text = type(value).__name__
    elif isinstance(value, (int, float)):
        text = "number"
    elif isinstance(value, dict):
        text = f"object, {len(value)} keys"
    elif isinstance(value, list):
        text = f"array, {len(value)} items"
    else:
        text = type(value).__name__
    return f"{text}, looks like {kind}" if kind else text
