"""The Prisma pack (rules/prisma.yaml) and the pack language's message in the query string: the
query is parsed strictly into an object, judged like a body, and scrub rewrites the query string."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES, KEY
from telewarden.engine.judge import Engine, QueryError, encode_query, parse_query
from telewarden.engine.model import Decision, Exchange, Mode, Repaired, Transport
from telewarden.engine.packs import load_packs

HOST = "checkpoint.prisma.io"
PAYLOADS = {p.stem: p.read_text().strip() for p in sorted((EXAMPLES / "payloads" / "prisma").glob("*.query"))}
VIOLATIONS = json.loads((EXAMPLES / "violations-prisma.json").read_text())
# what the checkpoint child (node-fetch) sent in the real run (tests/test_real_clients.py)
CHILD_HEADERS = (("Accept", "application/json"), ("User-Agent", "prisma/js-checkpoint"),
                 ("Accept-Encoding", "gzip,deflate"), ("Connection", "keep-alive"))


def check(path_and_query: str, headers=CHILD_HEADERS, body: bytes = b"") -> Exchange:
    path, _, query = path_and_query.partition("?")
    return Exchange(Transport.HTTP, "GET", (HOST,), 443, path, query, tuple(headers), body)


@pytest.fixture(scope="module")
def eng():
    return Engine(load_packs([]), digest_key=KEY)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_genuine_query_of_every_generation_passes(eng, name):
    v = eng.inspect(check(PAYLOADS[name]), Mode.BLOCK)
    assert v.findings == [] and v.decision is Decision.FORWARDED, [f.to_dict() for f in v.findings]
    assert v.pack == "prisma" and v.kind == "cli"


@pytest.mark.parametrize("case", VIOLATIONS, ids=[c["name"] for c in VIOLATIONS])
def test_documented_violation_is_caught(eng, case):
    ex = check(urlsplit(case["url"]).path + "?" + case["query"])
    v = eng.inspect(ex, Mode.AUDIT)
    assert [(f.rule, f.pointer) for f in v.findings] == [(e["rule"], e["pointer"]) for e in case["expect"]]
    assert eng.inspect(ex, Mode.BLOCK).decision is Decision.BLOCKED
    s = eng.inspect(ex, Mode.SCRUB)
    if not case["scrubbable"]:
        assert s.decision is Decision.BLOCKED and s.repaired is None
        return
    assert s.decision is Decision.SCRUBBED and s.repaired.body is None and s.repaired.query is not None
    again = eng.inspect(check(ex.path + "?" + s.repaired.query), Mode.BLOCK)
    assert again.findings == [] and again.kind == v.kind
    before, after = parse_query(ex.query), parse_query(s.repaired.query)
    changed = {e["pointer"].split("/")[1] for e in case["expect"]}
    assert {k: v for k, v in before.items() if k not in changed} == {k: v for k, v in after.items() if k not in changed}


def test_command_repairs_keep_command_words_and_flag_names(eng):
    def repaired(name):
        case = next(c for c in VIOLATIONS if c["name"] == name)
        return parse_query(eng.inspect(check("/v1/check/prisma?" + case["query"]), Mode.SCRUB).repaired.query)["command"]

    assert repaired("prisma-raw-argv-url-3.12") == "migrate diff --from-url --to-empty --script"
    assert repaired("prisma-short-alias-5.22") == "migrate dev -n"
    assert repaired("prisma-removed-url-flag-7.x") == "migrate diff --shadow-database-url --from-empty --to-schema [redacted]"
    assert repaired("prisma-init-prompt-6.6") == "init --prompt"


def test_repaired_query_goes_on_the_wire(eng):
    from mitmproxy.test import tutils

    from telewarden.proxy.exchange import apply_to_request

    case = next(c for c in VIOLATIONS if c["name"] == "prisma-information-free-text-6.19")
    v = eng.inspect(check("/v1/check/prisma?" + case["query"]), Mode.SCRUB)
    req = tutils.treq(method=b"GET", path=b"/v1/check/prisma?" + case["query"].encode() + b"#frag", content=b"")
    apply_to_request(req, v.repaired)
    path, _, query = req.path.partition("?")
    assert path == "/v1/check/prisma" and query == v.repaired.query
    assert parse_qs(query, keep_blank_values=True)["information"] == [""]
    # the canonical target and the repaired query together
    req = tutils.treq(method=b"GET", path=b"/v1//check/prisma?x=1", content=b"")
    apply_to_request(req, Repaired(query="a=1", target="/v1/check/prisma"))
    assert req.path == "/v1/check/prisma?a=1"
    apply_to_request(req, Repaired(query=""))
    assert req.path == "/v1/check/prisma"


def test_a_body_on_a_query_message_cannot_be_verified(eng):
    v = eng.inspect(check(PAYLOADS["prisma-g4-6.19-debug"], body=b'{"information":"acme"}'), Mode.SCRUB)
    assert [f.rule for f in v.findings] == ["telewarden.body.body-unexpected"] and v.decision is Decision.BLOCKED


def test_studio_endpoint_is_its_own_kind(eng):
    case = next(c for c in VIOLATIONS if c["name"] == "prisma-studio-information-json-7.9")
    v = eng.inspect(check("/v1/check/prisma-studio-cli?" + case["query"]), Mode.SCRUB)
    assert v.kind == "studio" and v.decision is Decision.SCRUBBED
    v = eng.inspect(check("/v1/check/prisma-telemetry?" + case["query"]), Mode.SCRUB)
    assert [f.rule for f in v.findings] == ["prisma.endpoint.unknown"]


@pytest.mark.parametrize("headers,rule", [
    ((("User-Agent", "prisma/js-checkpoint acme-ci"),), "prisma.header.user-agent"),
    ((("Authorization", "Bearer abc"),), "prisma.header.unexpected"),
])
def test_headers(eng, headers, rule):
    v = eng.inspect(check(PAYLOADS["prisma-g4-6.19-debug"], headers=(*CHILD_HEADERS[:1], *headers)), Mode.SCRUB)
    assert [f.rule for f in v.findings] == [rule] and v.decision is Decision.SCRUBBED


# -- parse_query / encode_query: the pack language's query message ---------------------------------

def test_parse_query_form_decoding_and_repeated_keys():
    assert parse_query("a=1&b=x+y&b=%2Fz%20w&c&d=&&e=%C3%A9") == {"a": "1", "b": ["x y", "/z w"], "c": "", "d": "", "e": "é"}
    assert parse_query("") == {} and parse_query("a=1#frag") == {"a": "1"}


@pytest.mark.parametrize("query,code", [
    ("a=%zz", "bad-query"), ("a=%4", "bad-query"), ("a=%", "bad-query"), ("a=%FF", "bad-query"),
    ("a=1;b=2", "bad-query"), ("=x", "bad-query"), ("a=%00", "bad-query"), ("a=\udcff", "bad-query"),
    ("&".join(f"k{i}=1" for i in range(300)), "too-many-params"), ("a=" + "x" * 5000, "too-large"),
])
def test_parse_query_is_strict(query, code):
    with pytest.raises(QueryError) as e:
        parse_query(query, max_bytes=4096, max_params=256)
    assert e.value.code == code


def test_parse_query_problems_are_body_findings(eng):
    v = eng.inspect(check("/v1/check/prisma?" + "&".join(f"k{i}=1" for i in range(300))), Mode.AUDIT)
    assert [f.rule for f in v.findings] == ["telewarden.body.too-many-params"]


def test_encode_query():
    assert encode_query({"a": "x y", "b": ["1", "2"], "c": "", "d": "/@:[]", "n": None, "t": True}) == \
        "a=x+y&b=1&b=2&c=&d=%2F%40%3A%5B%5D&t=true"
    with pytest.raises(QueryError):
        encode_query({"a": {"b": 1}})


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT.filter(bool), st.one_of(TEXT, st.lists(TEXT, min_size=2, max_size=3)), max_size=6))
def test_encode_then_parse_round_trips(doc):
    assert parse_query(encode_query(doc)) == doc


def test_a_query_messages_size_is_its_querys(eng):
    q = PAYLOADS["prisma-g4-6.19-debug"]
    v = eng.inspect(check(q), Mode.SCRUB)
    assert v.size_in == v.size_out == len(q.partition("?")[2])
    case = next(c for c in VIOLATIONS if c["name"] == "prisma-information-free-text-6.19")
    v = eng.inspect(check("/v1/check/prisma?" + case["query"]), Mode.SCRUB)
    assert v.size_in == len(case["query"]) and v.size_out == len(v.repaired.query)
