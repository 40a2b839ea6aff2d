"""The full-restore planner (pure), the CMDB's restore_targets, and a table of hostile params.

Every refusal happens in pure code (``RestoreRequest.parse`` / ``plan_restore``) or in the ``plan`` task,
which never builds an SSH hook: a test below runs the real PlanRestoreOperator with a hook that fails
when constructed.
"""
from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from mysqlbackup.cmdb import parse_cmdb
from mysqlbackup.restore import (RestorePlan, RestoreRefused, RestoreRequest, choose_backup_set, choose_server_id,
                                 compare_restored, derived_server_id, plan_restore, target_problems, version_problem)

DEFAULTS = {"storage": {"ssh_conn_id": "backup_storage", "base_dir": "/srv/mysql-backups"}}


def inst(name: str, **over: Any) -> dict:
    r = {"name": name, "host": "10.0.0.5", "port": 3306, "role": "primary", "flavor": "mariadb",
         "ssh_conn_id": f"ssh_{name}", "mysql_conn_id": "mysql_backup", "owner": "dba@example.com", "app": "shop"}
    r.update(over)
    return r


def target(name: str = "t1", **over: Any) -> dict:
    r = {"name": name, "host": "10.0.9.1", "port": 3306, "ssh_conn_id": "ssh_t1", "mysql_conn_id": "mysql_admin_t1",
         "datadir": "/var/lib/mysql", "flavor": "mariadb", "stop_command": "systemctl stop mariadb",
         "start_command": "systemctl start mariadb"}
    r.update(over)
    return r


def cmdb(targets=None, instances=None):
    doc = {"defaults": DEFAULTS,
           "instances": instances if instances is not None else
           [inst("shop"), inst("shop_r1", host="10.0.0.6", role="replica", replica_of="shop"),
            inst("billing", host="10.0.0.7")],
           "restore_targets": targets if targets is not None else
           [target(), target("t2", host="10.0.9.2", allowed_instances=["billing"])]}
    return parse_cmdb(doc)


def brow(label: str, status: str = "usable", parent: str | None = None, finished: str | None = None,
         instance: str = "shop", gtid: str = "0-1-100", server_id: int = 2, **over: Any) -> dict:
    kind = "incremental" if label.endswith("I") else "full"
    day = label.split("_")[-1][:8]
    manifest = {"tool": "mariabackup 10.11.6", "server_version": "10.11.6-MariaDB", "source_server_id": server_id,
                "source_is_primary": False, "parent": parent, "replica_source": {"gtid": gtid}}
    r = {"label": label, "instance": instance, "kind": kind, "status": status, "verify_status": "ok",
         "parent": parent, "storage_ssh_conn_id": "backup_storage",
         "storage_path": f"/srv/mysql-backups/{instance}/{label}", "artifact": "backup.xbstream.zst",
         "compress": "zstd", "sha256": "a" * 64, "size_bytes": 1 << 20,
         "finished_at": finished or f"{day[:4]}-{day[4:6]}-{day[6:]}T02:10:00+00:00", "to_lsn": 100, "last_lsn": 101,
         "gtid": gtid, "binlog_file": "binlog.000003", "binlog_pos": 400, "source_name": "shop_r1",
         "manifest_json": json.dumps(manifest), "error": None}
    r.update(over)
    return r


F1 = "20261120-020000F"
I1 = "20261120-020000F_20261121-020000I"
I2 = "20261120-020000F_20261122-020000I"
F2 = "20261124-020000F"


def chain_rows(**status):
    return [brow(F1, status.get("F1", "usable")), brow(I1, status.get("I1", "usable"), parent=F1),
            brow(I2, status.get("I2", "usable"), parent=I1, gtid="0-1-300"), brow(F2, status.get("F2", "usable"),
                                                                                  gtid="0-1-400")]


def plan(params: dict, rows=None, c=None, used=None, owners=()):
    req = RestoreRequest.parse(params, given=params.keys())
    return plan_restore(req, c or cmdb(), chain_rows() if rows is None else rows, "r1", used or {}, owners)


