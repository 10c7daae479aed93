"""`telewarden check` on recordings other tools made (tests/data/, see its README for sources and
licences): mitmproxy's own flow files of old format versions and HAR exports (Chrome, Charles,
Insomnia, mitmproxy, a .zhar), HAR Viewer's test HARs (Firefox, Chrome, IE 11, Fiddler, Firebug,
JSONP), and HARs that a real Chromium recorded through Playwright.

Most tests run the command in-process (`cli.main`), which is the same code the `telewarden`
script runs; a few run the real script to show that no traceback ever reaches the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from mitmproxy import http as mhttp
from mitmproxy import io as mitmio
from mitmproxy.io import tnetstring

from conftest import PAYLOADS, ROOT, VIOLATIONS
from support.docpaths import at, paths
from telewarden.recordings import check as checkrun
from telewarden import cli
from telewarden.engine import strictjson
from telewarden.recordings.flows import ReadLog, read, ws_time

DATA = ROOT / "tests" / "data"
MITM = DATA / "mitmproxy"
BROWSER = DATA / "browser"
HARVIEWER = DATA / "harviewer"
CORPUS = sorted(p for p in DATA.rglob("*") if p.suffix in (".mitm", ".har", ".zhar", ".harp"))
TW = str(Path(sys.executable).parent / "telewarden")
HOST = "telemetry.hasura.io"
BAD_HTTP = next(c for c in VIOLATIONS if c["transport"] == "http" and c["expect"][0]["rule"] == "hasura.cli.command-args")
BAD_WS = next(c for c in VIOLATIONS if c["transport"] == "websocket")
GOOD_HTTP = PAYLOADS["cli-v1.3"]
GOOD_WS = PAYLOADS["console-v2.48-click"]
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


def check(*args: str | Path) -> tuple[int, str, str]:
    """`telewarden check ARGS` in-process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["check", "--progress", "never", *map(str, args)])
    return rc, out.getvalue(), err.getvalue()


def records(*args: str | Path) -> tuple[int, list[dict], str]:
    rc, out, err = check("--format", "json", *args)
    return rc, [json.loads(x) for x in out.splitlines()], err


def rules(recs: list[dict]) -> set[str]:
    return {f["rule"] for r in recs for f in r["findings"]}


def load_har(path: Path) -> dict:
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def write_har(path: Path, har: dict) -> Path:
    path.write_text(json.dumps(har))
    return path


def playwright() -> dict:
    return load_har(BROWSER / "playwright-violations.har")


def pw_entry(pred) -> dict:
    return copy.deepcopy(next(e for e in playwright()["log"]["entries"] if pred(e)))


def pw_post(body) -> dict:
    """A telemetry POST as Chromium recorded it (via Playwright), with another body."""
    e = pw_entry(lambda e: e["request"]["method"] == "POST")
    e["request"]["postData"]["text"] = json.dumps(body)
    return e


def pw_socket(messages: list[dict]) -> dict:
    e = pw_entry(lambda e: e["response"]["status"] == 101)
    e["_webSocketMessages"] = messages
    return e


def send(body, t: float = 1795792649292.693) -> dict:
    return {"type": "send", "time": t, "opcode": 1, "data": json.dumps(body)}


def har_of(*entries: dict) -> dict:
    har = playwright()
    har["log"]["entries"] = list(entries)
    return har


# -- the corpus ------------------------------------------------------------------------------

EXIT = {"dumpfile-010.mitm": 2,  # a format mitmproxy 12 no longer reads
        "corrupted_har-brokenfile.har": 2,  # mitmproxy's broken-HAR fixture
        "not-json.har": 2, "not-valid.har": 2,  # HAR Viewer's broken fixtures
        "1.har": 2, "jsonp.har": 2, "testLoad2.harp": 2,  # JSONP (Firebug, HAR Viewer): named, not read
        "playwright-clean.har": 1, "playwright-violations.har": 1}  # a browser sends Origin, Referer, ...


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_recording_of_the_corpus_is_read(path):
    rc, out, err = check(path)
    assert rc == EXIT.get(path.name, 0), err
    assert "Traceback" not in err
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0]
    else:
        assert not err
    assert any(line.startswith("0 telemetry messages") or "telemetry messages" in line for line in out.splitlines())


