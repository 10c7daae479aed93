"""One test per guarantee that a small refactor could break without any other test noticing.

Each test here was checked against the break it names (applied to a copy of the code, never to
this tree): with the break, the test fails. Unit tests where the guarantee is the engine's (or the
audit trail's, or check's); a real proxy where it is the proxy's (fail closed in a hook, streaming,
WebSocket frames), with the real senders' User-Agents. See docs/mutation.md for the habit that
found the gaps: mutation testing of the modules that carry guarantees (bench/mutants.sh).
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import socket
import time
from pathlib import Path

import pytest
import yaml
from mitmproxy import http
from mitmproxy import io as mitmio
from mitmproxy.test import tflow

from conftest import KEY, PAYLOADS, ROOT, VIOLATIONS, exchange
from support.harness import GO_UA, HOST, SUPPORT, Proxy
from telewarden.audit import trail as audit, render
from telewarden.engine import decoding, strictjson
from telewarden.audit.trail import AuditTrail, verify
from telewarden.engine.judge import Engine, Limits
from telewarden.proxy.exchange import http_exchange
from telewarden.engine.model import Decision, Mode
from telewarden.engine.packs import load_packs
from telewarden.engine.routes import RouteSet

CLI = PAYLOADS["cli-v2.48-no-error"]
GOOD = strictjson.dumps(CLI)
FLAGS = strictjson.dumps({**CLI, "data": {**CLI["data"], "command": "hasura migrate apply --admin-secret hunter2"}})
CONSOLE = PAYLOADS["console-v2.48-click"]


def custom_pack(tmp_path: Path, edit) -> Path:
    """The bundled Hasura pack, edited: a user pack with the same id replaces the bundled one."""
    data = yaml.safe_load((ROOT / "rules" / "hasura.yaml").read_text())
    edit(data)
    folder = tmp_path / "packs"
    folder.mkdir(exist_ok=True)
    out = folder / "hasura.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def rule(data: dict, rid: str) -> dict:
    return next(r for r in data["rules"] if r["id"] == rid)


def engine_for(path: Path, **kw) -> Engine:
    return Engine(load_packs([path]), digest_key=KEY, **kw)


def _edit(d: dict) -> None:
    rule(d, "hasura.version.dev-build")["scrub"].update(set="branch-acme")  # fails its own check
    rule(d, "hasura.cli.command-args").update(severity="low")
    rule(d, "hasura.cli.error").update(severity="medium")
    rule(d, "hasura.db-kind.user-named")["scrub"].update(set="acme")  # fails its own check too


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> Engine:
    """One user pack for the engine's guarantees: a repair that does not pass its own check, and
    rules at every severity (command-args low, error medium, payload high)."""
    return engine_for(custom_pack(tmp_path_factory.mktemp("custom"), _edit))


# -- scrub re-checks every repair ----------------------------------------------------------------

def test_a_repair_that_fails_its_own_check_blocks_in_scrub_mode(custom, engine):
    # break caught: Engine._scrub not judging the repaired message again (SCRUBBED with a bad value)
    case = next(c for c in VIOLATIONS if c["name"] == "server-dev-build-branch")
    v = custom.inspect(exchange(case["body"]), Mode.SCRUB)
    assert v.decision is Decision.BLOCKED and v.repaired is None
    assert v.error == "repair did not pass the checks again: hasura.version.dev-build"
    # the bundled repair passes: the same message is scrubbed
    assert engine.inspect(exchange(case["body"]), Mode.SCRUB).decision is Decision.SCRUBBED
    both = copy.deepcopy(next(c for c in VIOLATIONS if c["name"] == "server-data-connector-name")["body"])
    both["data"]["hasura_version"] = case["body"]["data"].get("hasura_version", "v2.48.10-feature-branch")
    v = custom.inspect(exchange(both), Mode.SCRUB)
    assert v.error == "repair did not pass the checks again: hasura.db-kind.user-named, hasura.version.dev-build"


# -- block mode blocks findings of every severity ------------------------------------------------

SEVERITY_CASES = {
    "low": ("hasura.cli.command-args", FLAGS),
    "medium": ("hasura.cli.error", strictjson.dumps({**CLI, "data": {**CLI["data"], "error": {"Op": "x"}}})),
    "high": ("hasura.cli.payload", strictjson.dumps({**CLI, "data": {**CLI["data"], "payload": {"a": 1}}})),
}


@pytest.mark.parametrize("severity", ["high", "medium", "low"])
def test_block_mode_blocks_a_finding_of_every_severity(custom, severity):
    # break caught: block mode deciding by severity (only `high` blocking)
    rid, body = SEVERITY_CASES[severity]
    v = custom.inspect(exchange(body), Mode.BLOCK)
    assert v.decision is Decision.BLOCKED
    assert [(f.rule, f.severity.value) for f in v.findings] == [(rid, severity)]
    assert custom.inspect(exchange(body), Mode.SCRUB).decision is Decision.SCRUBBED
    assert custom.inspect(exchange(body), Mode.AUDIT).decision is Decision.FORWARDED


def test_block_mode_blocks_a_medium_header_finding(engine):
    v = engine.inspect(exchange(GOOD, headers=[("User-Agent", GO_UA), ("X-Acme", "1")]), Mode.BLOCK)
    assert v.decision is Decision.BLOCKED and {f.severity.value for f in v.findings} == {"medium"}


# -- a placeholder slot accepts only its placeholder ---------------------------------------------

RS = RouteSet("t", ["/data/{SOURCE_NAME|default}/schema/{SCHEMA_NAME}/tables/{TABLE_NAME}",
                    "/data/{SOURCE_NAME|default}/schema/{SCHEMA_NAME}/tables/{TABLE_NAME}/(browse|modify)"])


@pytest.mark.parametrize("url,repaired", [
    # an upper-case real name is a name, not a placeholder
    ("/data/ACME/schema/PUBLIC/tables/CUSTOMERS/browse", "/data/SOURCE_NAME/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"),
    ("/data/default/schema/SCHEMA_NAME/tables/ACME_CUSTOMERS/browse",
     "/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"),
    # a placeholder in another placeholder's slot
    ("/data/default/schema/TABLE_NAME/tables/SCHEMA_NAME/browse",
     "/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"),
    ("/data/TABLE_NAME/schema/SCHEMA_NAME/tables/TABLE_NAME/browse",
     "/data/SOURCE_NAME/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"),
    # a placeholder differing in case only, and an also-allowed value in the wrong case
    ("/data/default/schema/schema_name/tables/TABLE_NAME/browse",
     "/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"),
    ("/data/DEFAULT/schema/SCHEMA_NAME/tables/TABLE_NAME/browse",
     "/data/SOURCE_NAME/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"),
    # a choice segment takes only its choices
    ("/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME/BROWSE", "/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME"),
])
def test_a_placeholder_slot_accepts_only_its_own_placeholder(url, repaired):
    r = RS.check(url)
    assert not r.ok and r.repaired == repaired
    assert RS.check(repaired).ok
    for good in ("/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME/browse",
                 "/data/SOURCE_NAME/schema/SCHEMA_NAME/tables/TABLE_NAME/modify"):
        assert RS.check(good).ok


@pytest.mark.parametrize("url", ["/data/default/schema/public/tables/ACME_CUSTOMERS/browse",
                                 "/data/default/schema/TABLE_NAME/tables/SCHEMA_NAME/browse",
                                 "/data/SCHEMA_NAME/schema/public/tables/TABLE_NAME/browse"])
def test_console_urls_with_upper_case_names_or_swapped_placeholders_are_findings(engine, url):
    body = {**CONSOLE, "data": {**CONSOLE["data"], "url": url}}
    v = engine.inspect(exchange(body, "websocket"), Mode.SCRUB)
    assert [f.rule for f in v.findings] == ["hasura.console.url-route"]
    fixed = json.loads(v.repaired.body)["data"]["url"]
    assert fixed == "/data/default/schema/SCHEMA_NAME/tables/TABLE_NAME/browse" or \
        fixed == "/data/SOURCE_NAME/schema/SCHEMA_NAME/tables/TABLE_NAME/browse"


def test_route_results_in_full():
    # built inside the test (not at import), so a mutation of RouteSet's compilation is seen
    rs = RouteSet("t", ["/", "/data/sql", "/data/{SOURCE_NAME|default|other}", "/a/(b|c)/d",
                        "/data/{SOURCE_NAME|default}/schema/{SCHEMA_NAME}", "/data/x/schema/{SCHEMA_NAME}",
                        "/p/{X}/{Y}", "/p/{Z}/{W}"])
    def result(url):
        r = rs.check(url)
        return r.ok, r.repaired, r.template, r.reason
    assert result("/") == (True, None, "/", "")
    assert result("/data/sql") == (True, None, "/data/sql", "")
    assert result("/data/other") == (True, None, "/data/{SOURCE_NAME|default|other}", "")
    assert result("/data/default") == (True, None, "/data/{SOURCE_NAME|default|other}", "")
    assert result("/a/c/d") == (True, None, "/a/(b|c)/d", "")
    assert result("/a/b/d") == (True, None, "/a/(b|c)/d", "")
    assert result("/a/e/d") == (False, "/", "/", "unknown route")
    assert result("/data/acme") == (False, "/data/SOURCE_NAME", "/data/{SOURCE_NAME|default|other}",
                                     "names in variable segments")
    assert result("/data/x/schema/public") == (False, "/data/x/schema/SCHEMA_NAME", "/data/x/schema/{SCHEMA_NAME}",
                                                "names in variable segments")
    assert result("/p/q/r") == (False, "/p/X/Y", "/p/{X}/{Y}", "names in variable segments")
    assert result("/data/sql?table=acme") == (False, "/data/sql", "/data/sql", "query or fragment")
    assert result("/data/sql#acme") == (False, "/data/sql", "/data/sql", "query or fragment")
    assert result("/data/sql#a?b") == (False, "/data/sql", "/data/sql", "query or fragment")
    assert result("/data/sql?a?b#c#d") == (False, "/data/sql", "/data/sql", "query or fragment")
    assert result("/data/acme/gizmo/x") == (False, "/data/SOURCE_NAME", "/data/{SOURCE_NAME|default|other}",
                                             "unknown route")
    assert result("data/sql") == (False, "/", "/", "not an absolute path")
    # no template for "/": an unknown path keeps nothing, and a template with variables does not make
    # its literal part a route
    bare = RouteSet("t", ["/a/{X}", "/b/c"])
    assert ((r := bare.check("/zzz")).ok, r.repaired, r.template, r.reason) == (False, "/", None, "unknown route")
    assert not bare.check("/a").ok and bare.check("/b/c").ok and bare.check("/a/X").ok
    assert bare.check("/b/c/d").repaired == "/b/c"
    # any character but {}()| makes a literal segment, capitals included
    assert RouteSet("t", ["/X/Xy-z_1.x"]).check("/X/Xy-z_1.x").ok


@pytest.mark.parametrize("bad", ["a", "/a/b{c", "/a/b}c", "/a/b(c", "/a/b)c", "/a/b|c", "/a/(b|c", "/a/{B"])
def test_malformed_route_templates_name_the_template(bad):
    from telewarden.engine.routes import RouteError

    with pytest.raises(RouteError, match="route template") as e:
        RouteSet("t", [bad])
    assert repr(bad) in str(e.value)


# -- limits: exactly at the limit passes, one past it does not ----------------------------------

def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("max_depth", [64, 3])
def test_depth_limit_is_exact(max_depth):
    lim = {"max_bytes": 1 << 20, "max_depth": max_depth}
    assert strictjson.loads(nested(max_depth), **lim) is not None
    with pytest.raises(strictjson.StrictJSONError) as e:
        strictjson.loads(nested(max_depth + 1), **lim)
    assert e.value.code == "too-deep"
    # many brackets side by side are not depth; brackets inside strings are not brackets
    wide = b"[" + b",".join([nested(max_depth - 1)] * 3) + b"]"
    assert strictjson.loads(wide, **lim) is not None
    in_string = b'["' + b"[{" * (2 * max_depth) + b'\\"[{"]'
    assert strictjson.loads(in_string, **lim)[0].startswith("[{")
    objects = b'{"a":' * max_depth + b"1" + b"}" * max_depth
    assert strictjson.loads(objects, **lim) is not None
    with pytest.raises(strictjson.StrictJSONError):
        strictjson.loads(b'{"a":' * (max_depth + 1) + b"1" + b"}" * (max_depth + 1), **lim)


def test_depth_counts_escapes_and_closing_brackets(max_depth=64):
    lim = {"max_bytes": 1 << 20, "max_depth": max_depth}
    # an escaped quote does not end a string: the brackets after it are text
    assert strictjson.loads(b'["\\"' + b"[{" * max_depth + b'"]', **lim)[0].startswith('"[{')
    # an escaped backslash does not escape the quote after it: the brackets after the string count
    with pytest.raises(strictjson.StrictJSONError, match="nesting deeper than 64"):
        strictjson.loads(b'["a\\\\",' + nested(max_depth) + b"]", **lim)
    # a closing bracket takes one level off, not more, not back to the top
    with pytest.raises(strictjson.StrictJSONError, match="nesting deeper than 64"):
        strictjson.loads(b"[" * 10 + b"[]," * 10 + nested(max_depth - 9) + b"]" * 10, **lim)
    assert strictjson.loads(b"[" * 10 + b"[]," * 10 + nested(max_depth - 10) + b"]" * 10, **lim) is not None


def test_nesting_python_cannot_parse_is_too_deep_not_an_internal_error():
    with pytest.raises(strictjson.StrictJSONError) as e:
        strictjson.loads(nested(200_000), max_bytes=1 << 20, max_depth=1 << 30)
    assert (e.value.code, str(e.value)) == ("too-deep", "nesting too deep to parse")


@pytest.mark.parametrize("body,code,message", [
    (b'{"a":1,"a":2}', "duplicate-key", "an object holds the same key twice: parsers disagree on its value"),
    (b"[1e999]", "number-out-of-range", "a number overflows a double"),
    (b"[9223372036854775808]", "number-out-of-range", "an integer does not fit in 64 bits: parsers disagree on it"),
    (b"[NaN]", "invalid-json", "NaN is not JSON"),
    (b"[Infinity]", "invalid-json", "Infinity is not JSON"),
    (b"x" * 11, "too-large", "body of 11 bytes exceeds the limit of 10"),
    (b'["\xff"]', "not-utf8", "body is not UTF-8 (byte 2)"),
    (b"\xef\xbb\xbf[1]", "not-utf8", "body starts with a byte-order mark"),
    (b"[[[[1]]]]", "too-deep", "nesting deeper than 3"),
    (b'{"a":', "invalid-json", "not JSON: Expecting value at line 1 column 6"),
    (b'["a\\u0000b"]', "nul-in-string", "a string holds a NUL character: parsers disagree where it ends"),
    (b'["\\ud800"]', "lone-surrogate", "string holds a lone UTF-16 surrogate"),
    (b'{"\\udc00":1}', "lone-surrogate", "string holds a lone UTF-16 surrogate"),
])
def test_strict_json_errors_have_their_code_and_exact_text(body, code, message):
    # the text is what records and the 403 say; none of it comes from the body
    with pytest.raises(strictjson.StrictJSONError) as e:
        strictjson.loads(body, max_bytes=10 if code == "too-large" else 1 << 20, max_depth=3)
    assert (e.value.code, str(e.value)) == (code, message)


def test_dumps_is_compact_utf8_and_refuses_what_json_cannot_hold():
    assert strictjson.dumps({"a": ["é", 1, None], "b": "\u2028"}) == '{"a":["é",1,null],"b":"\u2028"}'.encode()
    for bad in (float("nan"), float("inf"), [float("-inf")]):
        with pytest.raises(ValueError):
            strictjson.dumps(bad)


def test_default_depth_limit_of_the_engine_is_64(engine):
    assert Limits().max_depth == 64
    def rules(body):
        return [f.rule for f in engine.inspect(exchange(body), Mode.BLOCK).findings]
    assert "telewarden.body.too-deep" not in rules(b'{"topic":"cli","x":' + nested(63) + b"}")
    assert rules(b'{"topic":"cli","x":' + nested(64) + b"}") == ["telewarden.body.too-deep"]


def test_size_limit_is_exact():
    body = b'"' + b"x" * 98 + b'"'
    assert strictjson.loads(body, max_bytes=100, max_depth=64) == "x" * 98
    with pytest.raises(strictjson.StrictJSONError) as e:
        strictjson.loads(body, max_bytes=99, max_depth=64)
    assert e.value.code == "too-large"


def test_max_body_of_the_engine_is_exact(packs):
    size = len(GOOD)
    assert Engine(packs, digest_key=KEY, limits=Limits(max_body=size)).inspect(
        exchange(GOOD), Mode.BLOCK).decision is Decision.FORWARDED
    v = Engine(packs, digest_key=KEY, limits=Limits(max_body=size - 1)).inspect(exchange(GOOD), Mode.BLOCK)
    assert [f.rule for f in v.findings] == ["telewarden.body.too-large"]


def gzip_flow(raw: bytes, encoding: str = "gzip"):
    f = tflow.tflow()
    f.request = http.Request.make("POST", f"https://{HOST}/v1/http", b"",
                                  {"Content-Type": "application/json", "User-Agent": GO_UA})
    f.request.headers["Content-Encoding"] = encoding
    f.request.raw_content = raw
    f.client_conn.sni = f.server_conn.sni = HOST
    return f


def test_decoded_size_limit_is_exact(packs):
    data = gzip.compress(GOOD)
    assert decoding.decode(data, "gzip", len(GOOD)) == GOOD
    assert len(decoding.decode(data, "gzip", len(GOOD) - 1)) == len(GOOD)  # limit + 1: "too large" to the caller
    eng = Engine(packs, digest_key=KEY, limits=Limits(max_body=len(GOOD)))
    assert eng.inspect(http_exchange(gzip_flow(data), len(GOOD)), Mode.BLOCK).decision is Decision.FORWARDED
    eng = Engine(packs, digest_key=KEY, limits=Limits(max_body=len(GOOD) - 1))
    v = eng.inspect(http_exchange(gzip_flow(data), len(GOOD) - 1), Mode.BLOCK)
    assert [f.rule for f in v.findings] == ["telewarden.body.too-large"]


def test_gzip_member_count_limit_is_exact():
    assert decoding.MAX_MEMBERS == 64
    parts = [GOOD[i::64] for i in range(64)]  # 64 members of any content
    assert decoding.decode(b"".join(gzip.compress(p) for p in parts), "gzip", 1 << 20) == b"".join(parts)
    with pytest.raises(decoding.DecodeError, match="more than 64"):
        decoding.decode(b"".join(gzip.compress(p) for p in [*parts, b"x"]), "gzip", 1 << 20)


def test_audit_rotation_limit_is_exact(tmp_path, engine, monkeypatch):
    monkeypatch.setenv("TELEWARDEN_AUDIT_KEY", "k")
    ex = exchange(GOOD)
    ex.timestamp = 1_700_000_000.0
    rec = render.record(engine.inspect(ex, Mode.SCRUB), ex)
    rec["micros"] = 0
    probe = AuditTrail(tmp_path / "probe")
    probe.write(rec)
    probe.write(rec)
    probe.close()
    total = (tmp_path / "probe" / "audit.jsonl").stat().st_size
    for limit, files in ((total, 1), (total - 1, 2)):
        trail = AuditTrail(tmp_path / f"t{limit}", max_bytes=limit)
        trail.write(rec)
        trail.write(rec)
        trail.close()
        assert len(audit.chain_files(tmp_path / f"t{limit}")) == files
        assert verify(tmp_path / f"t{limit}")[0] == 0


# -- the hash chain covers every field -----------------------------------------------------------

def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    if isinstance(value, list):
        return value[:-1] if value else ["x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    raise AssertionError(type(value))


@pytest.fixture(scope="module")
def full_trail(tmp_path_factory, packs):
    """A trail whose second record holds every field a record can have, findings with every field."""
    folder = tmp_path_factory.mktemp("chain")
    eng = Engine(packs, digest_key=KEY, waivers={"hasura.cli.error": "accepted in review"})
    trail = AuditTrail(folder, key_path=tmp_path_factory.mktemp("key") / "audit.key")
    ex = exchange(GOOD)
    trail.write(render.record(eng.inspect(ex, Mode.SCRUB), ex))
    bad = {**CLI, "data": {**CLI["data"], "command": "hasura migrate apply --endpoint https://db01.acme.io",
                           "error": "x", "zz_extra": 1}}
    ex = exchange(bad, headers=[("User-Agent", GO_UA), ("Cookie", "a=b")], query="q=1")
    v = eng.inspect(ex, Mode.SCRUB)
    v.error, v.sunk = "an error text", True
    rec = render.record(v, ex, source="flows.mitm#3")
    trail.write(rec)
    trail.write(render.record(eng.inspect(exchange(GOOD), Mode.SCRUB), exchange(GOOD)))
    trail.close()
    return folder


def _fields(rec: dict):
    for key in rec:
        yield (key,)
    for i, finding in enumerate(rec["findings"]):
        for key in finding:
            yield ("findings", i, key)


def test_the_tamper_fixture_holds_every_field(full_trail):
    rec = json.loads((full_trail / "audit.jsonl").read_text().splitlines()[1])
    schema = json.loads((ROOT / "schemas" / "audit-record.schema.json").read_text())
    props = set(schema.get("properties", {}))
    missing = props - set(rec) - {"event", "bytes", "digest", "unexpected_telemetry", "live"}
    assert not missing, missing
    finding_keys = {k for f in rec["findings"] for k in f}
    assert finding_keys >= {"rule", "pointer", "message", "promise", "severity", "digest", "preview", "repair", "waived"}


def test_verify_catches_an_edit_of_every_field_of_a_record(full_trail, tmp_path):
    # break caught: a field (findings, say) left out of the hash: its edit would verify as intact
    assert verify(full_trail)[0] == 0  # intact as written (a verify that fails everything catches nothing)
    lines = (full_trail / "audit.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    fields = list(_fields(rec))
    assert len(fields) > 25
    fields.append(("extra",))  # an added field: _changed(None) below
    for path in fields:
        edited = copy.deepcopy(rec)
        node = edited
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = _changed(node.get(path[-1]))
        variants = [("edited", edited)] + ([("removed", _without(rec, path))] if path != ("extra",) else [])
        for what, r in variants:
            folder = tmp_path / f"{'-'.join(map(str, path))}-{what}"
            folder.mkdir()
            (folder / "audit.jsonl").write_text("\n".join([lines[0], json.dumps(r, separators=(",", ":")), lines[2]]) + "\n")
            status, report = verify(folder)
            assert status == 1 and "TAMPERED" in report, (path, what, report)


def _without(rec: dict, path: tuple) -> dict:
    out = copy.deepcopy(rec)
    node = out
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    return out


# -- --expect-no-telemetry with no pack name fails on any telemetry ------------------------------

def recording(path: Path, bodies: list[bytes], host: str = HOST) -> Path:
    with path.open("wb") as out:
        w = mitmio.FlowWriter(out)
        for body in bodies:
            f = tflow.tflow(resp=True)
            f.request = http.Request.make("POST", f"https://{host}/v1/http", body,
                                          {"Content-Type": "application/json", "User-Agent": GO_UA})
            f.client_conn.sni = f.server_conn.sni = host
            w.add(f)
    return path


def check(*argv: str) -> tuple[int, str]:
    from telewarden.recordings import check as checkrun

    from telewarden import cli
    out = io.StringIO()
    args, extra = cli.build_parser().parse_known_args(["check", *argv])
    args.extra = extra
    return checkrun.run(args, out), out.getvalue()


@pytest.mark.parametrize("form", ["--expect-no-telemetry", "--expect-no-telemetry=hasura"])
def test_expect_no_telemetry_fails_on_one_clean_message(tmp_path, packs, monkeypatch, form):
    from telewarden import cli

    from telewarden.recordings import check as checkrun

    monkeypatch.setattr(cli, "load_packs", lambda paths, include_bundled=True: packs)  # loaded once
    real = checkrun.Progress  # its default stream is the stderr of import time (closed under mutmut)
    monkeypatch.setattr(checkrun, "Progress", lambda setting: real(setting, io.StringIO()))
    # the README's CI form: one clean message is still telemetry; break caught: the bare flag
    # (no pack name) only failing on findings, or on no message at all
    flows = recording(tmp_path / "opt-out.mitm", [GOOD])
    assert check(str(flows))[0] == 0  # clean
    status, report = check(form, str(flows))
    assert status == 1, report
    assert "FAIL: 1 messages reached telemetry endpoints" in report
    other = recording(tmp_path / "other.mitm", [GOOD], host="other.test")
    assert check(form, str(other))[0] == 0


# -- through a real proxy: fail closed, streaming, WebSocket frames ------------------------------

MODES = ["scrub", "block"]


@pytest.fixture(scope="module")
def fault_proxies(tmp_path_factory, upstream, confdir):
    """Per (mode, streaming, workers): a proxy with the fault addon (tests/support/fault_hooks.py)."""
    started: dict[tuple, Proxy] = {}

    def get(mode: str, streaming: bool, workers: int = 0) -> Proxy:
        if (mode, streaming, workers) not in started:
            extra = ["-s", str(SUPPORT / "fault_hooks.py"), "--set", f"telewarden_workers={workers}"]
            if streaming:
                extra += ["--set", "stream_large_bodies=100"]
            folder = tmp_path_factory.mktemp(f"fault-{mode}-{'stream' if streaming else 'plain'}-{workers}")
            started[(mode, streaming, workers)] = Proxy(folder, upstream, confdir, mode, extra).start()
        return started[(mode, streaming, workers)]

    yield get
    for p in started.values():
        p.stop()


def _post_refused(proxy: Proxy, upstream, body: bytes, headers: list[str] | None = None,
                  extra: list[str] | None = None) -> None:
    upstream.clear()
    try:
        status, _ = proxy.curl(body, headers=headers, extra=extra)
    except RuntimeError:  # the connection was killed: no response at all
        status = None
    assert status in (None, 403), status
    time.sleep(0.2)  # a streamed body would be on its way already
    assert upstream.requests() == []


@pytest.mark.proxy
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["hosts", "claim"])
def test_requestheaders_fails_closed_when_it_cannot_tell_the_destination(fault_proxies, upstream, mode, fault):
    # break caught: requestheaders' handler not killing the flow; with stream_large_bodies set the
    # body would then stream upstream before the `request` hook could judge it
    proxy = fault_proxies(mode, True)
    assert len(FLAGS) > 100
    _post_refused(proxy, upstream, FLAGS, headers=[f"X-Fault-Inject: {fault}"])
    _post_refused(proxy, upstream, FLAGS, headers=[f"X-Fault-Inject: {fault}"], extra=["--http1.1"])
    assert "requestheaders failed (RuntimeError); refusing the request" in proxy.log.read_text()
    assert proxy.proc.poll() is None


@pytest.mark.proxy
@pytest.mark.parametrize("mode", MODES)
def test_chunked_telemetry_is_refused_under_stream_large_bodies(fault_proxies, upstream, mode):
    # break caught: only a Content-Length over the limit refused; a chunked body (no length) would
    # then stream past the addon unseen
    proxy = fault_proxies(mode, True)
    before = len(proxy.decisions())
    _post_refused(proxy, upstream, FLAGS, extra=["--http1.1", "-H", "Transfer-Encoding: chunked"])
    recs = proxy.decisions()[before:]
    assert [(r["decision"], [f["rule"] for f in r["findings"]]) for r in recs] == \
        [("blocked", ["telewarden.body.streamed"])]
    # traffic no pack claims streams as mitmproxy was told
    upstream.clear()
    status, _ = proxy.curl(b"x" * 500, url="https://other.test/upload",
                           extra=["--http1.1", "-H", "Transfer-Encoding: chunked"])
    assert status == 200 and upstream.requests()[0].body == b"x" * 500


# Every header value that can reach an error text (the reason in the record and in the 403).
PLANTED = "acme_customer_invoices"
ENCODINGS = [PLANTED, f"gzip, {PLANTED}", f"{PLANTED}, gzip", f"({PLANTED})", f"(acme customer invoices)",
             f"gzip;q={PLANTED}", f"GZIP {PLANTED}", f"x-{PLANTED}"]


@pytest.mark.proxy
@pytest.mark.parametrize("mode", MODES)
def test_no_header_value_reaches_an_error_text(proxies, upstream, mode):
    # break caught: a Content-Encoding value the sender made up echoed in the reason (record, 403)
    proxy = proxies(mode)
    before = len(proxy.records())
    answers = []
    for enc in ENCODINGS:
        upstream.clear()
        status, resp = proxy.curl(gzip.compress(GOOD), headers=[f"Content-Encoding: {enc}"])
        assert status == 403 and upstream.requests() == [], (enc, status)
        answers.append(resp.decode())
        assert "unregistered value" in json.loads(resp)["reason"], resp
    for name, value in [("Content-Type", f"application/json; charset={PLANTED}"), ("User-Agent", f"{GO_UA} {PLANTED}"),
                        ("Accept", f"*/*; {PLANTED}"), ("X-Acme", PLANTED), ("Transfer-Encoding", f"chunked, {PLANTED}")]:
        upstream.clear()
        status, resp = proxy.curl(FLAGS, headers=[f"{name}: {value}"])
        answers.append(resp.decode())
    text = "\n".join(answers) + json.dumps(proxy.records()[before:]) + (proxy.audit / "audit.log").read_text()
    for part in (PLANTED, "acme customer", "customer_invoices", "invoices"):
        assert part not in text.lower(), part


BAD_FRAMES = {
    "invalid JSON": ("{\"topic\": \"console-v2\", \"data\": ", ["telewarden.body.invalid-json"]),
    "not UTF-8 (binary)": (b"\xff\xfe" + strictjson.dumps(CONSOLE), ["telewarden.body.not-utf8"]),
    "duplicate key": (strictjson.dumps(CONSOLE)[:-1] + b',"topic":"console-v2"}', ["telewarden.body.duplicate-key"]),
    "oversize": (strictjson.dumps({**CONSOLE, "pad": "x" * (1 << 20)}), ["telewarden.body.too-large"]),
}
SENTINEL = strictjson.dumps({**CONSOLE, "data": {**CONSOLE["data"], "event_data": {"id": "About"}}})


GENUINE = strictjson.dumps(CONSOLE)


def _ws_send(proxy: Proxy, frames: list) -> None:
    with proxy.websocket(max_size=None) as ws:
        for frame in frames:
            ws.send(frame)


@pytest.mark.proxy
@pytest.mark.parametrize("mode", MODES)
def test_an_unverifiable_websocket_frame_is_not_relayed(proxies, upstream, mode):
    # break caught: a frame that could not be judged (body problem) relayed, or relayed as scrubbed
    proxy = proxies(mode)
    upstream.clear()
    before = len(proxy.decisions())
    _ws_send(proxy, [f for f, _ in BAD_FRAMES.values()] + [SENTINEL.decode()])
    assert upstream.wait_for(lambda rs: any(r.body == SENTINEL for r in rs), 15)
    assert [r.body for r in upstream.frames()] == [SENTINEL]
    recs = [r for r in proxy.decisions()[before:] if r["transport"] == "websocket" and r["method"] == "WS"]
    assert [(r["decision"], [f["rule"] for f in r["findings"]]) for r in recs[:len(BAD_FRAMES)]] == \
        [("blocked", rules) for _, rules in BAD_FRAMES.values()]


def _wait_log(proxy: Proxy, text: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.log.read_text().count(text) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.log.read_text().count(text) >= count, proxy.log.read_text()[-2000:]


@pytest.mark.proxy
@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("mode", MODES)
def test_a_frame_the_trail_cannot_record_is_not_relayed(fault_proxies, upstream, mode, workers):
    # break caught: a trail failure not blocking (an unaudited frame relayed); over HTTP too;
    # with workers the record comes encoded from the worker and is written by the same path
    proxy = fault_proxies(mode, False, workers)
    flag = proxy.folder / "FAIL-TRAIL"
    scrubbable = strictjson.dumps({**CONSOLE, "data": {**CONSOLE["data"], "url": "/data/default/schema/public/tables/acme/browse"}})
    upstream.clear()
    failures = proxy.log.read_text().count("AUDIT TRAIL FAILED")
    with proxy.websocket() as ws:
        flag.write_text("")
        try:
            ws.send(SENTINEL.decode())  # clean: would be forwarded
            ws.send(scrubbable.decode())  # would be scrubbed
            _wait_log(proxy, "AUDIT TRAIL FAILED", failures + 2)
            status, resp = proxy.curl(GOOD)  # and over HTTP
            assert status == 403 and "audit trail unwritable" in json.loads(resp)["reason"]
        finally:
            flag.unlink()
        ws.send(GENUINE.decode())  # the trail works again: forwarded
        assert upstream.wait_for(lambda rs: any(r.body == GENUINE for r in rs), 15)
    assert [r.body for r in upstream.frames()] == [GENUINE]
    assert [r for r in upstream.requests() if r.method == "POST"] == []
    assert verify(proxy.audit)[0] == 0


@pytest.mark.proxy
def test_websocket_handshake_is_not_refused_under_stream_large_bodies(fault_proxies, upstream):
    """An HTTP/1 request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
    6.3): the console's handshake must not be refused as a body that could be streamed."""
    proxy = fault_proxies("scrub", True)
    upstream.clear()
    _ws_send(proxy, [GENUINE.decode()])
    assert upstream.wait_for(lambda rs: any(r.body == GENUINE for r in rs), 10)


