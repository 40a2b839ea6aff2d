"""Point-in-time replay, for real: a backup, binlogs across several files after it, a restored server, and
``include/scripts/replay.py`` (receive, replay, cleanup) landing exactly on each kind of recovery target in
both modes.

One source server (server_id 1) takes a physical backup (mariabackup, prepared), then writes marked
batches with a binlog rotation between each: after every batch the test records the source's GTID, its
``SHOW MASTER STATUS`` position and ``CHECKSUM TABLE`` of every table (the reference), and waits for the
next whole second, so that a second boundary separates the batches. A temporary table is created (in
STATEMENT format) in one file and read in the next. Each test restores the prepared backup to a fresh
server (server_id 2, as the full restore leaves it: ``gtid_slave_pos`` set to the backup's GTID), streams
the binlogs into ``replay.py receive`` and replays to a target: the restored tables must have the
reference checksums at that target (the batch before it present, the one at or after it absent).
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sandbox.servers import MariaDB, free_port

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "include" / "scripts" / "replay.py"
TABLES = ("shop.orders", "shop.items", "other.notes")
BATCHES = 5


def checksums(server: MariaDB) -> dict:
    out = {}
    for t in TABLES:
        try:
            out[t] = server.sql(f"CHECKSUM TABLE {t} EXTENDED")[0][1]
        except Exception:  # noqa: BLE001 - a dropped database
            out[t] = None
    return out


def run_script(*args, stdin: bytes = b"", check: bool = True) -> dict:
    r = subprocess.run([sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True, timeout=300)
    lines = [ln for ln in r.stderr.decode().splitlines() if ln.startswith("RESULT ")]
    res = json.loads(lines[-1][7:]) if lines else {"status": "error", "error": r.stderr.decode()[-2000:]}
    if check:
        assert r.returncode == 0, r.stderr.decode()[-4000:]
    res["_rc"] = r.returncode
    res["_stderr"] = r.stderr.decode()
    return res


def batch(src: MariaDB, k: int) -> None:
    conn = src.connect()
    with conn.cursor() as cur:
        for i in range(20):
            cur.execute("INSERT INTO shop.orders (batch, note, amount) VALUES (%s, %s, %s)", (k, f"b{k}-{i}", i * 1.5))
        cur.execute("UPDATE shop.items SET qty = qty + %s WHERE id %% 3 = %s", (k, k % 3))
        cur.execute("DELETE FROM shop.orders WHERE batch = %s AND id %% 7 = 0", (k - 1,))
        cur.execute("BEGIN")
        cur.execute("INSERT INTO other.notes (batch, body) VALUES (%s, %s)", (k, "x" * (k * 10)))
        cur.execute("INSERT INTO shop.items (name, qty) VALUES (%s, %s)", (f"item-{k}", k))
        cur.execute("COMMIT")
    conn.close()


class Env:
    """The source, its backup, the marked batches and the binlog files."""

    def __init__(self, template: Path):
        self.root = Path(tempfile.mkdtemp(prefix="mbk-rp-"))
        self.template = template
        self.procs: list[tuple[MariaDB, subprocess.Popen]] = []
        try:
            self._build(template)
        except BaseException:
            self.close()  # the servers it started, even when building failed
            raise

    def _build(self, template: Path) -> None:
        self.src = MariaDB("src", str(self.root / "src"), free_port(), 1)
        self.procs.append((self.src, self.src.start(template)))
        s = self.src
        s.sql("CREATE DATABASE shop")
        s.sql("CREATE DATABASE other")
        s.sql("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, batch INT, note VARCHAR(40), "
              "amount DECIMAL(10,2))")
        s.sql("CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), qty INT)")
        s.sql("CREATE TABLE other.notes (id INT AUTO_INCREMENT PRIMARY KEY, batch INT, body TEXT)")
        for i in range(30):
            s.sql("INSERT INTO shop.items (name, qty) VALUES (%s, %s)", (f"base-{i}", i))
        batch(s, 0)
        self.backup_dir = self.root / "backup"
        subprocess.run(["mariabackup", "--no-defaults", "--backup", f"--target-dir={self.backup_dir}",
                        f"--socket={s.socket}", "--user=root"], check=True, capture_output=True)
        subprocess.run(["mariabackup", "--no-defaults", "--prepare", f"--target-dir={self.backup_dir}",
                        "--use-memory=64M"], check=True, capture_output=True)
        info = (self.backup_dir / "xtrabackup_binlog_info").read_text().split()
        self.backup_file, self.backup_pos, self.backup_gtid = info[0], int(info[1]), info[2]
        # what the backup holds, and where each batch after it ends
        self.marks = [{"gtid": self.backup_gtid, "sums": checksums(s)}]
        # a temporary table created in one binlog file and used in the next (STATEMENT format)
        tmp = s.connect("shop")
        tc = tmp.cursor()
        tc.execute("SET SESSION binlog_format = 'STATEMENT'")
        for k in range(1, BATCHES + 1):
            self._next_second()
            at = datetime.now(timezone.utc).replace(microsecond=0)
            if k == 2:
                tc.execute("CREATE TEMPORARY TABLE tmp_carry (id INT, v VARCHAR(20))")
                tc.execute("INSERT INTO tmp_carry VALUES (1, 'carried'), (2, 'over')")
            if k == 3:
                tc.execute("INSERT INTO shop.items (name, qty) SELECT v, id FROM tmp_carry")
            batch(s, k)
            file, pos = s.sql("SHOW MASTER STATUS")[0][:2]
            gtid = s.sql("SELECT @@gtid_binlog_pos")[0][0]
            self.marks.append({"k": k, "start_at": at, "file": file, "pos": int(pos), "gtid": gtid,
                               "sums": checksums(s)})
            s.sql("FLUSH BINARY LOGS")
        tmp.close()
        self._next_second()
        s.sql("FLUSH BINARY LOGS")
        self.files = [r[0] for r in s.sql("SHOW BINARY LOGS")]
        self.binlogs = self.root / "binlogs"
        self.binlogs.mkdir()
        for f in self.files:
            shutil.copyfile(Path(s.datadir) / f, self.binlogs / f)
        self.n = 0

    @staticmethod
    def _next_second() -> None:
        now = time.time()
        time.sleep(math.ceil(now) - now + 0.02)

    def restored(self) -> MariaDB:
        """A fresh server on the prepared backup, as the full restore leaves it (new server_id, GTID set)."""
        self.n += 1
        t = MariaDB(f"t{self.n}", str(self.root / f"t{self.n}"), free_port(), 2)
        Path(t.base).mkdir(parents=True)
        shutil.copytree(self.backup_dir, t.datadir)
        self.procs.append((t, t.start()))
        t.sql("SET GLOBAL gtid_slave_pos = %s", (self.backup_gtid,))
        return t

    def stop(self, server: MariaDB) -> None:
        for i, (srv, proc) in enumerate(self.procs):
            if srv is server:
                srv.stop(proc)
                proc.wait(30)
                del self.procs[i]
                return

    def close(self) -> None:
        for srv, proc in reversed(self.procs):
            srv.stop(proc)
            proc.wait(30)
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def replay(self, target: MariaDB, mode: str, *stop: str, databases: str = "", check: bool = True,
               files: dict[str, bytes] | None = None) -> dict:
        """``files``: the binlogs to send, by name (default: all of them, whole)."""
        work = Path(target.base) / "replay"
        files = files or {f: (self.binlogs / f).read_bytes() for f in self.files}
        for f, data in files.items():
            import hashlib
            res = run_script("receive", "--dir", str(work), "--name", f, "--sha256", hashlib.sha256(data).hexdigest(),
                             "--size", str(len(data)), stdin=data)
            assert res["size"] == len(data)
        creds = json.dumps({"user": "root", "password": ""}).encode() + b"\n"
        res = run_script("replay", "--dir", str(work), "--files", ",".join(files), "--host", "127.0.0.1",
                         "--port", str(target.port), "--mode", mode, "--start-gtid", self.backup_gtid,
                         "--parallel", "4", *stop, *(["--databases", databases] if databases else []),
                         stdin=creds, check=check)
        if check:
            assert run_script("cleanup", "--dir", str(work))["removed"]
        return res


@pytest.fixture(scope="module")
def env(mariadb_template):
    e = Env(mariadb_template)
    try:
        yield e
    finally:
        e.close()


def _target(env: Env, kind: str, k: int) -> tuple[str, ...]:
    """The stop that must land right after batch k."""
    m = env.marks[k]
    if kind == "gtid":
        return ("--stop-gtid", m["gtid"].split(",")[0])
    if kind == "position":  # exclusive: where the next batch begins
        nxt = env.marks[k + 1]
        # the next batch is in the next file (a rotation after each batch): its first transaction's position
        return ("--stop-position", f"{nxt['file']}:{_first_gtid_pos(env, nxt['file'])}")
    return ("--stop-datetime", str(int(env.marks[k + 1]["start_at"].timestamp())))


def _first_gtid_pos(env: Env, file: str) -> int:
    rows = env.src.sql(f"SHOW BINLOG EVENTS IN '{file}'")
    return next(int(r[1]) for r in rows if r[2] == "Gtid")


@pytest.mark.parametrize("mode", ["pipe", "applier"])
@pytest.mark.parametrize("kind,k", [("datetime", 2), ("position", 3), ("gtid", 4)])
def test_replay_lands_exactly_on_the_target(env, mode, kind, k):
    t = env.restored()
    try:
        assert checksums(t) == env.marks[0]["sums"]
        res = env.replay(t, mode, *_target(env, kind, k))
        assert checksums(t) == env.marks[k]["sums"], res["_stderr"][-3000:]
        assert checksums(t) != env.marks[k + 1]["sums"]
        want = env.marks[k]["gtid"].split(",")[0]
        assert res["last_gtid"] == want and res["state_after"] == want
        assert res["gtid_slave_pos"] == want  # the server knows where it is (a replica could continue)
        assert res["last_position"] == f"{env.marks[k]['file']}:{env.marks[k]['pos']}"
        assert res["transactions"] == int(want.split("-")[2]) - int(env.backup_gtid.split("-")[2])
        assert res["last_event_at"] < env.marks[k + 1]["start_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert not t.sql("SHOW ALL SLAVES STATUS")  # never a replica afterwards
    finally:
        env.stop(t)


def test_the_applier_stops_at_a_stop_that_ends_the_last_file(env):
    """The archive's newest file may end right at the stop (an open file copied up to its last
    transaction): no event after it shows the SQL thread that it is past its UNTIL, so the applier
    ends the replay by its executed position instead of waiting for more."""
    m = env.marks[3]
    names = env.files[:env.files.index(m["file"]) + 1]
    data = {f: (env.binlogs / f).read_bytes() for f in names}
    data[m["file"]] = data[m["file"]][:m["pos"]]  # batch 3's last transaction is the file's last event
    t = env.restored()
    try:
        res = env.replay(t, "applier", "--stop-gtid", m["gtid"].split(",")[0], files=data)
        assert checksums(t) == m["sums"], res["_stderr"][-3000:]
        assert res["last_gtid"] == m["gtid"].split(",")[0]
        assert not t.sql("SHOW ALL SLAVES STATUS")
    finally:
        env.stop(t)


@pytest.mark.parametrize("mode", ["pipe", "applier"])
def test_the_database_filter_replays_only_those_and_drops_the_others(env, mode):
    t = env.restored()
    try:
        res = env.replay(t, mode, *_target(env, "gtid", 4), databases="shop")
        got, want = checksums(t), env.marks[4]["sums"]
        assert {k: v for k, v in got.items() if k.startswith("shop.")} == \
            {k: v for k, v in want.items() if k.startswith("shop.")}
        assert got["other.notes"] is None and res["dropped_databases"] == ["other"]
        assert [r[0] for r in t.sql("SHOW DATABASES") if r[0] not in ("mysql", "performance_schema", "sys",
                                                                          "information_schema")] == ["shop"]
    finally:
        env.stop(t)


@pytest.mark.parametrize("mode", ["pipe", "applier"])
def test_a_temporary_table_that_spans_a_binlog_file_boundary(env, mode):
    """Created in one file (batch 2), read in the next (batch 3): pipe mode replays every file in one client
    session, the applier keeps a replicated session's temporary tables across relay log files."""
    t = env.restored()
    try:
        files = [env.marks[2]["file"], env.marks[3]["file"]]
        assert files[0] != files[1]
        env.replay(t, mode, *_target(env, "gtid", 3))
        assert t.sql("SELECT qty FROM shop.items WHERE name IN ('carried', 'over') ORDER BY qty") == [(1,), (2,)]
        assert checksums(t) == env.marks[3]["sums"]
    finally:
        env.stop(t)


