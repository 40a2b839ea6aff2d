"""The flashback engine: binlog events in, the reversed inverse script out.

One loop over raw events (files or a live server give the same events, so the same SQL):
table maps are kept by id, each selected rows event is decoded by the table's generated codec
straight into SQL literals, planned into inverse statements and streamed to the spool, and the
spool writes the script newest transaction first. Preflight problems (not ROW, not FULL images,
no column names, a DDL on a table being inverted, a table never seen) stop the run with a
message naming them, before anything is written.
"""
from __future__ import annotations

import hashlib
import os
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.decode import RowCodec
from mysqlbackup.binlog.events import (parse_format_description, parse_gtid, parse_query, parse_rows_header,
                                       parse_table_map)
from mysqlbackup.binlog.reader import BinlogError, DamagedBinlog
from mysqlbackup.flashback.check import body_line
from mysqlbackup.flashback.ddl import classify, touched_tables
from mysqlbackup.flashback.plan import TableSQL
from mysqlbackup.flashback.select import Gtid, Position, Selection, UserError, as_typed, fld
from mysqlbackup.flashback.spool import MEMORY as SPOOL_MEMORY, Spool
from mysqlbackup.text import capped

_ROWS = frozenset(F.ROWS_EVENT_KIND)
# strict, and an explicit 0 in an AUTO_INCREMENT column stays 0 (a row put back keeps its id)
SESSION = ("SET NAMES utf8mb4;\nSET time_zone='+00:00';\n"
           "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';\n")


class FlashbackError(UserError):
    """The binlog cannot be flashed back as asked: nothing was written or applied."""


@dataclass
class Summary:
    """What a run selected and wrote."""

    source: str = ""
    selection: str = ""
    rows: int = 0
    transactions: int = 0
    events: int = 0
    per_table: dict = field(default_factory=dict)  # "db.table" -> Counter(type -> rows)
    first: str | None = None
    last: str | None = None
    covered: str = ""
    seconds: float = 0.0
    output: str = ""
    where_note: str = ""
    generated_note: str = "unknown (no server was asked); apply refuses tables that have them"
    body_sha256: str = ""  # of everything after the header; set by Flashback.write once the body is written

    def header(self) -> str:
        lines = [f"-- mysql-flashback: inverse of {self.rows} row changes in {self.transactions} transactions",
                 f"-- source: {self.source}", f"-- binlogs read: {self.covered or 'none (no event was read)'}",
                 f"-- selection: {self.selection}",
                 f"-- first change: {self.first or '-'}; last change: {self.last or '-'}",
                 "-- rows per table and type:"]
        for name in sorted(self.per_table):
            counts = self.per_table[name]
            lines.append(f"--   {name}: " + ", ".join(f"{t} {counts[t]}" for t in ("insert", "update", "delete")
                                                    if counts.get(t)))
        lines.append(f"-- WHERE: {self.where_note}")
        lines.append(f"-- generated columns: {self.generated_note}")
        lines.append("-- newest transaction first, statements reversed within each; "
                     "apply with: mysql-flashback apply --file THIS_FILE")
        # one statement per row change; apply compares this line with the body it reads
        lines.append(body_line(self.transactions, self.rows, self.body_sha256 or "0" * 64))
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"source": self.source, "selection": self.selection, "rows": self.rows,
                "transactions": self.transactions, "events": self.events,
                "per_table": {k: dict(v) for k, v in self.per_table.items()}, "first": self.first,
                "last": self.last, "covered": self.covered, "seconds": round(self.seconds, 3),
                "output": self.output, "body_sha256": self.body_sha256}


_last_utc: tuple = (None, "")  # (timestamp, text), replaced whole: the transactions of one second share it


