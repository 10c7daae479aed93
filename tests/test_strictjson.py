"""Strict JSON: numbers parsers would read differently are refused with a code, never a crash."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PAYLOADS, exchange
from telewarden.engine import strictjson
from telewarden.engine.model import Decision, Mode

LIMITS = {"max_bytes": 1 << 20, "max_depth": 64}


def loads(text: str | bytes):
    return strictjson.loads(text.encode() if isinstance(text, str) else text, **LIMITS)


@pytest.mark.parametrize("text,value", [
    ("9223372036854775807", 2**63 - 1),  # the largest accepted
    ("-9223372036854775808", -2**63),  # the smallest accepted
    ("0", 0), ("-0", 0), ("1000000000000000000", 10**18),
    ('{"n":[9223372036854775807,-9223372036854775808]}', {"n": [2**63 - 1, -2**63]}),
])
def test_integers_in_int64_range_are_accepted(text, value):
    got = loads(text)
    assert got == value
    assert strictjson.loads(strictjson.dumps(got), **LIMITS) == value  # dumps/loads round trip


@pytest.mark.parametrize("text", [
    "9223372036854775808",  # INT_MAX + 1: the first refused
    "-9223372036854775809",  # INT_MIN - 1
    "99999999999999999999",  # 20 digits
    "1" + "0" * 4999,  # past Python's int-to-str limit: an internal error before
    "-" + "7" * 5000,
    '{"topic":"cli","n":' + "9" * 100_000 + "}",
    "1e999", "-1e999",
])
def test_numbers_out_of_range_are_a_strict_json_error(text):
    with pytest.raises(strictjson.StrictJSONError) as e:
        loads(text)
    assert e.value.code == "number-out-of-range"
    assert text[:30] not in str(e.value)  # the number itself is never echoed


def test_a_megabyte_of_digits_is_refused_quickly():
    import time
    t0 = time.perf_counter()
    with pytest.raises(strictjson.StrictJSONError):
        loads("9" * ((1 << 20) - 10))
    assert time.perf_counter() - t0 < 0.5


def test_engine_reports_the_code_not_an_internal_error(engine):
    body = strictjson.dumps(PAYLOADS["cli-v2.48-no-error"])[:-1] + b',"n":' + b"1" * 5000 + b"}"
    v = engine.inspect(exchange(body), Mode.BLOCK)
    assert v.decision is Decision.BLOCKED
    assert v.error == "an integer does not fit in 64 bits: parsers disagree on it"  # not "internal error"
    assert [f.rule for f in v.findings] == ["telewarden.body.number-out-of-range"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_dumps_never_raises_on_what_loads_accepted(value):
    try:
        text = json.dumps(value, allow_nan=True).encode()
    except ValueError:  # e.g. an integer past Python's own conversion limit
        return
    try:
        parsed = loads(text)
    except strictjson.StrictJSONError:
        return
    again = strictjson.loads(strictjson.dumps(parsed), **LIMITS)
    assert strictjson.dumps(again) == strictjson.dumps(parsed)
