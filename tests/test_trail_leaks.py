"""The trail never repeats what the sender chose: key names, header names, Content-Encoding values,
control and direction characters, and it never holds the key that would let a copy of it test
guesses. Unit tests per channel, then the same hostile traffic through a real proxy."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from mitmproxy import http
from mitmproxy import io as mitmio
from mitmproxy.test import tflow

from conftest import KEY, PAYLOADS, ROOT, exchange
from support.harness import HOST

# the console runs in a browser: its handshake carries a browser's User-Agent (hasura.console.user-agent)
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
from telewarden.audit import trail as audit, render
from telewarden.engine import judge as engine_mod, strictjson
from telewarden.audit.trail import AuditTrail
from telewarden.engine.judge import Engine
from telewarden.proxy.exchange import http_exchange
from telewarden.engine.model import Mode
from telewarden.engine.packs import load_packs

# Names the sender chose. Each carries a marker that must never reach a trail file.
TABLE = "zqxcustomers"
FLAG = "--admin-secret-zqxflag"
FORGED = ("zqxrow\n2026-11-27T00:00:00.000Z  FORWARDED  hasura/cli                 POST "
          "https://telemetry.hasura.io:443/v1/http zqxforged")
HOSTILE_KEYS = {
    "table": TABLE,
    "flag": FLAG,
    "esc": "\x1b]0;zqxtitle\x07\x1b[2Jzqxesc",
    "newline-forged-record": FORGED,
    "bidi": "zqxbidi\u202egnp.exe\u2066x\u2069",
    "separators": "zqxsep\u2028a\u2029b\x85c",
    "del-and-c0": "zqxdel\x7f\x01\x08",  # (a NUL makes the whole body unverifiable: strictjson)
    "json-pointer-chars": "zqx/slash~tilde",
}
HEADER_NAMES = ["X-Zqxcustomers-Table", "X-Admin-Secret-Zqxhdr"]
ENCODING = "zqxinvoices"
MARKERS = ["zqx", "customers", "admin-secret", "gnp.exe", "invoices"]

# No control character (other than the newline between lines), no C1, no bidi or line separators.
DANGEROUS_TEXT = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def hostile_cli() -> dict:
    body = copy.deepcopy(PAYLOADS["cli-v1.3"])
    for name, key in HOSTILE_KEYS.items():
        body["data"][key] = f"value of {name}"
    body["data"][TABLE + "-mail"] = "jane.doe@acme-corp.com"  # a detector hit under an unknown key
    return body


def assert_clean(text: str, where: str) -> None:
    for marker in MARKERS:
        assert marker not in text.lower(), (where, marker)
    for name in [*HOSTILE_KEYS.values(), *HEADER_NAMES]:
        assert name not in text and json.dumps(name)[1:-1] not in text, (where, name)
    assert not DANGEROUS_TEXT.search(text), (where, DANGEROUS_TEXT.search(text))


RECORD = jsonschema.Draft202012Validator(json.loads((ROOT / "schemas" / "audit-record.schema.json").read_text()))


def assert_trail_clean(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir())
    assert "audit.key" not in names, names
    for p in folder.iterdir():
        data = p.read_bytes()
        text = data.decode("utf-8")  # strictly UTF-8: nothing undecodable was written
        assert_clean(text, p.name)
    for line in (folder / "audit.jsonl").read_text().splitlines():
        RECORD.validate(json.loads(line))  # every text field: one line, no control or bidi character


def test_the_record_schema_refuses_control_characters_in_text():
    rec = {"seq": 1, "prev": "0" * 64, "hash": "0" * 64, "id": "m1", "time": "2026-11-27T00:00:00.000Z",
           "decision": "blocked", "mode": "scrub", "pack": "hasura", "endpoint": "http", "kind": "cli",
           "transport": "http", "method": "POST", "destination": "https://x:443/v1/http", "size_in": 1,
           "size_out": 0, "micros": 1, "findings": [{"rule": "hasura.schema.unknown-key", "pointer": "/data/x",
                                                     "message": "m", "promise": "p", "severity": "high"}]}
    assert RECORD.is_valid(rec)
    for bad in ("/data/\x1b[2J", "/data/a\nb", "/data/\u202e", "/data/\u2028", "/data/\x85"):
        rec["findings"][0]["pointer"] = bad
        assert not RECORD.is_valid(rec), repr(bad)


# -- per channel: the engine's pointers ------------------------------------------------------

def test_unknown_key_names_are_shown_by_digest_only(engine):
    v = engine.inspect(exchange(hostile_cli()), Mode.SCRUB)
    unknown = [f for f in v.findings if f.rule == "hasura.schema.unknown-key"]
    assert len(unknown) == len(HOSTILE_KEYS) + 1
    for f in unknown:
        assert re.fullmatch(r"/data/\(key:[0-9a-f]{12}, \d+ chars(, looks like [a-z, -]+)?\)", f.pointer), f.pointer
    rec = render.record(v, exchange(hostile_cli()))
    assert_clean(json.dumps(rec, ensure_ascii=False), "record")
    assert_clean(render.block(rec), "block")


def test_a_key_digest_is_the_keyed_digest_of_the_name_and_says_its_length(engine):
    v = engine.inspect(exchange(hostile_cli()), Mode.SCRUB)
    want = hmac.new(KEY, TABLE.encode(), hashlib.sha256).hexdigest()[:12]
    assert f"/data/(key:{want}, {len(TABLE)} chars)" in [f.pointer for f in v.findings]


def test_known_names_are_still_shown(engine):
    body = copy.deepcopy(PAYLOADS["cli-v1.3"])
    body["data"]["command"] = "hasura migrate apply --admin-secret x"
    body["data"]["is_error"] = "yes"
    v = engine.inspect(exchange(body), Mode.SCRUB)
    assert {f.pointer for f in v.findings} == {"/data/command", "/data/is_error"}


def test_detector_hits_under_an_unknown_key_do_not_name_the_key(engine):
    body = copy.deepcopy(PAYLOADS["server-v2.48-default-source"])
    body["data"][TABLE] = {"owner": "jane.doe@acme-corp.com"}  # invalid: walked in full
    v = engine.inspect(exchange(body), Mode.AUDIT)
    hits = [f for f in v.findings if f.rule.startswith("hasura.detector.")]
    assert hits and all(TABLE not in f.pointer and "/owner" not in f.pointer for f in hits)
    assert_clean(json.dumps(render.record(v, exchange(body))), "record")


def test_array_indices_stay_readable(engine):
    body = copy.deepcopy(PAYLOADS["cli-v1.3"])
    body["data"]["command"] = ["hasura", "--admin-secret", "x"]
    v = engine.inspect(exchange(body), Mode.AUDIT)
    assert "/data/command" in {f.pointer for f in v.findings}


def test_header_names_other_than_known_ones_are_shown_by_digest(engine):
    headers = [("Content-Type", "application/json"), ("Cookie", "session=abc"),
               *((n, "zqx value") for n in HEADER_NAMES)]
    v = engine.inspect(exchange(PAYLOADS["cli-v1.3"], headers=headers), Mode.SCRUB)
    pointers = [f.pointer for f in v.findings]
    assert "header:cookie" in pointers  # a standard header name is vocabulary, not data
    odd = [p for p in pointers if p != "header:cookie"]
    assert len(odd) == 2 and all(re.fullmatch(r"header:\(key:[0-9a-f]{12}, \d+ chars\)", p) for p in odd)
    assert v.repaired is not None and set(v.repaired.drop_headers) == {"cookie", *(n.lower() for n in HEADER_NAMES)}
    assert_clean(json.dumps(render.record(v, exchange(PAYLOADS["cli-v1.3"]))), "record")


def test_trailer_names_keep_their_prefix_only(engine):
    f = tflow.tflow()
    f.request = http.Request.make("POST", f"https://{HOST}/v1/http", strictjson.dumps(PAYLOADS["cli-v1.3"]),
                                  {"Content-Type": "application/json"})
    f.client_conn.sni = f.server_conn.sni = HOST
    f.request.trailers = http.Headers(x_zqxcustomers="1")
    v = engine.inspect(http_exchange(f), Mode.SCRUB)
    assert [x.pointer.startswith("header:trailer:(key:") for x in v.findings] == [True]


def test_an_odd_content_encoding_is_not_echoed(engine):
    f = tflow.tflow()
    f.request = http.Request.make("POST", f"https://{HOST}/v1/http", b"", {"Content-Type": "application/json"})
    f.request.headers["Content-Encoding"] = ENCODING  # (make() drops a Content-Encoding it cannot apply)
    f.request.raw_content = b"\x00\x01zz"
    f.client_conn.sni = f.server_conn.sni = HOST
    ex = http_exchange(f)
    v = engine.inspect(ex, Mode.SCRUB)
    assert [x.rule for x in v.findings] == ["telewarden.body.bad-encoding"]
    rec = render.record(v, ex)
    assert_clean(json.dumps(rec) + render.block(rec), "record")
    assert "(unregistered value, 11 chars)" in rec["error"]


def test_a_registered_content_encoding_is_still_named(engine):
    f = tflow.tflow()
    f.request = http.Request.make("POST", f"https://{HOST}/v1/http", b"", {"Content-Type": "application/json"})
    f.request.headers["Content-Encoding"] = "gzip"
    f.request.raw_content = b"not gzip"
    f.client_conn.sni = f.server_conn.sni = HOST
    ex = http_exchange(f)
    rec = render.record(engine.inspect(ex, Mode.SCRUB), ex)
    assert rec["error"].endswith("Content-Encoding gzip")


def test_known_names_are_computed_once_per_pack(packs, monkeypatch):
    calls = []
    real = engine_mod.schemaplan_known_names if hasattr(engine_mod, "schemaplan_known_names") else None
    from telewarden.engine import schemaplan

    original = schemaplan.known_names
    monkeypatch.setattr(schemaplan, "known_names", lambda s: calls.append(1) or original(s))
    engine_mod._KNOWN_NAMES.clear()
    eng = Engine(packs, digest_key=b"k")
    for _ in range(50):
        eng.inspect(exchange(hostile_cli()), Mode.SCRUB)
    assert len(calls) == len(packs[0].kinds) and real is None
    assert engine_mod._known_names(packs[0]) is engine_mod._known_names(packs[0])


# -- per channel: what the human log holds ---------------------------------------------------------

def test_the_trail_files_hold_no_hostile_name_and_no_control_character(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TELEWARDEN_AUDIT_KEY", raising=False)
    trail = AuditTrail(tmp_path / "trail")
    for body in (hostile_cli(),):
        ex = exchange(body, headers=[(n, "1") for n in HEADER_NAMES])
        trail.write(render.record(engine.inspect(ex, Mode.SCRUB), ex))
    trail.close()
    assert_trail_clean(tmp_path / "trail")
    human = (tmp_path / "trail" / "audit.log").read_text()
    header_lines = [ln for ln in human.splitlines() if ln and not ln.startswith(" ")]
    assert len(header_lines) == 1  # the forged "record" inside a key name did not become a line
    out = io.StringIO()
    audit.render_trail(tmp_path / "trail", out)
    assert out.getvalue() == human


# -- key guessing: the trail alone does not let anyone test a guess ----------------------------------

def test_the_trail_folder_alone_does_not_hold_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TELEWARDEN_AUDIT_KEY", raising=False)
    trail = AuditTrail(tmp_path / "trail")
    eng = Engine(load_packs([]), digest_key=trail.key)
    ex = exchange(hostile_cli())
    trail.write(render.record(eng.inspect(ex, Mode.SCRUB), ex))
    trail.close()
    jsonl = (tmp_path / "trail" / "audit.jsonl").read_text()
    guess = hmac.new(trail.key, TABLE.encode(), hashlib.sha256).hexdigest()[:12]
    assert guess in jsonl  # with the key, a guess can be tested: that is why the key stays out
    folder_files = list((tmp_path / "trail").iterdir())
    assert all(trail.key not in p.read_bytes() for p in folder_files)
    for p in folder_files:  # no file of the folder, used as a key, confirms the guess either
        for candidate in (p.read_bytes(), p.read_bytes().strip()):
            assert hmac.new(candidate, TABLE.encode(), hashlib.sha256).hexdigest()[:12] not in jsonl
    assert (tmp_path / "config" / "telewarden" / "audit.key").read_bytes() == trail.key


# -- raw values: local only ----------------------------------------------------------------------

def test_keep_values_fills_fields_that_no_record_carries(packs):
    eng = Engine(packs, digest_key=b"k")
    assert all(f.value is None and f.raw_pointer is None for f in eng.inspect(exchange(hostile_cli()), Mode.SCRUB).findings)
    eng.keep_values = True
    headers = [(HEADER_NAMES[0], "zqx header value")]
    ex = exchange(hostile_cli(), headers=headers)
    v = eng.inspect(ex, Mode.SCRUB)
    raw = {f.raw_pointer: f.value for f in v.findings}
    assert raw["/data/" + TABLE] == "value of table"
    assert raw["header:" + HEADER_NAMES[0].lower()] == "zqx header value"
    rec = render.record(v, ex)
    assert_clean(json.dumps(rec, ensure_ascii=False) + render.block(rec), "record with keep_values")
    assert all("value" not in f.to_dict() and "raw_pointer" not in f.to_dict() for f in v.findings)


def write_recording(path: Path) -> None:
    with path.open("wb") as fh:
        w = mitmio.FlowWriter(fh)
        f = tflow.tflow()
        f.request = http.Request.make("POST", f"https://{HOST}/v1/http", strictjson.dumps(hostile_cli()),
                                      {"Content-Type": "application/json", HEADER_NAMES[0]: "zqx header value"})
        f.client_conn.sni = f.server_conn.sni = HOST
        w.add(f)


def test_check_show_values_prints_raw_values_marked_and_only_when_asked(tmp_path):
    rec = tmp_path / "flows.mitm"
    write_recording(rec)
    tw = str(Path(sys.executable).parent / "telewarden")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TELEWARDEN_AUDIT_KEY")}
    plain = subprocess.run([tw, "check", str(rec)], capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 1 and "RAW" not in plain.stdout
    assert_clean(plain.stdout, "check report")
    shown = subprocess.run([tw, "check", "--show-values", str(rec)], capture_output=True, text=True, env=env,
                           timeout=120)
    assert shown.returncode == 1
    out = shown.stdout
    assert out.startswith("WARNING: --show-values") and out.rstrip().endswith("audit trail.")
    assert f"RAW pointer: /data/{TABLE}" in out and 'RAW value: "value of table"' in out
    assert "RAW value: \"zqx header value\"" in out and f"RAW pointer: header:{HEADER_NAMES[0].lower()}" in out
    assert "RAW pointer: /data/zqxrow\\x0a2026" in out  # escaped even here: still one line each
    assert not DANGEROUS_TEXT.search(out)
    js = subprocess.run([tw, "check", "--show-values", "--format", "json", str(rec)], capture_output=True,
                        text=True, env=env, timeout=120)
    assert js.returncode == 2 and "text report only" in js.stderr


# -- through a real proxy --------------------------------------------------------------------------

@pytest.mark.proxy
@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_hostile_names_through_a_real_proxy_never_reach_the_trail(start_proxy, upstream, tmp_path, mode):
    config = tmp_path / "config"
    # no TELEWARDEN_AUDIT_KEY: the proxy makes its key where the key belongs, not in the trail
    proxy = start_proxy(mode, env={"TELEWARDEN_AUDIT_KEY": "", "XDG_CONFIG_HOME": str(config)})
    body = strictjson.dumps(hostile_cli())
    status, _ = proxy.curl(body, headers=[f"{n}: zqx header value" for n in HEADER_NAMES])
    assert status == (200 if mode != "block" else 403)
    status, _ = proxy.curl(strictjson.dumps(PAYLOADS["cli-v1.3"]), headers=[f"Content-Encoding: {ENCODING}"])
    assert status == (200 if mode == "audit" else 403)
    console = copy.deepcopy(PAYLOADS["console-v2.48-click"])
    for key in HOSTILE_KEYS.values():
        console["data"][key] = "zqx"
    with proxy.websocket(user_agent_header=BROWSER_UA) as ws:
        ws.send(strictjson.dumps(console).decode())
    proxy.stop()
    decisions = proxy.decisions()
    assert len(decisions) >= 3 and any(d["transport"] == "websocket" for d in decisions)
    rules = {f["rule"] for d in decisions for f in d["findings"]}
    assert {"hasura.schema.unknown-key", "hasura.header.unexpected", "telewarden.body.bad-encoding"} <= rules
    assert_trail_clean(proxy.audit)
    assert audit.verify(proxy.audit)[0] == 0
    key = (config / "telewarden" / "audit.key").read_bytes()
    digest = hmac.new(key, TABLE.encode(), hashlib.sha256).hexdigest()[:12]
    assert digest in (proxy.audit / "audit.jsonl").read_text()  # the key that made the digests is outside
