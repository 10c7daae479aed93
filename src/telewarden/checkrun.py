"""`telewarden check`: judge recorded flows offline, as a report and as a CI gate."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree as ET

from mitmproxy import http, io
from mitmproxy.addons.savehar import SaveHar

from . import render, strictjson
from .cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, load_engine, parse_waivers, summary_line
from .flows import InputError, Recorded, read
from .mitmexchange import apply_to_request
from .model import Decision, Mode, Verdict


class Progress:
    """A one-line counter on stderr, only for people watching a terminal (never in CI logs)."""

    def __init__(self, setting: str, stream: TextIO = sys.stderr) -> None:
        tty = stream.isatty() and not os.environ.get("CI")
        self.on = setting == "always" or (setting == "auto" and tty)
        self.stream, self.count, self.t0, self.last = stream, 0, time.monotonic(), 0.0

    def tick(self) -> None:
        self.count += 1
        if self.on and self.count % 256 == 0:
            now = time.monotonic()
            if now - self.last >= 0.2:
                self.last = now
                rate = self.count / max(now - self.t0, 1e-9)
                self.stream.write(f"\rchecked {self.count:,} messages ({rate:,.0f}/s)")
                self.stream.flush()

    def done(self) -> None:
        if self.on and self.count >= 256:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Exporter:
    """Writes the telemetry flows with scrubbed (or, when blocked, emptied) bodies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.har = path.suffix.lower() == ".har"
        self.flows: list[http.HTTPFlow] = []
        self._file = None if self.har else path.open("wb")
        self._writer = None if self._file is None else io.FlowWriter(self._file)
        self._pending: http.HTTPFlow | None = None

    def add(self, rec: Recorded, verdict: Verdict) -> None:
        if verdict.decision is Decision.PASSED_THROUGH:
            return
        flow = rec.flow
        if flow is not self._pending:
            self._flush()
            self._pending = flow
        if verdict.repaired is not None:
            if rec.message_index is None:
                apply_to_request(flow.request, verdict.repaired)
            elif verdict.repaired.body is not None and flow.websocket is not None:
                flow.websocket.messages[rec.message_index].content = verdict.repaired.body
        elif verdict.decision is Decision.BLOCKED or verdict.active_findings:
            note = strictjson.dumps({"telewarden": "withheld", "rules": verdict.rule_ids})
            if rec.message_index is None:
                flow.request.content = note
            elif flow.websocket is not None:
                flow.websocket.messages[rec.message_index].content = note

    def _flush(self) -> None:
        if self._pending is not None:
            if self.har:
                self.flows.append(self._pending)
            else:
                self._writer.add(self._pending)  # type: ignore[union-attr]
            self._pending = None

    def close(self) -> None:
        self._flush()
        if self.har:
            self.path.write_text(json.dumps(SaveHar().make_har(self.flows), indent=1))
        elif self._file is not None:
            self._file.close()


def junit(records: list[dict[str, Any]], out: Path, suite_name: str) -> None:
    failures = sum(1 for r in records if _failed(r))
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(records)), failures=str(failures),
                       errors="0", skipped="0")
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=f"telewarden.{r.get('pack')}.{r.get('kind') or r.get('endpoint') or 'unknown'}",
                             name=f"{r.get('source', r['id'])} {r['method']} {r['destination']}",
                             time=f"{r['micros'] / 1e6:.6f}")
        if _failed(r):
            rules = sorted({f["rule"] for f in r["findings"] if "waived" not in f})
            failure = ET.SubElement(case, "failure", message=", ".join(rules) or (r.get("error") or ""),
                                    type="telewarden.finding")
            failure.text = render.block(r)
        elif r["findings"]:
            ET.SubElement(case, "system-out").text = render.block(r)
    root = ET.Element("testsuites", tests=str(len(records)), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


def _failed(rec: dict[str, Any]) -> bool:
    return any("waived" not in f for f in rec["findings"]) or rec.get("unexpected_telemetry", False)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        waivers = parse_waivers(args.allow)
    except ValueError as e:
        print(f"telewarden check: {e}", file=sys.stderr)
        return EXIT_ERROR
    engine = load_engine(args, waivers)
    expect = args.expect_no_telemetry
    if expect not in (None, "*") and expect not in {p.id for p in engine.packs}:
        if Path(expect).exists():  # `--expect-no-telemetry flows.mitm`: the value was a path
            args.paths.insert(0, Path(expect))
            args.expect_no_telemetry = "*"
        else:
            print(f"telewarden check: --expect-no-telemetry: no pack {expect!r} is loaded", file=sys.stderr)
            return EXIT_ERROR
    if not args.paths:
        print("telewarden check: give at least one PATH (a .mitm/.flow or .har file)", file=sys.stderr)
        return EXIT_ERROR
    mode = Mode(args.mode)
    progress = Progress(args.progress)
    exporter = Exporter(args.export) if args.export else None
    keep_records = args.junit is not None
    records: list[dict[str, Any]] = []
    decisions: Counter = Counter()
    judged = flagged = nfindings = passed = unexpected = 0
    try:
        for path in args.paths:
            for rec in read(path, args.max_body):
                progress.tick()
                verdict = engine.inspect(rec.exchange, mode)
                if exporter:
                    exporter.add(rec, verdict)
                if verdict.decision is Decision.PASSED_THROUGH:
                    passed += 1
                    continue
                judged += 1
                decisions[verdict.decision.value] += 1
                record = None
                no_telemetry = args.expect_no_telemetry in ("*", verdict.pack)
                if verdict.findings or no_telemetry or keep_records or args.format == "json":
                    record = render.record(verdict, rec.exchange, rec.source)
                    if no_telemetry:
                        record["unexpected_telemetry"] = True
                        unexpected += 1
                if verdict.active_findings:
                    flagged += 1
                    nfindings += len(verdict.active_findings)
                if record is not None:
                    if keep_records:
                        records.append(record)
                    if args.format == "json":
                        out.write(json.dumps(record) + "\n")
                    elif verdict.findings or no_telemetry:
                        out.write(render.block(record) + "\n\n")
    except InputError as e:
        progress.done()
        print(f"telewarden check: {e}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if exporter:
            exporter.close()
    progress.done()
    if args.junit:
        junit(records, args.junit, "telewarden check")
    if args.format == "text":
        out.write(summary_line(decisions, nfindings, flagged, judged) + f"; {passed} other messages passed through\n")
        if waivers:
            out.write("waived: " + "; ".join(f"{r} ({why})" for r, why in waivers.items()) + "\n")
        if unexpected:
            out.write(f"FAIL: {unexpected} messages reached telemetry endpoints, expected none "
                      f"({args.expect_no_telemetry if args.expect_no_telemetry != '*' else 'any pack'})\n")
    return EXIT_FINDINGS if flagged or unexpected else EXIT_OK
