"""Apply a flashback script: transaction by transaction, every statement exactly one row.

The script is this tool's own output: session settings, then blocks of
``-- transaction …`` / ``BEGIN;`` / one statement per line / ``COMMIT;``. Each block runs in a
transaction on a connection with CLIENT_FOUND_ROWS (an UPDATE counts the row it matched,
changed or not). A statement that does not touch exactly one row, or fails, rolls the whole
transaction back and stops the run: a row changed again since the window is reported, never
half-applied. Transactions before it stay applied (each one is complete on its own).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, TextIO

from pymysql.constants import CLIENT


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


def read_script(f: TextIO) -> tuple[list[str], Iterator[tuple[str, int, list[tuple[int, str]]]]]:
    """(session settings, iterator of (transaction header, line number, [(line number, statement)]))."""
    settings: list[str] = []
    lines = iter(enumerate(f, start=1))
    pending: list[tuple[int, str]] = []
    for no, raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("SET "):
            settings.append(line)
        elif line.startswith("-- transaction") or line == "BEGIN;":
            pending.append((no, line))
            break
        elif line and not line.startswith("--"):
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
    return settings, blocks()


def apply_script(f: TextIO, connect: Callable[..., object], log: Callable[[str], None] = print,
                 dry_run: bool = False) -> ApplyReport:
    """Run the script through ``connect(client_flag=…)`` (a pymysql connect with credentials bound)."""
    # the whole script is checked first: an incomplete or foreign file applies nothing
    _, check = read_script(f)
    for _ in check:
        pass
    f.seek(0)
    settings, blocks = read_script(f)
    report = ApplyReport(settings=settings)
    conn = connect(client_flag=CLIENT.FOUND_ROWS, autocommit=False)
    t0 = time.monotonic()
    try:
        with conn.cursor() as cur:
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
