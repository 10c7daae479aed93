"""Generic detectors: catch identifying values, stay quiet on what real payloads carry."""

from __future__ import annotations

import json

import pytest

from conftest import PAYLOADS
from telewarden.detectors import DETECTOR_PATTERNS, DetectorSet, mask

ALL = DetectorSet(DETECTOR_PATTERNS)


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
def test_detects(text, kind):
    hits = ALL.scan(text)
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
def test_stays_quiet_on_real_payload_values(text):
    assert ALL.scan(text) == []


def test_no_string_in_any_genuine_payload_trips_a_detector():
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
            assert ALL.scan(s) == [], (name, s)


def test_mask_replaces_each_hit():
    text = "mail jane@acme.com from 10.1.2.3"
    assert mask(text, ALL.scan(text)) == "mail [email] from [ipv4]"
    assert ALL.scan(mask(text, ALL.scan(text))) == []


def test_pack_choice_and_extra_patterns():
    ds = DetectorSet(["email"], {"ticket": r"\bACME-\d+\b"})
    assert [h.detector for h in ds.scan("ACME-42 by a@b.io at 10.0.0.1")] == ["ticket", "email"]


def test_unknown_detector_name_is_rejected():
    with pytest.raises(KeyError):
        DetectorSet(["telepathy"])


def test_payload_json_has_no_accidental_hit():
    assert ALL.scan(json.dumps(PAYLOADS["server-v2.48-default-source"])) == []
