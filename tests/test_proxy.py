"""Live enforcement through a real proxy: real TLS, real clients, a real upstream that records
what actually arrived."""

from __future__ import annotations

import gzip
import json
import zlib

import httpx
import pytest
import yaml
from mitmproxy import io as mitmio

from conftest import PAYLOADS, ROOT, VIOLATIONS, exchange, is_console
from support.harness import BROWSER_UA, GO_UA, HOST
from telewarden.engine import strictjson
from telewarden.engine.model import Decision

pytestmark = pytest.mark.proxy

HTTP_GENUINE = [n for n in sorted(PAYLOADS) if not is_console(n)]
HTTP_BAD = [c for c in VIOLATIONS if c["transport"] == "http"]
WS_BAD = [c for c in VIOLATIONS if c["transport"] == "websocket"]


def body_of(name_or_case) -> bytes:
    if isinstance(name_or_case, dict):
        return strictjson.dumps(name_or_case["body"])
    return json.dumps(PAYLOADS[name_or_case], separators=(",", ":")).encode()


def arrived(upstream) -> list[bytes]:
    return [r.body for r in upstream.requests()]


@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_conforming_payloads_arrive_byte_for_byte(proxies, upstream, mode):
    proxy = proxies(mode)
    for name in HTTP_GENUINE:
        upstream.clear()
        status, _ = proxy.curl(body_of(name))
        assert status == 200, name
        assert arrived(upstream) == [body_of(name)], name


def test_scrub_mode_forwards_every_violation_repaired_and_the_repair_passes(proxies, upstream, engine):
    proxy = proxies("scrub")
    for case in HTTP_BAD:
        upstream.clear()
        status, resp = proxy.curl(body_of(case))
        if case["scrubbable"]:
            assert status == 200, (case["name"], resp)
            [got] = arrived(upstream)
            assert got != body_of(case)
            v = engine.inspect(exchange(got), "block")
            assert v.findings == [] and v.decision is Decision.FORWARDED, case["name"]
        else:
            assert status == 403 and arrived(upstream) == [], case["name"]


def test_block_mode_never_forwards_a_violation_and_answers_clearly(proxies, upstream):
    proxy = proxies("block")
    for case in HTTP_BAD:
        upstream.clear()
        status, resp = proxy.curl(body_of(case))
        assert status == 403, case["name"]
        assert arrived(upstream) == [], case["name"]
        answer = json.loads(resp)
        assert answer["telewarden"] == "blocked"
        assert set(answer["rules"]) == {e["rule"] for e in case["expect"]}


def test_audit_mode_forwards_violations_unchanged_and_records_them(proxies, upstream):
    proxy = proxies("audit")
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-values")
    upstream.clear()
    assert proxy.curl(body_of(case))[0] == 200
    assert arrived(upstream) == [body_of(case)]
    last = proxy.decisions()[-1]
    assert last["decision"] == "forwarded" and last["findings"][0]["rule"] == "hasura.cli.command-args"


def test_http2_client_is_scrubbed_too(start_proxy, upstream, engine):
    # mitmproxy offers the client what the upstream negotiated when it connects eagerly; this
    # upstream speaks HTTP/1.1, so a lazy connection lets the client side be HTTP/2.
    import subprocess

    proxy = start_proxy("scrub", ["--set", "connection_strategy=lazy"])
    case = next(c for c in HTTP_BAD if c["name"] == "cli-structured-error-v2.13")
    upstream.clear()
    out = subprocess.run(["curl", "-sS", "--http2", "--noproxy", "", "-x", proxy.url, "--cacert", str(proxy.ca),
                          "-H", "Content-Type: application/json", "--data-binary", "@-", "-o", "/dev/null",
                          "-w", "%{http_version} %{http_code}", f"https://{HOST}/v1/http"],
                         input=body_of(case), capture_output=True, timeout=30)
    assert out.stdout == b"2 200", out.stderr
    [got] = arrived(upstream)
    assert json.loads(got)["data"]["error"] is None
    assert engine.inspect(exchange(got), "block").findings == []


def test_python_http_client_through_the_proxy(proxies, upstream):
    proxy = proxies("block")
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-values")
    upstream.clear()
    with httpx.Client(proxy=proxy.url, verify=proxy.ssl_context(), timeout=20, headers={"User-Agent": GO_UA}) as client:
        bad = client.post(f"https://{HOST}/v1/http", content=body_of(case), headers={"Content-Type": "application/json"})
        good = client.post(f"https://{HOST}/v1/http", content=body_of("cli-v1.3"), headers={"Content-Type": "application/json"})
    assert bad.status_code == 403 and bad.json()["rules"] == ["hasura.cli.command-args"]
    assert bad.headers["X-Telewarden"] == "blocked"
    assert good.status_code == 200 and arrived(upstream) == [body_of("cli-v1.3")]


