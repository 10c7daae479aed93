"""`check` reads a flow file without building whole flows (flows.read with `claim` and
`whole=False`): the request, the names and the WebSocket messages only, and for a flow no pack
claims, its names only. What is judged must be what the whole flow holds, and what cannot be read
must be said as it always was."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import random
from pathlib import Path

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http, io as mitmio, websocket
from mitmproxy.io import compat, tnetstring
from mitmproxy.net import encoding
from mitmproxy.proxy import mode_specs
from mitmproxy.test import tflow

from conftest import ROOT, VIOLATIONS
from support.docpaths import at, paths
from telewarden.recordings import flows
from telewarden.recordings.flows import ReadLog, read
from telewarden.proxy.exchange import http_exchange

HOST = "telemetry.hasura.io"
BAD = json.dumps(next(c for c in VIOLATIONS if c["transport"] == "http")["body"]).encode()
BAD_WS = json.dumps(next(c for c in VIOLATIONS if c["transport"] == "websocket")["body"]).encode()
CORPUS = sorted([*(ROOT / "tests" / "data" / "mitmproxy").glob("*.mitm"), *(ROOT / "examples" / "flows").glob("*.mitm")])


def _telemetry(body: bytes = BAD) -> http.HTTPFlow:
    f = tflow.tflow(resp=True)
    f.request = http.Request.make("POST", f"https://{HOST}/v1/http", body, {"Content-Type": "application/json"})
    f.client_conn.sni = f.server_conn.sni = HOST
    f.server_conn.address = (HOST, 443)
    return f


def odd_flows() -> list[http.HTTPFlow]:
    """Telemetry flows with everything the exchange is made of set in unusual ways."""
    out = [_telemetry()]
    for enc in ("gzip", "br", "deflate", "zstd"):
        f = _telemetry()
        f.request.headers["content-encoding"] = enc
        f.request.raw_content = encoding.encode(BAD, enc)
        out.append(f)
    f = _telemetry(b"not gzip")
    f.request.headers["content-encoding"] = "gzip"
    out.append(f)
    f = _telemetry()
    f.request.headers.add("Host", "elsewhere.example")  # two Host headers
    f.request.headers[b"X-Bin\xff"] = b"\xfe\xff"
    out.append(f)
    f = _telemetry()
    f.request.http_version, f.request.authority, f.request.host = "HTTP/2.0", HOST, "10.0.0.1"
    out.append(f)
    f = _telemetry()
    f.request.trailers = http.Headers(x_trailer="hasura migrate apply --admin-secret x")
    out.append(f)
    f = _telemetry()
    f.request.path = "/v1/../v1/http/?admin_secret=abc&x=%zz#frag"
    out.append(f)
    f = _telemetry()
    f.request.timestamp_start, f.request.timestamp_end = 1e132, None
    out.append(f)
    f = _telemetry()
    f.request.content = None
    out.append(f)
    f = _telemetry()
    f.metadata["telewarden"] = {"decision": "scrubbed", "counts": {"scrubbed": 1}, "rules": ["hasura.cli.command-args"]}
    out.append(f)
    f = _telemetry()  # reverse mode: the configured target is one of the names
    f.client_conn.proxy_mode = mode_specs.ProxyMode.parse(f"reverse:https://{HOST}")
    f.request.host, f.server_conn.address, f.client_conn.sni, f.server_conn.sni = "127.0.0.1", ("127.0.0.1", 443), None, None
    f.request.headers["host"] = "127.0.0.1"
    out.append(f)
    f = tflow.twebsocketflow()
    f.request.url = f"https://{HOST}/v1/ws"
    f.request.headers["host"] = HOST
    f.websocket.messages = [websocket.WebSocketMessage(1, True, BAD_WS, 1.0),
                            websocket.WebSocketMessage(1, False, b"{}", 2.0),
                            websocket.WebSocketMessage(2, True, b"\x00\x01", 1e200)]
    out.append(f)
    other = tflow.tflow(resp=True)
    other.request.url = "https://api.example.com/v1/items"
    out += [other, tflow.tflow(err=True), tflow.tflow(resp=False), tflow.twebsocketflow()]
    return out


def states() -> list[dict]:
    """Every flow state of the corpus and of odd_flows(), migrated."""
    out = []
    for p in CORPUS:
        with p.open("rb") as f, contextlib.suppress(ValueError):
            while True:
                s = tnetstring.load(f)
                with contextlib.suppress(ValueError):
                    out.append(compat.migrate_flow(s))
    return out + [f.get_state() for f in odd_flows()]


def _names(fl) -> tuple:
    return (fl.client_conn.sni, fl.client_conn.proxy_mode, fl.server_conn.sni, fl.server_conn.address)


def _exchange(fl, max_body: int = 1 << 20) -> dict:
    d = dataclasses.asdict(http_exchange(fl, max_body))
    d.pop("id")
    return d


def test_the_judged_parts_are_what_the_whole_flow_holds():
    seen = 0
    for state in states():
        if state.get("type") != "http":
            assert flows._judged_flow(state) is None
            continue
        whole = mflow.Flow.from_state(copy.deepcopy(state))
        before = copy.deepcopy(state)
        judged = flows._judged_flow(state)
        assert state == before  # the state is left for from_state
        assert judged is not None
        assert vars(judged.request.data) == vars(whole.request.data)
        assert type(judged.request.data) is type(whole.request.data) and type(judged.request) is http.Request
        assert _names(judged) == _names(whole)
        assert _exchange(judged) == _exchange(whole)
        assert _exchange(judged, 16) == _exchange(whole, 16)  # the ceiling cuts alike
        assert (judged.websocket is None) == (whole.websocket is None)
        if whole.websocket is not None:
            assert [m.get_state() for m in judged.websocket.messages] == [m.get_state() for m in whole.websocket.messages]
        assert judged.metadata == whole.metadata
        seen += 1
    assert seen >= 30


ODD = (None, b"", b"\xff\xfe", "x", "", [], {}, True, False, 0, 1, -1, 1.5, 1e300, float("nan"), float("inf"), 2**70,
       b"telemetry.hasura.io", "telemetry.hasura.io", [b"a", b"b"], [[b"host", b"x"], [b"a"]], ["a", 1])


def _mutants(n: int, seed: int):
    rng = random.Random(seed)
    base = [s for s in states() if s.get("type") == "http"]
    for k in range(n):
        state = copy.deepcopy(base[k % len(base)])
        spots = [q for q in paths(state) if q]
        if k % 2:  # inside the request and the names: what is judged
            spots = [q for q in spots if q[0] in ("request", "websocket") or q[-1] in ("sni", "address", "proxy_mode")
                     or (len(q) > 1 and q[-2] == "address")] or spots
        for spot in rng.sample(spots, min(len(spots), rng.choice((1, 1, 2, 3)))):
            with contextlib.suppress(TypeError, KeyError, IndexError):
                parent = at(state, spot[:-1])
                if isinstance(parent, dict) and rng.random() < 0.1:
                    del parent[spot[-1]]
                else:
                    parent[spot[-1]] = rng.choice(ODD)
        yield state


def _outcome(fn, state):
    try:
        return "ok", fn(copy.deepcopy(state))
    except Exception as e:  # noqa: BLE001
        return "error", f"{type(e).__name__}: {e}"


def test_a_request_is_built_as_from_state_builds_it_or_rejected_as_it_rejects_it():
    fast = rejected = 0
    for state in _mutants(3000, 12):
        request = state.get("request")
        want = _outcome(http.Request.from_state, request)
        got = _outcome(flows._request, request)
        assert got[0] == want[0], (request, got, want)
        if want[0] == "error":
            assert got == want
            rejected += 1
        else:
            assert list(vars(got[1].data).items()) == list(vars(want[1].data).items())
            assert [type(v) for v in vars(got[1].data).values()] == [type(v) for v in vars(want[1].data).values()]
            fast += 1
    assert fast > 500 and rejected > 300  # both sides of the gate were exercised


def test_a_flow_is_judged_only_when_what_is_judged_reads_as_from_state_reads_it():
    """_judged_flow takes a mutated state only if its request, names and WebSocket messages are
    what from_state makes of them; the whole flow may still be one from_state rejects for a value
    in a part nothing judges (a response's status, a TLS timestamp)."""
    taken = whole_too = 0
    for state in _mutants(3000, 13):
        judged = flows._judged_flow(copy.deepcopy(state))
        if judged is None:
            continue
        taken += 1
        assert vars(judged.request.data) == vars(http.Request.from_state(copy.deepcopy(state["request"])).data)
        try:
            whole = mflow.Flow.from_state(copy.deepcopy(state))
        except Exception:  # noqa: BLE001
            continue
        whole_too += 1
        assert _names(judged) == _names(whole)
        assert _exchange(judged) == _exchange(whole)
        if whole.websocket is not None:
            assert [m.get_state() for m in judged.websocket.messages] == [m.get_state() for m in whole.websocket.messages]
    assert taken > 600 and whole_too > 250


def _read(path: Path, light: bool, claim=None):
    log = ReadLog()
    recs = list(read(path, 1 << 20, log, claim=claim, whole=not light))
    return recs, log


def _shown(recs) -> list:
    out = []
    for r in recs:
        d = dataclasses.asdict(r.exchange)
        d.pop("id")
        out.append((r.source, r.message_index, r.live, r.claimed, d if r.claimed else (d["hosts"], d["timestamp"])))
    return out


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_recording_reads_the_same_light_and_whole(path, engine):
    whole, wlog = _read(path, False)
    light, llog = _read(path, True, engine.claim)
    assert (wlog.problems, wlog.notes, wlog.skipped) == (llog.problems, llog.notes, llog.skipped)
    for r in whole:
        r.claimed = engine.claim(r.exchange.hosts) is not None
    assert _shown(light) == _shown(whole)


def _write(path: Path, fls) -> Path:
    with path.open("wb") as f:
        w = mitmio.FlowWriter(f)
        for fl in fls:
            w.add(fl)
    return path


def test_odd_flows_read_the_same_light_and_whole(tmp_path, engine):
    path = _write(tmp_path / "odd.mitm", [*odd_flows(), tflow.ttcpflow(), tflow.tdnsflow()])
    whole, wlog = _read(path, False)
    light, llog = _read(path, True, engine.claim)
    assert (wlog.problems, wlog.notes) == (llog.problems, llog.notes)
    assert sum(not r.claimed for r in light) >= 4 and sum(r.claimed for r in light) >= 16
    for r in whole:
        r.claimed = engine.claim(r.exchange.hosts) is not None
    assert _shown(light) == _shown(whole)


def test_a_broken_flow_is_said_as_before_and_the_rest_is_read(tmp_path, engine):
    good = _telemetry().get_state()
    cases = []
    s = copy.deepcopy(good)
    s["responsx"] = s.pop("response")  # a part renamed: from_state's KeyError
    cases.append((s, "KeyError: 'response'"))
    s = copy.deepcopy(good)
    s["client_conn"].pop("sni")
    cases.append((s, "KeyError: 'sni'"))
    s = copy.deepcopy(good)
    s["request"]["headers"] = [["host", b"x"]]
    cases.append((s, "TypeError: Header fields must be bytes."))
    s = copy.deepcopy(good)
    s["request"]["port"] = 443.0
    cases.append((s, "TypeError: Expected <class 'int'> for port, but got <class 'float'>."))
    s = copy.deepcopy(good)
    s["version"] = 99
    cases.append((s, "please update mitmproxy"))
    path = tmp_path / "broken.mitm"
    path.write_bytes(b"".join(tnetstring.dumps(c) for c, _ in cases) + tnetstring.dumps(good))
    for light in (False, True):
        recs, log = _read(path, light, engine.claim if light else None)
        assert [r.source for r in recs] == [f"broken.mitm#{len(cases)}"]
        assert len(log.problems) == len(cases)
        for line, (_, why) in zip(log.problems, cases):
            assert why in line and line.endswith("; skipped")


def test_a_value_nothing_judges_is_not_read(tmp_path, engine):
    """The one difference from reading whole flows: a bad value in a part check never builds (here
    the response's status) no longer makes the flow unreadable; its request is judged."""
    s = _telemetry().get_state()
    s["response"]["status_code"] = 200.5
    path = tmp_path / "odd-response.mitm"
    path.write_bytes(tnetstring.dumps(s))
    recs, log = _read(path, False)
    assert not recs and "status_code" in log.problems[0]
    recs, log = _read(path, True, engine.claim)
    assert [r.source for r in recs] == ["odd-response.mitm#0"] and not log.problems
