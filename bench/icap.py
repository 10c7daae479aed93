"""ICAP overhead: Squid (SSL bump) with telewarden's ICAP service (scrub) against the same Squid
without it.

    ./tw bench icap [--seconds 3] [--rounds 3] [--connections 8] [--clean-only] [--icap-arg=--preview=4096]

One Squid (squid-openssl) with two ports: `direct` (no adaptation) and `icap` (REQMOD to a
`telewarden icap` process, bypass=off), in front of a local upstream (bench/upstream.py, a
separate process). Rounds alternate between the two ports, for plain HTTP (absolute-form requests
to the proxy) and HTTPS (CONNECT, then TLS bumped by Squid). The load generator keeps N keep-alive
connections busy with POSTs of real Hasura payloads (4 clean : 1 violating, or clean only) and
records each request's latency. Prints requests/s, p50/p99 latency, the added latency and the
ICAP service's CPU per request. Only 127.0.0.1 is contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
# this script is bench/icap.py: tests/ must come first so that `icap` names the tests' package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
sys.path.append(str(ROOT / "bench"))

from icap.squid_harness import IcapService, Squid, missing_reason  # noqa: E402
from proxy import bodies, cpu_seconds, wait_port  # noqa: E402
from support.harness import free_port, make_upstream_cert  # noqa: E402

HOST = "telemetry.hasura.io"
RECONNECTS = [0]


async def one_connection(port: int, tls: ssl.SSLContext | None, payloads: list[bytes], deadline: float,
                         latencies: list[float], statuses: dict, offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if tls is not None:
            writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
            answer = await reader.readuntil(b"\r\n\r\n")
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(answer[:60])
            await writer.start_tls(tls, server_hostname=HOST)
        target = "/v1/http" if tls is not None else f"http://{HOST}/v1/http"
        i = offset
        reused_ok = False
        while time.perf_counter() < deadline and i < offset + 1_000_000:
            body = payloads[i % len(payloads)]
            i += 1
            head = (f"POST {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                    f"User-Agent: Go-http-client/1.1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            try:
                writer.write(head + body)
                status_headers = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                if getattr(e, "partial", b"") or i == offset + 1 or not reused_ok:
                    raise
                # Squid 5 closes the client connection after an answer an ICAP service gave in
                # its place (a block), although it says keep-alive: reopen, as clients do
                RECONNECTS[0] += 1
                break
            length = 0
            for line in status_headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            code = status_headers[9:12].decode()
            statuses[code] = statuses.get(code, 0) + 1
            if code not in ("200", "403"):
                raise RuntimeError(status_headers[:60])
            reused_ok = True
            if b"connection: close" in status_headers.lower():
                break
    finally:
        writer.close()


async def load(port: int, tls: ssl.SSLContext | None, seconds: float, connections: int,
               clean_only: bool) -> tuple[float, list[float], dict]:
    payloads = bodies(clean_only)
    latencies: list[float] = []
    statuses: dict = {}
    t0 = time.perf_counter()
    deadline = t0 + seconds
    # a connection the proxy closes is reopened, until the deadline
    async def worker(k: int) -> None:
        n = 0
        while time.perf_counter() < deadline and n < 10_000:
            n += 1
            await one_connection(port, tls, payloads, deadline, latencies, statuses, k * 7 + n)

    await asyncio.gather(*(worker(k) for k in range(connections)))
    return len(latencies) / (time.perf_counter() - t0), latencies, statuses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per round and port")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--clean-only", action="store_true", help="send only conforming payloads")
    ap.add_argument("--mode", default="scrub", choices=["audit", "scrub", "block"])
    ap.add_argument("--icap-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for telewarden icap (e.g. --icap-arg=--preview=4096)")
    args = ap.parse_args()
    reason = missing_reason()
    if reason:
        print(f"bench icap: {reason}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench icap: note: not root; Squid runs as this user", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-icap-"))
    cert, key = make_upstream_cert(tmp)
    plain_up, tls_up = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(plain_up), str(tls_up),
                               str(cert), str(key)], stdout=subprocess.DEVNULL, start_new_session=True)]
    svc = squid = None
    try:
        wait_port(plain_up, procs[0])
        upstream = SimpleNamespace(cert=cert, tls_port=tls_up, plain_port=plain_up)
        svc = IcapService(tmp / "icap", args.mode, list(args.icap_arg)).start()
        squid = Squid(upstream, {"direct": None, "icap": svc}).start()
        ctx = ssl.create_default_context(cafile=str(squid.ca))
        print(f"{args.rounds} alternating rounds of {args.seconds:.0f}s per Squid port, {args.connections} keep-alive "
              f"connections, POST /v1/http with Hasura payloads ({'clean only' if args.clean_only else '4 clean : 1 violating'}), "
              f"ICAP service in {args.mode} mode {' '.join(args.icap_arg)}".rstrip())
        for proto in ("http", "https"):
            tls = ctx if proto == "https" else None
            for name in ("direct", "icap"):  # warm up both
                asyncio.run(load(squid.ports[name], tls, 1.0, args.connections, args.clean_only))
            results: dict[str, tuple[list[float], list[float]]] = {"direct": ([], []), "icap": ([], [])}
            codes: dict[str, dict] = {"direct": {}, "icap": {}}
            cpu = 0.0
            for r in range(args.rounds):
                for name in (("direct", "icap") if r % 2 == 0 else ("icap", "direct")):
                    c0 = cpu_seconds(svc.proc.pid)
                    rate, lat, st = asyncio.run(load(squid.ports[name], tls, args.seconds, args.connections,
                                                     args.clean_only))
                    if name == "icap":
                        cpu += cpu_seconds(svc.proc.pid) - c0
                    results[name][0].append(rate)
                    results[name][1].extend(lat)
                    for k, v in st.items():
                        codes[name][k] = codes[name].get(k, 0) + v
            p50s = {}
            for name, (rates, lat) in results.items():
                n = len(lat)
                lat.sort()
                p50, p99 = lat[n // 2] * 1e3, lat[int(n * 0.99)] * 1e3
                p50s[name] = p50
                extra = f"   ICAP service CPU {cpu / n * 1e6:5.0f} us/req" if name == "icap" else ""
                print(f"{proto:<5} squid {'+ telewarden icap' if name == 'icap' else 'alone':<18} "
                      f"{statistics.mean(rates):>7,.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms{extra}   "
                      f"(rounds: {', '.join(f'{x:,.0f}' for x in rates)}; statuses {dict(sorted(codes[name].items()))})")
            ratio = statistics.mean(results["icap"][0]) / statistics.mean(results["direct"][0])
            print(f"{proto:<5} throughput ratio with/without ICAP: {ratio:.3f}; added p50 latency "
                  f"{p50s['icap'] - p50s['direct']:+.2f} ms")
        print(f"audit records written by the ICAP service: {len(svc.decisions()):,}; client connections "
              f"reopened after Squid closed them following a block: {RECONNECTS[0]:,}")
    except Exception:
        if squid is not None:
            print(squid.cache_log()[-800:], (squid.folder / "access.log").read_text()[-1500:], file=sys.stderr)
        raise
    finally:
        if squid is not None:
            squid.stop()
        if svc is not None:
            svc.stop()
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
