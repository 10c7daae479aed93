"""Bounded Content-Encoding decoding: same results as the codecs, never more than the limit, and
nothing forwarded that was not decoded (a second member, trailing bytes, skipped header fields)."""

from __future__ import annotations

import gzip
import struct
import time
import zlib

import brotli
import pytest

from telewarden.engine.decoding import BAD_ENCODING, HIDDEN_DATA, MAX_MEMBERS, DecodeError, decode, zstd

DATA = b'{"topic":"cli","data":{"command":"hasura version"}}' * 10
SECRET = b'{"command":"hasura migrate apply --admin-secret hunter2"}'
LIMIT = 1 << 20


def _raw_deflate(d: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(d) + c.flush()


# name -> (Content-Encoding value, encoder)
ENCODERS = {
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "deflate-zlib": ("deflate", zlib.compress),
    "deflate-raw": ("deflate", _raw_deflate),
    "br": ("br", brotli.compress),
    "zstd": ("zstd", lambda d: zstd.compress(d)),
    "identity": ("identity", lambda d: d),
}
# What a second member/frame after the first one gives: decoded too (every gzip member and zstd
# frame is read by receiving decoders), or refused (one-stream formats).
SECOND_MEMBER = {"gzip": "decoded", "x-gzip": "decoded", "zstd": "decoded",
                 "deflate-zlib": HIDDEN_DATA, "deflate-raw": HIDDEN_DATA, "br": BAD_ENCODING}
# Trailing garbage: refused. Brotli's own decoder fails on it ("decoder failed"): bad-encoding.
GARBAGE = {"gzip": HIDDEN_DATA, "x-gzip": HIDDEN_DATA, "zstd": HIDDEN_DATA,
           "deflate-zlib": HIDDEN_DATA, "deflate-raw": HIDDEN_DATA, "br": BAD_ENCODING}
COMPRESSED = sorted(set(ENCODERS) - {"identity"})


def enc(name: str, data: bytes) -> bytes:
    return ENCODERS[name][1](data)


def header(name: str) -> str:
    return ENCODERS[name][0]


def refused(body: bytes, encoding: str, code: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode(body, encoding, LIMIT)
    assert e.value.code == code, e.value


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_clean(name):
    assert decode(enc(name, DATA), header(name), LIMIT) == DATA


@pytest.mark.parametrize("name", COMPRESSED)
def test_second_member_holding_a_secret(name):
    body = enc(name, DATA) + enc(name, SECRET)
    if SECOND_MEMBER[name] == "decoded":
        got = decode(body, header(name), LIMIT)
        assert got == DATA + SECRET  # the secret is inspected, not forwarded unseen
        if name.endswith("gzip"):
            assert got == gzip.decompress(body)
        else:
            assert got == zstd.decompress(body)
    else:
        refused(body, header(name), SECOND_MEMBER[name])


@pytest.mark.parametrize("garbage", [b"x", b"\0", b"\0" * 16, SECRET, b"\x1f"])
@pytest.mark.parametrize("name", COMPRESSED)
def test_trailing_garbage(name, garbage):
    refused(enc(name, DATA) + garbage, header(name), GARBAGE[name])


@pytest.mark.parametrize("cut", [1, 2, 5, 10])
@pytest.mark.parametrize("name", COMPRESSED)
def test_truncated(name, cut):
    refused(enc(name, DATA)[:-cut], header(name), BAD_ENCODING)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_bomb_is_cut_at_the_limit(name):
    zeros = b"\0" * (64 << 20)  # 64 MiB: a few KiB compressed
    bomb = enc(name, zeros)
    if name != "identity":
        assert len(bomb) < 1 << 20
    out = decode(bomb, header(name), 1000)
    assert out == b"\0" * 1001  # limit + 1: the caller reports "too large"


@pytest.mark.parametrize("name", ["gzip", "zstd"])
def test_a_bomb_in_the_second_member_is_cut_too(name):
    out = decode(enc(name, DATA) + enc(name, b"\0" * (64 << 20)), name, 1000)
    assert len(out) == 1001 and out.startswith(DATA)


# -- stacked encodings: "a, b" means a was applied first ------------------------------------------

STACKS = [("gzip", "br"), ("deflate-zlib", "zstd"), ("br", "gzip"), ("zstd", "deflate-raw"), ("gzip", "gzip")]


def stack(names, data: bytes, tail=lambda name, body: body) -> tuple[bytes, str]:
    for n in names:
        data = tail(n, enc(n, data)) if n == names[-1] else enc(n, data)
    return data, ", ".join(header(n) for n in names)


@pytest.mark.parametrize("names", STACKS, ids="+".join)
def test_stacked_clean(names):
    body, ce = stack(names, DATA)
    assert decode(body, ce, LIMIT) == DATA


@pytest.mark.parametrize("names", STACKS, ids="+".join)
def test_stacked_second_member(names):
    outer = names[-1]
    body, ce = stack(names, DATA)
    body += enc(outer, enc(names[0], SECRET) if len(names) == 2 else SECRET)
    if SECOND_MEMBER[outer] == "decoded":
        # the outer layer yields both inner streams; the inner layer then decodes or refuses them
        inner = names[0]
        if SECOND_MEMBER[inner] == "decoded":
            assert decode(body, ce, LIMIT) == DATA + SECRET
        else:
            refused(body, ce, SECOND_MEMBER[inner])
    else:
        refused(body, ce, SECOND_MEMBER[outer])


@pytest.mark.parametrize("names", STACKS, ids="+".join)
def test_stacked_inner_second_member(names):
    inner, outer = names
    ce = f"{header(inner)}, {header(outer)}"
    body = enc(outer, enc(inner, DATA) + enc(inner, SECRET))
    if SECOND_MEMBER[inner] == "decoded":
        assert decode(body, ce, LIMIT) == DATA + SECRET
    else:
        refused(body, ce, SECOND_MEMBER[inner])


@pytest.mark.parametrize("names", STACKS, ids="+".join)
def test_stacked_garbage_truncation_and_bomb(names):
    body, ce = stack(names, DATA, lambda n, b: b + b"garbage")
    refused(body, ce, GARBAGE[names[-1]])
    body, ce = stack(names, DATA, lambda n, b: b[:-3])
    refused(body, ce, BAD_ENCODING)
    inner_trunc = enc(names[-1], enc(names[0], DATA)[:-3])
    refused(inner_trunc, ce, BAD_ENCODING)
    body, ce = stack(names, b"\0" * (64 << 20))
    assert len(body) < 1 << 20
    assert len(decode(body, ce, 1000)) == 1001  # too large (cut in whichever layer passed the limit)


def test_an_inner_layer_past_the_limit_is_too_large_not_corrupt():
    inner = gzip.compress(bytes(range(256)) * 100, compresslevel=0)  # ~25 KiB, stored
    assert decode(brotli.compress(inner), "gzip, br", 1000) == inner[:1001]


# -- what decoders skip ------------------------------------------------------------------------

@pytest.mark.parametrize("flag,extra", [
    (0x08, b"secret-file-name.json\0"),  # FNAME
    (0x10, b"db01.acme.internal\0"),  # FCOMMENT
    (0x04, struct.pack("<H", 6) + b"secret"),  # FEXTRA
])
def test_gzip_header_fields_decoders_skip_are_refused(flag, extra):
    plain = gzip.compress(DATA, mtime=0)
    body = plain[:3] + bytes([flag]) + plain[4:10] + extra + plain[10:]
    assert gzip.decompress(body) == DATA  # a receiver reads the body and skips the field
    refused(body, "gzip", HIDDEN_DATA)


def test_zstd_skippable_frames_are_refused():
    skippable = struct.pack("<II", 0x184D2A5E, len(SECRET)) + SECRET
    z = zstd.compress(DATA)
    assert zstd.decompress(z + skippable) == DATA  # every decoder ignores it
    refused(z + skippable, "zstd", HIDDEN_DATA)
    refused(skippable + z, "zstd", HIDDEN_DATA)


def test_zstd_window_past_8_mib_is_refused():
    def frame(window_log):  # streamed: content size unknown, so the header declares the window
        c = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: window_log})
        return c.compress(b"\0" * 100) + c.flush()
    assert zstd.get_frame_info(frame(24)).decompressed_size is None
    assert decode(frame(23), "zstd", LIMIT) == b"\0" * 100
    refused(frame(24), "zstd", BAD_ENCODING)


