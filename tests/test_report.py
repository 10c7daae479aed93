"""`telewarden report`: the promise ledger, number by number against `check --format json`, from
recordings and from an audit trail, escaped in every format, and rendered in a real Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import EXAMPLES, KEY, PAYLOADS
from telewarden.recordings import check as checkrun
from telewarden.audit import render
from telewarden.audit.trail import AuditTrail
from telewarden.cli import build_parser
from telewarden.engine.judge import Engine
from telewarden.recordings.flows import read
from telewarden.engine.model import Decision, Exchange, Mode, Transport
from telewarden.report import cli as report_cli
from telewarden.report.html import render_html
from telewarden.report.markdown import code, md, render_markdown
from telewarden.report.model import NOT_RELEASE, Ledger, from_audit, from_flows, observe
from telewarden.report.terminal import summary

DEMOS = sorted((EXAMPLES / "flows").glob("*.*"))  # every bundled demo recording
CHROMIUM = Path("/usr/bin/chromium")


def check_json(path: Path) -> list[dict]:
    args = build_parser().parse_args(["check", "--format", "json", str(path)])
    out = io.StringIO()
    checkrun.run(args, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def ledger_of(paths, packs, show_values=False) -> Ledger:
    engine = Engine(packs, digest_key=KEY)
    engine.keep_values = show_values
    ledger = Ledger(packs, show_values=show_values)
    from_flows(ledger, engine, list(paths), Mode.SCRUB, 1 << 20)
    return ledger


def expected_from_json(records: list[dict]) -> dict:
    """What the ledger must say, added up from check's own per-message records."""
    exp = {"messages": len(records), "decisions": Counter(r["decision"] for r in records),
           "flagged": sum(any("waived" not in f for f in r["findings"]) for r in records),
           "findings": sum(sum("waived" not in f for f in r["findings"]) for r in records),
           "packs": Counter(r["pack"] for r in records), "kinds": defaultdict(Counter),
           "broken": defaultdict(Counter), "rules": defaultdict(Counter), "first": {}, "last": {}}
    for r in records:
        exp["kinds"][r["pack"]][r["kind"] or "(unknown kind)"] += 1
        active = [f for f in r["findings"] if "waived" not in f]
        for promise in {f["promise"] for f in active}:
            key = (r["pack"], promise)
            exp["broken"][r["pack"]][promise] += 1
            for rule in {f["rule"] for f in active if f["promise"] == promise}:
                exp["rules"][key][rule] += 1
            exp["first"][key] = min(exp["first"].get(key, r["time"]), r["time"])
            exp["last"][key] = max(exp["last"].get(key, r["time"]), r["time"])
    return exp


def assert_matches(ledger: Ledger, exp: dict) -> None:
    t = ledger.totals()
    assert t["messages"] == exp["messages"]
    assert t["flagged"] == exp["flagged"]
    assert t["findings"] == exp["findings"]
    assert {d: n for d, n in t["decisions"].items() if n} == dict(exp["decisions"])
    assert {p: pl.messages for p, pl in ledger.packs.items() if pl.messages} == dict(exp["packs"])
    for pack_id in exp["packs"]:
        pl = ledger.packs[pack_id]
        assert +pl.kinds == exp["kinds"][pack_id]
        rows = {r.text: r for r in pl.promises.values()}
        assert {text: r.broken for text, r in rows.items() if r.broken} == dict(exp["broken"][pack_id])
        for text in exp["broken"][pack_id]:
            key = (pack_id, text)
            assert rows[text].rules == exp["rules"][key], key
            assert render._iso(rows[text].first) == exp["first"][key]
            assert render._iso(rows[text].last) == exp["last"][key]
        assert rows[pl.pack.generic_promise].checked == pl.messages  # every message is held to the generic promise


@pytest.mark.parametrize("demo", DEMOS, ids=lambda p: p.name)
def test_ledger_of_the_demo_recordings_matches_check_json_number_by_number(demo, packs):
    records = check_json(demo)
    assert records, "the demo recording holds telemetry"
    ledger = ledger_of([demo], packs)
    exp = expected_from_json(records)
    assert_matches(ledger, exp)
    broken = {r.key for pl in ledger.packs.values() for r in pl.promises.values() if r.status == "broken"}
    assert broken, "the demo recordings show broken promises"
    # and every view carries the same figures
    text = summary(ledger)
    for pack_id, n in exp["packs"].items():
        flagged = sum(any("waived" not in f for f in r["findings"]) for r in records if r["pack"] == pack_id)
        assert re.search(rf"promise ledger: {pack_id} \(.*\), {n} messages, {flagged} with findings", text)
    mdown = render_markdown(ledger)
    assert f"**{exp['messages']} telemetry messages**, {exp['flagged']} with findings ({exp['findings']} findings)" in mdown


