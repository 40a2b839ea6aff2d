"""What a flashback covers: databases, tables, a time / position / GTID window, statement types.

Everything a user types is parsed and checked here, before any binlog is read; a bad value
is a ``SelectionError`` saying what is wrong and what would be right.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

STATEMENT_TYPES = ("insert", "update", "delete")


class SelectionError(ValueError):
    """A flashback selection that cannot be right; nothing has been read or touched."""


@dataclass(frozen=True, order=True)
class Position:
    """A binlog coordinate: file name and byte offset (``binlog.000012:4``)."""

    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"

    @property
    def coords(self) -> tuple[str, int]:
        """(file, pos), as the binlog readers take it."""
        return self.file, self.pos


@dataclass(frozen=True, order=True)
class Gtid:
    """A MariaDB GTID ``domain-server-seq``."""

    domain: int
    server_id: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq}"


_POS_RE = re.compile(r"([A-Za-z0-9_.+-]+\.[0-9]{6,}):([0-9]+)")
_GTID_RE = re.compile(r"([0-9]+)-([0-9]+)-([0-9]+)")
_IDENT_RE = re.compile(r"`((?:[^`]|``)+)`|([^.`\s]+)")


def parse_position(text: str) -> Position:
    m = _POS_RE.fullmatch(text.strip())
    if not m:
        raise SelectionError(f"malformed binlog position {text!r}: expected FILE:POS like binlog.000012:4")
    pos = int(m.group(2))
    if pos < 4:
        raise SelectionError(f"binlog position {text!r}: offsets start at 4 (after the file magic)")
    return Position(m.group(1), pos)


def parse_gtid(text: str) -> Gtid:
    m = _GTID_RE.fullmatch(text.strip())
    if not m:
        raise SelectionError(f"malformed GTID {text!r}: expected DOMAIN-SERVER-SEQ like 0-1-4711 (MariaDB)")
    return Gtid(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def parse_time(text: str | datetime) -> datetime:
    """A point in time; text without an offset is UTC. Accepts 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]'."""
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise SelectionError(f"malformed time {text!r}: expected 'YYYY-MM-DD HH:MM:SS' (UTC unless an "
                                 f"offset such as +02:00 is given)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_table(text: str) -> tuple[str | None, str]:
    """``db.table`` or ``table``; names that need it are backtick-quoted: `my db`.`t.1`."""
    parts = []
    rest = text.strip()
    while rest:
        m = _IDENT_RE.match(rest)
        if not m:
            break
        parts.append(m.group(1).replace("``", "`") if m.group(1) is not None else m.group(2).strip())
        rest = rest[m.end():]
        if rest.startswith("."):
            rest = rest[1:]
            if not rest:
                parts = []
                break
        elif rest:
            parts = []
            break
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise SelectionError(f"malformed table name {text!r}: expected db.table or table; quote names with "
                             f"dots, spaces or backticks like `my db`.`t.1`")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


@dataclass(frozen=True)
class Selection:
    """The rows a flashback inverts. Empty database/table sets mean "all"."""

    databases: frozenset[str] = frozenset()
    tables: frozenset[tuple[str | None, str]] = frozenset()
    start_time: datetime | None = None
    stop_time: datetime | None = None
    start_position: Position | None = None
    stop_position: Position | None = None
    start_gtid: Gtid | None = None
    stop_gtid: Gtid | None = None
    types: frozenset[str] = frozenset(STATEMENT_TYPES)
    _exact: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)
    _anydb: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exact", frozenset(t for t in self.tables if t[0] is not None))
        object.__setattr__(self, "_anydb", frozenset(t[1] for t in self.tables if t[0] is None))
        self.validate()

    @classmethod
    def parse(cls, *, databases=(), tables=(), start_time=None, stop_time=None, start_position=None,
              stop_position=None, start_gtid=None, stop_gtid=None, types=None) -> "Selection":
        """A selection from user text (CLI options, DAG params)."""
        bad = sorted(set(types or ()) - set(STATEMENT_TYPES))
        if bad:
            raise SelectionError(f"unknown statement type(s) {', '.join(bad)}: expected some of "
                                 f"{', '.join(STATEMENT_TYPES)}")
        return cls(
            databases=frozenset(d.strip() for d in databases if d.strip()),
            tables=frozenset(parse_table(t) for t in tables if t.strip()),
            start_time=parse_time(start_time) if start_time else None,
            stop_time=parse_time(stop_time) if stop_time else None,
            start_position=parse_position(start_position) if start_position else None,
            stop_position=parse_position(stop_position) if stop_position else None,
            start_gtid=parse_gtid(start_gtid) if start_gtid else None,
            stop_gtid=parse_gtid(stop_gtid) if stop_gtid else None,
            types=frozenset(types) if types else frozenset(STATEMENT_TYPES),
        )

    def validate(self) -> None:
        if not self.types:
            raise SelectionError("no statement type selected: choose some of insert, update, delete")
        if self.start_time and self.stop_time and self.start_time >= self.stop_time:
            word = "empty" if self.start_time == self.stop_time else "reversed"
            raise SelectionError(f"{word} time window: start {self.start_time:%Y-%m-%d %H:%M:%S%z} is not before "
                                 f"stop {self.stop_time:%Y-%m-%d %H:%M:%S%z}")
        if self.start_position and self.stop_position and self.start_position >= self.stop_position:
            word = "empty" if self.start_position == self.stop_position else "reversed"
            raise SelectionError(f"{word} position window: start {self.start_position} is not before "
                                 f"stop {self.stop_position}")
        if self.start_gtid and self.stop_gtid:
            if self.start_gtid.domain != self.stop_gtid.domain:
                raise SelectionError(f"GTID window {self.start_gtid}..{self.stop_gtid} spans two domains: "
                                     f"give a start and stop in the same domain")
            if self.start_gtid.seq > self.stop_gtid.seq:
                raise SelectionError(f"reversed GTID window: {self.start_gtid} is after {self.stop_gtid}")
        for db, table in self.tables:
            if db is not None and self.databases and db not in self.databases:
                raise SelectionError(f"table {db}.{table} is not in the selected databases "
                                     f"({', '.join(sorted(self.databases))}): add the database or drop the filter")

    def wants_table(self, schema: str, table: str) -> bool:
        if self.databases and schema not in self.databases:
            return False
        if not self.tables:
            return True
        return (schema, table) in self._exact or table in self._anydb

    def wants_gtid(self, gtid: Gtid | None) -> bool:
        """Is a transaction with this GTID inside the GTID window (both ends inclusive)?"""
        if self.start_gtid is None and self.stop_gtid is None:
            return True
        if gtid is None:
            return False
        domain = (self.start_gtid or self.stop_gtid).domain
        if gtid.domain != domain:
            return False
        if self.start_gtid and gtid.seq < self.start_gtid.seq:
            return False
        return not (self.stop_gtid and gtid.seq > self.stop_gtid.seq)

    def wants_position(self, file: str, pos: int) -> bool:
        """Is an event at file:pos inside the position window (start inclusive, stop exclusive)?"""
        here = Position(file, pos)
        if self.start_position is not None and here < self.start_position:
            return False
        return not (self.stop_position is not None and here >= self.stop_position)

    def wants_time(self, when: datetime) -> bool:
        """Start inclusive, stop exclusive."""
        if self.start_time and when < self.start_time:
            return False
        return not (self.stop_time and when >= self.stop_time)

    def describe(self) -> str:
        parts = []
        if self.start_time or self.stop_time:
            parts.append(f"time {_t(self.start_time)} .. {_t(self.stop_time)} UTC")
        if self.start_position or self.stop_position:
            parts.append(f"positions {self.start_position or 'start'} .. {self.stop_position or 'end'}")
        if self.start_gtid or self.stop_gtid:
            parts.append(f"GTIDs {self.start_gtid or 'start'} .. {self.stop_gtid or 'end'}")
        parts.append("databases " + (", ".join(sorted(self.databases)) or "all"))
        parts.append("tables " + (", ".join(sorted(f"{d}.{t}" if d else t for d, t in self.tables)) or "all"))
        parts.append("types " + ", ".join(t for t in STATEMENT_TYPES if t in self.types))
        return "; ".join(parts)


def _t(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "open"
