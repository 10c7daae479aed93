"""The engine's vocabulary: what goes in (Exchange), what comes out (Finding, Verdict).

Nothing here imports mitmproxy: adapters (addon, flow files, CLI) build Exchanges, the engine
turns them into Verdicts, and the adapters apply those.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any


class Mode(enum.StrEnum):
    AUDIT = "audit"  # forward everything, record findings (the one fail-open mode)
    SCRUB = "scrub"  # repair what can be repaired, block the rest
    BLOCK = "block"  # never forward a message with findings


class Decision(enum.StrEnum):
    FORWARDED = "forwarded"  # sent on unchanged (clean, or audit mode)
    SCRUBBED = "scrubbed"  # sent on after repair
    BLOCKED = "blocked"  # not sent
    PASSED_THROUGH = "passed-through"  # no pack claims this destination


class Severity(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Transport(enum.StrEnum):
    HTTP = "http"
    WEBSOCKET = "websocket"
    TCP = "tcp"  # a connection that was not HTTP: recorded by the transport guard, never judged as a body
    UDP = "udp"


_ids = itertools.count(1)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE", "WS"})


def shown_method(method: str) -> str:
    """The method as it may appear in a record: a custom method is the sender's and could carry data."""
    return method if method in _METHODS else "(other method)"


@dataclass(slots=True)
class Exchange:
    """One message leaving the machine, normalised by an adapter.

    `hosts` holds every name the message could be going to (CONNECT target, request host,
    Host header / :authority, TLS SNI), already normalised, so that destination matching
    cannot be dodged by disagreeing names.
    """

    transport: Transport
    method: str
    hosts: tuple[str, ...]
    port: int
    path: str  # normalised path, no query
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    # Set by adapters when the body could not be obtained faithfully (streamed, broken encoding,
    # too large); the engine turns it into a finding instead of inspecting.
    body_problem: str | None = None
    frame_is_text: bool = True
    scheme: str = "https"
    # Why the raw request target differs from the canonical `path` it is judged as ("fragment",
    # "non-canonical"), or None. The adapter forwards the canonical form in scrub mode.
    target_problem: str | None = None
    raw_target: str = ""  # the request target as sent (for the digest when it is not canonical)
    # Names the request sends on to the server, as (where, raw value): every Host header,
    # `:authority`, the TLS SNI. Each must name the claimed destination.
    sent_names: tuple[tuple[str, str], ...] = ()
    # The names of where the connection really goes (CONNECT target, the address asked for): a
    # sent name equal to one of them reveals nothing the connection does not.
    connected: tuple[str, ...] = ()
    id: str = field(default_factory=lambda: f"m{next(_ids)}")
    timestamp: float = field(default_factory=time.time)

    @property
    def destination(self) -> str:
        host = self.hosts[0] if self.hosts else "?"
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(slots=True)
class Finding:
    rule: str  # rule id, e.g. "hasura.cli.command-flags"
    pointer: str  # JSON pointer into the body, or "header:NAME" / "query" / "body"
    message: str  # what is wrong, for humans, never containing the raw value
    promise: str  # the vendor promise (quoted) this breaks, or telewarden's own reason
    severity: Severity
    digest: str | None = None  # keyed digest of the offending value (set by the engine)
    preview: str | None = None  # safe preview: type, length, what a detector thinks it is
    repair: str | None = None  # what scrub does / did, None when it cannot repair
    waived: str | None = None  # reason, when a --allow waiver covers this rule
    # Local only (Engine.keep_values, for `check --show-values`): the raw value and the pointer with
    # the sender's own key names. Never serialised: to_dict() leaves them out, so no record, trail,
    # JUnit report or JSON output can carry them.
    value: Any = field(default=None, repr=False, compare=False)
    raw_pointer: str | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k in _FINDING_FIELDS if (v := getattr(self, k)) is not None}


_FINDING_FIELDS = ("rule", "pointer", "message", "promise", "severity", "digest", "preview", "repair", "waived")


@dataclass(slots=True)
class Repaired:
    """What scrub changes on the exchange: a new body, dropped headers, a cleared query, the
    canonical target, the claimed host name, a repaired query string."""

    body: bytes | None = None
    drop_headers: tuple[str, ...] = ()
    clear_query: bool = False
    target: str | None = None  # forward this canonical path instead of the raw target
    host: str | None = None  # set Host / :authority to this claimed name (one header)
    query: str | None = None  # the repaired query string, when the message is the query (`message: query`)


@dataclass(slots=True)
class Verdict:
    exchange_id: str
    decision: Decision
    mode: Mode
    pack: str | None = None
    host: str | None = None  # the name that matched the pack (the addresses may be IPs)
    endpoint: str | None = None
    kind: str | None = None
    findings: list[Finding] = field(default_factory=list)
    repaired: Repaired | None = None
    error: str | None = None  # internal error or unverifiable input, when there was one
    sunk: bool = False  # --sink: answered by telewarden, never sent upstream
    size_in: int = 0
    size_out: int = 0
    micros: int = 0

    @property
    def active_findings(self) -> list[Finding]:
        return [f for f in self.findings if f.waived is None]

    @property
    def rule_ids(self) -> list[str]:
        return sorted({f.rule for f in self.active_findings})
