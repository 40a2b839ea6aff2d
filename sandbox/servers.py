"""Throwaway MariaDB servers and an sshd on loopback, for the demo and the tests.

Everything lives under one state directory; nothing touches port 3306, /run/mysqld or the
system's my.cnf (every tool gets ``--no-defaults``). Ports are picked free by binding
127.0.0.1:0. ``Sandbox.stop()`` ends every process it started.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pymysql

BACKUP_USER = "backup"
REPL_USER = "repl"
ADMIN_USER = "restore_admin"  # the restore target's admin login (mysql_conn_id): restored with the data
TARGET_CTL = Path(__file__).resolve().with_name("target_ctl.py")
ADMIN_ADDED = "admin_user_added"  # in the state dir: the newest backups predate ADMIN_USER
# Set (to the state directory) by scripts/demo.sh for everything it starts, and passed by the
# sandbox's sshd to its sessions (SetEnv): `sweep` finds what is left of a demo by it.
MARK_ENV = "MYSQL_BACKUP_SANDBOX"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now (as mariadbd and sshd do: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _which(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} not found: run scripts/install.sh (installs mariadb-server, "
                           f"mariadb-backup, openssh-server)")
    return path


def _wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    tail = ""
    if log and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0): look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait, then SIGKILL; reaps our own child when we hold its handle."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait(timeout=10)


def _runs(pid: int, needle: str) -> bool:
    """Whether ``pid`` still is the process we started (its command line names ``needle``): a pid
    recorded in state.json may belong to another process after a reboot."""
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def marked_pids(mark: str) -> dict[int, str]:
    """Live processes whose environment has ``MARK_ENV=mark`` (not this process nor its ancestors)."""
    want = f"{MARK_ENV}={mark}".encode()
    skip = _ancestors(os.getpid())
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        pid = int(name)
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if want in env.split(b"\0") and _pid_alive(pid):
            found[pid] = cmd
    return found


def sweep(mark: str, timeout: float = 15.0) -> dict[int, str]:
    """End every process still carrying the demo's mark (SIGTERM, then SIGKILL): what a stop of the
    process groups missed, e.g. ssh clients a task started in their own session, or the commands
    they ran on the sandbox's sshd. Returns what it found."""
    found = marked_pids(mark)
    for pid in found:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_pid_alive(p) for p in found):
        time.sleep(0.1)
    for pid in found:
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def make_template(path: Path) -> Path:
    """A freshly initialised data directory, copied per instance (0.02 s a copy)."""
    if (path / "mysql").is_dir():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [_which("mariadb-install-db"), "--no-defaults", f"--user={os.environ.get('USER') or 'root'}",
           "--auth-root-authentication-method=normal", "--skip-test-db",
           "--innodb-log-file-size=8M", f"--datadir={tmp}"]
    if os.geteuid() == 0:
        cmd[2] = "--user=root"
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {res.stderr[-2000:]}")
    tmp.rename(path)
    return path