def test_versions_come_from_the_body_and_a_dev_branch_is_never_shown(packs):
    from conftest import exchange

    engine = Engine(packs, digest_key=KEY)
    ledger = Ledger(packs)
    for name in ("cli-v1.3", "cli-v2.48-no-error", "server-v2.8"):
        ex = exchange(PAYLOADS[name])
        observe(ledger, engine, ex, engine.inspect(ex, Mode.SCRUB), name)
    dev = json.loads(json.dumps(PAYLOADS["cli-v1.3"]))
    dev["data"]["version"] = "feature/acme-customers-migration"
    ex = exchange(dev)
    observe(ledger, engine, ex, engine.inspect(ex, Mode.SCRUB), "dev")
    versions = ledger.packs["hasura"].versions
    assert versions[("cli", "v1.3.0")] == 1 and versions[("cli", "v2.48.10")] == 1
    assert versions[("server-v1", "v2.8.4")] == 1
    assert versions[("cli", NOT_RELEASE)] == 1
    page = render_html(ledger) + render_markdown(ledger) + summary(ledger)
    assert "acme" not in page


def write_trail(folder: Path, paths, packs) -> None:
    trail = AuditTrail(folder, key_path=folder.parent / "audit.key")
    engine = Engine(packs, digest_key=trail.key)
    for path in paths:
        for rec in read(path):
            verdict = engine.inspect(rec.exchange, Mode.SCRUB)
            if verdict.decision is not Decision.PASSED_THROUGH:
                trail.write(render.record(verdict, rec.exchange))
    trail.close()


def test_the_same_ledger_from_an_audit_folder_with_the_chain_verified(tmp_path, packs):
    demo = EXAMPLES / "flows" / "hasura-demo.mitm"
    write_trail(tmp_path / "trail", [demo], packs)
    from_trail = Ledger(packs)
    from_audit(from_trail, tmp_path / "trail")
    assert from_trail.sources[0].chain[0] == 0 and from_trail.chain_ok
    assert_matches(from_trail, expected_from_json(check_json(demo)))
    flows = ledger_of([demo], packs)
    for key, row in flows.packs["hasura"].promises.items():
        other = from_trail.packs["hasura"].promises[key]
        assert (other.checked, other.broken, other.rules, other.kinds_broken) == \
               (row.checked, row.broken, row.rules, row.kinds_broken), key
    page = render_html(from_trail)
    assert 'data-chain="intact"' in page and "not in the audit trail" in page
    assert "intact: " in summary(from_trail)

    # one edited record: the ledger says so, and report exits 1
    jsonl = tmp_path / "trail" / "audit.jsonl"
    lines = jsonl.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[3])
    rec["decision"] = "forwarded" if rec["decision"] != "forwarded" else "blocked"
    lines[3] = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
    jsonl.write_bytes(b"".join(lines))
    out = io.StringIO()
    args = build_parser().parse_args(["report", "--audit", str(tmp_path / "trail"), "-o", str(tmp_path / "l.html")])
    assert report_cli.run(args, out) == 1
    page = (tmp_path / "l.html").read_text()
    assert 'data-chain="TAMPERED"' in page and "TAMPERED" in out.getvalue()


HOSTILE = '<script>alert(1)</script>|`x`|[a](http://evil.test)|\u202eevil\u202c|&amp;|![i](http://evil.test/i.png)'


def hostile_ledger(packs) -> Ledger:
    """What a tampered trail or an odd recording could hold, in every field a view shows."""
    ledger = Ledger(packs)
    finding = {"rule": HOSTILE, "pointer": "/" + HOSTILE, "message": HOSTILE, "promise": HOSTILE,
               "severity": HOSTILE, "digest": HOSTILE, "preview": HOSTILE, "waived": None}
    for pack in ("hasura", HOSTILE):
        ledger.add({"id": "m1", "time": "2026-11-27T09:00:00.000Z", "decision": "blocked", "pack": pack,
                    "endpoint": HOSTILE, "kind": HOSTILE, "transport": "http", "source": HOSTILE,
                    "findings": [finding, {**finding, "rule": "hasura.schema.unknown-key"}]}, version=HOSTILE)
    ledger.add_passed(Exchange(Transport.HTTP, "GET", (HOSTILE,), 443, "/"))
    return ledger


