"""Generic detectors: identifying values that no telemetry string should carry.

All detectors are folded into one alternation regex, compiled once, so a clean string costs a
single `search`. Candidates that a regex cannot judge alone (IP addresses) get a validator.
Packs choose which detectors apply and may add their own patterns (see packs.py).

False positives matter as much as misses: UUIDs, versions (`v2.48.10`, `1.0e-3`), placeholders
(`TABLE_NAME`) and numbers must never trip a detector, so host names need a known top-level
domain (file names such as `main.js` or `config.json` are not host names) and IPv4 needs four
valid octets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Top-level domains that mark a dotted word as a host name. Deliberately excludes TLDs that are
# also common file extensions (py, sh, md, rs, pl) to keep stack-free text
# such as "see setup.py" quiet; internal names (.internal, .local, .corp, ...) are what leaks most.
_TLDS = (
    "com net org io dev app cloud ai co info biz me us uk de fr nl se no fi dk es it ch at be "
    "eu ca au nz jp cn in br ru kr tw sg hk za mx ar cl il tr ua cz gr pt ie hu ro "
    "gov edu mil int "
    "local localdomain internal intranet lan corp home private test example invalid localhost svc cluster"
).split()
_TLD_ALT = "|".join(_TLDS)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"

DETECTOR_PATTERNS: dict[str, str] = {
    "private-key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    "jwt": r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    "bearer-token": r"(?i:\b(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{12,})",
    "api-key": (
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub
        r"|\bgithub_pat_[A-Za-z0-9_]{30,}\b"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
        r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b"  # Stripe
        r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google
        r"|\bglpat-[A-Za-z0-9_-]{20,}\b"  # GitLab
        r"|(?i:\b(?:api[_-]?key|secret|password|passwd|pwd|access[_-]?token|admin[_-]?secret)\b\s*[=:]\s*\S{4,})"
    ),
    "email": r"\b[A-Za-z0-9._%+-]{1,64}@(?:" + _LABEL + r"\.)+[A-Za-z]{2,63}\b",
    "url": r"(?i:\b[a-z][a-z0-9+.-]{1,15}://[^\s\"'<>]{2,})",
    "user-path": r"(?:/home/|/Users/|/root/)[^/\s\"']+|\b[A-Za-z]:\\(?:Users|Documents and Settings)\\[^\\\s\"']+",
    "ipv4": r"(?<![\w./])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])",
    "ipv6": r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39}(?:%[\w.]+)?(?![\w:])",
    "hostname": r"(?i:(?<![\w.@-])(?:" + _LABEL + r"\.)+(?:" + _TLD_ALT + r")\.?(?![\w-]))",
}


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


_VALIDATORS: dict[str, Callable[[str], bool]] = {"ipv4": _valid_ip, "ipv6": _valid_ip}


@dataclass(frozen=True, slots=True)
class Hit:
    detector: str
    start: int
    end: int


# Every built-in detector needs one of these characters or one of these literals to match, so a
# string with none of them is clean without running the (slower) combined regex. Substring tests
# cost a fraction of a regex search on the short strings telemetry is made of.
_TRIGGER_CHARS = frozenset("@.:/\\=")
_TRIGGER_WORDS = ("AKIA", "ASIA", "gh", "xox", "k_live_", "k_test_", "AIza", "glpat-", "PRIVATE KEY")
_TRIGGER_WORDS_ANY_CASE = ("bearer", "basic", "token")


def _may_hit(text: str) -> bool:
    if not _TRIGGER_CHARS.isdisjoint(text):
        return True
    for w in _TRIGGER_WORDS:
        if w in text:
            return True
    low = text.lower()
    return any(w in low for w in _TRIGGER_WORDS_ANY_CASE)


class DetectorSet:
    """A compiled choice of detectors; `scan` returns every validated hit in a string."""

    def __init__(self, names: Iterable[str], extra: dict[str, str] | None = None) -> None:
        patterns: dict[str, str] = {}
        for name in names:
            if name not in DETECTOR_PATTERNS:
                raise KeyError(name)
            patterns[name] = DETECTOR_PATTERNS[name]
        # A pack's own patterns can match anything, so they switch the prefilter off.
        self._prefilter = not extra
        # Values seen clean before (User-Agent, Content-Type, enum-like strings repeat on every
        # message). Only clean values are kept, so no value that tripped a detector stays in memory.
        self._clean: dict[str, None] = {}
        patterns.update(extra or {})
        self.names = tuple(patterns)
        self._group_to_name = {f"d{i}": name for i, name in enumerate(patterns)}
        # Order matters: specific shapes (keys, tokens, e-mail, URL) come before the host name
        # they contain, so the longer, more telling hit wins.
        self._regex = (
            re.compile("|".join(f"(?P<d{i}>{p})" for i, p in enumerate(patterns.values())))
            if patterns
            else None
        )

    def scan(self, text: str) -> list[Hit]:
        if self._regex is None:
            return []
        hits = []
        for m in self._regex.finditer(text):
            name = self._group_to_name[m.lastgroup]  # type: ignore[index]
            validator = _VALIDATORS.get(name)
            if validator is None or validator(m.group()):
                hits.append(Hit(name, m.start(), m.end()))
        return hits

    def first(self, text: str) -> Hit | None:
        """Cheap check used on the clean path: most strings have no hit at all."""
        if self._regex is None or text in self._clean:
            return None
        if self._prefilter and not _may_hit(text):
            return None
        if self._regex.search(text) is None:
            if len(text) <= 256:
                if len(self._clean) >= 4096:
                    self._clean.clear()
                self._clean[text] = None
            return None
        hits = self.scan(text)
        return hits[0] if hits else None


def mask(text: str, hits: list[Hit]) -> str:
    """Replace each hit by `[detector]`, e.g. "db at [hostname] failed"."""
    out, last = [], 0
    for h in hits:
        if h.start < last:
            continue
        out.append(text[last : h.start])
        out.append(f"[{h.detector}]")
        last = h.end
    out.append(text[last:])
    return "".join(out)
