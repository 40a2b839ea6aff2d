"""Apply mode on a real server: exactly one row per statement, or the transaction rolls back."""
from __future__ import annotations

import io

import pytest

from mysqlbackup.flashback.apply import ApplyStopped, apply_script
from mysqlbackup.flashback.check import ScriptRefused

pytestmark = pytest.mark.server

BODY = """-- transaction 0-1-12 at binlog.000001:900
BEGIN;
UPDATE `fa`.`t` SET `id`=2, `v`='b' WHERE `id`=2;
INSERT INTO `fa`.`t` (`id`, `v`) VALUES (3, 'c 😀');
COMMIT;
-- transaction 0-1-11 at binlog.000001:500
BEGIN;
DELETE FROM `fa`.`t` WHERE `id`=9;
UPDATE `fa`.`t` SET `id`=1, `v`='a' WHERE `id`=1;
COMMIT;
"""


def sealed(body: str, per_table: dict[str, dict[str, int]], session: str | None = None) -> str:
    """A flashback file as generate writes it: header (with the counts and the sha256 of what
    follows it), session settings, ``body``."""
    import hashlib
    from collections import Counter

    from mysqlbackup.flashback.engine import SESSION, Summary
    rest = (SESSION if session is None else session) + body
    s = Summary(source="test", selection="test", per_table={k: Counter(v) for k, v in per_table.items()},
                rows=sum(sum(v.values()) for v in per_table.values()),
                transactions=sum(1 for line in body.splitlines() if line == "COMMIT;"),
                generated_note="0 found on the server, left out of INSERT and SET")
    s.body_sha256 = hashlib.sha256(rest.encode()).hexdigest()
    return s.header() + rest


# the inverse of: 1 and 2 updated, 3 deleted, 9 inserted
COUNTS = {"fa.t": {"update": 2, "delete": 1, "insert": 1}}
SCRIPT = sealed(BODY, COUNTS)


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


@pytest.fixture
def table(sandbox):
    src = sandbox.source
    src.sql("DROP DATABASE IF EXISTS fa")
    src.sql("CREATE DATABASE fa")
    src.sql("CREATE TABLE fa.t (id INT PRIMARY KEY, v VARCHAR(20) CHARACTER SET utf8mb4)")
    # the state after the bad changes: 2 was updated, 3 deleted, 9 inserted, 1 updated
    src.sql("INSERT INTO fa.t VALUES (1, 'A'), (2, 'B'), (9, 'z')")
    yield src
    src.sql("DROP DATABASE fa")


def rows(src):
    return src.sql("SELECT id, v FROM fa.t ORDER BY id")


def test_script_applies_and_restores(table):
    report = apply_script(io.StringIO(SCRIPT), table.connect, log=lambda _: None)
    assert (report.transactions, report.statements, report.stopped_at) == (2, 4, None)
    assert rows(table) == [(1, "a"), (2, "b"), (3, "c 😀")]


def test_update_of_an_unchanged_row_counts_as_matched(table):
    table.sql("UPDATE fa.t SET v='b' WHERE id=2")  # already the before-image: matched, not changed
    apply_script(io.StringIO(SCRIPT), table.connect, log=lambda _: None)
    assert rows(table) == [(1, "a"), (2, "b"), (3, "c 😀")]


def test_a_row_changed_since_stops_and_rolls_back_that_transaction(table):
    table.sql("DELETE FROM fa.t WHERE id=9")  # someone already removed it: the second block must not apply
    with pytest.raises(ApplyStopped) as info:
        apply_script(io.StringIO(SCRIPT), table.connect, log=lambda _: None)
    rep = info.value.report
    assert rep.transactions == 1 and rep.stopped_at["line"] == line_of(SCRIPT, "`id`=9")
    assert "matched no row" in str(info.value) and "`id`=9" in str(info.value)
    assert "1 transaction(s) before it were committed and stay applied" in str(info.value)
    # the first transaction is applied, the second left untouched (1 still 'A')
    assert rows(table) == [(1, "A"), (2, "b"), (3, "c 😀")]


def test_a_failing_statement_rolls_back_its_whole_transaction(table):
    table.sql("INSERT INTO fa.t VALUES (3, 'again')")  # the INSERT of row 3 will hit a duplicate key
    with pytest.raises(ApplyStopped, match="Duplicate entry"):
        apply_script(io.StringIO(SCRIPT), table.connect, log=lambda _: None)
    assert rows(table) == [(1, "A"), (2, "B"), (3, "again"), (9, "z")]  # row 2 not half-applied


def test_dry_run_changes_nothing(table):
    report = apply_script(io.StringIO(SCRIPT), table.connect, log=lambda _: None, dry_run=True)
    assert report.transactions == 2
    assert rows(table) == [(1, "A"), (2, "B"), (9, "z")]


