"""Proxy overhead: mitmdump + telewarden (scrub, Hasura payloads) against plain mitmdump.

    ./tw bench proxy [--seconds 4] [--rounds 3] [--connections 8] [--proto https] [--tw-mode scrub]
                     [--unclaimed] [--hooktime]

Both proxies run at once in reverse mode in front of the same local upstream (a separate process);
rounds alternate between them, for plain HTTP and for HTTPS (TLS client->proxy and proxy->upstream).
With two or more CPUs the proxies are pinned to the last one and the load generator and upstream to
the others (--no-pin to turn off): otherwise the three processes preempt each other on a 2-core
machine and the figures measure the scheduler as much as the proxy.
The load generator keeps N keep-alive connections busy with POSTs of real Hasura payloads (4 clean :
1 violating) and records each request's latency. Prints requests/s, p50 and p99 latency and the
telewarden/plain throughput ratio with the spread of the per-round ratios (each telewarden round
against the plain round next to it), and the latency telewarden adds (p50 and p99 differences).
--aa runs bare mitmdump in both slots: the ratio it prints is the bench's own noise and bias (read
other ratios against it). --workers N sets telewarden_workers and pins the workers to the load
generator's CPUs (they inherit the proxy's), and prints their CPU per request.
--unclaimed sends the same requests to a host no pack claims (other.test): what an egress proxy's
ordinary traffic pays. --hooktime loads bench/hooktime.py after telewarden and prints the share of
the proxy's CPU spent in telewarden's hooks (thread CPU time per hook call / process CPU time), and
audit.log's rendering after them; --parts adds the parts inside the hooks (Engine.inspect, ...).
The load average is printed at the start and the end: the machine is shared, say it beside figures.
Only 127.0.0.1 is contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from support.harness import ensure_ca, free_port, make_upstream_cert  # noqa: E402

HOST = "telemetry.hasura.io"
BIN = Path(sys.executable).parent


def bodies(clean_only: bool = False) -> list[bytes]:
    clean = [p.read_bytes().strip() for p in sorted((ROOT / "examples" / "payloads").glob("*.json"))
             if not p.name.startswith("console")]
    bad = [json.dumps(c["body"], separators=(",", ":")).encode()
           for c in json.loads((ROOT / "examples" / "violations.json").read_text()) if c["transport"] == "http"]
    return clean if clean_only else clean * 4 + bad[: len(clean)]


async def one_connection(port: int, tls: ssl.SSLContext | None, payloads: list[bytes], deadline: float,
                         latencies: list[float], offset: int, host: str = HOST) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname=host if tls else None)
    i = offset
    try:
        while time.perf_counter() < deadline and i < offset + 1_000_000:
            body = payloads[i % len(payloads)]
            i += 1
            head = (f"POST /v1/http HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"User-Agent: Go-http-client/1.1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            writer.write(head + body)
            status_headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not status_headers.startswith((b"HTTP/1.1 200", b"HTTP/1.1 403")):
                raise RuntimeError(status_headers[:60])
    finally:
        writer.close()


async def load(port: int, tls: ssl.SSLContext | None, seconds: float, connections: int,
               clean_only: bool = False, host: str = HOST) -> tuple[float, list[float]]:
    payloads = bodies(clean_only)
    latencies: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    await asyncio.gather(*(one_connection(port, tls, payloads, deadline, latencies, k * 7, host)
                           for k in range(connections)))
    return len(latencies) / (time.perf_counter() - t0), latencies


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def judge_workers(pid: int) -> list[int]:
    """telewarden's judge worker processes (children of `pid` running judge_worker), from /proc."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(c) for c in task.read_text().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                if b"judge_worker" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    out.append(kid)
            except OSError:
                pass
    return out


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(proc.args)