# -- engine details that mutants showed unguarded -------------------------------------------------

def test_a_schema_finding_says_which_keyword_and_shows_the_value_by_type_only(engine):
    # the README's example record: `fails 'type' of the cli schema (...)`, `string, 2 chars`
    case = next(c for c in VIOLATIONS if c["name"] == "cli-wrong-type")
    v = engine.inspect(exchange(case["body"]), Mode.SCRUB)
    assert v.decision is Decision.BLOCKED and v.error is None  # blocked as unrepairable, not by the re-check
    [f] = v.findings
    assert (f.rule, f.pointer, f.message, f.severity.value, f.preview, f.repair) == (
        "hasura.schema.type", "/data/is_error",
        "fails 'type' of the cli schema (properties/data/properties/is_error/type)", "high", "string, 2 chars", None)
    assert f.digest == engine.digest("no") and f.promise == engine.packs[0].generic_promise


def test_an_unknown_key_finding_is_repairable_and_says_so(engine):
    body = {**CLI, "data": {**CLI["data"], "zz_extra": "abc"}}
    v = engine.inspect(exchange(body), Mode.SCRUB)
    [f] = v.findings
    assert (f.rule, f.repair, f.preview, f.digest) == ("hasura.schema.unknown-key", "dropped", "string, 3 chars",
                                                       engine.digest("abc"))
    assert f.pointer.startswith("/data/(key:") and f.pointer.endswith(", 8 chars)")
    assert v.decision is Decision.SCRUBBED and "zz_extra" not in v.repaired.body.decode()


