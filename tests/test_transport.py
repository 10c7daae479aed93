"""The WebSocket control-frame guard on wsproto events: nothing the client chose reaches the
server, and keepalives (which match pongs by payload) keep working in both directions."""

from __future__ import annotations

from types import SimpleNamespace

import wsproto
import wsproto.events as ev

from telewarden.proxy.transport import _ControlGuard


def guard(strip: bool = True):
    reports = []
    layer = SimpleNamespace(flow="flow", client_ws=wsproto.Connection(wsproto.ConnectionType.SERVER))
    return _ControlGuard(layer, strip, lambda flow, what, payload: reports.append((what, payload))), reports  # type: ignore[arg-type]


def test_client_ping_is_answered_here_and_goes_on_empty():
    g, reports = guard()
    [out] = list(g.client_events(iter([ev.Ping(payload=b"jane@acme.com")])))
    assert out == ev.Ping(payload=b"")
    assert reports == [("ping", b"jane@acme.com")]
    reader = wsproto.Connection(wsproto.ConnectionType.CLIENT)
    reader.receive_data(g.to_client[0])
    assert list(reader.events()) == [ev.Pong(payload=b"jane@acme.com")]  # back to its sender only


def test_pong_may_carry_the_servers_ping_payload_and_nothing_else():
    g, reports = guard()
    list(g.server_events(iter([ev.Ping(payload=b"server-chosen")])))
    out = list(g.client_events(iter([ev.Pong(payload=b"server-chosen"), ev.Pong(payload=b"server-chosen"),
                                     ev.Pong(payload=b"db01.acme.internal")])))
    assert out == [ev.Pong(payload=b"server-chosen"), ev.Pong(payload=b""), ev.Pong(payload=b"")]
    assert reports == [("pong", b"server-chosen"), ("pong", b"db01.acme.internal")]  # the echo only once


def test_close_keeps_its_code_only():
    g, reports = guard()
    [out] = list(g.client_events(iter([ev.CloseConnection(code=4000, reason="--admin-secret hunter2")])))
    assert out == ev.CloseConnection(code=4000, reason=None) and reports == [("close", b"--admin-secret hunter2")]


def test_audit_mode_records_and_relays_unchanged():
    g, reports = guard(strip=False)
    frames = [ev.Ping(payload=b"a"), ev.Pong(payload=b"b"), ev.CloseConnection(code=1000, reason="c")]
    assert list(g.client_events(iter(frames))) == frames and g.to_client == []
    assert [w for w, _ in reports] == ["ping", "pong", "close"]


def test_server_pings_kept_are_bounded():
    g, _ = guard()
    list(g.server_events(iter([ev.Ping(payload=b"%d" % i) for i in range(100)])))
    assert len(g.server_pings) == 16 and g.server_pings[-1] == b"99"