def ws_session(proxy, frames: list[bytes], headers=None):
    with proxy.websocket(additional_headers=headers) as ws:
        for f in frames:
            ws.send(f.decode())


SENTINEL = json.dumps({**PAYLOADS["console-v2.48-click"], "data": {**PAYLOADS["console-v2.48-click"]["data"],
                      "event_data": {"id": "AddAction"}}}, separators=(",", ":")).encode()


def wait_sentinel(upstream) -> list[bytes]:
    assert upstream.wait_for(lambda rs: any(r.kind == "ws" and r.body == SENTINEL for r in rs), 15)
    return [r.body for r in upstream.frames() if r.body != SENTINEL]


@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_websocket_frames_are_judged_one_by_one_and_the_connection_goes_on(proxies, upstream, engine, mode):
    proxy = proxies(mode)
    good = [body_of(n) for n in sorted(PAYLOADS) if is_console(n)]
    bad = [body_of(c) for c in WS_BAD]
    upstream.clear()
    frames = [x for pair in zip(good, bad) for x in pair] + good[len(bad):] + bad[len(good):]
    ws_session(proxy, [*frames, SENTINEL])
    got = wait_sentinel(upstream)
    assert [g for g in got if g in good] == good  # every conforming frame, in order, byte for byte
    assert not set(got) & set(bad)  # no violating frame as sent
    if mode == "block":
        assert len(got) == len(good)
    else:
        repairable = [b for b in bad if engine.inspect(exchange(b, "websocket"), "scrub").decision.value == "scrubbed"]
        assert len(got) == len(good) + len(repairable)  # (a repair can equal a genuine frame byte for byte)
        for r in got:
            assert engine.inspect(exchange(r, "websocket"), "block").findings == []


