"""Generic detectors: identifying values that no telemetry string should carry.

Every pattern runs on RE2 (see patterns.py), so a scan takes time linear in the string: a 1 MiB
string shaped like a token costs milliseconds, not minutes. One RE2 set search tells which
detectors have a candidate at all (most strings: none); only those are then searched for spans.
Candidates that a regex cannot judge alone (IP addresses) get a validator.
Packs choose which detectors apply and may add their own patterns (see packs.py).

False positives matter as much as misses: UUIDs, versions (`v2.48.10`, `1.0e-3`), placeholders
(`TABLE_NAME`) and numbers must never trip a detector, so host names need a known top-level
domain (file names such as `main.js` or `config.json` are not host names) and IPv4 needs four
valid octets.

RE2 has no lookaround. The three detectors that used one (ipv4, ipv6, hostname) say instead which
characters may not come right before and right after the hit; their pattern consumes that one
character of context (or the start/end of the text) on each side, and the scan resumes from the
hit's own end, so the context is never lost to the next match. ipv6's "at least two colons"
lookahead is part of its pattern, its length bound a check on the hit. Hits are the same as the
`re` patterns with lookarounds gave (tests/test_detectors.py compares them on generated strings),
in the same order: the leftmost candidate wins, ties go to the detector listed first, and the
scan goes on after it.
Character classes spell out Python's Unicode `\\w`, `\\s` and `\\d` (RE2's are ASCII); `\\b` is
RE2's ASCII one, which only adds hits next to non-ASCII letters.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from re2 import _re2

from .patterns import Pattern, PatternError

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
# Python's Unicode classes, for use inside [...] (RE2's \w, \s are ASCII-only).
_W = r"\pL\pN_"  # \w: a superset of Python's by a few hundred code points newer than Python's tables
_S = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"  # \s


@dataclass(frozen=True, slots=True)
class _Builtin:
    core: str  # RE2 pattern of the hit itself
    not_before: str = ""  # class body of characters that may not precede the hit (was a lookbehind)
    not_after: str = ""  # ... that may not follow it (was a negative lookahead)


_BUILTINS: dict[str, _Builtin] = {
    "private-key": _Builtin(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "jwt": _Builtin(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    "bearer-token": _Builtin(rf"(?i:\b(?:bearer|basic|token)[{_S}]+[A-Za-z0-9._~+/=-]{{12,}})"),
    "api-key": _Builtin(
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub
        r"|\bgithub_pat_[A-Za-z0-9_]{30,}\b"
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
        r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b"  # Stripe
        r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google
        r"|\bglpat-[A-Za-z0-9_-]{20,}\b"  # GitLab
        rf"|(?i:\b(?:api[_-]?key|secret|password|passwd|pwd|access[_-]?token|admin[_-]?secret)\b[{_S}]*[=:][{_S}]*[^{_S}]{{4,}})"
    ),
    "email": _Builtin(r"\b[A-Za-z0-9._%+-]{1,64}@(?:" + _LABEL + r"\.)+[A-Za-z]{2,63}\b"),
    "url": _Builtin(rf"(?i:\b[a-z][a-z0-9+.-]{{1,15}}://[^{_S}\"'<>]{{2,}})"),
    "user-path": _Builtin(rf"(?:/home/|/Users/|/root/)[^/{_S}\"']+|\b[A-Za-z]:\\(?:Users|Documents and Settings)\\[^\\{_S}\"']+"),
    "ipv4": _Builtin(r"(?:\p{Nd}{1,3}\.){3}\p{Nd}{1,3}", not_before=rf"{_W}./", not_after=rf"{_W}."),
    # Python's `[0-9A-Fa-f:]{2,39}` with the lookahead "(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)": the
    # context rules make the hex part the whole run of hex digits and colons, so "at least two
    # colons" goes in the pattern and "at most 39 characters" is the _short_hex gate.
    "ipv6": _Builtin(rf"(?:[0-9A-Fa-f]*:){{2}}[0-9A-Fa-f:]*(?:%[{_W}.]+)?", not_before=rf"{_W}:.", not_after=rf"{_W}:"),
    "hostname": _Builtin(rf"(?i:(?:{_LABEL}\.)+(?:{_TLD_ALT})\.?)", not_before=rf"{_W}.@-", not_after=rf"{_W}-"),
}


def _with_context(b: _Builtin, at_start: bool) -> str:
    """The RE2 pattern of a built-in: its core with one character of context (or the text's edge)
    on each side that has a rule. `at_start` allows the start of the text as the
    context before; a search resuming inside the text uses the other form from one character back."""
    before = ""
    if b.not_before:
        before = f"(?:^|[^{b.not_before}])" if at_start else f"[^{b.not_before}]"
    after = f"(?:[^{b.not_after}]|$)" if b.not_after else ""
    return f"{before}(?:{b.core}){after}" if before or after else b.core


# Name -> RE2 pattern (for a search from the start of a string). Packs list detectors by these names.
DETECTOR_PATTERNS: dict[str, str] = {name: _with_context(b, True) for name, b in _BUILTINS.items()}


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _short_hex(text: str) -> bool:
    return len(text.split("%", 1)[0]) <= 39


_VALIDATORS: dict[str, Callable[[str], bool]] = {"ipv4": _valid_ip, "ipv6": _valid_ip}
# A candidate failing its gate is no match at that position (a failed lookahead): the scan tries
# the next position. A candidate failing its validator is a match that is not reported.
_GATES: dict[str, Callable[[str], bool]] = {"ipv6": _short_hex}

# At most this many candidates are taken per string (hits, and candidates a validator refused).
# Past it, the rest of the string is reported as one hit of the detector at hand: scrub masks it
# whole, so nothing unscanned is forwarded, and time stays bounded whatever the string holds.
MAX_CANDIDATES = 1024


@dataclass(frozen=True, slots=True)
class Hit:
    detector: str
    start: int
    end: int


# Every built-in detector needs one of these characters or one of these literals to match, so a
# string with none of them is clean without running any regex. Substring tests cost a fraction of
# a regex search on the short strings telemetry is made of.
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


_DONE = (-1, -1, False)  # no candidate left for this detector


def _char_len(lead: int) -> int:
    """Bytes of the UTF-8 (surrogatepass) character that starts with byte `lead`."""
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


class _Detector:
    """One detector and the step that finds its next candidate.

    A built-in with context rules matches one character of context on each side that has a rule
    (or the start/end of the text). The hit is told apart from its context without capture groups
    (which would make RE2 run its slower NFA over the whole match): every first character of a hit
    is one that may not precede it, so a match at 0 starting with such a character took the
    start-of-text branch; and a match ending before the end of the text consumed one character
    of context after; one that ends at the end is the hit itself if the hit pattern fullmatches
    it (the greedy path, as `re` chose), else it consumed a character of context."""

    __slots__ = ("name", "start", "mid", "core", "not_before", "gate", "validator")

    def __init__(self, name: str, start: Pattern, mid: Pattern, core: Pattern | None, not_before: Pattern | None,
                 gate: Callable[[str], bool] | None, validator: Callable[[str], bool] | None) -> None:
        self.name, self.start, self.mid, self.core, self.not_before = name, start, mid, core, not_before
        self.gate, self.validator = gate, validator

    def next(self, data: bytes, pos: int) -> tuple[int, int, bool]:
        """(start, end, valid) in bytes of the leftmost candidate whose hit starts at or after
        `pos`, as the `re` pattern with lookarounds would find it; _DONE when there is none."""
        n = len(data)
        while pos <= n:
            if self.not_before is None:
                spans = self.start.spans(data, pos)
            elif pos == 0:
                spans = self.start.spans(data, 0)
            else:  # the character before pos is context for the lookbehind: search from it
                spans = self.mid.spans(data, pos - _char_len_before(data, pos))
            if spans is None:
                return _DONE
            s, e = spans[0]
            if self.not_before is not None and not (s == 0 and self.not_before.fullmatch(data[:_char_len(data[0])])):
                s += _char_len(data[s])  # the character of context before
            if self.core is not None and (e < n or not self.core.fullmatch(data[s:e])):
                e -= _char_len_before(data, e)  # the character of context after
            hit = data[s:e].decode("utf-8", "surrogatepass") if self.gate or self.validator else ""
            if self.gate is not None and not self.gate(hit):
                pos = s + 1  # no match at s (ASCII there): the next position, as `re` would try
                continue
            return s, e, self.validator is None or self.validator(hit)
        return _DONE


def _char_len_before(data: bytes, pos: int) -> int:
    """Bytes of the character that ends at byte `pos`."""
    i = pos - 1
    while i > 0 and 0x80 <= data[i] < 0xC0:
        i -= 1
    return pos - i


class DetectorSet:
    """A compiled choice of detectors; `scan` returns every validated hit in a string."""

    def __init__(self, names: Iterable[str], extra: dict[str, str] | None = None) -> None:
        detectors: list[_Detector] = []
        start_patterns: list[str] = []
        for name in names:
            if name not in _BUILTINS:
                raise KeyError(name)
            b = _BUILTINS[name]
            start = Pattern(_with_context(b, True), remember=False)  # a hit never stays in memory
            detectors.append(_Detector(
                name, start, Pattern(_with_context(b, False), remember=False) if b.not_before else start,
                Pattern(b.core, remember=False) if b.not_after else None,
                Pattern(f"[{b.not_before}]", remember=False) if b.not_before else None,
                _GATES.get(name), _VALIDATORS.get(name)))
            start_patterns.append(start.pattern)
        for name, pattern in (extra or {}).items():
            p = Pattern(pattern, remember=False)  # PatternError (a ValueError) if RE2 refuses it
            detectors.append(_Detector(name, p, p, None, None, None, None))
            start_patterns.append(pattern)
        # A pack's own patterns can match anything, so they switch the prefilter off.
        self._prefilter = not extra
        # Values seen clean before (User-Agent, Content-Type, enum-like strings repeat on every
        # message). Only clean values are kept, so no value that tripped a detector stays in memory.
        self._clean: dict[str, None] = {}
        self.names = tuple(d.name for d in detectors)
        if len(set(self.names)) != len(self.names):
            raise PatternError("an extra detector has the name of a built-in one")
        # Order matters: specific shapes (keys, tokens, e-mail, URL) come before the host name
        # they contain, so the longer, more telling hit wins.
        self._detectors = detectors
        self._any = _set(start_patterns) if detectors else None

    def _candidates(self, data: bytes) -> list[int]:
        """Indices of the detectors with a candidate anywhere in data (one linear pass)."""
        return sorted(self._any.Match(data)) if self._any is not None else []

    def scan(self, text: str) -> list[Hit]:
        data = text.encode("utf-8", "surrogatepass")
        which = self._candidates(data)
        if not which:
            return []
        dets = [self._detectors[i] for i in which]
        cand: list[tuple[int, int, bool] | None] = [None] * len(dets)
        found: list[tuple[str, int, int]] = []
        pos, steps = 0, 0
        while True:
            best, best_i = _DONE, -1
            for i, d in enumerate(dets):
                c = cand[i]
                if c is _DONE:
                    continue
                if c is None or c[0] < pos:  # not searched yet, or overtaken by an earlier hit
                    c = cand[i] = d.next(data, pos)
                    if c is _DONE:
                        continue
                if best_i < 0 or c[0] < best[0]:
                    best, best_i = c, i
            if best_i < 0:
                break
            steps += 1
            if steps > MAX_CANDIDATES:
                found.append((dets[best_i].name, best[0], len(data)))
                break
            s, e, valid = best
            if valid:
                found.append((dets[best_i].name, s, e))
            pos = e
            if e == s:  # an empty hit (a pack's pattern may match ""): one character on, as `re` goes,
                if e == len(data):  # not one byte, which would leave pos inside a character
                    break
                pos += _char_len(data[e])
        return _char_offsets(text, data, found)

    def first(self, text: str) -> Hit | None:
        """Cheap check used on the clean path: most strings have no hit at all."""
        if self._any is None or text in self._clean:
            return None
        if self._prefilter and not _may_hit(text):
            return None
        if not self._any.Match(text.encode("utf-8", "surrogatepass")):
            if len(text) <= 256:
                if len(self._clean) >= 4096:
                    self._clean.clear()
                self._clean[text] = None
            return None
        hits = self.scan(text)
        return hits[0] if hits else None


def _set(patterns: list[str]) -> _re2.Set:
    options = _re2.RE2.Options()
    options.log_errors = False
    options.never_capture = True
    s = _re2.Set(_re2.RE2.Anchor.UNANCHORED, options)
    for p in patterns:
        if s.Add(p.encode("utf-8")) < 0:  # pragma: no cover - every pattern compiled alone
            raise PatternError("a detector pattern does not compile in a set")
    if not s.Compile():  # each pattern fits alone, not all together (a pack's large extra patterns)
        raise PatternError("the detector patterns are too large together")
    return s


def _char_offsets(text: str, data: bytes, found: list[tuple[str, int, int]]) -> list[Hit]:
    """Byte offsets into the UTF-8 text -> character offsets (one pass; hits are in order)."""
    if len(data) == len(text):  # ASCII: the same
        return [Hit(n, s, e) for n, s, e in found]
    hits, last_b, last_c = [], 0, 0
    for n, s, e in found:
        cs = last_c + len(data[last_b:s].decode("utf-8", "surrogatepass"))
        ce = cs + len(data[s:e].decode("utf-8", "surrogatepass"))
        hits.append(Hit(n, cs, ce))
        last_b, last_c = e, ce
    return hits


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