def test_the_corpus_covers_what_the_issue_names():
    names = {p.name for p in CORPUS}
    assert {"dumpfile-7.mitm", "dumpfile-10.mitm", "dumpfile-011.mitm", "dumpfile-018.mitm", "dumpfile-019.mitm",
            "dumpfile-7-websocket.mitm", "flows-compressed.zhar", "har_files-chrome.har", "har_files-charles.har",
            "issue-49-ff47.har", "issue-61-ie11.fiddler.har", "1.har", "playwright-violations.har"} <= names
    assert (MITM / "LICENSE").read_text().startswith("Copyright") and "MIT" in (DATA / "README.md").read_text()
    assert "BSD" in (HARVIEWER / "LICENSE").read_text()
    log = ReadLog()
    msgs = [r for p in CORPUS for r in read(p, log=log)]
    assert len(msgs) >= 70 and sum(r.message_index is not None for r in msgs) >= 9  # WebSocket messages
    # what real exports hold: data: URLs, relative URLs, a bogus response Content-Encoding (`utf-8`)
    assert {"data: URL", "relative URL (no scheme or host)"} <= set(log.skipped)
    assert "responses that could not be converted (their requests judged alone)" in log.notes


def _with_telemetry_har(path: Path, tmp_path: Path) -> Path:
    """The recording with one violating Hasura CLI message added, in the exporter's own shape."""
    if path.suffix == ".zhar":
        har = json.loads(zlib.decompress(path.read_bytes()))
    else:
        har = load_har(path)
    entries = har["log"]["entries"]
    e = copy.deepcopy(next(x for x in entries if x["request"]["url"].startswith("http")))
    e["request"].update(method="POST", url=f"https://{HOST}/v1/http",
                        postData={"mimeType": "application/json", "text": json.dumps(BAD_HTTP["body"])})
    e["request"]["headers"] = [{"name": "Content-Type", "value": "application/json"}]
    entries.append(e)
    out = tmp_path / path.name
    data = json.dumps(har).encode()
    out.write_bytes(zlib.compress(data) if path.suffix == ".zhar" else data)
    return out


def _with_telemetry_flows(path: Path, tmp_path: Path, only: bool = False) -> Path:
    with path.open("rb") as f:
        flows = [fl for fl in mitmio.FlowReader(f).stream() if isinstance(fl, mhttp.HTTPFlow)]
    extra = copy.deepcopy(flows[0])
    extra.request.url = f"https://{HOST}/v1/http"
    extra.request.method = "POST"
    extra.request.headers.clear()
    extra.request.headers["content-type"] = "application/json"
    extra.request.content = strictjson.dumps(BAD_HTTP["body"])
    extra.websocket = None
    extra.client_conn.sni = extra.server_conn.sni = HOST  # the connection went there too
    extra.server_conn.address = (HOST, 443)
    out = tmp_path / path.name
    with out.open("wb") as f:
        w = mitmio.FlowWriter(f)
        for fl in [extra] if only else [*flows, extra]:
            w.add(fl)
    return out


READABLE = [p for p in CORPUS if EXIT.get(p.name) != 2 and p.parent != BROWSER and p.name != "data-url.har"]


@pytest.mark.parametrize("path", READABLE, ids=lambda p: p.name)
def test_telemetry_inserted_into_a_real_recording_is_judged(path, tmp_path):
    made = (_with_telemetry_flows if path.suffix == ".mitm" else _with_telemetry_har)(path, tmp_path)
    rc, recs, err = records(made)
    assert rc == 1, err
    assert [r["destination"] for r in recs] == [f"https://{HOST}:443/v1/http"]
    assert rules(recs) == {BAD_HTTP["expect"][0]["rule"]}


# -- 1. never a traceback; unreadable input is exit 2, one line naming file and entry ---------

