"""Rule packs: YAML in, compiled objects out. All compiling happens here, once, at load.

A pack that does not load raises PackError naming the file, the rule (or kind, endpoint) and
the reason; nothing half-loads. `jsonschema` meta-validates packs and kind schemas (its error
messages are better); `jsonschema_rs` builds the per-message validators (it is ~100x faster).
"""

from __future__ import annotations

import ipaddress

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import yaml

from . import schemaplan
from .detectors import DETECTOR_PATTERNS, DetectorSet
from .patterns import Pattern, PatternError, compile_any, compile_pattern
from .model import Severity, Transport
from .routes import RouteError, RouteSet


class PackError(Exception):
    """A pack that cannot be loaded; the message names the file, the item and the reason."""


def bundled_dir(name: str) -> Path:
    """`rules` or `schemas` as shipped: inside the wheel, or at the top of a checkout."""
    packaged = Path(str(resources.files("telewarden"))) / "_bundled" / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / name  # src/telewarden/engine/packs.py
    if checkout.is_dir():
        return checkout
    raise PackError(f"bundled {name}/ not found (looked in {packaged} and {checkout})")


Pointer = tuple[str, ...]  # JSON pointer split into tokens; "*" matches any key or index


def parse_pointer(text: str) -> Pointer:
    if text == "":
        return ()
    if not text.startswith("/"):
        raise ValueError(f"JSON pointer {text!r} must start with '/'")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/"))


def format_pointer(tokens: Iterable[str | int]) -> str:
    return "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


# A check returns None when the value complies, else a short reason (never the value itself).
Check = Callable[[Any], str | None]
Repair = Callable[[Any], Any]  # compliant replacement of the value; DROP means remove the key
DROP = object()


@dataclass(slots=True)
class Rule:
    id: str
    promise: str
    severity: Severity
    message: str
    kinds: frozenset[str] | None
    endpoints: frozenset[str] | None
    pointers: tuple[Pointer, ...]
    headers: tuple[str, ...]
    check: Check
    repair: Repair | None
    repair_text: str | None


@dataclass(slots=True)
class Kind:
    id: str
    title: str
    endpoints: frozenset[str]
    when: tuple[tuple[Pointer, tuple[Any, ...]], ...]
    has: tuple[Pointer, ...]
    validator: Any  # jsonschema_rs validator
    schema_path: Path
    schema: dict = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    # (rule, pointer, has a `*`) for every pointer of every rule that can exist in this kind
    checks: list[tuple[Rule, Pointer, bool]] = field(default_factory=list)
    owned: dict = field(default_factory=dict)  # trie of pointers whose strings rules judge
    scan: Any = True  # schemaplan.scan_plan: where a valid message can hold free strings
    # An event kind (`within: <batch kind>`) is chosen only for the items of that kind's batch.
    within: str | None = None
    batch: "Batch | None" = None  # this kind's message holds a batch of events
    versions: tuple[Pointer, ...] = ()  # where its messages name the client's version (the ledger groups by it)


@dataclass(slots=True)
class Batch:
    """`batch: {at: /events, unrepairable: drop}`: the array at `at` holds events, each judged by
    its own event kind (the kinds declared `within` this one, first match of `when`/`has`)."""

    at: Pointer
    drop: bool  # scrub drops an event it cannot repair (else the whole message is blocked)
    kinds: list["Kind"] = field(default_factory=list)
    # When every event kind is chosen by strings at one same pointer (`when: {/type: [...]}`),
    # (pointer, {value: first kind}): one dict look-up per event instead of trying each kind.
    index: tuple[Pointer, dict[str, "Kind"]] | None = None

    def index_kinds(self) -> None:
        pointers = {p for k in self.kinds for p, _ in k.when}
        if len(pointers) != 1 or any(k.has or len(k.when) != 1 for k in self.kinds) or \
                any(type(v) is not str for k in self.kinds for _, vs in k.when for v in vs):
            self.index = None
            return
        table: dict[str, Kind] = {}
        for k in self.kinds:
            for v in k.when[0][1]:
                table.setdefault(v, k)
        self.index = (next(iter(pointers)), table)


