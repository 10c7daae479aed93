"""The promise ledger: verdict records added up per pack and per promise.

One `Ledger` is filled from either source and the views (html.py, markdown.py, terminal.py) only
read it:
- recorded flows (`from_flows`): judged here with the engine, as `check` judges them; the body of
  each message is also read for its client version and the schema fields it uses (coverage), and
  unclaimed traffic is counted by host;
- an audit folder (`from_audit`): the chained `audit.jsonl` records, after `audit.verify`. A trail
  holds no bodies, so versions and seen fields are unknown there (said so, never guessed), and it
  never names unclaimed traffic.

Nothing the sender chose reaches a view unless it is safe: pointers and previews are the engine's
(already safe), a version is shown only when it has the shape of a release version and no rule
found fault with it, and raw values only with `show_values` (a local report, marked as such).
Every view escapes every string again for its own format.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..audit import render
from ..engine import strictjson
from ..engine.judge import Engine
from ..engine.model import Decision, Exchange, Mode, Verdict
from ..engine.packs import Kind, Pack, format_pointer, parse_pointer

# Where a message names its client's version, first present wins, for packs that do not say it
# with `versions:` (per kind or per pack; the bundled Hasura pack does).
FALLBACK_VERSION_POINTERS = ("/data/version", "/data/hasura_version", "/version", "/data/server_version",
                             "/server_version")
# A version shown as is: digits and dots, an optional v, short pre-release/build tags. Anything else
# (a dev build's git branch, free text) is the sender's and is shown as a label only.
_RELEASE = re.compile(r"v?\d{1,4}(\.\d{1,6}){1,3}([-+.][0-9A-Za-z]{1,16}){0,4}")
NO_VERSION = "(no version field)"
NOT_RELEASE = "(not a release version)"
NOT_RECORDED = "(not in the audit trail)"
EVIDENCE_LIMIT = 40  # evidence rows per promise (grouped by rule, pointer, preview, digest)
OWN = "telewarden"  # pseudo-promise key for telewarden's own reasons (could not verify, ...)
DECISIONS = ("forwarded", "scrubbed", "blocked")


_REC_TEXT = ("decision", "pack", "endpoint", "kind", "transport", "time", "source")
_FINDING_TEXT = ("rule", "pointer", "message", "promise", "severity", "digest", "preview", "repair", "waived")


def _text_or_none(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return render.raw_value(v, 200)  # a tampered trail could hold any JSON here: shown as text


def _clean(rec: dict[str, Any]) -> dict[str, Any]:
    """The fields the ledger reads, as strings (or None), whatever a record holds."""
    out = {k: _text_or_none(rec.get(k)) for k in _REC_TEXT}
    out["sunk"] = rec.get("sunk") is True
    out["seq"] = rec.get("seq") if isinstance(rec.get("seq"), int) else None
    out["id"] = _text_or_none(rec.get("id"))
    findings = rec.get("findings")
    out["findings"] = [{k: _text_or_none(f.get(k)) for k in _FINDING_TEXT} for f in findings[:1000]
                       if isinstance(f, dict)] if isinstance(findings, list) else []
    for f in out["findings"]:
        f["rule"] = f["rule"] or "(no rule)"
    return out


def _ts(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(ts: float | None) -> str:
    return "-" if ts is None else render._iso(ts)


class Timeline:
    """Messages per time bucket and decision, in bounded memory: buckets start at one second and
    double in width whenever there would be more than `limit` of them."""

    def __init__(self, limit: int = 2048) -> None:
        self.width = 1.0
        self.limit = limit
        self.buckets: dict[int, Counter] = {}
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0

    def add(self, t: float, label: str) -> None:
        self.count += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)
        b = int(t // self.width)
        c = self.buckets.get(b)
        if c is None:
            if len(self.buckets) >= self.limit:
                self.width *= 2
                merged: dict[int, Counter] = {}
                for k, v in self.buckets.items():
                    merged.setdefault(int(k * (self.width / 2) // self.width), Counter()).update(v)
                self.buckets = merged
                b = int(t // self.width)
            c = self.buckets.setdefault(b, Counter())
        c[label] += 1

    def __bool__(self) -> bool:
        return self.count > 0

    def bins(self, n: int) -> tuple[float, float, list[Counter]]:
        """At most `n` equal bins from first to last: (start, bin width, counters)."""
        assert self.first is not None and self.last is not None
        t0, span = self.first, self.last - self.first
        nb = 1 if span <= 0 else max(1, min(n, int(span // self.width) + 1))  # no bin narrower than a bucket
        out = [Counter() for _ in range(nb)]
        for k, c in self.buckets.items():
            mid = max(t0, min(self.last, (k + 0.5) * self.width))
            i = 0 if span <= 0 else min(nb - 1, int((mid - t0) / span * nb))
            out[i].update(c)
        return t0, (span / nb if span > 0 else 0.0), out

    def totals(self) -> Counter:
        total: Counter = Counter()
        for c in self.buckets.values():
            total.update(c)
        return total


def bump(counter: Counter, key: Any, limit: int = 1000, other: str = "(others)") -> None:
    """Count `key`, but never hold more than `limit` keys: a stream of made-up values (versions,
    host names, unknown keys) cannot grow the ledger without bound."""
    if key in counter or len(counter) < limit:
        counter[key] += 1
    else:
        counter[other] += 1


@dataclass(slots=True)
class Evidence:
    rule: str
    pointer: str
    preview: str
    digest: str
    severity: str
    count: int = 0
    first: float | None = None
    last: float | None = None
    source: str = ""  # the first message showing it (file#index or trail seq)
    waived: str | None = None
    raw: str | None = None  # show_values only: the raw value as render.raw_value shows it
    raw_pointer: str | None = None


@dataclass(slots=True)
class PromiseRow:
    key: str
    text: str
    checked: int = 0  # messages some rule citing this promise judged
    broken: int = 0  # of those, messages with an active finding citing it
    waived: int = 0  # messages whose only findings citing it were waived
    rules: Counter = field(default_factory=Counter)  # rule -> messages it broke
    kinds_checked: Counter = field(default_factory=Counter)
    kinds_broken: Counter = field(default_factory=Counter)
    versions_checked: Counter = field(default_factory=Counter)
    versions_broken: Counter = field(default_factory=Counter)
    decisions: Counter = field(default_factory=Counter)  # decision of the broken messages
    first: float | None = None  # of the broken messages
    last: float | None = None
    evidence: dict[tuple, Evidence] = field(default_factory=dict)
    evidence_more: int = 0  # finding groups past EVIDENCE_LIMIT

    ruled: bool = True  # some rule (or the generic checks) cites it; False: quoted, nothing checks it

    @property
    def status(self) -> str:
        if not self.ruled and not self.checked:
            return "no rule"
        if self.broken:
            return "broken"
        if self.waived:
            return "waived"  # kept only because review waived what broke it (--allow)
        return "kept" if self.checked else "not seen"


@dataclass
class PackLedger:
    id: str
    title: str
    source: str
    promises: dict[str, PromiseRow]
    pack: Pack | None = None  # None: records of a pack that is not loaded
    messages: int = 0
    sunk: int = 0
    decisions: Counter = field(default_factory=Counter)
    flagged: int = 0  # messages with an active finding
    findings: int = 0  # active findings
    endpoints: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)  # (kind, version) -> messages
    first: float | None = None
    last: float | None = None
    fields_seen: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # kind -> template -> n
    fields_walked: Counter = field(default_factory=Counter)  # kind -> messages whose body was read
    drift: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    drift_raw: dict[tuple[str, str], set] = field(default_factory=lambda: defaultdict(set))
    by_text: dict[str, str] = field(default_factory=dict)  # promise text -> key
    events: Counter = field(default_factory=Counter)  # event kind (`within` a batch kind) -> events

    def fields_allowed(self, kind_id: str) -> list[str]:
        kind = self._kind(kind_id)
        return sorted(_trie(kind).templates) if kind is not None else []

    def fields_unseen(self, kind_id: str) -> list[str]:
        """Fields the kind's schema allows that never appeared, topmost only (a missing object is
        listed, not every field under it)."""
        seen = self.fields_seen.get(kind_id, Counter())
        out: list[str] = []
        for t in self.fields_allowed(kind_id):
            if t in seen or any(t.startswith(u + "/") for u in out):
                continue
            out.append(t)
        return out

    def _kind(self, kind_id: str) -> Kind | None:
        if self.pack is None:
            return None
        return next((k for k in self.pack.kinds if k.id == kind_id), None)


@dataclass
class Source:
    label: str  # file or folder name
    what: str  # "recording" or "audit trail"
    messages: int = 0
    passed: int = 0
    chain: tuple[int, str] | None = None  # audit.verify's (status, report)
    problems: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)


class Ledger:
    def __init__(self, packs: Iterable[Pack], *, mode: str = "scrub", show_values: bool = False,
                 waivers: dict[str, str] | None = None) -> None:
        self.mode = mode
        self.show_values = show_values
        self.waivers = dict(waivers or {})
        self.packs: dict[str, PackLedger] = {}
        self._own: dict[str, dict[str, str]] = {}
        for p in packs:
            self.packs[p.id] = _pack_ledger(p)
        self.sources: list[Source] = []
        self.unclaimed: Counter = Counter()  # host -> messages passed through
        self.timeline = Timeline()  # judged messages over time, by decision
        self.versions_known = False  # bodies were read (recordings); False for trails only
        self.generated = render._iso(datetime.now().timestamp())
        self.render_ms: float | None = None

    # -- filling -----------------------------------------------------------------------------

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.packs.values())

    def add(self, rec: dict[str, Any], *, version: str | None = NOT_RECORDED, walked: bool = False,
            fields: Iterable[str] = (), open_keys: Iterable[tuple[str, str]] = (), values: list[tuple[str | None, Any]] | None = None,
            events: Iterable[tuple[str, list[str], list[tuple[str, str]]]] = ()) -> None:
        """One judged message as its record (render.record or an audit.jsonl line)."""
        rec = _clean(rec)
        decision = rec["decision"]
        if decision not in DECISIONS:
            return
        pack_id = rec["pack"] or "(no pack)"
        pl = self.packs.get(pack_id)
        if pl is None:
            pl = self.packs[pack_id] = PackLedger(pack_id, pack_id, "(pack not loaded: promises as the records quote them)", {})
        kind = rec["kind"] or None
        endpoint = rec["endpoint"] or None
        t = _ts(rec["time"])
        findings = rec["findings"]
        active = [f for f in findings if not f.get("waived")]
        label = decision + ("!" if decision == "forwarded" and active else "")
        pl.messages += 1
        pl.decisions[decision] += 1
        pl.sunk += rec["sunk"]
        pl.flagged += bool(active)
        pl.findings += len(active)
        pl.endpoints[endpoint or "(unknown endpoint)"] += 1
        pl.kinds[kind or "(unknown kind)"] += 1
        if version is not None:
            bump(pl.versions, (kind or "(unknown kind)", version), 500, ("(others)", "(other versions)"))
        if t is not None:
            pl.first = t if pl.first is None else min(pl.first, t)
            pl.last = t if pl.last is None else max(pl.last, t)
            self.timeline.add(t, label)
        if kind is not None:
            for tmpl in fields:
                pl.fields_seen[kind][tmpl] += 1
            if walked:
                pl.fields_walked[kind] += 1
            for k, kfields, kopen in [(kind, (), open_keys), *events]:
                if k != kind:  # an event of a batch, judged by its own kind
                    bump(pl.events, k, 200, "(other events)")
                    pl.fields_walked[k] += 1
                    for tmpl in kfields:
                        pl.fields_seen[k][tmpl] += 1
                for parent, raw in kopen:
                    where = (parent or "") + "/(a key the schema does not name)"
                    if (k, where) in pl.drift or len(pl.drift) < 500:
                        pl.drift[(k, where)]["(open object)"] += 1
                    if self.show_values and len(pl.drift_raw[(k, where)]) < 50:
                        pl.drift_raw[(k, where)].add(raw)
        # promises: which ones judged this message, which ones it broke
        cited: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        for i, f in enumerate(findings):
            cited[self._promise_key(pl, f, kind or "(unknown kind)", version)].append((i, f))
            if f["rule"].endswith(".schema.unknown-key"):
                where = (kind or "(unknown kind)", f["pointer"] or "(message)")
                if where not in pl.drift and len(pl.drift) >= 500:
                    where = (kind or "(unknown kind)", "(more places)")
                bump(pl.drift[where], f["preview"] or "", 50)
                if self.show_values and values is not None and i < len(values) and values[i][0]:
                    if len(pl.drift_raw[where]) < 50:
                        pl.drift_raw[where].add(values[i][0])
        scope = _scope(pl.pack, rec["transport"] or "", endpoint, kind) if pl.pack is not None else frozenset()
        own = {k for k in pl.promises if k.startswith(OWN)}  # telewarden's own reasons hold for every message
        for key in set(scope) | set(cited) | own:
            row = pl.promises.get(key)
            if row is None:
                text = next((str(f.get("promise", "")) for _, f in cited.get(key, [])), key)
                row = pl.promises[key] = PromiseRow(key, text)
            row.checked += 1
            row.kinds_checked[kind or "(unknown kind)"] += 1
            if version is not None:
                bump(row.versions_checked, version, 500, "(other versions)")
            hits = cited.get(key, [])
            live = [(i, f) for i, f in hits if not f.get("waived")]
            if not live:
                row.waived += bool(hits)
            else:
                row.broken += 1
                row.kinds_broken[kind or "(unknown kind)"] += 1
                if version is not None:
                    bump(row.versions_broken, version, 500, "(other versions)")
                row.decisions[decision] += 1
                for r in sorted({f["rule"] for _, f in live}):
                    bump(row.rules, r, 500, "(other rules)")
                if t is not None:
                    row.first = t if row.first is None else min(row.first, t)
                    row.last = t if row.last is None else max(row.last, t)
            for i, f in hits:
                self._evidence(row, f, t, rec, values[i] if values is not None and i < len(values) else None)

    def _promise_key(self, pl: PackLedger, f: dict, kind: str, version: str | None) -> str:
        text = str(f.get("promise", ""))
        key = pl.by_text.get(text)
        if key is not None:
            return key
        # telewarden's own reasons (could not verify the message, a transport it cannot judge)
        own = self._own.setdefault(pl.id, {})
        if text not in own:
            own[text] = f"{OWN}:{len(own) + 1}"
            # every earlier message of the pack was held to it too (this one is counted by the caller)
            row = pl.promises.setdefault(own[text], PromiseRow(own[text], text))
            row.checked = pl.messages - 1
            row.kinds_checked = Counter(pl.kinds)
            row.kinds_checked[kind] -= 1
            for (_, v), n in pl.versions.items():
                row.versions_checked[v] += n
            if version is not None:
                row.versions_checked[version] -= 1
            row.kinds_checked, row.versions_checked = +row.kinds_checked, +row.versions_checked
        return own[text]

    def _evidence(self, row: PromiseRow, f: dict, t: float | None, rec: dict, value: tuple | None) -> None:
        key = (f.get("rule"), f.get("pointer"), f.get("preview"), f.get("digest"), f.get("waived"))
        ev = row.evidence.get(key)
        if ev is None:
            if len(row.evidence) >= EVIDENCE_LIMIT:
                row.evidence_more += 1
                return
            ev = row.evidence[key] = Evidence(
                str(f.get("rule", "")), str(f.get("pointer") or "(message)"), str(f.get("preview") or ""),
                str(f.get("digest") or ""), str(f.get("severity") or ""), source=str(rec.get("source") or rec.get("seq") or rec.get("id") or ""),
                waived=f.get("waived"))
            if self.show_values and value is not None:
                raw_pointer, raw = value
                ev.raw_pointer = raw_pointer if raw_pointer and raw_pointer != ev.pointer else None
                ev.raw = render.raw_value(raw, 400) if f.get("preview") else None
        ev.count += 1
        if t is not None:
            ev.first = t if ev.first is None else min(ev.first, t)
            ev.last = t if ev.last is None else max(ev.last, t)

    def add_passed(self, ex: Exchange) -> None:
        bump(self.unclaimed, ex.hosts[0] if ex.hosts else "(no host name)", 10000, "(other hosts)")

    # -- reading -----------------------------------------------------------------------------

    @property
    def broken(self) -> bool:
        return any(r.broken for p in self.packs.values() for r in p.promises.values())

    @property
    def chain_ok(self) -> bool:
        return all(s.chain is None or s.chain[0] == 0 for s in self.sources)

    def totals(self) -> dict[str, Any]:
        """The figures `check` prints, for comparison: messages, with findings, findings, decisions."""
        d: Counter = Counter()
        for p in self.packs.values():
            d.update(p.decisions)
        return {"messages": self.messages, "flagged": sum(p.flagged for p in self.packs.values()),
                "findings": sum(p.findings for p in self.packs.values()), "decisions": dict(d),
                "passed_through": sum(self.unclaimed.values())}

    def time_range(self) -> tuple[float | None, float | None]:
        return self.timeline.first, self.timeline.last

    def rows(self, pl: PackLedger) -> list[PromiseRow]:
        """Vendor promises in pack order, then telewarden's own reasons, then promises the records
        quote that the loaded pack does not (pack changed since)."""
        order = list(pl.pack.promises) if pl.pack is not None else []
        rest = [k for k in pl.promises if k not in order]
        return [pl.promises[k] for k in order if k in pl.promises] + [pl.promises[k] for k in rest]


def _pack_ledger(p: Pack) -> PackLedger:
    cited = {r.promise for r in p.rules} | {p.generic_promise}
    return PackLedger(p.id, p.title, p.source, {k: PromiseRow(k, t, ruled=t in cited) for k, t in p.promises.items()},
                      pack=p, by_text={t: k for k, t in p.promises.items()})


_SCOPES: dict[tuple, frozenset[str]] = {}


def _scope(pack: Pack, transport: str, endpoint: str | None, kind: str | None) -> frozenset[str]:
    """The promises that judged a message: the pack's generic promise (schema, detectors, shapes)
    for every message, and the promise of every rule that applies to it: a header rule to each
    HTTP request on its endpoints, a body rule to each message of a kind it can reach."""
    key = (id(pack), transport, endpoint, kind)
    hit = _SCOPES.get(key)
    if hit is not None:
        return hit
    by_text = {t: k for k, t in pack.promises.items()}
    keys = {by_text[pack.generic_promise]} if pack.generic_promise in by_text else set()
    kobj = next((k for k in pack.kinds if k.id == kind), None) if kind is not None else None
    body_rules = {id(r) for r, _, _ in kobj.checks} if kobj is not None else set()
    batch = getattr(kobj, "batch", None)
    for event_kind in (batch.kinds if batch is not None else ()):  # its events are judged by these
        body_rules |= {id(r) for r, _, _ in event_kind.checks}
    for r in pack.rules:
        if r.promise not in by_text or endpoint is None or (r.endpoints is not None and endpoint not in r.endpoints):
            continue
        if (r.headers and transport == "http") or id(r) in body_rules:
            keys.add(by_text[r.promise])
    out = frozenset(keys)
    if len(_SCOPES) > 4096:
        _SCOPES.clear()
    _SCOPES[key] = out
    return out


# -- message bodies: version and fields ------------------------------------------------------------

class _Trie:
    __slots__ = ("templates", "root")

    def __init__(self) -> None:
        self.templates: set[str] = set()
        self.root: dict = {}


_TRIES: dict[int, tuple[Kind, _Trie]] = {}


def _trie(kind: Kind) -> _Trie:
    hit = _TRIES.get(id(kind))
    if hit is not None and hit[0] is kind:
        return hit[1]
    trie = _Trie()
    _schema_walk(kind.schema, kind.schema, (), trie, 0)
    if len(_TRIES) > 256:
        _TRIES.clear()
    _TRIES[id(kind)] = (kind, trie)
    return trie


def _resolve_ref(node: Any, root: dict) -> Any:
    for _ in range(16):
        if not (isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/")):
            return node
        target: Any = root
        for tok in node["$ref"][2:].split("/"):
            target = target.get(tok.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        node = {**{k: v for k, v in node.items() if k != "$ref"}, **target} if len(node) > 1 else target
    return node


def _schema_walk(node: Any, root: dict, path: tuple, trie: _Trie, depth: int) -> None:
    """Every field a message valid under the schema can have, as pointer templates (`*`: any
    array item, or any key where the schema names none)."""
    node = _resolve_ref(node, root)
    if depth > 32 or not isinstance(node, dict):
        return
    for kw in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(kw) or []:
            _schema_walk(sub, root, path, trie, depth + 1)
    for kw in ("then", "else"):
        if kw in node:
            _schema_walk(node[kw], root, path, trie, depth + 1)
    here = _node(trie, path)
    if "properties" in node:  # an object the schema describes: closed, or open to keys it does not name
        closed = node.get("additionalProperties") is False
        here["\0closed"] = closed and here.get("\0closed", True)
    for key, sub in (node.get("properties") or {}).items():
        p = (*path, key)
        trie.templates.add(format_pointer(p))
        _node(trie, p)
        _schema_walk(sub, root, p, trie, depth + 1)
    extra = [node["additionalProperties"]] if isinstance(node.get("additionalProperties"), dict) else []
    extra += list((node.get("patternProperties") or {}).values())
    if isinstance(node.get("items"), dict):
        extra.append(node["items"])
    for sub in extra:
        p = (*path, "*")
        trie.templates.add(format_pointer(p))
        _node(trie, p)
        _schema_walk(sub, root, p, trie, depth + 1)


def _node(trie: _Trie, path: tuple) -> dict:
    node = trie.root
    for i, tok in enumerate(path):
        node = node.setdefault(tok, {})
        node.setdefault("\0path", format_pointer(path[:i + 1]))
    return node


def body_facts(kind: Kind, doc: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """The schema fields (templates) this body uses, and keys at objects the schema leaves open
    that it does not name (parent template, raw key); keys at closed objects are the engine's
    `schema.unknown-key` findings."""
    trie = _trie(kind)
    seen: set[str] = set()
    open_keys: list[tuple[str, str]] = []
    stack: list[tuple[Any, dict]] = [(doc, trie.root)]
    budget = 20000
    while stack and budget:
        value, node = stack.pop()
        budget -= 1
        if type(value) is dict:
            for k, v in value.items():
                child = node.get(k) if k[:1] != "\0" else None
                if child is None:
                    child = node.get("*")
                    if child is None:
                        if node.get("\0closed") is False:  # None: an object the schema leaves free
                            open_keys.append((node.get("\0path", ""), k))
                        continue
                seen.add(child["\0path"])
                if type(v) is dict or type(v) is list:
                    stack.append((v, child))
        elif type(value) is list:
            child = node.get("*")
            if child is not None and value:
                seen.add(child["\0path"])
                stack.extend((v, child) for v in value if type(v) is dict or type(v) is list)
    return list(seen), open_keys


def _at(doc: Any, ptr: tuple) -> Any:
    for tok in ptr:
        if isinstance(doc, dict) and tok in doc:
            doc = doc[tok]
        elif isinstance(doc, list) and isinstance(tok, str) and tok.isdigit() and int(tok) < len(doc):
            doc = doc[int(tok)]
        else:
            return _ABSENT
    return doc


def batch_facts(kind: Kind, doc: Any, limit: int = 1000) -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    """Per event of a batch kind's message (`batch: {at: ...}`): its event kind, as the engine
    chooses it (first of the kinds `within` this one whose `when`/`has` hold), and its fields."""
    batch = getattr(kind, "batch", None)
    items = _at(doc, tuple(batch.at)) if batch is not None else _ABSENT
    if not isinstance(items, list):
        return []
    out = []
    for ev in items[:limit]:
        ek = None
        if batch.index is not None:
            ptr, table = batch.index
            value = _at(ev, tuple(ptr))
            ek = table.get(value) if isinstance(value, str) else None
        else:
            ek = next((k for k in batch.kinds if all(_at(ev, tuple(p)) in vs for p, vs in k.when)
                       and all(_at(ev, tuple(p)) is not _ABSENT for p in k.has)), None)
        if ek is None:
            out.append(("(unknown event)", [], []))
        else:
            f, o = body_facts(ek, ev)
            out.append((ek.id, f, o))
    return out


_VERSION_POINTERS: dict[tuple[int, int], tuple[Any, Any, tuple]] = {}


def version_pointers(pack: Pack | None, kind: Kind | None) -> tuple[tuple[str, ...], ...]:
    """The kind's `versions:` pointers, else the pack's, else the fallback list (cached per
    loaded pack and kind)."""
    key = (id(pack), id(kind))
    hit = _VERSION_POINTERS.get(key)
    if hit is not None and hit[0] is pack and hit[1] is kind:
        return hit[2]
    if len(_VERSION_POINTERS) > 1024:
        _VERSION_POINTERS.clear()
    found = _version_pointers(pack, kind)
    _VERSION_POINTERS[key] = (pack, kind, found)
    return found


def _version_pointers(pack: Pack | None, kind: Kind | None) -> tuple[tuple[str, ...], ...]:
    if pack is not None and not getattr(pack, "versions", None) and any(getattr(k, "versions", None) for k in pack.kinds) \
            and not getattr(kind, "versions", None):
        return ()  # the pack says where versions are, and this kind names none
    for owner in (kind, pack):
        ptrs = getattr(owner, "versions", None) if owner is not None else None
        if ptrs:
            return tuple(p if isinstance(p, tuple) else parse_pointer(p) for p in ptrs)
    return tuple(parse_pointer(p) for p in FALLBACK_VERSION_POINTERS)


def client_version(pack: Pack | None, kind: Kind | None, doc: Any, flagged: set[str], show_values: bool) -> str:
    """The client version a body names, as the report may show it."""
    for ptr in version_pointers(pack, kind):
        node = doc
        for tok in ptr:
            if isinstance(node, dict) and tok in node:
                node = node[tok]
            elif isinstance(node, list) and tok.isdigit() and int(tok) < len(node):
                node = node[int(tok)]
            else:
                node = _ABSENT
                break
        if node is _ABSENT or node is None or node == "":
            continue
        if isinstance(node, str) and len(node) <= 48 and _RELEASE.fullmatch(node) and format_pointer(ptr) not in flagged:
            return node
        return f"{NOT_RELEASE} {render.raw_value(node, 60)}" if show_values else NOT_RELEASE
    return NO_VERSION


_ABSENT = object()


# -- builders ---------------------------------------------------------------------------------------

def observe(ledger: Ledger, engine: Engine, ex: Exchange, verdict: Verdict, source: str | None,
            deep: bool = True, fields_too: bool = True) -> None:
    """Add one judged exchange: its record, and (deep) its client version and (fields_too) the
    schema fields its body uses. `check` reads versions of flagged messages only, and no fields."""
    if verdict.decision is Decision.PASSED_THROUGH:
        ledger.add_passed(ex)
        return
    rec = render.record(verdict, ex, source)
    values = [(f.raw_pointer, f.value) for f in verdict.findings] if ledger.show_values else None
    version, fields, open_keys, walked, events = NO_VERSION, [], [], False, []
    pack = next((p for p in engine.packs if p.id == verdict.pack), None)
    kind = next((k for k in pack.kinds if k.id == verdict.kind), None) if pack is not None and verdict.kind else None
    if not deep or (not fields_too and not verdict.active_findings):
        version = NOT_RECORDED
    elif kind is not None and ex.body_problem is None:
        doc = message_doc(engine, pack, verdict, ex)
        if doc is not _ABSENT:
            flagged = {f.pointer for f in verdict.findings}
            version = client_version(pack, kind, doc, flagged, ledger.show_values)
            if fields_too:
                fields, open_keys = body_facts(kind, doc)
                walked = True
                events = batch_facts(kind, doc)
    ledger.versions_known = ledger.versions_known or (deep and fields_too)
    ledger.add(rec, version=version, walked=walked, fields=fields, open_keys=open_keys, values=values, events=events)


def message_doc(engine: Engine, pack: Pack | None, verdict: Verdict, ex: Exchange) -> Any:
    """The message as the engine judged it: the JSON body, or the query string of an endpoint whose
    message is its query (`message: query`), parsed the engine's way; _ABSENT when there is none."""
    endpoint = next((e for e in pack.endpoints if e.id == verdict.endpoint), None) if pack is not None else None
    try:
        if getattr(endpoint, "message", None) == "query":
            from ..engine.judge import parse_query  # noqa: PLC0415

            return parse_query(ex.query, max_bytes=engine.limits.max_body)
        if not ex.body:
            return _ABSENT
        return strictjson.loads(ex.body, max_bytes=engine.limits.max_body, max_depth=engine.limits.max_depth)
    except Exception:  # noqa: BLE001 - what the engine could not parse is its finding, not the ledger's
        return _ABSENT


