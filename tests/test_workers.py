"""`telewarden_workers`: judging in other processes must change where the CPU is spent, nothing
else. The same bytes reach the upstream, the same decisions are recorded in the same chain, and
a worker that dies or hangs blocks what it held (scrub, block) and never lets it through unjudged."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PAYLOADS, exchange, is_console
from support.harness import BIN
from telewarden.audit.render import block, record
from telewarden.audit.trail import AuditTrail, encode_record
from telewarden.engine.model import Decision, Exchange, Mode, Transport
from telewarden.proxy.judge_worker import engine_from, flat, frame, frames, judge, unflat
from test_proxy import HTTP_BAD, HTTP_GENUINE, SENTINEL, WS_BAD, body_of, wait_sentinel, ws_session

WORKERS = ["--set", "telewarden_workers=1"]
CONFIG = {"rules": [], "bundled": True, "key": b"test-key", "max_body": 1 << 20, "waivers": {}, "resolved": {}}


# -- the hand-over itself ----------------------------------------------------------------------

def test_every_exchange_field_crosses_to_the_worker():
    """A field added to Exchange and forgotten by flat() would be judged with its default."""
    values = {"transport": Transport.WEBSOCKET, "method": "PATCH", "hosts": ("a.test", "10.0.0.1"), "port": 8443,
              "path": "/p", "query": "q=1", "headers": (("x-a", "1"),), "body": b"\x00{}", "body_problem": "bad",
              "frame_is_text": False, "scheme": "http", "target_problem": "fragment", "raw_target": "/p#x",
              "sent_names": (("host", "a.test"),), "connected": ("a.test",), "id": "m42", "timestamp": 12.5}
    assert set(values) == {f.name for f in dataclasses.fields(Exchange)}
    ex = Exchange(**values)
    assert dataclasses.asdict(unflat(flat(ex))) == dataclasses.asdict(ex)


def test_frames_are_taken_whole_however_the_stream_is_cut():
    stream = b"".join(frame(("judge", i, b"x" * i)) for i in range(50))
    buf, got = bytearray(), []
    for i in range(0, len(stream), 7):
        buf += stream[i:i + 7]
        got += frames(buf)
    assert got == [("judge", i, b"x" * i) for i in range(50)] and not buf


def test_a_corrupt_length_is_refused_not_allocated():
    with pytest.raises(ValueError):
        frames(bytearray((2 ** 31).to_bytes(4, "big") + b"x"))


def _cases() -> list[Exchange]:
    http = [exchange(body_of(n)) for n in HTTP_GENUINE] + [exchange(body_of(c)) for c in HTTP_BAD]
    ws = [exchange(body_of(n), "websocket") for n in sorted(PAYLOADS) if is_console(n)]
    return http + ws + [exchange(body_of(c), "websocket") for c in WS_BAD]


def _without_micros(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "micros"}


@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_a_worker_judges_and_records_as_the_proxy_would(engine, mode):
    """Same decision, repair, rules and record (to the judging time) for every corpus message."""
    worker = engine_from(CONFIG)
    for ex in _cases():
        here = engine.inspect(ex, Mode(mode))
        answer = judge(worker, ("judge", 1, flat(ex), mode, False, here.pack))
        assert answer[0] == "judged", answer
        decision, pack, endpoint, kind, rules, error, sunk, repaired = answer[2]
        assert (decision, pack, endpoint, kind, rules, error, sunk) == (
            here.decision.value, here.pack, here.endpoint, here.kind, here.rule_ids, here.error, False)
        assert repaired == (None if here.repaired is None else dataclasses.astuple(here.repaired))
        members, human = answer[3], answer[4]
        assert _without_micros(json.loads("{" + members + "}")) == _without_micros(record(here, ex))
        assert human == block(json.loads("{" + members + "}"))


def test_sink_is_recorded_by_the_worker_for_what_is_not_blocked(engine):
    worker = engine_from(CONFIG)
    ex = exchange(body_of(HTTP_GENUINE[0]))
    answer = judge(worker, ("judge", 1, flat(ex), "scrub", True, "hasura"))
    assert answer[2][6] is True and json.loads("{" + answer[3] + "}")["sunk"] is True


def test_a_worker_whose_packs_differ_from_the_proxys_does_not_judge():
    """The proxy claimed the message for one pack; a worker that would judge it by another (or
    by none: passed through) says it failed, and the proxy blocks."""
    worker = engine_from(CONFIG)
    ex = exchange(body_of(HTTP_GENUINE[0]))
    assert judge(worker, ("judge", 7, flat(ex), "scrub", False, "some-other-pack"))[:2] == ("failed", 7)
    assert judge(None, ("judge", 8, flat(ex), "scrub", False, "hasura"))[:2] == ("failed", 8)


def test_records_written_encoded_chain_exactly_like_records_written_whole(tmp_path, engine):
    recs = [record(engine.inspect(ex, Mode.SCRUB), ex) for ex in _cases()[:12]]
    whole = AuditTrail(tmp_path / "whole", key_path=tmp_path / "k")
    encoded = AuditTrail(tmp_path / "encoded", key_path=tmp_path / "k")
    for rec in recs:
        whole.write(rec)
        encoded.write_encoded(encode_record(rec), block(rec))
    whole.close(), encoded.close()
    for name in ("audit.jsonl", "audit.log"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "encoded" / name).read_bytes()


# -- through a real proxy ----------------------------------------------------------------------


def _workers_of(proxy) -> list[int]:
    pids = []
    for task in Path(f"/proc/{proxy.proc.pid}/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    return pids


def _wait_workers(proxy, count: int = 1, timeout: float = 20) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = _workers_of(proxy)
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"no judge worker started:\n{proxy.log.read_text()[-2000:]}")


def _outcomes(proxy, upstream, bodies: list[bytes]) -> list[tuple]:
    out = []
    for body in bodies:
        upstream.clear()
        status, _ = proxy.curl(body)
        rec = proxy.decisions()[-1]
        out.append((status, [r.body for r in upstream.requests()], rec["decision"],
                    sorted(f["rule"] for f in rec["findings"])))
    return out


@pytest.mark.proxy
@pytest.mark.parametrize("mode", ["audit", "scrub", "block"])
def test_with_workers_the_same_bytes_leave_and_the_same_decisions_are_recorded(proxies, start_proxy, upstream,
                                                                              mode):
    bodies = [body_of(n) for n in HTTP_GENUINE] + [body_of(c) for c in HTTP_BAD]
    proxy = start_proxy(mode, WORKERS)
    assert _wait_workers(proxy)
    assert _outcomes(proxy, upstream, bodies) == _outcomes(proxies(mode), upstream, bodies)
    proxy.stop()
    verify = subprocess.run([str(BIN / "telewarden"), "audit", "verify", str(proxy.audit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    lines = (proxy.audit / "audit.jsonl").read_text().count("\n")
    assert (proxy.audit / "audit.log").read_text().count("\n\n") == lines == len(bodies)


@pytest.mark.proxy
@pytest.mark.parametrize("mode", ["scrub", "block"])
def test_with_workers_websocket_frames_are_judged_one_by_one(start_proxy, upstream, engine, mode):
    proxy = start_proxy(mode, WORKERS)
    _wait_workers(proxy)
    good = [body_of(n) for n in sorted(PAYLOADS) if is_console(n)]
    bad = [body_of(c) for c in WS_BAD]
    upstream.clear()
    ws_session(proxy, [*good, *bad, SENTINEL])
    got = wait_sentinel(upstream)
    assert got[:len(good)] == good and not set(got) & set(bad)
    for frame_ in got:
        assert engine.inspect(exchange(frame_, "websocket"), "block").findings == []
    if mode == "block":
        assert len(got) == len(good)


@pytest.mark.proxy
@pytest.mark.parametrize("mode,status", [("scrub", 403), ("block", 403), ("audit", 200)])
def test_a_hung_worker_is_killed_and_what_it_held_is_not_forwarded_unjudged(start_proxy, upstream, mode, status):
    """SIGSTOP the worker: the message waits no longer than the timeout, then is blocked (scrub,
    block) or forwarded and recorded as not judged (audit); the next message is judged by a new worker."""
    proxy = start_proxy(mode, [*WORKERS, "--set", "telewarden_worker_timeout_ms=600"])
    [worker] = _wait_workers(proxy)
    body = body_of(HTTP_GENUINE[0])
    assert proxy.curl(body)[0] == 200  # judged once: the worker is up
    os.kill(worker, signal.SIGSTOP)
    upstream.clear()
    t0 = time.monotonic()
    got, _ = proxy.curl(body)
    assert got == status and time.monotonic() - t0 < 5
    assert [r.body for r in upstream.requests()] == ([body] if mode == "audit" else [])
    rec = proxy.decisions()[-1]
    assert rec["decision"] == ("forwarded" if mode == "audit" else "blocked")
    assert [f["rule"] for f in rec["findings"]] == ["telewarden.internal-error"]
    assert "did not answer within 0.6 s" in proxy.log.read_text()
    time.sleep(1.1)  # restarted no sooner than a second after it died
    upstream.clear()
    assert proxy.curl(body)[0] == 200 and [r.body for r in upstream.requests()] == [body]
    assert proxy.decisions()[-1]["decision"] == "forwarded" and not proxy.decisions()[-1]["findings"]
    assert worker not in _wait_workers(proxy)


@pytest.mark.proxy
def test_a_killed_worker_fails_closed_and_is_replaced(start_proxy, upstream):
    proxy = start_proxy("scrub", WORKERS)
    [worker] = _wait_workers(proxy)
    bad = next(c for c in HTTP_BAD if c["scrubbable"])
    assert proxy.curl(body_of(bad))[0] == 200
    os.kill(worker, signal.SIGKILL)
    upstream.clear()
    assert proxy.curl(body_of(bad))[0] == 403 and upstream.requests() == []
    assert proxy.decisions()[-1]["findings"][0]["rule"] == "telewarden.internal-error"
    time.sleep(1.1)
    upstream.clear()
    assert proxy.curl(body_of(bad))[0] == 200
    [got] = [r.body for r in upstream.requests()]
    assert got != body_of(bad)  # repaired by the new worker, not forwarded as sent
    assert proxy.decisions()[-1]["decision"] == "scrubbed"


def test_messages_larger_than_the_socket_buffer_all_come_back_in_order():
    """Bodies of 600 KB, 12 at once: the socket takes part of them, the rest is written as the
    worker reads (add_writer); every message gets its own verdict."""
    import asyncio

    from telewarden.proxy.judge_client import JudgePool

    big = json.dumps({**PAYLOADS[HTTP_GENUINE[0]], "pad": "x" * 600_000}).encode()
    cases = [exchange(big if i % 2 else body_of(HTTP_GENUINE[0])) for i in range(12)]

    async def run() -> list:
        pool = JudgePool(1, CONFIG, timeout=20)
        pool.start()
        try:
            return await asyncio.wait_for(asyncio.gather(*(pool.judge(ex, Mode.SCRUB, False, "hasura")
                                                           for ex in cases)), 20)
        finally:
            pool.close()

    answers = asyncio.run(run())
    assert [v.exchange_id for v, _ in answers] == [ex.id for ex in cases]
    for i, (v, (members, _)) in enumerate(answers):
        rec = json.loads("{" + members + "}")
        assert rec["id"] == cases[i].id and rec["size_in"] == len(cases[i].body)
        assert (v.decision is Decision.FORWARDED) == (i % 2 == 0)


def test_a_worker_builds_its_engine_from_the_whole_configuration():
    """Rules, bundled, key, body limit, waivers and resolved addresses all reach the worker's engine."""
    from conftest import ROOT

    config = {"rules": [str(ROOT / "rules" / "hasura.yaml")], "bundled": False, "key": b"k", "max_body": 4000,
              "waivers": {"hasura.cli.command-args": "tested"}, "resolved": {"10.9.9.9": "hasura"}}
    worker = engine_from(config)
    assert [p.id for p in worker.packs] == ["hasura"] and worker.limits.max_body == 4000
    assert worker.claim(("10.9.9.9",)).id == "hasura"
    flags = next(c for c in HTTP_BAD if c["name"] == "cli-flag-values")
    v = worker.inspect(exchange(body_of(flags)), Mode.BLOCK)
    assert [f.waived for f in v.findings] == ["tested"] and v.decision is Decision.FORWARDED


