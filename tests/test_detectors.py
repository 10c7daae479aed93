"""Generic detectors: catch identifying values, stay quiet on what real payloads carry."""

from __future__ import annotations

import json

import pytest

from conftest import PAYLOADS
from telewarden.engine.detectors import DETECTOR_PATTERNS, DetectorSet, Hit, _may_hit, mask


@pytest.fixture(scope="module")
def all_detectors() -> DetectorSet:
    """Every built-in detector. Built by a fixture, not at import: mutmut runs each mutant in the
    process that imported this module, so a set built at import would never see a mutant of the
    constructor (docs/mutation.md)."""
    return DetectorSet(DETECTOR_PATTERNS)


@pytest.mark.parametrize("text,kind", [
    ("contact jane.doe@acme.com now", "email"),
    ("db at 10.0.12.7 failed", "ipv4"),
    ("listening on fe80::1ff:fe23:4567:890a", "ipv6"),
    ("see https://hasura.internal.example.com/console", "url"),
    ("host db01.acme.internal refused", "hostname"),
    ("open /home/jdoe/project/config.yaml", "user-path"),
    ("C:\\Users\\jdoe\\AppData", "user-path"),
    ("/Users/jane/go/src/x.go", "user-path"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "jwt"),
    ("Authorization: Bearer abcdefghijklmnop123456", "bearer-token"),
    ("key AKIAIOSFODNN7EXAMPLE", "api-key"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api-key"),
    ("admin_secret=hunter2hunter2", "api-key"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "private-key"),
])
def test_detects(all_detectors, text, kind):
    hits = all_detectors.scan(text)
    assert hits and hits[0].detector == kind, hits


@pytest.mark.parametrize("text", [
    "dddff371-dab2-450f-9969-235bca66dab1", "00000000-0000-0000-0000-000000000000",
    "v1.0.0-alpha36", "v2.48.10", "v2.9.0-beta.1", "v2.48.10-ce", "1.0e-3", "4.523e-3", "120003",
    "/data/schema/SCHEMA_NAME/tables/TABLE_NAME/modify", "/actions$ACTION_NAME/modify",
    "ModifyTable/RESET", "@@router/LOCATION_CHANGE", "hasura migrate apply", "Go-http-client/1.1",
    "hasura-graphql-engine/v2.48.10", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36",
    "Enable the new data tab", "schema-registry-tab", "postgres", "failed to read config.json", "main.js:1:2048",
    "1.2.3", "CGROUP_UNAVAILABLE|CPU_INCONCLUSIVE", "999.1.1.1",
])
def test_stays_quiet_on_real_payload_values(all_detectors, text):
    assert all_detectors.scan(text) == []


def test_no_string_in_any_genuine_payload_trips_a_detector(all_detectors):
    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
    for name, body in PAYLOADS.items():
        for s in strings(body):
            assert all_detectors.scan(s) == [], (name, s)


def test_mask_replaces_each_hit(all_detectors):
    text = "mail jane@acme.com from 10.1.2.3"
    assert mask(text, all_detectors.scan(text)) == "mail [email] from [ipv4]"
    assert all_detectors.scan(mask(text, all_detectors.scan(text))) == []


def test_pack_choice_and_extra_patterns():
    ds = DetectorSet(["email"], {"ticket": r"\bACME-\d+\b"})
    assert [h.detector for h in ds.scan("ACME-42 by a@b.io at 10.0.0.1")] == ["ticket", "email"]


def test_unknown_detector_name_is_rejected():
    with pytest.raises(KeyError, match="telepathy"):  # says which name
        DetectorSet(["telepathy"])


def test_payload_json_has_no_accidental_hit(all_detectors):
    assert all_detectors.scan(json.dumps(PAYLOADS["server-v2.48-default-source"])) == []


def test_a_tie_goes_to_the_detector_listed_first(all_detectors):
    """`bob.dev` is a host name and the start of an e-mail address: the e-mail (listed first, the
    longer hit) wins, so the whole address is masked, not only its local part."""
    text = "contact bob.dev@acme.io"
    assert mask(text, all_detectors.scan(text)) == "contact [email]"


def test_mask_drops_a_hit_inside_an_earlier_one_and_masks_the_rest():
    """Hits of two scans merged may overlap: the overlapped one is dropped, the later ones masked."""
    text = "see https://db01.acme.internal/x from 10.0.0.1"
    hits = sorted(DetectorSet(["url"]).scan(text) + DetectorSet(["hostname", "ipv4"]).scan(text), key=lambda h: h.start)
    assert [h.detector for h in hits] == ["url", "hostname", "ipv4"]  # the host name lies inside the URL
    assert mask(text, hits) == "see [url] from [ipv4]"


# -- first(): the clean path, with its prefilter and memo

@pytest.mark.parametrize("text", [
    "key AKIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "xoxb-1234567890-abcdefghij", "sk_live_abcdefghijklmnop1234", "rk_test_abcdefghijklmnop1234",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv", "glpat-abcdefghij0123456789", "-----BEGIN RSA PRIVATE KEY-----",
    "Bearer abcdefxyz0123456789", "TOKEN abcdefxyz0123456789", "basic dXNlcjpwYXNzd29yZA",
])
def test_first_finds_secrets_spelt_without_punctuation(text):
    """first() answers "clean" without a regex when a string has no trigger character: a secret of
    letters, digits, `-` and `_` only must get through on its literal word (any case for the
    bearer-token ones)."""
    assert not set("@.:/\\=") & set(text)
    ds = DetectorSet(DETECTOR_PATTERNS)
    assert ds.first(text) == ds.scan(text)[0]


def test_plain_values_are_answered_without_any_regex():
    """The clean path's saving: a value with no trigger character or word (most telemetry strings)
    is cleared by substring tests alone, before the RE2 set runs."""
    for text in ("postgres", "Enable the new data tab", "CGROUP_UNAVAILABLE|CPU_INCONCLUSIVE", "hasura migrate apply"):
        assert not _may_hit(text), text


def test_first_does_not_prefilter_a_packs_own_detectors():
    """A pack's pattern can match what no built-in trigger announces."""
    assert DetectorSet(["email"], {"ticket": r"ACME-\d+"}).first("ACME-42") == Hit("ticket", 0, 7)


def test_a_pack_that_turns_every_detector_off_finds_nothing():
    """`detectors: {builtin: []}` without extras is a valid pack: every string is clean, nothing raises."""
    ds = DetectorSet([])
    for text in ("jane@acme.com", "10.0.0.1", "postgres"):
        assert ds.first(text) is None and ds.scan(text) == []


# -- RE2: the same hits as the `re` patterns with lookarounds they replace ---------------------

import ipaddress  # noqa: E402
import re  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from telewarden.engine.detectors import MAX_CANDIDATES  # noqa: E402
from telewarden.engine.patterns import PatternError, compile_pattern  # noqa: E402

_TLD_ALT = ("com|net|org|io|dev|app|cloud|ai|co|info|biz|me|us|uk|de|fr|nl|se|no|fi|dk|es|it|ch|at|be|eu|ca|au|"
            "nz|jp|cn|in|br|ru|kr|tw|sg|hk|za|mx|ar|cl|il|tr|ua|cz|gr|pt|ie|hu|ro|gov|edu|mil|int|local|"
            "localdomain|internal|intranet|lan|corp|home|private|test|example|invalid|localhost|svc|cluster")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# The detectors as they were under Python's `re` (backtracking, with lookarounds): the reference.
RE_PATTERNS = {
    "private-key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    "jwt": r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    "bearer-token": r"(?i:\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{12,})",
    "api-key": (
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{30,}\b"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b|\bAIza[0-9A-Za-z_-]{35}\b"
        r"|\bglpat-[A-Za-z0-9_-]{20,}\b"
        r"|(?i:\b(?:api[_-]?key|secret|password|passwd|pwd|access[_-]?token|admin[_-]?secret)\b\s*[=:]\s*\S{4,})"),
    "email": r"\b[A-Za-z0-9._%+-]{1,64}@(?:" + _LABEL + r"\.)+[A-Za-z]{2,63}\b",
    "url": r"(?i:\b[a-z][a-z0-9+.-]{1,15}://[^\s\"'<>]{2,})",
    "user-path": r"(?:/home/|/Users/|/root/)[^/\s\"']+|\b[A-Za-z]:\\(?:Users|Documents and Settings)\\[^\\\s\"']+",
    "ipv4": r"(?<![\w./])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])",
    "ipv6": r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39}(?:%[\w.]+)?(?![\w:])",
    "hostname": r"(?i:(?<![\w.@-])(?:" + _LABEL + r"\.)+(?:" + _TLD_ALT + r")\.?(?![\w-]))",
}
_RE_NAMES = {f"d{i}": n for i, n in enumerate(RE_PATTERNS)}
_RE = re.compile("|".join(f"(?P<d{i}>{p})" for i, p in enumerate(RE_PATTERNS.values())))