def test_one_byte_edit_of_an_old_flow_file_is_exit_2_and_the_rest_is_judged(tmp_path):
    data = (MITM / "dumpfile-7.mitm").read_bytes()
    edited = data.replace(b"8:response", b"8:responsx", 1)  # mitmproxy's migration: KeyError
    assert edited != data
    extra = _with_telemetry_flows(MITM / "dumpfile-10.mitm", tmp_path).read_bytes()
    path = tmp_path / "edited.mitm"
    path.write_bytes(edited + extra)
    rc, out, err = check(path)
    assert rc == 2
    assert err.strip().splitlines() == [f"telewarden check: {path}: flow 0: cannot be read (KeyError: 'response'); skipped"]
    assert BAD_HTTP["expect"][0]["rule"] in out  # the flows after it were still read and judged
    assert "2 other messages passed through" in out  # dumpfile-7's second flow, and dumpfile-10's


def test_the_real_command_prints_no_traceback_for_an_edited_flow_file(tmp_path):
    path = tmp_path / "edited.mitm"
    path.write_bytes((MITM / "dumpfile-7.mitm").read_bytes().replace(b"8:response", b"8:responsx", 1))
    r = subprocess.run([TW, "check", str(path)], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "CI"})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "flow 0" in r.stderr


BAD_MESSAGES = {
    "time-not-a-number": ({"type": "send", "time": "yesterday", "opcode": 1, "data": "{}"}, "time is not a date"),
    "time-huge-float": ({"type": "send", "time": 1e300, "opcode": 1, "data": "{}"}, "time is not a date"),
    "time-huge-int": ({"type": "send", "time": 10**400, "opcode": 1, "data": "{}"}, "time is not a date"),
    "data-null": ({"type": "send", "time": 1.0, "opcode": 1, "data": None}, "data is not a string"),
    "data-object": ({"type": "send", "time": 1.0, "opcode": 1, "data": {"a": 1}}, "data is not a string"),
    "binary-bad-base64": ({"type": "send", "time": 1.0, "opcode": 2, "data": "%%%not base64"}, "not valid base64"),
    "opcode-string": ({"type": "send", "time": 1.0, "opcode": "1", "data": "{}"}, "opcode is not a number"),
    "opcode-unknown": ({"type": "send", "time": 1.0, "opcode": 3, "data": "{}"}, "opcode is neither"),
    "type-unknown": ({"type": "sent", "time": 1.0, "opcode": 1, "data": "{}"}, "neither send nor receive"),
}


@pytest.mark.parametrize("name", BAD_MESSAGES)
def test_an_unreadable_websocket_message_is_one_line_and_the_rest_is_judged(name, tmp_path):
    msg, why = BAD_MESSAGES[name]
    path = tmp_path / "x.har"
    path.write_text(json.dumps(har_of(pw_socket([msg, send(BAD_WS["body"])]))))  # json writes 10**400 as is
    rc, out, err = check(path)
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"telewarden check: {path}: HAR entry 0, WebSocket message 0: ")
    assert why in lines[0]
    assert BAD_WS["expect"][0]["rule"] in out and "[x.har#0.ws1]" in out  # the next message was judged


@pytest.mark.parametrize("flag", ["--junit", "--export"])
def test_output_paths_are_checked_before_anything_is_read(flag, tmp_path):
    src = BROWSER / "playwright-violations.har"
    rc, out, err = check(flag, tmp_path / "missing" / "out.xml", src)
    assert rc == 2 and out == "" and err.strip() == f"telewarden check: {flag} {tmp_path / 'missing' / 'out.xml'}: folder {tmp_path / 'missing'} does not exist"
    rc, out, err = check(flag, tmp_path, src)
    assert rc == 2 and out == "" and "is a folder" in err
    copy_ = tmp_path / "in.har"
    copy_.write_bytes(src.read_bytes())
    rc, out, err = check(flag, copy_, copy_)
    assert rc == 2 and out == "" and "is also an input" in err and copy_.read_bytes() == src.read_bytes()


def test_unreadable_parts_are_junit_errors(tmp_path):
    path = write_har(tmp_path / "x.har", har_of(pw_socket([{"type": "send", "data": None}, send(BAD_WS["body"])])))
    out = tmp_path / "j.xml"
    rc, _, _ = check("--junit", out, path)
    assert rc == 2
    text = out.read_text()
    assert 'errors="1"' in text and "WebSocket message 0: data is not a string" in text and 'failures="2"' in text


