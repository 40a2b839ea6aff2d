"""Flashback throughput: our engine against `mariadb-binlog --flashback` and a plain mysql-replication loop.

Starts one throwaway MariaDB (ROW / FULL image / FULL metadata) and, for each workload shape of --shapes
(each in its own database, its row changes alone in their binlog files: FLUSH BINARY LOGS before and after),
writes exactly --rows row changes (generated server-side from seq_1_to_N), then measures each contender
in ONE run, each in its own process so its peak memory is its own:

  narrow  INT PK + 2 INT columns, many small transactions (--small rows each): inserts, updates, deletes
  wide    wide mixed-type rows (JSON, BLOB, DECIMAL(30,10), DATETIME(6), utf8mb4 TEXT/VARCHAR, DOUBLE,
          ENUM ...), a few large transactions (--batch rows each), updates of 3 of the 11 columns
  nopk    a table without a primary key (a non-unique KEY only), transactions of 1000 rows
  mixed   the original benchmark (not in the default set): one mixed-type table, --batch rows per
          transaction, half inserts, half updates that change every column

  mariadb-binlog  the C tool: `mariadb-binlog --no-defaults --flashback --start-position=P
                  --stop-position=Q FILES... > out.sql` on the local binlog files (not -R)
  plain           a plain mysql-replication 1.0 loop over the same events from the server
                  (BinLogStreamReader, is_mariadb=True, auto_position=<GTID before the data>,
                  blocking=True, stopping at the XID of the last GTID: see run_plain), every
                  row's values materialised (row["values"], row["before_values"], row["after_values"])
  ours, live      mysqlbackup.flashback.engine.generate_from_live(connect_kwargs, Selection(start_position=P,
                  stop_position=Q), output, spool_dir, where=...), as the mysql_flashback DAG calls it
                  (plugins/operators/flashback.py), via run_ours_live() below
  ours, files     mysqlbackup.flashback.engine.generate_from_files(files=..., selection=Selection(),
                  output_path=..., spool_dir=..., where=..., jobs=--jobs) on the local files, via run_ours()

ours runs in each --where mode (row: the default, guarded; key: primary key only) on each of --paths.
For each cell: row changes, seconds (wall of the C tool; time of the work inside the Python children,
interpreter start-up excluded, imports included), rows/s, peak RSS (GNU time %M of the process doing the
work) and the ratios to the C tool and to the plain loop of the same shape. Targets (issue 10): ours >=
100k rows/s, >= 1/3 of the C tool, peak RSS < 150 MB (>= 5x the plain loop shown, informational).

    .venv/bin/python bench/flashback_bench.py [--shapes narrow,wide,nopk] [--rows 250000] [--where both]
        [--paths live,files] [--only ours] [--keep]
    .venv/bin/python bench/flashback_bench.py --profile wide:live [--rows N]   # cProfile breakdown of ours

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
    return _ours_result(summary, time.perf_counter() - t0, output)


def _ours_result(summary, seconds: float, output: Path) -> dict:
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


def run_ours_live(settings: dict, start: str, stop: str, workdir: str, where: str = "row",
                  jobs: int | None = None) -> dict:
    """Our engine on the live path, as the mysql_flashback DAG calls it (plugins/operators/flashback.py):
    ``generate_from_live(connect_kwargs, selection, output, spool_dir, where=...)``, the selection being
    the benchmark's window ``start``..``stop`` (``file:pos``) as start_position/stop_position."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    t0 = time.perf_counter()
    from mysqlbackup.flashback.engine import generate_from_live
    from mysqlbackup.flashback.select import Position, Selection

    def pos(text: str) -> Position:
        f, p = text.rsplit(":", 1)
        return Position(f, int(p))
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    output = work / "ours-live.sql"
    connect = {"charset": "utf8mb4", "connect_timeout": 10, **settings}
    summary = generate_from_live(connect, Selection(start_position=pos(start), stop_position=pos(stop)),
                                 str(output), str(work), where=where, jobs=jobs)
    return _ours_result(summary, time.perf_counter() - t0, output)


