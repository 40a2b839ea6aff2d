"""Flashback throughput: our engine against `mariadb-binlog --flashback` and a plain mysql-replication loop.

Starts one throwaway MariaDB (ROW / FULL image / FULL metadata), writes exactly --rows row changes to
one mixed-type table (half inserts, half updates that change every updated row; batches of
--batch rows, one transaction each, generated server-side from seq_1_to_N), closes the binlog with
FLUSH BINARY LOGS, then measures each contender in ONE run, each in its own process so its peak
memory is its own:

  mariadb-binlog  the C tool: `mariadb-binlog --no-defaults --flashback --start-position=P
                  --stop-position=Q FILES... > out.sql` on the local binlog files (not -R)
  plain           a plain mysql-replication 1.0 loop over the same events from the server
                  (BinLogStreamReader, is_mariadb=True, auto_position=<GTID before the data>,
                  blocking=True, stopping at the XID of the last GTID: see run_plain), every
                  row's values materialised (row["values"], row["before_values"], row["after_values"])
  ours            mysqlbackup.flashback.engine.generate_from_files(files=..., selection=Selection(),
                  output_path=..., spool_dir=...) on the local files, via run_ours() below

For each: row changes, seconds (wall of the C tool; time of the work inside the Python children,
interpreter start-up excluded), rows/s, peak RSS (GNU time %M of the process doing the work) and the
ratios to the C tool and to the plain loop. Targets (issue 3): ours >= 100k rows/s, >= 1/3 of the
C tool, >= 5x the plain loop, peak RSS < 150 MB.

    .venv/bin/python bench/flashback_bench.py [--rows 1000000] [--only ours] [--keep]

Runs on a shared 2-core machine: every contender has a time limit (--timeout) and the server is
always stopped (also on errors and Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
GNU_TIME = "/usr/bin/time"
DB, TABLE = "bench", "t"
CONTENDERS = ("mariadb-binlog", "plain", "ours")
ALIASES = {"c": "mariadb-binlog", "mariadb": "mariadb-binlog", "mariadb-binlog": "mariadb-binlog",
           "plain": "plain", "mysql-replication": "plain", "ours": "ours", "engine": "ours"}
TARGET_RPS, TARGET_VS_C, TARGET_VS_PLAIN, TARGET_PEAK_MB = 100_000, 1 / 3, 5.0, 150.0

DDL = f"""CREATE TABLE `{DB}`.`{TABLE}` (
  id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
  k INT NOT NULL,
  name VARCHAR(64) CHARACTER SET utf8mb4,
  amount DECIMAL(12,2),
  `at` DATETIME(6),
  ratio DOUBLE,
  note TEXT CHARACTER SET utf8mb4,
  state ENUM('new','paid','shipped'),
  flags SET('a','b','c'),
  payload VARBINARY(32),
  ts TIMESTAMP(3) NULL
) ENGINE=InnoDB"""

COLUMNS = "k, name, amount, `at`, ratio, note, state, flags, payload, ts"
_FLAGS = "'', 'a', 'b', 'a,b', 'c', 'a,c', 'b,c', 'a,b,c'"
# n = seq + offset: every value is a function of n, so runs are identical; NULLs in every nullable column
# (id given explicitly: INSERT ... SELECT leaves auto-increment gaps between statements)
INSERT_SELECT = f"""INSERT INTO `{DB}`.`{TABLE}` (id, {COLUMNS})
SELECT n, MOD(n * 7919, 1000003) - 500000,
       IF(MOD(n, 17) = 0, NULL, CONCAT('name-', n, ELT(1 + MOD(n, 4), '', ' é', ' ✓', ' 😀'))),
       IF(MOD(n, 13) = 0, NULL, (MOD(n * 37, 10000000) - 5000000) / 100),
       TIMESTAMP('2024-01-01 00:00:00') + INTERVAL n * 37 SECOND + INTERVAL MOD(n * 7, 1000000) MICROSECOND,
       IF(MOD(n, 11) = 0, NULL, SQRT(n) * IF(MOD(n, 2) = 0, -1e0, 1e0)),
       IF(MOD(n, 3) = 0, NULL, REPEAT(CONCAT('note ', n, ' '), 1 + MOD(n, 6))),
       IF(MOD(n, 23) = 0, NULL, ELT(1 + MOD(n, 3), 'new', 'paid', 'shipped')),
       IF(MOD(n, 29) = 0, NULL, ELT(1 + MOD(n, 8), {_FLAGS})),
       IF(MOD(n, 7) = 0, NULL, LEFT(UNHEX(CONCAT(MD5(n), MD5(n + 1))), MOD(n, 33))),
       IF(MOD(n, 4) = 0, NULL, FROM_UNIXTIME(1700000000 + n + MOD(n, 1000) / 1000))