def re_scan(text):
    out = []
    for m in _RE.finditer(text):
        name = _RE_NAMES[m.lastgroup]
        if name in ("ipv4", "ipv6"):
            try:
                ipaddress.ip_address(m.group().split("%", 1)[0])
            except ValueError:
                continue
        out.append((name, m.start(), m.end()))
    return out


FRAGMENTS = [
    "a", "b", "f", "x", "A", "1", "12", "255", ".", ":", "::", "@", "-", "/", " ", "_", "=", "%", "%eth0", "\"", "'",
    "\n", "\t", "eyJ", "eyJhbGci", "com", "io", "internal", "db01", "acme", "jane", "10.0.0.1", "999.1.1.1", "1.2.3.4",
    "fe80::1", "::1", "http://", "https://", "Bearer ", "token ", "AKIAIOSFODNN7EXAMPLE", "/home/", "/Users/",
    "C:\\Users\\", "secret", "api_key", "ghp_", "abcdefghijklmnopqrstuvwxyz0123456789", "-----BEGIN ", "RSA ",
    "PRIVATE KEY-----", "v2.48.10", "main.js", "dddff371-dab2-450f-9969-235bca66dab1", "TABLE_NAME",
]


@settings(max_examples=3000, deadline=None)
@given(text=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=14).map("".join))
def test_same_hits_as_the_re_patterns_with_lookarounds(all_detectors, text):
    assert [(h.detector, h.start, h.end) for h in all_detectors.scan(text)] == re_scan(text)


