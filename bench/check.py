"""`telewarden check` against mitmproxy's FlowReader alone, on a file of >= 100,000 messages.

    ./tw bench check [--messages 100000]

Writes a .mitm file of Hasura telemetry (the genuine payloads and documented violations of
examples/, 4 clean : 1 violating, as HTTP flows), then in the same run times: (1) FlowReader
reading every flow; (2) `telewarden check --format json` on the same file, in a subprocess,
with its peak RSS; and (3) the same check on a file twice as long, to show memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mitmproxy import http, io  # noqa: E402
from mitmproxy.test import tflow  # noqa: E402

BIN = Path(sys.executable).parent


def bodies() -> list[bytes]:
    clean = [p.read_bytes().strip() for p in sorted((ROOT / "examples" / "payloads").glob("*.json"))
             if not p.name.startswith("console")]
    bad = [json.dumps(c["body"], separators=(",", ":")).encode()
           for c in json.loads((ROOT / "examples" / "violations.json").read_text()) if c["transport"] == "http"]
    return clean * 4 + bad[: len(clean)]


def write(path: Path, n: int) -> None:
    mix = bodies()
    template = tflow.tflow(resp=True)
    with path.open("wb") as f:
        w = io.FlowWriter(f)
        for i in range(n):
            fl = template.copy()
            fl.request = http.Request.make("POST", "https://telemetry.hasura.io/v1/http", mix[i % len(mix)],
                                           {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"})
            w.add(fl)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-check-"))
    small, large = tmp / "n.mitm", tmp / "2n.mitm"
    t0 = time.perf_counter()
    write(small, args.messages)
    write(large, 2 * args.messages)
    print(f"wrote {args.messages:,} and {2 * args.messages:,} flows in {time.perf_counter() - t0:.1f}s "
          f"({small.stat().st_size / 1e6:.0f} MB, {large.stat().st_size / 1e6:.0f} MB)")
    n, read_s = read_all(small)
    print(f"FlowReader alone     : {n:>9,} flows in {read_s:6.2f}s = {n / read_s:>9,.0f} flows/s")
    records, check_s, rss = check(small)
    print(f"telewarden check     : {records:>9,} msgs  in {check_s:6.2f}s = {records / check_s:>9,.0f} msgs/s, "
          f"peak RSS {rss:.0f} MB")
    print(f"ratio check/read     : {(records / check_s) / (n / read_s):.2f} (target >= 0.5)")
    records2, check2_s, rss2 = check(large)
    print(f"telewarden check x2  : {records2:>9,} msgs  in {check2_s:6.2f}s = {records2 / check2_s:>9,.0f} msgs/s, "
          f"peak RSS {rss2:.0f} MB (x{rss2 / rss:.2f} for twice the file)")


if __name__ == "__main__":
    main()
