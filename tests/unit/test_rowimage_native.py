"""The native row-image decoder (binlog/_rowimage.c) against the generated Python decoders.

The generated Python is the reference: for the same bytes both must give the same literals, and
an image that runs past its event must raise BinlogError in both. Values are random (fixed seeds)
with the edges of every type the native decoder handles: integers at their limits, floats' special
values and random bit patterns, DECIMAL of many precisions and signs, the temporal types at every
fsp, ENUM/SET with and without members and values past them, strings of every length prefix,
BINARY padding, every escape and invalid UTF-8. The one allowed divergence: a DECIMAL digit group
out of range (a server never writes one) raises natively where Python prints a number.
"""
from __future__ import annotations

import random
import struct

import pytest

from mysqlbackup.binlog import decode
from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.events import RowsEventHeader, TableMap
from mysqlbackup.binlog.reader import BinlogError


def test_native_decoder_is_built():
    assert decode._rowimage is not None, (
        "the native row decoder (plugins/mysqlbackup/binlog/_rowimage.c) is not built: run scripts/install.sh")


pytestmark_native = pytest.mark.skipif(decode._rowimage is None, reason="native decoder not built")

_UTF8MB4, _UTF8MB3, _LATIN1, _BINARY = 45, 33, 8, 63
_INTS = [(F.MYSQL_TYPE_TINY, 1), (F.MYSQL_TYPE_SHORT, 2), (F.MYSQL_TYPE_INT24, 3), (F.MYSQL_TYPE_LONG, 4),
         (F.MYSQL_TYPE_LONGLONG, 8)]