@dataclass
class MariaDB:
    """One mariadbd on 127.0.0.1 with its own datadir, socket and binlog."""

    name: str
    base: str
    port: int
    server_id: int
    pid: int = 0
    extra_args: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> str:
        return f"{self.base}/data"

    @property
    def socket(self) -> str:
        return f"{self.base}/mysqld.sock"

    @property
    def log(self) -> str:
        return f"{self.base}/error.log"

    def argv(self) -> list[str]:
        args = [_which("mariadbd"), "--no-defaults", f"--datadir={self.datadir}",
                f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--pid-file={self.base}/mysqld.pid", f"--log-error={self.log}",
                f"--server-id={self.server_id}", f"--log-bin={self.datadir}/binlog",
                "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL",
                "--gtid-strict-mode=ON", "--log-slave-updates=ON", "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M", "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci", "--gtid-domain-id=0",
                "--max-connections=200",
                # a sandbox: commit to the OS, fsync the redo log once a second (a CI disk with
                # slow fsync would otherwise pace every test's workload)
                "--innodb-flush-log-at-trx-commit=2"]
        if os.geteuid() == 0:
            args.insert(2, "--user=root")
        return args + list(self.extra_args)

    def start(self, template: Path | None = None, timeout: float = 60.0,
              extra: tuple[str, ...] | list[str] = ()) -> subprocess.Popen:
        """Start on the existing datadir, or on a copy of ``template`` when there is none yet.

        ``extra`` is added to this start's arguments only (e.g. ``--skip-slave-start``).
        """
        base = Path(self.base)
        base.mkdir(parents=True, exist_ok=True)
        if not Path(self.datadir, "mysql").is_dir():
            if template is None:
                raise RuntimeError(f"{self.datadir} is empty and no template was given")
            shutil.copytree(template, self.datadir, symlinks=True)
        proc = subprocess.Popen(self.argv() + list(extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.pid = proc.pid

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mariadbd {self.name} exited with {proc.returncode}; log:\n"
                                   + Path(self.log).read_text(errors="replace")[-3000:])
            try:
                self.connect().close()
                return True
            except pymysql.err.OperationalError:
                return False
        _wait_for(ready, timeout, f"mariadbd {self.name} on port {self.port}", Path(self.log))
        return proc

    def connect(self, db: str | None = None, **kw) -> pymysql.connections.Connection:
        """A root connection over the socket (autocommit unless the caller says otherwise)."""
        kw.setdefault("autocommit", True)
        return pymysql.connect(unix_socket=self.socket, user="root", password="", database=db,
                               charset="utf8mb4", connect_timeout=5, **kw)

    def sql(self, query: str, args=None, db: str | None = None) -> list[tuple]:
        """Run one statement as root; returns its rows."""
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self, proc: subprocess.Popen | None = None) -> None:
        if self.pid and (proc is not None or _runs(self.pid, self.datadir)):
            stop_pid(self.pid, proc=proc)
        self.pid = 0


@dataclass
class Sshd:
    """An sshd on 127.0.0.1 accepting one generated key, for the current user."""

    base: str
    port: int
    pid: int = 0

    @property
    def client_key(self) -> str:
        return f"{self.base}/client_key"

    @property
    def host_key(self) -> str:
        return f"{self.base}/host_key"

    @property
    def known_hosts(self) -> str:
        return f"{self.base}/known_hosts"

    @property
    def user(self) -> str:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name

    def host_key_public(self) -> str:
        """The host key line as Airflow's SSH connection wants it in extra ``host_key``."""
        return Path(self.host_key + ".pub").read_text().split()[1]

    def start(self, timeout: float = 20.0) -> subprocess.Popen:
        base = Path(self.base)
        base.mkdir(parents=True, exist_ok=True)
        keygen = _which("ssh-keygen")
        for key in (self.host_key, self.client_key):
            if not Path(key).exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        os.chmod(self.client_key, 0o600)
        pub = Path(self.client_key + ".pub").read_text()
        Path(base, "authorized_keys").write_text(pub)
        Path(self.known_hosts).write_text(
            f"[127.0.0.1]:{self.port} " + " ".join(Path(self.host_key + ".pub").read_text().split()[:2]) + "\n")
        cfg = base / "sshd_config"
        cfg.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {base}/authorized_keys", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no",
            "StrictModes no", f"PidFile {base}/sshd.pid", "MaxStartups 100:30:200", "MaxSessions 100",
            "Subsystem sftp /usr/lib/openssh/sftp-server", "LogLevel ERROR",
            # the demo's mark reaches the commands run over ssh too (see sweep)
            *([f'SetEnv "{MARK_ENV}={os.environ[MARK_ENV]}"'] if os.environ.get(MARK_ENV) else []), ""]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        sshd = _which("sshd") if shutil.which("sshd") else "/usr/sbin/sshd"
        subprocess.run([sshd, "-t", "-f", str(cfg)], check=True)
        log = base / "sshd.log"
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                                start_new_session=True)
        self.pid = proc.pid

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()[-2000:]}")
            r = subprocess.run(self.ssh_argv() + ["true"], capture_output=True)
            return r.returncode == 0
        _wait_for(ready, timeout, f"sshd on port {self.port}", log)
        return proc

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-F", "none", "-p", str(self.port), "-i", self.client_key,
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                f"{self.user}@127.0.0.1"]

    def connection(self) -> dict:
        """An Airflow SSH connection (JSON form, for AIRFLOW_CONN_<ID>)."""
        return {"conn_type": "ssh", "host": "127.0.0.1", "port": self.port, "login": self.user,
                "extra": {"key_file": self.client_key, "host_key": self.host_key_public(),
                          "no_host_key_check": False}}

    def stop(self, proc: subprocess.Popen | None = None) -> None:
        if self.pid and (proc is not None or _runs(self.pid, f"{self.base}/sshd_config")):
            stop_pid(self.pid, proc=proc)
        self.pid = 0


