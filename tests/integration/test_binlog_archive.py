"""The continuous binlog archive, for real: the supervisor DAG ``mysql_binlog__sandbox`` under
dag.test(), over real ssh, starting a real detached streamer (mariadb-binlog as its child) against
the real sandbox servers. Every streamer started is stopped at teardown, and ps must show none left.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from receivers import Hook

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
SCRIPT = REPO / "include" / "scripts" / "binlog_archive.py"
DAG_ID = "mysql_binlog__sandbox"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_under(needle: str) -> dict[int, str]:
    """Live processes whose command line names ``needle`` (the streamers and their mariadb-binlog)."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and state != "Z":
            found[int(p.name)] = cmd
    return found


class ArchiveEnv:
    """CMDB, connections, catalog and a webhook receiver for one test; the archive under tmp_path."""

    def __init__(self, sb, tmp_path: Path, monkeypatch, hook: Hook):
        self.sb, self.tmp, self.hook = sb, tmp_path, hook
        self.base = tmp_path / "storage"
        self.cmdb_file = tmp_path / "cmdb.yaml"
        self.catalog_url = f"sqlite:///{tmp_path}/catalog.sqlite"
        monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(self.cmdb_file))
        monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", self.catalog_url)
        for conn_id, conn in sb.connections().items():
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        self.write_cmdb()

    def write_cmdb(self, port: int | None = None, **archive) -> None:
        doc = self.sb.cmdb(full_schedule=None, binlog_archive={"lease_minutes": 3, "lag_alert_seconds": 600,
                                                               **archive})
        doc["defaults"]["storage"]["base_dir"] = str(self.base)
        doc["defaults"]["alerts"] = {"webhook": {"url": self.hook.url("/hook")}}
        if port is not None:  # a failover: the row now points at the promoted replica
            doc["instances"] = [dict(doc["instances"][0], port=port)]
        self.cmdb_file.write_text(yaml.safe_dump(doc))

    @property
    def bdir(self) -> Path:
        return self.base / "sandbox" / "binlog"

    def run(self) -> tuple[str, dict]:
        from airflow.dag_processing.dagbag import BundleDagBag
        bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")
        assert bag.import_errors == {}
        t0 = time.monotonic()
        dr = bag.dags[DAG_ID].test()
        self.last_run_seconds = time.monotonic() - t0
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
        assert dr.state == "success", (states, self.streamer_log())
        return dr.state, self.state()

    def catalog(self):
        from mysqlbackup.catalog import Catalog
        return Catalog(self.catalog_url)

    def state(self) -> dict:
        with self.catalog() as cat:
            row = cat.archive_state("sandbox")
        return json.loads(row["details_json"])

    def identity_dir(self, server) -> Path:
        sid, uid = server.sql("SELECT @@server_id, @@server_uid")[0]
        import base64
        return self.bdir / f"{sid}-{base64.b64decode(uid).hex()[:12]}"

    def wait_caught_up(self, server, timeout: float = 30) -> tuple[str, int]:
        """Until the archive holds everything the server has written (its open file reached the server's
        position)."""
        deadline = time.monotonic() + timeout
        idir = self.identity_dir(server)
        while True:
            file, pos = server.sql("SHOW MASTER STATUS")[0][:2]
            open_file = idir / f"{file}.open"
            if open_file.exists() and open_file.stat().st_size >= pos:
                return file, pos
            if time.monotonic() > deadline:
                raise AssertionError(f"the archive did not reach {file}:{pos} in {timeout} s: "
                                     f"{sorted(p.name for p in idir.iterdir()) if idir.exists() else 'no dir'}\n"
                                     f"{self.streamer_log()}")
            time.sleep(0.05)

    def streamer_pid(self) -> int:
        return json.loads((self.bdir / ".streamer" / "pid.json").read_text())["pid"]

    def streamer_log(self) -> str:
        log = self.bdir / ".streamer" / "streamer.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else "(no streamer log)"

    def alerts(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.hook.requests]

    def stop_streamers(self) -> None:
        for ctl in self.base.rglob(".streamer"):
            subprocess.run([sys.executable, str(SCRIPT), "stop", "--dir", str(ctl.parent), "--wait", "10"],
                           capture_output=True, timeout=60)

    def finish(self, hook: Hook) -> None:
        """Teardown: stop every streamer, kill whatever still runs under the archive, and fail the test
        when anything had to be killed."""
        self.stop_streamers()
        left = processes_under(str(self.base))
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        hook.stop()
        assert left == {}, f"processes left running after the streamers were stopped: {left}"


