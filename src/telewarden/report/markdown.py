"""The ledger as Markdown, for a ticket: the per-promise table, evidence, coverage, unclaimed hosts.

Every string goes through render.escape (control and bidi characters), then `md`: Markdown and
inline-HTML syntax is escaped, so a value cannot add a table cell, a link, an image, a code span
or markup."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from ..audit import render
from .model import DECISIONS, OWN, Ledger, PackLedger, iso

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md(value: Any) -> str:
    text = render.escape(value)  # one line; control, bidi and invisible characters made visible
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # no inline HTML
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(value: Any, in_table: bool = True) -> str:
    """A code span: its content is literal (no emphasis, link, autolink or HTML), fenced with more
    backticks than the value holds in a row; in a table a pipe is escaped (GFM splits cells on it
    even inside a code span, and turns `\\|` back into `|` there)."""
    text = render.escape(value)
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _list(c: Counter, limit: int = 6, checked: Counter | None = None) -> str:
    items = c.most_common()
    text = ", ".join(f"{code(k)} {n}" + (f"/{checked[k]}" if checked is not None and k in checked else "")
                     for k, n in items[:limit])
    return (text + (f", +{len(items) - limit} more" if len(items) > limit else "")) or "-"


def render_markdown(ledger: Ledger) -> str:
    t = ledger.totals()
    first, last = ledger.time_range()
    out = ["# Promise ledger", "",
           f"Generated {md(ledger.generated)} from " + md(", ".join(f"{s.label} ({s.what}, {s.messages} messages)"
                                                               for s in ledger.sources) or "no input")
           + f"; judged as {md(ledger.mode)} mode would.", ""]
    if ledger.show_values:
        out += ["> **WARNING: this report contains RAW VALUES** (marked RAW): for a local reviewer, not for a ticket.", ""]
    if ledger.waivers:
        out += ["Waived by review (not counted as breaking): "
                + "; ".join(f"{code(r, False)} ({md(why)})" for r, why in ledger.waivers.items()), ""]
    for s in ledger.sources:
        if s.chain is not None:
            word = {0: "intact", 1: "TAMPERED", 2: "unreadable"}.get(s.chain[0], "?")
            out += [f"**Audit trail {code(s.label, False)}: hash chain {word}**: {md(s.chain[1].split(': ', 1)[-1])}", ""]
    out += [f"**{t['messages']} telemetry messages**, {t['flagged']} with findings ({t['findings']} findings); "
            + md(", ".join(f"{t['decisions'].get(d, 0)} {d}" for d in DECISIONS))
            + f"; {t['passed_through']} unclaimed messages passed through; {md(iso(first))} to {md(iso(last))}.", ""]
    for pl in ledger.packs.values():
        if pl.messages:
            out += _pack(ledger, pl)
    idle = [pl for pl in ledger.packs.values() if not pl.messages and pl.pack is not None]
    if idle:
        out += ["No message reached the endpoints of: " + ", ".join(f"{md(pl.title)} ({code(pl.id, False)})" for pl in idle)
                + " (their promises not seen).", ""]
    if ledger.unclaimed:
        out += ["## Unclaimed traffic", "", "| host | messages |", "|---|---:|"]
        items = ledger.unclaimed.most_common()
        out += [f"| {code(host)} | {n} |" for host, n in items[:100]]
        if len(items) > 100:
            out.append(f"| +{len(items) - 100} more hosts | |")
        out.append("")
    return "\n".join(out) + "\n"


def _pack(ledger: Ledger, pl: PackLedger) -> list[str]:
    out = [f"## {md(pl.title)} ({md(pl.id)})", "",
           f"Promises quoted from: {md(pl.source)}. {pl.messages} messages, {pl.flagged} with findings, "
           f"first {md(iso(pl.first))}, last {md(iso(pl.last))}.", "",
           "| status | promise | broken / checked | rules (messages) | by kind (broken/checked) | by version (broken/checked) | first / last broken |",
           "|---|---|---:|---|---|---|---|"]
    rows = [r for r in ledger.rows(pl) if not (r.key.startswith(OWN) and not r.checked)]
    for r in rows:
        label = "telewarden (could not verify)" if r.key.startswith(OWN) else r.key
        status = "**BROKEN**" if r.status == "broken" else r.status
        versions = _list(r.versions_broken, 6, r.versions_checked) if ledger.versions_known else "not in the audit trail"
        out.append(f"| {status} | **{md(label)}**: “{md(r.text)}” | {r.broken} / {r.checked} | {_list(r.rules, 8)} "
                   f"| {_list(r.kinds_broken, 6, r.kinds_checked)} | {versions} | {md(iso(r.first))} / {md(iso(r.last))} |")
    out.append("")
    for r in rows:
        if not r.evidence:
            continue
        label = "telewarden (could not verify)" if r.key.startswith(OWN) else r.key
        raw = " RAW value |" if ledger.show_values else ""
        out += [f"### Evidence: {md(label)}", "",
                f"| rule | pointer | value (safe preview) | digest | messages | first message |{raw}",
                "|---|---|---|---|---:|---|" + ("---|" if ledger.show_values else "")]
        for ev in sorted(r.evidence.values(), key=lambda e: (-e.count, e.rule, e.pointer)):
            cells = (f"| {code(ev.rule)}{' (waived: ' + md(ev.waived) + ')' if ev.waived else ''} | {code(ev.pointer)} "
                     f"| {md(ev.preview) or '-'} | {code(ev.digest) if ev.digest else '-'} | {ev.count} | {md(ev.source)} |")
            if ledger.show_values:
                cells += f" RAW {md(ev.raw) if ev.raw is not None else '-'} |"
            out.append(cells)
        if r.evidence_more:
            out.append(f"\n{r.evidence_more} more finding groups not listed.")
        out.append("")
    if pl.pack is not None:
        out += ["### Coverage and drift", "",
                "Endpoints: " + ", ".join(f"{code(e.id, False)} {pl.endpoints.get(e.id, 0)}" for e in pl.pack.endpoints)
                + (f", unknown path or method {pl.endpoints['(unknown endpoint)']}" if pl.endpoints.get("(unknown endpoint)") else ""),
                "", "| kind | messages (events) | fields seen / allowed | never appeared |", "|---|---:|---:|---|"]
        for k in pl.pack.kinds:
            allowed = pl.fields_allowed(k.id)
            n = pl.events.get(k.id, 0) if getattr(k, "within", None) else pl.kinds.get(k.id, 0)
            shown = f"({n} events)" if getattr(k, "within", None) else str(n)
            if pl.fields_walked.get(k.id):
                unseen = pl.fields_unseen(k.id)
                never = " ".join(code(u) for u in unseen[:30]) + (f" +{len(unseen) - 30} more" if len(unseen) > 30 else "")
                out.append(f"| {code(k.id)} | {shown} | {len(pl.fields_seen.get(k.id, ()))} / {len(allowed)} | {never or 'none'} |")
            else:
                why = "none of this kind" if not n else "bodies not in the audit trail"
                out.append(f"| {code(k.id)} | {shown} | - / {len(allowed)} | {why} |")
        out.append("")
    ndrift = sum(sum(c.values()) for c in pl.drift.values())
    out.append(f"Drift (keys no schema knows): {ndrift}" + (":" if ndrift else "."))
    for (k, where), c in sorted(pl.drift.items()):
        line = f"- {code(k, False)} {code(where, False)}: {sum(c.values())}"
        if ledger.show_values:
            line += f" RAW {md(', '.join(sorted(map(str, pl.drift_raw.get((k, where), ())))[:20]))}"
        out.append(line)
    out.append("")
    return out