@dataclass(slots=True)
class Endpoint:
    id: str
    transport: Transport
    paths: frozenset[str]
    methods: frozenset[str]
    header_allow: frozenset[str] | None  # None: any header
    header_rules: dict[str, list[Rule]]
    forbid_query: bool
    message: str = "body"  # "query": the message is the query string, parsed into a JSON object
    respond: dict | None = None  # `respond: {status, headers, body}`: what --sink answers, in the vendor's shape


@dataclass(slots=True)
class Pack:
    id: str
    title: str
    source: str
    file: str
    promises: dict[str, str]
    generic_promise: str
    hosts: frozenset[str]
    host_suffixes: tuple[str, ...]
    endpoints: list[Endpoint]
    kinds: list[Kind]
    rules: list[Rule]
    detectors: DetectorSet
    # Addresses the vendor's telemetry hosts use (`addresses:` CIDRs), so that a connection with
    # no name (CONNECT to an IP without SNI, transparent mode) is still claimed.
    addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    value_files: tuple[Path, ...] = ()  # value-set files the pack references: a reload watches them too
    versions: tuple[Pointer, ...] = ()  # client version pointers for kinds without their own `versions`

    def claims(self, host: str) -> bool:
        return host in self.hosts or any(host.endswith(s) for s in self.host_suffixes)

    def files(self) -> set[Path]:
        """The pack file and every schema it loaded: what a reload watches."""
        return {Path(self.file), *(k.schema_path for k in self.kinds), *self.value_files}

    def endpoint_for(self, path: str) -> list[Endpoint]:
        return [e for e in self.endpoints if path in e.paths]


class ValueSet:
    """A named closed set of values: exact members (type-sensitive, as `enum`) and, for strings,
    full-match patterns. Inline in the pack or read from a file next to it, so a pack author can
    update a value list without touching Python."""

    __slots__ = ("name", "exact", "_strings", "patterns", "source")

    def __init__(self, name: str, items: Sequence[Any], source: str = "") -> None:
        self.name, self.source = name, source
        self.exact: list[Any] = []
        patterns: list[str] = []
        for item in items:
            if isinstance(item, dict):
                if "pattern" in item:
                    patterns.append(item["pattern"])
                else:
                    self.exact.append(item["value"])
            else:
                self.exact.append(item)
        self._strings = frozenset(v for v in self.exact if isinstance(v, str))
        self.patterns: Pattern | None = compile_any(patterns) if patterns else None  # one RE2 match for all

    def __contains__(self, v: Any) -> bool:
        if isinstance(v, str):
            return v in self._strings or (self.patterns is not None and self.patterns.fullmatch(v))
        return any(v == x and type(v) is type(x) for x in self.exact)


_meta_validator: jsonschema.Draft202012Validator | None = None


def _pack_meta_validator() -> jsonschema.Draft202012Validator:
    global _meta_validator
    if _meta_validator is None:
        schema = json.loads((bundled_dir("schemas") / "rulepack.schema.json").read_text())
        _meta_validator = jsonschema.Draft202012Validator(schema)
    return _meta_validator


def _where(path: Sequence[Any], data: dict) -> str:
    """Name the item an error sits in, e.g. "rule 'hasura.cli.error'"."""
    if len(path) >= 2 and path[0] in ("rules", "kinds", "endpoints") and isinstance(path[1], int):
        items = data.get(path[0]) or []
        item = items[path[1]] if path[1] < len(items) else {}
        ident = item.get("id") if isinstance(item, dict) else None
        label = {"rules": "rule", "kinds": "kind", "endpoints": "endpoint"}[path[0]]
        return f"{label} {ident!r}" if ident else f"{label} #{path[1] + 1}"
    return "pack"