# ---------------------------------------------------------------------------------------------- the set


def test_the_newest_restorable_backup_by_default_and_a_day_picks_its_newest_chain():
    assert choose_backup_set(chain_rows(), "shop").labels == [F2]
    s = choose_backup_set(chain_rows(), "shop", day=date(2026, 11, 22))
    assert s.labels == [F1, I1, I2] and "backup_date 2026-11-22" in s.reason
    assert choose_backup_set(chain_rows(), "shop", day=date(2026, 11, 21)).labels == [F1, I1]
    assert choose_backup_set(chain_rows(), "shop", label=I1).labels == [F1, I1]


def test_a_broken_link_is_named_and_a_day_falls_back_to_nothing_but_names_the_nearest_days():
    with pytest.raises(RestoreRefused) as e:
        choose_backup_set(chain_rows(I1="damaged"), "shop", day=date(2026, 11, 22))
    assert e.value.field == "backup_date" and I1 in str(e.value) and "damaged" in str(e.value)
    assert "2026-11-20 (before)" in str(e.value) and "2026-11-24 (after)" in str(e.value)


def test_server_id_is_the_targets_or_derived_and_never_one_in_use():
    sid, why = choose_server_id("t1", None, {})
    assert sid == derived_server_id("t1") and sid >= 4_000_000_000 and "derived" in why
    assert choose_server_id("t1", None, {sid: "x"})[0] != sid
    assert choose_server_id("t1", 77, {})[0] == 77
    with pytest.raises(RestoreRefused, match="server_id 2 is the server_id of shop_r1"):
        choose_server_id("t1", 2, {2: "shop_r1"})


def test_the_plan_carries_everything_the_steps_need_and_round_trips():
    p = plan({"instance": "shop", "target": "t1", "backup_date": "2026-11-22"})
    assert p.backup_set.labels == [F1, I1, I2] and p.gtid == "0-1-300"
    assert p.target_spec["datadir"] == "/var/lib/mysql" and p.target_spec["work_dir"] == "/var/lib/.mysql-restore-mysql"
    assert p.target_spec["stop_command"] == "systemctl stop mariadb" and p.target_spec["ssh_conn_id"] == "ssh_t1"
    assert p.server_id != 2 and p.primary["name"] == "shop"
    assert RestorePlan.from_dict(json.loads(json.dumps(p.as_dict()))) == p
    # the source of the backups (server_id 2) is never the restored server's
    with pytest.raises(RestoreRefused, match="server_id 2 is the server_id of shop_r1, the source of backup"):
        plan({"instance": "shop", "target": "t1"}, c=cmdb([target(server_id=2)]))
    # nor one a CMDB instance runs with (as the catalog last saw it)
    used = {derived_server_id("t1"): "the CMDB instance billing"}
    assert plan({"instance": "shop", "target": "t1"}, used=used).server_id != derived_server_id("t1")


def test_version_and_target_checks():
    assert version_problem("mariadb", "mariabackup 10.11.6", "10.11.6-MariaDB", "mariabackup 10.6.1", None)[0]
    assert version_problem("mariadb", "mariabackup 10.11.6", "10.11.6-MariaDB", None, None)[0]
    assert version_problem("mariadb", "mariabackup 10.11.6", "10.11.6-MariaDB", "mariabackup 10.11.9",
                           "mariadbd 10.11.9-MariaDB")[0] is None
    p = plan({"instance": "shop", "target": "t1"})
    check = {"tool_version": "mariabackup 10.11.6", "server_version": "mariadbd 10.11.6", "datadir": "/var/lib/mysql",
             "datadir_state": "data", "datadir_entries": ["ibdata1", "mysql"], "datadir_bytes": 1 << 30,
             "work_fs": {"avail_bytes": 1 << 40}, "datadir_fs": {"avail_bytes": 1 << 40}, "same_fs": True}
    problems, _ = target_problems(p, check)
    assert len(problems) == 1 and "not empty" in problems[0] and "set overwrite to true" in problems[0]
    import dataclasses
    assert target_problems(dataclasses.replace(p, overwrite=True), check)[0] == []
    small = dict(check, datadir_state="empty", work_fs={"avail_bytes": 1000}, datadir_fs={"avail_bytes": 1000})
    assert "not enough space" in target_problems(p, small)[0][0]