@pytest.fixture
def archive_env(request, airflow_db, tmp_path, monkeypatch):
    sb = request.getfixturevalue(request.param) if hasattr(request, "param") else request.getfixturevalue("sandbox")
    hook = Hook().start()
    env = ArchiveEnv(sb, tmp_path, monkeypatch, hook)
    try:
        yield env
    finally:
        env.finish(hook)


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of a server: ``freeze()`` makes its current connections half-open
    (nothing forwarded, nothing closed), ``cut()`` resets them; new connections always go through."""

    def __init__(self, port: int):
        import socket
        self.target = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.pairs: list[list] = []  # [client, upstream, frozen]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            pair = [client, upstream, False]
            self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair) -> None:
        import select
        client, upstream = pair[0], pair[1]
        while not self.stopped:
            if pair[2]:
                time.sleep(0.05)
                continue
            try:
                ready, _, _ = select.select([client, upstream], [], [], 0.1)
                for s in ready:
                    if pair[2]:
                        break
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (upstream if s is client else client).sendall(data)
            except OSError:
                for s in (client, upstream):
                    s.close()
                return

    def freeze(self) -> None:
        for pair in self.pairs:
            pair[2] = True

    def cut(self) -> None:
        import socket
        for client, upstream, _ in list(self.pairs):
            for s in (client, upstream):
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped = True
        self.cut()
        self.sock.close()


def write(server, n: int, tag: str = "x") -> None:
    server.sql("CREATE DATABASE IF NOT EXISTS arch")
    server.sql("CREATE TABLE IF NOT EXISTS arch.t (id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(20), v VARCHAR(200))")
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            for i in range(n):
                cur.execute("INSERT INTO arch.t (tag, v) VALUES (%s, %s)", (tag, "v" * (i % 150)))
    finally:
        conn.close()


def server_files(server) -> list[tuple[str, int]]:
    return [(r[0], int(r[1])) for r in server.sql("SHOW BINARY LOGS")]


def gtids(files: list[Path]) -> list[tuple[int, int, int]]:
    """Every GTID in these binlog files, in order (our own binlog reader; a partial tail is not read)."""
    from mysqlbackup.binlog.events import parse_gtid
    from mysqlbackup.binlog.format import GTID_EVENT
    from mysqlbackup.binlog.reader import iter_file_events
    out = []
    for p in sorted(files, key=lambda p: int(p.name.split(".")[1])):
        for ev in iter_file_events(p):
            if ev.type == GTID_EVENT:
                g = parse_gtid(ev.body, ev.server_id)
                out.append((g.domain, g.server_id, g.seq_no))
    return out


def assert_no_gap_no_duplicate(idir: Path, server) -> None:
    """The archive holds exactly the server's transactions, each once, in order."""
    archived = gtids([p for p in idir.iterdir() if p.name.startswith("binlog.")])
    on_server = gtids([Path(server.datadir) / n for n, _ in server_files(server)])
    assert len(archived) == len(set(archived)), "a transaction was archived twice"
    assert archived == on_server, "the archive does not hold the server's transactions in order"


