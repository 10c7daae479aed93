"""Integration harness: a real upstream posing as telemetry.hasura.io, real proxies, real clients.

- Upstream: aiohttp on 127.0.0.1 (TLS with a self-signed certificate for telemetry.hasura.io, and
  plain HTTP), in a thread of the test process; it records every request and WebSocket frame.
- Proxy: a real `telewarden run` (or `mitmdump -s addon.py`) process, plus redirect_addon.py that
  sends the vendor's host to that upstream, trusting its certificate.
- Clients: curl, httpx (HTTP/1.1 and HTTP/2) and websockets (always through `Proxy.websocket`),
  trusting the mitmproxy CA.
Only loopback addresses are ever contacted; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

HOST = "telemetry.hasura.io"
# What the real senders send: the CLI is a Go program; the console runs in a browser.
GO_UA = "Go-http-client/1.1"
BROWSER_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
              "Safari/537.36")
SUPPORT = Path(__file__).resolve().parent
WS_TIMEOUT = 10.0  # seconds a WebSocket client waits for any one thing (open, close)
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_upstream_cert(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST), x509.DNSName("other.test"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_pem, key_pem = folder / "upstream-cert.pem", folder / "upstream-key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert_pem, key_pem


@dataclass
class Received:
    kind: str  # "http" or "ws"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    is_text: bool = True

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Upstream:
    folder: Path
    received: list[Received] = field(default_factory=list)
    tls_port: int = 0
    plain_port: int = 0
    delay: float = 0.0  # seconds the HTTP handler waits before answering (slow upstream)

    def __post_init__(self) -> None:
        self.cert, self.key = make_upstream_cert(self.folder)
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _note(self, r: Received) -> None:
        with self._cond:
            self.received.append(r)
            self._cond.notify_all()

    async def _http(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._note(Received("http", request.method, request.path_qs, dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if b"hasura migrate status" in body:  # a slow upstream, for this command only
            await asyncio.sleep(2)
        if b"hasura metadata reload" in body:  # an upstream that resets the connection
            request.transport.abort()
            raise ConnectionResetError
        return web.Response(status=200, text="ok")

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        self._note(Received("http", request.method, request.path_qs, dict(request.headers), b""))
        ws = web.WebSocketResponse(autoping=False)  # pings and pongs are recorded, payload and all
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                data = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
                self._note(Received("ws", "WS", request.path, {}, data, msg.type == WSMsgType.TEXT))
            elif msg.type == WSMsgType.PING:
                self._note(Received("ws-control", "PING", request.path, {}, bytes(msg.data)))
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                self._note(Received("ws-control", "PONG", request.path, {}, bytes(msg.data)))
            elif msg.type == WSMsgType.CLOSE:  # the close frame's code and reason, as received
                self._note(Received("ws-control", "CLOSE", request.path, {"code": str(msg.data)},
                                    (msg.extra or "").encode()))
                await ws.close()
                break
            else:
                break
        return ws

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("GET", "/v1/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._http)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # record raw bytes
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        self.tls_port, self.plain_port = free_port(), free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.tls_port, ssl_context=ctx).start()
        await web.TCPSite(self._runner, "127.0.0.1", self.plain_port).start()

    def start(self) -> Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def clear(self) -> None:
        with self._cond:
            self.received.clear()

    def frames(self) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.kind == "ws"]

    def controls(self) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.kind == "ws-control"]

    def requests(self) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.kind == "http"]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.received), timeout)


class Proxy:
    """A real proxy process: `telewarden run` by default, or bare `mitmdump -s addon.py`."""

    def __init__(self, folder: Path, upstream: Upstream, confdir: Path, mode: str = "scrub",
                 extra: list[str] | None = None, via: str = "run", env: dict[str, str] | None = None) -> None:
        self.folder, self.upstream, self.confdir, self.mode = folder, upstream, confdir, mode
        self.port = free_port()
        self.audit = folder / "audit"
        self.extra = extra or []
        self.via = via
        self.env = env or {}
        self.log = folder / "proxy.log"
        self.proc: subprocess.Popen | None = None

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        common = ["-s", str(SUPPORT / "redirect_addon.py"), "--set", f"confdir={self.confdir}",
                  "--set", f"ssl_verify_upstream_trusted_ca={self.upstream.cert}"]
        if self.via == "run":
            return [str(BIN / "telewarden"), "run", "--mode", self.mode, "--audit", str(self.audit),
                    "--listen-port", str(self.port), *common, *self.extra]
        from telewarden.proxy import addon

        return [str(BIN / "mitmdump"), "-s", addon.__file__, "--listen-host", "127.0.0.1",
                "--listen-port", str(self.port), "--set", f"telewarden_mode={self.mode}",
                "--set", f"telewarden_audit={self.audit}", *common, *self.extra]

    def start(self, wait: bool = True) -> Proxy:
        env = {**os.environ, "TELEWARDEN_TEST_UPSTREAM_PORT": str(self.upstream.tls_port),
               "TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT": str(self.upstream.plain_port),
               "TELEWARDEN_AUDIT_KEY": "integration-test-key", **self.env}
        env.pop("HTTPS_PROXY", None), env.pop("HTTP_PROXY", None)
        self._logf = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self._logf, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.folder, start_new_session=True)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until the port accepts and mitmproxy's startup is over (the addon says `running`): an
        error logged before that, e.g. a test's hostile request crashing its connection, would
        make mitmdump exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if "telewarden: running" in self.log.read_text(errors="replace"):
                time.sleep(0.1)  # mitmproxy's last startup check runs right after the hooks
                return
            time.sleep(0.05)
        raise TimeoutError(f"proxy did not start within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._logf.close()
        return self.proc.returncode if self.proc else None

    def records(self) -> list[dict]:
        path = self.audit / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def decisions(self) -> list[dict]:
        return [r for r in self.records() if "decision" in r]

    # -- clients ----------------------------------------------------------------------------

    def curl(self, body: bytes, *, url: str = f"https://{HOST}/v1/http", headers: list[str] | None = None,
             method: str = "POST", extra: list[str] | None = None) -> tuple[int, bytes]:
        """curl through the proxy; returns (status, response body)."""
        cmd = ["curl", "-sS", "--noproxy", "", "-x", self.url, "--cacert", str(self.ca), "-X", method,
               "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"]
        given = [a.split(":", 1)[0].lower() for a in [*(headers or []), *(extra or [])] if ":" in a]
        for default in ("Content-Type: application/json", "User-Agent: Go-http-client/1.1"):
            if default.split(":", 1)[0].lower() not in given:  # a case's own header wins
                cmd += ["-H", default]
        for h in headers or []:
            cmd += ["-H", h]
        cmd += (extra or [])
        if body:
            cmd += ["--data-binary", "@-"]
        cmd.append(url)
        out = subprocess.run(cmd, input=body, capture_output=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"curl failed ({out.returncode}): {out.stderr.decode()}")
        text, _, code = out.stdout.rpartition(b"\n")
        return int(code), text

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def log_since(self, offset: int, limit: int = 4000) -> str:
        """The proxy log written after byte `offset` (its last `limit` characters)."""
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")[-limit:]
        except OSError as e:
            return f"(proxy log unreadable: {e})"

    @contextlib.contextmanager
    def websocket(self, path: str = "/v1/ws", *, timeout: float = WS_TIMEOUT, **kwargs: Any) -> Iterator[ClientConnection]:
        """websockets' sync client to wss://telemetry.hasura.io through this proxy (CONNECT, then TLS
        with the proxy's certificate), with every wait bounded: a stall fails in seconds with the
        proxy's log since the connection was opened, instead of hanging the suite.

        - open_timeout and close_timeout are `timeout`; use ws.recv(timeout=...) for reads.
        - TLS 1.2 to the proxy: websockets' sync client reads in a thread (blocking recv() on the
          SSLSocket) while the caller writes, and CPython's ssl module lets the two OpenSSL calls run
          at once on one SSL object. A TLS 1.3 server sends its session tickets after the handshake,
          so the reader is inside SSL_read when the upgrade request is written, and now and then that
          request never reaches the wire (a few handshakes in a thousand on a loaded 2-core box, with
          no proxy at all: 'timed out while waiting for handshake response'). TLS 1.2 sends
          nothing after its handshake. The proxy's own TLS (to the upstream, and curl/httpx to the
          proxy) keeps TLS 1.3.
        - `_ShutdownOnClose`: after a failed handshake websockets closes the socket and joins its
          reader, and close() does not wake a thread blocked in recv(): the join waited until the
          peer hung up (minutes). shutdown() wakes it."""
        kwargs.setdefault("compression", None)
        kwargs.setdefault("user_agent_header", BROWSER_UA)
        ctx = self.ssl_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        start = self.log.stat().st_size if self.log.exists() else 0
        try:
            with connect(f"wss://{HOST}{path}", proxy=self.url, ssl=ctx, open_timeout=timeout,
                         close_timeout=timeout, create_connection=_ShutdownOnClose, **kwargs) as ws:
                yield ws
        except (TimeoutError, OSError, WebSocketException) as e:
            raise AssertionError(f"WebSocket through the proxy on port {self.port} failed: {e!r}\n"
                                 f"proxy log since the connection was opened:\n{self.log_since(start)}") from e

    def background_load(self, bodies: list[bytes], count: int = 3000) -> tuple[threading.Thread, threading.Event]:
        """POST the bodies in turn from a thread (keep-alive) until `count`, an error, or stop.set()."""
        import httpx

        stop = threading.Event()

        def load() -> None:
            with httpx.Client(proxy=self.url, verify=self.ssl_context(), timeout=5,
                              headers={"User-Agent": GO_UA, "Content-Type": "application/json"}) as client:
                for i in range(count):
                    if stop.is_set():
                        return
                    try:
                        client.post(f"https://{HOST}/v1/http", content=bodies[i % len(bodies)])
                    except httpx.HTTPError:
                        return

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        return thread, stop


class _ShutdownOnClose(ClientConnection):
    """websockets' sync connection whose close_socket() shuts the socket down first: its reader
    thread may be blocked in a TLS read (mid-record, or on a TLS 1.3 session ticket) rather than in
    select(), and only shutdown() wakes it, so websockets' join on it returns at once."""

    def close_socket(self) -> None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.socket, socket.SHUT_RDWR)  # SSLSocket's would drop its SSL object too
        super().close_socket()


def ensure_ca(confdir: Path) -> None:
    """Create the mitmproxy CA once, before proxies start in parallel."""
    from mitmproxy.certs import CertStore

    confdir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(str(confdir), "mitmproxy", 2048)


def have_curl() -> bool:
    return shutil.which("curl") is not None