def test_compare_restored_names_each_difference():
    p = plan({"instance": "shop", "target": "t1"})
    prepared = {"checkpoints": {"last_lsn": 101, "to_lsn": 100}, "binlog": {"gtid": "0-1-400"}, "schemas": {"shop": 3}}
    ok = {"server_id": p.server_id, "gtid_slave_pos": "0-1-400", "schemas": {"shop": 3},
          "version": "10.11.6-MariaDB", "replication": []}
    assert compare_restored(p, prepared, ok)[0] == []
    bad = dict(ok, server_id=2, gtid_slave_pos="0-1-399", schemas={"shop": 2}, replication=["x"])
    diffs = compare_restored(p, prepared, bad)[0]
    assert len(diffs) == 4, diffs


# ---------------------------------------------------------------------------------------------- the CMDB


def _errors(targets, instances=None):
    return [(e.field, e.message) for e in cmdb(targets, instances).errors]


def test_restore_targets_parse_and_every_error_names_the_row_and_field():
    c = cmdb()
    assert [t.name for t in c.restore_targets] == ["t1", "t2"] and c.restore_target("t2").allows("billing")
    assert not c.restore_target("t2").allows("shop") and c.errors == ()
    errs = _errors([target(port="x"), {k: v for k, v in target("t3").items() if k != "stop_command"},
                    target("t4", datadir="/etc"), target("t5", stop_command="a\nb"),
                    target("t6", allowed_instances=["nope"]), target("t7", host="10.0.9.7"),
                    target("t7", host="10.0.9.8")])
    fields = [f for f, _ in errs]
    assert "restore_targets[1].port" in fields and "restore_targets[2].stop_command" in fields
    assert "restore_targets[3].datadir" in fields and "restore_targets[4].stop_command" in fields
    assert "restore_targets[5].allowed_instances" in fields and "restore_targets[7].name" in fields
    assert all(m for _, m in errs)
    assert [e for e in errs if e[0] == "restore_targets[3].datadir"][0][1].count("system directory") == 1


def test_a_target_that_is_a_cmdb_instance_is_refused_naming_the_row():
    errs = _errors([target(host="10.0.0.6", port=3306)])
    assert len(errs) == 1 and errs[0][0] == "restore_targets[1].host"
    assert "'shop_r1' (row 2, replica)" in errs[0][1] and "in service" in errs[0][1]
    assert cmdb([target(host="10.0.0.6", port=3306)]).restore_targets == ()
    errs = _errors([target("shop")])
    assert errs[0][0] == "restore_targets[1].name" and "instance row 1" in errs[0][1]


# ---------------------------------------------------------------------------------------------- hostile input

