"""Orchestration overhead: the nightly backup DAG against the same work done by hand.

What it measures, in one process, on one private sandbox (MariaDB source + GTID replica + sshd
on loopback), on the same data:

* ``bare_backup``: the command a DBA would type, with the same ssh command line the sandbox
  gives: ``ssh db "mariabackup --backup --stream=mbstream ... --slave-info | zstd -q -c -T0" |
  ssh storage "cat > .../bare.xbstream.zst"`` against the replica.
* ``bare_verify``: the verification a DBA would do on the storage host: ``sha256sum`` of the
  file, ``zstd -d | mbstream -x`` into a scratch directory, ``sha256sum`` of every extracted
  file, ``mariabackup --prepare --use-memory=256M``, ``rm -rf`` the scratch copy.
* ``dag_total``: the wall time of ``dag.test()`` of ``mysql_backup__sandbox`` (the whole nightly
  job: collect_facts, choose_source, reserve_space, backup, verify_backup, catalog_backup),
  and each task's own duration from its task instance (start_date .. end_date).

Rounds alternate bare, then DAG. One untimed warm-up ``dag.test()`` runs first: the first one
in a process pays Airflow's own start-up; it is reported separately as a one-off cost.
Ratios: ``dag_total / (bare_backup + bare_verify)``, ``backup / bare_backup`` and
``verify_backup / bare_verify`` (medians). Target: the DAG within 1.15x of the bare commands.

``bare_fsync`` (informational, in no ratio): ``sync FILE`` right after the bare backup. The
bare ``cat >`` leaves the file in the page cache; ``storage.py receive`` fsyncs before it
renames the file into place, so part of that cost is in the DAG's backup task.

Everything (sandbox, AIRFLOW_HOME, catalog, CMDB, storage) lives in one temp directory that is
removed at the end (``--keep`` keeps it). Airflow's and the tasks' own log output goes to
``<tmp>/airflow-output.log``, not to the terminal. Needs about 5x ``--gib`` of free disk
(data, binlogs, relay log, replica, artifacts; 6.8 GB at 1 GiB). ``--gib 1 --rounds 2`` took
2 min 20 s on 2 cores, about 1 min of it loading the data.

    .venv/bin/python bench/orchestration_overhead.py --gib 0.05 --rounds 1     # smoke run
    .venv/bin/python bench/orchestration_overhead.py [--gib 1.0] [--rounds 2] [--compress zstd] [--keep]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "mysql_backup__sandbox"
TARGET = 1.15
MIB = 1 << 20
GIB = 1 << 30
TASKS = ("collect_facts", "choose_source", "reserve_space", "backup", "verify_backup", "catalog_backup")
SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}
COMPRESSOR = {"none": "", "gzip": " | gzip -c -1", "zstd": " | zstd -q -c -T0"}
DECOMPRESS = {"none": "cat", "gzip": "gzip -d -c", "zstd": "zstd -d -q -c"}

# the terminal, kept aside while Airflow's output goes to a log file
_OUT = sys.stdout
_T0 = time.monotonic()


def say(msg: str) -> None:
    """Progress, on stderr with the elapsed time."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {msg}", file=sys.__stderr__, flush=True)


def out(line: str = "") -> None:
    print(line, file=_OUT, flush=True)


