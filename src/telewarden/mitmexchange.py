"""mitmproxy flows -> Exchanges, and Verdicts -> changes on the flow. The only module (with
addon.py and flows.py) that knows mitmproxy's types; live and recorded traffic share it.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from . import decoding
from .engine import DEFAULT_MAX_BODY
from .model import Exchange, Repaired, Transport


def normalize_host(host: str | None) -> str | None:
    """Case, trailing dot, brackets and an explicit port never change which pack a name hits."""
    if not host:
        return None
    h = host.strip().lower()
    if h.startswith("["):  # [::1]:443
        h = h[1:].split("]", 1)[0]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    h = h.rstrip(".")
    return h or None


def normalize_path(raw: str) -> tuple[str, str]:
    """Split off the query and canonicalise the path: percent-decoding, doubled slashes, dot
    segments, a trailing slash and case, so `/V1//%68ttp/` is judged as `/v1/http`."""
    path, _, query = raw.partition("?")
    path = unquote(path.split("#", 1)[0], errors="replace")
    path = posixpath.normpath("/" + path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path.lower(), query


def candidate_hosts(flow: http.HTTPFlow) -> tuple[str, ...]:
    """Every name this request could be going to: request target, Host/:authority, TLS SNI, and
    in reverse mode the configured target (mitmproxy may have replaced the Host header and the
    request host with the address it connected to, and plain HTTP has no SNI)."""
    req = flow.request
    mode = flow.client_conn.proxy_mode
    reverse = mode.address[0] if isinstance(mode, mode_specs.ReverseMode) else None
    names = (req.host, req.authority, req.headers.get("host"), flow.client_conn.sni,
             getattr(flow.server_conn, "sni", None), reverse)
    out: list[str] = []
    for n in names:
        h = normalize_host(n)
        if h and h not in out:
            out.append(h)
    return tuple(out)


def http_exchange(flow: http.HTTPFlow, max_body: int = DEFAULT_MAX_BODY) -> Exchange:
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
        except decoding.DecodeError:
            shown = encoding if encoding.replace(",", " ").replace("-", "").replace(" ", "").isalpha() and len(encoding) < 40 else "(unusual value)"
            problem = f"bad-encoding: the body does not decode as Content-Encoding {shown}"
    headers = tuple(req.headers.items(multi=True))
    if req.trailers:
        headers += tuple((f"trailer:{k}", v) for k, v in req.trailers.items(multi=True))
    path, query = normalize_path(req.path)
    return Exchange(
        transport=Transport.HTTP, method=req.method.upper(), hosts=candidate_hosts(flow),
        port=req.port, path=path, query=query, headers=headers,
        body=body, body_problem=problem, scheme=req.scheme, timestamp=req.timestamp_start or 0.0)


def websocket_exchange(flow: http.HTTPFlow, content: bytes, is_text: bool, timestamp: float) -> Exchange:
    req = flow.request
    path, query = normalize_path(req.path)
    return Exchange(
        transport=Transport.WEBSOCKET, method="WS", hosts=candidate_hosts(flow), port=req.port,
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
    if repaired.clear_query:
        req.path = req.path.split("?", 1)[0]
    if repaired.body is not None:
        req.content = repaired.body  # mitmproxy re-applies Content-Encoding and the length
