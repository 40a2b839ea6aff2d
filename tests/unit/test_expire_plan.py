"""Retention, planned (mysqlbackup.expire): the docstring's worked examples and the invariants."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from mysqlbackup.expire import plan_expiry

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def label(days_ago: float, full_days_ago: float | None = None) -> str:
    def stamp(d: float) -> str:
        return (NOW - timedelta(days=d)).strftime("%Y%m%d-%H%M%S")
    if full_days_ago is None:
        return stamp(days_ago) + "F"
    return f"{stamp(full_days_ago)}F_{stamp(days_ago)}I"


def row(lbl: str, status: str = "usable") -> dict:
    when = datetime.strptime(lbl.rsplit("_", 1)[-1][:15], "%Y%m%d-%H%M%S")
    return {"label": lbl, "status": status, "finished_at": (when + timedelta(minutes=10)).isoformat() + "Z"}


def test_fulls_and_a_window_keep_the_newest_one_before_it():
    rows = [row(label(d)) for d in (1, 8, 15, 22)]
    plan = plan_expiry(rows, NOW, retention_days=7)
    assert sorted(plan.keep) == sorted([label(1), label(8)])
    assert sorted(plan.expire) == sorted([label(15), label(22)])
    assert "newest backup before the 7-day window" in plan.keep[label(8)]


def test_a_window_keeps_the_chain_its_start_rolls_forward_from():
    rows = [row(label(10)), row(label(9, 10)), row(label(8, 10)), row(label(3)), row(label(2, 3))]
    assert plan_expiry(rows, NOW, retention_days=7).expire == {}
    chains = plan_expiry(rows, NOW, retention_full_chains=1)
    assert sorted(chains.expire) == sorted([label(10), label(9, 10), label(8, 10)])
    assert plan_expiry(rows, NOW, retention_days=7, retention_full_chains=1).expire == {}


def test_keep_forever_keeps_its_links_and_the_newest_usable_is_always_kept():
    rows = [row(label(30)), row(label(29, 30)), row(label(20)), row(label(2, 20), "damaged")]
    plan = plan_expiry(rows, NOW, retention_days=1, keep_forever=[label(29, 30)])
    assert plan.keep[label(29, 30)] == "marked keep-forever" and label(30) in plan.keep
    assert "newest usable" in plan.keep[label(20)]
    assert plan.binlog_horizon == label(30)


def test_running_and_failed_rows_are_not_retention_s_business():
    rows = [row(label(40)), row(label(39), "failed"), row(label(38), "running"), row(label(1))]
    plan = plan_expiry(rows, NOW, retention_days=7)
    assert set(plan.expire) == set() and set(plan.keep) == {label(1), label(40)}


@pytest.mark.parametrize("kwargs, message", [
    ({}, "a retention that keeps nothing"),
    ({"retention_days": 0}, "at least 1"),
    ({"retention_full_chains": 0}, "at least 1"),
])
def test_a_policy_that_cannot_work_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_expiry([row(label(1))], NOW, **kwargs)


def test_random_histories_never_expire_a_link_of_a_kept_backup():
    rnd = random.Random(5)
    for _ in range(300):
        rows, full = [], None
        for d in sorted(rnd.sample(range(1, 60), rnd.randint(1, 25)), reverse=True):
            if full is None or rnd.random() < 0.3:
                full = d
                rows.append(row(label(d), rnd.choice(["usable"] * 8 + ["damaged", "missing"])))
            else:
                rows.append(row(label(d, full), rnd.choice(["usable"] * 8 + ["damaged"])))
        plan = plan_expiry(rows, NOW, retention_days=rnd.choice([None, 3, 7, 14]) or 7,
                           retention_full_chains=rnd.choice([None, 1, 2]))
        assert set(plan.keep) | set(plan.expire) == {r["label"] for r in rows}
        for kept in plan.keep:
            chain = kept.split("_", 1)[0]
            for r in rows:
                if r["label"] < kept and r["label"].split("_", 1)[0] == chain:
                    assert r["label"] in plan.keep, (kept, r["label"])
        usable = sorted(r["label"] for r in rows if r["status"] == "usable")
        if usable:
            assert usable[-1] in plan.keep


def test_a_damaged_backup_inside_the_window_is_kept_as_evidence_but_anchors_nothing():
    rows = [row(label(20)), row(label(3), "damaged"), row(label(2), "missing"), row(label(1))]
    plan = plan_expiry(rows, NOW, retention_days=7)
    assert "kept as evidence" in plan.keep[label(3)] and label(2) in plan.keep
    assert plan.keep[label(20)].startswith("the newest backup before the 7-day window")
    old = [row(label(30), "damaged"), row(label(20)), row(label(1))]
    assert label(30) in plan_expiry(old, NOW, retention_days=7).expire


def test_binlogs_expire_only_when_the_oldest_kept_backup_no_longer_needs_them():
    from mysqlbackup.expire import plan_binlog_expiry

    def f(name, start, end, state="closed"):
        return {"name": name, "server_identity": "1-ab", "state": state, "start_gtid_state": start,
                "end_gtid_state": end}
    files = [f("binlog.000001", "", "0-1-50"), f("binlog.000002", "0-1-50", "0-1-100"),
             f("binlog.000003", "0-1-100", "0-1-150"), f("binlog.000004", "0-1-150", "0-1-151", "open"),
             f("binlog.000005", "0-1-10", "0-1-20", "damaged"), f("binlog.000006", "0-1-1", None),
             f("binlog.000007", "0-1-1", "0-1-20,1-2-5")]
    names = [x["name"] for x in plan_binlog_expiry(files, "0-1-100")]
    assert names == ["binlog.000001", "binlog.000002"]  # .000003 holds 101..150, needed after the backup
    assert plan_binlog_expiry(files, None) == [] and plan_binlog_expiry(files, "") == []
    assert [x["name"] for x in plan_binlog_expiry(files, "0-1-100,1-2-9")] == ["binlog.000001", "binlog.000002",
                                                                               "binlog.000007"]