def run_plain(settings: dict, auto_position: str | None, server_id: int, stop_gtid: str,
              naive_sql: str | None, db: str = DB, table: str = TABLE) -> dict:
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
            if ev.schema != db or ev.table != table:
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


def child_main(kind: str, payload_file: str) -> int:
    args = json.loads(Path(payload_file).read_text())  # a file: the payload holds the server's password
    if kind == "ours":
        result = run_ours(args["files"], args["start"], args["stop"], args["workdir"], args.get("where", "row"),
                          args.get("jobs"))
    elif kind == "ours-live":
        result = run_ours_live(args["settings"], args["start"], args["stop"], args["workdir"], args.get("where", "row"))
    elif kind == "plain":
        result = run_plain(args["settings"], args["auto_position"], args["server_id"], args["stop_gtid"],
                           args.get("naive_sql"), args.get("db", DB), args.get("table", TABLE))
    elif kind == "profile":
        result = run_profile(args)
    else:
        raise SystemExit(f"unknown child {kind}")
    result["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # worker processes (the files path split over two): the peak of the largest of them, not a sum
    result["children_maxrss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------
# --profile: our engine under cProfile, self time grouped by what the code does (best effort, by
# module/function name; a C builtin's self time goes to the group of its callers, pro rata)

PROFILE_GROUPS = ("decode", "statement building", "event loop (feed: dispatch + inline statement text)",
                  "spool I/O", "reversal pass", "merge", "output write + checksum", "replication stream",
                  "binlog file read", "walk for the parts (two processes)", "start-up (imports, regex compile)", "other")


def _profile_group(key: tuple, name_of_caller_group=None) -> str:
    fn, _line, func = key
    f = fn.replace("\\", "/")
    if fn.startswith("<rowcodec") or "/binlog/decode.py" in f or "/binlog/events.py" in f \
            or "/binlog/format.py" in f:
        return "decode"
    if "/flashback/plan.py" in f:
        return "statement building"
    if "/flashback/spool.py" in f:
        return "reversal pass" if func == "write_reversed" else "spool I/O"
    if "/flashback/engine.py" in f:
        if func in ("absorb", "_two_processes", "_work", "state", "_helper", "_claim_back"):
            return "merge"
        if func == "__iter__":  # _Front: the first process's part boundaries
            return "event loop (feed: dispatch + inline statement text)"
        if func in ("write", "_sha256_from"):
            return "output write + checksum"
        if func in ("feed", "close_tx", "group_end"):
            return "event loop (feed: dispatch + inline statement text)"
        return "other"
    if "/binlog/live.py" in f or "pymysql" in f or "/socket.py" in f or "/ssl.py" in f or "/selectors.py" in f:
        return "replication stream"
    if "/binlog/reader.py" in f:
        return "binlog file read"
    if "/flashback/parallel.py" in f:
        return "walk for the parts (two processes)"
    if fn.startswith("<frozen") or "importlib" in f or "/re/" in f or "/sre_" in f or "/enum.py" in f:
        return "start-up (imports, regex compile)"
    return "other"


def profile_breakdown(prof, top: int = 25) -> dict:
    import pstats
    st = pstats.Stats(prof).stats  # {key: (cc, nc, tt, ct, {caller: (nc, cc, tt, ct)})}
    total = sum(v[2] for v in st.values()) or 1e-9
    groups = dict.fromkeys(PROFILE_GROUPS, 0.0)
    rows = []
    for key, (_cc, nc, tt, ct, callers) in st.items():
        if key[0] == "~":  # a C builtin: its self time to its callers' groups
            share = sum(c[2] for c in callers.values()) or 0.0
            shares = {}
            for ck, c in callers.items():
                g = _profile_group(ck) if ck[0] != "~" else "other"
                if key[2] in ("<built-in method marshal.loads>", "<built-in method _imp.create_dynamic>",
                              "<built-in method _imp.exec_dynamic>", "<built-in method builtins.__build_class__>"):
                    g = "start-up (imports, regex compile)"
                if g == "event loop (feed: dispatch + inline statement text)" and any(
                        w in key[2] for w in ("write", "flush", "seek", "read")):
                    g = "spool I/O"  # file calls made straight from the loop
                shares[g] = shares.get(g, 0.0) + (c[2] / share * tt if share else 0.0)
            if not shares:
                shares = {"other": tt}
            for g, t in shares.items():
                groups[g] += t
            label = max(shares, key=shares.get)
            name = key[2]
        else:
            label = _profile_group(key)
            groups[label] += tt
            name = f"{os.path.basename(key[0]) if not key[0].startswith('<') else key[0]}:{key[1]}({key[2]})"
        rows.append((tt, ct, nc, name, label))
    rows.sort(reverse=True)
    return {"total": total, "groups": groups,
            "top": [{"tottime": r[0], "cumtime": r[1], "calls": r[2], "function": r[3], "group": r[4]}
                    for r in rows[:top]]}


def run_profile(args: dict) -> dict:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
    try:
        # one process: a second process's work would be invisible to cProfile
        if args["path"] == "live":
            result = run_ours_live(args["settings"], args["start"], args["stop"], args["workdir"], args["where"],
                                   jobs=1)
        else:
            result = run_ours(args["files"], args["start"], args["stop"], args["workdir"], args["where"], jobs=1)
    finally:
        prof.disable()
    result["profile"] = profile_breakdown(prof)
    return result


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
    # the payload (with the throwaway server's password) in a file only this user reads, not on the command line
    fd, payload_file = tempfile.mkstemp(prefix=f"{kind}-", suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind, payload_file]
    try:
        res = measure(argv, workdir / f"{kind}.stdout", timeout)
    finally:
        os.unlink(payload_file)
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
# workload shapes: each in its own database, its row changes alone in their binlog files

_SEQ = "(SELECT CAST(seq AS SIGNED) + %s AS n FROM seq_1_to_{batch}) AS s"
SHAPES: dict[str, dict] = {
    "narrow": {
        "about": "narrow rows (INT PK + 2 INT), many small transactions (--small rows each): 1/2 inserts, "
                 "1/4 updates of one column, 1/4 deletes",
        "db": "fb_narrow", "table": "t",
        "ddl": "CREATE TABLE `fb_narrow`.`t` (id INT UNSIGNED PRIMARY KEY, k INT NOT NULL, v INT) ENGINE=InnoDB",
        "insert": "INSERT INTO `fb_narrow`.`t` (id, k, v) SELECT n, MOD(n * 7919, 1000003) - 500000, "
                  "IF(MOD(n, 5) = 0, NULL, n) FROM " + _SEQ,
        "update": "UPDATE `fb_narrow`.`t` SET k = k + 1 WHERE id BETWEEN %s AND %s",
        "delete": "DELETE FROM `fb_narrow`.`t` WHERE id BETWEEN %s AND %s",
        "batch": "small",
    },
    "wide": {
        "about": "wide mixed-type rows (JSON, BLOB, DECIMAL(30,10), DATETIME(6), utf8mb4 TEXT/VARCHAR, ...), "
                 "a few large transactions (--batch rows each): 1/2 inserts, 1/2 updates of 3 of 11 columns",
        "db": "fb_wide", "table": "t",
        "ddl": """CREATE TABLE `fb_wide`.`t` (
  id BIGINT UNSIGNED PRIMARY KEY,
  i INT NOT NULL,
  d DECIMAL(30,10),
  dt DATETIME(6),
  j JSON,
  b BLOB,
  txt TEXT CHARACTER SET utf8mb4,
  v VARCHAR(200) CHARACTER SET utf8mb4,
  dbl DOUBLE,
  s SMALLINT,
  e ENUM('x','y','z')
) ENGINE=InnoDB""",
        "insert": """INSERT INTO `fb_wide`.`t` (id, i, d, dt, j, b, txt, v, dbl, s, e)
SELECT n, MOD(n * 7919, 1000003) - 500000,
       IF(MOD(n, 13) = 0, NULL, (MOD(n * 7919, 1000000007) - 500000000) / 10000 + n / 1e7),
       TIMESTAMP('2024-01-01 00:00:00') + INTERVAL n * 37 SECOND + INTERVAL MOD(n * 7, 1000000) MICROSECOND,
       IF(MOD(n, 11) = 0, NULL, JSON_OBJECT('n', n, 'tag', CONCAT('t', MOD(n, 97), ' é'), 'arr',
                                            JSON_ARRAY(n, n * 2, 'ü✓'), 'nested', JSON_OBJECT('ok', MOD(n, 2) = 0))),
       IF(MOD(n, 9) = 0, NULL, REPEAT(UNHEX(MD5(n)), 1 + MOD(n, 24))),
       IF(MOD(n, 7) = 0, NULL, REPEAT(CONCAT('wörd ✓ 😀 ', n, ' '), 1 + MOD(n, 8))),
       CONCAT('name-', n, ELT(1 + MOD(n, 4), '', ' é', ' ✓', ' 😀')),
       IF(MOD(n, 17) = 0, NULL, SQRT(n) * IF(MOD(n, 2) = 0, -1e0, 1e0)),
       MOD(n, 30000),
       ELT(1 + MOD(n, 3), 'x', 'y', 'z')
FROM """ + _SEQ,
        "update": "UPDATE `fb_wide`.`t` SET i = i + 1, d = IF(d IS NULL, 0.5, d + 0.5), "
                  "dt = dt + INTERVAL 1 SECOND WHERE id BETWEEN %s AND %s",
        "delete": None,
        "batch": "batch",
    },
    "nopk": {
        "about": "a table without a primary key (non-unique KEY(a) only), transactions of 1000 rows: "
                 "1/2 inserts, 1/4 updates of 2 columns, 1/4 deletes",
        "db": "fb_nopk", "table": "t",
        "ddl": "CREATE TABLE `fb_nopk`.`t` (a INT NOT NULL, b VARCHAR(40) CHARACTER SET utf8mb4, c DECIMAL(10,2), "
               "d DATETIME, KEY (a)) ENGINE=InnoDB",
        "insert": "INSERT INTO `fb_nopk`.`t` (a, b, c, d) SELECT n, IF(MOD(n, 6) = 0, NULL, CONCAT('v', n, ' ✓')), "
                  "(MOD(n * 37, 10000000) - 5000000) / 100, TIMESTAMP('2024-01-01') + INTERVAL n MINUTE FROM " + _SEQ,
        "update": "UPDATE `fb_nopk`.`t` SET c = c + 1, b = CONCAT(IFNULL(b, ''), '!') WHERE a BETWEEN %s AND %s",
        "delete": "DELETE FROM `fb_nopk`.`t` WHERE a BETWEEN %s AND %s",
        "batch": 1000,
    },
    "mixed": {
        "about": "the original benchmark: one mixed-type table (11 columns), --batch rows per transaction, "
                 "1/2 inserts, 1/2 updates of every column",
        "db": DB, "table": TABLE,
    },
}
DEFAULT_SHAPES = ("narrow", "wide", "nopk")


def generate_shape(srv, shape: str, rows: int, batch: int, small: int) -> dict:
    """Write ``rows`` row changes of one shape; returns the same dict as generate()."""
    spec = SHAPES[shape]
    if shape == "mixed":
        return generate(srv, rows, batch)
    size = {"small": small, "batch": batch}.get(spec["batch"], spec["batch"])
    if spec["delete"]:
        inserts = rows - rows // 2
        updates = rows // 4
        deletes = rows - inserts - updates
    else:
        inserts, updates, deletes = rows - rows // 2, rows // 2, 0
    srv.sql(f"CREATE DATABASE `{spec['db']}`")
    srv.sql(spec["ddl"])
    srv.sql("FLUSH BINARY LOGS")
    gtid_before = srv.sql("SELECT @@gtid_binlog_pos")[0][0]
    start = master_status(srv)
    t0 = time.perf_counter()
    t_ins = 0.0
    conn = srv.connect(spec["db"])
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            for what, total, lo in (("insert", inserts, 0), ("update", updates, 0), ("delete", deletes, updates)):
                done = 0
                while done < total:
                    n = min(size, total - done)
                    if what == "insert":
                        cur.execute(spec["insert"].replace("{batch}", str(n)), (done,))
                    else:
                        cur.execute(spec[what], (lo + done + 1, lo + done + n))
                    if cur.rowcount != n:
                        raise RuntimeError(f"{shape} {what} at {lo + done}: {cur.rowcount} rows, expected {n}")
                    done += n
                if what == "insert":
                    t_ins = time.perf_counter() - t0
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
    return {"inserts": inserts, "updates": updates, "deletes": deletes, "seconds": seconds, "insert_seconds": t_ins,
            "start": start, "stop": stop, "gtid_before": gtid_before, "gtid_after": gtid_after,
            "files": [str(Path(srv.datadir, f)) for f in files], "binlog_bytes": nbytes, "batch": size}


# ---------------------------------------------------------------------------------------------

def main() -> int:  # noqa: C901 - the run, in order
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                    help=f"comma-separated workload shapes, of {', '.join(SHAPES)} (default: %(default)s)")
    ap.add_argument("--rows", type=int, default=250_000, help="row changes per shape (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=20_000,
                    help="rows per transaction of the large-transaction shapes (wide, mixed)")
    ap.add_argument("--small", type=int, default=5, help="rows per transaction of the narrow shape")
    ap.add_argument("--only", metavar="NAME", help=f"run one contender: {', '.join(CONTENDERS)}")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (binlogs, outputs)")
    ap.add_argument("--where", choices=("row", "key", "both"), default="both",
                    help="our WHERE mode(s): row (key + changed/whole row guarded), key (primary key only) "
                         "or both (default)")
    ap.add_argument("--paths", default="live,files",
                    help="our paths: live (generate_from_live, the DAG's), files (generate_from_files); "
                         "default both")
    ap.add_argument("--jobs", type=int, default=None, help="our processes on files (default: the engine decides, "
                                                           "2 on 2 cores)")
    ap.add_argument("--profile", metavar="SHAPE:PATH[:WHERE]",
                    help="instead of the table: run our engine under cProfile on one shape and path (live or "
                         "files, the latter in one process), e.g. wide:live, and print the time by group")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per contender")
    ap.add_argument("--binlog-size", default="256M", help="max_binlog_size (small values spread the window "
                                                          "over several files)")
    ap.add_argument("--plain-sql", action="store_true",
                    help="the plain loop also writes naive inverse SQL (repr literals) to a file")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "JSON_FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(*args.child)
    if args.rows < 4:
        ap.error("--rows must be at least 4")
    shapes = [x.strip() for x in args.shapes.split(",") if x.strip()]
    bad = [x for x in shapes if x not in SHAPES]
    if bad or not shapes:
        ap.error(f"--shapes: unknown {', '.join(bad) or '(none)'}; expected some of {', '.join(SHAPES)}")
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    if not paths or any(x not in ("live", "files") for x in paths):
        ap.error("--paths: expected live, files or live,files")
    wheres = ("row", "key") if args.where == "both" else (args.where,)
    selected = CONTENDERS
    if args.only:
        if args.only.lower() not in ALIASES:
            ap.error(f"--only {args.only!r}: expected one of {', '.join(CONTENDERS)}")
        selected = (ALIASES[args.only.lower()],)
    profile = None
    if args.profile:
        parts = args.profile.split(":")
        if len(parts) not in (2, 3) or parts[0] not in SHAPES or parts[1] not in ("live", "files") \
                or (len(parts) == 3 and parts[2] not in ("row", "key")):
            ap.error("--profile: expected SHAPE:live|files[:row|key], e.g. wide:live")
        profile = (parts[0], parts[1], parts[2] if len(parts) == 3 else "row")
        shapes = [profile[0]]

    sys.path.insert(0, str(REPO))
    from sandbox.servers import MariaDB, free_port, make_template

    tmp = Path(tempfile.mkdtemp(prefix="mbk-fb-"))
    srv, proc = None, None
    results: list[dict] = []  # one per cell: shape, contender, path, where, + the measurement
    gens: dict[str, dict] = {}
    prof_result = None
    t_run = time.perf_counter()
    try:
        log(f"temp dir {tmp}")
        # ours measured as installed: byte-compiled (scripts/install.sh does it; a checkout edited since,
        # under PYTHONDONTWRITEBYTECODE, would otherwise compile ~40 modules from source in each run)
        import compileall
        compileall.compile_dir(str(PLUGINS / "mysqlbackup"), quiet=1)
        template = make_template(tmp / "template")
        password = os.urandom(12).hex()
        srv = MariaDB("bench", str(tmp / "srv"), free_port(), 1,
                      extra_args=[f"--max-binlog-size={args.binlog_size}", "--innodb-buffer-pool-size=256M",
                                  "--innodb-log-file-size=256M", "--sync-binlog=0",
                                  "--innodb-flush-log-at-trx-commit=0"])
        proc = srv.start(template)
        conn = srv.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET sql_log_bin = 0")
                for host in ("localhost", "127.0.0.1"):
                    cur.execute(f"CREATE USER 'repl'@'{host}' IDENTIFIED BY %s", (password,))
                    # SELECT: the live path reads information_schema for generated columns
                    cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, SELECT ON *.* "
                                f"TO 'repl'@'{host}'")
        finally:
            conn.close()
        version = srv.sql("SELECT VERSION()")[0][0]
        settings = {"host": "127.0.0.1", "port": srv.port, "user": "repl", "password": password}
        log(f"MariaDB {version} on port {srv.port}; shapes {', '.join(shapes)}, {args.rows} row changes each")
        for shape in shapes:
            spec = SHAPES[shape]
            gen = gens[shape] = generate_shape(srv, shape, args.rows, args.batch, args.small)
            window = f"{gen['start'][0]}:{gen['start'][1]} .. {gen['stop'][0]}:{gen['stop'][1]}"
            first_seq = int(gen["gtid_before"].split("-")[-1]) + 1 if gen["gtid_before"] else 1
            print(f"[{shape}] {spec['about']}\n  data: {gen['inserts']} inserts + {gen['updates']} updates + "
                  f"{gen.get('deletes', 0)} deletes = {args.rows} row changes in {gen['seconds']:.1f} s, "
                  f"{gen.get('batch', args.batch)} rows per transaction; binlog {gen['binlog_bytes'] / 1e6:.1f} MB "
                  f"in {len(gen['files'])} file(s), {window}; GTIDs after {gen['gtid_before'] or '(none)'} .. "
                  f"{gen['gtid_after']} (first 0-1-{first_seq})", flush=True)
            start_s = f"{gen['start'][0]}:{gen['start'][1]}"
            stop_s = f"{gen['stop'][0]}:{gen['stop'][1]}"
            if profile:
                _, path, where = profile
                log(f"profiling ours on {shape}, {path}, --where {where}")
                payload = {"path": path, "where": where, "settings": settings, "files": gen["files"],
                           "start": start_s, "stop": stop_s, "workdir": str(tmp / f"prof-{shape}")}
                prof_result = run_child("profile", payload, tmp, args.timeout)
                continue
            for name in selected:
                cells = [(None, None)] if name != "ours" else [(p, w) for p in paths for w in wheres]
                for path, where in cells:
                    log(f"[{shape}] running {name}" + (f" {path} --where {where}" if path else ""))
                    r = run_contender(name, path, where, shape, gen, args, settings, tmp)
                    if r is None:
                        continue
                    r.update(shape=shape, contender=name, path=path or "-", where=where or "-")
                    results.append(r)
    finally:
        if srv is not None:
            srv.stop(proc)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"whole run {time.perf_counter() - t_run:.0f} s")

    if profile:
        return report_profile(prof_result, profile, args.rows)
    report(results, args.rows)
    return 1 if any("error" in r for r in results) else 0


