"""Recorded traffic -> Exchanges: mitmproxy flow files (streamed) and HAR files (also `.zhar`).

Flow files are read one flow at a time with mitmproxy's own pieces (tnetstring, the format
migrations, Flow.from_state), so memory stays flat however long the recording. `check` asks for
less (`claim=`, `whole=False`), and Flow.from_state is most of the time of reading a flow: of an
HTTP flow it then builds only the request (as Request.from_state would) and reads the connections'
names and the WebSocket messages; response, error and the rest of the connections are never built
(see _judged_flow), and a flow no pack claims becomes exchanges of its names only (no target,
headers or body is read: nothing judges them). HAR entries go
through mitmproxy's own HAR converter (`mitmproxy.io.har.request_to_flow`); the WebSocket messages
that browsers record under `_webSocketMessages` (which that converter ignores) become the flow's
`websocket` data here, so they are judged and exported like a recorded WebSocket flow's.

Recordings made by other tools are odd in many small ways. Nothing here rejects a whole file for
one entry: an entry that cannot be telemetry (a `data:` URL, a relative URL) is skipped and
counted, a request is judged alone when its response cannot be converted, and what cannot be read
at all is one line in `ReadLog.problems` naming the file and entry, after which the rest is read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from mitmproxy import flow as mflow
from mitmproxy import connection, http, version, websocket
from mitmproxy.io import compat, tnetstring
from mitmproxy.io.har import request_to_flow
from mitmproxy.proxy import mode_specs

from ..engine.judge import DEFAULT_MAX_BODY
from ..engine.model import Exchange, Transport
from ..proxy.exchange import candidate_hosts, http_exchange, websocket_exchange


class InputError(Exception):
    """An input that cannot be read; the message names the file (and the entry)."""


@dataclass(slots=True)
class ReadLog:
    """What reading found besides messages: unreadable parts, skipped entries, warnings."""

    problems: list[str] = field(default_factory=list)  # one line each: file, entry, reason
    skipped: Counter = field(default_factory=Counter)  # reason -> entries that cannot be telemetry
    notes: Counter = field(default_factory=Counter)  # what was read with care: judged, but not whole
    warnings: list[str] = field(default_factory=list)
    strict: bool = False  # raise InputError at the first problem (the API without a log)

    def problem(self, line: str) -> None:
        if self.strict:
            raise InputError(line)
        self.problems.append(line)


@dataclass(slots=True)
class Recorded:
    source: str  # "file#index" (index of the flow or HAR entry, then of the WebSocket message)
    # The flow; read with whole=False, a _JudgedFlow: what judging reads of it, no more.
    flow: http.HTTPFlow | _JudgedFlow
    exchange: Exchange
    message_index: int | None = None  # index into flow.websocket.messages
    # The verdict a live telewarden proxy stored on the flow (addon `_annotate`), given with the
    # flow's first message only: a scrub- or block-mode recording holds repaired content.
    live: dict[str, Any] | None = None
    # False: no pack claims the flow (read with `claim`), and the exchange holds where the
    # message went, never its content (headers, target, body): nothing judges it.
    claimed: bool = True


_ZLIB_HEADS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_JSONP = re.compile(rb"[A-Za-z_$][\w$.]{0,100}\s*\(")
_MAX_ZHAR = 1 << 30  # a .zhar inflates to at most 1 GiB (it is parsed whole, as JSON)


def sniff(head: bytes, path: Path) -> str:
    """`flows`, `har`, `zhar`, `json-array` or `jsonp`, from the first bytes of a file."""
    if path.suffix.lower() == ".zhar" or head[:2] in _ZLIB_HEADS:
        return "zhar"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "har"
    if text.startswith(b"["):
        return "json-array"
    if _JSONP.match(text):
        return "jsonp"
    return "flows"


def is_har(path: Path) -> bool:
    with path.open("rb") as f:
        return sniff(f.read(128), path) != "flows"


def read(path: Path, max_body: int = DEFAULT_MAX_BODY, log: ReadLog | None = None, *,
         claim: Callable[[tuple[str, ...]], Any] | None = None, whole: bool = True) -> Iterator[Recorded]:
    """Yield every client->server message in a recording. Without a `log`, the first unreadable
    part raises InputError; with one, it is noted there and reading goes on where it can.

    For flow files (HAR entries are always read whole): `claim(hosts)` (Engine.claim) decides
    from an HTTP flow's names alone whether anything judges it; a flow it returns None for is
    yielded as `claimed=False` messages without their content, their `flow` a _JudgedFlow.
    `whole=False`: no HTTP flow is built whole; `Recorded.flow` is then a _JudgedFlow (what
    judging reads of the flow; it cannot be exported)."""
    log = log if log is not None else ReadLog(strict=True)
    try:
        with path.open("rb") as f:
            head = f.read(128)
    except OSError as e:
        log.problem(f"{path}: cannot read: {e.strerror}")
        return
    kind = sniff(head, path)
    if kind == "flows":
        yield from _read_flows(path, max_body, log, claim, whole)
    else:
        yield from _read_har(path, kind, max_body, log)


# -- mitmproxy flow files ---------------------------------------------------------------------

def _read_flows(path: Path, max_body: int, log: ReadLog, claim: Callable[[tuple[str, ...]], Any] | None = None,
                whole: bool = True) -> Iterator[Recorded]:
    # FlowReader.stream() does exactly this, but ends the whole file at the first flow its format
    # migrations cannot handle (and lets e.g. a KeyError from them escape). A flow that was framed
    # correctly but cannot be migrated is skipped here; only a framing error ends the file.
    try:
        f = path.open("rb")
    except OSError as e:
        log.problem(f"{path}: cannot read: {e.strerror}")
        return
    with f:
        i = 0
        while True:
            try:
                state = tnetstring.load(f)
            except ValueError as e:
                if str(e) == "not a tnetstring: empty file":
                    return
                what = "not a readable mitmproxy flow file or HAR" if i == 0 else "the file is cut or corrupt here"
                log.problem(f"{path}: flow {i}: {what} ({_short(e)}); nothing after it can be read")
                return
            except OSError as e:
                log.problem(f"{path}: cannot read: {e.strerror}")
                return
            except Exception as e:  # noqa: BLE001 - tnetstring raises what the bytes provoke
                log.problem(f"{path}: flow {i}: not readable ({_short(e)}); nothing after it can be read")
                return
            source, label = f"{path.name}#{i}", f"flow {i}"
            i += 1
            try:
                if not isinstance(state, dict):
                    raise ValueError("not a flow")
                state = compat.migrate_flow(state)
            except Exception as e:  # noqa: BLE001 - migrations raise whatever an edited flow provokes
                log.problem(f"{path}: {label}: cannot be read ({_short(e)}); skipped")
                continue
            judged = _judged_flow(state) if claim is not None or not whole else None
            if judged is not None:
                try:
                    hosts = candidate_hosts(judged)  # type: ignore[arg-type]
                except Exception as e:  # noqa: BLE001 - as http_exchange would have said it
                    log.problem(f"{path}: {label}: the request cannot be read ({_short(e)}); skipped")
                    continue
                if claim is not None and _unclaimed(claim, hosts):
                    yield from _passed(source, judged, hosts, log)
                    continue
                if not whole:
                    yield from _messages(path, source, label, judged, max_body, log, hosts=hosts)  # type: ignore[arg-type]
                    continue
            # The whole flow: to export it, or a state _judged_flow does not take (mitmproxy
            # then accepts it, or says what is wrong with it, as it always did).
            try:
                fl = mflow.Flow.from_state(state)
            except Exception as e:  # noqa: BLE001 - from_state raises whatever an edited flow provokes
                log.problem(f"{path}: {label}: cannot be read ({_short(e)}); skipped")
                continue
            if isinstance(fl, http.HTTPFlow):
                yield from _messages(path, source, label, fl, max_body, log)


class _Conn:
    """A connection's names, as mitmexchange reads them from a Client or Server."""

    __slots__ = ("sni", "address", "proxy_mode")

    def __init__(self, sni: str | None, address: tuple[str, int] | None, proxy_mode: Any) -> None:
        self.sni, self.address, self.proxy_mode = sni, address, proxy_mode