FROM (SELECT CAST(seq AS SIGNED) + %s AS n FROM seq_1_to_{{batch}}) AS s"""
# every updated row changes (k always moves), plus NULL <-> value transitions in every nullable column
UPDATE_RANGE = f"""UPDATE `{DB}`.`{TABLE}` SET
  k = k + 1000003,
  name = CASE WHEN name IS NULL THEN CONCAT('filled ', id) WHEN MOD(id, 19) = 0 THEN NULL
              ELSE CONCAT(name, ' ✎') END,
  amount = IF(amount IS NULL, 0.01, -amount - 0.5),
  `at` = `at` + INTERVAL 1 DAY + INTERVAL 1 MICROSECOND,
  ratio = IF(ratio IS NULL, PI(), IF(MOD(id, 31) = 0, NULL, ratio * -1.5)),
  note = IF(note IS NULL, REPEAT('x', MOD(id, 300)), IF(MOD(id, 5) = 0, NULL, CONCAT(note, 'edited'))),
  state = ELT(1 + MOD(id + 1, 3), 'new', 'paid', 'shipped'),
  flags = ELT(1 + MOD(id + 3, 8), {_FLAGS}),
  payload = IF(payload IS NULL, X'00FF', IF(MOD(id, 9) = 0, NULL, LEFT(CONCAT(X'01', REVERSE(payload)), 32))),
  ts = IF(ts IS NULL, '2030-01-01 00:00:00.123', IF(MOD(id, 3) = 0, NULL, ts + INTERVAL 1 SECOND))
WHERE id BETWEEN %s AND %s"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the contenders that run in Python children (importable: `run_ours` is the engine's hook)

def run_ours(binlog_files: list[str], start: str, stop: str, workdir: str, where: str = "row",
             jobs: int | None = None) -> dict:
    """Our engine on local binlog files. ``start``/``stop`` are ``file:pos`` of the benchmark's
    window (informational: the files hold nothing else with row events, so the selection is open).

    Returns ``{"available": False, "reason": ...}`` while the engine is not there yet, else
    ``{"available": True, "rows", "seconds", "output_path", "output_bytes", "summary"}``.
    """
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    t0 = time.perf_counter()
    try:
        from mysqlbackup.flashback import engine
    except ModuleNotFoundError as exc:
        if exc.name not in ("mysqlbackup.flashback.engine",):
            raise
        engine = None
    generate = getattr(engine, "generate_from_files", None)
    if generate is None:
        return {"available": False,
                "reason": "mysqlbackup.flashback.engine.generate_from_files missing"}
    from mysqlbackup.flashback.select import Selection
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    output = work / "ours.sql"
    summary = generate(files=list(binlog_files), selection=Selection(), output_path=str(output),
                       spool_dir=str(work), where=where, jobs=jobs)
    seconds = time.perf_counter() - t0
    rows = summary["rows"] if isinstance(summary, Mapping) else summary.rows
    if isinstance(rows, Mapping):  # a per-table/per-type breakdown: total it
        rows = sum(v if isinstance(v, int) else sum(v.values()) for v in rows.values())
    if isinstance(summary, Mapping):
        shown = dict(summary)
    elif hasattr(summary, "__dict__"):
        shown = dict(vars(summary))
    else:
        shown = repr(summary)
    return {"available": True, "rows": int(rows), "seconds": seconds, "output_path": str(output),
            "output_bytes": output.stat().st_size if output.exists() else 0,
            "summary": json.loads(json.dumps(shown, default=str))}