def test_an_unknown_key_that_looks_like_an_email_says_so_without_naming_it(engine):
    body = {**CLI, "data": {**CLI["data"], "jane@acme-corp.com": 1}}
    [f] = engine.inspect(exchange(body), Mode.SCRUB).findings
    assert f.pointer.startswith("/data/(key:") and f.pointer.endswith(", 18 chars, looks like email)")
    assert "jane" not in f.pointer


def test_a_waived_body_problem_is_reported_waived_and_does_not_decide(packs):
    eng = Engine(packs, digest_key=KEY, waivers={"telewarden.body.invalid-*": "recorded by review"})
    v = eng.inspect(exchange(b'{"topic": '), Mode.BLOCK)
    assert [(f.rule, f.pointer, f.waived) for f in v.findings] == [
        ("telewarden.body.invalid-json", "body", "recorded by review")]
    assert v.decision is Decision.FORWARDED
    v = eng.inspect(exchange(b'{"a":1,"a":2}'), Mode.BLOCK)  # another code: not waived
    assert v.decision is Decision.BLOCKED and v.findings[0].waived is None


def test_declared_addresses_are_claimed_by_network(tmp_path):
    eng = engine_for(custom_pack(tmp_path, lambda d: d.update(addresses=["203.0.113.0/24", "2001:db8::/32"])))
    pack = eng.packs[0]
    assert eng.claim(("203.0.113.7",)) is pack and eng.claim(("2001:db8::1",)) is pack
    assert eng.claim(("203.0.114.7",)) is None and eng.claim(("not-an-address.test",)) is None
    assert eng.claims_name(pack, "203.0.113.200") and not eng.claims_name(pack, "198.51.100.1")
    plain = Engine(load_packs([]), digest_key=KEY)  # no pack declares addresses: none is claimed
    assert plain.claim(("203.0.113.7",)) is None


