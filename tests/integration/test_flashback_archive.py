"""Flashback from the continuous binlog archive, for real, after the server purged the binlogs.

The archive is the real one: the supervisor DAG ``mysql_binlog__sandbox`` (dag.test(), real ssh) starts
the detached streamer, which archives the sandbox source's binlog; the catalog records the files. Then
a bad DELETE, FLUSH BINARY LOGS and PURGE BINARY LOGS on the source: the server no longer has the
DELETE. ``mysql_flashback`` with ``binlog_source: auto`` must pick the archive (and say why), fetch the
covering files over ssh and undo the DELETE exactly (CHECKSUM TABLE before the DELETE equals the one
after apply); ``bin/mysql-flashback generate --archive`` on the directory the supervisor wrote writes the
same body. A window the archive does not hold whole is refused naming the field, before anything is
read; ``binlog_source: live`` after the purge is refused. Every streamer started is stopped at teardown
and ps must show none left (neither ``binlog_archive.py stream`` nor its ``mariadb-binlog``).
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from receivers import Hook
from test_binlog_archive import ArchiveEnv, server_files, write
from test_flashback_e2e import DB, TABLES, workload

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
CLI = REPO / "bin" / "mysql-flashback"
GEN = "CREATE TABLE `fb db`.`gen` (id INT PRIMARY KEY, a INT, b INT AS (a * 2) STORED, note VARCHAR(20))"


def ps_lines(needle: str) -> list[str]:
    """What ``ps`` shows running whose command line names ``needle``."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if needle in line and " Z" not in line[:16] and "ps -eo" not in line]


@pytest.fixture
def env(fresh_sandbox, airflow_db, tmp_path, monkeypatch):
    hook = Hook().start()
    e = ArchiveEnv(fresh_sandbox, tmp_path, monkeypatch, hook)
    src = fresh_sandbox.source
    src.sql("CREATE USER 'fbadmin'@'127.0.0.1' IDENTIFIED BY 'Adm-1-x'")
    src.sql("GRANT ALL ON `fb db`.* TO 'fbadmin'@'127.0.0.1'")
    monkeypatch.setenv("AIRFLOW_CONN_FB_ADMIN", json.dumps({"conn_type": "mysql", "host": "127.0.0.1",
                                                            "port": src.port, "login": "fbadmin",
                                                            "password": "Adm-1-x"}))
    cnf = tmp_path / "backup.cnf"
    cnf.write_text(f"[client]\nuser=backup\npassword={fresh_sandbox.backup_password}\nhost=127.0.0.1\n"
                   f"port={src.port}\n")
    cnf.chmod(0o600)
    e.cnf = cnf
    try:
        yield e
    finally:
        e.finish(hook)
        assert ps_lines(str(e.base)) == [], "ps still shows a streamer or its mariadb-binlog"


def checksums(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE " + ", ".join(f"`fb db`.`{t}`" for t in (*TABLES, "gen")) + " EXTENDED")
        return dict(cur.fetchall())


def flashback(conf: dict) -> tuple[str, dict | None]:
    """A mysql_flashback run: its state and the task's XCom result."""
    from airflow.dag_processing.dagbag import BundleDagBag
    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")
    assert bag.import_errors == {}
    dr = bag.dags["mysql_flashback"].test(run_conf=conf)
    db = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    try:
        rows = db.execute("SELECT value FROM xcom WHERE dag_id='mysql_flashback' AND run_id=? AND "
                          "task_id='flashback' AND key='return_value'", (dr.run_id,)).fetchall()
    finally:
        db.close()
    value = rows[0][0] if rows else None
    return dr.state, (json.loads(value) if isinstance(value, (str, bytes)) else value)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), "generate", *args], capture_output=True, text=True, timeout=300)


def body_line(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("-- body:"))