def run_plain(settings: dict, auto_position: str | None, server_id: int, stop_gtid: str,
              naive_sql: str | None) -> dict:
    """The plain mysql-replication 1.0 loop: stream the row events, materialise every row image."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import MariadbGtidEvent, XidEvent
    from pymysqlreplication.row_event import (
        DeleteRowsEvent,
        UpdateRowsEvent,
        WriteRowsEvent,
    )
    t0 = time.perf_counter()
    # is_mariadb=True ignores log_file/log_pos without auto_position (it starts at the first file):
    # auto_position = the server's GTID state just before the benchmark data.
    # blocking=True, stopping ourselves at the window's end (the XID of `stop_gtid`): with
    # is_mariadb=True, 1.0.17's COM_BINLOG_DUMP packet declares 14 bytes and sends 15, so when a
    # non-blocking dump ends the server closes a socket holding that unread byte, the kernel sends a
    # reset, the client loses the events still in its receive buffer, and the library reconnects from
    # the start position forever.
    stream = BinLogStreamReader(
        connection_settings=settings, server_id=server_id,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, MariadbGtidEvent, XidEvent],
        blocking=True, resume_stream=True, is_mariadb=True,
        auto_position=auto_position or None, enable_logging=False)
    counts = {"insert": 0, "update": 0, "delete": 0}
    cells = 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(naive_sql, "w", encoding="utf-8")) if naive_sql else None
        stack.callback(stream.close)
        gtid = None
        for ev in stream:
            if isinstance(ev, MariadbGtidEvent):
                gtid = ev.gtid
                continue
            if isinstance(ev, XidEvent):
                if gtid == stop_gtid:
                    break
                continue
            if ev.schema != DB or ev.table != TABLE:
                continue
            if isinstance(ev, UpdateRowsEvent):
                for row in ev.rows:
                    before, after = row["before_values"], row["after_values"]
                    cells += len(before) + len(after)
                    if out:
                        out.write(f"UPDATE `{ev.schema}`.`{ev.table}` SET "
                                  + ", ".join(f"`{c}`={v!r}" for c, v in before.items()) + " WHERE "
                                  + " AND ".join(f"`{c}`<=>{v!r}" for c, v in after.items()) + ";\n")
                counts["update"] += len(ev.rows)
            else:
                kind = "insert" if isinstance(ev, WriteRowsEvent) else "delete"
                for row in ev.rows:
                    values = row["values"]
                    cells += len(values)
                    if out:
                        if kind == "insert":
                            out.write(f"DELETE FROM `{ev.schema}`.`{ev.table}` WHERE "
                                      + " AND ".join(f"`{c}`<=>{v!r}" for c, v in values.items()) + ";\n")
                        else:
                            out.write(f"INSERT INTO `{ev.schema}`.`{ev.table}` VALUES ("
                                      + ", ".join(repr(v) for v in values.values()) + ");\n")
                counts[kind] += len(ev.rows)
    return {"available": True, "rows": sum(counts.values()), "counts": counts, "cells": cells,
            "seconds": time.perf_counter() - t0}


def child_main(kind: str, payload: str) -> int:
    args = json.loads(payload)
    if kind == "ours":
        result = run_ours(args["files"], args["start"], args["stop"], args["workdir"], args.get("where", "row"),
                          args.get("jobs"))
    elif kind == "plain":
        result = run_plain(args["settings"], args["auto_position"], args["server_id"], args["stop_gtid"],
                           args.get("naive_sql"))
    else:
        raise SystemExit(f"unknown child {kind}")
    result["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# measuring one process: wall time and peak RSS

_LAUNCHER = r"""
import json, resource, subprocess, sys, time
argv, out = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
with open(out, "wb") as f:
    rc = subprocess.call(argv, stdout=f)
wall = time.perf_counter() - t0
print(json.dumps({"rc": rc, "wall": wall, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}),
      file=sys.stderr)
