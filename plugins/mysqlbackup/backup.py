"""Which kind of backup a run takes, and what an incremental builds on (pure, no Airflow).

A run asks for ``auto`` (scheduled runs always do), ``full`` or ``incremental``:

- ``auto`` wants an incremental when the policy has an ``incremental_schedule`` and the run is not
  at a ``full_schedule`` time (a manual ``auto`` run wants one whenever the policy has that
  schedule); otherwise a full.
- An incremental builds on the newest backup of the instance, which must be usable and verified,
  on a chain whose every link is usable, with fewer than ``max_chain_length`` incrementals, taken
  from the same server as this run's source (after a failover or a rebuild the LSNs of another
  server mean nothing). When any of this does not hold, ``auto`` takes a full and says why;
  ``incremental`` fails before anything runs, naming the newest backups and why none is a base.

An incremental's base is its parent's ``to_lsn`` (the database host holds no copy of the parent),
so a restore prepares the full, then each incremental in order: ``chain_links`` lists them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from mysqlbackup.cmdb import Policy
from mysqlbackup.labels import FULL, INCREMENTAL, parse_label
from mysqlbackup.text import capped

KINDS = ("auto", "full", "incremental")


class NoIncrementalBase(ValueError):
    """An incremental was asked for and nothing can be its parent (nothing was started)."""


@dataclass(frozen=True)
class KindPlan:
    """What this run takes: ``kind``, why, and for an incremental its parent and chain."""

    kind: str
    reason: str
    requested: str
    parent: str | None = None           # label of the backup an incremental builds on
    chain: str | None = None            # label of the chain's full
    incremental_lsn: int | None = None  # the parent's to_lsn
    chain_links: tuple[dict, ...] = field(default_factory=tuple)  # full first, up to the parent
    prefer_source: str | None = None    # the chain's source, which the run should back up again

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "requested": self.requested, "parent": self.parent,
                "chain": self.chain, "incremental_lsn": self.incremental_lsn,
                "chain_links": [dict(link) for link in self.chain_links]}


def wants_incremental(requested: str, policy: Policy, scheduled_at: datetime | None) -> tuple[bool, str]:
    """(an incremental is wanted, why), before looking at the chain."""
    if requested not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {requested!r}")
    if requested == "full":
        return False, "a full backup was asked for (kind=full)"
    if requested == "incremental":
        return True, "an incremental was asked for (kind=incremental)"
    if not policy.incremental_schedule:
        return False, "kind=auto and the policy has no incremental_schedule: every backup is a full"
    if scheduled_at is None:
        return True, "kind=auto on a manual run, and the policy takes incrementals (incremental_schedule)"
    if policy.full_schedule and _matches(policy.full_schedule, scheduled_at):
        return False, f"kind=auto at {scheduled_at:%Y-%m-%d %H:%M} UTC, a full_schedule time ({policy.full_schedule})"
    return True, (f"kind=auto at {scheduled_at:%Y-%m-%d %H:%M} UTC, an incremental_schedule time "
                  f"({policy.incremental_schedule})")


def _matches(cron: str, when: datetime) -> bool:
    from croniter import croniter
    utc = when.astimezone(timezone.utc).replace(tzinfo=None, second=0, microsecond=0)
    return bool(croniter.match(cron, utc))


def _manifest(row: Mapping[str, Any]) -> dict:
    try:
        return json.loads(row.get("manifest_json") or "{}")
    except ValueError:
        return {}


def base_problem(row: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]], policy: Policy,
                 source: str, source_facts: Mapping[str, Any] | None) -> tuple[str | None, list[dict]]:
    """(why ``row`` cannot be an incremental's parent, or None; its chain full first up to it)."""
    label = row["label"]
    if row.get("status") not in ("usable",):
        status = "left running by a dead run" if row.get("status") == "running" else row.get("status")
        return f"{label} is {status}: a chain is never built on a link that is not usable", []
    if row.get("verify_status") != "ok":
        return f"{label} was never verified", []
    if row.get("to_lsn") is None:
        return f"{label} has no to_lsn to build on", []
    links: list[dict] = []
    cur: Mapping[str, Any] | None = row
    while cur is not None:
        m = _manifest(cur)
        links.append({"label": cur["label"], "storage_path": cur.get("storage_path"), "artifact": cur.get("artifact"),
                      "sha256": cur.get("sha256"), "source_name": cur.get("source_name"),
                      "server_id": m.get("source_server_id")})
        if cur.get("kind", FULL) == FULL or parse_label(cur["label"]).kind == FULL:
            break
        parent = m.get("parent")
        prev = rows.get(parent) if parent else None
        if prev is None:
            return f"the chain of {label} is broken: its link {parent or '?'} is not in the catalog", []
        if prev.get("status") != "usable":
            return f"the chain of {label} is broken: its link {parent} is {prev.get('status')}", []
        cur = prev
    links.reverse()
    incrementals = len(links) - 1
    if incrementals >= policy.max_chain_length:
        return (f"the chain of {links[0]['label']} already has {incrementals} incremental(s) "
                f"(policy.max_chain_length={policy.max_chain_length})"), []
    chain_sources = {link["source_name"] for link in links}
    if chain_sources != {source}:
        return (f"the chain of {links[0]['label']} was taken from {capped(sorted(chain_sources))} and this run's "
                f"source is {source}: the LSNs of another server mean nothing"), []
    facts = source_facts or {}
    server_ids = {link["server_id"] for link in links if link["server_id"] is not None}
    if server_ids and facts.get("server_id") is not None and server_ids != {facts["server_id"]}:
        return (f"the chain of {links[0]['label']} was taken from server_id {capped(sorted(server_ids))} and "
                f"{source} is now server_id {facts['server_id']}: another server"), []
    lsn = facts.get("innodb_lsn")
    if lsn is not None and lsn < int(row["to_lsn"]):
        return (f"{source}'s LSN {lsn} is below {label}'s to_lsn {row['to_lsn']}: it is not the server the chain "
                "was taken from (rebuilt or restored since)"), []
    return None, links


def plan_kind(requested: str, policy: Policy, scheduled_at: datetime | None, history: Iterable[Mapping[str, Any]],
              source: str, source_facts: Mapping[str, Any] | None = None) -> KindPlan:
    """The kind of this run's backup and, for an incremental, what it builds on.

    ``history``: the instance's catalog rows (any status). ``source``: this run's source name.
    Raises ``NoIncrementalBase`` when ``requested`` is ``incremental`` and no backup can be a base.
    """
    want, why = wants_incremental(requested, policy, scheduled_at)
    if not want:
        return KindPlan(FULL, why, requested)
    rows = {r["label"]: r for r in history if r.get("status") != "expired"}
    newest = sorted(rows.values(), key=lambda r: r["label"], reverse=True)
    problem: str | None
    if not newest:
        problem = "there is no earlier backup of this instance"
        links: list[dict] = []
    else:
        problem, links = base_problem(newest[0], rows, policy, source, source_facts)
    if problem is None:
        parent = newest[0]
        chain = links[0]["label"]
        return KindPlan(INCREMENTAL, f"{why}: on {parent['label']} (chain {chain}, link {len(links) + 1} of at most "
                                     f"{policy.max_chain_length + 1})", requested, parent=parent["label"],
                        chain=chain, incremental_lsn=int(parent["to_lsn"]), chain_links=tuple(links),
                        prefer_source=source)
    if requested == "incremental":
        seen = [problem] + [base_problem(r, rows, policy, source, source_facts)[0] or f"{r['label']} is older"
                            for r in newest[1:3]]
        raise NoIncrementalBase(f"kind=incremental but no backup can be its parent: {'; '.join(seen)}. "
                                "Run with kind=full (or auto) to start a new chain")
    return KindPlan(FULL, f"{why}, but {problem}: a full starts a new chain", requested)


def chain_source(history: Iterable[Mapping[str, Any]]) -> str | None:
    """The source of the instance's newest usable backup (what an incremental would prefer)."""
    usable = sorted((r for r in history if r.get("status") == "usable"), key=lambda r: r["label"], reverse=True)
    return usable[0].get("source_name") if usable else None
