"""The pure plan of mysql_backup_verify_stored: each stored backup re-read within the window."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from mysqlbackup.verify import plan_stored_checks

NOW = datetime(2026, 12, 1, 13, 30)


def backup(i: int, days_ago: float, status: str = "usable") -> dict:
    return {"instance": f"db{i % 3}", "label": f"l{i:04d}", "status": status,
            "finished_at": (NOW - timedelta(days=days_ago)).isoformat() + "Z"}


def test_a_share_a_day_and_nothing_that_is_not_usable():
    rows = [backup(i, 0.5) for i in range(70)] + [backup(999, 30, "failed"), backup(998, 30, "damaged")]
    plan = plan_stored_checks(rows, {}, 7, NOW)
    assert len(plan) == 10 and all(p["status"] == "usable" for p in plan)


def test_overdue_backups_are_all_taken_oldest_first():
    rows = [backup(i, 10 + i) for i in range(5)] + [backup(100 + i, 0.1) for i in range(50)]
    plan = plan_stored_checks(rows, {}, 7, NOW)
    assert [p["label"] for p in plan[:5]] == ["l0004", "l0003", "l0002", "l0001", "l0000"]
    assert len(plan) == 8  # ceil(55 / 7): the 5 overdue and 3 more of the oldest


def test_a_recent_check_counts_like_a_verify():
    rows = [backup(i, 20) for i in range(4)]
    checked = {(r["instance"], r["label"]): NOW - timedelta(days=1) for r in rows[:3]}
    assert [p["label"] for p in plan_stored_checks(rows, checked, 7, NOW)] == ["l0003"]


def test_simulated_days_re_read_every_backup_within_the_window():
    """A month of daily runs over a growing set: no usable backup goes unchecked for a window."""
    window = 7
    rows: list[dict] = []
    checked: dict = {}
    worst = timedelta(0)
    for day in range(60):
        now = NOW + timedelta(days=day)
        rows += [{"instance": f"db{k}", "label": f"d{day:03d}-{k}", "status": "usable",
                  "finished_at": (now - timedelta(hours=11)).isoformat() + "Z"} for k in range(5)]
        for p in plan_stored_checks(rows, checked, window, now):
            checked[(p["instance"], p["label"])] = now
        for r in rows:
            last = max(checked.get((r["instance"], r["label"]), datetime.min),
                       datetime.fromisoformat(r["finished_at"].rstrip("Z")))
            worst = max(worst, now - last)
    assert worst <= timedelta(days=window)


def test_bad_window():
    with pytest.raises(ValueError, match="at least 1"):
        plan_stored_checks([backup(1, 1)], {}, 0, NOW)
