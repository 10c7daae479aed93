"""`telewarden check` on real recordings (written by mitmdump) and HAR files, as a CI gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from mitmproxy import io as mitmio

from conftest import EXAMPLES, PAYLOADS, VIOLATIONS
from support.harness import HOST
from telewarden.engine import strictjson

TW = str(Path(sys.executable).parent / "telewarden")
BAD_HTTP = [c for c in VIOLATIONS if c["transport"] == "http"]
BAD_WS = [c for c in VIOLATIONS if c["transport"] == "websocket"]
# the console runs in a browser: its handshake carries a browser's User-Agent (hasura.console.user-agent)
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


def tw(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run([TW, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, upstream, confdir):
    """A real recording: audit-mode proxy with -w, genuine and violating HTTP and WebSocket traffic."""
    from support.harness import Proxy

    folder = tmp_path_factory.mktemp("recording")
    flows = folder / "session.mitm"
    proxy = Proxy(folder, upstream, confdir, "audit", ["--set", f"save_stream_file={flows}"]).start()
    for name in ("cli-v1.3", "server-v2.48-default-source"):
        proxy.curl(strictjson.dumps(PAYLOADS[name]))
    for case in BAD_HTTP[:3]:
        proxy.curl(strictjson.dumps(case["body"]))
    proxy.curl(b'{"hello":"world"}', url="https://other.test/api")
    with proxy.websocket(user_agent_header=BROWSER_UA) as ws:
        ws.send(json.dumps(PAYLOADS["console-v2.48-click"]))
        ws.send(json.dumps(BAD_WS[0]["body"]))
    proxy.stop()
    clean = folder / "clean.mitm"
    with flows.open("rb") as f, clean.open("wb") as out:  # the clean part of the same recording
        w = mitmio.FlowWriter(out)
        for fl in mitmio.FlowReader(f).stream():
            if fl.request.content in (strictjson.dumps(PAYLOADS["cli-v1.3"]), b'{"hello":"world"}'):
                w.add(fl)
    return {"all": flows, "clean": clean, "folder": folder, "expected_bad": 3 + 1}


def test_findings_in_a_real_recording_exit_1_with_a_readable_report(recorded):
    r = tw("check", str(recorded["all"]))
    assert r.returncode == 1, r.stderr
    assert r.stdout.count("promise:") >= recorded["expected_bad"]
    assert "hasura.console.url-route" in r.stdout and "/data/url" in r.stdout  # the WebSocket frame
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("8 telemetry messages, 4 with findings") and "1 other messages passed through" in summary


def test_clean_recording_exits_0(recorded):
    r = tw("check", str(recorded["clean"]))
    assert r.returncode == 0 and "1 telemetry messages, 0 with findings" in r.stdout


def test_json_format_is_one_record_per_message(recorded):
    r = tw("check", "--format", "json", str(recorded["all"]))
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 8 and sum(1 for x in recs if x["findings"]) == 4
    assert {x["transport"] for x in recs} == {"http", "websocket"}


def test_mode_changes_the_decision_shown(recorded):
    block = [json.loads(x) for x in tw("check", "--format", "json", "--mode", "block", str(recorded["all"])).stdout.splitlines()]
    assert {x["decision"] for x in block if x["findings"]} == {"blocked"}
    scrub = [json.loads(x) for x in tw("check", "--format", "json", str(recorded["all"])).stdout.splitlines()]
    assert {x["decision"] for x in scrub if x["findings"]} == {"scrubbed"}


def test_junit_report_has_one_case_per_message_and_readable_failures(recorded, tmp_path):
    out = tmp_path / "junit.xml"
    assert tw("check", "--junit", str(out), str(recorded["all"])).returncode == 1
    root = ET.parse(out).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert root.tag == "testsuites" and len(cases) == 8 and suite.get("failures") == "4"
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert len(failures) == 4
    assert all("promise:" in f.text and f.get("message") for f in failures)
    assert any(c.get("classname") == "telewarden.hasura.cli" for c in cases)


def test_allow_waives_a_rule_with_the_reason_in_every_report(recorded, tmp_path):
    rules = {f["rule"] for x in tw("check", "--format", "json", str(recorded["all"])).stdout.splitlines()
             for f in json.loads(x)["findings"]}
    args = [a for r in sorted(rules) for a in ("--allow", f"{r}=accepted in review TW-1")]
    r = tw("check", *args, "--junit", str(tmp_path / "j.xml"), str(recorded["all"]))
    assert r.returncode == 0
    assert "waived: accepted in review TW-1" in r.stdout and "waived: " in r.stdout.splitlines()[-1]
    assert "accepted in review TW-1" in (tmp_path / "j.xml").read_text()
    bad = tw("check", "--allow", "hasura.cli.error", str(recorded["all"]))
    assert bad.returncode == 2 and "RULE_ID=REASON" in bad.stderr


def test_expect_no_telemetry_fails_on_any_message_to_the_pack(recorded, tmp_path):
    r = tw("check", "--expect-no-telemetry", "hasura", str(recorded["clean"]))
    assert r.returncode == 1 and "FAIL: 1 messages reached telemetry endpoints" in r.stdout
    only_other = tmp_path / "other.mitm"
    with recorded["clean"].open("rb") as f, only_other.open("wb") as out:
        w = mitmio.FlowWriter(out)
        for fl in mitmio.FlowReader(f).stream():
            if fl.request.pretty_host == "other.test":
                w.add(fl)
    r = tw("check", "--expect-no-telemetry", str(only_other))
    assert r.returncode == 0 and "0 telemetry messages" in r.stdout


@pytest.mark.parametrize("ext", ["mitm", "har"])
def test_export_writes_telemetry_flows_with_nothing_that_broke_policy(recorded, tmp_path, ext):
    out = tmp_path / f"safe.{ext}"
    assert tw("check", "--export", str(out), str(recorded["all"])).returncode == 1
    again = tw("check", str(out))
    assert again.returncode == 0, again.stdout
    text = out.read_bytes()
    assert b"other.test" not in text  # only telemetry flows are exported
    assert b"--admin-secret" not in text


def test_har_from_the_demo_and_its_websocket_messages(tmp_path):
    har = json.loads((EXAMPLES / "flows" / "hasura-demo.har").read_text())
    entry = next(e for e in har["log"]["entries"] if e["request"]["url"].endswith("/v1/http"))
    ws_entry = json.loads(json.dumps(entry))
    ws_entry["request"].update(method="GET", url=f"https://{HOST}/v1/ws")
    ws_entry["request"].pop("postData", None)
    ws_entry["_webSocketMessages"] = [
        {"type": "send", "time": 1.0, "opcode": 1, "data": json.dumps(BAD_WS[0]["body"])},
        {"type": "receive", "time": 1.1, "opcode": 1, "data": "ignored: server to client"},
    ]
    har["log"]["entries"] = [ws_entry]
    path = tmp_path / "chrome.har"
    path.write_text(json.dumps(har))
    r = tw("check", "--format", "json", str(path))
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["transport"] for x in recs] == ["http", "websocket"]
    assert recs[1]["findings"][0]["rule"] == BAD_WS[0]["expect"][0]["rule"]


@pytest.mark.parametrize("content,what", [
    (b"\x00\x01garbage that is no flow", "not a readable mitmproxy flow file"),
    (b'{"log": {"entries": "nope"}}', "not a valid HAR file"),
    (b'{"log": ', "not a valid HAR file"),
    (b'{"log": {"entries": [{"request": {}}]}}', "HAR entry 0 is malformed"),
])
def test_corrupt_input_is_exit_2_naming_the_file(tmp_path, content, what):
    path = tmp_path / "broken.input"
    path.write_bytes(content)
    r = tw("check", str(path))
    assert r.returncode == 2 and str(path) in r.stderr and what in r.stderr


def test_truncated_flow_file_is_exit_2(recorded, tmp_path):
    data = recorded["all"].read_bytes()
    cut = tmp_path / "cut.mitm"
    cut.write_bytes(data[: len(data) // 2])
    r = tw("check", str(cut))
    assert r.returncode == 2 and "cut.mitm" in r.stderr


def test_missing_file_and_broken_rules_are_exit_2(tmp_path):
    assert tw("check", str(tmp_path / "missing.mitm")).returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: x")
    r = tw("check", "--rules", str(bad), str(EXAMPLES / "flows" / "hasura-demo.mitm"))
    assert r.returncode == 2 and "bad.yaml" in r.stderr


def test_progress_shows_on_a_terminal_and_never_in_ci(monkeypatch):
    from telewarden.recordings.check import Progress

    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    monkeypatch.delenv("CI", raising=False)
    assert Progress("auto", Tty()).on
    monkeypatch.setenv("CI", "true")
    assert not Progress("auto", Tty()).on and Progress("always", Tty()).on
    tty = Tty()
    p = Progress("always", tty)
    for _ in range(600):
        p.tick()
    p.done()
    assert tty.text.startswith("\rchecked 256 messages (") and tty.text.endswith("\r\x1b[K")


def test_demo_command_of_the_readme(tmp_path):
    r = tw("check", "--rules", str(EXAMPLES.parent / "rules"), *map(str, sorted((EXAMPLES / "flows").iterdir())))
    assert r.returncode == 1 and "hasura.cli.command-args" in r.stdout