@pytest.mark.parametrize("text", [
    "db at 10.0.12.7.", "10.0.12.7", "x 10.0.12.7/24", "a/10.0.12.7", "1.2.3.4.5", "fe80::1%eth0 up", "fe80::1%eth0.",
    "::1", "a::1", "1:2", "1:2:3:4:5:6:7:8:9:10:11:12:13:14:15:16:17:18:19:20:21", "host db01.acme.internal.",
    "db01.acme.internal", "x.db01.acme.internal-y", "@db01.acme.internal", "é10.0.0.1", "db.acme.comé",
    "\u00e9db.acme.com", "naïve.acme.com", "ümlaut jane@acme.com", "Bearer\u00a0abcdefghijklmnop123",
    # a hit at 0 whose first character is multi-byte: the Kelvin sign is a `(?i)` k; a Devanagari digit 1
    # is \d for `re`, so "१0.0.0.1" is one invalid candidate, not the address "0.0.0.1"
    "\u212aacme.internal", "\u09670.0.0.1",
])
def test_boundaries_agree_with_re_including_non_ascii(all_detectors, text):
    assert [(h.detector, h.start, h.end) for h in all_detectors.scan(text)] == re_scan(text)


def test_offsets_are_characters_not_bytes(all_detectors):
    text = "héllo wörld — mail jane@acme.com, host db01.acme.internal"
    hits = all_detectors.scan(text)
    assert [text[h.start:h.end] for h in hits] == ["jane@acme.com", "db01.acme.internal"]
    assert mask(text, hits) == "héllo wörld — mail [email], host [hostname]"


def test_lone_surrogates_from_header_decoding_never_raise(all_detectors):
    text = "Go-http-client/1.1 \udcff db01.acme.internal"  # surrogateescape'd byte, as mitmproxy decodes
    assert [h.detector for h in all_detectors.scan(text)] == ["hostname"]
    assert all_detectors.first(text) == all_detectors.scan(text)[0]
    assert all_detectors.first("\udcff\udcfe") is None  # no trigger: the prefilter answers
    assert all_detectors.first("Go-http-client/1.1 \udcff") is None  # a trigger: the RE2 set answers


