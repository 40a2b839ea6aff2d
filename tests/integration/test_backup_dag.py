"""The real DAG, run with dag.test() over real SSH against a real MariaDB source and replica.

A backup counts only when restored: every success test extracts, prepares and starts the
stored backup and compares CHECKSUM TABLE ... EXTENDED with the source.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
from email import message_from_bytes
from pathlib import Path

import pytest
import yaml

import dataset
from receivers import BoundController, Hook, Inbox

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


class Env:
    """CMDB, connections, catalog and alert receivers for one test."""

    def __init__(self, sb, tmp_path: Path, monkeypatch, inbox: Inbox, smtp: BoundController, hook: Hook):
        self.sb, self.tmp, self.mp = sb, tmp_path, monkeypatch
        self.inbox, self.hook = inbox, hook
        self.cmdb_file = tmp_path / "cmdb.yaml"
        self.catalog_url = f"sqlite:///{tmp_path}/catalog.sqlite"
        monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(self.cmdb_file))
        monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", self.catalog_url)
        conns = dict(sb.connections())
        conns["smtp_test"] = {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port}
        for conn_id, conn in conns.items():
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        self.write_cmdb()

    def write_cmdb(self, **policy) -> None:
        doc = self.sb.cmdb(**policy)
        doc["defaults"]["storage"]["base_dir"] = str(self.tmp / "storage")
        doc["defaults"]["alerts"] = {"email": {"smtp_conn_id": "smtp_test", "from": "backup@localhost"},
                                     "webhook": {"url": self.hook.url("/hook")}}
        self.cmdb_file.write_text(yaml.safe_dump(doc))

    def run(self, name: str = "sandbox", dag_id: str | None = None, conf: dict | None = None):
        from airflow.dag_processing.dagbag import BundleDagBag
        bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")
        assert bag.import_errors == {}
        dr = bag.dags[dag_id or f"mysql_backup__{name}"].test(run_conf=conf)
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
        return dr.state, states

    def catalog(self):
        from mysqlbackup.catalog import Catalog
        return Catalog(self.catalog_url)

    def storage(self, name: str = "sandbox") -> Path:
        return self.tmp / "storage" / name

    def webhook_alerts(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.hook.requests]


def run_watching(env: Env, watcher, **kw):
    """env.run() while ``watcher(stop_event)`` runs in a thread; the thread is stopped after."""
    stop = threading.Event()
    t = threading.Thread(target=watcher, args=(stop,), daemon=True)
    t.start()
    try:
        return env.run(**kw)
    finally:
        stop.set()
        t.join(5)


@pytest.fixture
def env(sandbox, airflow_db, tmp_path, monkeypatch):
    if not sandbox.source.sql("SHOW DATABASES LIKE 'shop'"):
        dataset.load(sandbox.source)
        sandbox.sync_replica()
    inbox = Inbox()
    smtp = BoundController(inbox)
    smtp.start()
    hook = Hook().start()
    try:
        yield Env(sandbox, tmp_path, monkeypatch, inbox, smtp, hook)
    finally:
        smtp.stop()
        hook.stop()


def test_full_backup_from_the_replica_restores_to_the_source_checksums(env, tmp_path):
    # what a worker that died mid-backup leaves behind: removed by the next backup
    leftover = env.storage() / "20200101-000000F"
    leftover.mkdir(parents=True)
    (leftover / "backup.xbstream.zst.partial").write_bytes(b"half")
    scratch = env.tmp / "storage" / ".scratch" / "sandbox-20200101-000000F"  # a killed verify's extract
    (scratch / "shop").mkdir(parents=True)
    (scratch / "shop" / "t.ibd").write_bytes(b"x" * 4096)
    env.catalog().start_backup("sandbox", "20200101-000000F", "dead-run", "sandbox_replica", "127.0.0.1", 1,
                               "2020-01-01T00:00:00Z", "sandbox_storage", str(leftover))
    state, tasks = env.run()
    assert not leftover.exists() and not scratch.exists()
    [stale] = env.catalog().backups(instance="sandbox", status="failed")
    assert stale["label"] == "20200101-000000F" and "abandoned" in stale["error"]
    assert state == "success", tasks
    [row] = env.catalog().backups(instance="sandbox", status="usable")
    # the primary is protected: the replica was the source
    assert row["source_name"] == "sandbox_replica" and row["source_port"] == env.sb.replica.port
    assert row["verify_status"] == "ok" and row["size_bytes"] > 0
    assert row["gtid"] == env.sb.source.sql("SELECT @@gtid_binlog_pos")[0][0]
    assert row["binlog_file"] and row["to_lsn"] and row["last_lsn"]
    label_dir = Path(row["storage_path"])
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["label"] == row["label"] and manifest["status"] == "usable"
    # from a replica: the source's coordinates are kept beside the replica's own binlog position
    assert manifest["replica_source"]["gtid"] == env.sb.source.sql("SELECT @@gtid_binlog_pos")[0][0]
    sums = (label_dir / "SHA256SUMS").read_text()
    # a table created after the last checkpoint is streamed as .new and renamed by prepare
    assert re.search(r"^[0-9a-f]{64}  shop/typed\.(ibd|new)$", sums, re.M), sums[:500]
    out = subprocess.run(["sha256sum", str(label_dir / manifest["artifact"])], capture_output=True, text=True)
    assert out.stdout.split()[0] == manifest["sha256"]
    # the reserve file on the source host's data filesystem
    reserve = Path(env.sb.replica.base) / ".mysql-backup-reserve-data"
    assert reserve.stat().st_size >= 1 << 20 and reserve.stat().st_blocks * 512 >= reserve.stat().st_size
    # no scratch copy left behind
    assert not any((env.tmp / "storage" / ".scratch").glob("*"))
    # the restore proof
    server, proc = dataset.restore(label_dir, manifest["artifact"], tmp_path)
    try:
        assert dataset.checksums(server) == dataset.checksums(env.sb.source)
        assert dataset.row_counts(server) == dataset.row_counts(env.sb.source)
    finally:
        dataset.cleanup(server, proc, tmp_path)
    assert env.webhook_alerts() == [] and env.inbox.envelopes == []


def test_unhealthy_replica_protects_the_primary_and_alerts_the_owner(env):
    env.sb.replica.sql("STOP SLAVE SQL_THREAD")
    try:
        env.write_cmdb(allow_primary="never")
        state, tasks = env.run()
        assert state == "failed" and tasks["choose_source"] == "failed", tasks
        assert tasks["backup"] != "success"
        [alert] = env.webhook_alerts()
        assert alert["task_id"] == "choose_source" and alert["instance"] == "sandbox"
        assert "sandbox_replica" in alert["error"] and "SQL thread" in alert["error"], alert["error"]
        assert alert["log_url"] and "choose_source" in alert["log_url"]
        assert env.inbox.received.wait(10)
        msg = message_from_bytes(env.inbox.envelopes[0].original_content)
        assert "FAILED sandbox choose_source" in msg["Subject"]
        assert env.inbox.envelopes[0].rcpt_tos == ["dba@localhost"]
        assert env.catalog().backups(instance="sandbox") == []

        # the policy may allow the primary when every replica is unhealthy
        env.write_cmdb(allow_primary="when_replicas_unhealthy")
        state, tasks = env.run()
        assert state == "success", tasks
        [row] = env.catalog().backups(instance="sandbox", status="usable")
        assert row["source_name"] == "sandbox" and row["source_port"] == env.sb.source.port
    finally:
        env.sb.replica.sql("START SLAVE SQL_THREAD")
        env.sb.sync_replica()


def test_storage_too_small_fails_before_anything_is_copied(env):
    env.catalog().start_backup("sandbox", "20200101-000000F", "r", "sandbox_replica", "127.0.0.1", 1,
                               "2020-01-01T00:00:00Z", "sandbox_storage", "/x/sandbox/20200101-000000F")
    # a past backup of 1 PiB: the estimate says the next one will not fit
    with env.catalog().engine.begin() as conn:
        conn.exec_driver_sql("UPDATE backups SET status='usable', size_bytes=? WHERE label='20200101-000000F'",
                             (2 ** 50,))
    state, tasks = env.run()
    assert state == "failed" and tasks["reserve_space"] == "failed", tasks
    [alert] = env.webhook_alerts()
    assert "needs about" in alert["error"] and "free" in alert["error"], alert["error"]
    assert not env.storage().exists() or not any(env.storage().iterdir())


def test_a_failure_in_the_middle_of_a_backup_leaves_nothing_usable(env, monkeypatch):
    # enough data that the stream takes a while; killed as soon as bytes land on storage
    big = env.sb.source
    big.sql("CREATE DATABASE IF NOT EXISTS bulk")
    big.sql("CREATE TABLE IF NOT EXISTS bulk.b (id INT PRIMARY KEY, data LONGBLOB)")
    if big.sql("SELECT COUNT(*) FROM bulk.b")[0][0] == 0:
        for i in range(40):
            big.sql("INSERT INTO bulk.b VALUES (%s, %s)", (i, os.urandom(2 << 20)))
    env.sb.sync_replica()
    env.write_cmdb(compress="none", parallel=1)
    killed = threading.Event()

    def killer(stop):
        while not stop.is_set():
            partial = list(env.storage().glob("*/backup.xbstream.partial"))
            if partial and partial[0].stat().st_size > (4 << 20):
                subprocess.run(["pkill", "-KILL", "-f", f"mariabackup.*--backup.*--port={env.sb.replica.port}"],
                               check=False)
                killed.set()
                return
            time.sleep(0.005)

    ssh_dirs = set(Path(tempfile.gettempdir()).glob("mysql-backup-ssh-*"))
    state, tasks = run_watching(env, killer)
    # the hooks' private key / known_hosts directories are removed even when a task fails
    assert set(Path(tempfile.gettempdir()).glob("mysql-backup-ssh-*")) == ssh_dirs
    assert killed.is_set(), "the backup finished before it could be killed: the test proved nothing"
    assert state == "failed" and tasks["backup"] == "failed", tasks
    assert tasks["verify_backup"] != "success" and tasks["catalog_backup"] != "success"
    assert list(env.storage().rglob("manifest.json")) == []
    assert list(env.storage().glob("*")) == [], "the partial backup directory was not discarded"
    rows = env.catalog().backups(instance="sandbox")
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["error"]
    assert env.catalog().last_usable("sandbox") is None
    [alert] = env.webhook_alerts()
    assert alert["task_id"] == "backup"


def test_the_password_never_reaches_a_command_line_log_xcom_or_storage(env, capfd):
    password = env.sb.backup_password
    seen: list[str] = []
    samples = [0]

    def watch_ps(stop):
        needle = password.encode()
        while not stop.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        if needle in (proc / "cmdline").read_bytes():
                            seen.append((proc / "cmdline").read_bytes().decode(errors="replace"))
                    except OSError:
                        pass
            samples[0] += 1
            time.sleep(0.002)

    state, tasks = run_watching(env, watch_ps)
    assert state == "success", tasks
    assert samples[0] > 20 and seen == []
    out, err = capfd.readouterr()
    assert "dbhost.py backup" in out + err  # the task logs were captured
    assert password not in out + err
    import sqlite3
    db = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    xcoms = db.execute("SELECT value FROM xcom").fetchall()
    db.close()
    assert xcoms and not any(password in str(v) for (v,) in xcoms)
    catalog = Path(env.catalog_url.removeprefix("sqlite:///")).read_bytes()
    assert password.encode() not in catalog
    for f in env.storage().rglob("*"):
        if f.is_file() and f.stat().st_size < 10 << 20 and not f.name.startswith("backup.xbstream"):
            assert password.encode() not in f.read_bytes(), f


def test_the_catalog_is_rebuilt_from_the_manifests_on_storage(env, monkeypatch):
    state, tasks = env.run()
    assert state == "success", tasks
    before = env.catalog().backups(instance="sandbox", status="usable")
    # an unfinished backup directory (no manifest) must not come back as usable
    (env.storage() / "20200101-000000F").mkdir()
    (env.storage() / "20200101-000000F" / "backup.xbstream.zst.partial").write_bytes(b"x")
    env.catalog_url = f"sqlite:///{env.tmp}/rebuilt.sqlite"
    monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", env.catalog_url)
    assert env.catalog().backups() == []
    state, tasks = env.run(dag_id="mysql_backup_catalog_rebuild")
    assert state == "success", tasks
    after = env.catalog().backups(instance="sandbox", status="usable")
    keys = ("label", "gtid", "sha256", "size_bytes", "binlog_file", "binlog_pos", "to_lsn", "storage_path",
            "source_name", "verify_status")
    assert [{k: r[k] for k in keys} for r in after] == [{k: r[k] for k in keys} for r in before]
    assert len(after) == 1


def test_a_backup_gone_from_storage_is_marked_missing_a_manifestless_one_damaged_and_both_alert(env):
    for _ in range(2):
        state, tasks = env.run()
        assert state == "success", tasks
    older, newer = sorted(env.catalog().backups(instance="sandbox", status="usable"), key=lambda r: r["label"])
    import shutil
    shutil.rmtree(older["storage_path"])                       # the whole backup vanished from storage
    (Path(newer["storage_path"]) / "manifest.json").unlink()   # only its manifest was deleted
    # the next nightly run reconciles the instance's backups before its own backup
    state, tasks = env.run()
    assert state == "success", tasks
    status = env.catalog().statuses("sandbox")
    assert status[older["label"]] == "missing" and status[newer["label"]] == "damaged"
    # the damaged one is kept: cleanup never removes a directory the catalog called usable
    assert (Path(newer["storage_path"]) / newer["artifact"]).is_file()
    usable = env.catalog().backups(instance="sandbox", status="usable")
    assert len(usable) == 1 and usable[0]["label"] not in (older["label"], newer["label"])
    assert env.catalog().last_usable("sandbox")["label"] == usable[0]["label"]
    alerts = {a["event"]: a for a in env.webhook_alerts()}
    assert set(alerts) == {"MISSING", "DAMAGED"}, env.webhook_alerts()
    assert older["label"] in alerts["MISSING"]["what"] and alerts["MISSING"]["task_id"] == "reserve_space"
    assert "no manifest.json" in alerts["DAMAGED"]["error"]
    assert env.inbox.received.wait(10)
    # reported once: the hourly reconcile finds nothing new and succeeds
    state, tasks = env.run(dag_id="mysql_backup_catalog_rebuild")
    assert state == "success", tasks
    assert len(env.webhook_alerts()) == 2
    # a backup deleted between two nightly runs is found by the scheduled reconcile, which fails and alerts
    shutil.rmtree(usable[0]["storage_path"])
    state, tasks = env.run(dag_id="mysql_backup_catalog_rebuild")
    assert state == "failed", tasks
    assert env.catalog().statuses("sandbox")[usable[0]["label"]] == "missing"
    events = [(a["event"], a["task_id"]) for a in env.webhook_alerts()[2:]]
    assert ("MISSING", "rebuild_catalog") in events and ("FAILED", "rebuild_catalog") in events, events
    # the manifest is put back: the damaged backup is usable again
    (Path(newer["storage_path"]) / "manifest.json").write_text(newer["manifest_json"] + "\n")
    state, tasks = env.run(dag_id="mysql_backup_catalog_rebuild")
    assert state == "success", tasks
    assert env.catalog().statuses("sandbox")[newer["label"]] == "usable"


def test_a_read_only_storage_location_is_named_before_anything_is_streamed(env):
    base = env.tmp / "storage"
    base.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "--bind", str(base), str(base)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs a bind mount (root): {mounted.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(base)], capture_output=True, text=True)
        assert ro.returncode == 0, ro.stderr
        state, tasks = env.run()
    finally:
        subprocess.run(["umount", str(base)], check=True)
    assert state == "failed" and tasks["reserve_space"] == "failed", tasks
    assert tasks["backup"] != "success"
    [alert] = env.webhook_alerts()
    assert "storage space check failed on sandbox_storage" in alert["error"], alert["error"]
    assert "cannot write in" in alert["error"] and "Read-only file system" in alert["error"], alert["error"]


def test_a_backup_that_fails_in_verify_leaves_no_artifact_behind(env):
    # verify cannot make its scratch copy (a file is where its directory should be): it fails for good
    base = env.tmp / "storage"
    base.mkdir(exist_ok=True)
    (base / ".scratch").write_text("not a directory")
    state, tasks = env.run()
    assert state == "failed" and tasks["backup"] == "success" and tasks["verify_backup"] == "failed", tasks
    assert list(env.storage().glob("*")) == [], "the failed backup's artifact stayed on storage"
    [row] = env.catalog().backups(instance="sandbox")
    assert row["status"] == "failed" and "verify" in row["error"]
    [alert] = env.webhook_alerts()
    assert alert["task_id"] == "verify_backup"


def test_a_flipped_byte_in_a_stored_backup_is_found_marked_damaged_and_alerted(env):
    state, tasks = env.run()
    assert state == "success", tasks
    [row] = env.catalog().backups(instance="sandbox", status="usable")
    artifact = Path(row["storage_path"]) / row["artifact"]
    # a re-check of an intact backup passes (a new backup counts as checked when verified: make it due)
    with env.catalog().engine.begin() as conn:
        conn.exec_driver_sql("UPDATE backups SET finished_at='2020-01-01 00:00:00'")
    state, tasks = env.run(dag_id="mysql_backup_verify_stored")
    assert state == "success", tasks
    assert env.catalog().last_checked("sandbox")
    # one byte flipped in the middle of the stored artifact, size and mtime unchanged
    data = bytearray(artifact.read_bytes())
    stat = artifact.stat()
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    os.utime(artifact, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with env.catalog().engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM stored_checks")
    state, tasks = env.run(dag_id="mysql_backup_verify_stored")
    assert state == "failed", tasks
    [damaged] = env.catalog().backups(instance="sandbox", status="damaged")
    assert damaged["label"] == row["label"] and "sha256 mismatch" in damaged["error"]
    assert env.catalog().last_usable("sandbox") is None
    events = [(a["event"], a["task_id"]) for a in env.webhook_alerts()]
    assert ("DAMAGED", "verify_stored_1") in events and ("FAILED", "verify_stored_1") in events, events
    # the hourly reconcile sees a valid manifest but never undoes a damage the re-check found
    state, tasks = env.run(dag_id="mysql_backup_catalog_rebuild")
    assert state == "success", tasks
    assert env.catalog().statuses("sandbox")[row["label"]] == "damaged"


def _mutate(server, seed: int) -> None:
    """Inserts, updates and deletes across the data set's tables."""
    import random
    rnd = random.Random(seed)
    conn = server.connect("shop")
    try:
        with conn.cursor() as cur:
            for _ in range(40):
                cur.execute("INSERT INTO typed (doc, amount, note, ratio) VALUES (%s, %s, %s, %s)",
                            ('{"n": %d}' % rnd.randint(0, 999), f"{rnd.randint(0, 999)}.5", "new 🚀", rnd.random()))
            cur.execute("UPDATE typed SET note = %s, amount = amount + 1 WHERE id %% 7 = %s", (f"upd {seed}", seed % 7))
            cur.execute("DELETE FROM typed WHERE id %% 13 = %s", (seed % 13,))
            cur.execute("INSERT INTO no_pk VALUES (%s, %s, NOW(3))", (f"k{seed}", seed))
            cur.execute("UPDATE wide_blob SET data = %s WHERE id = %s", (rnd.randbytes(8192), seed % 5))
    finally:
        conn.close()


