"""Recorded traffic -> Exchanges: mitmproxy flow files (streamed) and HAR files.

Flow files are read with mitmproxy's FlowReader one flow at a time, so memory stays flat however
long the recording. HAR entries go through mitmproxy's own HAR converter; the WebSocket messages
that browsers record under `_webSocketMessages` (which that converter ignores) are read here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import exceptions, http, io
from mitmproxy.io.har import request_to_flow

from .mitmexchange import http_exchange, websocket_exchange
from .engine import DEFAULT_MAX_BODY
from .model import Exchange


class InputError(Exception):
    """An input file that cannot be read; the message names the file."""


@dataclass(slots=True)
class Recorded:
    source: str  # "file#index" (index of the flow, then of the WebSocket message)
    flow: http.HTTPFlow
    exchange: Exchange
    message_index: int | None = None  # WebSocket message index within the flow


def is_har(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def read(path: Path, max_body: int = DEFAULT_MAX_BODY) -> Iterator[Recorded]:
    """Yield every client->server message in a recording; raise InputError on a corrupt file."""
    try:
        har = is_har(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    yield from (_read_har(path, max_body) if har else _read_flows(path, max_body))


def _read_flows(path: Path, max_body: int) -> Iterator[Recorded]:
    try:
        with path.open("rb") as f:
            for i, flow in enumerate(io.FlowReader(f).stream()):
                if isinstance(flow, http.HTTPFlow):
                    yield from _messages(f"{path.name}#{i}", flow, max_body)
    except exceptions.FlowReadException as e:
        raise InputError(f"{path}: not a readable mitmproxy flow file or HAR ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None


def _read_har(path: Path, max_body: int) -> Iterator[Recorded]:
    try:
        entries = json.loads(path.read_bytes().decode("utf-8-sig"))["log"]["entries"]
        if not isinstance(entries, list):
            raise TypeError("log.entries is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a valid HAR file ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    for i, entry in enumerate(entries):
        try:
            flow = request_to_flow(entry)
        except Exception as e:  # mitmproxy's converter raises whatever the entry provokes
            raise InputError(f"{path}: HAR entry {i} is malformed ({type(e).__name__}: {e})") from None
        yield Recorded(f"{path.name}#{i}", flow, http_exchange(flow, max_body))
        for j, msg in enumerate(entry.get("_webSocketMessages") or []):
            if not isinstance(msg, dict) or msg.get("type") != "send":
                continue
            text = msg.get("opcode", 1) == 1
            data = msg.get("data", "")
            content = data.encode("utf-8", "surrogateescape") if text else base64.b64decode(data)
            ex = websocket_exchange(flow, content, text, float(msg.get("time") or 0.0))
            yield Recorded(f"{path.name}#{i}.ws{j}", flow, ex, j)


def _messages(source: str, flow: http.HTTPFlow, max_body: int) -> Iterator[Recorded]:
    yield Recorded(source, flow, http_exchange(flow, max_body))
    if flow.websocket is not None:
        for j, msg in enumerate(flow.websocket.messages):
            if msg.from_client:
                ex = websocket_exchange(flow, msg.content, msg.is_text, msg.timestamp)
                yield Recorded(f"{source}.ws{j}", flow, ex, j)