@pytest.mark.parametrize("address", ["2001:0db8:85a3:0000:0000:8a2e:0370:7334", "fe80:0000:0000:0000:0204:61ff:fe9d:f156%eth0"])
def test_an_ipv6_address_written_out_in_full_is_found(all_detectors, address):
    """39 characters (the zone not counted): the longest an IPv6 address can be written."""
    text = f"peer {address} closed"
    assert [(h.detector, text[h.start:h.end]) for h in all_detectors.scan(text)] == [("ipv6", address)]


def test_a_hex_and_colon_run_too_long_for_ipv6_is_no_candidate(all_detectors):
    """From 40 characters on no IPv6 address fits, so `re` found none in the run and went on: a host
    name that starts inside the run, and the addresses after it, are still found."""
    run = "0:" * 18 + "db01"  # 40 hex digits and colons; the host name's first label ends it
    text = f"fingerprint {run}.acme.internal, then fe80::1 and 10.0.0.1"
    hits = all_detectors.scan(text)
    assert len(run) == 40 and [(h.detector, text[h.start:h.end]) for h in hits] == [
        ("hostname", "db01.acme.internal"), ("ipv6", "fe80::1"), ("ipv4", "10.0.0.1")]
    assert [(h.detector, h.start, h.end) for h in hits] == re_scan(text)


def test_candidates_past_the_limit_become_one_hit_to_the_end(all_detectors):
    text = "999.1.1.1 " * (MAX_CANDIDATES + 5) + "jane@acme.com"
    hits = all_detectors.scan(text)
    assert len(hits) == 1 and hits[0].detector == "ipv4" and hits[0].end == len(text)
    assert "jane" not in mask(text, hits)


def test_pack_extra_patterns_run_on_re2_too():
    ds = DetectorSet(["email"], {"ticket": r"\bACME-\d+\b", "anchored": r"^secret"})
    assert [h.detector for h in ds.scan("secret ACME-42 by a@b.io")] == ["anchored", "ticket", "email"]
    assert ds.scan("not secret") == []
    with pytest.raises(PatternError, match="lookbehind"):
        DetectorSet([], {"bad": r"(?<!x)y"})


def test_an_extra_detector_may_not_take_a_built_in_name():
    """Findings are named by detector: two of one name could not be told apart."""
    with pytest.raises(PatternError, match="name of a built-in"):
        DetectorSet(["email"], {"email": r"mail-\d+"})


def test_extra_patterns_too_large_together_are_refused_with_a_reason():
    """Each pattern compiles alone, but RE2 runs all of them as one set within one memory budget: the
    pack author gets a PatternError that says so."""
    with pytest.raises(PatternError, match="too large together"):
        DetectorSet([], {f"big-{i}": r"[\pL\pN]{300}" for i in range(3)})


@pytest.mark.parametrize("pattern,text", [
    (r"[0-9]+", "id 1234, 5678"),  # no \b: the next search must not find a hit again inside the last one
    (r"\d*", "ab1"),  # matches the empty string: at every position, and at the end of the text
    (r"\d*", "é1€"),  # ... and steps past a character after an empty hit, never into one
    (r"x?", "😀x"),
    (r"\d*", ""),
])
def test_a_packs_own_pattern_finds_what_re_finditer_finds(pattern, text):
    """A pack's extra pattern may be any regex, even one that matches the empty string: its hits
    are those of `re.finditer` (which steps one character past an empty match), and never raise."""
    ds = DetectorSet([], {"mine": pattern})
    assert [(h.start, h.end) for h in ds.scan(text)] == [(m.start(), m.end()) for m in re.finditer(pattern, text)]


@pytest.mark.parametrize("pattern,reason", [
    (r"(?<=a)b", "lookbehind"), (r"(?<!a)b", "lookbehind"), (r"a(?=b)", "lookahead"), (r"a(?!b)", "lookahead"),
    (r"(a)\1", "backreferences"), (r"(?P<x>a)(?P=x)", "backreferences"), (r"a*+", "possessive"),
    (r"(?>a)", "atomic"), (r"a{1001}", r"at most \{1000\}"), (r"abc\Z", r"\\z"), (r"(?x) a", "verbose"),
    (r"(a", "missing \\)"), (r"[a", "missing \\]"),
])
def test_pattern_error_says_why(pattern, reason):
    with pytest.raises(PatternError, match=reason):
        compile_pattern(pattern)