def test_wildcard_pointers_reach_every_key_and_index_and_only_those(tmp_path):
    timings = "/data/metrics/service_timings/serviceTimingMetrics"
    def edit(d):
        d["rules"].append({"id": "hasura.test.wild", "promise": "anonymous", "severity": "low", "message": "wild",
                           "at": [f"{timings}/*/dimensions/transport", f"{timings}/1/dimensions/transport",
                                  f"{timings}/3/dimensions/transport", f"{timings}/9/dimensions/transport",
                                  f"{timings}/1/dimensions/*", f"{timings}/3/dimensions/*",
                                  "/data/metrics/relationships/*",
                                  "/data/metrics/relationships/auto", "/data/metrics/relationships/zz"],
                           "check": {"enum": ["HTTP", 1]}, "scrub": {"set": 1}})
    eng = engine_for(custom_pack(tmp_path, edit))
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    metrics = body["data"]["metrics"]["service_timings"]["serviceTimingMetrics"]
    assert len(metrics) == 3  # index 3 is one past the end
    metrics[1]["dimensions"]["transport"] = metrics[2]["dimensions"]["transport"] = "WebSocket"
    body["data"]["metrics"]["relationships"] = {"manual": 1, "auto": 30}
    v = eng.inspect(exchange(body), Mode.AUDIT)
    got = sorted(f.pointer for f in v.findings if f.rule == "hasura.test.wild")
    assert got == ["/data/metrics/relationships/auto", "/data/metrics/relationships/auto",
                   f"{timings}/1/dimensions/locality", f"{timings}/1/dimensions/query_type",
                   f"{timings}/1/dimensions/transport", f"{timings}/1/dimensions/transport",
                   f"{timings}/1/dimensions/transport", f"{timings}/2/dimensions/transport"]