def utc(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def test_a_purged_delete_is_undone_from_the_archive(env, tmp_path, capfd):
    t_start = time.monotonic()
    src = env.sb.source
    conn = src.connect()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode=''")
        cur.execute(f"CREATE DATABASE `{DB}`")
        for ddl in (*TABLES.values(), GEN):
            cur.execute(ddl)
        cur.executemany("INSERT INTO `fb db`.`gen` (id, a, note) VALUES (%s, %s, %s)",
                        [(i, i * 7, f"n{i}") for i in range(1, 41)])
    workload(conn, random.Random(21), 40)

    # the archive: the supervisor starts the streamer, which follows the source from its first binlog
    _, st = env.run()
    assert st["streamer"]["action"] == "started", st["streamer"]
    env.wait_caught_up(src)

    # the bad DELETE, in a binlog of its own, alone in its second(s): nothing else is written from start to stop
    src.sql("FLUSH BINARY LOGS")
    before = checksums(conn)
    time.sleep(1.05)
    with conn.cursor() as cur:
        cur.execute("SELECT UTC_TIMESTAMP()")
        start = cur.fetchone()[0].replace(tzinfo=timezone.utc)
        cur.execute("BEGIN")
        cur.execute("DELETE FROM `fb db`.`typed` WHERE id % 3 = 0")
        cur.execute("DELETE FROM `fb db`.`no key` LIMIT 5")
        cur.execute("DELETE FROM `fb db`.`gen` WHERE id > 25")
        cur.execute("DELETE FROM `fb db`.`mdb`")
        cur.execute("COMMIT")
        cur.execute("SELECT @@last_gtid, UTC_TIMESTAMP()")
        gtid, end = cur.fetchone()
        stop = end.replace(tzinfo=timezone.utc) + timedelta(seconds=1)
    assert checksums(conn) != before
    time.sleep(1.05)
    # the server rotates and purges every binlog that holds the DELETE (and writes on elsewhere)
    src.sql("FLUSH BINARY LOGS")
    write(src, 5, "after")
    env.wait_caught_up(src)
    src.sql("FLUSH BINARY LOGS")
    newest = server_files(src)[-1][0]
    deadline = time.monotonic() + 15
    while [n for n, _ in server_files(src)] != [newest] and time.monotonic() < deadline:
        src.sql(f"PURGE BINARY LOGS TO '{newest}'")
        time.sleep(0.2)
    assert [n for n, _ in server_files(src)] == [newest]
    env.wait_caught_up(src)
    _, st = env.run()  # the closed files are checksummed and catalogued
    assert st["gaps"] == [], st["gaps"]
    with env.catalog() as cat:
        closed = [r for r in cat.binlog_files("sandbox") if r["state"] == "closed"]
    assert closed and all(r["sha256"] for r in closed)
    window = {"start_datetime": utc(start), "stop_datetime": utc(stop), "databases": [f"`{DB}`"]}
    capfd.readouterr()

    # the CLI on the archive directory the supervisor wrote (review only); the server is only asked which
    # columns are generated
    out = tmp_path / "cli.sql"
    r = cli("--archive", str(env.bdir), "--start-datetime", utc(start), "--stop-datetime", utc(stop),
            "--databases", f"`{DB}`", "--defaults-file", str(env.cnf), "-o", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    head = out.read_text().split("\n-- body:")[0]
    assert f"-- source: archive {env.bdir}/" in head and "generated columns: 1 found on the server" in head, head
    assert "fb db.gen: delete 15" in head, head
    # the same transaction by its GTID, without a server: the same body
    out_gtid = tmp_path / "cli-gtid.sql"
    r = cli("--archive", str(env.bdir), "--start-gtid", gtid, "--stop-gtid", gtid, "--databases", f"`{DB}`",
            "--defaults-file", str(env.cnf), "-o", str(out_gtid))
    assert r.returncode == 0, r.stderr[-3000:]
    assert body_line(out_gtid) == body_line(out)
    # and without a stop: the window runs to the end of the archive (the open file, to its last complete event)
    out_open = tmp_path / "cli-open.sql"
    r = cli("--archive", str(env.bdir), "--start-gtid", gtid, "--databases", f"`{DB}`", "--defaults-file",
            str(env.cnf), "-o", str(out_open))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no stop given: the window runs to the end of the archive" in r.stderr, r.stderr[-3000:]
    assert f".. {newest})" in out_open.read_text().split("\n-- body:")[0]
    assert body_line(out_open) == body_line(out)

    # the CLI reading the live server after the purge: refused, pointing at --archive
    r = cli("--defaults-file", str(env.cnf), "--start-datetime", utc(start), "--stop-datetime", utc(stop),
            "-o", str(tmp_path / "live.sql"))
    assert r.returncode == 2 and "no longer holds the whole window" in r.stderr, r.stderr[-3000:]
    assert f"not before --start-datetime {utc(start)} UTC" in r.stderr and "--archive <base_dir>" in r.stderr

    # binlog_source live after the purge: refused, the server no longer holds the window
    state, _ = flashback({"instance": "sandbox", **window, "binlog_source": "live"})
    assert state == "failed"
    log = "".join(capfd.readouterr())
    assert "binlog_source live: the server 127.0.0.1:" in log and "no longer holds the whole window" in log, log[-3000:]
    assert "start_datetime" in log and "use binlog_source archive (or auto)" in log, log[-3000:]

    # review only, by GTID without a stop: the archive (auto: the server purged it) to its end, the open file
    # fetched as far as its last complete event
    state, res = flashback({"instance": "sandbox", "start_gtid": gtid, "databases": [f"`{DB}`"]})
    log = "".join(capfd.readouterr())
    assert state == "success", log[-4000:]
    assert "binlog_source auto: reading the binlog archive: " in log and "start_gtid" in log, log[-4000:]
    assert "no stop given: the window runs to the end of the archive" in log, log[-4000:]
    assert "to its last complete event" in log and res["archive"]["files"][-1]["file"] == newest, log[-4000:]
    assert body_line(Path(res["stored"])) == body_line(out) and not res["applied"]
    assert checksums(conn) != before

    # auto: the archive, said why; the covering files fetched and checked; the DELETE undone exactly
    state, res = flashback({"instance": "sandbox", **window, "apply": True, "apply_conn_id": "fb_admin"})
    log = "".join(capfd.readouterr())
    assert state == "success", log[-4000:]
    assert "binlog_source auto: reading the binlog archive: the server 127.0.0.1:" in log, log[-4000:]
    assert "was begun at" in log and f"not before start_datetime {utc(start)} UTC" in log, log[-4000:]
    assert "matches the catalog" in log, log[-4000:]
    assert res["binlog_source"] == "archive" and res["applied"] and res["rows"] > 20, res
    fetched = [f["file"] for f in res["archive"]["files"]]
    assert fetched == ["binlog.000002"], res["archive"]  # exactly the file that holds the window
    assert {f["state"] for f in res["archive"]["files"]} == {"closed"}
    assert checksums(conn) == before
    stored = Path(res["stored"])
    assert body_line(stored) == body_line(out)
    assert f"-- source: archive sandbox_storage:{env.bdir}/" in stored.read_text().split("\n-- body:")[0]

    # a window partly before the archive began: refused naming the field, nothing fetched or read
    early = {**window, "start_datetime": "2001-01-01 00:00:00"}
    state, _ = flashback({"instance": "sandbox", **early, "binlog_source": "archive"})
    log = "".join(capfd.readouterr())
    assert state == "failed"
    assert "the binlog archive of sandbox does not hold the whole window, so nothing was read: start_datetime: " \
           "2001-01-01T00:00:00Z .. " in log and "before the first archived file binlog.000001" in log, log[-3000:]
    assert "The archive holds server " in log and "fetched " not in log and "--st" not in log, log[-3000:]
    # ... and one that ends after the last archived transaction (auto: the server purged its start)
    seq = int(gtid.split("-")[2])
    state, _ = flashback({"instance": "sandbox", "start_gtid": gtid, "stop_gtid": f"0-1-{seq + 100000}"})
    log = "".join(capfd.readouterr())
    assert state == "failed"
    assert "binlog_source auto: reading the binlog archive" in log and "start_gtid" in log, log[-3000:]
    assert "stop_gtid: 0-?-" in log and f"0-?-{seq + 100000}: after binlog." in log, log[-3000:]
    # the CLI says it in its own words
    r = cli("--archive", str(env.bdir), "--start-datetime", "2001-01-01 00:00:00", "--stop-datetime", utc(stop),
            "-o", str(tmp_path / "never.sql"))
    assert r.returncode == 2 and "mysql-flashback: error: the binlog archive " in r.stderr, r.stderr
    assert "--start-datetime: 2001-01-01T00:00:00Z .. " in r.stderr and not (tmp_path / "never.sql").exists()
    assert checksums(conn) == before
    conn.close()
    print(f"archive flashback test body: {time.monotonic() - t_start:.1f} s")
