"""Flashback's pure parts: the selection, the inverse statements, the reversing spool."""
from __future__ import annotations

import io
import random
from datetime import datetime, timezone

import pytest

from mysqlbackup.flashback.plan import TableSQL, quote_ident
from mysqlbackup.flashback.select import (Gtid, Position, Selection, SelectionError, parse_gtid,
                                          parse_position, parse_table, parse_time)
from mysqlbackup.flashback.spool import Spool

# --- selection ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("shop.orders", ("shop", "orders")),
    ("orders", (None, "orders")),
    ("`my db`.`t.1`", ("my db", "t.1")),
    ("`we``ird`.t", ("we`ird", "t")),
    ("`ünï`.`表`", ("ünï", "表")),
    ("shop.`order items`", ("shop", "order items")),
])
def test_parse_table(text, expected):
    assert parse_table(text) == expected


@pytest.mark.parametrize("text", ["", "a.b.c", "shop.", ".t", "`unclosed", "a b.c d e"])
def test_parse_table_rejects(text):
    with pytest.raises(SelectionError, match="expected db.table"):
        parse_table(text)


def test_positions_and_gtids():
    assert parse_position("binlog.000012:4") == Position("binlog.000012", 4)
    assert Position("binlog.000012", 900) < Position("binlog.000013", 4)
    assert parse_gtid("0-1-4711") == Gtid(0, 1, 4711) and str(Gtid(0, 1, 4711)) == "0-1-4711"
    for bad, msg in [("binlog.000012", "FILE:POS"), ("binlog.000012:x", "FILE:POS"), ("binlog.000012:3", "start at 4"),
                     ("mysql-bin:12", "FILE:POS")]:
        with pytest.raises(SelectionError, match=msg):
            parse_position(bad)
    for bad in ("0-1", "a-b-c", "0-1-2-3", ""):
        with pytest.raises(SelectionError, match="DOMAIN-SERVER-SEQ"):
            parse_gtid(bad)


def test_times_default_to_utc():
    assert parse_time("2026-11-24 10:00:00") == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    assert parse_time("2026-11-24T12:00:00+02:00") == datetime(2026, 11, 24, 10, tzinfo=timezone.utc)
    with pytest.raises(SelectionError, match="YYYY-MM-DD"):
        parse_time("yesterday")


@pytest.mark.parametrize("kwargs, message", [
    ({"start_time": "2026-11-24 10:00:00", "stop_time": "2026-11-24 09:00:00"}, "reversed time window"),
    ({"start_time": "2026-11-24 10:00:00", "stop_time": "2026-11-24 10:00:00"}, "empty time window"),
    ({"start_position": "binlog.000002:4", "stop_position": "binlog.000001:900"}, "reversed position window"),
    ({"start_gtid": "0-1-10", "stop_gtid": "0-1-5"}, "reversed GTID window"),
    ({"start_gtid": "0-1-10", "stop_gtid": "1-1-50"}, "two domains"),
    ({"types": ["insert", "drop"]}, "unknown statement type"),
    ({"databases": ["shop"], "tables": ["crm.users"]}, "not in the selected databases"),
])
def test_bad_selections_are_refused(kwargs, message):
    with pytest.raises(SelectionError, match=message):
        Selection.parse(**kwargs)


def test_refusals_name_the_field_as_the_caller_calls_it():
    with pytest.raises(SelectionError) as info:
        Selection.parse(start_position="binlog.000002:4", stop_position="binlog.000001:900")
    assert str(info.value) == ("reversed position window: start_position binlog.000002:4 is not before "
                               "stop_position binlog.000001:900 (the stop is exclusive)")
    assert info.value.for_cli() == ("reversed position window: --start-position binlog.000002:4 is not before "
                                    "--stop-position binlog.000001:900 (the stop is exclusive)")
    with pytest.raises(SelectionError, match=r"^stop_datetime: malformed time 'soon'"):
        Selection.parse(stop_time="soon")


