"""Every place in a nested document (a flow's serialised state, a HAR), for mutation tests that
change one value at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def paths(o: Any, pre: tuple = (), items: int | None = None) -> Iterator[tuple]:
    """Every path into `o`, its root first; `items` caps how many entries of each list are entered."""
    yield pre
    if isinstance(o, dict):
        for k, v in o.items():
            yield from paths(v, (*pre, k), items)
    elif isinstance(o, list):
        for i, v in enumerate(o if items is None else o[:items]):
            yield from paths(v, (*pre, i), items)


def at(o: Any, path: tuple) -> Any:
    for key in path:
        o = o[key]
    return o
