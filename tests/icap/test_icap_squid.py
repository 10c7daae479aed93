"""telewarden's ICAP service behind a real Squid with SSL bump: curl through Squid (HTTPS bumped),
a real upstream on 127.0.0.1 that records what actually arrived, and the audit trail of each
`telewarden icap` process. The same held cases as the mitmproxy tests."""

from __future__ import annotations

import gzip
import json
import subprocess

import pytest

from conftest import PAYLOADS, VIOLATIONS, exchange, is_console
from support.harness import BIN, HOST
from telewarden.engine import strictjson
from telewarden.engine.model import Decision

pytestmark = [pytest.mark.proxy, pytest.mark.squid]

HTTP_GENUINE = [n for n in sorted(PAYLOADS) if not is_console(n)]
HTTP_BAD = [c for c in VIOLATIONS if c["transport"] == "http"]
GARBAGE = b'\xff\xfe{"not": json at all\x00'


def body_of(name_or_case) -> bytes:
    if isinstance(name_or_case, dict):
        return strictjson.dumps(name_or_case["body"])
    return json.dumps(PAYLOADS[name_or_case], separators=(",", ":")).encode()


def case(name: str) -> dict:
    return next(c for c in HTTP_BAD if c["name"] == name)


def arrived(upstream) -> list[bytes]:
    return [r.body for r in upstream.requests()]


def service(squid, mode):
    return squid.services[mode]


@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_conforming_payloads_arrive_byte_for_byte(squid_stack, upstream, mode):
    svc = service(squid_stack, mode)
    before = len(svc.decisions())
    for name in HTTP_GENUINE:
        upstream.clear()
        status, resp, _ = squid_stack.curl(body_of(name), port=mode)
        assert status == 200, (name, resp[:300])
        assert arrived(upstream) == [body_of(name)], name
    recs = svc.decisions()[before:]
    assert len(recs) == len(HTTP_GENUINE)
    assert {r["decision"] for r in recs} == {"forwarded"} and all(r["findings"] == [] for r in recs)


def test_scrub_mode_forwards_every_violation_repaired_and_the_repair_passes(squid_stack, upstream, engine):
    svc = service(squid_stack, "scrub")
    for c in HTTP_BAD:
        upstream.clear()
        status, resp, _ = squid_stack.curl(body_of(c), port="scrub")
        rec = svc.decisions()[-1]
        if c["scrubbable"]:
            assert status == 200, (c["name"], resp[:300])
            [got] = upstream.requests()
            assert got.body != body_of(c)
            assert int(got.headers["Content-Length"]) == len(got.body)
            v = engine.inspect(exchange(got.body), "block")
            assert v.findings == [] and v.decision is Decision.FORWARDED, c["name"]
            assert rec["decision"] == "scrubbed"
        else:
            assert status == 403 and arrived(upstream) == [], c["name"]
            assert rec["decision"] == "blocked"
        assert {f["rule"] for f in rec["findings"]} >= {e["rule"] for e in c["expect"]}, c["name"]


def test_block_mode_never_forwards_a_violation_and_answers_like_the_proxy(squid_stack, upstream):
    svc = service(squid_stack, "block")
    for c in HTTP_BAD:
        upstream.clear()
        status, resp, headers = squid_stack.curl(body_of(c), port="block")
        assert status == 403, c["name"]
        assert arrived(upstream) == [], c["name"]
        answer = json.loads(resp)
        assert answer["telewarden"] == "blocked" and headers["x-telewarden"] == "blocked"
        assert set(answer["rules"]) == {e["rule"] for e in c["expect"]}
        rec = svc.decisions()[-1]
        assert rec["decision"] == "blocked" and rec["id"] == answer["message"]