def test_refusals_on_the_host_touch_nothing(env):
    """A restored server that kept the source's server_id, a stop GTID that is not in the files, a missing file
    in the middle, hostile arguments: refused before anything is applied."""
    t = env.restored()
    try:
        before = checksums(t)
        work = Path(t.base) / "replay"
        creds = json.dumps({"user": "root", "password": ""}).encode() + b"\n"
        for f in env.files:
            run_script("receive", "--dir", str(work), "--name", f, stdin=(env.binlogs / f).read_bytes())
        base = ["replay", "--dir", str(work), "--host", "127.0.0.1", "--port", str(t.port), "--start-gtid",
                env.backup_gtid]
        all_files = ["--files", ",".join(env.files)]
        # a stop GTID of another server
        r = run_script(*base, *all_files, "--mode", "pipe", "--stop-gtid", "0-9-60", stdin=creds, check=False)
        assert r["_rc"] == 3 and "0-9-60" in r["error"]
        # a file missing in the middle
        files = [f for f in env.files if f != env.marks[3]["file"]]
        r = run_script(*base, "--files", ",".join(files), "--mode", "pipe", "--stop-gtid",
                       env.marks[4]["gtid"], stdin=creds, check=False)
        assert r["_rc"] == 3 and "does not continue" in r["error"]
        # the restored server kept the source's server_id
        t.sql("SET GLOBAL server_id = 1")
        r = run_script(*base, *all_files, "--mode", "applier", "--stop-gtid", env.marks[4]["gtid"], stdin=creds,
                       check=False)
        assert r["_rc"] == 3 and "server_id 1" in r["error"]
        t.sql("SET GLOBAL server_id = 2")
        # hostile arguments: usage errors, nothing run
        for bad in (["--stop-gtid", "0-1-5; DROP DATABASE shop"], ["--stop-position", "binlog.000001:4 --x"],
                    ["--stop-datetime", "now()"], ["--databases", "shop,`x`"], ["--databases", "mysql"],
                    ["--stop-gtid", "0-1-5", "--stop-datetime", "1"]):
            r = run_script(*base, *all_files, "--mode", "pipe", *bad, stdin=creds, check=False)
            assert r["_rc"] == 2, (bad, r)
        r = run_script("receive", "--dir", str(work), "--name", "../../etc/passwd", stdin=b"x", check=False)
        assert r["_rc"] == 2
        r = run_script("receive", "--dir", str(work), "--name", env.files[0], "--sha256", "0" * 64,
                       stdin=b"not the file", check=False)
        assert r["_rc"] == 3 and (work / env.files[0]).exists() is True  # the earlier good copy stays
        assert checksums(t) == before
        assert not t.sql("SHOW ALL SLAVES STATUS")
        assert run_script("cleanup", "--dir", str(work))["removed"]
        r = run_script("cleanup", "--dir", str(Path(t.base)), check=False)  # not a replay directory
        assert r["_rc"] == 3 and Path(t.datadir).is_dir()
    finally:
        env.stop(t)