# -- 2. one odd entry never rejects the file ------------------------------------------------

def test_entries_that_cannot_be_telemetry_are_skipped_and_counted(tmp_path):
    base = pw_post(GOOD_HTTP)
    odd = []
    for url in ("data:text/plain,hello", "/v1/http", "blob:https://telemetry.hasura.io/4f0c", "chrome-extension://abc/x.js"):
        e = copy.deepcopy(base)
        e["request"]["url"] = url
        odd.append(e)
    path = write_har(tmp_path / "odd.har", har_of(*odd, pw_post(BAD_HTTP["body"])))
    rc, out, err = check(path)
    assert rc == 1 and not err
    assert BAD_HTTP["expect"][0]["rule"] in out and "[odd.har#4]" in out
    assert "skipped, cannot be telemetry: 1 blob: URL; 1 chrome-extension: URL; 1 data: URL; 1 relative URL (no scheme or host)" in out


def test_a_form_post_recorded_as_params_only_is_judged_as_the_form_it_was(tmp_path):
    e = pw_post(GOOD_HTTP)
    e["request"]["postData"] = {"mimeType": "application/x-www-form-urlencoded",
                                "params": [{"name": "command", "value": "hasura migrate apply --admin-secret x"}]}
    rc, recs, err = records(write_har(tmp_path / "form.har", har_of(e)))
    assert rc == 1 and not err
    assert len(recs) == 1 and recs[0]["size_in"] == len("command=hasura+migrate+apply+--admin-secret+x")
    assert any(r.startswith("telewarden.body.") for r in rules(recs))


def test_a_request_is_judged_alone_when_its_response_cannot_be_converted(tmp_path):
    e = pw_post(BAD_HTTP["body"])
    e["response"]["headers"].append({"name": "Content-Encoding", "value": "x-bogus"})
    e["response"]["content"] = {"size": 2, "mimeType": "text/plain", "text": "ok"}
    broken = pw_post(BAD_HTTP["body"])
    broken["response"] = "not an object"
    path = write_har(tmp_path / "resp.har", har_of(e, broken))
    rc, recs, err = records(path)
    assert rc == 1 and not err
    assert [r["source"] for r in recs] == ["resp.har#0", "resp.har#1"]
    assert all(BAD_HTTP["expect"][0]["rule"] in {f["rule"] for f in r["findings"]} for r in recs)
    assert "read with care: 2 responses that could not be converted (their requests judged alone)" in check(path)[1]


def test_an_unreadable_entry_is_exit_2_and_the_rest_of_the_file_is_judged(tmp_path):
    bad = pw_post(GOOD_HTTP)
    bad["request"]["headers"] = "Content-Type: application/json"
    path = write_har(tmp_path / "mixed.har", har_of(bad, pw_post(BAD_HTTP["body"])))
    rc, out, err = check(path)
    assert rc == 2
    assert err.strip() == f"telewarden check: {path}: HAR entry 0 is malformed (request headers are not a list); skipped"
    assert BAD_HTTP["expect"][0]["rule"] in out and "[mixed.har#1]" in out


# -- 3. HTTP/2 pseudo-headers --------------------------------------------------------------

def _chrome_entry(body, authority: str = HOST, url_host: str = HOST) -> dict:
    """mitmproxy's Chrome HAR fixture (HTTP/2, pseudo-headers listed), turned into telemetry."""
    e = copy.deepcopy(load_har(MITM / "har_files-chrome.har")["log"]["entries"][0])
    assert {h["name"] for h in e["request"]["headers"]} >= {":authority", ":method", ":path", ":scheme"}
    values = {":authority": authority, ":method": "POST", ":path": "/v1/http", ":scheme": "https"}
    e["request"]["headers"] = [{"name": h["name"], "value": values[h["name"]]}
                               for h in e["request"]["headers"] if h["name"] in values]
    e["request"]["headers"].append({"name": "content-type", "value": "application/json"})
    e["request"].update(method="POST", url=f"https://{url_host}/v1/http",
                        postData={"mimeType": "application/json", "text": json.dumps(body)})
    return e


