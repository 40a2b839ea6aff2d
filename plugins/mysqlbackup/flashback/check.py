"""What a flashback file may contain, checked line by line before anything runs.

A file ``generate`` writes is a header of ``--`` comments ending with the ``-- body:`` line (the
number of transactions and statements and the sha256 of everything after that line), the
session settings (``engine.SESSION``), then blocks ``-- transaction …`` / ``BEGIN;`` / one
inverse row statement per line / ``COMMIT;``. A reviewed file may lose transactions or
statements and may have values changed; it may not gain anything else (docs/flashback.md,
"What a reviewed file may contain"). ``scan`` checks every line:

- a statement line is one INSERT, UPDATE or DELETE of exactly the shapes ``plan.TableSQL``
  writes, with literal values only, on a table the header's "rows per table and type" lines
  name, for a change type the header counts (an INSERT undoes a delete, ...), and no more of
  them than the header says were written;
- the only SET lines are the session settings, exactly, before the first transaction;
- the only other lines are ``BEGIN;``, ``COMMIT;``, ``-- `` comment lines and empty lines.

Statements are read as the server's lexer reads them in that session (utf8mb4, backslash
escapes on): the grammar is built from token patterns (string literals with backslash escapes
and doubled quotes, ``X'..'``, ``_latin1 X'..'``, ``b'..'``, numbers, NULL, DEFAULT, backtick
names with doubled backticks, the operators ``=`` and ``<=>``), so a ``;``, ``--``, ``#`` or
``/*`` inside a literal or a quoted name is data, and anywhere else it makes the line refused.
The grammar is compiled into one regular expression per shape and matched against the bytes
of each line (no decoding, no per-token Python work); a refused line is explained by the
token-by-token reader ``tokens`` / ``explain``, which is also the reference the tests compare
the fast grammar with.
"""
from __future__ import annotations

import hashlib
import io
import re
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, NamedTuple

from mysqlbackup.text import capped

CHUNK = 16 << 20
MAX_PROBLEMS = 10
DOC = "docs/flashback.md, 'What a reviewed file may contain'"

# --- the fast grammar (bytes) ---------------------------------------------------------------------
_IDENT = rb"`[^`]*+(?:``[^`]*+)*+`"
_STRING = rb"'[^'\\]*+(?:(?:\\.|'')[^'\\]*+)*+'"
_NUMBER = rb"-?(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?"
_HEX = rb"X'(?:[0-9A-Fa-f]{2})*+'"
_VALUE = b"(?:" + b"|".join([_STRING, _NUMBER, rb"NULL", _HEX, rb"_[a-z0-9]++ " + _HEX, rb"b'[01]++'"]) + b")"
_INSERT_VALUE = b"(?:" + _VALUE + b"|DEFAULT)"
_TARGET = _IDENT + rb"\." + _IDENT
_COND = _IDENT + rb"(?:=|<=>)" + _VALUE
_WHERE = rb" WHERE " + _COND + rb"(?: AND " + _COND + rb")*+(?: LIMIT 1)?;"
_INSERT_HEAD = re.compile(rb"INSERT INTO (" + _TARGET + rb") \((" + _IDENT + rb"(?:, " + _IDENT + rb")*+)\) VALUES \(")
_UPDATE = re.compile(rb"UPDATE (" + _TARGET + rb") SET " + _IDENT + b"=" + _VALUE
                     + rb"(?:, " + _IDENT + b"=" + _VALUE + rb")*+" + _WHERE)
_DELETE = re.compile(rb"DELETE FROM (" + _TARGET + rb")" + _WHERE)
_IDENT_RE = re.compile(_IDENT)
_VALUES: dict[int, re.Pattern] = {}   # column count -> "v, v, …, v);" with exactly that many values
_NCOLS: dict[bytes, int] = {}         # column list text -> column count
MAX_COLUMNS = 4096                    # MariaDB's limit per table

# the change a statement undoes, as the header counts it
UNDOES = {"INSERT": "delete", "UPDATE": "update", "DELETE": "insert"}


def _values_re(n: int) -> re.Pattern:
    pat = _VALUES.get(n)
    if pat is None:
        pat = _VALUES[n] = re.compile((b"(?:" + _INSERT_VALUE + b", ){%d}" % (n - 1) if n > 1 else b"")
                                      + _INSERT_VALUE + rb"\);")
    return pat