def test_compiled_pattern_api():
    rx = compile_pattern(r"(hasura( [a-z0-9][a-z0-9-]*)*)?")
    assert rx.fullmatch("hasura migrate apply") and rx.fullmatch("")
    assert not rx.fullmatch("hasura migrate --admin-secret")
    assert compile_pattern(r"(?P<word>[a-z]+)").search("123 abc")
    assert not compile_pattern(r"\d").fullmatch("\u0663")  # RE2's \d is ASCII: stricter than re's
    assert compile_pattern(r"(?i)application/json").fullmatch("Application/JSON")
    assert not compile_pattern("a").fullmatch("a\udcff")  # never raises on surrogates


def test_compile_any_is_one_pattern_for_a_value_set():
    from telewarden.engine.patterns import compile_any
    rx = compile_any([r"ee-benefits-[A-Za-z0-9_-]{1,64}-link", r"(?P<id>[a-z-]+)-tab", r"(?P<id>[0-9]+)"])
    assert rx.fullmatch("ee-benefits-x1-link") and rx.fullmatch("schema-registry-tab") and rx.fullmatch("42")
    assert not rx.fullmatch("ee-benefits-x1-link-2") and not rx.fullmatch("")
    assert not compile_any([]).fullmatch("") and not compile_any([]).fullmatch("x")
    with pytest.raises(PatternError, match="pattern 2: lookbehind"):
        compile_any(["a", r"(?<=x)b"])


def test_patterns_remember_only_values_of_the_allowed_form():
    rx = compile_pattern(r"hasura( [a-z]+)*")
    assert rx.fullmatch("hasura version") and rx.fullmatch("hasura version")  # second: remembered
    assert not rx.fullmatch("hasura version --admin-secret hunter2")
    assert list(rx._seen) == ["hasura version"]  # a refused value never stays in memory
    assert not rx.fullmatch("x" * 200) and rx.fullmatch("hasura " + "a" * 200)
    assert list(rx._seen) == ["hasura version"]  # long values are not kept either


def test_detectors_keep_no_hit_in_memory():
    ds = DetectorSet(list(DETECTOR_PATTERNS), {"ticket": r"ACME-\d+"})
    ds.scan("db01.acme.internal ACME-42 10.0.0.1 jane@acme.com")
    for d in ds._detectors:
        for p in (d.start, d.mid, d.core, d.not_before):
            assert p is None or p._seen is None


# -- hits next to characters of every UTF-8 length: the context character is stepped over by bytes

@pytest.mark.parametrize("sep", ["¿", "€", "।", "😀", "—", "¿€😀"])  # 2, 3 (lead byte E0), 4 bytes; no letter
def test_hits_beside_multibyte_characters_are_found_and_masked_exactly(sep):
    ds = DetectorSet(DETECTOR_PATTERNS)
    # context rules (ipv4, ipv6, hostname) look one character before and after each hit
    text = f"{sep}10.0.0.1{sep}192.168.1.20{sep}fe80::1{sep}db01.acme.internal{sep}a@b.co{sep}"
    hits = ds.scan(text)
    assert [(h.detector, text[h.start:h.end]) for h in hits] == [
        ("ipv4", "10.0.0.1"), ("ipv4", "192.168.1.20"), ("ipv6", "fe80::1"),
        ("hostname", "db01.acme.internal"), ("email", "a@b.co")]
    assert mask(text, hits) == f"{sep}[ipv4]{sep}[ipv4]{sep}[ipv6]{sep}[hostname]{sep}[email]{sep}"


def test_a_letter_of_any_length_is_context_that_refuses_a_hit():
    ds = DetectorSet(["ipv4", "hostname"])
    for letter in ("é", "ж", "中", "𝒜"):  # 2, 2, 3 and 4 bytes, all \pL: no word boundary
        assert ds.scan(f"{letter}10.0.0.1") == [] and ds.scan(f"10.0.0.1{letter}") == []
        assert ds.scan(f"{letter}db01.acme.internal") == []
    assert [h.detector for h in ds.scan("中 10.0.0.1 𝒜")] == ["ipv4"]
