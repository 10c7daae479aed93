"""Destination names and request targets in canonical form, shared by every adapter.

What is judged is the canonical form; adapters forward that form (or refuse), never the raw bytes
beside it. Pure functions: no mitmproxy.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote


def normalize_host(host: str | None) -> str | None:
    """Case, trailing dot, brackets and an explicit port never change which pack a name hits."""
    if not host:
        return None
    h = host.strip().lower()
    if h.startswith("["):  # [::1]:443
        h = h[1:].split("]", 1)[0]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    h = h.rstrip(".")
    return h or None


def normalize_path(raw: str) -> tuple[str, str]:
    """Split off the query and canonicalise the path: percent-decoding, doubled slashes, dot
    segments, a trailing slash and case, so `/V1//%68ttp/` is judged as `/v1/http`."""
    path, _, query = raw.partition("?")
    path = unquote(path.split("#", 1)[0], errors="replace")
    path = posixpath.normpath("/" + path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path.lower(), query


def target_problem(raw: str, canonical_path: str) -> str | None:
    """Why a request target is not the canonical one it was judged as, or None.

    A server may read `/v1/<name>/../http` or an encoded segment differently from how it was
    judged, and a fragment never belongs on the wire: such a target is a finding, and scrub
    forwards the canonical form instead."""
    if "#" in raw:
        return "fragment"
    if raw.partition("?")[0] != canonical_path:
        return "non-canonical"
    return None