def run_contender(name: str, path: str | None, where: str | None, shape: str, gen: dict, args,
                  settings: dict, tmp: Path) -> dict | None:
    spec = SHAPES[shape]
    start_s, stop_s = f"{gen['start'][0]}:{gen['start'][1]}", f"{gen['stop'][0]}:{gen['stop'][1]}"
    if name == "mariadb-binlog":
        out = tmp / f"mariadb-binlog-flashback-{shape}.sql"
        argv = [shutil.which("mariadb-binlog") or "mariadb-binlog", "--no-defaults", "--flashback",
                f"--start-position={gen['start'][1]}", f"--stop-position={gen['stop'][1]}", *gen["files"]]
        res = measure(argv, out, args.timeout)
        if res["rc"] != 0:
            return {"error": f"exit {res['rc']}: {res.get('stderr', '')[-2000:]}"}
        size = out.stat().st_size
        r = {"rows": args.rows, "seconds": res.get("time_e") or res["wall"], "maxrss_kb": res["maxrss_kb"],
             "output_bytes": size,
             "note": f"output {size / 1e6:.1f} MB, {count_binlog_statements(out)} BINLOG statements"}
        if size == 0:
            r["error"] = "empty output"
        if not args.keep:
            out.unlink(missing_ok=True)
        return r
    if name == "plain":
        payload = {"settings": settings, "auto_position": gen["gtid_before"] or None,
                   "server_id": 1000 + os.getpid() % 50000, "stop_gtid": gen["gtid_after"],
                   "naive_sql": str(tmp / f"plain-naive-{shape}.sql") if args.plain_sql else None,
                   "db": spec["db"], "table": spec["table"]}
        r = run_child("plain", payload, tmp, args.timeout)
        if "error" not in r:
            r["note"] = f"{r['counts']}; {r['cells']} values"
            if r["rows"] != args.rows:
                r["error"] = f"saw {r['rows']} row changes, expected {args.rows}"
        return r
    work = tmp / f"ours-{shape}-{path}-{where}"
    if path == "live":
        payload = {"settings": settings, "start": start_s, "stop": stop_s, "workdir": str(work), "where": where}
        r = run_child("ours-live", payload, tmp, args.timeout)
    else:
        payload = {"files": gen["files"], "start": start_s, "stop": stop_s, "workdir": str(work), "where": where,
                   "jobs": args.jobs}
        r = run_child("ours", payload, tmp, args.timeout)
    if not r.get("available", True):
        print(f"ours: not available yet ({r['reason']})", flush=True)
        return None
    if "error" not in r:
        r["note"] = f"output {r['output_bytes'] / 1e6:.1f} MB"
        if r.get("children_maxrss_kb"):
            r["note"] += (f"; worker processes (largest {r['children_maxrss_kb'] / 1024:.0f} MB, "
                          f"parent {r['self_maxrss_kb'] / 1024:.0f} MB)")
        if r["output_bytes"] == 0:
            r["error"] = "empty output"
        elif r["rows"] != args.rows:
            r["error"] = f"summary says {r['rows']} rows, expected {args.rows}"
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return r


