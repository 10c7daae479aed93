"""`telewarden icap`: the ICAP (RFC 3507) service for an egress proxy such as Squid.

Listens on 127.0.0.1:1344 unless told otherwise; the service URI is icap://HOST:PORT/telewarden.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ..engine.judge import DEFAULT_MAX_BODY, Engine, Limits
from ..engine.model import Mode


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("icap", help="run the ICAP service (REQMOD) for Squid and other egress proxies",
                       allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--listen-port", type=int, default=1344)
    p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SCRUB.value,
                   help="audit, scrub (default) or block")
    p.add_argument("--rules", action="append", type=Path, default=[], metavar="PATH",
                   help="rule pack file or folder; replaces a bundled pack with the same id (repeatable)")
    p.add_argument("--no-bundled", action="store_true", help="do not load the bundled packs")
    p.add_argument("--audit", default="telewarden-audit", metavar="DIR",
                   help="audit folder (default: ./telewarden-audit); one writer per folder")
    p.add_argument("--allow", action="append", default=[], metavar="RULE=REASON", help="waive a rule")
    p.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                   help="largest telemetry body inspected; larger is blocked in scrub/block mode")
    p.add_argument("--block-status", type=int, default=403, metavar="STATUS",
                   help="HTTP status of the answer to a blocked request (default 403)")
    p.add_argument("--service", default="telewarden", help="service name in the ICAP URI (default: telewarden)")
    p.add_argument("--preview", type=int, default=0, metavar="BYTES",
                   help="Preview advertised to the proxy (default 0: decide on the request head)")
    p.add_argument("--max-connections", type=int, default=512)
    p.add_argument("--audit-max-bytes", type=int, default=64 << 20, metavar="BYTES",
                   help="rotate audit.jsonl past this size; the hash chain continues across files")
    p.add_argument("--reload-ms", type=int, default=2000, metavar="MS",
                   help="how often the pack and schema files are checked for edits (0: never); a broken "
                        "edit is logged and the last good packs stay in force")
    p.set_defaults(func=cmd_icap)


def build(args: argparse.Namespace):
    """(ICAPServer, AuditTrail) from the arguments; raises ValueError/PackError/AuditError."""
    from ..audit.trail import AuditTrail  # noqa: PLC0415
    from .exchange import Judge  # noqa: PLC0415
    from .server import ICAPServer, ServerLimits  # noqa: PLC0415

    if args.max_body <= 0:
        raise ValueError("--max-body must be positive")
    if not 200 <= args.block_status <= 599:
        raise ValueError("--block-status must be an HTTP status (200-599)")
    if not 0 <= args.preview <= 65536:
        raise ValueError("--preview must be 0..65536")
    if args.max_connections <= 0:
        raise ValueError("--max-connections must be positive")
    if args.audit_max_bytes <= 0:
        raise ValueError("--audit-max-bytes must be positive")
    trail = AuditTrail(Path(args.audit).expanduser(), max_bytes=args.audit_max_bytes)
    try:
        engine = build_engine(args, trail.key)
    except BaseException:
        trail.close()
        raise
    judge = Judge(engine, trail, Mode(args.mode), block_status=args.block_status)
    limits = ServerLimits(max_connections=args.max_connections, preview=args.preview)
    return ICAPServer(judge, service=args.service, limits=limits), trail


def build_engine(args: argparse.Namespace, key: bytes) -> Engine:
    from ..cli import parse_waivers  # noqa: PLC0415
    from ..engine.packs import PackError, load_packs  # noqa: PLC0415

    waivers = parse_waivers(list(args.allow))
    packs = load_packs(list(args.rules), include_bundled=not args.no_bundled)
    if not packs:
        raise PackError("no rule packs loaded (--no-bundled without --rules)")
    return Engine(packs, digest_key=key, limits=Limits(max_body=args.max_body), waivers=waivers)


def _pack_files(engine: Engine) -> dict[Path, tuple[int, int]]:
    from ..engine.packs import file_stamps  # noqa: PLC0415

    return file_stamps({f for pack in engine.packs for f in pack.files()})


async def _watch(server, args: argparse.Namespace) -> None:
    """Reload the packs when a pack or schema file changes; a broken edit keeps the last good."""
    from .server import make_istag  # noqa: PLC0415

    log = logging.getLogger("telewarden")
    watched = _pack_files(server.judge.engine)
    while True:
        await asyncio.sleep(max(args.reload_ms, 200) / 1000)
        try:
            now = {f: v for f, v in _pack_files(server.judge.engine).items()}
            if now == watched:
                continue
            watched = now  # a broken edit is reported once, not every interval
            engine = build_engine(args, server.judge.trail.key)
        except Exception as e:  # noqa: BLE001 - never let the watcher die; keep the last good packs
            log.error(f"telewarden icap: reload failed, keeping the last good rule packs: {e}")
            continue
        server.judge.engine = engine
        server.istag = make_istag(server.judge)
        watched = _pack_files(engine)
        log.info(f"telewarden icap: rule packs reloaded ({', '.join(p.id for p in engine.packs)}), ISTag {server.istag}")


def cmd_icap(args: argparse.Namespace) -> int:
    from ..audit.trail import AuditError  # noqa: PLC0415
    from ..engine.packs import PackError  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        server, trail = build(args)
    except (ValueError, PackError, AuditError) as e:
        print(f"telewarden icap: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(server, args))
    except OSError as e:
        print(f"telewarden icap: cannot listen on {args.listen_host}:{args.listen_port}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    finally:
        trail.close()


async def _serve(server, args: argparse.Namespace) -> int:
    await server.start(args.listen_host, args.listen_port)
    watcher = asyncio.get_running_loop().create_task(_watch(server, args)) if args.reload_ms > 0 else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    packs = ", ".join(p.id for p in server.judge.engine.packs)
    print(f"telewarden icap: {server.judge.mode.value} mode, packs {packs}, audit in {server.judge.trail.folder}/, "
          f"listening on icap://{args.listen_host}:{server.port}{server.service}", file=sys.stderr, flush=True)
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    await server.close()
    return 0