def test_archive_is_byte_identical_restarts_onto_a_new_script_version_and_resumes_after_kill_9(archive_env):
    env, src = archive_env, archive_env.sb.source
    write(src, 20)
    src.sql("FLUSH BINARY LOGS")
    write(src, 5)
    # a streamer from an older script version (another bundle directory) is already running
    old = Path.home() / ".mysql-backup" / "scripts-0000000000000000"
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(SCRIPT.parent, old)
    from mysqlbackup.archive import client_server_id
    from mysqlbackup.cmdb import load_cmdb
    inst = load_cmdb(env.cmdb_file).by_name("sandbox")
    creds = json.dumps({"user": "backup", "password": env.sb.backup_password}) + "\n{}\n"
    r = subprocess.run([sys.executable, str(old / "binlog_archive.py"), "supervise", "--dir", str(env.bdir),
                        "--host", "127.0.0.1", "--port", str(src.port), "--client-server-id",
                        str(client_server_id(inst)), "--lease-minutes", "3"], input=creds.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    old_pid = env.streamer_pid()
    assert "scripts-0000000000000000" in processes_under(str(env.bdir))[old_pid]

    # the supervisor DAG: the old streamer is stopped cleanly and the current version takes over
    _, st = env.run()
    assert st["streamer"]["action"] == "restarted" and "script version" in st["streamer"]["reason"], st["streamer"]
    new_pid = env.streamer_pid()
    assert new_pid != old_pid and not alive(old_pid)
    assert "scripts-0000000000000000" not in processes_under(str(env.bdir))[new_pid]
    shutil.rmtree(old, ignore_errors=True)

    # the archive trails the server: closed files are byte-identical to the server's
    env.wait_caught_up(src)
    idir = env.identity_dir(src)
    src.sql("FLUSH BINARY LOGS")
    env.wait_caught_up(src)
    *closed, (current, _) = server_files(src)
    for name, _size in closed:
        assert sha(idir / name) == sha(Path(src.datadir) / name), name
    _, st = env.run()
    assert st["streamer"]["action"] == "running" and st["caught_up"] and st["lag_seconds"] == 0, st
    with env.catalog() as cat:
        rows = {r["name"]: r for r in cat.binlog_files("sandbox")}
    for name, size in closed:
        row = rows[name]
        assert row["state"] == "closed" and row["size_bytes"] == size and row["sha256"] == sha(Path(src.datadir) / name)
        assert row["start_gtid_state"] is not None and row["first_event_at"] and row["last_event_at"]
    assert rows[current]["state"] == "open" and rows[current]["sha256"] is None
    assert st["gaps"] == [] and st["last_event_at"]

    # kill -9 in the middle of a file while transactions keep coming
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            write(src, 20, "load")

    writer = threading.Thread(target=load, daemon=True)
    writer.start()
    try:
        open_file = idir / f"{current}.open"
        deadline = time.monotonic() + 20
        while open_file.stat().st_size < 40_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        killed = env.streamer_pid()
        secret = json.loads((env.bdir / ".streamer" / "pid.json").read_text())["secret_dir"]
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_under(str(env.bdir)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_under(str(env.bdir)) == {}, "mariadb-binlog outlived its killed streamer"
        time.sleep(0.3)
    finally:
        stop.set()
        writer.join(30)
    # the kill left the file mid-file; make its tail a torn write too (half of the next event), unless
    # the kill already cut an event
    import binlog_archive
    at = binlog_archive.scan_binlog(str(open_file))["end"]
    server_copy = (Path(src.datadir) / current).read_bytes()
    assert len(server_copy) > at + 19, "the server wrote nothing after the kill"
    if open_file.stat().st_size == at:
        event_size = int.from_bytes(server_copy[at + 9:at + 13], "little")
        with open(open_file, "ab") as f:
            f.write(server_copy[at:at + event_size // 2])
    assert open_file.stat().st_size > at
    write(src, 10, "after")

    _, st = env.run()
    assert st["streamer"]["action"] == "started", st["streamer"]
    assert not Path(secret).exists(), "the killed streamer's credentials were not removed"
    env.wait_caught_up(src)
    src.sql("FLUSH BINARY LOGS")
    env.wait_caught_up(src)
    # the file that was being written when the streamer was killed: closed, byte-identical
    assert sha(idir / current) == sha(Path(src.datadir) / current)
    assert_no_gap_no_duplicate(idir, src)
    _, st = env.run()
    assert st["gaps"] == [] and st["caught_up"], st
    with env.catalog() as cat:
        row = next(r for r in cat.binlog_files("sandbox") if r["name"] == current)
    assert row["state"] == "closed" and row["sha256"] == sha(Path(src.datadir) / current)
    # the XCom of the run carries the same state
    db = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    try:
        [(value,)] = db.execute("SELECT value FROM xcom WHERE dag_id=? AND task_id='supervise_archive' "
                                "ORDER BY rowid DESC LIMIT 1", (DAG_ID,)).fetchall()
    finally:
        db.close()
    xcom = json.loads(value) if isinstance(value, (str, bytes)) else value
    assert xcom["head"]["file"] == st["head"]["file"] and "recovery_window" in xcom
    # the password is in no argv of what runs
    assert all(env.sb.backup_password not in cmd for cmd in processes_under(str(env.bdir)).values())
    env.supervise_seconds = env.last_run_seconds


@pytest.mark.parametrize("archive_env", ["fresh_sandbox"], indirect=True)
def test_a_purged_unseen_file_is_a_gap_that_marks_the_backups_crossing_it(archive_env):
    env, sb = archive_env, archive_env.sb
    src = sb.source
    write(src, 10)
    backup_before = record_backup(env, "20200101-000000F", src)
    env.run()
    env.wait_caught_up(src)
    idir = env.identity_dir(src)

    # a server restart is resumed without a gap
    src.stop(sb._procs.pop("source"))
    sb._procs["source"] = src.start()
    write(src, 10, "restart")
    env.wait_caught_up(src, timeout=60)

    # the supervisor stops running: the lease expires and the streamer stops by itself
    lease = env.bdir / ".streamer" / "lease.json"
    data = json.loads(lease.read_text())
    pid = env.streamer_pid()
    secret = json.loads((env.bdir / ".streamer" / "pid.json").read_text())["secret_dir"]
    data["expires_at"] = int(time.time()) - 1
    lease.write_text(json.dumps(data))
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the streamer did not stop when its lease expired"
    assert processes_under(str(env.bdir)) == {} and not Path(secret).exists()
    assert "lease expired" in env.streamer_log()

    # meanwhile the server writes on, rotates and purges what was never archived
    head = max((p for p in idir.iterdir() if p.name.endswith(".open")), key=lambda p: p.name)
    write(src, 15, "lost")
    for _ in range(3):
        src.sql("FLUSH BINARY LOGS")
        write(src, 5, "lost")
    newest = server_files(src)[-1][0]
    # (a file whose transactions InnoDB has not flushed yet is kept for crash recovery: the sandbox flushes
    # its redo log once a second, so the purge may take a second to go through)
    deadline = time.monotonic() + 15
    while [n for n, _ in server_files(src)] != [newest] and time.monotonic() < deadline:
        src.sql(f"PURGE BINARY LOGS TO '{newest}'")
        time.sleep(0.2)
    assert [n for n, _ in server_files(src)] == [newest]
    write(src, 5, "kept")
    backup_after = record_backup(env, "20200102-000000F", src)

    _, st = env.run()
    env.wait_caught_up(src)
    _, st = env.run()
    name = head.name[:-len(".open")]
    assert (idir / f"{name}.incomplete").exists() and not head.exists(), (sorted(p.name for p in idir.iterdir()), env.streamer_log())
    [gap] = st["gaps"]
    assert gap["kind"] == "purged" and name in gap["detail"], gap
    assert st["pitr_blocked"] == [backup_before], st
    with env.catalog() as cat:
        statuses = cat.statuses("sandbox")
        blocks = cat.pitr_blocks("sandbox")
        [row] = cat.binlog_gaps("sandbox")
        files = {r["name"]: r["state"] for r in cat.binlog_files("sandbox")}
    # marked not usable for PITR, still usable for a full restore
    assert statuses == {backup_before: "usable", backup_after: "usable"}
    assert [(b["label"], b["gap_key"]) for b in blocks] == [(backup_before, gap["key"])]
    assert blocks[0]["pitr_until"] and "point-in-time" in blocks[0]["detail"]
    assert files[name] == "incomplete" and row["alerted_at"]
    window = st["recovery_window"]
    # a restore from the older backup reaches the last event before the gap; the newer one is not blocked
    assert window["backups"][backup_before]["until"] == gap["from"]
    assert window["backups"][backup_after]["blocked_by"] == []
    assert window["earliest"] == window["backups"][backup_before]["from"] and len(window["windows"]) == 2
    [alert] = [a for a in env.alerts() if a["event"] == "GAP"]
    assert backup_before in alert["error"] and alert["instance"] == "sandbox"
    # once per incident: the next minute's run does not alert again
    env.run()
    assert len([a for a in env.alerts() if a["event"] == "GAP"]) == 1


def record_backup(env: ArchiveEnv, label: str, server) -> str:
    """A usable backup row at the server's current GTID state (what a real backup's manifest records)."""
    from datetime import datetime, timezone

    from factories import manifest_data
    from mysqlbackup.manifest import from_dict
    gtid = server.sql("SELECT @@gtid_binlog_pos")[0][0]
    now = datetime.now(timezone.utc).isoformat()
    m = from_dict(manifest_data(instance="sandbox", label=label, gtid=gtid, started_at=now, finished_at=now,
                                storage_path=f"{env.base}/sandbox/{label}", storage_ssh_conn_id="sandbox_storage"))
    with env.catalog() as cat:
        cat.record_manifest(m)
    time.sleep(1.1)  # the backup's point is before the next transactions, at one-second resolution
    return label


@pytest.mark.parametrize("archive_env", ["fresh_sandbox"], indirect=True)
def test_a_promoted_replica_is_archived_under_its_own_identity_without_overwriting(archive_env):
    env, sb = archive_env, archive_env.sb
    src, rep = sb.source, sb.replica
    write(src, 10)
    env.run()
    env.wait_caught_up(src)
    src.sql("FLUSH BINARY LOGS")
    env.wait_caught_up(src)
    old = env.identity_dir(src)
    before = {p.name: sha(p) for p in old.iterdir() if p.is_file() and p.name.startswith("binlog.")
              and not p.name.endswith(".open")}
    assert "binlog.000001" in before

    # failover: the replica has everything, is promoted, and the CMDB row now points at it
    sb.sync_replica()
    rep.sql("STOP SLAVE")
    rep.sql("RESET SLAVE ALL")
    env.write_cmdb(port=rep.port)
    _, st = env.run()
    assert st["streamer"]["action"] == "restarted" and "the CMDB says" in st["streamer"]["reason"], st["streamer"]
    write(rep, 10, "promoted")
    env.wait_caught_up(rep)
    rep.sql("FLUSH BINARY LOGS")
    env.wait_caught_up(rep)
    _, st = env.run()
    new = env.identity_dir(rep)
    assert new != old and st["identity"] == new.name
    # the new primary's binlog.000001 is its own, and the old one's is untouched
    assert sha(new / "binlog.000001") == sha(Path(rep.datadir) / "binlog.000001")
    assert sha(new / "binlog.000001") != before["binlog.000001"]
    assert {p.name: sha(p) for p in old.iterdir() if p.name in before} == before
    assert st["gaps"] == [], st["gaps"]  # the promoted replica's binlog continues the old primary's history
    with env.catalog() as cat:
        idents = {r["server_identity"] for r in cat.binlog_files("sandbox")}
    assert idents == {old.name, new.name}
    assert_no_gap_no_duplicate(new, rep)


def test_a_network_cut_and_a_half_open_connection_are_resumed_without_a_gap(archive_env):
    env, src = archive_env, archive_env.sb.source
    proxy = Proxy(src.port)
    try:
        env.write_cmdb(port=proxy.port, stall_seconds=10)
        write(src, 10, "net")
        _, st = env.run()
        assert st["streamer"]["action"] == "started", st["streamer"]
        env.wait_caught_up(src)
        idir = env.identity_dir(src)
        # a hard cut (connection reset): the streamer reconnects by itself, from the last complete event
        proxy.cut()
        write(src, 10, "cut")
        env.wait_caught_up(src, timeout=30)
        assert "Lost connection" in env.streamer_log() or "exited" in env.streamer_log()
        # a half-open connection: nothing arrives, nothing fails; the supervisor sees the server ahead and the
        # archive quiet for longer than stall_seconds, and restarts the streamer
        proxy.freeze()
        write(src, 10, "frozen")
        time.sleep(11)
        _, st = env.run()
        assert st["streamer"]["action"] == "restarted" and "stalled" in st["streamer"]["reason"], st["streamer"]
        env.wait_caught_up(src)
        src.sql("FLUSH BINARY LOGS")
        env.wait_caught_up(src)
        assert_no_gap_no_duplicate(idir, src)
        _, st = env.run()
        assert st["gaps"] == [] and st["caught_up"]
    finally:
        env.stop_streamers()
        proxy.stop()


@pytest.mark.parametrize("archive_env", ["fresh_sandbox"], indirect=True)
def test_retention_expires_old_backups_and_the_binlogs_only_they_needed_and_the_rest_still_restores(archive_env,
                                                                                                     tmp_path):
    """Real backups and the real archive: the kept backup still restores and rolls forward without a gap."""
    import dataset
    from airflow.dag_processing.dagbag import BundleDagBag
    env, sb = archive_env, archive_env.sb
    src = sb.source
    doc = sb.cmdb(full_schedule=None, retention_days=None, retention_full_chains=1,
                  binlog_archive={"lease_minutes": 3, "lag_alert_seconds": 600})
    doc["defaults"]["storage"]["base_dir"] = str(env.base)
    env.cmdb_file.write_text(yaml.safe_dump(doc))

    def backup():
        sb.sync_replica()
        bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")
        dr = bag.dags["mysql_backup__sandbox"].test(run_conf={"kind": "full"})
        assert dr.state == "success", {ti.task_id: ti.state for ti in dr.get_task_instances()}
        with env.catalog() as cat:
            return cat.last_usable("sandbox")

    env.run()
    for i in range(3):  # three closed files before the first backup
        write(src, 20, f"a{i}")
        src.sql("FLUSH BINARY LOGS")
    first = backup()
    write(src, 20, "between")
    src.sql("FLUSH BINARY LOGS")
    env.wait_caught_up(src)
    env.run()
    with env.catalog() as cat:
        before = {f["name"]: f for f in cat.binlog_files("sandbox")}
    second = backup()  # retention_full_chains=1: the first backup expires, and the binlogs only it needed
    expected = src.sql("CHECKSUM TABLE arch.t EXTENDED")[0][1]
    with env.catalog() as cat:
        assert cat.statuses("sandbox")[first["label"]] == "expired"
        after = {f["name"]: f for f in cat.binlog_files("sandbox")}
        gone = {f["name"] for f in cat.binlog_files("sandbox", include_expired=True) if f["state"] == "expired"}
    assert not (env.base / "sandbox" / first["label"]).exists()
    idir = env.identity_dir(src)
    assert gone and all(not (idir / name).exists() for name in gone)
    assert set(before) - set(after) == gone
    # every file kept is needed after the kept backup's GTID, or is the one being written
    from mysqlbackup.archive import parse_gtid_state
    horizon = parse_gtid_state(second["gtid"])
    for name, f in after.items():
        end = parse_gtid_state(f["end_gtid_state"]) or {}
        assert f["state"] == "open" or any(seq > horizon.get(d, (0, 0))[1] for d, (_s, seq) in end.items()), (name, f)
    # the archive still rolls forward from the kept backup: no gap, no PITR block
    write(src, 5, "after")
    env.wait_caught_up(src)
    _, state = env.run()
    assert state["gaps"] == [] and second["label"] not in state["pitr_blocked"], state
    # and the kept backup restores
    server, proc = dataset.restore(Path(second["storage_path"]), second["artifact"], tmp_path)
    try:
        assert server.sql("CHECKSUM TABLE arch.t EXTENDED")[0][1] == expected
    finally:
        dataset.cleanup(server, proc, tmp_path)