def report(results: list[dict], rows: int) -> None:
    def rps(r: dict | None) -> float | None:
        return r["rows"] / r["seconds"] if r and "error" not in r and r["seconds"] > 0 else None

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "NOT met")
    print()
    print(f"targets for ours: >= {TARGET_RPS:,} rows/s, >= 1/3 of mariadb-binlog --flashback (C), peak RSS < "
          f"{TARGET_PEAK_MB:.0f} MB (and, informational, >= {TARGET_VS_PLAIN:.0f}x the plain loop)")
    print(f"{'shape':<7} {'contender':<15} {'path':<6} {'where':<5} {'rows':>7} {'seconds':>8} {'rows/s':>9} "
          f"{'vs C':>5} {'vs plain':>8} {'peak MB':>7}  {'rows/s':<7} {'1/3 C':<7} {'memory':<7} {'cell':<7}")
    summary = {"met": 0, "NOT met": 0}
    for shape in dict.fromkeys(r["shape"] for r in results):
        cells = [r for r in results if r["shape"] == shape]
        c_rps = rps(next((r for r in cells if r["contender"] == "mariadb-binlog"), None))
        p_rps = rps(next((r for r in cells if r["contender"] == "plain"), None))
        for r in cells:
            head = f"{shape:<7} {r['contender']:<15} {r['path']:<6} {r['where']:<5}"
            if "error" in r:
                print(f"{head} ERROR: {r['error'].splitlines()[0] if r['error'] else ''}")
                if r["contender"] == "ours":
                    summary["NOT met"] += 1
                continue
            x, peak = rps(r), r["maxrss_kb"] / 1024
            vs_c = f"{x / c_rps:.2f}" if c_rps else "-"
            vs_p = f"{x / p_rps:.2f}" if p_rps else "-"
            line = (f"{head} {r['rows']:>7} {r['seconds']:>8.2f} {x:>9,.0f} {vs_c:>5} {vs_p:>8} {peak:>7.1f}")
            if r["contender"] == "ours":
                ok = [x >= TARGET_RPS, (x / c_rps >= TARGET_VS_C) if c_rps else None, peak < TARGET_PEAK_MB]
                cell = None if None in ok else all(ok)
                line += "  " + " ".join(f"{verdict(o):<7}" for o in ok) + f" {verdict(cell):<7}"
                if cell is not None:
                    summary[verdict(cell)] += 1
            print(line + f"  {r.get('note', '')}")
    print()
    print(f"cells of ours meeting every target: {summary['met']} of {summary['met'] + summary['NOT met']}")


