"""The pure choice of a run's backup kind and of an incremental's parent (mysqlbackup.backup)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from mysqlbackup.backup import NoIncrementalBase, plan_kind, wants_incremental
from mysqlbackup.cmdb import Policy

POL = Policy(full_schedule="0 2 * * 0", incremental_schedule="0 2 * * 1-6", max_chain_length=2)
SUN = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)
MON = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
F, I1, I2 = "20261129-020000F", "20261129-020000F_20261130-020000I", "20261129-020000F_20261201-020000I"


def row(label, status="usable", parent=None, source="r1", to_lsn=1000, verify="ok", server_id=2):
    kind = "incremental" if label.endswith("I") else "full"
    return {"label": label, "status": status, "kind": kind, "verify_status": verify, "to_lsn": to_lsn,
            "source_name": source, "storage_path": f"/b/db/{label}", "artifact": "backup.xbstream.zst",
            "sha256": "a" * 64, "manifest_json": json.dumps({"parent": parent, "source_server_id": server_id})}


def test_what_auto_wants():
    assert wants_incremental("auto", POL, SUN)[0] is False
    assert wants_incremental("auto", POL, MON)[0] is True
    assert wants_incremental("auto", POL, None)[0] is True  # manual auto: as the policy takes them
    assert wants_incremental("auto", Policy(), MON) == (False, "kind=auto and the policy has no incremental_schedule:"
                                                              " every backup is a full")
    assert wants_incremental("full", POL, MON)[0] is False and wants_incremental("incremental", Policy(), SUN)[0]
    with pytest.raises(ValueError, match="kind must be one of"):
        wants_incremental("weekly", POL, MON)


def test_an_incremental_builds_on_the_newest_link_with_its_chain():
    plan = plan_kind("auto", POL, MON, [row(F), row(I1, parent=F, to_lsn=2000)], "r1", {"server_id": 2,
                                                                                          "innodb_lsn": 5000})
    assert (plan.kind, plan.parent, plan.chain, plan.incremental_lsn) == ("incremental", I1, F, 2000)
    assert [link["label"] for link in plan.chain_links] == [F, I1]
    assert "link 3 of at most 3" in plan.reason


@pytest.mark.parametrize("history, source, facts, why", [
    ([], "r1", {}, "there is no earlier backup"),
    ([row(F), row(I1, status="failed", parent=F)], "r1", {}, f"{I1} is failed"),
    ([row(F), row(I1, status="running", parent=F)], "r1", {}, "left running by a dead run"),
    ([row(F, verify="failed")], "r1", {}, "never verified"),
    ([row(F, status="damaged")], "r1", {}, "is damaged"),
    ([row(F, status="missing"), row(I1, parent=F)], "r1", {}, f"its link {F} is missing"),
    ([row(I1, parent=F)], "r1", {}, f"its link {F} is not in the catalog"),
    ([row(F), row(I1, parent=F), row(I2, parent=I1)], "r1", {}, "already has 2 incremental(s)"),
    ([row(F)], "r2", {}, "taken from r1 and this run's source is r2"),
    ([row(F)], "r1", {"server_id": 9}, "server_id 2 and r1 is now server_id 9"),
    ([row(F, to_lsn=9000)], "r1", {"innodb_lsn": 100}, "LSN 100 is below"),
    ([row(F, to_lsn=None)], "r1", {}, "no to_lsn"),
])
def test_auto_takes_a_full_and_says_why_and_incremental_is_refused(history, source, facts, why):
    plan = plan_kind("auto", POL, MON, history, source, facts)
    assert plan.kind == "full" and why in plan.reason and "a full starts a new chain" in plan.reason
    with pytest.raises(NoIncrementalBase, match="no backup can be its parent") as info:
        plan_kind("incremental", POL, MON, history, source, facts)
    assert why in str(info.value) and "kind=full" in str(info.value)


def test_expired_rows_are_not_links_and_a_full_at_full_time():
    assert plan_kind("auto", POL, SUN, [row(F)], "r1").kind == "full"
    assert plan_kind("auto", POL, MON, [row(F, status="expired")], "r1").kind == "full"
