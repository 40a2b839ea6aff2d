#!/usr/bin/env python3
"""Point-in-time replay: ``pipe`` (mariadb-binlog | mariadb) against ``applier`` (the restored server's own
replication SQL thread, parallel workers), same binlogs, same run, both checked exact.

A source server (server_id 1) is backed up (mariabackup, prepared), then writes ``--rows`` row changes in
small OLTP transactions (single-row INSERT, UPDATE, DELETE statements, ``--per-trx`` per transaction, from
a stored procedure so the load itself is quick) across several binlog files (max_binlog_size 16 MiB). The
recovery target is the GTID of the last of them; more transactions follow it, which must not be replayed.
Each mode restores the same prepared backup to its own fresh server (server_id 2, the backup's GTID set as
the full restore leaves it) and runs ``include/scripts/replay.py replay`` on the same received files;
``CHECKSUM TABLE`` of the restored table must equal the source's at the target.

    .venv/bin/python bench/replay_bench.py [--rows 550000] [--per-trx 5] [--parallel auto]

Prints seconds (the apply alone, as replay.py measures it, and the whole verb), rows/s and the ratio.
Target (issue 9): applier at least 5x pipe.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins"))

from sandbox.servers import MariaDB, free_port, make_template  # noqa: E402

SCRIPT = REPO / "include" / "scripts" / "replay.py"

PROC = """
CREATE PROCEDURE bench.load(IN n_ins INT, IN n_upd INT, IN n_del INT, IN per INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  START TRANSACTION;
  WHILE i < n_ins DO
    INSERT INTO bench.t (k, c, pad) VALUES (i % 1000, CONCAT('c-', i), REPEAT('p', 40));
    SET i = i + 1;
    IF i % per = 0 THEN COMMIT; START TRANSACTION; END IF;
  END WHILE;
  COMMIT;
  SET i = 0;
  START TRANSACTION;
  WHILE i < n_upd DO
    UPDATE bench.t SET k = k + 1, c = CONCAT('u-', i) WHERE id = 1 + (i * 7919) % n_ins;
    SET i = i + 1;
    IF i % per = 0 THEN COMMIT; START TRANSACTION; END IF;
  END WHILE;
  COMMIT;
  SET i = 0;
  START TRANSACTION;
  WHILE i < n_del DO
    DELETE FROM bench.t WHERE id = n_ins - i;
    SET i = i + 1;
    IF i % per = 0 THEN COMMIT; START TRANSACTION; END IF;
  END WHILE;
  COMMIT;
END
"""


def script(*args: str, stdin: bytes = b"") -> dict:
    r = subprocess.run([sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True)
    lines = [ln for ln in r.stderr.decode().splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"replay.py {args[0]} failed ({r.returncode}):\n{r.stderr.decode()[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=550_000, help="row changes to replay (default 550,000)")
    ap.add_argument("--per-trx", type=int, default=5, help="single-row statements per transaction (default 5)")
    ap.add_argument("--parallel", default="auto", help="applier workers (default auto: the cores, at most 8, as the DAG)")
    ap.add_argument("--no-binlog", action="store_true", help="start the restored servers without a binlog of their "
                    "own (--skip-log-bin); default: with one and log_slave_updates, as the sandbox's servers")
    ap.add_argument("--modes", default="pipe,applier", help="which modes to run (default both)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mbk-rpb-"))
    procs: list[tuple[MariaDB, subprocess.Popen]] = []

    def start(name: str, sid: int, data_from: Path | None = None, extra: tuple = ()) -> MariaDB:
        s = MariaDB(name, str(root / name), free_port(), sid)
        Path(s.base).mkdir(parents=True, exist_ok=True)
        if data_from is not None:
            shutil.copytree(data_from, s.datadir)
        procs.append((s, s.start(template, extra=extra)))
        return s

    try:
        template = make_template(root / "template")
        src = start("src", 1)
        src.sql("CREATE DATABASE bench")
        src.sql("CREATE TABLE bench.t (id INT AUTO_INCREMENT PRIMARY KEY, k INT, c VARCHAR(60), pad CHAR(40), "
                "KEY (k))")
        src.sql(PROC)
        src.sql("SET GLOBAL max_binlog_size = 16777216")
        backup = root / "backup"
        subprocess.run(["mariabackup", "--no-defaults", "--backup", f"--target-dir={backup}", f"--socket={src.socket}",
                        "--user=root"], check=True, capture_output=True)
        subprocess.run(["mariabackup", "--no-defaults", "--prepare", f"--target-dir={backup}", "--use-memory=64M"],
                       check=True, capture_output=True)
        start_gtid = (backup / "xtrabackup_binlog_info").read_text().split()[2]
        n_ins = int(a.rows * 0.45)
        n_upd = int(a.rows * 0.35)
        n_del = a.rows - n_ins - n_upd
        t0 = time.monotonic()
        src.sql("CALL bench.load(%s, %s, %s, %s)", (n_ins, n_upd, n_del, a.per_trx))
        load_s = time.monotonic() - t0
        target_gtid = src.sql("SELECT @@gtid_binlog_pos")[0][0]
        want = src.sql("CHECKSUM TABLE bench.t EXTENDED")[0][1]
        for i in range(50):  # after the target: must not be replayed
            src.sql("UPDATE bench.t SET k = -1 WHERE id = %s", (i + 1,))
        src.sql("FLUSH BINARY LOGS")
        files = [r[0] for r in src.sql("SHOW BINARY LOGS")]
        size = sum(int(r[1]) for r in src.sql("SHOW BINARY LOGS"))
        print(f"load: {a.rows:,} row changes ({n_ins:,} inserts, {n_upd:,} updates, {n_del:,} deletes) in "
              f"{a.rows // a.per_trx:,} transactions, {load_s:.1f} s; {len(files)} binlog files, "
              f"{size / 2**20:.0f} MiB; backup at {start_gtid}, target {target_gtid}")
        creds = json.dumps({"user": "root", "password": ""}).encode() + b"\n"
        results = {}
        for mode in a.modes.split(","):
            t = start(f"{mode}", 2, backup, ("--skip-log-bin",) if a.no_binlog else ())
            t.sql("SET GLOBAL gtid_slave_pos = %s", (start_gtid,))
            work = root / f"{mode}-replay"
            for f in files:
                script("receive", "--dir", str(work), "--name", f, stdin=(Path(src.datadir) / f).read_bytes())
            t0 = time.monotonic()
            res = script("replay", "--dir", str(work), "--files", ",".join(files), "--host", "127.0.0.1", "--port",
                         str(t.port), "--mode", mode, "--start-gtid", start_gtid, "--stop-gtid", target_gtid,
                         "--parallel", str(a.parallel), stdin=creds)
            wall = time.monotonic() - t0
            got = t.sql("CHECKSUM TABLE bench.t EXTENDED")[0][1]
            exact = got == want and res["last_gtid"] == target_gtid and t.sql("SELECT @@gtid_slave_pos")[0][0] == \
                target_gtid
            results[mode] = {"apply": res["seconds"], "wall": wall, "exact": exact,
                             "transactions": res["transactions"]}
            print(f"{mode:8s} apply {res['seconds']:7.1f} s  verb {wall:7.1f} s  {a.rows / res['seconds']:9,.0f} rows/s  "
                  f"{res['transactions']:,} transactions  exact: {exact} (CHECKSUM {got} vs {want})")
            for i, (srv, proc) in enumerate(procs):
                if srv is t:
                    srv.stop(proc)
                    proc.wait(60)
                    del procs[i]
                    break
            shutil.rmtree(t.base, ignore_errors=True)
        if len(results) < 2:
            return 0 if all(r["exact"] for r in results.values()) else 1
        ratio = results["pipe"]["apply"] / results["applier"]["apply"]
        wall_ratio = results["pipe"]["wall"] / results["applier"]["wall"]
        print(f"applier / pipe: {ratio:.2f}x faster (apply), {wall_ratio:.2f}x (whole verb, scan included); "
              f"target 5x: {'met' if ratio >= 5 else 'NOT met'}; both exact: "
              f"{all(r['exact'] for r in results.values())}")
        return 0 if all(r["exact"] for r in results.values()) else 1
    finally:
        for srv, proc in reversed(procs):
            srv.stop(proc)
            proc.wait(60)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
