"""How one flashback is shared by two processes: the window cut in parts of about equal work.

A flashback's cost is its rows: each row of the window is decoded and written as one statement,
while an event outside the window (or of a table not selected) is skipped after its header. So the
parts are cut by an estimate of that work, not by bytes of binlog: the bytes of the rows events of
the transactions inside the window whose table is selected, each kind of row change weighed by what
it costs in the flashback's mode (``_ROW``, ``_KEY``: an UPDATE holds two images per row but decodes
fewer columns), plus a small constant per event for the events read and skipped. A window that is a
small part of large files, or a few large transactions after many small ones, is still cut where
its rows are (a cut by bytes put most of such a window on one side).

``plan_parts`` walks the events of the range once, headers only (a GTID event's and a table map's
few bytes are read: the transaction's GTID and time, the table's names and key), and returns the
GTID events where parts begin, or None when the work is too small to pay for a second process. It
is pure: it reads the events it is given (``walk_files`` for archived files, the live reader's
otherwise, checksums not verified: the full read verifies them) and knows no process. How the two
processes take the parts (from either end until they meet) is ``engine._two_processes``; each part
is read with the whole selection, so the parts only decide who reads what, never what is selected:
a poor estimate costs time, not correctness.

``walk_files`` gives those events faster than the reader (whose bodies, checksums and checks the
walk does not need): it reads the files in 1 MiB blocks and hands out only the bodies the walk looks
at (0.05 s instead of 0.15 s on the bench's 153 MB wide binlog; 0.24 s instead of 0.29 s on its 250k
small events). Measured figures of the whole: docs/flashback.md, "Where the time goes".
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.events import parse_format_description, parse_gtid, parse_table_map
from mysqlbackup.binlog.reader import RawEvent, fde_checksum_alg
from mysqlbackup.flashback.select import Gtid, Selection

# bytes of binlog (known before reading: file sizes) below which no second process is started
PARALLEL_MIN_BYTES = 4 << 20
# estimated work (bytes of inserts' rows events, the unit of _ROW/_KEY) below which a second process
# is not worth it: with the native decoder the engine does 0.04-0.06 us of work per byte, so 7 MB is
# 0.3-0.4 s, about what a second interpreter's start, its imports and the merge cost. Measured on the
# bench (2026-12-03): nopk (6.0 MB of work) 0.37 s in one process against 0.43-0.48 s in two; narrow
# (8.4 MB, most of it the per-event cost) 1.07 s in two against 1.20-1.28 s in one
MIN_SPLIT_WORK = 7 << 20
PARTS = 8  # parts of the window, taken by the two processes from either end until they meet
EVENT_COST = 16  # the work of reading and skipping one event, in rows bytes (about 1.5 us)

# The work of a byte of a rows event by kind, measured on the wide shape of bench/flashback_bench.py
# (one process each, 125k inserts then 125k updates of 3 of 11 columns, three runs): --where row,
# an insert's DELETE decodes its whole image (40-46 ns/byte), an UPDATE (two images per row, only
# the columns whose bytes differ decoded twice) 19 ns/byte; --where key, an insert's DELETE needs
# only the key (8 ns/byte), an UPDATE sets the whole before image (21-24 ns/byte). A DELETE's
# INSERT decodes its whole image in both modes. A table without a primary key is guarded by the
# whole row in both modes.
_ROW = {"insert": 1.0, "delete": 1.0, "update": 0.45}
_KEY = {"insert": 0.2, "delete": 1.0, "update": 0.52}
# the same by rows event type: what a table's rows events weigh (shared by every table of that kind)
_ROW_BY_TYPE = {t: _ROW[k] for t, k in F.ROWS_EVENT_KIND.items()}
_KEY_BY_TYPE = {t: _KEY[k] for t, k in F.ROWS_EVENT_KIND.items()}


@dataclass(frozen=True)
class Plan:
    """The window cut in parts at transaction boundaries: ``bounds`` are the GTID events (file,
    position) where parts 1.. begin (part 0 begins at the window's start, the last ends at its
    stop); ``work`` the estimated work of each part."""

    bounds: tuple[tuple[str, int], ...]
    work: tuple[int, ...]

    @property
    def parts(self) -> int:
        return len(self.work)

    def describe(self) -> str:
        total = sum(self.work)
        biggest = max(self.work) / total if total else 1
        return (f"{self.parts} parts cut at transaction boundaries ({total / 1e6:.1f} MB of estimated row work "
                f"in the window, the largest part {biggest:.0%} of it)")


def plan_parts(events: Iterable, selection: Selection, where: str = "row", parts: int = PARTS,
               min_work: int | None = None) -> Plan | None:
    """The window of ``events`` cut in up to ``parts`` parts of about equal estimated work, at
    transaction boundaries (GTID events), or None.

    ``events``: RawEvents in binlog order (every file's FORMAT_DESCRIPTION first); ``where``: the
    mode the flashback runs in (``row`` or ``key``: they weigh the kinds of row change apart). None
    when the work is below ``min_work`` (default ``MIN_SPLIT_WORK``), or one part would hold more
    than 7/8 of it (one transaction holds most of the window)."""
    sel = selection
    timed = sel.start_time is not None or sel.stop_time is not None
    positioned = sel.start_position is not None or sel.stop_position is not None
    gtided = sel.start_gtid is not None or sel.stop_gtid is not None
    kinds = F.ROWS_EVENT_KIND
    tid_len, tm_post, mariadb = 6, 8, True
    tables: dict[int, dict | None] = {}  # table id -> {event type: weight}, None: not selected
    maps: dict[bytes, dict | None] = {}  # table map bytes after the id -> the same
    boundaries: list[tuple[tuple[str, int], float]] = []  # (GTID event position, work before it)
    work = 0.0
    events_seen = 0
    in_window = True
    for ev in events:
        t = ev.type
        events_seen += 1
        if t in kinds:
            if in_window:
                # a table whose map was not read weighs as one in row mode
                weights = tables.get(int.from_bytes(ev.body[:tid_len], "little"), _ROW_BY_TYPE)
                if weights is not None:
                    work += weights[t] * ev.event_size
            continue
        if t == F.GTID_EVENT:
            boundaries.append(((ev.file, ev.pos), work + EVENT_COST * events_seen))
            in_window = True
            if gtided:
                g = parse_gtid(ev.body, ev.server_id)
                in_window = sel.wants_gtid(Gtid(g.domain, g.server_id, g.seq_no))
            if in_window and timed:
                in_window = sel.wants_time(datetime.fromtimestamp(ev.timestamp, timezone.utc))
            if in_window and positioned:
                in_window = sel.wants_position(ev.file, ev.pos)
        elif t == F.TABLE_MAP_EVENT:
            body = bytes(ev.body)
            key = body[tid_len:]
            weights = maps.get(key, False)
            if weights is False:
                if len(maps) >= 4096:
                    maps.clear()
                weights = maps[key] = _weights(body, tm_post, mariadb, sel, where)
            tables[int.from_bytes(body[:tid_len], "little")] = weights
        elif t == F.FORMAT_DESCRIPTION_EVENT:
            tables.clear()
            fde = parse_format_description(ev.body)
            tm_post, mariadb = fde.post_header_len(F.TABLE_MAP_EVENT) or 8, fde.is_mariadb
            tid_len = 4 if tm_post == 6 else 6
    total = work + EVENT_COST * events_seen
    if total < (MIN_SPLIT_WORK if min_work is None else min_work):
        return None
    # for each k-th of the work, the boundary closest to it (boundaries are in order of work)
    chosen: list[tuple[tuple[str, int], float]] = []
    i = 0
    for k in range(1, parts):
        target = total * k / parts
        while i + 1 < len(boundaries) and abs(boundaries[i + 1][1] - target) <= abs(boundaries[i][1] - target):
            i += 1
        at, before = boundaries[i] if boundaries else (None, 0.0)
        # no part of almost nothing (a boundary at the window's very start, or right after another)
        if min(before - (chosen[-1][1] if chosen else 0.0), total - before) >= total / (4 * parts):
            chosen.append((at, before))
    if not chosen:
        return None
    edges = [0.0] + [w for _, w in chosen] + [total]
    work_of = [int(hi - lo) for lo, hi in zip(edges, edges[1:])]
    if max(work_of) > total * 7 / 8:
        return None  # one part holds almost all of it (one large transaction): a second process would hardly help
    return Plan(tuple(at for at, _ in chosen), tuple(work_of))


def _weights(body: bytes, tm_post: int, mariadb: bool, sel: Selection, where: str) -> dict | None:
    """{rows event type: work per byte} for the table a table map names; None when not selected."""
    try:
        tm = parse_table_map(body, tm_post, mariadb)
    except Exception:  # noqa: BLE001 - an estimate: a map this walk cannot read weighs as in row mode
        return _ROW_BY_TYPE
    if not sel.wants_table(tm.schema, tm.table):
        return None
    return _KEY_BY_TYPE if where == "key" and tm.primary_key else _ROW_BY_TYPE


_HEADER = struct.Struct("<IBIIIH")
_ROWS = frozenset(F.ROWS_EVENT_KIND)
_BODIES = frozenset({F.GTID_EVENT, F.TABLE_MAP_EVENT, F.FORMAT_DESCRIPTION_EVENT})
_BLOCK = 1 << 20


def walk_files(paths: list[str], start: tuple[str, int] | None = None,
               stop: tuple[str, int] | None = None) -> Iterator[RawEvent]:
    """The events of binlog files from ``start`` to ``stop`` (exclusive) for ``plan_parts``: every
    file's FORMAT_DESCRIPTION, then the events from the start; only GTID, table map and format
    events carry their body (``bytes``), rows events the body's first 8 bytes (the table id), the
    others none. Not a
    reader: no checksum is verified and a damaged or cut file just ends the walk (the full read
    reports it)."""
    for path in paths:
        name = os.path.basename(path)
        if start is not None and name < start[0]:
            continue
        if stop is not None and name > stop[0]:
            return
        with open(path, "rb", buffering=0) as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            pos, blk, base, csum = 4, b"", 4, 0
            while pos + 19 <= size:
                if stop is not None and name == stop[0] and pos >= stop[1]:
                    return
                rel = pos - base
                if rel + 27 > len(blk):
                    blk, base, rel = os.pread(fd, _BLOCK, pos), pos, 0
                    if len(blk) < 19:
                        break
                ts, etype, sid, esize, log_pos, flags = _HEADER.unpack_from(blk, rel)
                if esize < 19 + csum or pos + esize > size:
                    break
                if etype in _BODIES:
                    body = blk[rel + 19:rel + esize] if rel + esize <= len(blk) else os.pread(fd, esize - 19, pos + 19)
                    if etype == F.FORMAT_DESCRIPTION_EVENT:
                        csum = 4 if fde_checksum_alg(blk[rel:rel + esize] if rel + esize <= len(blk)
                                                     else os.pread(fd, esize, pos)) == F.BINLOG_CHECKSUM_ALG_CRC32 else 0
                    if csum:
                        body = body[:-csum]
                elif etype in _ROWS:
                    body = blk[rel + 19:rel + 27]
                else:
                    body = b""
                if pos == 4 or start is None or name > start[0] or pos >= start[1]:
                    yield RawEvent(ts, etype, sid, esize, log_pos, flags, name, pos, body)
                elif pos < start[1]:  # from the format description to the start
                    pos = start[1]
                    continue
                pos += esize
