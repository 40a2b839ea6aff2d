"""Host-script exit codes and what each means for an Airflow task.

The table is mirrored in ``include/scripts/hostkit.py``; a test checks they agree.
"""

from __future__ import annotations

from typing import Literal

Outcome = Literal["ok", "fail", "retry"]

OK = 0
INTERNAL = 1  # unexpected error: retry
USAGE = 2  # bad input: fail, retrying cannot help
PRECONDITION = 3  # space, missing binary, wrong state: fail until someone acts
TRANSIENT = 4  # server unreachable, lock wait: retry
PARTIAL = 5  # work started and was cleaned up: retry
SSH_FAILED = 255  # ssh(1) itself failed (connection, auth): retry

NAMES: dict[int, str] = {
    OK: "OK",
    INTERNAL: "INTERNAL",
    USAGE: "USAGE",
    PRECONDITION: "PRECONDITION",
    TRANSIENT: "TRANSIENT",
    PARTIAL: "PARTIAL",
    SSH_FAILED: "SSH_FAILED",
}

_OUTCOMES: dict[int, Outcome] = {
    OK: "ok",
    INTERNAL: "retry",
    USAGE: "fail",
    PRECONDITION: "fail",
    TRANSIENT: "retry",
    PARTIAL: "retry",
    SSH_FAILED: "retry",
}


def outcome(code: int) -> Outcome:
    """Return ``"ok"``, ``"fail"`` (no retry) or ``"retry"`` for an exit code.

    Unknown codes (a signal, a crash outside our scripts) are treated as ``"retry"``.
    """
    return _OUTCOMES.get(code, "retry")


def name(code: int) -> str:
    """Return the table name of ``code``, or ``UNKNOWN(<code>)``."""
    return NAMES.get(code, f"UNKNOWN({code})")
