"""Apply a flashback script: transaction by transaction, every statement exactly one row.

The script is this tool's own output: session settings, then blocks of
``-- transaction …`` / ``BEGIN;`` / one statement per line / ``COMMIT;``. Each block runs in a
transaction on a connection with CLIENT_FOUND_ROWS (an UPDATE counts the row it matched,
changed or not). A statement that does not touch exactly one row, or fails, rolls the whole
transaction back and stops the run: a row changed again since the window is reported, never
half-applied. Transactions before it stay applied (each one is complete on its own).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, TextIO

from pymysql.constants import CLIENT


# the header line of a script written without knowing which columns are generated (engine.Summary)
UNKNOWN_GENERATED = "-- generated columns: unknown"


class ApplyRefused(ValueError):
    """The target has something the binlog cannot account for: nothing was applied."""


_TARGET_RE = re.compile(r"^(?:INSERT INTO|UPDATE|DELETE FROM) `((?:[^`]|``)+)`\.`((?:[^`]|``)+)`")


def script_tables(statements) -> set[tuple[str, str]]:
    """(schema, table) of every statement (this tool's own statement shapes)."""
    out = set()
    for stmt in statements:
        m = _TARGET_RE.match(stmt)
        if m:
            out.add((m.group(1).replace("``", "`"), m.group(2).replace("``", "`")))
    return out


def safety_problems(cur, tables: set[tuple[str, str]], generated_known: bool = True) -> list[str]:
    """What on the target would make the inverse wrong or half-applied, for these tables.

    ``generated_known``: the script was written knowing the generated columns (left out of
    INSERT and SET); when not, a table with generated columns on the target is a problem
    (the server refuses to be given their values)."""
    if not tables:
        return []
    pairs = sorted(tables)
    cond = " OR ".join(["({s}=%s AND {t}=%s)"] * len(pairs))
    args = [x for pair in pairs for x in pair]
    problems = []
    if not generated_known:
        cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME, GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION SEPARATOR ', ') "
                    "FROM information_schema.COLUMNS WHERE IS_GENERATED = 'ALWAYS' AND ("
                    + cond.format(s="TABLE_SCHEMA", t="TABLE_NAME") + ") GROUP BY TABLE_SCHEMA, TABLE_NAME", args)
        for schema, table, columns in cur.fetchall():
            problems.append(f"{schema}.{table} has generated columns ({columns}) and the script was written without "
                            "asking a server which columns are generated, so it gives them values, which the "
                            "server refuses: generate it again with --host/--socket/--defaults-file beside "
                            "--binlog-dir (or with --apply and the --target-* options)")
    cur.execute("SELECT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION "
                "FROM information_schema.TRIGGERS WHERE "
                + cond.format(s="EVENT_OBJECT_SCHEMA", t="EVENT_OBJECT_TABLE"), args)
    for schema, table, name, timing, event in cur.fetchall():
        problems.append(f"{schema}.{table} has trigger {name} ({timing} {event}): it fires again when the inverse "
                        "is applied, and its own earlier effects are already in the script")
    cur.execute("SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.ENGINE, e.TRANSACTIONS, t.TABLE_TYPE "
                "FROM information_schema.TABLES t LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
                "WHERE " + cond.format(s="t.TABLE_SCHEMA", t="t.TABLE_NAME"), args)
    for schema, table, engine, transactions, table_type in cur.fetchall():
        if str(transactions or "").upper() != "YES":
            problems.append(f"{schema}.{table} uses {engine}, which has no transactions: a stopped transaction "
                            "could not be rolled back (it would be half-applied)")
        if str(table_type or "").upper() == "SYSTEM VERSIONED":
            problems.append(f"{schema}.{table} is system-versioned: its history rows cannot be undone by "
                            "ordinary statements")
    cur.execute("SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, UNIQUE_CONSTRAINT_SCHEMA, "
                "REFERENCED_TABLE_NAME, DELETE_RULE, UPDATE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS "
                "WHERE (DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') OR UPDATE_RULE IN "
                "('CASCADE', 'SET NULL', 'SET DEFAULT')) AND ("
                + cond.format(s="UNIQUE_CONSTRAINT_SCHEMA", t="REFERENCED_TABLE_NAME") + ")", args)
    for cschema, child, name, pschema, parent, on_delete, on_update in cur.fetchall():
        problems.append(f"{pschema}.{parent} is referenced by {cschema}.{child} ({name}: ON DELETE {on_delete}, "
                        f"ON UPDATE {on_update}): changes the foreign key made to {cschema}.{child} are not in the "
                        "binlog, so they cannot be undone")
    return problems


class ApplyStopped(RuntimeError):
    """The run stopped at a statement; that transaction was rolled back."""

    def __init__(self, message: str, report: "ApplyReport") -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ApplyReport:
    transactions: int = 0
    statements: int = 0
    seconds: float = 0.0
    stopped_at: dict | None = None
    settings: list[str] = field(default_factory=list)


