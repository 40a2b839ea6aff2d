"""What a flashback covers: databases, tables, a time / position / GTID window, statement types.

Everything a user types is parsed and checked here, before any binlog is read; a bad value
is a ``SelectionError`` saying what is wrong and what would be right.

Messages name the field as the user gave it. The CLI calls it ``--stop-position``, the
``mysql_flashback`` DAG's form ``stop_position``: a message marks a field with ``field(name)``
and is shown in the caller's words (``str(exc)`` gives the param name, ``exc.for_cli()`` the
option).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mysqlbackup.text import capped

STATEMENT_TYPES = ("insert", "update", "delete")
# the fields a user sets, by their DAG param names (the CLI option is --<name with dashes>)
FIELDS = ("databases", "tables", "start_datetime", "stop_datetime", "start_position", "stop_position",
          "start_gtid", "stop_gtid", "types", "where")
_MARK = "\x1f"
_MARKED = re.compile(_MARK + r"([a-z_]+)" + _MARK)


def fld(name: str) -> str:
    """A field named in a message, shown later as the param (``stop_position``) or the option."""
    assert name in FIELDS, name
    return f"{_MARK}{name}{_MARK}"


def render(message: str, style: str = "param") -> str:
    """A message with its marked fields in the caller's words: ``param`` or ``cli``."""
    if style == "cli":
        return _MARKED.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
    return _MARKED.sub(lambda m: m.group(1), message)


class UserError(ValueError):
    """Bad input or a refusal a user must act on; ``str()`` names fields as DAG params."""

    def __str__(self) -> str:
        return render(super().__str__(), "param")

    def for_cli(self) -> str:
        return render(super().__str__(), "cli")


class SelectionError(UserError):
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
# MySQL identifiers: unquoted, letters, digits, $, _ and U+0080..U+FFFF; anything else (a dot, a
# space, a dash, a semicolon) only inside backticks, where a backtick is doubled. The unquoted class
# is written as what it leaves out (ASCII other than [0-9A-Za-z$_], and U+10000 on): the same set,
# compiled in 0.2 ms instead of 3 ms (a range of 65k characters is a big bitmap to build at import)
_UNQUOTED = "[^\\x00-\\x23\\x25-\\x2f\\x3a-\\x40\\x5b-\\x5e\\x60\\x7b-\\x7f\\U00010000-\\U0010ffff]"
_IDENT_RE = re.compile("`((?:[^`\\x00-\\x1f]|``)+)`|(" + _UNQUOTED + "+)")
IDENT_MAX = 64  # characters, MySQL's limit for database and table names


def _shown(text: object, limit: int = 80) -> str:
    """A value the user gave, quoted and cut for a message."""
    r = repr(text)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r):,} characters)"


def _named(name: str | None) -> str:
    return f"{fld(name)}: " if name else ""


_PLAIN_RE = re.compile(_UNQUOTED + "+")


def as_typed(schema: str | None, table: str | None = None) -> str:
    """A name as a user types it in databases/tables: backticks only where needed (`fb db`.t)."""
    def one(name: str) -> str:
        return name if _PLAIN_RE.fullmatch(name) else "`" + name.replace("`", "``") + "`"
    if table is None:
        return one(schema or "")
    return f"{one(schema)}.{one(table)}" if schema else one(table)


def parse_position(text: str, name: str | None = None) -> Position:
    m = _POS_RE.fullmatch(str(text).strip())
    if not m:
        raise SelectionError(f"{_named(name)}malformed binlog position {_shown(text)}: expected FILE:POS like "
                             "binlog.000012:4")
    pos = int(m.group(2))
    if pos < 4:
        raise SelectionError(f"{_named(name)}binlog position {_shown(text)}: offsets start at 4 (after the file magic)")
    return Position(m.group(1), pos)