@pytest.mark.parametrize("url", [f"http://{HOST}/v1/http", f"https://{HOST}:443/v1/http"])
def test_a_conforming_request_over_plain_http_or_with_a_port_is_forwarded_in_block_mode(squid_stack, upstream, url):
    upstream.clear()
    status, resp, _ = squid_stack.curl(body_of("cli-v1.3"), port="block", url=url)
    assert status == 200, resp[:300]
    assert arrived(upstream) == [body_of("cli-v1.3")]
    rec = service(squid_stack, "block").decisions()[-1]
    assert rec["decision"] == "forwarded" and rec["findings"] == []


def test_audit_mode_forwards_violations_unchanged_and_records_them(squid_stack, upstream):
    c = case("cli-flag-values")
    upstream.clear()
    assert squid_stack.curl(body_of(c), port="audit")[0] == 200
    assert arrived(upstream) == [body_of(c)]
    last = service(squid_stack, "audit").decisions()[-1]
    assert last["decision"] == "forwarded" and last["findings"][0]["rule"] == "hasura.cli.command-args"
    assert last["destination"] == f"https://{HOST}:443/v1/http"


@pytest.mark.parametrize("mode,status", [("audit", 200), ("scrub", 403), ("block", 403)])
def test_garbage_body(squid_stack, upstream, mode, status):
    upstream.clear()
    got, resp, _ = squid_stack.curl(GARBAGE, port=mode)
    assert got == status
    assert arrived(upstream) == ([GARBAGE] if mode == "audit" else [])
    rec = service(squid_stack, mode).decisions()[-1]
    assert rec["findings"][0]["rule"].startswith("telewarden.body.")
    assert rec["decision"] == ("forwarded" if mode == "audit" else "blocked")


def test_body_over_max_body_is_blocked(squid_stack, upstream):
    upstream.clear()
    status, resp, _ = squid_stack.curl(body_of("server-v2.48-default-source"), port="small")
    assert status == 403 and arrived(upstream) == []
    assert json.loads(resp)["rules"] == ["telewarden.body.too-large"]
    rec = squid_stack.services["small"].decisions()[-1]
    assert rec["decision"] == "blocked" and rec["findings"][0]["rule"] == "telewarden.body.too-large"


def test_gzip_body_is_judged_decoded_and_a_repair_is_forwarded_identity_encoded(squid_stack, upstream, engine):
    c = case("cli-flag-values")
    upstream.clear()
    status, _, _ = squid_stack.curl(gzip.compress(body_of(c)), port="scrub", headers=["Content-Encoding: gzip"])
    assert status == 200
    [got] = upstream.requests()
    assert "Content-Encoding" not in got.headers
    assert int(got.headers["Content-Length"]) == len(got.body)
    assert json.loads(got.body)["data"]["command"] == "hasura migrate apply"  # flags and values dropped
    assert engine.inspect(exchange(got.body), "block").findings == []
    # a conforming gzip body is forwarded untouched (still gzip)
    upstream.clear()
    good = gzip.compress(body_of("cli-v1.3"))
    assert squid_stack.curl(good, port="scrub", headers=["Content-Encoding: gzip"])[0] == 200
    [got] = upstream.requests()
    assert got.body == good and got.headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_body_that_claims_gzip_but_is_not_is_not_forwarded(squid_stack, upstream, mode):
    upstream.clear()
    status, resp, _ = squid_stack.curl(body_of("cli-v1.3"), port=mode, headers=["Content-Encoding: gzip"])
    assert status == 403 and arrived(upstream) == []
    assert json.loads(resp)["rules"] == ["telewarden.body.bad-encoding"]


def test_traffic_no_pack_claims_passes_untouched_and_unrecorded(squid_stack, upstream):
    svc = service(squid_stack, "block")
    before = len(svc.records())
    upstream.clear()
    secret = b'{"email":"jane@acme.com","token":"Bearer abcdefghijklmnop"}'
    status, _, _ = squid_stack.curl(secret, port="block", url="https://other.test/collect")
    assert status == 200 and arrived(upstream) == [secret]
    assert len(svc.records()) == before


