"""The native row-image decoder (binlog/_rowimage.c ``image``) against the generated Python.

The generated Python decoders are the reference: for the same bytes ``RowCodec(native=True)``
must give exactly the literals of ``RowCodec(native=False)``, for every type the native decoder
handles (integers, FLOAT/DOUBLE, YEAR, DATE, DECIMAL, TIME2/DATETIME2/TIMESTAMP2, ENUM, SET and
BIT and the string types in binary, UTF-8 and other charsets), one column at a time and in random
multi-column tables (NULLs, partial present bitmaps, wanted subsets, insert/delete/update). A
damaged image (cut short, random bytes) must raise in both (BinlogError natively) and never
crash the interpreter; the one allowed difference is a DECIMAL digit group out of range (never
written by a server), which only the native decoder refuses. Types the native decoder leaves
to Python (the pre-5.6 temporal types, a BIT wider than 8 bytes from a damaged table map) are
decoded by Python even with native=True.

Everything is seeded (fixed random.Random seeds): the same inputs on every run, in a few seconds.
"""
from __future__ import annotations

import random
import struct
from collections import Counter

import pytest
from mysqlbackup.binlog import decode
from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.decode import RowCodec, decimal_size, decode_value
from mysqlbackup.binlog.events import RowsEventHeader, TableMap
from mysqlbackup.binlog.reader import BinlogError
from test_binlog_format import _pack_decimal

native = pytest.mark.skipif(decode._rowimage is None, reason="the native row decoder is not built "
                            "(test_native_decoder_is_built fails for that: run scripts/install.sh)")

UTF8MB4, UTF8MB4_BIN, UTF8MB3, UTF8MB3_BIN, LATIN1, BINARY = 45, 46, 33, 83, 8, 63
_EVENT = {"insert": F.WRITE_ROWS_EVENT_V1, "update": F.UPDATE_ROWS_EVENT_V1, "delete": F.DELETE_ROWS_EVENT_V1}
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def test_native_decoder_is_built():
    assert decode._rowimage is not None, (
        "the native row decoder plugins/mysqlbackup/binlog/_rowimage.c is not built: "
        "run scripts/install.sh (or scripts/install.sh --dev), which compiles it")


# --- table maps, images, events -------------------------------------------------------------------

class Col:
    """One column of a test table: its binlog type and metadata as a server would send them."""

    def __init__(self, real: int, meta: int = 0, *, signed: bool = True, collation: int | None = None,
                 members: tuple[bytes, ...] | None = None, nullable: bool = False, max_length: int = 0):
        self.real, self.meta, self.signed, self.collation = real, meta, signed, collation
        self.members, self.nullable, self.max_length = members, nullable, max_length
        # ENUM, SET and CHAR/BINARY are sent as MYSQL_TYPE_STRING, the real type in the metadata
        self.type = F.MYSQL_TYPE_STRING if real in (F.MYSQL_TYPE_ENUM, F.MYSQL_TYPE_SET) else real

    def __repr__(self) -> str:
        return (f"Col({F.TYPE_NAMES.get(self.real, self.real)}, meta={self.meta:#x}, signed={self.signed}, "
                f"collation={self.collation}, members={None if self.members is None else len(self.members)}, "
                f"nullable={self.nullable}, max_length={self.max_length})")


def c_int(t: int, signed: bool = True, **kw) -> Col:
    return Col(t, 0, signed=signed, **kw)


def c_decimal(prec: int, scale: int, **kw) -> Col:
    return Col(F.MYSQL_TYPE_NEWDECIMAL, prec << 8 | scale, **kw)


def c_enum(size: int, members, **kw) -> Col:
    return Col(F.MYSQL_TYPE_ENUM, F.MYSQL_TYPE_ENUM << 8 | size, members=members, **kw)


def c_set(size: int, members, **kw) -> Col:
    return Col(F.MYSQL_TYPE_SET, F.MYSQL_TYPE_SET << 8 | size, members=members, **kw)


def c_char(length: int, collation: int | None, **kw) -> Col:
    """CHAR/BINARY(n bytes): MYSQL_TYPE_STRING, the length's high bits in byte0 (bug #37426)."""
    b0 = F.MYSQL_TYPE_STRING ^ ((length >> 4) & 0x30)
    return Col(F.MYSQL_TYPE_STRING, b0 << 8 | (length & 0xFF), collation=collation, max_length=length, **kw)


def c_varchar(length: int, collation: int | None, t: int = F.MYSQL_TYPE_VARCHAR, **kw) -> Col:
    return Col(t, length, collation=collation, max_length=length, **kw)


def c_blob(prefix: int, collation: int | None, t: int = F.MYSQL_TYPE_BLOB, **kw) -> Col:
    return Col(t, prefix, collation=collation, **kw)


def table(cols: list[Col]) -> TableMap:
    tm = TableMap()
    tm.table_id, tm.flags, tm.schema, tm.table = 7, 0, "db", "t"
    tm.column_types = tuple(c.type for c in cols)
    tm.real_types = tuple(c.real for c in cols)
    tm.column_meta = tuple(c.meta for c in cols)
    tm.max_lengths = tuple(c.max_length for c in cols)
    tm.nullable = tuple(c.nullable for c in cols)
    tm.signed = tuple(c.signed for c in cols)
    tm.charsets = tuple(c.collation for c in cols)
    tm.enum_values = tuple(c.members if c.real == F.MYSQL_TYPE_ENUM else None for c in cols)
    tm.set_values = tuple(c.members if c.real == F.MYSQL_TYPE_SET else None for c in cols)
    tm.column_names = tuple(f"c{i}" for i in range(len(cols)))
    tm.geometry_types = tm.primary_key = tm.primary_key_prefixes = tm.visibility = None
    tm.default_charset = None
    tm.raw = b""
    return tm


