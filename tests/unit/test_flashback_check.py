"""What a flashback file may contain: the statement grammar, the token reader, the header, the scan."""
from __future__ import annotations

import hashlib
import io
import random
import time
from collections import Counter

import pytest

from mysqlbackup.binlog.decode import quote_text, string_literal
from mysqlbackup.flashback.check import (ScriptRefused, explain, parse_statement, read_header, scan, split_target,
                                         statement, tokens)
from mysqlbackup.flashback.engine import SESSION, Summary
from mysqlbackup.flashback.plan import TableSQL

# --- statements flashback writes ------------------------------------------------------------------

NAMES = ["id", "we`ird", "a.b", "semi;colon", "dash -- dash", "hash # x", "/*!50000 c */", "ünï 表", "q'uote", "``",
         "sp ace", "x\\y", "(paren)", "tab\tname"]
TEXTS = ["plain", "", "it's", "back\\slash", "new\nline", "cr\rx", "nul\0z", "ctrl-z\x1a", "; DROP TABLE t; -- ",
         "# not a comment", "/*! 50000 nope */", "😀 emoji", "'' doubled", "\\'", "`tick`", "%s %d", "\t tab"]


def literal(rnd: random.Random) -> str:
    r = rnd.randrange(12)
    if r == 0:
        return "NULL"
    if r == 1:
        return str(rnd.randint(-2**63, 2**64))
    if r == 2:
        return repr(rnd.choice([rnd.uniform(-1e300, 1e300), 1 / 3, -0.0, 5e-324, 1e16, 1.5e-07, 123456789.0]))
    if r == 3:
        return f"{rnd.choice(['', '-'])}{rnd.randint(0, 10**12)}.{rnd.randint(0, 99):02d}"
    if r == 4:
        return quote_text(rnd.choice(TEXTS) + rnd.choice(TEXTS))
    if r == 5:
        return string_literal(rnd.randbytes(rnd.randint(0, 12)), rnd.choice(["latin1", "binary", "utf8mb4", "cp1251"]))
    if r == 6:
        return "b'" + format(rnd.randint(0, 2**64), "b") + "'"
    if r == 7:
        return rnd.choice(["'0000-00-00'", "'2024-02-29 12:34:56.789000'", "'-838:59:59'", "'0000-00-00 00:00:00'"])
    if r == 8:
        return "''"
    if r == 9:
        return rnd.choice(["0000", "2155", "0"])
    if r == 10:
        return string_literal(b"\xff\xfe bad utf8", "utf8mb4")  # _utf8mb4 X'..'
    return quote_text("".join(rnd.choice("ab'\\;-#/*`\"\0\n") for _ in range(rnd.randint(0, 10))))


def statements(rnd: random.Random, n: int):
    """(line, kind, schema, table) of n statements as plan.TableSQL writes them."""
    for _ in range(n):
        schema, table = rnd.choice(NAMES), rnd.choice(NAMES)
        ncols = rnd.randint(1, 7)
        cols = [f"c{i}{rnd.choice(NAMES)}" for i in range(ncols)]
        key = rnd.choice([None, [0], list(range(min(ncols, 2)))])
        gen = frozenset(rnd.sample(cols, rnd.randint(0, ncols - 1))) if rnd.random() < 0.2 else frozenset()
        t = TableSQL(schema, table, cols, key, guard_row=rnd.random() < 0.7, generated=gen)
        before = [literal(rnd) for _ in cols]
        kind = rnd.choice(["insert", "update", "delete"])
        if kind == "insert":
            yield t.undo_insert(before), "DELETE", schema, table
        elif kind == "delete":
            yield t.undo_delete(before), "INSERT", schema, table
        else:
            after = [literal(rnd) if rnd.random() < 0.5 else v for v in before]
            if not t.guard_row and key:
                after = [v if i in key else None for i, v in enumerate(after)]
            yield t.undo_update(before, after), "UPDATE", schema, table


def test_every_statement_flashback_writes_passes_both_readers():
    rnd = random.Random(7)
    for line, kind, schema, table in statements(rnd, 3000):
        found = statement(line.encode())
        assert found is not None, (line, explain(line))
        assert found[0] == kind and split_target(found[1]) == (schema, table), line
        assert parse_statement(line) == (kind, schema, table), line


