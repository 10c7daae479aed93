"""The proxy's side of the judge processes (`telewarden_workers`): hand over, await, fail closed.

The addon claims a message, builds its Exchange and awaits `JudgePool.judge`; the verdict comes
back with its audit record already encoded, which the addon chains and writes before it
forwards anything (the trail keeps a single writer: this process). What the proxy's event loop
still pays per message is the pickle, two syscalls and the wake-up, not the judging.

Failure is an answer too: a worker that dies, reports a failure, or has not answered within
the timeout makes `judge` raise JudgeError, and the addon treats it as its own internal error
(blocked in scrub and block mode, recorded either way). A dead worker is started again for a
later message, at most once a second. Messages in flight are never re-sent to another
worker: a late verdict for a message already blocked is simply dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.model import Decision, Exchange, Mode, Repaired
from .judge_worker import flat, frame, frames

log = logging.getLogger("telewarden")

_RESTART_S = 1.0  # a worker that died is started again no sooner than this
_LOAD_S = 60.0  # a worker may take this long to load its rule packs (at start and on reload)
_MAX_IN_FLIGHT = 10_000  # per worker: beyond it messages fail (are blocked) instead of queueing
_SRC = str(Path(__file__).resolve().parents[2])  # the folder holding the telewarden package


class JudgeError(Exception):
    """A message could not be judged in a worker; the reason names no message content."""


@dataclass(slots=True)
class Judged:
    """A verdict judged in a worker: the parts of Verdict the addon acts on, under its names."""

    exchange_id: str
    decision: Decision
    pack: str | None
    endpoint: str | None
    kind: str | None
    rule_ids: list[str]
    error: str | None
    sunk: bool
    repaired: Repaired | None


class JudgeProcess:
    """One worker process and the messages in flight to it, answered in the order sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.died = 0.0  # when it last died (time.monotonic), 0 before the first start
        self._sock: socket.socket | None = None
        self._inbox = bytearray()
        self._outbox = bytearray()  # what the socket did not take at once
        self._pending: dict[int, tuple[asyncio.Future, float]] = {}
        self._seq = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.timeout = 10.0
        # loading packs (start, reload) does not count against a message's timeout, or a short
        # timeout would kill every new worker before it could answer; _LOAD_S bounds it instead
        self._loading_since: float | None = None
        self._configs_sent = 0  # configurations sent and not yet answered

    @property
    def alive(self) -> bool:
        return self._sock is not None

    def start(self, config: dict[str, Any], timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeout = timeout
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_SRC, env.get("PYTHONPATH"))))
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "telewarden.proxy.judge_worker", str(child.fileno())],
                                         pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env)
        except OSError:
            parent.close()
            self.died = time.monotonic()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        self._inbox.clear()
        self._outbox.clear()
        self._configs_sent = 0
        self._loop.add_reader(parent.fileno(), self._readable)
        self.configure(config)
        self._watchdog = self._loop.call_later(min(self.timeout, 1.0), self._watch)

    def configure(self, config: dict[str, Any]) -> None:
        if self._sock is not None:
            self._loading_since = time.monotonic()
            self._configs_sent += 1
            self.send(("config", config))

    def submit(self, ex: Exchange, mode: Mode, sink: bool, pack: str) -> asyncio.Future:
        if self._sock is None or self._loop is None:
            raise JudgeError(f"judge process {self.name} is not running")
        if len(self._pending) >= _MAX_IN_FLIGHT:
            raise JudgeError(f"judge process {self.name} has {_MAX_IN_FLIGHT} messages waiting")
        seq = next(self._seq)
        future = self._loop.create_future()
        self._pending[seq] = (future, time.monotonic())
        self.send(("judge", seq, flat(ex), mode.value, sink, pack))
        return future

    def send(self, message: tuple) -> None:
        """Write a message now (one system call); what the socket does not take is written when
        it can (the worker is behind), after which later messages queue behind it in order."""
        sock = self._sock
        if sock is None or self._loop is None:
            return
        data = frame(message)
        if self._outbox:
            self._outbox += data
            return
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.fail(f"judge process {self.name}: cannot write to it ({e.strerror or type(e).__name__})")
            return
        if sent < len(data):
            self._outbox += data[sent:]
            self._loop.add_writer(sock.fileno(), self._writable)

    def _writable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sent = sock.send(self._outbox)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail(f"judge process {self.name}: cannot write to it ({e.strerror or type(e).__name__})")
            return
        del self._outbox[:sent]
        if not self._outbox and self._loop is not None:
            self._loop.remove_writer(sock.fileno())

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            code = self.proc.poll() if self.proc is not None else None
            self.fail(f"judge process {self.name} exited" + (f" (status {code})" if code is not None else ""))
            return
        self._inbox += chunk
        try:
            answers = frames(self._inbox)
        except Exception as e:  # noqa: BLE001 - a corrupt stream: nothing more from it can be trusted
            self.fail(f"judge process {self.name} sent a corrupt answer ({type(e).__name__})")
            return
        for answer in answers:
            if answer[0] == "config":
                self._loaded()
                if answer[1]:
                    log.error(f"telewarden: judge process {self.name} could not load the rule packs: {answer[1]}; "
                              f"the messages it gets are not judged (blocked in scrub and block mode)")
                continue
            entry = self._pending.pop(answer[1], None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(answer)

    def _loaded(self) -> None:
        """Packs loaded: what waited behind them is timed from now."""
        self._configs_sent -= 1
        if self._configs_sent > 0:
            return
        self._loading_since = None
        now = time.monotonic()
        self._pending = {seq: (future, now) for seq, (future, _) in self._pending.items()}

    def _watch(self) -> None:
        """A worker that keeps the oldest message past the timeout is stuck: kill it, which fails
        every message it holds (answers come in order, so the oldest is the first)."""
        if self._sock is None or self._loop is None:
            return
        if self._loading_since is not None:
            if time.monotonic() - self._loading_since > _LOAD_S:
                self.fail(f"judge process {self.name} did not load the rule packs within {_LOAD_S:g} s; killed")
                return
        elif self._pending:
            _, sent_at = next(iter(self._pending.values()))
            if time.monotonic() - sent_at > self.timeout:
                self.fail(f"judge process {self.name} did not answer within {self.timeout:g} s; killed")
                return
        self._watchdog = self._loop.call_later(min(self.timeout, 1.0), self._watch)

    def fail(self, reason: str) -> None:
        """Kill this worker and fail every message it holds."""
        if self._sock is not None:
            log.error(f"telewarden: {reason}")
        self.died = time.monotonic()
        self._stop(reason, kill=True)

    def close(self) -> None:
        """Closing its socket ends the worker (killed if still there after a second); what it
        held fails."""
        self._stop(f"judge process {self.name} stopped", kill=False)

    def _stop(self, reason: str, kill: bool) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
            sock.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._reap(kill=kill)
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(JudgeError(reason))

    def _reap(self, kill: bool) -> None:
        proc = self.proc
        if proc is None:
            return
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=1.0)


