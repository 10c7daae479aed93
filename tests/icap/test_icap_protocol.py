"""The ICAP service on the wire, without Squid: a raw ICAP client against an in-process service.
OPTIONS, Preview and 100 Continue, 204 vs 200, answers for each decision, fail closed, ICAP errors,
and a bounded fuzz of the parser and of the running service."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
import time

import pytest

from conftest import PAYLOADS, VIOLATIONS
from icap.conftest import read_all
from telewarden.engine import strictjson
from telewarden.audit.trail import AuditError
from telewarden.icap import protocol
from telewarden.icap.server import ServerLimits

HOST = "telemetry.hasura.io"
GOOD = json.dumps(PAYLOADS["cli-v1.3"], separators=(",", ":")).encode()
BAD = strictjson.dumps(next(c for c in VIOLATIONS if c["name"] == "cli-flag-values")["body"])
UNREPAIRABLE = strictjson.dumps(next(c for c in VIOLATIONS if c["name"] == "cli-wrong-type")["body"])


def http_head(method="POST", target=f"https://{HOST}/v1/http", host=HOST, extra=(), length=None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Content-Type: application/json", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reqmod(head: bytes, body: bytes | None, *, preview: int | None = None, allow204: bool = True,
           service: str = "/telewarden", upto_preview: bool = False) -> bytes:
    """A REQMOD as Squid sends it. With `preview`, the preview part ends in `0; ieof` when the
    whole body fits, else `0` (then the rest follows only after 100 Continue, unless upto_preview)."""
    hdrs = [f"REQMOD icap://127.0.0.1{service} ICAP/1.0", "Host: 127.0.0.1"]
    if allow204:
        hdrs.append("Allow: 204, trailers")
    if preview is not None:
        hdrs.append(f"Preview: {preview}")
    hdrs.append(f"Encapsulated: req-hdr=0, {'req-body' if body is not None else 'null-body'}={len(head)}")
    out = ("\r\n".join(hdrs) + "\r\n\r\n").encode() + head
    if body is None:
        return out
    if preview is None:
        return out + protocol.chunked(body)
    first = body[:preview]
    out += (f"{len(first):x}\r\n".encode() + first + b"\r\n" if first else b"")
    if len(body) <= preview:
        return out + b"0; ieof\r\n\r\n"
    out += b"0\r\n\r\n"
    if upto_preview:
        return out
    return out + protocol.chunked(body[preview:])


def parse_answer(data: bytes) -> tuple[int, dict, dict, bytes | None, bytes]:
    """(status, ICAP headers, encapsulated heads by name, body or None, the bytes left over); a
    100 Continue before the answer is skipped."""
    while data.startswith(b"ICAP/1.0 100 "):
        data = data.partition(b"\r\n\r\n")[2]
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    first, *lines = head.decode("latin-1").split("\r\n")
    assert first.startswith("ICAP/1.0 "), first
    status = int(first.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    sections, body = {}, None
    if "encapsulated" in headers:
        entries = [(n.strip(), int(o)) for n, _, o in (e.partition("=") for e in headers["encapsulated"].split(","))]
        for (name, start), (_, end) in zip(entries, entries[1:]):
            sections[name] = rest[start:end]
        last, off = entries[-1]
        rest = rest[off:]
        if last != "null-body":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
    return status, headers, sections, body, rest


def roundtrip(svc, data: bytes) -> tuple[int, dict, dict, bytes | None, bytes]:
    return parse_answer(svc.exchange(data))


# -- OPTIONS, Preview, 204 ---------------------------------------------------------------------

def test_options_advertise_reqmod_preview_and_204(service):
    svc = service()
    status, headers, _, body, _ = roundtrip(svc, b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\nHost: x\r\n\r\n")
    assert status == 200 and body is None
    assert headers["methods"] == "REQMOD" and headers["allow"] == "204" and headers["preview"] == "0"
    assert headers["encapsulated"] == "null-body=0" and headers["istag"].startswith('"tw-')
    assert headers["transfer-preview"] == "*" and int(headers["max-connections"]) > 0


def test_unclaimed_host_is_answered_204_after_the_preview_without_asking_for_the_body(service):
    svc = service("block")
    with svc.connect() as s:
        s.sendall(reqmod(http_head(target="https://other.test/upload", host="other.test"), b"x" * 5000,
                         preview=0, upto_preview=True))
        s.settimeout(5)
        answer = s.recv(65536)
        assert answer.startswith(b"ICAP/1.0 204 ")  # not 100 Continue: the body is never read
        s.sendall(b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")  # the connection goes on
        assert s.recv(65536).startswith(b"ICAP/1.0 200 ")
    assert svc.decisions() == []  # unclaimed: not recorded


def test_claimed_host_gets_100_continue_then_the_verdict(service):
    svc = service("block")
    with svc.connect() as s:
        s.settimeout(5)
        s.sendall(reqmod(http_head(length=len(BAD)), BAD, preview=0, upto_preview=True))
        assert s.recv(65536) == b"ICAP/1.0 100 Continue\r\n\r\n"
        s.sendall(protocol.chunked(BAD))
        status, _, sections, body, _ = parse_answer(s.recv(65536))
    assert status == 200 and sections["res-hdr"].startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"X-Telewarden: blocked\r\n" in sections["res-hdr"]
    answer = json.loads(body)
    assert answer["telewarden"] == "blocked" and answer["rules"] == ["hasura.cli.command-args"]
    assert f"Content-Length: {len(body)}".encode() in sections["res-hdr"]
    [rec] = svc.decisions()
    assert rec["decision"] == "blocked" and rec["id"] == answer["message"]


@pytest.mark.parametrize("preview", [None, 0, 4096])
def test_compliant_request_is_204(service, preview):
    svc = service("block")
    status, _, _, _, _ = roundtrip(svc, reqmod(http_head(length=len(GOOD)), GOOD, preview=preview))
    assert status == 204
    assert svc.decisions()[-1]["decision"] == "forwarded"


def test_without_allow_204_a_compliant_request_comes_back_unchanged(service):
    svc = service("scrub")
    head = http_head(length=len(GOOD))
    status, _, sections, body, _ = roundtrip(svc, reqmod(head, GOOD, allow204=False))
    assert status == 200 and sections["req-hdr"] == head and body == GOOD


def test_scrubbed_request_comes_back_repaired_with_its_length(service, engine):
    svc = service("scrub")
    head = http_head(length=len(BAD), extra=["Cookie: session=abc"])
    status, _, sections, body, _ = roundtrip(svc, reqmod(head, BAD, preview=0))
    assert status == 200
    new_head = sections["req-hdr"].decode()
    assert new_head.startswith(f"POST https://{HOST}/v1/http HTTP/1.1\r\n")
    assert "Cookie" not in new_head and f"Content-Length: {len(body)}\r\n" in new_head
    assert json.loads(body)["data"]["command"] == "hasura migrate apply"
    assert svc.decisions()[-1]["decision"] == "scrubbed"


def test_scrubbed_gzip_body_is_forwarded_identity_encoded(service):
    svc = service("scrub")
    raw = gzip.compress(BAD)
    head = http_head(length=len(raw), extra=["Content-Encoding: gzip"])
    status, _, sections, body, _ = roundtrip(svc, reqmod(head, raw))
    assert status == 200 and b"Content-Encoding" not in sections["req-hdr"]
    assert json.loads(body)["data"]["command"] == "hasura migrate apply"


def test_unrepairable_request_is_blocked_in_scrub_mode(service):
    svc = service("scrub")
    status, _, sections, body, _ = roundtrip(svc, reqmod(http_head(), UNREPAIRABLE))
    assert status == 200 and sections["res-hdr"].startswith(b"HTTP/1.1 403 ")
    assert json.loads(body)["rules"] == ["hasura.schema.type"]


def test_body_over_max_body_is_blocked(service):
    svc = service("scrub", max_body=100)
    status, _, sections, body, _ = roundtrip(svc, reqmod(http_head(), GOOD + b" " * 5000, preview=0))
    assert status == 200 and sections["res-hdr"].startswith(b"HTTP/1.1 403 ")
    assert json.loads(body)["rules"] == ["telewarden.body.too-large"]


def test_body_over_max_body_in_audit_mode_is_forwarded_and_recorded(service):
    svc = service("audit", max_body=100)
    status, *_ = roundtrip(svc, reqmod(http_head(), GOOD + b" " * 5000))
    assert status == 204
    rec = svc.decisions()[-1]
    assert rec["decision"] == "forwarded" and rec["findings"][0]["rule"] == "telewarden.body.too-large"


def test_non_canonical_target_is_forwarded_in_canonical_form_in_scrub(service):
    svc = service("scrub")
    status, _, sections, body, _ = roundtrip(svc, reqmod(http_head(target=f"https://{HOST}/V1//%68ttp/"), GOOD))
    assert status == 200 and sections["req-hdr"].startswith(f"POST https://{HOST}/v1/http HTTP/1.1\r\n".encode())
    assert body == GOOD


@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_websocket_upgrade_to_a_claimed_host_is_blocked(service, mode):
    svc = service(mode)
    head = http_head("GET", f"https://{HOST}/v1/ws",
                     extra=["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13",
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
    status, _, sections, body, _ = roundtrip(svc, reqmod(head, None))
    assert status == 200 and sections["res-hdr"].startswith(b"HTTP/1.1 403 ")
    assert "telewarden.upgrade.uninspectable" in json.loads(body)["rules"]
    # the same upgrade to a host no pack claims is none of our business
    other = http_head("GET", "https://other.test/ws", host="other.test", extra=["Connection: Upgrade", "Upgrade: websocket"])
    assert roundtrip(svc, reqmod(other, None))[0] == 204


def test_connect_is_passed_without_judgement(service):
    svc = service("block")
    head = f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode()
    assert roundtrip(svc, reqmod(head, None))[0] == 204
    assert svc.decisions() == []


# -- fail closed ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,status", [("scrub", 200), ("block", 200), ("audit", 204)])
def test_internal_error_blocks_in_enforcing_modes_and_forwards_in_audit(service, mode, status):
    svc = service(mode)

    def boom(*a, **k):
        raise RuntimeError("injected")

    svc.engine.inspect = boom
    got, _, sections, body, _ = roundtrip(svc, reqmod(http_head(), GOOD))
    assert got == status
    if mode != "audit":
        assert sections["res-hdr"].startswith(b"HTTP/1.1 403 ")
        assert json.loads(body)["rules"] == ["telewarden.internal-error"]
    rec = svc.decisions()[-1]
    assert rec["findings"][0]["rule"] == "telewarden.internal-error"
    assert rec["decision"] == ("forwarded" if mode == "audit" else "blocked")


def test_unwritable_trail_blocks_in_enforcing_modes(service):
    svc = service("scrub")

    def fail(rec):
        raise AuditError("disk full")

    svc.trail.write = fail
    status, _, sections, body, _ = roundtrip(svc, reqmod(http_head(), GOOD))
    assert status == 200 and sections["res-hdr"].startswith(b"HTTP/1.1 403 ")
    assert "audit trail unwritable" in json.loads(body)["reason"]


# -- ICAP errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data,status", [
    (b"RESPMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=0\r\n\r\n", 400),
    (b"RESPMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: res-hdr=0, null-body=19\r\n\r\n"
     b"HTTP/1.1 200 OK\r\n\r\n", 405),
    (b"OPTIONS icap://127.0.0.1/elsewhere ICAP/1.0\r\n\r\n", 404),
    (b"OPTIONS icap://127.0.0.1/telewarden ICAP/2.0\r\n\r\n", 505),
    (b"FOO icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"REQMOD icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n", 400),  # no Encapsulated
    (b"REQMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body=99999999\r\n\r\n", 413),
    (b"REQMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: req-body=0, req-hdr=5\r\n\r\n", 400),
    (b"REQMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=4\r\n\r\nxx\r\n", 400),
    (b"REQMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body=33\r\n\r\n"
     b"POST /v1/http HTTP/1.1\r\nHost: a\r\n\r\nzz\r\n", 400),  # chunk size not hex
    (b"REQMOD icap://127.0.0.1/telewarden ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body=33\r\n\r\n"
     b"POST /v1/http HTTP/1.1\r\nHost: a\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", 400),  # chunk longer than its size
    (b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 400),
    (b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 400),
])
def test_malformed_icap_gets_an_icap_error_and_the_service_goes_on(service, data, status):
    svc = service()
    assert roundtrip(svc, data)[0] == status
    assert roundtrip(svc, b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")[0] == 200


@pytest.mark.parametrize("mode,status", [("block", 200), ("scrub", 200), ("audit", 204)])
def test_a_head_h11_refuses_is_blocked_when_claimed_and_passed_when_not(service, mode, status):
    """Squid parsed the request already; a stricter parser must not turn unrelated traffic into
    errors, and must not let a claimed destination through unjudged."""
    svc = service(mode)
    bad = b"POST https://telemetry.hasura.io/v1/http HTTP/1.1\r\nBad Header: x\r\nHost: telemetry.hasura.io\r\n\r\n"
    got, _, sections, body, _ = roundtrip(svc, reqmod(bad, GOOD))
    assert got == status
    rec = svc.decisions()[-1]
    assert rec["findings"][0]["rule"] == "telewarden.request.malformed" and "Bad Header" not in json.dumps(rec)
    if mode != "audit":
        assert sections["res-hdr"].startswith(b"HTTP/1.1 403 ")
        assert json.loads(body)["rules"] == ["telewarden.request.malformed"]
    other = b"POST https://other.test/x HTTP/1.1\r\nBad Header: x\r\nHost: other.test\r\n\r\n"
    assert roundtrip(svc, reqmod(other, GOOD, preview=0))[0] == 204
    nameless = b"POST /v1/http HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"  # HTTP/1.1 without Host
    assert roundtrip(svc, reqmod(nameless, GOOD))[0] == status
    assert roundtrip(svc, reqmod(b"not http at all\r\n\r\n", GOOD))[0] == 400


def test_connections_over_the_limit_get_503(service):
    svc = service(limits=ServerLimits(max_connections=1, idle_timeout=5, request_timeout=5))
    with svc.connect() as first:
        first.sendall(b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")
        first.settimeout(5)
        assert first.recv(65536).startswith(b"ICAP/1.0 200 ")
        with svc.connect() as second:
            second.settimeout(5)
            assert read_all(second).startswith(b"ICAP/1.0 503 ")


def test_a_stalled_request_times_out(service):
    svc = service(limits=ServerLimits(idle_timeout=5, request_timeout=0.5))
    with svc.connect() as s:
        s.settimeout(5)
        s.sendall(reqmod(http_head(), GOOD)[:-20])  # the body never ends
        t0 = time.monotonic()
        assert read_all(s).startswith(b"ICAP/1.0 408 ")
        assert time.monotonic() - t0 < 3


# -- fuzz -----------------------------------------------------------------------------------------

SEEDS = [
    b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\nHost: x\r\n\r\n",
    reqmod(http_head(length=len(GOOD)), GOOD),
    reqmod(http_head(length=len(BAD)), BAD, preview=0),
    reqmod(http_head(length=len(GOOD)), GOOD, preview=64),
    reqmod(http_head(target="https://other.test/x", host="other.test"), b"abc" * 50, preview=0),
    reqmod(http_head("GET", f"https://{HOST}/v1/ws", extra=["Upgrade: websocket"]), None),
    reqmod(http_head(extra=["Content-Encoding: gzip"]), gzip.compress(GOOD)),
]
NASTY = [b"\r\n", b"\n", b"\x00", b";", b"ieof", b"ffffffff", b"-1", b" ", b"999999999999", b"0\r\n\r\n",
         b"Encapsulated: req-hdr=0, req-body=1\r\n", b":", b"\xff\xfe", b"a" * 70000, b"=", b","]


def mutate(rng: random.Random, data: bytes) -> bytes:
    op = rng.randrange(7)
    i = rng.randrange(len(data) + 1)
    if op == 0:  # truncate
        return data[:i]
    if op == 1:  # flip bytes
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if op == 2:  # insert something nasty
        return data[:i] + rng.choice(NASTY) + data[i:]
    if op == 3:  # delete a span
        return data[:i] + data[i + rng.randint(1, 40):]
    if op == 4:  # duplicate a span
        j = min(len(data), i + rng.randint(1, 200))
        return data[:j] + data[i:j] + data[j:]
    if op == 5:  # wrong chunk sizes
        return data.replace(b"\r\n0\r\n", b"\r\n" + rng.choice([b"1", b"zz", b"fffffff", b"0;x", b" 0"]) + b"\r\n", 1)
    return data.replace(b"Encapsulated: ", b"Encapsulated: " + rng.choice(
        [b"req-body=0, ", b"null-body=0, ", b"req-hdr=10, ", b"res-hdr=0, ", b"x=1, ", b"req-hdr=-1, "]), 1)


async def _parse_everything(data: bytes, limits: protocol.Limits) -> None:
    reader = asyncio.StreamReader(limit=80 << 10)
    reader.feed_data(data)
    reader.feed_eof()
    while True:
        req = await protocol.read_request(reader, limits)
        if req.method == "REQMOD":
            try:
                protocol.parse_http_head(req.http_head, limits)
            except protocol.ICAPError:
                protocol.lenient_head(req.http_head, limits)  # the server's fallback: never raises
        if req.has_body:
            await protocol.read_chunks(reader, limits, protocol.Body(), keep=1 << 16, drain_limit=1 << 20)


def test_fuzz_the_parser_only_ever_raises_icap_errors():
    rng = random.Random(1507)
    limits = protocol.Limits()
    deadline = time.monotonic() + 8
    count = 0
    loop = asyncio.new_event_loop()
    try:
        while count < 4000 and time.monotonic() < deadline:
            data = rng.choice(SEEDS)
            for _ in range(rng.randint(1, 3)):
                data = mutate(rng, data)
            try:
                loop.run_until_complete(_parse_everything(data, limits))
            except (protocol.ICAPError, protocol.Closed):
                pass
            count += 1
    finally:
        loop.close()
    assert count >= 500


def test_fuzz_the_running_service_answers_or_closes_and_stays_up(service):
    svc = service("scrub", limits=ServerLimits(idle_timeout=2, request_timeout=1))
    rng = random.Random(3507)
    deadline = time.monotonic() + 5
    count = 0
    while count < 300 and time.monotonic() < deadline:
        data = mutate(rng, rng.choice(SEEDS))
        with svc.connect(timeout=3) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            answer = read_all(s)
        assert answer == b"" or answer.startswith(b"ICAP/1.0 "), answer[:80]
        count += 1
    assert count >= 50
    assert roundtrip(svc, b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")[0] == 200
    deadline = time.monotonic() + 3
    while svc.server.connections and time.monotonic() < deadline:  # every connection was let go
        time.sleep(0.05)
    assert svc.server.connections == 0


def test_close_lets_go_of_idle_persistent_connections(packs, tmp_path):
    from icap.conftest import LocalService

    svc = LocalService(packs, tmp_path).start()
    with svc.connect() as s:  # a proxy's idle persistent connection
        s.settimeout(5)
        s.sendall(b"OPTIONS icap://127.0.0.1/telewarden ICAP/1.0\r\n\r\n")
        assert s.recv(65536).startswith(b"ICAP/1.0 200 ")
        t0 = time.monotonic()
        svc.stop()
        assert time.monotonic() - t0 < 2
        assert read_all(s) == b""  # closed without a word