def bitmap(n: int, present) -> bytes:
    b = bytearray((n + 7) // 8)
    for i in present:
        b[i >> 3] |= 1 << (i & 7)
    return bytes(b)


def image(cols: list[Col], present: list[int], values: dict) -> bytes:
    """A row image of the present columns: the null bitmap (one bit per present column), then
    each non-NULL value's bytes (``values[i]``: bytes, or None for NULL)."""
    nulls = bytearray((len(present) + 7) // 8)
    body = bytearray()
    for j, i in enumerate(present):
        v = values[i]
        if v is None:
            nulls[j >> 3] |= 1 << (j & 7)
        else:
            body += v
    return bytes(nulls) + bytes(body)


def header(kind: str, n: int, pb: bytes, pa: bytes, rows_offset: int) -> RowsEventHeader:
    return RowsEventHeader(7, 0, kind, n, pb, pa, rows_offset, _EVENT[kind])


def decode_both(tm: TableMap, body: bytes, hdr: RowsEventHeader, wb=None, wa=None, codecs=None):
    """(native outcome, python outcome): ("ok", rows) or ("err", exception)."""
    out = []
    for nat in (True, False):
        codec = codecs[nat] if codecs else RowCodec(tm, native=nat)
        try:
            out.append(("ok", codec.decode(body, hdr, wb, wa)))
        except Exception as e:  # noqa: BLE001 - the outcome is what is compared
            out.append(("err", e))
    return out


def assert_same(tm: TableMap, body: bytes, hdr: RowsEventHeader, wb=None, wa=None, codecs=None,
                expect_native=True, context=""):
    codecs = codecs or {True: RowCodec(tm, native=True), False: RowCodec(tm, native=False)}
    n, p = decode_both(tm, body, hdr, wb, wa, codecs)
    if p[0] == "err":
        raise AssertionError(f"the Python decoder raised {p[1]!r} on valid input {context}")
    if n[0] == "err":
        raise AssertionError(f"the native decoder raised {n[1]!r}, Python gave {p[1][:3]}... {context}")
    if n[1] != p[1]:
        for k, (a, b) in enumerate(zip(n[1], p[1])):
            if a != b:
                raise AssertionError(f"row {k}: native {a} != python {b} {context}")
        raise AssertionError(f"{len(n[1])} native rows, {len(p[1])} python rows {context}")
    if expect_native:
        key = (hdr.kind, hdr.present_before, hdr.present_after, wb, wa)
        assert "NIMG" in codecs[True].sources[key], "the native codec did not use the native decoder"
    return p[1]


# --- values ----------------------------------------------------------------------------------------

_INT_SIZES = {F.MYSQL_TYPE_TINY: 1, F.MYSQL_TYPE_SHORT: 2, F.MYSQL_TYPE_INT24: 3, F.MYSQL_TYPE_LONG: 4,
              F.MYSQL_TYPE_LONGLONG: 8}

_TEXTS = ["", "a", "plain ascii text", "it's", "back\\slash", "nul\0byte", "line\nbreak", "cr\rlf\r\n",
          "ctrl-z\x1a", "\\", "'", "\0", "\n", "\r", "\x1a", "\\'\0\n\r\x1a", "''''", "\\\\\\",
          "é", "ñandú", "表", "中文字符", "😀", "😀 x 🎉", "v1 ✓", "mixé\0表\n😀'\\\x1a", "\x7f\x01\x1f",
          "Ω≈ç√∫", "\u0800\uffff\U00010000\U0010ffff", " trailing  ", "a" * 300, "表" * 200, "😀" * 100]
_INVALID_UTF8 = [b"\x80", b"a\xbfb", b"\xbf\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"x\xed\xa0\x80y",
                 b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xf0\x80\x80\x80", b"\xe4\xb8", b"\xf0\x9f\x98",
                 b"abc\xe4", b"\xc3", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xfe\xff",
                 b"\xe4\x00\xad", b"\xc3'", b"\xc3\\", b"\xe4\n", b"ok\x1a\xf0\x9f", b"\xc3\xa9\xe9",
                 "é".encode("latin1") + b" latin1 bytes", b"\xa0" * 600]


def utf8_value(rnd: random.Random, limit: int) -> bytes:
    r = rnd.random()
    if r < 0.55:
        v = rnd.choice(_TEXTS).encode()
    elif r < 0.8:
        v = rnd.choice(_INVALID_UTF8)
        if rnd.random() < 0.5:
            v = rnd.choice(_TEXTS[:20]).encode() + v + rnd.choice(_TEXTS[:20]).encode()
    elif r < 0.9:  # random characters, escapes among them
        v = "".join(rnd.choice("ab'\\\0\n\r\x1a é表😀") for _ in range(rnd.randint(0, 40))).encode()
    else:
        v = rnd.randbytes(rnd.randint(0, 30))
    return v[:limit]


def int_value(rnd: random.Random, size: int, signed: bool) -> bytes:
    bits = 8 * size
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edges = [0, 1, -1, lo, hi, lo + 1, hi - 1, 127, 128, 255, 256, -128, -129]
    v = rnd.choice(edges) if rnd.random() < 0.5 else rnd.randint(lo, hi)
    v = min(max(v, lo), hi)
    return v.to_bytes(size, "little", signed=signed)


_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.1, 1e-45, -1e-45, 1.17549435e-38, 3.4028234663852886e+38, 1e10,
           float("inf"), float("-inf"), float("nan"), 2.5, 1 / 3, 16777216.0, 16777217.0, 123456.789]
_DOUBLES = [0.0, -0.0, 1.0, -1.0, 0.1, 5e-324, -5e-324, 2.2250738585072009e-308, 2.2250738585072014e-308,
            1.7976931348623157e308, -1.7976931348623157e308, float("inf"), float("-inf"), float("nan"),
            1e16, 1e15, 1e-5, 1e-4, 0.1 + 0.2, 1 / 3, 9007199254740993.0, 123456789012345678.0]
_NAN_BITS = [b"\x00\x00\xc0\x7f", b"\x00\x00\xc0\xff", b"\x01\x00\x80\x7f", b"\xff\xff\xff\xff"]
_NAN_BITS8 = [b"\x00\x00\x00\x00\x00\x00\xf8\x7f", b"\x00\x00\x00\x00\x00\x00\xf8\xff",
              b"\x01\x00\x00\x00\x00\x00\xf0\x7f", b"\xff" * 8]


def float_value(rnd: random.Random, double: bool) -> bytes:
    r = rnd.random()
    if r < 0.3:
        return struct.pack("<d" if double else "<f", rnd.choice(_DOUBLES if double else _FLOATS))
    if r < 0.4:
        return rnd.choice(_NAN_BITS8 if double else _NAN_BITS)
    if r < 0.5:  # subnormals
        m = rnd.randint(1, (1 << (52 if double else 23)) - 1)
        sign = rnd.randint(0, 1) << (63 if double else 31)
        return (sign | m).to_bytes(8 if double else 4, "little")
    if r < 0.6:  # "nice" numbers that repr shortens
        return struct.pack("<d" if double else "<f", round(rnd.uniform(-1e6, 1e6), rnd.randint(0, 6)))
    return rnd.randbytes(8 if double else 4)


def decimal_bytes(prec: int, scale: int, neg: bool, ip: str, fp: str) -> bytes:
    """The binlog bytes of a DECIMAL(prec, scale) from its digit strings (test_binlog_format's packer,
    straight from the format description)."""
    b = _pack_decimal(("-" if neg else "") + ip + "." + fp, prec, scale)
    assert len(b) == decimal_size(prec, scale)
    return b


def decimal_value(rnd: random.Random, prec: int, scale: int) -> bytes:
    intg = prec - scale
    neg = rnd.random() < 0.5
    r = rnd.random()
    if r < 0.15:
        ip, fp = "0" * intg, "0" * scale                                  # zero, negative zero
    elif r < 0.25:
        ip, fp = "9" * intg, "9" * scale                                  # the extremes
    elif r < 0.4:                                                         # small: leading zero groups
        ip = "0" * max(0, intg - 1) + str(rnd.randint(0, 9)) if intg else ""
        fp = "".join(rnd.choice("0000000001") for _ in range(scale))
    else:
        ip = "".join(rnd.choice("0123456789") for _ in range(intg))
        fp = "".join(rnd.choice("0123456789") for _ in range(scale))
    return decimal_bytes(prec, scale, neg, ip, fp)


def temporal_size(t: int, fsp: int) -> int:
    return {F.MYSQL_TYPE_TIME2: 3, F.MYSQL_TYPE_DATETIME2: 5, F.MYSQL_TYPE_TIMESTAMP2: 4}[t] + (fsp + 1) // 2


def frac_bytes(usec: int, fsp: int) -> bytes:
    if fsp in (1, 2):
        return (usec // 10000 % 100).to_bytes(1, "big")
    if fsp in (3, 4):
        return (usec // 100 % 10000).to_bytes(2, "big")
    if fsp in (5, 6):
        return (usec % 1000000).to_bytes(3, "big")
    return b""


def temporal_value(rnd: random.Random, t: int, fsp: int) -> bytes:
    n = temporal_size(t, fsp)
    fb = (fsp + 1) // 2
    r = rnd.random()
    if r < 0.1:
        return b"\x00" * n
    if r < 0.2:
        return b"\xff" * n
    if r < 0.45:
        return rnd.randbytes(n)
    usec = rnd.choice([0, 1, 10, 999999, 500000, rnd.randint(0, 999999)])
    if t == F.MYSQL_TYPE_TIME2:
        h, m, s = rnd.randint(0, 838), rnd.randint(0, 59), rnd.randint(0, 59)
        packed = ((h << 12 | m << 6 | s) << (8 * fb)) | int.from_bytes(frac_bytes(usec, fsp), "big")
        if rnd.random() < 0.5:
            packed = -packed                                              # negative TIME
        return (packed + (0x800000 << (8 * fb))).to_bytes(n, "big")
    if t == F.MYSQL_TYPE_DATETIME2:
        y, mo, d = rnd.choice([(0, 0, 0), (1000, 1, 1), (9999, 12, 31),
                               (rnd.randint(0, 9999), rnd.randint(0, 12), rnd.randint(0, 31))])
        h, mi, s = rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59)
        intpart = ((y * 13 + mo) << 22) | (d << 17) | (h << 12) | (mi << 6) | s
        return (intpart + 0x8000000000).to_bytes(5, "big") + frac_bytes(usec, fsp)
    sec = rnd.choice([0, 1, 86399, 2 ** 31 - 1, 2 ** 32 - 1, rnd.randint(0, 2 ** 32 - 1)])
    return sec.to_bytes(4, "big") + frac_bytes(usec, fsp)


def date_value(rnd: random.Random) -> bytes:
    r = rnd.random()
    if r < 0.15:
        return b"\x00\x00\x00"                                            # 0000-00-00
    if r < 0.5:
        y, m, d = rnd.randint(0, 9999), rnd.randint(0, 12), rnd.randint(0, 31)
        return (y << 9 | m << 5 | d).to_bytes(3, "little")                # incl. zero month/day
    return rnd.randbytes(3)


def enum_set_value(rnd: random.Random, c: Col) -> bytes:
    size = c.meta & 0xFF
    nm = len(c.members) if c.members is not None else rnd.randint(0, 20)
    r = rnd.random()
    if c.real == F.MYSQL_TYPE_ENUM:
        v = rnd.randint(0, nm + 3) if r < 0.8 else rnd.randint(0, (1 << (8 * size)) - 1)
    else:
        width = min(8 * size, nm + 2)
        v = rnd.getrandbits(width) if r < 0.8 else rnd.getrandbits(8 * size)
    return min(v, (1 << (8 * size)) - 1).to_bytes(size, "little")


def string_value(rnd: random.Random, c: Col, cap: int | None = None) -> bytes:
    """A length-prefixed string value (of at most ``cap`` bytes)."""
    cs = F.COLLATION_CHARSET.get(c.collation) if c.collation is not None else None
    if c.real == F.MYSQL_TYPE_GEOMETRY:
        cs = "binary"
    if c.real in (F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING):
        prefix, limit = (1 if c.meta < 256 else 2), c.meta
    elif c.real == F.MYSQL_TYPE_STRING:
        prefix, limit = (1 if c.max_length < 256 else 2), c.max_length
    else:
        prefix, limit = c.meta, (255, 2000, 3000, 3000)[c.meta - 1]
    if cap is not None:
        limit = min(limit, cap)
    if cs in F.UTF8_CHARSETS:
        v = utf8_value(rnd, limit)
    else:
        v = rnd.randbytes(rnd.choice([0, 1, 2, 5, rnd.randint(0, limit)]) if limit else 0)[:limit]
        if c.real == F.MYSQL_TYPE_STRING and cs == "binary" and rnd.random() < 0.6:
            v = v.rstrip(b"\0")  # BINARY(n): the server strips the trailing zero bytes
        if cs not in (None, "binary") and rnd.random() < 0.3:
            v = "é'\\\0ä".encode("latin1")[:limit]
    return len(v).to_bytes(prefix, "little") + v


def value(rnd: random.Random, c: Col, cap: int | None = None) -> bytes:
    t = c.real
    if t in _INT_SIZES:
        return int_value(rnd, _INT_SIZES[t], c.signed)
    if t in (F.MYSQL_TYPE_FLOAT, F.MYSQL_TYPE_DOUBLE):
        return float_value(rnd, t == F.MYSQL_TYPE_DOUBLE)
    if t == F.MYSQL_TYPE_YEAR:
        return bytes([rnd.choice([0, 1, 69, 70, 155, 255, rnd.randint(0, 255)])])
    if t in (F.MYSQL_TYPE_DATE, F.MYSQL_TYPE_NEWDATE):
        return date_value(rnd)
    if t == F.MYSQL_TYPE_NEWDECIMAL:
        return decimal_value(rnd, c.meta >> 8, c.meta & 0xFF)
    if t in (F.MYSQL_TYPE_TIME2, F.MYSQL_TYPE_DATETIME2, F.MYSQL_TYPE_TIMESTAMP2):
        return temporal_value(rnd, t, c.meta)
    if t in (F.MYSQL_TYPE_ENUM, F.MYSQL_TYPE_SET):
        return enum_set_value(rnd, c)
    if t == F.MYSQL_TYPE_BIT:
        nbytes, bits = c.meta >> 8, c.meta & 0xFF
        n = nbytes + (1 if bits else 0)
        v = bytearray(rnd.randbytes(n))
        if bits and n:
            v[0] &= (1 << bits) - 1
        return bytes(v)
    if t == F.MYSQL_TYPE_TIMESTAMP:
        return rnd.choice([0, 1, 2 ** 31 - 1, rnd.getrandbits(32)]).to_bytes(4, "little")
    if t == F.MYSQL_TYPE_DATETIME:
        return rnd.choice([0, 20240229235959, 99991231235959, rnd.getrandbits(64)]).to_bytes(8, "little")
    if t == F.MYSQL_TYPE_TIME:
        return rnd.choice([0, 1, -1, 8385959, -8385959, rnd.randint(-2 ** 23, 2 ** 23 - 1)]).to_bytes(
            3, "little", signed=True)
    return string_value(rnd, c, cap)


# --- column shapes -----------------------------------------------------------------------------------

_MEMBERS = [b"a", b"b", b"it's", b"x\\y", b"\xc3\xa9", "表".encode(), b"nl\n", b"", b"\xed\xa0\x80", b"z\x1a"]


def members(rnd: random.Random, n: int) -> tuple[bytes, ...]:
    return tuple(_MEMBERS[k] if k < len(_MEMBERS) and rnd.random() < 0.7 else b"m%d" % k for k in range(n))


_DECIMALS = [(1, 0), (1, 1), (2, 1), (5, 2), (9, 0), (9, 9), (10, 0), (10, 10), (10, 5), (12, 3), (14, 4),
             (18, 9), (18, 0), (18, 18), (19, 0), (19, 19), (20, 10), (21, 1), (27, 9), (30, 30), (38, 14),
             (38, 0), (40, 20), (65, 0), (65, 30), (65, 1), (64, 30), (3, 3), (4, 2), (8, 7), (17, 8),
             (30, 29), (36, 27)]


def random_column(rnd: random.Random, nullable: bool = False) -> Col:
    k = rnd.randrange(13)
    kw = {"nullable": nullable}
    if k == 12:
        width = rnd.choice([1, 1, 2, 8, 9, 16, 33, 63, 64])  # BIT(width): whole bytes, then the bits left
        return Col(F.MYSQL_TYPE_BIT, (width // 8) << 8 | width % 8, **kw)
    if k == 0:
        return c_int(rnd.choice(list(_INT_SIZES)), rnd.random() < 0.5, **kw)
    if k == 1:
        return Col(rnd.choice([F.MYSQL_TYPE_FLOAT, F.MYSQL_TYPE_DOUBLE]), rnd.choice([4, 8]), **kw)
    if k == 2:
        return Col(rnd.choice([F.MYSQL_TYPE_YEAR, F.MYSQL_TYPE_DATE, F.MYSQL_TYPE_NEWDATE]), **kw)
    if k == 3:
        prec = rnd.randint(1, 65)
        return c_decimal(*rnd.choice([rnd.choice(_DECIMALS), (prec, rnd.randint(0, min(prec, 30)))]), **kw)
    if k == 4:
        return Col(rnd.choice([F.MYSQL_TYPE_TIME2, F.MYSQL_TYPE_DATETIME2, F.MYSQL_TYPE_TIMESTAMP2]),
                   rnd.randint(0, 6), **kw)
    if k == 5:
        return c_enum(rnd.choice([1, 2]), rnd.choice([None, members(rnd, rnd.randint(0, 12))]),
                      collation=rnd.choice([None, UTF8MB4, LATIN1, BINARY]), **kw)
    if k == 6:
        return c_set(rnd.randint(1, 8), rnd.choice([None, members(rnd, rnd.randint(0, 8)),
                                                    members(rnd, rnd.randint(9, 20))]),
                     collation=rnd.choice([None, UTF8MB4, UTF8MB3, LATIN1]), **kw)
    collation = rnd.choice([UTF8MB4, UTF8MB4_BIN, UTF8MB3, UTF8MB3_BIN, LATIN1, BINARY, None])
    if k in (7, 8):
        return c_varchar(rnd.choice([1, 10, 255, 256, 300, 2000]), collation,
                         rnd.choice([F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING]), **kw)
    if k == 9:
        return c_char(rnd.choice([0, 1, 3, 8, 16, 255, 256, 300, 765]), collation, **kw)
    return c_blob(rnd.randint(1, 4), collation,
                  rnd.choice([F.MYSQL_TYPE_BLOB, F.MYSQL_TYPE_BLOB, F.MYSQL_TYPE_GEOMETRY]), **kw)


# --- one column at a time ---------------------------------------------------------------------------

def single_column_shapes() -> list[Col]:
    shapes = []
    for t in _INT_SIZES:
        shapes += [c_int(t, True), c_int(t, False)]
    shapes += [Col(F.MYSQL_TYPE_FLOAT, 4), Col(F.MYSQL_TYPE_DOUBLE, 8), Col(F.MYSQL_TYPE_YEAR),
               Col(F.MYSQL_TYPE_DATE), Col(F.MYSQL_TYPE_NEWDATE)]
    shapes += [c_decimal(p, s) for p, s in _DECIMALS]
    for t in (F.MYSQL_TYPE_TIME2, F.MYSQL_TYPE_DATETIME2, F.MYSQL_TYPE_TIMESTAMP2):
        shapes += [Col(t, fsp) for fsp in range(7)]
    rnd = random.Random(3)
    for size in (1, 2):
        for nm in (0, 1, 3, 10, 255, 300):
            for coll in (None, UTF8MB4, LATIN1):
                shapes.append(c_enum(size, members(rnd, nm) if nm <= 255 or size == 2 else None, collation=coll))
        shapes.append(c_enum(size, None))
    for size in range(1, 9):
        for nm in (0, 1, 5, 8, 9, min(64, 8 * size)):
            if nm <= 8 * size:
                shapes.append(c_set(size, members(rnd, nm), collation=rnd.choice([None, UTF8MB4, LATIN1])))
        shapes.append(c_set(size, None))
    for coll in (UTF8MB4, UTF8MB4_BIN, UTF8MB3, UTF8MB3_BIN, LATIN1, BINARY, None):
        for t in (F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING):
            shapes += [c_varchar(n, coll, t) for n in (0, 1, 40, 255, 256, 2000)]
        shapes += [c_char(n, coll) for n in (0, 1, 10, 255, 256, 765)]
        shapes += [c_blob(k, coll) for k in (1, 2, 3, 4)]
    shapes += [c_blob(k, None, F.MYSQL_TYPE_GEOMETRY) for k in (1, 4)]
    # BIT(1), (7), (8), (9), (17), (63), (64); meta 0 (a damaged map: no bytes, the value 0)
    shapes += [Col(F.MYSQL_TYPE_BIT, m) for m in (1, 7, 1 << 8, 1 << 8 | 1, 2 << 8 | 1, 7 << 8 | 7, 8 << 8, 0)]
    return shapes


@native
@pytest.mark.parametrize("col", single_column_shapes(), ids=repr)
def test_single_column_native_equals_python(col):
    rnd = random.Random(repr(col))  # a str seed: the same on every run (not hash())
    tm = table([col])
    n = 120 if col.real in (F.MYSQL_TYPE_FLOAT, F.MYSQL_TYPE_DOUBLE, F.MYSQL_TYPE_NEWDECIMAL,
                            F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_BLOB) else 60
    rows = b"".join(b"\x00" + value(rnd, col) for _ in range(n))
    hdr = header("insert", 1, b"\x01", b"\x01", 3)
    got = assert_same(tm, b"hdr" + rows, hdr, context=repr(col))
    assert len(got) == n
    # decode_value (one value through its own codec) agrees on a few of them
    for _ in range(3):
        data = value(rnd, col)
        lit = decode_value(col.type, col.meta, data, signed=col.signed, collation=col.collation,
                           members=col.members, real_type=col.real, native=True)
        assert lit == decode_value(col.type, col.meta, data, signed=col.signed, collation=col.collation,
                                   members=col.members, real_type=col.real, native=False), data


def _lit(col: Col, data: bytes, nat: bool) -> str:
    return decode_value(col.type, col.meta, data, signed=col.signed, collation=col.collation,
                        members=col.members, real_type=col.real, native=nat)


@native
def test_known_literals_both_ways():
    """A few exact texts (docs/flashback.md "Literals"), through both decoders."""
    cases = [
        (c_int(F.MYSQL_TYPE_TINY), b"\xff", "-1"), (c_int(F.MYSQL_TYPE_TINY, False), b"\xff", "255"),
        (c_int(F.MYSQL_TYPE_INT24), b"\x00\x00\x80", "-8388608"),
        (c_int(F.MYSQL_TYPE_LONGLONG), b"\x00" * 7 + b"\x80", "-9223372036854775808"),
        (c_int(F.MYSQL_TYPE_LONGLONG, False), b"\xff" * 8, "18446744073709551615"),
        (Col(F.MYSQL_TYPE_DOUBLE, 8), struct.pack("<d", float("-inf")), "-inf"),
        (Col(F.MYSQL_TYPE_DOUBLE, 8), struct.pack("<d", -0.0), "-0.0"),
        (Col(F.MYSQL_TYPE_DOUBLE, 8), struct.pack("<d", 5e-324), "5e-324"),
        (Col(F.MYSQL_TYPE_FLOAT, 4), struct.pack("<f", 0.1), repr(struct.unpack("<f", struct.pack("<f", 0.1))[0])),
        (Col(F.MYSQL_TYPE_FLOAT, 4), b"\x00\x00\xc0\xff", "nan"),
        (Col(F.MYSQL_TYPE_YEAR), b"\x00", "0000"), (Col(F.MYSQL_TYPE_YEAR), b"\xff", "2155"),
        (Col(F.MYSQL_TYPE_BIT, 1), b"\x00", "b'0'"), (Col(F.MYSQL_TYPE_BIT, 1), b"\x01", "b'1'"),
        (Col(F.MYSQL_TYPE_BIT, 1 << 8 | 4), b"\x0a\x05", "b'101000000101'"),
        (Col(F.MYSQL_TYPE_BIT, 8 << 8), b"\xff" * 8, "b'" + "1" * 64 + "'"),
        (Col(F.MYSQL_TYPE_BIT, 8 << 8), b"\x80" + b"\x00" * 7, "b'1" + "0" * 63 + "'"),
        (Col(F.MYSQL_TYPE_DATE), b"\x00\x00\x00", "'0000-00-00'"),
        (c_decimal(5, 2), decimal_bytes(5, 2, True, "0", "00"), "-0.00"),
        (c_decimal(9, 9), decimal_bytes(9, 9, False, "", "000000001"), "0.000000001"),
        (c_decimal(65, 30), decimal_bytes(65, 30, True, "9" * 35, "9" * 30), "-" + "9" * 35 + "." + "9" * 30),
        (Col(F.MYSQL_TYPE_TIME2, 0), (0x800000 - (838 << 12 | 59 << 6 | 59)).to_bytes(3, "big"), "'-838:59:59'"),
        (Col(F.MYSQL_TYPE_TIMESTAMP2, 0), b"\x00" * 4, "'0000-00-00 00:00:00'"),
        (Col(F.MYSQL_TYPE_TIMESTAMP2, 3), (86400).to_bytes(4, "big") + (1234).to_bytes(2, "big"),
         "'1970-01-02 00:00:00.123'"),
        (c_enum(1, (b"a", b"b")), b"\x02", "'b'"), (c_enum(1, (b"a", b"b")), b"\x05", "5"),
        (c_enum(2, None), b"\x01\x01", "257"),
        (c_set(1, (b"x", b"y", b"z")), b"\x05", "'x,z'"), (c_set(1, None), b"\x05", "5"),
        (c_varchar(10, UTF8MB4), b"\x06" + "\\'\0\n\r\x1a".encode(), "'\\\\\\'\\0\\n\\r\\Z'"),
        (c_varchar(10, UTF8MB4), b"\x03\xed\xa0\x80", "_utf8mb4 X'eda080'"),
        (c_varchar(10, UTF8MB3), b"\x02\xc0\x80", "_utf8mb3 X'c080'"),
        (c_varchar(10, LATIN1), b"\x01\xe9", "_latin1 X'e9'"),
        (c_varchar(10, BINARY), b"\x02\x00\xff", "X'00ff'"),
        (c_char(4, BINARY), b"\x01\xab", "X'ab000000'"),
        (c_blob(3, UTF8MB4), b"\x02\x00\x00" + "é".encode(), "'é'"),
    ]
    for col, data, text in cases:
        assert _lit(col, data, True) == text, (col, data)
        assert _lit(col, data, False) == text, (col, data)


# --- multi-column tables -------------------------------------------------------------------------------

def random_event(rnd: random.Random, cols: list[Col], kind: str, nrows: int, pb: list[int], pa: list[int],
                 null_rate: float = 0.3, cap: int | None = None):
    """A rows event body (a junk header, then the rows), the header's length and the row boundaries
    (offsets in the body); ``cap``: the longest string value."""
    def img(present):
        vals = {i: None if cols[i].nullable and rnd.random() < null_rate else value(rnd, cols[i], cap)
                for i in present}
        return image(cols, present, vals)
    off = rnd.randint(0, 9)
    body = bytearray(rnd.randbytes(off))
    bounds = [len(body)]
    for _ in range(nrows):
        if kind != "insert":
            body += img(pb)
        if kind != "delete":
            body += img(pa)
        bounds.append(len(body))
    return bytes(body), off, bounds


def random_table(rnd: random.Random, n: int, null_rate: float = 0.5) -> list[Col]:
    return [random_column(rnd, rnd.random() < null_rate) for _ in range(n)]


def random_present(rnd: random.Random, n: int) -> list[int]:
    if rnd.random() < 0.5:
        return list(range(n))
    got = sorted(rnd.sample(range(n), rnd.randint(1, n)))
    return got


def random_want(rnd: random.Random, n: int):
    r = rnd.random()
    if r < 0.5:
        return None
    if r < 0.6:
        return frozenset()
    return frozenset(rnd.sample(range(n), rnd.randint(1, n)))


@native
@pytest.mark.parametrize("kind", ["insert", "delete", "update"])
def test_random_tables_native_equals_python(kind):
    rnd = random.Random({"insert": 101, "delete": 202, "update": 303}[kind])
    sizes = [1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 33, 40]
    for shape in range(90):
        n = sizes[shape % len(sizes)] if shape < 2 * len(sizes) else rnd.randint(1, 40)
        cols = random_table(rnd, n, rnd.choice([0.0, 0.5, 1.0]))
        tm = table(cols)
        codecs = {True: RowCodec(tm, native=True), False: RowCodec(tm, native=False)}
        for _ in range(3):
            pb, pa = random_present(rnd, n), random_present(rnd, n)
            if kind == "insert":
                pb = pa
            elif kind == "delete":
                pa = pb
            body, off, _ = random_event(rnd, cols, kind, rnd.randint(1, 5), pb, pa,
                                        rnd.choice([0.0, 0.3, 1.0]))
            hdr = header(kind, n, bitmap(n, pb), bitmap(n, pa), off)
            wb = random_want(rnd, n) if kind != "insert" else None
            wa = random_want(rnd, n) if kind != "delete" else None
            rows = assert_same(tm, body, hdr, wb, wa, codecs, context=f"{kind} {cols} pb={pb} pa={pa}")
            # the shape of the result: a literal where present and wanted, None elsewhere
            images = {"insert": [(pa, wa)], "delete": [(pb, wb)], "update": [(pb, wb), (pa, wa)]}[kind]
            for row in rows:
                for im, (present, want) in zip(row if kind == "update" else (row,), images):
                    assert [v is not None for v in im] == [i in present and (want is None or i in want)
                                                           for i in range(n)], (present, want, im)


@native
def test_null_bitmap_spans_bytes():
    """NULL bits of more than 8 and 16 present columns land on the right columns, in both."""
    rnd = random.Random(5)
    for n in (8, 9, 16, 17, 24, 25, 64, 65):
        cols = [c_int(F.MYSQL_TYPE_LONG, nullable=True) if i % 3 else c_varchar(20, UTF8MB4, nullable=True)
                for i in range(n)]
        tm = table(cols)
        for _ in range(5):
            present = random_present(rnd, n)
            vals = {i: None if rnd.random() < 0.5 else value(rnd, cols[i]) for i in present}
            body = b"\x00\x00" + image(cols, present, vals)
            hdr = header("insert", n, bitmap(n, present), bitmap(n, present), 2)
            row = assert_same(tm, body, hdr)[0]
            for i in present:
                assert (row[i] == "NULL") == (vals[i] is None), (n, i)


def random_case(rnd: random.Random, kind: str | None = None):
    """A random table (1-20 columns), its table map, both codecs, a kind (random unless given) and its present bitmaps."""
    n = rnd.randint(1, 20)
    cols = random_table(rnd, n)
    tm = table(cols)
    codecs = {True: RowCodec(tm, native=True), False: RowCodec(tm, native=False)}
    kind = kind or rnd.choice(["insert", "delete", "update"])
    pb = random_present(rnd, n)
    pa = pb if kind != "update" else random_present(rnd, n)
    return n, cols, tm, codecs, kind, pb, pa


# --- damaged images -------------------------------------------------------------------------------------

@native
def test_truncated_images_raise_in_both():
    """Every cut of a random multi-column event: a cut on a row boundary is a valid shorter event
    (equal rows), any other cut raises a BinlogError in both (the Python codec's "overruns", or,
    where it read past the end first, its IndexError / struct.error turned into one)."""
    rnd = random.Random(77)
    raised: Counter = Counter()
    for shape in range(60):
        n, cols, tm, codecs, kind, pb, pa = random_case(rnd, ("insert", "delete", "update")[shape % 3])
        # short strings (still behind 2-4 byte length prefixes): events of a few hundred bytes
        body, off, bounds = random_event(rnd, cols, kind, rnd.randint(1, 3), pb, pa, cap=30)
        hdr = header(kind, n, bitmap(n, pb), bitmap(n, pa), off)
        full = assert_same(tm, body, hdr, codecs=codecs)
        for cut in range(off, len(body)):
            nat, py = decode_both(tm, body[:cut], hdr, codecs=codecs)
            if cut in bounds:
                assert nat == py == ("ok", full[:bounds.index(cut)]), cut
                continue
            assert nat[0] == "err" and type(nat[1]) is BinlogError, (cut, nat, cols)
            assert py[0] == "err", (cut, py, cols)
            assert type(py[1]) is BinlogError, (cut, py)
            raised["past the end" if "runs past the end" in str(py[1]) else "overruns"] += 1
    # what the generated Python meets on a cut image (RowCodec turns the first two into BinlogError
    # "runs past the end"): IndexError where it indexes a byte past the end
    # (buf[p]: the null bitmap, TINY, YEAR, DATE, 1-byte ENUM, a length prefix), struct.error where
    # unpack_from reads past it (SHORT, LONG, LONGLONG, FLOAT, DOUBLE, 2-byte ENUM, TIMESTAMP(0), a
    # 4-byte prefix), BinlogError "overruns" where a short slice decodes (INT24, DECIMAL, TIME2,
    # DATETIME2, SET, string bytes) and its end check finds p past the event
    print("python on truncated images:", dict(raised))
    assert raised["past the end"] and raised["overruns"]


def _walk(cols: list[Col], present: list[int], buf: bytes, p: int):
    """(column, bytes or None) of the present columns of the image at p, and the end; None when the
    image runs past buf (a reader independent of both decoders, for the DECIMAL check)."""
    nnull = (len(present) + 7) // 8
    if p + nnull > len(buf):
        return None
    nulls, p = buf[p:p + nnull], p + nnull
    out = []
    tm = table(cols)
    for j, i in enumerate(present):
        c = decode._Col(tm, i)
        if c.nullable and nulls[j >> 3] & (1 << (j & 7)):
            out.append((i, None))
            continue
        if c.size is not None:
            n = c.size
        else:
            if p + c.prefix > len(buf):
                return None
            n = int.from_bytes(buf[p:p + c.prefix], "little")
            p += c.prefix
        if p + n > len(buf):
            return None
        out.append((i, buf[p:p + n]))
        p += n
    return out, p


def _decimal_out_of_range(prec: int, scale: int, data: bytes) -> bool:
    b = bytearray(data)
    if not b[0] & 0x80:
        b = bytearray(x ^ 0xFF for x in b)
    b[0] ^= 0x80
    intg = prec - scale
    groups = []
    if intg % 9:
        groups.append((_DIG2BYTES[intg % 9], 10 ** (intg % 9)))
    groups += [(4, 10 ** 9)] * (intg // 9 + scale // 9)
    if scale % 9:
        groups.append((_DIG2BYTES[scale % 9], 10 ** (scale % 9)))
    q = 0
    for size, limit in groups:
        if int.from_bytes(b[q:q + size], "big") >= limit:
            return True
        q += size
    return False


def _has_bad_decimal(cols, kind, pb, pa, body, off) -> bool:
    p = off
    while p < len(body):
        for present in ([pb] if kind != "insert" else []) + ([pa] if kind != "delete" else []):
            got = _walk(cols, present, body, p)
            if got is None:
                return False
            vals, p = got
            for i, data in vals:
                c = cols[i]
                if c.real == F.MYSQL_TYPE_NEWDECIMAL and data is not None and _decimal_out_of_range(
                        c.meta >> 8, c.meta & 0xFF, data):
                    return True
    return False


def _compare_damaged(cols, tm, codecs, kind, pb, pa, body, off, wb, wa, seen: Counter):
    n = len(cols)
    hdr = header(kind, n, bitmap(n, pb), bitmap(n, pa), off)
    nat, py = decode_both(tm, body, hdr, wb, wa, codecs)
    where = f"{kind} {cols} pb={pb} pa={pa} body={body.hex()}"
    if nat[0] == "ok":
        assert py == nat, where
        seen["equal"] += 1
        return
    assert type(nat[1]) is BinlogError, (nat, where)
    if py[0] == "err":
        seen["both raise (python: %s)" % type(py[1]).__name__] += 1
        return
    # the one allowed difference: a DECIMAL digit group out of range, refused natively only
    assert "DECIMAL" in str(nat[1]) and _has_bad_decimal(cols, kind, pb, pa, body, off), (nat, py, where)
    seen["DECIMAL out of range"] += 1


@native
def test_random_garbage_never_crashes():
    """Random bytes as the rows of random table shapes, and valid events with random bytes changed:
    the native decoder equals Python or both raise (or a DECIMAL digit group is out of range)."""
    rnd = random.Random(99)
    seen: Counter = Counter()
    for shape in range(250):
        n, cols, tm, codecs, kind, pb, pa = random_case(rnd)
        wb = random_want(rnd, n) if kind != "insert" else None
        wa = random_want(rnd, n) if kind != "delete" else None
        for _ in range(6):
            off = rnd.randint(0, 4)
            body = rnd.randbytes(off + rnd.choice([0, 1, 2, 3, 5, 8, 13, 40, 120]))
            _compare_damaged(cols, tm, codecs, kind, pb, pa, body, off, wb, wa, seen)
        for _ in range(6):
            body, off, _ = random_event(rnd, cols, kind, rnd.randint(1, 3), pb, pa)
            b = bytearray(body)
            for _ in range(rnd.randint(1, 4)):
                if len(b) > off:
                    b[rnd.randrange(off, len(b))] = rnd.randrange(256)
            _compare_damaged(cols, tm, codecs, kind, pb, pa, bytes(b), off, wb, wa, seen)
    print("random garbage:", dict(seen))
    assert seen["equal"] and seen["DECIMAL out of range"]


@native
def test_decimal_digit_group_out_of_range_raises_natively_only():
    """The documented difference: a group >= 10^9 (or >= 10^digits for a partial one)."""
    cases = [(c_decimal(9, 0), (0x80000000 | 10 ** 9).to_bytes(4, "big")),
             (c_decimal(18, 9), (0x80000000 | 10 ** 9).to_bytes(4, "big") + b"\x00" * 4),
             (c_decimal(18, 9), b"\x80\x00\x00\x00" + (10 ** 9).to_bytes(4, "big")),
             (c_decimal(5, 2), b"\x83\xe8\x00"),           # the integer group 1000 > 999
             (c_decimal(5, 2), b"\x80\x00\x64"),           # the fraction 100 > 99
             (c_decimal(1, 0), b"\x8a")]                   # 10 in one digit
    for col, data in cases:
        assert len(data) == decimal_size(col.meta >> 8, col.meta & 0xFF), col
        _lit(col, data, False)  # Python prints some number
        with pytest.raises(BinlogError, match="DECIMAL"):
            _lit(col, data, True)
        # the negative form too
        neg = bytes(x ^ 0xFF for x in data)
        _lit(col, neg, False)
        with pytest.raises(BinlogError, match="DECIMAL"):
            _lit(col, neg, True)


# --- the fallback ----------------------------------------------------------------------------------------

@native
def test_types_left_to_python_fall_back():
    """An image with a pre-5.6 TIMESTAMP/DATETIME/TIME column (or a BIT wider than 8 bytes, from a
    damaged table map) is decoded by the generated Python even with native=True (no NIMG call in
    its source), with the same literals; the other image of an update, without such a column,
    still goes native."""
    rnd = random.Random(8)
    others = [c_int(F.MYSQL_TYPE_LONG, nullable=True), c_varchar(20, UTF8MB4, nullable=True),
              c_decimal(10, 2), Col(F.MYSQL_TYPE_DATETIME2, 3, nullable=True)]
    for special in (Col(F.MYSQL_TYPE_BIT, 9 << 8), Col(F.MYSQL_TYPE_TIMESTAMP, 4),
                    Col(F.MYSQL_TYPE_DATETIME, 8), Col(F.MYSQL_TYPE_TIME, 3)):
        for pos in (0, 2, 4):
            cols = others[:pos] + [special] + others[pos:]
            n = len(cols)
            tm = table(cols)
            codecs = {True: RowCodec(tm, native=True), False: RowCodec(tm, native=False)}
            full = list(range(n))
            for kind in ("insert", "delete", "update"):
                body, off, _ = random_event(rnd, cols, kind, 4, full, full)
                hdr = header(kind, n, bitmap(n, full), bitmap(n, full), off)
                assert_same(tm, body, hdr, codecs=codecs, expect_native=False, context=repr(special))
                key = (kind, hdr.present_before, hdr.present_after, None, None)
                assert "NIMG" not in codecs[True].sources[key], codecs[True].sources[key]
            # an update whose after image lacks the special column: the after image is native
            pa = [i for i in full if i != pos]
            body, off, _ = random_event(rnd, cols, "update", 4, full, pa)
            hdr = header("update", n, bitmap(n, full), bitmap(n, pa), off)
            assert_same(tm, body, hdr, codecs=codecs, expect_native=False)
            src = codecs[True].sources[("update", hdr.present_before, hdr.present_after, None, None)]
            assert src.count("NIMG(") == 1, src


@native
def test_decimal_metadata_no_server_writes_is_refused_natively():
    """A damaged table map's DECIMAL with its scale above its precision, or DECIMAL(0,0): the native
    decoder raises BinlogError (it crashed reading past the value before); Python prints some
    number, or raises at the codec's build when the value has 0 bytes. Not a server's type: no comparison."""
    rnd = random.Random(12)
    metas = [(0, 0)] + [(p, s) for p in range(0, 12) for s in range(p + 1, p + 21)] + [(30, 65), (1, 255)]
    for prec, scale in metas:
        size = decimal_size(prec, scale)
        col = c_decimal(prec, scale)
        for _ in range(2):
            data = rnd.randbytes(max(size, 0))
            with pytest.raises(BinlogError, match="no such type"):
                _lit(col, data, True)
            try:
                _lit(col, data, False)
            except ValueError:  # a 0-byte value: "negative shift count" in the generated code's build
                assert size == 0, (prec, scale)


def test_a_rows_event_without_columns_is_refused_not_looped_on():
    """A present bitmap with no column set makes rows of 0 bytes: refused (both paths), never a hang."""
    tm = _zero_column_table()
    hdr = RowsEventHeader(1, 0, "insert", 1, b"\x00", b"\x00", 0, F.WRITE_ROWS_EVENT_V1)
    for native in ((True, False) if decode._rowimage is not None else (False,)):
        with pytest.raises(BinlogError, match="no columns"):
            decode.RowCodec(tm, native=native).decode(b"\x00\x01\x02", hdr)


def _zero_column_table() -> TableMap:
    tm = TableMap()
    tm.table_id, tm.flags, tm.schema, tm.table = 1, 0, "db", "t"
    tm.column_types = tm.real_types = (F.MYSQL_TYPE_LONG,)
    tm.column_meta, tm.max_lengths, tm.nullable, tm.signed, tm.charsets = (0,), (0,), (False,), (True,), (None,)
    tm.enum_values = tm.set_values = None
    tm.column_names = ("a",)
    tm.geometry_types = tm.primary_key = tm.primary_key_prefixes = tm.visibility = tm.default_charset = None
    tm.raw = b""
    return tm
