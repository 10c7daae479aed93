"""Bounded Content-Encoding decoding: same results as the codecs, never more than the limit."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from telewarden.decoding import DecodeError, decode, zstd

DATA = b'{"topic":"cli","data":{"command":"hasura version"}}' * 10
ENCODERS = {
    "gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
    "zstd": lambda d: zstd.compress(d),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_round_trip(name):
    assert decode(ENCODERS[name](DATA), name, 1 << 20) == DATA


def test_raw_deflate_and_chains():
    raw = zlib.compressobj(wbits=-15)
    body = raw.compress(DATA) + raw.flush()
    assert decode(body, "deflate", 1 << 20) == DATA
    assert decode(brotli.compress(gzip.compress(DATA)), "gzip, br", 1 << 20) == DATA


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_bomb_is_cut_at_the_limit(name):
    bomb = ENCODERS[name](b"\0" * (64 << 20))  # 64 MiB of zeros: a few KiB compressed
    assert len(bomb) < 1 << 20
    out = decode(bomb, name, 1000)
    assert len(out) == 1001


@pytest.mark.parametrize("name", ["gzip", "deflate", "br", "zstd", "compress"])
def test_broken_or_unknown_encoding_is_an_error(name):
    with pytest.raises(DecodeError):
        decode(b"this is not compressed at all", name, 1 << 20)


def test_truncated_gzip_is_an_error():
    with pytest.raises(DecodeError):
        decode(gzip.compress(DATA)[:20], "gzip", 1 << 20)
