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
