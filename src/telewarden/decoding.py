"""Content-Encoding decoding with a ceiling on the output.

mitmproxy's own decoding (`Request.get_content`) inflates a body whole, so a small gzip bomb would
become gigabytes in the proxy before telewarden could say no. This decodes the same encodings
(gzip, deflate, br, zstd, and chains of them) but stops once the output passes `limit` bytes.
"""

from __future__ import annotations

import zlib

import brotli

try:  # Python 3.14+; earlier: the backport that mitmproxy itself depends on
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd  # type: ignore[no-redef]


class DecodeError(ValueError):
    pass


def _zlib(data: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, limit + 1)
    if not d.eof and len(out) <= limit and d.unconsumed_tail == b"":
        out += d.flush()
    if not d.eof and len(out) <= limit:
        raise DecodeError("truncated compressed data")
    return out


def _brotli(data: bytes, limit: int) -> bytes:
    # output_buffer_limit is a soft bound (brotli returns whole internal chunks): loop and cut.
    d = brotli.Decompressor()
    out = d.process(data, output_buffer_limit=limit + 1)
    while not d.is_finished() and len(out) <= limit:
        more = d.process(b"", output_buffer_limit=limit + 1 - len(out))
        if not more:
            raise DecodeError("truncated brotli data")
        out += more
    return out[: limit + 1]


def _one(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return data[: limit + 1]
    try:
        if encoding in ("gzip", "x-gzip"):
            return _zlib(data, 31, limit)
        if encoding == "deflate":
            try:
                return _zlib(data, 15, limit)  # zlib wrapper, as RFC 9110 says
            except (zlib.error, DecodeError):
                return _zlib(data, -15, limit)  # raw deflate, as some clients send
        if encoding == "br":
            return _brotli(data, limit)
        if encoding == "zstd":
            return zstd.ZstdDecompressor().decompress(data, max_length=limit + 1)
    except (zlib.error, brotli.error, zstd.ZstdError) as e:
        raise DecodeError(str(e)) from None
    raise DecodeError(f"unknown Content-Encoding {encoding!r}")


def decode(data: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo `Content-Encoding` (applied left to right, so undone right to left). The result is
    cut at limit + 1 bytes: a caller that sees more than `limit` knows the body is too large."""
    for encoding in reversed([e.strip().lower() for e in content_encoding.split(",") if e.strip()]):
        data = _one(data, encoding, limit)
    return data