def test_incomplete_script_is_refused_before_anything_runs():
    from mysqlbackup.flashback.check import scan
    with pytest.raises(ScriptRefused, match="no COMMIT"):
        scan(io.StringIO(SCRIPT.rsplit("COMMIT;", 1)[0]))
    assert scan(io.StringIO(SCRIPT)).settings == ["SET NAMES utf8mb4;", "SET time_zone='+00:00';",
                                                  "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,"
                                                  "NO_ENGINE_SUBSTITUTION';"]


def test_truncated_script_applies_nothing(table):
    with pytest.raises(ValueError, match="no COMMIT"):
        apply_script(io.StringIO(SCRIPT.rsplit("COMMIT;", 1)[0]), table.connect, log=lambda _: None)
    assert rows(table) == [(1, "A"), (2, "B"), (9, "z")]


def test_cli_apply_takes_credentials_from_a_defaults_file(table, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    password = "fb-" + os.urandom(6).hex()
    table.sql("CREATE USER IF NOT EXISTS 'fb'@'localhost' IDENTIFIED BY %s", (password,))
    table.sql("GRANT ALL ON fa.* TO 'fb'@'localhost'")
    cnf = tmp_path / "fb.cnf"
    cnf.write_text(f"[client]\nuser=fb\npassword=\"{password}\"\nsocket={table.socket}\n")
    cnf.chmod(0o600)
    script = tmp_path / "undo.sql"
    script.write_text(SCRIPT)
    cli = Path(__file__).resolve().parents[2] / "bin" / "mysql-flashback"
    res = subprocess.run([sys.executable, str(cli), "apply", "--file", str(script), "--target-defaults-file", str(cnf)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "applied 2 transactions, 4 statements" in res.stderr and password not in res.stderr
    assert rows(table) == [(1, "a"), (2, "b"), (3, "c 😀")]
    # a second run finds the rows already restored: row 9 is gone, so it stops (exit 3) and changes nothing
    res = subprocess.run([sys.executable, str(cli), "apply", "--file", str(script), "--target-defaults-file", str(cnf)],
                         capture_output=True, text=True)
    assert res.returncode == 3 and "STOPPED" in res.stderr, res.stderr
    table.sql("DROP USER 'fb'@'localhost'")


@pytest.mark.parametrize("setup, message", [
    (["CREATE TRIGGER fa.trg AFTER INSERT ON fa.t FOR EACH ROW SET @x = 1"], "has trigger trg (AFTER INSERT)"),
    (["ALTER TABLE fa.t ENGINE=MyISAM"], "uses MyISAM, which has no transactions"),
    (["CREATE TABLE fa.child (id INT PRIMARY KEY, t_id INT, "
      "FOREIGN KEY (t_id) REFERENCES fa.t (id) ON DELETE CASCADE) ENGINE=InnoDB"], "ON DELETE CASCADE"),
    (["ALTER TABLE fa.t ADD SYSTEM VERSIONING"], "is system-versioned"),
])
def test_what_the_binlog_cannot_account_for_is_refused_before_anything_runs(table, setup, message):
    from mysqlbackup.flashback.apply import ApplyRefused
    for stmt in setup:
        table.sql(stmt)
    with pytest.raises(ApplyRefused, match="nothing applied") as info:
        apply_script(io.StringIO(SCRIPT), table.connect, log=lambda _: None)
    assert message in str(info.value) and "--force" in str(info.value)
    assert rows(table) == [(1, "A"), (2, "B"), (9, "z")]
    if "MyISAM" not in message and "versioned" not in message:
        warnings: list[str] = []
        apply_script(io.StringIO(SCRIPT), table.connect, log=warnings.append, force=True)
        assert rows(table) == [(1, "a"), (2, "b"), (3, "c 😀")]
        assert any(message in w for w in warnings)


def test_option_files_are_read_like_the_client_reads_them(table, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    password = 'a"b\\c#d'
    table.sql("CREATE USER IF NOT EXISTS 'fbq'@'localhost' IDENTIFIED BY %s", (password,))
    table.sql("GRANT ALL ON fa.* TO 'fbq'@'localhost'")
    cnf = tmp_path / "q.cnf"
    cnf.write_text('# comment\n[client]\nuser = fbq  # inline\n'
                   'password = "a\\"b\\\\c#d"\n' f"socket={table.socket}\n")
    ok = subprocess.run(["mariadb", f"--defaults-file={cnf}", "-e", "SELECT 1"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr  # the real client agrees with the file
    script = tmp_path / "u.sql"
    script.write_text(SCRIPT)
    cli = Path(__file__).resolve().parents[2] / "bin" / "mysql-flashback"
    res = subprocess.run([sys.executable, str(cli), "apply", "--file", str(script), "--dry-run",
                          "--target-defaults-file", str(cnf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    bad = subprocess.run([sys.executable, str(cli), "apply", "--file", str(script), "--target-socket",
                          str(tmp_path / "nope.sock")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "error:" in bad.stderr, bad.stderr
    table.sql("DROP USER 'fbq'@'localhost'")