def test_an_incremental_chain_restores_to_the_source_at_its_last_link(env, tmp_path):
    env.write_cmdb(incremental_schedule="0 * * * *", max_chain_length=2)
    state, tasks = env.run(conf={"kind": "full"})
    assert state == "success", tasks
    _mutate(env.sb.source, 1)
    env.sb.sync_replica()
    state, tasks = env.run(conf={"kind": "incremental"})
    assert state == "success", tasks
    _mutate(env.sb.source, 2)
    env.sb.sync_replica()
    state, tasks = env.run()  # auto on a manual run, with an incremental_schedule: an incremental
    assert state == "success", tasks
    expected = dataset.checksums(env.sb.source)
    rows = sorted(env.catalog().backups(instance="sandbox", status="usable"), key=lambda r: r["label"])
    assert [r["kind"] for r in rows] == ["full", "incremental", "incremental"]
    full, inc1, inc2 = rows
    assert inc1["label"].startswith(full["label"] + "_") and inc1["label"].endswith("I")
    m1, m2 = (json.loads(r["manifest_json"]) for r in (inc1, inc2))
    assert (m1["parent"], m1["chain"], m2["parent"], m2["chain"]) == (full["label"], full["label"], inc1["label"],
                                                                      full["label"])
    assert m1["from_lsn"] == full["to_lsn"] and m2["from_lsn"] == inc1["to_lsn"]
    assert json.loads(full["manifest_json"])["parent"] is None
    server, proc = dataset.restore(Path(full["storage_path"]), full["artifact"], tmp_path,
                                   incrementals=[(Path(r["storage_path"]), r["artifact"]) for r in (inc1, inc2)])
    try:
        assert dataset.checksums(server) == expected
    finally:
        dataset.cleanup(server, proc, tmp_path)
    # the chain is full (max_chain_length=2): auto starts a new one
    state, tasks = env.run()
    assert state == "success", tasks
    newest = env.catalog().last_usable("sandbox")
    assert newest["kind"] == "full" and newest["label"] > inc2["label"]


