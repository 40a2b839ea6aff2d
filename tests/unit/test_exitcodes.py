from __future__ import annotations

import pytest

from mysqlbackup import exitcodes
from mysqlbackup.exitcodes import NAMES, outcome


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (exitcodes.OK, "ok"),
        (exitcodes.INTERNAL, "retry"),
        (exitcodes.USAGE, "fail"),
        (exitcodes.PRECONDITION, "fail"),
        (exitcodes.TRANSIENT, "retry"),
        (exitcodes.PARTIAL, "retry"),
        (exitcodes.SSH_FAILED, "retry"),
        (6, "retry"),
        (127, "retry"),
        (-9, "retry"),
    ],
)
def test_outcome(code: int, expected: str) -> None:
    assert outcome(code) == expected


def test_table_matches_design() -> None:
    assert NAMES == {
        0: "OK", 1: "INTERNAL", 2: "USAGE", 3: "PRECONDITION",
        4: "TRANSIENT", 5: "PARTIAL", 255: "SSH_FAILED",
    }
    for code, name in NAMES.items():
        assert getattr(exitcodes, name) == code


def test_name() -> None:
    assert exitcodes.name(3) == "PRECONDITION"
    assert exitcodes.name(42) == "UNKNOWN(42)"
