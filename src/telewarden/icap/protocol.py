"""ICAP (RFC 3507) on the wire: read a request, its encapsulated HTTP head and chunked body, and
write answers. Everything read is bounded (head block, header count, line length, chunk size,
body, trailer lines); anything malformed raises ICAPError, which the server answers with an ICAP
4xx and closes the connection. No telewarden judgement here.

The encapsulated HTTP request head is parsed by h11 (a maintained, strict HTTP/1.1 parser that
mitmproxy already depends on); ICAP's own framing (request line, headers, `Encapsulated` offsets,
chunked body with `ieof`) is small and is parsed here.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import h11

ICAP_VERSION = b"ICAP/1.0"
METHODS = frozenset({"OPTIONS", "REQMOD", "RESPMOD"})
_SECTIONS = frozenset({"req-hdr", "res-hdr", "req-body", "res-body", "null-body", "opt-body"})
_BODIES = frozenset({"req-body", "res-body", "null-body", "opt-body"})
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,8}$")

REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "ICAP Service Not Found",
    405: "Method Not Allowed For Service", 408: "Request Timeout", 413: "Request Entity Too Large",
    500: "Server Error", 501: "Method Not Implemented", 503: "Service Overloaded",
    505: "ICAP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Every size the parser accepts. The defaults fit what Squid sends (its own request header
    limit is 64 KiB)."""

    max_icap_head: int = 16 << 10  # ICAP request line + headers
    max_icap_headers: int = 64
    max_http_head: int = 64 << 10  # encapsulated req-hdr section
    max_line: int = 1024  # chunk-size line (with extensions), trailer line
    max_trailers: int = 16
    max_preview: int = 64 << 10  # preview bytes we accept from a client (we advertise less)