@pytest.mark.parametrize("url,extra", [
    ("https://TELEMETRY.HASURA.IO/v1/http", []),
    ("https://telemetry.hasura.io./v1/http", []),
    ("https://telemetry.hasura.io:443/v1/http", []),
    ("https://telemetry.hasura.io/v1//http", ["--path-as-is"]),
    ("https://telemetry.hasura.io/v1/%68ttp", ["--path-as-is"]),
    ("https://telemetry.hasura.io/v1/http/", []),
    ("https://telemetry.hasura.io/V1/HTTP", []),
    ("https://other.test/v1/http", ["-H", f"Host: {HOST}"]),  # Host disagrees with the CONNECT target
    ("http://telemetry.hasura.io/v1/http", []),  # plain HTTP
])
def test_destination_variants_cannot_dodge_the_pack(squid_stack, upstream, url, extra):
    upstream.clear()
    status, resp, _ = squid_stack.curl(body_of(case("cli-flag-names-v2.1")), port="block", url=url, extra=extra)
    assert status == 403, resp[:300]
    assert arrived(upstream) == []


def test_non_canonical_target_is_forwarded_in_canonical_form_in_scrub_mode(squid_stack, upstream):
    upstream.clear()
    status, _, _ = squid_stack.curl(body_of("cli-v1.3"), port="scrub",
                                    url=f"https://{HOST}/V1//%68ttp/", extra=["--path-as-is"])
    assert status == 200
    [got] = upstream.requests()
    assert got.path == "/v1/http" and got.body == body_of("cli-v1.3")


@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_websocket_upgrade_to_a_claimed_host_is_refused_and_recorded(squid_stack, upstream, mode):
    """ICAP never sees WebSocket frames, so the console's telemetry channel is refused at the
    handshake in the enforcing modes."""
    upstream.clear()
    status, resp, _ = squid_stack.curl(b"", port=mode, method="GET", url=f"https://{HOST}/v1/ws",
                                       headers=["Connection: Upgrade", "Upgrade: websocket",
                                                "Sec-WebSocket-Version: 13",
                                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                                "Content-Type:"])
    assert status == 403 and arrived(upstream) == []
    assert "telewarden.upgrade.uninspectable" in json.loads(resp)["rules"]
    rec = service(squid_stack, mode).decisions()[-1]
    assert rec["decision"] == "blocked" and rec["endpoint"] == "ws"


def test_websocket_upgrade_in_audit_mode_is_forwarded_and_recorded_as_uninspectable(squid_stack, upstream):
    upstream.clear()
    try:
        squid_stack.curl(b"", port="audit", method="GET", url=f"https://{HOST}/v1/ws", timeout=3,
                         headers=["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Content-Type:"])
    except RuntimeError:
        pass  # curl waits on the upgraded connection until its timeout
    rec = service(squid_stack, "audit").decisions()[-1]
    assert rec["decision"] == "forwarded"
    assert "telewarden.upgrade.uninspectable" in [f["rule"] for f in rec["findings"]]


