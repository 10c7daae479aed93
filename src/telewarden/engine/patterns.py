"""Regular expressions that run in time linear in their input, whoever wrote them.

Python's `re` backtracks: a pattern such as `\\beyJ[A-Za-z0-9_-]{4,}\\.` takes ~30 s on a 256 KiB
`eyJ-eyJ-…` string. Every pattern telewarden runs on a message (built-in detectors, a pack's
`pattern`, `keep_tokens` and extra detectors) is compiled with RE2 instead, which guarantees one
search in time linear in the text. What that costs:

* No lookahead/lookbehind, backreferences, atomic groups, possessive quantifiers, `(?x)`, `(?#…)`,
  and counted repetition is limited to 1000: `compile_pattern` refuses them with a readable reason.
* `\\d`, `\\w`, `\\s`, `\\b` are ASCII-only (Python's are Unicode): an allow-list pattern
  (`pattern`, `keep_tokens`) is stricter, never looser, than it was under `re`. `$` means the end
  of the text only (Python's also matches before a final newline); `\\Z` is written `\\z`.

The `re2` module's own wrapper (`re2.compile(...).search(str)`) re-encodes the text and maps
offsets in Python on every call (~14 µs for a 20-character fullmatch, against ~1 µs for `re`), so
this calls the RE2 binding directly on UTF-8 bytes (~1.5 µs). Text is encoded with
`surrogatepass`: header values decoded with `surrogateescape` never make a match raise.
"""

from __future__ import annotations

from pathlib import Path

from re2 import _re2

__all__ = ["Pattern", "PatternError", "compile_any", "compile_pattern"]

_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_NO_MATCH = (-1, -1)


class PatternError(ValueError):
    """A pattern RE2 cannot run; the message says why in words, for the pack author."""


def _options(capture: bool) -> _re2.RE2.Options:
    o = _re2.RE2.Options()
    o.log_errors = False  # RE2 would print every refused pattern to stderr
    o.never_capture = not capture  # group spans cost time; `fullmatch`/`search` need none
    return o


_OPTIONS = {True: _options(True), False: _options(False)}

_REASONS = (  # (start of RE2's message, what to tell the pack author)
    ("invalid perl operator: (?<=", "lookbehind (?<=…) is not supported"),
    ("invalid perl operator: (?<!", "lookbehind (?<!…) is not supported"),
    ("invalid perl operator: (?=", "lookahead (?=…) is not supported"),
    ("invalid perl operator: (?!", "lookahead (?!…) is not supported"),
    ("invalid perl operator: (?P", "backreferences (?P=name) are not supported"),
    ("invalid perl operator: (?>", "atomic groups (?>…) are not supported"),
    ("invalid perl operator: (?#", "comments (?#…) are not supported"),
    ("invalid perl operator: (?x", "the verbose flag (?x) is not supported"),
    ("bad repetition operator: *+", "possessive quantifiers (*+, ++, ?+) are not supported"),
    ("bad repetition operator: ++", "possessive quantifiers (*+, ++, ?+) are not supported"),
    ("bad repetition operator: ?+", "possessive quantifiers (*+, ++, ?+) are not supported"),
    ("invalid repetition size", "counted repetition must be at most {1000} (nested counts multiply)"),
    ("invalid escape sequence: \\Z", "\\Z is written \\z (end of text)"),
    ("pattern too large", "the pattern is too large to compile"),
)


def _reason(message: str) -> str:
    if message.startswith("invalid escape sequence: \\") and message[26:27].isdigit():
        return "backreferences (\\1 …) are not supported"
    for start, reason in _REASONS:
        if message.startswith(start):
            return f"{reason}: patterns run on RE2, in time linear in the input ({message})"
    return f"not a valid RE2 regular expression: {message}"


def _compile(pattern: str, capture: bool) -> _re2.RE2:
    if not isinstance(pattern, str):
        raise PatternError("a pattern must be a string")
    try:
        encoded = pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise PatternError("a pattern must be valid Unicode text") from None
    rx = _re2.RE2(encoded, _OPTIONS[capture])
    if not rx.ok():
        raise PatternError(_reason(rx.error().decode("utf-8", "replace")))
    return rx


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


# A call into RE2 costs ~1.5 µs whatever the pattern (`re` fails a mismatch in ~0.2 µs), and
# telemetry repeats the same short values (versions, commands, content types) on every message:
# each pattern remembers up to _SEEN_MAX values of up to _SEEN_LEN characters that fullmatched.
# Only matches are kept: a value of the allowed form, never one a check refused.
_SEEN_MAX, _SEEN_LEN = 1024, 128