def test_what_scrub_changes_is_exactly_what_needed_repair(engine):
    # a header-only repair leaves body, Host and target alone (the adapter re-sends what is set)
    v = engine.inspect(exchange(GOOD, headers=[("User-Agent", GO_UA), ("Cookie", "a=b")]), Mode.SCRUB)
    r = v.repaired
    assert v.decision is Decision.SCRUBBED
    assert (r.body, r.drop_headers, r.clear_query, r.target, r.host) == (None, ("cookie",), False, None, None)
    # a Host naming another host is set to the claimed name
    ex = exchange(GOOD, headers=[("User-Agent", GO_UA), ("Host", "db01.acme.internal")])
    ex.sent_names = (("header:host", "db01.acme.internal"),)
    v = engine.inspect(ex, Mode.SCRUB)
    assert v.decision is Decision.SCRUBBED and (v.repaired.host, v.repaired.body, v.repaired.target) == (HOST, None, None)
    # a request target that is not canonical is forwarded in its canonical form
    ex = exchange(GOOD, headers=[("User-Agent", GO_UA)])
    ex.target_problem, ex.raw_target = "non-canonical", "/v1//http"
    v = engine.inspect(ex, Mode.SCRUB)
    assert v.decision is Decision.SCRUBBED and (v.repaired.target, v.repaired.host, v.repaired.body) == ("/v1/http", None, None)


