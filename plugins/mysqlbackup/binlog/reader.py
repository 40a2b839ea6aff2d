"""Binlog v4 file reader: event headers and body views, CRC32 validation, files in order.

Memory stays bounded: the file is read in chunks (``CHUNK`` bytes, more only for an event larger
than a chunk). Every event body is a ``memoryview`` into the current chunk; keep a copy
(``bytes(ev.body)``) if you need it after the next event.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence

from .format import (
    BINLOG_CHECKSUM_ALG_CRC32,
    BINLOG_CHECKSUM_ALG_OFF,
    BINLOG_CHECKSUM_ALG_UNDEF,
    BINLOG_MAGIC,
    CHECKSUM_LEN,
    FDE_FIXED_LEN,
    FORMAT_DESCRIPTION_EVENT,
    HEADER_LEN,
    LOG_EVENT_BINLOG_IN_USE_F,
    START_ENCRYPTION_EVENT,
)

CHUNK = 4 << 20

_HEADER = struct.Struct("<IBIIIH")
_CRC = struct.Struct("<I")


class BinlogError(Exception):
    """A binlog that cannot be read: not a binlog, corrupt (checksum), unsupported."""


class DamagedBinlog(BinlogError):
    """The bytes are not a sound binlog (no magic, checksum mismatch, impossible event header,
    cut in the middle of the sequence of files); the message names the file and position."""


class RawEvent:
    """One event: the common header fields and the body (no header, no checksum)."""

    __slots__ = (
        "body",
        "event_size",
        "file",
        "flags",
        "log_pos",
        "pos",
        "server_id",
        "timestamp",
        "type",
    )

    def __init__(self, timestamp: int, type: int, server_id: int, event_size: int, log_pos: int,
                 flags: int, file: str, pos: int, body: memoryview) -> None:
        self.timestamp = timestamp
        self.type = type
        self.server_id = server_id
        self.event_size = event_size
        self.log_pos = log_pos
        self.flags = flags
        self.file = file
        self.pos = pos
        self.body = body

    def __repr__(self) -> str:
        from .format import EVENT_NAMES
        return (f"RawEvent({EVENT_NAMES.get(self.type, self.type)} {self.file}:{self.pos} "
                f"size={self.event_size} end={self.log_pos} ts={self.timestamp} "
                f"server_id={self.server_id} flags={self.flags:#x})")


def fde_checksum_alg(event: bytes | memoryview) -> int:
    """The checksum algorithm byte of a whole FORMAT_DESCRIPTION event (header included)."""
    size = len(event)
    # binlog v4 FDE written by a checksum-aware server: ... post-header lengths, alg(1), crc(4)
    if size < HEADER_LEN + FDE_FIXED_LEN + 1 + CHECKSUM_LEN:
        return BINLOG_CHECKSUM_ALG_UNDEF
    return event[size - CHECKSUM_LEN - 1]


def fde_crc_ok(event: bytes | memoryview) -> bool:
    """CRC32 of a whole FORMAT_DESCRIPTION event; computed with the "in use" flag cleared."""
    data = bytearray(event[:-CHECKSUM_LEN])
    data[17] &= ~LOG_EVENT_BINLOG_IN_USE_F & 0xFF
    return zlib.crc32(data) == int.from_bytes(event[-CHECKSUM_LEN:], "little")


class FileEvents:
    """Iterator over the events of one binlog file. After iteration, ``truncated`` tells whether
    the file ended inside an event (a file still being written), ``cut_at`` is then the offset
    where that incomplete event begins, ``stopped`` whether ``stop`` ended the iteration, and
    ``end_pos`` is the offset after the last complete event yielded (or examined, when ``stop``
    ended the iteration)."""

    def __init__(self, path: str | os.PathLike, start: int = 4, stop: int | None = None,
                 verify_checksums: bool = True, chunk: int = CHUNK) -> None:
        self.path = os.fspath(path)
        self.file = os.path.basename(self.path)
        self.start = max(4, start)
        self.stop = stop
        self.verify_checksums = verify_checksums
        self.chunk = chunk
        self.truncated = False
        self.cut_at: int | None = None
        self.cut_event: tuple[int, int] | None = None  # (type, timestamp) of the cut event, if its header is whole
        self.stopped = False
        self.end_pos = self.start
        self.checksum_alg: int | None = None
        self._gen = self._run()

    def __iter__(self) -> Iterator[RawEvent]:
        return self._gen

    def __next__(self) -> RawEvent:
        return next(self._gen)

    def _error(self, pos: int, what: str) -> BinlogError:
        return DamagedBinlog(f"{self.path}: {what} at position {pos}")

    def _cut(self, pos: int, buf: bytes, off: int) -> None:
        """The file ends inside the event at ``pos``: a file still being written, or cut. When its
        header is there and says it ends elsewhere than its size does, the header is damaged."""
        self.truncated = True
        self.cut_at = pos
        if len(buf) - off >= HEADER_LEN:
            ts, etype, _sid, size, log_pos, _flags = _HEADER.unpack_from(buf, off)
            if log_pos and log_pos != pos + size:
                raise self._error(pos, f"damaged event header (size {size}, but the next event is at {log_pos})")
            self.cut_event = (etype, ts)

    def _run(self) -> Iterator[RawEvent]:
        fname = self.file
        stop = self.stop
        verify = self.verify_checksums
        unpack_header = _HEADER.unpack_from
        unpack_crc = _CRC.unpack_from
        crc32 = zlib.crc32
        with open(self.path, "rb", buffering=0) as f:
            magic = f.read(4)
            if magic != BINLOG_MAGIC:
                raise DamagedBinlog(f"{self.path}: not a binlog file (it begins with {magic!r}, a binlog with "
                                    f"{BINLOG_MAGIC!r})")
            # the FORMAT_DESCRIPTION at offset 4 says whether events carry a CRC32
            buf = f.read(max(self.chunk, HEADER_LEN))
            if len(buf) < HEADER_LEN:
                if buf:
                    self.truncated, self.cut_at = True, 4
                self.end_pos = 4
                return
            ts, etype, sid, size, log_pos, flags = unpack_header(buf, 0)
            if etype != FORMAT_DESCRIPTION_EVENT:
                raise self._error(4, f"first event is type {etype}, not FORMAT_DESCRIPTION")
            if size < HEADER_LEN or size > os.fstat(f.fileno()).st_size:
                if size < HEADER_LEN or log_pos != 4 + size:
                    raise self._error(4, f"damaged FORMAT_DESCRIPTION event header (size {size})")
            while len(buf) < size:
                more = f.read(self.chunk)
                if not more:
                    self.truncated, self.cut_at, self.cut_event = True, 4, (etype, ts)
                    self.end_pos = 4
                    return
                buf += more
            fde = memoryview(buf)[:size]
            alg = fde_checksum_alg(fde)
            self.checksum_alg = alg
            if alg == BINLOG_CHECKSUM_ALG_CRC32:
                if verify and not fde_crc_ok(fde):
                    raise self._error(4, "checksum mismatch in FORMAT_DESCRIPTION event")
                fde_body_end = size - CHECKSUM_LEN
            elif alg in (BINLOG_CHECKSUM_ALG_OFF, BINLOG_CHECKSUM_ALG_UNDEF):
                fde_body_end = size if alg == BINLOG_CHECKSUM_ALG_UNDEF else size - CHECKSUM_LEN
            else:
                raise self._error(4, f"unsupported checksum algorithm {alg}")
            csum = CHECKSUM_LEN if alg == BINLOG_CHECKSUM_ALG_CRC32 else 0
            yield RawEvent(ts, etype, sid, size, log_pos, flags, fname, 4,
                           memoryview(buf)[HEADER_LEN:fde_body_end])
            self.end_pos = 4 + size
            # position the reader at `start`
            base = 4            # file offset of buf[0]
            off = size          # offset inside buf
            if self.start > 4 + size:
                f.seek(self.start)
                base, off, buf = self.start, 0, b""
            end_file = False
            mv = memoryview(buf)  # of the current chunk: event bodies are views into it, never copies
            while True:
                avail = len(buf) - off
                if avail >= HEADER_LEN:
                    ts, etype, sid, size, log_pos, flags = unpack_header(buf, off)
                    need = size
                    if need < HEADER_LEN + csum:
                        raise self._error(base + off, f"invalid event size {need}")
                else:
                    need = HEADER_LEN
                if avail < need:
                    if stop is not None and base + off >= stop:
                        self.stopped = True
                        return
                    if not end_file and need - avail > os.fstat(f.fileno()).st_size - (base + len(buf)):
                        end_file = True  # the event would end past the end of the file: do not read for it
                    if end_file:
                        if avail > 0:
                            self._cut(base + off, buf, off)
                        return
                    more = f.read(max(self.chunk, need - avail))
                    if not more:
                        end_file = True
                        continue
                    tail = buf[off:]
                    base += off
                    buf = tail + more if tail else more
                    mv = memoryview(buf)
                    off = 0
                    continue
                pos = base + off
                if stop is not None and pos >= stop:
                    self.stopped = True
                    return
                if etype == START_ENCRYPTION_EVENT:
                    raise self._error(pos, "encrypted binlog (START_ENCRYPTION event) is not supported")
                end = off + size
                if csum:
                    if verify and crc32(mv[off:end - 4]) != unpack_crc(buf, end - 4)[0]:
                        raise self._error(pos, f"checksum mismatch (event type {etype}, size {size})")
                    body = mv[off + HEADER_LEN:end - 4]
                else:
                    body = mv[off + HEADER_LEN:end]
                self.end_pos = pos + size
                off = end
                yield RawEvent(ts, etype, sid, size, log_pos, flags, fname, pos, body)


def iter_file_events(path: str | os.PathLike, start: int = 4, stop: int | None = None,
                     verify_checksums: bool = True) -> FileEvents:
    """Events of one binlog file, from offset ``start`` (the FORMAT_DESCRIPTION event at 4 is
    always yielded first) to the first event starting at or after ``stop``.

    Returns an iterator whose ``truncated`` attribute is True after iteration when the file ended
    inside an event (a binlog still being written): iteration ends cleanly there."""
    return FileEvents(path, start, stop, verify_checksums)


class Events:
    """Events of several binlog files in order (see ``iter_events``)."""

    def __init__(self, paths: Sequence[str | os.PathLike], start: tuple[str, int] | None = None,
                 stop: tuple[str, int] | None = None, verify_checksums: bool = True) -> None:
        self.paths = [os.fspath(p) for p in paths]
        names = [os.path.basename(p) for p in self.paths]
        if start is not None and start[0] not in names:
            raise BinlogError(f"start file {start[0]} is not among {names}")
        if stop is not None and stop[0] not in names:
            raise BinlogError(f"stop file {stop[0]} is not among {names}")
        self.start = start
        self.stop = stop
        self.verify_checksums = verify_checksums
        self.truncated = False
        self.cut_at: tuple[str, int] | None = None   # (file, offset) of the incomplete last event
        self.cut_event: tuple[int, int] | None = None  # its (type, timestamp), when its header is whole
        self.stopped = False                           # the stop position ended the iteration
        self.current: FileEvents | None = None
        self._gen = self._run(names)

    def __iter__(self) -> Iterator[RawEvent]:
        return self._gen

    def __next__(self) -> RawEvent:
        return next(self._gen)

    def _run(self, names: list[str]) -> Iterator[RawEvent]:
        first = names.index(self.start[0]) if self.start else 0
        last = names.index(self.stop[0]) if self.stop else len(names) - 1
        for i in range(first, last + 1):
            start = self.start[1] if self.start and i == first else 4
            stop = self.stop[1] if self.stop and i == last else None
            fe = FileEvents(self.paths[i], start, stop, self.verify_checksums)
            self.current = fe
            yield from fe
            self.stopped = fe.stopped
            if fe.truncated:
                if i != last:
                    raise DamagedBinlog(f"{fe.path}: the file is cut inside an event at position {fe.cut_at}, "
                                        f"and later files follow")
                self.truncated = True
                self.cut_at = (fe.file, fe.cut_at)
                self.cut_event = fe.cut_event


def iter_events(paths: Iterable[str | os.PathLike], start: tuple[str, int] | None = None,
                stop: tuple[str, int] | None = None, verify_checksums: bool = True) -> Events:
    """Events of the binlog files ``paths`` (in the order given) from ``start=(file, pos)`` to
    ``stop=(file, pos)`` (exclusive: the first event starting at or after it is not yielded).
    File names in start/stop are base names. Every file's FORMAT_DESCRIPTION is yielded."""
    return Events(list(paths), start, stop, verify_checksums)