def read_script(f: TextIO) -> tuple[list[str], list[str], Iterator[tuple[str, int, list[tuple[int, str]]]]]:
    """(session settings, header comments, iterator of (transaction header, line number,
    [(line number, statement)]))."""
    settings: list[str] = []
    comments: list[str] = []
    lines = iter(enumerate(f, start=1))
    pending: list[tuple[int, str]] = []
    for no, raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("SET "):
            settings.append(line)
        elif line.startswith("-- transaction") or line == "BEGIN;":
            pending.append((no, line))
            break
        elif line.startswith("--"):
            comments.append(line)
        elif line:
            raise ValueError(f"line {no}: unexpected text before the first transaction: {line[:80]!r}")

    def blocks() -> Iterator[tuple[str, int, list[tuple[int, str]]]]:
        header, start = "", 0
        stmts: list[tuple[int, str]] = []
        in_tx = False
        for no, line in [*pending, *((n, r.rstrip("\n")) for n, r in lines)]:
            if not in_tx:
                if line.startswith("-- transaction"):
                    header, start = line, no
                elif line == "BEGIN;":
                    in_tx, stmts = True, []
                    start = start or no
                elif line and not line.startswith("--"):
                    raise ValueError(f"line {no}: expected BEGIN; or a transaction comment, got {line[:80]!r}")
            elif line == "COMMIT;":
                yield header, start, stmts
                header, start, in_tx = "", 0, False
            elif line and not line.startswith("--"):
                stmts.append((no, line))
        if in_tx:
            raise ValueError(f"the script ends inside the transaction starting at line {start} (no COMMIT;): "
                             "it is incomplete, apply nothing from it")
    return settings, comments, blocks()


def apply_script(f: TextIO, connect: Callable[..., object], log: Callable[[str], None] = print,
                 dry_run: bool = False, force: bool = False) -> ApplyReport:
    """Run the script through ``connect(client_flag=…)`` (a pymysql connect with credentials bound).

    Before anything runs, the whole file is checked (an incomplete or foreign file applies
    nothing) and the target is asked about every table the script touches: triggers,
    non-transactional engines, system-versioned tables and cascading foreign keys make the
    run refuse (``ApplyRefused``) unless ``force``.
    """
    _, comments, check = read_script(f)
    tables: set[tuple[str, str]] = set()
    for _header, _start, stmts in check:
        tables |= script_tables(s for _no, s in stmts)
    f.seek(0)
    settings, _, blocks = read_script(f)
    report = ApplyReport(settings=settings)
    conn = connect(client_flag=CLIENT.FOUND_ROWS, autocommit=False)
    t0 = time.monotonic()
    try:
        with conn.cursor() as cur:
            problems = safety_problems(cur, tables, generated_known=not any(
                line.startswith(UNKNOWN_GENERATED) for line in comments))
            if problems and not force:
                raise ApplyRefused("nothing applied; the target has what the binlog cannot account for:\n  - "
                                   + "\n  - ".join(problems)
                                   + "\nReview the script with this in mind; apply anyway with --force")
            for problem in problems:
                log(f"warning (--force): {problem}")
            for s in settings:
                cur.execute(s)
            for header, start, stmts in blocks:
                try:
                    cur.execute("BEGIN")
                    for no, stmt in stmts:
                        try:
                            affected = cur.execute(stmt)
                        except Exception as exc:  # noqa: BLE001 - any server error stops the run
                            hint = ""
                            if getattr(exc, "args", (None,))[0] == 1906:
                                hint = (" (the table has generated columns: generate the script with access to the "
                                        "server, live or with --host/--defaults-file beside --binlog-dir, so they "
                                        "are left out)")
                            raise _Mismatch(no, stmt, f"failed: {exc}{hint}") from exc
                        if affected != 1:
                            why = ("matched no row: it was changed or removed after the window" if affected == 0
                                   else f"touched {affected} rows, expected exactly 1")
                            raise _Mismatch(no, stmt, why)
                    if dry_run:
                        conn.rollback()
                    else:
                        conn.commit()
                except _Mismatch as m:
                    conn.rollback()
                    report.stopped_at = {"transaction": header, "transaction_line": start, "line": m.line,
                                         "statement": m.statement, "reason": m.reason}
                    report.seconds = time.monotonic() - t0
                    raise ApplyStopped(
                        f"stopped at line {m.line} ({header or 'transaction at line ' + str(start)}): statement "
                        f"{m.reason}; that transaction was rolled back, {report.transactions} earlier "
                        f"transaction(s) stay applied. Statement: {m.statement[:300]}", report) from None
                report.transactions += 1
                report.statements += len(stmts)
                if report.transactions % 1000 == 0:
                    log(f"applied {report.transactions} transactions, {report.statements} statements")
    finally:
        conn.close()
    report.seconds = time.monotonic() - t0
    return report


class _Mismatch(Exception):
    def __init__(self, line: int, statement: str, reason: str) -> None:
        super().__init__(reason)
        self.line, self.statement, self.reason = line, statement, reason