def test_chrome_pseudo_headers_are_not_findings(tmp_path):
    har = load_har(MITM / "har_files-chrome.har")
    har["log"]["entries"] = [_chrome_entry(GOOD_HTTP)]
    rc, recs, err = records(write_har(tmp_path / "chrome.har", har))
    assert rc == 0, recs
    assert len(recs) == 1 and recs[0]["findings"] == [] and recs[0]["kind"] == "cli"


def test_authority_is_a_destination_name(tmp_path):
    har = load_har(MITM / "har_files-chrome.har")
    har["log"]["entries"] = [_chrome_entry(BAD_HTTP["body"], authority=HOST, url_host="cdn.example.net")]
    rc, recs, _ = records(write_har(tmp_path / "authority.har", har))
    assert rc == 1 and len(recs) == 1 and recs[0]["pack"] == "hasura"  # claimed through :authority
    assert BAD_HTTP["expect"][0]["rule"] in rules(recs)


# -- 4. WebSocket details ----------------------------------------------------------------------

def test_playwright_websocket_times_are_milliseconds_and_ports_follow_the_scheme():
    rc, recs, _ = records(BROWSER / "playwright-violations.har")
    ws = [r for r in recs if r["transport"] == "websocket"]
    handshake = next(r for r in recs if r["destination"].endswith("/v1/ws") and r["transport"] == "http")
    assert len(ws) == 2
    year = handshake["time"][:4]
    assert year.startswith("20") and all(r["time"][:4] == year for r in ws)
    assert handshake["destination"] == f"https://{HOST}:443/v1/ws"
    assert {r["destination"] for r in ws} == {f"wss://{HOST}:443/v1/ws"}


def test_websocket_time_seconds_or_milliseconds():
    started = 1_795_792_649.0
    assert ws_time(1_795_792_649.5, started) == 1_795_792_649.5  # Chrome: seconds
    assert ws_time(1_795_792_649_500.0, started) == 1_795_792_649.5  # Playwright: milliseconds
    assert ws_time(1_795_792_649_500, None) == 1_795_792_649.5 and ws_time(1_795_792_649.5, None) == 1_795_792_649.5
    assert ws_time(1e300, started) is None and ws_time(-1, started) is None and ws_time("1", started) is None
    assert ws_time(True, started) is None and ws_time(float("nan"), started) is None


def test_ws_url_handshake_gets_the_default_port_of_its_scheme(tmp_path):
    e = pw_socket([send(GOOD_WS)])
    e["request"]["url"] = f"ws://{HOST}/v1/ws"
    e2 = pw_socket([send(GOOD_WS)])
    e2["request"]["url"] = f"wss://{HOST}:8443/v1/ws"
    _, recs, _ = records(write_har(tmp_path / "ports.har", har_of(e, e2)))
    assert [r["destination"] for r in recs] == [f"http://{HOST}:80/v1/ws", f"ws://{HOST}:80/v1/ws",
                                                f"https://{HOST}:8443/v1/ws", f"wss://{HOST}:8443/v1/ws"]


def test_export_from_a_har_keeps_the_websocket_messages(tmp_path):
    out = tmp_path / "safe.har"
    rc, _, err = check("--export", out, BROWSER / "playwright-violations.har")
    assert rc == 1 and not err
    exported = load_har(out)["log"]["entries"]
    socket = next(e for e in exported if e.get("_webSocketMessages"))
    sent = [m for m in socket["_webSocketMessages"] if m["type"] == "send"]
    assert len(sent) == 2 and all(isinstance(json.loads(m["data"]), dict) for m in sent)
    original = [m for m in pw_entry(lambda e: "_webSocketMessages" in e)["_webSocketMessages"] if m["type"] == "send"]
    assert json.loads(original[1]["data"]) == BAD_WS["body"] and sent[1]["data"] != original[1]["data"]  # scrubbed
    assert abs(sent[0]["time"] - original[0]["time"] / 1000) < 1  # written in seconds, as mitmproxy does


# -- 5. exports and recordings round-trip ------------------------------------------------------