class _JudgedFlow:
    """What judging reads of a recorded HTTP flow (mitmexchange's http_exchange and
    websocket_exchange, the live verdict): the request as mitmproxy's Request.from_state builds
    it, the connections' names, the WebSocket messages (WebSocketData.from_state) and the
    metadata. The response and the rest of the connections are never built."""

    def __init__(self, request: http.Request, client_conn: _Conn, server_conn: _Conn,
                 websocket: websocket.WebSocketData | None, metadata: Any) -> None:
        self.request, self.client_conn, self.server_conn = request, client_conn, server_conn
        self.websocket, self.metadata = websocket, metadata


def _name(v: Any) -> str | None:
    if v is None or type(v) is str:
        return v
    raise TypeError


def _shapes() -> tuple[frozenset[str], ...]:
    """The keys from_state takes, as mitmproxy's own get_state writes them: of an HTTP flow, its
    client and server connections, a response, an error."""
    fl = http.HTTPFlow(connection.Client(peername=("", 0), sockname=("", 0)), connection.Server(address=None))
    fl.request = http.Request.make("GET", "http://x/")
    return (frozenset(fl.get_state()), frozenset(fl.client_conn.get_state()), frozenset(fl.server_conn.get_state()),
            frozenset(http.Response.make().get_state()), frozenset(mflow.Error("x").get_state()))