def test_sender_chosen_strings_cannot_inject_markup(packs):
    ledger = hostile_ledger(packs)
    page = render_html(ledger)
    assert "<script" not in page.lower() and "<a " not in page and "<img" not in page.lower()
    assert "\u202e" not in page and "\\u202e" in page
    assert "&lt;script&gt;" in page
    mdown = render_markdown(ledger)
    assert "\u202e" not in mdown and "<script>alert(1)</script>" in mdown  # as text, in code spans
    cells = None
    for line in mdown.splitlines():
        outside = re.sub(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", "", line)  # values in code spans are literal
        assert not re.search(r"(?<!\\)[`\[\]<>]", outside), line  # no other code span, link, image or tag
        if not line.startswith("|"):
            cells = None
            continue
        n = len(re.findall(r"(?<!\\)\|", line))  # a value's pipe cannot add a cell
        cells = n if cells is None else cells
        assert n == cells, line
    assert md("a|b`c") == "a\\|b\\`c"
    assert code("a`b``c|d") == "```a`b``c\\|d```" and code("`x") == "`` `x ``"
    text = summary(ledger)
    assert "\u202e" not in text


@pytest.mark.parametrize("fmt,suffix", [("html", ".html"), ("md", ".md")])
def test_command_writes_the_ledger_and_exits_1_on_a_broken_promise(tmp_path, fmt, suffix):
    out = io.StringIO()
    target = tmp_path / f"ledger{suffix}"
    args = build_parser().parse_args(["report", str(DEMOS[0]), "-o", str(target)])
    assert report_cli.run(args, out) == 1
    text = target.read_text()
    assert ("<!DOCTYPE html>" in text) == (fmt == "html")
    assert "promise ledger: hasura" in out.getvalue() and f"wrote {target}" in out.getvalue()


def test_clean_recording_exits_0_and_usage_errors_exit_2(tmp_path, capsys):
    from mitmproxy import http, io as mio
    from mitmproxy.test import tflow

    clean = tmp_path / "clean.mitm"
    with clean.open("wb") as fh:
        w = mio.FlowWriter(fh)
        for name in ("cli-v2.48-no-error", "server-v2.48-default-source"):
            f = tflow.tflow(resp=True)
            f.request = http.Request.make("POST", "https://telemetry.hasura.io/v1/http",
                                          json.dumps(PAYLOADS[name]).encode(),
                                          {"content-type": "application/json", "user-agent": "Go-http-client/1.1"})
            f.client_conn.sni = f.server_conn.sni = "telemetry.hasura.io"
            w.add(f)
    out = io.StringIO()
    assert report_cli.run(build_parser().parse_args(["report", str(clean)]), out) == 0, out.getvalue()
    assert "kept" in out.getvalue() and "BROKEN" not in out.getvalue()
    assert report_cli.run(build_parser().parse_args(["report"]), io.StringIO()) == 2
    assert report_cli.run(build_parser().parse_args(["report", str(tmp_path / "nope.mitm")]), io.StringIO()) == 2
    assert report_cli.run(build_parser().parse_args(["report", str(clean), "-o", str(tmp_path / "no" / "x.html")]),
                          io.StringIO()) == 2


def test_values_only_with_show_values(tmp_path, packs):
    from conftest import exchange

    body = json.loads(json.dumps(PAYLOADS["cli-v2.48-no-error"]))
    body["data"]["command"] = "hasura migrate apply --endpoint https://db.acme-secret.internal"
    for show in (False, True):
        engine = Engine(packs, digest_key=KEY)
        engine.keep_values = show
        ledger = Ledger(packs, show_values=show)
        ex = exchange(body)
        observe(ledger, engine, ex, engine.inspect(ex, Mode.SCRUB), "x")
        for page in (render_html(ledger), render_markdown(ledger)):
            assert ("acme-secret" in page.replace("\\", "")) is show
            assert ("RAW VALUES" in page) is show
        assert "acme-secret" not in summary(ledger)  # a summary: the raw values are in the files only
        assert ("RAW VALUES" in summary(ledger)) is show


def test_unclaimed_hosts_are_shown_in_the_local_report(packs):
    ledger = ledger_of(DEMOS[:1], packs)
    assert sum(ledger.unclaimed.values()) >= 1
    page = render_html(ledger)
    for host, n in ledger.unclaimed.items():
        assert f'data-host="{host}" data-count="{n}"' in page


def test_coverage_fields_and_drift(packs):
    ledger = ledger_of(DEMOS[:1], packs)
    pl = ledger.packs["hasura"]
    for kind in pl.kinds:
        if kind.startswith("("):
            continue
        allowed = set(pl.fields_allowed(kind))
        assert set(pl.fields_seen[kind]) <= allowed, kind  # seen fields are schema fields
        assert not set(pl.fields_unseen(kind)) & set(pl.fields_seen[kind])
    # a field the schema allows that never appears is listed, topmost only
    from conftest import exchange

    engine = Engine(packs, digest_key=KEY)
    small = Ledger(packs)
    ex = exchange(PAYLOADS["cli-alpha36"])
    observe(small, engine, ex, engine.inspect(ex, Mode.SCRUB), "a")
    assert "/data/error" in small.packs["hasura"].fields_unseen("cli")
    drifted = json.loads(json.dumps(PAYLOADS["cli-v1.3"]))
    drifted["data"]["new_vendor_field"] = "x"
    ex = exchange(drifted)
    observe(small, engine, ex, engine.inspect(ex, Mode.SCRUB), "b")
    drift = small.packs["hasura"].drift
    assert sum(sum(c.values()) for c in drift.values()) == 1
    assert not any("new_vendor_field" in where for _, where in drift)  # the key is the sender's: by digest


# -- as a person sees it: Chromium ------------------------------------------------------------------

def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
           f"--user-data-dir={profile}", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, **want) -> list[dict]:
        return [a for _, a in self.elements if all(a.get(k.replace("_", "-")) == v for k, v in want.items())]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_html_ledger_in_chromium_holds_the_figures(tmp_path, packs):
    demos = sorted((EXAMPLES / "flows").glob("*.mitm"))
    records = [r for demo in demos for r in check_json(demo)]
    exp = expected_from_json(records)
    ledger = ledger_of(demos, packs)
    page = tmp_path / "ledger.html"
    page.write_text(render_html(ledger), encoding="utf-8")
    done = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    dom = _Dom()
    dom.feed(done.stdout.decode())
    totals = dom.find(id="totals")[0]
    assert int(totals["data-messages"]) == exp["messages"]
    assert int(totals["data-flagged"]) == exp["flagged"]
    assert int(totals["data-findings"]) == exp["findings"]
    for d in ("forwarded", "scrubbed", "blocked"):
        assert int(totals[f"data-{d}"]) == exp["decisions"].get(d, 0)
    for pack_id in exp["packs"]:
        for key, text in ledger.packs[pack_id].pack.promises.items():
            row = [a for t, a in dom.elements if t == "tr" and a.get("data-pack") == pack_id
                   and a.get("data-promise") == key and "data-broken" in a][0]
            broken = exp["broken"][pack_id].get(text, 0)
            assert int(row["data-broken"]) == broken, key
            assert row["data-status"] == "broken" if broken else row["data-status"] in ("kept", "not seen", "no rule")
    svg = dom.find(id="timeline")[0]
    assert int(svg["data-messages"]) == exp["messages"]
    bars = Counter()
    for tag, a in dom.elements:
        if tag == "rect" and "data-decision" in a:
            bars[a["data-decision"].rstrip("!")] += int(a["data-count"])
    assert +bars == exp["decisions"]
    assert "Promise ledger" in "".join(dom.text)

    shot = tmp_path / "ledger.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1366,1700", page.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    pdf = tmp_path / "ledger.pdf"  # printable: Chromium's print path lays it out on pages
    done = chromium(["--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()], tmp_path)
    assert done.returncode == 0 and pdf.read_bytes()[:5] == b"%PDF-"
    assert len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes())) >= 2
    keep = os.environ.get("TELEWARDEN_LEDGER_PNG")  # regenerate docs/ledger.png: set it to that path
    if keep:
        shutil.copy(shot, keep)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_hostile_strings_stay_text_in_chromium(tmp_path, packs):
    page = tmp_path / "hostile.html"
    page.write_text(render_html(hostile_ledger(packs)), encoding="utf-8")
    done = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert done.returncode == 0
    dom = _Dom()
    dom.feed(done.stdout.decode())
    tags = {t for t, _ in dom.elements}
    assert not tags & {"script", "a", "img", "iframe"}
    assert "<script>alert(1)</script>" in "".join(dom.text)  # shown as text