_NASTY = [b"", b"a", b"it's", b"\\", b"\x00", b"\n\r\x1a", b"'\\'\\\x00", "é表😀".encode(), b"\x80", b"\xed\xa0\x80",
          b"\xc0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"ok\xffok", bytes(range(256))]


class Col:
    """One column of a synthetic table map, and a generator of its image bytes."""

    def __init__(self, type_: int, meta: int = 0, *, real: int | None = None, max_length: int = 0,
                 collation: int | None = None, members=None, nullable: bool = False, signed: bool = True,
                 gen=None) -> None:
        self.type, self.meta, self.real, self.max_length = type_, meta, real or type_, max_length
        self.collation, self.members, self.nullable, self.signed, self.gen = collation, members, nullable, signed, gen


def _table(cols: list[Col]) -> TableMap:
    tm = TableMap()
    tm.table_id, tm.flags, tm.schema, tm.table = 1, 0, "db", "t"
    tm.column_types = tuple(c.type for c in cols)
    tm.real_types = tuple(c.real for c in cols)
    tm.column_meta = tuple(c.meta for c in cols)
    tm.max_lengths = tuple(c.max_length for c in cols)
    tm.nullable = tuple(c.nullable for c in cols)
    tm.signed = tuple(c.signed for c in cols)
    tm.charsets = tuple(c.collation for c in cols)
    enum = [c.members if c.real == F.MYSQL_TYPE_ENUM else None for c in cols]
    sets = [c.members if c.real == F.MYSQL_TYPE_SET else None for c in cols]
    tm.enum_values = tuple(e or () for e in enum) if any(e is not None for e in enum) else None
    tm.set_values = tuple(s or () for s in sets) if any(s is not None for s in sets) else None
    tm.column_names = tuple(f"c{i}" for i in range(len(cols)))
    tm.geometry_types = tm.primary_key = tm.primary_key_prefixes = tm.visibility = tm.default_charset = None
    tm.raw = b""
    return tm


def _prefixed(raw: bytes, n: int) -> bytes:
    raw = raw[:(1 << 8 * n) - 1]
    return len(raw).to_bytes(n, "little") + raw


def _decimal_bytes(rnd: random.Random, prec: int, scale: int) -> bytes:
    """A valid DECIMAL(prec, scale) image of a random value (MariaDB's bin format)."""
    intg, dig2 = prec - scale, (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    out = bytearray()
    groups = [(intg % 9, True)] + [(9, True)] * (intg // 9) + [(9, False)] * (scale // 9) + [(scale % 9, False)]
    for digits, _ in groups:
        if digits:
            v = rnd.choice([0, 10 ** digits - 1, rnd.randrange(10 ** digits)])
            out += v.to_bytes(dig2[digits], "big")
    out[0] ^= 0x80  # the sign bit, set for a positive value
    if rnd.random() < 0.5:  # negative: every byte inverted
        out = bytearray(b ^ 0xFF for b in out)
    return bytes(out)


def _columns(rnd: random.Random) -> list[Col]:
    """One column of every kind the native decoder handles (and their variants)."""
    cols: list[Col] = []
    for t, n in _INTS:
        for signed in (True, False):
            cols.append(Col(t, signed=signed, gen=lambda r, n=n: r.choice(
                [bytes(n), b"\xff" * n, b"\x7f" + b"\xff" * (n - 1), b"\xff" * (n - 1) + b"\x7f",
                 b"\x80" + bytes(n - 1), bytes(n - 1) + b"\x80", r.randbytes(n)])))
    specials = [struct.pack("<d", x) for x in (0.0, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324,
                                                1e300, 0.1, -2.5, 123456789.123)]
    cols.append(Col(F.MYSQL_TYPE_DOUBLE, 8, gen=lambda r: r.choice(specials + [r.randbytes(8)])))
    cols.append(Col(F.MYSQL_TYPE_FLOAT, 4, gen=lambda r: r.choice(
        [struct.pack("<f", x) for x in (0.0, -0.0, float("inf"), float("nan"), 1e-45, 0.1, 3.4e38)] + [r.randbytes(4)])))
    cols.append(Col(F.MYSQL_TYPE_YEAR, gen=lambda r: bytes([r.choice([0, 1, 255, r.randrange(256)])])))
    cols.append(Col(F.MYSQL_TYPE_DATE, gen=lambda r: r.choice([bytes(3), b"\xff" * 3, r.randbytes(3)])))
    cols.append(Col(F.MYSQL_TYPE_NEWDATE, gen=lambda r: r.randbytes(3)))
    for prec, scale in [(1, 0), (1, 1), (9, 0), (9, 9), (10, 2), (18, 9), (19, 0), (30, 10), (65, 30), (65, 0),
                        (38, 38), (12, 7)]:
        cols.append(Col(F.MYSQL_TYPE_NEWDECIMAL, prec << 8 | scale,
                        gen=lambda r, p=prec, s=scale: _decimal_bytes(r, p, s)))
    for fsp in range(7):
        fb = (fsp + 1) // 2
        for t, base in ((F.MYSQL_TYPE_TIME2, 3), (F.MYSQL_TYPE_DATETIME2, 5), (F.MYSQL_TYPE_TIMESTAMP2, 4)):
            n = base + fb
            cols.append(Col(t, fsp, gen=lambda r, n=n: r.choice(
                [bytes(n), b"\xff" * n, b"\x80" + bytes(n - 1), b"\x7f" + b"\xff" * (n - 1), r.randbytes(n)])))
    for size in (1, 2):
        for members in (None, (b"a", b"b'", "é".encode(), b"\x00x"), tuple(f"m{i}".encode() for i in range(300))):
            cols.append(Col(F.MYSQL_TYPE_STRING, F.MYSQL_TYPE_ENUM << 8 | size, real=F.MYSQL_TYPE_ENUM,
                            collation=_UTF8MB4, members=members, gen=lambda r, s=size: r.randbytes(s)))
    for size in (1, 2, 3, 4, 8):
        for members in (None, (b"x", b"y\\", "ü".encode()), tuple(f"s{i}".encode() for i in range(min(64, 8 * size)))):
            cols.append(Col(F.MYSQL_TYPE_STRING, F.MYSQL_TYPE_SET << 8 | size, real=F.MYSQL_TYPE_SET,
                            collation=_UTF8MB4, members=members, gen=lambda r, s=size: r.randbytes(s)))
    text = lambda r: r.choice(_NASTY + [r.randbytes(r.randint(0, 40))])  # noqa: E731
    for coll in (_UTF8MB4, _UTF8MB3, _LATIN1, _BINARY, None):
        cols.append(Col(F.MYSQL_TYPE_VARCHAR, 100, max_length=100, collation=coll,
                        gen=lambda r: _prefixed(text(r), 1)))
        cols.append(Col(F.MYSQL_TYPE_VARCHAR, 1000, max_length=1000, collation=coll,
                        gen=lambda r: _prefixed(text(r), 2)))
        for pre in (1, 2, 3, 4):
            cols.append(Col(F.MYSQL_TYPE_BLOB, pre, collation=coll, gen=lambda r, pre=pre: _prefixed(text(r), pre)))
        # CHAR(20): STRING with byte0 STRING; with the binary collation BINARY(20), padded with 0x00
        cols.append(Col(F.MYSQL_TYPE_STRING, F.MYSQL_TYPE_STRING << 8 | 20, max_length=20, collation=coll,
                        gen=lambda r: _prefixed(text(r)[:20].rstrip(b"\x00"), 1)))
    cols.append(Col(F.MYSQL_TYPE_GEOMETRY, 4, gen=lambda r: _prefixed(r.randbytes(r.randint(0, 30)), 4)))
    for c in cols:
        c.nullable = rnd.random() < 0.5
    return cols


def _row(rnd: random.Random, cols: list[Col], present: list[int]) -> bytes:
    nulls = bytearray((len(present) + 7) // 8)
    body = bytearray()
    for j, i in enumerate(present):
        c = cols[i]
        if c.nullable and rnd.random() < 0.25:
            nulls[j >> 3] |= 1 << (j & 7)
            continue
        body += c.gen(rnd)
    return bytes(nulls) + bytes(body)


def _bitmap(n: int, idx: list[int]) -> bytes:
    b = bytearray((n + 7) // 8)
    for i in idx:
        b[i >> 3] |= 1 << (i & 7)
    return bytes(b)


_KINDS = {"insert": F.WRITE_ROWS_EVENT_V1, "update": F.UPDATE_ROWS_EVENT_V1, "delete": F.DELETE_ROWS_EVENT_V1}


def _both(tm: TableMap, body: bytes, hdr: RowsEventHeader, wb=None, wa=None):
    got = []
    for native in (True, False):
        codec = decode.RowCodec(tm, native=native)
        try:
            got.append(("ok", codec.decode(body, hdr, wb, wa)))
        except BinlogError:
            got.append(("BinlogError", None))
        except Exception as e:  # noqa: BLE001 - the Python reference may fail otherwise on damaged bytes
            got.append((type(e).__name__, None))
        if native:
            assert any("NIMG" in src for src in codec.sources.values()), "the native decoder was not used"
    return got


@pytestmark_native
def test_every_native_type_decodes_as_the_generated_python():
    rnd = random.Random(20261203)
    cols = _columns(rnd)
    tm = _table(cols)
    n = len(cols)
    full = list(range(n))
    for kind in ("insert", "delete", "update"):
        body = b"".join(_row(rnd, cols, full) + (_row(rnd, cols, full) if kind == "update" else b"")
                        for _ in range(300))
        bm = _bitmap(n, full)
        hdr = RowsEventHeader(1, 0, kind, n, bm, bm, 0, _KINDS[kind])
        native, python = _both(tm, body, hdr)
        assert native[0] == python[0] == "ok"
        assert native[1] == python[1]


@pytestmark_native
def test_random_tables_partial_images_and_wanted_columns():
    rnd = random.Random(7)
    pool = _columns(rnd)
    for round_ in range(150):
        cols = [rnd.choice(pool) for _ in range(rnd.choice([1, 3, 8, 9, 17, 30]))]
        tm = _table(cols)
        n = len(cols)
        kind = rnd.choice(list(_KINDS))
        pb = sorted(rnd.sample(range(n), rnd.randint(1, n)))
        pa = sorted(rnd.sample(range(n), rnd.randint(1, n)))
        wb = frozenset(rnd.sample(range(n), rnd.randint(0, n))) if rnd.random() < 0.5 else None
        wa = frozenset(rnd.sample(range(n), rnd.randint(0, n))) if rnd.random() < 0.5 else None
        rows = []
        for _ in range(rnd.randint(1, 5)):
            if kind != "insert":
                rows.append(_row(rnd, cols, pb))
            if kind != "delete":
                rows.append(_row(rnd, cols, pa))
        body = b"".join(rows)
        hdr = RowsEventHeader(1, 0, kind, n, _bitmap(n, pb), _bitmap(n, pa), 0, _KINDS[kind])
        native, python = _both(tm, body, hdr, wb, wa)
        assert native == python, (round_, kind)


@pytestmark_native
def test_damaged_images_raise_in_both():
    rnd = random.Random(3)
    pool = _columns(rnd)
    python_raised: set[str] = set()
    for _ in range(40):
        cols = [rnd.choice(pool) for _ in range(rnd.randint(1, 12))]
        tm = _table(cols)
        n = len(cols)
        full = list(range(n))
        body = _row(rnd, cols, full) + _row(rnd, cols, full)
        bm = _bitmap(n, full)
        hdr = RowsEventHeader(1, 0, "update", n, bm, bm, 0, _KINDS["update"])
        for cut in range(1, len(body)):
            native, python = _both(tm, body[:cut], hdr)
            if python[0] == "ok":
                # an image cut exactly after a row of the first image: both decode the rows before
                assert native == python
                continue
            python_raised.add(python[0])
            assert native[0] == "BinlogError", (cut, python)
    # garbage: never a crash; equal, or both refuse (DECIMAL groups out of range refused natively)
    for _ in range(400):
        cols = [rnd.choice(pool) for _ in range(rnd.randint(1, 10))]
        tm = _table(cols)
        n = len(cols)
        bm = _bitmap(n, list(range(n)))
        hdr = RowsEventHeader(1, 0, "insert", n, bm, bm, 0, _KINDS["insert"])
        native, python = _both(tm, rnd.randbytes(rnd.randint(1, 80)), hdr)
        if native[0] == "ok" or python[0] == "ok":
            has_decimal = any(c.type == F.MYSQL_TYPE_NEWDECIMAL for c in cols)
            assert native == python or (has_decimal and native[0] == "BinlogError"), (native, python)
        else:
            assert native[0] == "BinlogError"
    assert python_raised <= {"BinlogError", "IndexError", "error"}, python_raised


@pytestmark_native
def test_types_left_to_python_still_decode_with_native_on():
    """BIT and the pre-5.6 temporal types are decoded by the generated Python even with native=True."""
    cols = [Col(F.MYSQL_TYPE_LONG, gen=lambda r: r.randbytes(4)),
            Col(F.MYSQL_TYPE_BIT, 1 << 8 | 3, gen=lambda r: r.randbytes(2)),
            Col(F.MYSQL_TYPE_TIMESTAMP, gen=lambda r: r.randbytes(4))]
    tm = _table(cols)
    rnd = random.Random(1)
    body = b"".join(_row(rnd, cols, [0, 1, 2]) for _ in range(20))
    bm = _bitmap(3, [0, 1, 2])
    hdr = RowsEventHeader(1, 0, "insert", 3, bm, bm, 0, _KINDS["insert"])
    codec = decode.RowCodec(tm, native=True)
    assert codec.decode(body, hdr) == decode.RowCodec(tm, native=False).decode(body, hdr)
    assert not any("NIMG" in src for src in codec.sources.values())


@pytestmark_native
def test_decimal_digit_group_out_of_range_is_refused_natively():
    # DECIMAL(9,0): one group of 4 bytes; 10^9 is no valid group
    data = bytes([(10 ** 9 >> 24) | 0x80]) + (10 ** 9).to_bytes(4, "big")[1:]
    with pytest.raises(BinlogError, match="DECIMAL"):
        decode.decode_value(F.MYSQL_TYPE_NEWDECIMAL, 9 << 8, data, native=True)
    assert decode.decode_value(F.MYSQL_TYPE_NEWDECIMAL, 9 << 8, (999999999 | 1 << 31).to_bytes(4, "big"),
                               native=True) == "999999999"