def _utc(ts: int) -> str:
    global _last_utc
    last = _last_utc
    if ts != last[0]:
        last = _last_utc = (ts, datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
    return last[1]


def _full(n: int) -> bytes:
    """The present-columns bitmap of a full row image of n columns."""
    b = bytearray(b"\xff" * ((n + 7) // 8))
    if n % 8:
        b[-1] = (1 << (n % 8)) - 1
    return bytes(b)


class Flashback:
    """Feed raw events (``feed``), then ``write(path)``; or use ``generate_from_files``."""

    def __init__(self, selection: Selection, source: str, spool_dir: str | None = None,
                 log: Callable[[str], None] | None = None, progress_seconds: float = 10.0,
                 where: str = "row", generated: dict | None = None, spool_memory: int = SPOOL_MEMORY) -> None:
        if where not in ("row", "key"):
            raise FlashbackError(f"where must be 'row' (key + whole row image: a row changed since is caught) or "
                                 f"'key' (primary key only: faster, overwrites later changes), got {where!r}")
        self.where = where
        self.generated = generated  # {(schema, table): frozenset(column names)}; None: unknown (no server)
        self.sel = selection
        self.summary = Summary(source=source, selection=selection.describe(), where_note=(
            "primary key and the whole row image (a row changed after the window matches nothing: apply stops)"
            if where == "row" else "primary key only (a row changed after the window is overwritten)"))
        if generated is not None:
            n = sum(len(v) for v in generated.values())
            self.summary.generated_note = f"{n} found on the server, left out of INSERT and SET"
        self.spool = Spool(spool_dir, spool_memory)
        self.log = log or (lambda _m: None)
        self.progress_seconds = progress_seconds
        self.tables_seen: set[tuple[str, str]] = set()      # selected tables met in the binlogs
        self.databases_seen: set[str] = set()               # schemas of every table map met in the binlogs
        self.warnings: list[str] = []                       # said to the log (and passed on by state())
        self.tables_in_window: set[tuple[str, str]] = set()  # every table mapped inside the window
        self.tables_with_rows: set[tuple[str, str]] = set()
        self.ddl: list[tuple[str, str, set]] = []  # DDL inside the window: (where, statement, tables)
        self._t0 = time.monotonic()
        self._first_event: tuple[str, int] | None = None
        self._last_event: tuple[str, int] | None = None
        self.window_transactions = 0          # transactions inside the window, whatever their tables
        self.gtids_found: set[Gtid] = set()   # the window's start/stop GTIDs, when met
        self.gtid_range: dict[int, list[int]] = {}  # domain -> [lowest, highest] seq read
        # the caller showed that the archived files hold the window's start (mysqlbackup.archive coverage):
        # a first transaction read after the start is then no sign of missing files
        self.start_checked = False

    # -- the loop ------------------------------------------------------------------------------
    def feed(self, events: Iterable) -> None:  # noqa: C901 - one hot loop, kept in one place on purpose
        sel, spool, summary = self.sel, self.spool, self.summary
        want_types = sel.types
        per_table: dict[str, Counter] = summary.per_table
        plans: dict[int, tuple | None] = {}  # table_id -> (codec, TableSQL, key, name, (schema, table)) | None
        shaped: dict[bytes, tuple] = {}      # table-map shape -> plan: survives table ids changing
        mapped: dict[bytes, tuple] = {}      # table-map body -> (table id, (schema, table), plan or None or False)
        fde_seen = None
        add_block = spool.add_block
        fulls: dict[int, bytes] = {}
        rows_post = None
        tm_post = 8
        mariadb = True
        gtid: Gtid | None = None
        tx_where = ""
        tx_open = False
        tx_rows = 0
        tx_selected = True
        positioned = sel.start_position is not None or sel.stop_position is not None
        wants_position = sel.wants_position
        start_at, stop_at = sel.start_position, sel.stop_position
        timed = sel.start_time is not None or sel.stop_time is not None
        n_events = 0
        last_log = time.monotonic()
        first = last = None
        # the event group (transaction) being read: a flashback inverts only whole transactions,
        # so one the window or the binlogs cut (no COMMIT read, or the start/stop position inside
        # it) is refused, naming it
        began = False              # a group start (GTID, or BEGIN without GTIDs) was read
        group_open = False         # inside a group that ends with XID/COMMIT/ROLLBACK/XA PREPARE
        group_in_window = False    # its start is inside the window (time, GTID and position)
        group_before_start = False  # it starts before the start position
        group_at: tuple[str, int] = ("", 0)
        databases_seen = self.databases_seen

        def close_tx() -> None:
            nonlocal tx_open, tx_rows
            if tx_open:
                if tx_rows:
                    spool.commit(f"-- transaction {gtid or '-'} at {tx_where}, {tx_rows} rows\n")
                    summary.transactions += 1
                    summary.rows += tx_rows
                else:
                    spool.discard()
            tx_open = False
            tx_rows = 0

        def group_end(ev) -> None:
            """The event ``ev`` ends the open group: refuse when the stop position cut it."""
            nonlocal group_open
            if group_open and group_in_window and stop_at is not None and Position(ev.file, ev.pos) >= stop_at:
                end = f"{ev.file}:{ev.pos + ev.event_size}"
                raise FlashbackError(f"{fld('stop_position')} {stop_at} falls inside transaction {gtid or '-'} (it "
                                     f"begins at {tx_where}; its COMMIT ends at {end}): its inverse would be "
                                     f"partial. End the window at a transaction boundary: {group_at[0]}:"
                                     f"{group_at[1]} (before it) or {end} (after it)")
            group_open = False
            close_tx()

        ev = None
        try:
            for ev in events:
                n_events += 1
                if not n_events & 16383:  # progress, whatever the events are (a long scan with few matches too)
                    now = time.monotonic()
                    if now - last_log >= self.progress_seconds:
                        last_log = now
                        done = summary.rows + tx_rows
                        self.log(f"progress: {n_events:,} events read, {done:,} rows selected, "
                                 f"{n_events / max(now - self._t0, 1e-9):,.0f} events/s, at {ev.file}:{ev.pos}")
                t = ev.type
                if t in _ROWS:
                    if not tx_selected:
                        continue
                    if positioned and not wants_position(ev.file, ev.pos):
                        continue
                    hdr = parse_rows_header(ev.body, t, rows_post)
                    plan = plans.get(hdr.table_id, False)
                    if not plan:
                        if plan is False:
                            raise FlashbackError(f"{ev.file}:{ev.pos}: a rows event for table id {hdr.table_id} without "
                                                 "its table map: start the window at a transaction boundary")
                        continue
                    kind = hdr.kind
                    if kind not in want_types:
                        continue
                    codec, sql, name, qname = plan
                    full = fulls.get(hdr.column_count) or fulls.setdefault(hdr.column_count, _full(hdr.column_count))
                    if (kind != "insert" and hdr.present_before != full) or (kind != "delete" and hdr.present_after != full):
                        raise FlashbackError(f"{ev.file}:{ev.pos}: {name} has a partial row image: the binlog was written "
                                             "with binlog_row_image other than FULL; flashback needs FULL row images")
                    if not tx_open:
                        if group_before_start or not began:
                            raise FlashbackError(self._start_cut(ev, gtid if began else None, tx_where))
                        spool.begin("")
                        tx_open = True
                    data, n = codec.block(ev.body, hdr, sql)  # one inverse statement per row, reversed
                    add_block(data, n)
                    tx_rows += n
                    per_table[name][kind] += n
                    self.tables_with_rows.add(qname)
                    if first is None:
                        first = (ev.file, ev.pos, ev.timestamp)
                    last = (ev.file, ev.pos, ev.timestamp)
                    continue
                if t == F.TABLE_MAP_EVENT:
                    # a transaction maps its tables again: the same bytes give the same table, parsed once
                    body = bytes(ev.body)
                    known = mapped.get(body)
                    if known is None:
                        if len(mapped) >= 4096:  # table ids keep growing on a busy server: stay bounded
                            mapped.clear()
                        tm = parse_table_map(body, tm_post, mariadb)
                        known = mapped[body] = (tm.table_id, (tm.schema, tm.table), self._plan(tm, shaped))
                    table_id, qname, plan = known
                    databases_seen.add(qname[0])
                    if tx_selected and (not positioned or wants_position(ev.file, ev.pos)):
                        self.tables_in_window.add(qname)
                    if plan is None:
                        plans[table_id] = None
                        continue
                    if plan is False:
                        raise FlashbackError(f"{ev.file}:{ev.pos}: the table map of {qname[0]}.{qname[1]} has no column "
                                             "names: the binlog was written with binlog_row_metadata=MINIMAL; flashback "
                                             "needs binlog_row_metadata=FULL to name columns safely")
                    self.tables_seen.add(qname)
                    if plan[2] not in per_table:
                        per_table[plan[2]] = Counter()
                    plans[table_id] = plan
                    continue
                if t == F.GTID_EVENT:
                    if group_open and group_in_window and group_at[0] != ev.file:
                        raise FlashbackError(self._cut(gtid, tx_where, group_at, events, next_file=ev.file))
                    close_tx()
                    g = parse_gtid(ev.body, ev.server_id)
                    gtid = Gtid(g.domain, g.server_id, g.seq_no)
                    _widen(self.gtid_range, g.domain, g.seq_no, g.seq_no)
                    tx_where = f"{ev.file}:{ev.pos} ({_utc(ev.timestamp)} UTC)"
                    for want, which in ((sel.start_gtid, "start_gtid"), (sel.stop_gtid, "stop_gtid")):
                        if want is None or (want.domain, want.seq) != (g.domain, g.seq_no):
                            continue
                        if want != gtid:  # seq_no is unique in a domain: that GTID is not in this binlog
                            raise FlashbackError(f"{fld(which)}: GTID {want} is not in the binlogs: at that sequence "
                                                 f"number they hold "
                                                 f"{gtid} ({tx_where}); give the GTID with its server_id")
                        self.gtids_found.add(gtid)
                    tx_selected = sel.wants_gtid(gtid) and (
                        not timed or sel.wants_time(datetime.fromtimestamp(ev.timestamp, timezone.utc)))
                    began = True
                    group_open = not g.flags & F.FL_STANDALONE
                    group_at = (ev.file, ev.pos)
                    group_before_start = start_at is not None and Position(ev.file, ev.pos) < start_at
                    group_in_window = tx_selected and (not positioned or wants_position(ev.file, ev.pos))
                    if group_in_window:
                        self.window_transactions += 1
                    if self._first_event is None:
                        self._first_event = (ev.file, ev.timestamp)
                    self._last_event = (ev.file, ev.timestamp)
                    continue
                if t == F.XID_EVENT or t == F.XA_PREPARE_LOG_EVENT:
                    group_end(ev)
                    continue
                if t == F.QUERY_EVENT:
                    q = parse_query(ev.body)
                    what = classify(q.statement)
                    if what == "transaction":
                        head = q.statement.lstrip()[:11].upper()
                        if head.startswith(("COMMIT", "ROLLBACK", "XA COMMIT", "XA ROLLBACK")):
                            group_end(ev)
                        elif head.startswith("BEGIN") and gtid is None:  # a binlog without GTID events
                            tx_where = f"{ev.file}:{ev.pos} ({_utc(ev.timestamp)} UTC)"
                            tx_selected = not timed or sel.wants_time(datetime.fromtimestamp(ev.timestamp, timezone.utc))
                            began = group_open = True
                            group_at = (ev.file, ev.pos)
                            group_before_start = start_at is not None and Position(ev.file, ev.pos) < start_at
                            group_in_window = tx_selected and (not positioned or wants_position(ev.file, ev.pos))
                        continue
                    if not tx_selected or (positioned and not wants_position(ev.file, ev.pos)):
                        continue
                    touched = touched_tables(q.statement, q.schema or None)
                    if what == "dml":
                        if any(sel.wants_table(s or "", tb) for s, tb in touched) or not touched:
                            raise FlashbackError(f"{ev.file}:{ev.pos}: a statement-based row change ({q.statement[:160]!r}): "
                                                 "the binlog is not in ROW format here; flashback needs binlog_format=ROW")
                        continue
                    self.ddl.append((f"{ev.file}:{ev.pos} ({_utc(ev.timestamp)} UTC)", q.statement, touched))
                    continue
                if t == F.FORMAT_DESCRIPTION_EVENT:
                    fde = parse_format_description(ev.body)
                    rows_post = fde.post_header_len(F.WRITE_ROWS_EVENT_V1)
                    tm_post = fde.post_header_len(F.TABLE_MAP_EVENT) or 8
                    mariadb = fde.is_mariadb  # MariaDB and MySQL count optional-metadata columns differently
                    plans.clear()
                    if (tm_post, mariadb) != fde_seen:  # table maps parse the same under the same format
                        mapped.clear()
                        shaped.clear()
                        fde_seen = (tm_post, mariadb)
                    continue
        except UserError:
            raise
        except DamagedBinlog as exc:
            raise FlashbackError(f"cannot read the binlogs: {exc}; nothing was written") from None
        except (BinlogError, struct.error, IndexError, KeyError, ValueError, OverflowError, MemoryError) as exc:
            where = f"{ev.file}:{ev.pos}: " if ev is not None else ""
            what = F.EVENT_NAMES.get(ev.type, f"type {ev.type}") if ev is not None else "first"
            detail = str(exc) if isinstance(exc, BinlogError) else f"{type(exc).__name__}: {exc}"
            raise FlashbackError(f"{where}the {what} event cannot be decoded ({detail}): the binlog is damaged, or "
                                 "was not written by a server this reader knows; nothing was written") from None
        if group_open and group_in_window:
            if stop_at is not None and getattr(events, "stopped", False):
                raise FlashbackError(f"{fld('stop_position')} {stop_at} falls inside transaction {gtid or '-'} (it "
                                     f"begins at {tx_where}): its inverse would be partial. End the window at a "
                                     f"transaction boundary: {group_at[0]}:{group_at[1]} (before it) or after its "
                                     "COMMIT")
            raise FlashbackError(self._cut(gtid, tx_where, group_at, events))
        close_tx()
        cut = getattr(events, "cut_at", None)
        if cut is not None:
            self._cut_event(cut, getattr(events, "cut_event", None))
        summary.events += n_events
        if first:
            summary.first = f"{first[0]}:{first[1]} ({_utc(first[2])} UTC)"
            summary.last = f"{last[0]}:{last[1]} ({_utc(last[2])} UTC)"

    def _plan(self, tm, shaped: dict) -> tuple | None | bool:
        """What the rows events of a table map need: (codec, TableSQL, "db.table", (db, table));
        None for a table not selected, False for one without column names (refused when met)."""
        qname = (tm.schema, tm.table)
        if not self.sel.wants_table(*qname):
            return None
        if not tm.column_names:
            return False
        shape = tm.raw[6:]  # all but the table id: the same table of the same shape, whatever its id
        plan = shaped.get(shape)
        if plan is None:
            pk = tm.primary_key
            key_only = self.where == "key" and bool(pk)
            gen = (self.generated or {}).get(qname, frozenset())
            plan = shaped[shape] = (RowCodec(tm), TableSQL(tm.schema, tm.table, tm.column_names, pk,
                                                           guard_row=not key_only, generated=gen),
                                    f"{tm.schema}.{tm.table}", qname)
        return plan

    def _cut_event(self, cut: tuple[str, int], event: tuple[int, int] | None) -> None:
        """The binlogs end inside an event outside any transaction read: refused when a
        transaction in the window may begin there, else a warning."""
        sel = self.sel
        etype, ts = event if event is not None else (None, None)
        where = f"{cut[0]}:{cut[1]}"
        outside = (
            etype is not None and etype not in (F.GTID_EVENT, F.QUERY_EVENT)  # not the start of a transaction
            or (sel.stop_position is not None and Position(*cut) >= sel.stop_position)
            or (sel.stop_time is not None and ts is not None
                and datetime.fromtimestamp(ts, timezone.utc) >= sel.stop_time)
            or (sel.stop_gtid is not None and sel.stop_gtid in self.gtids_found))
        if outside:
            self.warnings.append(f"{cut[0]} ends inside an event at position {cut[1]} (a file still being written, "
                                 f"or cut there): nothing after {where} was read; the window ends before it")
            self.log(f"warning: {self.warnings[-1]}")
            return
        what = (f"a {F.EVENT_NAMES.get(etype, etype)} event of {_utc(ts)} UTC" if etype is not None
                else "an event whose header is cut too")
        raise FlashbackError(f"the binlogs read end inside {what} at {where} (a file cut, or copied while being "
                             "written): a transaction that may belong to the window begins there and none of it "
                             "can be read, so nothing was written. Add the binlog that holds it whole, or end the "
                             f"window before it ({fld('stop_position')} {where})")

    @staticmethod
    def _cut(gtid, tx_where: str, group_at: tuple[str, int], events, next_file: str | None = None) -> str:
        """The refusal of a transaction whose end is not in the binlogs read."""
        cut = getattr(events, "cut_at", None)
        if next_file is not None:
            how = (f"{group_at[0]} ends inside it and {next_file} begins a new one: the server stopped while writing "
                   "it (a crash: it was never committed) or the file is cut")
        elif cut is not None:
            how = f"{cut[0]} is cut inside an event at position {cut[1]} (copied while being written, or damaged)"
        else:
            how = "the binlogs read end before its COMMIT (a file cut, or copied while being written)"
        return (f"the binlogs read end inside transaction {gtid or '-'} (it begins at {tx_where}): {how}. Its "
                f"inverse would be partial, so nothing was written: add the binlog that completes it, or end the "
                f"window before it ({fld('stop_position')} {group_at[0]}:{group_at[1]})")

    def _start_cut(self, ev, gtid, tx_where: str) -> str:
        start = self.sel.start_position
        if gtid is None:  # reading began inside a transaction
            return (f"{fld('start_position')} {start} falls inside a transaction (the rows event at {ev.file}:{ev.pos} "
                    "comes before any transaction start): its row changes before the start would be left out of "
                    "its inverse. Start the window at a transaction boundary (the position of a GTID event)")
        return (f"{fld('start_position')} {start} falls inside transaction {gtid} (it begins at {tx_where}; a "
                f"row change of it is at {ev.file}:{ev.pos}): its row changes before the start would be left out of "
                f"its inverse. Start the window at a transaction boundary: {tx_where.split(' ')[0]} (with it) or "
                "after its COMMIT")

    # -- one run in two processes -------------------------------------------------------------
    def state(self) -> dict:
        """What this (partial) run learned, picklable, for ``absorb`` in the parent process."""
        s = self.summary
        return {"rows": s.rows, "transactions": s.transactions, "events": s.events, "first": s.first,
                "last": s.last, "per_table": {k: dict(v) for k, v in s.per_table.items()},
                "tables_seen": self.tables_seen, "tables_in_window": self.tables_in_window,
                "databases_seen": self.databases_seen, "warnings": self.warnings,
                "tables_with_rows": self.tables_with_rows, "ddl": self.ddl,
                "window_transactions": self.window_transactions, "gtids_found": self.gtids_found,
                "gtid_range": self.gtid_range, "first_event": self._first_event, "last_event": self._last_event}

    def absorb(self, *states: dict) -> None:
        """Take in the states of the parts of the range, oldest part first."""
        s = self.summary
        for r in states:
            s.rows += r["rows"]
            s.transactions += r["transactions"]
            s.events += r["events"]
            for name, counts in r["per_table"].items():
                s.per_table.setdefault(name, Counter()).update(counts)
            self.tables_seen |= r["tables_seen"]
            self.databases_seen |= r["databases_seen"]
            for warning in r["warnings"]:
                self.warnings.append(warning)
                self.log(f"warning: {warning}")
            self.tables_in_window |= r["tables_in_window"]
            self.tables_with_rows |= r["tables_with_rows"]
            self.ddl += r["ddl"]
            self.window_transactions += r["window_transactions"]
            self.gtids_found |= r["gtids_found"]
            for d, (lo, hi) in r["gtid_range"].items():
                _widen(self.gtid_range, d, lo, hi)
        s.first = next((r["first"] for r in states if r["first"]), None)
        s.last = next((r["last"] for r in reversed(states) if r["last"]), None)
        self._first_event = next((r["first_event"] for r in states if r["first_event"]), None)
        self._last_event = next((r["last_event"] for r in reversed(states) if r["last_event"]), None)

    # -- after the loop ------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse what cannot be flashed back correctly (after reading, before writing)."""
        sel = self.sel
        for where, stmt, touched in self.ddl:
            hit = sorted(f"{s}.{t}" for s, t in touched
                         if (t == "*" and any(s2 == s for s2, _ in self.tables_with_rows))
                         or (s, t) in self.tables_with_rows
                         or (t != "*" and s is not None and sel.tables and sel.wants_table(s, t)))
            if hit:
                raise FlashbackError(f"a DDL on {capped(hit)} falls inside the window at {where}: "
                                     f"{stmt[:200]!r}. Inverse statements across a change of table shape would be "
                                     f"wrong: end the window before it ({fld('stop_position')}/{fld('stop_datetime')})"
                                     " or start after it")
        held = capped(f"domain {d}: seq {lo}..{hi}" for d, (lo, hi) in sorted(self.gtid_range.items()))
        for g, which in ((sel.start_gtid, "start_gtid"), (sel.stop_gtid, "stop_gtid")):
            if g is not None and g not in self.gtids_found:
                raise FlashbackError(f"{fld(which)}: GTID {g} is not in the binlogs read (they hold {held}): give a GTID that "
                                     "exists there, with its server_id")
        if (sel.start_gtid or sel.stop_gtid or sel.start_position or sel.stop_position) \
                and self.window_transactions == 0:
            raise FlashbackError(f"the window holds no transaction of the binlogs read (GTIDs: {held}): it is "
                                 "outside these binlogs")
        missing = sorted(as_typed(d, t) for d, t in sel.tables
                         if not any(t == t2 and (d is None or d == d2) for d2, t2 in self.tables_seen))
        if missing:
            held = capped(sorted(as_typed(d, t) for d, t in self.tables_in_window))
            raise FlashbackError(f"{fld('tables')}: {capped(missing)} not found in the binlog window (the window "
                                 f"holds row changes of: {held}): check the names and the window")
        missing = sorted(as_typed(d) for d in sel.databases if d not in self.databases_seen)
        if missing:
            held = capped(sorted({as_typed(d) for d, _ in self.tables_in_window}))
            raise FlashbackError(f"{fld('databases')}: {capped(missing)} not found in the binlog window (the window "
                                 f"holds row changes of the databases: {held}): check the names and the window")
        first, last = self._first_event, self._last_event
        if last and sel.start_time and datetime.fromtimestamp(last[1], timezone.utc) < sel.start_time:
            raise FlashbackError(f"{fld('start_datetime')}: the window starts at {sel.start_time:%Y-%m-%d %H:%M:%S} "
                                 "UTC, after the last "
                                 f"transaction in the binlogs read ({_utc(last[1])} UTC, {last[0]}): the window is "
                                 "outside these binlogs")
        if first and sel.stop_time and datetime.fromtimestamp(first[1], timezone.utc) >= sel.stop_time:
            raise FlashbackError(f"{fld('stop_datetime')}: the window ends at {sel.stop_time:%Y-%m-%d %H:%M:%S} "
                                 "UTC, before the first "
                                 f"transaction in the binlogs read ({_utc(first[1])} UTC, {first[0]}): the window is "
                                 "outside these binlogs")
        if first and sel.start_time and datetime.fromtimestamp(first[1], timezone.utc) > sel.start_time \
                and self.summary.source.startswith("archive") and not self.start_checked:
            raise FlashbackError(f"{fld('start_datetime')}: the window starts at {sel.start_time:%Y-%m-%d %H:%M:%S} "
                                 "UTC but the binlogs read "
                                 f"start at {_utc(first[1])} UTC ({first[0]}): changes in between are not in these "
                                 "files; add the earlier binlogs or start the window later")

    def write(self, path: str, parts: list[str] | None = None, then: Spool | None = None) -> Summary:
        """Check, then write the script (atomically: a temp file renamed into place). ``parts``:
        already reversed scripts of other processes, newest first, written instead of the spool,
        and after them ``then``'s (the oldest part's spool, kept by the process that read it)."""
        self.check()
        s = self.summary
        if self._first_event:
            s.covered = (f"{self._first_event[0]} ({_utc(self._first_event[1])} UTC) .. "
                         f"{self._last_event[0]} ({_utc(self._last_event[1])} UTC)")
        tmp = f"{path}.tmp"
        with open(tmp, "w+b") as out:  # read back for the checksum
            # the header's last line carries the sha256 of everything after it: written as zeros
            # first, then, once the body is on disk, overwritten in place (same length)
            s.body_sha256 = ""
            head = s.header().encode("utf-8")
            out.write(head)
            out.write(SESSION.encode())
            if parts is None:
                self.spool.write_reversed(out)
            else:
                out.flush()
                for part in parts:  # copied by the kernel (copy_file_range), not through Python
                    with open(part, "rb") as f:
                        left = os.fstat(f.fileno()).st_size
                        while left > 0:
                            n = os.copy_file_range(f.fileno(), out.fileno(), left)
                            if n <= 0:
                                raise OSError(f"copy_file_range stopped with {left} bytes of {part} left")
                            left -= n
                if then is not None:
                    out.seek(0, os.SEEK_END)  # the buffered file's position after the kernel's copies
                    then.write_reversed(out)
            out.flush()
            s.body_sha256 = _sha256_from(out.fileno(), len(head))
            final = s.header().encode("utf-8")
            if len(final) != len(head):  # pragma: no cover - the digest has a fixed length
                raise RuntimeError("the header changed length when its checksum was filled in")
            os.pwrite(out.fileno(), final, 0)
            os.fsync(out.fileno())
        os.replace(tmp, path)
        s.seconds = time.monotonic() - self._t0
        s.output = path
        return s

    def close(self) -> None:
        self.spool.close()


def _sha256_from(fd: int, offset: int) -> str:
    """sha256 of a file's bytes from ``offset`` to its end (read back from the page cache)."""
    h = hashlib.sha256()
    while True:
        data = os.pread(fd, 8 << 20, offset)
        if not data:
            return h.hexdigest()
        h.update(data)
        offset += len(data)


def _widen(ranges: dict[int, list[int]], domain: int, lo: int, hi: int) -> None:
    """Grow ``ranges[domain]`` ([lowest, highest] seq) to cover lo..hi."""
    cur = ranges.get(domain)
    if cur is None:
        ranges[domain] = [lo, hi]
    else:
        cur[0], cur[1] = min(cur[0], lo), max(cur[1], hi)


def generated_columns(connect_kwargs: dict) -> dict:
    """{(schema, table): frozenset(columns)} of generated (VIRTUAL/STORED) columns on a server."""
    import pymysql
    conn = pymysql.connect(**connect_kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                        "WHERE IS_GENERATED = 'ALWAYS'")
            out: dict = {}
            for schema, table, column in cur.fetchall():
                out.setdefault((schema, table), set()).add(column)
            return {k: frozenset(v) for k, v in out.items()}
    finally:
        conn.close()


def _window_bytes(sizes: list[tuple[str, int]], start: tuple[str, int] | None, stop: tuple[str, int] | None) -> int:
    """Bytes of binlog between ``start`` and ``stop`` of files given as (name, size), in order."""
    total = 0
    for name, size in sizes:
        if start and name < start[0] or stop and name > stop[0]:
            continue
        lo = start[1] if start and name == start[0] else 4
        hi = stop[1] if stop and name == stop[0] else size
        total += max(0, hi - lo)
    return total


def _reader_kw(connect_kwargs: dict) -> dict:
    """A LiveReader's connection keywords from pymysql-style ``connect_kwargs`` (the password is
    only handed on: to the reader, or pickled through a pipe to a second process)."""
    return {"host": connect_kwargs.get("host", "127.0.0.1"), "port": int(connect_kwargs.get("port", 3306)),
            "user": connect_kwargs["user"], "password": connect_kwargs.get("password", ""),
            "unix_socket": connect_kwargs.get("unix_socket")}


def _events(source: tuple, start: tuple[str, int] | None, stop: tuple[str, int] | None, verify: bool = True):
    """The events of a source from ``start`` to ``stop`` (exclusive): ``("files", paths)`` or
    ``("live", reader keywords)`` (a live source always starts at a file's position given)."""
    kind, what = source
    if kind == "files":
        from mysqlbackup.binlog.reader import iter_events
        return iter_events(what, start, stop, verify_checksums=verify)
    import random

    from mysqlbackup.binlog.live import LiveReader
    return LiveReader(**what, server_id=random.randint(1 << 30, (1 << 31) - 1), start_file=start[0],
                      start_pos=start[1], stop=stop, verify_checksums=verify)


# the shared state of a read in two processes (a multiprocessing Array of 64-bit ints, under its lock)
_PUB, _AT_FILE, _AT_POS, _FRONT, _BACK, _PARTS = range(6)
_END = 1 << 62  # "the first process has read to the end"
# tests: the first process waits at its first transaction until the second has published its
# parts (or found none), so that small windows are still read by both
PARTS_FIRST = False


class _Front:
    """The first process's events: from the window's start, on through each part boundary only
    when it claims that part. Until the second process publishes the parts, the position of each
    transaction read is posted (``shared``), so that the parts it publishes begin after it; after
    that, reaching a boundary claims the next part, or ends the read there when the second process
    has taken it, as a stop position ends a read (``stopped``). The reader's ``cut_at`` and
    ``cut_event`` pass through."""

    def __init__(self, events, shared, bounds, index: dict[str, int], on_split: Callable[[], None] | None = None) -> None:
        self._events, self._shared, self._bounds, self._index = events, shared, bounds, index
        self._stopped = False
        self._wait = PARTS_FIRST
        self._on_split = on_split  # called once, when the parts are published (the window is split)

    def __getattr__(self, name: str):
        return getattr(self._events, name)

    @property
    def stopped(self) -> bool:
        return self._stopped or getattr(self._events, "stopped", False)

    def __iter__(self):
        sh, bounds, index = self._shared, self._bounds, self._index
        lock = sh.get_lock()
        gtid = F.GTID_EVENT
        nxt = None   # the next part boundary (file index, position), once published
        i = n = 0
        for ev in self._events:
            if ev.type == gtid:
                if nxt is None:
                    here = (index[ev.file], ev.pos)
                    with lock:
                        published = sh[_PUB] == 1
                        if not published:
                            sh[_AT_FILE], sh[_AT_POS] = here
                        n = sh[_PARTS]
                    if not published and self._wait:
                        self._wait = False
                        deadline = time.monotonic() + 60
                        while not sh[_PUB] and time.monotonic() < deadline:
                            time.sleep(0.005)
                    if not published:
                        yield ev
                        continue
                    if self._on_split is not None:
                        self._on_split()
                    marks = [(bounds[2 * k], bounds[2 * k + 1]) for k in range(n - 1)]
                    i = sum(1 for m in marks if m < here)  # the boundaries passed: this read's part is i
                    nxt = marks[i] if i < n - 1 else (_END, 0)
                if ev.pos == nxt[1] and index[ev.file] == nxt[0]:
                    with lock:
                        if sh[_FRONT] > sh[_BACK]:
                            self._stopped = True
                            return
                        sh[_FRONT] += 1
                    i += 1
                    nxt = marks[i] if i < n - 1 else (_END, 0)
            yield ev
        with lock:  # read to the end: nothing is left for the second process (when it publishes after this)
            if not sh[_PUB]:
                sh[_AT_FILE], sh[_AT_POS] = _END, 0


def _work(source: tuple, start, stop, selection: Selection, where: str, spool_dir: str | None,
          part: str | None, generated: dict | None = None, log: Callable[[str], None] | None = None,
          progress_seconds: float = 1e9, front: tuple | None = None):
    """One read: invert [start, stop) and write it reversed (no header) to ``part``; its state.
    ``front``: (shared, bounds, file index) of the first process's read (``_Front``); that read
    writes no part: it returns (state, its Flashback) and the caller writes its spool last into
    the script (one copy of its text fewer) and closes it."""
    # parts are parts of windows large enough to split, whose scripts seldom fit: each process keeps a
    # quarter of the statement text in memory that one process would. The first process reads the
    # whole window when it is too small to split: it keeps as much as one process until it learns
    # that the window is split (the two then stay under 150 MB together)
    part_memory = SPOOL_MEMORY // 4
    fb = Flashback(selection, "", spool_dir, log, progress_seconds, where, generated,
                   SPOOL_MEMORY if front else part_memory)
    try:
        reader = _events(source, start, stop)
        spool = fb.spool
        events = _Front(reader, *front, on_split=lambda: spool.limit(part_memory)) if front else reader
        if source[0] == "live":
            with reader:
                fb.feed(events)
        else:
            fb.feed(events)
        if front:
            kept, fb = fb, None
            return kept.state(), kept
        with open(part, "wb") as out:
            fb.spool.write_reversed(out)
        return fb.state()
    finally:
        if fb is not None:
            fb.close()


def _claim_back(sh) -> int | None:
    """The second process takes the next part from the back: its index, or None when they met."""
    with sh.get_lock():
        if sh[_FRONT] > sh[_BACK]:
            return None
        sh[_BACK] -= 1
        return sh[_BACK] + 1


def _helper(conn, shared, bounds) -> None:
    """The second process: walks the window (``parallel.plan_parts``) while the first one reads
    it from the front, publishes the parts, then reads parts from the back, one read each, until
    it meets the first (``shared``: see ``_Front``). Sends back ([(part index, state)], when it was
    ready, seconds of reading, what the plan was) or its error."""
    from mysqlbackup.flashback import parallel
    ready = time.time()
    job = conn.recv()
    if job is None:
        return
    try:
        t = time.time()
        source, start, stop, index = job.pop("source"), job.pop("start"), job.pop("stop"), job.pop("index")
        min_work = job.pop("min_work")
        try:
            if source[0] == "files":
                plan = parallel.plan_parts(parallel.walk_files(source[1], start, stop), job["selection"], job["where"],
                                           min_work=min_work)
            else:
                with _events(source, start, stop, verify=False) as walk:
                    plan = parallel.plan_parts(walk, job["selection"], job["where"], min_work=min_work)
            about = plan.describe() if plan else "too little work or one transaction holds most of it"
        except Exception as exc:  # noqa: BLE001 - the first process reads it all, and reports what is wrong
            plan, about = None, f"the walk stopped ({type(exc).__name__})"
        done = []
        if plan is None:
            with shared.get_lock():
                shared[_PUB] = 2  # no parts: the first process reads it all
        else:
            marks = [(index[f], p) for f, p in plan.bounds]
            with shared.get_lock():
                at = (shared[_AT_FILE], shared[_AT_POS])
                for k, (f, p) in enumerate(marks):
                    bounds[2 * k], bounds[2 * k + 1] = f, p
                shared[_FRONT] = sum(1 for m in marks if m <= at) + 1
                shared[_BACK] = plan.parts - 1
                shared[_PARTS] = plan.parts
                shared[_PUB] = 1
            part = job.pop("part")
            while (j := _claim_back(shared)) is not None:
                end = plan.bounds[j] if j < len(plan.bounds) else stop
                done.append((j, _work(source, plan.bounds[j - 1], end, part=f"{part}{j}", **job)))
        conn.send(("ok", (done, ready, time.time() - t, about)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        try:
            conn.send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle goes back as its text
            conn.send(("error", FlashbackError(f"{type(exc).__name__}: {exc}")))


def _start_without_main(process) -> None:
    """Start a spawned process without running the caller's main script in it first.

    ``spawn`` runs the parent's ``__main__`` file again in the child (as ``__mp_main__``) before the
    target: in an Airflow worker that file is the ``airflow`` command, so the child would import
    Airflow (seconds and well over 100 MB) to run a function of this module. The target needs
    nothing from ``__main__``, so while the child's start-up data is taken, ``__main__`` is a bare
    module with no file to run."""
    import sys
    import types
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        process.start()
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _two_processes(source: tuple, start: tuple[str, int], stop: tuple[str, int] | None, window_bytes: int,
                   names: list[str], selection: Selection, output_path: str, spool_dir: str | None,
                   log: Callable[[str], None], progress_seconds: float, where: str, generated: dict | None,
                   described: str, start_checked: bool = False) -> Summary | None:
    """The window read by two processes when it pays. This process reads it from the front at
    once; a second one walks it meanwhile (``parallel.plan_parts``: parts of about equal
    estimated work, cut at transaction boundaries), publishes the parts that begin after where the
    first one is, and reads them from the back, one read each, until the two meet: whichever runs
    faster reads more, whatever the estimate missed, and the walk costs the first process
    nothing. The script is the parts' inverses, newest first. ``names``: the binlog files in
    order (positions are compared as (index, position)). None when one process should do it (too
    little data, no second process possible): the caller reads it alone."""
    import multiprocessing

    from mysqlbackup.flashback import parallel
    if window_bytes < parallel.PARALLEL_MIN_BYTES or multiprocessing.current_process().daemon:
        return None  # a daemonic process (some task runners) may not start children
    t0, started = time.monotonic(), time.time()
    index = {name: i for i, name in enumerate(names)}
    # spawn, not fork: the caller (an Airflow task, a test run) may have threads, and a forked
    # child can deadlock on a lock one of them held (logging, imports)
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    shared = ctx.Array("q", 6)
    bounds = ctx.Array("q", 2 * parallel.PARTS, lock=False)
    helper = ctx.Process(target=_helper, args=(theirs, shared, bounds), daemon=True, name="flashback-parts")
    _start_without_main(helper)
    theirs.close()
    prefix = f"{output_path}.part"
    front_fb = None
    try:
        try:
            # (the planner's threshold as this process has it: a spawned process imports its own)
            mine.send({"source": source, "start": start, "stop": stop, "index": index,
                       "min_work": parallel.MIN_SPLIT_WORK, "selection": selection,
                       "where": where, "spool_dir": spool_dir, "part": prefix, "generated": generated})
        except OSError as exc:  # it is gone (nothing is read yet): this process reads it all
            log(f"reading in 1 process: the second process is gone ({exc}; exit code {helper.exitcode})")
            return None
        log("reading in 2 processes: this one from the start, the second walks the window for its parts")
        t_front = time.time()
        front, front_fb = _work(source, start, stop, selection, where, spool_dir, None, generated, log,
                                progress_seconds, front=(shared, bounds, index))
        t_front = time.time() - t_front
        with shared.get_lock():
            published = shared[_PUB] == 1
        if not published:
            # this process read the whole window (its read posted the end, so parts published from now
            # on are all behind it): the second one's walk is not waited for
            status, result = "ok", ([], started, 0.0, "the second process had not published its parts")
        else:
            try:
                status, result = mine.recv()
            except EOFError:
                status, result = "gone", None
            helper.join(30)
        with shared.get_lock():
            taken, parts = shared[_FRONT], shared[_PARTS]
        if status == "gone":
            if published and taken < parts:
                raise FlashbackError(f"the second process ended without a result (exit code {helper.exitcode}) "
                                     "after it took parts of the window; nothing was written")
            back, about = [], "the second process ended before it took a part"
            ready, t_back = started, 0.0
        elif status != "ok":
            raise result
        else:
            back, ready, t_back, about = result
        back.sort()
        if published and [j for j, _ in back] != list(range(taken, parts)):  # pragma: no cover - the claims say so
            raise RuntimeError(f"parts read: before {taken} here, {[j for j, _ in back]} there, of {parts}")
        if back:
            log(f"{about}: parts 1-{taken} read here in {t_front:.2f} s, {len(back)} by the second process "
                f"(ready {ready - started:.2f} s after the start; walk and parts {t_back:.2f} s); merging")
        else:
            log(f"read by this process alone ({about})")
        fb = Flashback(selection, described, spool_dir, log, 1e9, where, generated)
        fb.start_checked = start_checked
        try:
            fb.absorb(front, *(state for _, state in back))
            fb._t0 = t0
            # the second process's parts (newest first), then this one's spool: the window's start
            return fb.write(output_path, parts=[f"{prefix}{j}" for j, _ in reversed(back)], then=front_fb.spool)
        finally:
            fb.close()
    finally:
        if front_fb is not None:
            front_fb.close()
        mine.close()
        if helper.is_alive():
            helper.terminate()
            helper.join()
        for part in [f"{prefix}{j}" for j in range(parallel.PARTS + 1)]:
            if os.path.exists(part):
                os.unlink(part)


def generate_from_files(files: list[str], selection: Selection, output_path: str, spool_dir: str | None = None,
                        log: Callable[[str], None] | None = None, progress_seconds: float = 10.0,
                        where: str = "row", jobs: int | None = None, generated: dict | None = None,
                        source: str | None = None, start_checked: bool = False) -> Summary:
    """Flashback from archived binlog files (no server needed).

    ``jobs``: processes to use (default: 2 when there are 2 cores and enough data, else 1). ``source``: what
    the header's ``-- source:`` line says (default ``archive <directory of the files> (first .. last)``;
    it must begin with ``archive``). A time window whose first transaction read comes after its start is
    refused (earlier files may be missing) unless ``start_checked``: the caller showed that the files hold
    the start (an archive's ``window_coverage``)."""
    from mysqlbackup.binlog.reader import iter_events
    if not files:
        raise FlashbackError("no binlog files given")
    files = sorted(files, key=lambda p: os.path.basename(p))
    start = (selection.start_position.file, 4) if selection.start_position else None
    names = [os.path.basename(f) for f in files]
    for pos, what in ((selection.start_position, "start"), (selection.stop_position, "stop")):
        if pos is not None and pos.file not in names:
            raise FlashbackError(f"{fld(what + '_position')}: the {what} position {pos} is outside the binlogs "
                                 f"given ({names[0]} .. {names[-1]})")
    if source is None:
        source = f"archive {os.path.dirname(files[0]) or '.'} ({names[0]} .. {names[-1]})"
    elif not source.startswith("archive"):
        raise ValueError("the source of archived files must be named 'archive ...'")
    if start:
        files = [f for f in files if os.path.basename(f) >= start[0]]
    if jobs is None:
        jobs = 2 if (os.cpu_count() or 1) >= 2 else 1
    if jobs > 1:
        read = [os.path.basename(f) for f in files]
        first = (read[0], 4)  # as one process reads: the start file from its beginning
        stop = selection.stop_position.coords if selection.stop_position else None
        size = _window_bytes([(name, os.path.getsize(f)) for name, f in zip(read, files)], first, stop)
        done = _two_processes(("files", files), first, stop, size, read, selection, output_path, spool_dir,
                              log or (lambda _m: None), progress_seconds, where, generated, source, start_checked)
        if done is not None:
            return done
    fb = Flashback(selection, source, spool_dir, log, progress_seconds, where, generated)
    fb.start_checked = start_checked
    try:
        fb.feed(iter_events(files))
        return fb.write(output_path)
    finally:
        fb.close()


def generate_from_live(connect_kwargs: dict, selection: Selection, output_path: str, spool_dir: str | None = None,
                       log: Callable[[str], None] | None = None, progress_seconds: float = 10.0,
                       server_id: int | None = None, where: str = "row", jobs: int | None = None) -> Summary:
    """Flashback reading a live server as a replication client (needs REPLICATION SLAVE).

    The binlog is read from the start position (or the oldest binlog the server still has) up to
    where the server's binlog was when the run started; the same events as the archived files
    give the same SQL. ``jobs``: processes (default: 2 when there are 2 cores and enough work),
    each with its own dump connection (its own random server_id), split at a transaction
    boundary that halves the window's rows (``flashback.parallel``); only a window with a start
    position is split (one without is read from the oldest binlog: the walk for the split would
    stream every binlog the server holds once more). ``server_id``: the dump
    connection's when one process reads (two processes take random ones, as without it).
    """
    import random

    import pymysql

    from mysqlbackup.binlog.live import LiveReader
    log = log or (lambda _m: None)
    conn = pymysql.connect(**connect_kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, "
                        "IFNULL(@@binlog_row_metadata, 'FULL')")
            log_bin, fmt, image, metadata = cur.fetchone()
            if not int(log_bin):
                raise FlashbackError("the server has no binlog (log_bin=OFF): nothing to flash back")
            for name, value, want in (("binlog_format", fmt, "ROW"), ("binlog_row_image", image, "FULL"),
                                      ("binlog_row_metadata", metadata, "FULL")):
                if str(value).upper() != want:
                    log(f"warning: the server's {name} is {value} now; flashback needs {want} for the events in "
                        "the window (each event is checked)")
            cur.execute("SHOW BINARY LOGS")
            sizes = [(r[0], int(r[1])) for r in cur.fetchall()]
            files = [name for name, _ in sizes]
            cur.execute("SHOW MASTER STATUS")
            end_file, end_pos = cur.fetchone()[:2]
    finally:
        conn.close()
    start = selection.start_position
    if start is not None and start.file not in files:
        raise FlashbackError(f"{fld('start_position')}: the start position {start} is outside the binlogs the "
                             "server still has "
                             f"({files[0]} .. {files[-1]}): use the binlog archive for older changes")
    stop = selection.stop_position
    if stop is not None and stop.file not in files:
        raise FlashbackError(f"{fld('stop_position')}: the stop position {stop} is outside the server's binlogs "
                             f"({files[0]} .. {files[-1]})")
    stop_at = (stop.file, stop.pos) if stop else (end_file, end_pos)
    server = connect_kwargs.get("unix_socket") or f"{connect_kwargs.get('host')}:{connect_kwargs.get('port')}"
    described = f"live server {server} ({start.file if start else files[0]} .. {stop_at[0]})"
    generated = generated_columns(connect_kwargs)
    first = (start.file if start else files[0], 4)
    if jobs is None:
        jobs = 2 if (os.cpu_count() or 1) >= 2 else 1
    if jobs > 1 and start is not None:
        # a window without a start position is read from the oldest binlog the server has: the walk
        # that finds the split would stream all of them once more, so one process reads it (as before)
        # the password goes to the second process through its pipe (pickled), never a command line
        done = _two_processes(("live", _reader_kw(connect_kwargs)), first, stop_at, _window_bytes(sizes, first, stop_at), files, selection,
                              output_path, spool_dir, log, progress_seconds, where, generated, described)
        if done is not None:
            return done
    fb = Flashback(selection, described, spool_dir, log, progress_seconds, where, generated)
    try:
        reader = LiveReader(**_reader_kw(connect_kwargs), server_id=server_id or random.randint(1 << 30, (1 << 31) - 1),
                            start_file=first[0], start_pos=4, stop=stop_at)
        with reader:
            fb.feed(reader)
        return fb.write(output_path)
    finally:
        fb.close()


@dataclass
class LiveWindow:
    """Whether a live server still holds a window: ``reachable``, ``holds`` and why (a field-marked text)."""

    reachable: bool
    holds: bool
    reason: str
    oldest: str | None = None


def _first_event_time(connect_kwargs: dict, file: str, server_id: int | None = None) -> int | None:
    """The timestamp of a binlog file's FORMAT_DESCRIPTION (when the server began writing it), read as a
    replication client (the dump stops right after it)."""
    import random

    from mysqlbackup.binlog.live import LiveReader
    reader = LiveReader(**_reader_kw(connect_kwargs), server_id=server_id or random.randint(1 << 30, (1 << 31) - 1),
                        start_file=file, start_pos=4, stop=(file, 5))
    with reader:
        for ev in reader:
            if ev.type == F.FORMAT_DESCRIPTION_EVENT:
                return ev.timestamp or None
    return None


def live_window(connect_kwargs: dict, selection: Selection, server_id: int | None = None) -> LiveWindow:
    """Does the live server still hold the whole window, or did it purge binlogs the window needs?

    The window's start is held when its file is among the server's binlogs (a position), when the oldest
    binlog begins before that transaction (a GTID: ``BINLOG_GTID_POS(oldest, 4)``, its Gtid_list), or when
    the oldest binlog was begun before that time (its FORMAT_DESCRIPTION's timestamp: an event with an
    earlier or equal timestamp may be in a purged file). A stop position must be in the server's binlogs.
    Never raises for a server that cannot be reached or asked: ``reachable``/``holds`` say so."""
    import pymysql

    from mysqlbackup.archive import parse_gtid_state
    server = connect_kwargs.get("unix_socket") or f"{connect_kwargs.get('host')}:{connect_kwargs.get('port')}"
    try:
        conn = pymysql.connect(**connect_kwargs)
    except pymysql.err.MySQLError as exc:
        return LiveWindow(False, False, f"the server {server} cannot be reached: {exc}")
    sel = selection
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin")
            if not int(cur.fetchone()[0]):
                return LiveWindow(True, False, f"the server {server} has no binlog (log_bin=OFF)")
            cur.execute("SHOW BINARY LOGS")
            files = [r[0] for r in cur.fetchall()]
            gtid_list = None
            if files and sel.start_gtid is not None:  # MariaDB: the Gtid_list the oldest binlog begins with
                cur.execute("SELECT BINLOG_GTID_POS(%s, 4)", (files[0],))
                gtid_list = cur.fetchone()[0]
    except pymysql.err.MySQLError as exc:
        return LiveWindow(True, False, f"the server {server} could not say which binlogs it has: {exc}")
    finally:
        conn.close()
    if not files:
        return LiveWindow(True, False, f"the server {server} lists no binlog")
    oldest, newest = files[0], files[-1]
    held = f"{oldest} .. {newest}"
    ok: list[str] = []
    bad: list[str] = []
    if sel.start_position is not None:
        if sel.start_position.file in files:
            ok.append(f"it still has {sel.start_position.file} ({fld('start_position')})")
        else:
            bad.append(f"{fld('start_position')} {sel.start_position} is not in its binlogs ({held}): purged")
    if sel.stop_position is not None and sel.stop_position.file not in files:
        bad.append(f"{fld('stop_position')} {sel.stop_position} is not in its binlogs ({held})")
    if sel.start_gtid is not None:
        g = sel.start_gtid
        state = parse_gtid_state(gtid_list)
        if state is None:
            bad.append(f"it could not say which GTIDs its oldest binlog {oldest} begins after ({gtid_list!r})")
        else:
            s, q = state.get(g.domain, (0, 0))
            after = f"{g.domain}-{s}-{q}" if g.domain in state else f"nothing of domain {g.domain}"
            if q < g.seq:
                ok.append(f"its oldest binlog {oldest} begins after {after}, before {fld('start_gtid')} {g}")
            else:
                bad.append(f"its oldest binlog {oldest} begins after {after}: {fld('start_gtid')} {g} was purged "
                           "from the server's binlogs")
    if sel.start_time is not None:
        try:
            ts = _first_event_time(connect_kwargs, oldest)
        except (pymysql.err.MySQLError, BinlogError, OSError) as exc:
            ts, why = None, str(exc)
        else:
            why = "no FORMAT_DESCRIPTION event"
        start = sel.start_time.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if ts is None:
            bad.append(f"when its oldest binlog {oldest} begins cannot be read ({why})")
        elif datetime.fromtimestamp(ts, timezone.utc) < sel.start_time:
            ok.append(f"its oldest binlog {oldest} was begun at {_utc(ts)} UTC, before {fld('start_datetime')} "
                      f"{start} UTC")
        else:
            bad.append(f"its oldest binlog {oldest} was begun at {_utc(ts)} UTC, not before {fld('start_datetime')} "
                       f"{start} UTC: the binlogs before it, which may hold changes of the window, were purged")
    if bad:
        return LiveWindow(True, False, f"the server {server} no longer holds the whole window: " + "; ".join(bad),
                          oldest)
    return LiveWindow(True, True, f"the server {server} holds the whole window: " + ("; ".join(ok) or "no start"),
                      oldest)


def window_args(selection: Selection) -> dict:
    """The window of a selection as ``mysqlbackup.archive.window_coverage`` takes it."""
    sel = selection
    return {"start": sel.start_time, "stop": sel.stop_time,
            "start_gtid": str(sel.start_gtid) if sel.start_gtid else None,
            "stop_gtid": str(sel.stop_gtid) if sel.stop_gtid else None,
            "start_position": sel.start_position.coords if sel.start_position else None,
            "stop_position": sel.stop_position.coords if sel.stop_position else None}


def archive_refusal(where: str, cov, files) -> FlashbackError:
    """The refusal of a window the archive does not hold whole: every part not held, field-marked."""
    from mysqlbackup.archive import describe_archive
    items = [(" .. ".join(fld(x) for x in fields) + ": " if fields else "") + text for fields, text in cov.uncovered]
    gone = {s: sum(1 for f in files if f.state == s) for s in ("expired", "damaged")}
    notes = "".join(f"; {n} file(s) {s}" + (" by retention (no kept backup needs them)" if s == "expired" else
                                            " (not read)") for s, n in gone.items() if n)
    return FlashbackError(f"the binlog archive {where} does not hold the whole window, so nothing was read: "
                          f"{capped(items)}. The archive holds {describe_archive(files)}{notes}")


def archive_end_note(cov) -> str:
    """What a window without a stop means when it is read from the archive."""
    from mysqlbackup.archive import iso
    last = cov.files[-1].name if cov.files else "?"
    return (f"no stop given: the window runs to the end of the archive ({last}, known complete up to "
            f"{iso(cov.end) or '?'}); changes the server wrote after that are not in this flashback")


def read_archive_dir(directory: str) -> tuple[list, dict]:
    """The files of an instance's archive directory (``<base>/<instance>/binlog``, or one identity's
    directory in it) as ``ArchivedFile`` records, read-only: a closed file's sidecar when it is current,
    else the file itself is walked (and hashed); an open file is walked to its last complete event.
    Returns (records, {(identity, name): (path, complete bytes)})."""
    from mysqlbackup.archive import ArchivedFile
    H = _archive_script()
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FlashbackError(f"the archive directory {directory} does not exist")
    idents = [(i, os.path.join(directory, i)) for i in H.identities(directory)]
    if not idents and H.IDENTITY_RE.match(os.path.basename(directory)) and H.list_identity(directory):
        idents = [(os.path.basename(directory), directory)]
    records, where = [], {}
    for ident, idir in idents:
        meta = os.path.join(idir, H.META_DIR)
        for name, state in sorted(H.list_identity(idir).items(), key=lambda kv: H.sort_key(kv[0])):
            path = H.path_of(idir, name, state)
            size = os.path.getsize(path)
            if state == "open":
                prev = H.read_json(os.path.join(meta, name + ".open.json"))
                if prev and (prev.get("end", 0) > size or prev.get("fde") is None):
                    prev = None
                rec = H.summary(name, ident, "open", H.scan_binlog(path, prev=prev))
            else:
                side = H.read_json(os.path.join(meta, name + ".json"))
                if side and side.get("bytes_on_disk") == size and side.get("state") in (state, "damaged") \
                        and side.get("name") == name and side.get("identity") == ident:
                    rec = side
                else:
                    scan = H.scan_binlog(path, sha=True)
                    rec = H.summary(name, ident, state, scan)
                    if state == "closed" and (scan["problem"] or scan["end"] != scan["size"]):
                        rec["state"] = "damaged"
            rec = dict(rec, storage_path=path)
            records.append(ArchivedFile.from_row(rec))
            where[(ident, name)] = (path, int(rec.get("size") or 0))
    if not records:
        raise FlashbackError(f"{directory} holds no archived binlog: expected an instance's archive directory "
                             "(<base_dir>/<instance>/binlog, with one <server_id>-<uid>/ directory per server)")
    return records, where


def _archive_script():
    """The storage host's ``binlog_archive.py``: the same walk and records as the supervisor's."""
    import importlib.util
    import sys

    from mysqlbackup.remote import SCRIPTS_DIR
    mod = sys.modules.get("binlog_archive")
    if mod is None:
        spec = importlib.util.spec_from_file_location("binlog_archive", SCRIPTS_DIR / "binlog_archive.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["binlog_archive"] = mod
        spec.loader.exec_module(mod)
    return mod


def generate_from_archive_dir(directory: str, selection: Selection, output_path: str, spool_dir: str | None = None,
                              log: Callable[[str], None] | None = None, progress_seconds: float = 10.0,
                              where: str = "row", identity: str | None = None, generated: dict | None = None,
                              jobs: int | None = None) -> Summary:
    """Flashback from an instance's archive directory: the files that cover the window (``covering_files``),
    refused before reading any binlog when the archive does not hold the whole window."""
    import shutil
    import tempfile

    from mysqlbackup.archive import window_coverage
    log = log or (lambda _m: None)
    if not any((selection.start_time, selection.start_position, selection.start_gtid)):
        raise FlashbackError(f"give the start of the window ({fld('start_datetime')}, {fld('start_position')} or "
                             f"{fld('start_gtid')}) to read an archive")
    records, paths = read_archive_dir(directory)
    known = sorted({f.identity for f in records})
    if identity is not None and identity not in known:
        raise FlashbackError(f"the archive {directory} has no files of server {identity} (it has: {capped(known)})")
    cov = window_coverage(records, **window_args(selection), identity=identity)
    if not cov.complete:
        raise archive_refusal(directory, cov, records)
    names = [f.name for f in cov.files]
    log(f"archive {directory}: server {cov.identity}, {len(names)} file(s) cover the window: {names[0]} .. {names[-1]}")
    if cov.open_end:
        log(f"warning: {archive_end_note(cov)}; the archive directory alone cannot tell whether the server "
            "wrote more")
    stage = tempfile.mkdtemp(prefix="mysql-flashback-archive-", dir=spool_dir)
    try:
        files = []
        for f in cov.files:
            path, complete = paths[(f.identity, f.name)]
            local = os.path.join(stage, f.name)
            if complete <= 4:
                continue  # an open file without a complete event yet: nothing to read in it
            if complete < os.path.getsize(path):  # an open file: as far as its last complete event
                with open(path, "rb") as src, open(local, "wb") as dst:
                    left = complete
                    while left > 0:
                        n = os.copy_file_range(src.fileno(), dst.fileno(), left)
                        if n <= 0:
                            raise OSError(f"copy_file_range stopped with {left} bytes of {path} left")
                        left -= n
            else:
                os.symlink(os.path.abspath(path), local)
            files.append(local)
        source = f"archive {directory.rstrip('/')}/{cov.identity} ({names[0]} .. {names[-1]})"
        return generate_from_files(files, selection, output_path, spool_dir, log, progress_seconds, where,
                                   jobs=jobs, generated=generated, source=source, start_checked=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