def statement(line: bytes) -> tuple[str, bytes] | None:
    """(``INSERT``/``UPDATE``/``DELETE``, the quoted target) when the line is one inverse row
    statement of a shape flashback writes, else None (``explain`` says why)."""
    c = line[:1]
    if c == b"U":
        m = _UPDATE.fullmatch(line)
        return ("UPDATE", m.group(1)) if m else None
    if c == b"D":
        m = _DELETE.fullmatch(line)
        return ("DELETE", m.group(1)) if m else None
    if c == b"I":
        m = _INSERT_HEAD.match(line)
        if m is None:
            return None
        cols = m.group(2)
        n = _NCOLS.get(cols) or _count_columns(cols)
        return ("INSERT", m.group(1)) if n and _values_re(n).fullmatch(line, m.end()) else None
    return None


def unquote(ident: str) -> str:
    return ident[1:-1].replace("``", "`")


def split_target(target: bytes) -> tuple[str, str]:
    """(schema, table) of a quoted ```db`.`t``` target."""
    schema, table = _IDENT_RE.findall(target)
    return unquote(schema.decode("utf-8")), unquote(table.decode("utf-8"))


# --- the token reader (str): explanations, and the reference for the fast grammar -----------------

class Token(NamedTuple):
    kind: str
    text: str
    col: int  # 1-based column


_TOKEN_RE = re.compile(r"""
   (?P<space>\s+)
 | (?P<comment>--(?=[\s\x00-\x1f]|$)|\#|/\*)
 | (?P<hex>X'(?:[0-9A-Fa-f]{2})*')
 | (?P<bits>b'[01]+')
 | (?P<intro>_[a-z0-9]+(?=\sX'))
 | (?P<string>'(?:[^'\\]|\\.|'')*')
 | (?P<open_string>')
 | (?P<ident>`(?:[^`]|``)*`)
 | (?P<open_ident>`)
 | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
 | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
 | (?P<op><=>|<=|>=|<>|!=|:=|&&|\|\||[=<>(),.;*+\-/%!~^&|@?:{}\[\]])
 | (?P<other>.)
""", re.X | re.S)


def tokens(line: str) -> list[Token]:
    """The line as the server's lexer splits it (in the session the header sets); an
    ``open_string`` / ``open_ident`` token is a literal or name that does not end on the line."""
    out = []
    for m in _TOKEN_RE.finditer(line):
        kind = m.lastgroup
        out.append(Token(kind, m.group(), m.start() + 1))
        if kind in ("open_string", "open_ident", "comment"):
            out.append(Token("rest", line[m.end():], m.end() + 1))
            break
    return out


class _Bad(Exception):
    pass


