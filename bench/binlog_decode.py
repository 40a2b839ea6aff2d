"""Benchmark: our binlog reader + generated row codec vs. a plain mysql-replication loop.

Starts a throwaway MariaDB 10.11 (binlog ROW/FULL/FULL), writes ~200k row changes (half
INSERT, half UPDATE) on a mixed-type table, then measures rows/s of
  (a) reader + codec decoding every column of every image,
  (b) the flashback's need: inserts -> primary key only; updates -> before all, after pk only,
  (c) mysql-replication 1.0 (BinLogStreamReader, live, non-blocking) reading row values,
and peak RSS after (a)/(b). Run: .venv/bin/python bench/binlog_decode.py [rows]
"""
from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from mysqlbackup.binlog import events as E
from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.decode import RowCodec
from mysqlbackup.binlog.reader import iter_events

from sandbox.servers import MariaDB, free_port, make_template

DDL = """CREATE TABLE bench.t (
  id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, amount DECIMAL(12,2), ts DATETIME(6),
  score DOUBLE, note TEXT, status ENUM('new','paid','shipped','returned') NOT NULL)"""


def generate(srv: MariaDB, n: int) -> None:
    half = n // 2
    srv.sql("CREATE DATABASE bench")
    srv.sql(DDL)
    step = 10000
    for lo in range(1, half + 1, step):
        hi = min(half, lo + step - 1)
        srv.sql(f"INSERT INTO bench.t SELECT seq, CONCAT('name-', seq, '-', REPEAT('n', seq % 20)), "
                f"seq * 1.25 - 5000, '2024-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL seq MICROSECOND, "
                f"seq / 7, IF(seq % 10 = 0, NULL, REPEAT('note ', seq % 12)), "
                f"ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned') FROM seq_{lo}_to_{hi}", db="bench")
    for lo in range(1, half + 1, step):
        hi = min(half, lo + step - 1)
        srv.sql(f"UPDATE bench.t SET amount = amount + 1, status = 'paid', score = score * 2 "
                f"WHERE id BETWEEN {lo} AND {hi}")


def ours(paths: list[str], keys_only: bool) -> tuple[int, float]:
    t0 = time.perf_counter()
    rows = 0
    codecs: dict[int, RowCodec] = {}
    fde = None
    want: dict[int, tuple] = {}
    ROWS = F.ROWS_EVENTS
    TM = F.TABLE_MAP_EVENT
    parse_hdr = E.parse_rows_header
    for ev in iter_events(paths):
        t = ev.type
        if t in ROWS:
            hdr = parse_hdr(ev.body, t)
            codec = codecs[hdr.table_id]
            if keys_only:
                pk = want[hdr.table_id]
                if hdr.kind == "update" or hdr.kind == "insert":
                    rows += len(codec.decode(ev.body, hdr, None, pk))
                else:
                    rows += len(codec.decode(ev.body, hdr, None, None))
            else:
                rows += len(codec.decode(ev.body, hdr))
        elif t == TM:
            tm = E.parse_table_map(ev.body, fde.post_header_len(t), fde.is_mariadb)
            old = codecs.get(tm.table_id)
            if old is None or not old.table_map.same_shape(tm):
                codecs[tm.table_id] = RowCodec(tm)
                want[tm.table_id] = frozenset(tm.primary_key or range(len(tm.column_types)))
        elif t == F.FORMAT_DESCRIPTION_EVENT:
            fde = E.parse_format_description(ev.body, F.BINLOG_CHECKSUM_ALG_CRC32)
    return rows, time.perf_counter() - t0


def library(srv: MariaDB, user: str, password: str, first_file: str) -> tuple[int, float]:
    """mysql-replication 1.0.17 with is_mariadb=True + auto_position sends a MariaDB
    COM_BINLOG_DUMP whose declared packet length is one byte short; MariaDB 10.11 drops the
    connection and the library reconnects forever. The plain (MySQL-style) dump by file and
    position works against MariaDB, so that is what is measured."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent
    t0 = time.perf_counter()
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": srv.port, "user": user, "passwd": password},
        server_id=777, only_events=[WriteRowsEvent, UpdateRowsEvent], resume_stream=True,
        blocking=False, is_mariadb=False, log_file=first_file, log_pos=4, enable_logging=False)
    rows = 0
    try:
        for ev in stream:
            if isinstance(ev, UpdateRowsEvent):
                for r in ev.rows:
                    _ = r["before_values"], r["after_values"]
                    rows += 1
            else:
                for r in ev.rows:
                    _ = r["values"]
                    rows += 1
    finally:
        stream.close()
    return rows, time.perf_counter() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    state = Path(tempfile.mkdtemp(prefix="mbk-bench-"))
    template = make_template(state / "template")
    srv = MariaDB("bench", str(state / "src"), free_port(), 1)
    proc = srv.start(template)
    try:
        srv.sql("CREATE USER bench@'127.0.0.1' IDENTIFIED BY 'bench-pw'")
        srv.sql("GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, SELECT ON *.* "
                "TO bench@'127.0.0.1'")
        t0 = time.perf_counter()
        generate(srv, n)
        gen_s = time.perf_counter() - t0
        srv.sql("FLUSH BINARY LOGS")
        names = [r[0] for r in srv.sql("SHOW BINARY LOGS")]
        paths = [os.path.join(srv.datadir, x) for x in names]
        size = sum(os.path.getsize(p) for p in paths)
        print(f"generated {n} row changes in {gen_s:.1f}s; binlogs: {len(paths)} files, "
              f"{size / 2**20:.1f} MiB")
        ours(paths, False)  # warm the page cache
        ra, ta = ours(paths, False)
        print(f"(a) reader+codec, all columns:  {ra} rows in {ta:.2f}s = {ra / ta:,.0f} rows/s")
        rb, tb = ours(paths, True)
        print(f"(b) reader+codec, keys only:    {rb} rows in {tb:.2f}s = {rb / tb:,.0f} rows/s "
              f"(inserts: pk; updates: before all, after pk)")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"    peak RSS after (a)/(b): {rss:.0f} MiB")
        rc, tc = library(srv, "bench", "bench-pw", names[0])
        print(f"(c) mysql-replication 1.0 live: {rc} rows in {tc:.2f}s = {rc / tc:,.0f} rows/s")
        print(f"ratio (a)/(c) = {(ra / ta) / (rc / tc):.1f}x, (b)/(c) = {(rb / tb) / (rc / tc):.1f}x")
        if not (ra == rb == rc == n):
            print(f"WARNING: row counts differ: a={ra} b={rb} c={rc} expected={n}")
    finally:
        srv.stop(proc)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
