"""Assertions on recorded telemetry, for tests: load flows, find messages, assert on findings.

Synchronous and deterministic: it reads files and judges them, nothing waits or retries. The
pytest plugin (pytest_plugin.py) hands this out as the `telewarden` fixture; it works without
pytest too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audit import render
from ..engine.judge import Engine
from .flows import InputError, ReadLog, read
from ..engine.model import Decision, Finding, Mode, Verdict
from ..engine.packs import load_packs


@dataclass(slots=True)
class Message:
    """One judged telemetry message of a recording."""

    source: str
    verdict: Verdict
    record: dict[str, Any]
    payload: Any  # the parsed JSON body, or None when it was not JSON

    @property
    def pack(self) -> str | None:
        return self.verdict.pack

    @property
    def kind(self) -> str | None:
        return self.verdict.kind

    @property
    def findings(self) -> list[Finding]:
        return self.verdict.active_findings

    def __str__(self) -> str:
        return render.block(self.record)


def _contains(actual: Any, expected: Any) -> bool:
    """Partial match: dicts match on the given keys, everything else by equality."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _contains(actual[k], v) for k, v in expected.items())
    return actual == expected


class Recording:
    def __init__(self, messages: list[Message], passed_through: int, log: ReadLog | None = None) -> None:
        self.messages = messages
        self.passed_through = passed_through
        log = log if log is not None else ReadLog()
        self.skipped = dict(log.skipped)  # reason -> entries that cannot be telemetry (data: URLs, ...)
        self.notes = dict(log.notes)  # e.g. responses that could not be converted (requests judged alone)
        self.warnings = list(log.warnings)  # e.g. WebSocket handshakes whose messages were not recorded

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def find(self, vendor: str | None = None, kind: str | None = None, match: dict | None = None) -> list[Message]:
        """Messages of a pack (`vendor`), a kind, and whose payload contains `match` (partially)."""
        return [m for m in self.messages
                if (vendor is None or m.pack == vendor) and (kind is None or m.kind == kind)
                and (match is None or _contains(m.payload, match))]

    def findings(self, rule: str | None = None) -> list[tuple[Message, Finding]]:
        return [(m, f) for m in self.messages for f in m.findings if rule is None or f.rule == rule]

    def rules(self) -> set[str]:
        return {f.rule for _, f in self.findings()}

    def assert_clean(self) -> None:
        bad = [m for m in self.messages if m.findings]
        if bad:
            raise AssertionError(f"{len(bad)} of {len(self.messages)} telemetry messages broke policy:\n\n"
                                 + "\n\n".join(str(m) for m in bad))

    def assert_no_telemetry(self, vendor: str | None = None) -> None:
        sent = [m for m in self.messages if vendor is None or m.pack == vendor]
        if sent:
            raise AssertionError(f"expected no telemetry{f' to {vendor}' if vendor else ''}, but "
                                 f"{len(sent)} messages reached its endpoints:\n\n" + "\n\n".join(str(m) for m in sent))


class Checker:
    """Judges recordings with a fixed set of packs (compiled once)."""

    def __init__(self, rules: Iterable[Path] = (), *, bundled: bool = True, mode: str = "scrub",
                 waivers: dict[str, str] | None = None) -> None:
        key = os.environ.get("TELEWARDEN_AUDIT_KEY", "telewarden-tests").encode()
        self.engine = Engine(load_packs(list(rules), include_bundled=bundled), digest_key=key, waivers=waivers)
        self.mode = Mode(mode)

    def load(self, *paths: str | os.PathLike) -> Recording:
        """Judge every message of the recordings. An unreadable part raises InputError naming
        each one, after everything else was read (as `check` exits 2)."""
        from ..engine import strictjson

        messages, passed, log = [], 0, ReadLog()
        for path in paths:
            for rec in read(Path(path), log=log):
                verdict = self.engine.inspect(rec.exchange, self.mode)
                if verdict.decision is Decision.PASSED_THROUGH:
                    passed += 1
                    continue
                try:
                    payload = strictjson.loads(rec.exchange.body, max_bytes=1 << 24, max_depth=256) if rec.exchange.body else None
                except ValueError:
                    payload = None
                messages.append(Message(rec.source, verdict, render.record(verdict, rec.exchange, rec.source), payload))
        if log.problems:
            raise InputError("\n".join(log.problems))
        return Recording(messages, passed, log)