def report_profile(res: dict | None, profile: tuple, rows: int) -> int:
    shape, path, where = profile
    if res is None or "error" in res:
        print(f"profile {shape}:{path}: ERROR {res and res.get('error')}")
        return 1
    prof = res["profile"]
    total = prof["total"]
    print(f"\nprofile of ours, shape {shape}, path {path} (one process), "
          f"--where {where}: {res['rows']} rows in {res['seconds']:.2f} s under cProfile "
          f"({res['rows'] / res['seconds']:,.0f} rows/s; cProfile slows Python code, so shares matter, not the "
          f"speed); profiled self time {total:.2f} s, peak {res['maxrss_kb'] / 1024:.1f} MB")
    print(f"\n{'group':<55} {'seconds':>8} {'share':>6}")
    for g, t in sorted(prof["groups"].items(), key=lambda kv: -kv[1]):
        if t > 0:
            print(f"{g:<55} {t:>8.2f} {t / total:>6.1%}")
    print(f"\ntop functions by self time:\n{'self s':>7} {'cum s':>7} {'calls':>9}  {'group':<30} function")
    for f in prof["top"]:
        print(f"{f['tottime']:>7.2f} {f['cumtime']:>7.2f} {f['calls']:>9}  {f['group'][:30]:<30} {f['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