class _Parser:
    """The statement shapes of plan.TableSQL over tokens (spacing aside)."""

    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> Token:
        t = self.peek()
        if t is None:
            raise _Bad("the statement ends early")
        self.i += 1
        return t

    def bad(self, t: Token | None, what: str) -> _Bad:
        where = f" at column {t.col} (`{t.text[:40]}`)" if t is not None else ""
        return _Bad(what + where)

    def word(self, w: str, what: str | None = None) -> None:
        t = self.take()
        if not (t.kind == "word" and t.text == w):
            raise self.bad(t, what or f"expected {w}")

    def op(self, o: str, what: str | None = None) -> None:
        t = self.take()
        if not (t.kind == "op" and t.text == o):
            raise self.bad(t, what or f"expected '{o}'")

    def ident(self, what: str = "a `quoted` column name") -> str:
        t = self.take()
        if t.kind != "ident":
            raise self.bad(t, f"expected {what}")
        return unquote(t.text)

    def target(self) -> tuple[str, str]:
        t = self.peek()
        if t is None or t.kind != "ident" or self.peek(1) is None or self.peek(1).text != ".":
            raise self.bad(t, "the table must be written `db`.`table`, as flashback writes it")
        schema = self.ident()
        self.op(".")
        return schema, self.ident("a `quoted` table name")

    def value(self, default: bool = False) -> None:
        t = self.take()
        if t.kind in ("string", "hex", "bits", "number"):
            return
        if t.kind == "intro":
            if self.take().kind != "hex":
                raise self.bad(t, "a character set introducer must be followed by X'…'")
            return
        if t.kind == "op" and t.text == "-" and (n := self.peek()) is not None and n.kind == "number":
            self.i += 1
            return
        if t.kind == "word" and (t.text == "NULL" or (default and t.text == "DEFAULT")):
            return
        if t.kind == "word" and (n := self.peek()) is not None and n.text == "(":
            raise self.bad(t, f"a function call {t.text}(…) where a value belongs: only literal values")
        if t.kind == "op" and t.text == "(":
            raise self.bad(t, "an expression in parentheses (a subquery?) where a value belongs: only literal values")
        if t.kind in ("word", "ident"):
            raise self.bad(t, "a name or keyword where a value belongs: only literal values")
        raise self.bad(t, "not a literal value")

    def where(self, kind: str) -> None:
        t = self.peek()
        if t is not None and t.text == ";":
            raise self.bad(t, f"{'an' if kind == 'UPDATE' else 'a'} {kind} without WHERE (it would "
                              f"{'change' if kind == 'UPDATE' else 'remove'} every row)")
        self.word("WHERE", f"expected WHERE ({kind} with only its WHERE on one table)")
        while True:
            self.ident()
            t = self.take()
            if not (t.kind == "op" and t.text in ("=", "<=>")):
                raise self.bad(t, "rows are matched with = and <=> only")
            self.value()
            t = self.take()
            if t.kind == "word" and t.text == "AND":
                continue
            if t.kind == "word" and t.text == "LIMIT":
                n = self.take()
                if n.text != "1":
                    raise self.bad(n, "only LIMIT 1")
                t = self.take()
            if t.text == ";":
                return
            if t.kind == "word" and t.text in ("OR", "XOR", "ORDER", "GROUP", "HAVING", "INTO", "FOR", "LOCK"):
                raise self.bad(t, f"{t.text} in a WHERE clause: only conditions joined by AND")
            raise self.bad(t, "expected AND, LIMIT 1 or ';'")

    def statement(self) -> tuple[str, str, str]:
        first = self.take()
        kind = first.text
        if kind == "INSERT":
            self.word("INTO")
            target = self.target()
            self.op("(", "expected the column list: INSERT INTO `db`.`t` (`col`, …) VALUES (…)")
            ncols = 1
            self.ident()
            while (t := self.take()).text == ",":
                self.ident()
                ncols += 1
            if t.text != ")":
                raise self.bad(t, "expected ',' or ')' in the column list")
            self.word("VALUES", "expected VALUES (…): only INSERT … VALUES with literal values")
            self.op("(")
            nvals = 1
            self.value(default=True)
            while (t := self.take()).text == ",":
                self.value(default=True)
                nvals += 1
            if t.text != ")":
                raise self.bad(t, "expected ',' or ')' in VALUES (only one row per statement)")
            if nvals != ncols:
                raise _Bad(f"{ncols} columns but {nvals} values")
            self.op(";", "expected ';' after VALUES (…) (one row per statement, nothing after it)")
        elif kind == "UPDATE":
            target = self.target()
            self.word("SET", "expected SET (an UPDATE of one table)")
            while True:
                self.ident()
                self.op("=")
                self.value()
                t = self.peek()
                if t is None or t.text != ",":
                    break
                self.i += 1
            self.where(kind)
        elif kind == "DELETE":
            self.word("FROM", "expected FROM (a DELETE of one table)")
            target = self.target()
            self.where(kind)
        else:  # pragma: no cover - explain() sorts the other first words out
            raise self.bad(first, "not a row statement")
        if self.peek() is not None:
            raise self.bad(self.peek(), "text after the ';'")
        return kind, target[0], target[1]


_SET_NOTE = "the only settings a flashback file holds are the session settings after the header"