def test_too_many_members_are_refused_quickly():
    member = gzip.compress(b"", mtime=0)
    assert decode(member * MAX_MEMBERS, "gzip", LIMIT) == b""
    t0 = time.perf_counter()
    refused(member * ((1 << 20) // len(member)), "gzip", BAD_ENCODING)
    assert time.perf_counter() - t0 < 0.5


def test_many_members_in_a_large_body_cost_linear_time():
    body = gzip.compress(b"a" * 1000, compresslevel=0) * MAX_MEMBERS  # ~64 KiB of stored members
    t0 = time.perf_counter()
    assert decode(body, "gzip", LIMIT) == b"a" * 1000 * MAX_MEMBERS
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("name", ["gzip", "deflate", "br", "zstd", "compress", "gzip, compress", "identity, xz"])
def test_broken_or_unknown_encoding_is_an_error(name):
    with pytest.raises(DecodeError) as e:
        decode(b"this is not compressed at all", name, LIMIT)
    assert e.value.code == BAD_ENCODING
    assert "compress" not in str(e.value) and "xz" not in str(e.value)  # the sender's value is not echoed


def test_empty_input_and_empty_encoding_list():
    assert decode(b"", "gzip", LIMIT) == b""
    assert decode(DATA, " , ", LIMIT) == DATA
    assert decode(gzip.compress(DATA), " GZIP ,identity", LIMIT) == DATA