HOSTILE_SNIPPETS = [";", "; DROP TABLE x;", " -- x", "-- ", "#", "/*", "/*!50000 DROP TABLE x */", "*/", "'", "`",
                    "\\", " OR 1=1", "SLEEP(1)", "(SELECT 1)", ",", " ", "=", "<=>", "'';", "\r", "\x00", "`;`", "';'"]


def test_the_fast_grammar_never_accepts_what_the_token_reader_refuses():
    """Random edits of real statements: whatever the fast grammar accepts, the token reader reads
    as the same one statement, with one ';' at its end and no comment; whatever the token reader
    refuses, the fast grammar refuses too."""
    rnd = random.Random(11)
    accepted = refused = 0
    for line, _kind, _schema, _table in statements(rnd, 4000):
        for _ in range(6):
            i = rnd.randrange(len(line) + 1)
            if rnd.random() < 0.3:
                mutated = line[:i] + line[i + 1:]
            else:
                mutated = line[:i] + rnd.choice(HOSTILE_SNIPPETS) + line[i:]
            fast = statement(mutated.encode())
            try:
                slow = parse_statement(mutated)
            except ValueError:
                slow = None
            if fast is None:
                refused += 1
                continue
            accepted += 1
            assert slow is not None, (mutated, explain(mutated))
            assert (slow[0], slow[1], slow[2]) == (fast[0], *split_target(fast[1])), mutated
            toks = [t for t in tokens(mutated) if t.kind != "space"]
            assert not any(t.kind in ("comment", "open_string", "open_ident", "other") for t in toks), mutated
            assert [t.text for t in toks if t.kind == "op" and t.text == ";"] == [";"] and toks[-1].text == ";"
    assert accepted > 1000 and refused > 5000, (accepted, refused)


@pytest.mark.parametrize("line", [
    "INSERT INTO `a`.`b` (`x`, `y`) VALUES ('; DROP TABLE t; --', '# /*! x */');",
    "UPDATE `a;b`.`c -- d` SET `#x`='it\\'s' WHERE `id`=1 AND `v`<=>'a''b';",
    "DELETE FROM `a`.`b` WHERE `x`=_latin1 X'3b2d2d' AND `y`<=>b'0101' AND `z`<=>NULL LIMIT 1;",
    "INSERT INTO `a`.`b` (`x`, `y`, `z`) VALUES (DEFAULT, -1.5e-07, X'');",
    "DELETE FROM `we``ird`.```` WHERE `k`='\\\\';",
])
def test_statement_text_inside_literals_and_names_is_data(line):
    assert statement(line.encode()) is not None
    parse_statement(line)