@contextlib.contextmanager
def fd_redirect(path: Path):
    """Send fds 1 and 2 (Airflow's console logging, task logs) to a file, at the fd level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


# ---------------------------------------------------------------------------------------------
# environment


def hermetic_airflow_env(tmp: Path, sb) -> None:
    """The variables tests/conftest.py sets before Airflow is imported, plus this run's CMDB,
    catalog and connections."""
    home = tmp / "airflow"
    home.mkdir()
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "MYSQL_BACKUP_TASK_RETRIES": "0",
        "MYSQL_BACKUP_HOME": str(home / "mysql-backup"),
        "MYSQL_BACKUP_CATALOG_URL": f"sqlite:///{tmp}/catalog.sqlite",
        "MYSQL_BACKUP_CMDB": str(tmp / "cmdb.yaml"),
    })
    for conn_id, conn in sb.connections().items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)


def write_cmdb(tmp: Path, sb, compress: str) -> Path:
    import yaml
    doc = sb.cmdb(compress=compress, parallel=2)
    doc["defaults"]["storage"]["base_dir"] = str(tmp / "storage")
    path = tmp / "cmdb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return tmp / "storage"


def airflow_db_migrate() -> float:
    t0 = time.monotonic()
    airflow = REPO / ".venv" / "bin" / "airflow"
    if not airflow.exists():
        airflow = Path(sys.executable).with_name("airflow")
    res = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit("airflow db migrate failed:\n" + res.stderr[-3000:])
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# dataset

WORDS = ("order", "invoice", "customer", "shipment", "payment", "refund", "cart", "session", "login",
         "search", "review", "coupon", "warehouse", "stock", "return", "address", "newsletter")
STATES = ("new", "paid", "shipped", "delivered", "cancelled", "refunded", "on_hold")


def text_pool(rnd: random.Random, n: int = 8192) -> list[str]:
    """JSON-like event lines with some randomness: compressible like application data."""
    pool = []
    for i in range(n):
        pool.append(json.dumps({
            "id": rnd.randrange(10**9), "event": rnd.choice(WORDS) + "." + rnd.choice(STATES),
            "user": f"user{rnd.randrange(50000):05d}@example.com", "amount": round(rnd.uniform(0, 5000), 2),
            "ts": f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:"
                  f"{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}Z",
            "tags": rnd.sample(WORDS, rnd.randint(1, 4)), "note": " ".join(rnd.choices(WORDS, k=rnd.randint(3, 12))),
            "token": os.urandom(6).hex()}, separators=(",", ":")))
    return pool


def compressible_blob(rnd: random.Random, pool: list[str], size: int) -> bytes:
    avg = sum(len(s) for s in pool[:256]) / 256 + 1
    parts = rnd.choices(pool, k=int(size / avg) + 16)
    data = "\n".join(parts).encode()
    return data[:size]


def load_dataset(sb, gib: float, db: str = "bench", tables: int = 6, seed: int = 11) -> dict:
    """At least ``gib`` GiB in LONGBLOB rows of 1-4 MiB: half compressible text, half random."""
    rnd = random.Random(seed)
    pool = text_pool(rnd)
    total_target = int(gib * GIB)
    names = [f"{'text' if i % 2 == 0 else 'random'}_{i // 2}" for i in range(tables)]
    conn = sb.source.connect()
    t0 = time.monotonic()
    written = {"text": 0, "random": 0}
    rows = 0
    try:
        with conn.cursor() as cur:
            # rows are at most 4 MiB (+ escaping): the default 16M max_allowed_packet is enough
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
            for name in names:
                cur.execute(f"CREATE TABLE IF NOT EXISTS `{db}`.`{name}` (id BIGINT PRIMARY KEY, "
                            f"kind VARCHAR(16) NOT NULL, created DATETIME NOT NULL, data LONGBLOB NOT NULL) "
                            f"ENGINE=InnoDB")
            next_report = 0
            while written["text"] + written["random"] < total_target:
                kind = "text" if written["text"] <= written["random"] else "random"
                size = rnd.randint(1 * MIB, 4 * MIB)
                data = compressible_blob(rnd, pool, size) if kind == "text" else os.urandom(size)
                candidates = [n for n in names if n.startswith(kind)]
                table = candidates[rows % len(candidates)]
                cur.execute(f"INSERT INTO `{db}`.`{table}` VALUES (%s, %s, NOW(), %s)", (rows, kind, data))
                written[kind] += size
                rows += 1
                done = written["text"] + written["random"]
                if done >= next_report:
                    say(f"loading: {done / MIB:.0f} / {total_target / MIB:.0f} MiB")
                    next_report += max(64 * MIB, total_target // 8)
            load_s = time.monotonic() - t0
            t1 = time.monotonic()
            sb.sync_replica(timeout=600)
            sync_s = time.monotonic() - t1
            for name in names:
                cur.execute(f"ANALYZE TABLE `{db}`.`{name}`")
                cur.fetchall()
            cur.execute("SELECT COALESCE(SUM(data_length + index_length), 0), COUNT(*) FROM information_schema.TABLES "
                        "WHERE table_schema = %s", (db,))
            disk, ntables = cur.fetchone()
    finally:
        conn.close()
    return {"rows": rows, "tables": ntables, "payload_bytes": written["text"] + written["random"],
            "text_bytes": written["text"], "random_bytes": written["random"], "disk_bytes": int(disk),
            "load_s": load_s, "replica_sync_s": sync_s}


# ---------------------------------------------------------------------------------------------
# bare commands


def remote(sb, command: str) -> list[str]:
    return sb.sshd.ssh_argv() + [command]


def write_defaults_file(tmp: Path, sb) -> Path:
    """A 0600 client option file with the backup user, as a DBA would keep one."""
    d = tmp / "dba"
    d.mkdir(mode=0o700)
    path = d / "backup.cnf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[client]\nuser=backup\npassword={sb.backup_password}\n")
    return path


def bare_backup(sb, tmp: Path, defaults: Path, compress: str, bare_dir: Path) -> dict:
    target = Path(tempfile.mkdtemp(prefix="t-", dir=tmp / "dba"))
    artifact = bare_dir / f"bare.xbstream{SUFFIX[compress]}"
    db_cmd = (f"mariabackup --defaults-file={shlex.quote(str(defaults))} --backup --stream=mbstream "
              f"--target-dir={shlex.quote(str(target))} --parallel=2 --slave-info --host=127.0.0.1 "
              f"--port={sb.replica.port} --protocol=TCP{COMPRESSOR[compress]}")
    store_cmd = f"cat > {shlex.quote(str(artifact))}"
    err_path = tmp / "dba" / "bare-backup.err"
    p1 = p2 = None
    try:
        with open(err_path, "wb") as err:
            t0 = time.monotonic()
            p1 = subprocess.Popen(remote(sb, db_cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            p2 = subprocess.Popen(remote(sb, store_cmd), stdin=p1.stdout, stdout=subprocess.DEVNULL, stderr=err)
            p1.stdout.close()
            rc2 = p2.wait()
            rc1 = p1.wait()
            seconds = time.monotonic() - t0
    finally:
        for p in (p1, p2):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(target, ignore_errors=True)
    log = err_path.read_text(errors="replace")
    if rc1 != 0 or rc2 != 0 or "completed OK!" not in log:
        raise RuntimeError(f"bare backup failed (ssh db exit {rc1}, ssh storage exit {rc2}):\n{log[-3000:]}")
    t1 = time.monotonic()
    subprocess.run(remote(sb, f"sync {shlex.quote(str(artifact))}"), check=True)
    fsync_s = time.monotonic() - t1
    return {"seconds": seconds, "fsync_s": fsync_s, "artifact": artifact, "size_bytes": artifact.stat().st_size}


VERIFY_SCRIPT = r"""
set -eo pipefail
ts() { date +%s.%N; }
f=@F@; s=@S@; d=@D@
t0=$(ts)
sha256sum "$f" > "$d/bare.sha256"
t1=$(ts)
mkdir "$s"
@DECOMPRESS@ "$f" | mbstream -x -C "$s"
t2=$(ts)
(cd "$s" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) > "$d/bare.SHA256SUMS"
t3=$(ts)
mariabackup --no-defaults --prepare --target-dir="$s" --use-memory=256M > "$d/prepare.log" 2>&1
grep -q "completed OK!" "$d/prepare.log"
t4=$(ts)
rm -rf "$s"
t5=$(ts)
echo "PHASES $t0 $t1 $t2 $t3 $t4 $t5"
"""


def bare_verify(sb, tmp: Path, compress: str, artifact: Path) -> dict:
    scratch = tmp / "dba" / "scratch"
    script = (VERIFY_SCRIPT.replace("@F@", shlex.quote(str(artifact))).replace("@S@", shlex.quote(str(scratch)))
              .replace("@D@", shlex.quote(str(artifact.parent))).replace("@DECOMPRESS@", DECOMPRESS[compress]))
    t0 = time.monotonic()
    res = subprocess.run(remote(sb, "bash -c " + shlex.quote(script)), stdin=subprocess.DEVNULL, check=False,
                         capture_output=True, text=True)
    seconds = time.monotonic() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    if res.returncode != 0:
        raise RuntimeError(f"bare verify failed (exit {res.returncode}):\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}")
    stamps = [float(x) for x in res.stdout.split("PHASES", 1)[1].split()]
    names = ("sha256", "extract", "file_sums", "prepare", "rm")
    phases = {n: b - a for n, a, b in zip(names, stamps, stamps[1:])}
    files = len((artifact.parent / "bare.SHA256SUMS").read_text().splitlines())
    return {"seconds": seconds, "phases": phases, "files": files}


# ---------------------------------------------------------------------------------------------
# the DAG


def load_dag():
    from airflow.dag_processing.dagbag import BundleDagBag
    dags = REPO / "dags"
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=str(dags), bundle_name="dags-folder")
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag.dags[DAG_ID]


def xcom_values(run_id: str) -> dict[str, dict]:
    """return_value of each task of one run, read from the metadata DB."""
    db = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db")
    try:
        rows = db.execute("SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                          (DAG_ID, run_id)).fetchall()
    finally:
        db.close()
    values = {}
    for task_id, value in rows:
        try:
            v = json.loads(value) if isinstance(value, (str, bytes)) else value
            if isinstance(v, str):
                v = json.loads(v)
        except ValueError:
            v = {}
        values[task_id] = v if isinstance(v, dict) else {}
    return values


def run_dag(dag, airflow_log: Path, storage: Path) -> dict:
    called = datetime.now(UTC)
    t0 = time.monotonic()
    with fd_redirect(airflow_log):
        dr = dag.test()
    total = time.monotonic() - t0
    returned = datetime.now(UTC)
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    states = {k: ti.state for k, ti in tis.items()}
    if dr.state != "success":
        raise RuntimeError(f"DAG run {dr.run_id} ended {dr.state}: {states}; see {airflow_log}")
    tasks = {}
    for task_id in TASKS:
        ti = tis[task_id]
        tasks[task_id] = (ti.end_date - ti.start_date).total_seconds()
    starts = sorted(ti.start_date for ti in tis.values())
    ends = sorted(ti.end_date for ti in tis.values())
    xcom = xcom_values(dr.run_id)
    fb, vb = xcom.get("backup", {}), xcom.get("verify_backup", {})
    # the stored backup is not kept: the disk must not fill over the rounds
    label_dir = fb.get("label_dir")
    artifact_bytes = fb.get("size_bytes")
    if label_dir and Path(label_dir).is_dir():
        shutil.rmtree(label_dir)
    leftovers = [p for p in (storage / "sandbox").glob("*")] if (storage / "sandbox").is_dir() else []
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return {"total": total, "tasks": tasks, "run_id": dr.run_id,
            "before_first_task": (starts[0] - called).total_seconds(),
            "after_last_task": (returned - ends[-1]).total_seconds(),
            "artifact_bytes": artifact_bytes, "pipeline_s": fb.get("seconds"),
            "mariabackup_s": (fb.get("db") or {}).get("seconds"),
            "verify_script_s": vb.get("seconds"), "verify_extract_s": vb.get("extract_seconds"),
            "verify_prepare_s": vb.get("prepare_seconds"), "verify_files": vb.get("files")}


# ---------------------------------------------------------------------------------------------
# report


def f_s(x) -> str:
    return "-" if x is None else f"{x:8.2f} s"


def ratio(a, b) -> str:
    return f"{a / b:6.3f}x" if b else "   -   "


def print_round(title: str, bare: dict, dag: dict) -> None:
    t = dag["tasks"]
    other = sum(v for k, v in t.items() if k not in ("backup", "verify_backup"))
    in_tasks = sum(t.values())
    gaps = dag["total"] - in_tasks
    bare_total = bare["backup_s"] + bare["verify_s"]
    out(title)
    out(f"  {'step':<22}{'bare':>11}{'DAG':>11}{'overhead':>11}{'ratio':>9}")
    out(f"  {'backup (backup)':<22}{f_s(bare['backup_s']):>11}{f_s(t['backup']):>11}"
        f"{t['backup'] - bare['backup_s']:+10.2f}s{ratio(t['backup'], bare['backup_s']):>9}")
    out(f"  {'verify (verify_backup)':<22}{f_s(bare['verify_s']):>11}{f_s(t['verify_backup']):>11}"
        f"{t['verify_backup'] - bare['verify_s']:+10.2f}s{ratio(t['verify_backup'], bare['verify_s']):>9}")
    out(f"  {'other 4 tasks':<22}{'-':>11}{f_s(other):>11}{other:+10.2f}s")
    out(f"  {'outside tasks':<22}{'-':>11}{f_s(gaps):>11}{gaps:+10.2f}s")
    out(f"  {'whole job':<22}{f_s(bare_total):>11}{f_s(dag['total']):>11}"
        f"{dag['total'] - bare_total:+10.2f}s{ratio(dag['total'], bare_total):>9}")
    out("    other tasks: " + ", ".join(f"{k} {t[k]:.2f} s" for k in TASKS if k not in ("backup", "verify_backup")))
    out(f"    outside tasks: dag.test() call to first task start {dag['before_first_task']:.2f} s, "
        f"between tasks {gaps - dag['before_first_task'] - dag['after_last_task']:.2f} s, "
        f"last task end to return {dag['after_last_task']:.2f} s")
    if dag.get("pipeline_s") is not None:
        out(f"    backup inside: ssh|ssh pipeline {dag['pipeline_s']:.2f} s (mariabackup+compress on the host "
            f"{dag['mariabackup_s'] or 0:.2f} s), task minus pipeline {t['backup'] - dag['pipeline_s']:.2f} s")
    if dag.get("verify_script_s") is not None:
        out(f"    verify_backup inside: storage.py verify {dag['verify_script_s']:.2f} s (extract "
            f"{dag['verify_extract_s'] or 0:.2f} s, prepare {dag['verify_prepare_s'] or 0:.2f} s), "
            f"task minus script {t['verify_backup'] - dag['verify_script_s']:.2f} s")
    ph = bare.get("verify_phases") or {}
    if ph:
        out("    bare verify phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in ph.items()))
    if bare.get("fsync_s") is not None:
        out(f"    bare_fsync (informational, in no ratio): sync of the bare artifact after cat: {bare['fsync_s']:.2f} s")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="dataset size in GiB (default 1.0)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of bare + DAG (default 2)")
    ap.add_argument("--compress", choices=sorted(SUFFIX), default="zstd", help="policy compress (default zstd)")
    ap.add_argument("--keep", action="store_true", help="keep the temp state directory (servers are stopped)")
    args = ap.parse_args()
    if args.gib <= 0 or args.rounds < 1:
        ap.error("--gib must be > 0 and --rounds >= 1")

    sys.path.insert(0, str(REPO))
    from sandbox import Sandbox

    # short path: unix socket paths must stay under 108 bytes
    tmp = Path(tempfile.mkdtemp(prefix="mbk-bench-"))
    airflow_log = tmp / "airflow-output.log"
    sb = None
    try:
        say(f"state in {tmp}")
        t0 = time.monotonic()
        sb = Sandbox.create(tmp / "sb", replica=True)
        sandbox_s = time.monotonic() - t0
        say(f"sandbox up in {sandbox_s:.1f} s (source :{sb.source.port}, replica :{sb.replica.port}, "
            f"sshd :{sb.sshd.port})")
        hermetic_airflow_env(tmp, sb)
        storage = write_cmdb(tmp, sb, args.compress)
        migrate_s = airflow_db_migrate()
        say(f"airflow db migrate: {migrate_s:.1f} s")

        say(f"loading {args.gib} GiB")
        data = load_dataset(sb, args.gib)
        say(f"loaded {data['payload_bytes'] / MIB:.0f} MiB in {data['rows']} rows in {data['load_s']:.1f} s, "
            f"replica caught up {data['replica_sync_s']:.1f} s later")

        defaults = write_defaults_file(tmp, sb)
        bare_dir = tmp / "bare"
        bare_dir.mkdir()

        t0 = time.monotonic()
        with fd_redirect(airflow_log):
            import airflow  # noqa: F401
            dag = load_dag()
        import_s = time.monotonic() - t0
        say(f"airflow imported and DAG parsed in {import_s:.1f} s")

        say("warm-up dag.test() (not in the medians)")
        warm = run_dag(dag, airflow_log, storage)
        say(f"warm-up: {warm['total']:.1f} s")

        rounds = []
        for r in range(1, args.rounds + 1):
            say(f"round {r}: bare backup")
            b = bare_backup(sb, tmp, defaults, args.compress, bare_dir)
            say(f"round {r}: bare backup {b['seconds']:.1f} s, {b['size_bytes'] / MIB:.0f} MiB; bare verify")
            v = bare_verify(sb, tmp, args.compress, b["artifact"])
            for name in ("bare.sha256", "bare.SHA256SUMS", "prepare.log"):
                (bare_dir / name).unlink(missing_ok=True)
            b["artifact"].unlink()
            say(f"round {r}: bare verify {v['seconds']:.1f} s; DAG")
            d = run_dag(dag, airflow_log, storage)
            say(f"round {r}: DAG {d['total']:.1f} s")
            rounds.append({"bare": {"backup_s": b["seconds"], "verify_s": v["seconds"], "fsync_s": b["fsync_s"],
                                    "verify_phases": v["phases"], "size_bytes": b["size_bytes"],
                                    "files": v["files"]},
                           "dag": d})

        # ---- report
        out()
        out(f"orchestration overhead: {DAG_ID} via dag.test() vs the bare commands, compress={args.compress}, "
            f"parallel=2, {os.cpu_count()} CPUs")
        disk_mib = data["disk_bytes"] / MIB
        out(f"dataset: {data['payload_bytes'] / MIB:.0f} MiB payload ({data['text_bytes'] / MIB:.0f} MiB JSON-like text, "
            f"{data['random_bytes'] / MIB:.0f} MiB random) in {data['rows']} LONGBLOB rows, {data['tables']} InnoDB "
            f"tables; on disk (data+index) {disk_mib:.0f} MiB; load {data['load_s']:.1f} s "
            f"({data['payload_bytes'] / MIB / data['load_s']:.1f} MiB/s), replica caught up {data['replica_sync_s']:.1f} s later")
        out(f"setup (not measured below): sandbox {sandbox_s:.1f} s, airflow db migrate {migrate_s:.1f} s, "
            f"airflow import + DAG parse {import_s:.1f} s")
        out()
        for i, rd in enumerate(rounds, 1):
            print_round(f"round {i}", rd["bare"], rd["dag"])
            out()
        keys_b = ("backup_s", "verify_s", "fsync_s")
        mb = {k: med([rd["bare"][k] for rd in rounds]) for k in keys_b}
        mb["verify_phases"] = {k: med([rd["bare"]["verify_phases"][k] for rd in rounds])
                               for k in rounds[0]["bare"]["verify_phases"]}
        md = {"total": med([rd["dag"]["total"] for rd in rounds]),
              "tasks": {k: med([rd["dag"]["tasks"][k] for rd in rounds]) for k in TASKS}}
        for k in ("before_first_task", "after_last_task", "pipeline_s", "mariabackup_s", "verify_script_s",
                  "verify_extract_s", "verify_prepare_s"):
            md[k] = med([rd["dag"][k] for rd in rounds])
        print_round(f"median of {len(rounds)} round(s) (each line its own median)", mb, md)
        out()

        bare_total = mb["backup_s"] + mb["verify_s"]
        whole = md["total"] / bare_total
        backup = md["tasks"]["backup"] / mb["backup_s"]
        verify = md["tasks"]["verify_backup"] / mb["verify_s"]
        out("ratios (medians, this run):")
        out(f"  dag_total / (bare_backup + bare_verify) = {md['total']:.2f} / {bare_total:.2f} = {whole:.3f}x   "
            f"target <= {TARGET}x: {'met' if whole <= TARGET else 'NOT met'}")
        out(f"  backup task / bare_backup          = {md['tasks']['backup']:.2f} / {mb['backup_s']:.2f} = "
            f"{backup:.3f}x   target <= {TARGET}x: {'met' if backup <= TARGET else 'NOT met'}")
        out(f"  verify_backup task / bare_verify        = {md['tasks']['verify_backup']:.2f} / {mb['verify_s']:.2f} = "
            f"{verify:.3f}x   (no target)")
        out()
        bare_art = med([rd["bare"]["size_bytes"] for rd in rounds]) / MIB
        dag_art = med([rd["dag"]["artifact_bytes"] for rd in rounds]) / MIB
        out(f"artifact: bare {bare_art:.0f} MiB, DAG {dag_art:.0f} MiB ({args.compress}; "
            f"{dag_art / disk_mib * 100:.0f}% of the on-disk data); extracted files: bare "
            f"{rounds[0]['bare']['files']}, DAG {rounds[0]['dag']['verify_files']}")
        out("throughput (on-disk data MiB / s, artifact MiB / s):")
        out(f"  backup: bare {disk_mib / mb['backup_s']:.1f} / {bare_art / mb['backup_s']:.1f}, "
            f"backup task {disk_mib / md['tasks']['backup']:.1f} / {dag_art / md['tasks']['backup']:.1f}")
        out(f"  verify: bare {disk_mib / mb['verify_s']:.1f} / {bare_art / mb['verify_s']:.1f}, "
            f"verify_backup task {disk_mib / md['tasks']['verify_backup']:.1f} / "
            f"{dag_art / md['tasks']['verify_backup']:.1f}")
        out(f"  whole job: bare {disk_mib / bare_total:.1f} MiB/s, DAG {disk_mib / md['total']:.1f} MiB/s")
        out()
        wt = warm["tasks"]
        out(f"one-off (first dag.test() in this process, not in the medians): {warm['total']:.2f} s, "
            f"{warm['total'] - md['total']:+.2f} s against the median run; dag.test() call to first task "
            f"{warm['before_first_task']:.2f} s (median run {md['before_first_task']:.2f} s); tasks: "
            + ", ".join(f"{k} {wt[k]:.2f}" for k in TASKS))
        out(f"Airflow and task log output: {airflow_log}" + ("" if args.keep else " (removed; use --keep)"))
        return 0
    finally:
        if sb is not None:
            say("stopping the sandbox")
            sb.stop()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
