"""Hand-crafted bytes on raw sockets, where no client library would send them, and an upstream
that records every byte it receives (per connection), so a test can assert on what really
reached the other side, byte for byte. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path


class RawUpstream:
    """TLS and plain TCP listeners on 127.0.0.1 that record every connection's bytes and answer
    each HTTP/1 request head (after its Content-Length body) with `200 ok`."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.connections: list[bytearray] = []
        self._lock = threading.Lock()
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(cert, key)
        self._socks = []
        self.tls_port = self._listen(tls=True)
        self.plain_port = self._listen(tls=False)

    def _listen(self, tls: bool) -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        s.settimeout(0.2)
        self._socks.append(s)
        threading.Thread(target=self._accept, args=(s, tls), daemon=True).start()
        return s.getsockname()[1]

    def _accept(self, s: socket.socket, tls: bool) -> None:
        while s.fileno() != -1:
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn, tls), daemon=True).start()

    def _serve(self, conn: socket.socket, tls: bool) -> None:
        buf = bytearray()
        with self._lock:
            self.connections.append(buf)
        conn.settimeout(5)
        try:
            if tls:
                conn = self._ctx.wrap_socket(conn, server_side=True)
            pending = b""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                data = conn.recv(65536)
                if not data:
                    break
                with self._lock:
                    buf.extend(data)
                pending += data
                while b"\r\n\r\n" in pending:
                    head, _, rest = pending.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(rest) < length:
                        break
                    pending = rest[length:]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            conn.close()

    def received(self) -> bytes:
        with self._lock:
            return b"".join(bytes(c) for c in self.connections)

    def clear(self) -> None:
        with self._lock:
            self.connections.clear()

    def stop(self) -> None:
        for s in self._socks:
            s.close()


def tunnel(proxy_port: int, target: str, *, tls: bool = True, sni: str | None = None, ca: Path | None = None,
           alpn: list[str] | None = None, timeout: float = 5.0) -> socket.socket:
    """CONNECT target through the proxy, then (optionally) TLS with no ALPN unless given."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"proxy closed the CONNECT: {answer!r}")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"CONNECT refused: {answer[:60]!r}")
    if not tls:
        return s
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx.wrap_socket(s, server_hostname=sni)


def exchange(sock: socket.socket, *chunks: bytes, pause: float = 0.2, timeout: float = 5.0) -> bytes:
    """Send each chunk (pausing between them, so each leaves as its own segment or TLS record),
    then read until the peer closes, an HTTP response is complete, or the timeout."""
    for i, c in enumerate(chunks):
        if i:
            time.sleep(pause)
        sock.sendall(c)
    sock.settimeout(timeout)
    answer = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    break
    except (TimeoutError, ConnectionResetError, ssl.SSLError, OSError):
        pass
    finally:
        sock.close()
    return answer


def http_request(body: bytes, *, host: str = "telemetry.hasura.io", target: str = "/v1/http",
                 extra_headers: str = "", prefix: bytes = b"") -> bytes:
    return prefix + (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra_headers}"
                     f"Connection: close\r\n\r\n").encode() + body
