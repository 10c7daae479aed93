"""mitmproxy flows -> Exchanges, and Verdicts -> changes on the flow. The only module (with
addon.py and flows.py) that knows mitmproxy's types; live and recorded traffic share it.
"""

from __future__ import annotations

import ipaddress

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from . import decoding
from .engine import DEFAULT_MAX_BODY
from .model import Exchange, Repaired, Transport
from .render import shown_encoding
from .names import normalize_host, normalize_path, target_problem

__all__ = ["normalize_host", "normalize_path", "candidate_hosts", "http_exchange", "websocket_exchange",
           "apply_to_request"]


def candidate_hosts(flow: http.HTTPFlow, asked: str | None = None) -> tuple[str, ...]:
    """Every name this request could be going to: request target, Host/:authority, TLS SNI, and
    in reverse mode the configured target (mitmproxy may have replaced the Host header and the
    request host with the address it connected to, and plain HTTP has no SNI); `asked` is the
    server address the client asked for before an addon rewrote it."""
    req = flow.request
    mode = flow.client_conn.proxy_mode
    reverse = mode.address[0] if isinstance(mode, mode_specs.ReverseMode) else None
    address = flow.server_conn.address[0] if flow.server_conn.address else None
    names = (req.host, req.authority, req.headers.get("host"), flow.client_conn.sni,
             getattr(flow.server_conn, "sni", None), reverse, asked, address)
    out: list[str] = []
    for n in names:
        h = normalize_host(n)
        if h and h not in out:
            out.append(h)
    return tuple(out)


def http_exchange(flow: http.HTTPFlow, max_body: int = DEFAULT_MAX_BODY, asked: str | None = None) -> Exchange:
    """The request as the engine sees it. The body is decoded with a ceiling of max_body + 1 bytes
    (a compression bomb is cut, and the engine then reports it as too large). Trailers are judged
    like headers, as `trailer:NAME`."""
    req = flow.request
    problem = None
    body = b""
    if req.stream:
        problem = "streamed: the body was streamed past the proxy and could not be inspected"
    else:
        encoding = req.headers.get("content-encoding", "")
        raw = req.raw_content or b""
        try:
            body = decoding.decode(raw, encoding, max_body) if encoding else raw
        except decoding.DecodeError as e:  # e.code: bad-encoding or hidden-data; str(e) never holds sender bytes
            problem = f"{e.code}: the body does not decode cleanly as Content-Encoding {shown_encoding(encoding)}: {e}"
    headers = tuple(req.headers.items(multi=True))
    if req.trailers:
        headers += tuple((f"trailer:{k}", v) for k, v in req.trailers.items(multi=True))
    path, query = normalize_path(req.path)
    return Exchange(
        transport=Transport.HTTP, method=req.method.upper(), hosts=candidate_hosts(flow, asked),
        port=req.port, path=path, query=query, headers=headers,
        body=body, body_problem=problem, scheme=req.scheme, timestamp=req.timestamp_start or 0.0,
        target_problem=target_problem(req.path, path), raw_target=req.path, sent_names=sent_names(flow),
        connected=connected_names(flow, asked))


def connected_names(flow: http.HTTPFlow, asked: str | None) -> tuple[str, ...]:
    """Where the connection goes: the server address (the CONNECT target until mitmproxy
    connects) and the address the client asked for before an addon rewrote it."""
    address = flow.server_conn.address[0] if flow.server_conn.address else None
    return tuple(n for n in {normalize_host(address), normalize_host(asked)} if n)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def sent_names(flow: http.HTTPFlow) -> tuple[tuple[str, str], ...]:
    """The names this request passes on to the server: each Host header, HTTP/2's :authority,
    and the TLS SNI of the upstream connection (mitmproxy copies the client's)."""
    req = flow.request
    names = [("header:host", v) for v in req.headers.get_all("host")]
    if req.http_version.startswith(("HTTP/2", "HTTP/3")) and req.authority:
        names.append(("header::authority", req.authority))
    sni = getattr(flow.server_conn, "sni", None) or flow.client_conn.sni
    if sni and req.scheme == "https" and not _is_address(sni):  # TLS never sends an address as SNI
        names.append(("tls:sni", sni))
    return tuple(names)


def websocket_exchange(flow: http.HTTPFlow, content: bytes, is_text: bool, timestamp: float,
                       asked: str | None = None) -> Exchange:
    req = flow.request
    path, query = normalize_path(req.path)
    return Exchange(
        transport=Transport.WEBSOCKET, method="WS", hosts=candidate_hosts(flow, asked), port=req.port,
        path=path, query=query, body=content, frame_is_text=is_text,
        scheme="wss" if req.scheme == "https" else "ws", timestamp=timestamp)


def apply_to_request(req: http.Request, repaired: Repaired) -> None:
    """Put a scrubbed request on the wire: re-encodes the body and fixes Content-Length."""
    for name in repaired.drop_headers:
        if name.startswith("trailer:"):
            if req.trailers is not None:
                del req.trailers[name[len("trailer:"):]]
        else:
            del req.headers[name]
    if repaired.target is not None:
        query = req.path.partition("#")[0].partition("?")[2]
        req.path = repaired.target + (f"?{query}" if query and not repaired.clear_query else "")
    elif repaired.clear_query:
        req.path = req.path.split("?", 1)[0]
    if repaired.host is not None:
        req.host_header = repaired.host  # one Host header (or :authority), the claimed name
    if repaired.body is not None:
        req.content = repaired.body  # mitmproxy re-applies Content-Encoding and the length
