"""mysql_restore_full, the real DAG with dag.test(), over the real sshd, onto a real restore target.

One private sandbox for the module (source, GTID replica, sshd, and the restore target: a datadir and a
port whose server only a restore starts, through sandbox/target_ctl.py over ssh). One chain, full + 2
incrementals, taken by the real backup DAG; each test restores from it and compares CHECKSUM TABLE
... EXTENDED with what the source held at the backup point.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

import dataset

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
TARGET_PY = REPO / "include" / "scripts" / "target.py"
DAG_ID = "mysql_restore_full"


class Chain:
    def __init__(self, sb, tmp: Path):
        self.sb, self.tmp = sb, tmp
        self.cmdb_file = tmp / "cmdb.yaml"
        self.catalog_url = f"sqlite:///{tmp}/catalog.sqlite"
        self.points: list[dict] = []  # per backup: label, source checksums at its point

    def write_cmdb(self) -> None:
        doc = self.sb.cmdb(compress="zstd")
        doc["defaults"]["storage"]["base_dir"] = str(self.tmp / "storage")
        self.cmdb_file.write_text(yaml.safe_dump(doc))

    def run(self, dag_id: str = DAG_ID, conf: dict | None = None):
        from airflow.dag_processing.dagbag import BundleDagBag
        bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")
        assert bag.import_errors == {}
        dr = bag.dags[dag_id].test(run_conf=conf)
        return dr.state, {ti.task_id: ti.state for ti in dr.get_task_instances()}

    def catalog(self):
        from mysqlbackup.catalog import Catalog
        return Catalog(self.catalog_url)

    def status(self) -> dict:
        t = self.sb.target
        res = subprocess.run([sys.executable, str(TARGET_PY), "status", "--datadir", t.datadir, "--host", "127.0.0.1",
                              "--port", str(t.port)], capture_output=True, text=True)
        line = [ln for ln in res.stderr.splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[len("RESULT "):])

    def latest_restore(self) -> dict:
        return self.catalog().restores(target="sandbox_target")[0]


@pytest.fixture(scope="module")
def chain(mariadb_template, airflow_db):
    from sandbox import Sandbox
    state = tempfile.mkdtemp(prefix="mbk-rs-")
    tmp = Path(tempfile.mkdtemp(prefix="mbk-rst-"))
    mp = pytest.MonkeyPatch()
    sb = Sandbox.create(state, replica=True, template=mariadb_template)
    try:
        c = Chain(sb, tmp)
        mp.setenv("MYSQL_BACKUP_CMDB", str(c.cmdb_file))
        mp.setenv("MYSQL_BACKUP_CATALOG_URL", c.catalog_url)
        for conn_id, conn in sb.connections().items():
            mp.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        c.write_cmdb()
        dataset.load(sb.source)
        for n, kind in enumerate(("full", "incremental", "incremental")):
            if n:
                sb.source.sql("INSERT INTO shop.typed (note, amount) SELECT CONCAT('link ', %s), amount FROM "
                              "shop.typed LIMIT 40", (n,))
                sb.source.sql("DELETE FROM shop.no_pk WHERE v = %s", (n,))
            sb.sync_replica()
            sums = dataset.checksums(sb.source)
            gtid = sb.source.sql("SELECT @@gtid_binlog_pos")[0][0]
            state_, tasks = c.run("mysql_backup__sandbox", {"kind": kind})
            assert state_ == "success", tasks
            label = c.catalog().backups(instance="sandbox", status="usable")[0]["label"]
            c.points.append({"label": label, "checksums": sums, "gtid": gtid, "kind": kind})
        assert [p["kind"] for p in c.points] == ["full", "incremental", "incremental"]
        assert len({json.dumps(p["checksums"]) for p in c.points}) == 3  # three different points
        yield c
    finally:
        sb.stop()
        mp.undo()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _restored(c: Chain):
    from sandbox import MariaDB
    t = c.sb.target
    return MariaDB("target", t.base, t.port, 0)


def test_a_chain_of_a_full_and_two_incrementals_restores_to_the_source_at_the_backup_point(chain):
    c = chain
    assert c.status()["restore"] == "none" and not c.status()["running"]
    state, tasks = c.run(conf={"instance": "sandbox", "target": "sandbox_target"})
    assert state == "success", tasks
    assert [t for t, s in tasks.items() if s != "success"] == ["make_replica"] and tasks["make_replica"] == "skipped"
    restored = _restored(c)
    last = c.points[-1]
    assert dataset.checksums(restored) == last["checksums"]
    assert dataset.row_counts(restored) == dataset.row_counts(c.sb.source)
    # at the backup's GTID, with a server_id of its own (never the source's or the replica's)
    assert restored.sql("SELECT @@gtid_slave_pos")[0][0] == last["gtid"]
    sid = restored.sql("SELECT @@server_id")[0][0]
    assert sid not in (1, 2) and sid >= 4_000_000_000
    assert not restored.sql("SHOW ALL SLAVES STATUS")
    row = c.latest_restore()
    assert row["status"] == "succeeded" and row["labels"] == [p["label"] for p in c.points]
    assert row["backup_label"] == last["label"] and row["server_id"] == sid
    steps = [s for s, _ in row["steps"]]
    assert steps == ["check_target", "stop_target", "transfer", "prepare", "copy_back", "fix_ownership",
                     "start_target", "verify_restored", "finish", "report"]
    rep = row["result"]
    assert rep["backup_label"] == last["label"] and rep["target"] == "sandbox_target" and rep["seconds"] > 0
    st = c.status()
    assert st["restore"] == "restored" and st["running"] and st["restored"]["labels"]
    # nothing of the source changed
    assert dataset.checksums(c.sb.source) == last["checksums"]


def test_a_non_empty_datadir_is_refused_without_overwrite_and_backup_date_picks_the_set(chain):
    c = chain
    restored = _restored(c)
    before = dataset.checksums(restored)
    state, tasks = c.run(conf={"instance": "sandbox", "target": "sandbox_target"})
    assert state == "failed" and tasks["check_target"] == "failed" and tasks["stop_target"] != "success", tasks
    row = c.latest_restore()
    assert row["status"] == "failed" and "overwrite" in row["error"] and "not empty" in row["error"], row["error"]
    assert c.status()["running"] and dataset.checksums(restored) == before  # untouched, still serving
    # the full alone finished "two days ago": backup_date of that day restores it (and only it)
    day = (datetime.now(timezone.utc) - timedelta(days=2)).replace(hour=3)
    full = c.points[0]
    with c.catalog().engine.begin() as conn:
        conn.exec_driver_sql("UPDATE backups SET finished_at=? WHERE label=?", (day.replace(tzinfo=None), full["label"]))
    try:
        state, tasks = c.run(conf={"instance": "sandbox", "target": "sandbox_target", "overwrite": True,
                                   "backup_date": day.date().isoformat()})
        assert state == "success", tasks
        assert dataset.checksums(restored) == full["checksums"]
        assert c.latest_restore()["labels"] == [full["label"]]
    finally:
        with c.catalog().engine.begin() as conn:
            conn.exec_driver_sql("UPDATE backups SET finished_at=started_at WHERE label=?", (full["label"],))


@pytest.mark.parametrize("fail_at", ["fix_ownership", "verify_restored"])
def test_a_restore_failed_halfway_leaves_the_target_stopped_and_marked_not_restored(chain, fail_at, monkeypatch):
    c = chain
    import operators.restore as ops
    cls = {"fix_ownership": ops.FixOwnershipOperator, "verify_restored": ops.VerifyRestoredOperator}[fail_at]

    def boom(self, plan, context):
        raise RuntimeError(f"killed in {fail_at} (test)")
    monkeypatch.setattr(cls, "do", boom)
    # and a row a dead worker left running: the next plan marks it failed
    c.catalog().start_restore("dead-one", "sandbox", "sandbox_target", ["x"], "dead-run", 1, None)
    state, tasks = c.run(conf={"instance": "sandbox", "target": "sandbox_target", "overwrite": True})
    assert state == "failed" and tasks[fail_at] == "failed", tasks
    assert tasks["start_target"] == ("success" if fail_at == "verify_restored" else "upstream_failed")
    st = c.status()
    assert st["restore"] == "not_restored" and not st["running"], st
    assert st["marker"]["phase"] in ("copied_back", "started") and st["marker"].get("aborted_at")
    row = c.latest_restore()
    assert row["status"] == "failed" and fail_at in row["error"]
    assert c.catalog().restore("dead-one")["status"] == "failed"
    assert "abandoned" in c.catalog().restore("dead-one")["error"]


def test_make_replica_of_source_yields_a_running_gtid_replica_of_the_primary(chain):
    c = chain
    # after the aborted restores above: a marked datadir is replaced without overwrite
    assert c.status()["restore"] in ("not_restored", "restored")
    state, tasks = c.run(conf={"instance": "sandbox", "target": "sandbox_target", "overwrite": True,
                               "make_replica_of_source": True})
    assert state == "success" and tasks["make_replica"] == "success", tasks
    restored = _restored(c)
    c.sb.source.sql("INSERT INTO shop.typed (note) VALUES ('after the restore')")
    pos = c.sb.source.sql("SELECT @@gtid_binlog_pos")[0][0]
    assert restored.sql("SELECT MASTER_GTID_WAIT(%s, 30)", (pos,))[0][0] == 0
    status = restored.connect().cursor()
    status.execute("SHOW SLAVE STATUS")
    cols = [d[0] for d in status.description]
    s = dict(zip(cols, status.fetchone()))
    assert s["Slave_IO_Running"] == "Yes" and s["Slave_SQL_Running"] == "Yes" and s["Using_Gtid"] == "Slave_Pos"
    assert int(s["Master_Port"]) == c.sb.source.port
    assert dataset.checksums(restored) == dataset.checksums(c.sb.source)
    assert c.latest_restore()["result"]["replica_of"] == "sandbox"
    restored.sql("STOP SLAVE")


def test_bad_params_are_refused_in_plan_with_nothing_touched(chain):
    c = chain
    t = Path(c.sb.target.datadir)
    before = sorted(p.name for p in t.iterdir())
    mtime = t.stat().st_mtime_ns
    for conf, field in ((dict(instance="sandbox", target="sandbox_target", datadir="/"), "datadir"),
                        (dict(instance="sandbox", target="sandbox_target", backup_label="20000101-000000F"),
                         "backup_label")):
        state, tasks = c.run(conf=conf)
        assert state == "failed" and tasks["plan"] == "failed" and tasks["check_target"] != "success", tasks
        row = c.catalog().restores(target="sandbox_target")[0]
        assert row["status"] == "refused" and field in row["error"], row["error"]
    assert sorted(p.name for p in t.iterdir()) == before and t.stat().st_mtime_ns == mtime


def test_a_drill_restores_the_instance_checks_it_and_records_its_rto(chain):
    c = chain
    doc = yaml.safe_load(c.cmdb_file.read_text())
    doc["restore_targets"][0]["drill"] = True
    doc.setdefault("platform", {})["drill_max_per_target"] = 1
    c.cmdb_file.write_text(yaml.safe_dump(doc))
    try:
        started = datetime.now(timezone.utc)
        state, tasks = c.run("mysql_restore_drill")
        assert state == "success", tasks
        for step in ("plan", "transfer", "verify_restored", "replay", "finish", "check_restored", "record"):
            assert tasks[f"sandbox_target_1.{step}"] == "success", (step, tasks)
        drills = c.catalog().drills(instance="sandbox")
        assert len(drills) == 1
        d = drills[0]
        assert d["result"] == "succeeded" and d["target"] == "sandbox_target" and d["error"] is None
        assert d["backup_label"] == c.points[-1]["label"]
        assert d["rto_seconds"] > 0 and d["rpo_seconds"] is not None and d["rpo_seconds"] >= 0
        steps = [s for s, _ in d["details"]["steps"]]
        assert steps[:3] == ["check_target", "stop_target", "transfer"] and "check_restored" in steps
        check = d["details"]["check"]
        assert check["checked"] == check["tables"] > 0 and check["check_errors"] == [] and check["source_reachable"]
        assert dataset.checksums(_restored(c)) == c.points[-1]["checksums"]
        assert c.catalog().last_successful_drills()["sandbox"] >= started.replace(microsecond=0) - timedelta(seconds=1)
        # the next run: nothing is due (drilled just now), nothing restored, no alert
        state, tasks = c.run("mysql_restore_drill")
        assert state == "success", tasks
        assert tasks["sandbox_target_1.plan"] == "skipped" and tasks["drill_alerts"] == "success"
        assert len(c.catalog().drills(instance="sandbox")) == 1
    finally:
        c.write_cmdb()