def from_flows(ledger: Ledger, engine: Engine, paths: list[Path], mode: Mode, max_body: int) -> None:
    from ..recordings.flows import ReadLog, read  # noqa: PLC0415 (mitmproxy import only when reading flows)

    for path in paths:
        log = ReadLog()
        src = Source(path.name, "recording")
        ledger.sources.append(src)
        for rec in read(path, max_body, log):
            try:
                verdict = engine.inspect(rec.exchange, mode)
            except Exception as e:  # noqa: BLE001 - one message must not end the report
                log.problem(f"{path}: {rec.source}: internal error while judging ({type(e).__name__}); not judged")
                continue
            if verdict.decision is Decision.PASSED_THROUGH:
                src.passed += 1
            else:
                src.messages += 1
            observe(ledger, engine, rec.exchange, verdict, rec.source)
        src.problems, src.skipped, src.notes = list(log.problems), dict(log.skipped), dict(log.notes)


def from_audit(ledger: Ledger, folder: Path) -> None:
    from ..audit import trail as audit  # noqa: PLC0415

    src = Source(str(folder), "audit trail")
    ledger.sources.append(src)
    src.chain = audit.verify(folder)
    if src.chain[0] == 2:
        src.problems.append(src.chain[1])
        return
    for rec in audit.iter_records(folder):
        if not isinstance(rec, dict) or not isinstance(rec.get("findings"), list):
            continue
        if "source" not in rec and "seq" in rec:
            rec = {**rec, "source": f"seq {rec['seq']}"}
        ledger.add(rec, version=NOT_RECORDED)
        src.messages += 1


class CheckTap:
    """For `check`: judges through the engine and adds each verdict to a ledger (records, no body
    reading beyond what check does), then writes the terminal summary."""

    def __init__(self, engine: Engine, mode: str, show_values: bool = False, waivers: dict | None = None) -> None:
        self.engine = engine
        self.ledger = Ledger(engine.packs, mode=mode, show_values=show_values, waivers=waivers)
        inspect = engine.inspect

        def tapped(ex: Exchange, m: Mode) -> Verdict:
            verdict = inspect(ex, m)
            try:
                observe(self.ledger, engine, ex, verdict, None, deep=True, fields_too=False)
            except Exception:  # noqa: BLE001 - the summary must never change check's verdicts
                pass
            return verdict

        engine.inspect = tapped  # type: ignore[method-assign]

    def write(self, out) -> None:
        from .terminal import summary  # noqa: PLC0415

        out.write(summary(self.ledger, for_check=True))
