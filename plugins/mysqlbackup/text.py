"""Small text helpers for messages people read: capped lists.

A message that lists what it found (tables, GTIDs, instances) must stay readable however much
was found: the first few items, then how many more.
"""
from __future__ import annotations

from typing import Iterable

LIST_LIMIT = 10


def capped(items: Iterable[object], limit: int = LIST_LIMIT, empty: str = "none") -> str:
    """``a, b, c and 7 more``: the first ``limit`` items, then the count of the rest."""
    shown: list[str] = []
    rest = 0
    for item in items:
        if len(shown) < limit:
            shown.append(str(item))
        else:
            rest += 1
    if not shown:
        return empty
    return ", ".join(shown) + (f" and {rest:,} more" if rest else "")