def test_a_failed_link_starts_a_new_chain_and_an_incremental_without_a_parent_is_refused(env):
    env.write_cmdb(incremental_schedule="0 * * * *")
    state, tasks = env.run(conf={"kind": "incremental"})  # nothing to build on yet
    assert state == "failed" and tasks["choose_source"] == "failed", tasks
    alert = env.webhook_alerts()[-1]
    assert "kind=incremental but no backup can be its parent" in alert["error"], alert["error"]
    assert "no earlier backup" in alert["error"]
    assert env.catalog().backups(instance="sandbox") == []
    state, tasks = env.run(conf={"kind": "full"})
    assert state == "success", tasks
    # an incremental whose verify fails: marked failed, and only it
    import shutil
    shutil.rmtree(env.tmp / "storage" / ".scratch", ignore_errors=True)
    (env.tmp / "storage" / ".scratch").write_text("not a directory")
    state, tasks = env.run()
    assert state == "failed" and tasks["verify_backup"] == "failed", tasks
    (env.tmp / "storage" / ".scratch").unlink()
    statuses = sorted((r["label"], r["kind"], r["status"]) for r in env.catalog().backups(instance="sandbox"))
    assert [(k, st) for _, k, st in statuses] == [("full", "usable"), ("incremental", "failed")]
    # the newest link failed: kind=incremental is refused naming it, auto takes a new full
    state, tasks = env.run(conf={"kind": "incremental"})
    assert state == "failed" and tasks["choose_source"] == "failed", tasks
    assert f"{statuses[1][0]} is failed" in env.webhook_alerts()[-1]["error"]
    state, tasks = env.run()
    assert state == "success", tasks
    assert env.catalog().last_usable("sandbox")["kind"] == "full"


