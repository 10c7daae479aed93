"""Content-Encoding decoding with a ceiling on the output.

mitmproxy's own decoding (`Request.get_content`) inflates a body whole, so a small gzip bomb would
become gigabytes in the proxy before telewarden could say no. This decodes the same encodings
(gzip, deflate, br, zstd, and chains of them) but stops once the output passes `limit` bytes.

It decodes exactly what a receiving decoder could use, and refuses the bytes that one decoder
reads and another skips, since telewarden would forward them uninspected:

* gzip: every member, one after the other (as Python's gzip.decompress, Go's gzip.Reader and zcat
  do). Anything after the last member that is not another member (garbage, zero padding) is an
  error, and so are the header fields a decoder skips (file name, comment, extra field).
* deflate (zlib wrapper, or raw as some clients send): one stream; any byte after its end is an
  error.
* br: one stream; the brotli library itself refuses bytes after the end ("decoder failed").
  Brotli's metadata meta-blocks are skipped by the decoder and not visible from Python: not
  checked (no common encoder writes them).
* zstd: every frame, one after the other (as the zstd CLI and libraries do); skippable frames
  (arbitrary bytes every decoder ignores) and anything that is not a frame are errors. Windows
  past 8 MiB are refused (RFC 9659: HTTP zstd encoders must not use more), so a frame header cannot
  make the proxy reserve 128 MiB+ per message.

Stacked encodings ("gzip, br") are undone right to left, each layer under the same ceiling.
`DecodeError.code` says which kind of refusal it is; messages never carry the sender's bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import brotli

try:  # Python 3.14+; earlier: the backport that mitmproxy itself depends on
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd  # type: ignore[no-redef]

# Members (gzip) or frames (zstd) decoded per body. Concatenated members are legal but rare in a
# request; a body of thousands of tiny members only costs time, so past this it is refused.
MAX_MEMBERS = 64
# Input is fed in slices so the bytes left after each member are never copied whole.
_CHUNK = 64 << 10
_ZSTD_WINDOW_LOG_MAX = 23  # 8 MiB, RFC 9659

BAD_ENCODING = "bad-encoding"  # not valid in the encoding it claims (corrupt, truncated, unknown)
HIDDEN_DATA = "hidden-data"  # valid, but carries bytes a decoder skips or stops before


class DecodeError(ValueError):
    def __init__(self, message: str, code: str = BAD_ENCODING) -> None:
        super().__init__(message)
        self.code = code


_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_SKIPPED_FIELDS = 0x04 | 0x08 | 0x10  # FEXTRA, FNAME, FCOMMENT
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _gzip_header(head: bytes, first: bool) -> None:
    if head[:2] != _GZIP_MAGIC:
        if first:
            raise DecodeError("not gzip data")
        raise DecodeError("data after the end of the gzip stream", HIDDEN_DATA)
    if len(head) >= 4 and head[3] & _GZIP_SKIPPED_FIELDS:
        raise DecodeError("a gzip header carries a file name, comment or extra field (decoders skip them)",
                          HIDDEN_DATA)


def _zstd_header(head: bytes, first: bool) -> None:
    if head[:4] == _ZSTD_MAGIC:
        return
    if len(head) >= 4 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50:
        raise DecodeError("a skippable zstd frame (bytes every decoder ignores)", HIDDEN_DATA)
    if first:
        raise DecodeError("not zstd data")
    raise DecodeError("data after the end of the zstd frame", HIDDEN_DATA)


def _one_stream(head: bytes, first: bool) -> None:
    if not first:
        raise DecodeError("data after the end of the deflate stream", HIDDEN_DATA)


def _members(data: bytes, limit: int, new: Callable[[], Any], header: Callable[[bytes, bool], None],
             what: str) -> bytes:
    """Decode `data` as a sequence of members (gzip) or frames (zstd), or as one stream (deflate:
    its header check refuses a second). Returns at most limit + 1 bytes."""
    out = bytearray()
    view = memoryview(data)
    pos, members = 0, 0
    while True:
        header(data[pos:pos + 4], members == 0)
        members += 1
        if members > MAX_MEMBERS:
            raise DecodeError(f"more than {MAX_MEMBERS} concatenated {what} members")
        d = new()
        while not d.eof:
            if pos >= len(data):
                raise DecodeError(f"truncated {what} data")
            chunk = view[pos:pos + _CHUNK]
            pos += len(chunk)
            out += d.decompress(chunk, limit + 1 - len(out))
            if len(out) > limit:
                return bytes(out)  # the ceiling: the rest is never inflated
        pos -= len(d.unused_data)
        if pos >= len(data):
            return bytes(out)


def _gzip(data: bytes, limit: int) -> bytes:
    return _members(data, limit, lambda: zlib.decompressobj(31), _gzip_header, "gzip")


def _deflate(data: bytes, limit: int) -> bytes:
    try:
        return _members(data, limit, lambda: zlib.decompressobj(15), _one_stream, "deflate")  # zlib, RFC 9110
    except DecodeError as e:
        if e.code == HIDDEN_DATA:  # a valid zlib stream with more after it: not retried as raw
            raise
        zlib_failure: Exception = e
    except zlib.error as e:
        zlib_failure = e
    try:  # raw deflate, as some clients send (mitmproxy and most servers retry the same way)
        return _members(data, limit, lambda: zlib.decompressobj(-15), _one_stream, "deflate")
    except DecodeError as e:
        if e.code == HIDDEN_DATA:
            raise
    except zlib.error:
        pass
    raise zlib_failure


def _zstd(data: bytes, limit: int) -> bytes:
    options = {zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
    return _members(data, limit, lambda: zstd.ZstdDecompressor(options=options), _zstd_header, "zstd")


def _brotli(data: bytes, limit: int) -> bytes:
    # output_buffer_limit is a soft bound: brotli returns whole internal chunks (~32 KiB even when
    # asked for 10 bytes), keeping the rest of the input buffered (can_accept_more_data() is then
    # False). So: loop, drain with empty input, and cut. Bytes after the end of the stream make
    # process() raise "decoder failed".
    d = brotli.Decompressor()
    out = bytearray(d.process(data, output_buffer_limit=limit + 1))
    while not d.is_finished() and len(out) <= limit:
        more = d.process(b"", output_buffer_limit=limit + 1 - len(out))
        if not more:
            raise DecodeError("truncated br data")
        out += more
    return bytes(out[: limit + 1])


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gzip, "x-gzip": _gzip, "deflate": _deflate, "br": _brotli, "zstd": _zstd,
}


def _one(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return data[: limit + 1]
    decoder = _DECODERS.get(encoding)
    if decoder is None:
        raise DecodeError("unknown Content-Encoding")  # the value itself is the sender's: not echoed
    if not data:
        return b""  # nothing was encoded, nothing can hide
    try:
        return decoder(data, limit)
    except (zlib.error, brotli.error, zstd.ZstdError) as e:
        raise DecodeError(f"corrupt {encoding} data ({type(e).__name__})") from None


def decode(data: bytes, content_encoding: str, limit: int) -> bytes:
    """Undo `Content-Encoding` (applied left to right, so undone right to left). The result is
    cut at limit + 1 bytes: a caller that sees more than `limit` knows the body is too large (an
    inner layer past the limit stops the decoding there, the same way)."""
    encodings = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
    for encoding in reversed(encodings):
        data = _one(data, encoding, limit)
        if len(data) > limit:
            return data[: limit + 1]
    return data