# ---------------------------------------------------------------------------------------------- the DAG, end to end


@pytest.fixture
def pitr_env(fresh_sandbox, airflow_db, tmp_path, monkeypatch):
    """A private sandbox (source, replica, sshd, restore target) with its binlog archive running."""
    from receivers import Hook
    from test_binlog_archive import ArchiveEnv
    hook = Hook().start()
    e = ArchiveEnv(fresh_sandbox, tmp_path, monkeypatch, hook)
    try:
        yield e
    finally:
        try:
            fresh_sandbox.stop_target()
        finally:
            e.finish(hook)


def _dag_run(dag_id: str, conf: dict | None = None):
    from airflow.dag_processing.dagbag import BundleDagBag
    dags = REPO / "dags"
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=str(dags), bundle_name="dags-folder")
    assert bag.import_errors == {}
    dr = bag.dags[dag_id].test(run_conf=conf)
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def test_the_dag_restores_the_replicas_backup_and_replays_the_archive_to_the_target_in_both_modes(pitr_env):
    """mysql_restore_pitr for real: the backup DAG backs up the replica, the archive supervisor catalogs the
    source's binlogs, then a point-in-time restore by GTID (applier) and one by time (pipe, overwrite) land
    exactly before a bad DELETE, over ssh, and the restored server is no replica."""
    e, sb = pitr_env, pitr_env.sb
    src = sb.source
    src.sql("CREATE DATABASE pitr")
    src.sql("CREATE TABLE pitr.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT, note VARCHAR(30))")
    for i in range(40):
        src.sql("INSERT INTO pitr.t (v, note) VALUES (%s, 'before the backup')", (i,))
    e.run()  # the streamer starts
    sb.sync_replica()
    dr, tasks = _dag_run("mysql_backup__sandbox")
    assert dr.state == "success", tasks
    for i in range(30):
        src.sql("INSERT INTO pitr.t (v, note) VALUES (%s, 'after the backup')", (i,))
    src.sql("FLUSH BINARY LOGS")
    src.sql("UPDATE pitr.t SET v = v + 100 WHERE id % 2 = 0")
    gtid = src.sql("SELECT @@gtid_binlog_pos")[0][0]
    want = src.sql("CHECKSUM TABLE pitr.t EXTENDED")[0][1]
    Env._next_second()
    bad_at = datetime.now(timezone.utc).replace(microsecond=0)
    src.sql("DELETE FROM pitr.t WHERE id > 10")  # the bad statement
    e.wait_caught_up(src)
    e.run()  # catalog the files up to the DELETE
    restored = MariaDB("target", sb.target.base, sb.target.port, 0)

    conf = {"instance": "sandbox", "target": "sandbox_target", "stop_gtid": gtid, "replay_mode": "applier"}
    dr, tasks = _dag_run("mysql_restore_pitr", conf)
    assert dr.state == "success", tasks
    assert restored.sql("CHECKSUM TABLE pitr.t EXTENDED")[0][1] == want
    assert restored.sql("SELECT @@gtid_slave_pos")[0][0] == gtid
    assert not restored.sql("SHOW ALL SLAVES STATUS")
    reached = [ti for ti in dr.get_task_instances() if ti.task_id == "replay"][0].xcom_pull(task_ids="replay")
    assert reached["last_gtid"] == gtid and reached["transactions"] == 31 and reached["mode"] == "applier"
    with e.catalog() as cat:
        row = cat.restores(target="sandbox_target")[0]
    assert row["status"] == "succeeded" and row["kind"] == "pitr"
    assert [s for s, _ in row["steps"]][-4:] == ["fetch_binlogs", "replay", "finish", "report"]

    conf = {"instance": "sandbox", "target": "sandbox_target", "replay_mode": "pipe", "overwrite": True,
            "stop_datetime": bad_at.strftime("%Y-%m-%d %H:%M:%S")}
    dr, tasks = _dag_run("mysql_restore_pitr", conf)
    assert dr.state == "success", tasks
    assert restored.sql("CHECKSUM TABLE pitr.t EXTENDED")[0][1] == want
    assert restored.sql("SELECT @@gtid_slave_pos")[0][0] == gtid
    assert src.sql("SELECT COUNT(*) FROM pitr.t")[0][0] == 10  # the source was never touched

    # refused in plan, nothing touched: a time after the archive's end, and one before the backup
    for bad in ({"stop_datetime": "2020-01-01 00:00:00"}, {"stop_gtid": "0-1-1", "stop_position": "binlog.000001:4"}):
        dr, tasks = _dag_run("mysql_restore_pitr", {"instance": "sandbox", "target": "sandbox_target", **bad})
        assert dr.state == "failed" and tasks["plan"] == "failed" and tasks["check_target"] != "success"
    assert restored.sql("CHECKSUM TABLE pitr.t EXTENDED")[0][1] == want

    # a restore drill (the sandbox's target is a drill target): a point-in-time restore to the archive's newest
    # point, so the restored server holds what the source holds now (the DELETE included)
    now_sum = src.sql("CHECKSUM TABLE pitr.t EXTENDED")[0][1]
    dr, tasks = _dag_run("mysql_restore_drill")
    assert dr.state == "success", tasks
    assert tasks["sandbox_target_1.replay"] == "success" and tasks["sandbox_target_1.check_restored"] == "success"
    assert restored.sql("CHECKSUM TABLE pitr.t EXTENDED")[0][1] == now_sum
    with e.catalog() as cat:
        d = cat.drills(instance="sandbox")[0]
    assert d["result"] == "succeeded" and d["kind"] == "pitr" and d["point_time"] is not None
    assert d["rto_seconds"] > 0 and 0 <= d["rpo_seconds"] < 3600
    assert "replay" in [s for s, _ in d["details"]["steps"]]