def test_retention_expires_old_chains_and_the_kept_ones_still_restore(env, tmp_path):
    env.write_cmdb(incremental_schedule="0 * * * *", retention_full_chains=1, retention_days=None)
    for conf in ({"kind": "full"}, {"kind": "incremental"}):
        state, tasks = env.run(conf=conf)
        assert state == "success", tasks
    old = sorted(r["label"] for r in env.catalog().backups(instance="sandbox", status="usable"))
    _mutate(env.sb.source, 3)
    env.sb.sync_replica()
    # a dry run plans and deletes nothing
    env.write_cmdb(incremental_schedule="0 * * * *", retention_full_chains=1, retention_days=None, expire="dry_run")
    state, tasks = env.run(conf={"kind": "full"})
    assert state == "success", tasks
    assert all((env.storage() / label / "manifest.json").is_file() for label in old)
    env.write_cmdb(incremental_schedule="0 * * * *", retention_full_chains=1, retention_days=None)
    state, tasks = env.run(conf={"kind": "full"})
    assert state == "success", tasks
    status = env.catalog().statuses("sandbox")
    assert [status[label] for label in old] == ["expired", "expired"]
    assert not any((env.storage() / label).exists() for label in old)
    [kept] = env.catalog().backups(instance="sandbox", status="usable")  # the newest chain: one full
    expected = dataset.checksums(env.sb.source)
    server, proc = dataset.restore(Path(kept["storage_path"]), kept["artifact"], tmp_path)
    try:
        assert dataset.checksums(server) == expected
    finally:
        dataset.cleanup(server, proc, tmp_path)
    # the dry run's full was a chain of its own: expired with the old one, as the plan said
    assert sum(1 for s in status.values() if s == "expired") == 3


