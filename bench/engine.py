"""Engine throughput: payloads per second for inspect and for scrub, on one core.

    ./tw bench engine [--seconds 3]

The mix is realistic: every genuine payload in examples/payloads (~0.3-2 KB: server, CLI and
console of every generation) plus every documented violation in examples/violations.json, in the
ratio 4 clean : 1 violating. Each tight-loop figure is the best of 3 timed rounds of a bounded loop,
with the three rounds printed as its spread.

The tight loop runs with every cache hot. In the proxy a message arrives after ~1 ms of mitmproxy's
own work, so the CPU caches hold none of the engine's code and data: the cold figure times one
message at a time, in shuffled order (kinds, transports, clean and violating interleaved), with the
CPU caches evicted before each (a 32 MiB copy between two preallocated buffers, outside the timed part). It prints
the median, p90 and mean microseconds per message, once with telewarden's own memos kept (the
proxy's steady state: its host and clean-string memos stay warm) and once with them cleared too.

Then the worst case of the patterns: every detector of the bundled packs (first + scan, as the
engine runs them) and every `pattern`/`keep_tokens` of the bundled rule files (fullmatch and
search), on each adversarial string of patterns.ADVERSARIAL_UNITS repeated to max_body (1 MiB),
printed as microseconds per KiB of input (linear time: the figure does not grow with the size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from telewarden.engine import strictjson  # noqa: E402
from telewarden.engine.judge import Engine  # noqa: E402
from telewarden.engine.model import Exchange, Mode, Transport  # noqa: E402
from telewarden.engine.packs import bundled_dir, load_packs  # noqa: E402
from telewarden.engine import patterns  # noqa: E402
from telewarden.engine.patterns import ADVERSARIAL_UNITS, compile_pattern  # noqa: E402

EX = Path(__file__).resolve().parents[1] / "examples"


def exchanges() -> list[Exchange]:
    clean = [(p.stem, p.read_bytes().strip()) for p in sorted((EX / "payloads").glob("*.json"))]
    bad = [(c["name"] if c["transport"] == "http" else "console", strictjson.dumps(c["body"]))
           for c in json.loads((EX / "violations.json").read_text())]
    mix = clean * 4 + bad[: len(clean)]
    out = []
    for name, body in mix:
        ws = name.startswith("console")
        out.append(Exchange(Transport.WEBSOCKET if ws else Transport.HTTP, "WS" if ws else "POST",
                            ("telemetry.hasura.io",), 443, "/v1/ws" if ws else "/v1/http", "",
                            (("Content-Type", "application/json"), ("User-Agent", "Go-http-client/1.1")), body))
    return out


def rate(engine: Engine, mix: list[Exchange], mode: Mode, seconds: float, spread: list | None = None) -> float:
    rounds = spread if spread is not None else []
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        deadline = t0 + seconds / 3
        while time.perf_counter() < deadline and n < 5_000_000:
            for ex in mix:
                engine.inspect(ex, mode)
            n += len(mix)
        rounds.append(n / (time.perf_counter() - t0))
    return max(rounds)


def cold(engine: Engine, mix: list[Exchange], mode: Mode, messages: int, clear_memos: bool) -> list[float]:
    """Microseconds per message, each timed alone after the CPU caches were evicted."""
    src, dst = bytearray(b"\x5a" * (32 << 20)), bytearray(32 << 20)  # allocated once: no page faults later
    order = [mix[i % len(mix)] for i in range(messages)]
    random.Random(12).shuffle(order)
    out = []
    for ex in order:
        dst[:] = src  # reads 32 MiB and writes 32 MiB: more than any L3 cache here
        if clear_memos:
            engine._host_cache.clear()
            for p in engine.packs:
                p.detectors._clean.clear()
        t0 = time.perf_counter_ns()
        engine.inspect(ex, mode)
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def pack_patterns() -> list[str]:
    return patterns.pack_patterns(Path(bundled_dir("rules")))


def worst_case(engine: Engine, size: int) -> None:
    """Worst microseconds per KiB over the adversarial strings, for detectors and pack patterns."""
    detector_sets = [p.detectors for p in engine.packs]
    compiled = [compile_pattern(p) for p in pack_patterns()]

    def detectors(text: str) -> None:
        for ds in detector_sets:
            ds._clean.clear()
            if ds.first(text):
                ds.scan(text)

    def patterns(text: str) -> None:
        for rx in compiled:
            rx.fullmatch(text)
            rx.search(text)

    for label, fn in ((f"detectors ({sum(len(d.names) for d in detector_sets)})", detectors),
                      (f"pack patterns ({len(compiled)})", patterns)):
        worst, worst_unit, total = 0.0, "", 0.0
        for unit in ADVERSARIAL_UNITS:
            text = (unit * (size // len(unit) + 1))[:size]
            t0 = time.perf_counter()
            fn(text)
            t = time.perf_counter() - t0
            total += t
            if t > worst:
                worst, worst_unit = t, unit
        kib = size / 1024
        print(f"worst case, {label:<19}: {worst * 1e6 / kib:>8.1f} us/KiB on {worst_unit[:16]!r} x {kib:.0f} KiB "
              f"({worst * 1e3:.0f} ms); mean {total / len(ADVERSARIAL_UNITS) * 1e6 / kib:.1f} us/KiB "
              f"over {len(ADVERSARIAL_UNITS)} strings")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per mode, split over 3 rounds")
    ap.add_argument("--max-body", type=int, default=1 << 20, help="size of the adversarial strings (bytes)")
    ap.add_argument("--cold", type=int, default=400, help="messages timed one by one with cold caches (0: skip)")
    ap.add_argument("--no-worst", action="store_true", help="skip the worst-case pattern figures")
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(EX.parent), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip() or "?"
    print(f"commit {commit}; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    engine = Engine(load_packs([]), digest_key=b"bench")
    mix = exchanges()
    sizes = [len(e.body) for e in mix]
    violating = sum(1 for e in mix if engine.inspect(e, Mode.AUDIT).findings)
    print(f"mix: {len(mix)} payloads, {violating} violating, body bytes median {statistics.median(sizes):.0f} "
          f"(min {min(sizes)}, max {max(sizes)})")
    for mode in (Mode.AUDIT, Mode.SCRUB):
        label = "inspect (audit)" if mode is Mode.AUDIT else "inspect+scrub  "
        spread: list[float] = []
        r = rate(engine, mix, mode, args.seconds, spread)
        print(f"{label}: {r:>10,.0f} payloads/s  ({1e6 / r:.1f} us each), one core, tight loop "
              f"(rounds {', '.join(f'{x:,.0f}' for x in spread)})")
    if args.cold:
        tight = 1e6 / rate(engine, mix, Mode.SCRUB, args.seconds)
        for clear in (False, True):
            us = sorted(cold(engine, mix, Mode.SCRUB, args.cold, clear))
            med, p90, mean = us[len(us) // 2], us[int(len(us) * 0.9)], statistics.mean(us)
            print(f"cold caches, scrub{', memos cleared' if clear else '               '}: median {med:6.1f} us, "
                  f"p90 {p90:6.1f} us, mean {mean:6.1f} us per message ({med / tight:.1f}x the tight loop's "
                  f"{tight:.1f} us; {len(us)} messages, shuffled, CPU caches evicted before each)")
    clean = [e for e in mix if not engine.inspect(e, Mode.AUDIT).findings]
    print(f"clean only     : {rate(engine, clean, Mode.SCRUB, args.seconds):>10,.0f} payloads/s")
    t0 = time.perf_counter()
    for _ in range(2000):
        json.loads(mix[0].body)
    print(f"(json.loads alone on a {len(mix[0].body)} B payload: {2000 / (time.perf_counter() - t0):,.0f}/s)")
    if not args.no_worst:
        worst_case(engine, args.max_body)


if __name__ == "__main__":
    main()