def test_dropping_several_list_items_drops_exactly_those(engine):
    # repairs run deepest and highest index first: dropping item 1 must not shift item 3
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    body["data"]["experimental_features"] = ["naming_convention", "acme_one", "streaming_subscriptions", "acme_two",
                                             "acme_three"]
    v = engine.inspect(exchange(body), Mode.SCRUB)
    assert v.decision is Decision.SCRUBBED
    assert json.loads(v.repaired.body)["data"]["experimental_features"] == ["naming_convention",
                                                                            "streaming_subscriptions"]


def test_previews_name_the_type_and_size_only():
    from telewarden.engine.judge import _preview

    assert [_preview(v, None) for v in (True, None, 3, 2.5, {"a": 1}, [1, 2], "abc", b"x")] == [
        "bool", "NoneType", "number", "number", "object, 1 keys", "array, 2 items", "string, 3 chars", "bytes"]
    assert _preview("jane@acme.io", "email") == "string, 12 chars, looks like email"


def test_digests_cover_strings_a_decoder_could_not_read_and_any_json_value(engine):
    import hashlib
    import hmac

    def mac(data: bytes) -> str:
        return "hmac-sha256:" + hmac.new(KEY, data, hashlib.sha256).hexdigest()[:32]
    # a control frame's payload is decoded with surrogateescape: its digest must not raise
    assert engine.digest("a\udcff") == mac("a\udcff".encode("utf-8", "surrogatepass"))
    assert engine.digest({"a": [1, None]}) == mac(b'{"a":[1,null]}') != engine.digest({"a": [1]})


