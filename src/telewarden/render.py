"""One record per judged message, and its human-readable block.

The same record feeds the JSON Lines audit log, `check --format json`, the JUnit report and
the human views (audit.log, the check report, pytest assertion messages), so every view says
the same thing about a message.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

from .model import Decision, Exchange, Verdict, shown_method


def record(verdict: Verdict, ex: Exchange, source: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": ex.id,
        "time": _iso(ex.timestamp),
        "decision": verdict.decision.value,
        "mode": verdict.mode.value,
        "pack": verdict.pack,
        "endpoint": verdict.endpoint,
        "kind": verdict.kind,
        "transport": ex.transport.value,
        "method": shown_method(ex.method),
        "destination": _destination(verdict, ex),
        "findings": [f.to_dict() for f in verdict.findings],
        "size_in": verdict.size_in,
        "size_out": verdict.size_out,
        "micros": verdict.micros,
    }
    if source:
        rec["source"] = source
    if verdict.error:
        rec["error"] = verdict.error
    return rec


def _destination(verdict: Verdict, ex: Exchange) -> str:
    """scheme://name:port/path, naming the host that matched the pack rather than an address.
    A path that is not one of the pack's endpoints is the sender's to choose: it could carry
    anything, so it is not written (the finding holds its digest)."""
    host = verdict.host or (ex.hosts[0] if ex.hosts else "?")
    path = ex.path if verdict.endpoint is not None else "/(unknown path)"
    return f"{ex.scheme}://{host}:{ex.port}{path}"


def _iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds (cheaper than datetime on the per-message path)."""
    ts = ts or 0.0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _label(rec: dict[str, Any]) -> str:
    decision = rec["decision"].upper()
    if rec["decision"] == Decision.FORWARDED and any("waived" not in f for f in rec["findings"]):
        decision = "FORWARDED!"  # audit mode: sent although it broke a rule
    return decision


def block(rec: dict[str, Any]) -> str:
    """A short, aligned, greppable block: header line, then two or three lines per finding."""
    what = f"{rec.get('pack') or '-'}/{rec.get('kind') or rec.get('endpoint') or '-'}"
    head = f"{rec['time']}  {_label(rec):<10} {what:<26} {rec['method']:<4} {rec['destination']}"
    if rec.get("source"):
        head += f"  [{rec['source']}]"
    lines = [head]
    if rec.get("error") and not rec["findings"]:
        lines.append(f"    error: {rec['error']}")
    for f in rec["findings"]:
        lines.append(f"    {f['rule']:<36} {f['pointer'] or '(message)':<34} {f['severity']}")
        lines.append(f"        {f['message']}")
        lines.extend(textwrap.wrap(f'promise: "{f["promise"]}"', 96, initial_indent=" " * 8,
                                   subsequent_indent=" " * 17))
        tail = []
        if f.get("preview"):
            tail.append(f"value: {f['preview']}" + (f" ({f['digest']})" if f.get("digest") else ""))
        tail.append(f"scrub: {f.get('repair') or 'cannot repair: blocks in scrub mode'}")
        lines.append("        " + "; ".join(tail))
        if f.get("waived"):
            lines.append(f"        waived: {f['waived']}")
    if rec.get("error") and rec["findings"] and rec["decision"] == Decision.BLOCKED:
        lines.append(f"    reason: {rec['error']}")
    return "\n".join(lines)
