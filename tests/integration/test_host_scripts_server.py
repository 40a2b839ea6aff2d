"""Host scripts against real MariaDB servers (and a real sshd): facts, reserve, the backup
pipeline ``dbhost.py backup | storage.py receive``, verify, commit, list, discard, a restore
proof, a remote run over ssh, and a stream cut mid-way."""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "include" / "scripts"
DBHOST = str(SCRIPTS / "dbhost.py")
STORAGE = str(SCRIPTS / "storage.py")
PY = sys.executable


def creds(sb, password=None) -> bytes:
    return (json.dumps({"user": "backup", "password": sb.backup_password if password is None else password})
            + "\n").encode()


def result_of(stderr: str) -> dict:
    last = stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("RESULT "), stderr[-3000:]
    return json.loads(last[len("RESULT "):])


def run(script: str, *args: str, stdin: bytes = b"", timeout: float = 120) -> tuple:
    r = subprocess.run([PY, script, *args], input=stdin, capture_output=True, timeout=timeout)
    err = r.stderr.decode()
    return r.returncode, r.stdout, err, result_of(err)


def pipeline(db_argv: list, st_argv: list, db_stdin: bytes, timeout: float = 120) -> tuple:
    """Two processes joined by an OS pipe (no Python of ours in the data path)."""
    import threading
    db = subprocess.Popen(db_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    st = subprocess.Popen(st_argv, stdin=db.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db.stdout.close()
    # drain the backup's log while it streams: mariabackup logs a line per file, and a full stderr
    # pipe would block it (and the receiver would wait for EOF forever)
    db_err_parts: list[bytes] = []
    drain = threading.Thread(target=lambda: db_err_parts.append(db.stderr.read()), daemon=True)
    drain.start()
    db.stdin.write(db_stdin)
    db.stdin.close()
    st_out, st_err = st.communicate(timeout=timeout)
    db.wait(timeout=timeout)
    drain.join(timeout)
    db.stderr.close()
    return db.returncode, b"".join(db_err_parts).decode(), st.returncode, st_err.decode()


def checksums(server, tables) -> dict:
    return dict(server.sql("CHECKSUM TABLE %s EXTENDED" % ", ".join(tables)))


def procs_mentioning(text: str) -> list:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(pid), cmd))
    return found


# --- facts -------------------------------------------------------------------------------------

def test_facts_source_and_replica(sandbox):
    code, out, err, res = run(DBHOST, "facts", "--flavor", "mariadb", "--socket", sandbox.source.socket,
                              stdin=creds(sandbox))
    assert code == 0, err
    f = res["facts"]
    assert f["reachable"] is True and f["flavor_detected"] == "mariadb" and "MariaDB" in f["version"]
    assert f["replica"] is None
    assert f["port"] == sandbox.source.port and f["server_id"] == 1 and f["log_bin"] is True
    assert f["gtid_strict_mode"] is True and f["gtid_binlog_pos"] is not None
    assert f["binlog_format"] == "ROW" and f["character_set_server"] == "utf8mb4"
    assert f["data_bytes"] > 0 and f["uptime"] >= 0 and f["innodb_buffer_pool_size"] == 64 * 1024 * 1024
    assert os.path.realpath(f["datadir"]) == os.path.realpath(sandbox.source.datadir)
    assert f["fs"]["total_bytes"] > 0 and f["tools"]["mariabackup"] and f["tools"]["mbstream"]
    assert out == b""
    assert sandbox.backup_password not in err

    # the replica over TCP
    code, out, err, res = run(DBHOST, "facts", "--flavor", "mariadb", "--host", "127.0.0.1",
                              "--port", str(sandbox.replica.port), stdin=creds(sandbox))
    assert code == 0, err
    f = res["facts"]
    assert f["server_id"] == 2
    r = f["replica"]
    assert r["io_running"] is True and r["sql_running"] is True, r
    assert r["source_port"] == sandbox.source.port and r["using_gtid"] == "Slave_Pos"
    assert r["last_error"] == "" and isinstance(r["seconds_behind"], int)
    assert out == b"" and sandbox.backup_password not in err


def test_facts_wrong_password_is_precondition(sandbox):
    code, out, err, res = run(DBHOST, "facts", "--flavor", "mariadb", "--socket", sandbox.source.socket,
                              stdin=creds(sandbox, password="wrong-password-123"))
    assert code == 3, err
    assert res["status"] == "error" and "Access denied" in res["error"]
    assert "wrong-password-123" not in err


