"""The native statement builder (binlog/_rowimage.c ``rows``) against the generated Python.

Random table shapes (key or none, generated columns, --where row or key) and random rows events of
every kind (NULLs, unchanged columns, updates that change nothing, text of 1-, 2- and 4-byte
characters): ``RowCodec(native=True).statements`` must give exactly the statements of
``RowCodec(native=False)``, the reference (and TableSQL's own ``undo_*`` methods).
"""
from __future__ import annotations

import random

import pytest

from mysqlbackup.binlog import decode
from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.events import RowsEventHeader, TableMap
from mysqlbackup.binlog.reader import BinlogError
from mysqlbackup.flashback.plan import TableSQL

pytestmark = pytest.mark.skipif(decode._rowimage is None, reason="the native row decoder is not built "
                                "(scripts/install.sh builds it; test_rowimage_native fails for that)")

_UTF8MB4 = 45  # utf8mb4_general_ci
_TYPES = {"insert": F.WRITE_ROWS_EVENT_V1, "update": F.UPDATE_ROWS_EVENT_V1, "delete": F.DELETE_ROWS_EVENT_V1}
_TEXTS = ["", "a", "it's", "back\\slash", "é", "表", "😀 x", "line\nbreak", "v1 ✓"]


def _table(types: list[str], nullable: list[bool]) -> TableMap:
    """A table map of INT (``i``) and VARCHAR(100) utf8mb4 (``s``) columns."""
    tm = TableMap()
    tm.table_id, tm.flags, tm.schema, tm.table = 1, 0, "db", "t"
    tm.column_types = tuple(F.MYSQL_TYPE_LONG if t == "i" else F.MYSQL_TYPE_VARCHAR for t in types)
    tm.real_types = tm.column_types
    tm.column_meta = tuple(0 if t == "i" else 400 for t in types)
    tm.max_lengths = tuple(0 if t == "i" else 400 for t in types)
    tm.nullable = tuple(nullable)
    tm.signed = tuple(True for _ in types)
    tm.charsets = tuple(None if t == "i" else _UTF8MB4 for t in types)
    tm.enum_values = tm.set_values = None
    tm.column_names = tuple(f"c{i}" for i in range(len(types)))
    tm.geometry_types = tm.primary_key = tm.primary_key_prefixes = tm.visibility = tm.default_charset = None
    tm.raw = b""
    return tm


