"""One record per judged message, and its human-readable block.

The same record feeds the JSON Lines audit log, `check --format json`, the JUnit report and
the human views (audit.log, the check report, pytest assertion messages), so every view says
the same thing about a message.

A record never repeats what the sender chose (engine.py shows unknown keys and header names by
digest; here a Content-Encoding the sender made up is not echoed either). The human view escapes
every control character and every character that could reorder or break a line (bidi controls,
U+2028/2029, NEL, zero-width and tag characters), so one record is always one header line plus
indented lines, and no field can forge a line that reads as another record.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from typing import Any

from ..engine.model import Decision, Exchange, Verdict, shown_method


def record(verdict: Verdict, ex: Exchange, source: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": ex.id,
        "time": _iso(ex.timestamp),
        "decision": verdict.decision.value,
        "mode": verdict.mode.value,
        "pack": verdict.pack,
        "endpoint": verdict.endpoint,
        "kind": verdict.kind,
        "transport": ex.transport.value,
        "method": shown_method(ex.method),
        "destination": _destination(verdict, ex),
        "findings": [f.to_dict() for f in verdict.findings],
        "size_in": verdict.size_in,
        "size_out": verdict.size_out,
        "micros": verdict.micros,
    }
    if source:
        rec["source"] = source
    if verdict.error:
        rec["error"] = _safe_text(verdict.error)
    if verdict.sunk:
        rec["sunk"] = True
    for f in rec["findings"]:
        if f["rule"].startswith("telewarden.body."):
            f["message"] = _safe_text(f["message"])
    return rec


# Content-Encoding tokens of the HTTP registry: these may be named; anything else is the sender's.
KNOWN_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "compress", "x-compress", "identity"})
_ENCODING_IN_TEXT = re.compile(r"(Content-Encoding )(.*)$", re.S)


def shown_encoding(value: str) -> str:
    """A Content-Encoding header as a record may show it: registered tokens only."""
    tokens = [t.strip().lower() for t in value.split(",")]
    if tokens and all(t in KNOWN_ENCODINGS for t in tokens):
        return ", ".join(tokens)
    return f"(unregistered value, {len(value)} chars)"


_SHOWN_ENCODING = re.compile(r"\(unregistered value, \d+ chars\)|[a-z0-9-]+(?:, [a-z0-9-]+)*")


def _safe_text(text: str) -> str:
    """Body problems are written by the adapters; one of them names the Content-Encoding the
    sender gave, which could be anything (`Content-Encoding: acme_customers`). A record keeps what
    an adapter wrote through shown_encoding (registered tokens, or the unregistered value's
    length) and ends there: a decoder's reason after it (`: not gzip data`) is left out (the
    finding's rule already carries the decoder's code); anything else after "Content-Encoding "
    is replaced by what shown_encoding makes of it."""
    m = _ENCODING_IN_TEXT.search(text)
    if m is None:
        return text
    value = m.group(2)
    shown = _SHOWN_ENCODING.match(value)
    if shown is not None and (shown.end() == len(value) or value.startswith(": ", shown.end())) and (
            value[0] == "(" or all(t in KNOWN_ENCODINGS for t in shown.group().split(", "))):
        return text[: m.start(2) + shown.end()]
    return text[: m.start(2)] + shown_encoding(value)


# Control characters (C0, DEL, C1 incl. NEL), soft hyphen, Arabic letter mark, Mongolian vowel
# separator, zero-width and bidi controls (U+200B-200F, U+202A-202E, U+2066-2069), line and
# paragraph separators, word joiner and invisible operators, BOM, interlinear annotations, tag
# characters, lone surrogates; and the backslash itself, so that an escape is unambiguous.
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                     r"\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f]")


def _escape_char(m: re.Match) -> str:
    c = m.group()
    if c == "\\":
        return "\\\\"
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def escape(text: Any) -> str:
    """Text as a human log may hold it: one line, no control or direction-changing characters."""
    text = str(text)
    return _UNSAFE.sub(_escape_char, text) if _UNSAFE.search(text) else text


def _destination(verdict: Verdict, ex: Exchange) -> str:
    """scheme://name:port/path, naming the host that matched the pack rather than an address.
    A path that is not one of the pack's endpoints is the sender's to choose: it could carry
    anything, so it is not written (the finding holds its digest)."""
    host = verdict.host or (ex.hosts[0] if ex.hosts else "?")
    path = ex.path if verdict.endpoint is not None else "/(unknown path)"
    return f"{ex.scheme}://{host}:{ex.port}{path}"


_ISO_SECOND: list = [None, ""]  # the last whole second formatted: messages come many to a second


def _iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds (cheaper than datetime on the per-message path)."""
    ts = ts or 0.0
    second = int(ts // 1)
    if _ISO_SECOND[0] != second:
        _ISO_SECOND[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
        _ISO_SECOND[0] = second
    return f"{_ISO_SECOND[1]}.{int(ts * 1000) % 1000:03d}Z"


def _label(rec: dict[str, Any]) -> str:
    decision = rec["decision"].upper()
    if rec["decision"] == Decision.FORWARDED and any("waived" not in f for f in rec["findings"]):
        decision = "FORWARDED!"  # audit mode: sent although it broke a rule
    return decision


def block(rec: dict[str, Any], values: list[tuple[str | None, Any]] | None = None) -> str:
    """A short, aligned, greppable block: header line, then two or three lines per finding.

    Every field is escaped (`escape`): the header line is the only line that starts in column 0,
    and no field can add a line. `values` (check --show-values only, never for a trail): per
    finding, (raw pointer or None, raw value), printed under the finding and marked as raw."""
    text, nlines = _block(rec, values, str)  # the usual case: nothing to escape, checked once
    if text.count("\n") == nlines - 1 and not _UNSAFE.search(text.replace("\n", " ")):
        return text
    return _block(rec, values, escape)[0]


def _block(rec: dict[str, Any], values: list[tuple[str | None, Any]] | None, e) -> tuple[str, int]:
    what = e(f"{rec.get('pack') or '-'}/{rec.get('kind') or rec.get('endpoint') or '-'}")
    head = f"{e(rec['time'])}  {e(_label(rec)):<10} {what:<26} {e(rec['method']):<4} {e(rec['destination'])}"
    if rec.get("source"):
        head += f"  [{e(rec['source'])}]"
    if rec.get("sunk"):
        head += "  (sink: answered by telewarden, not sent)"
    lines = [head]
    if rec.get("error") and not rec["findings"]:
        lines.append(f"    error: {e(rec['error'])}")
    for i, f in enumerate(rec["findings"]):
        lines.append(f"    {e(f['rule']):<36} {e(f['pointer'] or '(message)'):<34} {e(f['severity'])}")
        lines.append(f"        {e(f['message'])}")
        lines.extend(_promise_lines(e(f["promise"])))
        tail = []
        if f.get("preview"):
            tail.append(f"value: {e(f['preview'])}" + (f" ({e(f['digest'])})" if f.get("digest") else ""))
        tail.append(f"scrub: {e(f.get('repair') or 'cannot repair: blocks in scrub mode')}")
        lines.append("        " + "; ".join(tail))
        if f.get("waived"):
            lines.append(f"        waived: {e(f['waived'])}")
        if values is not None and i < len(values):
            raw_pointer, value = values[i]
            if raw_pointer is not None and raw_pointer != f["pointer"]:
                lines.append(f"        RAW pointer: {e(raw_pointer)}")
            if f.get("preview"):
                lines.append(f"        RAW value: {raw_value(value)}")
    if rec.get("error") and rec["findings"] and rec["decision"] == Decision.BLOCKED:
        lines.append(f"    reason: {e(rec['error'])}")
    return "\n".join(lines), len(lines)


_PROMISE_LINES: dict[str, list[str]] = {}


def _promise_lines(promise: str) -> list[str]:
    """The wrapped promise lines of a finding: a pack has a few promises, wrapped once each."""
    lines = _PROMISE_LINES.get(promise)
    if lines is None:
        lines = textwrap.wrap(f'promise: "{promise}"', 96, initial_indent=" " * 8, subsequent_indent=" " * 17)
        if len(_PROMISE_LINES) >= 256:
            _PROMISE_LINES.clear()
        _PROMISE_LINES[promise] = lines
    return lines


RAW_VALUES_BANNER = ("WARNING: --show-values: this report contains RAW VALUES from the messages (lines marked RAW): "
                     "what leaked, for a local reviewer. Do not attach it to a ticket, a CI log or an audit trail.")


def raw_value(value: Any, limit: int = 2000) -> str:
    """A raw value for a local report (check --show-values): JSON, escaped, cut at `limit` chars."""
    if isinstance(value, str):
        text = f'"{value}"'  # as written, then escaped once (no JSON escapes to escape again)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    more = len(text) - limit
    return escape(text[:limit]) + (f" ... ({more} more chars)" if more > 0 else "")
