"""Schema-derived plans: exact where they can be, never skipping a place a free string can be."""

from __future__ import annotations

import copy

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import PAYLOADS, exchange, is_console
from telewarden.engine.judge import Engine
from telewarden.engine.model import Mode
from telewarden.engine.schemaplan import possible, scan_plan

SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "topic": {"enum": ["a", "b"]},
        "count": {"type": "integer"},
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"$ref": "#/$defs/meta"},
        "open": {"type": "object"},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    },
    "$defs": {"meta": {"type": "object", "additionalProperties": False,
                       "properties": {"n": {"type": "number"}, "s": {"const": "x"}}}},
}


def test_scan_plan_skips_what_the_schema_fixes():
    assert scan_plan(SCHEMA) == {"name": True, "tags": {"*": True}, "open": {"*": True}, "either": True}


def test_unknown_or_unconstrained_means_scan_everything():
    assert scan_plan({}) is True and scan_plan(True) is True
    assert scan_plan({"type": "object"}) == {"*": True}
    assert scan_plan({"$ref": "https://elsewhere/x.json"}) is True


def test_conditional_branch_under_a_closed_object_opens_nothing():
    s = {"type": "object", "additionalProperties": False, "properties": {"k": {"type": "integer"}},
         "allOf": [{"if": {"properties": {"k": {"const": 1}}}, "then": {"properties": {"k": {"const": 1}}}}]}
    assert scan_plan(s) is None
    assert not possible(s, ("other",))


def test_possible_follows_properties_refs_arrays_and_wildcards():
    assert possible(SCHEMA, ("meta", "n")) and not possible(SCHEMA, ("meta", "zzz"))
    assert possible(SCHEMA, ("tags", "*")) and possible(SCHEMA, ("tags", "3"))
    assert not possible(SCHEMA, ("nope",)) and possible(SCHEMA, ("open", "anything", "deeper"))
    assert possible(SCHEMA, ("*",))


def test_rule_pointers_that_cannot_exist_are_dropped(packs):
    kinds = {k.id: k for k in packs[0].kinds}
    pointers = {(r.id, "/".join(p)) for r, p, _ in kinds["server-v1"].checks}
    assert ("hasura.version.dev-build", "data/version") in pointers
    assert not any("command" in p or "url" in p for _, p in pointers)


LEAKY = st.sampled_from(["jane@acme.com", "db01.acme.internal", "10.0.0.7", "https://x.example.com/a",
                         "Bearer abcdefghijklmnop1234", "/home/jdoe/x", "plain words", "postgres"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PAYLOADS)), st.data())
def test_the_plan_finds_what_the_full_walk_finds_on_valid_messages(packs, name, data):
    body = copy.deepcopy(PAYLOADS[name])
    # put a leaky value at a random string leaf
    leaves = []

    def collect(v, path):
        if isinstance(v, dict):
            for k, x in v.items():
                collect(x, (*path, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                collect(x, (*path, i))
        elif isinstance(v, str):
            leaves.append(path)
    collect(body, ())
    assume(leaves)
    path = data.draw(st.sampled_from(leaves))
    node = body
    for tok in path[:-1]:
        node = node[tok]
    node[path[-1]] = data.draw(LEAKY)
    transport = "websocket" if is_console(name) else "http"
    planned = Engine(packs, digest_key=b"k").inspect(exchange(body, transport), Mode.AUDIT)
    full = Engine(packs, digest_key=b"k")
    saved = {k.id: k.scan for k in packs[0].kinds}
    try:
        for k in packs[0].kinds:
            k.scan = True
        unplanned = full.inspect(exchange(body, transport), Mode.AUDIT)
    finally:
        for k in packs[0].kinds:
            k.scan = saved[k.id]
    assert [(f.rule, f.pointer) for f in planned.findings] == [(f.rule, f.pointer) for f in unplanned.findings]
