"""`telewarden report`: the promise ledger of recorded flows and/or an audit folder.

    telewarden report FLOWS... [--audit DIR] [--rules PATH]... [--no-bundled] [-o ledger.html|ledger.md]

Without -o: the terminal summary. Exit status: 0 every promise kept, 1 a promise broken or an
audit chain not intact, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..cli import _packs_args  # noqa: PLC0415
    from ..engine.judge import DEFAULT_MAX_BODY  # noqa: PLC0415
    from ..engine.model import Mode  # noqa: PLC0415

    p = sub.add_parser("report", help="the promise ledger: each vendor promise kept or broken, with evidence",
                       description="Add up recorded flows or an audit trail per vendor promise: kept or broken, "
                                   "by kind and client version, with evidence, coverage and drift.")
    p.add_argument("paths", nargs="*", type=Path, metavar="FLOWS", help="mitmproxy flow files or HAR")
    p.add_argument("--audit", action="append", type=Path, default=[], metavar="DIR",
                   help="an audit folder (audit.jsonl); its hash chain is verified and the result shown (repeatable)")
    _packs_args(p)
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the ledger: .html (self-contained page) or .md (Markdown); default: terminal summary")
    p.add_argument("--format", choices=["auto", "html", "md", "text"], default="auto",
                   help="override the format -o's suffix implies")
    p.add_argument("--mode", choices=[m.value for m in Mode], default="scrub",
                   help="judge recorded flows as this mode would (default: scrub, as check)")
    p.add_argument("--allow", action="append", default=[], metavar="RULE=REASON",
                   help="waive a rule (glob allowed): shown, not counted as breaking a promise")
    p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES")
    p.add_argument("--show-values", action="store_true",
                   help="show the offending raw values (and key names) of recorded flows, for a local reviewer; "
                        "the ledger is then marked as holding what leaked. Audit trails never hold values")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out=None) -> int:
    from ..cli import load_engine, parse_waivers  # noqa: PLC0415
    from ..engine.model import Mode  # noqa: PLC0415
    from . import html, markdown, terminal  # noqa: PLC0415
    from .model import Ledger, from_audit, from_flows  # noqa: PLC0415

    out = out if out is not None else sys.stdout
    err = sys.stderr
    if not args.paths and not args.audit:
        print("telewarden report: give recorded flows (FLOWS) and/or --audit DIR", file=err)
        return EXIT_ERROR
    if args.show_values and not args.paths:
        print("telewarden report: --show-values needs recorded flows (an audit trail never holds values)", file=err)
        return EXIT_ERROR
    fmt = args.format
    if fmt == "auto":
        suffix = args.output.suffix.lower() if args.output else ""
        fmt = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}.get(suffix, "text")
    if args.output is not None:
        parent = args.output.parent if str(args.output.parent) else Path(".")
        if args.output.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
            print(f"telewarden report: -o {args.output}: cannot write there", file=err)
            return EXIT_ERROR
        if any(p.exists() and args.output.exists() and args.output.samefile(p) for p in args.paths):
            print(f"telewarden report: -o {args.output}: is also an input", file=err)
            return EXIT_ERROR
    for path in [*args.paths, *args.audit]:
        if not path.exists():
            print(f"telewarden report: {path}: no such file or folder", file=err)
            return EXIT_ERROR
    try:
        waivers = parse_waivers(args.allow)
    except ValueError as e:
        print(f"telewarden report: {e}", file=err)
        return EXIT_ERROR
    engine = load_engine(args, waivers)
    if args.show_values:
        engine.keep_values = True  # raw values stay in Finding.value, shown only by this local report
    ledger = Ledger(engine.packs, mode=args.mode, show_values=args.show_values, waivers=waivers)
    t0 = time.perf_counter()
    from_flows(ledger, engine, list(args.paths), Mode(args.mode), args.max_body)
    for folder in args.audit:
        from_audit(ledger, folder)
    if args.paths and args.audit:
        print("telewarden report: note: a recording and an audit trail of the same run describe the same messages; "
              "the ledger counts each input", file=err)
    t1 = time.perf_counter()
    text = {"html": html.render_html, "md": markdown.render_markdown, "text": terminal.summary}[fmt](ledger)
    t2 = time.perf_counter()
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"telewarden report: -o {args.output}: cannot write: {e.strerror}", file=err)
            return EXIT_ERROR
        out.write(terminal.summary(ledger))
        out.write(f"wrote {args.output} ({fmt}, {len(text.encode()):,} bytes; read and judged in {t1 - t0:.2f} s, "
                  f"rendered in {(t2 - t1) * 1000:.0f} ms)\n")
    else:
        out.write(text)
    problems = [p for s in ledger.sources for p in s.problems]
    for line in problems:
        print(f"telewarden report: {line}", file=err)
    if problems:
        return EXIT_ERROR
    return EXIT_FINDINGS if ledger.broken or not ledger.chain_ok else EXIT_OK