_FLOW, _CLIENT, _SERVER, _RESPONSE, _ERROR = _shapes()
_FLOW_NO_BACKUP = _FLOW - {"backup"}  # from_state takes a flow without one


def _judged_flow(state: dict) -> _JudgedFlow | None:
    """The flow as judging reads it, from a migrated state; None for anything but an HTTP flow
    with every part from_state reads (a part missing, renamed or added: the edit of a flow file
    that from_state reports) and names of exactly the types from_state makes of them. The whole
    flow is then built, and from_state says what is wrong, as it always did. The values in the
    parts that are not built (response, error, the connections but for their names) are not
    checked. Leaves the state as it was, for from_state."""
    try:
        if state.get("type") != "http" or state.get("version") != version.FLOW_FORMAT_VERSION:
            return None
        keys = state.keys()
        if keys != _FLOW and keys != _FLOW_NO_BACKUP:
            return None
        client, server, response, error = state["client_conn"], state["server_conn"], state["response"], state["error"]
        if type(client) is not dict or client.keys() != _CLIENT or type(server) is not dict or server.keys() != _SERVER:
            return None
        if (response and (type(response) is not dict or response.keys() != _RESPONSE)) or \
                (error and (type(error) is not dict or error.keys() != _ERROR)):
            return None
        address = server["address"]
        if address is not None:
            if type(address) not in (list, tuple) or len(address) != 2 or type(address[0]) is not str \
                    or type(address[1]) is not int:
                return None
            address = (address[0], address[1])
        mode = client["proxy_mode"]
        if type(mode) is not str:
            return None
        request = _request(state["request"])
        ws = state["websocket"]
        return _JudgedFlow(
            request, _Conn(_name(client["sni"]), None, mode_specs.ProxyMode.from_state(mode)),
            _Conn(_name(server["sni"]), address, None),
            websocket.WebSocketData.from_state(dict(ws)) if ws else None,  # (it changes the dict it reads)
            state["metadata"])
    except Exception:  # noqa: BLE001 - from_state then says what is wrong
        return None


# What Request.from_state makes a RequestData of, and the exact type get_state writes of each
# value (content and timestamp_end may be None; headers and trailers are lists of pairs).
_REQUEST_ORDER = tuple(f.name for f in dataclasses.fields(http.RequestData))
_REQUEST_FIELDS = frozenset(_REQUEST_ORDER)
_REQUEST_TYPES = (("host", str), ("port", int), ("method", bytes), ("scheme", bytes), ("authority", bytes),
                  ("path", bytes), ("http_version", bytes), ("timestamp_start", float))