def test_retention_refuses_to_delete_when_the_catalog_and_storage_disagree(env):
    env.write_cmdb(retention_full_chains=1, retention_days=None)
    state, tasks = env.run()
    assert state == "success", tasks
    [first] = env.catalog().backups(instance="sandbox", status="usable")

    def break_storage(stop):
        # as soon as the next backup is committed, the first one loses its manifest: the expiry that
        # follows finds storage and catalog disagree
        while not stop.is_set():
            if [p for p in env.storage().glob("*/manifest.json") if p.parent.name != first["label"]]:
                (Path(first["storage_path"]) / "manifest.json").unlink()
                return
            time.sleep(0.005)

    state, tasks = run_watching(env, break_storage)
    assert state == "failed" and tasks["expire_backups"] == "failed", tasks
    assert (Path(first["storage_path"]) / first["artifact"]).is_file()  # nothing was deleted
    assert env.catalog().statuses("sandbox")[first["label"]] == "damaged"
    events = [(a["event"], a["task_id"]) for a in env.webhook_alerts()]
    assert ("DAMAGED", "expire_backups") in events and ("FAILED", "expire_backups") in events, events
    assert "the catalog and storage disagreed" in env.webhook_alerts()[-1]["error"]


def test_an_expiry_killed_halfway_is_finished_by_the_next_run(env):
    env.write_cmdb(retention_full_chains=1, retention_days=None)
    for _ in range(2):
        state, tasks = env.run()
        assert state == "success", tasks
    first, second = sorted(env.catalog().backups(instance="sandbox"), key=lambda r: r["label"])
    assert (first["status"], second["status"]) == ("expired", "usable")
    # what a kill leaves: the second backup marked expired, its directory still there (manifest gone,
    # or not yet)
    env.catalog().expire_backup("sandbox", second["label"], "the plan said so (killed before the delete)")
    (Path(second["storage_path"]) / "manifest.json").unlink()
    state, tasks = env.run()
    assert state == "success", tasks
    assert not Path(second["storage_path"]).exists()
    alerts = [a for a in env.webhook_alerts() if a["event"] != "FAILED"]
    assert alerts == []  # an expired backup without its manifest is no incident