def test_a_promise_kept_only_by_waivers_says_so(tmp_path):
    target = tmp_path / "ledger.html"
    args = build_parser().parse_args(["report", str(DEMOS[0]), "--allow", "hasura.cli.*=accepted (TICKET-1)",
                                      "-o", str(target)])
    out = io.StringIO()
    report_cli.run(args, out)
    page = target.read_text()
    assert re.search(r'data-promise="cli-not-recorded" data-status="waived" data-broken="0" data-checked="\d+" '
                     r'data-waived="[1-9]', page)
    assert "accepted (TICKET-1)" in page and "waived: hasura.cli.* (accepted (TICKET-1))" in out.getvalue()


def test_odd_records_and_endless_made_up_values_stay_bounded(packs):
    ledger = Ledger(packs)
    ledger.add({"decision": "blocked", "pack": {"a": 1}, "kind": [1], "time": 5, "transport": None,
                "findings": [{"rule": 5, "promise": None, "pointer": ["x"]}, "not a finding"]})  # a tampered trail
    for i in range(3000):
        ledger.add({"decision": "forwarded", "pack": "hasura", "kind": "cli", "endpoint": "http", "transport": "http",
                    "time": f"2026-11-27T09:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
                    "findings": [{"rule": "hasura.schema.unknown-key", "pointer": f"/data/(key:{i:012x}, 8 chars)",
                                  "promise": packs[0].generic_promise, "preview": "string, 1 chars", "severity": "high"}]},
                   version=f"v1.{i}.0")
        ledger.add_passed(Exchange(Transport.HTTP, "GET", (f"h{i}.example",), 443, "/"))
    pl = ledger.packs["hasura"]
    assert len(pl.versions) <= 501 and len(pl.drift) <= 501
    assert sum(ledger.unclaimed.values()) == 3000
    assert len(ledger.timeline.buckets) <= ledger.timeline.limit
    for view in (render_html, render_markdown, summary):
        assert view(ledger)


