"""Capture without sending (--sink) and an unreachable vendor (issue 13, part 1), through a real
proxy: every attempt is judged and recorded, nothing reaches the upstream that should not, and a
blocked or sunk message never opens an upstream connection."""

from __future__ import annotations

import time

import pytest

from conftest import PAYLOADS
from support.harness import GO_UA, HOST, free_port
from support.rawpeer import RawUpstream
from telewarden.engine import strictjson

pytestmark = pytest.mark.proxy

CLI = PAYLOADS["cli-v2.48-no-error"]
GOOD = strictjson.dumps(CLI)
FLAGS = strictjson.dumps({**CLI, "data": {**CLI["data"], "command": "hasura migrate apply --admin-secret"}})


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_sink_judges_records_and_sends_nothing(start_proxy, upstream, mode, workers):
    proxy = start_proxy(mode, ["--sink", "--set", f"telewarden_workers={workers}"])
    upstream.clear()
    good_status, good_body = proxy.curl(GOOD, extra=["-D", "/dev/stderr"])
    bad_status, _ = proxy.curl(FLAGS)
    assert good_status == 200 and bad_status == (403 if mode == "block" else 200)
    assert upstream.requests() == []  # the vendor never sees anything
    recs = proxy.decisions()
    assert [r["decision"] for r in recs] == ["forwarded", {"audit": "forwarded", "scrub": "scrubbed",
                                                           "block": "blocked"}[mode]]
    assert recs[0]["sunk"] is True and recs[1].get("sunk") is (None if mode == "block" else True)
    assert "sink: answered by telewarden" in (proxy.audit / "audit.log").read_text()
    # other traffic passes as usual
    status, _ = proxy.curl(b"{}", url="https://other.test/anything")
    assert status == 200 and [r.path for r in upstream.requests()] == ["/anything"]


@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_unreachable_vendor_every_attempt_is_recorded(start_proxy, upstream, mode):
    dead = str(free_port())
    proxy = start_proxy(mode, env={"TELEWARDEN_TEST_UPSTREAM_PORT": dead, "TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT": dead})
    good_status, _ = proxy.curl(GOOD)  # the tunnel opens; the request is judged, then the vendor fails
    bad_status, _ = proxy.curl(FLAGS)
    assert good_status == 502
    assert bad_status == (403 if mode == "block" else 502)
    assert [r["decision"] for r in proxy.decisions()] == ["forwarded", {"audit": "forwarded", "scrub": "scrubbed",
                                                                        "block": "blocked"}[mode]]


def test_blocked_message_opens_no_upstream_connection(start_proxy, upstream):
    raw = RawUpstream(upstream.cert, upstream.key)
    try:
        proxy = start_proxy("block", env={"TELEWARDEN_TEST_UPSTREAM_PORT": str(raw.tls_port),
                                          "TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT": str(raw.plain_port)})
        assert proxy.curl(FLAGS)[0] == 403
        assert raw.connections == []  # not even a TCP connection to the vendor
        assert proxy.curl(GOOD)[0] == 200 and len(raw.connections) == 1
    finally:
        raw.stop()


def test_lazy_tunnels_do_not_stall_keep_alive_clients(proxies, upstream):
    """Claimed tunnels connect lazily; many requests on one keep-alive connection never wait."""
    import httpx

    proxy = proxies("scrub")
    times = []
    with httpx.Client(proxy=proxy.url, verify=proxy.ssl_context(), timeout=5, headers={"User-Agent": GO_UA}) as client:
        for _ in range(60):
            t0 = time.monotonic()
            assert client.post(f"https://{HOST}/v1/http", content=GOOD).status_code == 200
            times.append(time.monotonic() - t0)
    later = sorted(times[1:])  # the first one pays for the tunnel, TLS and the upstream connection
    assert later[-1] < max(0.5, 10 * later[len(later) // 2]), f"a request waited {later[-1]:.2f} s"
