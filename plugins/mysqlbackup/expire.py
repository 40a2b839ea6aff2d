"""Retention: which backups expire, planned from the catalog and the policy (pure, no Airflow).

Like pgBackRest, expiry is planned first, by a function that never removes what a kept backup
depends on; only the planned labels are then deleted. The rules, per instance:

- ``retention_full_chains: N`` keeps the newest N chains (a chain is a full and the incrementals
  built on it).
- ``retention_days: D`` keeps a recovery window of D days: every backup needed to restore to any
  point of the last D days. That is every backup that finished within the window, and the newest
  one that finished before it (the window's start is reached by rolling that one forward with
  the binlogs), with its chain.
- Both given: a backup is kept when either rule keeps it (the union: the stricter one never
  shortens what the other promised).
- Always kept: every link a kept backup depends on (its chain's full and the incrementals before
  it), every backup marked keep-forever (and its links), the newest usable backup (an instance
  always keeps one restorable backup), and anything not finished (running). A damaged or missing
  backup ages out like any other (kept while it is inside the window or a kept chain: the
  evidence of an incident), but never anchors the window.

Worked examples (days ago a backup finished; F full, I incremental):

- fulls at 1, 8, 15, 22 and ``retention_days: 7``: the window reaches back to day 7; day 1 is in
  it; day 8 is the newest before it (the window's start rolls forward from it). Kept: 1, 8.
  Expired: 15, 22. This is why an "old" full outlives the window: users of every tool ask.
- F at 10, I at 9, I at 8, F at 3, I at 2 and ``retention_days: 7``: 3 and 2 are in the window;
  the newest before it is the I at 8, which needs the I at 9 and the F at 10. Nothing expires.
- the same with ``retention_full_chains: 1`` and no retention_days: the chain of the F at 3
  is kept, the chain of the F at 10 expires (all three).
- ``retention_full_chains: 1`` and ``retention_days: 7`` together: the union: nothing expires.

Binlogs: every archived binlog needed to roll forward from the oldest kept backup to now is
kept; ``binlog_horizon`` gives that backup (its coordinates), the archive keeps what follows it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from mysqlbackup.labels import parse_label
from mysqlbackup.manifest import parse_utc

# rows of these statuses are backups (or were): retention decides about them
_CONSIDERED = ("usable", "damaged", "missing")


@dataclass(frozen=True)
class ExpirePlan:
    """What to keep (and why) and what expires, for one instance."""

    keep: dict[str, str] = field(default_factory=dict)     # label -> why it is kept
    expire: dict[str, str] = field(default_factory=dict)   # label -> why it may go
    binlog_horizon: str | None = None                      # the oldest kept usable backup

    def describe(self) -> list[str]:
        out = [f"keep {label}: {why}" for label, why in sorted(self.keep.items())]
        out += [f"expire {label}: {why}" for label, why in sorted(self.expire.items())]
        return out


def _finished(row: Mapping[str, Any]) -> datetime:
    value = row.get("finished_at") or row.get("started_at")
    if value is None:
        return parse_label(row["label"]).when
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return parse_utc(value if value.endswith(("Z", "+00:00")) else value + "Z")


def _chain_of(label: str) -> str:
    return label.split("_", 1)[0]


def plan_expiry(rows: Iterable[Mapping[str, Any]], now: datetime, retention_days: int | None = None,
                retention_full_chains: int | None = None, keep_forever: Iterable[str] = ()) -> ExpirePlan:
    """The retention plan of one instance's catalog rows at ``now``.

    ``keep_forever``: labels marked to be kept whatever the rules say (with what they need).
    """
    if retention_days is None and retention_full_chains is None:
        raise ValueError("give retention_days, retention_full_chains or both: a retention that keeps "
                         "nothing is never planned")
    if retention_days is not None and retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    if retention_full_chains is not None and retention_full_chains < 1:
        raise ValueError(f"retention_full_chains must be at least 1, got {retention_full_chains}")
    now = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    backups = sorted((r for r in rows if r.get("status") in _CONSIDERED), key=lambda r: r["label"])
    by_label = {r["label"]: r for r in backups}
    keep: dict[str, str] = {}

    def keep_with_links(label: str, why: str) -> None:
        """Keep ``label`` and every earlier link of its chain (an incremental needs them all)."""
        if label not in by_label:
            return
        keep.setdefault(label, why)
        chain = _chain_of(label)
        for other in backups:
            if other["label"] < label and _chain_of(other["label"]) == chain:
                keep.setdefault(other["label"], f"a link {label} needs")

    usable = [r for r in backups if r["status"] == "usable"]
    if usable:
        keep_with_links(usable[-1]["label"], "the newest usable backup (one restorable backup is always kept)")
    for label in keep_forever:
        keep_with_links(label, "marked keep-forever")
    if retention_full_chains is not None:
        fulls = [r["label"] for r in usable if parse_label(r["label"]).kind == "full"]
        for full in fulls[-retention_full_chains:]:
            for r in backups:
                if _chain_of(r["label"]) == full:
                    keep_with_links(r["label"], f"in one of the newest {retention_full_chains} chain(s)")
    if retention_days is not None:
        start = now - timedelta(days=retention_days)
        # a damaged or missing backup inside the window is kept too (the evidence of an incident
        # outlives it no shorter than a good backup would), but never anchors the window
        inside = [r for r in backups if _finished(r) >= start]
        before = [r for r in usable if _finished(r) < start]
        for r in inside:
            keep_with_links(r["label"], f"finished within the {retention_days}-day recovery window"
                            + ("" if r["status"] == "usable" else f" ({r['status']}: kept as evidence)"))
        if before:
            keep_with_links(before[-1]["label"], f"the newest backup before the {retention_days}-day window: its "
                                                 "start is reached by rolling it forward")
    expire = {r["label"]: f"{r['status']}, not needed by any kept backup" for r in backups if r["label"] not in keep}
    kept_usable = [label for label in sorted(keep) if by_label[label]["status"] == "usable"]
    return ExpirePlan(keep=keep, expire=expire, binlog_horizon=kept_usable[0] if kept_usable else None)


def plan_binlog_expiry(files: Iterable[Mapping[str, Any]], horizon_gtid: str | None) -> list[dict]:
    """The archived binlog files that the oldest kept backup no longer needs.

    ``files``: the catalog's ``binlog_files`` rows of the instance; ``horizon_gtid``: the GTID state
    of the oldest kept usable backup (``ExpirePlan.binlog_horizon``'s manifest ``gtid``). A file
    may go when it is closed (or incomplete) and every transaction in it is at or before that state
    in its domain: a roll-forward from the oldest kept backup starts after it. The file being
    written, damaged files (evidence) and files whose end state is unknown are kept, and so is
    everything when the horizon has no GTID (nothing can be proved unneeded).
    """
    from mysqlbackup.archive import parse_gtid_state
    horizon = parse_gtid_state(horizon_gtid) if horizon_gtid else None
    if not horizon:
        return []
    out = []
    for f in files:
        if f.get("state") not in ("closed", "incomplete"):
            continue
        end = parse_gtid_state(f.get("end_gtid_state"))
        start = parse_gtid_state(f.get("start_gtid_state")) or {}
        if not end:
            continue
        if all(d in horizon and seq <= horizon[d][1] for d, (_s, seq) in end.items()) and \
                all(d in horizon and seq <= horizon[d][1] for d, (_s, seq) in start.items()):
            out.append(dict(f))
    return out
