"""Apply a flashback script: transaction by transaction, every statement exactly one row.

The script is this tool's own output: a header ending with the ``-- body:`` line (counts and
the sha256 of the body), session settings, then blocks of ``-- transaction …`` / ``BEGIN;`` /
one statement per line / ``COMMIT;``. Before anything runs, before connecting, every line is
checked (``check.scan``): only the inverse row statements flashback writes, on the tables the
header names, and its own session settings; anything else (DDL, another table, GRANT, SET,
two statements on a line, a comment hiding a statement …) refuses the whole file, naming the
lines. A file whose body no longer matches its checksum was edited: that is said up front and
recorded in the report, and it runs only because every line passed the check.

Each block runs in a transaction on a connection with CLIENT_FOUND_ROWS (an UPDATE counts the
row it matched, changed or not). A statement that does not touch exactly one row, or fails,
rolls the whole transaction back and stops the run: a row changed again since the window is
reported, never half-applied. Transactions before it stay committed (each one is complete on
its own); with ``dry_run`` every transaction is rolled back and nothing is applied.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from pymysql.constants import CLIENT

from mysqlbackup.flashback.check import ScriptCheck, ScriptRefused, binary, scan

__all__ = ["ApplyRefused", "ApplyReport", "ApplyStopped", "ScriptRefused", "apply_script", "check_script",
           "safety_problems"]

# the header line of a script written without knowing which columns are generated (engine.Summary)
UNKNOWN_GENERATED = "-- generated columns: unknown"


class ApplyRefused(ValueError):
    """The target has something the binlog cannot account for: nothing was applied."""


def check_script(f) -> ScriptCheck:
    """Every line of the file checked (``check.scan``), without connecting anywhere."""
    return scan(f)


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
    transactions: int = 0   # run to their end (committed, or rolled back in a dry run)
    statements: int = 0
    committed: int = 0      # transactions committed (0 in a dry run)
    seconds: float = 0.0
    stopped_at: dict | None = None
    settings: list[str] = field(default_factory=list)
    dry_run: bool = False
    edited: bool = False    # the body does not match the header's sha256 (every line passed the check)
    edit_note: str = ""
    check_seconds: float = 0.0
    check_bytes: int = 0

    def outcome(self) -> str:
        """What stayed applied, in words that are true whatever happened."""
        if self.dry_run:
            return (f"nothing was applied (dry run: {self.transactions} transaction(s) ran and were rolled "
                    "back)")
        if not self.committed:
            return "no transaction was committed: nothing was applied"
        return f"{self.committed} transaction(s) before it were committed and stay applied"


def apply_script(f, connect: Callable[..., object], log: Callable[[str], None] = print,
                 dry_run: bool = False, force: bool = False) -> ApplyReport:
    """Run the script through ``connect(client_flag=…)`` (a pymysql connect with credentials bound).

    ``f``: the file, binary or text (a text file object is read as UTF-8). Before connecting,
    every line is checked (``ScriptRefused`` names what is not allowed; ``force`` does not
    change that); then the target is asked about every table the script touches: triggers,
    non-transactional engines, system-versioned tables and cascading foreign keys make the
    run refuse (``ApplyRefused``) unless ``force``.
    """
    src = binary(f)
    checked = check_script(src)
    report = ApplyReport(settings=checked.settings, dry_run=dry_run, edited=checked.edited,
                         check_seconds=checked.seconds, check_bytes=checked.bytes)
    log(f"checked every line: {checked.transactions} transactions, {checked.statements} statements on "
        f"{len(checked.tables)} table(s), {checked.bytes / 1e6:,.1f} MB in {checked.seconds:.2f} s")
    if checked.edited:
        report.edit_note = f"the file was {checked.edit_note()}"
        log(f"warning: {report.edit_note}; every line is a statement a flashback file may hold, so it is applied "
            "as edited")
    generated_known = not any(line.startswith(UNKNOWN_GENERATED) for line in checked.header.lines)
    conn = connect(client_flag=CLIENT.FOUND_ROWS, autocommit=False)
    t0 = time.monotonic()
    try:
        with conn.cursor() as cur:
            problems = safety_problems(cur, checked.tables, generated_known=generated_known)
            if problems and not force:
                raise ApplyRefused("nothing applied; the target has what the binlog cannot account for:\n  - "
                                   + "\n  - ".join(problems)
                                   + "\nReview the script with this in mind; apply anyway with --force")
            for problem in problems:
                log(f"warning (--force): {problem}")
            for setting in checked.settings:
                cur.execute(setting)

            def run(header: str, start: int, stmts: list[tuple[int, str]]) -> None:
                try:
                    cur.execute("BEGIN")
                except Exception as exc:  # noqa: BLE001 - a lost connection: say what stayed applied
                    report.seconds = time.monotonic() - t0
                    raise ApplyStopped(f"stopped at the transaction of line {start} ({header or 'no comment'}): "
                                       f"BEGIN failed ({exc}); {report.outcome()}", report) from None
                try:
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
                except _Mismatch as m:
                    undone = "that transaction was rolled back"
                    try:
                        conn.rollback()
                    except Exception:  # noqa: BLE001 - the server rolls back what a lost connection left open
                        undone = "that transaction was not committed (the connection failed: the server rolls it back)"
                    report.stopped_at = {"transaction": header, "transaction_line": start, "line": m.line,
                                         "statement": m.statement, "reason": m.reason}
                    report.seconds = time.monotonic() - t0
                    raise ApplyStopped(
                        f"stopped at line {m.line} ({header or 'transaction at line ' + str(start)}): statement "
                        f"{m.reason}; {undone}; {report.outcome()}. Statement: {m.statement[:300]}",
                        report) from None
                try:
                    if dry_run:
                        conn.rollback()
                    else:
                        conn.commit()
                except Exception as exc:  # noqa: BLE001 - a COMMIT that fails leaves its outcome unknown
                    report.stopped_at = {"transaction": header, "transaction_line": start, "line": start,
                                         "statement": "COMMIT", "reason": f"failed: {exc}"}
                    report.seconds = time.monotonic() - t0
                    raise ApplyStopped(
                        f"stopped at the transaction of line {start} ({header or 'no comment'}): its "
                        f"{'ROLLBACK' if dry_run else 'COMMIT'} failed ({exc}), so whether it was applied is not "
                        f"known; {report.outcome()}", report) from None
                report.transactions += 1
                report.statements += len(stmts)
                if not dry_run:
                    report.committed += 1
                if report.transactions % 1000 == 0:
                    log(f"{'ran (dry run)' if dry_run else 'applied'} {report.transactions} transactions, "
                        f"{report.statements} statements")

            try:
                scan(src, on_block=run)  # the same check again, line by line, as each block runs
            except ScriptRefused as exc:  # the file changed after the check
                raise ApplyStopped(f"the file changed while it was applied: {exc}; {report.outcome()}",
                                   report) from None
    finally:
        conn.close()
    report.seconds = time.monotonic() - t0
    return report


class _Mismatch(Exception):
    def __init__(self, line: int, statement: str, reason: str) -> None:
        super().__init__(reason)
        self.line, self.statement, self.reason = line, statement, reason