OK = {"instance": "shop", "target": "t1"}
HOSTILE = [
    # (params, field the message names, words it must hold)
    ({**OK, "instance": "shop; rm -rf /"}, "instance", "not a name"),
    ({**OK, "instance": "shop' OR '1'='1"}, "instance", "not a name"),
    ({**OK, "instance": "$(reboot)"}, "instance", "not a name"),
    ({**OK, "instance": "`id`"}, "instance", "not a name"),
    ({**OK, "instance": "shop\n"}, "instance", "not a name"),
    ({**OK, "instance": "shop\x00"}, "instance", "not a name"),
    ({**OK, "instance": "ѕhop"}, "instance", "not a name"),  # Cyrillic dze
    ({**OK, "instance": "s" * 65}, "instance", "at most 64"),
    ({**OK, "instance": 7}, "instance", "required"),
    ({**OK, "instance": ["shop"]}, "instance", "required"),
    ({**OK, "instance": None}, "instance", "required"),
    ({**OK, "instance": "nosuch"}, "instance", "unknown instance"),
    ({**OK, "target": "t1 && curl x|sh"}, "target", "not a name"),
    ({**OK, "target": "t1'; DROP DATABASE mysql; --"}, "target", "not a name"),
    ({**OK, "target": "../../etc"}, "target", "not a name"),
    ({**OK, "target": "t１"}, "target", "not a name"),  # fullwidth digit
    ({**OK, "target": "nosuch"}, "target", "the CMDB declares"),
    ({**OK, "target": "t2"}, "target", "allowed_instances"),
    ({**OK, "target": {"name": "t1"}}, "target", "required"),
    ({**OK, "backup_label": "20261120-020000F; rm -rf /"}, "backup_label", "not a backup label"),
    ({**OK, "backup_label": "20261120-020000F\n"}, "backup_label", "not a backup label"),
    ({**OK, "backup_label": "' UNION SELECT 1 --"}, "backup_label", "not a backup label"),
    ({**OK, "backup_label": "２0261120-020000F"}, "backup_label", "not a backup label"),
    ({**OK, "backup_label": "2" * 5000}, "backup_label", "not a backup label"),
    ({**OK, "backup_label": 20261120}, "backup_label", "not a backup label"),
    ({**OK, "backup_label": "20261125-020000F"}, "backup_label", "has no backup"),
    ({**OK, "backup_label": "20261130-020000F"}, "backup_label", "a backup of billing, not of shop"),
    ({**OK, "backup_label": I2}, "backup_label", "damaged"),  # its link I1 is damaged (rows below)
    ({**OK, "backup_label": "20261101-020000F"}, "backup_label", "expired"),
    ({**OK, "backup_label": "20261102-020000F_20261103-020000I"}, "backup_label", "not in the catalog"),
    ({**OK, "backup_date": "2026-11-23"}, "backup_date", "Nearest days with one: 2026-11-20 (before), 2026-11-24"),
    ({**OK, "backup_date": "2026-02-30"}, "backup_date", "not a real day"),
    ({**OK, "backup_date": "2026-11-24'; --"}, "backup_date", "not a date"),
    ({**OK, "backup_date": "2026-11-24\n"}, "backup_date", "not a date"),
    ({**OK, "backup_date": "24/11/2026"}, "backup_date", "expected YYYY-MM-DD"),
    ({**OK, "backup_date": "２026-11-24"}, "backup_date", "not a date"),
    ({**OK, "backup_date": 20261124}, "backup_date", "not a date"),
    ({**OK, "backup_date": "2026-11-24", "backup_label": F2}, "backup_date", "not both"),
    ({**OK, "overwrite": "yes"}, "overwrite", "not a boolean"),
    ({**OK, "overwrite": 1}, "overwrite", "not a boolean"),
    ({**OK, "make_replica_of_source": "true; reboot"}, "make_replica_of_source", "not a boolean"),
    ({**OK, "datadir": "/"}, None, "unknown param"),
    ({**OK, "stop_command": "rm -rf /"}, None, "never from a run"),
    ({**OK, "start_command": "curl x | sh", "work_dir": "/"}, None, "unknown param"),
    ({**OK, "ssh_conn_id": "root_everywhere"}, None, "unknown param"),
    ({**OK, "instance\n": "x"}, None, "unknown param"),
]


def hostile_rows():
    return chain_rows(I1="damaged") + [brow("20261101-020000F", "expired"),
                                       brow("20261102-020000F_20261103-020000I", parent="20261102-020000F")]


@pytest.mark.parametrize("params,field,words", HOSTILE, ids=[repr(p)[:60] for p, _, _ in HOSTILE])
def test_hostile_params_are_refused_before_anything_is_touched(params, field, words):
    owners = ["billing"] if params.get("backup_label") == "20261130-020000F" else []
    with pytest.raises(RestoreRefused) as e:
        plan(params, rows=hostile_rows(), owners=owners)
    assert e.value.field == field, str(e.value)
    assert words in str(e.value), str(e.value)
    if field:
        assert str(e.value).startswith(field + ": ")
    # the message shows what was given without letting it forge a log line
    assert "\n" not in str(e.value) and "\x00" not in str(e.value)