def test_client_versions_are_where_the_pack_says(tmp_path, packs):
    from conftest import exchange
    from telewarden.engine.packs import PackError, load_pack, load_packs

    hasura = next(p for p in packs if p.id == "hasura")
    assert dict((k.id, k.versions) for k in hasura.kinds)["cli"] == (("data", "version"),)
    body = json.loads(json.dumps(PAYLOADS["cli-v2.48-no-error"]))
    body["data"]["server_version"] = "v1.3.0"
    text = (EXAMPLES.parent / "rules" / "hasura.yaml").read_text()
    pack_file = tmp_path / "hasura.yaml"
    pack_file.write_text(text.replace("    schema: hasura/cli.schema.json\n    versions: [/data/version]",
                                      "    schema: hasura/cli.schema.json\n    versions: [/data/server_version]"))
    for loaded, want in ((packs, "v2.48.10"), (load_packs([pack_file]), "v1.3.0")):
        engine = Engine(loaded, digest_key=KEY)
        ledger = Ledger(loaded)
        ex = exchange(body)
        observe(ledger, engine, ex, engine.inspect(ex, Mode.SCRUB), "x")
        assert ledger.packs["hasura"].versions == Counter({("cli", want): 1})
    # a kind that names no version has none, even where the fallback list would find one
    ledger = Ledger(packs)
    engine = Engine(packs, digest_key=KEY)
    ex = exchange(PAYLOADS["server-resources-v2.26"])
    observe(ledger, engine, ex, engine.inspect(ex, Mode.SCRUB), "y")
    assert ledger.packs["hasura"].versions == Counter({("server-resources", "(no version field)"): 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("versions: [/data/version]", "versions: [/data/no_such_field]", 1))
    with pytest.raises(PackError, match=r"kind 'server-v1': versions: '/data/no_such_field' cannot hold a value"):
        load_pack(bad)
    bad.write_text(text.replace("versions: [/data/version]", "versions: [data/version]", 1))
    with pytest.raises(PackError, match="does not match"):
        load_pack(bad)


def test_check_prints_the_same_summary_before_its_last_line(packs):
    for demo in DEMOS:
        out = io.StringIO()
        checkrun.run(build_parser().parse_args(["check", str(demo)]), out)
        text = out.getvalue()
        lines = text.splitlines()
        assert re.match(r"\d+ telemetry messages, \d+ with findings", lines[-1]), lines[-1]  # still check's last line
        ledger = ledger_of([demo], packs)
        for pl in ledger.packs.values():
            if pl.messages:
                assert f"promise ledger: {pl.id} ({pl.title}), {pl.messages} messages, {pl.flagged} with findings" in text
                for row in pl.promises.values():
                    if row.broken:
                        label = "telewarden" if row.key.startswith("telewarden:") else row.key
                        assert re.search(rf"BROKEN +{re.escape(label)} +{row.broken} of {row.checked} messages", text)
    out = io.StringIO()
    checkrun.run(build_parser().parse_args(["check", "--format", "json", str(DEMOS[0])]), out)
    assert "promise ledger" not in out.getvalue()  # JSON stays one record per line