@pytest.mark.parametrize("ext", ["har", "mitm", "zhar"])
def test_an_export_passes_when_checked_again(ext, tmp_path):
    out = tmp_path / f"safe.{ext}"
    rc, text, _ = check("--mode", "block", "--export", out, BROWSER / "playwright-violations.har")
    assert rc == 1 and f"export {out}: telewarden check --export: left out what could not be repaired" in text
    again_rc, again, err = check(out)
    assert again_rc == 0, again + err
    assert "withheld" not in again and "kind.unknown" not in again
    if ext != "mitm":
        raw = out.read_bytes()
        har = json.loads(zlib.decompress(raw) if ext == "zhar" else raw)
        assert "left out what could not be repaired" in har["log"]["comment"]


@pytest.fixture(scope="module")
def scrubbed_recording(tmp_path_factory, upstream, confdir):
    """A recording made by a scrub-mode proxy (-w): it holds the repaired messages."""
    from support.harness import Proxy

    folder = tmp_path_factory.mktemp("scrub-recording")
    flows = folder / "scrubbed.mitm"
    proxy = Proxy(folder, upstream, confdir, "scrub", ["--set", f"save_stream_file={flows}"]).start()
    proxy.curl(strictjson.dumps(GOOD_HTTP))
    proxy.curl(strictjson.dumps(BAD_HTTP["body"]))
    with proxy.websocket(user_agent_header=BROWSER_UA) as ws:
        ws.send(json.dumps(GOOD_WS))
        ws.send(json.dumps(BAD_WS["body"]))
    proxy.stop()
    return flows


def test_a_scrub_mode_recording_shows_the_live_verdicts_and_fails_the_gate(scrubbed_recording):
    rc, out, err = check(scrubbed_recording)
    assert rc == 1, err
    blocks = [b for b in out.split("\n\n") if b.startswith("recorded live")]
    assert len(blocks) == 2  # the repaired HTTP message and the WebSocket flow with a repaired frame
    assert all("SCRUBBED" in b and "record in audit mode for a gate" in b for b in blocks)
    assert any(BAD_HTTP["expect"][0]["rule"] in b for b in blocks) and any(BAD_WS["expect"][0]["rule"] in b for b in blocks)
    assert "FAIL: 2 flows broke rules when recorded" in out
    rc, recs, _ = records(scrubbed_recording)
    live = [r["live"] for r in recs if "live" in r]
    assert rc == 1 and {x["decision"] for x in live} == {"scrubbed"}


def test_live_verdicts_are_shown_only_as_well_formed_rule_names():
    meta = {"decision": "scrubbed", "counts": {"scrubbed": 1, "evil\nline": 3},
            "rules": ["hasura.cli.command-args", "x\n\x1b[2Jinjected", 5]}
    assert checkrun.live_verdict(meta, {}) == {"decision": "scrubbed", "counts": {"scrubbed": 1},
                                               "rules": ["hasura.cli.command-args"]}
    assert checkrun.live_verdict(meta, {"hasura.cli.*": "ok"})["rules"] == []
    assert checkrun.live_verdict({"decision": "forwarded", "rules": []}, {}) is None
    assert checkrun.live_verdict({"decision": "nonsense"}, {}) is None


def test_an_export_of_a_scrub_mode_recording_passes_again(scrubbed_recording, tmp_path):
    out = tmp_path / "safe.mitm"
    assert check("--export", out, scrubbed_recording)[0] == 1
    rc, text, _ = check(out)
    assert rc == 0 and "recorded live" not in text


# -- 6. say what is wrong ----------------------------------------------------------------------

def test_jsonp_and_json_arrays_are_named(tmp_path):
    rc, out, err = check(HARVIEWER / "jsonp.har")  # HAR Viewer's: onInputData({...});
    assert rc == 2 and "JSONP-wrapped HAR" in err and "Invalid data format" not in err
    har = (BROWSER / "playwright-clean.har").read_text()
    array = tmp_path / "entries.json"
    array.write_text(json.dumps(json.loads(har)["log"]["entries"]))
    rc, out, err = check(array)
    assert rc == 2 and "a JSON array, not a HAR" in err


