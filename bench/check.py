"""`telewarden check` against mitmproxy's FlowReader alone, on a file of >= 100,000 messages.

    ./tw bench check [--messages 100000] [--runs 3] [--unclaimed-share 0.8]

Writes a .mitm file of Hasura telemetry (the genuine payloads and documented violations of
examples/, 4 clean : 1 violating, as HTTP flows: every flow is claimed and judged), then times,
alternating, `--runs` times each: (1) FlowReader reading every flow; (2) `telewarden check
--format json` on the same file, in a subprocess, with its peak RSS. The ratio is check's
messages/s over FlowReader's flows/s of each adjacent pair, and their median: the machine's load
changes between pairs more than within one (the ratio of the two medians is printed too). Then (3) the same check on a file twice as long,
to show memory stays flat, and (4) FlowReader and check on a file of the same length where a
share of the flows go to an API no pack claims (`--unclaimed-share`, 0 to skip): most traffic in
a real recording is not telemetry. The load average is printed with every timing.

The file holds one flow state per kind of message, written again and again with a fresh flow id
(same length, so the tnetstring framing holds): what is read is what FlowWriter writes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mitmproxy import http, io  # noqa: E402
from mitmproxy.io import tnetstring  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

TELEMETRY = "https://telemetry.hasura.io/v1/http"
OTHER = "https://api.example.com/v1/items"  # no pack claims it


def bodies() -> list[bytes]:
    clean = [p.read_bytes().strip() for p in sorted((ROOT / "examples" / "payloads").glob("*.json"))
             if not p.name.startswith("console")]
    bad = [json.dumps(c["body"], separators=(",", ":")).encode()
           for c in json.loads((ROOT / "examples" / "violations.json").read_text()) if c["transport"] == "http"]
    return clean * 4 + bad[: len(clean)]


def _flow(url: str, body: bytes) -> tuple[bytes, bytes]:
    """One flow as FlowWriter writes it, and its id (to be replaced)."""
    fl = tflow.tflow(resp=True)
    fl.request = http.Request.make("POST", url, body,
                                   {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"})
    return tnetstring.dumps(fl.get_state()), fl.id.encode()


def write(path: Path, n: int, unclaimed_share: float = 0.0) -> int:
    """n flows; a share of them to OTHER (spread evenly). Returns how many are claimed."""
    mix = bodies()
    claimed = [_flow(TELEMETRY, b) for b in mix]
    other = [_flow(OTHER, b) for b in mix]
    count = 0
    with path.open("wb") as f:
        for i in range(n):
            unclaimed = int((i + 1) * unclaimed_share) > int(i * unclaimed_share)
            data, fid = (other if unclaimed else claimed)[i % len(mix)]
            count += not unclaimed
            f.write(data.replace(fid, str(uuid.uuid4()).encode(), 1))
    return count


def read_all(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with path.open("rb") as f:
        n = sum(1 for _ in io.FlowReader(f).stream())
    return n, time.perf_counter() - t0


def check(path: Path) -> tuple[int, float, float]:
    """Run telewarden check in a child; return (records, seconds, child's peak RSS in MB)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would report
    # the parent's peak.
    code = (
        "import re, sys, time\n"
        "from telewarden.cli import main\n"
        "t0 = time.perf_counter()\n"
        "status = main(['check', '--format', 'json', '--progress', 'never', sys.argv[1]])\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "sys.stderr.write(f'{time.perf_counter() - t0} {hwm}\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=1800)
    secs, rss_kb = out.stderr.strip().splitlines()[-1].split()
    return len(out.stdout.splitlines()), float(secs), int(rss_kb) / 1024


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(path: Path, messages: int, claimed: int, runs: int, label: str) -> float:
    """FlowReader and check, alternating; prints each run, returns check's peak RSS (MB)."""
    reads, checks, ratios, rss = [], [], [], 0.0
    for k in range(runs):
        n, read_s = read_all(path)
        assert n == messages, n
        print(f"  run {k + 1}  FlowReader {n / read_s:>7,.0f} flows/s ({read_s:5.1f}s, {load()})")
        records, check_s, rss_k = check(path)
        assert records == claimed, (records, claimed)  # one JSON record per judged message
        print(f"         check      {messages / check_s:>7,.0f} msgs/s  ({check_s:5.1f}s, {load()}), "
              f"peak RSS {rss_k:.0f} MB, ratio {read_s / check_s:.2f}")
        reads.append(n / read_s)
        checks.append(messages / check_s)
        ratios.append(read_s / check_s)
        rss = max(rss, rss_k)
    print(f"  {label}: FlowReader {statistics.median(reads):,.0f} flows/s (spread {min(reads):,.0f}-{max(reads):,.0f}), "
          f"check {statistics.median(checks):,.0f} msgs/s (spread {min(checks):,.0f}-{max(checks):,.0f})")
    print(f"  {label}: ratio check/read: median of the pairs {statistics.median(ratios):.2f} "
          f"(spread {min(ratios):.2f}-{max(ratios):.2f}; of the medians {statistics.median(checks) / statistics.median(reads):.2f}) "
          "(target >= 1.0)")
    return rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--unclaimed-share", type=float, default=0.8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-check-"))
    small, large, mixed = tmp / "n.mitm", tmp / "2n.mitm", tmp / "mixed.mitm"
    t0 = time.perf_counter()
    n = args.messages
    write(small, n)
    write(large, 2 * n)
    print(f"wrote {n:,} and {2 * n:,} flows in {time.perf_counter() - t0:.1f}s "
          f"({small.stat().st_size / 1e6:.0f} MB, {large.stat().st_size / 1e6:.0f} MB); cores {os.cpu_count()}, {load()}")
    print(f"all claimed ({n:,} Hasura messages, each judged):")
    rss = compare(small, n, n, args.runs, "all claimed")
    records2, check2_s, rss2 = check(large)
    print(f"telewarden check x2  : {records2:>9,} msgs  in {check2_s:6.2f}s = {records2 / check2_s:>9,.0f} msgs/s, "
          f"peak RSS {rss2:.0f} MB (x{rss2 / rss:.2f} for twice the file; {load()})")
    if args.unclaimed_share > 0:
        claimed = write(mixed, n, args.unclaimed_share)
        print(f"{args.unclaimed_share:.0%} unclaimed ({n - claimed:,} to {OTHER.split('/')[2]}, {claimed:,} Hasura):")
        compare(mixed, n, claimed, args.runs, f"{args.unclaimed_share:.0%} unclaimed")
    for p in (small, large, mixed):
        p.unlink(missing_ok=True)
    tmp.rmdir()


if __name__ == "__main__":
    main()