@pytest.mark.parametrize("bad", ["shop.orders; rm -rf /", "$(reboot)", "my-db.t", "x" * 65 + ".t"])
def test_unquoted_names_are_letters_digits_dollar_underscore(bad):
    with pytest.raises(SelectionError, match="^tables: malformed table name"):
        Selection.parse(tables=[bad])
    assert Selection.parse(tables=["`my-db`.t"]).tables == {("my-db", "t")}
    assert Selection.parse(databases=["`a b`", "shop"]).databases == {"a b", "shop"}
    with pytest.raises(SelectionError, match="^databases: malformed database name 'a b'"):
        Selection.parse(databases=["a b"])


def test_the_unquoted_name_class_is_letters_digits_dollar_underscore_and_the_bmp_beyond_ascii():
    # written as what it leaves out (fast to compile); the same set as MySQL's, every code point
    import re

    from mysqlbackup.flashback import select
    allowed = re.compile("[0-9A-Za-z$_\\u0080-\\uffff]")
    ours = re.compile(select._UNQUOTED)
    assert [c for c in range(0x110000) if bool(allowed.fullmatch(chr(c))) != bool(ours.fullmatch(chr(c)))] == []
    assert select.as_typed("shop", "événements") == "shop.événements"
    assert select.as_typed("a😀", "t") == "`a😀`.t"


def test_an_empty_flashback_says_no_binlog_was_read():
    from mysqlbackup.flashback.engine import Summary
    assert "-- binlogs read: none (no event was read)\n" in Summary().header()


