"""The WebSocket client of the integration harness (`Proxy.websocket`): a stall fails in seconds.

A CI run once hung ~8 minutes in test_websocket_frames: websockets' sync client lost its upgrade
request (its reader thread and the caller wrote and read one TLS 1.3 connection at once; see
`Proxy.websocket`), timed out after 10 s, then waited in the join of its reader thread, which sat
in a TLS read that closing the socket does not wake.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from support.harness import HOST, Proxy, make_upstream_cert


def _stalling_proxy(cert, key, log, hold: float = 30.0) -> tuple[int, threading.Event]:
    """Answers one CONNECT, completes TLS, sends half a TLS record and then nothing until `hold`
    seconds have passed: the client's reader is left blocked inside a TLS read."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(hold)
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                log.write_text(f"fake proxy: {head.split(b' ')[0].decode()} answered, TLS next\n")
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                tls = ctx.wrap_socket(conn, server_side=True)
                socket.socket.send(tls, b"\x17\x03\x03\x00\x40")  # a record header, its 64 bytes never follow
                with log.open("a") as f:
                    f.write("fake proxy: TLS done, half a record sent, silent from now on\n")
                deadline = time.monotonic() + hold
                while time.monotonic() < deadline and tls.recv(4096):
                    pass
        except OSError:
            pass
        finally:
            listener.close()
            done.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], done


def test_a_stalled_websocket_fails_in_seconds_with_the_proxy_log(tmp_path):
    confdir = tmp_path / "conf"
    confdir.mkdir()
    cert, key = make_upstream_cert(confdir)  # self-signed for HOST: stands in for the mitmproxy CA
    (confdir / "mitmproxy-ca-cert.pem").write_bytes(cert.read_bytes())
    proxy = Proxy(tmp_path, None, confdir)  # type: ignore[arg-type] - never started: the fake answers
    proxy.log.write_text("")
    proxy.port, done = _stalling_proxy(cert, key, proxy.log)
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        with proxy.websocket(timeout=2):
            pass
    elapsed = time.monotonic() - t0
    done.wait(1)
    assert elapsed < 10, f"the client hung {elapsed:.0f} s after its 2 s timeout"
    message = str(failed.value)
    assert "timed out while waiting for handshake response" in message
    assert "half a record sent, silent from now on" in message  # what the proxy logged meanwhile


def test_the_websocket_client_speaks_tls12_to_the_proxy(proxies):
    # TLS 1.3 session tickets arrive after the handshake, while websockets' reader thread and the
    # upgrade request race on one SSL object (see Proxy.websocket): TLS 1.2 has no such messages.
    with proxies("scrub").websocket() as ws:
        assert ws.socket.version() == "TLSv1.2"
        assert ws.request.headers["Host"] == HOST
