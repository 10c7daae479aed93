"""mitmproxy flows -> Exchanges, and Verdicts -> changes on the flow. The only module (with
addon.py and flows.py) that knows mitmproxy's types; live and recorded traffic share it.
"""

from __future__ import annotations

import ipaddress

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from ..engine import decoding
from ..engine.judge import DEFAULT_MAX_BODY
from ..engine.model import Exchange, Repaired, Transport
from ..audit.render import shown_encoding
from ..engine.names import normalize_host, normalize_path, target_problem

__all__ = ["normalize_host", "normalize_path", "candidate_hosts", "http_exchange", "websocket_exchange",
           "apply_to_request"]


# Per-message cost matters here: every request through the proxy asks for its names, and almost
# none of them is telemetry. Names repeat (a handful of hosts, the same connection's SNI), so the
# normalised forms are memoised, bounded; a full memo is simply emptied.
_MEMO_MAX = 4096
_NORMALIZED: dict[str | None, str | None] = {}
_HOSTS: dict[tuple, tuple[str, ...]] = {}
_ADDRESS: dict[str, bool] = {}
_TARGETS: dict[str, tuple[str, str, str | None]] = {}  # raw target -> (path, query, target problem)


def _target(raw: str) -> tuple[str, str, str | None]:
    """normalize_path and target_problem of a request target, memoised (telemetry targets repeat)."""
    try:
        return _TARGETS[raw]
    except KeyError:
        path, query = normalize_path(raw)
        found = (path, query, target_problem(raw, path))
        if len(raw) <= 512:  # a long target is unusual: not worth keeping
            if len(_TARGETS) >= _MEMO_MAX:
                _TARGETS.clear()
            _TARGETS[raw] = found
        return found


def _norm(name: str | None) -> str | None:
    try:
        return _NORMALIZED[name]
    except KeyError:
        h = normalize_host(name)
        if len(_NORMALIZED) >= _MEMO_MAX:
            _NORMALIZED.clear()
        _NORMALIZED[name] = h
        return h


def _host_headers(req: http.Request) -> tuple[str, ...]:
    """Every Host header value, as mitmproxy decodes them (straight from the raw fields: the
    multidict API costs several microseconds per lookup)."""
    return tuple(v.decode("utf-8", "surrogateescape") for k, v in req.data.headers.fields
                 if len(k) == 4 and k.lower() == b"host")


def candidate_hosts(flow: http.HTTPFlow, asked: str | None = None) -> tuple[str, ...]:
    """Every name this request could be going to: request target, Host/:authority, TLS SNI, and
    in reverse mode the configured target (mitmproxy may have replaced the Host header and the
    request host with the address it connected to, and plain HTTP has no SNI); `asked` is the
    server address the client asked for before an addon rewrote it. Every Host header counts,
    not only the first (a server may read another).

    Read fresh for every call (another addon may have rewritten any of them since the last
    hook), but cheap: the raw names are the key of a memo of their normalised set."""
    req = flow.request
    data = req.data
    client, server = flow.client_conn, flow.server_conn
    fields = data.headers.fields
    # The same flow asks again (requestheaders, then request): when nothing it is read from was
    # replaced since (a header change replaces the fields tuple), the answer stands.
    seen = flow.__dict__.get("_telewarden_hosts")
    if seen is not None and seen[0] is fields and seen[1] is data.host and seen[2] is data.authority and \
            seen[3] is client.sni and seen[4] is server.sni and seen[5] is server.address and seen[6] == asked and \
            seen[7] is client.proxy_mode:
        return seen[8]
    mode = client.proxy_mode
    reverse = mode.address[0] if isinstance(mode, mode_specs.ReverseMode) else None
    address = server.address[0] if server.address else None
    key = (req.host, req.authority, client.sni, getattr(server, "sni", None), reverse, asked, address,
           *_host_headers(req))
    hosts = _HOSTS.get(key)
    if hosts is None:
        hosts = _hosts(key)
    flow.__dict__["_telewarden_hosts"] = (fields, data.host, data.authority, client.sni, server.sni, server.address,
                                          asked, mode, hosts)
    return hosts


def _hosts(key: tuple) -> tuple[str, ...]:
    # the order is part of the answer (the first claimed name is the one a record shows)
    names = (key[0], key[1], *key[7:], key[2], key[3], key[4], key[5], key[6])
    out: list[str] = []
    for n in names:
        h = _norm(n)
        if h and h not in out:
            out.append(h)
    hosts = tuple(out)
    if len(_HOSTS) >= _MEMO_MAX:
        _HOSTS.clear()
    _HOSTS[key] = hosts
    return hosts


