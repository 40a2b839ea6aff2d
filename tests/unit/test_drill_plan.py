"""The drill planner: rotation, deadlines, capacity, staleness, figures (pure)."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from mysqlbackup.drill import Candidate, drill_figures, plan_drills, stale

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def names(plan):
    return sorted(d.instance for d in plan.drills)


def test_never_drilled_instances_are_taken_first_and_the_share_spreads_the_load():
    cands = [Candidate(f"db{i:02d}", targets=("t1",)) for i in range(14)]
    plan = plan_drills(cands, NOW, max_per_target=100)
    # never drilled: all due now, so all are taken (a deadline is a promise)
    assert len(plan.drills) == 14 and plan.share == 2
    drilled = {c.name: NOW - timedelta(days=i % 7) for i, c in enumerate(cands)}
    cands = [Candidate(c.name, targets=("t1",), last_success=drilled[c.name]) for c in cands]
    plan = plan_drills(cands, NOW, max_per_target=100)
    # due within a day: drilled 6 days ago (db06, db13); the share is 14/7 = 2
    assert names(plan) == ["db06", "db13"], plan.describe()
    assert "not due" in plan.deferred["db00"]


def test_a_simulated_month_drills_every_instance_within_its_period():
    rng = random.Random(7)
    every = {f"db{i:02d}": rng.choice([1, 3, 7, 7, 7, 14]) for i in range(40)}
    last: dict[str, datetime] = {}
    gaps: dict[str, list[float]] = {n: [] for n in every}
    now = NOW
    for day in range(60):
        cands = [Candidate(n, every_days=e, targets=("t1", "t2", "t3"), last_success=last.get(n)) for n, e in every.items()]
        plan = plan_drills(cands, now, max_per_target=20)
        assert not plan.late, (day, plan.late)
        for d in plan.drills:
            if d.instance in last:
                gaps[d.instance].append((now - last[d.instance]) / DAY)
            last[d.instance] = now + timedelta(hours=1)
        # the load spreads: after the first cycles a night holds about its share, not a pile every 7th day
        if day >= 28:
            assert len(plan.drills) <= plan.share + 4, (day, len(plan.drills), plan.share)
        now += DAY
    for n, e in every.items():
        assert gaps[n] and max(gaps[n]) <= e, (n, e, gaps[n])
    assert not stale([Candidate(n, every_days=e, last_success=last[n]) for n, e in every.items()], now - DAY)


def test_a_failed_drill_keeps_the_instance_due():
    c = Candidate("db1", every_days=7, targets=("t1",), last_success=NOW - 8 * DAY)
    assert names(plan_drills([c], NOW)) == ["db1"]
    assert names(plan_drills([c], NOW + DAY)) == ["db1"]  # the last success did not move


def test_capacity_defers_and_names_the_late_ones():
    cands = [Candidate(f"db{i}", targets=("t1",)) for i in range(5)]
    plan = plan_drills(cands, NOW, max_per_target=2)
    assert names(plan) == ["db0", "db1"]
    assert sorted(plan.late) == ["db2", "db3", "db4"]
    assert "full this run (2 drills each)" in plan.deferred["db2"]


def test_targets_are_balanced_and_respected():
    cands = [Candidate("a", targets=("t1", "t2")), Candidate("b", targets=("t1", "t2")),
             Candidate("c", targets=("t2",)), Candidate("d", targets=("t1",))]
    plan = plan_drills(cands, NOW, max_per_target=2)
    by = plan.by_target()
    assert sorted(by) == ["t1", "t2"] and all(len(v) == 2 for v in by.values())
    assert "c" in by["t2"] and "d" in by["t1"]


def test_what_cannot_be_drilled_is_skipped_with_the_reason():
    plan = plan_drills([Candidate("nobackup", targets=("t1",), restorable=False), Candidate("notarget")], NOW)
    assert not plan.drills
    assert plan.skipped["nobackup"] == "no usable backup to restore"
    assert "drill: true" in plan.skipped["notarget"]


def test_stale_counts_from_the_last_success_or_the_oldest_backup():
    cands = [Candidate("fresh", last_success=NOW - 2 * DAY),
             Candidate("old", last_success=NOW - 8 * DAY),
             Candidate("new_instance", oldest_usable=NOW - DAY),
             Candidate("never", oldest_usable=NOW - 10 * DAY),
             Candidate("nothing")]
    found = {s.instance: s for s in stale(cands, NOW)}
    assert sorted(found) == ["never", "old"]
    assert "8.0 days ago (threshold 7 days)" in found["old"].message(NOW)
    assert "never restored in a drill" in found["never"].message(NOW)


def test_figures():
    fig = drill_figures([["transfer", 2.5], ["prepare", 1.25]], NOW, NOW - timedelta(seconds=90))
    assert fig["rto_seconds"] == 3.75 and fig["rpo_seconds"] == 90.0
    assert drill_figures([], NOW, None)["rpo_seconds"] is None


def test_bad_capacity():
    with pytest.raises(ValueError, match="at least 1"):
        plan_drills([], NOW, max_per_target=0)


# --- the CMDB fields and the DAG's shape -------------------------------------------------------------


def _drill_cmdb(**platform):
    from test_restore_plan import cmdb as restore_cmdb, target  # the restore planner's CMDB builders
    from mysqlbackup.cmdb import parse_cmdb
    c = restore_cmdb(targets=[target(), target("d1", host="10.0.9.3", drill=True),
                              target("d2", host="10.0.9.4", drill=True, allowed_instances=["billing"])])
    if not platform:
        return c
    from test_restore_plan import DEFAULTS, inst
    return parse_cmdb({"defaults": DEFAULTS, "platform": dict(platform), "instances": [inst("shop"), inst("billing", host="10.0.0.7")],
                       "restore_targets": [target("d1", host="10.0.9.3", drill=True)]})


def test_cmdb_drill_fields():
    c = _drill_cmdb()
    assert not c.errors, c.errors
    assert [t.name for t in c.restore_targets if t.drill] == ["d1", "d2"]
    assert c.drill_max_per_target == 2 and c.drill_schedule == "0 5 * * *"
    assert all(i.policy.drill_every_days == 7 for i in c.instances)
    bad = _drill_cmdb(drill_max_per_target=0, drill_schedule="sometimes")
    fields = {e.field for e in bad.errors}
    assert {"platform.drill_max_per_target", "platform.drill_schedule"} <= fields, bad.errors


def test_the_drill_dag_runs_the_restore_steps_per_target_and_slot(monkeypatch):
    from dag_render import render_all
    c = _drill_cmdb()
    dag = render_all(c)["mysql_restore_drill"]
    ids = {t.task_id for t in dag.tasks}
    for group in ("d1_1", "d1_2", "d2_1", "d2_2"):
        for step in ("plan", "check_target", "stop_target", "transfer", "prepare", "copy_back", "fix_ownership",
                     "start_target", "verify_restored", "fetch_binlogs", "replay", "finish", "report",
                     "check_restored", "record"):
            assert f"{group}.{step}" in ids, (group, step)
    # slots of one target run one after the other, whatever the first did
    second = dag.get_task("d1_2.plan")
    assert "d1_1.record" in second.upstream_task_ids and second.trigger_rule == "all_done"
    assert dag.get_task("d1_1.record").trigger_rule == "all_done"
    assert {"d1_2.record", "d2_2.record"} <= dag.get_task("drill_alerts").upstream_task_ids
    # every restore step reads its own slot's plan
    assert dag.get_task("d2_1.verify_restored").plan_task_id == "d2_1.plan"
    # no drill target: no drill DAG
    from test_restore_plan import cmdb as restore_cmdb
    assert "mysql_restore_drill" not in render_all(restore_cmdb())


def test_a_lone_instance_is_not_drilled_every_night():
    days = []
    last = None
    for day in range(21):
        now = NOW + day * DAY
        plan = plan_drills([Candidate("db1", every_days=7, targets=("t1",), last_success=last)], now)
        if plan.drills:
            days.append(day)
            last = now + timedelta(minutes=30)
    gaps = [b - a for a, b in zip(days, days[1:])]
    assert days[0] == 0 and all(4 <= g <= 7 for g in gaps), days