def _request(state: Any) -> http.Request:
    """Request.from_state(state), without the cost of its type assertions when they cannot fail.

    Most of from_state's time (~30 of ~35 us a request) is RequestData.__post_init__ asserting
    each field's type (mitmproxy's debug-mode check, gone under `python -O`). A state in which
    every value already has exactly the type get_state writes passes those assertions, and
    Request.__init__ converts none of it; its RequestData is then made with the same values,
    without asserting them again (headers and trailers still through Headers.from_state, which
    checks they are bytes). Anything else goes through Request.from_state itself, which converts
    or rejects it as it always did. tests/test_flows_light.py compares the two."""
    if type(state) is dict and state.keys() == _REQUEST_FIELDS and type(state["headers"]) is list \
            and all(type(state[k]) is t for k, t in _REQUEST_TYPES) \
            and (state["content"] is None or type(state["content"]) is bytes) \
            and (state["timestamp_end"] is None or type(state["timestamp_end"]) is float) \
            and (state["trailers"] is None or type(state["trailers"]) is list):
        values = {k: state[k] for k in _REQUEST_ORDER}  # in the order RequestData.__init__ sets them
        values["headers"] = http.Headers.from_state(state["headers"])
        if state["trailers"] is not None:
            values["trailers"] = http.Headers.from_state(state["trailers"])
        data = object.__new__(http.RequestData)
        data.__dict__.update(values)
        request = object.__new__(http.Request)
        request.data = data
        return request
    return http.Request.from_state(state)  # does not change the state it reads


def _unclaimed(claim: Callable[[tuple[str, ...]], Any], hosts: tuple[str, ...]) -> bool:
    try:
        return claim(hosts) is None
    except Exception:  # noqa: BLE001 - then it is judged, and judging says what went wrong
        return False


def _passed(source: str, fl: _JudgedFlow, hosts: tuple[str, ...], log: ReadLog) -> Iterator[Recorded]:
    """The messages of a flow no pack claims: where each went (its names), when, and nothing of
    its content (no path, headers or body: the engine passes it through on its names alone)."""
    req = fl.request
    ts = req.data.timestamp_start or 0.0
    ex = Exchange(transport=Transport.HTTP, method=req.method.upper(), hosts=hosts, port=req.port, path="",
                  scheme=req.scheme, timestamp=ts if _is_date(ts) else 0.0)
    if not _is_date(ts):
        log.notes["timestamps that are not dates (shown as 1970-01-01)"] += 1
    live = fl.metadata.get("telewarden") if isinstance(fl.metadata, dict) else None
    yield Recorded(source, fl, ex, None, live if isinstance(live, dict) else None, claimed=False)
    if fl.websocket is None:
        return
    for j, msg in enumerate(fl.websocket.messages):
        if not msg.from_client:
            continue
        ts = msg.timestamp
        wex = Exchange(transport=Transport.WEBSOCKET, method="WS", hosts=hosts, port=req.port, path="",
                       scheme="wss" if req.scheme == "https" else "ws", timestamp=ts if _is_date(ts) else 0.0)
        if not _is_date(ts):
            log.notes["timestamps that are not dates (shown as 1970-01-01)"] += 1
        yield Recorded(f"{source}.ws{j}", fl, wex, j, claimed=False)


def _messages(path: Path, source: str, label: str, fl: http.HTTPFlow, max_body: int, log: ReadLog,
              names: list[int] | None = None, hosts: tuple[str, ...] | None = None) -> Iterator[Recorded]:
    """The flow's request, then each client->server WebSocket message; `names` are the indexes
    shown in `source` (a HAR entry's message index) when they differ from the flow's; `hosts`:
    candidate_hosts(fl), when the caller has it."""
    try:
        ex = http_exchange(fl, max_body, hosts=hosts)
    except Exception as e:  # noqa: BLE001 - a flow file can hold anything
        log.problem(f"{path}: {label}: the request cannot be read ({_short(e)}); skipped")
        return
    if not _is_date(ex.timestamp):  # an edited flow file: render it as 1970, never crash on it
        ex.timestamp = 0.0
        log.notes["timestamps that are not dates (shown as 1970-01-01)"] += 1
    live = fl.metadata.get("telewarden") if isinstance(fl.metadata, dict) else None
    yield Recorded(source, fl, ex, None, live if isinstance(live, dict) else None)
    if fl.websocket is None:
        return
    for j, msg in enumerate(fl.websocket.messages):
        if not msg.from_client:
            continue
        name = names[j] if names is not None else j
        try:
            wex = websocket_exchange(fl, msg.content, msg.is_text, msg.timestamp, hosts=hosts)
        except Exception as e:  # noqa: BLE001
            log.problem(f"{path}: {label}, WebSocket message {name}: cannot be read ({_short(e)}); skipped")
            continue
        if not _is_date(wex.timestamp):
            wex.timestamp = 0.0
            log.notes["timestamps that are not dates (shown as 1970-01-01)"] += 1
        yield Recorded(f"{source}.ws{name}", fl, wex, j)