def test_facts_flavor_mismatch_is_precondition(sandbox):
    code, _, err, res = run(DBHOST, "facts", "--flavor", "mysql", "--socket", sandbox.source.socket,
                            stdin=creds(sandbox))
    assert code == 3 and "mysql" in res["error"] and "mariadb" in res["error"]


def test_facts_unreachable_is_transient(sandbox):
    from sandbox import free_port
    port = free_port()  # nothing listens there
    code, out, err, res = run(DBHOST, "facts", "--flavor", "mariadb", "--host", "127.0.0.1", "--port", str(port),
                              stdin=creds(sandbox))
    assert code == 4, err
    assert res["facts"]["reachable"] is False and "connect" in res["facts"]["error"].lower()


# --- reserve -----------------------------------------------------------------------------------

def test_reserve_create_check_grow(sandbox):
    datadir = sandbox.source.datadir
    # the shared sandbox may already have one (a DAG test that backed up the primary)
    leftover = os.path.join(os.path.dirname(datadir), ".mysql-backup-reserve-data")
    if os.path.exists(leftover):
        os.unlink(leftover)
    code, _, err, res = run(DBHOST, "reserve", "--datadir", datadir, "--percent", "0.01")
    path = res.get("path")
    try:
        assert code == 0, err
        assert res["action"] == "created"
        assert path == os.path.join(os.path.dirname(datadir), ".mysql-backup-reserve-data")
        st = os.stat(path)
        assert st.st_dev == os.stat(datadir).st_dev
        assert st.st_size == res["size_bytes"] == res["target_bytes"]
        assert st.st_blocks * 512 >= res["target_bytes"]
        assert res["target_bytes"] == int(res["fs_total_bytes"] * 0.01 / 100)

        code, _, err, res2 = run(DBHOST, "reserve", "--datadir", datadir, "--percent", "0.01")
        assert code == 0 and res2["action"] == "ok" and res2["path"] == path

        code, _, err, res3 = run(DBHOST, "reserve", "--datadir", datadir, "--percent", "0.02")
        assert code == 0 and res3["action"] == "grown", err
        st = os.stat(path)
        assert st.st_size >= res3["target_bytes"] and st.st_blocks * 512 >= res3["target_bytes"]

        # smaller percent: the bigger file is left alone
        code, _, err, res4 = run(DBHOST, "reserve", "--datadir", datadir, "--percent", "0.01")
        assert code == 0 and res4["action"] == "ok" and os.stat(path).st_size == st.st_size
    finally:
        if path and os.path.exists(path):
            os.unlink(path)


def test_reserve_bad_percent_is_usage(sandbox):
    for pct in ("0.005", "11", "nan"):
        code, _, err, res = run(DBHOST, "reserve", "--datadir", sandbox.source.datadir, "--percent", pct)
        assert code == 2 and "--percent" in res["error"], err
    assert not os.path.exists(os.path.join(os.path.dirname(sandbox.source.datadir), ".mysql-backup-reserve-data"))


# --- the pipeline, verify, commit, list, discard, restore --------------------------------------

