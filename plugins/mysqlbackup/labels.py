"""Backup labels: ``YYYYMMDD-HHMMSSF`` (UTC), sortable as plain text.

A full backup is ``20240102-030405F``. An incremental backup is labelled
``<full label>_YYYYMMDD-HHMMSSI``: it names the full backup it is based on and
sorts right after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

Kind = Literal["full", "incremental"]

FULL: Kind = "full"
INCREMENTAL: Kind = "incremental"
FORM = "YYYYMMDD-HHMMSSF (full) or YYYYMMDD-HHMMSSF_YYYYMMDD-HHMMSSI (incremental), in UTC"

_SUFFIX: dict[str, str] = {FULL: "F", INCREMENTAL: "I"}
_STAMP = "%Y%m%d-%H%M%S"
_LABEL_RE = re.compile(r"(?P<base>(?P<full>\d{8}-\d{6})F)(?:_(?P<incr>\d{8}-\d{6})I)?")


@dataclass(frozen=True)
class Label:
    """A parsed label: ``when`` is the backup's UTC start; ``base`` the full label of an incremental."""

    kind: Kind
    when: datetime
    base: str | None = None

    @property
    def text(self) -> str:
        """The label as written on disk and in the catalog."""
        prefix = f"{self.base}_" if self.base else ""
        return f"{prefix}{_stamp(self.when)}{_SUFFIX[self.kind]}"

    def __str__(self) -> str:
        return self.text


def _stamp(when: datetime) -> str:
    # Formatted by hand: strftime('%Y') does not zero-pad years < 1000 on every libc.
    return (
        f"{when.year:04d}{when.month:02d}{when.day:02d}-"
        f"{when.hour:02d}{when.minute:02d}{when.second:02d}"
    )


def _bad(value: object, why: str) -> ValueError:
    return ValueError(f"invalid backup label {value!r}: {why}; expected {FORM}")


def new_label(kind: Kind, when: datetime, base: str | None = None) -> str:
    """Return the label of a backup of ``kind`` started at ``when`` (tz-aware; converted to UTC).

    An incremental needs ``base``, the label of the full backup it builds on.
    Sub-second precision is dropped.
    """
    if kind not in _SUFFIX:
        raise ValueError(f"unknown backup kind {kind!r}; expected one of: {', '.join(_SUFFIX)}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"naive datetime {when.isoformat()!r}: a label needs an aware datetime, "
            "e.g. datetime.now(timezone.utc)"
        )
    utc = when.astimezone(timezone.utc).replace(microsecond=0)
    if kind == FULL:
        if base is not None:
            raise ValueError(f"a full backup has no base, got base={base!r}")
        return Label(FULL, utc).text
    if base is None:
        raise ValueError("an incremental backup needs base=<label of its full backup>")
    parent = parse_label(base)
    if parent.kind != FULL:
        raise ValueError(f"base {base!r} is not a full backup label; expected YYYYMMDD-HHMMSSF")
    if utc < parent.when:
        raise ValueError(f"incremental time {utc.isoformat()} is before its base {base!r}")
    return Label(INCREMENTAL, utc, base).text


def _parse_stamp(label: str, stamp: str) -> datetime:
    try:
        return datetime.strptime(stamp, _STAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        raise _bad(label, f"{stamp!r} is not a real date and time") from None


def parse_label(s: str) -> Label:
    """Parse a label; raise ValueError naming the value and the expected form."""
    if not isinstance(s, str):
        raise _bad(s, f"not a string but {type(s).__name__}")
    m = _LABEL_RE.fullmatch(s)
    if m is None:
        raise _bad(s, "wrong form")
    full_when = _parse_stamp(s, m["full"])
    if m["incr"] is None:
        return Label(FULL, full_when)
    when = _parse_stamp(s, m["incr"])
    if when < full_when:
        raise _bad(s, "the incremental time is before its full backup")
    return Label(INCREMENTAL, when, m["base"])


def is_label(s: object) -> bool:
    """True if ``s`` is a well-formed label."""
    try:
        parse_label(s)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True