"""


def measure(argv: list[str], stdout_path: Path, timeout: float) -> dict:
    """Run argv once, stdout to a file; wall seconds and the peak RSS of that process alone."""
    timing = stdout_path.with_suffix(stdout_path.suffix + ".time")
    if os.access(GNU_TIME, os.X_OK):
        cmd = [GNU_TIME, "-f", "%e %M", "-o", str(timing), *argv]
        launcher = False
    else:  # a launcher of our own whose only child is the contender: RUSAGE_CHILDREN is its peak
        cmd = [sys.executable, "-c", _LAUNCHER, json.dumps(argv), str(stdout_path)]
        launcher = True
    t0 = time.perf_counter()
    with open(os.devnull if launcher else stdout_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # our own child's process group only
            proc.wait()
            return {"rc": "timeout", "wall": time.perf_counter() - t0, "maxrss_kb": 0, "stderr": ""}
    wall = time.perf_counter() - t0
    err_text = err.decode(errors="replace")
    if launcher:
        info = json.loads(err_text.strip().splitlines()[-1])
        return {"rc": info["rc"] if proc.returncode == 0 else proc.returncode, "wall": info["wall"],
                "maxrss_kb": info["maxrss_kb"], "stderr": "\n".join(err_text.strip().splitlines()[:-1])}
    elapsed, maxrss = (timing.read_text().strip().splitlines() or ["0 0"])[-1].split()[-2:]
    timing.unlink(missing_ok=True)
    return {"rc": proc.returncode, "wall": wall, "time_e": float(elapsed), "maxrss_kb": int(maxrss),
            "stderr": err_text}


def run_child(kind: str, payload: dict, workdir: Path, timeout: float) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(payload)]
    res = measure(argv, workdir / f"{kind}.stdout", timeout)
    if res["rc"] != 0:
        tail = res.get("stderr", "")[-3000:]
        return {"available": True, "error": f"exit {res['rc']} after {res['wall']:.1f} s\n{tail}"}
    lines = (workdir / f"{kind}.stdout").read_text().strip().splitlines()
    result = json.loads(lines[-1])
    result["maxrss_kb"] = res["maxrss_kb"]
    result["process_wall"] = res["wall"]
    return result


# ---------------------------------------------------------------------------------------------
# the server and the data

def master_status(srv) -> tuple[str, int]:
    row = srv.sql("SHOW MASTER STATUS")[0]
    return row[0], int(row[1])


def generate(srv, rows: int, batch: int) -> dict:
    inserts, updates = rows - rows // 2, rows // 2
    srv.sql(f"CREATE DATABASE `{DB}`")
    srv.sql(DDL)
    # a fresh binlog file: the files handed to the contenders hold the benchmark's row changes and
    # nothing else (no DDL inside the window: our engine refuses a window across a table's DDL)
    srv.sql("FLUSH BINARY LOGS")
    gtid_before = srv.sql("SELECT @@gtid_binlog_pos")[0][0]
    start = master_status(srv)
    t0 = time.perf_counter()
    conn = srv.connect(DB)  # seq_1_to_N lives in the current database
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            done = 0
            while done < inserts:
                n = min(batch, inserts - done)
                cur.execute(INSERT_SELECT.replace("{batch}", str(n)), (done,))
                if cur.rowcount != n:
                    raise RuntimeError(f"insert batch at {done}: {cur.rowcount} rows, expected {n}")
                done += n
            t_ins = time.perf_counter() - t0
            cur.execute(f"SELECT MIN(id), MAX(id), COUNT(*) FROM `{DB}`.`{TABLE}`")
            lo, hi, cnt = cur.fetchone()
            if (lo, hi, cnt) != (1, inserts, inserts):
                raise RuntimeError(f"ids {lo}..{hi} ({cnt} rows), expected 1..{inserts}")
            done = 0
            while done < updates:
                n = min(batch, updates - done)
                cur.execute(UPDATE_RANGE, (done + 1, done + n))
                cur.execute("SELECT ROW_COUNT()")
                changed = cur.fetchone()[0]
                if changed != n:
                    raise RuntimeError(f"update batch {done + 1}..{done + n}: {changed} rows changed, expected {n}")
                done += n
    finally:
        conn.close()
    seconds = time.perf_counter() - t0
    stop = master_status(srv)
    gtid_after = srv.sql("SELECT @@gtid_binlog_pos")[0][0]
    srv.sql("FLUSH BINARY LOGS")
    logs = [(r[0], int(r[1])) for r in srv.sql("SHOW BINARY LOGS")]
    names = [n for n, _ in logs]
    files = names[names.index(start[0]): names.index(stop[0]) + 1]
    sizes = dict(logs)
    if len(files) == 1:
        nbytes = stop[1] - start[1]
    else:
        nbytes = (sizes[files[0]] - start[1]) + sum(sizes[f] for f in files[1:-1]) + stop[1]
    return {"inserts": inserts, "updates": updates, "seconds": seconds, "insert_seconds": t_ins,
            "start": start, "stop": stop, "gtid_before": gtid_before, "gtid_after": gtid_after,
            "files": [str(Path(srv.datadir, f)) for f in files], "binlog_bytes": nbytes}


def count_binlog_statements(path: Path) -> int:
    """Rough: lines starting with ``BINLOG '`` (mariadb-binlog's base64 row-event statements)."""
    pat, n, tail = b"\nBINLOG '", 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            data = tail + chunk
            n += data.count(pat)
            tail = data[-(len(pat) - 1):]  # shorter than the pattern: nothing is counted twice
    return n


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="row changes: half inserts, half updates")
    ap.add_argument("--batch", type=int, default=50_000, help="rows per generating transaction")
    ap.add_argument("--only", metavar="NAME", help=f"run one contender: {', '.join(CONTENDERS)}")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (binlogs, outputs)")
    ap.add_argument("--where", choices=("row", "key"), default="row",
                    help="our WHERE mode: row (default: key + changed/whole row guarded) or key (primary key only)")
    ap.add_argument("--jobs", type=int, default=None, help="our processes (default: the engine decides, 2 on 2 cores)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per contender")
    ap.add_argument("--binlog-size", default="256M", help="max_binlog_size (small values spread the window "
                                                          "over several files)")
    ap.add_argument("--plain-sql", action="store_true",
                    help="the plain loop also writes naive inverse SQL (repr literals) to a file")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(*args.child)
    if args.rows < 2:
        ap.error("--rows must be at least 2")
    selected = CONTENDERS
    if args.only:
        if args.only.lower() not in ALIASES:
            ap.error(f"--only {args.only!r}: expected one of {', '.join(CONTENDERS)}")
        selected = (ALIASES[args.only.lower()],)

    sys.path.insert(0, str(REPO))
    from sandbox.servers import MariaDB, free_port, make_template

    tmp = Path(tempfile.mkdtemp(prefix="mbk-fb-"))
    srv, proc = None, None
    results: dict[str, dict] = {}
    try:
        log(f"temp dir {tmp}")
        template = make_template(tmp / "template")
        password = os.urandom(12).hex()
        srv = MariaDB("bench", str(tmp / "srv"), free_port(), 1,
                      extra_args=[f"--max-binlog-size={args.binlog_size}", "--innodb-buffer-pool-size=256M",
                                  "--innodb-log-file-size=256M"])
        proc = srv.start(template)
        conn = srv.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET sql_log_bin = 0")
                for host in ("localhost", "127.0.0.1"):
                    cur.execute(f"CREATE USER 'repl'@'{host}' IDENTIFIED BY %s", (password,))
                    cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* "
                                f"TO 'repl'@'{host}'")
        finally:
            conn.close()
        version = srv.sql("SELECT VERSION()")[0][0]
        log(f"MariaDB {version} on port {srv.port}; generating {args.rows} row changes")
        gen = generate(srv, args.rows, args.batch)
        window = f"{gen['start'][0]}:{gen['start'][1]} .. {gen['stop'][0]}:{gen['stop'][1]}"
        first_seq = int(gen["gtid_before"].split("-")[-1]) + 1 if gen["gtid_before"] else 1
        print(f"data: {gen['inserts']} inserts + {gen['updates']} updates = {args.rows} row changes in "
              f"{gen['seconds']:.1f} s (inserts {gen['insert_seconds']:.1f} s), batches of {args.batch}; "
              f"binlog {gen['binlog_bytes'] / 1e6:.1f} MB in {len(gen['files'])} file(s), {window}; "
              f"GTIDs after {gen['gtid_before'] or '(none)'} .. {gen['gtid_after']} "
              f"(first 0-1-{first_seq})", flush=True)

        for name in selected:
            log(f"running {name}")
            if name == "mariadb-binlog":
                out = tmp / "mariadb-binlog-flashback.sql"
                argv = [shutil.which("mariadb-binlog") or "mariadb-binlog", "--no-defaults", "--flashback",
                        f"--start-position={gen['start'][1]}", f"--stop-position={gen['stop'][1]}",
                        *gen["files"]]
                res = measure(argv, out, args.timeout)
                if res["rc"] != 0:
                    results[name] = {"error": f"exit {res['rc']}: {res.get('stderr', '')[-2000:]}"}
                    continue
                size = out.stat().st_size
                results[name] = {"rows": args.rows, "seconds": res.get("time_e") or res["wall"],
                                 "maxrss_kb": res["maxrss_kb"], "output_bytes": size,
                                 "note": f"output {size / 1e6:.1f} MB, {count_binlog_statements(out)} BINLOG "
                                         f"statements"}
                if size == 0:
                    results[name]["error"] = "empty output"
            elif name == "plain":
                payload = {"settings": {"host": "127.0.0.1", "port": srv.port, "user": "repl",
                                        "password": password},
                           "auto_position": gen["gtid_before"] or None,
                           "server_id": 1000 + os.getpid() % 50000,
                           "stop_gtid": gen["gtid_after"],
                           "naive_sql": str(tmp / "plain-naive.sql") if args.plain_sql else None}
                r = run_child("plain", payload, tmp, args.timeout)
                if "error" not in r:
                    r["note"] = f"{r['counts']}; {r['cells']} values"
                    if r["rows"] != args.rows:
                        r["error"] = f"saw {r['rows']} row changes, expected {args.rows}"
                results[name] = r
            else:
                payload = {"files": gen["files"], "start": f"{gen['start'][0]}:{gen['start'][1]}",
                           "stop": f"{gen['stop'][0]}:{gen['stop'][1]}", "workdir": str(tmp / "ours"),
                           "where": args.where, "jobs": args.jobs}
                r = run_child("ours", payload, tmp, args.timeout)
                if not r.get("available", True):
                    print(f"ours: not available yet ({r['reason']})", flush=True)
                    continue
                if "error" not in r:
                    r["note"] = f"output {r['output_bytes'] / 1e6:.1f} MB"
                    if r["output_bytes"] == 0:
                        r["error"] = "empty output"
                    elif r["rows"] != args.rows:
                        r["error"] = f"summary says {r['rows']} rows, expected {args.rows}"
                results[name] = r
    finally:
        if srv is not None:
            srv.stop(proc)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report(results, args.rows)
    return 1 if any("error" in r for r in results.values()) else 0


def report(results: dict[str, dict], rows: int) -> None:
    def rps(name: str) -> float | None:
        r = results.get(name)
        return r["rows"] / r["seconds"] if r and "error" not in r and r["seconds"] > 0 else None

    c_rps, plain_rps = rps("mariadb-binlog"), rps("plain")
    print()
    print(f"{'contender':<15} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'peak MB':>8} {'vs C':>6} {'vs plain':>8}")
    for name in CONTENDERS:
        r = results.get(name)
        if r is None:
            continue
        if "error" in r:
            print(f"{name:<15} ERROR: {r['error']}")
            continue
        x = rps(name)
        vs_c = f"{x / c_rps:.2f}" if c_rps else "-"
        vs_p = f"{x / plain_rps:.2f}" if plain_rps else "-"
        print(f"{name:<15} {r['rows']:>9} {r['seconds']:>8.2f} {x:>9,.0f} {r['maxrss_kb'] / 1024:>8.1f} "
              f"{vs_c:>6} {vs_p:>8}   {r.get('note', '')}")
    print()
    ours = results.get("ours")
    if not ours or "error" in ours:
        print("targets: ours not measured" + (f" ({ours['error'].splitlines()[0]})" if ours else ""))
        return
    x, peak = rps("ours"), ours["maxrss_kb"] / 1024

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")
    print("targets (ours):")
    print(f"  >= {TARGET_RPS:,} rows/s on CPython: {x:,.0f} -> {verdict(x >= TARGET_RPS)}")
    print("  >= 1/3 of mariadb-binlog --flashback: "
          + (f"{x / c_rps:.2f} -> {verdict(x / c_rps >= TARGET_VS_C)}" if c_rps else verdict(None)))
    print("  >= 5x the plain mysql-replication loop: "
          + (f"{x / plain_rps:.2f}x -> {verdict(x / plain_rps >= TARGET_VS_PLAIN)}" if plain_rps else verdict(None)))
    print(f"  peak RSS < {TARGET_PEAK_MB:.0f} MB: {peak:.1f} MB -> {verdict(peak < TARGET_PEAK_MB)}")


if __name__ == "__main__":
    sys.exit(main())