def explain(line: str) -> str:
    """Why a line is not a statement flashback writes (said for a person reviewing the file)."""
    if line.endswith("\r"):
        return "the line ends with a carriage return (CRLF line ends): save the file with LF line ends"
    if line.startswith("--"):
        return ("a line starting with '--' and no space: the server reads that as two minus signs, not as a "
                "comment (a comment line starts with '-- ')")
    toks = [t for t in tokens(line) if t.kind != "space"]
    if not toks:
        return "a line of only spaces"
    for t in toks:
        if t.kind == "comment":
            if t.text == "/*":
                if line[t.col - 1:].startswith(("/*!", "/*M!")):
                    return (f"an executable comment /*! … */ at column {t.col}: the server runs what is inside "
                            "it")
                return f"a /* comment */ at column {t.col}: comments may only be whole lines starting with '-- '"
            return (f"a {t.text} comment at column {t.col}: it hides the rest of the line from the server's "
                    "parser; comments may only be whole lines starting with '-- '")
        if t.kind == "open_string":
            return (f"a string literal at column {t.col} that does not end on this line: a statement is one "
                    "line, as flashback writes it")
        if t.kind == "open_ident":
            return f"a `quoted name` at column {t.col} that does not end on this line"
    semis = [i for i, t in enumerate(toks) if t.kind == "op" and t.text == ";"]
    if semis and semis[0] != len(toks) - 1:
        t = toks[semis[0] + 1]
        return (f"a second statement after the ';' at column {toks[semis[0]].col} "
                f"(`{line[t.col - 1:t.col + 59]}`): one statement per line")
    first = toks[0]
    word = first.text.upper() if first.kind == "word" else ""
    if first.text not in ("INSERT", "UPDATE", "DELETE"):
        if word in ("INSERT", "UPDATE", "DELETE"):
            return f"{first.text} in lower case: flashback writes its keywords in capitals"
        if word == "SET":
            return f"a SET statement: {_SET_NOTE}, exactly as written"
        if word:
            return (f"a {word} statement: a flashback file holds only INSERT, UPDATE and DELETE row statements "
                    "(and BEGIN; / COMMIT;)")
        return f"`{first.text}` at the start of a line: not a statement flashback writes"
    if not semis:
        return "no ';' at the end: a statement is one line, as flashback writes it"
    try:
        _Parser(toks).statement()
    except _Bad as exc:
        return str(exc)
    return ("not in the exact form flashback writes it (one space between words, none around = and ',', "
            "keywords in capitals)")


def parse_statement(line: str) -> tuple[str, str, str]:
    """(kind, schema, table) by the token reader, or ValueError saying why not (tests compare
    it with ``statement``)."""
    toks = [t for t in tokens(line) if t.kind != "space"]
    if any(t.kind in ("comment", "open_string", "open_ident", "other") for t in toks):
        raise ValueError(explain(line))
    if not toks or toks[0].text not in ("INSERT", "UPDATE", "DELETE"):
        raise ValueError(explain(line))
    try:
        return _Parser(toks).statement()
    except _Bad as exc:
        raise ValueError(str(exc)) from None


# --- the header -----------------------------------------------------------------------------------

BODY_PREFIX = "-- body: "
_FIRST_RE = re.compile(r"-- mysql-flashback: inverse of ([0-9]+) row changes in ([0-9]+) transactions")
_BODY_RE = re.compile(r"-- body: ([0-9]+) transactions, ([0-9]+) statements; "
                      r"sha256 of everything after this line: ([0-9a-f]{64})")
_TABLE_RE = re.compile(r"--   (.+): ((?:insert|update|delete) [0-9]+(?:, (?:insert|update|delete) [0-9]+)*)?")
_ROWS_LINE = "-- rows per table and type:"


def body_line(transactions: int, statements: int, digest: str) -> str:
    """The header's last line (engine.Summary writes it, ``read_header`` reads it)."""
    return (f"{BODY_PREFIX}{transactions} transactions, {statements} statements; "
            f"sha256 of everything after this line: {digest}")


class ScriptRefused(ValueError):
    """The file is not what flashback writes (or lost its header): nothing was applied."""


@dataclass
class Header:
    lines: list[str]
    rows: int
    transactions: int
    statements: int
    digest: str
    per_table: dict[str, dict[str, int]]
    size: int  # bytes, the body line included


def _refuse_header(what: str) -> ScriptRefused:
    return ScriptRefused(f"refused, nothing was applied: {what}. Only files written by 'mysql-flashback generate' "
                         f"are applied ({DOC}); generate it again")


