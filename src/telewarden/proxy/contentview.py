"""A `telewarden` content view for mitmweb/mitmproxy: a telemetry message's body with its findings
beside it, and the body scrub mode forwards, for comparison.

Registered by the addon (`contentview.register(lambda: self.engine, lambda: self.mode)` in
`Telewarden.load`) so it judges with the proxy's own packs, key and waivers; mitmproxy 12's
contentview API (`mitmproxy.contentviews.Contentview`, `contentviews.add`).

- The view re-judges the message now (what the body holds, in scrub mode so that the repair can
  be shown) and shows what the proxy decided live (`flow.metadata["telewarden"]`, set by the addon,
  kept in saved flows), so it works for flows judged live and for flows loaded from a file.
- A request the live proxy scrubbed holds the repaired body; the original is shown when the flow
  has mitmproxy's backup of it (`flow.backup()` before the repair, `flow.revert()` restores it),
  else the view says the original was not kept.
- Each line holding a finding has a marker line right above it, at its indentation
  (`# >> [1] rule (severity)`), so it shows without scrolling sideways; the findings are listed
  above the body with the same numbers. This is the operator's own proxy UI, which shows the raw body anyway: values are not
  hidden here (the audit trail still never holds them).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import textwrap
from collections.abc import Callable
from typing import Any

from mitmproxy import contentviews, http
from mitmproxy.contentviews import Contentview, Metadata

from ..audit import render
from ..engine import strictjson
from ..engine.judge import Engine
from ..engine.model import Decision, Mode, Verdict

NAME = "telewarden"


class TelewardenContentview(Contentview):
    def __init__(self, engine: Callable[[], Engine | None] | None = None,
                 mode: Callable[[], Mode | str | None] | None = None) -> None:
        self._engine_of = engine or (lambda: None)
        self._mode_of = mode or (lambda: None)
        self._own: Engine | None = None

    @property
    def name(self) -> str:
        return NAME

    @property
    def syntax_highlight(self) -> str:
        return "yaml"  # JSON is YAML, and the findings are YAML comments

    def engine(self) -> Engine:
        live = self._engine_of()
        if live is not None:
            return live
        if self._own is None:  # not inside the addon: the bundled packs, a key for this process only
            from ..engine.packs import load_packs  # noqa: PLC0415

            self._own = Engine(load_packs([]), digest_key=os.urandom(32))
        return self._own

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        """First choice for what a client sent to a claimed destination; otherwise never chosen
        automatically (it can still be picked by name)."""
        flow = metadata.flow
        if not isinstance(flow, http.HTTPFlow):
            return -1
        if metadata.websocket_message is not None and not metadata.websocket_message.from_client:
            return -1
        if metadata.http_message is not None and metadata.http_message is not flow.request:
            return -1
        if isinstance(flow.metadata.get("telewarden"), dict):
            return 2
        try:
            from .exchange import candidate_hosts  # noqa: PLC0415

            return 2 if self.engine().claim(candidate_hosts(flow)) is not None else -1
        except Exception:  # noqa: BLE001 - never break the UI
            return -1

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        flow = metadata.flow
        if not isinstance(flow, http.HTTPFlow):
            return "# telewarden judges HTTP requests and WebSocket messages only\n" + _text(data)
        if metadata.websocket_message is not None:
            msg = metadata.websocket_message
            if not msg.from_client:
                return "# telewarden: a server-to-client WebSocket message (telewarden judges what the client sends)\n" + _text(data)
            return self._show(flow, msg, data)
        if metadata.http_message is not None and metadata.http_message is not flow.request:
            return "# telewarden: the server's response (telewarden judges what the client sends)\n" + _text(data)
        return self._show(flow, None, data)

    # -- the view ---------------------------------------------------------------------------------

    def _show(self, flow: http.HTTPFlow, msg: Any, data: bytes) -> str:
        from .exchange import http_exchange, websocket_exchange  # noqa: PLC0415

        engine = self.engine()
        local = copy.copy(engine)  # this view's own copy: raw pointers to place the findings
        local.keep_values = True
        original, note = flow, None
        if msg is None and flow.modified() and isinstance(flow._backup, dict) and flow._backup.get("request"):
            try:  # the request before the live proxy (or a user) changed it
                original = flow.copy()
                original.request = http.Request.from_state(flow._backup["request"])
                note = "the body as the client sent it (mitmproxy's backup of the flow); the flow now holds the repaired one"
            except Exception:  # noqa: BLE001
                original = flow
        if msg is None:
            ex = http_exchange(original, engine.limits.max_body)
        else:
            ex = websocket_exchange(flow, msg.content if msg.content is not None else data, msg.is_text, msg.timestamp)
        verdict = local.inspect(ex, Mode.SCRUB)
        out = [self._head(flow, verdict, ex)]
        if verdict.decision is Decision.PASSED_THROUGH:
            out.append("# no rule pack claims this destination: passed through unjudged")
            out.append(_text(ex.body))
            return "\n".join(out)
        live = flow.metadata.get("telewarden")
        changed_live = isinstance(live, dict) and live.get("counts", {}).get("scrubbed") and original is flow
        if note:
            out.append(f"# {note}")
        elif changed_live and msg is None:
            out.append("# the live proxy SCRUBBED this flow: what it holds is the repaired content (the original was "
                       "not kept); findings below are of the repaired content")
        elif changed_live:
            out.append(f"# the live proxy scrubbed {render.escape(live['counts']['scrubbed'])} message(s) of this "
                       "flow: a scrubbed message holds the repaired content (the original was not kept)")
        out.extend(_findings(verdict))
        query_message = _is_query_message(engine, verdict)
        lines, where = _pretty(_query_json(ex.query) if query_message else ex.body)
        marks: dict[int, list[str]] = {}
        for i, f in enumerate(verdict.findings, 1):
            line = where.get(f.raw_pointer or f.pointer)
            if line is None and f.pointer in ("", "body"):
                line = 0 if lines else None
            if line is not None:
                marks.setdefault(line, []).append(f"[{i}] {render.escape(f.rule)} ({render.escape(f.severity)})")
        title = ("query string as JSON (this endpoint's message)" if query_message else "request body") if msg is None \
            else "WebSocket message"
        out.append(f"# --- {title} as judged{' (a line with findings follows its # >> marker)' if marks else ''} ---")
        for n, text in enumerate(lines):
            if n in marks:
                indent = text[:len(text) - len(text.lstrip(" "))]
                out.append(f"{indent}# >> {', '.join(marks[n])}")
            out.append(text)
        out.extend(_after(verdict, lines))
        return "\n".join(out) + "\n"

    def _head(self, flow: http.HTTPFlow, verdict: Verdict, ex: Any) -> str:
        e = render.escape
        what = f"{verdict.pack or '-'}/{verdict.kind or verdict.endpoint or '-'}"
        rec = render.record(verdict, ex)
        label = {"scrubbed": "SCRUB WOULD REPAIR", "blocked": "SCRUB WOULD BLOCK"}.get(verdict.decision.value, "CLEAN")
        if verdict.decision is Decision.FORWARDED and verdict.active_findings:
            label = "FINDINGS"
        lines = [f"# telewarden: {label}  {e(what)}", f"#   {e(rec['method'])} {e(rec['destination'])}",
                 "# judged now with this proxy's packs, in scrub mode (to show the repair)"]
        live = flow.metadata.get("telewarden")
        if isinstance(live, dict) and live.get("decision"):
            counts = live.get("counts") if isinstance(live.get("counts"), dict) else {}
            rules = live.get("rules") if isinstance(live.get("rules"), list) else []
            lines.append(f"# judged live: {e(str(live.get('decision')).upper())} ("
                         + ", ".join(f"{e(n)} {e(d)}" for d, n in sorted(counts.items()))
                         + ")" + (f" rules: {e(' '.join(map(str, rules)))}" if rules else ""))
        mode = self._mode_of()
        if mode is not None:
            lines.append(f"# this proxy's mode: {e(str(getattr(mode, 'value', mode)))}")
        return "\n".join(lines)


def _text(data: bytes) -> str:
    return render.escape(data.decode("utf-8", "backslashreplace")) if data else "(empty)"


def _findings(verdict: Verdict) -> list[str]:
    e = render.escape
    if not verdict.findings:
        return ["# no findings: this message keeps the pack's rules"]
    out = [f"# findings ({len(verdict.findings)}):"]
    for i, f in enumerate(verdict.findings, 1):
        where = f.pointer or "(message)"
        if f.raw_pointer and f.raw_pointer != f.pointer:
            where += f"  (raw: {f.raw_pointer})"
        out.append(f"#  [{i}] {e(f.rule)}  {e(where)}  {e(f.severity)}" + (f"  WAIVED: {e(f.waived)}" if f.waived else ""))
        tail = [f"value: {e(f.preview)}" + (f" ({e(f.digest)})" if f.digest else "")] if f.preview else []
        tail.append(f"scrub: {e(f.repair or 'cannot repair: blocks in scrub mode')}")
        for text in (e(f.message), f'promise: "{e(f.promise)}"', "; ".join(tail)):
            out.extend(textwrap.wrap(text, 78, initial_indent="#      ", subsequent_indent="#        ",
                                     break_on_hyphens=False, break_long_words=False))
    return out


def _after(verdict: Verdict, before: list[str]) -> list[str]:
    rep = verdict.repaired
    if verdict.decision is Decision.BLOCKED:
        return ["# --- after scrub: BLOCKED, nothing is forwarded ---",
                f"# {render.escape(verdict.error or 'a finding that cannot be repaired')}"]
    if verdict.decision is not Decision.SCRUBBED or rep is None:
        return ["# --- after scrub: forwarded unchanged ---"]
    out = ["# --- after scrub: what scrub mode forwards ---"]
    if rep.drop_headers:
        out.append(f"# headers removed: {render.escape(', '.join(rep.drop_headers))}")
    if rep.clear_query:
        out.append("# query string removed")
    if rep.host:
        out.append(f"# Host set to {render.escape(rep.host)}")
    new = _query_json(rep.query) if getattr(rep, "query", None) is not None else rep.body
    if new is None:
        out.append("# body unchanged")
        return out
    after, _ = _pretty(new)
    out.extend(after)
    diff = list(difflib.unified_diff(before, after, "as judged", "after scrub", n=0, lineterm=""))
    if diff:
        out.append("# --- changes ---")
        out.extend("# " + d for d in diff[2:])
    return out


def _is_query_message(engine: Engine, verdict: Verdict) -> bool:
    """Whether the endpoint's message is its query string (`message: query`)."""
    pack = next((p for p in engine.packs if p.id == verdict.pack), None)
    endpoint = next((e for e in pack.endpoints if e.id == verdict.endpoint), None) if pack is not None else None
    return getattr(endpoint, "message", None) == "query"