@pytest.mark.parametrize("line, why", [
    ("DROP TABLE `a`.`b`;", "a DROP statement"),
    ("/*!50000 DROP TABLE `a`.`b` */", "an executable comment"),
    ("/*M!100000 DROP TABLE x */", "an executable comment"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 /*!50000 OR 1=1 */;", "an executable comment"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 /* note */;", "a /* comment */"),
    ("UPDATE `a`.`b` SET `x`=1 WHERE `k`=1; GRANT ALL ON *.* TO u;", "a second statement after the ';' at column 37"),
    ("DELETE FROM `a`.`b` WHERE `k`=1;DROP TABLE x;", "a second statement"),
    ("DELETE FROM `a`.`b` WHERE `k`=1; -- x", "a -- comment"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 -- AND `v`<=>2;", "a -- comment at column 33"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 # AND `v`<=>2;", "a # comment"),
    ("SET GLOBAL max_connections=1;", "a SET statement"),
    ("SET SESSION sql_log_bin=0;", "a SET statement"),
    ("SET NAMES latin1;", "a SET statement"),
    ("DELETE FROM `a`.`b`;", "a DELETE without WHERE"),
    ("UPDATE `a`.`b` SET `x`=1;", "an UPDATE without WHERE"),
    ("LOAD DATA INFILE '/etc/passwd' INTO TABLE `a`.`b`;", "a LOAD statement"),
    ("CALL p();", "a CALL statement"),
    ("DO SLEEP(5);", "a DO statement"),
    ("GRANT ALL ON *.* TO 'u'@'%';", "a GRANT statement"),
    ("TRUNCATE `a`.`b`;", "a TRUNCATE statement"),
    ("REPLACE INTO `a`.`b` (`x`) VALUES (1);", "a REPLACE statement"),
    ("SELECT 1;", "a SELECT statement"),
    ("UPDATE `a`.`b` SET `x`=SLEEP(5) WHERE `k`=1;", "a function call SLEEP(…)"),
    ("DELETE FROM `a`.`b` WHERE `k`=(SELECT 1);", "an expression in parentheses"),
    ("DELETE FROM `a`.`b` WHERE `k`=`other`;", "a name or keyword where a value belongs"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 OR 1=1;", "OR in a WHERE clause"),
    ("DELETE FROM `a`.`b` WHERE `k`>1;", "rows are matched with = and <=> only"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 LIMIT 5;", "only LIMIT 1"),
    ("DELETE FROM `b` WHERE `k`=1;", "the table must be written `db`.`table`"),
    ("DELETE FROM b WHERE `k`=1;", "the table must be written `db`.`table`"),
    ("UPDATE `a`.`b`, `a`.`c` SET `x`=1 WHERE `k`=1;", "expected SET"),
    ("INSERT INTO `a`.`b` (`x`) VALUES (1), (2);", "expected ';' after VALUES"),
    ("INSERT INTO `a`.`b` (`x`, `y`) VALUES (1);", "2 columns but 1 values"),
    ("INSERT INTO `a`.`b` (`x`) SELECT 1;", "only INSERT … VALUES"),
    ("INSERT INTO `a`.`b` (`x`) VALUES (1) ON DUPLICATE KEY UPDATE `x`=2;", "expected ';' after VALUES"),
    ("UPDATE `a`.`b` SET `x`=DEFAULT WHERE `k`=1;", "a name or keyword where a value belongs"),
    ("UPDATE `a`.`b` SET `x`='abc", "a string literal at column 24 that does not end on this line"),
    ("UPDATE `a`.`b` SET `x`=1 WHERE `k`=1", "no ';' at the end"),
    ("WHERE `k`=1;", "a WHERE statement"),
    ("delete from `a`.`b` where `k`=1;", "lower case"),
    ("DELETE  FROM `a`.`b` WHERE `k`=1;", "not in the exact form"),
    ("DELETE FROM `a`.`b` WHERE `k` = 1;", "not in the exact form"),
    ("DELETE FROM `a`.`b` WHERE `k`=1; ", "not in the exact form"),
    ("DELETE FROM `a`.`b` WHERE `k`=1;\r", "carriage return"),
    ("DELETE FROM `a`.`b` WHERE `k`=x'00';", "a name or keyword"),
    ("DELETE FROM `a`.`b` WHERE `k`=0x00;", "expected AND, LIMIT 1 or ';' at column 32 (`x00`)"),
    ("DELETE FROM `a`.`b` WHERE `k`=_latin1'x';", "a name or keyword"),
    ("DELETE FROM `a`.`b` WHERE `k`=@v;", "not a literal value"),
    ("DELETE FROM `a`.`b` WHERE `k`=1 AND `v`<=>X'abc';", "a name or keyword"),
])
def test_refused_lines_are_explained(line, why):
    assert statement(line.encode()) is None
    assert why in explain(line), explain(line)
    if why in ("not in the exact form", "carriage return"):  # the token reader does not look at spacing
        parse_statement(line)
    else:
        with pytest.raises(ValueError):
            parse_statement(line)


def test_tokens_know_literals_names_and_comments():
    toks = [(t.kind, t.text) for t in tokens("UPDATE `a``b`.`t` SET `x`='it\\'s; -- no' WHERE `k`<=>-5 # c")
            if t.kind != "space"]
    assert toks == [("word", "UPDATE"), ("ident", "`a``b`"), ("op", "."), ("ident", "`t`"), ("word", "SET"),
                    ("ident", "`x`"), ("op", "="), ("string", "'it\\'s; -- no'"), ("word", "WHERE"),
                    ("ident", "`k`"), ("op", "<=>"), ("op", "-"), ("number", "5"), ("comment", "#"), ("rest", " c")]
    assert [t.kind for t in tokens("_latin1 X'00ff' b'01' --x")] == ["intro", "space", "hex", "space", "bits",
                                                                       "space", "op", "op", "word"]


# --- header and whole files -----------------------------------------------------------------------

BODY = """-- transaction 0-1-12 at binlog.000001:900 (2026-11-24 10:00:00 UTC), 2 rows
BEGIN;
UPDATE `s`.`t` SET `v`='b' WHERE `id`=2 AND `v`<=>'B';
INSERT INTO `s`.`t` (`id`, `v`) VALUES (3, 'c');
COMMIT;
-- transaction 0-1-11 at binlog.000001:500 (2026-11-24 09:59:00 UTC), 1 rows
BEGIN;
DELETE FROM `s`.`t` WHERE `id`=9 AND `v`<=>'z';
COMMIT;
"""
COUNTS = {"s.t": Counter(update=1, delete=1, insert=1), "s.u": Counter()}


def sealed(body: str = BODY, per_table=None, rows: int | None = None, transactions: int | None = None) -> str:
    per_table = COUNTS if per_table is None else per_table
    rest = SESSION + body
    s = Summary(source="archive x", selection="all", per_table=per_table,
                rows=sum(sum(c.values()) for c in per_table.values()) if rows is None else rows,
                transactions=body.count("COMMIT;\n") if transactions is None else transactions)
    s.body_sha256 = hashlib.sha256(rest.encode()).hexdigest()
    return s.header() + rest


def test_an_unedited_file_passes_and_says_what_it_holds():
    c = scan(io.StringIO(sealed()))
    assert (c.transactions, c.statements, c.edited) == (2, 3, False)
    assert c.tables == {("s", "t")} and c.settings == SESSION.splitlines()
    assert c.header.per_table["s.u"] == {"insert": 0, "update": 0, "delete": 0}
    # the same as bytes, and from a real file object
    assert scan(io.BytesIO(sealed().encode())).digest == c.digest == c.header.digest


def test_the_engine_fills_the_checksum_into_the_header_once_the_body_is_written(tmp_path):
    from mysqlbackup.flashback.engine import Flashback
    from mysqlbackup.flashback.select import Selection
    assert Summary().header().splitlines()[-1] == ("-- body: 0 transactions, 0 statements; sha256 of everything "
                                                   "after this line: " + "0" * 64)
    fb = Flashback(Selection(), "archive test", str(tmp_path))
    try:
        fb.spool.begin("")
        fb.spool.add("DELETE FROM `s`.`t` WHERE `id`=1;")
        fb.spool.commit("-- transaction 0-1-1 at binlog.000001:4 (2026-11-24 10:00:00 UTC), 1 rows\n")
        fb.summary.rows, fb.summary.transactions = 1, 1
        fb.summary.per_table["s.t"] = Counter(insert=1)
        s = fb.write(str(tmp_path / "u.sql"))
    finally:
        fb.close()
    data = (tmp_path / "u.sql").read_bytes()
    head, body = data.split(SESSION.encode(), 1)
    assert hashlib.sha256(SESSION.encode() + body).hexdigest() == s.body_sha256
    assert head.decode() == s.header() and head.decode().endswith(f"this line: {s.body_sha256}\n")
    c = scan(io.BytesIO(data))
    assert (c.transactions, c.statements, c.edited) == (1, 1, False)


@pytest.mark.parametrize("edit, now", [
    (lambda b: b.split("-- transaction 0-1-11")[0], "1 transactions / 2 statements now vs 2 / 3 written"),
    (lambda b: b.replace("INSERT INTO `s`.`t` (`id`, `v`) VALUES (3, 'c');\n", ""),
     "2 transactions / 2 statements now vs 2 / 3 written"),
    (lambda b: b.replace("VALUES (3, 'c')", "VALUES (3, 'changed; -- not a comment')"),
     "2 transactions / 3 statements now vs 2 / 3 written"),
    (lambda b: b.replace("BEGIN;\n", "BEGIN;\n-- reviewed\n\n", 1), "2 transactions / 3 statements now vs 2 / 3"),
    (lambda b: b.replace("UPDATE `s`.`t` SET `v`='b' WHERE `id`=2 AND `v`<=>'B';\nINSERT INTO `s`.`t` (`id`, `v`) "
                         "VALUES (3, 'c');", "INSERT INTO `s`.`t` (`id`, `v`) VALUES (3, 'c');\nUPDATE `s`.`t` SET "
                         "`v`='b' WHERE `id`=2 AND `v`<=>'B';"), "2 transactions / 3 statements now vs 2 / 3"),
])
def test_allowed_edits_pass_and_are_reported(edit, now):
    text = sealed()
    head, body = text.split(SESSION, 1)
    c = scan(io.StringIO(head + SESSION + edit(body)))
    assert c.edited and now in c.edit_note()


@pytest.mark.parametrize("edit, why", [
    (lambda t: t.replace("COMMIT;\n-- transaction 0-1-11", "COMMIT;\nSET SESSION sql_log_bin=0;\n-- transaction "
                         "0-1-11"), "line 21: a SET statement"),
    (lambda t: t.replace("SET time_zone='+00:00';\n", ""), "the session settings are missing"),
    (lambda t: t.replace("SET time_zone='+00:00';", "SET time_zone='+02:00';"), "a SET statement"),
    (lambda t: t.replace("BEGIN;\nDELETE", "BEGIN;\nDELETE FROM `s`.`t` WHERE `id`=1;\nDELETE"),
     "DELETE number 2 on s.t: the file was written with 1 (undoing its inserts): statements were added"),
    (lambda t: t.replace("BEGIN;\nDELETE", "BEGIN;\nDELETE FROM `s`.`u` WHERE `id`=1;\nDELETE"),
     "DELETE on s.u: the header lists no inserts on that table to undo"),
    (lambda t: t.replace("BEGIN;\nDELETE", "BEGIN;\nDELETE FROM `s`.`v` WHERE `id`=1;\nDELETE"),
     "DELETE on s.v, a table the header does not name (it names s.t, s.u)"),
    (lambda t: t.replace("COMMIT;\n-- transaction 0-1-11", "-- transaction 0-1-11"), "BEGIN; inside the transaction"),
    (lambda t: t + "DELETE FROM `s`.`t` WHERE `id`=1;\n", "a statement outside BEGIN; … COMMIT;"),
    (lambda t: t + "COMMIT;\n", "COMMIT; without BEGIN;"),
    (lambda t: t.rsplit("COMMIT;", 1)[0], "no COMMIT;"),
    (lambda t: t.replace("VALUES (3, 'c')", "VALUES (3, 'c\xff')"), "not valid UTF-8"),
    (lambda t: t.replace("\n", "\r\n"), "carriage return"),
    (lambda t: t.replace("COMMIT;\n-- transaction 0-1-11", "COMMIT;\n   \t\n-- transaction 0-1-11"), None),
    (lambda t: t.replace("BEGIN;\nDELETE", "BEGIN;\n# comment\nDELETE"), "a # comment"),
    (lambda t: t.replace("BEGIN;\nDELETE", "BEGIN;\n--comment\nDELETE"), "a line starting with '--' and no space"),
])
def test_refused_edits_name_their_line(edit, why):
    text = edit(sealed())
    data = text.encode("utf-8", "surrogateescape") if "\xff" not in text else text.replace("\xff", "").encode() \
        .replace(b"'c'", b"'c\xff'")
    if why is None:  # a line of spaces is as good as an empty line
        assert scan(io.BytesIO(data)).edited
        return
    with pytest.raises(ScriptRefused) as info:
        scan(io.BytesIO(data))
    assert why in str(info.value) and str(info.value).startswith("refused, nothing was applied"), str(info.value)


@pytest.mark.parametrize("text, why", [
    ("", "the file is empty"),
    ("SET NAMES utf8mb4;\n", "line 1 is not a mysql-flashback header"),
    ("-- mysql-flashback: inverse of 1 row changes in 1 transactions\nSET NAMES utf8mb4;\n", "has no '-- body: …' line"),
    ("-- mysql-flashback: inverse of 1 row changes in 1 transactions\n-- source: x", "ends inside its header"),
    ("-- something else\n-- body: 0 transactions, 0 statements; sha256 of everything after this line: " + "0" * 64
     + "\n", "line 1 is not a mysql-flashback header"),
])
def test_a_missing_or_malformed_header_is_refused(text, why):
    with pytest.raises(ScriptRefused, match="refused, nothing was applied") as info:
        read_header(io.BytesIO(text.encode()))
    assert why in str(info.value)


@pytest.mark.parametrize("old, new, why", [
    ("in 2 transactions", "in 3 transactions", "the header's counts disagree"),
    ("--   s.t: insert 1, update 1, delete 1", "--   s.t: insert 1, update 1, delete 2", "counts disagree"),
    ("--   s.t: insert 1,", "--   s.t: inserts 1,", "a 'rows per table and type' line, is malformed"),
    ("-- rows per table and type:", "-- rows:", "has no '-- rows per table and type:' line"),
    ("-- generated columns:", "-- generated:", "has no '-- generated columns:' line"),
    ("sha256 of everything after this line: ", "sha256: ", "the header's '-- body:' line, is malformed"),
])
def test_an_edited_header_is_refused(old, new, why):
    text = sealed()
    assert old in text
    with pytest.raises(ScriptRefused) as info:
        scan(io.StringIO(text.replace(old, new, 1)))
    assert why in str(info.value)


def test_table_names_in_the_header_may_hold_colons_and_dots():
    per = {"a: insert 1.t:x": Counter(update=1), "s.t": Counter(insert=1)}
    body = ("BEGIN;\nUPDATE `a: insert 1`.`t:x` SET `v`=1 WHERE `k`=1;\nDELETE FROM `s`.`t` WHERE `k`=1;\nCOMMIT;\n")
    c = scan(io.StringIO(sealed(body, per)))
    assert c.tables == {("a: insert 1", "t:x"), ("s", "t")} and not c.edited


def test_many_problems_are_listed_up_to_ten():
    text = sealed().replace("BEGIN;\nDELETE", "BEGIN;\n" + "DO 1;\n" * 30 + "DELETE")
    with pytest.raises(ScriptRefused) as info:
        scan(io.StringIO(text))
    assert str(info.value).count("a DO statement") == 10 and "stopped at the first 10" in str(info.value)


def test_the_check_is_fast(tmp_path):
    """A 40 MB file of realistic statements: the check's throughput (measured: ~50 MB/s, ~230k
    statements/s of CPU on one core of the reference machine)."""
    rnd = random.Random(5)
    pool = [s for s in statements(rnd, 400)]
    per: dict[str, Counter] = {}
    undone = {"DELETE": "insert", "INSERT": "delete", "UPDATE": "update"}
    parts = []
    size = n = txs = 0
    while size < 40 << 20:
        block = [pool[(n + i) % len(pool)] for i in range(rnd.randint(1, 6))]
        for line, kind, schema, table in block:
            per.setdefault(f"{schema}.{table}", Counter())[undone[kind]] += 1
        text = f"-- transaction 0-1-{txs}\nBEGIN;\n" + "".join(b[0] + "\n" for b in block) + "COMMIT;\n"
        parts.append(text)
        size += len(text)
        n += len(block)
        txs += 1
    path = tmp_path / "big.sql"
    path.write_text(sealed("".join(parts), per))
    t0, c0 = time.perf_counter(), time.process_time()
    with open(path, "rb") as f:
        c = scan(f)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    mb = path.stat().st_size / 1e6
    print(f"check: {mb:.0f} MB, {c.statements:,} statements in {wall:.2f} s ({mb / cpu:.0f} MB/s, "
          f"{c.statements / cpu:,.0f} statements/s of CPU)")
    assert (c.transactions, c.statements, c.edited) == (txs, n, False)
    assert mb / cpu > 8  # far below what it does: only a guard against an accidental slow path
