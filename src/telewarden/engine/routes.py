"""Route templates: is a URL path a known route whose variable segments are placeholders?

Template syntax, one segment per `/`:
  `data`                   a literal segment
  `{TABLE_NAME}`           a variable segment; compliant only when it *is* the placeholder text
  `{SOURCE_NAME|default}`  the same, also accepting the listed literal values
  `(browse|modify)`        one of a closed set of literal values

Precedence (tested edge by edge in tests/test_routes.py):
  1. a template that matches exactly (every variable segment already a placeholder) means
     compliant, whatever other templates could also match;
  2. otherwise the template that matches once names are replaced by placeholders, preferring the
     one with the most literal segments, then the earlier one in the pack;
  3. otherwise the longest leading part of the path that (1) or (2) matches: the rest is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VAR = re.compile(r"^\{([A-Za-z_$][A-Za-z0-9_$]*)((?:\|[^|{}()/]+)*)\}$")
_CHOICE = re.compile(r"^\(([^()/]+)\)$")


class RouteError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Segment:
    literal: str | None = None  # exact text
    choices: frozenset[str] | None = None  # one of these
    placeholder: str | None = None  # variable: compliant only as this text (or also_allowed)
    also_allowed: frozenset[str] = frozenset()

    def exact(self, text: str) -> bool:
        if self.literal is not None:
            return text == self.literal
        if self.choices is not None:
            return text in self.choices
        return text == self.placeholder or text in self.also_allowed

    def fixed(self, text: str) -> bool:
        """Does a non-variable segment match (variables match anything non-empty)."""
        if self.placeholder is not None:
            return text != ""
        return self.exact(text)


@dataclass(frozen=True, slots=True)
class _Template:
    text: str
    segments: tuple[_Segment, ...]
    literal_count: int
    order: int


@dataclass(frozen=True, slots=True)
class RouteResult:
    ok: bool
    repaired: str | None = None  # the compliant form scrub would send
    template: str | None = None  # the template it was judged against
    reason: str = ""


def _split(path: str) -> list[str]:
    if path == "/":
        return []
    if path.endswith("/"):
        path = path[:-1]
    return path.split("/")[1:]


class RouteSet:
    def __init__(self, name: str, templates: list[str]) -> None:
        self.name = name
        self._by_len: dict[int, list[_Template]] = {}
        self._exact: set[str] = set()
        for order, text in enumerate(templates):
            t = self._compile(text, order)
            self._by_len.setdefault(len(t.segments), []).append(t)
            if t.literal_count == len(t.segments):
                self._exact.add("/" + "/".join(s.literal for s in t.segments if s.literal is not None))
        for group in self._by_len.values():
            group.sort(key=lambda t: (-t.literal_count, t.order))

    @staticmethod
    def _compile(text: str, order: int) -> _Template:
        if not text.startswith("/"):
            raise RouteError(f"route template {text!r} must start with '/'")
        segments = []
        for raw in _split(text):
            if m := _VAR.match(raw):
                allowed = frozenset(v for v in m.group(2).split("|") if v)
                segments.append(_Segment(placeholder=m.group(1), also_allowed=allowed))
            elif m := _CHOICE.match(raw):
                segments.append(_Segment(choices=frozenset(m.group(1).split("|"))))
            elif raw and not any(c in raw for c in "{}()|"):
                segments.append(_Segment(literal=raw))
            else:
                raise RouteError(f"route template {text!r}: segment {raw!r} is not a literal, {{NAME}} or (a|b)")
        literal_count = sum(1 for s in segments if s.placeholder is None)
        return _Template(text, tuple(segments), literal_count, order)

    def check(self, url: str) -> RouteResult:
        if url in self._exact:
            return RouteResult(True, template=url)
        path, cut = url, False
        for sep in ("?", "#"):
            if sep in path:
                path, cut = path.split(sep, 1)[0], True
        if not path.startswith("/"):
            return RouteResult(False, "/", "/", "not an absolute path")
        segs = _split(path)
        found = self._match(segs)
        if found is not None:
            template, repaired, names_replaced = found
            if not names_replaced and not cut:
                return RouteResult(True, template=template.text)
            reason = "names in variable segments" if names_replaced else "query or fragment"
            return RouteResult(False, repaired, template.text, reason)
        for k in range(len(segs) - 1, -1, -1):
            found = self._match(segs[:k])
            if found is not None:
                return RouteResult(False, found[1], found[0].text, "unknown route")
        return RouteResult(False, "/", None, "unknown route")

    def _match(self, segs: list[str]) -> tuple[_Template, str, bool] | None:
        candidates = self._by_len.get(len(segs), ())
        for t in candidates:
            if all(s.exact(v) for s, v in zip(t.segments, segs)):
                return t, "/" + "/".join(segs), False
        for t in candidates:  # already sorted: most literal segments first, then pack order
            if all(s.fixed(v) for s, v in zip(t.segments, segs)):
                out = [v if s.exact(v) else s.placeholder for s, v in zip(t.segments, segs)]
                return t, "/" + "/".join(out), True  # type: ignore[arg-type]
        return None
