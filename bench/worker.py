"""The proxy-side cost of handing a message to a judge process, in isolation (a tight loop).

    python bench/worker.py [--messages 4000] [--window 8]

The real thing is `telewarden_workers` (src/telewarden/proxy/judge_worker.py, judge_client.py),
measured inside a live proxy by `./tw bench proxy --workers N`; this loop uses the same encoding.

A worker process runs Engine.inspect; the parent (standing in for the proxy's event loop) sends
each Hasura-mix Exchange (as a tuple of builtins) pickled over a pipe and reads back the decision, the repair and
the audit record (built in the worker; the proxy still chains and writes it), keeping up to
--window messages in flight. Prints the parent's CPU per message (what the proxy would still pay:
pickling, the pipe, unpickling) beside the CPU of judging in-process, and the messages per second
of both. With two or more CPUs the parent and the worker are pinned to different ones. Only
local pipes; bounded in messages.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from engine import exchanges  # noqa: E402  (bench/engine.py)

from telewarden.engine.judge import Engine  # noqa: E402
from telewarden.engine.model import Mode  # noqa: E402
from telewarden.audit.render import record  # noqa: E402
from telewarden.engine.packs import load_packs  # noqa: E402
from telewarden.proxy.judge_worker import flat, unflat  # noqa: E402  (what the proxy's workers use)


def worker(conn, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    engine = Engine(load_packs([]), digest_key=b"bench")
    for _ in range(10_000_000):
        data = conn.recv_bytes()
        if not data:
            return
        ex = unflat(pickle.loads(data))
        v = engine.inspect(ex, Mode.SCRUB)
        r = v.repaired
        # what the proxy needs back: the decision, the repair, and the record the trail gets
        conn.send_bytes(pickle.dumps((v.decision.value, r and (r.body, r.drop_headers, r.clear_query, r.target, r.host),
                                      record(v, ex)), pickle.HIGHEST_PROTOCOL))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--window", type=int, default=8, help="messages in flight")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2
    if pin:
        os.sched_setaffinity(0, {cpus[-1]})
    mix = exchanges()
    engine = Engine(load_packs([]), digest_key=b"bench")
    for ex in mix:
        engine.inspect(ex, Mode.SCRUB)
    n = args.messages
    c0, w0 = time.thread_time(), time.perf_counter()
    for i in range(n):
        ex = mix[i % len(mix)]
        record(engine.inspect(ex, Mode.SCRUB), ex)  # the record is built where the judging happens
    local_cpu, local_wall = (time.thread_time() - c0) / n, time.perf_counter() - w0

    parent, child = mp.Pipe()
    p = mp.get_context("fork").Process(target=worker, args=(child, cpus[0] if pin else None), daemon=True)
    p.start()
    for ex in mix:  # warm up the worker
        parent.send_bytes(pickle.dumps(flat(ex), pickle.HIGHEST_PROTOCOL))
        pickle.loads(parent.recv_bytes())
    c0, w0 = time.thread_time(), time.perf_counter()
    sent = got = 0
    while got < n:
        while sent < n and sent - got < args.window:
            parent.send_bytes(pickle.dumps(flat(mix[sent % len(mix)]), pickle.HIGHEST_PROTOCOL))
            sent += 1
        pickle.loads(parent.recv_bytes())
        got += 1
    remote_cpu, remote_wall = (time.thread_time() - c0) / n, time.perf_counter() - w0
    parent.send_bytes(b"")
    p.join(5)
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; "
          + (f"parent on CPU {cpus[-1]}, worker on CPU {cpus[0]}" if pin else "one CPU: not pinned"))
    print(f"in-process : {local_cpu * 1e6:6.1f} us CPU per message in the proxy's thread (inspect + record), {n / local_wall:8,.0f} msg/s")
    print(f"worker     : {remote_cpu * 1e6:6.1f} us CPU per message in the proxy's thread (pickle + pipe + unpickle), "
          f"{n / remote_wall:8,.0f} msg/s with {args.window} in flight")
    print(f"the proxy's thread would save {(local_cpu - remote_cpu) * 1e6:.1f} us per message of a tight loop "
          f"(in the live proxy Engine.inspect costs ~2-2.5x the tight loop: cold caches)")


if __name__ == "__main__":
    main()
