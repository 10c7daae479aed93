"""`telewarden icap` as a process: arguments, startup, reload of edited packs, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT, VIOLATIONS
from icap.squid_harness import IcapService
from icap.test_icap_protocol import http_head, parse_answer, reqmod
from support.harness import BIN
from telewarden.engine import strictjson

FLAGS = strictjson.dumps(next(c for c in VIOLATIONS if c["name"] == "cli-flag-values")["body"])


def ask(port: int, data: bytes) -> tuple:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return parse_answer(out)


@pytest.mark.parametrize("argv,message", [
    (["--mode", "nope"], "invalid choice"),
    (["--max-body", "0"], "--max-body must be positive"),
    (["--allow", "no-reason"], "RULE_ID=REASON"),
    (["--no-bundled"], "no rule packs loaded"),
    (["--rules", "/nonexistent/pack.yaml"], "pack"),
])
def test_bad_arguments_exit_2_naming_the_problem(tmp_path, argv, message):
    out = subprocess.run([str(BIN / "telewarden"), "icap", "--audit", str(tmp_path / "a"), "--listen-port", "0", *argv],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert message in out.stderr


def test_edited_packs_are_reloaded_and_a_broken_edit_keeps_the_last_good(tmp_path):
    pack = tmp_path / "hasura.yaml"
    original = (ROOT / "rules" / "hasura.yaml").read_text()
    pack.write_text(original)
    svc = IcapService(tmp_path / "svc", "block", ["--rules", str(pack), "--reload-ms", "200"]).start()
    try:
        assert "listening on icap://127.0.0.1:" in svc.log.read_text()
        bad = reqmod(http_head(), FLAGS)
        assert ask(svc.port, bad)[0] == 200  # blocked: an encapsulated 403
        istag = ask(svc.port, b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")[1]["istag"]
        pack.write_text(original.replace("check: {equals: null}", "check: {equals: null, absent: true}", 1))
        deadline = time.monotonic() + 10
        while "reload failed" not in svc.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "reload failed, keeping the last good rule packs" in svc.log.read_text()
        status, _, sections, body, _ = ask(svc.port, bad)
        assert status == 200 and json.loads(body)["rules"] == ["hasura.cli.command-args"]
        pack.write_text(original.replace("  - id: hasura.cli.command-args", "  - id: hasura.cli.command-args-disabled", 1)
                        .replace("at: [/data/command, /command]", "at: [/data/no-such-field]", 1))
        deadline = time.monotonic() + 10
        while "rule packs reloaded" not in svc.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        status, _, _, body, _ = ask(svc.port, bad)  # the edit is in force: that rule no longer judges
        assert status == 204 or "hasura.cli.command-args" not in json.loads(body)["rules"]
        assert ask(svc.port, b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")[1]["istag"] != istag
    finally:
        svc.stop()


def test_sigterm_stops_the_service_promptly_with_status_0(tmp_path):
    import socket

    svc = IcapService(tmp_path / "svc", "scrub").start()
    idle = socket.create_connection(("127.0.0.1", svc.port), timeout=5)  # a proxy's persistent connection
    try:
        t0 = time.monotonic()
        os.killpg(svc.proc.pid, signal.SIGTERM)
        assert svc.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        idle.close()
        svc.stop()
    assert (svc.audit / "audit.jsonl").exists() or (svc.audit / "audit.key").exists() or svc.audit.exists()
