"""The Next.js pack (rules/nextjs.yaml) and the batch feature of the pack language it needs: genuine
payloads of every generation pass, every documented violation is caught at its event's pointer, and
scrub repairs or drops only the offending events."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, KEY, ROOT
from telewarden.engine import strictjson
from telewarden.engine.judge import Engine
from telewarden.engine.model import Decision, Exchange, Mode, Transport
from telewarden.engine.packs import PackError, load_pack, load_packs

HOST, PATH = "telemetry.nextjs.org", "/api/v1/record"
PAYLOADS = {p.stem: json.loads(p.read_text()) for p in sorted((EXAMPLES / "payloads" / "nextjs").glob("*.json"))}
VIOLATIONS = json.loads((EXAMPLES / "violations-nextjs.json").read_text())
# What Node's fetch (undici) sent in the real `next build` (tests/test_real_clients.py)
NODE_HEADERS = (("Connection", "keep-alive"), ("Content-Type", "application/json"), ("Accept", "*/*"),
                ("Accept-Language", "*"), ("Sec-Fetch-Mode", "cors"), ("User-Agent", "node"),
                ("Accept-Encoding", "br, gzip, deflate"), ("Content-Length", "1472"))


def record(body, headers=NODE_HEADERS) -> Exchange:
    raw = body if isinstance(body, bytes) else strictjson.dumps(body)
    return Exchange(Transport.HTTP, "POST", (HOST,), 443, PATH, "", tuple(headers), raw)


@pytest.fixture(scope="module")
def eng():
    return Engine(load_packs([]), digest_key=KEY)


def test_examples_cover_every_event_kind(eng):
    """Every event kind has a genuine example, or a documented violation when every genuine form
    of it breaks the promise (NEXT_EDGE_ALLOW_DYNAMIC_USED always carries file paths)."""
    pack = next(p for p in eng.packs if p.id == "nextjs")
    seen = {e["eventName"] for b in [*PAYLOADS.values(), *(c["body"] for c in VIOLATIONS)] for e in b["events"]}
    for kind in pack.kinds[0].batch.kinds:
        assert set(kind.when[0][1]) & seen, f"no example of {kind.id}"


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_genuine_payload_of_every_generation_passes(eng, name):
    v = eng.inspect(record(PAYLOADS[name]), Mode.BLOCK)
    assert v.findings == [] and v.decision is Decision.FORWARDED, [f.to_dict() for f in v.findings]
    assert v.pack == "nextjs" and v.kind == "record"


@pytest.mark.parametrize("case", VIOLATIONS, ids=[c["name"] for c in VIOLATIONS])
def test_documented_violation_is_caught_at_its_event(eng, case):
    v = eng.inspect(record(case["body"]), Mode.AUDIT)
    assert [(f.rule, f.pointer) for f in v.findings] == [(e["rule"], e["pointer"]) for e in case["expect"]]
    assert v.decision is Decision.FORWARDED
    assert eng.inspect(record(case["body"]), Mode.BLOCK).decision is Decision.BLOCKED


@pytest.mark.parametrize("case", VIOLATIONS, ids=[c["name"] for c in VIOLATIONS])
def test_scrub_repairs_or_drops_only_the_offending_events(eng, case):
    v = eng.inspect(record(case["body"]), Mode.SCRUB)
    if not case["scrubbable"]:
        assert v.decision is Decision.BLOCKED
        return
    assert v.decision is Decision.SCRUBBED, v.error
    fixed = json.loads(v.repaired.body)
    assert eng.inspect(record(fixed), Mode.BLOCK).findings == []
    bad = {int(e["pointer"].split("/")[2]) for e in case["expect"] if e["pointer"].startswith("/events/")}
    dropped = {int(f.pointer.split("/")[2]) for f in v.findings if f.repair and f.repair.startswith("the event is dropped")}
    kept = [e for i, e in enumerate(case["body"]["events"]) if i not in bad]
    assert [e for e in fixed["events"] if e in kept] == kept  # every clean event goes, unchanged, in order
    assert len(fixed["events"]) == len(case["body"]["events"]) - len(dropped)
    assert fixed["context"] == case["body"]["context"]


def test_repairs_in_detail(eng):
    case = next(c for c in VIOLATIONS if c["name"] == "nextjs-dependency-specs-15.5")
    fixed = json.loads(eng.inspect(record(case["body"]), Mode.SCRUB).repaired.body)
    assert [e["fields"] for e in fixed["events"][3:]] == [
        {"packageName": "@private/package", "packageVersion": "unknown"},
        {"packageName": "ui-kit", "packageVersion": "unknown"},
        {"packageName": "internal-sdk", "packageVersion": "unknown"}]
    flag = next(c for c in VIOLATIONS if c["name"] == "nextjs-unknown-flag-value-16.0")
    fixed = json.loads(eng.inspect(record(flag["body"]), Mode.SCRUB).repaired.body)
    assert fixed["events"][0]["fields"]["unknownFlag"] == "--hostname"  # keep_match: the flag name only


def test_unknown_event_is_dropped_and_named_by_index_only(eng):
    case = next(c for c in VIOLATIONS if c["name"] == "nextjs-unlisted-event-16.0")
    v = eng.inspect(record(case["body"]), Mode.SCRUB)
    [f] = v.findings
    assert f.pointer == "/events/1" and f.repair == "the event is dropped" and "NEXT_AGENT" not in json.dumps(f.to_dict())
    assert [e["eventName"] for e in json.loads(v.repaired.body)["events"]] == [
        "NEXT_CLI_UNKNOWN_FLAG", "NEXT_MCP_TOOL_USAGE", "NEXT_BUILD_FEATURE_USAGE"]


def test_event_findings_point_into_the_event_and_detectors_see_event_strings(eng):
    body = copy.deepcopy(PAYLOADS["nextjs-15.5-build-packages"])
    body["events"][1]["fields"]["surprise"] = "jane.doe@acme.com"
    v = eng.inspect(record(body), Mode.SCRUB)
    rules = [(f.rule, f.pointer) for f in v.findings]
    assert ("nextjs.schema.unknown-key", "/events/1/fields/(key:" + rules[0][1].split("(key:")[1]) == rules[0]
    assert ("nextjs.detector.email", rules[0][1]) in rules
    assert v.decision is Decision.SCRUBBED
    assert "surprise" not in v.repaired.body.decode()


def test_event_index_counts_events_for_a_ledger(eng):
    """Findings of a batch carry the event index in the pointer (/events/N/...): a ledger counts
    offending events (distinct N), not requests. The 37-event feature batch is one message."""
    body = copy.deepcopy(PAYLOADS["nextjs-15.5-build-features"])
    for i in (2, 5, 30):
        body["events"][i]["fields"]["featureName"] = f"useCache/custom-{i}"
    v = eng.inspect(record(body), Mode.SCRUB)
    assert sorted({int(f.pointer.split("/")[2]) for f in v.findings}) == [2, 5, 30]
    assert len(json.loads(v.repaired.body)["events"]) == 34


def test_unrepairable_block_mode_of_a_batch_blocks_the_message(tmp_path, eng):
    data = yaml.safe_load((ROOT / "rules" / "nextjs.yaml").read_text())
    data["kinds"][0]["batch"]["unrepairable"] = "block"
    path = tmp_path / "rules" / "nextjs.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    strict = Engine(load_packs([path]), digest_key=KEY)
    case = next(c for c in VIOLATIONS if c["name"] == "nextjs-unlisted-event-16.0")
    v = strict.inspect(record(case["body"]), Mode.SCRUB)
    assert v.decision is Decision.BLOCKED and v.findings[0].repair is None


@pytest.mark.parametrize("edit,expect", [
    (lambda d: d["kinds"][1].update(within="nothing"), "kind 'cli-session-started': within 'nothing': not a kind with a batch"),
    (lambda d: d["kinds"][1].update(within="cli-session-stopped"), "within 'cli-session-stopped': not a kind with a batch"),
    (lambda d: d["kinds"][0]["batch"].update(at="/events/*"), "batch 'at' must name one array"),
    (lambda d: d["kinds"][0]["batch"].update(unrepairable="ignore"), "'ignore' is not one of"),
    (lambda d: d["rules"][5]["scrub"].update(keep_match="(unclosed"), "bad keep_match pattern"),
])
def test_broken_batch_declarations_name_the_kind(tmp_path, edit, expect):
    data = yaml.safe_load((ROOT / "rules" / "nextjs.yaml").read_text())
    edit(data)
    path = tmp_path / "rules" / "nextjs.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PackError) as e:
        load_pack(path)
    assert expect in str(e.value)


def test_index_and_linear_event_kind_choice_agree(eng):
    pack = next(p for p in eng.packs if p.id == "nextjs")
    batch = pack.kinds[0].batch
    assert batch.index is not None  # every event kind is chosen by /eventName
    from telewarden.engine.judge import _holds
    for body in PAYLOADS.values():
        for e in body["events"]:
            assert batch.index[1].get(e["eventName"]) is next(k for k in batch.kinds if _holds(k, e))


@pytest.mark.parametrize("header,value,rule", [
    ("User-Agent", "node (build01.acme.corp)", "nextjs.header.user-agent"),
    ("Accept-Language", "de-CH", "nextjs.header.accept-language"),
    ("Cookie", "session=1", "nextjs.header.unexpected"),
])
def test_headers_closed_forms(eng, header, value, rule):
    headers = [h for h in NODE_HEADERS if h[0] != header] + [(header, value)]
    v = eng.inspect(record(PAYLOADS["nextjs-15.5-build-type-check"], headers), Mode.SCRUB)
    assert [f.rule for f in v.findings] == [rule] and v.decision is Decision.SCRUBBED
    assert header.lower() in v.repaired.drop_headers


def test_query_and_other_paths_are_findings(eng):
    body = strictjson.dumps(PAYLOADS["nextjs-15.5-build-type-check"])
    ex = Exchange(Transport.HTTP, "POST", (HOST,), 443, PATH, "team=acme", NODE_HEADERS, body)
    assert [f.rule for f in eng.inspect(ex, Mode.SCRUB).findings] == ["nextjs.query"]
    ex = Exchange(Transport.HTTP, "POST", (HOST,), 443, "/api/v2/record", "", NODE_HEADERS, body)
    assert eng.inspect(ex, Mode.SCRUB).decision is Decision.BLOCKED


def test_an_event_that_is_not_an_object_is_one_dropped_event(eng):
    body = copy.deepcopy(PAYLOADS["nextjs-15.5-build-packages"])
    body["events"][1:1] = ["jane@acme.com", [1, 2], None]
    v = eng.inspect(record(body), Mode.SCRUB)
    assert [(f.rule, f.pointer, f.repair) for f in v.findings] == [
        ("nextjs.kind.unknown", f"/events/{i}", "the event is dropped") for i in (1, 2, 3)]
    assert json.loads(v.repaired.body)["events"] == PAYLOADS["nextjs-15.5-build-packages"]["events"]
    assert "jane" not in json.dumps([f.to_dict() for f in v.findings])