def test_serve_answers_every_message_in_order_until_the_proxy_closes():
    """The worker's loop, in this process: a failed configuration makes every message fail
    (the proxy blocks them), a good one makes them judged, answers come back in order, and the
    loop ends when the proxy's end closes."""
    import socket
    import threading

    from telewarden.proxy.judge_worker import serve

    ex = exchange(body_of(HTTP_GENUINE[0]))
    proxy_end, worker_end = socket.socketpair()
    thread = threading.Thread(target=serve, args=(worker_end,), daemon=True)
    thread.start()
    proxy_end.settimeout(30)
    proxy_end.sendall(b"".join(frame(m) for m in [
        ("resolved", {"10.9.9.9": "hasura"}),  # before any configuration: ignored
        ("config", {"rules": []}),  # incomplete: refused
        ("judge", 1, flat(ex), "scrub", False, "hasura"),
        ("config", CONFIG),
        ("judge", 2, flat(ex), "scrub", False, "hasura"),
        ("resolved", {"10.9.9.9": "hasura"}),
        ("judge", 3, flat(exchange(body_of(HTTP_GENUINE[0]), host="10.9.9.9")), "scrub", False, "hasura"),
    ]))
    answers, buf = [], bytearray()
    while len(answers) < 5:
        chunk = proxy_end.recv(1 << 20)
        assert chunk, "the worker closed its end"
        buf += chunk
        answers += frames(buf)
    proxy_end.close()
    thread.join(10)
    assert not thread.is_alive()
    assert answers[0][0] == "config" and answers[0][1].startswith("KeyError")
    assert answers[1] == ("failed", 1, "RuntimeError")
    assert answers[2] == ("config", None)
    assert [a[:2] for a in answers[3:]] == [("judged", 2), ("judged", 3)]
    assert answers[4][2][0] == "forwarded"  # claimed by its resolved address alone