def test_pipeline_verify_commit_restore(fresh_sandbox, tmp_path):
    sb = fresh_sandbox
    sb.source.sql("CREATE DATABASE hs")
    sb.source.sql("CREATE TABLE hs.t1 (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(64), n DOUBLE) ENGINE=InnoDB")
    sb.source.sql("INSERT INTO hs.t1 (v, n) SELECT CONCAT('row-', seq), seq / 7 FROM hs.seq_1_to_3000")
    sb.source.sql("CREATE TABLE hs.t2 (k VARCHAR(16) PRIMARY KEY, txt TEXT) ENGINE=Aria")
    sb.source.sql("INSERT INTO hs.t2 VALUES ('a', 'ünïcødé'), ('b', NULL)")
    sb.sync_replica()
    # --safe-slave-backup (asked for below) stops the replica's SQL thread
    # (not binlogged: an errant transaction on the replica would show up in its GTID position)
    conn = sb.replica.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET sql_log_bin=0")
            for host in ("localhost", "127.0.0.1"):
                cur.execute(f"GRANT REPLICATION SLAVE ADMIN ON *.* TO 'backup'@'{host}'")
    finally:
        conn.close()
    source_gtid = sb.source.sql("SELECT @@gtid_binlog_pos")[0][0]

    base = tmp_path / "storage"
    label = base / "sandbox_replica" / "20261124-234000F"
    artifact = "backup.xbstream.zst"
    db_rc, db_err, st_rc, st_err = pipeline(
        [PY, DBHOST, "backup", "--flavor", "mariadb", "--socket", sb.replica.socket, "--parallel", "2",
         "--compress", "zstd", "--slave-info", "--safe-slave-backup", "--tmpdir", str(tmp_path)],
        [PY, STORAGE, "receive", "--dir", str(label), "--artifact", artifact], creds(sb))
    assert db_rc == 0, db_err[-3000:]
    assert st_rc == 0, st_err[-3000:]
    assert sb.backup_password not in db_err and sb.backup_password not in st_err
    bres, rres = result_of(db_err), result_of(st_err)
    assert bres["tool"].startswith("mariabackup 10.")
    assert bres["checkpoints"]["backup_type"] == "full-backuped" and bres["checkpoints"]["to_lsn"] > 0
    assert bres["binlog"]["gtid"] == source_gtid and bres["binlog"]["file"].startswith("binlog.")
    assert "MariaDB" in bres["server_version"]
    assert os.listdir(tmp_path) == ["storage"], "the private work directory is removed"
    path = label / artifact
    assert rres["path"] == str(path) and not (label / (artifact + ".partial")).exists()
    assert rres["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rres["size_bytes"] == path.stat().st_size
    assert sb.replica.sql("SHOW SLAVE STATUS")[0][11] == "Yes", "SQL thread restarted after the backup"

    scratch = tmp_path / "scratch"
    code, out, err, vres = run(STORAGE, "verify", "--dir", str(label), "--artifact", artifact,
                               "--sha256", rres["sha256"], "--flavor", "mariadb", "--scratch", str(scratch),
                               "--use-memory", "64M", "--keep-scratch")
    assert code == 0, err[-3000:]
    assert vres["sha256_ok"] is True and vres["prepared"] is True and vres["files"] > 10
    assert vres["binlog"]["gtid"] == source_gtid and vres["binlog"]["pos"] == bres["binlog"]["pos"]
    assert vres["checkpoints"] == bres["checkpoints"]
    assert vres["info"]["tool_name"] == "mariabackup" and "MariaDB" in vres["info"]["server_version"]
    assert "gtid_slave_pos" in vres["slave_info"] and source_gtid in vres["slave_info"]
    sums = (label / "SHA256SUMS").read_text().splitlines()
    assert vres["checksums_file"] == str(label / "SHA256SUMS") and len(sums) == vres["files"]
    names = [ln.split("  ", 1)[1] for ln in sums]
    assert names == sorted(names) and "hs/t1.frm" in names and "xtrabackup_checkpoints" in names
    # a table created since the last checkpoint is streamed as hs/t1.new (mariabackup's DDL
    # tracking) and only becomes hs/t1.ibd in --prepare: the checksums describe the stream
    assert "hs/t1.ibd" in names or "hs/t1.new" in names
    assert (scratch / "hs" / "t1.ibd").exists() and not (scratch / "hs" / "t1.new").exists()
    digest, rel = sums[names.index("backup-my.cnf")].split("  ", 1)
    # checksums were taken before prepare; backup-my.cnf is not changed by prepare
    assert digest == hashlib.sha256((scratch / rel).read_bytes()).hexdigest()
    assert out == b""

    # commit, list, discard refusing a committed backup
    manifest = {"label": label.name, "artifact": artifact, "sha256": rres["sha256"], "gtid": source_gtid}
    code, _, err, cres = run(STORAGE, "commit", "--dir", str(label), stdin=json.dumps(manifest).encode())
    assert code == 0, err
    assert cres["path"] == str(label / "manifest.json")
    assert json.loads((label / "manifest.json").read_text()) == manifest
    (base / "sandbox_replica" / "20261125-000000F").mkdir()
    code, out, err, lres = run(STORAGE, "list", "--dir", str(base))
    assert code == 0 and lres["count"] == 1
    assert lres["incomplete"] == [str(base / "sandbox_replica" / "20261125-000000F")]
    lines = [json.loads(x) for x in out.decode().splitlines()]
    assert lines[0]["path"] == str(label / "manifest.json") and json.loads(lines[0]["manifest"]) == manifest
    code, out, err, lres = run(STORAGE, "list", "--dir", str(base), "--instance", "other")
    assert code == 0 and lres["count"] == 0 and out == b""
    code, _, err, dres = run(STORAGE, "discard", "--dir", str(label))
    assert code == 3 and path.exists() and (label / "manifest.json").exists()
    code, _, err, dres = run(STORAGE, "discard", "--dir", str(base / "sandbox_replica" / "20261125-000000F"))
    assert code == 0 and dres["removed"] is True

    # restore proof: the prepared copy is a valid datadir
    from sandbox import MariaDB, free_port
    restored = MariaDB("restored", str(tmp_path / "restored"), free_port(), 99)
    shutil.copytree(scratch, restored.datadir, symlinks=True)
    proc = restored.start()
    try:
        tables = ["hs.t1", "hs.t2"]
        expected = checksums(sb.source, tables)
        assert checksums(restored, tables) == expected
        assert all(v is not None for v in expected.values())
        assert restored.sql("SELECT COUNT(*) FROM hs.t1")[0][0] == 3000
        assert restored.sql("SELECT @@gtid_slave_pos")[0][0] == source_gtid
    finally:
        restored.stop(proc)

    # a backup with --slave-info killed mid-way: the SQL thread that --safe-slave-backup
    # stopped is started again (mariabackup itself only restarts it when it finishes)
    db = subprocess.Popen([PY, DBHOST, "backup", "--flavor", "mariadb", "--socket", sb.replica.socket,
                           "--parallel", "1", "--compress", "none", "--slave-info", "--safe-slave-backup"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db.stdin.write(creds(sb))
    db.stdin.close()
    got = 0
    while got < (1 << 20):
        chunk = db.stdout.read1(65536)
        assert chunk, db.stderr.read().decode()[-3000:]
        got += len(chunk)
    assert sb.replica.sql("SHOW SLAVE STATUS")[0][11] == "No", "stopped by --safe-slave-backup"
    db.send_signal(signal.SIGTERM)
    err = db.stderr.read().decode()
    db.wait(timeout=30)
    db.stdout.close()
    db.stderr.close()
    assert db.returncode == 5, err[-3000:]
    assert "restarted the replica SQL thread" in err
    assert sb.replica.sql("SHOW SLAVE STATUS")[0][11] == "Yes"


def test_backup_over_ssh(sandbox, tmp_path):
    ssh = sandbox.sshd.ssh_argv()
    label = tmp_path / "remote" / "20261124-235900F"
    db_cmd = " ".join(shlex.quote(a) for a in [
        "python3", DBHOST, "backup", "--flavor", "mariadb", "--host", "127.0.0.1",
        "--port", str(sandbox.source.port), "--parallel", "2", "--compress", "gzip"])
    st_cmd = " ".join(shlex.quote(a) for a in [
        "python3", STORAGE, "receive", "--dir", str(label), "--artifact", "backup.xbstream.gz"])
    db_rc, db_err, st_rc, st_err = pipeline(ssh + [db_cmd], ssh + [st_cmd], creds(sandbox))
    assert db_rc == 0, db_err[-3000:]
    assert st_rc == 0, st_err[-3000:]
    assert sandbox.backup_password not in db_err
    rres = result_of(st_err)
    assert rres["sha256"] == hashlib.sha256((label / "backup.xbstream.gz").read_bytes()).hexdigest()
    v_cmd = " ".join(shlex.quote(a) for a in [
        "python3", STORAGE, "verify", "--dir", str(label), "--artifact", "backup.xbstream.gz",
        "--sha256", rres["sha256"], "--flavor", "mariadb", "--scratch", str(tmp_path / "scratch"),
        "--use-memory", "64M"])
    r = subprocess.run(ssh + [v_cmd], capture_output=True, timeout=120)
    vres = result_of(r.stderr.decode())
    assert r.returncode == 0 and vres["prepared"] is True, r.stderr.decode()[-3000:]
    assert vres["binlog"]["gtid"] == result_of(db_err)["binlog"]["gtid"]
    assert not (tmp_path / "scratch").exists()


def test_cut_stream_leaves_nothing_after_discard(sandbox, tmp_path):
    """SIGTERM the backup mid-stream: children die, PARTIAL, and discard removes what landed."""
    label = tmp_path / "cut" / "20261124-230000F"
    work = tmp_path / "work"
    work.mkdir()
    db = subprocess.Popen([PY, DBHOST, "backup", "--flavor", "mariadb", "--socket", sandbox.source.socket,
                           "--parallel", "1", "--compress", "none", "--tmpdir", str(work)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    st = subprocess.Popen([PY, STORAGE, "receive", "--dir", str(label), "--artifact", "backup.xbstream"],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db.stdin.write(creds(sandbox))
    db.stdin.close()
    # forward 1 MiB (the stream is well over 10 MiB, and the backup blocks on the full pipe), then cut
    forwarded = 0
    while forwarded < (1 << 20):
        chunk = db.stdout.read1(65536) if hasattr(db.stdout, "read1") else db.stdout.read(65536)
        assert chunk, db.stderr.read().decode()[-3000:]
        st.stdin.write(chunk)
        forwarded += len(chunk)
    assert procs_mentioning(str(work)), "the backup tool runs while the stream is blocked"
    db.send_signal(signal.SIGTERM)
    db_err = db.stderr.read().decode()
    db.wait(timeout=30)
    rest = db.stdout.read()
    st.stdin.write(rest)
    st.stdin.close()
    st_err = st.stderr.read().decode()
    st.wait(timeout=30)
    db.stdout.close()
    db.stderr.close()
    st.stderr.close()

    res = result_of(db_err)
    assert db.returncode == 5 and res["status"] == "error" and "SIGTERM" in res["error"], db_err[-2000:]
    deadline = time.monotonic() + 10
    while procs_mentioning(str(work)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert procs_mentioning(str(work)) == [], "mariabackup was killed with the script"
    assert os.listdir(work) == [], "the private work directory is removed"
    # the receiver cannot tell a cut stream from a short one: it lands, but verify refuses it
    rres = result_of(st_err)
    assert st.returncode == 0 and rres["size_bytes"] == forwarded + len(rest)
    code, _, err, vres = run(STORAGE, "verify", "--dir", str(label), "--artifact", "backup.xbstream",
                             "--sha256", rres["sha256"], "--flavor", "mariadb",
                             "--scratch", str(tmp_path / "scratch"), "--use-memory", "64M")
    assert code == 3, err[-2000:]
    assert not (tmp_path / "scratch").exists()
    code, _, err, dres = run(STORAGE, "discard", "--dir", str(label))
    assert code == 0 and dres["removed"] is True
    assert not label.exists()


@pytest.mark.parametrize("attempt", range(20))
def test_receive_interrupted_removes_partial(tmp_path, attempt):
    """SIGTERM while receive waits for more of the stream (stdin still open). Repeated: a signal
    that lands just before a blocking read used to wait for the next byte (about 1 run in 8)."""
    label = tmp_path / "l"
    st = subprocess.Popen([PY, STORAGE, "receive", "--dir", str(label), "--artifact", "backup.xbstream"],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        st.stdin.write(os.urandom(1 << 20))
        st.stdin.flush()
        deadline = time.monotonic() + 10
        partial = label / "backup.xbstream.partial"
        while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert partial.exists()
        st.send_signal(signal.SIGTERM)
        try:
            st.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("receive did not stop within 10 s of SIGTERM")
        err = st.stderr.read().decode()
    finally:
        if st.poll() is None:
            st.kill()
            st.wait()
        st.stdin.close()
        st.stderr.close()
    assert st.returncode == 5 and result_of(err)["verb"] == "receive"
    assert not partial.exists() and not label.exists()


def test_backup_wrong_password_fails_cleanly(sandbox, tmp_path):
    label = tmp_path / "bad" / "20261124-220000F"
    db_rc, db_err, st_rc, st_err = pipeline(
        [PY, DBHOST, "backup", "--flavor", "mariadb", "--socket", sandbox.source.socket, "--parallel", "1",
         "--compress", "none"],
        [PY, STORAGE, "receive", "--dir", str(label), "--artifact", "backup.xbstream"],
        creds(sandbox, password="not-the-password"))
    res = result_of(db_err)
    assert db_rc == 3 and "Access denied" in res["error"], db_err[-2000:]
    assert "not-the-password" not in db_err
    assert st_rc == 3 and "empty stream" in result_of(st_err)["error"]
    assert not label.exists(), "the label directory receive created is removed again"