def _query_json(query: str) -> bytes:
    """A query-string message as the JSON object the engine judges (its pointers then place the
    findings); the raw query when it does not parse."""
    from ..engine.judge import parse_query  # noqa: PLC0415

    try:
        return json.dumps(parse_query(query)).encode()
    except Exception:  # noqa: BLE001 - the engine reports it
        return query.encode("utf-8", "surrogatepass")


def _pretty(body: bytes) -> tuple[list[str], dict[str, int]]:
    """Pretty JSON lines and, per raw JSON pointer, the line its key (or item) starts on."""
    try:
        doc = strictjson.loads(body, max_bytes=1 << 24, max_depth=256)
    except Exception:  # noqa: BLE001 - not JSON (or not strict JSON): shown as text
        return (_text(body).split("\n") if body else ["(empty body)"]), {}
    lines: list[str] = []
    where: dict[str, int] = {}

    def emit(value: Any, indent: int, prefix: str, pointer: str, comma: str) -> None:
        pad = "    " * indent
        where.setdefault(pointer, len(lines))
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{prefix}{{")
            items = list(value.items())
            for j, (k, v) in enumerate(items):
                key = json.dumps(k, ensure_ascii=False)
                ptr = pointer + "/" + str(k).replace("~", "~0").replace("/", "~1")
                emit(v, indent + 1, f"{key}: ", ptr, "," if j < len(items) - 1 else "")
            lines.append(f"{pad}}}{comma}")
        elif isinstance(value, list) and value:
            lines.append(f"{pad}{prefix}[")
            for j, v in enumerate(value):
                emit(v, indent + 1, "", f"{pointer}/{j}", "," if j < len(value) - 1 else "")
            lines.append(f"{pad}]{comma}")
        else:
            lines.append(f"{pad}{prefix}{json.dumps(value, ensure_ascii=False)}{comma}")

    emit(doc, 0, "", "", "")
    return [_json_safe(x) for x in lines], where


def _json_safe(line: str) -> str:
    """A JSON line with every control, bidi or invisible character as its JSON escape (\\uXXXX),
    so it still reads as the same JSON and nothing can reorder or hide text."""
    if not render._UNSAFE.search(line.replace("\\", "")):
        return line
    out = []
    for c in line:
        if c != "\\" and render._UNSAFE.fullmatch(c):
            n = ord(c)
            if n > 0xFFFF:
                n -= 0x10000
                out.append(f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}")
            else:
                out.append(f"\\u{n:04x}")
        else:
            out.append(c)
    return "".join(out)


_registered: TelewardenContentview | None = None


def register(engine: Callable[[], Engine | None] | None = None,
             mode: Callable[[], Mode | str | None] | None = None) -> TelewardenContentview:
    """Add the `telewarden` view to mitmproxy (replacing an earlier one, e.g. on script reload).
    `engine`/`mode`: how to get the proxy's current engine and mode (the addon passes its own)."""
    global _registered
    view = TelewardenContentview(engine, mode)
    contentviews.add(view)
    _registered = view
    return view
