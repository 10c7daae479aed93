"""`telewarden run`: mitmdump with the telewarden addon and the bundled packs.

Listens on 127.0.0.1:8080 unless told otherwise (never on all interfaces by default). Every
argument it does not know goes to mitmdump unchanged (`--mode reverse:...`, `--set ...`, `-s ...`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import addon
from ..engine.model import Mode


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start the proxy (mitmdump + telewarden)", allow_abbrev=False,
                       description=__doc__.splitlines()[0] + " Unknown arguments go to mitmdump.")
    p.add_argument("--mode", dest="modes", action="append", default=[], metavar="MODE",
                   help="audit, scrub (default) or block; any other value is a mitmproxy mode "
                        "(e.g. reverse:https://telemetry.hasura.io/) and goes to mitmdump")
    p.add_argument("--rules", action="append", default=[], metavar="PATH",
                   help="rule pack file or folder (repeatable)")
    p.add_argument("--no-bundled", action="store_true", help="do not load the bundled packs")
    p.add_argument("--audit", default="telewarden-audit", metavar="DIR", help="audit folder (default: ./telewarden-audit)")
    p.add_argument("--audit-key", metavar="FILE",
                   help="digest key file, outside the audit folder (default ~/.config/telewarden/audit.key)")
    p.add_argument("--allow", action="append", default=[], metavar="RULE=REASON", help="waive a rule")
    p.add_argument("--sink", action="store_true",
                   help="capture without sending: judge and record claimed messages, answer them here, "
                        "never send them upstream (other traffic passes as usual)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="judge claimed messages in N worker processes, on other cores (default 0: in the proxy)")
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--listen-port", type=int, default=8080)
    p.set_defaults(func=cmd_run, passthrough=True)


def split_modes(modes: list[str]) -> tuple[str, list[str]]:
    """--mode serves both: telewarden's enforcement mode and mitmproxy's proxy modes."""
    ours = [m for m in modes if m in {x.value for x in Mode}]
    if len(ours) > 1:
        raise SystemExit(f"telewarden run: give one of audit/scrub/block, not {', '.join(ours)}")
    theirs = [a for m in modes if m not in ours for a in ("--mode", m)]
    return (ours[0] if ours else Mode.SCRUB.value), theirs


def _user_sets(extra: list[str]) -> set[str]:
    """Option names the user set with --set NAME=VALUE among the pass-through arguments."""
    names = set()
    for i, a in enumerate(extra):
        value = a[len("--set="):] if a.startswith("--set=") else (extra[i + 1] if a == "--set" and i + 1 < len(extra) else None)
        if value and "=" in value:
            names.add(value.split("=", 1)[0])
    return names


def mitmdump_args(args: argparse.Namespace, extra: list[str]) -> list[str]:
    # mitmproxy refuses a script option given twice ("multiple values") and then never configures
    # the addon, so an option the user sets with --set wins and we do not set it again.
    user = _user_sets(extra)
    ours = [("telewarden_mode", args.tw_mode), ("telewarden_audit", args.audit)]
    ours += [("telewarden_rules", str(Path(r).resolve())) for r in args.rules]
    ours += [("telewarden_allow", a) for a in args.allow]
    if args.no_bundled:
        ours.append(("telewarden_bundled", "false"))
    if args.sink:
        ours.append(("telewarden_sink", "true"))
    if args.workers:
        ours.append(("telewarden_workers", str(args.workers)))
    if args.audit_key:
        ours.append(("telewarden_audit_key", str(Path(args.audit_key).expanduser().resolve())))
    argv = ["-s", str(Path(addon.__file__).resolve()), "--listen-host", args.listen_host,
            "--listen-port", str(args.listen_port)]
    for name, value in ours:
        if name not in user:
            argv += ["--set", f"{name}={value}"]
    return argv + extra


def confdir(extra: list[str]) -> Path:
    for i, a in enumerate(extra):
        value = a[len("--set="):] if a.startswith("--set=") else (extra[i + 1] if a == "--set" and i + 1 < len(extra) else "")
        if value.startswith("confdir="):
            return Path(value.split("=", 1)[1]).expanduser()
    return Path("~/.mitmproxy").expanduser()


def cmd_run(args: argparse.Namespace) -> int:
    from mitmproxy.tools.main import mitmdump  # noqa: PLC0415

    args.tw_mode, proxy_modes = split_modes(args.modes)
    extra = proxy_modes + list(getattr(args, "extra", []))
    ca = confdir(extra) / "mitmproxy-ca-cert.pem"
    sink = ", sink: claimed messages are never sent upstream" if args.sink else ""
    print(f"telewarden: {args.tw_mode} mode{sink}, proxy on {args.listen_host}:{args.listen_port}, audit in {args.audit}/",
          file=sys.stderr)
    print(f"telewarden: CA certificate: {ca} (created on first start). Clients must trust it:\n"
          f"  curl --cacert {ca} ...   |   SSL_CERT_FILE={ca} / REQUESTS_CA_BUNDLE={ca} / NODE_EXTRA_CA_CERTS={ca}\n"
          f"  system-wide (Debian/Ubuntu): cp {ca} /usr/local/share/ca-certificates/mitmproxy.crt && update-ca-certificates",
          file=sys.stderr)
    sys.stderr.flush()
    mitmdump(mitmdump_args(args, extra))
    return 0
