"""Verify what is stored: which backups to re-read today so that each is re-read within a window.

A backup is verified when it is taken (sha256 re-read, extract, prepare). What is stored can
still rot afterwards: a flipped bit, a truncated file, a file removed by hand. Like pgBackRest's
``verify``, ``mysql_backup_verify_stored`` re-reads stored artifacts from disk and compares their
sha256 with the manifest's. Re-reading everything every day would saturate storage hosts, so
each run takes a share: every backup not re-read (or, for a new one, not verified) within
``window_days - 1`` days, and at least ``ceil(usable / window_days)`` of the oldest, so that
with one run a day each stored backup is re-read at least once per window. The read itself is
paced (``storage.py check --max-mib-per-s``).

Pure: no Airflow, no I/O; the operator feeds it catalog rows.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Iterable

from mysqlbackup.manifest import parse_utc


def _naive(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_utc(value)
    return value.replace(tzinfo=None) if value.tzinfo else value


def plan_stored_checks(backups: Iterable[dict], last_checked: dict[tuple[str, str], datetime],
                       window_days: int, now: datetime) -> list[dict]:
    """The usable backups to re-read in this run, oldest check first.

    ``backups``: catalog rows (``instance``, ``label``, ``status``, ``finished_at``);
    ``last_checked``: (instance, label) -> the last re-read that found it intact.
    """
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    now = _naive(now)
    rows = [b for b in backups if b.get("status") == "usable"]
    if not rows:
        return []

    def checked(b: dict) -> datetime:
        seen = [t for t in (_naive(last_checked.get((b["instance"], b["label"]))), _naive(b.get("finished_at")))
                if t is not None]
        return max(seen) if seen else datetime.min

    rows.sort(key=lambda b: (checked(b), b["instance"], b["label"]))
    due = now - timedelta(days=window_days - 1)
    overdue = [b for b in rows if checked(b) <= due]
    quota = math.ceil(len(rows) / window_days)
    return rows[:max(len(overdue), quota)]
