"""Proxy overhead: mitmdump + telewarden (scrub, Hasura payloads) against plain mitmdump.

    ./tw bench proxy [--seconds 4] [--rounds 3] [--connections 8]

Both proxies run at once in reverse mode in front of the same local upstream (a separate process);
rounds alternate between them, for plain HTTP and for HTTPS (TLS client->proxy and proxy->upstream).
With two or more CPUs the proxies are pinned to the last one and the load generator and upstream to
the others (--no-pin to turn off): otherwise the three processes preempt each other on a 2-core
machine and the figures measure the scheduler as much as the proxy.
The load generator keeps N keep-alive connections busy with POSTs of real Hasura payloads (4 clean :
1 violating) and records each request's latency. Prints requests/s, p50 and p99 latency and the
telewarden/plain throughput ratio. Only 127.0.0.1 is contacted; every loop is bounded.
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
                         latencies: list[float], offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname=HOST if tls else None)
    i = offset
    try:
        while time.perf_counter() < deadline and i < offset + 1_000_000:
            body = payloads[i % len(payloads)]
            i += 1
            head = (f"POST /v1/http HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
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
               clean_only: bool = False) -> tuple[float, list[float]]:
    payloads = bodies(clean_only)
    latencies: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    await asyncio.gather(*(one_connection(port, tls, payloads, deadline, latencies, k * 7)
                           for k in range(connections)))
    return len(latencies) / (time.perf_counter() - t0), latencies


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per round and proxy")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--clean-only", action="store_true", help="send only conforming payloads")
    ap.add_argument("--no-pin", action="store_true", help="do not pin proxies and load generator to CPUs")
    ap.add_argument("--telewarden-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for telewarden run (e.g. --telewarden-arg=--mode=audit)")
    args = ap.parse_args()
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
    try:
        wait_port(plain_up, procs[0])
        for proto, spec in (("http", f"reverse:http://{HOST}:80/"), ("https", f"reverse:https://{HOST}/")):
            for name in ("mitmdump", "telewarden"):
                port = free_port()
                if name == "mitmdump":
                    cmd = [str(BIN / "mitmdump"), "--mode", spec, "--listen-port", str(port), *common]
                else:
                    cmd = [str(BIN / "telewarden"), "run", "--mode", "scrub", "--mode", spec,
                           "--audit", str(tmp / f"audit-{proto}"), "--listen-port", str(port), *common,
                           *args.telewarden_arg]
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True, preexec_fn=on_proxy_cpu)
                procs.append(p)
                wait_port(port, p)
                targets[(proto, name)] = port
                pids[(proto, name)] = p.pid
        ctx = ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))
        print(f"{args.rounds} alternating rounds of {args.seconds:.0f}s per proxy, {args.connections} keep-alive "
              f"connections, POST /v1/http with Hasura payloads (4 clean : 1 violating), scrub mode; "
              + (f"proxies pinned to CPU {cpus[-1]}, load generator and upstream to CPU {sorted(other_cpus)}" if pin
                 else "no CPU pinning"))
        for proto in ("http", "https"):
            tls = ctx if proto == "https" else None
            asyncio.run(load(targets[(proto, "mitmdump")], tls, 1.0, args.connections))  # warm up both
            asyncio.run(load(targets[(proto, "telewarden")], tls, 1.0, args.connections))
            results: dict[str, tuple[list[float], list[float]]] = {"mitmdump": ([], []), "telewarden": ([], [])}
            cpu = {"mitmdump": 0.0, "telewarden": 0.0}
            for r in range(args.rounds):
                order = ("mitmdump", "telewarden") if r % 2 == 0 else ("telewarden", "mitmdump")
                for name in order:
                    c0 = cpu_seconds(pids[(proto, name)])
                    rate, lat = asyncio.run(load(targets[(proto, name)], tls, args.seconds, args.connections,
                                                 args.clean_only))
                    cpu[name] += cpu_seconds(pids[(proto, name)]) - c0
                    results[name][0].append(rate)
                    results[name][1].extend(lat)
            for name, (rates, lat) in results.items():
                n = len(lat)
                lat.sort()
                p50, p99 = lat[n // 2] * 1e3, lat[int(n * 0.99)] * 1e3
                print(f"{proto:<5} {name:<11} {statistics.mean(rates):>8,.0f} req/s   p50 {p50:6.2f} ms   "
                      f"p99 {p99:6.2f} ms   proxy CPU {cpu[name] / n * 1e6:5.0f} us/req   "
                      f"(rounds: {', '.join(f'{x:,.0f}' for x in rates)})")
            ratio = statistics.mean(results["telewarden"][0]) / statistics.mean(results["mitmdump"][0])
            print(f"{proto:<5} ratio telewarden/mitmdump throughput: {ratio:.3f}")
        audit = sum(1 for p in tmp.glob("audit-*/audit.jsonl") for _ in p.open())
        print(f"audit records written by telewarden: {audit:,}")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


if __name__ == "__main__":
    main()