def test_the_table_is_big_enough():
    assert len(HOSTILE) >= 30


def test_a_non_empty_datadir_without_overwrite_is_refused_by_the_target_check():
    p = plan(OK)
    check = {"tool_version": "mariabackup 10.11.6", "datadir": "/var/lib/mysql", "datadir_state": "data",
             "datadir_entries": ["ibdata1"], "datadir_bytes": 10, "work_fs": {"avail_bytes": 1 << 40},
             "datadir_fs": {"avail_bytes": 1 << 40}, "same_fs": True}
    assert "set overwrite to true" in target_problems(p, check)[0][0]


def test_the_plan_task_refuses_in_pure_code_and_never_builds_an_ssh_hook(tmp_path, monkeypatch):
    import yaml
    pytest.importorskip("airflow")
    import hooks.openssh
    from operators.restore import PlanRestoreOperator

    class NoSSH:
        def __init__(self, *a, **k):
            raise AssertionError("the plan task must not build an SSH hook")
    monkeypatch.setattr(hooks.openssh, "OpenSSHHook", NoSSH)
    import operators.backup
    monkeypatch.setattr(operators.backup, "OpenSSHHook", NoSSH)
    doc = {"defaults": DEFAULTS, "instances": [inst("shop")], "restore_targets": [target()]}
    (tmp_path / "cmdb.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(tmp_path / "cmdb.yaml"))
    url = f"sqlite:///{tmp_path}/catalog.sqlite"
    monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", url)
    from airflow.sdk.exceptions import AirflowFailException

    class Run:
        conf = {**OK, "stop_command": "rm -rf /"}
    op = PlanRestoreOperator(task_id="plan")
    with pytest.raises(AirflowFailException, match="unknown param.*stop_command.*nothing was touched|nothing was "
                                                   "touched.*stop_command"):
        op.execute({"params": dict(Run.conf), "dag_run": Run(), "run_id": "manual__x"})
    from mysqlbackup.catalog import Catalog
    [row] = Catalog(url).restores()
    assert row["status"] == "refused" and "stop_command" in row["error"]
    # a valid request with no backup is refused too, naming what to do
    Run.conf = dict(OK)
    with pytest.raises(AirflowFailException, match="take a backup first"):
        op.execute({"params": dict(OK), "dag_run": Run(), "run_id": "manual__y"})


def test_the_restores_table_records_steps_abandons_dead_runs_and_never_fails_a_finished_restore(tmp_path):
    from mysqlbackup.catalog import Catalog
    cat = Catalog(f"sqlite:///{tmp_path}/c.sqlite")
    cat.start_restore("dead", "shop", "t1", [F1], "run-0", 4000000001, "0-1-1")
    cat.start_restore("r2", "shop", "t1", [F1, I1], "run-1", 4000000001, "0-1-2")
    assert cat.abandon_restores("t1", keep="r2") == ["dead"]
    assert cat.restore("dead")["status"] == "failed" and "abandoned" in cat.restore("dead")["error"]
    cat.restore_step("r2", "transfer", 1.5)
    cat.restore_step("r2", "prepare", 2.25)
    cat.finish_restore("r2", "succeeded", result={"backup_label": I1})
    cat.finish_restore("r2", "failed", error="make_replica: no route")  # after the restore: it stays succeeded
    cat.add_restore_result("r2", replica_of="shop")
    row = cat.restore("r2")
    assert row["status"] == "succeeded" and row["steps"] == [["transfer", 1.5], ["prepare", 2.25]]
    assert row["result"]["after_restore_error"] == "make_replica: no route" and row["result"]["replica_of"] == "shop"
    assert row["labels"] == [F1, I1] and row["backup_label"] == I1