def test_a_frame_of_exactly_the_largest_length_waits_for_its_bytes():
    from telewarden.proxy.judge_worker import MAX_FRAME

    buf = bytearray(MAX_FRAME.to_bytes(4, "big") + b"x")
    assert frames(buf) == [] and len(buf) == 5


def test_the_pool_fails_what_a_hung_or_dead_worker_holds_and_starts_a_new_one():
    """In this process (fast, and visible to mutation testing): a stopped worker's message fails
    after the timeout, a killed worker's at once; a new worker answers after a second."""
    import asyncio

    from telewarden.proxy.judge_client import JudgeError, JudgePool

    ex = exchange(body_of(HTTP_GENUINE[0]))

    async def run() -> None:
        pool = JudgePool(1, CONFIG, timeout=0.5)
        pool.start()
        worker = pool.workers[0]
        try:
            verdict, _ = await asyncio.wait_for(pool.judge(ex, Mode.SCRUB, False, "hasura"), 30)
            assert verdict.decision is Decision.FORWARDED
            first = worker.proc.pid
            os.kill(first, signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(JudgeError, match="did not answer within 0.5 s"):
                await asyncio.wait_for(pool.judge(ex, Mode.SCRUB, False, "hasura"), 10)
            assert 0.5 <= time.monotonic() - t0 < 5 and not worker.alive
            with pytest.raises(JudgeError, match="died less than 1 s ago"):
                await pool.judge(ex, Mode.SCRUB, False, "hasura")
            await asyncio.sleep(1.05)
            verdict, _ = await asyncio.wait_for(pool.judge(ex, Mode.SCRUB, False, "hasura"), 30)
            assert verdict.decision is Decision.FORWARDED and worker.proc.pid != first
            os.kill(worker.proc.pid, signal.SIGKILL)
            with pytest.raises(JudgeError, match="exited|cannot write"):
                await asyncio.wait_for(pool.judge(ex, Mode.SCRUB, False, "hasura"), 10)
        finally:
            pool.close()

    asyncio.run(run())


# -- the pool's edge cases, in this process (from judge_client's mutation run) -------------------

def _pool_run(body, timeout: float = 20, config: dict | None = None):
    """Run `body(pool)` in an event loop with a started one-worker pool, closed afterwards."""
    import asyncio

    from telewarden.proxy.judge_client import JudgePool

    async def run():
        pool = JudgePool(1, config or CONFIG, timeout=timeout)
        pool.start()
        try:
            return await asyncio.wait_for(body(pool), 60)
        finally:
            pool.close()

    return asyncio.run(run())


def _ex():
    return exchange(body_of(HTTP_GENUINE[0]))


def test_workers_start_with_the_pool_and_sink_reaches_them():
    async def body(pool):
        assert pool.workers[0].alive  # started with the proxy, not by its first message
        verdict, (members, _) = await pool.judge(_ex(), Mode.SCRUB, True, "hasura")
        return verdict, json.loads("{" + members + "}")

    verdict, rec = _pool_run(body)
    assert verdict.sunk is True and rec["sunk"] is True


def test_a_worker_that_cannot_load_its_packs_fails_each_message_at_once():
    """Not by the timeout: its answers say it failed, and the proxy blocks them."""
    from telewarden.proxy.judge_client import JudgeError

    async def body(pool):
        t0 = time.monotonic()
        with pytest.raises(JudgeError, match=r"failed to judge a message \(RuntimeError\)"):
            await pool.judge(_ex(), Mode.SCRUB, False, "hasura")
        return time.monotonic() - t0

    assert _pool_run(body, timeout=20, config={"rules": []}) < 10


def test_an_abandoned_message_does_not_lose_the_answers_that_follow():
    """A hook whose client went away cancels its wait; the answer for it arrives anyway and
    must not stop the answers behind it in the same read."""
    import asyncio

    async def body(pool):
        worker = pool.workers[0]
        first = worker.submit(_ex(), Mode.SCRUB, False, "hasura")
        second = worker.submit(_ex(), Mode.SCRUB, False, "hasura")
        first.cancel()
        answer = await asyncio.wait_for(second, 20)
        return answer[0]

    assert _pool_run(body) == "judged"


def test_messages_that_wait_behind_a_reload_are_timed_from_its_end():
    """Two reloads in a row (each ~0.5 s of pack loading) and a timeout of 0.2 s: the message
    waits for both and is judged; the worker is not killed as hung. The second reload is sent
    once the worker is busy with the first, so their answers come back in two writes."""
    import asyncio

    async def body(pool):
        await pool.judge(_ex(), Mode.SCRUB, False, "hasura")  # loaded once
        pool.configure(CONFIG)
        await asyncio.sleep(0.1)
        pool.configure(CONFIG)
        verdict, _ = await pool.judge(_ex(), Mode.SCRUB, False, "hasura")
        return verdict.decision, pool.workers[0].alive

    assert _pool_run(body, timeout=0.2) == (Decision.FORWARDED, True)


def test_loading_restarts_the_clock_of_what_waited():
    import asyncio

    from telewarden.proxy.judge_client import JudgeProcess

    async def body():
        worker = JudgeProcess("#t")
        future = asyncio.get_running_loop().create_future()
        worker._pending = {1: (future, time.monotonic() - 100)}
        worker._configs_sent = 1
        worker._loaded()
        return time.monotonic() - worker._pending[1][1], worker._loading_since

    age, loading = asyncio.run(body())
    assert 0 <= age < 1 and loading is None


def test_beyond_the_in_flight_bound_messages_fail_instead_of_queueing(monkeypatch):
    from telewarden.proxy import judge_client

    monkeypatch.setattr(judge_client, "_MAX_IN_FLIGHT", 2)

    async def body(pool):
        worker = pool.workers[0]
        waiting = [worker.submit(_ex(), Mode.SCRUB, False, "hasura") for _ in range(2)]
        with pytest.raises(judge_client.JudgeError, match="2 messages waiting"):
            worker.submit(_ex(), Mode.SCRUB, False, "hasura")
        return [(await w)[0] for w in waiting]

    assert _pool_run(body) == ["judged", "judged"]


def test_closing_lets_the_worker_exit_and_fails_what_it_held():
    import asyncio

    from telewarden.proxy.judge_client import JudgeError, JudgePool

    async def run():
        pool = JudgePool(1, CONFIG, timeout=20)
        pool.start()
        worker = pool.workers[0]
        await pool.judge(_ex(), Mode.SCRUB, False, "hasura")
        held = worker.submit(_ex(), Mode.SCRUB, False, "hasura")
        pool.close()
        with pytest.raises(JudgeError, match="stopped"):
            await asyncio.wait_for(held, 10)
        return worker.proc.returncode

    assert asyncio.run(run()) == 0  # it saw its socket close and ended by itself, not killed