def test_zhar_from_mitmproxy_is_read(tmp_path):
    rc, out, err = check(MITM / "flows-compressed.zhar")
    assert rc == 0 and not err and "2 other messages passed through" in out
    renamed = tmp_path / "compressed.bin"  # found by its zlib header, whatever the name
    renamed.write_bytes((MITM / "flows-compressed.zhar").read_bytes())
    assert check(renamed)[0] == 0
    cut = tmp_path / "cut.zhar"
    cut.write_bytes((MITM / "flows-compressed.zhar").read_bytes()[:500])
    rc, _, err = check(cut)
    assert rc == 2 and "cut short" in err


def test_websocket_handshakes_without_messages_warn(tmp_path):
    har = playwright()
    for e in har["log"]["entries"]:
        e.pop("_webSocketMessages", None)  # as sitespeed.io's chrome-har writes it
    path = write_har(tmp_path / "chrome-har.har", har)
    rc, out, err = check("--expect-no-telemetry=hasura", path)
    assert f"warning: {path}: 1 WebSocket handshake(s) (101) without recorded messages" in err
    assert rc == 1  # the handshake itself is telemetry here; the warning is what tells of the frames
    other = pw_socket([])
    other["request"]["url"] = "wss://chat.example.net/socket"
    other.pop("_webSocketMessages")
    path = write_har(tmp_path / "other.har", har_of(other))
    rc, out, err = check("--expect-no-telemetry", path)
    assert rc == 0 and "1 WebSocket handshake(s) (101) without recorded messages" in err


def test_testing_api_raises_after_reading_everything_and_keeps_skips(tmp_path):
    from telewarden.recordings.flows import InputError
    from telewarden.recordings.testing import Checker

    e = pw_post(GOOD_HTTP)
    e["request"]["url"] = "data:,x"
    bad = pw_post(GOOD_HTTP)
    bad["request"]["headers"] = 5
    checker = Checker()
    rec = checker.load(write_har(tmp_path / "a.har", har_of(e, pw_post(GOOD_HTTP))))
    assert rec.skipped == {"data: URL": 1} and len(rec) == 1
    with pytest.raises(InputError, match="HAR entry 0 is malformed"):
        checker.load(write_har(tmp_path / "b.har", har_of(bad)))


# -- fuzz: truncated and byte-flipped copies, and HARs with odd values -------------------------


ODD = [None, 0, -1, 1.5, 1e308, 10**30, 2**64, "", "x", "1", "%%", "\ud800", "data:,x", "wss://h/", [], {}, [1, 2], True]


def test_fuzz_never_a_traceback(tmp_path, monkeypatch):
    """Exit 0, 1 or 2 only, and an exit 2 always says why. Seeded, so a failure is repeatable."""
    engine = cli.load_engine(argparse.Namespace(rules=[], no_bundled=False, max_body=1 << 20))
    monkeypatch.setattr(checkrun, "load_engine", lambda args, waivers=None: engine)  # compile the packs once
    rng = random.Random(11)
    sources = [(p, p.read_bytes()) for p in CORPUS]
    hars = [(p, load_har(p)) for p in CORPUS if p.suffix == ".har" and EXIT.get(p.name) != 2]
    cases = codes = 0
    seen: dict[int, int] = {}

    def run(path: Path) -> None:
        nonlocal cases
        rc, _, err = check("--export", tmp_path / "out.har", path)
        cases += 1
        seen[rc] = seen.get(rc, 0) + 1
        assert rc in (0, 1, 2), path
        assert rc != 2 or err.strip(), path

    for k in range(600):  # bytes: cut anywhere, or 1-3 bytes changed
        src, data = sources[k % len(sources)]
        buf = bytearray(data)
        if k % 3 == 0:
            buf = buf[: rng.randrange(len(buf))]
        else:
            for _ in range(rng.choice((1, 1, 3))):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        path = tmp_path / f"b{k}{src.suffix}"
        path.write_bytes(bytes(buf))
        run(path)
    for k in range(400):  # structure: odd values and missing keys anywhere in a real HAR's entries
        src, har = hars[k % len(hars)]
        har = copy.deepcopy(har)
        for _ in range(rng.choice((1, 2, 4))):
            spots = [q for q in paths(har, items=6) if len(q) > 3]
            if not spots:
                break
            spot = rng.choice(spots)
            parent = har
            for key in spot[:-1]:
                parent = parent[key]
            if isinstance(parent, dict) and rng.random() < 0.2:
                del parent[spot[-1]]
            else:
                parent[spot[-1]] = rng.choice(ODD)
        path = tmp_path / f"j{k}.har"
        path.write_text(json.dumps(har))
        run(path)
    made = tmp_path / "with-telemetry"
    made.mkdir()
    flow_files = [_with_telemetry_flows(p, made, only=True) for p, _ in sources  # judged, so rendered
                  if p.suffix == ".mitm" and EXIT.get(p.name) != 2]  # and exported
    numbers = (1e300, -1e20, float("nan"), float("inf"), -1, 2**70, 1e18)
    others = (None, b"", b"\xff\xfe", "x", [], {}, True, b"telemetry.hasura.io", [[b"content-encoding", b"gzip"]])
    for k in range(300):  # flow state, framing intact: a timestamp no date can hold, odd types anywhere
        with flow_files[k % len(flow_files)].open("rb") as f:
            state = tnetstring.load(f)
        spots = [q for q in paths(state, items=6) if q]
        if k % 2 == 0:
            spots = [q for q in spots if isinstance(at(state, q), (int, float)) and not isinstance(at(state, q), bool)]
        for spot in rng.sample(spots, min(len(spots), rng.choice((1, 3, 6)))):
            with contextlib.suppress(TypeError, KeyError, IndexError):  # an earlier change replaced the parent
                at(state, spot[:-1])[spot[-1]] = rng.choice(numbers if k % 2 == 0 else numbers + others)
        path = tmp_path / f"n{k}.mitm"
        path.write_bytes(tnetstring.dumps(state))
        run(path)
    codes = len(seen)
    assert cases == 1300 and codes == 3  # every outcome occurred: the mutations reach the judging


