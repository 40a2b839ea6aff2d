"""The replication stream alone: LiveReader over many small row events, per event, old vs new.

Starts one throwaway MariaDB (ROW / FULL image / FULL metadata, random port, temp datadir), writes
--tx transactions of 5 single-row statements (INSERT, INSERT, UPDATE, DELETE, INSERT on a 3-INT-column
table, from a stored procedure: each statement its own ANNOTATE_ROWS + TABLE_MAP + rows event), then
iterates the dump of that binlog file (to its end: the stop position) --rounds times with each reader,
alternating, and prints events/s (wall) and the reader's CPU per event (process time: the server runs
on the same cores):

  old   pymysql's conn._read_packet() per packet, as live.py read the dump before (a copy below)
  new   mysqlbackup.binlog.live.LiveReader (our own reader of the packet framing)
  NAME  --alt NAME=PATH: another live.py, e.g. a variant being tried

    .venv/bin/python bench/live_stream_bench.py [--tx 50000] [--rounds 3] [--alt try=/tmp/live_try.py]

The server is always stopped (also on errors and Ctrl-C).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from mysqlbackup.binlog import live
from mysqlbackup.binlog.format import (
    BINLOG_CHECKSUM_ALG_CRC32,
    CHECKSUM_LEN,
    FORMAT_DESCRIPTION_EVENT,
    HEADER_LEN,
    HEARTBEAT_EVENT,
    LOG_EVENT_ARTIFICIAL_F,
    ROTATE_EVENT,
)
from mysqlbackup.binlog.reader import (
    BinlogError,
    DamagedBinlog,
    RawEvent,
    fde_checksum_alg,
    fde_crc_ok,
)

PROC = """CREATE PROCEDURE lsb.fill(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    START TRANSACTION;
    INSERT INTO lsb.t VALUES (3 * i, i, 1);
    INSERT INTO lsb.t VALUES (3 * i + 1, i, 2);
    UPDATE lsb.t SET c = c + 10 WHERE a = 3 * i;
    DELETE FROM lsb.t WHERE a = 3 * i + 1;
    INSERT INTO lsb.t VALUES (3 * i + 2, i, 3);
    COMMIT;
    SET i = i + 1;
  END WHILE;
END"""


class OldLiveReader(live.LiveReader):
    """live.py's dump loop before it read the framing itself: one conn._read_packet() per event."""

    def _past_stop(self, file: str, pos: int) -> bool:
        if self.stop is None:
            return False
        sf, sp = self.stop
        return file > sf or (file == sf and pos >= sp)

    def __iter__(self):
        conn = self._conn = self._connect()
        try:
            flags = live.BINLOG_DUMP_NON_BLOCK | live.BINLOG_SEND_ANNOTATE_ROWS_EVENT
            payload = struct.pack("<IHI", self.start_pos, flags, self.server_id) + self.start_file.encode()
            conn._execute_command(live.COM_BINLOG_DUMP, payload)
            unpack = live._HEADER.unpack_from
            crc32 = zlib.crc32
            csum = 0
            verify = self.verify_checksums
            while True:
                pkt = conn._read_packet()
                if pkt.is_eof_packet():
                    return
                data = pkt.get_all_data()
                if data[0] != 0:
                    raise BinlogError(f"unexpected packet {data[:1].hex()} in binlog dump")
                ev = memoryview(data)[1:]
                size = len(ev)
                ts, etype, sid, esize, log_pos, eflags = unpack(ev, 0)
                if esize != size:
                    raise DamagedBinlog(f"binlog dump: event size {esize} != packet size {size}")
                if etype == ROTATE_EVENT and (eflags & LOG_EVENT_ARTIFICIAL_F or log_pos == 0):
                    end = size - CHECKSUM_LEN if self._server_crc else size
                    if self._server_crc and verify and crc32(ev[:end]) != int.from_bytes(ev[end:], "little"):
                        raise DamagedBinlog("checksum mismatch in the server's ROTATE event")
                    self.file = bytes(ev[HEADER_LEN + 8:end]).decode("utf-8", "replace")
                    continue
                if etype == HEARTBEAT_EVENT:
                    continue
                if etype == FORMAT_DESCRIPTION_EVENT:
                    alg = fde_checksum_alg(ev)
                    self.checksum_alg = alg
                    csum = CHECKSUM_LEN if alg == BINLOG_CHECKSUM_ALG_CRC32 else 0
                    if csum and verify and not fde_crc_ok(ev):
                        raise DamagedBinlog(f"{self.file}: checksum mismatch in FORMAT_DESCRIPTION")
                    body_end = size - CHECKSUM_LEN if alg in (0, 1) else size
                    yield RawEvent(ts, etype, sid, esize, log_pos or 4 + esize, eflags, self.file, 4,
                                   ev[HEADER_LEN:body_end])
                    continue
                pos = log_pos - esize
                if self._past_stop(self.file, pos):
                    self.stopped = True
                    return
                if csum:
                    if verify and crc32(ev[:size - 4]) != int.from_bytes(ev[size - 4:], "little"):
                        raise DamagedBinlog(f"{self.file}: checksum mismatch at position {pos}")
                    body = ev[HEADER_LEN:size - 4]
                else:
                    body = ev[HEADER_LEN:]
                yield RawEvent(ts, etype, sid, esize, log_pos, eflags, self.file, pos, body)
        finally:
            self.close()


def load_alt(name: str, path: str):
    """Another live.py, imported inside the package (its relative imports work)."""
    spec = importlib.util.spec_from_file_location(f"mysqlbackup.binlog._bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LiveReader


def one_pass(cls, settings: dict, start_file: str, stop: tuple[str, int], server_id: int
             ) -> tuple[int, int, float, float]:
    n = nbytes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    reader = cls(settings["host"], settings["port"], settings["user"], settings["password"], server_id,
                 start_file, 4, stop)
    with reader:
        for ev in reader:
            n += 1
            nbytes += ev.event_size
    return n, nbytes, time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tx", type=int, default=50_000, help="transactions of 5 single-row statements")
    ap.add_argument("--rounds", type=int, default=3, help="passes per reader (alternating)")
    ap.add_argument("--alt", action="append", default=[], metavar="NAME=PATH", help="another live.py to time")
    ap.add_argument("--only", default="", help="comma-separated readers to time (default: all)")
    args = ap.parse_args()
    readers = {"old": OldLiveReader, "new": live.LiveReader}
    for spec in args.alt:
        name, _, path = spec.partition("=")
        readers[name] = load_alt(name, path)
    if args.only:
        readers = {k: v for k, v in readers.items() if k in args.only.split(",")}

    from sandbox.servers import MariaDB, free_port, make_template
    tmp = Path(tempfile.mkdtemp(prefix="mbk-lsb-"))
    srv = proc = None
    try:
        template = make_template(tmp / "template")
        password = os.urandom(12).hex()
        srv = MariaDB("lsb", str(tmp / "srv"), free_port(), 1,
                      extra_args=["--sync-binlog=0", "--innodb-flush-log-at-trx-commit=0"])
        proc = srv.start(template)
        conn = srv.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET sql_log_bin = 0")
                cur.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY %s", (password,))
                cur.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
                cur.execute("CREATE DATABASE lsb")
                cur.execute("CREATE TABLE lsb.t (a INT PRIMARY KEY, b INT, c INT) ENGINE=InnoDB")
                cur.execute(PROC)
                cur.execute("SET sql_log_bin = 1")
                cur.execute("FLUSH BINARY LOGS")
                cur.execute("SHOW MASTER STATUS")
                start_file = cur.fetchone()[0]
                t0 = time.perf_counter()
                cur.execute("CALL lsb.fill(%s)", (args.tx,))
                gen_s = time.perf_counter() - t0
                cur.execute("SHOW MASTER STATUS")
                stop = cur.fetchone()[:2]  # the ROTATE that ends the file: a fixed set of events
                cur.execute("FLUSH BINARY LOGS")
        finally:
            conn.close()
        settings = {"host": "127.0.0.1", "port": srv.port, "user": "repl", "password": password}
        print(f"MariaDB {srv.sql('SELECT VERSION()')[0][0]}: {args.tx} transactions x 5 single-row "
              f"statements written in {gen_s:.1f} s, dump from {start_file}:4 to {stop[0]}:{stop[1]}", flush=True)
        seen: dict[str, list] = {k: [] for k in readers}
        counts = set()
        for r in range(args.rounds):
            for i, (name, cls) in enumerate(readers.items()):
                n, nbytes, wall, cpu = one_pass(cls, settings, start_file, stop, 9000 + r * 10 + i)
                counts.add((n, nbytes))
                seen[name].append((wall, cpu))
                print(f"  round {r + 1} {name:>5}: {n} events, {nbytes / 1e6:.1f} MB, {wall:.2f} s wall, "
                      f"{cpu:.2f} s CPU", flush=True)
        if len(counts) != 1:
            print(f"the readers disagree on the events: {sorted(counts)}")
            return 1
        n, nbytes = counts.pop()
        print(f"\n{n} events ({nbytes / 1e6:.1f} MB); medians of {args.rounds} rounds:")
        print(f"{'reader':>8} {'events/s':>12} {'MB/s':>8} {'us/event wall':>14} {'us/event CPU':>13}")
        for name, runs in seen.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{name:>8} {n / wall:12,.0f} {nbytes / 1e6 / wall:8.1f} {wall / n * 1e6:14.2f} "
                  f"{cpu / n * 1e6:13.2f}")
        return 0
    finally:
        if srv is not None:
            srv.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
