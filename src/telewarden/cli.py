"""`telewarden` command line: check recorded flows, run the proxy, read the audit trail.

Exit status: 0 nothing found / intact, 1 findings / tampered, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from . import __version__
from .engine.judge import DEFAULT_MAX_BODY, Engine, Limits
from .engine.model import Mode
from .engine.packs import PackError, load_packs

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _packs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", action="append", type=Path, default=[], metavar="PATH",
                   help="rule pack file or folder; replaces a bundled pack with the same id (repeatable)")
    p.add_argument("--no-bundled", action="store_true", help="do not load the bundled packs")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `run` passes unknown arguments to mitmdump, and a mitmdump flag must never
    # be taken for a prefix of one of ours.
    parser = argparse.ArgumentParser(prog="telewarden", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"telewarden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="inspect recorded flows (.mitm/.flow, HAR, .zhar)",
                           description="Inspect every message to a pack's endpoints in recorded flows.")
    check.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                       help="mitmproxy flow file, HAR (Chrome, Firefox, Playwright, ... with WebSocket messages) "
                            "or mitmproxy's zlib HAR (.zhar)")
    _packs_args(check)
    check.add_argument("--mode", choices=[m.value for m in Mode], default="scrub",
                       help="judge as this mode would (default: scrub, which shows the repairs)")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES")
    check.add_argument("--allow", action="append", default=[], metavar="RULE=REASON",
                       help="waive a rule (glob allowed); the reason shows in every report")
    check.add_argument("--expect-no-telemetry", nargs="?", const="*", metavar="PACK",
                       help="fail if any message reached a pack's endpoints (any pack, or PACK; "
                            "write --expect-no-telemetry=PACK when a path follows)")
    check.add_argument("--junit", type=Path, metavar="FILE", help="also write a JUnit XML report")
    check.add_argument("--export", type=Path, metavar="FILE",
                       help="write the telemetry flows with scrubbed bodies (.har/.zhar for HAR, else mitm flows); "
                            "what cannot be repaired is left out and noted, so checking the export passes")
    check.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                       help="progress bar on stderr (auto: only when stderr is a terminal and not in CI)")
    check.add_argument("--show-values", action="store_true",
                       help="print the offending raw values (and key names) in the text report, for a local "
                            "reviewer; the report then holds what leaked and is marked so. Never in JSON, "
                            "JUnit or an audit trail")
    check.set_defaults(func=cmd_check)

    from .proxy import runner  # noqa: PLC0415 (keeps `check` free of the proxy's imports)

    runner.add_parser(sub)
    from .report import cli as report_cli  # noqa: PLC0415
    report_cli.add_parser(sub)
    from .icap import cli as icap_cli  # noqa: PLC0415
    icap_cli.add_parser(sub)
    from .audit import trail as audit  # noqa: PLC0415

    audit.add_parser(sub)
    return parser


def parse_waivers(items: list[str]) -> dict[str, str]:
    waivers = {}
    for item in items:
        rule, sep, reason = item.partition("=")
        if not sep or not rule.strip() or not reason.strip():
            raise ValueError(f"--allow {item!r}: expected RULE_ID=REASON with a non-empty reason")
        waivers[rule.strip()] = reason.strip()
    return waivers


def digest_key_from_env() -> bytes:
    """The audit key when one is given, else a per-run key (digests then correlate within a run)."""
    key = os.environ.get("TELEWARDEN_AUDIT_KEY")
    return key.encode() if key else os.urandom(32)


def cmd_check(args: argparse.Namespace) -> int:
    from .recordings import check as checkrun  # noqa: PLC0415

    return checkrun.run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return args.func(args)
    except PackError as e:
        print(f"telewarden: rule pack error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def load_engine(args: argparse.Namespace, waivers: dict[str, str] | None = None) -> Engine:
    packs = load_packs(args.rules, include_bundled=not args.no_bundled)
    if not packs:
        raise PackError("no rule packs loaded (--no-bundled without --rules)")
    limits = Limits(max_body=getattr(args, "max_body", DEFAULT_MAX_BODY))
    return Engine(packs, digest_key=digest_key_from_env(), limits=limits, waivers=waivers)


def summary_line(decisions: Counter, findings: int, flagged: int, judged: int) -> str:
    parts = ", ".join(f"{n} {d}" for d, n in sorted(decisions.items()))
    return f"{judged} telemetry messages, {flagged} with findings ({findings} findings); {parts or 'none'}"