def test_timestamps_that_are_not_dates_never_end_the_run(tmp_path):
    from mitmproxy.test import tflow

    f = tflow.tflow(resp=True)
    f.request.url, f.request.method = f"https://{HOST}/v1/http", "POST"
    f.request.headers.clear()
    f.request.headers["content-type"] = "application/json"
    f.request.content = strictjson.dumps(GOOD_HTTP)
    f.client_conn.sni = f.server_conn.sni = HOST
    f.request.timestamp_start = 1e132
    path = tmp_path / "odd-time.mitm"
    with path.open("wb") as out:
        mitmio.FlowWriter(out).add(f)
    rc, recs, err = records(path)
    assert len(recs) == 1 and recs[0]["time"].startswith("1970-01-01") and "Traceback" not in err
    rc, out, err = check("--export", tmp_path / "x.har", path)
    assert rc == 2 and err.strip() == (f"telewarden check: --export {tmp_path / 'x.har'}: a flow cannot be written: "
                                       "odd-time.mitm#0 (OverflowError); left out")
    assert "read with care: 1 timestamps that are not dates (shown as 1970-01-01)" in out


def test_websocket_control_frames_are_left_out_and_a_payload_is_said(tmp_path):
    ping = {"type": "send", "time": 1795792649292.0, "opcode": 9, "data": "my-secret-host.internal"}
    pong = {"type": "receive", "time": 1795792649292.0, "opcode": 10, "data": ""}
    path = write_har(tmp_path / "ctl.har", har_of(pw_socket([ping, pong, send(GOOD_WS)])))
    rc, out, err = check(path)
    assert rc == 1 and not err  # the handshake's Origin; the frames read
    assert ("read with care: 1 WebSocket control frames (close, ping, pong: left out); "
            "1 client WebSocket control frames WITH A PAYLOAD (left out: not judged offline)") in out


def test_error_lines_never_carry_control_characters():
    from telewarden.recordings.flows import _short

    assert _short(ValueError("bad \x1b[2J\nvalue")) == "ValueError: bad \\x1b[2J\\x0avalue"
    assert len(_short(KeyError("x" * 1000))) < 140


def test_output_paths_are_checked_before_the_show_values_banner(tmp_path):
    rc, out, err = check("--show-values", "--junit", tmp_path / "no" / "j.xml", BROWSER / "playwright-clean.har")
    assert rc == 2 and out == "" and "does not exist" in err
