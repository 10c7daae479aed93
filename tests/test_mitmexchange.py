"""Flow -> Exchange: names, paths, trailers, bounded decoding (mitmproxy's test flows)."""

from __future__ import annotations

import gzip

from mitmproxy import http
from mitmproxy.test import tflow

from conftest import PAYLOADS
from telewarden.engine import strictjson
from telewarden.proxy.exchange import apply_to_request, candidate_hosts, http_exchange, normalize_host, normalize_path
from telewarden.engine.model import Decision, Mode, Repaired


def flow(url="https://telemetry.hasura.io/v1/http", body=b"", headers=()):
    f = tflow.tflow()
    f.request = http.Request.make("POST", url, body, dict(headers) if headers else {})
    f.client_conn.sni = f.server_conn.sni = f.request.host  # as a real client and mitmproxy would
    return f


def test_host_normalisation():
    assert normalize_host("TELEMETRY.Hasura.IO.") == "telemetry.hasura.io"
    assert normalize_host("telemetry.hasura.io:443") == "telemetry.hasura.io"
    assert normalize_host("[::1]:8080") == "::1" and normalize_host("") is None


def test_path_normalisation():
    assert normalize_path("/V1//%68ttp/?x=1") == ("/v1/http", "x=1")
    assert normalize_path("/v1/./x/../http") == ("/v1/http", "")
    assert normalize_path("//v1/http") == ("/v1/http", "")


def test_every_name_counts():
    f = flow(url="https://other.test/v1/http")
    f.request.headers["Host"] = "Telemetry.Hasura.IO."
    f.client_conn.sni = "sni.example"
    f.server_conn.sni = None
    f.server_conn.address = ("other.test", 443)
    assert set(candidate_hosts(f)) == {"other.test", "telemetry.hasura.io", "sni.example"}


def test_trailers_are_judged_as_headers_and_scrub_drops_them(engine):
    f = flow(body=strictjson.dumps(PAYLOADS["cli-v1.3"]), headers={"Content-Type": "application/json"})
    f.request.trailers = http.Headers(x_secret="AKIAIOSFODNN7EXAMPLE")
    ex = http_exchange(f)
    assert ("trailer:x-secret", "AKIAIOSFODNN7EXAMPLE") in ex.headers
    v = engine.inspect(ex, Mode.SCRUB)
    # a trailer's name is the sender's: shown by digest (issue 10), never verbatim
    assert [x.rule for x in v.findings] == ["hasura.header.unexpected"]
    assert v.findings[0].pointer.startswith("header:trailer:(key:") and "x-secret" not in v.findings[0].pointer
    assert v.decision is Decision.SCRUBBED
    apply_to_request(f.request, v.repaired)
    assert "x-secret" not in f.request.trailers


def test_bomb_is_cut_before_the_engine_sees_it(engine):
    bomb = gzip.compress(b"\0" * (32 << 20))
    f = flow(body=b"", headers={"Content-Encoding": "gzip"})
    f.request.raw_content = bomb
    ex = http_exchange(f, max_body=4096)
    assert len(ex.body) == 4097 and ex.body_problem is None


def test_broken_encoding_is_a_body_problem():
    f = flow(headers={"Content-Encoding": "gzip"})
    f.request.raw_content = b"not gzip"
    assert http_exchange(f).body_problem.startswith("bad-encoding")


def test_scrubbed_body_is_reencoded_with_its_length():
    f = flow(body=b"", headers={"Content-Encoding": "gzip"})
    f.request.raw_content = gzip.compress(b'{"a":1}')
    apply_to_request(f.request, Repaired(body=b'{"a":2}', drop_headers=(), clear_query=False))
    assert gzip.decompress(f.request.raw_content) == b'{"a":2}'
    assert int(f.request.headers["content-length"]) == len(f.request.raw_content)