def _short(e: BaseException) -> str:
    """The exception, short and on one printable line: its text can quote the file's bytes, and a
    terminal must never get an escape sequence from a recording."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c) & 0xff:02x}" for c in str(e)[:200])
    text = text if len(text) <= 120 else text[:117] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# -- HAR ----------------------------------------------------------------------------------------

class _Skip(Exception):
    """An entry that cannot be telemetry (not http(s)/ws(s)); counted, never an error."""


class _Bad(Exception):
    """An entry that cannot be read."""


def _load_har(path: Path, kind: str) -> list:
    """The HAR's entries; raises InputError naming what is wrong with the file as a whole."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    if kind == "zhar":
        try:
            d = zlib.decompressobj()
            data = d.decompress(data, _MAX_ZHAR)
            if d.unconsumed_tail:
                raise InputError(f"{path}: a zlib HAR (.zhar) that inflates to more than {_MAX_ZHAR >> 20} MiB")
            if not d.eof:
                raise InputError(f"{path}: a zlib HAR (.zhar) that is cut short")
        except zlib.error as e:
            raise InputError(f"{path}: not a zlib-compressed HAR (.zhar, as mitmproxy's hardump writes) ({e})") from None
        kind = sniff(data[:128], Path("x.har"))
        if kind in ("flows", "zhar"):
            raise InputError(f"{path}: inflates to something other than a HAR (a JSON object)")
    if kind == "json-array":
        raise InputError(f"{path}: a JSON array, not a HAR: a HAR is an object "
                         '{"log": {"entries": [...]}} (wrap a list of entries in it)')
    if kind == "jsonp":
        raise InputError(f"{path}: a JSONP-wrapped HAR (name({{...}}), as HAR viewers' .harp files): "
                         "remove the function call around the JSON object")
    try:
        har = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a valid HAR file (not UTF-8 at byte {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise InputError(f"{path}: not a valid HAR file ({_short(e)})") from None
    log_ = har.get("log") if isinstance(har, dict) else None
    entries = log_.get("entries") if isinstance(log_, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{path}: not a valid HAR file (no log.entries list)")
    return entries


def _read_har(path: Path, kind: str, max_body: int, log: ReadLog) -> Iterator[Recorded]:
    try:
        entries = _load_har(path, kind)
    except InputError as e:
        log.problem(str(e))
        return
    silent_sockets = 0
    for i, entry in enumerate(entries):
        source = f"{path.name}#{i}"
        try:
            fl, names, notes = _har_flow(entry)
        except _Skip as s:
            log.skipped[str(s)] += 1
            continue
        except _Bad as e:
            log.problem(f"{path}: HAR entry {i} is malformed ({e}); skipped")
            continue
        except Exception as e:  # noqa: BLE001 - mitmproxy's converter raises whatever an entry provokes
            log.problem(f"{path}: HAR entry {i} is malformed ({_short(e)}); skipped")
            continue
        for note in notes:
            if note.startswith("!"):
                log.problem(f"{path}: HAR entry {i}, {note[1:]}")
            else:
                log.notes[note] += 1
        if _is_handshake(entry) and not entry.get("_webSocketMessages"):
            silent_sockets += 1
        yield from _messages(path, source, f"HAR entry {i}", fl, max_body, log, names)
    if silent_sockets:
        log.warnings.append(
            f"{path}: {silent_sockets} WebSocket handshake(s) (101) without recorded messages: the exporter "
            "may have dropped them (sitespeed.io's chrome-har does), so nothing sent over them was judged")


def _is_handshake(entry: dict) -> bool:
    response = entry.get("response")
    return (isinstance(response, dict) and response.get("status") == 101) or entry.get("_resourceType") == "websocket"


_NO_RESPONSE = {"status": 0, "statusText": "", "httpVersion": "", "headers": [], "cookies": [], "content": {}}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _har_flow(entry: Any) -> tuple[http.HTTPFlow, list[int], list[str]]:
    """One HAR entry as a flow with its WebSocket messages; notes: counted oddities, and problems
    (prefixed `!`) in parts of the entry that were left out."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise _Bad("no request object")
    req = entry["request"]
    url, method = req.get("url"), req.get("method")
    if not isinstance(url, str):
        raise _Bad("the request has no URL")
    try:
        parts = urlsplit(url.strip())
    except ValueError as e:
        raise _Bad(f"the URL cannot be parsed: {_short(e)}") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in _SCHEMES:  # data:, blob:, about:, chrome-extension:, ... (Firefox
        shown = scheme if len(scheme) <= 20 else scheme[:20] + "…"  # records data: with no method)
        raise _Skip(f"{shown}: URL")
    if not scheme or not parts.netloc:
        raise _Skip("relative URL (no scheme or host)")
    if not isinstance(method, str) or not method:
        raise _Bad("the request has no method")
    # ws(s):// handshakes as the http(s) requests they are, so the default ports are 80/443.
    url = _SCHEMES[scheme] + url.strip()[len(scheme):]
    headers, authority = _headers(req.get("headers", []), "request")
    notes: list[str] = []
    norm: dict[str, Any] = {
        "startedDateTime": _started(entry.get("startedDateTime")),
        "time": _number(entry.get("time")) or 0,
        "request": {"method": method, "url": url, "headers": headers,
                    "httpVersion": req.get("httpVersion") if isinstance(req.get("httpVersion"), str) else ""},
    }
    body = _post_text(req.get("postData"))
    if body is not None:
        norm["request"]["postData"] = {"text": body}
    response = entry.get("response")
    try:
        if not isinstance(response, dict):
            raise ValueError("no response")
        resp = dict(response)
        resp["headers"], _ = _headers(resp.get("headers", []), "response")
        resp.setdefault("httpVersion", "")
        if not isinstance(resp.get("content"), dict):
            resp["content"] = {}
        fl = request_to_flow({**norm, "response": resp})
    except Exception:  # noqa: BLE001 - the request is judged alone when its response cannot be converted
        fl = request_to_flow({**norm, "response": _NO_RESPONSE})
        if response is not None:
            notes.append("responses that could not be converted (their requests judged alone)")
    if authority is not None:
        # HTTP/2's destination name, kept where mitmproxy keeps it for live HTTP/2 requests: it is
        # then one of the Exchange's hosts and decides which pack claims the message.
        fl.request.authority = authority
    names = _websocket(entry, fl, notes)
    return fl, names, notes


def _headers(raw: Any, where: str) -> tuple[list[dict[str, str]], str | None]:
    """HAR headers as {name, value} dicts without HTTP/2 pseudo-headers (Chrome lists
    `:authority`, `:method`, `:path`, `:scheme`); returns the `:authority` value apart."""
    if not isinstance(raw, list):
        raise _Bad(f"{where} headers are not a list")
    out, authority = [], None
    for h in raw:
        if isinstance(h, dict):
            name, value = h.get("name"), h.get("value")
        elif isinstance(h, (list, tuple)) and len(h) == 2:
            name, value = h
        else:
            raise _Bad(f"a {where} header is neither {{name, value}} nor [name, value]")
        if not isinstance(name, str) or not isinstance(value, str):
            raise _Bad(f"a {where} header name or value is not a string")
        if name.startswith(":"):
            if name.lower() == ":authority":
                authority = value
            continue
        out.append({"name": name, "value": value})
    return out, authority


def _post_text(post: Any) -> str | None:
    if post is None:
        return None
    if not isinstance(post, dict):
        raise _Bad("postData is not an object")
    text = post.get("text")
    if isinstance(text, str):
        return text
    if text is not None:
        raise _Bad("postData.text is not a string")
    params = post.get("params")
    if params is None:
        return None
    if not isinstance(params, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str)
                                               and isinstance(p.get("value", ""), str) for p in params):
        raise _Bad("postData.params is not a list of {name, value}")
    # HAR 1.2 allows a form POST to be recorded as params only: the body it stands for.
    return urlencode([(p["name"], p.get("value", "")) for p in params])


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _started(v: Any) -> str:
    if isinstance(v, str):
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            return v
        except (ValueError, OverflowError, OSError):
            pass
    return "1970-01-01T00:00:00+00:00"


_YEAR_9999 = 253402300799.0


def _is_date(ts: Any) -> bool:
    f = _number(ts)
    return f is not None and 0 <= f <= _YEAR_9999


def ws_time(t: Any, started: float | None) -> float | None:
    """A `_webSocketMessages[].time` as seconds since 1970. Chrome writes seconds, Playwright
    milliseconds: of the two readings that are dates at all, the one nearer the handshake wins
    (without a handshake time: above 1e11 is milliseconds, as 1e11 s is the year 5138)."""
    f = _number(t)
    if f is None or f < 0:
        return None
    plausible = [c for c in (f, f / 1000) if c <= _YEAR_9999]
    if not plausible:
        return None
    if started:
        return min(plausible, key=lambda c: abs(c - started))
    return f / 1000 if f > 1e11 else f


def _websocket(entry: dict, fl: http.HTTPFlow, notes: list[str]) -> list[int]:
    raw = entry.get("_webSocketMessages")
    if raw is None:
        return []
    if not isinstance(raw, list):
        notes.append("!_webSocketMessages is not a list; its messages were not judged")
        return []
    started = fl.request.timestamp_start if fl.request.timestamp_start and fl.request.timestamp_start > 0 else None
    messages, names = [], []
    for j, msg in enumerate(raw):
        try:
            m = _ws_message(msg, started)
        except _Bad as e:
            sent = isinstance(msg, dict) and msg.get("type") == "send"
            if sent or not isinstance(msg, dict) or msg.get("type") not in ("receive",):
                notes.append(f"!WebSocket message {j}: {e}; not judged")
            else:
                notes.append("unreadable server-to-client WebSocket messages (left out, never judged)")
            continue
        if m is None:  # a live proxy empties a client's control-frame payload (telewarden.websocket.control-frame)
            if msg.get("type") == "send" and msg.get("data"):
                notes.append("client WebSocket control frames WITH A PAYLOAD (left out: not judged offline)")
            else:
                notes.append("WebSocket control frames (close, ping, pong: left out)")
            continue
        m, bad_time = m
        if bad_time and m.from_client:
            notes.append(f"!WebSocket message {j}: time is not a date in seconds or milliseconds; "
                         "judged with the handshake's time")
        messages.append(m)
        names.append(j)
    fl.websocket = websocket.WebSocketData(messages=messages)
    return names


def _ws_message(msg: Any, started: float | None):
    if not isinstance(msg, dict):
        raise _Bad("not an object")
    kind = msg.get("type")
    if kind not in ("send", "receive"):
        raise _Bad("type is neither send nor receive")
    opcode = msg.get("opcode", 1)
    if isinstance(opcode, bool) or not isinstance(opcode, int):
        raise _Bad("opcode is not a number")
    if opcode in (8, 9, 10):  # close, ping, pong
        return None
    if opcode not in (1, 2):
        raise _Bad("opcode is neither 1 (text) nor 2 (binary)")
    data = msg.get("data", "")
    if not isinstance(data, str):
        raise _Bad("data is not a string")
    if opcode == 1:
        content = data.encode("utf-8", "surrogatepass")  # a lone surrogate stays visible as bad UTF-8
    else:
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Bad("binary data is not valid base64") from None
    ts = ws_time(msg.get("time"), started)
    m = websocket.WebSocketMessage(opcode, kind == "send", content, ts if ts is not None else (started or 0.0))
    return m, ts is None and msg.get("time") is not None
