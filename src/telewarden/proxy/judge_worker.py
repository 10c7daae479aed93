"""A judge process (`telewarden_workers`): Engine.inspect on another core than the proxy's.

mitmproxy runs every addon on one event loop, so each microsecond of judging is a microsecond no
other connection is served. Here the judging, the audit record and its audit.log block are
built in a child process; the proxy hands a claimed message over, awaits the answer, then
chains and writes the record itself and only then forwards, exactly as when it judges in its
own process (judge_client.py). The trail keeps one writer, so the hash chain needs no locking
across processes.

No mitmproxy here: the worker imports the engine alone. Frames both ways are a 4-byte length
and a pickle of builtins (pickled in C; both ends are this program, nothing from a client is
unpickled: a message's bytes travel as one `bytes` value inside the tuple).

    parent -> worker   ("config", {...})  ("resolved", {address: pack id})
                       ("judge", seq, exchange, mode, sink, pack id the proxy claimed)
    worker -> parent   ("judged", seq, verdict fields, record JSON, audit.log block)
                       ("failed", seq, reason)    ("config", error or None)
"""

from __future__ import annotations

import pickle
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from ..audit import render
from ..audit.trail import encode_record
from ..engine.judge import Engine, Limits
from ..engine.model import Decision, Exchange, Mode, Repaired, Transport
from ..engine.packs import load_packs

HEADER = 4
MAX_FRAME = 1 << 30  # both ends are ours; a larger length means the stream is corrupt


def frame(message: tuple) -> bytes:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


def frames(buf: bytearray) -> list[tuple]:
    """Take every whole frame off the front of `buf`."""
    out, pos, end = [], 0, len(buf)
    while end - pos >= HEADER:
        n = int.from_bytes(buf[pos:pos + HEADER], "big")
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes: the stream is corrupt")
        if end - pos - HEADER < n:
            break
        out.append(pickle.loads(buf[pos + HEADER:pos + HEADER + n]))
        pos += HEADER + n
    del buf[:pos]
    return out


def flat(ex: Exchange) -> tuple:
    """An Exchange as builtins (a slots dataclass pickles through Python-level reduction, ~5x
    slower). Every field travels, the id and timestamp too: the record names the proxy's message."""
    return (ex.transport.value, ex.method, ex.hosts, ex.port, ex.path, ex.query, ex.headers, ex.body,
            ex.body_problem, ex.frame_is_text, ex.scheme, ex.target_problem, ex.raw_target, ex.sent_names,
            ex.connected, ex.id, ex.timestamp)


def unflat(t: tuple) -> Exchange:
    return Exchange(Transport(t[0]), *t[1:])


def repaired_fields(r: Repaired | None) -> tuple | None:
    return None if r is None else (r.body, r.drop_headers, r.clear_query, r.target, r.host, r.query)


def engine_from(config: dict[str, Any]) -> Engine:
    packs = load_packs([Path(p) for p in config["rules"]], include_bundled=config["bundled"])
    engine = Engine(packs, digest_key=config["key"], limits=Limits(max_body=config["max_body"]),
                    waivers=config["waivers"])
    engine.set_resolved(config["resolved"])
    return engine


def judge(engine: Engine | None, message: tuple) -> tuple:
    """One ("judge", ...) message -> its answer. Anything that goes wrong is a "failed" answer:
    the proxy then fails closed as it does for its own errors."""
    _, seq, exchange, mode, sink, claimed = message
    try:
        if engine is None:
            raise RuntimeError("the judge process has no rule packs (its configuration failed)")
        ex = unflat(exchange)
        v = engine.inspect(ex, Mode(mode))
        if v.pack != claimed:  # the proxy's packs and ours differ (a reload in between): not judged
            raise RuntimeError("the judge process's rule packs differ from the proxy's")
        if sink and v.decision is not Decision.BLOCKED:
            v.sunk = True
        rec = render.record(v, ex)
        fields = (v.decision.value, v.pack, v.endpoint, v.kind, v.rule_ids, v.error, v.sunk,
                  repaired_fields(v.repaired))
        return ("judged", seq, fields, encode_record(rec), render.block(rec))
    except Exception as e:  # noqa: BLE001 - reported to the proxy, which blocks (scrub/block mode)
        traceback.print_exc(file=sys.stderr)
        return ("failed", seq, type(e).__name__)


def serve(sock: socket.socket) -> None:
    """Answer until the proxy closes its end; answers to one read go back in one write."""
    engine: Engine | None = None
    buf = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        buf += chunk
        answers = []
        for message in frames(buf):
            kind = message[0]
            if kind == "judge":
                answers.append(frame(judge(engine, message)))
            elif kind == "config":
                try:
                    engine, error = engine_from(message[1]), None
                except Exception as e:  # noqa: BLE001 - judged messages now fail: the proxy blocks them
                    engine, error = None, f"{type(e).__name__}: {e}"
                answers.append(frame(("config", error)))
            elif kind == "resolved" and engine is not None:
                engine.set_resolved(message[1])
        if answers:
            sock.sendall(b"".join(answers))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the proxy, which closes our socket
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
