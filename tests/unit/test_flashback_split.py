"""Where a flashback is cut into parts for two processes (flashback/parallel.plan_parts), on made-up events."""
from __future__ import annotations

import struct
from datetime import datetime, timezone

from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.reader import RawEvent
from mysqlbackup.flashback.parallel import plan_parts
from mysqlbackup.flashback.select import Selection

T0 = 1_700_000_000


class Log:
    """A binlog of made-up events: transactions of rows events of a given size."""

    def __init__(self) -> None:
        self.events: list[RawEvent] = []
        self.pos = 4
        self.seq = 0
        self.tables: dict[str, int] = {}
        self._add(F.FORMAT_DESCRIPTION_EVENT, b"\x04\x00" + bytes(55) + bytes([8] * 40), T0)

    def _add(self, etype: int, body: bytes, ts: int, size: int | None = None) -> tuple[str, int]:
        size = size or 19 + len(body)
        at = ("binlog.000001", self.pos)
        self.events.append(RawEvent(ts, etype, 1, size, self.pos + size, 0, at[0], self.pos, memoryview(body)))
        self.pos += size
        return at

    def tx(self, rows_bytes: list[tuple[int, int]], table: str = "db.t", ts: int = T0) -> tuple[str, int]:
        """One transaction: (event type, size) rows events of ``table``; returns its GTID's position."""
        self.seq += 1
        at = self._add(F.GTID_EVENT, struct.pack("<QIB", self.seq, 0, 0) + bytes(6), ts)
        tid = self.tables.setdefault(table, 100 + len(self.tables))
        schema, name = table.split(".")
        # a table map with one INT column (no optional metadata: no key known)
        body = (tid.to_bytes(6, "little") + b"\x00\x00" + bytes([len(schema)]) + schema.encode() + b"\x00"
                + bytes([len(name)]) + name.encode() + b"\x00" + b"\x01" + bytes([F.MYSQL_TYPE_LONG]) + b"\x00"
                + b"\x00")
        self._add(F.TABLE_MAP_EVENT, body, ts)
        for etype, size in rows_bytes:
            self._add(etype, tid.to_bytes(6, "little") + b"\x00\x00", ts, size)
        self._add(F.XID_EVENT, bytes(8), ts)
        return at


W, U = F.WRITE_ROWS_EVENT_V1, F.UPDATE_ROWS_EVENT_V1


def _even(plan, tolerance: float) -> bool:
    mean = sum(plan.work) / plan.parts
    return all(abs(w - mean) <= tolerance * mean for w in plan.work)


def test_many_small_then_a_few_large_transactions_are_cut_by_work_not_by_count():
    log = Log()
    for _ in range(1000):
        log.tx([(W, 1000)])         # 1 MB of small transactions
    big = [log.tx([(W, 100_000)] * 10) for _ in range(3)]  # 3 MB in three large ones
    plan = plan_parts(log.events, Selection(), parts=4, min_work=0)
    assert plan.bounds[1:] == tuple(big[1:])  # about 1 MB of small ones, then one large one per part
    assert _even(plan, 0.1)


def test_an_update_weighs_less_per_byte_than_an_insert():
    log = Log()
    log.tx([(W, 100_000)] * 9)       # 0.9 MB of inserts
    updates = [log.tx([(U, 100_000)] * 5) for _ in range(4)]  # 2 MB of updates: 0.45 per byte
    plan = plan_parts(log.events, Selection(), parts=2, min_work=0)
    assert plan.bounds == (updates[0],)   # by bytes it would be near the middle of the updates
    assert _even(plan, 0.05)


def test_only_the_window_and_the_selected_tables_count():
    log = Log()
    for _ in range(10):
        log.tx([(W, 100_000)], table="db.other")            # a table not selected
    for _ in range(10):
        log.tx([(W, 100_000)], ts=T0)                      # before the window's start
    inside = [log.tx([(W, 100_000)], ts=T0 + 100) for _ in range(4)]
    sel = Selection(tables=frozenset({("db", "t")}), start_time=datetime.fromtimestamp(T0 + 50, timezone.utc))
    plan = plan_parts(log.events, sel, parts=2, min_work=0)
    assert plan.bounds == (inside[2],)


def test_parts_are_at_most_as_many_as_boundaries_allow():
    log = Log()
    txs = [log.tx([(W, 100_000)] * 3) for _ in range(3)]
    plan = plan_parts(log.events, Selection(), parts=8, min_work=0)
    assert plan.bounds == tuple(txs[1:]) and plan.parts == 3


def test_too_little_work_or_one_transaction_is_not_split():
    log = Log()
    log.tx([(W, 100_000)] * 40)     # one large transaction: no boundary inside the work
    assert plan_parts(log.events, Selection(), min_work=0) is None
    log = Log()
    log.tx([(W, 1000)])
    log.tx([(W, 100_000)] * 40)     # a small one, then one that holds almost all the work
    assert plan_parts(log.events, Selection(), min_work=0) is None
    log = Log()
    for _ in range(10):
        log.tx([(W, 1000)])
    assert plan_parts(log.events, Selection()) is None  # 10 kB: below MIN_SPLIT_WORK
    assert plan_parts(log.events, Selection(), min_work=0) is not None