def read_header(src: BinaryIO) -> tuple[Header, bytes]:
    """The header (up to and including the ``-- body:`` line) and the bytes read past it."""
    data = b""
    pos = 0
    raw_lines: list[bytes] = []
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            more = src.read(1 << 20)
            if not more:
                if not data and not raw_lines:
                    raise _refuse_header("the file is empty")
                raise _refuse_header("the file ends inside its header: it has no '-- body: …' line")
            data = data[pos:] + more
            pos = 0
            continue
        raw = data[pos:nl]
        pos = nl + 1
        raw_lines.append(raw)
        if raw.endswith(b"\r"):
            raise _refuse_header(f"line {len(raw_lines)} ends with a carriage return (CRLF line ends): the file was "
                                 "saved with Windows line ends")
        if raw.startswith(BODY_PREFIX.encode()):
            break
        if not raw.startswith(b"--"):
            if len(raw_lines) == 1:
                raise _refuse_header("line 1 is not a mysql-flashback header ('-- mysql-flashback: inverse of …')")
            raise _refuse_header(f"the header (the '--' lines at the top) has no '-- body: …' line with the counts "
                                 f"and the sha256 of the body before line {len(raw_lines)}: the file was written "
                                 "by an older mysql-flashback, or its header was edited")
        if len(raw_lines) > 1_000_000:
            raise _refuse_header("the header has more than 1,000,000 lines")
    try:
        lines = [r.decode("utf-8") for r in raw_lines]
    except UnicodeDecodeError:
        raise _refuse_header("the header is not valid UTF-8") from None
    m = _FIRST_RE.fullmatch(lines[0])
    if not m:
        raise _refuse_header("line 1 is not a mysql-flashback header ('-- mysql-flashback: inverse of …')")
    rows, transactions = int(m.group(1)), int(m.group(2))
    b = _BODY_RE.fullmatch(lines[-1])
    if not b:
        raise _refuse_header(f"line {len(lines)}, the header's '-- body:' line, is malformed")
    per_table: dict[str, dict[str, int]] = {}
    try:
        at = lines.index(_ROWS_LINE)
    except ValueError:
        raise _refuse_header(f"the header has no '{_ROWS_LINE}' line") from None
    for no in range(at + 1, len(lines) - 1):
        line = lines[no]
        if not line.startswith("--   "):
            break
        t = _TABLE_RE.fullmatch(line)
        if not t:
            raise _refuse_header(f"line {no + 1}, a 'rows per table and type' line, is malformed")
        counts = {"insert": 0, "update": 0, "delete": 0}
        for item in (t.group(2) or "").split(", ") if t.group(2) else ():
            kind, n = item.split(" ")
            counts[kind] += int(n)
        per_table[t.group(1)] = counts
    if not any(line.startswith("-- generated columns: ") for line in lines):
        raise _refuse_header("the header has no '-- generated columns:' line")
    statements, body_tx = int(b.group(2)), int(b.group(1))
    total = sum(sum(c.values()) for c in per_table.values())
    if (body_tx, statements) != (transactions, rows) or total != rows:
        raise _refuse_header(f"the header's counts disagree ({rows} row changes in {transactions} transactions on "
                             f"line 1, {total} in the rows per table, {statements} statements in "
                             f"{body_tx} transactions on the '-- body:' line): the header was edited")
    header = Header(lines, rows, transactions, statements, b.group(3), per_table, sum(len(r) + 1 for r in raw_lines))
    return header, data[pos:]


# --- the whole file -------------------------------------------------------------------------------

@dataclass
class ScriptCheck:
    """What ``scan`` found: counts, tables, the body's sha256, the settings to run."""

    header: Header
    transactions: int = 0   # blocks with at least one statement
    statements: int = 0
    digest: str = ""
    tables: set = field(default_factory=set)   # (schema, table)
    settings: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def edited(self) -> bool:
        return self.digest != self.header.digest

    def edit_note(self) -> str:
        h = self.header
        return (f"edited after it was written: {self.transactions} transactions / {self.statements} statements now "
                f"vs {h.transactions} / {h.statements} written (the sha256 of its body differs from the header's)")