def test_long_lists_in_messages_are_capped():
    from mysqlbackup.text import capped
    assert capped([]) == "none"
    assert capped(range(3)) == "0, 1, 2"
    assert capped(range(200_000)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 199,990 more"
    with pytest.raises(SelectionError) as info:
        Selection.parse(databases=["shop"], tables=[f"crm.t{i}" for i in range(1000)])
    assert "and 990 more" in str(info.value) and len(str(info.value)) < 400


def test_selection_matching():
    sel = Selection.parse(databases=["shop"], tables=["orders", "shop.`order items`"], types=["delete"],
                          start_gtid="0-1-10", stop_gtid="0-1-20",
                          start_time="2026-11-24 10:00:00", stop_time="2026-11-24 11:00:00")
    assert sel.wants_table("shop", "orders") and sel.wants_table("shop", "order items")
    assert not sel.wants_table("crm", "orders") and not sel.wants_table("shop", "users")
    assert sel.wants_gtid(Gtid(0, 1, 10)) and sel.wants_gtid(Gtid(0, 2, 20))
    assert not sel.wants_gtid(Gtid(0, 1, 21)) and not sel.wants_gtid(Gtid(1, 1, 15)) and not sel.wants_gtid(None)
    assert sel.wants_time(datetime(2026, 11, 24, 10, tzinfo=timezone.utc))
    assert not sel.wants_time(datetime(2026, 11, 24, 11, tzinfo=timezone.utc))
    assert sel.types == {"delete"}
    assert "types delete" in sel.describe() and "GTIDs 0-1-10 .. 0-1-20" in sel.describe()
    assert Selection().wants_table("any", "thing") and Selection().wants_gtid(None)


# --- inverse statements ---------------------------------------------------------------------

def test_identifiers_are_quoted():
    assert quote_ident("a`b") == "`a``b`" and quote_ident("order items") == "`order items`"


def test_inverse_statements_guard_the_whole_row_by_default():
    t = TableSQL("shop", "t", ["id", "qty", "note"], key=[0])
    assert t.undo_insert(["7", "2", "NULL"]) == "DELETE FROM `shop`.`t` WHERE `id`=7 AND `qty`<=>2 AND `note`<=>NULL;"
    # only the changed columns are set back, and guarded: later changes to other columns are kept
    assert (t.undo_update(["7", "2", "'a'"], ["7", "3", "'a'"])
            == "UPDATE `shop`.`t` SET `qty`=2 WHERE `id`=7 AND `qty`<=>3;")
    # a changed key is set back too, the row found by its new key
    assert (t.undo_update(["7", "2", "NULL"], ["8", "2", "'x'"])
            == "UPDATE `shop`.`t` SET `id`=7, `note`=NULL WHERE `id`=8 AND `note`<=>'x';")


def test_inverse_statements_with_a_key():
    t = TableSQL("shop", "order items", ["id", "qty", "note"], key=[0], guard_row=False)
    assert t.undo_insert(["7", None, None]) == "DELETE FROM `shop`.`order items` WHERE `id`=7;"
    assert t.undo_delete(["7", "2", "NULL"]) == "INSERT INTO `shop`.`order items` (`id`, `qty`, `note`) VALUES (7, 2, NULL);"
    assert (t.undo_update(["7", "2", "'a'"], ["7", None, None])
            == "UPDATE `shop`.`order items` SET `id`=7, `qty`=2, `note`='a' WHERE `id`=7;")


def test_inverse_statements_without_a_key_match_every_column_null_safely():
    t = TableSQL("s", "t", ["a", "b"], key=None)
    assert t.undo_insert(["1", "NULL"]) == "DELETE FROM `s`.`t` WHERE `a`<=>1 AND `b`<=>NULL LIMIT 1;"
    assert (t.undo_update(["1", "2"], ["1", "3"])
            == "UPDATE `s`.`t` SET `b`=2 WHERE `a`<=>1 AND `b`<=>3 LIMIT 1;")
    with pytest.raises(ValueError, match="binlog_row_metadata=FULL"):
        TableSQL("s", "t", [], key=None)


# --- spool ----------------------------------------------------------------------------------

def test_spool_reverses_transactions_and_statements(tmp_path):
    with Spool(str(tmp_path)) as sp:
        sp.begin("-- tx 1\n")
        sp.add("S1a;")
        sp.add("S1b;")
        sp.commit()
        sp.begin("-- tx empty\n")
        sp.commit()  # dropped
        sp.begin("-- tx filtered\n")
        sp.add("X;")
        sp.discard()  # dropped with its statements
        sp.begin("-- tx 2 ünï\n")
        sp.add("S2a 'é';")
        sp.commit()
        out = io.BytesIO()
        sp.write_reversed(out)
    assert out.getvalue().decode() == ("-- tx 2 ünï\nBEGIN;\nS2a 'é';\nCOMMIT;\n"
                                       "-- tx 1\nBEGIN;\nS1b;\nS1a;\nCOMMIT;\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("memory", [None, 0, 1000, 100_000])
def test_spool_handles_many_statements_across_chunks(tmp_path, memory):
    """In memory (the default cap), on disk from the start (0), or moved to disk part way."""
    import os
    rnd = random.Random(3)
    txs = [[f"T{t}S{s}" + "x" * rnd.randint(0, 30) + ";" for s in range(rnd.randint(1, 20000 if t == 3 else 40))]
           for t in range(8)]
    with Spool(str(tmp_path)) if memory is None else Spool(str(tmp_path), memory) as sp:
        for t, stmts in enumerate(txs):
            sp.begin(f"-- {t}\n")
            for s in stmts:
                sp.add(s)
            sp.commit()
        out = io.BytesIO()
        sp.write_reversed(out)
        assert sp.statements == sum(map(len, txs))
        on_disk = os.path.getsize(os.path.join(sp._dir, "statements"))
    assert on_disk == (0 if memory is None else len(out.getvalue()) - 15 * len(txs))  # all but BEGIN/COMMIT
    expected = "".join(f"-- {t}\nBEGIN;\n" + "".join(s + "\n" for s in reversed(stmts)) + "COMMIT;\n"
                       for t, stmts in reversed(list(enumerate(txs))))
    assert out.getvalue().decode() == expected


def test_spool_limited_part_way_moves_its_text_to_disk_and_keeps_it_exact(tmp_path):
    """limit() (the first process learning that the window is split): the text so far and
    everything after it goes to the data file at the next write; the script is the same."""
    import os
    outs = []
    for limit_at in (None, 3, 0):
        with Spool(str(tmp_path)) as sp:
            for t in range(6):
                if t == limit_at:
                    sp.limit(50)
                sp.begin(f"-- {t}\n")
                sp.add_many([f"T{t}S{k} 'é';" for k in range(10)])
                sp.commit()
            out = io.BytesIO()
            sp.write_reversed(out)
            on_disk = os.path.getsize(os.path.join(sp._dir, "statements"))
        outs.append(out.getvalue())
        assert (on_disk > 0) == (limit_at is not None)
    assert outs[0] == outs[1] == outs[2] and outs[0].startswith(b"-- 5\nBEGIN;\nT5S9 '\xc3\xa9';\n")


def test_cli_runs_in_the_project_venv_whatever_python_starts_it():
    """A DBA runs bin/mysql-flashback with any python3: it re-executes in .venv (pymysql is there)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    cli = Path(__file__).resolve().parents[2] / "bin" / "mysql-flashback"
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not (Path(sys.prefix) / "pyvenv.cfg").exists() or not base.exists():
        pytest.skip("the tests do not run in a venv")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    res = subprocess.run([str(base), str(cli), "generate", "--help"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "--start-position" in res.stdout and "--defaults-file" in res.stdout
    # past the arguments it needs pymysql, which only .venv has
    res = subprocess.run([str(base), str(cli), "generate", "--binlog-dir", "/nonexistent", "--start-position", "nope",
                          "-o", "/nonexistent/undo.sql"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "malformed binlog position 'nope'" in res.stderr, res.stderr


# --- the statements as generated code (what the row decoder runs) equal the reference builders ---

def _run_code(t: TableSQL, kind: str, before, after) -> str:
    consts: dict = {}

    def const(text):
        name = f"K{len(consts)}"
        consts[name] = text
        return name

    bvars = None if before is None else [f"b{i}" if v is not None else "None" for i, v in enumerate(before)]
    avars = None if after is None else [f"v{i}" if v is not None else "None" for i, v in enumerate(after)]
    ns = dict(consts)
    lines = t.code(kind, bvars, avars, const)
    ns.update(consts)
    for i, v in enumerate(before or ()):
        ns[f"b{i}"] = v
    for i, v in enumerate(after or ()):
        ns[f"v{i}"] = v
    exec("\n".join(lines), ns)  # noqa: S102 - the code under test
    return ns["s"]


def test_generated_statement_code_equals_the_reference_builders():
    rnd = random.Random(11)
    pool = ["1", "-7", "NULL", "'a'", "'it''s'", "X'00ff'", "'é'", "2.5", "''"]
    shapes = 0
    for _ in range(4000):
        ncols = rnd.randint(1, 7)
        cols = [f"c{i}`{rnd.choice('xyé ')}" for i in range(ncols)]
        key = rnd.choice([None, [0], list(range(min(ncols, 2))), [ncols - 1]])
        gen = frozenset(rnd.sample(cols, rnd.randint(0, ncols - 1))) if rnd.random() < 0.25 else frozenset()
        guard = rnd.random() < 0.6 or not key
        t = TableSQL(rnd.choice(["s", "my db"]), rnd.choice(["t", "o`x"]), cols, key, guard_row=guard, generated=gen)
        kind = rnd.choice(["insert", "update", "delete"])
        before = [rnd.choice(pool) for _ in cols]
        after = [rnd.choice(pool) if rnd.random() < 0.3 else v for v in before]
        wb, wa = t.wants(kind)
        if wa is not None:  # key-only mode: only the key of the after image is decoded
            after = [v if i in wa else None for i, v in enumerate(after)]
            if kind == "insert":
                before = after
        if kind == "insert":
            assert _run_code(t, kind, None, before) == t.undo_insert(before)
        elif kind == "delete":
            assert _run_code(t, kind, before, None) == t.undo_delete(before)
        else:
            assert _run_code(t, kind, before, after) == t.undo_update(before, after), (cols, key, gen, guard)
        shapes += 1
    assert shapes == 4000


def test_spool_add_many_equals_add_one_by_one():
    rnd = random.Random(5)
    txs = [[rnd.choice(["A;", "B 'é';", "C 表;", "D" * rnd.randint(1, 50) + ";"]) for _ in range(rnd.randint(1, 30))]
           for _ in range(200)]
    outs = []
    for many in (False, True):
        out = io.BytesIO()
        with Spool() as sp:
            for n, tx in enumerate(txs):
                sp.begin("")
                if many:
                    sp.add_many(tx[:len(tx) // 2])
                    sp.add_many(tx[len(tx) // 2:])
                else:
                    for s in tx:
                        sp.add(s)
                sp.commit(f"-- tx {n}\n")
            sp.write_reversed(out)
        outs.append(out.getvalue())
    assert outs[0] == outs[1] and b"C \xe8\xa1\xa8;" in outs[1]


@pytest.mark.parametrize("raw_equal_means", ["bytes", "never"])
def test_lazy_guarded_update_code_equals_the_reference(raw_equal_means):
    """The guarded UPDATE decoding only the columns whose bytes differ (``decode``/``differ``
    hooks): the same statement as ``undo_update``. ``never``: every column's bytes differ (as
    when two encodings give one literal), so the literal comparison decides alone."""
    rnd = random.Random(13)
    pool = ["1", "-7", "NULL", "'a'", "X'00ff'", "'é'", "2.5"]
    for _ in range(3000):
        ncols = rnd.randint(1, 7)
        cols = [f"c{i}" for i in range(ncols)]
        key = rnd.choice([None, [0], list(range(min(ncols, 2))), [ncols - 1]])
        gen = frozenset(rnd.sample(cols, rnd.randint(0, ncols - 1))) if rnd.random() < 0.25 else frozenset()
        t = TableSQL("s", "t", cols, key, guard_row=True, generated=gen)
        before = [rnd.choice(pool) for _ in cols]
        after = [rnd.choice(pool) if rnd.random() < 0.3 else v for v in before]
        consts: dict = {}

        def const(text):
            consts[f"K{len(consts)}"] = text
            return f"K{len(consts) - 1}"

        def decode(image, i):  # the raw value -> its variable; b<i>/v<i> exist only once decoded
            return [f"b{i} = _b{i}"] if image == "before" else [f"v{i} = _v{i}"]

        def differ(i):
            return f"_b{i} != _v{i}" if raw_equal_means == "bytes" else "True"

        lines = t.code("update", [f"b{i}" for i in range(ncols)], [f"v{i}" for i in range(ncols)], const,
                       decode=decode, differ=differ)
        ns = dict(consts)
        ns.update({f"_b{i}": v for i, v in enumerate(before)})
        ns.update({f"_v{i}": v for i, v in enumerate(after)})
        exec("\n".join(lines), ns)  # noqa: S102 - the code under test
        assert ns["s"] == t.undo_update(before, after), (cols, key, gen, before, after)


@pytest.mark.parametrize("memory", [1 << 30, 0, 3000])
@pytest.mark.parametrize("group_bytes", [1 << 23, 300, 1])
def test_spool_reverses_groups_of_small_and_large_transactions_exactly(monkeypatch, group_bytes, memory):
    """Small transactions written in groups, large ones (and ones wider than the group's bytes)
    one at a time, discarded ones in between: the same text as reversing a plain list; with the
    text in memory, on disk, or moved to disk part way."""
    from mysqlbackup.flashback import spool as spool_mod
    monkeypatch.setattr(spool_mod, "_CHUNK", 64)
    monkeypatch.setattr(spool_mod, "_GROUP_BYTES", group_bytes)
    rnd = random.Random(group_bytes)
    model = []
    out = io.BytesIO()
    with Spool(memory=memory) as sp:
        for n in range(700):
            size = rnd.choice([1, 1, 2, 3, 5, 15, 16, 17, 40, 64, 65, 200])
            stmts = [f"S{n}.{k} {'é' * rnd.randint(0, 3)}{'x' * rnd.randint(0, 60)};" for k in range(size)]
            sp.begin("")
            if rnd.random() < 0.5:
                # blocks of random sizes (a rows event's statements each), empty ones included
                cuts = sorted(rnd.randint(0, size) for _ in range(rnd.randint(0, 4)))
                for lo, hi in zip([0] + cuts, cuts + [size]):
                    sp.add_many(stmts[lo:hi])
            else:
                for s in stmts:
                    sp.add(s)
            if rnd.random() < 0.1:
                sp.discard()
                continue
            sp.commit(f"-- tx {n}\n")
            model.append((f"-- tx {n}\n", stmts))
        sp.write_reversed(out)
        assert (sp.transactions, sp.statements) == (len(model), sum(len(st) for _, st in model))
    want = "".join(head + "BEGIN;\n" + "".join(s + "\n" for s in reversed(stmts)) + "COMMIT;\n"
                   for head, stmts in reversed(model))
    assert out.getvalue() == want.encode("utf-8")
