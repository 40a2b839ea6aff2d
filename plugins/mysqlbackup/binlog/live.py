"""Replication client: COM_BINLOG_DUMP over pymysql, yielding the same RawEvent as the files.

The server sends each event as one packet: an OK byte, then header + body + CRC32 (when we
announce checksum support with ``@master_binlog_checksum``). At the start (and after each
rotation) it sends a fake ROTATE (artificial flag, timestamp 0, log_pos 0) naming the file, and
the file's FORMAT_DESCRIPTION (log_pos 0 when the dump starts past it). With
BINLOG_DUMP_NON_BLOCK the server answers EOF at the end instead of waiting for new events.
The password is only handed to pymysql; it is never logged or kept in a repr.

pymysql does the connect, the handshake and the SET statements; the dump's packet stream is read
here, from the socket in blocks of ``BLOCK`` bytes. pymysql's ``_read_packet`` costs per packet two
buffered reads, two ``settimeout`` calls, a ``MysqlPacket`` and its checks: on small row events
(340k events, 100k single-row changes of a 3-INT-column table) that was about 5.7 us of CPU per
event (170k events/s); reading the framing ourselves, about 1.8 us (540k events/s), measured
old vs new in one run of ``bench/live_stream_bench.py``. The framing: a 3-byte little-endian payload length, a sequence
id (incremented mod 256 from the command's, checked), the payload; a payload of exactly
0xFFFFFF bytes continues in the next packet (an event over 16 MB spans several). A payload that
begins with 0x00 is an event, 0xFE (shorter than 9 bytes) the EOF that ends a non-blocking dump,
0xFF an error, raised as pymysql raises it (a ``pymysql.err.MySQLError``). A lost connection or
the read timeout raises ``pymysql.err.OperationalError`` naming the file and position, as pymysql
did (never a partial event).

Event bodies are ``memoryview`` slices of the block they arrived in: a block is a ``bytes`` object
that is never written again, so a body stays valid after later events were read (keeping one
keeps its block alive).
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Self

import pymysql
from pymysql.constants import CR

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

MAX_PACKET_LEN = 0xFFFFFF  # a payload this long continues in the next packet
BLOCK = 1 << 20            # bytes asked of the socket per read

_HEADER = struct.Struct("<IBIIIH")
_U32 = struct.Struct("<I")


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

    def _lost(self, at: int, mid: bool, why: str) -> pymysql.err.OperationalError:
        where = (f"inside the event at {self.file}:{at}" if mid
                 else f"after {self.file}:{at}, before the end of the dump")
        return pymysql.err.OperationalError(
            CR.CR_SERVER_LOST, f"Lost connection to MySQL server during the binlog dump {where} ({why})")

    def _fill(self, rfile, buf: bytes, off: int, want: int, at: int, mid: bool = False) -> bytes:
        """``buf[off:]`` and what the socket sends next, at least ``want`` bytes: a new ``bytes``
        (the old one is never written again: events handed out may still point into it).
        ``mid``: an event's first packets were read already."""
        have = len(buf) - off
        parts = [buf[off:]] if have else []
        while have < want:
            try:
                more = rfile.read1(BLOCK)
            except OSError as exc:  # the read timeout (TimeoutError) or a reset
                raise self._lost(at, mid or have > 0, str(exc) or type(exc).__name__) from None
            if not more:
                raise self._lost(at, mid or have > 0, "the server closed the connection")
            parts.append(more)
            have += len(more)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __iter__(self) -> Iterator[RawEvent]:
        conn = self._conn = self._connect()
        try:
            flags = BINLOG_DUMP_NON_BLOCK | BINLOG_SEND_ANNOTATE_ROWS_EVENT
            payload = struct.pack("<IHI", self.start_pos, flags, self.server_id) + \
                self.start_file.encode()
            conn._execute_command(COM_BINLOG_DUMP, payload)
            seq = conn._next_seq_id  # of the server's first packet
            rfile = conn._rfile
            # pymysql set the write timeout for the command; the whole dump reads with this one
            conn._sock.settimeout(self.read_timeout)
            unpack = _HEADER.unpack_from
            u32 = _U32.unpack_from
            crc32 = zlib.crc32
            fill = self._fill
            csum = 0
            verify = self.verify_checksums
            buf = b""
            mv = memoryview(buf)
            n = off = 0
            at = self.start_pos  # where the next event starts, for error messages
            fname = self.file
            stop_file, stop_pos = self.stop or (None, 0)
            while True:
                # one packet: 4-byte header (length | sequence id << 24), then the payload
                if off + 4 > n:
                    buf = fill(rfile, buf, off, 4, at)
                    mv, n, off = memoryview(buf), len(buf), 0
                word = u32(buf, off)[0]
                if word >> 24 != seq:
                    self._bad_seq(word, seq, buf, off, n, at)
                seq = (seq + 1) & 0xFF
                plen = word & 0xFFFFFF
                end = off + 4 + plen
                if end > n:
                    buf = fill(rfile, buf, off, 4 + plen, at)
                    mv, n, off = memoryview(buf), len(buf), 0
                    end = 4 + plen
                s = off + 4      # the payload
                off = end
                if plen == MAX_PACKET_LEN:  # an event over 16 MB: the payload goes on in the next packets
                    parts = [buf[s:end]]
                    while True:
                        if off + 4 > n:
                            buf = fill(rfile, buf, off, 4, at, True)
                            mv, n, off = memoryview(buf), len(buf), 0
                        word = u32(buf, off)[0]
                        if word >> 24 != seq:
                            self._bad_seq(word, seq, buf, off, n, at)
                        seq = (seq + 1) & 0xFF
                        more = word & 0xFFFFFF
                        if off + 4 + more > n:
                            buf = fill(rfile, buf, off, 4 + more, at, True)
                            mv, n, off = memoryview(buf), len(buf), 0
                        parts.append(buf[off + 4:off + 4 + more])
                        off += 4 + more
                        if more < MAX_PACKET_LEN:
                            break
                    src = b"".join(parts)
                    ev_mv = memoryview(src)
                    s, end = 0, len(src)
                    plen = end
                else:
                    src, ev_mv = buf, mv
                if not plen or src[s]:
                    self._not_event(src, s, end, at)
                    return  # EOF: the end of a non-blocking dump
                s += 1           # the event
                size = end - s
                if size < HEADER_LEN:
                    raise DamagedBinlog(f"binlog dump: a {size}-byte event ({self.file} near {at})")
                ts, etype, sid, esize, log_pos, eflags = unpack(src, s)
                if esize != size:
                    raise DamagedBinlog(f"binlog dump: event size {esize} != packet size {size} "
                                        f"({self.file} near {log_pos})")
                if etype == ROTATE_EVENT and (eflags & LOG_EVENT_ARTIFICIAL_F or log_pos == 0):
                    # sent before the file's FDE: it carries a CRC when the server has them on
                    # (we announced that we understand them)
                    ev = ev_mv[s:end]
                    e = size - CHECKSUM_LEN if self._server_crc else size
                    if self._server_crc and verify and crc32(ev[:e]) != int.from_bytes(ev[e:], "little"):
                        raise DamagedBinlog("checksum mismatch in the server's ROTATE event")
                    self.file = fname = bytes(ev[HEADER_LEN + 8:e]).decode("utf-8", "replace")
                    if size >= HEADER_LEN + 8:
                        at = int.from_bytes(ev[HEADER_LEN:HEADER_LEN + 8], "little")
                    continue
                if etype == HEARTBEAT_EVENT:
                    continue
                if etype == FORMAT_DESCRIPTION_EVENT:
                    ev = ev_mv[s:end]
                    alg = fde_checksum_alg(ev)
                    self.checksum_alg = alg
                    csum = CHECKSUM_LEN if alg == BINLOG_CHECKSUM_ALG_CRC32 else 0
                    if csum and verify and not fde_crc_ok(ev):
                        raise DamagedBinlog(f"{self.file}: checksum mismatch in FORMAT_DESCRIPTION")
                    body_end = end - CHECKSUM_LEN if alg in (0, 1) else end
                    # sent with log_pos 0 when the dump starts past it: report the file's value
                    yield RawEvent(ts, etype, sid, esize, log_pos or 4 + esize, eflags, self.file, 4,
                                   ev_mv[s + HEADER_LEN:body_end])
                    if log_pos:
                        at = log_pos
                    continue
                pos = log_pos - esize
                if stop_file is not None and (fname > stop_file or fname == stop_file and pos >= stop_pos):
                    self.stopped = True
                    return
                at = log_pos
                if csum:
                    if verify and crc32(ev_mv[s:end - 4]) != u32(src, end - 4)[0]:
                        raise DamagedBinlog(f"{self.file}: checksum mismatch at position {pos} "
                                            f"(event type {etype})")
                    yield RawEvent(ts, etype, sid, esize, log_pos, eflags, fname, pos,
                                   ev_mv[s + HEADER_LEN:end - 4])
                else:
                    yield RawEvent(ts, etype, sid, esize, log_pos, eflags, fname, pos,
                                   ev_mv[s + HEADER_LEN:end])
        finally:
            self.close()

    def _bad_seq(self, word: int, want: int, buf: bytes, off: int, n: int, at: int) -> None:
        got, plen = word >> 24, word & 0xFFFFFF
        if got == 0:
            # MariaDB sends an error packet numbered 0 when it shuts down or kills the dump
            if off + 4 + plen <= n and plen > 3 and buf[off + 4] == 0xFF:
                pymysql.err.raise_mysql_exception(bytes(buf[off + 4:off + 4 + plen]))
            raise self._lost(at, False, "the server sent packet number 0: shutting down?")
        raise BinlogError(f"binlog dump: packet sequence number {got}, expected {want} "
                          f"({self.file} near {at}): the stream is out of step")

    def _not_event(self, src: bytes, s: int, end: int, at: int) -> None:
        """A payload that is no event: returns for EOF, raises for anything else."""
        first = src[s] if end > s else None
        if first == 0xFE and end - s < 9:
            return
        if first == 0xFF:
            pymysql.err.raise_mysql_exception(bytes(src[s:end]))
        what = "an empty packet" if first is None else f"unexpected packet {bytes(src[s:s + 1]).hex()}"
        raise BinlogError(f"{what} in binlog dump ({self.file} near {at})")