def test_trailer_names_known_and_unknown(engine):
    ex = exchange(GOOD, headers=[("User-Agent", GO_UA), ("trailer:user-agent", GO_UA), ("trailer:x-acme", "1")])
    pointers = sorted(f.pointer for f in engine.inspect(ex, Mode.SCRUB).findings)
    key = engine.digest("x-acme")[12:24]
    assert pointers == [f"header:trailer:(key:{key}, 6 chars)", "header:trailer:user-agent"]


def test_request_line_findings_in_full(engine):
    # rule, pointer, message, promise, severity, repair: what every report shows
    ex = exchange(GOOD, headers=[("User-Agent", GO_UA), ("Cookie", "a=b")], query="q=1")
    ex.target_problem, ex.raw_target = "non-canonical", "/v1//http?q=1"
    found = {f.rule: (f.pointer, f.message, f.promise, f.severity.value, f.repair, f.digest)
             for f in engine.inspect(ex, Mode.SCRUB).findings}
    generic = engine.packs[0].generic_promise
    assert found == {
        "telewarden.request.target": (
            "path", "the request target is not in canonical form (non-canonical): a server could read it differently "
                    "from how it was judged", "what is forwarded is exactly what was judged", "high",
            "forwarded in canonical form", engine.digest("/v1//http?q=1")),
        "hasura.query": ("query", "the endpoint takes no query string", generic, "high", None, engine.digest("q=1")),
        "hasura.header.unexpected": ("header:cookie", "a header this endpoint does not expect", generic, "medium",
                                     "header removed", engine.digest("a=b")),
    }
    ex.raw_target = ""  # the adapter did not keep it: the canonical path is what is shown by digest
    f = next(f for f in engine.inspect(ex, Mode.SCRUB).findings if f.rule == "telewarden.request.target")
    assert f.digest == engine.digest("/v1/http")


def test_findings_without_a_value_carry_no_digest_and_detector_previews_say_what_they_saw(packs):
    eng = Engine(packs, digest_key=KEY)
    [f] = eng.inspect(exchange({"topic": "no-such-kind"}), Mode.SCRUB).findings
    assert (f.rule, f.digest, f.preview) == ("hasura.kind.unknown", None, None)
    body = {**CLI, "data": {**CLI["data"], "os_arch": "jane@acme-corp.com"}}
    ex = exchange(body, headers=[("User-Agent", GO_UA), ("Cookie", "a=b"), ("X-Acme-Db", "1")])
    eng.keep_values = True  # the local report (check --show-values) also gets the raw header pointer
    findings = eng.inspect(ex, Mode.SCRUB).findings
    found = {f.rule: f for f in findings}
    assert sorted(f.raw_pointer for f in findings if f.rule == "hasura.header.unexpected") == [
        "header:cookie", "header:x-acme-db"]
    assert any(f.preview and f.preview.endswith("looks like email") for f in found.values()), found
