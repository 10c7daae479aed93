"""No side door: a connection to a claimed destination is spoken to in HTTP, or not at all.

mitmproxy picks the layer inside a tunnel by guessing from the first bytes. With no ALPN and
first bytes that are not an HTTP request line (a leading CRLF, which RFC 9112 §2.2 tells servers
to ignore; a first TLS record holding one byte; a cleartext `CONNECT host:80` followed by anything
else) it relays raw TCP, which no HTTP hook sees. UDP, non-HTTP QUIC and DNS to a claimed address
are raw relays too. And mitmproxy relays WebSocket ping/pong payloads and the close frame's
reason without any addon hook.

This module holds the two mitmproxy-internal pieces that close those doors:
- `TransportGuard`, an addon registered *after* mitmproxy's NextLayer (scripts load before it,
  so it cannot be a hook of the main addon): it sees the layer NextLayer chose and, for a claimed
  destination in scrub/block mode, replaces a raw relay with the HTTP layer (leading empty lines
  removed, as RFC 9112 allows) or, for UDP, a layer that closes the connection.
- `GuardedWebsocketLayer`, mitmproxy's WebSocket layer with the client's control frames emptied
  (ping/pong payloads, close reason) on flows the addon marks, each stripping reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import wsproto.events
from mitmproxy.proxy import commands, context, events, layer, layers
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers import websocket as websocket_layers
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.proxy.mode_specs import ReverseMode

from ..engine.names import normalize_host

RAW_LAYERS = (layers.TCPLayer, layers.UDPLayer, layers.RawQuicLayer, layers.DNSLayer)
GUARD_KEY = "telewarden_ws_guard"  # flow.metadata: "strip" or "record" this flow's client control frames


def connection_names(ctx: context.Context) -> tuple[str, ...]:
    """Every name or address a connection could be going to, before any HTTP request is seen:
    CONNECT target or transparent destination, TLS SNI, the reverse-mode target."""
    mode = ctx.client.proxy_mode
    raw = (ctx.server.address[0] if ctx.server.address else None, ctx.client.sni, ctx.server.sni,
           mode.address[0] if isinstance(mode, ReverseMode) else None,
           ctx.server.peername[0] if ctx.server.peername else None)
    out: list[str] = []
    for n in raw:
        h = normalize_host(n)
        if h and h not in out:
            out.append(h)
    return tuple(out)


class _Refused(layer.Layer):
    """Closes the client connection at once: for raw UDP/QUIC/DNS to a claimed destination."""

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Start):
            yield commands.CloseConnection(self.context.client)


def _raw_in(chosen: layer.Layer) -> tuple[Any, layer.Layer] | None:
    """(parent or None, raw layer) when the chosen layer, or the end of its stack, relays raw."""
    parent, current = None, chosen
    for _ in range(8):  # NextLayer's stacks are a few layers deep
        if isinstance(current, RAW_LAYERS):
            return parent, current
        child = getattr(current, "child_layer", None)
        if child is None or isinstance(child, layer.NextLayer):
            return None
        parent, current = current, child
    return None


class TransportGuard:
    """Registered after mitmproxy's NextLayer and TlsConfig; `decide(names, what)` answers "audit"
    (relay and record), "refuse" (parse as HTTP / close, recorded) or None (not claimed)."""

    name = "telewarden_transport"

    def __init__(self, decide: Callable[[tuple[str, ...], str, context.Context], str | None],
                 claimed: Callable[[tuple[str, ...], context.Context], bool]) -> None:
        self.decide = decide
        self.claimed = claimed

    def tls_clienthello(self, data: Any) -> None:
        """Lazy for claimed destinations: mitmproxy's TlsConfig (which runs before this) has the
        server handshake done first under the eager strategy, connecting to the vendor before any
        message is judged. For a claimed destination it waits for a message that may leave."""
        if data.context.server.connected:  # already connected (an unclaimed CONNECT): nothing to save
            return
        if data.establish_server_tls_first and self.claimed(connection_names(data.context), data.context):
            data.establish_server_tls_first = False

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        chosen = nextlayer.layer
        if chosen is None:
            return
        found = _raw_in(chosen)
        if found is None:
            return
        parent, raw = found
        ctx = nextlayer.context
        tcp = isinstance(raw, layers.TCPLayer)
        what = "tcp" if tcp else type(raw).__name__.removesuffix("Layer").lower()
        if self.decide(connection_names(ctx), what, ctx) != "refuse":
            return
        if tcp:
            replacement: layer.Layer = http_layers.HttpLayer(raw.context, HTTPMode.transparent)
            _strip_leading_empty_lines(nextlayer, ctx)
        else:
            replacement = _Refused(raw.context)
        if parent is None:
            nextlayer.layer = replacement
        else:
            parent.child_layer = replacement


def _strip_leading_empty_lines(nextlayer: layer.NextLayer, ctx: context.Context) -> None:
    """RFC 9112 §2.2: a server SHOULD ignore empty lines before the request line. mitmproxy's
    HTTP/1 parser (h11's buffer) consumes one and then waits for more data, so a request that
    arrived in the same segment would hang: drop them from what NextLayer buffered."""
    for i, ev in enumerate(nextlayer.events):
        if isinstance(ev, events.DataReceived) and ev.connection == ctx.client:
            data = ev.data.lstrip(b"\r\n")
            nextlayer.events[i] = events.DataReceived(ev.connection, data)
            if data:
                return


# -- WebSocket control frames ----------------------------------------------------------------

_SERVER_PINGS_KEPT = 16  # server ping payloads a client may still answer (bounded)


class _ControlGuard:
    """Filters one claimed WebSocket's wsproto events so that no byte the client chose reaches the
    server in a control frame, without breaking keepalives:

    - a client ping is answered here with its own payload (it goes back to its sender, so
      libraries that match pongs by payload keep working) and an empty ping goes on upstream;
    - a client pong carries the payload of a server ping (the server's own bytes) or nothing;
    - a close keeps its code and loses its reason.
    Each payload the client chose is reported (recorded as a finding)."""

    def __init__(self, layer: GuardedWebsocketLayer, strip: bool,
                 report: Callable[[Any, str, bytes], None]) -> None:
        self.layer, self.strip, self.report = layer, strip, report
        self.server_pings: list[bytes] = []
        self.to_client: list[bytes] = []  # our pongs, sent after the base layer's commands

    def client_events(self, source: Iterator[wsproto.events.Event]) -> Iterator[wsproto.events.Event]:
        flow = self.layer.flow
        for ev in source:
            if isinstance(ev, wsproto.events.Ping) and ev.payload:
                payload = bytes(ev.payload)
                _safely(self.report, flow, "ping", payload)
                if self.strip:
                    self.to_client.append(self.layer.client_ws.send(wsproto.events.Pong(payload=payload)))
                    ev = wsproto.events.Ping(payload=b"")
            elif isinstance(ev, wsproto.events.Pong) and ev.payload:
                payload = bytes(ev.payload)
                if payload in self.server_pings:
                    self.server_pings.remove(payload)
                else:
                    _safely(self.report, flow, "pong", payload)
                    if self.strip:
                        ev = wsproto.events.Pong(payload=b"")
            elif isinstance(ev, wsproto.events.CloseConnection) and ev.reason:
                _safely(self.report, flow, "close", ev.reason.encode("utf-8", "surrogateescape"))
                if self.strip:
                    ev = wsproto.events.CloseConnection(code=ev.code, reason=None)
            yield ev

    def server_events(self, source: Iterator[wsproto.events.Event]) -> Iterator[wsproto.events.Event]:
        for ev in source:
            if isinstance(ev, wsproto.events.Ping) and ev.payload:
                self.server_pings = [*self.server_pings[-(_SERVER_PINGS_KEPT - 1):], bytes(ev.payload)]
            yield ev


def _safely(report: Callable[[Any, str, bytes], None], flow: Any, what: str, payload: bytes) -> None:
    """A failing report must not crash mitmproxy's WebSocket layer; the stripping happens anyway."""
    try:
        report(flow, what, payload)
    except Exception:  # noqa: BLE001
        logging.getLogger("telewarden").error("telewarden: recording a WebSocket control frame failed",
                                              exc_info=True)


class GuardedWebsocketLayer(websocket_layers.WebsocketLayer):
    """mitmproxy's WebSocket layer, with the client's control frames guarded on marked flows.

    mitmproxy relays ping, pong and close frames without an addon hook. The addon marks a claimed
    flow in `websocket_start` (flow.metadata[GUARD_KEY]); once the base layer has built its wsproto
    connections, both sides' event streams go through a `_ControlGuard`."""

    report: Callable[[Any, str, bytes], None] = staticmethod(lambda flow, what, payload: None)
    _guard: _ControlGuard | None = None

    def start(self, event: events.Event) -> layer.CommandGenerator[None]:
        yield from super().start(event)
        mark = self.flow.metadata.get(GUARD_KEY)
        if mark and getattr(self, "client_ws", None) is not None:
            guard = self._guard = _ControlGuard(self, mark != "record", type(self).report)
            client_plain, server_plain = self.client_ws.events, self.server_ws.events
            self.client_ws.events = lambda: guard.client_events(client_plain())  # type: ignore[method-assign]
            self.server_ws.events = lambda: guard.server_events(server_plain())  # type: ignore[method-assign]

    _handle_event = start

    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        yield from super().relay_messages(event)
        guard = self._guard
        while guard is not None and guard.to_client:
            yield commands.SendData(self.context.client, guard.to_client.pop(0))


def install_websocket_guard(report: Callable[[Any, str, bytes], None]) -> None:
    """Make mitmproxy build GuardedWebsocketLayer for every upgraded connection. Checked against
    the mitmproxy internals it relies on, so an incompatible mitmproxy fails loudly at startup."""
    base = GuardedWebsocketLayer.__mro__[1]
    if not (hasattr(base, "start") and hasattr(base, "relay_messages")
            and getattr(http_layers, "websocket", None) is websocket_layers):
        raise RuntimeError("this mitmproxy's WebSocket layer is not the one telewarden knows; "
                           "control frames could not be guarded")
    GuardedWebsocketLayer.report = staticmethod(report)  # type: ignore[assignment]
    websocket_layers.WebsocketLayer = GuardedWebsocketLayer  # type: ignore[misc]
