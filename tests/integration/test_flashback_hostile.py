"""Hostile and damaged input on real servers: hand-edited flashback files, cut and corrupt binlogs.

Apply checks every line before connecting: only the inverse row statements flashback writes, on
the tables its header names, and its own session settings. Generate refuses what it cannot
invert whole (a binlog cut inside a transaction, a database never seen) and reports damaged
binlogs as one clean error line, never a traceback.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.reader import iter_file_events
from mysqlbackup.flashback.apply import apply_script
from mysqlbackup.flashback.check import ScriptRefused
from mysqlbackup.flashback.engine import FlashbackError, generate_from_files
from mysqlbackup.flashback.select import Selection

pytestmark = pytest.mark.server

CLI = Path(__file__).resolve().parents[2] / "bin" / "mysql-flashback"


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True, timeout=300)


def master_pos(src) -> tuple[str, int]:
    f, p = src.sql("SHOW MASTER STATUS")[0][:2]
    return f, int(p)


def run_sql(src, *statements: str) -> None:
    conn = src.connect()
    try:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


@dataclass
class Case:
    src: object
    path: Path
    cnf: Path
    text: str

    def state(self) -> tuple:
        """Everything a hostile line could change."""
        src = self.src
        return (src.sql("SELECT id, v FROM fh.t ORDER BY id"), src.sql("SHOW TABLES FROM fh"),
                src.sql("SELECT @@global.max_connections, @@global.read_only"),
                src.sql("SHOW GRANTS FOR 'fhx'@'localhost'"))

    def write(self, text: str, name: str = "edited.sql") -> Path:
        p = self.path.with_name(name)
        p.write_text(text)
        return p


@pytest.fixture
def case(sandbox, tmp_path):
    """A real flashback file (the CLI's, from the server's binlog) of two transactions on fh.t;
    the server in the state after the bad changes."""
    src = sandbox.source
    run_sql(src, "DROP DATABASE IF EXISTS fh", "CREATE DATABASE fh",
            "CREATE TABLE fh.t (id INT PRIMARY KEY, v VARCHAR(200) CHARACTER SET utf8mb4) ENGINE=InnoDB",
            "CREATE TABLE fh.other (id INT PRIMARY KEY) ENGINE=InnoDB", "INSERT INTO fh.other VALUES (1)",
            "CREATE TABLE fh.third (id INT PRIMARY KEY) ENGINE=InnoDB",
            "INSERT INTO fh.t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            "CREATE USER IF NOT EXISTS 'fhx'@'localhost'")
    start = master_pos(src)
    run_sql(src, "BEGIN", "UPDATE fh.t SET v='B' WHERE id=2", "DELETE FROM fh.t WHERE id=3",
            "INSERT INTO fh.t VALUES (4, 'd')", "COMMIT")
    run_sql(src, "UPDATE fh.t SET v='A' WHERE id=1")
    stop = master_pos(src)
    cnf = tmp_path / "root.cnf"
    cnf.write_text(f"[client]\nuser=root\nsocket={src.socket}\n")
    out = tmp_path / "undo.sql"
    res = cli("generate", "--binlog-dir", src.datadir, "--start-position", f"{start[0]}:{start[1]}",
              "--stop-position", f"{stop[0]}:{stop[1]}", "--databases", "fh", "-o", out, "--defaults-file", cnf)
    assert res.returncode == 0, res.stderr
    c = Case(src, out, cnf, out.read_text())
    yield c
    run_sql(src, "DROP DATABASE IF EXISTS fh", "DROP USER IF EXISTS 'fhx'@'localhost'")


AFTER = [(1, "A"), (2, "B"), (4, "d")]          # the state the bad changes left
RESTORED = [(1, "a"), (2, "b"), (3, "c")]       # the state the flashback restores


def lines_of(text: str) -> list[str]:
    return text.split("\n")


def first(lines: list[str], prefix: str, nth: int = 0) -> int:
    """Index of the nth line starting with prefix."""
    return [i for i, line in enumerate(lines) if line.startswith(prefix)][nth]


def insert_after_first_statement(extra: str):
    def edit(text: str) -> tuple[str, int]:
        lines = lines_of(text)
        i = first(lines, "BEGIN;") + 1
        lines.insert(i + 1, extra)
        return "\n".join(lines), i + 2
    return edit


def append_to_statement(extra: str, prefix: str = "DELETE "):
    def edit(text: str) -> tuple[str, int]:
        lines = lines_of(text)
        i = first(lines, prefix)
        lines[i] += extra
        return "\n".join(lines), i + 1
    return edit


def replace_statement(prefix: str, fn):
    def edit(text: str) -> tuple[str, int]:
        lines = lines_of(text)
        i = first(lines, prefix)
        lines[i] = fn(lines[i])
        return "\n".join(lines), i + 1
    return edit


def split_statement(text: str) -> tuple[str, int]:
    lines = lines_of(text)
    i = first(lines, "UPDATE ")
    head, tail = lines[i].split(" WHERE ", 1)
    lines[i:i + 1] = [head, "WHERE " + tail]
    return "\n".join(lines), i + 1


def duplicate_statement(text: str) -> tuple[str, int]:
    lines = lines_of(text)
    i = first(lines, "DELETE ")
    lines.insert(i + 1, lines[i])
    return "\n".join(lines), i + 2


def without_header(text: str) -> tuple[str, int]:
    return text[text.index("SET NAMES"):], 1


def edit_header(old: str, new: str):
    def edit(text: str) -> tuple[str, int]:
        assert old in text
        return text.replace(old, new, 1), 1
    return edit


HOSTILE = [
    ("drop table", insert_after_first_statement("DROP TABLE `fh`.`other`;"), "a DROP statement"),
    ("executable comment", insert_after_first_statement("/*!50000 DROP TABLE `fh`.`other` */"),
     "an executable comment"),
    ("executable comment ending a statement", append_to_statement(" /*!50000 OR 1=1 */"), "an executable comment"),
    ("grant appended", append_to_statement(" GRANT ALL ON *.* TO 'fhx'@'localhost';"),
     "a second statement after the ';'"),
    ("drop appended", append_to_statement("DROP TABLE `fh`.`other`;"), "a second statement after the ';'"),
    ("set global", insert_after_first_statement("SET GLOBAL max_connections=7;"), "a SET statement"),
    ("set sql_log_bin", insert_after_first_statement("SET SESSION sql_log_bin=0;"), "a SET statement"),
    ("set read_only", insert_after_first_statement("SET GLOBAL read_only=1;"), "a SET statement"),
    ("another table", insert_after_first_statement("UPDATE `fh`.`third` SET `id`=5 WHERE `id`=1;"),
     "fh.third, a table the header does not name (it names fh.other, fh.t)"),
    # fh.other was mapped in the binlog read (before the window): the header lists it with no changes
    ("a table without changes", insert_after_first_statement("UPDATE `fh`.`other` SET `id`=5 WHERE `id`=1;"),
     "UPDATE on fh.other: the header lists no updates on that table to undo"),
    ("another kind of change", insert_after_first_statement("INSERT INTO `fh`.`other` (`id`) VALUES (7);"),
     "INSERT on fh.other: the header lists no deletes on that table to undo"),
    ("another database", insert_after_first_statement("DELETE FROM `mysql`.`user` WHERE `User`='fhx';"),
     "mysql.user, a table the header does not name"),
    ("split over two lines", split_statement, "no ';' at the end"),
    ("delete without where", insert_after_first_statement("DELETE FROM `fh`.`t`;"), "a DELETE without WHERE"),
    ("update without where", insert_after_first_statement("UPDATE `fh`.`t` SET `v`='x';"), "an UPDATE without WHERE"),
    ("load data", insert_after_first_statement("LOAD DATA INFILE '/etc/hostname' INTO TABLE `fh`.`t`;"),
     "a LOAD statement"),
    ("call", insert_after_first_statement("CALL mysql.no_such_procedure();"), "a CALL statement"),
    ("do sleep", insert_after_first_statement("DO SLEEP(2);"), "a DO statement"),
    ("sleep as a value", replace_statement("UPDATE ", lambda s: s.replace("`v`='a'", "`v`=SLEEP(2)")),
     "a function call SLEEP(…) where a value belongs"),
    ("subquery as a value", replace_statement("DELETE ", lambda s: s.replace("`id`=4", "`id`=(SELECT 4)")),
     "an expression in parentheses"),
    ("or in where", replace_statement("DELETE ", lambda s: s[:-1] + " OR 1=1;"), "OR in a WHERE clause"),
    ("dash comment inside a line", replace_statement("DELETE ", lambda s: s.replace(" AND ", " -- AND ", 1)),
     "a -- comment"),
    ("hash comment", replace_statement("DELETE ", lambda s: s.replace(" AND ", " # AND ", 1)), "a # comment"),
    ("insert select", insert_after_first_statement("INSERT INTO `fh`.`t` (`id`, `v`) SELECT 9, 'x';"),
     "only INSERT … VALUES"),
    ("more values than columns", replace_statement("INSERT ", lambda s: s.replace(");", ", 'x');")),
     "2 columns but 3 values"),
    ("statement added", duplicate_statement, "statements were added"),
    ("statement outside a transaction", lambda text: (text + "DELETE FROM `fh`.`t` WHERE `id`=1;\n",
                                                      len(lines_of(text))), "outside BEGIN; … COMMIT;"),
    ("create", insert_after_first_statement("CREATE TABLE `fh`.`x` (id INT);"), "a CREATE statement"),
    ("rollback", insert_after_first_statement("ROLLBACK;"), "a ROLLBACK statement"),
    ("lower case", insert_after_first_statement("delete from `fh`.`t` where `id`=1;"), "lower case"),
    ("no header", without_header, "line 1 is not a mysql-flashback header"),
    ("no body line", edit_header("-- body: ", "-- bodx: "), "has no '-- body: …' line"),
    ("header counts edited", edit_header("in 2 transactions", "in 3 transactions"), "the header's counts disagree"),
    ("table added to the header", edit_header("--   fh.t:", "--   fh.other: update 1\n--   fh.t:"),
     "the header's counts disagree"),
]


@pytest.mark.parametrize("edit, message", [pytest.param(e, m, id=n) for n, e, m in HOSTILE])
def test_a_hostile_line_is_refused_before_anything_runs(case, edit, message):
    text, line = edit(case.text)
    path = case.write(text)
    before = case.state()
    assert before[0] == AFTER
    # the API refuses before connecting at all
    def no_connect(**_kw):
        raise AssertionError("apply connected to the server before refusing the file")
    with pytest.raises(ScriptRefused) as info:
        with open(path, "rb") as f:
            apply_script(f, no_connect, log=lambda _m: None)
    assert message in str(info.value)
    if "header" not in message and "body" not in message:
        assert f"line {line}:" in str(info.value), str(info.value)
    # the CLI, with and without --dry-run: one clean error, exit 2, nothing changed
    for extra in ([], ["--dry-run"]):
        res = cli("apply", "--file", path, "--target-defaults-file", case.cnf, *extra)
        assert res.returncode == 2, (extra, res.returncode, res.stderr)
        assert "mysql-flashback: error: refused, nothing was applied" in res.stderr, res.stderr
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert case.state() == before


def test_the_reported_scenario_drop_table_with_an_insert_in_its_transaction(case):
    """The issue's case: a DROP TABLE added to a transaction, after an INSERT of the same
    transaction and before a statement that does not match: the DROP's implicit commit used to
    keep the INSERT, and the message said the transaction was rolled back."""
    lines = lines_of(case.text)
    i = first(lines, "INSERT ")
    lines.insert(i + 1, "DROP TABLE `fh`.`other`;")
    path = case.write("\n".join(lines))
    case.src.sql("DELETE FROM fh.t WHERE id=4")  # the DELETE of row 4 after it now matches nothing
    before = case.state()
    for extra in (["--dry-run"], []):
        res = cli("apply", "--file", path, "--target-defaults-file", case.cnf, *extra)
        assert res.returncode == 2 and f"line {i + 2}: a DROP statement" in res.stderr, res.stderr
        assert case.state() == before and ("other",) in before[1]


def test_literals_that_look_like_statements_are_data(case):
    """';', '--', '#', '/*!' and quotes inside a string literal are data: a value edited that way
    keeps the statement's shape, so the edited file applies, says it was edited, and stores the text."""
    value = "b'; DROP TABLE `fh`.`other`; -- # /*!50000 x */ \\' ''"
    stored = "b'; DROP TABLE `fh`.`other`; -- # /*!50000 x */ ' '"
    lines = lines_of(case.text)
    i = first(lines, "UPDATE `fh`.`t` SET `v`='b'")
    lines[i] = lines[i].replace("SET `v`='b'", "SET `v`='" + value.replace("'", "\\'", 1) + "'", 1)
    path = case.write("\n".join(lines))
    res = cli("apply", "--file", path, "--target-defaults-file", case.cnf)
    assert res.returncode == 0, res.stderr
    assert "edited after it was written: 2 transactions / 4 statements now vs 2 / 4 written" in res.stderr
    assert case.src.sql("SELECT v FROM fh.t WHERE id=2")[0][0] == stored
    assert ("other",) in case.state()[1]


