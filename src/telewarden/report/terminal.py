"""The ledger as a terminal summary: one block per pack, one line (or three) per promise.

Printed by `telewarden report` without -o and by `check` at its end. Every string goes through
render.escape: a pack, a trail or a recording could carry control characters."""

from __future__ import annotations

import textwrap
from collections import Counter

from ..audit.render import escape as e
from .model import NOT_RECORDED, OWN, Ledger, PackLedger, iso


def _top(c: Counter, n: int = 6) -> str:
    items = c.most_common()
    text = ", ".join(f"{e(k)} {v}" for k, v in items[:n])
    return text + (f", +{len(items) - n} more" if len(items) > n else "")


def summary(ledger: Ledger, for_check: bool = False) -> str:
    """The terminal summary; `for_check`: without the lines check prints itself (waivers, the
    raw-values warning)."""
    out = []
    for pl in ledger.packs.values():
        if pl.messages:
            out.extend(_pack(ledger, pl))
    idle = [pl.id for pl in ledger.packs.values() if not pl.messages and pl.pack is not None]
    if idle:
        out.append(f"no message to the endpoints of: {', '.join(e(i) for i in idle)} (their promises not seen)")
    for s in ledger.sources:
        if s.chain is not None:
            out.append(f"audit trail {e(s.label)}: hash chain {e(s.chain[1])}")
    n = sum(ledger.unclaimed.values())
    if n or any(s.what == "recording" for s in ledger.sources):
        hosts = _top(ledger.unclaimed, 8)
        out.append(f"unclaimed traffic passed through: {n} messages to {len(ledger.unclaimed)} hosts"
                   + (f" ({hosts})" if hosts else ""))
    if ledger.waivers and not for_check:
        out.append("waived: " + "; ".join(f"{e(r)} ({e(why)})" for r, why in ledger.waivers.items()))
    if ledger.show_values and not for_check:
        out.append("WARNING: --show-values: the ledger shows RAW VALUES (marked RAW) for a local reviewer")
    return "\n".join(out) + "\n"


def _pack(ledger: Ledger, pl: PackLedger) -> list[str]:
    first, last = iso(pl.first), iso(pl.last)
    lines = [f"promise ledger: {e(pl.id)} ({e(pl.title)}), {pl.messages} messages, {pl.flagged} with findings"
             + (f", {first} .. {last}" if pl.messages else "")]
    width = max((len(e(r.key)) for r in pl.promises.values()), default=10)
    for row in ledger.rows(pl):
        if row.key.startswith(OWN) and not row.checked:
            continue
        status = {"broken": "BROKEN", "kept": "kept", "not seen": "not seen", "waived": "waived",
                  "no rule": "no rule"}[row.status]
        label = "telewarden" if row.key.startswith(OWN) else e(row.key)
        head = f"  {status:<9} {label:<{width}}  " + (f"{row.broken:>5} of {row.checked} messages broke it" if row.checked
                                                     else "  quoted, but no rule checks it" if not row.ruled
                                                     else "  no message it applies to")
        if row.waived:
            head += f"; {row.waived} more only by waived rules"
        lines.append(head)
        lines.extend(textwrap.wrap(f'"{e(row.text)}"', 100, initial_indent=" " * 12, subsequent_indent=" " * 13))
        if row.rules:
            lines.extend(textwrap.wrap("rules: " + ", ".join(f"{e(r)}\u00a0x{n}" for r, n in row.rules.most_common()), 100,
                                       initial_indent=" " * 12, subsequent_indent=" " * 19, break_on_hyphens=False))
        if row.broken:
            lines.append(f"            by kind: {_top(row.kinds_broken)}")
            versions = Counter({k: v for k, v in row.versions_broken.items() if k != NOT_RECORDED})
            if versions:
                lines.append(f"            by version: {_top(versions)}")
            lines.append(f"            first {iso(row.first)}, last {iso(row.last)}; "
                         f"{', '.join(f'{n} {d}' for d, n in sorted(row.decisions.items()))}")
    if pl.pack is not None:
        kinds = [k.id for k in pl.pack.kinds]
        unseen = [k for k in kinds if not pl.kinds.get(k) and not pl.events.get(k)]
        lines.append(f"  coverage: endpoints {_top(pl.endpoints)}; kinds {len(kinds) - len(unseen)} of {len(kinds)} seen"
                     + (f" (never: {', '.join(e(k) for k in unseen)})" if unseen else ""))
        walked = [k for k in kinds if pl.fields_walked.get(k)]
        if walked:
            allowed = sum(len(pl.fields_allowed(k)) for k in walked)
            seen = sum(len(pl.fields_seen.get(k, ())) for k in walked)
            lines.append(f"  fields: {seen} of {allowed} schema fields of the kinds seen appeared")
    drift = sum(sum(c.values()) for c in pl.drift.values())
    if drift:
        where = ", ".join(f"{e(k)} {e(p)}" for (k, p) in list(pl.drift)[:4])
        lines.append(f"  drift: {drift} keys no schema knows ({where}{', ...' if len(pl.drift) > 4 else ''})")
    if pl.sunk:
        lines.append(f"  sink: {pl.sunk} messages answered by telewarden, never sent")
    return lines
