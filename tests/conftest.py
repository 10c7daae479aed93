"""Shared fixtures: the bundled packs compiled once, genuine payloads and documented violations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telewarden import strictjson
from telewarden.engine import Engine
from telewarden.model import Exchange, Mode, Transport
from telewarden.packs import load_packs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PAYLOADS = {p.stem: json.loads(p.read_text()) for p in sorted((EXAMPLES / "payloads").glob("*.json"))}
VIOLATIONS = json.loads((EXAMPLES / "violations.json").read_text())
KEY = b"test-key"


@pytest.fixture(scope="session")
def packs():
    return load_packs([])


@pytest.fixture(scope="session")
def engine(packs):
    return Engine(packs, digest_key=KEY)


def is_console(name: str) -> bool:
    return name.startswith("console")


def exchange(body, transport: str = "http", *, host: str = "telemetry.hasura.io", path: str | None = None,
             method: str | None = None, headers=(), query: str = "") -> Exchange:
    """An Exchange as the adapters would build it; `body` may be a JSON value or raw bytes."""
    raw = body if isinstance(body, bytes) else strictjson.dumps(body)
    t = Transport(transport)
    return Exchange(t, method or ("WS" if t is Transport.WEBSOCKET else "POST"), (host,), 443,
                    path or ("/v1/ws" if t is Transport.WEBSOCKET else "/v1/http"), query,
                    tuple(headers), raw)


def payload_exchange(name: str) -> Exchange:
    return exchange(PAYLOADS[name], "websocket" if is_console(name) else "http")


def inspect(engine: Engine, ex: Exchange, mode: str = "scrub"):
    return engine.inspect(ex, Mode(mode))


# -- integration: real upstream, real proxies --------------------------------------------------

@pytest.fixture(scope="session")
def upstream(tmp_path_factory):
    from support.harness import Upstream

    up = Upstream(tmp_path_factory.mktemp("upstream")).start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def confdir(tmp_path_factory):
    from support.harness import ensure_ca

    d = tmp_path_factory.mktemp("mitmconf")
    ensure_ca(d)
    return d


@pytest.fixture(scope="session")
def proxies(tmp_path_factory, upstream, confdir):
    """One running proxy per mode, shared by the integration tests (started on first use)."""
    from support.harness import Proxy

    started: dict[str, Proxy] = {}

    def get(mode: str) -> Proxy:
        if mode not in started:
            started[mode] = Proxy(tmp_path_factory.mktemp(f"proxy-{mode}"), upstream, confdir, mode).start()
        return started[mode]

    yield get
    for p in started.values():
        p.stop()


@pytest.fixture
def start_proxy(tmp_path, upstream, confdir):
    """A dedicated proxy for tests that need their own options; stopped after the test."""
    from support.harness import Proxy

    made = []

    def start(mode: str = "scrub", extra: list[str] | None = None, wait: bool = True, **kw):
        p = Proxy(tmp_path / f"p{len(made)}", upstream, confdir, mode, extra, **kw)
        p.folder.mkdir()
        made.append(p)
        return p.start(wait=wait)

    yield start
    for p in made:
        p.stop()