def load_pack(path: Path, schema_dirs: Sequence[Path] = ()) -> Pack:
    """Load and compile one pack file. Raises PackError naming file, item and reason."""
    name = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PackError(f"{name}: cannot read: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PackError(f"{name}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise PackError(f"{name}: a pack is a YAML mapping, got {type(data).__name__}")
    errors = sorted(_pack_meta_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        loc = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise PackError(f"{name}: {_where(list(e.absolute_path), data)}: {e.message} (at {loc})")
    return _Compiler(path, data, [path.parent, path.parent.parent / "schemas", *schema_dirs,
                                  bundled_dir("schemas")]).pack()


_VALUE_FILE_SCHEMA = {
    "type": "object", "required": ["values"],
    "properties": {"source": {"type": "string"}, "values": {"$ref": "#/$defs/items"}},
    "$defs": {"items": {"type": "array", "items": {"anyOf": [
        {"type": ["string", "number", "boolean", "null"]},
        {"type": "object", "required": ["value"], "not": {"required": ["pattern"]}},
        {"type": "object", "required": ["pattern"], "properties": {"pattern": {"type": "string"}},
         "not": {"required": ["value"]}}]}}},
}


class _Compiler:
    def __init__(self, path: Path, data: dict, schema_dirs: list[Path]) -> None:
        self.path, self.data, self.schema_dirs = path, data, schema_dirs

    def fail(self, where: str, reason: str) -> PackError:
        return PackError(f"{self.path}: {where}: {reason}")

    def pack(self) -> Pack:
        d = self.data
        promises = d["promises"]
        if d["generic_promise"] not in promises:
            raise self.fail("pack", f"generic_promise {d['generic_promise']!r} is not among promises")
        routes = {}
        for rname, templates in (d.get("routes") or {}).items():
            try:
                routes[rname] = RouteSet(rname, templates)
            except RouteError as e:
                raise self.fail(f"routes {rname!r}", str(e)) from None
        self.value_files: list[Path] = []
        self.values = {vname: self._values(vname, spec) for vname, spec in (d.get("values") or {}).items()}
        det = d.get("detectors") or {}
        extra = {}
        for dname, pattern in (det.get("extra") or {}).items():
            try:
                compile_pattern(pattern)
            except PatternError as e:
                raise self.fail(f"detector {dname!r}", f"bad regex: {e}") from None
            extra[dname] = pattern
        try:
            detectors = DetectorSet(det.get("builtin", list(DETECTOR_PATTERNS)), extra)
        except PatternError as e:
            raise self.fail("detectors", str(e)) from None

        endpoint_ids = self._unique("endpoint", [e["id"] for e in d["endpoints"]])
        kind_ids = self._unique("kind", [k["id"] for k in d["kinds"]])
        self._unique("rule", [r["id"] for r in d["rules"]])
        rules = [self._rule(r, promises, routes, kind_ids, endpoint_ids) for r in d["rules"]]

        hosts: set[str] = set()
        suffixes: list[str] = []
        endpoints = []
        for e in d["endpoints"]:
            for h in e["hosts"]:
                (suffixes.append(h[1:]) if h.startswith("*.") else hosts.add(h))
            header_rules: dict[str, list[Rule]] = {}
            for r in rules:
                if r.headers and (r.endpoints is None or e["id"] in r.endpoints):
                    for h in r.headers:
                        header_rules.setdefault(h, []).append(r)
            allow = e.get("headers", {}).get("allow")
            endpoints.append(Endpoint(
                id=e["id"], transport=Transport(e["transport"]), paths=frozenset(e["paths"]),
                methods=frozenset(e.get("methods") or (["GET"] if e["transport"] == "websocket" else ["POST"])),
                header_allow=frozenset(allow) if allow is not None else None,
                header_rules=header_rules, message=e.get("message", "body"), respond=e.get("respond"),
                forbid_query=e.get("query", "forbid") == "forbid" and e.get("message") != "query"))

        kinds = [self._kind(k, endpoint_ids) for k in d["kinds"]]
        by_id = {k.id: k for k in kinds}
        for k in kinds:
            if k.within is not None:
                parent = by_id.get(k.within)
                if parent is None or parent.batch is None:
                    raise self.fail(f"kind {k.id!r}", f"within {k.within!r}: not a kind with a batch")
                parent.batch.kinds.append(k)
        for k in kinds:
            if k.batch is not None:
                k.batch.index_kinds()
        for kind in kinds:
            kind.rules = [r for r in rules if r.pointers and (r.kinds is None or kind.id in r.kinds)]
            kind.checks = [(r, p, "*" in p) for r in kind.rules for p in r.pointers
                           if schemaplan.possible(kind.schema, p)]
            kind.scan = schemaplan.scan_plan(kind.schema)
            for r in kind.rules:
                for p in r.pointers:
                    node = kind.owned
                    for tok in p:
                        node = node.setdefault(tok, {})
                    node[None] = r.id  # None marks "owned here"
            if kind.batch is not None:  # the events are judged one by one, by their own kinds
                node = kind.owned
                for tok in kind.batch.at:
                    node = node.setdefault(tok, {})
                node[None] = "batch"
        return Pack(
            id=d["pack"], title=d["title"], source=d["source"], file=str(self.path),
            promises=promises, generic_promise=promises[d["generic_promise"]],
            hosts=frozenset(hosts), host_suffixes=tuple(suffixes), endpoints=endpoints,
            kinds=kinds, rules=rules, detectors=detectors, addresses=self._addresses(d.get("addresses", [])), value_files=tuple(self.value_files),
            versions=self._pointers("pack", d.get("versions") or []))

    def _pointers(self, where: str, items: list[str]) -> tuple[Pointer, ...]:
        try:
            return tuple(parse_pointer(p) for p in items)
        except ValueError as e:
            raise self.fail(where, f"versions: {e}") from None

    def _addresses(self, items: list[str]) -> tuple:
        nets = []
        for item in items:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError as e:
                raise self.fail("addresses", f"{item!r} is not an address or CIDR: {e}") from None
        return tuple(nets)

    def _values(self, vname: str, spec: Any) -> ValueSet:
        """A value set: a list inline, or {file: PATH} relative to the pack (then the bundled rules)."""
        where = f"values {vname!r}"
        if isinstance(spec, list):
            items, source = spec, ""
        else:
            rel = spec["file"]
            found = next((p for p in (self.path.parent / rel, bundled_dir("rules") / rel) if p.is_file()), None)
            if found is None:
                raise self.fail(where, f"value file {rel!r} not found next to the pack or in the bundled rules")
            try:
                data = yaml.safe_load(found.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
                raise self.fail(where, f"value file {found}: not readable YAML: {e}") from None
            err = next(iter(jsonschema.Draft202012Validator(_VALUE_FILE_SCHEMA).iter_errors(data)), None)
            if err is not None:
                loc = "/".join(str(p) for p in err.absolute_path) or "(top)"
                raise self.fail(where, f"value file {found}: {err.message} (at {loc})")
            self.value_files.append(found)
            items, source = data["values"], data.get("source", "")
        err = next(iter(jsonschema.Draft202012Validator(_VALUE_FILE_SCHEMA["$defs"]["items"]).iter_errors(items)), None)
        if err is not None:
            raise self.fail(where, f"{err.message} (at item {'/'.join(map(str, err.absolute_path))})")
        try:
            return ValueSet(vname, items, source)
        except PatternError as e:
            raise self.fail(where, f"bad pattern: {e}") from None

    def _value_set(self, where: str, name: str) -> ValueSet:
        if name not in self.values:
            raise self.fail(where, f"unknown value set {name!r} (define it under values:)")
        return self.values[name]

    def _unique(self, label: str, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise self.fail(f"{label} {i!r}", "id is defined twice")
            seen.add(i)
        return seen

    def _kind(self, k: dict, endpoint_ids: set[str]) -> Kind:
        where = f"kind {k['id']!r}"
        for e in k["endpoints"]:
            if e not in endpoint_ids:
                raise self.fail(where, f"unknown endpoint {e!r}")
        schema_path = next((d / k["schema"] for d in self.schema_dirs if (d / k["schema"]).is_file()), None)
        if schema_path is None:
            raise self.fail(where, f"schema file {k['schema']!r} not found in {', '.join(map(str, self.schema_dirs))}")
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
            jsonschema.Draft202012Validator.check_schema(schema)
            validator = jsonschema_rs.validator_for(schema)
        except (OSError, ValueError) as e:
            raise self.fail(where, f"schema {schema_path}: not valid JSON: {e}") from None
        except jsonschema.SchemaError as e:
            raise self.fail(where, f"schema {schema_path}: not a valid JSON Schema: {e.message}") from None
        except Exception as e:  # jsonschema_rs rejects what it cannot compile
            raise self.fail(where, f"schema {schema_path}: cannot compile: {e}") from None
        try:
            when = tuple((parse_pointer(p), tuple(v)) for p, v in (k.get("when") or {}).items())
            has = tuple(parse_pointer(p) for p in k.get("has") or [])
            batch = Batch(parse_pointer(k["batch"]["at"]), k["batch"].get("unrepairable", "block") == "drop") \
                if "batch" in k else None
        except ValueError as e:
            raise self.fail(where, str(e)) from None
        if batch is not None and (not batch.at or "*" in batch.at):
            raise self.fail(where, "batch 'at' must name one array (no '*', not the whole message)")
        versions = self._pointers(where, k.get("versions") or [])
        for p in versions:
            if not schemaplan.possible(schema, p):
                raise self.fail(where, f"versions: {format_pointer(p)!r} cannot hold a value in a message valid under "
                                       f"the kind's schema")
        return Kind(id=k["id"], title=k.get("title", k["id"]), endpoints=frozenset(k["endpoints"]),
                    when=when, has=has, validator=validator, schema=schema,
                    schema_path=schema_path, within=k.get("within"), batch=batch, versions=versions)

    def _rule(self, r: dict, promises: dict, routes: dict, kind_ids: set[str], endpoint_ids: set[str]) -> Rule:
        where = f"rule {r['id']!r}"
        if r["promise"] not in promises:
            raise self.fail(where, f"promise {r['promise']!r} is not defined under promises")
        for k in r.get("kinds") or []:
            if k not in kind_ids:
                raise self.fail(where, f"unknown kind {k!r}")
        for e in r.get("endpoints") or []:
            if e not in endpoint_ids:
                raise self.fail(where, f"unknown endpoint {e!r}")
        pointers = tuple(parse_pointer(a) for a in r["at"] if a.startswith("/"))
        headers = tuple(a.split(":", 1)[1] for a in r["at"] if a.startswith("header:"))
        (ctype, arg), = r["check"].items()
        scrub = r.get("scrub") or {}
        route = None
        check: Check
        if ctype == "pattern":
            try:
                rx = compile_pattern(arg)
            except PatternError as e:
                raise self.fail(where, f"bad pattern: {e}") from None
            check = lambda v, rx=rx: None if not isinstance(v, str) or rx.fullmatch(v) else "does not match the allowed form"
        elif ctype == "enum":
            allowed = list(arg)
            check = lambda v, a=allowed: None if any(v == x and type(v) is type(x) for x in a) else "not one of the allowed values"
        elif ctype == "equals":
            want = arg
            check = lambda v, w=want: None if (v is None if w is None else (v == w and type(v) is type(w))) else f"must be {json.dumps(w)}"
        elif ctype == "absent":
            check = lambda v: "must not be sent"
        elif ctype == "in":
            vs = self._value_set(where, arg)
            check = lambda v, vs=vs: None if v in vs else f"not in the value set {vs.name!r}"
        elif ctype == "tokens":
            tokens = (self._value_set(where, arg["head"]),
                      self._value_set(where, arg["tail"]) if "tail" in arg else ValueSet("", []),
                      arg.get("separator", " "))
            check = lambda v, t=tokens: _tokens_problem(v, *t)
        else:  # route
            if arg not in routes:
                raise self.fail(where, f"unknown route set {arg!r}")
            route = routes[arg]
            check = lambda v, rs=route: None if not isinstance(v, str) else (None if (res := rs.check(v)).ok else res.reason)
        repair, repair_text = self._repair(where, scrub, route, tokens if ctype == "tokens" else None)
        return Rule(
            id=r["id"], promise=promises[r["promise"]], severity=Severity(r["severity"]),
            message=r.get("message", r["id"]), kinds=frozenset(r["kinds"]) if "kinds" in r else None,
            endpoints=frozenset(r["endpoints"]) if "endpoints" in r else None, pointers=pointers,
            headers=headers, check=check, repair=repair, repair_text=repair_text)

    def _repair(self, where: str, scrub: dict, route: RouteSet | None,
                tokens: tuple | None = None) -> tuple[Repair | None, str | None]:
        if not scrub:
            return None, None
        (rtype, arg), = scrub.items()
        if rtype == "tokens":
            if tokens is None:
                raise self.fail(where, "scrub 'tokens' needs a 'tokens' check")
            return (lambda v, t=tokens: _tokens_repair(v, *t)), \
                "kept the longest allowed leading path and the allowed tokens after it, dropped the rest"
        if rtype == "set":
            return (lambda v, a=arg: a), f"set to {json.dumps(arg)}"
        if rtype == "drop":
            return (lambda v: DROP), "dropped"
        if rtype == "keep_match":
            try:
                rx = compile_pattern(arg)
            except PatternError as e:
                raise self.fail(where, f"bad keep_match pattern: {e}") from None
            return (lambda v, rx=rx: _keep_match(v, rx)), "kept the longest leading part of the allowed form, dropped the rest"
        if rtype == "keep_tokens":
            try:
                rx = compile_pattern(arg)
            except PatternError as e:
                raise self.fail(where, f"bad keep_tokens pattern: {e}") from None

            def keep(v: Any, rx: Pattern = rx) -> Any:
                out = []
                for tok in str(v).split():
                    if not rx.fullmatch(tok):
                        break
                    out.append(tok)
                return " ".join(out)

            return keep, "kept the leading tokens of the allowed form, dropped the rest"
        if route is None:
            raise self.fail(where, "scrub 'route' needs a 'route' check")
        return (lambda v, rs=route: rs.check(v).repaired if isinstance(v, str) else "/"), "replaced names with placeholders"


def _split_head(v: str, head: ValueSet, sep: str) -> tuple[str | None, list[str]]:
    """The longest leading run of tokens whose join is in `head`, and the tokens after it."""
    toks = v.split(sep)
    for n in range(len(toks), -1, -1):
        prefix = sep.join(toks[:n])
        if prefix in head:
            return prefix, toks[n:]
    return None, toks


def _tokens_problem(v: Any, head: ValueSet, tail: ValueSet, sep: str) -> str | None:
    if not isinstance(v, str):
        return None  # the schema judges the type
    prefix, rest = _split_head(v, head, sep)
    if prefix is None:
        return f"does not start with a value of {head.name!r}"
    if any(t not in tail for t in rest):
        return f"carries tokens after the allowed path that are not in {tail.name!r}" if tail.name else \
            "carries tokens after the allowed path"
    return None


def _tokens_repair(v: Any, head: ValueSet, tail: ValueSet, sep: str) -> Any:
    prefix, rest = _split_head(str(v), head, sep)
    if prefix is None:
        return ""
    return sep.join([prefix, *(t for t in rest if t in tail)]) if prefix else sep.join(t for t in rest if t in tail)


def _keep_match(v: Any, rx: Pattern) -> str:
    """The longest prefix of `v` that fully matches `rx` ("" if none): `--hostname=db.acme` with
    `--?[a-z][a-z-]*` keeps `--hostname`. Prefixes are tried longest first, each in linear time;
    a value longer than 256 characters is cut to 256 before trying."""
    text = str(v)[:256]
    for n in range(len(text), 0, -1):
        if rx.fullmatch(text[:n]):
            return text[:n]
    return ""


def load_packs(paths: Sequence[Path], *, include_bundled: bool = True) -> list[Pack]:
    """Load packs from files or folders (every *.yaml / *.yml inside).

    User packs come first and replace a bundled pack with the same `pack` id.
    """
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise PackError(f"{p}: no *.yaml rule packs in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise PackError(f"{p}: no such file or folder")
    packs = [load_pack(f) for f in files]
    ids = [p.id for p in packs]
    for i, pid in enumerate(ids):
        if pid in ids[:i]:
            raise PackError(f"{packs[i].file}: pack {pid!r} is also defined in {packs[ids.index(pid)].file}")
    if include_bundled:
        bundled = sorted(bundled_dir("rules").glob("*.yaml"))
        for f in bundled:
            if f.resolve() in {x.resolve() for x in files}:
                continue
            pack = load_pack(f)
            if pack.id not in ids:
                packs.append(pack)
    return packs


def file_stamps(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """(mtime, size) of each file a reload watches; a removed file is a change too."""
    out = {}
    for p in paths:
        try:
            st = p.stat()
            out[p] = (st.st_mtime_ns, st.st_size)
        except OSError:
            out[p] = (-1, -1)
    return out