def parse_gtid(text: str, name: str | None = None) -> Gtid:
    m = _GTID_RE.fullmatch(str(text).strip())
    if not m:
        raise SelectionError(f"{_named(name)}malformed GTID {_shown(text)}: expected DOMAIN-SERVER-SEQ like 0-1-4711 "
                             "(MariaDB)")
    return Gtid(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def parse_time(text: str | datetime, name: str | None = None) -> datetime:
    """A point in time; text without an offset is UTC. Accepts 'YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]'."""
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
        except ValueError:
            raise SelectionError(f"{_named(name)}malformed time {_shown(text)}: expected 'YYYY-MM-DD HH:MM:SS' "
                                 "(UTC unless an offset such as +02:00 is given)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_ident(text: str, name: str | None = None) -> str:
    """One database name: plain (letters, digits, $, _) or backtick-quoted (`my db`)."""
    m = _IDENT_RE.fullmatch(str(text).strip())
    value = (m.group(1).replace("``", "`") if m.group(1) is not None else m.group(2)) if m else ""
    if not value or len(value) > IDENT_MAX:
        raise SelectionError(f"{_named(name)}malformed database name {_shown(text)}: expected a name of at most "
                             f"{IDENT_MAX} characters; quote names with other characters than letters, digits, $ "
                             "and _ like `my-db`")
    return value


def parse_table(text: str, name: str | None = None) -> tuple[str | None, str]:
    """``db.table`` or ``table``; names that need it are backtick-quoted: `my db`.`t.1`."""
    parts = []
    rest = str(text).strip()
    while rest:
        m = _IDENT_RE.match(rest)
        if not m:
            break
        parts.append(m.group(1).replace("``", "`") if m.group(1) is not None else m.group(2))
        rest = rest[m.end():]
        if rest.startswith("."):
            rest = rest[1:]
            if not rest:
                parts = []
                break
        elif rest:
            parts = []
            break
    if not 1 <= len(parts) <= 2 or not all(parts) or any(len(p) > IDENT_MAX for p in parts):
        raise SelectionError(f"{_named(name)}malformed table name {_shown(text)}: expected db.table or table "
                             f"(names of at most {IDENT_MAX} characters); quote names with other characters than "
                             "letters, digits, $ and _ like `my db`.`t.1`")
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
        bad = sorted({str(t) for t in types or ()} - set(STATEMENT_TYPES))
        if bad:
            raise SelectionError(f"{fld('types')}: unknown statement type(s) {capped(map(_shown, bad))}: expected "
                                 f"some of {', '.join(STATEMENT_TYPES)}")
        return cls(
            databases=frozenset(parse_ident(d, "databases") for d in _items(databases, "databases")),
            tables=frozenset(parse_table(t, "tables") for t in _items(tables, "tables")),
            start_time=parse_time(start_time, "start_datetime") if start_time else None,
            stop_time=parse_time(stop_time, "stop_datetime") if stop_time else None,
            start_position=parse_position(start_position, "start_position") if start_position else None,
            stop_position=parse_position(stop_position, "stop_position") if stop_position else None,
            start_gtid=parse_gtid(start_gtid, "start_gtid") if start_gtid else None,
            stop_gtid=parse_gtid(stop_gtid, "stop_gtid") if stop_gtid else None,
            types=frozenset(types) if types else frozenset(STATEMENT_TYPES),
        )

    def validate(self) -> None:
        if not self.types:
            raise SelectionError(f"{fld('types')}: no statement type selected: choose some of insert, update, delete")
        if self.start_time and self.stop_time and self.start_time >= self.stop_time:
            word = "empty" if self.start_time == self.stop_time else "reversed"
            raise SelectionError(f"{word} time window: {fld('start_datetime')} {_t(self.start_time)} UTC is not "
                                 f"before {fld('stop_datetime')} {_t(self.stop_time)} UTC (the stop is exclusive)")
        if self.start_position and self.stop_position and self.start_position >= self.stop_position:
            word = "empty" if self.start_position == self.stop_position else "reversed"
            raise SelectionError(f"{word} position window: {fld('start_position')} {self.start_position} is not "
                                 f"before {fld('stop_position')} {self.stop_position} (the stop is exclusive)")
        if self.start_gtid and self.stop_gtid:
            if self.start_gtid.domain != self.stop_gtid.domain:
                raise SelectionError(f"GTID window {fld('start_gtid')} {self.start_gtid} .. {fld('stop_gtid')} "
                                     f"{self.stop_gtid} spans two domains: give a start and stop in the same domain")
            if self.start_gtid.seq > self.stop_gtid.seq:
                raise SelectionError(f"reversed GTID window: {fld('start_gtid')} {self.start_gtid} is after "
                                     f"{fld('stop_gtid')} {self.stop_gtid}")
        outside = sorted(as_typed(db, table) for db, table in self.tables
                         if db is not None and self.databases and db not in self.databases)
        if outside:
            raise SelectionError(f"{fld('tables')}: {capped(outside)} not in the selected {fld('databases')} "
                                 f"({capped(sorted(map(as_typed, self.databases)))}): add the database or drop the "
                                 "filter")

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
        # as Position orders (file, pos), without making one per event (the engine asks per event)
        here = (file, pos)
        start, stop = self.start_position, self.stop_position
        if start is not None and here < (start.file, start.pos):
            return False
        return not (stop is not None and here >= (stop.file, stop.pos))

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


def _items(values, name: str) -> list[str]:
    """The non-empty items of a list field (a lone string is one item)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        if not isinstance(v, str):
            raise SelectionError(f"{fld(name)}: every item must be a string, got {_shown(v)}")
        if v.strip():
            out.append(v)
    return out


def _t(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else "open"