def _masked_text_frame(payload: bytes, key: bytes = b"\x11\x22\x33\x44") -> bytes:
    assert len(payload) < 65536
    head = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") if len(payload) > 125 \
        else bytes([0x81, 0x80 | len(payload)])
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_websocket_over_tls_1_3_to_the_proxy_from_a_single_threaded_client(proxies, upstream, engine, mode):
    """Proxy.websocket speaks TLS 1.2 (websockets' threaded reader can lose its own request on
    TLS 1.3); this keeps the proxy's TLS 1.3 path for the console's WebSocket tested: CONNECT,
    TLS 1.3, upgrade and frames by hand from one thread; a clean frame arrives byte for byte and a
    violating one never does."""
    import socket
    import ssl

    proxy = proxies(mode)
    upstream.clear()
    bad = body_of(WS_BAD[0])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        raw.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        ctx = proxy.ssl_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            assert tls.version() == "TLSv1.3"
            tls.sendall(f"GET /v1/ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                        f"User-Agent: {BROWSER_UA}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(4096)
                assert chunk, head
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head[:200]
            tls.sendall(_masked_text_frame(bad) + _masked_text_frame(SENTINEL))
            got = wait_sentinel(upstream)
    assert bad not in got
    if mode == "block":
        assert got == []
    for r in got:  # scrub: only a repaired frame, which passes the checks
        assert engine.inspect(exchange(r, "websocket"), "block").findings == []


def test_websocket_handshake_origin_is_dropped_in_scrub_mode(proxies, upstream):
    proxy = proxies("scrub")
    upstream.clear()
    ws_session(proxy, [SENTINEL], headers={"Origin": "https://hasura.internal.example.com"})
    wait_sentinel(upstream)
    handshake = next(r for r in upstream.requests() if r.path == "/v1/ws")
    assert "Origin" not in handshake.headers


@pytest.mark.parametrize("encoding,encode", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_encoded_body_is_decoded_for_inspection_and_reencoded_when_scrubbed(proxies, upstream, encoding, encode):
    proxy = proxies("scrub")
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")
    upstream.clear()
    status, _ = proxy.curl(encode(body_of(case)), headers=[f"Content-Encoding: {encoding}"])
    assert status == 200
    [req] = upstream.requests()
    assert req.headers.get("Content-Encoding") == encoding
    raw = gzip.decompress(req.body) if encoding == "gzip" else zlib.decompress(req.body)
    assert json.loads(raw)["data"]["command"] == "hasura migrate apply"
    assert int(req.headers["Content-Length"]) == len(req.body)


@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_body_that_claims_gzip_but_is_not_is_not_forwarded(proxies, upstream, mode):
    proxy = proxies(mode)
    upstream.clear()
    status, resp = proxy.curl(body_of("cli-v1.3"), headers=["Content-Encoding: gzip"])
    assert status == 403 and arrived(upstream) == []
    assert json.loads(resp)["rules"] == ["telewarden.body.bad-encoding"]


def test_traffic_no_pack_claims_passes_untouched(proxies, upstream):
    proxy = proxies("block")
    upstream.clear()
    secret = b'{"email":"jane@acme.com","token":"Bearer abcdefghijklmnop"}'
    status, _ = proxy.curl(secret, url="https://other.test/collect")
    assert status == 200 and arrived(upstream) == [secret]


@pytest.mark.parametrize("url,extra", [
    ("https://TELEMETRY.HASURA.IO/v1/http", []),
    ("https://telemetry.hasura.io./v1/http", []),
    ("https://telemetry.hasura.io:443/v1/http", []),
    ("https://telemetry.hasura.io/v1//http", ["--path-as-is"]),
    ("https://telemetry.hasura.io/v1/%68ttp", ["--path-as-is"]),
    ("https://telemetry.hasura.io/v1/http/", []),
    ("https://telemetry.hasura.io/V1/HTTP", []),
    ("https://other.test/v1/http", ["-H", f"Host: {HOST}"]),  # Host disagrees with CONNECT target and SNI
    ("https://telemetry.hasura.io/v1/http", ["--connect-to", f"{HOST}:443:other.test:443"]),  # CONNECT other.test, SNI telemetry
    ("http://telemetry.hasura.io/v1/http", []),  # plain HTTP
])
def test_destination_variants_cannot_dodge_the_pack(proxies, upstream, url, extra):
    proxy = proxies("block")
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")
    upstream.clear()
    status, resp = proxy.curl(body_of(case), url=url, extra=extra)
    assert status == 403, resp
    assert arrived(upstream) == []


def test_internal_error_blocks_in_enforcing_modes_and_forwards_in_audit(start_proxy, upstream):
    from support.harness import SUPPORT

    body = json.dumps({**PAYLOADS["cli-v1.3"], "note": "FAULT-INJECT"}).encode()
    for mode, want in [("scrub", 403), ("block", 403), ("audit", 200)]:
        proxy = start_proxy(mode, ["-s", str(SUPPORT / "fault_addon.py")])
        upstream.clear()
        status, resp = proxy.curl(body)
        assert status == want, (mode, resp)
        assert arrived(upstream) == ([body] if mode == "audit" else [])
        rec = proxy.decisions()[-1]
        assert rec["findings"][0]["rule"] == "telewarden.internal-error"
        assert rec["decision"] == ("forwarded" if mode == "audit" else "blocked")
        proxy.stop()


def test_reverse_mode_for_clients_that_ignore_proxy_settings(start_proxy, upstream):
    proxy = start_proxy("scrub", ["--mode", f"reverse:https://{HOST}/"])
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")
    upstream.clear()
    import subprocess

    out = subprocess.run(["curl", "-sS", "--noproxy", "", "--cacert", str(proxy.ca), "--resolve",
                          f"{HOST}:{proxy.port}:127.0.0.1", "-H", "Content-Type: application/json",
                          "--data-binary", "@-", "-w", "%{http_code}", "-o", "/dev/null",
                          f"https://{HOST}:{proxy.port}/v1/http"], input=body_of(case), capture_output=True, timeout=30)
    assert out.stdout == b"200", out.stderr
    [got] = arrived(upstream)
    assert json.loads(got)["data"]["command"] == "hasura migrate apply"


def test_plain_http_reverse_mode_is_judged_by_its_configured_target(start_proxy, upstream):
    # mitmproxy rewrites Host to the address it connected to and plain HTTP has no SNI: only the
    # reverse-mode target still names the vendor.
    import subprocess

    proxy = start_proxy("block", ["--mode", f"reverse:http://{HOST}:80/"])
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")
    upstream.clear()
    out = subprocess.run(["curl", "-sS", "--noproxy", "", "-H", "Content-Type: application/json",
                          "--data-binary", "@-", "-w", "%{http_code}", "-o", "/dev/null",
                          f"http://127.0.0.1:{proxy.port}/v1/http"], input=body_of(case), capture_output=True, timeout=30)
    assert out.stdout == b"403" and arrived(upstream) == []


def test_a_body_that_would_be_streamed_is_refused_before_anything_is_sent(start_proxy, upstream):
    proxy = start_proxy("scrub", ["--set", "stream_large_bodies=100"])
    case = next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")
    upstream.clear()
    with pytest.raises(RuntimeError, match="curl failed"):  # the connection is closed: no response
        proxy.curl(body_of(case))
    assert arrived(upstream) == []
    rec = proxy.decisions()[-1]
    assert rec["decision"] == "blocked" and rec["findings"][0]["rule"] == "telewarden.body.streamed"
    # traffic no pack claims still streams as mitmproxy was told
    assert proxy.curl(b"x" * 500, url="https://other.test/upload")[0] == 200


def test_streaming_limit_above_the_body_keeps_telemetry_inspected(start_proxy, upstream):
    proxy = start_proxy("scrub", ["--set", "stream_large_bodies=100k"])
    upstream.clear()
    assert proxy.curl(body_of(next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")))[0] == 200
    assert json.loads(arrived(upstream)[0])["data"]["command"] == "hasura migrate apply"


def test_body_over_max_body_is_not_forwarded(start_proxy, upstream):
    proxy = start_proxy("scrub", ["--set", "telewarden_max_body=200"])
    upstream.clear()
    status, resp = proxy.curl(body_of("server-v2.48-default-source"))
    assert status == 403 and arrived(upstream) == []
    assert json.loads(resp)["rules"] == ["telewarden.body.too-large"]


def test_flows_saved_with_w_keep_the_verdict_for_mitmweb_users(start_proxy, upstream, tmp_path):
    saved = tmp_path / "saved.mitm"
    proxy = start_proxy("scrub", ["--set", f"save_stream_file={saved}"])
    proxy.curl(body_of(next(c for c in HTTP_BAD if c["name"] == "cli-flag-names-v2.1")))
    proxy.curl(body_of("cli-v1.3"))
    proxy.stop()
    with saved.open("rb") as f:
        flows = list(mitmio.FlowReader(f).stream())
    scrubbed, clean = flows
    assert scrubbed.metadata["telewarden"]["decision"] == "scrubbed"
    assert scrubbed.metadata["telewarden"]["rules"] == ["hasura.cli.command-args"]
    assert scrubbed.comment.startswith("telewarden: SCRUBBED") and scrubbed.marked == ":broom:"
    assert clean.metadata["telewarden"]["decision"] == "forwarded" and not clean.marked
    from mitmproxy import flowfilter
    assert flowfilter.match("~comment SCRUBBED", scrubbed) and not flowfilter.match("~marked", clean)


@pytest.mark.parametrize("extra,message", [
    (["--set", "telewarden_max_body=0"], "telewarden_max_body must be positive"),
    (["--set", "telewarden_allow=no-reason"], "expected RULE_ID=REASON"),
    (["--rules", "/nonexistent/pack.yaml"], "no such file or folder"),
    (["--set", "telewarden_workers=-1"], "telewarden_workers must be between 0 and 64"),
    (["--set", "telewarden_worker_timeout_ms=10"], "telewarden_worker_timeout_ms must be at least 100"),
])
def test_bad_configuration_at_startup_exits_nonzero_naming_the_problem(start_proxy, extra, message):
    proxy = start_proxy("scrub", extra, wait=False)
    assert proxy.proc.wait(30) != 0
    assert message in proxy.log.read_text()


def test_broken_pack_at_startup_names_the_rule(start_proxy, tmp_path):
    from conftest import ROOT

    bad = tmp_path / "hasura.yaml"
    bad.write_text((ROOT / "rules" / "hasura.yaml").read_text().replace("check: {equals: null}", "check: {equals: null, absent: true}", 1))
    proxy = start_proxy("scrub", ["--rules", str(bad)], wait=False)
    assert proxy.proc.wait(30) != 0
    assert "rule 'hasura.cli.error'" in proxy.log.read_text()


def test_bare_mitmdump_with_the_addon_script(start_proxy, upstream):
    proxy = start_proxy("block", via="mitmdump")
    upstream.clear()
    assert proxy.curl(body_of(next(c for c in HTTP_BAD if c["name"] == "cli-empty-error-object-v2.1")))[0] == 403
    assert proxy.curl(body_of("cli-v1.3"))[0] == 200
    assert arrived(upstream) == [body_of("cli-v1.3")]


def test_ws_keep_bounds_the_frames_a_live_websocket_flow_holds(start_proxy, upstream, tmp_path):
    saved = tmp_path / "ws.mitm"
    proxy = start_proxy("scrub", ["--set", "telewarden_ws_keep=3", "--set", f"save_stream_file={saved}"])
    upstream.clear()
    ids = [v["value"] for v in yaml.safe_load((ROOT / "rules" / "hasura" / "console-analytics-ids.yaml").read_text())["values"]
           if "value" in v and v["value"] not in ("unknown", "About", "AddAction")][:20]  # real ids, none the sentinel's
    frames = [json.dumps({**PAYLOADS["console-v2.48-click"], "data": {**PAYLOADS["console-v2.48-click"]["data"],
                          "event_data": {"id": i}}}, separators=(",", ":")).encode() for i in ids]
    ws_session(proxy, [*frames, SENTINEL])
    got = wait_sentinel(upstream)
    assert got == frames  # every frame was judged and relayed
    assert sum(1 for r in proxy.decisions() if r["transport"] == "websocket") == 21
    proxy.stop()
    with saved.open("rb") as f:
        [flow] = [fl for fl in mitmio.FlowReader(f).stream() if fl.websocket is not None]
    assert len(flow.websocket.messages) <= 3