class _EncodedText:
    """A text file read as UTF-8 bytes."""

    def __init__(self, f) -> None:
        self.f = f

    def read(self, n: int) -> bytes:
        return self.f.read(n).encode("utf-8")

    def seek(self, pos: int) -> None:
        self.f.seek(pos)


def binary(f) -> BinaryIO:
    """A file object as bytes (a text file object, e.g. io.StringIO, is encoded as UTF-8)."""
    if isinstance(f, (io.RawIOBase, io.BufferedIOBase)):
        return f
    sample = f.read(0)
    if isinstance(sample, bytes):
        return f
    buffer = getattr(f, "buffer", None)
    if buffer is not None and getattr(f, "encoding", "").lower().replace("-", "") in ("utf8", "utf_8"):
        return buffer
    return _EncodedText(f)


def _shown(line: bytes, limit: int = 160) -> str:
    text = line.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def scan(f, on_block: Callable[[str, int, list[tuple[int, str]]], None] | None = None,
         session: str | None = None) -> ScriptCheck:
    """Check every line of a flashback file; ``ScriptRefused`` names the lines that are not
    allowed (up to MAX_PROBLEMS). With ``on_block``, each complete transaction is handed over
    as (its ``-- transaction`` comment, its first line number, [(line number, statement)])
    as soon as it has been read and checked (apply runs it there): a later bad line then stops
    the scan after the transactions before it."""
    if session is None:
        from mysqlbackup.flashback.engine import SESSION
        session = SESSION
    t0 = time.monotonic()
    src = binary(f)
    src.seek(0)
    header, rest = read_header(src)
    check = ScriptCheck(header)
    expected_settings = [s.encode() for s in session.splitlines()]
    n_settings = len(expected_settings)
    # per quoted target: [INSERTs left, UPDATEs left, DELETEs left, name, (schema, table)], or why not
    targets: dict[bytes, list | str] = {}
    problems: list[str] = []
    digest = hashlib.sha256()
    digest.update(rest)
    collect = on_block is not None
    si = 0
    in_tx = False
    seen_tx = False
    tx_header = b""
    tx_start = 0
    n_in_tx = 0
    stmts: list[tuple[int, str]] = []
    txs = total = 0
    size = len(rest)
    no = len(header.lines)
    pending = rest
    update, delete, insert_head = _UPDATE.fullmatch, _DELETE.fullmatch, _INSERT_HEAD.match
    ncols, values = _NCOLS, _VALUES

    def problem(line_no: int, line: bytes, why: str) -> None:
        problems.append(f"line {line_no}: {why}: {_shown(line)}")
        if len(problems) >= MAX_PROBLEMS or collect:
            raise _stop(problems)

    eof = False
    while not eof:
        chunk = src.read(CHUNK)
        if chunk:
            digest.update(chunk)
            size += len(chunk)
            data = pending + chunk if pending else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            block, pending = data[:cut], data[cut + 1:]
        else:
            eof = True
            if not pending:
                break
            block, pending = pending, b""
        try:
            block.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_no = no + block.count(b"\n", 0, exc.start) + 1
            begin = block.rfind(b"\n", 0, exc.start) + 1
            line = block[begin:].split(b"\n", 1)[0]
            problems.append(f"line {bad_no}: not valid UTF-8 (at column {exc.start - begin + 1}): {_shown(line)}")
            raise _stop(problems) from None
        for line in block.split(b"\n"):
            no += 1
            if not line:
                continue
            c = line[0]
            # the hot path: one inverse row statement (kind 0 INSERT, 1 UPDATE, 2 DELETE)
            if c == 85:    # U
                m = update(line)
                k = 1
            elif c == 68:  # D
                m = delete(line)
                k = 2
            elif c == 73:  # I
                m = insert_head(line)
                k = 0
                if m is not None:
                    cols = m.group(2)
                    n = ncols.get(cols) or _count_columns(cols)
                    vre = values.get(n) or _values_re(n)
                    if not n or vre.fullmatch(line, m.end()) is None:
                        m = None
            else:
                if line == b"COMMIT;":
                    if not in_tx:
                        problem(no, line, "COMMIT; without BEGIN;")
                        continue
                    in_tx = False
                    if n_in_tx:
                        txs += 1
                        total += n_in_tx
                    if collect:
                        on_block(tx_header.decode("utf-8"), tx_start or no, stmts)
                    tx_header, tx_start = b"", 0
                elif line == b"BEGIN;":
                    if in_tx:
                        problem(no, line, f"BEGIN; inside the transaction that began at line {tx_start} (no "
                                          "COMMIT; before it)")
                        continue
                    if si < n_settings:
                        problem(no, line, "the session settings are missing before the first transaction "
                                          f"(expected {expected_settings[si].decode()!r} after the header)")
                        si = n_settings
                    in_tx, seen_tx, n_in_tx = True, True, 0
                    tx_start = tx_start or no
                    stmts = []
                elif line.startswith(b"-- ") or line == b"--":
                    if not in_tx and line.startswith(b"-- transaction"):
                        tx_header, tx_start = line, no
                elif (si < n_settings and not seen_tx and line == expected_settings[si]):
                    check.settings.append(line.decode())
                    si += 1
                elif line.strip(b" \t"):
                    problem(no, line, explain(line.decode("utf-8", "replace")))
                continue
            if m is None:
                problem(no, line, explain(line.decode("utf-8", "replace")))
                continue
            if not in_tx:
                problem(no, line, "a statement outside BEGIN; … COMMIT;")
                continue
            target = m.group(1)
            info = targets.get(target)
            if info is None:
                info = targets[target] = _target_info(target, header)
            if type(info) is str:
                problem(no, line, f"{KINDS[k]} on {info}")
                continue
            left = info[k] - 1
            info[k] = left
            if left < 0:
                written = info[5][k]
                if not written:
                    problem(no, line, f"{KINDS[k]} on {info[3]}: the header lists no {UNDOES[KINDS[k]]}s on that "
                                      "table to undo")
                elif left == -1:
                    problem(no, line, f"{KINDS[k]} number {written + 1:,} on {info[3]}: the file was written with "
                                      f"{written:,} (undoing its {UNDOES[KINDS[k]]}s): statements were added")
                continue
            n_in_tx += 1
            if collect:
                stmts.append((no, line.decode("utf-8")))
    if in_tx:
        problems.append(f"the file ends inside the transaction starting at line {tx_start} (no COMMIT;): it is "
                        "incomplete, apply nothing from it")
    elif si < n_settings:
        problems.append(f"the session settings are missing (expected {expected_settings[si].decode()!r} after the "
                        "header)")
    check.digest = digest.hexdigest()
    check.transactions, check.statements = txs, total
    check.bytes = header.size + size
    if not check.edited and not problems and (txs, total) != (header.transactions, header.statements):
        problems.append(f"the body's sha256 matches the header but its counts ({txs} transactions, {total} "
                        f"statements) do not ({header.transactions}, {header.statements}): the header was edited")
    if problems:
        raise _stop(problems)
    check.tables = {info[4] for info in targets.values()}
    check.seconds = time.monotonic() - t0
    return check