@dataclass
class Sandbox:
    """A MariaDB source, its GTID replica, and an sshd: the database host and the storage host."""

    state_dir: str
    source: MariaDB
    replica: MariaDB | None
    sshd: Sshd
    backup_password: str
    storage_dir: str
    # a restore target: a datadir and a port, no server until a restore starts one (target_ctl.py over ssh)
    target: MariaDB | None = None
    _procs: dict = field(default_factory=dict, repr=False)
    moved: dict = field(default_factory=dict, repr=False)  # by resume(): {"source": (old_port, new_port)}

    @classmethod
    def create(cls, state_dir: str | Path, replica: bool = True, template: Path | None = None,
               target: bool = True) -> "Sandbox":
        state = Path(state_dir).resolve()
        state.mkdir(parents=True, exist_ok=True)
        template = template or make_template(state / "template")
        password = os.urandom(12).hex()
        sb = cls(
            state_dir=str(state),
            source=MariaDB("source", str(state / "source"), free_port(), 1),
            replica=MariaDB("replica", str(state / "replica"), free_port(), 2) if replica else None,
            sshd=Sshd(str(state / "sshd"), free_port()),
            backup_password=password,
            storage_dir=str(state / "storage"),
            target=MariaDB("target", str(state / "target"), free_port(), 0) if target else None,
        )
        Path(sb.storage_dir).mkdir(exist_ok=True)
        if sb.target is not None:
            Path(sb.target.base).mkdir(exist_ok=True)
        try:
            sb._procs["source"] = sb.source.start(template)
            if sb.replica:
                sb._procs["replica"] = sb.replica.start(template)
            sb._procs["sshd"] = sb.sshd.start()
            sb._setup_users()
            if sb.replica:
                sb._setup_replication()
        except BaseException:
            sb.stop()
            raise
        sb.write_state()
        return sb

    @classmethod
    def resume(cls, state_dir: str | Path, log=None) -> "Sandbox":
        """Start a stopped sandbox again on its existing data: datadirs, binlogs, keys, password.

        Each server keeps its port when it is still free; a port taken meanwhile is replaced by a
        free one (``moved`` names them: update what points at them, e.g. a CMDB or Airflow
        connections). The replica starts with ``--skip-slave-start``, is re-pointed when the
        source moved, and resumes from its own ``gtid_slave_pos`` (MASTER_USE_GTID=slave_pos).
        """
        log = log or (lambda _m: None)
        sb = cls.load(state_dir)
        sb.stop()  # what is left of a crashed or half-stopped run (a no-op when nothing runs)
        for srv in sb.servers():
            if not Path(srv.datadir, "mysql").is_dir():
                raise RuntimeError(f"{srv.datadir} is missing: the sandbox in {sb.state_dir} is incomplete "
                                   f"(start from scratch with: scripts/demo.sh reset)")
        sb.moved = {}
        try:
            sb._procs["source"] = sb._start_on_free_port("source", sb.source, sb.source.start, log)
            if sb.replica:
                sb._procs["replica"] = sb._start_on_free_port(
                    "replica", sb.replica, lambda: sb.replica.start(extra=["--skip-slave-start"]), log)
            sb._procs["sshd"] = sb._start_on_free_port("sshd", sb.sshd, sb.sshd.start, log)
            if sb.replica:
                sb._resume_replication(log)
            # idempotent: a sandbox made before a user existed gets it (and its older backups lack it)
            if not sb.source.sql("SELECT 1 FROM mysql.user WHERE user = %s", (ADMIN_USER,)):
                Path(sb.state_dir, ADMIN_ADDED).write_text("the restore target's admin login was added after "
                                                          "the sandbox's first backups\n")
            sb._setup_users(sb.servers())
            if sb.target is not None and not port_free(sb.target.port):
                old, sb.target.port = sb.target.port, free_port()
                sb.moved["target"] = (old, sb.target.port)
                log(f"target: port {old} is taken now; moving to {sb.target.port}")
        except BaseException:
            sb.stop()
            raise
        sb.write_state()
        return sb

    def _start_on_free_port(self, key: str, obj, start, log, attempts: int = 3):
        """``start()`` on ``obj.port``, or on a new free port when that one is taken (also when it
        is taken between the check and the start: the server then fails to bind)."""
        for attempt in range(attempts):
            if not port_free(obj.port):
                old, obj.port = obj.port, free_port()
                self.moved[key] = (self.moved.get(key, (old,))[0], obj.port)
                log(f"{key}: port {old} is taken now; moving to {obj.port}")
            try:
                return start()
            except RuntimeError:
                if attempt + 1 < attempts and not port_free(obj.port):
                    obj.stop()
                    continue
                raise

    def _resume_replication(self, log) -> None:
        assert self.replica
        conn = self.replica.connect(cursorclass=pymysql.cursors.DictCursor)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW SLAVE STATUS")
                status = cur.fetchone() or {}
        finally:
            conn.close()
        if (int(status.get("Master_Port") or 0) != self.source.port or status.get("Master_Host") != "127.0.0.1"
                or status.get("Using_Gtid") != "Slave_Pos"):
            # CHANGE MASTER keeps gtid_slave_pos: the replica resumes from the last transaction it applied
            log(f"replica: pointing replication at the source's port {self.source.port} "
                f"(was {status.get('Master_Port') or 'unset'})")
            self.replica.sql("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER=%s, "
                             "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                             (self.source.port, REPL_USER, self.backup_password))
        self.replica.sql("START SLAVE")
        self.sync_replica()

    def servers(self) -> list[MariaDB]:
        return [s for s in (self.source, self.replica) if s]

    def _setup_users(self, servers: list[MariaDB] | None = None) -> None:
        for srv in self.servers() if servers is None else servers:
            for host in ("localhost", "127.0.0.1"):
                stmts = [
                    f"CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'{host}' IDENTIFIED BY %s",
                    f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'{host}'",
                    f"CREATE USER IF NOT EXISTS '{BACKUP_USER}'@'{host}' IDENTIFIED BY %s",
                    f"GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, SLAVE MONITOR, SELECT, "
                    f"SHOW VIEW, EVENT, TRIGGER, REPLICATION SLAVE ON *.* TO '{BACKUP_USER}'@'{host}'",
                    f"CREATE USER IF NOT EXISTS '{REPL_USER}'@'{host}' IDENTIFIED BY %s",
                    f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO '{REPL_USER}'@'{host}'",
                ]
                conn = srv.connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute("SET sql_log_bin=0")
                        for st in stmts:
                            cur.execute(st, (self.backup_password,) if "%s" in st else None)
                finally:
                    conn.close()

    def _setup_replication(self) -> None:
        assert self.replica
        self.replica.sql("STOP SLAVE")
        self.replica.sql("SET GLOBAL gtid_slave_pos=''")
        self.replica.sql(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER=%s, "
            "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            (self.source.port, REPL_USER, self.backup_password))
        self.replica.sql("START SLAVE")
        self.sync_replica()

    def sync_replica(self, timeout: int = 60) -> None:
        """Wait until the replica has applied everything the source has written."""
        if not self.replica:
            return
        pos = self.source.sql("SELECT @@gtid_binlog_pos")[0][0]
        res = self.replica.sql("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, timeout))[0][0]
        if res != 0:
            status = self.replica.sql("SHOW SLAVE STATUS")
            raise RuntimeError(f"replica did not reach {pos} in {timeout}s: {status}")

    def connections(self) -> dict[str, dict]:
        """Airflow connections for this sandbox, keyed by conn id."""
        ssh = self.sshd.connection()
        mysql = {"conn_type": "mysql", "host": "127.0.0.1", "login": BACKUP_USER,
                 "password": self.backup_password, "port": self.source.port}
        conns = {"sandbox_ssh": ssh, "sandbox_storage": ssh, "sandbox_mysql_backup": mysql}
        if self.target is not None:
            conns["sandbox_target_ssh"] = ssh
            conns["sandbox_target_admin"] = {"conn_type": "mysql", "host": "127.0.0.1", "login": ADMIN_USER,
                                             "password": self.backup_password, "port": self.target.port}
        return conns

    def target_row(self, python: str | None = None) -> dict:
        """The restore target's CMDB entry (``restore_targets``): stop/start by sandbox/target_ctl.py."""
        import sys
        assert self.target is not None
        ctl = f"{python or sys.executable} {TARGET_CTL} "
        return {"name": "sandbox_target", "host": "127.0.0.1", "port": self.target.port,
                "ssh_conn_id": "sandbox_target_ssh", "mysql_conn_id": "sandbox_target_admin",
                "datadir": self.target.datadir, "flavor": "mariadb",
                "stop_command": ctl + f"stop --base {self.target.base}",
                "start_command": ctl + f"start --base {self.target.base} --port {self.target.port}",
                "server_id": None, "drill": True}

    def stop_target(self) -> None:
        """Stop a server a restore started on the target (its pid file), if one runs."""
        if self.target is None:
            return
        try:
            pid = int(Path(self.target.base, "mysqld.pid").read_text().strip())
        except (OSError, ValueError):
            return
        if _pid_alive(pid) and _runs(pid, self.target.datadir):
            stop_pid(pid)

    def cmdb(self, **policy) -> dict:
        """A CMDB (as a dict, dump it to YAML) describing this sandbox."""
        # the sandbox's "data filesystem" is this machine's disk: a small reserve file is enough
        pol = {"full_schedule": "0 2 * * *", "retention_days": 7, "compress": "zstd", "parallel": 2,
               "reserve": {"percent": 0.01}}
        pol.update(policy)
        rows = [{"name": "sandbox", "host": "127.0.0.1", "port": self.source.port, "role": "primary",
                 "flavor": "mariadb", "ssh_conn_id": "sandbox_ssh",
                 "mysql_conn_id": "sandbox_mysql_backup", "owner": "dba@localhost", "app": "sandbox"}]
        if self.replica:
            rows.append({"name": "sandbox_replica", "host": "127.0.0.1", "port": self.replica.port,
                         "role": "replica", "replica_of": "sandbox", "flavor": "mariadb",
                         "ssh_conn_id": "sandbox_ssh", "mysql_conn_id": "sandbox_mysql_backup",
                         "owner": "dba@localhost", "app": "sandbox"})
        return {"defaults": {"storage": {"ssh_conn_id": "sandbox_storage", "base_dir": self.storage_dir},
                             "policy": pol},
                "storages": [{"ssh_conn_id": "sandbox_storage", "max_concurrent_backups": 2}],
                "instances": rows,
                **({"restore_targets": [{k: v for k, v in self.target_row().items() if v is not None}]}
                   if self.target is not None else {})}

    def write_state(self) -> Path:
        path = Path(self.state_dir, "state.json")
        data = {"source": asdict(self.source), "replica": asdict(self.replica) if self.replica else None,
                "sshd": asdict(self.sshd), "backup_password": self.backup_password,
                "storage_dir": self.storage_dir, "target": asdict(self.target) if self.target else None}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        return path

    @classmethod
    def load(cls, state_dir: str | Path) -> "Sandbox":
        state = Path(state_dir).resolve()
        data = json.loads(Path(state, "state.json").read_text())
        return cls(state_dir=str(state), source=MariaDB(**data["source"]),
                   replica=MariaDB(**data["replica"]) if data["replica"] else None,
                   sshd=Sshd(**data["sshd"]), backup_password=data["backup_password"],
                   storage_dir=data["storage_dir"],
                   target=MariaDB(**data["target"]) if data.get("target") else
                   MariaDB("target", str(state / "target"), free_port(), 0))

    def running(self) -> bool:
        return (all(s.pid and _pid_alive(s.pid) and _runs(s.pid, s.datadir) for s in self.servers())
                and bool(self.sshd.pid) and _pid_alive(self.sshd.pid)
                and _runs(self.sshd.pid, f"{self.sshd.base}/sshd_config"))

    def stop(self) -> None:
        """Stop everything this sandbox started (also when loaded from state by another process)."""
        self.stop_target()
        for key, obj in (("sshd", self.sshd), ("replica", self.replica), ("source", self.source)):
            if obj is not None:
                obj.stop(self._procs.pop(key, None))
        if Path(self.state_dir, "state.json").exists():
            self.write_state()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
