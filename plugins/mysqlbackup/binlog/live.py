"""Replication client: COM_BINLOG_DUMP over pymysql, yielding the same RawEvent as the files.

The server sends each event as one packet: an OK byte, then header + body + CRC32 (when we
announce checksum support with ``@master_binlog_checksum``). At the start (and after each
rotation) it sends a fake ROTATE (artificial flag, timestamp 0, log_pos 0) naming the file, and
the file's FORMAT_DESCRIPTION (log_pos 0 when the dump starts past it). With
BINLOG_DUMP_NON_BLOCK the server answers EOF at the end instead of waiting for new events.
The password is only handed to pymysql; it is never logged or kept in a repr.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Self

import pymysql

from .format import (
    BINLOG_CHECKSUM_ALG_CRC32,
    CHECKSUM_LEN,
    FORMAT_DESCRIPTION_EVENT,
    HEADER_LEN,
    HEARTBEAT_EVENT,
    LOG_EVENT_ARTIFICIAL_F,
    ROTATE_EVENT,
)
from .reader import BinlogError, DamagedBinlog, RawEvent, fde_checksum_alg, fde_crc_ok

COM_BINLOG_DUMP = 0x12
BINLOG_DUMP_NON_BLOCK = 0x01
BINLOG_SEND_ANNOTATE_ROWS_EVENT = 0x02     # MariaDB: send ANNOTATE_ROWS like the file has them
MARIA_SLAVE_CAPABILITY_GTID = 4

_HEADER = struct.Struct("<IBIIIH")


class LiveReader:
    """Events from a server's binlog, from ``start_file:start_pos`` to ``stop=(file, pos)``
    (exclusive) or to the end of the last binlog (non-blocking dump).

    Like the file reader, every file's FORMAT_DESCRIPTION is yielded (with ``pos`` 4), then the
    events from the start position; the artificial ROTATE events the server makes up are not
    yielded (they only tell the file name), real ROTATE events at the end of a file are."""

    def __init__(self, host: str, port: int, user: str, password: str, server_id: int,
                 start_file: str, start_pos: int = 4, stop: tuple[str, int] | None = None, *,
                 verify_checksums: bool = True, connect_timeout: float = 10,
                 read_timeout: float | None = 600, unix_socket: str | None = None) -> None:
        if not server_id:
            raise ValueError("server_id must be a non-zero id unique among the server's replicas")
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.server_id = server_id
        self.start_file = start_file
        self.start_pos = start_pos
        self.stop = stop
        self.verify_checksums = verify_checksums
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.unix_socket = unix_socket
        self.file = start_file
        self.stopped = False  # the stop position ended the dump
        self.checksum_alg: int | None = None
        self._conn: pymysql.connections.Connection | None = None
        self._server_crc = False

    def __repr__(self) -> str:
        return (f"LiveReader({self.user}@{self.host}:{self.port}, server_id={self.server_id}, "
                f"from {self.start_file}:{self.start_pos}, stop={self.stop})")

    def _connect(self) -> pymysql.connections.Connection:
        kw = {"host": self.host, "port": self.port, "user": self.user,
              "password": self._password, "connect_timeout": self.connect_timeout,
              "read_timeout": self.read_timeout, "autocommit": True, "charset": "utf8mb4"}
        if self.unix_socket:
            kw["unix_socket"] = self.unix_socket
        conn = pymysql.connect(**kw)
        with conn.cursor() as cur:
            cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            cur.execute("SET @mariadb_slave_capability = %s", (MARIA_SLAVE_CAPABILITY_GTID,))
            cur.execute("SELECT @master_binlog_checksum")
            self._server_crc = (cur.fetchone()[0] or "").upper() == "CRC32"
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001, S110 - closing a dump connection mid-stream may fail
                pass
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _past_stop(self, file: str, pos: int) -> bool:
        if self.stop is None:
            return False
        sf, sp = self.stop
        return file > sf or (file == sf and pos >= sp)

    def __iter__(self) -> Iterator[RawEvent]:
        conn = self._conn = self._connect()
        try:
            flags = BINLOG_DUMP_NON_BLOCK | BINLOG_SEND_ANNOTATE_ROWS_EVENT
            payload = struct.pack("<IHI", self.start_pos, flags, self.server_id) + \
                self.start_file.encode()
            conn._execute_command(COM_BINLOG_DUMP, payload)
            unpack = _HEADER.unpack_from
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
                    raise DamagedBinlog(f"binlog dump: event size {esize} != packet size {size} "
                                      f"({self.file} near {log_pos})")
                if etype == ROTATE_EVENT and (eflags & LOG_EVENT_ARTIFICIAL_F or log_pos == 0):
                    # sent before the file's FDE: it carries a CRC when the server has them on
                    # (we announced that we understand them)
                    end = size - CHECKSUM_LEN if self._server_crc else size
                    if self._server_crc and verify and crc32(ev[:end]) != int.from_bytes(
                            ev[end:], "little"):
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
                    # sent with log_pos 0 when the dump starts past it: report the file's value
                    yield RawEvent(ts, etype, sid, esize, log_pos or 4 + esize, eflags, self.file, 4,
                                   ev[HEADER_LEN:body_end])
                    continue
                pos = log_pos - esize
                if self._past_stop(self.file, pos):
                    self.stopped = True
                    return
                if csum:
                    if verify and crc32(ev[:size - 4]) != int.from_bytes(ev[size - 4:], "little"):
                        raise DamagedBinlog(f"{self.file}: checksum mismatch at position {pos} "
                                            f"(event type {etype})")
                    body = ev[HEADER_LEN:size - 4]
                else:
                    body = ev[HEADER_LEN:]
                yield RawEvent(ts, etype, sid, esize, log_pos, eflags, self.file, pos, body)
        finally:
            self.close()
