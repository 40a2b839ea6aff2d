"""Where to split one flashback over two processes: a transaction boundary that halves the work.

A flashback's cost is its rows: each row of the window is decoded and written as one statement,
while an event outside the window (or of a table not selected) is skipped after its header. So the
split is chosen by an estimate of that work, not by bytes of binlog: the bytes of the rows events
of the transactions inside the window whose table is selected, an UPDATE's counted half (it holds
two images per row), plus a small constant per event for the events read and skipped. A window
that is a small part of large files, or a few large transactions after many small ones, is still
cut where half of its rows are on each side (a split by bytes put the whole of such a window on one
side, or most of the rows of a mixed window).

``plan_split`` walks the events of the range once, headers only (a GTID event's and a table map's
few bytes are read: the transaction's GTID and time, the table's names), and returns the position
of the GTID event where the work before it comes closest to half, or None when the work is too
small to pay for a second process. It is pure: it reads the events it is given (the file reader's
or the live reader's, checksums not verified: the full read verifies them) and knows no process.
Each half is then read with the whole selection by ``engine._work``; the split only decides who
reads what, never what is selected, so a poor estimate costs time, not correctness.

For archived files ``walk_files`` gives those events faster than the reader (whose bodies, checksums
and checks the walk does not need): it reads the files in large blocks and hands out only the bodies
the walk looks at. Measured on the bench's binlogs: see docs/flashback.md, "Two processes".
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.events import parse_format_description, parse_gtid
from mysqlbackup.binlog.reader import RawEvent, fde_checksum_alg
from mysqlbackup.flashback.select import Gtid, Selection

# bytes of binlog (known before reading: file sizes) below which no second process is started
PARALLEL_MIN_BYTES = 4 << 20
# estimated work (rows bytes) below which the split is not worth a second process: at the engine's
# 0.1-0.3 us of work per byte that is 0.4-1.2 s, against about 0.3-0.5 s for a second interpreter
# to start and import (hidden behind this walk) and the merge of the two parts
MIN_SPLIT_WORK = 4 << 20
EVENT_COST = 16  # the work of reading and skipping one event, in rows bytes (about 1.5 us)

# per byte of a rows event, in halves (to stay in integers): an UPDATE holds two images per row
_WEIGHT = {t: 1 if kind == "update" else 2 for t, kind in F.ROWS_EVENT_KIND.items()}


@dataclass(frozen=True)
class Split:
    """The boundary (``at``: file, position of a GTID event) and the estimated work on each side."""

    at: tuple[str, int]
    older: int
    newer: int

    @property
    def total(self) -> int:
        return self.older + self.newer

    def describe(self) -> str:
        share = self.older / self.total if self.total else 0.5
        return (f"split at {self.at[0]}:{self.at[1]}, {share:.0%} of the estimated work before it "
                f"({self.total / 1e6:.1f} MB of row events in the window)")


def plan_split(events: Iterable, selection: Selection, min_work: int | None = None) -> Split | None:
    """The GTID boundary of ``events`` that best halves the window's estimated work, or None.

    ``events``: RawEvents in binlog order (every file's FORMAT_DESCRIPTION first). None when the
    work is below ``min_work`` (default ``MIN_SPLIT_WORK``) or no transaction boundary leaves an
    eighth of the work or more on each side (one transaction holds most of it)."""
    sel = selection
    timed = sel.start_time is not None or sel.stop_time is not None
    positioned = sel.start_position is not None or sel.stop_position is not None
    gtided = sel.start_gtid is not None or sel.stop_gtid is not None
    tables = bool(sel.tables or sel.databases)
    weights = _WEIGHT
    tid_len = 6
    selected: dict[int, bool] = {}    # table id -> selected
    names: dict[bytes, bool] = {}     # table map names bytes -> selected
    boundaries: list[tuple[tuple[str, int], int]] = []  # (GTID event position, work before it)
    work = 0                          # in half rows bytes
    events_seen = 0
    in_window = True
    for ev in events:
        t = ev.type
        events_seen += 1
        w = weights.get(t)
        if w is not None:
            if in_window:
                if tables:
                    body = ev.body
                    if not selected.get(int.from_bytes(body[:tid_len], "little"), True):
                        continue
                work += w * ev.event_size
            continue
        if t == F.GTID_EVENT:
            boundaries.append(((ev.file, ev.pos), work + EVENT_COST * 2 * events_seen))
            in_window = True
            if gtided:
                g = parse_gtid(ev.body, ev.server_id)
                in_window = sel.wants_gtid(Gtid(g.domain, g.server_id, g.seq_no))
            if in_window and timed:
                in_window = sel.wants_time(datetime.fromtimestamp(ev.timestamp, timezone.utc))
            if in_window and positioned:
                in_window = sel.wants_position(ev.file, ev.pos)
        elif t == F.TABLE_MAP_EVENT and tables:
            body = bytes(ev.body)
            tid = int.from_bytes(body[:tid_len], "little")
            key = body[tid_len + 2:]
            ok = names.get(key)
            if ok is None:
                if len(names) >= 4096:
                    names.clear()
                ok = names[key] = _table_selected(key, sel)
            selected[tid] = ok
        elif t == F.FORMAT_DESCRIPTION_EVENT:
            selected.clear()
            tid_len = 4 if parse_format_description(ev.body).post_header_len(F.TABLE_MAP_EVENT) == 6 else 6
    total = work + EVENT_COST * 2 * events_seen
    if total < 2 * (MIN_SPLIT_WORK if min_work is None else min_work):
        return None
    half = total // 2
    best = None
    for at, before in boundaries:
        if 0 < before < total and (best is None or abs(before - half) < abs(best[1] - half)):
            best = (at, before)
    if best is None or min(best[1], total - best[1]) < total // 8:
        return None  # one side would hold almost all of it: a second process would hardly help
    return Split(best[0], best[1] // 2, (total - best[1]) // 2)


def _table_selected(rest: bytes, sel: Selection) -> bool:
    """Is the table a table map names (its body after the table id and flags) selected?"""
    n = rest[0]
    schema = rest[1:1 + n].decode("utf-8", "replace")
    m = rest[2 + n]
    table = rest[3 + n:3 + n + m].decode("utf-8", "replace")
    return sel.wants_table(schema, table)



_HEADER = struct.Struct("<IBIIIH")
_BODIES = frozenset({F.GTID_EVENT, F.TABLE_MAP_EVENT, F.FORMAT_DESCRIPTION_EVENT})
_BLOCK = 1 << 20


def walk_files(paths: list[str], start: tuple[str, int] | None = None,
               stop: tuple[str, int] | None = None) -> Iterator[RawEvent]:
    """The events of binlog files from ``start`` to ``stop`` (exclusive) for ``plan_split``: every
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
                elif etype in _WEIGHT:
                    body = blk[rel + 19:rel + 27]
                else:
                    body = b""
                if pos == 4 or start is None or name > start[0] or pos >= start[1]:
                    yield RawEvent(ts, etype, sid, esize, log_pos, flags, name, pos, body)
                elif pos < start[1]:  # from the format description to the start
                    pos = start[1]
                    continue
                pos += esize