def hook_snapshot(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def hook_share(before: dict | None, after: dict | None) -> tuple[float, dict[str, float], dict[str, int], float]:
    """(share of process CPU in telewarden's hooks, share per hook, calls per hook, share in garbage
    collection) between snapshots."""
    if not before or not after or after["process_ns"] <= before["process_ns"]:
        return float("nan"), {}, {}, float("nan")
    cpu = after["process_ns"] - before["process_ns"]
    per = {k: (v - before["ns"].get(k, 0)) / cpu for k, v in after["ns"].items()}
    calls = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items()}
    own = sum(v for k, v in per.items() if not k.startswith("part."))  # parts are inside the hooks
    return own, per, calls, (after["gc_ns"] - before["gc_ns"]) / cpu


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per round and proxy")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--proto", choices=["http", "https", "both"], default="both")
    ap.add_argument("--tw-mode", choices=["audit", "scrub", "block"], default="scrub", help="telewarden's mode")
    ap.add_argument("--unclaimed", action="store_true",
                    help="send to a host no pack claims (other.test): traffic telewarden passes untouched")
    ap.add_argument("--hooktime", action="store_true", help="measure the share of proxy CPU in telewarden's hooks")
    ap.add_argument("--parts", action="store_true",
                    help="with --hooktime: also time the parts inside the hooks (their wrappers count in the hooks)")
    ap.add_argument("--clean-only", action="store_true", help="send only conforming payloads")
    ap.add_argument("--no-pin", action="store_true", help="do not pin proxies and load generator to CPUs")
    ap.add_argument("--aa", action="store_true",
                    help="A/A run: the 'telewarden' slot runs a second bare mitmdump (the bench's own noise and bias)")
    ap.add_argument("--workers", type=int, default=0,
                    help="telewarden_workers: judge in N worker processes, pinned to the load generator's CPUs")
    ap.add_argument("--telewarden-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for telewarden run (e.g. --telewarden-arg=--sink)")
    args = ap.parse_args()
    host = "other.test" if args.unclaimed else HOST
    protos = ("http", "https") if args.proto == "both" else (args.proto,)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    proxy_cpu, other_cpus = ({cpus[-1]}, set(cpus[:-1])) if pin else (None, None)

    def on_proxy_cpu() -> None:
        if proxy_cpu:
            os.sched_setaffinity(0, proxy_cpu)

    if other_cpus:
        os.sched_setaffinity(0, other_cpus)  # the load generator, and the upstream it starts
    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    cert, key = make_upstream_cert(tmp)
    confdir = tmp / "conf"
    ensure_ca(confdir)
    plain_up, tls_up = free_port(), free_port()
    env = {**os.environ, "TELEWARDEN_TEST_UPSTREAM_PORT": str(tls_up),
           "TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT": str(plain_up), "TELEWARDEN_AUDIT_KEY": "bench"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(plain_up), str(tls_up),
                               str(cert), str(key)], stdout=subprocess.DEVNULL, start_new_session=True)]
    common = ["-q", "-s", str(ROOT / "tests" / "support" / "redirect_addon.py"), "--set", f"confdir={confdir}",
              "--set", f"ssl_verify_upstream_trusted_ca={cert}", "--listen-host", "127.0.0.1"]
    targets = {}
    pids = {}
    hookfiles: dict[tuple[str, str], Path] = {}
    try:
        wait_port(plain_up, procs[0])
        for proto in protos:
            spec = f"reverse:http://{host}:80/" if proto == "http" else f"reverse:https://{host}/"
            for name in ("mitmdump", "telewarden"):
                port = free_port()
                penv = env
                if args.hooktime:
                    hookfiles[(proto, name)] = tmp / f"hooktime-{proto}-{name}.json"
                    penv = {**env, "TELEWARDEN_HOOKTIME": str(hookfiles[(proto, name)]),
                            **({"TELEWARDEN_HOOKTIME_PARTS": "1"} if args.parts else {})}
                if name == "mitmdump" or args.aa:
                    cmd = [str(BIN / "mitmdump"), "--mode", spec, "--listen-port", str(port), *common]
                    if args.hooktime:
                        cmd += ["-s", str(ROOT / "bench" / "hooktime.py")]
                else:
                    cmd = [str(BIN / "telewarden"), "run", "--mode", args.tw_mode, "--mode", spec,
                           "--audit", str(tmp / f"audit-{proto}"), "--listen-port", str(port), *common,
                           *args.telewarden_arg, *(["--set", f"telewarden_workers={args.workers}"] if args.workers else [])]
                    if args.hooktime:
                        cmd += ["-s", str(ROOT / "bench" / "hooktime.py")]
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=penv,
                                     start_new_session=True, preexec_fn=on_proxy_cpu)
                procs.append(p)
                wait_port(port, p)
                targets[(proto, name)] = port
                pids[(proto, name)] = p.pid
                if name == "telewarden" and not args.aa:  # listening comes before the script is loaded
                    end = time.monotonic() + 30
                    while not (tmp / f"audit-{proto}" / "audit.jsonl").exists() and time.monotonic() < end:
                        time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip() or "?"
        print(f"commit {commit}; load average {loadavg()} at start; proxy pids "
              + ", ".join(f"{proto}/{name} {pid}" for (proto, name), pid in pids.items()), flush=True)
        print(f"{args.rounds} alternating rounds of {args.seconds:.0f}s per proxy, {args.connections} keep-alive "
              f"connections, POST /v1/http to {host} "
              + ("(unclaimed: passed through untouched)" if args.unclaimed else
                 "with Hasura payloads (4 clean : 1 violating)" if not args.clean_only else "(clean payloads only)")
              + f", telewarden {args.tw_mode} mode; "
              + (f"proxies pinned to CPU {cpus[-1]}, load generator and upstream to CPU {sorted(other_cpus)}" if pin
                 else "no CPU pinning"))
        for proto in protos:
            tls = ctx if proto == "https" else None
            asyncio.run(load(targets[(proto, "mitmdump")], tls, 1.0, args.connections, host=host))  # warm up both
            asyncio.run(load(targets[(proto, "telewarden")], tls, 1.0, args.connections, host=host))
            workers = judge_workers(pids[(proto, "telewarden")]) if args.workers else []
            for w in workers:  # they inherit the proxy's CPU; the point is to use another one
                if other_cpus:
                    os.sched_setaffinity(w, other_cpus)
            if args.workers:
                print(f"{proto:<5} {len(workers)} judge worker(s) " + (f"pinned to CPU {sorted(other_cpus)} beside the "
                      f"load generator and upstream" if other_cpus else "not pinned"))
            results: dict[str, tuple[list[float], list[float]]] = {"mitmdump": ([], []), "telewarden": ([], [])}
            cpu = {"mitmdump": 0.0, "telewarden": 0.0}
            worker_cpu = 0.0
            shares: list[float] = []
            gc_shares: dict[str, list[float]] = {"mitmdump": [], "telewarden": []}
            per_hook: dict[str, float] = {}
            hook_calls: dict[str, int] = {}
            for r in range(args.rounds):
                order = ("mitmdump", "telewarden") if r % 2 == 0 else ("telewarden", "mitmdump")
                for name in order:
                    c0 = cpu_seconds(pids[(proto, name)])
                    w0 = sum(cpu_seconds(w) for w in workers) if name == "telewarden" else 0.0
                    hookfile = hookfiles.get((proto, name))
                    before = hook_snapshot(hookfile) if hookfile else None
                    rate, lat = asyncio.run(load(targets[(proto, name)], tls, args.seconds, args.connections,
                                                 args.clean_only, host))
                    cpu[name] += cpu_seconds(pids[(proto, name)]) - c0
                    if name == "telewarden" and workers:
                        worker_cpu += sum(cpu_seconds(w) for w in workers) - w0
                    if before is not None:
                        time.sleep(0.45)  # the addon writes its totals every 0.2 s; the proxy is idle now
                        share, per, calls, gc_share = hook_share(before, hook_snapshot(hookfile))
                        gc_shares[name].append(gc_share)
                        if name == "telewarden":
                            shares.append(share)
                        for k, v in (per.items() if name == "telewarden" else ()):
                            per_hook[k] = per_hook.get(k, 0.0) + v / args.rounds
                        for k, v in calls.items():
                            hook_calls[k] = hook_calls.get(k, 0) + v
                    results[name][0].append(rate)
                    results[name][1].extend(lat)
            pct = {}
            for name, (rates, lat) in results.items():
                n = len(lat)
                lat.sort()
                pct[name] = (lat[n // 2] * 1e3, lat[int(n * 0.99)] * 1e3)
                print(f"{proto:<5} {name:<11} {statistics.mean(rates):>8,.0f} req/s   p50 {pct[name][0]:6.2f} ms   "
                      f"p99 {pct[name][1]:6.2f} ms   proxy CPU {cpu[name] / n * 1e6:5.0f} us/req   "
                      f"(rounds: {', '.join(f'{x:,.0f}' for x in rates)})")
            if workers:
                print(f"{proto:<5} judge workers CPU {worker_cpu / len(results['telewarden'][1]) * 1e6:5.0f} us/req")
            ratio = statistics.mean(results["telewarden"][0]) / statistics.mean(results["mitmdump"][0])
            per_round = [t / m for t, m in zip(results["telewarden"][0], results["mitmdump"][0])]
            print(f"{proto:<5} ratio telewarden/mitmdump throughput: {ratio:.3f}  (per round: median "
                  f"{statistics.median(per_round):.3f}, {min(per_round):.3f}-{max(per_round):.3f}: "
                  f"{', '.join(f'{x:.3f}' for x in per_round)})")
            print(f"{proto:<5} latency added by telewarden: p50 {(pct['telewarden'][0] - pct['mitmdump'][0]) * 1e3:+.0f} us"
                  f", p99 {(pct['telewarden'][1] - pct['mitmdump'][1]) * 1e3:+.0f} us "
                  + ("(one request in flight: telewarden's own time per request)" if args.connections == 1 else
                     f"({args.connections} connections in flight: a request's latency includes the others' service; "
                     f"--connections 1 for telewarden's own time per request)"))
            if shares:
                top = sorted(per_hook.items(), key=lambda kv: -kv[1])
                print(f"{proto:<5} telewarden hooks (and audit.log rendered after them): "
                      f"{statistics.mean(shares) * 100:.2f}% of proxy CPU "
                      f"(per round {', '.join(f'{x * 100:.2f}' for x in shares)}); "
                      + ", ".join(f"{k.split('.', 1)[1]} {v * 100:.2f}% ({hook_calls.get(k, 0):,} calls)"
                                  for k, v in top if v > 0.0001 and not k.startswith("part.")))
                parts = [(k, v) for k, v in top if k.startswith("part.") and v > 0.0001]
                if parts:
                    print(f"{proto:<5}   of which: " + ", ".join(
                        f"{k.split('.', 1)[1]} {v * 100:.2f}% ({v / max(statistics.mean(shares), 1e-9) * 100:.0f}% of it, "
                        f"{hook_calls.get(k, 0):,} calls)" for k, v in parts))
                print(f"{proto:<5} garbage collection: "
                      + ", ".join(f"{name} {statistics.mean(g) * 100:.2f}%" for name, g in gc_shares.items() if g)
                      + " of proxy CPU")
        audit = sum(1 for p in tmp.glob("audit-*/audit.jsonl") for _ in p.open())
        print(f"audit records written by telewarden: {audit:,}; load average {loadavg()} at the end")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


if __name__ == "__main__":
    main()