@pytest.mark.parametrize("how, now, applied", [
    ("drop the older transaction", "1 transactions / 1 statements", [(1, "a"), (2, "B"), (4, "d")]),
    ("drop one statement", "2 transactions / 3 statements", [(1, "a"), (2, "b"), (3, "c"), (4, "d")]),
    ("add a comment line", "2 transactions / 4 statements", RESTORED),
    ("change a value", "2 transactions / 4 statements", [(1, "reviewed"), (2, "b"), (3, "c")]),
])
def test_allowed_edits_apply_and_are_reported(case, how, now, applied):
    lines = lines_of(case.text)
    if how == "drop the older transaction":
        b = first(lines, "-- transaction", 1)
        e = first(lines, "COMMIT;", 1)
        del lines[b:e + 1]
    elif how == "drop one statement":
        del lines[first(lines, "DELETE ")]
    elif how == "add a comment line":
        lines.insert(first(lines, "BEGIN;") + 1, "-- reviewed by the DBA: fine")
    else:
        i = first(lines, "UPDATE `fh`.`t` SET `v`='a'")
        lines[i] = lines[i].replace("`v`='a'", "`v`='reviewed'")
    path = case.write("\n".join(lines))
    res = cli("apply", "--file", path, "--target-defaults-file", case.cnf, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"edited after it was written: {now} now vs 2 / 4 written" in res.stderr, res.stderr
    assert "nothing was applied (dry run)" in res.stderr and case.state()[0] == AFTER
    res = cli("apply", "--file", path, "--target-defaults-file", case.cnf)
    assert res.returncode == 0, res.stderr
    assert f"edited after it was written: {now} now vs 2 / 4 written" in res.stderr
    assert case.src.sql("SELECT id, v FROM fh.t ORDER BY id") == applied


def test_an_unedited_file_applies_and_dry_run_says_nothing_was_applied(case):
    res = cli("apply", "--file", case.path, "--target-defaults-file", case.cnf, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "dry run: 2 transactions, 4 statements ran and were rolled back" in res.stderr
    assert "nothing was applied (dry run)" in res.stderr and "edited" not in res.stderr
    assert case.state()[0] == AFTER
    assert "-- body: 2 transactions, 4 statements; sha256 of everything after this line: " in case.text
    res = cli("apply", "--file", case.path, "--target-defaults-file", case.cnf)
    assert res.returncode == 0 and "applied 2 transactions, 4 statements" in res.stderr, res.stderr
    assert "edited" not in res.stderr
    assert case.src.sql("SELECT id, v FROM fh.t ORDER BY id") == RESTORED


def test_stop_messages_say_exactly_what_stayed_applied(case):
    case.src.sql("DELETE FROM fh.t WHERE id=4")  # the older transaction's first statement now matches nothing
    res = cli("apply", "--file", case.path, "--target-defaults-file", case.cnf, "--dry-run")
    assert res.returncode == 3, res.stderr
    assert "that transaction was rolled back; nothing was applied (dry run: 1 transaction(s) ran and were rolled " \
           "back)" in res.stderr, res.stderr
    assert case.src.sql("SELECT id, v FROM fh.t ORDER BY id") == [(1, "A"), (2, "B")]
    res = cli("apply", "--file", case.path, "--target-defaults-file", case.cnf)
    assert res.returncode == 3
    assert "that transaction was rolled back; 1 transaction(s) before it were committed and stay applied" \
           in res.stderr, res.stderr
    assert case.src.sql("SELECT id, v FROM fh.t ORDER BY id") == [(1, "a"), (2, "B")]
    case.src.sql("UPDATE fh.t SET v='changed' WHERE id=1")  # now the newest transaction stops too
    res = cli("apply", "--file", case.path, "--target-defaults-file", case.cnf)
    assert res.returncode == 3 and "no transaction was committed: nothing was applied" in res.stderr, res.stderr


# --- generate: databases never seen, binlogs cut inside a transaction, damaged binlogs ---------------

@dataclass
class Binlog:
    src: object
    dir: Path         # a copy of the binlog holding the window (safe to damage)
    file: Path
    start: tuple[str, int]
    gtids: list[str]
    events: list[tuple[int, int, int]]   # (type, pos, size) from the start position on

    def generate(self, *extra, binlog_dir: Path | None = None) -> subprocess.CompletedProcess:
        return cli("generate", "--binlog-dir", binlog_dir or self.dir, "--start-position",
                   f"{self.start[0]}:{self.start[1]}", "-o", self.dir.parent / "out.sql", *extra)

    def cut(self, size: int) -> Path:
        d = self.dir.parent / f"cut{size}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        with open(self.file, "rb") as f:
            (d / self.file.name).write_bytes(f.read(size))
        return d

    def of(self, etype: int, nth: int = 0) -> tuple[int, int]:
        """(pos, size) of the nth event of that type after the start."""
        return [(p, s) for t, p, s in self.events if t == etype][nth]

    def in_tx(self, k: int, etypes) -> list[tuple[int, int]]:
        """(pos, size) of the events of those types in the k-th transaction after the start."""
        gtids = [p for t, p, _ in self.events if t == F.GTID_EVENT]
        lo, hi = gtids[k], gtids[k + 1] if k + 1 < len(gtids) else 1 << 62
        return [(p, s) for t, p, s in self.events if lo <= p < hi and t in etypes]


@pytest.fixture
def binlog(sandbox, tmp_path):
    """Three transactions of several row events each in a binlog of their own (copied)."""
    src = sandbox.source
    run_sql(src, "DROP DATABASE IF EXISTS fhg", "CREATE DATABASE fhg",
            "CREATE TABLE fhg.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB", "FLUSH BINARY LOGS")
    start = master_pos(src)
    gtids = []
    for k in range(3):
        run_sql(src, "BEGIN", *(f"INSERT INTO fhg.t VALUES ({10 * k + i}, 'v{i}')" for i in range(3)),
                f"UPDATE fhg.t SET v='u' WHERE id={10 * k}", "COMMIT")
        gtids.append(src.sql("SELECT @@gtid_binlog_pos")[0][0])
    run_sql(src, "FLUSH BINARY LOGS")
    d = tmp_path / "binlogs"
    d.mkdir()
    shutil.copy(Path(src.datadir) / start[0], d / start[0])
    evs = [(e.type, e.pos, e.event_size) for e in iter_file_events(d / start[0]) if e.pos >= start[1]]
    yield Binlog(src, d, d / start[0], start, gtids, evs)
    run_sql(src, "DROP DATABASE IF EXISTS fhg")


def test_a_database_never_seen_is_refused_like_a_table(binlog):
    res = binlog.generate("--databases", "fhg_typo")
    assert res.returncode == 2, res.stderr
    assert ("mysql-flashback: error: --databases: fhg_typo not found in the binlog window (the window holds row "
            "changes of the databases: fhg): check the names and the window") in res.stderr, res.stderr
    res = binlog.generate("--databases", "fhg,`nope 2`,nope1")
    assert res.returncode == 2 and "--databases: `nope 2`, nope1 not found" in res.stderr, res.stderr
    res = binlog.generate("--databases", "fhg")
    assert res.returncode == 0 and "wrote" in res.stderr, res.stderr


def test_a_binlog_cut_inside_a_transaction_is_refused_naming_it(binlog):
    gtid_pos, gtid_size = binlog.of(F.GTID_EVENT, 1)
    tm_pos, tm_size = binlog.in_tx(1, (F.TABLE_MAP_EVENT,))[0]
    rows_pos, rows_size = binlog.in_tx(1, F.ROWS_EVENT_KIND)[1]
    xid_pos, xid_size = binlog.of(F.XID_EVENT, 1)
    second = binlog.gtids[1]
    cuts = {
        "after its GTID event": gtid_pos + gtid_size,
        "inside its table map": tm_pos + tm_size // 2,
        "inside a rows event": rows_pos + rows_size - 3,
        "between two rows events": rows_pos + rows_size,
        "before its XID": xid_pos,
        "inside its XID": xid_pos + xid_size - 1,
    }
    for what, size in cuts.items():
        res = binlog.generate(binlog_dir=binlog.cut(size))
        assert res.returncode == 2, (what, res.stderr)
        assert f"error: the binlogs read end inside transaction {second} (it begins at " \
               f"{binlog.start[0]}:{gtid_pos} " in res.stderr, (what, res.stderr)
        assert "Its inverse would be partial, so nothing was written" in res.stderr, (what, res.stderr)
        assert f"--stop-position {binlog.start[0]}:{gtid_pos}" in res.stderr
        if "inside" in what:
            cut_event = max(p for _, p, _ in binlog.events if p < size)
            assert f"is cut inside an event at position {cut_event}" in res.stderr, (what, res.stderr)
        # the window's stop before it: the complete transaction before it is written
        res = binlog.generate("--stop-position", f"{binlog.start[0]}:{gtid_pos}", binlog_dir=binlog.cut(size))
        assert res.returncode == 0, (what, res.stderr)
        assert "wrote" in res.stderr and "4 rows in 1 transactions" in res.stderr, (what, res.stderr)
        if "inside" in what:
            assert (f"warning: {binlog.start[0]} ends inside an event at position {cut_event} (a file still being "
                    "written, or cut there)") in res.stderr, (what, res.stderr)
    # cut inside the GTID event that begins the transaction: none of it can be read
    res = binlog.generate(binlog_dir=binlog.cut(gtid_pos + 5))
    assert res.returncode == 2, res.stderr
    assert f"end inside an event whose header is cut too at {binlog.start[0]}:{gtid_pos}" in res.stderr, res.stderr
    res = binlog.generate(binlog_dir=binlog.cut(gtid_pos + gtid_size - 2))
    assert res.returncode == 2 and "end inside a GTID_EVENT event of" in res.stderr, res.stderr
    res = binlog.generate("--stop-position", f"{binlog.start[0]}:{gtid_pos}", binlog_dir=binlog.cut(gtid_pos + 5))
    assert res.returncode == 0 and "4 rows in 1 transactions" in res.stderr, res.stderr
    assert f"warning: {binlog.start[0]} ends inside an event at position {gtid_pos}" in res.stderr, res.stderr
    # cut right after a transaction's XID: every transaction read is whole
    res = binlog.generate(binlog_dir=binlog.cut(xid_pos + xid_size))
    assert res.returncode == 0 and "8 rows in 2 transactions" in res.stderr, res.stderr


def test_a_stop_or_start_position_inside_a_transaction_is_refused(binlog):
    gtid_pos, _ = binlog.of(F.GTID_EVENT, 1)
    rows_pos, _ = binlog.in_tx(1, F.ROWS_EVENT_KIND)[1]  # inside the 2nd transaction
    xid_pos, xid_size = binlog.of(F.XID_EVENT, 1)
    res = binlog.generate("--stop-position", f"{binlog.start[0]}:{rows_pos}")
    assert res.returncode == 2, res.stderr
    assert (f"--stop-position {binlog.start[0]}:{rows_pos} falls inside transaction {binlog.gtids[1]}"
            in res.stderr), res.stderr
    assert (f"End the window at a transaction boundary: {binlog.start[0]}:{gtid_pos} (before it) or "
            f"{binlog.start[0]}:{xid_pos + xid_size} (after it)") in res.stderr, res.stderr
    res = binlog.generate("--stop-position", f"{binlog.start[0]}:{xid_pos + xid_size}")
    assert res.returncode == 0 and "8 rows in 2 transactions" in res.stderr, res.stderr
    # the same window read by two processes (each reads only its half)
    files = [str(binlog.file)]
    sel = Selection.parse(start_position=f"{binlog.start[0]}:{binlog.start[1]}",
                          stop_position=f"{binlog.start[0]}:{rows_pos}")
    from mysqlbackup.flashback import engine, parallel
    old = parallel.PARALLEL_MIN_BYTES, parallel.MIN_SPLIT_WORK, engine.PARTS_FIRST
    parallel.PARALLEL_MIN_BYTES, parallel.MIN_SPLIT_WORK, engine.PARTS_FIRST = 1, 0, True
    try:
        with pytest.raises(FlashbackError, match=f"stop_position {binlog.start[0]}:{rows_pos} falls inside "
                                                 f"transaction {binlog.gtids[1]}"):
            generate_from_files(files, sel, str(binlog.dir.parent / "two.sql"), jobs=2)
    finally:
        parallel.PARALLEL_MIN_BYTES, parallel.MIN_SPLIT_WORK, engine.PARTS_FIRST = old
    res = cli("generate", "--binlog-dir", binlog.dir, "--start-position", f"{binlog.start[0]}:{rows_pos}",
              "-o", binlog.dir.parent / "o.sql")
    assert res.returncode == 2, res.stderr
    assert (f"--start-position {binlog.start[0]}:{rows_pos} falls inside transaction {binlog.gtids[1]}"
            in res.stderr), res.stderr


def flipped(binlog: Binlog, offset: int, name: str) -> Path:
    d = binlog.dir.parent / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    data = bytearray(binlog.file.read_bytes())
    data[offset] ^= 0x5A
    (d / binlog.file.name).write_bytes(bytes(data))
    return d


def test_damaged_binlogs_give_one_clean_error_line(binlog):
    rows_pos, rows_size = [(p, s) for t, p, s in binlog.events if t in F.ROWS_EVENT_KIND][2]
    tm_pos, tm_size = binlog.of(F.TABLE_MAP_EVENT, 0)
    name = binlog.file.name
    cases = [
        (rows_pos + rows_size // 2, f"checksum mismatch (event type {[t for t, p, _ in binlog.events if p == rows_pos][0]}"),
        (rows_pos + 2, "checksum mismatch"),                # the header's timestamp
        (rows_pos + 4, "checksum mismatch"),                # the header's type byte
        (rows_pos + rows_size - 1, "checksum mismatch"),    # the CRC itself
        (tm_pos + tm_size // 2, "checksum mismatch"),
        (30, "checksum mismatch in FORMAT_DESCRIPTION"),   # the server version in its body
        (0, "not a binlog file"),
        (rows_pos + 11, "damaged event header"),            # the size: the event would end past the file
    ]
    for offset, message in cases:
        res = binlog.generate(binlog_dir=flipped(binlog, offset, f"flip{offset}"))
        assert res.returncode == 2, (offset, res.stderr)
        assert res.stderr.startswith("mysql-flashback: error: ") and res.stderr.count("\n") == 1, (offset, res.stderr)
        assert message in res.stderr and name in res.stderr and "Traceback" not in res.stderr, (offset, res.stderr)
    # a foreign file named like a binlog
    d = binlog.dir.parent / "foreign"
    d.mkdir()
    shutil.copy(binlog.file, d / name)
    nxt = f"{name.rsplit('.', 1)[0]}.{int(name.rsplit('.', 1)[1]) + 1:06d}"
    (d / nxt).write_text("# not a binlog\n" * 40)
    res = binlog.generate(binlog_dir=d)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert f"{nxt}: not a binlog file" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_damage_in_a_binlog_without_checksums_is_a_flashback_error(fresh_sandbox, tmp_path):
    """Without CRC32 (binlog_checksum=NONE) nothing catches a flipped byte early: every flip in
    the table map and the rows events either decodes (to other values) or is refused as a
    FlashbackError naming the position, never another exception."""
    src = fresh_sandbox.source
    run_sql(src, "SET GLOBAL binlog_checksum=NONE", "CREATE DATABASE fhn",
            "CREATE TABLE fhn.t (id INT PRIMARY KEY, v VARCHAR(20), d DECIMAL(10,2), t DATETIME(3), b BLOB, "
            "e ENUM('x','y'), s SET('a','b')) ENGINE=InnoDB")
    start = master_pos(src)
    run_sql(src, "BEGIN", "INSERT INTO fhn.t VALUES (1, 'one', 1.5, '2024-01-01 00:00:00.5', 'blob', 'x', 'a,b')",
            "INSERT INTO fhn.t VALUES (2, NULL, -3, NULL, NULL, 'y', '')",
            "UPDATE fhn.t SET v='uno', d=2 WHERE id=1", "DELETE FROM fhn.t WHERE id=2", "COMMIT")
    run_sql(src, "FLUSH BINARY LOGS", "SET GLOBAL binlog_checksum=CRC32")
    path = Path(src.datadir) / start[0]
    data = path.read_bytes()
    evs = [(e.type, e.pos, e.event_size) for e in iter_file_events(path)]
    targets = [(p, s) for t, p, s in evs if p >= start[1] and (t == F.TABLE_MAP_EVENT or t in F.ROWS_EVENT_KIND)]
    assert len(targets) >= 4
    sel = Selection.parse(start_position=f"{start[0]}:{start[1]}")
    outcomes = {"decoded": 0, "refused": 0}
    work = tmp_path / "flip"
    work.mkdir()
    for pos, size in targets:
        for off in range(pos + 19, pos + size):  # every byte of the body
            damaged = bytearray(data)
            damaged[off] ^= 0xFF
            (work / start[0]).write_bytes(bytes(damaged))
            try:
                generate_from_files([str(work / start[0])], sel, str(tmp_path / "u.sql"), str(tmp_path), jobs=1)
                outcomes["decoded"] += 1
            except FlashbackError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 10, outcomes
    # and through the CLI: a flipped column count in the table map is one clean error line
    tm_pos = [p for t, p, _ in evs if t == F.TABLE_MAP_EVENT and p >= start[1]][0]
    damaged = bytearray(data)
    at = tm_pos + 19 + 6 + 2 + 1 + 3 + 1 + 1 + 1 + 1   # past table id, flags, "fhn", "t": the column count
    assert data[at] == 7
    damaged[at] = 0xFF  # an 8-byte length follows
    (work / start[0]).write_bytes(bytes(damaged))
    res = cli("generate", "--binlog-dir", work, "--start-position", f"{start[0]}:{start[1]}", "-o", tmp_path / "c.sql")
    assert res.returncode == 2 and res.stderr.startswith("mysql-flashback: error: "), res.stderr
    assert "Traceback" not in res.stderr and f"{start[0]}:{tm_pos}" in res.stderr, res.stderr
