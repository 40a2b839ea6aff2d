"""Restore drills: which instances a drill run restores, onto which drill target (pure, no Airflow).

A backup nobody restored is a hope. ``mysql_restore_drill`` restores a rotating subset of the
instances every run, so that each instance is restored at least every ``drill_every_days``
(policy, default 7), and alerts when an instance's last successful drill is older than that.

The planner, per run:

- An instance is *due* at its last successful drill plus ``drill_every_days`` (never drilled:
  due now). A drill that failed does not move the due date: the next run tries again.
- Every instance that would be overdue before the next run is *taken* (the deadline is a
  promise), then the run is filled, oldest due first, up to its *share*: the sum over instances
  of ``1 / drill_every_days`` (per run, for a daily run), rounded up, so the load spreads evenly
  over the days instead of every instance in one night every seventh day. Only an instance at
  least half its period past its last success fills (a lone instance is not drilled every night).
- Each taken instance goes to a drill target that allows it (a restore target with
  ``drill: true`` whose ``allowed_instances`` include it), the least loaded first (ties by
  name), at most ``max_per_target`` per run (drills on one target run one after the other).
  What does not fit is *deferred*, and named as *late* when its deadline passes before the next
  run: the platform owner hears that the drill targets are too few, before an instance goes
  undrilled.
- An instance with no usable backup, or no drill target that takes it, is *skipped* with the
  reason (the stale-drill alert still fires for it: a backup that cannot be drilled is not
  proven).

``stale`` answers the alert: an instance whose last successful drill is older than its
threshold. One never drilled counts from its oldest usable backup (an instance with fresh
backups only is not stale yet, so a new instance does not alert on its first day).

A drill's figures (``drill_figures``): the restore time (RTO) per step and in all, the point the
restore reached and its age when the drill started (RPO: the data a loss at that moment would
have cost, with what the archive held).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

DRILL_EVERY_DAYS = 7
MAX_PER_TARGET = 4


@dataclass(frozen=True)
class Candidate:
    """One instance as the planner sees it."""

    name: str
    every_days: int = DRILL_EVERY_DAYS
    targets: tuple[str, ...] = ()          # drill targets that take it
    restorable: bool = True                # it has a usable backup
    last_success: datetime | None = None   # when its last successful drill finished
    oldest_usable: datetime | None = None  # when its oldest usable backup finished


@dataclass(frozen=True)
class Drill:
    instance: str
    target: str
    due: datetime
    why: str


@dataclass
class DrillPlan:
    drills: list[Drill] = field(default_factory=list)
    deferred: dict[str, str] = field(default_factory=dict)  # instance -> why not this run
    late: list[str] = field(default_factory=list)           # deferred past their deadline
    skipped: dict[str, str] = field(default_factory=dict)   # instance -> why it cannot be drilled
    share: int = 0

    def by_target(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for d in self.drills:
            out.setdefault(d.target, []).append(d.instance)
        return out

    def describe(self) -> list[str]:
        lines = [f"drill {d.instance} on {d.target}: {d.why}" for d in self.drills]
        lines += [f"deferred {name}: {why}" for name, why in sorted(self.deferred.items())]
        lines += [f"skipped {name}: {why}" for name, why in sorted(self.skipped.items())]
        return lines


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def due_at(c: Candidate, now: datetime) -> datetime:
    last = _utc(c.last_success)
    return now if last is None else last + timedelta(days=c.every_days)


def plan_drills(candidates: Iterable[Candidate], now: datetime, run_every: timedelta = timedelta(days=1),
                max_per_target: int = MAX_PER_TARGET) -> DrillPlan:
    """The instances this drill run restores, and where (see the module docstring)."""
    if max_per_target < 1:
        raise ValueError(f"max_per_target must be at least 1, not {max_per_target}")
    now = _utc(now)
    plan = DrillPlan()
    able: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: c.name):
        if not c.restorable:
            plan.skipped[c.name] = "no usable backup to restore"
        elif not c.targets:
            plan.skipped[c.name] = ("no drill target takes it: declare a restore target with drill: true whose "
                                    "allowed_instances include it")
        else:
            able.append(c)
    per_run = run_every / timedelta(days=1)
    plan.share = math.ceil(sum(per_run / c.every_days for c in able) - 1e-9) if able else 0
    next_run = now + run_every
    order = sorted(able, key=lambda c: (due_at(c, now), c.name))
    must = [c for c in order if due_at(c, now) < next_run]
    rest = [c for c in order if due_at(c, now) >= next_run]
    fill = [c for c in rest if due_at(c, now) - now <= timedelta(days=c.every_days / 2)]
    taken = must + fill[: max(0, plan.share - len(must))]
    load: dict[str, int] = {}
    for c in taken:
        due = due_at(c, now)
        why = ("never drilled" if c.last_success is None else
               f"last drilled {_utc(c.last_success):%Y-%m-%d %H:%M} UTC, due {due:%Y-%m-%d %H:%M} UTC")
        free = [t for t in sorted(c.targets) if load.get(t, 0) < max_per_target]
        if not free:
            plan.deferred[c.name] = (f"its drill targets ({', '.join(sorted(c.targets))}) are full this run "
                                     f"({max_per_target} drills each)")
            if due < next_run:
                plan.late.append(c.name)
            continue
        target = min(free, key=lambda t: (load.get(t, 0), t))
        load[target] = load.get(target, 0) + 1
        plan.drills.append(Drill(c.name, target, due, why))
    chosen = {c.name for c in taken}
    for c in (c for c in rest if c.name not in chosen):
        plan.deferred.setdefault(c.name, f"not due: due {due_at(c, now):%Y-%m-%d %H:%M} UTC")
    return plan


@dataclass(frozen=True)
class Stale:
    instance: str
    threshold_days: int
    last_success: datetime | None
    since: datetime  # the last success, or the oldest usable backup when never drilled

    def message(self, now: datetime) -> str:
        age = (_utc(now) - self.since).total_seconds() / 86400
        if self.last_success is None:
            return (f"{self.instance} was never restored in a drill, and has had backups for {age:.1f} days "
                    f"(threshold {self.threshold_days} days)")
        return (f"{self.instance}'s last successful restore drill finished {self.since:%Y-%m-%d %H:%M} UTC, "
                f"{age:.1f} days ago (threshold {self.threshold_days} days)")


def stale(candidates: Iterable[Candidate], now: datetime) -> list[Stale]:
    """Instances whose last successful drill is older than their threshold (see the module docstring)."""
    now = _utc(now)
    out = []
    for c in sorted(candidates, key=lambda c: c.name):
        limit = timedelta(days=c.every_days)
        last = _utc(c.last_success)
        if last is not None:
            if now - last > limit:
                out.append(Stale(c.name, c.every_days, last, last))
            continue
        oldest = _utc(c.oldest_usable)
        if oldest is not None and now - oldest > limit:
            out.append(Stale(c.name, c.every_days, None, oldest))
    return out


def drill_figures(steps: Sequence[Sequence[Any]], started_at: datetime, point_time: datetime | None) -> dict[str, Any]:
    """RTO (seconds per step and in all) and RPO (the point reached's age when the drill started)."""
    per_step = [[str(s[0]), round(float(s[1]), 3)] for s in steps]
    rto = round(sum(s[1] for s in per_step), 3)
    started = _utc(started_at)
    point = _utc(point_time)
    rpo = None if point is None else round(max(0.0, (started - point).total_seconds()), 3)
    return {"rto_seconds": rto, "steps": per_step, "point_time": None if point is None else point.isoformat(),
            "rpo_seconds": rpo}


def candidates_from(instances: Iterable[Any], targets: Iterable[Any], last_success: Mapping[str, datetime],
                    oldest_usable: Mapping[str, datetime]) -> list[Candidate]:
    """Candidates from CMDB instances (``policy.drill_every_days``) and restore targets (``drill``,
    ``allows``); ``oldest_usable``: instance -> its oldest usable backup's finish (absent: none usable)."""
    drill_targets = [t for t in targets if getattr(t, "drill", False)]
    out = []
    for inst in instances:
        if not getattr(inst.policy, "backup_enabled", True):
            continue
        out.append(Candidate(
            name=inst.name, every_days=int(getattr(inst.policy, "drill_every_days", DRILL_EVERY_DAYS)),
            targets=tuple(t.name for t in drill_targets if t.allows(inst.name) and t.flavor == inst.flavor),
            restorable=inst.name in oldest_usable, last_success=last_success.get(inst.name),
            oldest_usable=oldest_usable.get(inst.name)))
    return out