class JudgePool:
    """N judge processes, each message to the next in turn."""

    def __init__(self, count: int, config: dict[str, Any], timeout: float) -> None:
        self.workers = [JudgeProcess(f"#{i + 1}") for i in range(count)]
        self.config = config
        self.timeout = timeout
        self._turn = itertools.cycle(self.workers)

    def start(self) -> None:
        for worker in self.workers:
            if not worker.alive:
                worker.start(self.config, self.timeout)

    def configure(self, config: dict[str, Any]) -> None:
        """New packs or key: each worker loads them before the next message it gets."""
        self.config = config
        for worker in self.workers:
            worker.configure(config)

    def set_resolved(self, addresses: dict[str, str]) -> None:
        self.config = {**self.config, "resolved": addresses}
        for worker in self.workers:
            worker.send(("resolved", addresses))

    async def judge(self, ex: Exchange, mode: Mode, sink: bool, pack: str) -> tuple[Judged, tuple[str, str]]:
        """The verdict and the encoded record (members, audit.log block); JudgeError if none."""
        worker = next(self._turn)
        if not worker.alive:
            if time.monotonic() - worker.died < _RESTART_S:
                raise JudgeError(f"judge process {worker.name} died less than {_RESTART_S:g} s ago")
            try:
                worker.start(self.config, self.timeout)
            except OSError as e:
                raise JudgeError(f"judge process {worker.name} cannot start ({e.strerror or e})") from None
        answer = await worker.submit(ex, mode, sink, pack)
        if answer[0] != "judged":
            raise JudgeError(f"judge process {worker.name} failed to judge a message ({answer[2]})")
        _, _, f, members, human = answer
        verdict = Judged(ex.id, Decision(f[0]), *f[1:7], Repaired(*f[7]) if f[7] is not None else None)
        return verdict, (members, human)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
