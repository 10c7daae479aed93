"""The ledger as one self-contained HTML page: inline CSS and SVG, no script, no external asset,
so it opens offline, prints, and can be attached as is.

Every string is escaped twice over: render.escape first (control, bidi and invisible characters
become visible escapes, so nothing can reorder or hide text), then html.escape (no markup). The
figures are also in `data-*` attributes, which the tests read from the DOM Chromium builds.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any

from ..audit import render
from .model import DECISIONS, OWN, Ledger, PackLedger, PromiseRow, iso

SERIES = (("blocked", "blocked", "#c62828"), ("scrubbed", "scrubbed", "#e08a00"),
          ("forwarded!", "forwarded with findings (audit)", "#7b3fa0"), ("forwarded", "forwarded clean", "#2e7d32"))

CSS = """
:root{--fg:#1d232a;--muted:#5b6673;--line:#d5dbe1;--bg:#fff;--soft:#f4f6f8;--bad:#c62828;--ok:#2e7d32;--none:#6b7785}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.muted{color:var(--muted)}code,.mono{font:12.5px/1.4 ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;overflow-wrap:anywhere}
.chain{border:1px solid var(--line);border-left:5px solid var(--ok);padding:8px 12px;margin:10px 0;background:var(--soft)}
.banner{border:2px solid var(--bad);background:#fdecea;color:#7f1d1d;padding:8px 12px;margin:10px 0;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:130px;background:var(--soft)}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border:1px solid var(--line);padding:5px 7px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.n{white-space:nowrap}
.badge{display:inline-block;color:#fff;font-weight:700;font-size:12px;padding:2px 7px;border-radius:4px;text-transform:uppercase;letter-spacing:.03em}
.badge.broken{background:var(--bad)}.badge.waived{background:#8d6e00}.badge.no-rule{background:#9aa4ae}.badge.kept{background:var(--ok)}.badge.not-seen{background:var(--none)}
td.status{white-space:nowrap}
table.promises,table.evidence{table-layout:fixed}
table.promises code{overflow-wrap:normal;word-break:normal}
td.when{white-space:nowrap;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
blockquote{margin:2px 0 0;color:var(--muted);font-style:italic}
ul.tight{margin:0;padding-left:16px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
svg{width:100%;height:auto;border:1px solid var(--line);background:#fff}
.raw{color:#7f1d1d;font-weight:600}
footer{margin-top:30px;color:var(--muted);font-size:12px}
@media print,(max-width:900px){code,.mono,td.when{font-size:9.5px}td.when{white-space:normal}
 .badge{font-size:9.5px;padding:1px 4px}th,td{padding:3px 4px}}
@media print{body{font-size:11px}main{max-width:none;padding:0}h2{break-after:avoid}tr,.card,svg{break-inside:avoid}
 .card{background:none}a{color:inherit;text-decoration:none}}
@page{margin:14mm}
"""


def h(value: Any) -> str:
    return html.escape(render.escape(value), quote=True)


def hw(value: Any) -> str:
    """Escaped, with a break opportunity after each dot and slash (rule ids, pointers)."""
    return h(value).replace(".", ".<wbr>").replace("/", "/<wbr>")


def render_html(ledger: Ledger) -> str:
    t = ledger.totals()
    rows = [r for p in ledger.packs.values() if p.messages for r in p.promises.values() if not r.key.startswith(OWN)]
    broken = sum(r.status == "broken" for r in rows)
    kept = sum(r.status == "kept" for r in rows)
    unseen = sum(r.status in ("not seen", "no rule") for r in rows)
    first, last = ledger.time_range()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             # no script, no fetch: the page cannot load or run anything
             "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
             "<title>telewarden promise ledger</title>", f"<style>{CSS}</style></head><body><main>",
             "<h1>Promise ledger</h1>",
             f'<p class="muted">Does the product keep the promises its vendor publishes, and where not, what leaves? '
             f'Generated {h(ledger.generated)} by telewarden from {h(_sources_line(ledger))}'
             + _decisions_line(ledger) + ".</p>"]
    if ledger.show_values:
        parts.append('<div class="banner" id="raw-banner">This report contains RAW VALUES from the messages (marked RAW): '
                     "what leaked, for a local reviewer. Do not attach it to a ticket, a CI log or an audit trail.</div>")
    if ledger.waivers:
        parts.append('<p id="waivers">Waived by review (<code>--allow</code>): shown as evidence, not counted as breaking: '
                     + "; ".join(f"<code>{h(r)}</code> ({h(why)})" for r, why in ledger.waivers.items()) + "</p>")
    for s in ledger.sources:
        if s.chain is not None:
            ok = s.chain[0] == 0
            word = {0: "intact", 1: "TAMPERED", 2: "unreadable"}.get(s.chain[0], "?")
            parts.append(f'<div class="{"chain" if ok else "banner"}" data-chain="{h(word)}" id="chain-{h(s.label)}">'
                         f"Audit trail <code>{h(s.label)}</code>: hash chain <b>{h(word)}</b>: "
                         f'<span class="mono">{h(s.chain[1].split(": ", 1)[-1])}</span></div>')
    parts.append('<div class="cards" id="totals" '
                 f'data-messages="{t["messages"]}" data-flagged="{t["flagged"]}" data-findings="{t["findings"]}" '
                 + " ".join(f'data-{d}="{t["decisions"].get(d, 0)}"' for d in DECISIONS)
                 + f' data-passed="{t["passed_through"]}" data-broken-promises="{broken}" data-kept-promises="{kept}">')
    for label, value in (("telemetry messages", t["messages"]), ("with findings", t["flagged"]),
                         ("findings", t["findings"]), ("promises broken", broken), ("promises kept", kept),
                         ("promises not seen or unchecked", unseen), ("unclaimed messages", t["passed_through"])):
        if label == "unclaimed messages" and not any(s.what == "recording" for s in ledger.sources):
            value, label = "-", "unclaimed (trails never record it)"
        parts.append(f'<div class="card"><b>{value}</b>{h(label)}</div>')
    parts.append("</div>")
    parts.append(f'<p class="muted">Decisions: {h(", ".join(f"{t["decisions"].get(d, 0)} {d}" for d in DECISIONS))}; '
                 f"from {h(iso(first))} to {h(iso(last))}.</p>")
    parts.append("<h2>Timeline</h2>" + timeline_svg(ledger))
    for pl in ledger.packs.values():
        if pl.messages:
            parts.append(_pack(ledger, pl))
    idle = [pl for pl in ledger.packs.values() if not pl.messages and pl.pack is not None]
    if idle:
        parts.append('<h2>Packs with no message</h2><p id="idle-packs">No message reached the endpoints of '
                     + ", ".join(f'<span data-pack="{h(pl.id)}">{h(pl.title)} (<code>{h(pl.id)}</code>, '
                                 f"{len(pl.promises)} promises not seen)</span>" for pl in idle) + ".</p>")
    parts.append(_unclaimed(ledger))
    parts.append(_sources(ledger))
    parts.append(f'<footer>telewarden report; findings show JSON pointers, safe previews (type, size, what a detector '
                 f'thinks it is) and keyed digests, never the values{" (except where marked RAW)" if ledger.show_values else ""}.'
                 f"</footer></main></body></html>")
    return "\n".join(parts)


def _decisions_line(ledger: Ledger) -> str:
    what = []
    if any(s.what == "recording" for s in ledger.sources):
        what.append(f"recordings judged as <b>{h(ledger.mode)}</b> mode would")
    if any(s.what == "audit trail" for s in ledger.sources):
        what.append("audit trails as the live proxy decided")
    return "; " + " and ".join(what) if what else ""


def _sources_line(ledger: Ledger) -> str:
    return ", ".join(f"{s.label} ({s.what}, {s.messages} messages)" for s in ledger.sources) or "no input"


def timeline_svg(ledger: Ledger, width: int = 1000, height: int = 190) -> str:
    """Messages over time, stacked by decision, in at most 60 bars."""
    tl = ledger.timeline
    if not tl:
        return '<p class="muted" id="timeline">No timed messages.</p>'
    t0, step, bins = tl.bins(60)
    t1, span, nbins = tl.last, tl.last - t0, len(bins)
    top = max(sum(b.values()) for b in bins)
    left, right, upper, lower = 44, 10, 10, 34
    plot_w, plot_h = width - left - right, height - upper - lower
    bar_w = plot_w / nbins
    out = [f'<svg id="timeline" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg" '
           f'data-messages="{tl.count}" data-bins="{nbins}" aria-label="messages over time by decision">',
           f"<title>{tl.count} messages from {h(iso(t0))} to {h(iso(t1))}</title>"]
    for frac in (0, 0.5, 1):
        y = upper + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e7eb"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#5b6673">'
                   f"{math.ceil(top * frac)}</text>")
    for i, b in enumerate(bins):
        y = upper + plot_h
        x = left + i * bar_w
        start = t0 + step * i
        for key, label, color in SERIES:
            n = b.get(key, 0)
            if not n:
                continue
            hgt = plot_h * n / top
            y -= hgt
            out.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{hgt:.1f}" '
                       f'fill="{color}" data-decision="{h(key)}" data-count="{n}"><title>{n} {h(label)} from '
                       f"{h(iso(start))}</title></rect>")
    if span > 0:
        out.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 12}" font-size="11" text-anchor="middle" '
                   f'fill="#5b6673">each bar: {_duration(step)}</text>')
    out.append(f'<text x="{left}" y="{height - 12}" font-size="11" fill="#5b6673">{h(iso(t0))}</text>'
               f'<text x="{width - right}" y="{height - 12}" font-size="11" text-anchor="end" fill="#5b6673">'
               f"{h(iso(t1))}</text></svg>")
    counts = tl.totals()
    out.append('<div class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{h(label)}: {counts.get(k, 0)}</span>' for k, label, c in SERIES) + "</div>")
    return "".join(out)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def _status_cell(row: PromiseRow) -> str:
    cls = row.status.replace(" ", "-")
    return f'<td class="status"><span class="badge {h(cls)}">{h(row.status)}</span></td>'


def _when(ts: float | None) -> str:
    """A time as the tables show it: date and time to the second (UTC), one line each."""
    text = iso(ts)
    return h(text[:10]) + " " + h(text[11:19]) if len(text) > 19 else h(text)


def _counter_list(c: Counter, limit: int = 8, checked: Counter | None = None) -> str:
    if not c:
        return '<span class="muted">-</span>'
    items = c.most_common()
    lis = "".join(f"<li><code>{hw(k)}</code> {n}" + (f"/{checked[k]}" if checked is not None and k in checked else "")
                  + "</li>" for k, n in items[:limit])
    more = f"<li class=\"muted\">+{len(items) - limit} more</li>" if len(items) > limit else ""
    return f'<ul class="tight">{lis}{more}</ul>'


def _pack(ledger: Ledger, pl: PackLedger) -> str:
    p = [f'<section class="pack" id="pack-{h(pl.id)}" data-pack="{h(pl.id)}" data-messages="{pl.messages}" '
         f'data-flagged="{pl.flagged}" data-findings="{pl.findings}">',
         f"<h2>{h(pl.title)} <span class=\"muted\">({h(pl.id)})</span></h2>",
         f'<p class="muted">Promises quoted from: {h(pl.source)}. {pl.messages} messages, {pl.flagged} with findings '
         f"({pl.findings} findings); {h(', '.join(f'{pl.decisions.get(d, 0)} {d}' for d in DECISIONS))}"
         + (f"; {pl.sunk} answered by telewarden's sink, never sent" if pl.sunk else "")
         + f"; first {h(iso(pl.first))}, last {h(iso(pl.last))}.</p>",
         "<h3>Promises</h3>",
         '<table class="promises"><colgroup><col style="width:8%"><col style="width:22%"><col style="width:7%">'
         '<col style="width:23%"><col style="width:12%"><col style="width:14%"><col style="width:14%"></colgroup>'
         '<thead><tr><th>status</th><th>promise</th><th class="n">broken / checked</th>'
         "<th>rules that broke it (messages)</th><th>by kind (broken / checked)</th><th>by client version (broken / checked)</th>"
         "<th>first / last broken (UTC)</th></tr></thead><tbody>"]
    rows = ledger.rows(pl)
    for row in rows:
        if row.key.startswith(OWN) and not row.checked:
            continue
        label = "telewarden (could not verify)" if row.key.startswith(OWN) else row.key
        versions = _counter_list(row.versions_broken, 8, row.versions_checked) if ledger.versions_known else \
            '<span class="muted">not in the audit trail</span>'
        p.append(f'<tr class="{h(row.status.replace(" ", "-"))}" data-pack="{h(pl.id)}" data-promise="{h(row.key)}" data-status="{h(row.status)}" '
                 f'data-broken="{row.broken}" data-checked="{row.checked}" data-waived="{row.waived}">'
                 f"{_status_cell(row)}<td><b>{h(label)}</b><blockquote>&ldquo;{h(row.text)}&rdquo;</blockquote></td>"
                 f'<td class="n">{row.broken} / {row.checked}' + (f"<br><span class=\"muted\">{row.waived} waived</span>" if row.waived else "")
                 + f"</td><td>{_counter_list(row.rules, 12)}</td><td>{_counter_list(row.kinds_broken, 8, row.kinds_checked)}</td>"
                 f"<td>{versions}</td><td class=\"when\">{_when(row.first)}<br>{_when(row.last)}</td></tr>")
    p.append("</tbody></table>")
    for row in rows:
        if row.evidence:
            p.append(_evidence(ledger, row))
    p.append(_coverage(ledger, pl))
    p.append("</section>")
    return "\n".join(p)


def _evidence(ledger: Ledger, row: PromiseRow) -> str:
    label = "telewarden (could not verify)" if row.key.startswith(OWN) else row.key
    raw_head = "<th>RAW value</th>" if ledger.show_values else ""
    out = [f'<h3 id="evidence-{h(row.key)}">Evidence: {h(label)}</h3>',
           f'<table class="evidence" data-promise="{h(row.key)}"><colgroup>' + "".join(
               f'<col style="width:{w}%">' for w in ((16, 16, 6, 13, 19, 6, 13, 11) if not ledger.show_values else
                                                     (13, 13, 6, 11, 15, 5, 11, 9, 17))) + "</colgroup><thead><tr><th>rule</th><th>pointer</th><th>severity</th>"
           f'<th>value (safe preview)</th><th>digest</th><th class="n">count</th><th>first / last (UTC)</th>'
           f"<th>first message</th>{raw_head}</tr></thead><tbody>"]
    for ev in sorted(row.evidence.values(), key=lambda e: (-e.count, e.rule, e.pointer)):
        raw = ""
        if ledger.show_values:
            raw = "<td class=\"raw mono\">" + (f"RAW pointer {h(ev.raw_pointer)}<br>" if ev.raw_pointer else "") + \
                  (f"RAW {h(ev.raw)}" if ev.raw is not None else "") + "</td>"
        waived = f'<br><span class="muted">waived: {h(ev.waived)}</span>' if ev.waived else ""
        out.append(f'<tr data-rule="{h(ev.rule)}" data-count="{ev.count}"><td><code>{hw(ev.rule)}</code>{waived}</td>'
                   f"<td><code>{hw(ev.pointer)}</code></td><td>{h(ev.severity)}</td><td>{h(ev.preview) or '-'}</td>"
                   f'<td class="mono">{h(ev.digest) or "-"}</td><td class="n">{ev.count}</td>'
                   f'<td class="when">{_when(ev.first)}<br>{_when(ev.last)}</td><td class="mono">{h(ev.source)}</td>{raw}</tr>')
    out.append("</tbody></table>")
    if row.evidence_more:
        out.append(f'<p class="muted">{row.evidence_more} more findings in other groups are not listed.</p>')
    return "\n".join(out)


def _coverage(ledger: Ledger, pl: PackLedger) -> str:
    out = ["<h3>Coverage and drift</h3>"]
    if pl.pack is not None:
        out.append('<table class="endpoints"><thead><tr><th>endpoint</th><th>transport</th><th>paths</th>'
                   '<th class="n">messages</th></tr></thead><tbody>')
        for e in pl.pack.endpoints:
            out.append(f'<tr data-endpoint="{h(e.id)}" data-count="{pl.endpoints.get(e.id, 0)}"><td><code>{h(e.id)}</code></td>'
                       f"<td>{h(e.transport.value)}</td><td><code>{h(' '.join(sorted(e.paths)))}</code></td>"
                       f'<td class="n">{pl.endpoints.get(e.id, 0)}</td></tr>')
        if pl.endpoints.get("(unknown endpoint)"):
            out.append(f'<tr data-endpoint="(unknown)" data-count="{pl.endpoints["(unknown endpoint)"]}"><td>(unknown path or method)</td>'
                       f'<td></td><td></td><td class="n">{pl.endpoints["(unknown endpoint)"]}</td></tr>')
        out.append("</tbody></table>")
        out.append('<table class="kinds"><thead><tr><th>kind</th><th class="n">messages (events)</th>'
                   '<th class="n">schema fields seen / allowed</th><th>fields the schema allows that never appeared</th>'
                   "</tr></thead><tbody>")
        for k in pl.pack.kinds:
            within = getattr(k, "within", None)
            n = pl.events.get(k.id, 0) if within else pl.kinds.get(k.id, 0)
            shown = f"({n} events)" if within else str(n)
            allowed = pl.fields_allowed(k.id)
            if pl.fields_walked.get(k.id):
                seen = len(pl.fields_seen.get(k.id, ()))
                unseen = pl.fields_unseen(k.id)
                cell = f"{seen} / {len(allowed)}"
                never = " ".join(f"<code>{h(u)}</code>" for u in unseen[:40]) + (f" +{len(unseen) - 40} more" if len(unseen) > 40 else "")
                never = never or '<span class="muted">none: every field appeared</span>'
            else:
                seen, cell = 0, f"- / {len(allowed)}"
                never = '<span class="muted">' + ((f"no event of this kind in a {h(within)} message" if within else
                                                   "no message of this kind") if not n else
                                                  "bodies not in the audit trail") + "</span>"
            out.append(f'<tr data-kind="{h(k.id)}" data-count="{n}" data-fields-seen="{seen}" data-fields-allowed="{len(allowed)}">'
                       f"<td><code>{h(k.id)}</code><br><span class=\"muted\">{h(k.title)}</span></td><td class=\"n\">{shown}</td>"
                       f'<td class="n">{cell}</td><td>{never}</td></tr>')
        if pl.events.get("(unknown event)"):
            out.append(f'<tr data-kind="(unknown event)" data-count="{pl.events["(unknown event)"]}"><td>(an event of no '
                       f'known kind)</td><td class="n">({pl.events["(unknown event)"]} events)</td><td></td><td></td></tr>')
        if pl.kinds.get("(unknown kind)"):
            out.append(f'<tr data-kind="(unknown)" data-count="{pl.kinds["(unknown kind)"]}"><td>(no kind: unknown shape, '
                       f'endpoint or handshake)</td><td class="n">{pl.kinds["(unknown kind)"]}</td><td></td><td></td></tr>')
        out.append("</tbody></table>")
    if pl.versions and ledger.versions_known:
        by_kind: dict[str, Counter] = {}
        for (k, v), n in pl.versions.items():
            by_kind.setdefault(k, Counter())[v] += n
        out.append('<table class="versions"><thead><tr><th style="width:22%">kind</th><th>client versions (messages)</th>'
                   "</tr></thead><tbody>")
        for k, c in sorted(by_kind.items()):
            items = ", ".join(f"<code>{h(v)}</code> {n}" for v, n in sorted(c.items()))
            out.append(f'<tr data-kind="{h(k)}"><td><code>{h(k)}</code></td><td>{items}</td></tr>')
        out.append("</tbody></table>")
    ndrift = sum(sum(c.values()) for c in pl.drift.values())
    out.append(f'<p id="drift-{h(pl.id)}" data-drift="{ndrift}"><b>Drift</b> (keys no schema knows: the vendor may have '
               f"changed its format): {ndrift}</p>")
    if pl.drift:
        raw_head = "<th>RAW key names</th>" if ledger.show_values else ""
        out.append(f'<table class="drift"><thead><tr><th>kind</th><th>where (key shown by digest)</th><th>value</th>'
                   f'<th class="n">messages</th>{raw_head}</tr></thead><tbody>')
        for (k, where), c in sorted(pl.drift.items()):
            raw = ""
            if ledger.show_values:
                raw = f'<td class="raw mono">RAW {h(", ".join(sorted(map(str, pl.drift_raw.get((k, where), ())))[:20]))}</td>'
            out.append(f"<tr><td><code>{h(k)}</code></td><td><code>{h(where)}</code></td>"
                       f"<td>{h(', '.join(sorted(c)))}</td><td class=\"n\">{sum(c.values())}</td>{raw}</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)


def _unclaimed(ledger: Ledger) -> str:
    n = sum(ledger.unclaimed.values())
    out = [f'<h2>Unclaimed traffic</h2><p id="unclaimed" data-messages="{n}" data-hosts="{len(ledger.unclaimed)}">'
           f"{n} messages to {len(ledger.unclaimed)} hosts no pack claims were passed through untouched "
           "(telemetry of a vendor no pack covers would show here)."
           + (" Audit trails never record unclaimed traffic." if any(s.what == "audit trail" for s in ledger.sources) else "")
           + "</p>"]
    if ledger.unclaimed:
        out.append('<table class="unclaimed"><thead><tr><th>host</th><th class="n">messages</th></tr></thead><tbody>')
        items = ledger.unclaimed.most_common()
        for host, c in items[:200]:
            out.append(f'<tr data-host="{h(host)}" data-count="{c}"><td><code>{h(host)}</code></td><td class="n">{c}</td></tr>')
        out.append("</tbody></table>")
        if len(items) > 200:
            out.append(f'<p class="muted">+{len(items) - 200} more hosts.</p>')
    return "\n".join(out)


def _sources(ledger: Ledger) -> str:
    out = ['<h2>Inputs</h2><table class="sources"><thead><tr><th>input</th><th>kind</th><th class="n">telemetry messages</th>'
           '<th class="n">passed through</th><th>notes</th></tr></thead><tbody>']
    for s in ledger.sources:
        notes = [f"{n} skipped: {why}" for why, n in sorted(s.skipped.items())]
        notes += [f"{n} read with care: {why}" for why, n in sorted(s.notes.items())]
        notes += [f"unreadable: {p}" for p in s.problems]
        if s.chain is not None:
            notes.append(f"chain: {s.chain[1]}")
        out.append(f"<tr><td><code>{h(s.label)}</code></td><td>{h(s.what)}</td><td class=\"n\">{s.messages}</td>"
                   f"<td class=\"n\">{s.passed if s.what == 'recording' else '-'}</td>"
                   f"<td>{'<br>'.join(h(x) for x in notes) or '-'}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
