"""Property-based: scrub is idempotent, and never yields a payload that fails the checks."""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PAYLOADS, exchange, is_console
from telewarden.engine.model import Decision, Mode

NAMES = sorted(PAYLOADS)
# Values that vendors could put anywhere: names, flags, secrets, paths, free text, odd types.
LEAKY = st.one_of(
    st.sampled_from(["acme_prod", "jane@acme.com", "db01.acme.internal", "10.0.0.7", "--admin-secret",
                     "/home/jdoe/x", "Bearer abcdefghijklmnop1234", "SCHEMA_NAME", "TABLE_NAME", "",
                     "hasura migrate apply --endpoint http://x", "/data/acme/schema/public/tables/users/browse",
                     "/events/cron/nightly/logs", "dev", "v2.48.10"]),
    st.text(max_size=40), st.integers(), st.none(), st.booleans(),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
)


def leaf_paths(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaf_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaf_paths(v, (*path, i))
    yield path


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(NAMES))
    body = copy.deepcopy(PAYLOADS[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in leaf_paths(body) if p]
        path = draw(st.sampled_from(paths))
        node = body
        for tok in path[:-1]:
            node = node[tok]
        if draw(st.booleans()) and isinstance(node, dict):
            node[draw(st.sampled_from(["extra", "hostname", path[-1]]))] = draw(LEAKY)
        else:
            node[path[-1]] = draw(LEAKY)
    return name, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_scrub_output_always_passes_and_scrub_is_idempotent(engine, case):
    name, body = case
    transport = "websocket" if is_console(name) else "http"
    v = engine.inspect(exchange(body, transport), Mode.SCRUB)
    if v.decision is Decision.SCRUBBED:
        out = v.repaired.body
        again = engine.inspect(exchange(out, transport), Mode.BLOCK)
        assert again.findings == [], [f.to_dict() for f in again.findings]
        third = engine.inspect(exchange(out, transport), Mode.SCRUB)
        assert third.decision is Decision.FORWARDED and third.repaired is None  # idempotent
    elif v.decision is Decision.FORWARDED:
        assert v.findings == []
    else:
        assert v.decision is Decision.BLOCKED and v.findings


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_never_forward_in_block_mode(engine, raw):
    v = engine.inspect(exchange(raw), Mode.BLOCK)
    assert v.decision in (Decision.BLOCKED, Decision.FORWARDED)
    if v.decision is Decision.FORWARDED:
        assert v.findings == [] and json.loads(raw)  # only a clean, valid message may go
