"""`telewarden check`: judge recorded flows offline, as a report and as a CI gate."""

from __future__ import annotations

import argparse
import json
import os
import sys
import re
import time
import zlib
from collections import Counter
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TextIO
from xml.etree import ElementTree as ET

from mitmproxy import http, io
from mitmproxy.addons.savehar import SaveHar

from ..audit import render
from .. import report
from ..cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, load_engine, parse_waivers, summary_line
from .flows import ReadLog, Recorded, read
from ..proxy.exchange import apply_to_request
from ..engine.model import Decision, Mode, Verdict


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
    """Writes the telemetry flows with scrubbed bodies; what could not be repaired is left out.

    A withheld message is dropped (an HTTP flow whole, a WebSocket frame from its flow), not
    replaced by a placeholder: nothing in an export is exempt from judgement, so `check` on it
    passes only if everything in it keeps the rules, and no marker a sender could forge ever
    makes a message skip the checks. What was left out is noted: the flow's comment (frames),
    the HAR's `log.comment`, and the run's summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.har = path.suffix.lower() in (".har", ".zhar")
        self.flows: list[http.HTTPFlow] = []
        self.sources: list[str] = []  # where each flow of `flows` came from (file#index)
        self._source = ""
        self.lost: list[str] = []  # flows that could not be written: "file#index (reason)"
        self._file = None if self.har else path.open("wb")
        self._writer = None if self._file is None else io.FlowWriter(self._file)
        self._pending: http.HTTPFlow | None = None
        self._drop_flow = False
        self._drop_frames: set[int] = set()
        self.withheld: Counter = Counter()  # rule id -> messages withheld for it

    def add(self, rec: Recorded, verdict: Verdict) -> None:
        if verdict.decision is Decision.PASSED_THROUGH:
            return
        flow = rec.flow
        if flow is not self._pending:
            self._flush()
            self._pending, self._drop_flow, self._drop_frames = flow, False, set()
            self._source = rec.source
        if verdict.repaired is not None:
            if rec.message_index is None:
                apply_to_request(flow.request, verdict.repaired)
            elif verdict.repaired.body is not None and flow.websocket is not None:
                flow.websocket.messages[rec.message_index].content = verdict.repaired.body
        elif verdict.decision is Decision.BLOCKED or verdict.active_findings:
            self.withheld.update(verdict.rule_ids or ["(unjudgeable)"])
            if rec.message_index is None:
                self._drop_flow = True
            else:
                self._drop_frames.add(rec.message_index)

    @property
    def note(self) -> str:
        n = sum(self.withheld.values())
        return (f"telewarden check --export: left out what could not be repaired "
                f"({', '.join(f'{r} x{c}' for r, c in sorted(self.withheld.items()))})") if n else ""

    def _flush(self) -> None:
        flow = self._pending
        self._pending = None
        if flow is None or self._drop_flow:
            return
        try:
            # The verdicts of the proxy that recorded the flow describe the original, not this copy.
            flow.metadata = {k: v for k, v in flow.metadata.items() if k != "telewarden"} \
                if isinstance(flow.metadata, dict) else {}
            if self._drop_frames and flow.websocket is not None:
                flow.websocket.messages = [m for k, m in enumerate(flow.websocket.messages) if k not in self._drop_frames]
                flow.comment = (f"telewarden check --export: {len(self._drop_frames)} WebSocket messages left out "
                                "(could not be repaired)")
            if self.har:
                self.flows.append(flow)
                self.sources.append(self._source)
            else:
                self._writer.add(flow)  # type: ignore[union-attr]
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - an edited flow file can hold what no writer takes
            self.lost.append(f"{self._source} ({type(e).__name__})")

    def close(self) -> list[str]:
        """Write the file; returns the flows that could not be written."""
        self._flush()
        lost = self.lost
        if self.har:
            try:
                har = SaveHar().make_har(self.flows)
            except Exception:  # noqa: BLE001 - e.g. a timestamp no date can hold, in an edited flow file
                good = []
                for f, source in zip(self.flows, self.sources):
                    try:
                        SaveHar().make_har([f])
                        good.append(f)
                    except Exception as e:  # noqa: BLE001
                        lost.append(f"{source} ({type(e).__name__})")
                har = SaveHar().make_har(good)
            if self.note:
                har["log"]["comment"] = self.note
            data = json.dumps(har, indent=1).encode()
            # mitmproxy's `save.har` compresses a .zhar the same way
            self.path.write_bytes(zlib.compress(data, 9) if self.path.suffix.lower() == ".zhar" else data)
        elif self._file is not None:
            self._file.close()
        return lost


def junit(records: list[dict[str, Any]], out: Path, suite_name: str, problems: list[str] = ()) -> None:
    failures = sum(1 for r in records if _failed(r))
    suite = ET.Element("testsuite", name=suite_name, tests=str(len(records) + len(problems)),
                       failures=str(failures), errors=str(len(problems)), skipped="0")
    for line in problems:  # unreadable input: a JUnit error, so CI shows it beside the failures
        case = ET.SubElement(suite, "testcase", classname="telewarden.input", name=line.split(": ", 1)[0], time="0")
        ET.SubElement(case, "error", message=line, type="telewarden.unreadable").text = line
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=f"telewarden.{r.get('pack')}.{r.get('kind') or r.get('endpoint') or 'unknown'}",
                             name=f"{r.get('source', r['id'])} {r['method']} {r['destination']}",
                             time=f"{r['micros'] / 1e6:.6f}")
        if _failed(r):
            rules = sorted({f["rule"] for f in r["findings"] if "waived" not in f} | set((r.get("live") or {}).get("repaired", [])))
            failure = ET.SubElement(case, "failure", message=", ".join(rules) or (r.get("error") or ""),
                                    type="telewarden.finding")
            failure.text = _block(r)
        elif r["findings"] or (r.get("live") or {}).get("repaired") is not None:
            ET.SubElement(case, "system-out").text = _block(r)
    root = ET.Element("testsuites", tests=str(len(records) + len(problems)), failures=str(failures),
                      errors=str(len(problems)))
    root.append(suite)
    ET.indent(root)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


def _failed(rec: dict[str, Any]) -> bool:
    return (any("waived" not in f for f in rec["findings"]) or rec.get("unexpected_telemetry", False)
            or bool((rec.get("live") or {}).get("repaired")))


class LiveFlow:
    """What the live proxy that made a recording decided on the current flow (`flow.metadata`),
    against what `check` finds in the recorded content of all the flow's messages: rules it found
    that the recording no longer shows were repaired by that proxy (scrub mode)."""

    def __init__(self) -> None:
        self.start(None, "")

    def start(self, live: dict[str, Any] | None, source: str) -> None:
        self.live, self.source, self.rules, self.record = live, source, set(), None

    def finish(self, out: TextIO | None) -> int:
        """Show the flow's live verdict when it tells something; 1 when it found rules that the
        recorded content no longer shows."""
        live = self.live
        self.live = None
        if live is None:
            return 0
        repaired = sorted(set(live["rules"]) - self.rules)
        if live["decision"] == "forwarded" and not repaired:
            return 0  # an audit-mode recording: check shows the same findings itself
        live["repaired"] = repaired
        if out is not None:
            out.write(live_block(live, self.source) + "\n\n")
        return 1 if repaired else 0


def live_block(live: dict[str, Any], source: str) -> str:
    counts = ", ".join(f"{n} {d}" for d, n in sorted(live["counts"].items()))
    lines = [f"recorded live  {live['decision'].upper():<10} ({counts}) by the proxy that made the recording  [{source}]"]
    if live.get("repaired"):
        lines.append(f"    repaired before recording, not in the recorded content: {' '.join(live['repaired'])}")
        lines.append("        the recording holds what that proxy let through, not what the client sent: "
                     "record in audit mode for a gate")
    elif live["rules"]:
        lines.append(f"    rules: {' '.join(live['rules'])}")
    return "\n".join(lines)


def _block(rec: dict[str, Any]) -> str:
    text = render.block(rec)
    if rec.get("live"):
        text += "\n" + live_block(rec["live"], rec.get("source", ""))
    return text


_RULE_ID = re.compile(r"[a-z0-9][a-z0-9_.*-]{0,99}")
_LIVE_DECISIONS = ("forwarded", "scrubbed", "blocked")


def live_verdict(meta: dict[str, Any] | None, waivers: dict[str, str]) -> dict[str, Any] | None:
    """The verdict a live telewarden stored on a flow (addon `_annotate`), when it found anything:
    its decision, counts per decision and the rules not waived here. Only well-formed values are
    shown (a flow file may have been edited)."""
    if not meta or meta.get("decision") not in _LIVE_DECISIONS:
        return None
    counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
    counts = {d: n for d, n in counts.items() if d in _LIVE_DECISIONS and isinstance(n, int) and not isinstance(n, bool)}
    rules = meta.get("rules") if isinstance(meta.get("rules"), list) else []
    rules = sorted({r for r in rules if isinstance(r, str) and _RULE_ID.fullmatch(r)
                    and not any(fnmatchcase(r, w) for w in waivers)})
    if not rules and meta["decision"] == "forwarded":
        return None
    return {"decision": meta["decision"], "counts": counts, "rules": rules}


def _unwritable(path: Path, inputs: list[Path]) -> str | None:
    """Why an output file cannot be written, found before anything is read."""
    if path.is_dir():
        return "is a folder"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "not writable"
    try:
        if path.exists() and any(p.exists() and path.samefile(p) for p in inputs):
            return "is also an input"
    except OSError:
        pass
    return None


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    try:
        waivers = parse_waivers(args.allow)
    except ValueError as e:
        print(f"telewarden check: {e}", file=sys.stderr)
        return EXIT_ERROR
    inputs = [*args.paths, *([Path(args.expect_no_telemetry)] if args.expect_no_telemetry else [])]
    for flag, target in (("--junit", args.junit), ("--export", args.export)):
        why = _unwritable(target, inputs) if target is not None else None
        if why:  # before anything is read or printed: never a whole run, then an error
            print(f"telewarden check: {flag} {target}: {why}", file=sys.stderr)
            return EXIT_ERROR
    engine = load_engine(args, waivers)
    ledger = report.CheckTap(engine, args.mode, waivers=waivers) if args.format == "text" else None  # promise ledger
    show_values = getattr(args, "show_values", False)
    if show_values:
        if args.format != "text":
            print("telewarden check: --show-values is for the text report only", file=sys.stderr)
            return EXIT_ERROR
        engine.keep_values = True  # raw values stay in Finding.value: never in a record
        out.write(render.RAW_VALUES_BANNER + "\n\n")
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
    try:
        exporter = Exporter(args.export) if args.export else None
    except OSError as e:
        print(f"telewarden check: --export {args.export}: {e.strerror}", file=sys.stderr)
        return EXIT_ERROR
    keep_records = args.junit is not None
    records: list[dict[str, Any]] = []
    decisions: Counter = Counter()
    judged = flagged = nfindings = passed = unexpected = live_flagged = 0
    log = ReadLog()
    live_flow = LiveFlow()
    try:
        for path in args.paths:
            # Only an export needs whole flows; judging needs the requests, and only of the
            # flows a pack claims (the rest pass through: their names are all that is read).
            for rec in read(path, args.max_body, log, claim=engine.claim, whole=exporter is not None):
                progress.tick()
                try:
                    verdict = engine.inspect(rec.exchange, mode)
                except Exception as e:  # noqa: BLE001 - one message must not end the run in a traceback
                    log.problem(f"{path}: {rec.source}: internal error while judging ({type(e).__name__}); not judged")
                    continue
                if exporter:
                    try:
                        exporter.add(rec, verdict)
                    except Exception as e:  # noqa: BLE001 - an odd recorded flow must not end the run
                        log.problem(f"{path}: {rec.source}: cannot be exported ({type(e).__name__})")
                if verdict.decision is Decision.PASSED_THROUGH:
                    passed += 1
                    continue
                judged += 1
                decisions[verdict.decision.value] += 1
                record = None
                no_telemetry = args.expect_no_telemetry in ("*", verdict.pack)
                if rec.message_index is None:  # a new flow: settle what its recording proxy decided
                    live_flagged += live_flow.finish(out if args.format == "text" else None)
                    live_flow.start(live_verdict(rec.live, waivers), rec.source)
                live_flow.rules.update(verdict.rule_ids)
                if verdict.findings or no_telemetry or keep_records or args.format == "json" or (
                        live_flow.live and rec.message_index is None):
                    record = render.record(verdict, rec.exchange, rec.source)
                    if no_telemetry:
                        record["unexpected_telemetry"] = True
                        unexpected += 1
                    if rec.message_index is None and live_flow.live:
                        record["live"] = live_flow.live  # what the recording proxy decided on this flow
                        live_flow.record = record
                if verdict.active_findings:
                    flagged += 1
                    nfindings += len(verdict.active_findings)
                if record is not None:
                    if keep_records:
                        records.append(record)
                    if args.format == "json":
                        out.write(json.dumps(record) + "\n")
                    elif verdict.findings or no_telemetry:
                        values = [(f.raw_pointer, f.value) for f in verdict.findings] if show_values else None
                        out.write(render.block(record, values) + "\n\n")
        live_flagged += live_flow.finish(out if args.format == "text" else None)
    finally:
        progress.done()
        if exporter:
            try:
                for lost in exporter.close():
                    log.problem(f"--export {args.export}: a flow cannot be written: {lost}; left out")
            except OSError as e:
                log.problem(f"--export {args.export}: cannot write: {e.strerror}")
    if args.junit:
        try:
            junit(records, args.junit, "telewarden check", log.problems)
        except OSError as e:
            log.problem(f"--junit {args.junit}: cannot write: {e.strerror}")
    if args.format == "text":
        if ledger is not None:  # the promise ledger's summary (telewarden report), before the summary line
            ledger.write(out)
        out.write(summary_line(decisions, nfindings, flagged, judged) + f"; {passed} other messages passed through\n")
        if show_values:
            out.write(render.RAW_VALUES_BANNER + "\n")
        if waivers:
            out.write("waived: " + "; ".join(f"{r} ({why})" for r, why in waivers.items()) + "\n")
        if log.skipped:
            out.write("skipped, cannot be telemetry: " + "; ".join(f"{n} {why}" for why, n in sorted(log.skipped.items())) + "\n")
        if log.notes:
            out.write("read with care: " + "; ".join(f"{n} {why}" for why, n in sorted(log.notes.items())) + "\n")
        if exporter and exporter.note:
            out.write(f"export {args.export}: {exporter.note}\n")
        if live_flagged:
            out.write(f"FAIL: {live_flagged} flows broke rules when recorded that their recorded content no longer "
                      "shows (the proxy that made the recording repaired them): record in audit mode for a gate\n")
        if unexpected:
            out.write(f"FAIL: {unexpected} messages reached telemetry endpoints, expected none "
                      f"({args.expect_no_telemetry if args.expect_no_telemetry != '*' else 'any pack'})\n")
        if log.problems:
            out.write(f"ERROR: {len(log.problems)} parts of the input could not be read (named on stderr); "
                      "everything else was judged\n")
    out.flush()
    for line in log.warnings:
        print(f"telewarden check: warning: {line}", file=sys.stderr)
    for line in log.problems:
        print(f"telewarden check: {line}", file=sys.stderr)
    if log.problems:
        return EXIT_ERROR
    return EXIT_FINDINGS if flagged or unexpected or live_flagged else EXIT_OK
