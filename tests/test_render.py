"""render.py: the human block can hold no control character and no forged line; records name only
what the pack knows; raw values only where a local caller asks for them."""

from __future__ import annotations

import copy
import json
import re

import pytest

from conftest import PAYLOADS, exchange
from telewarden.audit import render
from telewarden.engine.judge import Engine
from telewarden.engine.model import Decision, Exchange, Finding, Mode, Severity, Transport, Verdict

# What a human log line may never hold: C0 (the newline separates lines), DEL, C1 (NEL), and the
# characters that reorder or break a line on screen.
DANGEROUS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]")
NASTY = "\x1b[2J\x1b]0;pwned\x07tab\there\r\nnew\u2028line\u2029para\x85nel\u202eevil\u2066iso\u2069\x00nul\ud800"


def nasty_record() -> dict:
    f = {"rule": "hasura.schema.unknown-key", "pointer": "/data/" + NASTY, "message": "m " + NASTY,
         "promise": "p " + NASTY, "severity": "high", "digest": "hmac-sha256:" + "0" * 32,
         "preview": "string, 3 chars", "repair": "dropped " + NASTY, "waived": "w " + NASTY}
    return {"id": "m1", "time": "2026-11-27T09:44:50.424Z", "decision": "blocked", "mode": "scrub",
            "pack": "hasura" + NASTY, "endpoint": "http", "kind": "cli" + NASTY, "transport": "http",
            "method": "POST" + NASTY, "destination": "https://x/" + NASTY, "source": "f.mitm#" + NASTY,
            "error": "e " + NASTY, "findings": [f, dict(f)], "size_in": 1, "size_out": 0, "micros": 1}


def test_escape_leaves_ordinary_text_alone_and_escapes_the_rest():
    assert render.escape("plain é 日本 text") == "plain é 日本 text"
    assert render.escape("a\x1bb") == "a\\x1bb"
    assert render.escape("a\nb\rc\td") == "a\\x0ab\\x0dc\\x09d"
    assert render.escape("\u202e\u2028\u2029\x85\u200b\ufeff") == "\\u202e\\u2028\\u2029\\x85\\u200b\\ufeff"
    assert render.escape("\U000e0041") == "\\U000e0041"  # tag characters hide text
    assert render.escape("\ud800") == "\\ud800"  # a lone surrogate cannot even be encoded
    assert render.escape("back\\slash") == "back\\\\slash"  # so that every escape is unambiguous
    assert render.escape("\\x1b") != render.escape("\x1b")


def test_a_block_with_hostile_text_everywhere_stays_one_record_of_safe_lines():
    rec = nasty_record()
    text = render.block(rec)
    text.encode("utf-8")  # no lone surrogate left: the write cannot fail
    assert not DANGEROUS.search(text)
    lines = text.split("\n")
    # only the header starts in column 0: no field can forge a line that reads as another record
    assert [ln for ln in lines if not ln.startswith(" ")] == [lines[0]]
    assert all(ln.startswith("    ") for ln in lines[1:])
    # and every hostile field was kept, escaped (nothing silently dropped)
    assert text.count("\\x1b[2J") == 1 + 1 + 1 + 1 + 1 + 1 + 2 * 5


def test_block_of_a_genuine_finding_is_unchanged_by_escaping(engine):
    body = copy.deepcopy(PAYLOADS["cli-v1.3"])
    body["data"]["command"] = "hasura migrate apply --admin-secret x"
    ex = exchange(body)
    text = render.block(render.record(engine.inspect(ex, Mode.SCRUB), ex))
    assert "\\" not in text and "hasura.cli.command-args" in text and "/data/command" in text


@pytest.mark.parametrize("value,shown", [
    ("gzip", "gzip"), ("GZIP, br", "gzip, br"), ("x-gzip,deflate", "x-gzip, deflate"),
    ("customers", "(unregistered value, 9 chars)"), ("gzip, acme_invoices", "(unregistered value, 19 chars)"),
    ("gzip\x1b[31m", "(unregistered value, 9 chars)"),
])
def test_only_registered_content_encodings_are_named(value, shown):
    assert render.shown_encoding(value) == shown


def test_a_body_problem_naming_an_odd_content_encoding_is_not_echoed():
    ex = Exchange(Transport.HTTP, "POST", ("telemetry.hasura.io",), 443, "/v1/http",
                  body_problem="bad-encoding: the body does not decode as Content-Encoding acme_customers")
    eng = Engine([], digest_key=b"k")
    problem = ex.body_problem
    v = Verdict(ex.id, Decision.BLOCKED, Mode.SCRUB, pack="hasura", endpoint="http", error=problem,
                findings=[Finding("telewarden.body.bad-encoding", "body", problem, "p", Severity.HIGH)])
    rec = render.record(v, ex)
    text = json.dumps(rec) + render.block(rec)
    assert "acme_customers" not in text and "(unregistered value, 14 chars)" in text
    assert eng  # (an engine is not needed: the record is the last gate before any view)


def test_raw_values_appear_only_when_asked_and_are_marked():
    v = Verdict("m1", Decision.BLOCKED, Mode.SCRUB, pack="hasura", endpoint="http", kind="cli")
    f = Finding("hasura.schema.unknown-key", "/data/(key:0123456789ab, 9 chars)", "key not in the cli schema",
                "p", Severity.HIGH, digest="hmac-sha256:" + "1" * 32, preview="string, 5 chars", repair="dropped")
    f.value, f.raw_pointer = "jane\x1b", "/data/customers"
    v.findings = [f]
    ex = Exchange(Transport.HTTP, "POST", ("telemetry.hasura.io",), 443, "/v1/http")
    rec = render.record(v, ex)
    assert "customers" not in json.dumps(rec) and "jane" not in json.dumps(rec)
    assert set(rec["findings"][0]) == {"rule", "pointer", "message", "promise", "severity", "digest", "preview", "repair"}
    plain = render.block(rec)
    assert "RAW" not in plain and "customers" not in plain
    shown = render.block(rec, [(f.raw_pointer, f.value)])
    assert "RAW pointer: /data/customers" in shown and 'RAW value: "jane\\x1b"' in shown
    assert not DANGEROUS.search(shown)


def test_raw_value_is_cut_at_a_limit():
    out = render.raw_value("x" * 5000, limit=100)
    assert out.endswith("(4902 more chars)") and out.count("x") == 99  # the opening quote counts


def test_a_decision_field_from_a_tampered_trail_is_escaped_too():
    rec = nasty_record()
    rec["decision"] = "blocked\x1b[2J\nforged"
    text = render.block(rec)
    assert not DANGEROUS.search(text) and len([ln for ln in text.split("\n") if not ln.startswith(" ")]) == 1


def test_summary_of_a_tampered_trail_is_escaped():
    from telewarden.audit import trail as audit

    s = {"messages": [{"pack": "h\x1b]0;x\x07", "kind": "k\n", "decision": "d\u202e", "count": 1}],
         "rules": [{"rule": "r\x1b", "count": 1, "decisions": {"blocked\x85": 1}, "promise": "p\u2028"}]}
    assert not DANGEROUS.search(audit.format_summary(s))
