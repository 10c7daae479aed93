"""Fixtures for the ICAP service: an in-process service for protocol tests, and real `telewarden
icap` processes behind a real Squid (skipped, with the reason, where Squid is missing)."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from telewarden.audit.trail import AuditTrail
from telewarden.engine.judge import Engine, Limits
from telewarden.icap.exchange import Judge
from telewarden.icap.server import ICAPServer, ServerLimits
from telewarden.engine.model import Mode


def pytest_configure(config):
    config.addinivalue_line("markers", "squid: starts a real Squid (squid-openssl) in front of the ICAP service")


class LocalService:
    """An ICAPServer on 127.0.0.1 in a thread of the test process, and a raw ICAP client."""

    def __init__(self, packs, folder: Path, mode: str = "scrub", max_body: int = 1 << 20, limits=None) -> None:
        self.trail = AuditTrail(folder / "audit")
        self.engine = Engine(packs, digest_key=b"k", limits=Limits(max_body=max_body))
        self.judge = Judge(self.engine, self.trail, Mode(mode))
        self.server = ICAPServer(self.judge, limits=limits or ServerLimits(request_timeout=5, idle_timeout=5))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> LocalService:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.port
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.trail.close()

    def connect(self, timeout: float = 5) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def exchange(self, data: bytes, timeout: float = 5) -> bytes:
        """Send raw bytes, half-close, read everything the service answers."""
        with self.connect(timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return read_all(s)

    def decisions(self) -> list[dict]:
        import json

        path = self.trail.folder / "audit.jsonl"
        return [r for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip()) if "decision" in r] \
            if path.exists() else []


def read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            data = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return out
        if not data:
            return out
        out += data


@pytest.fixture
def service(packs, tmp_path):
    made = []

    def start(mode: str = "scrub", **kw) -> LocalService:
        svc = LocalService(packs, tmp_path / f"s{len(made)}", mode, **kw).start()
        made.append(svc)
        return svc

    yield start
    for s in made:
        s.stop()


# -- real Squid ---------------------------------------------------------------------------------

MODES = ("audit", "scrub", "block")


@pytest.fixture(scope="session")
def squid_stack(tmp_path_factory, upstream):
    """One Squid with a port per ICAP service: audit, scrub, block, `small` (scrub, --max-body 200)
    and `direct` (no ICAP)."""
    from icap.squid_harness import IcapService, Squid, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(f"Squid integration tests skipped: {reason}")
    services = {m: IcapService(tmp_path_factory.mktemp(f"icap-{m}"), m) for m in MODES}
    services["small"] = IcapService(tmp_path_factory.mktemp("icap-small"), "scrub", ["--max-body", "200"])
    started: list = []
    squid = None
    try:
        for s in services.values():
            started.append(s.start())
        squid = Squid(upstream, {**services, "direct": None}).start()
        yield squid
    finally:
        if squid is not None:
            squid.stop()
        for s in started:
            s.stop()