KINDS = ("INSERT", "UPDATE", "DELETE")


def _count_columns(cols: bytes) -> int:
    """The number of names in an INSERT's column list (0: more than a table can have)."""
    n = len(_IDENT_RE.findall(cols))
    if n > MAX_COLUMNS:
        return 0
    if len(_NCOLS) < 100_000:
        _NCOLS[cols] = n
    return n


def _stop(problems: list[str]) -> ScriptRefused:
    more = "" if len(problems) < MAX_PROBLEMS else f" (stopped at the first {MAX_PROBLEMS})"
    return ScriptRefused("refused, nothing was applied: the file holds what a flashback file may not hold "
                         f"({DOC}){more}:\n  " + "\n  ".join(problems))


def _target_info(target: bytes, header: Header) -> list | str:
    """[INSERTs, UPDATEs, DELETEs allowed, name, (schema, table), (the same counts)] for a target
    the header names, else the reason it is refused."""
    try:
        schema, table = split_target(target)
    except UnicodeDecodeError:
        return "a table name that is not UTF-8"
    name = f"{schema}.{table}"
    counts = header.per_table.get(name)
    if counts is None:
        return (f"{name}, a table the header does not name (it names {capped(sorted(header.per_table))}): "
                "a flashback file only changes the tables it was written for")
    written = tuple(counts[UNDOES[k]] for k in KINDS)
    return [*written, name, (schema, table), written]