def http_exchange(flow: http.HTTPFlow, max_body: int = DEFAULT_MAX_BODY, asked: str | None = None,
                  hosts: tuple[str, ...] | None = None) -> Exchange:
    """The request as the engine sees it. The body is decoded with a ceiling of max_body + 1 bytes
    (a compression bomb is cut, and the engine then reports it as too large). Trailers are judged
    like headers, as `trailer:NAME`. `hosts`: candidate_hosts(flow, asked), when the caller has
    just computed it (to ask for the claim before building anything)."""
    req = flow.request
    data = req.data
    problem = None
    body = b""
    fields = data.headers.fields
    if req.stream:
        problem = "streamed: the body was streamed past the proxy and could not be inspected"
    else:
        raw = data.content or b""
        encoding = next((v for k, v in fields if len(k) == 16 and k.lower() == b"content-encoding"), None)
        if encoding is not None:
            # headers.get folds repeated headers with ", ": the same value decoding has always seen
            encoding = ", ".join(v.decode("utf-8", "surrogateescape") for k, v in fields
                                 if len(k) == 16 and k.lower() == b"content-encoding")
        try:
            body = decoding.decode(raw, encoding, max_body) if encoding else raw
        except decoding.DecodeError as e:  # e.code: bad-encoding or hidden-data; str(e) never holds sender bytes
            problem = f"{e.code}: the body does not decode cleanly as Content-Encoding {shown_encoding(encoding)}: {e}"
    headers = tuple((k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in fields)
    if data.trailers:
        headers += tuple((f"trailer:{k}", v) for k, v in data.trailers.items(multi=True))
    target = req.path
    path, query, problem_in_target = _target(target)
    return Exchange(
        transport=Transport.HTTP, method=req.method.upper(),
        hosts=hosts if hosts is not None else candidate_hosts(flow, asked),
        port=req.port, path=path, query=query, headers=headers,
        body=body, body_problem=problem, scheme=req.scheme, timestamp=data.timestamp_start or 0.0,
        target_problem=problem_in_target, raw_target=target, sent_names=sent_names(flow),
        connected=connected_names(flow, asked))


def connected_names(flow: http.HTTPFlow, asked: str | None) -> tuple[str, ...]:
    """Where the connection goes: the server address (the CONNECT target until mitmproxy
    connects) and the address the client asked for before an addon rewrote it."""
    address = flow.server_conn.address[0] if flow.server_conn.address else None
    a, b = _norm(address), _norm(asked)
    return tuple(n for n in ((a, b) if a != b else (a,)) if n)


def _is_address(name: str) -> bool:
    try:
        return _ADDRESS[name]
    except KeyError:
        pass
    try:
        ipaddress.ip_address(name.strip("[]"))
        found = True
    except ValueError:
        found = False
    if len(_ADDRESS) >= _MEMO_MAX:
        _ADDRESS.clear()
    _ADDRESS[name] = found
    return found


def sent_names(flow: http.HTTPFlow) -> tuple[tuple[str, str], ...]:
    """The names this request passes on to the server: each Host header, HTTP/2's :authority,
    and the TLS SNI of the upstream connection (mitmproxy copies the client's)."""
    req = flow.request
    names = [("header:host", v) for v in _host_headers(req)]
    if req.data.http_version.startswith((b"HTTP/2", b"HTTP/3")) and req.data.authority:
        names.append(("header::authority", req.authority))
    sni = getattr(flow.server_conn, "sni", None) or flow.client_conn.sni
    if sni and req.scheme == "https" and not _is_address(sni):  # TLS never sends an address as SNI
        names.append(("tls:sni", sni))
    return tuple(names)


def websocket_exchange(flow: http.HTTPFlow, content: bytes, is_text: bool, timestamp: float,
                       asked: str | None = None, hosts: tuple[str, ...] | None = None) -> Exchange:
    req = flow.request
    path, query, _ = _target(req.path)
    return Exchange(
        transport=Transport.WEBSOCKET, method="WS", hosts=hosts if hosts is not None else candidate_hosts(flow, asked),
        port=req.port, path=path, query=query, body=content, frame_is_text=is_text,
        scheme="wss" if req.scheme == "https" else "ws", timestamp=timestamp)


def apply_to_request(req: http.Request, repaired: Repaired) -> None:
    """Put a scrubbed request on the wire: re-encodes the body and fixes Content-Length; a
    repaired query-string message replaces the query."""
    for name in repaired.drop_headers:
        if name.startswith("trailer:"):
            if req.trailers is not None:
                del req.trailers[name[len("trailer:"):]]
        else:
            del req.headers[name]
    if repaired.query is not None:  # the message is the query string: forward the repaired one
        base = repaired.target if repaired.target is not None else req.path.partition("#")[0].partition("?")[0]
        req.path = base + (f"?{repaired.query}" if repaired.query else "")
    elif repaired.target is not None:
        query = req.path.partition("#")[0].partition("?")[2]
        req.path = repaired.target + (f"?{query}" if query and not repaired.clear_query else "")
    elif repaired.clear_query:
        req.path = req.path.split("?", 1)[0]
    if repaired.host is not None:
        req.host_header = repaired.host  # one Host header (or :authority), the claimed name
    if repaired.body is not None:
        req.content = repaired.body  # mitmproxy re-applies Content-Encoding and the length
