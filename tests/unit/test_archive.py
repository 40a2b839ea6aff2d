"""The binlog archive without servers: continuity, gaps, recovery window, coverage (mysqlbackup.archive),
the host script's binlog walk and archive layout (binlog_archive.py), the policy fields, the DAG, the catalog."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

import binlog_archive as H
from mysqlbackup import archive as A

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def f(identity: str, n: int, start: str, end: str, t0: int, t1: int, state: str = "closed", **kw) -> A.ArchivedFile:
    return A.ArchivedFile(identity=identity, name=f"binlog.{n:06d}", state=state,
                          start_state=A.parse_gtid_state(start), end_state=A.parse_gtid_state(end),
                          first_event_at=T0 + timedelta(minutes=t0), last_event_at=T0 + timedelta(minutes=t1),
                          archived_at=T0 + timedelta(minutes=t1), **kw)


def backup(label: str, gtid: str | None, minute: int) -> A.BackupPoint:
    return A.BackupPoint(label, T0 + timedelta(minutes=minute), A.parse_gtid_state(gtid))


# ------------------------------------------------------------------------------------------------ GTID states


@pytest.mark.parametrize("text, state", [
    ("0-1-100", {0: (1, 100)}),
    ("0-1-100,1-2-7", {0: (1, 100), 1: (2, 7)}),
    (" 1-2-7 ,\n0-1-100 ", {0: (1, 100), 1: (2, 7)}),
    ("", {}),
    (None, None),
    ("0-1", None),
    ("zero-1-1", None),
])
def test_gtid_states_parse(text, state):
    assert A.parse_gtid_state(text) == state
    if state:
        assert A.parse_gtid_state(A.format_gtid_state(state)) == state


# ------------------------------------------------------------------------------------------------ gaps

CHAIN = [f("1-aa", 1, "", "0-1-10", 0, 10), f("1-aa", 2, "0-1-10", "0-1-20", 10, 20),
         f("1-aa", 3, "0-1-20", "0-1-30", 20, 30, state="open")]


def test_consecutive_files_that_continue_each_other_have_no_gap():
    assert A.find_gaps(CHAIN) == []


@pytest.mark.parametrize("files, kind, lo, hi", [
    # the file was purged before it was archived to its end, the next one archived from the server
    ([f("1-aa", 1, "", "0-1-10", 0, 10, state="incomplete"), f("1-aa", 4, "0-1-40", "0-1-45", 40, 45)],
     "purged", 10, 40),
    # whole files purged before the streamer got to them
    ([f("1-aa", 1, "", "0-1-10", 0, 10), f("1-aa", 4, "0-1-40", "0-1-45", 40, 45)], "missing_files", 10, 40),
    # consecutive files, and yet the Gtid_list skips transactions
    ([f("1-aa", 1, "", "0-1-10", 0, 10), f("1-aa", 2, "0-1-12", "0-1-15", 10, 15)], "state_mismatch", 10, 12),
    # a failover onto a server whose archive begins after the old primary's last archived transaction
    ([f("1-aa", 1, "", "0-1-10", 0, 10), f("2-bb", 7, "0-1-14", "0-2-20", 11, 20)], "failover", 10, 14),
])
def test_holes_in_the_archive_are_gaps(files, kind, lo, hi):
    [gap] = A.find_gaps(files)
    assert (gap.kind, gap.domain, gap.lo, gap.hi, gap.transactions) == (kind, 0, lo, hi, hi - lo)
    assert gap.after is files[0] and gap.before is files[1]
    assert gap.from_time == files[0].last_event_at and gap.to_time == files[1].first_event_at
    assert gap.key == f"gtid 0:{lo}..{hi}"
    assert gap.row()["missing"] == gap.missing and f"0-1-{lo + 1}" in gap.missing


def test_a_failover_onto_a_replica_that_holds_the_history_is_no_gap():
    # the promoted replica's own binlog (log_slave_updates) holds every transaction since its start
    files = [*CHAIN, f("2-bb", 1, "", "0-1-25", 5, 25), f("2-bb", 2, "0-1-25", "0-2-40", 25, 40, state="open")]
    assert A.find_gaps(files) == []
    # and it bridges a hole in the old primary's archive
    files = [CHAIN[0], CHAIN[2], f("2-bb", 1, "", "0-1-25", 5, 25)]
    assert A.find_gaps(files) == []


def test_gaps_are_judged_per_domain():
    files = [f("1-aa", 1, "", "0-1-10,1-1-3", 0, 10), f("1-aa", 2, "0-1-10,1-1-5", "0-1-20,1-1-6", 10, 20)]
    [gap] = A.find_gaps(files)
    assert (gap.domain, gap.lo, gap.hi) == (1, 3, 5)


def test_damaged_files_and_files_without_a_gtid_list_take_no_part():
    damaged = f("1-aa", 2, "0-1-10", "0-1-20", 10, 20, state="damaged")
    [gap] = A.find_gaps([CHAIN[0], damaged, CHAIN[2]])
    assert (gap.lo, gap.hi) == (10, 20)
    mysql = A.ArchivedFile("1-aa", "binlog.000002", "closed")
    assert A.find_gaps([CHAIN[0], mysql]) == []


# ------------------------------------------------------------------------------------------------ recovery window


def test_recovery_window_without_gaps_reaches_the_archive_head():
    until = T0 + timedelta(minutes=31)
    w = A.recovery_window(CHAIN, [backup("b1", "0-1-5", 5), backup("b2", "0-1-25", 25)], until)
    assert (w.earliest, w.latest) == (T0 + timedelta(minutes=5), until)
    assert w.windows == [(T0 + timedelta(minutes=5), until)] and w.blocks == [] and w.gaps == []


def test_a_gap_blocks_the_pitr_of_every_backup_before_it_and_no_other():
    files = [f("1-aa", 1, "", "0-1-10", 0, 10, state="incomplete"), f("1-aa", 4, "0-1-40", "0-1-50", 40, 50),
             f("1-aa", 5, "0-1-50", "0-1-60", 50, 60, state="open")]
    until = T0 + timedelta(minutes=60)
    w = A.recovery_window(files, [backup("old", "0-1-5", 5), backup("mid", "0-1-20", 20),
                                  backup("new", "0-1-45", 45)], until)
    [gap] = w.gaps
    by_label = {r.label: r for r in w.reach}
    # the older backup rolls forward to the last event before the gap; the one inside the gap not at all
    assert by_label["old"].until == gap.from_time == T0 + timedelta(minutes=10)
    assert by_label["mid"].until == by_label["mid"].start
    assert by_label["new"].until == until and by_label["new"].crosses == []
    assert sorted((b["label"], b["gap_key"]) for b in w.blocks) == [("mid", gap.key), ("old", gap.key)]
    assert all("point-in-time" in b["detail"] for b in w.blocks)
    assert w.windows == [(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)),
                         (T0 + timedelta(minutes=20), T0 + timedelta(minutes=20)),
                         (T0 + timedelta(minutes=45), until)]
    assert (w.earliest, w.latest) == (T0 + timedelta(minutes=5), until)
    assert w.summary()["backups"]["old"]["blocked_by"] == [gap.key]


def test_a_backup_older_than_the_archive_cannot_be_rolled_forward():
    files = [f("1-aa", 7, "0-1-100", "0-1-110", 0, 10, state="open")]
    w = A.recovery_window(files, [backup("ancient", "0-1-40", -60), backup("fresh", "0-1-105", 5)],
                          T0 + timedelta(minutes=10))
    [gap] = w.gaps
    assert gap.kind == "before_archive" and (gap.lo, gap.hi) == (40, 100) and "before the archive" in gap.key
    assert [(b["label"], b["gap_key"]) for b in w.blocks] == [("ancient", gap.key)]
    assert {r.label: r.until for r in w.reach}["ancient"] == T0 - timedelta(minutes=60)
    # the key does not change when the oldest backup that needs it does
    w2 = A.recovery_window(files, [backup("b", "0-1-70", -30)], T0)
    assert w2.gaps[0].key == gap.key


def test_backups_without_a_gtid_are_not_placed_and_no_backups_no_window():
    w = A.recovery_window(CHAIN, [backup("nogtid", None, 5)], T0)
    assert w.unplaced == ["nogtid"] and w.earliest is None and w.windows == []


# ------------------------------------------------------------------------------------------------ coverage of a window


def test_files_covering_a_time_window():
    cov = A.covering_files(CHAIN, start=T0 + timedelta(minutes=12), stop=T0 + timedelta(minutes=25))
    assert [x.name for x in cov.files] == ["binlog.000002", "binlog.000003"] and cov.complete
    # past the last archived event
    cov = A.covering_files(CHAIN, start=T0 + timedelta(minutes=25), stop=T0 + timedelta(minutes=45))
    assert not cov.complete and "after the last archived event" in cov.uncovered[0]
    # ... unless the archive is known complete up to then
    cov = A.covering_files(CHAIN, start=T0 + timedelta(minutes=25), stop=T0 + timedelta(minutes=45),
                           archived_until=T0 + timedelta(minutes=50))
    assert cov.complete
    # before the archive began
    cov = A.covering_files(CHAIN[1:], start=T0, stop=T0 + timedelta(minutes=15))
    assert "before the first archived file" in cov.uncovered[0]


def test_a_window_across_a_gap_says_what_is_not_covered():
    files = [f("1-aa", 1, "", "0-1-10", 0, 10, state="incomplete"), f("1-aa", 4, "0-1-40", "0-1-50", 40, 50)]
    cov = A.covering_files(files, start=T0, stop=T0 + timedelta(minutes=45))
    assert len(cov.files) == 2 and not cov.complete and "chain breaks" in cov.uncovered[0]
    cov = A.covering_files(files, start_gtid="0-1-5", stop_gtid="0-1-45")
    assert not cov.complete and "chain breaks" in cov.uncovered[0]


def test_files_covering_a_gtid_and_a_position_window():
    cov = A.covering_files(CHAIN, start_gtid="0-1-15", stop_gtid="0-1-21")
    assert [x.name for x in cov.files] == ["binlog.000002", "binlog.000003"] and cov.complete
    cov = A.covering_files(CHAIN, start_gtid="0-1-25")
    assert [x.name for x in cov.files] == ["binlog.000003"] and cov.complete
    cov = A.covering_files(CHAIN, start_gtid="0-1-31", stop_gtid="0-1-40")
    assert cov.files == [] and cov.uncovered
    cov = A.covering_files(CHAIN, start_position=("binlog.000001", 4), stop_position=("binlog.000002", 900))
    assert [x.name for x in cov.files] == ["binlog.000001", "binlog.000002"] and cov.complete
    cov = A.covering_files(CHAIN, start_position=("binlog.000009", 4))
    assert not cov.complete and "no archived file" in cov.uncovered[0]
    with pytest.raises(ValueError, match="exactly one"):
        A.covering_files(CHAIN, start=T0, start_gtid="0-1-1")


# ------------------------------------------------------------------------------------------------ the host script


def event(etype: int, body: bytes, pos: int, ts: int = 1_800_000_000, server_id: int = 1, flags: int = 0) -> bytes:
    size = 19 + len(body) + 4
    head = struct.pack("<IBIIIH", ts, etype, server_id, size, pos + size, flags)
    return head + body + struct.pack("<I", zlib.crc32(head + body) & 0xFFFFFFFF)


def fde_body(created: int = 0) -> bytes:
    return struct.pack("<H", 4) + b"10.11.19-MariaDB".ljust(50, b"\0") + struct.pack("<I", created) + bytes([19]) \
        + bytes(range(40)) + bytes([1])


def binlog(start=((0, 1, 10),), gtids=(11, 12, 13), rotate: bool = True, ts0: int = 1_800_000_000) -> bytes:
    out = bytearray(H.MAGIC)
    out += event(H.FDE_EVENT, fde_body(), len(out), ts0)
    out += event(H.GTID_LIST_EVENT, struct.pack("<I", len(start)) + b"".join(
        struct.pack("<IIQ", d, s, q) for d, s, q in start), len(out), ts0)
    for i, seq in enumerate(gtids):
        out += event(H.GTID_EVENT, struct.pack("<QIB", seq, 0, 0) + b"\0" * 6, len(out), ts0 + i + 1)
        out += event(16, struct.pack("<Q", seq), len(out), ts0 + i + 1)  # XID
    if rotate:
        out += event(H.ROTATE_EVENT, struct.pack("<Q", 4) + b"binlog.000002", len(out), ts0 + 9)
    return bytes(out)


def test_the_host_script_walks_a_binlog_like_the_server_wrote_it(tmp_path):
    p = tmp_path / "binlog.000001"
    data = binlog()
    p.write_bytes(data)
    s = H.scan_binlog(str(p), sha=True)
    assert s["problem"] is None and s["end"] == len(data) and s["alg"] == H.CRC32_ALG
    rec = H.summary("binlog.000001", "1-aa", "closed", s)
    assert rec["start_gtid_state"] == "0-1-10" and rec["end_gtid_state"] == "0-1-13"
    assert (rec["first_gtid"], rec["last_gtid"], rec["transactions"]) == ("0-1-11", "0-1-13", 3)
    assert (rec["first_event_at"], rec["last_event_at"], rec["ended_by"]) == (1_800_000_000, 1_800_000_009, "rotate")
    import hashlib
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    # the same file read by the project's own binlog reader: the same GTIDs
    from mysqlbackup.binlog.reader import iter_file_events
    assert sum(1 for ev in iter_file_events(p) if ev.type == H.GTID_EVENT) == 3


def test_a_partial_last_event_is_never_counted_and_recovery_truncates_it(tmp_path):
    p = tmp_path / "binlog.000001.open"
    data = binlog(rotate=False)
    p.write_bytes(data + binlog()[len(data):len(data) + 20])  # half of the next event
    s = H.scan_binlog(str(p))
    assert s["end"] == len(data) and s["problem"].startswith("partial event")
    assert H.recover_open(str(p)) == len(data) and p.read_bytes() == data
    # a flipped byte inside an event: the walk stops before it
    bad = bytearray(data)
    bad[-10] ^= 1
    p.write_bytes(bytes(bad))
    s = H.scan_binlog(str(p))
    assert s["problem"].startswith("checksum mismatch") and s["end"] < len(data)
    # not a binlog at all: recovery starts the file over
    p.write_bytes(b"junk")
    assert H.recover_open(str(p)) == 0 and p.read_bytes() == b""


def test_the_open_file_is_walked_incrementally(tmp_path):
    p = tmp_path / "binlog.000001.open"
    full = binlog(gtids=(11, 12, 13, 14, 15), rotate=False)
    cut = binlog(gtids=(11, 12), rotate=False)
    p.write_bytes(full[:len(cut) + 7])
    first = H.scan_binlog(str(p))
    assert first["end"] == len(cut) and first["last_gtid"] == "0-1-12"
    p.write_bytes(full)
    again = H.scan_binlog(str(p), prev=json.loads(json.dumps(H.scan_for_json(first))))
    whole = H.scan_binlog(str(p))
    for key in ("end", "transactions", "last_gtid", "first_gtid", "first_ts", "last_ts", "events"):
        assert again[key] == whole[key], key
    assert H.gtid_text(again["state"]) == "0-1-15"


def test_a_resumed_dump_resends_the_format_description_with_created_zeroed():
    ours = event(H.FDE_EVENT, fde_body(created=1_800_000_000), 4)
    resent = bytearray(event(H.FDE_EVENT, fde_body(created=0), 4))
    resent[13:17] = b"\0\0\0\0"  # log_pos 0
    assert H.same_fde(ours, bytes(resent))
    other = event(H.FDE_EVENT, fde_body(created=0).replace(b"10.11.19", b"10.11.20"), 4)
    assert not H.same_fde(ours, other)


def test_server_identities_and_the_archive_layout(tmp_path):
    assert H.identity_of(1, "Jj/qGaIkptiRH5SMArA0txJXhpQ=") == "1-263fea19a224"
    assert H.identity_of(7, "3E11FA47-71CA-11E1-9E33-C80AA9429562") == "7-3e11fa4771ca"
    for name in ("binlog.000001", "binlog.000002.open", "binlog.000003.incomplete", "identity.json", "x.tmp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".spool").mkdir()
    assert H.list_identity(str(tmp_path)) == {"binlog.000001": "closed", "binlog.000002": "open",
                                              "binlog.000003": "incomplete"}
    # a closed file wins over a stale open copy of it
    (tmp_path / "binlog.000001.open").write_bytes(b"")
    assert H.list_identity(str(tmp_path))["binlog.000001"] == "closed"


def test_every_verb_documents_itself_and_ends_with_a_result_line():
    for verb in ("supervise", "stream", "stop", "scan"):
        r = subprocess.run([sys.executable, str(REPO / "include/scripts/binlog_archive.py"), verb, "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and "--dir" in r.stdout + r.stderr or "--file" in r.stdout, verb
        assert r.stderr.strip().splitlines()[-1].startswith("RESULT "), verb
    r = subprocess.run([sys.executable, str(REPO / "include/scripts/binlog_archive.py"), "supervise", "--dir", "rel",
                        "--host", "h", "--port", "1", "--client-server-id", "5"], input="", capture_output=True,
                       text=True)
    assert r.returncode == 2 and json.loads(r.stderr.splitlines()[-1][7:])["exit_code"] == 2


def test_the_bundle_ships_the_streamer():
    from mysqlbackup.remote import SCRIPT_FILES, ScriptBundle
    assert "binlog_archive.py" in SCRIPT_FILES
    assert ScriptBundle.build().digest


# ------------------------------------------------------------------------------------------------ policy, DAG


def cmdb_doc(tmp_path: Path, rows: list[dict], **policy) -> Path:
    base = {"host": "db.example.internal", "port": 3306, "flavor": "mariadb", "ssh_conn_id": "ssh_db",
            "mysql_conn_id": "mysql_backup", "owner": "dba@example.internal", "app": "shop"}
    doc = {"defaults": {"storage": {"ssh_conn_id": "store1", "base_dir": "/srv/backups"}, "policy": policy},
           "instances": [{**base, **r} for r in rows]}
    path = tmp_path / "cmdb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("archive, field, words", [
    ({"lag_alert_seconds": "soon"}, "lag_alert_seconds", "not a duration"),
    ({"lag_alert_seconds": 0}, "lag_alert_seconds", "not a duration"),
    ({"lag_alert_seconds": "5 minutes"}, "lag_alert_seconds", "not a duration"),
    ({"lease_minutes": 0}, "lease_minutes", "1..1440"),
    ({"schedule": "*/10 * * * *", "lease_minutes": 5}, "lease_minutes", "stop between runs"),
    ({"schedule": "@daily"}, "lease_minutes", "a day or more"),
    ({"schedule": "every minute"}, "schedule", "expected a 5-field cron"),
    ({"gap_alert": "yes"}, "gap_alert", "true or false"),
    ({"client_server_id": 0}, "client_server_id", "1..4294967295"),
    ({"conn_id": "bad conn"}, "conn_id", "connection id"),
    ({"lease_minute": 5}, "lease_minute", "did you mean 'lease_minutes'"),
])
def test_an_archive_policy_that_cannot_work_is_a_cmdb_error_naming_row_and_field(tmp_path, archive, field, words):
    from mysqlbackup.cmdb import load_cmdb
    cmdb = load_cmdb(cmdb_doc(tmp_path, [{"name": "good", "role": "primary"},
                                         {"name": "bad", "role": "primary", "policy": {"binlog_archive": archive}}]))
    [err] = cmdb.errors
    assert err.row == 2 and err.name == "bad" and err.field == f"policy.binlog_archive.{field}", err
    assert words in err.message, err.message
    assert [i.name for i in cmdb.instances] == ["good"]


@pytest.mark.parametrize("value, seconds", [(90, 90), ("90s", 90), ("5m", 300), ("2h", 7200), ("1d", 86400)])
def test_lag_thresholds_are_durations(tmp_path, value, seconds):
    from mysqlbackup.cmdb import load_cmdb
    cmdb = load_cmdb(cmdb_doc(tmp_path, [{"name": "a", "role": "primary"}],
                              binlog_archive={"lag_alert_seconds": value}))
    assert cmdb.errors == () and cmdb.instances[0].policy.binlog_archive.lag_alert_seconds == seconds


def test_archive_defaults_merge_and_who_is_archived(tmp_path):
    from mysqlbackup.cmdb import BinlogArchivePolicy, load_cmdb
    cmdb = load_cmdb(cmdb_doc(tmp_path, [
        {"name": "p", "role": "primary"},
        {"name": "r", "role": "replica", "replica_of": "p"},
        {"name": "r2", "role": "replica", "replica_of": "p", "policy": {"binlog_archive": {"enabled": True}}},
        {"name": "off", "role": "primary", "policy": {"binlog_archive": {"enabled": False, "lease_minutes": 20}}},
    ], binlog_archive={"lease_minutes": 15}))
    assert cmdb.errors == ()
    by = {i.name: i for i in cmdb.instances}
    assert by["p"].policy.binlog_archive == BinlogArchivePolicy(lease_minutes=15)
    assert by["off"].policy.binlog_archive.lease_minutes == 20
    assert {n: A.archive_enabled(i) for n, i in by.items()} == {"p": True, "r": False, "r2": True, "off": False}
    ids = {A.client_server_id(i) for i in by.values()}
    assert len(ids) == 4 and all(1_000_000_000 <= x < 4_000_000_000 for x in ids)
    assert A.archive_dir(by["p"]) == "/srv/backups/p/binlog"


def test_the_supervisor_dag_is_one_short_task_per_archived_instance(monkeypatch, tmp_path):
    path = cmdb_doc(tmp_path, [{"name": "p", "role": "primary"}, {"name": "r", "role": "replica", "replica_of": "p"},
                               {"name": "q", "role": "primary",
                                "policy": {"binlog_archive": {"schedule": "*/2 * * * *"}}}])
    monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(path))
    from airflow.dag_processing.dagbag import BundleDagBag
    bag = BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=str(REPO / "dags"), bundle_name="dags-folder")
    assert bag.import_errors == {}
    assert {d for d in bag.dag_ids if d.startswith("mysql_binlog__")} == {"mysql_binlog__p", "mysql_binlog__q"}
    dag = bag.dags["mysql_binlog__p"]
    assert [t.task_id for t in dag.tasks] == ["supervise_archive"]
    assert dag.max_active_runs == 1 and dag.timetable.summary == "* * * * *"
    assert bag.dags["mysql_binlog__q"].timetable.summary == "*/2 * * * *"
    task = dag.get_task("supervise_archive")
    assert task.execution_timeout == timedelta(minutes=5) and task.retries == 0 and task.on_failure_callback
    assert "binlog" in dag.tags


# ------------------------------------------------------------------------------------------------ the catalog


def rec(name: str, state: str, **kw) -> dict:
    base = {"identity": "1-aa", "name": name, "state": state, "size": 100, "sha256": None, "first_event_at": 1_800_000_000,
            "last_event_at": 1_800_000_060, "start_gtid_state": "0-1-1", "end_gtid_state": "0-1-5"}
    return {**base, **kw}


def test_the_catalog_keeps_archived_files_gaps_and_pitr_blocks(tmp_path):
    from mysqlbackup.catalog import Catalog
    with Catalog(f"sqlite:///{tmp_path}/c.sqlite") as cat:
        assert cat.binlog_known("i") == {}
        changed = cat.record_binlog_files("i", [rec("binlog.000001", "closed", sha256="ab" * 32),
                                                rec("binlog.000002", "open")], "store1", "/srv/b/i/binlog")
        assert [c[1] for c in changed] == ["binlog.000001", "binlog.000002"]
        # a late report of an older scan never reopens a closed file
        cat.record_binlog_files("i", [rec("binlog.000001", "open")], "store1", "/srv/b/i/binlog")
        rows = {r["name"]: r for r in cat.binlog_files("i")}
        assert rows["binlog.000001"]["state"] == "closed" and rows["binlog.000001"]["closed_at"]
        assert rows["binlog.000002"]["storage_path"] == "/srv/b/i/binlog/1-aa/binlog.000002.open"
        assert rows["binlog.000001"]["first_event_at"] == "2027-01-15T08:00:00Z"
        assert cat.binlog_known("i") == {"1-aa": {"closed_upto": "binlog.000001", "closed_count": 1}}
        # gaps: recorded once, alerted once, resolved when no longer found, reopened when found again
        gap = {"gap_key": "gtid 0:5..9", "kind": "purged", "missing": "0-1-6 .. 0-1-9", "from_time": 1_800_000_060}
        [row] = cat.record_gaps("i", [gap])
        assert row["alerted_at"] is None and row["from_time"] == "2027-01-15T08:01:00Z"
        cat.mark_gap_alerted("i", "gtid 0:5..9")
        [row] = cat.record_gaps("i", [gap])
        assert row["alerted_at"]
        assert cat.record_gaps("i", []) == [] and cat.binlog_gaps("i") == []
        assert len(cat.binlog_gaps("i", include_resolved=True)) == 1
        [row] = cat.record_gaps("i", [gap])
        assert row["resolved_at"] is None
        # PITR blocks are the current truth; the backup's status is not touched
        cat.record_pitr_blocks("i", [{"label": "L1", "gap_key": "gtid 0:5..9", "pitr_until": 1_800_000_060,
                                      "detail": "d"}, {"label": "L2", "gap_key": "gtid 0:5..9"}])
        cat.record_pitr_blocks("i", [{"label": "L1", "gap_key": "gtid 0:5..9", "pitr_until": 1_800_000_060}])
        assert [b["label"] for b in cat.pitr_blocks("i")] == ["L1"] and cat.pitr_blocks("i", "L2") == []
        cat.record_archive_state("i", lag_seconds=3.0, caught_up=0, measured_at=1_800_000_100)
        cat.record_archive_state("i", lag_alerted_at=datetime(2027, 1, 15, tzinfo=timezone.utc))
        state = cat.archive_state("i")
        assert state["lag_seconds"] == 3.0 and state["lag_alerted_at"] == "2027-01-15T00:00:00Z"


# ------------------------------------------------------------------------------------------------ alerts, once


def test_lag_and_gap_alert_once_per_incident(tmp_path, monkeypatch):
    from mysqlbackup.catalog import Catalog
    from mysqlbackup.cmdb import load_cmdb
    from operators import archive as op_archive
    monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", f"sqlite:///{tmp_path}/c.sqlite")
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(op_archive, "send_incident", lambda name, owner, app, alerts, event, what, message, ctx:
                        sent.append((event, what)) or [])
    inst = load_cmdb(cmdb_doc(tmp_path, [{"name": "p", "role": "primary"}],
                              binlog_archive={"lag_alert_seconds": "1m"})).instances[0]
    op = op_archive.BinlogSuperviseOperator.for_instance(inst, task_id="supervise_archive")

    def judge(lag, caught_up, files=()):
        with Catalog() as cat:
            cat.record_binlog_files("p", list(files), "store1", "/srv/backups/p/binlog")
        return op.judge({"lag_seconds": lag, "caught_up": caught_up, "measured_at": 1_800_000_000,
                         "last_event_at": 1_800_000_000 - (lag or 0), "identity": "1-aa"}, {})

    judge(0, True)
    assert sent == []
    judge(90, False)
    judge(120, False)
    assert sent == [("LAG", "binlog archive lag 90 s")]
    out = judge(0, True)
    assert out["caught_up"] and Catalog().archive_state("p")["lag_alerted_at"] is None
    judge(200, False)
    assert [e for e, _ in sent] == ["LAG", "LAG"]
    # a gap (a file purged before it was archived to its end) alerts once, however many runs see it
    files = [rec("binlog.000001", "incomplete", end_gtid_state="0-1-5"),
             rec("binlog.000004", "open", start_gtid_state="0-1-9", end_gtid_state="0-1-12")]
    for _ in range(3):
        out = judge(0, True, files)
    assert [e for e, _ in sent] == ["LAG", "LAG", "GAP"] and out["gaps"][0]["kind"] == "purged"
    assert "0-1-6 .. 0-1-9" in out["gaps"][0]["missing"]
    # a streamer that cannot stream (no head, nothing to measure) fails the run instead of passing silently
    from airflow.sdk.exceptions import AirflowException
    with pytest.raises(AirflowException, match="Access denied"):
        op.judge({"lag_seconds": None, "caught_up": False, "identity": None,
                  "streamer": {"state": "waiting", "last_error": "query failed: Access denied for user"}}, {})


def test_a_stalled_streamer_is_told_from_a_quiet_one(tmp_path):
    idir = tmp_path / "1-aa"
    idir.mkdir()
    data = binlog(rotate=False)
    (idir / "binlog.000003.open").write_bytes(data)
    server = {"reachable": True, "identity": "1-aa", "file": "binlog.000003", "pos": len(data) + 500,
              "now": 1_800_000_100, "binlogs": [("binlog.000003", len(data) + 500)]}
    status = {"state": "streaming", "head_bytes": len(data), "grew_at": 0}
    assert "stalled" in H.stall_reason(str(tmp_path), server, status, 60)
    assert H.stall_reason(str(tmp_path), dict(server, pos=len(data)), status, 60) == ""  # nothing to fetch
    import time as _time
    assert H.stall_reason(str(tmp_path), server, dict(status, grew_at=_time.time()), 60) == ""  # still growing
    lag = H.measure_lag(str(tmp_path), "1-aa", server)
    assert not lag["caught_up"] and lag["lag_bytes"] == 500 and lag["lag_seconds"] == 100 - 3
    lag = H.measure_lag(str(tmp_path), "1-aa", dict(server, pos=len(data)))
    assert lag["caught_up"] and lag["lag_seconds"] == 0 and lag["head_file"] == "binlog.000003"


def test_storage_list_does_not_take_the_binlog_archive_for_a_backup(tmp_path):
    (tmp_path / "inst" / "binlog" / "1-aa").mkdir(parents=True)
    (tmp_path / "inst" / "binlog" / "1-aa" / "binlog.000001").write_bytes(b"x")
    (tmp_path / "inst" / "20261124-000000F").mkdir()
    r = subprocess.run([sys.executable, str(REPO / "include/scripts/storage.py"), "list", "--dir", str(tmp_path)],
                       capture_output=True, text=True)
    res = json.loads(r.stderr.strip().splitlines()[-1][len("RESULT "):])
    assert r.returncode == 0 and res["incomplete"] == [str(tmp_path / "inst" / "20261124-000000F")]


def test_a_run_checksums_at_most_its_budget_and_reports_files_in_order(tmp_path):
    idir = tmp_path / "1-aa"
    idir.mkdir()
    for n in (1, 2, 3):
        (idir / f"binlog.00000{n}").write_bytes(binlog(start=((0, 1, 10 * n),), gtids=(10 * n + 1,)))
    (idir / "binlog.000004.open").write_bytes(binlog(start=((0, 1, 40),), gtids=(41,), rotate=False))
    size = (idir / "binlog.000001").stat().st_size
    files, totals = H.archive_files(str(tmp_path), {}, budget=size)
    assert [r["name"] for r in files] == ["binlog.000001"] and totals["1-aa"]["deferred_from"] == "binlog.000002"
    known = {"1-aa": {"closed_upto": "binlog.000001", "closed_count": 1}}
    files, totals = H.archive_files(str(tmp_path), known, budget=10 * size)
    assert [r["name"] for r in files] == ["binlog.000002", "binlog.000003", "binlog.000004"]
    assert [r["state"] for r in files] == ["closed", "closed", "open"] and all(r["sha256"] for r in files[:2])
    # the catalog disagrees about how many closed files it has: everything is reported again (from sidecars)
    files, _ = H.archive_files(str(tmp_path), {"1-aa": {"closed_upto": "binlog.000003", "closed_count": 2}}, 0)
    assert [r["name"] for r in files] == ["binlog.000001", "binlog.000002", "binlog.000003", "binlog.000004"]