def test_each_trail_is_intact_and_every_record_follows_the_record_schema(squid_stack):
    import jsonschema

    from conftest import ROOT

    schema = json.loads((ROOT / "schemas" / "audit-record.schema.json").read_text())
    for name, svc in squid_stack.services.items():
        if svc is None or not svc.audit.exists():
            continue
        for rec in svc.records():
            jsonschema.validate(rec, schema)
        out = subprocess.run([str(BIN / "telewarden"), "audit", "verify", str(svc.audit)], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, (name, out.stdout, out.stderr)


# -- a fleet: several services, and what bypass does when they are down -----------------------

@pytest.fixture
def fleet(tmp_path, upstream):
    from icap.squid_harness import IcapService, Squid, missing_reason
    from support.harness import free_port

    reason = missing_reason()
    if reason:
        pytest.skip(f"Squid integration tests skipped: {reason}")
    svcs = [IcapService(tmp_path / f"tw{i}", "block").start() for i in (1, 2)]
    dead = free_port()  # nothing listens here
    conf = "\n".join([
        f"icap_service tw1 reqmod_precache bypass=off icap://127.0.0.1:{svcs[0].port}/telewarden",
        f"icap_service tw2 reqmod_precache bypass=off icap://127.0.0.1:{svcs[1].port}/telewarden",
        "adaptation_service_set twfleet tw1 tw2",
        "acl port_fleet myportname fleet",
        "adaptation_access twfleet allow port_fleet",
        "adaptation_access twfleet deny all",
        # spreading: two more names for the same services, chosen by a random ACL
        f"icap_service s1 reqmod_precache bypass=off icap://127.0.0.1:{svcs[0].port}/telewarden",
        f"icap_service s2 reqmod_precache bypass=off icap://127.0.0.1:{svcs[1].port}/telewarden",
        "acl port_spread myportname spread",
        "acl half random 1/2",
        "adaptation_access s1 allow port_spread half",
        "adaptation_access s1 deny all",
        "adaptation_access s2 allow port_spread",
        "adaptation_access s2 deny all",
        f"icap_service optional reqmod_precache bypass=on icap://127.0.0.1:{dead}/telewarden",
        "acl port_optional myportname optional",
        "adaptation_access optional allow port_optional",
        "adaptation_access optional deny all",
    ]) + "\n"
    squid = Squid(upstream, {"fleet": None, "optional": None, "spread": None}, extra_conf=conf).start()
    yield squid, svcs
    squid.stop()
    for s in svcs:
        s.stop()


def test_a_fleet_fails_over_and_fails_closed_with_bypass_off(fleet, upstream):
    squid, (tw1, tw2) = fleet
    bad = body_of(case("cli-flag-values"))
    upstream.clear()
    for _ in range(3):
        assert squid.curl(bad, port="fleet")[0] == 403
    assert len(tw1.decisions()) + len(tw2.decisions()) == 3
    tw1.stop()  # one service of the set goes away: the next one judges
    before = len(tw2.decisions())
    for _ in range(3):
        status, resp, _ = squid.curl(bad, port="fleet")
        assert status == 403, resp[:200]
    assert len(tw2.decisions()) == before + 3
    tw2.stop()  # none left: with bypass=off Squid answers an error and forwards nothing
    status, _, _ = squid.curl(bad, port="fleet")
    assert status >= 500
    assert arrived(upstream) == []


def test_bypass_on_forwards_unjudged_when_the_service_is_down(fleet, upstream):
    """Why the recipe says bypass=off: an optional service that is down is skipped."""
    squid, _ = fleet
    bad = body_of(case("cli-flag-values"))
    upstream.clear()
    assert squid.curl(bad, port="optional")[0] == 200
    assert arrived(upstream) == [bad]


def test_a_chunked_request_is_judged_whole_and_forwarded_repaired_with_a_length(squid_stack, upstream, engine):
    c = case("cli-flag-values")
    upstream.clear()
    status, _, _ = squid_stack.curl(body_of(c), port="scrub", headers=["Transfer-Encoding: chunked"])
    assert status == 200
    [got] = upstream.requests()
    assert int(got.headers["Content-Length"]) == len(got.body) and "Transfer-Encoding" not in got.headers
    assert engine.inspect(exchange(got.body), "block").findings == []
    upstream.clear()
    status, _, _ = squid_stack.curl(body_of(case("cli-wrong-type")), port="scrub", headers=["Transfer-Encoding: chunked"])
    assert status == 403 and arrived(upstream) == []


def test_a_random_acl_spreads_requests_over_the_services(fleet, upstream):
    squid, (tw1, tw2) = fleet
    bad = body_of(case("cli-flag-values"))
    upstream.clear()
    for _ in range(16):
        assert squid.curl(bad, port="spread")[0] == 403
    assert len(tw1.decisions()) + len(tw2.decisions()) == 16
    assert tw1.decisions() and tw2.decisions()  # 1 chance in 2**15 to fail by chance
    assert arrived(upstream) == []
