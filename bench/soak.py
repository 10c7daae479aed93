"""Soak: mixed conforming and violating telemetry through telewarden (scrub) for a bounded time.

    ./tw bench soak [--seconds 600] [--rate 300]

A paced load (keep-alive connections, 4 clean : 1 violating Hasura payloads, plus a WebSocket
client sending console frames) runs against `telewarden run` in reverse mode in front of a local
upstream that judges every body it receives. Every 10 s it samples the proxy's RSS. At the end it
prints: messages sent and answered, audit records, upstream arrivals, violations that reached the
upstream (must be 0), unaudited messages (must be 0), RSS first vs last minute, and whether the
trail verifies, and that audit.log (rendered after forwarding) shows every chained record.
Only 127.0.0.1 is contacted; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from proxy import HOST, bodies, wait_port  # noqa: E402
from support.harness import ensure_ca, free_port, make_upstream_cert  # noqa: E402

from telewarden.audit.trail import verify  # noqa: E402

BIN = Path(sys.executable).parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def paced_connection(port: int, tls: ssl.SSLContext, payloads: list[bytes], interval: float,
                           deadline: float, stats: dict, offset: int) -> None:
    """Keep-alive POSTs at a fixed pace; a dropped connection is counted and reopened."""
    i, next_t = offset, time.perf_counter()
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname=HOST)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.5)
            continue
        try:
            while time.perf_counter() < deadline:
                body = payloads[i % len(payloads)]
                i += 1
                writer.write((f"POST /v1/http HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
                stats["sent"] += 1
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                stats["answered"] += 1
                stats[head[9:12].decode()] = stats.get(head[9:12].decode(), 0) + 1
                next_t += interval
                await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
        except (OSError, asyncio.IncompleteReadError):
            stats["dropped_connections"] += 1
        finally:
            writer.close()


async def websocket_client(port: int, tls: ssl.SSLContext, deadline: float, stats: dict) -> None:
    from websockets.asyncio.client import connect

    frames = [p.read_text().strip() for p in sorted((ROOT / "examples" / "payloads").glob("console*.json"))]
    frames += [json.dumps(c["body"]) for c in json.loads((ROOT / "examples" / "violations.json").read_text())
               if c["transport"] == "websocket"]
    sock = socket.create_connection(("127.0.0.1", port))  # loopback only: never resolve the vendor's name
    # ping_interval=None: a browser's page never pings, and telewarden empties the client's ping payloads
    # (scrub/block), so the library's keepalive (which matches pongs by payload) would give up after ~40 s
    async with connect(f"wss://{HOST}:{port}/v1/ws", sock=sock, ssl=tls, server_hostname=HOST,
                       compression=None, proxy=None, ping_interval=None,
                       user_agent_header="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                         "Chrome/131.0.0.0 Safari/537.36") as ws:
        i = 0
        while time.perf_counter() < deadline:
            await ws.send(frames[i % len(frames)])
            stats["ws_frames"] += 1
            i += 1
            await asyncio.sleep(0.05)


async def sampler(pid: int, deadline: float, samples: list) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        samples.append((time.perf_counter() - t0, rss_mb(pid)))
        await asyncio.sleep(10)


async def run_load(port, tls, pid, seconds, rate, connections, websocket=True):
    payloads = bodies()
    stats = {"sent": 0, "answered": 0, "ws_frames": 0, "connect_errors": 0, "dropped_connections": 0}
    samples: list = []
    deadline = time.perf_counter() + seconds
    interval = connections / rate
    await asyncio.gather(*(paced_connection(port, tls, payloads, interval, deadline, stats, k * 5)
                           for k in range(connections)),
                         *([websocket_client(port, tls, deadline, stats)] if websocket else []),
                         sampler(pid, deadline, samples))
    return stats, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=300, help="HTTP requests per second (paced)")
    ap.add_argument("--connections", type=int, default=6)
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for telewarden run, e.g. --proxy-arg=--set=telewarden_ws_keep=100")
    ap.add_argument("--no-websocket", action="store_true", help="HTTP only (mitmproxy keeps every frame of a "
                    "WebSocket flow in memory for the life of the connection)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tw-soak-"))
    cert, key = make_upstream_cert(tmp)
    confdir = tmp / "conf"
    ensure_ca(confdir)
    plain_up, tls_up, port = free_port(), free_port(), free_port()
    env = {**os.environ, "TELEWARDEN_TEST_UPSTREAM_PORT": str(tls_up),
           "TELEWARDEN_TEST_UPSTREAM_PLAIN_PORT": str(plain_up), "TELEWARDEN_AUDIT_KEY": "soak"}
    summary = tmp / "upstream.json"
    up = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(plain_up), str(tls_up),
                           str(cert), str(key), "--judge", str(summary)], stdout=subprocess.DEVNULL,
                          env=env, start_new_session=True)
    audit = tmp / "audit"
    proxy = subprocess.Popen([str(BIN / "telewarden"), "run", "--mode", "scrub", "--mode", f"reverse:https://{HOST}/",
                              "--audit", str(audit), "--listen-port", str(port), "--set", "termlog_verbosity=warn", "--set", "flow_detail=0",
                              "-s", str(ROOT / "tests" / "support" / "redirect_addon.py"),
                              "--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={cert}",
                              *args.proxy_arg],
                             stdout=(tmp / "proxy.log").open("wb"), stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    try:
        wait_port(plain_up, up)
        wait_port(port, proxy)
        tls = ssl.create_default_context(cafile=str(confdir / "mitmproxy-ca-cert.pem"))
        print(f"soak: {args.seconds:.0f}s, {args.rate:.0f} HTTP req/s over {args.connections} connections + "
              f"~20 WebSocket frames/s, scrub mode", flush=True)
        stats, samples = asyncio.run(run_load(port, tls, proxy.pid, args.seconds, args.rate, args.connections,
                                                  not args.no_websocket))
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(20)
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(20)
    counts = json.loads(summary.read_text())
    records = [json.loads(x) for f in sorted(audit.glob("audit.jsonl*")) for x in f.read_text().splitlines()]
    decisions = [r for r in records if "decision" in r]
    http_recs = [r for r in decisions if r["transport"] == "http" and r["method"] == "POST"]
    ws_recs = [r for r in decisions if r["transport"] == "websocket"]
    forwarded = sum(1 for r in http_recs if r["decision"] in ("forwarded", "scrubbed"))
    first = [m for t, m in samples if t < 60] or [samples[0][1]]
    last = [m for t, m in samples if t > samples[-1][0] - 60] or [samples[-1][1]]
    status, report = verify(audit)
    print(f"HTTP requests sent {stats['sent']:,}, answered {stats['answered']:,} "
          f"({', '.join(f'{k}: {v:,}' for k, v in stats.items() if k.isdigit())}); WebSocket frames sent {stats['ws_frames']:,}")
    print(f"audit records: {len(http_recs):,} HTTP + {len(ws_recs):,} WebSocket; decisions: "
          + ", ".join(f"{d} {sum(1 for r in decisions if r['decision'] == d):,}" for d in ("forwarded", "scrubbed", "blocked")))
    print(f"unaudited HTTP messages: {stats['answered'] - len(http_recs)} (answered minus audited); "
          f"dropped connections {stats['dropped_connections']}, connect errors {stats['connect_errors']}")
    print(f"upstream received {counts['received']:,} HTTP bodies (audit says {forwarded:,} forwarded or scrubbed) "
          f"and {counts['frames']:,} WebSocket frames; violations among them: {counts['violating']} "
          f"{counts['violating_rules'] or ''}")
    print(f"proxy RSS: first minute {sum(first) / len(first):.0f} MB, last minute {sum(last) / len(last):.0f} MB, "
          f"samples {', '.join(f'{m:.0f}' for _, m in samples)}")
    print(f"audit trail: {report}")
    # audit.log is rendered after forwarding: after a clean stop it must show every chained line
    shown = sum(f.read_text().count("\n\n") for f in audit.glob("audit.log*"))
    chained = sum(f.read_text().count("\n") for f in audit.glob("audit.jsonl*"))
    print(f"audit.log: {shown:,} blocks for {chained:,} chained records"
          + ("" if shown == chained else "  <-- MISSING from the human view"))


if __name__ == "__main__":
    main()