class Pattern:
    """A compiled pattern. `fullmatch` and `search` answer yes/no (truthy like re's Match);
    `spans` gives the group spans of the leftmost match from a byte position, for the detectors."""

    __slots__ = ("pattern", "_rx", "_cap", "_seen")

    def __init__(self, pattern: str, capture: bool = False, remember: bool = True) -> None:
        self.pattern = pattern
        # remember=False for patterns that match what must not be kept (the detectors' hits)
        self._seen: dict[str | bytes, None] | None = {} if remember else None
        self._rx = _compile(pattern, False)
        self._cap = _compile(pattern, True) if capture else None

    def __repr__(self) -> str:
        return f"Pattern({self.pattern!r})"

    def fullmatch(self, text: str | bytes) -> bool:
        seen = self._seen
        if seen is not None and text in seen:
            return True
        data = _bytes(text)
        ok = self._rx.Match(_ANCHOR_BOTH, data, 0, len(data))[0] != _NO_MATCH
        if ok and seen is not None and len(text) <= _SEEN_LEN:  # only values of the allowed form
            if len(seen) >= _SEEN_MAX:
                seen.clear()
            seen[text] = None
        return ok

    def search(self, text: str | bytes) -> bool:
        data = _bytes(text)
        return self._rx.Match(_UNANCHORED, data, 0, len(data))[0] != _NO_MATCH

    def spans(self, data: bytes, pos: int = 0) -> list[tuple[int, int]] | None:
        """Spans (byte offsets; (-1, -1) for a group that did not take part) of every group of
        the leftmost match starting at or after `pos`, group 0 first; None when there is none.
        Anchors and \\b see the whole of `data`, not just what follows `pos`."""
        rx = self._cap or self._rx
        found = rx.Match(_UNANCHORED, data, pos, len(data))
        return None if found[0] == _NO_MATCH else found


def compile_pattern(pattern: str) -> Pattern:
    """Compile `pattern` with RE2 (linear time), or raise PatternError saying why it cannot be."""
    return Pattern(pattern)


def compile_any(patterns: list[str]) -> Pattern:
    """One pattern that (full)matches what any of `patterns` does: a value set's patterns cost one
    RE2 match instead of one each (~1.5 µs against ~1.5 µs per pattern). Each is checked alone
    first, so a PatternError says which one (by position) and why."""
    for i, p in enumerate(patterns):
        try:
            Pattern(p)
        except PatternError as e:
            raise PatternError(f"pattern {i + 1}: {e}") from None
    return Pattern("|".join(f"(?:{p})" for p in patterns) if patterns else "[^\\x00-\\x{10FFFF}]")


# Repeated to a body's size, these made backtracking patterns go quadratic (or are near misses of
# a detector: a token never closed, a label chain without a known TLD, octets one too many).
# tests/test_linear_time.py and bench/engine.py run every detector and pack pattern on them.
ADVERSARIAL_UNITS: tuple[str, ...] = (
    "eyJ-", "eyJ", "eyJaaaa.eyJaaaa", "eyJ-AKIAIOSFODNN7EXAMPLE-", "a.", "1.", "0", ":", "::", "@", "a@",
    "x@a.io.", "a.b@", "-", "a", " ", "\t", "\u00e9", "=", "/", "\\", "%", "a.b.c.", "x.io.", "a.com-",
    "a" * 63 + ".", "a" * 61 + "-", "a1.b2-", "1.2.3.4 ", "999.1.1.1 ", "1.2.3.", "1::1 ", "a:", "1:2%a.",
    "1::1%", "jane@acme.com ", "http://", "http://a", "token ", "Bearer  ", "secret=", "secret", "/home/",
    "/home/a/", "C:\\Users\\", "ghp_a", "glpat-", "-----BEGIN A ", "AKIA", "hasura ", "v1.", "TABLE_NAME|",
)


def pack_patterns(rules_dir: Path) -> list[str]:
    """Every `pattern` (checks, value sets), `keep_tokens` and extra detector in the packs and
    value files under `rules_dir`: what the linear-time test and the engine bench feed
    adversarial inputs to."""
    import yaml  # noqa: PLC0415 (only the test and the bench need it)

    found: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k in ("pattern", "keep_tokens") and isinstance(x, str):
                    found.append(x)
                elif k == "extra" and isinstance(x, dict):
                    found.extend(p for p in x.values() if isinstance(p, str))
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for f in sorted(rules_dir.rglob("*.y*ml")):
        walk(yaml.safe_load(f.read_text()))
    return sorted(set(found))
