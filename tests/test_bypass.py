"""Side doors beside the HTTP hooks (issue 9), through a real proxy with hand-crafted bytes.

Each case sends what no client library would (a leading CRLF inside a TLS tunnel, a one-byte
first TLS record, a non-HTTP stream after CONNECT :80, a dot-segment target, a foreign Host, a
ping payload), then checks what reached the upstream byte for byte, what the client got and what
the trail says, in block, scrub and audit mode. Outcomes join docs/hardening.md.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import PAYLOADS, ROOT
from support.harness import HOST, Proxy
from support.rawpeer import RawUpstream, exchange, http_request, tunnel
from telewarden.engine import strictjson
from test_hardening import RESULTS, SENTINEL

pytestmark = pytest.mark.proxy

CLI = PAYLOADS["cli-v2.48-no-error"]
GOOD = strictjson.dumps(CLI)
SECRET = b"--admin-secret"
FLAGS = strictjson.dumps({**CLI, "data": {**CLI["data"], "command": "hasura migrate apply --admin-secret"}})
ALL_MODES = ["block", "scrub", "audit"]


@pytest.fixture(scope="module")
def raw_upstream(upstream):
    up = RawUpstream(upstream.cert, upstream.key)
    yield up
    up.stop()


@pytest.fixture(scope="module")
def raw_proxies(tmp_path_factory, upstream, raw_upstream, confdir):
    """One proxy per mode whose vendor connections go to the byte-recording upstream."""
    started: dict[str, Proxy] = {}
    env = {"TELEWARDEN_TEST_UPSTREAM_PORT": str(raw_upstream.tls_port),
           "TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT": str(raw_upstream.plain_port)}

    def get(mode: str) -> Proxy:
        if mode not in started:
            started[mode] = Proxy(tmp_path_factory.mktemp(f"raw-{mode}"), upstream, confdir, mode, env=env).start()
        return started[mode]

    yield get
    for p in started.values():
        p.stop()


def rules_of(proxy: Proxy, since: int) -> set[str]:
    return {f["rule"] for r in proxy.decisions()[since:] for f in r["findings"]}


def decisions_of(proxy: Proxy, since: int, rule: str) -> list[str]:
    return [r["decision"] for r in proxy.decisions()[since:] if any(f["rule"] == rule for f in r["findings"])]


def still_serves(proxy: Proxy, raw_upstream: RawUpstream) -> None:
    raw_upstream.clear()
    answer = exchange(tunnel(proxy.port, f"{HOST}:443", sni=HOST, ca=proxy.ca, alpn=["http/1.1"]), http_request(GOOD))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    assert raw_upstream.received().endswith(GOOD)
    raw_upstream.clear()


def outcome(name: str, category: str, mode: str, client: str, upstream: str, rules: str, note: str = "") -> None:
    RESULTS[(name, mode)] = {"category": category, "client": client, "upstream": upstream, "rules": rules,
                             "note": note}


# -- 1. raw relay ---------------------------------------------------------------------------

RAW_CASES = [
    # name, CONNECT target, TLS?, chunks to send
    ("leading CRLF in a TLS tunnel, no ALPN", f"{HOST}:443", True, [http_request(FLAGS, prefix=b"\r\n")]),
    ("first TLS record of one byte, no ALPN", f"{HOST}:443", True,
     [http_request(FLAGS)[:1], http_request(FLAGS)[1:]]),
    ("CONNECT :80, leading LF, cleartext", f"{HOST}:80", False, [http_request(FLAGS, prefix=b"\n")]),
    ("CONNECT :80, a non-HTTP stream", f"{HOST}:80", False, [b"\x00\x01HELO " + SECRET + b" hunter2\r\n"]),
]


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("name,target,tls,chunks", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_claimed_tunnel_is_never_relayed_raw(raw_proxies, raw_upstream, mode, name, target, tls, chunks):
    proxy = raw_proxies(mode)
    raw_upstream.clear()
    before = len(proxy.decisions())
    sock = tunnel(proxy.port, target, tls=tls, sni=HOST if tls else None, ca=proxy.ca)
    answer = exchange(sock, *chunks)
    got = raw_upstream.received()
    is_http = chunks[0].lstrip(b"\r\n").startswith(b"P")
    assert "telewarden.transport.tcp" in rules_of(proxy, before), proxy.decisions()[before:]
    if mode == "audit":  # the one fail-open mode: relayed, and recorded as such
        assert SECRET in got
        assert decisions_of(proxy, before, "telewarden.transport.tcp") == ["forwarded"]
        client, upstream = "relayed", "relayed raw (recorded)"
    else:
        assert SECRET not in got, got[:200]
        assert decisions_of(proxy, before, "telewarden.transport.tcp") == ["blocked"]
        if is_http:  # parsed as HTTP (leading empty lines dropped) and judged like any request
            assert "hasura.cli.command-args" in rules_of(proxy, before)
            if mode == "scrub":
                assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
                assert got.startswith(b"POST /v1/http HTTP/1.1\r\n") and b"hasura migrate apply" in got
                client, upstream = "200", "parsed as HTTP, repaired request only"
            else:
                assert answer.startswith(b"HTTP/1.1 403") and got == b""
                client, upstream = "403", "nothing"
        else:
            assert got == b"" and not answer.startswith(b"HTTP/1.1 200")
            client, upstream = "400, closed", "nothing"
    still_serves(proxy, raw_upstream)
    outcome(name, "transport", mode, client, upstream,
            "telewarden.transport.tcp" + (", hasura.cli.command-args" if is_http else ""),
            "mitmproxy would relay raw TCP; parsed as HTTP instead (RFC 9112 §2.2)")


# -- 2. destinations without a name ------------------------------------------------------------

def _pack_copy(tmp_path, edit) -> str:
    pack = tmp_path / "hasura.yaml"
    pack.write_text(edit((ROOT / "rules" / "hasura.yaml").read_text()))
    return str(pack)


def _nameless(proxy: Proxy, ip: str, body: bytes) -> bytes:
    """CONNECT to an address, TLS without SNI, HTTP/1.0 without Host: nothing names the vendor."""
    sock = tunnel(proxy.port, f"{ip}:443", sni=None, ca=proxy.ca, alpn=["http/1.1"])
    request = (f"POST /v1/http HTTP/1.0\r\nUser-Agent: Go-http-client/1.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return exchange(sock, request)


@pytest.mark.parametrize("mode", ["block", "scrub"])
def test_declared_address_is_claimed_without_a_name(start_proxy, upstream, tmp_path, mode):
    pack = _pack_copy(tmp_path, lambda text: text.replace("endpoints:", "addresses: [127.0.0.2/32]\nendpoints:", 1))
    proxy = start_proxy(mode, ["--rules", pack])
    upstream.clear()
    answer = _nameless(proxy, "127.0.0.2", FLAGS)
    bodies = [r.body for r in upstream.requests()]
    assert all(SECRET not in b for b in bodies)
    assert "hasura.cli.command-args" in rules_of(proxy, 0)
    assert answer[:12] in ((b"HTTP/1.0 200", b"HTTP/1.1 200") if mode == "scrub" else (b"HTTP/1.1 403",)), answer[:60]
    outcome("CONNECT to the vendor's address, no SNI, no Host", "destination", mode,
            answer[9:12].decode(), "repaired request only" if mode == "scrub" else "nothing",
            "hasura.cli.command-args", "claimed by the pack's `addresses:`")


def test_resolved_address_is_claimed_without_a_name(start_proxy, upstream, tmp_path):
    # `localhost` stands for a vendor host name: the proxy resolves it itself (127.0.0.1, ::1)
    pack = _pack_copy(tmp_path, lambda text: text.replace("hosts: [telemetry.hasura.io]",
                                                          "hosts: [telemetry.hasura.io, localhost]", 1))
    proxy = start_proxy("block", ["--rules", pack])
    deadline = time.monotonic() + 10
    answer = b""
    while time.monotonic() < deadline:  # the first resolver round runs at start, off the request path
        upstream.clear()
        answer = _nameless(proxy, "127.0.0.1", FLAGS)
        if answer.startswith(b"HTTP/1.1 403"):
            break
        time.sleep(0.3)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:60]
    assert upstream.requests() == [] and "hasura.cli.command-args" in rules_of(proxy, 0)


def test_without_addresses_a_nameless_connection_is_not_claimed(proxies, upstream):
    """The limit the README documents: no name, no declared or resolved address, no claim."""
    proxy = proxies("block")
    upstream.clear()
    before = len(proxy.decisions())
    answer = _nameless(proxy, "127.0.0.2", GOOD)
    assert answer.startswith(b"HTTP/1.0 200") and len(proxy.decisions()) == before


# -- 5. what is forwarded is what was judged ------------------------------------------------

TARGETS = [
    ("dot segment hiding a name", "/v1/customers/../http", b"customers"),
    ("encoded e-mail then encoded dots", "/v1/http/jane%40acme.com/%2e%2e", b"jane"),
    ("fragment", "/v1/http#jane@acme.com", b"jane"),
    ("percent-encoded letter", "/v1/%68ttp", b"%68"),
    ("upper case", "/V1/HTTP", b"/V1"),
]


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("name,target,leak", TARGETS, ids=[t[0] for t in TARGETS])
def test_forwarded_target_is_the_judged_one(raw_proxies, raw_upstream, mode, name, target, leak):
    proxy = raw_proxies(mode)
    raw_upstream.clear()
    before = len(proxy.decisions())
    sock = tunnel(proxy.port, f"{HOST}:443", sni=HOST, ca=proxy.ca, alpn=["http/1.1"])
    answer = exchange(sock, http_request(GOOD, target=target))
    got = raw_upstream.received()
    assert "telewarden.request.target" in rules_of(proxy, before)
    trail = (proxy.audit / "audit.jsonl").read_bytes() + (proxy.audit / "audit.log").read_bytes()
    assert leak not in trail  # the raw target is shown by digest only
    if mode == "scrub":
        assert answer.startswith(b"HTTP/1.1 200") and got.startswith(b"POST /v1/http HTTP/1.1\r\n"), got[:60]
        assert leak not in got
    elif mode == "block":
        assert answer.startswith(b"HTTP/1.1 403") and got == b""
    else:
        assert answer.startswith(b"HTTP/1.1 200")
    if mode != "audit":
        outcome(f"request target: {name}", "destination", mode, answer[9:12].decode(),
                "canonical /v1/http" if mode == "scrub" else "nothing", "telewarden.request.target")


HOSTS = [
    ("Host names another host", f"Host: db.internal.example\r\n", b"db.internal"),
    ("two Host headers", f"Host: {HOST}\r\nHost: db.internal.example\r\n", b"db.internal"),
]


@pytest.mark.parametrize("mode", ["block", "scrub"])
@pytest.mark.parametrize("name,headers,leak", HOSTS, ids=[h[0] for h in HOSTS])
def test_host_header_must_name_the_claimed_host(raw_proxies, raw_upstream, mode, name, headers, leak):
    proxy = raw_proxies(mode)
    raw_upstream.clear()
    before = len(proxy.decisions())
    body = GOOD
    request = (f"POST /v1/http HTTP/1.1\r\n{headers}User-Agent: Go-http-client/1.1\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    answer = exchange(tunnel(proxy.port, f"{HOST}:443", sni=HOST, ca=proxy.ca, alpn=["http/1.1"]), request)
    got = raw_upstream.received()
    assert leak not in got
    trail = (proxy.audit / "audit.jsonl").read_bytes() + (proxy.audit / "audit.log").read_bytes()
    assert leak not in trail
    if answer.startswith(b"HTTP/1.1 400"):  # mitmproxy itself refused the request
        client, upstream = "400 (mitmproxy)", "nothing"
        assert got == b""
    else:
        assert "telewarden.request.other-host" in rules_of(proxy, before)
        if mode == "scrub":
            assert answer.startswith(b"HTTP/1.1 200")
            assert got.count(b"\r\nHost: ") + got.count(b"\r\nhost: ") == 1 and f"Host: {HOST}".encode() in got
            client, upstream = "200", f"Host: {HOST} only"
        else:
            assert answer.startswith(b"HTTP/1.1 403") and got == b""
            client, upstream = "403", "nothing"
    outcome(name, "destination", mode, client, upstream, "telewarden.request.other-host")


# -- 4. WebSocket control frames ------------------------------------------------------------

@pytest.mark.parametrize("mode", ALL_MODES)
def test_websocket_control_frames_carry_nothing(proxies, upstream, mode):
    proxy = proxies(mode)
    upstream.clear()
    before = len(proxy.decisions())
    with proxy.websocket() as ws:
        answered = ws.ping(b"jane@acme.com")  # keepalives match the pong by payload: it must come back
        assert answered.wait(5)
        ws.pong(b"db01.acme.internal")
        ws.send(SENTINEL.decode())
        assert upstream.wait_for(lambda rs: any(r.body == SENTINEL for r in rs), 10)
        ws.close(code=4000, reason="--admin-secret hunter2")
    assert upstream.wait_for(lambda rs: any(r.method == "CLOSE" for r in rs), 10)
    controls = {r.method: r for r in upstream.controls()}
    rules = [f["pointer"] for r in proxy.decisions()[before:] for f in r["findings"]
             if f["rule"] == "telewarden.websocket.control-frame"]
    assert sorted(rules) == ["frame:close", "frame:ping", "frame:pong"]
    assert controls["CLOSE"].headers["code"] == "4000"
    sent = {"PING": b"jane@acme.com", "PONG": b"db01.acme.internal", "CLOSE": b"--admin-secret hunter2"}
    for kind, payload in sent.items():
        if kind in controls:  # aiohttp reports pings, pongs and the close it received
            assert controls[kind].body == (payload if mode == "audit" else b""), (kind, controls[kind].body)
    assert "PING" in controls and "CLOSE" in controls
    trail = (proxy.audit / "audit.jsonl").read_bytes()
    assert b"jane@acme.com" not in trail and b"hunter2" not in trail
    if mode != "audit":
        outcome("WebSocket ping/pong payloads and close reason", "hiding", mode, "connection goes on",
                "empty ping/pong, close code only", "telewarden.websocket.control-frame",
                "mitmproxy relays control frames without a hook: its WebSocket layer is guarded")


def test_udp_to_a_claimed_destination_is_closed(start_proxy, upstream):
    """UDP (here a reverse-mode UDP listener whose target is the vendor) would be relayed raw."""
    import socket

    from support.harness import free_port

    udp_port = free_port()
    proxy = start_proxy("block", ["--mode", f"reverse:udp://{HOST}:443@127.0.0.1:{udp_port}"], wait=False)
    deadline = time.monotonic() + 30  # only a UDP listener: wait for mitmproxy to say so
    while "listening at" not in (proxy.log.read_text() if proxy.log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            f["rule"] == "telewarden.transport.udp" for r in proxy.decisions() for f in r["findings"]):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"--admin-secret hunter2", ("127.0.0.1", udp_port))
        time.sleep(0.3)
    recs = [r for r in proxy.decisions() if any(f["rule"] == "telewarden.transport.udp" for f in r["findings"])]
    assert recs and recs[0]["decision"] == "blocked" and recs[0]["transport"] == "udp"
    assert b"hunter2" not in (proxy.audit / "audit.jsonl").read_bytes()