class ICAPError(Exception):
    """Malformed or unsupported ICAP: answered with `status` and the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Closed(Exception):
    """The client closed the connection cleanly between requests."""


@dataclass(slots=True)
class Request:
    method: str
    uri: str
    service: str  # the URI's path, e.g. "/telewarden"
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its first value
    encapsulated: list[tuple[str, int]]
    http_head: bytes = b""  # the req-hdr section, raw
    preview: int | None = None
    allow_204: bool = False

    @property
    def body_section(self) -> str:
        return self.encapsulated[-1][0] if self.encapsulated else "null-body"

    @property
    def has_body(self) -> bool:
        return self.body_section in ("req-body", "res-body", "opt-body")


@dataclass(slots=True)
class HTTPHead:
    """The encapsulated HTTP request head, as h11 parsed it."""

    method: str
    target: str
    version: str
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # original case and order

    def get(self, name: str) -> str | None:
        n = name.lower().encode()
        for k, v in self.raw_headers:
            if k.lower() == n:
                return v.decode("latin-1")
        return None

    def all(self, name: str) -> list[str]:
        n = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.raw_headers if k.lower() == n]


# -- reading ----------------------------------------------------------------------------------

async def _readuntil(reader: asyncio.StreamReader, sep: bytes, limit: int, what: str) -> bytes:
    """Read through `sep`, failing once more than `limit` bytes came without it."""
    try:
        return await reader.readuntil(sep)
    except asyncio.LimitOverrunError:
        raise ICAPError(400, f"{what} too long") from None
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise Closed from None
        raise ICAPError(400, f"connection closed inside the {what}") from None


async def read_line(reader: asyncio.StreamReader, limit: int, what: str) -> bytes:
    line = await _readuntil(reader, b"\n", limit, what)
    if len(line) > limit:
        raise ICAPError(400, f"{what} too long")
    if not line.endswith(b"\r\n"):
        raise ICAPError(400, f"{what} does not end with CRLF")
    return line[:-2]


async def read_request(reader: asyncio.StreamReader, limits: Limits) -> Request:
    """The ICAP request line, headers and (for REQMOD) the encapsulated HTTP head. The body, if
    any, is left on the stream for read_body. Raises Closed on a clean EOF before a request."""
    for _ in range(4):
        try:
            block = await reader.readuntil(b"\r\n\r\n")  # one read: the reader's own limit bounds it
        except asyncio.LimitOverrunError:
            raise ICAPError(400, "ICAP header block too long") from None
        except asyncio.IncompleteReadError as e:
            if not e.partial.strip(b"\r\n"):
                raise Closed from None
            raise ICAPError(400, "connection closed inside the ICAP header block") from None
        block = block.lstrip(b"\r\n")  # tolerate stray CRLFs between requests (as HTTP does)
        if block:
            break
    else:
        raise ICAPError(400, "empty lines instead of an ICAP request")
    if len(block) > limits.max_icap_head:
        raise ICAPError(400, "ICAP header block too long")
    lines = block[:-4].split(b"\r\n")
    if len(lines) > limits.max_icap_headers + 1:
        raise ICAPError(400, "too many ICAP headers")
    if any(b"\n" in x or b"\r" in x for x in lines):
        raise ICAPError(400, "bare CR or LF in the ICAP header block")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ICAPError(400, "malformed ICAP request line")
    method_b, uri_b, version = parts
    if version != ICAP_VERSION:
        raise ICAPError(505 if version.startswith(b"ICAP/") else 400, "unsupported ICAP version")
    if not _TOKEN.match(method_b):
        raise ICAPError(400, "malformed ICAP method")
    method = method_b.decode("ascii")
    if method not in METHODS:
        raise ICAPError(501, "method not implemented")
    try:
        uri = uri_b.decode("ascii")
    except UnicodeDecodeError:
        raise ICAPError(400, "non-ASCII ICAP URI") from None
    if not uri.lower().startswith(("icap://", "icaps://")) or any(c <= " " or c == "\x7f" for c in uri):
        raise ICAPError(400, "malformed ICAP URI")
    rest = uri.split("://", 1)[1]
    service = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    service = service.split("?", 1)[0]
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise ICAPError(400, "malformed ICAP header")
        try:
            text = value.strip(b" \t").decode("ascii")
        except UnicodeDecodeError:
            raise ICAPError(400, "non-ASCII ICAP header value") from None
        if any(c < " " and c != "\t" for c in text):
            raise ICAPError(400, "control character in an ICAP header")
        headers.setdefault(name.decode("ascii").lower(), text)
    req = Request(method, uri, service, headers, parse_encapsulated(headers.get("encapsulated"), method))
    if "preview" in headers:
        p = headers["preview"]
        if not p.isdigit() or len(p) > 9:
            raise ICAPError(400, "malformed Preview header")
        req.preview = int(p)
        if req.preview > limits.max_preview:
            raise ICAPError(400, "Preview larger than this service accepts")
    req.allow_204 = "204" in {a.strip() for a in headers.get("allow", "").split(",")}
    # Encapsulated HTTP head(s): the bytes between consecutive offsets.
    for (name, start), (_, end) in zip(req.encapsulated, req.encapsulated[1:]):
        size = end - start
        if size > limits.max_http_head:
            raise ICAPError(413 if name == "req-hdr" else 400, f"encapsulated {name} larger than {limits.max_http_head} bytes")
        try:
            data = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ICAPError(400, f"connection closed inside the encapsulated {name}") from None
        if name == "req-hdr":
            req.http_head = data
    return req


def parse_encapsulated(value: str | None, method: str) -> list[tuple[str, int]]:
    """`req-hdr=0, req-body=123`: known names, strictly increasing offsets from 0, a body (or
    null-body) entry last, and the entries each method allows."""
    if value is None:
        if method == "OPTIONS":
            return []
        raise ICAPError(400, "missing Encapsulated header")
    entries: list[tuple[str, int]] = []
    for item in value.split(","):
        name, sep, offset = item.strip().partition("=")
        name = name.strip().lower()
        offset = offset.strip()
        if not sep or name not in _SECTIONS or not offset.isdigit() or len(offset) > 9:
            raise ICAPError(400, "malformed Encapsulated header")
        entries.append((name, int(offset)))
        if len(entries) > 4:
            raise ICAPError(400, "malformed Encapsulated header")
    names = [n for n, _ in entries]
    offsets = [o for _, o in entries]
    if offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:])):
        raise ICAPError(400, "Encapsulated offsets must start at 0 and increase")
    if names[-1] not in _BODIES or any(n in _BODIES for n in names[:-1]) or len(set(names)) != len(names):
        raise ICAPError(400, "Encapsulated must list the headers, then one body entry")
    allowed = {"REQMOD": {"req-hdr", "req-body", "null-body"},
               "RESPMOD": {"req-hdr", "res-hdr", "res-body", "null-body"},
               "OPTIONS": {"opt-body", "null-body"}}[method]
    if not set(names) <= allowed:
        raise ICAPError(400, f"Encapsulated sections not allowed in {method}")
    if method == "REQMOD" and names[0] != "req-hdr":
        raise ICAPError(400, "REQMOD needs an encapsulated req-hdr")
    return entries


def parse_http_head(data: bytes, limits: Limits) -> HTTPHead:
    """The encapsulated HTTP request head, parsed by h11 (strict: a malformed head is a 400)."""
    if not data.endswith(b"\r\n\r\n"):
        raise ICAPError(400, "the encapsulated HTTP head does not end with an empty line")
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_http_head)
    try:
        conn.receive_data(data)
        event = conn.next_event()
    except h11.RemoteProtocolError as e:
        raise ICAPError(400, f"malformed encapsulated HTTP request ({e})") from None
    if not isinstance(event, h11.Request):
        raise ICAPError(400, "incomplete encapsulated HTTP request")
    if len(event.headers) > limits.max_icap_headers * 4:
        raise ICAPError(400, "too many encapsulated HTTP headers")
    try:
        target = event.target.decode("ascii")
    except UnicodeDecodeError:
        raise ICAPError(400, "non-ASCII request target") from None
    return HTTPHead(event.method.decode("ascii"), target, event.http_version.decode("ascii"),
                    list(event.headers.raw_items()))


_LENIENT_LINE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d\.\d)$")


def lenient_head(data: bytes, limits: Limits) -> HTTPHead | None:
    """Request line and Host headers of a head h11 refused, to tell whose it is; None when it is
    not an HTTP request head at all. Only destination names are taken from it, never judged."""
    if not data.endswith(b"\r\n\r\n") or len(data) > limits.max_http_head:
        return None
    first, *lines = data[:-4].split(b"\r\n")
    m = _LENIENT_LINE.match(first)
    if not m or len(lines) > limits.max_icap_headers * 4:
        return None
    try:
        target = m.group(2).decode("ascii")
    except UnicodeDecodeError:
        return None
    hosts = [(b"Host", v.strip(b" \t")) for k, _, v in (x.partition(b":") for x in lines)
             if k.strip(b" \t").lower() == b"host"]
    return HTTPHead(m.group(1).decode("ascii"), target, m.group(3).decode("ascii"), hosts)


@dataclass(slots=True)
class Body:
    data: bytes = b""
    complete: bool = False  # the whole body has been read (ieof, or the final part)
    overflow: bool = False  # more than the caller's ceiling arrived; data holds the first ceiling+1 bytes
    size: int = 0  # bytes seen in total


async def read_chunks(reader: asyncio.StreamReader, limits: Limits, body: Body, keep: int,
                      drain_limit: int) -> bool:
    """Read one chunked section (up to and including its 0-size chunk and trailers) into `body`,
    keeping at most `keep` + 1 bytes. Returns True if the last chunk carried `ieof`. Chunk sizes
    and the total read are bounded by `drain_limit`."""
    while True:
        line = await read_line(reader, limits.max_line, "chunk-size line")
        size_part, _, ext = line.partition(b";")
        size_part = size_part.strip(b" \t")
        if not _HEX.match(size_part):
            raise ICAPError(400, "malformed chunk size")
        size = int(size_part, 16)
        if size == 0:
            ieof = ext.strip(b" \t").lower() == b"ieof"
            for _ in range(limits.max_trailers + 1):
                if not await read_line(reader, limits.max_line, "chunk trailer"):
                    return ieof
            raise ICAPError(400, "too many chunk trailer lines")
        if body.size + size > drain_limit:
            raise ICAPError(413, "encapsulated body larger than this service reads")
        while size:
            part = min(size, 1 << 16)
            try:
                data = await reader.readexactly(part)
            except asyncio.IncompleteReadError:
                raise ICAPError(400, "connection closed inside a chunk") from None
            size -= part
            room = keep + 1 - len(body.data)
            if room > 0:
                body.data += data[:room]
            body.size += part
        try:
            crlf = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            raise ICAPError(400, "connection closed after a chunk") from None
        if crlf != b"\r\n":
            raise ICAPError(400, "chunk data not followed by CRLF")
        body.overflow = body.size > keep


# -- writing ----------------------------------------------------------------------------------

def chunked(data: bytes) -> bytes:
    return (f"{len(data):x}\r\n".encode() + data + b"\r\n" if data else b"") + b"0\r\n\r\n"


def response(status: int, headers: list[tuple[str, str]], sections: list[tuple[str, bytes]] = (),
             body: bytes | None = None) -> bytes:
    """An ICAP response: status line, headers, `Encapsulated` computed from the sections (HTTP
    heads), then the body chunked (or null-body when body is None)."""
    lines = [f"ICAP/1.0 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    payload = b""
    if status not in (100, 204) or sections:
        enc, offset = [], 0
        for name, data in sections:
            enc.append(f"{name}={offset}")
            offset += len(data)
            payload += data
        body_name = {"req-hdr": "req-body", "res-hdr": "res-body"}.get(sections[-1][0] if sections else "", "opt-body")
        if body is None:
            enc.append(f"null-body={offset}")
        else:
            enc.append(f"{body_name}={offset}")
            payload += chunked(body)
        lines.append("Encapsulated: " + ", ".join(enc))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def error(status: int, istag: str) -> bytes:
    return response(status, [("ISTag", istag), ("Connection", "close")])