def _image(types: list[str], values: list) -> bytes:
    """A whole row image: the null bitmap, then each non-NULL value."""
    bits = bytearray((len(types) + 7) // 8)
    body = bytearray()
    for i, (t, v) in enumerate(zip(types, values)):
        if v is None:
            bits[i >> 3] |= 1 << (i & 7)
        elif t == "i":
            body += v.to_bytes(4, "little", signed=True)
        else:
            raw = v.encode()
            body += len(raw).to_bytes(2, "little") + raw  # VARCHAR(400 bytes): a 2-byte length
    return bytes(bits) + bytes(body)


def _value(rnd: random.Random, t: str, nullable: bool):
    if nullable and rnd.random() < 0.2:
        return None
    return rnd.choice([0, 1, -1, 7, 2 ** 31 - 1, -2 ** 31]) if t == "i" else rnd.choice(_TEXTS)


def test_native_statements_equal_the_generated_code_on_random_shapes():
    rnd = random.Random(11)
    built = 0
    for _ in range(400):
        n = rnd.randint(1, 12)
        types = [rnd.choice("is") for _ in range(n)]
        nullable = [rnd.random() < 0.5 for _ in range(n)]
        key = rnd.choice([None, [0], [n - 1], sorted(rnd.sample(range(n), min(n, 2)))])
        if key:
            for k in key:
                nullable[k] = False
        names = [f"c{i}" for i in range(n)]
        generated = (frozenset(rnd.sample([c for i, c in enumerate(names) if not key or i not in key],
                                          rnd.randint(0, max(0, n - 1 - len(key or ())))))
                     if rnd.random() < 0.25 else frozenset())
        sql = TableSQL("db", "t", names, key, guard_row=rnd.random() < 0.6, generated=generated)
        tm = _table(types, nullable)
        full = decode._full_bitmap(n)
        native, python = decode.RowCodec(tm, native=True), decode.RowCodec(tm, native=False)
        for kind in ("insert", "update", "delete"):
            rows = []
            body = bytearray()
            for _ in range(rnd.randint(1, 6)):
                before = [_value(rnd, t, nl) for t, nl in zip(types, nullable)]
                after = before if rnd.random() < 0.15 else [  # an update that changes nothing, or a few columns
                    _value(rnd, t, nl) if rnd.random() < 0.4 else v for t, nl, v in zip(types, nullable, before)]
                rows.append((before, after))
                if kind != "insert":
                    body += _image(types, before)
                if kind != "delete":
                    body += _image(types, after)
            hdr = RowsEventHeader(1, 0, kind, n, full, full, 0, _TYPES[kind])
            got = native.statements(bytes(body), hdr, sql)
            want = python.statements(bytes(body), hdr, sql)
            assert got == want, (types, nullable, key, generated, sql.guard_row, kind)
            assert "native rows" in native.sources.values()
            # the spool's block (native: built in C as UTF-8; Python: joined and encoded)
            block = (("\n".join(reversed(want)) + "\n").encode("utf-8"), len(want))
            assert native.block(bytes(body), hdr, sql) == block == python.block(bytes(body), hdr, sql)
            # and the builder's own reference methods agree (literals: the decoded ones)
            lits = python.decode(bytes(body), hdr)
            ref = [sql.undo_insert(r) if kind == "insert" else sql.undo_delete(r) if kind == "delete"
                   else sql.undo_update(*r) if sql.guard_row else None for r in lits]
            if kind != "update" or sql.guard_row:
                assert got == ref
            built += 1
    assert built == 1200


def test_native_statements_refuse_a_damaged_event():
    types, nullable = ["i", "s", "s"], [False, True, True]
    tm = _table(types, nullable)
    sql = TableSQL("db", "t", ["c0", "c1", "c2"], [0])
    full = decode._full_bitmap(3)
    body = _image(types, [1, "abc", None]) + _image(types, [1, "abd", "x"])
    codec = decode.RowCodec(tm, native=True)
    hdr = RowsEventHeader(1, 0, "update", 3, full, full, 0, F.UPDATE_ROWS_EVENT_V1)
    assert codec.statements(body, hdr, sql) == ["UPDATE `db`.`t` SET `c1`='abc', `c2`=NULL WHERE `c0`=1 "
                                                "AND `c1`<=>'abd' AND `c2`<=>'x';"]
    for cut in range(1, len(body)):
        with pytest.raises(BinlogError):
            codec.statements(body[:cut], hdr, sql)
        with pytest.raises(BinlogError):
            codec.block(body[:cut], hdr, sql)


def test_native_rows_check_their_plan():
    """A plan that does not match its specs is refused before anything is read."""
    spec = (bytes([7, 2, 0, 0, 0, 0, 0, 0]), (None,))
    buf = b"\x00" + (5).to_bytes(4, "little")
    assert decode._rowimage.rows(buf, 0, len(buf), None, spec, ("T", ("x=", 0, ";"))) == ["x=5;"]
    assert decode._rowimage.rows(buf * 2, 0, 2 * len(buf), None, spec, ("T", ("é=", 0, ";")), True) == (
        "é=5;\né=5;\n".encode(), 2)
    assert decode._rowimage.rows(buf, 0, 0, None, spec, ("T", ("x=", 0, ";")), True) == (b"", 0)
    for plan in [("T", ("x=", 1)), ("T", ("x=", -1)), ("T", ("x=", 1.5)), ("Q", ()), ("U", "h", (), (0,), b"\x00",
                                                                                        ("a=",), ("a<=>",))]:
        with pytest.raises(TypeError):
            decode._rowimage.rows(buf, 0, len(buf), None, spec, plan)
