"""Row images -> SQL literal strings, by decoders generated per table map.

``RowCodec(table_map).decode(body, header, want_before, want_after)`` decodes every row of a rows
event. For each (image kind, present bitmaps, wanted columns) the codec generates the Python
source of one specialised function (null-bitmap tests, fixed offsets and per-column decoding
inlined), compiles it once and caches it. The generated source only ever contains integers the
codec computed and names it chose; every string that comes from the table map (charset
prefixes, ENUM/SET members) is passed in the function's globals, never spliced into source.

Literals follow docs/flashback.md ("Literals"): the session is
``SET NAMES utf8mb4; SET time_zone='+00:00';``.

When the native decoder ``_rowimage`` (``_rowimage.c``, built by scripts/install.sh) is present,
an image whose columns are all of the types it handles is decoded by one call to it (the same
literals, 2-3x faster on wide rows; why native: its header); the generated Python stays the
reference and the fallback (``MYSQLBACKUP_NATIVE=0`` turns the native decoder off; the tests
compare both on every type).
"""
from __future__ import annotations

import os
import struct
import time
from collections.abc import Sequence

from . import format as F
from .events import RowsEventHeader, TableMap
from .reader import BinlogError

try:
    from . import _rowimage
except ImportError:  # not built (no compiler on the host): the generated Python decodes everything
    _rowimage = None
else:
    _rowimage.set_error(BinlogError)
NATIVE = _rowimage is not None and os.environ.get("MYSQLBACKUP_NATIVE", "1") != "0"

# --- literal helpers (also used by the generated code through its globals) ----------------------

ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\0": "\\0", "\n": "\\n", "\r": "\\r",
                         "\x1a": "\\Z"})

_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def quote_text(text: str) -> str:
    """A quoted SQL string literal (backslash escapes, NO_BACKSLASH_ESCAPES off)."""
    return "'" + text.translate(ESCAPES) + "'"


def string_literal(data: bytes, charset: str | None) -> str:
    """Literal for the bytes of a character column in ``charset`` (None/'binary': X'..')."""
    if charset is None or charset == "binary":
        return "X'" + data.hex() + "'"
    if charset in F.UTF8_CHARSETS:
        try:
            return quote_text(data.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return "_" + charset + " X'" + data.hex() + "'"


def decimal_size(precision: int, scale: int) -> int:
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    return intg0 * 4 + _DIG2BYTES[intg0x] + frac0 * 4 + _DIG2BYTES[frac0x]


def _old_datetime(x: int) -> str:
    d, t = divmod(x, 1000000)
    return "'%04d-%02d-%02d %02d:%02d:%02d'" % (d // 10000, d // 100 % 100, d % 100,  # noqa: UP031
                                                t // 10000, t // 100 % 100, t % 100)


def _old_time(x: int) -> str:
    sg = "-" if x < 0 else ""
    x = abs(x)
    return "'%s%02d:%02d:%02d'" % (sg, x // 10000, x // 100 % 100, x % 100)  # noqa: UP031


def _timestamp_text(sec: int) -> str:
    if not sec:
        return "'0000-00-00 00:00:00"
    t = time.gmtime(sec)
    return "'%04d-%02d-%02d %02d:%02d:%02d" % (t[0], t[1], t[2], t[3], t[4], t[5])  # noqa: UP031


_T8S = tuple(str(i - 256 if i > 127 else i) for i in range(256))
_T8U = tuple(str(i) for i in range(256))
_TYEAR = ("0000",) + tuple(str(1900 + i) for i in range(1, 256))


def _set_literal_fn(members: Sequence[bytes], charset: str):
    bits = tuple((1 << i, m) for i, m in enumerate(members))

    def set_literal(x: int) -> str:
        return string_literal(b",".join(m for b, m in bits if x & b), charset)
    return set_literal


_DTD: dict[int, str] = {}  # DATETIME2's date part (year*13+month << 5 | day) -> "YYYY-MM-DD "
_DTT: dict[int, str] = {}  # its time of day (hour << 12 | minute << 6 | second) -> "HH:MM:SS"
_DT_CACHED = 1 << 16       # entries kept per cache (a few MB at most)


def _dt_date(d: int) -> str:
    text = "%04d-%02d-%02d " % ((d >> 5) // 13, (d >> 5) % 13, d & 31)
    if len(_DTD) < _DT_CACHED:
        _DTD[d] = text
    return text


def _dt_time(h: int) -> str:
    text = "%02d:%02d:%02d" % (h >> 12, h >> 6 & 63, h & 63)
    if len(_DTT) < _DT_CACHED:
        _DTT[h] = text
    return text


def _base_globals() -> dict:
    return {
        "__builtins__": {"str": str, "repr": repr, "len": len, "UnicodeDecodeError": UnicodeDecodeError,
                         "abs": abs, "format": format},
        "ifb": int.from_bytes,
        "S16": struct.Struct("<h").unpack_from, "U16": struct.Struct("<H").unpack_from,
        "S32": struct.Struct("<i").unpack_from, "U32": struct.Struct("<I").unpack_from,
        "S64": struct.Struct("<q").unpack_from, "U64": struct.Struct("<Q").unpack_from,
        "F32": struct.Struct("<f").unpack_from, "F64": struct.Struct("<d").unpack_from,
        "B32": struct.Struct(">I").unpack_from,
        "T8S": _T8S, "T8U": _T8U, "TYEAR": _TYEAR, "ESC": ESCAPES, "gmtime": time.gmtime,
        "TSTEXT": _timestamp_text, "OLDDT": _old_datetime, "OLDTIME": _old_time,
        "DTD": _DTD, "DTT": _DTT, "DTDATE": _dt_date, "DTTIME": _dt_time,
        "BinlogError": BinlogError,
    }


# --- code generation ------------------------------------------------------------------------------

class _Col:
    """What the generator needs to know about one column (computed from the table map)."""

    __slots__ = (
        "charset",
        "fsp",
        "index",
        "members",
        "meta",
        "nullable",
        "padded",
        "precision",
        "prefix",
        "scale",
        "signed",
        "size",
        "type",
    )

    def __init__(self, tm: TableMap, i: int) -> None:
        self.index = i
        t = tm.real_types[i]
        self.type = t
        self.meta = m = tm.column_meta[i]
        self.nullable = tm.nullable[i]
        self.signed = tm.signed[i] if tm.signed is not None else True
        cs = tm.charsets[i] if tm.charsets is not None else None
        self.charset = F.COLLATION_CHARSET.get(cs) if cs is not None else None
        self.size: int | None = None      # fixed size in bytes, or None (length-prefixed)
        self.prefix = 0                   # length-prefix bytes of variable-length values
        self.members: tuple[bytes, ...] | None = None
        self.fsp = 0
        self.precision = self.scale = 0
        self.padded = 0                   # BINARY(n): byte length to pad to with 0x00
        fixed = {F.MYSQL_TYPE_TINY: 1, F.MYSQL_TYPE_SHORT: 2, F.MYSQL_TYPE_INT24: 3,
                 F.MYSQL_TYPE_LONG: 4, F.MYSQL_TYPE_LONGLONG: 8, F.MYSQL_TYPE_FLOAT: 4,
                 F.MYSQL_TYPE_DOUBLE: 8, F.MYSQL_TYPE_YEAR: 1, F.MYSQL_TYPE_DATE: 3,
                 F.MYSQL_TYPE_NEWDATE: 3, F.MYSQL_TYPE_TIMESTAMP: 4, F.MYSQL_TYPE_DATETIME: 8,
                 F.MYSQL_TYPE_TIME: 3, F.MYSQL_TYPE_NULL: 0}
        where = f"column #{i} ({tm.schema}.{tm.table})"
        if t in fixed:
            self.size = fixed[t]
        elif t == F.MYSQL_TYPE_NEWDECIMAL:
            self.precision, self.scale = m >> 8, m & 0xFF
            self.size = decimal_size(self.precision, self.scale)
        elif t in (F.MYSQL_TYPE_TIME2, F.MYSQL_TYPE_DATETIME2, F.MYSQL_TYPE_TIMESTAMP2):
            self.fsp = m
            if m > 6:
                raise BinlogError(f"{where}: fractional digits {m} > 6")
            base = {F.MYSQL_TYPE_TIME2: 3, F.MYSQL_TYPE_DATETIME2: 5, F.MYSQL_TYPE_TIMESTAMP2: 4}[t]
            self.size = base + (m + 1) // 2
        elif t == F.MYSQL_TYPE_BIT:
            nbytes, bits = m >> 8, m & 0xFF
            self.size = nbytes + (1 if bits else 0)
        elif t == F.MYSQL_TYPE_ENUM:
            self.size = m & 0xFF
            self.members = tm.enum_values[i] if tm.enum_values is not None else None
            if self.size not in (1, 2):
                raise BinlogError(f"{where}: ENUM pack length {self.size}")
        elif t == F.MYSQL_TYPE_SET:
            self.size = m & 0xFF
            self.members = tm.set_values[i] if tm.set_values is not None else None
            if not 1 <= self.size <= 8:
                raise BinlogError(f"{where}: SET pack length {self.size}")
        elif t in (F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING):
            self.prefix = 1 if m < 256 else 2
        elif t == F.MYSQL_TYPE_STRING:
            self.prefix = 1 if tm.max_lengths[i] < 256 else 2
            if self.charset == "binary":
                self.padded = tm.max_lengths[i]
        elif t in (F.MYSQL_TYPE_BLOB, F.MYSQL_TYPE_TINY_BLOB, F.MYSQL_TYPE_MEDIUM_BLOB,
                   F.MYSQL_TYPE_LONG_BLOB, F.MYSQL_TYPE_GEOMETRY):
            self.prefix = m
            if not 1 <= m <= 4:
                raise BinlogError(f"{where}: BLOB length-prefix size {m}")
            if t == F.MYSQL_TYPE_GEOMETRY:
                self.charset = "binary"
        elif t == F.MYSQL_TYPE_JSON:
            raise BinlogError(f"{where}: MySQL binary JSON (type 245) is not supported")
        elif t in (F.MYSQL_TYPE_BLOB_COMPRESSED, F.MYSQL_TYPE_VARCHAR_COMPRESSED):
            raise BinlogError(f"{where}: MariaDB compressed columns are not supported")
        else:
            raise BinlogError(f"{where}: unsupported column type {t} "
                              f"({F.TYPE_NAMES.get(t, '?')})")


# the native decoder's column kinds (the enum of _rowimage.c)
_NK_INT = {(F.MYSQL_TYPE_TINY, True): 1, (F.MYSQL_TYPE_TINY, False): 2,
           (F.MYSQL_TYPE_SHORT, True): 3, (F.MYSQL_TYPE_SHORT, False): 4,
           (F.MYSQL_TYPE_INT24, True): 5, (F.MYSQL_TYPE_INT24, False): 6,
           (F.MYSQL_TYPE_LONG, True): 7, (F.MYSQL_TYPE_LONG, False): 8,
           (F.MYSQL_TYPE_LONGLONG, True): 9, (F.MYSQL_TYPE_LONGLONG, False): 10}
_NK_FIXED = {F.MYSQL_TYPE_FLOAT: 11, F.MYSQL_TYPE_DOUBLE: 12, F.MYSQL_TYPE_YEAR: 13,
             F.MYSQL_TYPE_DATE: 14, F.MYSQL_TYPE_NEWDATE: 14}
_NK_TEMPORAL = {F.MYSQL_TYPE_TIME2: 16, F.MYSQL_TYPE_DATETIME2: 17, F.MYSQL_TYPE_TIMESTAMP2: 18}
_NK_DECIMAL, _NK_ENUM, _NK_SET, _NK_BIN, _NK_UTF8, _NK_OTHER, _NK_BIT = 15, 19, 20, 21, 22, 23, 24


def _native_column(c: _Col) -> tuple[int, int, int, int, object] | None:
    """(kind, a, b, c, object) of a column for the native decoder, None for a type it leaves to
    Python (the pre-5.6 temporal types, NULL, a BIT wider than 8 bytes: a damaged table map)."""
    t = c.type
    if t in (F.MYSQL_TYPE_TINY, F.MYSQL_TYPE_SHORT, F.MYSQL_TYPE_INT24, F.MYSQL_TYPE_LONG,
             F.MYSQL_TYPE_LONGLONG):
        return _NK_INT[(t, bool(c.signed))], 0, 0, 0, None
    if t in _NK_FIXED:
        return _NK_FIXED[t], 0, 0, 0, None
    if t in _NK_TEMPORAL:
        return _NK_TEMPORAL[t], c.fsp, 0, 0, None
    if t == F.MYSQL_TYPE_NEWDECIMAL:
        return (_NK_DECIMAL, c.precision, c.scale, c.size, None) if c.size <= 40 else None
    if t == F.MYSQL_TYPE_BIT:
        return (_NK_BIT, c.size, 0, 0, None) if c.size <= 8 else None
    if t == F.MYSQL_TYPE_ENUM:
        return _NK_ENUM, c.size, 0, 0, None if c.members is None else _enum_table(c)
    if t == F.MYSQL_TYPE_SET:
        return _NK_SET, c.size, 0, 0, None if c.members is None else _set_table(c)
    if c.size is None:
        cs = c.charset
        if cs is None or cs == "binary":
            pad = c.padded if t == F.MYSQL_TYPE_STRING else 0
            return (_NK_BIN, c.prefix, pad, 0, None) if pad < 1 << 15 else None
        return _NK_UTF8 if cs in F.UTF8_CHARSETS else _NK_OTHER, c.prefix, 0, 0, "_" + cs + " X'"
    return None


def _enum_table(c: _Col) -> tuple[str, ...]:
    """An ENUM column's literals by value (0: the empty value's '0')."""
    return ("0",) + tuple(_Gen.member_literal(c, m) for m in c.members)


def _set_table(c: _Col):
    """A SET column's literals: a table by value for up to 8 members, else a function of it."""
    texts = list(c.members)
    cs = _Gen.member_charset(c)
    if len(texts) <= 8:
        return tuple(string_literal(b",".join(s for b, s in enumerate(texts) if v >> b & 1), cs)
                     for v in range(1 << len(texts)))
    return _set_literal_fn(texts, cs)


class _Gen:
    """Emits the code of one row image into ``lines``, tracking a static offset from ``p``."""

    def __init__(self, cols: list[_Col], consts: dict, native: bool = False) -> None:
        self.cols = cols
        self.consts = consts
        self.native = [_native_column(c) for c in cols] if native else None
        self.lines: list[str] = []
        self.off = 0
        self.tmp = 0

    def const(self, value) -> str:
        for k, v in self.consts.items():
            if k.startswith("K") and v is value:
                return k
        name = f"K{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, ind: int, line: str) -> None:
        self.lines.append("    " * ind + line)

    def pos(self, extra: int = 0) -> str:
        o = self.off + extra
        return f"p+{o}" if o else "p"

    def flush(self, ind: int) -> None:
        if self.off:
            self.emit(ind, f"p += {self.off}")
            self.off = 0

    # -- fixed-size values: lines reading at pos(), not advancing --
    def fixed_value(self, c: _Col, tgt: str, ind: int) -> None:
        t, P, e = c.type, self.pos(), lambda s: self.emit(ind, s)
        n = c.size
        if t == F.MYSQL_TYPE_TINY:
            e(f"{tgt} = {'T8S' if c.signed else 'T8U'}[buf[{P}]]")
        elif t == F.MYSQL_TYPE_YEAR:
            e(f"{tgt} = TYEAR[buf[{P}]]")
        elif t == F.MYSQL_TYPE_SHORT:
            e(f"{tgt} = str({'S16' if c.signed else 'U16'}(buf, {P})[0])")
        elif t == F.MYSQL_TYPE_INT24:
            e(f"{tgt} = str(ifb(buf[{P}:{self.pos(3)}], 'little', signed={c.signed}))")
        elif t == F.MYSQL_TYPE_LONG:
            e(f"{tgt} = str({'S32' if c.signed else 'U32'}(buf, {P})[0])")
        elif t == F.MYSQL_TYPE_LONGLONG:
            e(f"{tgt} = str({'S64' if c.signed else 'U64'}(buf, {P})[0])")
        elif t == F.MYSQL_TYPE_FLOAT:
            e(f"{tgt} = repr(F32(buf, {P})[0])")
        elif t == F.MYSQL_TYPE_DOUBLE:
            e(f"{tgt} = repr(F64(buf, {P})[0])")
        elif t in (F.MYSQL_TYPE_DATE, F.MYSQL_TYPE_NEWDATE):
            e(f"x = buf[{P}] | buf[{self.pos(1)}] << 8 | buf[{self.pos(2)}] << 16")
            e(f"{tgt} = \"'%04d-%02d-%02d'\" % (x >> 9, x >> 5 & 15, x & 31)")
        elif t == F.MYSQL_TYPE_NEWDECIMAL:
            self.decimal(c, tgt, ind)
        elif t == F.MYSQL_TYPE_TIME2:
            fb = (c.fsp + 1) // 2
            e(f"x = ifb(buf[{P}:{self.pos(n)}], 'big') - {0x800000 << (8 * fb)}")
            e("if x < 0:")
            e("    x = -x")
            e("    sg = '-'")
            e("else:")
            e("    sg = ''")
            h = f"(x >> {8 * fb})" if fb else "x"
            e(f"h = {h}")
            fmt, arg = self.frac_fmt(c.fsp, fb)  # one format for the whole literal
            e(f"{tgt} = \"'%s%02d:%02d:%02d{fmt}'\" % (sg, h >> 12 & 1023, h >> 6 & 63, h & 63{arg})")
        elif t == F.MYSQL_TYPE_DATETIME2:
            fb = (c.fsp + 1) // 2
            e(f"x = ifb(buf[{P}:{self.pos(n)}], 'big') - {0x8000000000 << (8 * fb)}")
            e(f"d = x >> {17 + 8 * fb}")
            e(f"h = x >> {8 * fb} & 131071" if fb else "h = x & 131071")
            fmt, arg = self.frac_fmt(c.fsp, fb)
            # the date and the time of day from caches (_dt_date, _dt_time): 3x faster than formatting
            # six numbers per value, and the same text
            e(f"{tgt} = \"'%s%s{fmt}'\" % (DTD.get(d) or DTDATE(d), DTT.get(h) or DTTIME(h){arg})")
        elif t == F.MYSQL_TYPE_TIMESTAMP2:
            fb = (c.fsp + 1) // 2
            if fb:
                e(f"x = ifb(buf[{P}:{self.pos(n)}], 'big')")
                e(f"{tgt} = TSTEXT(x >> {8 * fb})" + self.frac(c.fsp, fb) + " + \"'\"")
            else:
                e(f"{tgt} = TSTEXT(B32(buf, {P})[0]) + \"'\"")
        elif t == F.MYSQL_TYPE_TIMESTAMP:
            e(f"{tgt} = TSTEXT(U32(buf, {P})[0]) + \"'\"")
        elif t == F.MYSQL_TYPE_DATETIME:
            e(f"{tgt} = OLDDT(U64(buf, {P})[0])")
        elif t == F.MYSQL_TYPE_TIME:
            e(f"{tgt} = OLDTIME(ifb(buf[{P}:{self.pos(3)}], 'little', signed=True))")
        elif t == F.MYSQL_TYPE_BIT:
            e(f"{tgt} = \"b'\" + format(ifb(buf[{P}:{self.pos(n)}], 'big'), 'b') + \"'\"")
        elif t == F.MYSQL_TYPE_ENUM:
            x = f"buf[{P}]" if n == 1 else f"U16(buf, {P})[0]"
            if c.members is None:
                e(f"{tgt} = str({x})")
            else:
                lits = _enum_table(c)
                k = self.const(lits)
                e(f"x = {x}")
                e(f"{tgt} = {k}[x] if x < {len(lits)} else str(x)")
        elif t == F.MYSQL_TYPE_SET:
            x = f"buf[{P}]" if n == 1 else f"ifb(buf[{P}:{self.pos(n)}], 'little')"
            if c.members is None:
                e(f"{tgt} = str({x})")
            else:
                table = _set_table(c)
                k = self.const(table)
                if isinstance(table, tuple):
                    e(f"x = {x}")
                    e(f"{tgt} = {k}[x] if x < {len(table)} else str(x)")
                else:
                    e(f"{tgt} = {k}({x})")
        elif t == F.MYSQL_TYPE_NULL:
            e(f"{tgt} = 'NULL'")
        else:  # pragma: no cover - _Col refuses the rest
            raise BinlogError(f"no decoder for type {t}")

    @staticmethod
    def member_charset(c: _Col) -> str:
        # members are in the column's charset (ENUM_AND_SET_*_CHARSET); utf8mb4 if not sent
        return c.charset or "utf8mb4"

    @staticmethod
    def member_literal(c: _Col, m: bytes) -> str:
        return string_literal(m, _Gen.member_charset(c))

    @staticmethod
    def frac_fmt(fsp: int, fb: int) -> tuple[str, str]:
        """The fraction as a part of one format: (format text, ", value") or ("", "")."""
        if not fsp:
            return "", ""
        mask = (1 << (8 * fb)) - 1
        v = f"((x & {mask}) // 10)" if fsp % 2 else f"(x & {mask})"
        return f".%0{fsp}d", f", {v}"

    @staticmethod
    def frac(fsp: int, fb: int) -> str:
        if not fsp:
            return ""
        mask = (1 << (8 * fb)) - 1
        v = f"((x & {mask}) // 10)" if fsp % 2 else f"(x & {mask})"
        return f" + '.%0{fsp}d' % {v}"

    def decimal(self, c: _Col, tgt: str, ind: int) -> None:
        e = lambda s: self.emit(ind, s)
        prec, scale, n = c.precision, c.scale, c.size
        intg0, intg0x = divmod(prec - scale, 9)
        frac0, frac0x = divmod(scale, 9)
        bits = 8 * n
        sb = 1 << (bits - 1)
        full = (1 << bits) - 1
        e(f"x = ifb(buf[{self.pos()}:{self.pos(n)}], 'big')")
        e(f"if x >= {sb}:")
        e(f"    x -= {sb}")
        e("    sg = ''")
        e("else:")
        e(f"    x = {full - sb} - x")
        e("    sg = '-'")
        # bit fields, from the least significant end
        sh = 0
        fparts: list[str] = []
        tb = _DIG2BYTES[frac0x] * 8
        if tb:
            fparts.append(f"(x & {(1 << tb) - 1})")
            sh += tb
        mult = 10 ** frac0x
        for _ in range(frac0):
            fparts.append(f"(x >> {sh} & 4294967295) * {mult}" if sh else f"(x & 4294967295) * {mult}")
            sh += 32
            mult *= 10 ** 9
        iparts: list[str] = []
        mult = 1
        for _ in range(intg0):
            iparts.append(f"(x >> {sh} & 4294967295) * {mult}" if sh else f"(x & 4294967295) * {mult}")
            sh += 32
            mult *= 10 ** 9
        lb = _DIG2BYTES[intg0x] * 8
        if lb:
            iparts.append(f"(x >> {sh}) * {mult}" if sh else f"x * {mult}")
        ipart = " + ".join(iparts) if iparts else "0"
        if scale:
            e(f"{tgt} = sg + str({ipart}) + '.%0{scale}d' % ({' + '.join(fparts)})")
        else:
            e(f"{tgt} = sg + str({ipart})")

    # -- variable-length values: p is flushed; lines advance p --
    def var_value(self, c: _Col, tgt: str | None, ind: int) -> None:
        e = lambda s: self.emit(ind, s)
        k = c.prefix
        if k == 1:
            e("q = p + 1 + buf[p]")
            start = "p+1"
        elif k == 2:
            e("q = p + 2 + (buf[p] | buf[p+1] << 8)")
            start = "p+2"
        elif k == 3:
            e("q = p + 3 + (buf[p] | buf[p+1] << 8 | buf[p+2] << 16)")
            start = "p+3"
        else:
            e("q = p + 4 + U32(buf, p)[0]")
            start = "p+4"
        if tgt is not None:
            cs = c.charset
            if (cs is None or cs == "binary") and c.type == F.MYSQL_TYPE_STRING and c.padded:
                # BINARY(n): the server strips trailing 0x00 from the image; put them back so
                # the literal equals the stored value (also in WHERE)
                e(f"{tgt} = \"X'\" + buf[{start}:q].hex().ljust({2 * c.padded}, '0') + \"'\"")
            elif cs is None or cs == "binary":
                e(f"{tgt} = \"X'\" + buf[{start}:q].hex() + \"'\"")
            elif cs in F.UTF8_CHARSETS:
                fallback = self.const("_" + cs + " X'")
                e("try:")
                e(f"    u = buf[{start}:q].decode()")
                e("except UnicodeDecodeError:")
                e(f"    {tgt} = {fallback} + buf[{start}:q].hex() + \"'\"")
                e("else:")
                e("    if '\\\\' in u or \"'\" in u or '\\0' in u or '\\n' in u or '\\r' in u "
                  "or '\\x1a' in u:")
                e("        u = u.translate(ESC)")
                e(f"    {tgt} = \"'\" + u + \"'\"")
            else:
                pfx = self.const("_" + cs + " X'")
                e(f"{tgt} = {pfx} + buf[{start}:q].hex() + \"'\"")
        e("p = q")

    # -- a whole image walked without decoding, its columns decoded later, on demand --
    def walk(self, ind: int, start: str, nulls: str) -> None:
        """Code that steps over a full row image: ``<nulls><b>`` the null-bitmap bytes,
        ``<start><i>`` where column i's bytes begin (``<start><ncols>``: where the image ends),
        so that column i's bytes are ``buf[<start>i:<start>i+1]`` (empty when NULL)."""
        cols = self.cols
        nnull = (len(cols) + 7) // 8
        self.off = 0
        for b in range(nnull):
            self.emit(ind, f"{nulls}{b} = buf[{self.pos(b)}]")
        self.off += nnull
        for i, c in enumerate(cols):
            bit = f"{nulls}{i >> 3} & {1 << (i & 7)}"
            self.emit(ind, f"{start}{i} = {self.pos()}")
            if c.size is not None and not c.nullable:
                self.off += c.size
                continue
            self.flush(ind)
            step = ind
            if c.nullable:
                self.emit(ind, f"if not {bit}:")
                step = ind + 1
            if c.size is not None:
                if c.size:
                    self.emit(step, f"p += {c.size}")
                else:
                    self.emit(step, "pass")
            else:
                k = c.prefix
                self.emit(step, ("p += 1 + buf[p]", "p += 2 + (buf[p] | buf[p+1] << 8)",
                                 "p += 3 + (buf[p] | buf[p+1] << 8 | buf[p+2] << 16)",
                                 "p += 4 + U32(buf, p)[0]")[k - 1])
        self.flush(ind)
        self.emit(ind, f"{start}{len(cols)} = p")

    def decode_at(self, i: int, start: str, nulls: str, tgt: str) -> list[str]:
        """Lines (indent 0) decoding column i of a walked image into ``tgt`` (they move p)."""
        saved, self.lines = self.lines, []
        c = self.cols[i]
        self.off = 0
        self.emit(0, f"p = {start}{i}")
        ind = 0
        if c.nullable:
            self.emit(0, f"if {nulls}{i >> 3} & {1 << (i & 7)}:")
            self.emit(1, f"{tgt} = 'NULL'")
            self.emit(0, "else:")
            ind = 1
        if c.size is not None:
            self.fixed_value(c, tgt, ind)
        else:
            self.var_value(c, tgt, ind)
        lines, self.lines = self.lines, saved
        return lines

    def differ(self, i: int) -> str:
        """True when column i's bytes (or NULL) differ between the walked before and after images."""
        c = self.cols[i]
        raw = f"buf[sb{i}:sb{i + 1}] != buf[sa{i}:sa{i + 1}]"
        if c.nullable:
            return f"(nb{i >> 3} ^ na{i >> 3}) & {1 << (i & 7)} or {raw}"
        return raw

    def native_spec(self, present: bytes, want: frozenset[int] | None, var: str):
        """The native decoder's spec of an image, its items (as ``image``'s) and the variables of
        the wanted columns in order; None when a present column is of a type it leaves to Python."""
        if self.native is None:
            return None
        idx = [i for i in range(len(self.cols)) if present[i >> 3] & (1 << (i & 7))]
        if any(self.native[i] is None for i in idx):
            return None
        codes = bytearray()
        objs = []
        items = ["None"] * len(self.cols)
        targets = []
        for i in idx:
            kind, a, b, c, obj = self.native[i]
            wanted = want is None or i in want
            codes += struct.pack("<BBHHH", kind, (1 if self.cols[i].nullable else 0) | (2 if wanted else 0), a, b, c)
            objs.append(obj)
            if wanted:
                items[i] = f"{var}{i}"
                targets.append(items[i])
        return (bytes(codes), tuple(objs)), items, targets

    def native_image(self, present: bytes, want: frozenset[int] | None, ind: int, var: str) -> list[str] | None:
        """``image`` by one call to the native decoder, or None (a type it leaves to Python)."""
        got = self.native_spec(present, want, var)
        if got is None:
            return None
        spec, items, targets = got
        self.consts.setdefault("NIMG", _rowimage.image)
        self.emit(ind, f"{', '.join(targets + ['p'])}, = NIMG(buf, p, {self.const(spec)})")
        return items

    def image(self, present: bytes, want: frozenset[int] | None, ind: int, var: str = "v") -> list[str]:
        """Code for one row image; returns the list expression items (one per column): the
        variables ``<var><column>`` holding the literals, ``None`` for a column not wanted."""
        items = self.native_image(present, want, ind, var) if self.native is not None else None
        if items is not None:
            return items
        cols = self.cols
        idx = [i for i in range(len(cols)) if present[i >> 3] & (1 << (i & 7))]
        nnull = (len(idx) + 7) // 8
        self.off = 0
        need_bits = any(cols[i].nullable for i in idx)
        for b in range(nnull):
            if need_bits:
                self.emit(ind, f"n{b} = buf[{self.pos(b)}]")
        self.off += nnull
        items = ["None"] * len(cols)
        for j, i in enumerate(idx):
            c = cols[i]
            wanted = want is None or i in want
            tgt = f"{var}{i}" if wanted else None
            if wanted:
                items[i] = tgt
            bit = f"n{j >> 3} & {1 << (j & 7)}"
            if c.size is not None:
                if c.nullable:
                    if wanted:
                        self.flush(ind)
                        self.emit(ind, f"if {bit}:")
                        self.emit(ind + 1, f"{tgt} = 'NULL'")
                        self.emit(ind, "else:")
                        self.fixed_value(c, tgt, ind + 1)
                        if c.size:
                            self.emit(ind + 1, f"p += {c.size}")
                    elif c.size:
                        self.flush(ind)
                        self.emit(ind, f"if not {bit}:")
                        self.emit(ind + 1, f"p += {c.size}")
                else:
                    if wanted:
                        self.fixed_value(c, tgt, ind)
                    self.off += c.size
            else:
                self.flush(ind)
                if c.nullable:
                    if wanted:
                        self.emit(ind, f"if {bit}:")
                        self.emit(ind + 1, f"{tgt} = 'NULL'")
                        self.emit(ind, "else:")
                    else:
                        self.emit(ind, f"if not {bit}:")
                    self.var_value(c, tgt, ind + 1)
                else:
                    self.var_value(c, tgt, ind)
        self.flush(ind)
        return items


def _full_bitmap(n: int) -> bytes:
    """The present-columns bitmap of a full image of n columns."""
    b = bytearray(b"\xff" * ((n + 7) // 8))
    if n % 8:
        b[-1] = (1 << (n % 8)) - 1
    return bytes(b)


class RowCodec:
    """Decoder of the row images of one table map (see module doc)."""

    def __init__(self, table_map: TableMap, native: bool | None = None) -> None:
        """``native``: decode with the native decoder where it can (default: when it is built
        and MYSQLBACKUP_NATIVE is not 0); True when it is not built is an error."""
        if native and _rowimage is None:
            raise BinlogError("the native row decoder (binlog/_rowimage.c) is not built: "
                              "run scripts/install.sh")
        self.native = NATIVE if native is None else native
        self.table_map = table_map
        self._cols: list[_Col] | None = None
        self._cache: dict = {}
        self.sources: dict = {}

    def _columns(self) -> list[_Col]:
        if self._cols is None:
            tm = self.table_map
            self._cols = [_Col(tm, i) for i in range(len(tm.column_types))]
        return self._cols

    def decode(self, body: bytes | memoryview, header: RowsEventHeader,
               want_before: frozenset[int] | None = None,
               want_after: frozenset[int] | None = None) -> list:
        """Rows of one rows event. insert: [after literals...] per row; delete: [before ...];
        update: (before, after). Items are SQL literal strings; None where the column was not
        wanted or not present in the image. ``None`` for want means all columns."""
        key = (header.kind, header.present_before, header.present_after, want_before, want_after)
        fn = self._cache.get(key)
        if fn is None:
            fn = self._cache[key] = self._build(key)
        return self._run(fn, body, header)

    def _run(self, fn, body: bytes | memoryview, header: RowsEventHeader):
        buf = body if type(body) is bytes else bytes(body)
        try:
            return fn(buf, header.rows_offset, len(buf))
        except (IndexError, struct.error) as exc:
            # the generated Python read past the event's end (a byte indexed, an unpack_from) before
            # its own end check: the same error as the native decoder's
            raise BinlogError(f"rows event for {self.table_map.schema}.{self.table_map.table}: a row image "
                              f"runs past the end of the event ({type(exc).__name__}: {exc})") from None

    def statements(self, body: bytes | memoryview, header: RowsEventHeader, builder) -> list[str]:
        """One text per row of a rows event, built inside the generated decoder (no per-row
        lists of literals, no call per row): ``builder`` (a ``flashback.plan.TableSQL``) says
        which columns it wants (``wants(kind)``) and writes the code that makes the text from
        the literals' variables (``code(kind, before, after, const)``)."""
        return self._run(self._statements_fn(header, builder), body, header)

    def block(self, body: bytes | memoryview, header: RowsEventHeader, builder) -> tuple[bytes, int]:
        """``statements`` as one UTF-8 block, newest first, a newline after each (what the
        flashback spool stores), and their number: built in native code where ``statements``
        is (no str per statement, no join, no encode), else from ``statements``' list."""
        key = ("block", header.kind, header.present_before, header.present_after, builder)
        fn = self._cache.get(key)
        if fn is None:
            st = self._statements_fn(header, builder)
            fn = self._cache[key] = getattr(st, "block", None) or _joined(st)
        return self._run(fn, body, header)

    def _statements_fn(self, header: RowsEventHeader, builder):
        key = (header.kind, header.present_before, header.present_after, builder)
        fn = self._cache.get(key)
        if fn is None:
            wb, wa = builder.wants(header.kind)
            fn = self._cache[key] = self._build((header.kind, header.present_before, header.present_after,
                                                 wb, wa), builder)
        return fn

    def _build(self, key, builder=None):
        kind, pb, pa, wb, wa = key
        cols = self._columns()
        ncols = len(cols)
        nb = (ncols + 7) // 8
        if len(pb) < nb or len(pa) < nb:
            raise BinlogError(f"rows event for {self.table_map.schema}.{self.table_map.table}: "
                              f"column bitmap for {len(pb) * 8} columns, table map has {ncols}")
        used = (pa,) if kind == "insert" else (pb,) if kind == "delete" else (pb, pa)
        if not any(bm[i >> 3] & (1 << (i & 7)) for bm in used for i in range(ncols)):
            # a row of no columns takes no bytes: the loop over the rows would never end
            raise BinlogError(f"rows event for {self.table_map.schema}.{self.table_map.table}: "
                              "its row images have no columns")
        consts = _base_globals()
        g = _Gen(cols, consts, self.native)
        if builder is not None and g.native is not None and hasattr(builder, "pieces"):
            fn = self._native_rows(g, kind, pb, pa, wb, wa, builder)
            if fn is not None:
                self.sources[key + (builder,)] = "native rows"
                return fn
        g.emit(0, "def decode_rows(buf, p, end):")
        g.emit(1, "out = []")
        g.emit(1, "append = out.append")
        g.emit(1, "while p < end:")
        full = _full_bitmap(ncols)
        lazy = (builder is not None and kind == "update" and wb is None and wa is None
                and pb[:nb] == full and pa[:nb] == full and getattr(builder, "lazy_update", False)
                # both images in native code, literals compared: faster than walking them in Python
                and not (g.native is not None and all(n is not None for n in g.native)))
        if lazy:
            # both images walked first; the builder decodes only the columns it needs (those whose
            # bytes differ, the key): a column whose bytes are equal has equal literals
            g.walk(2, "sb", "nb")
            g.walk(2, "sa", "na")

            def decode(image: str, i: int) -> list[str]:
                return (g.decode_at(i, "sb", "nb", f"b{i}") if image == "before"
                        else g.decode_at(i, "sa", "na", f"v{i}"))

            before = [f"b{i}" for i in range(ncols)]
            after = [f"v{i}" for i in range(ncols)]
            for line in builder.code(kind, before, after, g.const, decode=decode, differ=g.differ):
                g.emit(2, line)
            g.emit(2, f"p = sa{ncols}")
            g.emit(2, "append(s)")
        elif builder is not None:
            # the before image's variables are renamed (b<i>) so that the after image's (v<i>) do not
            # overwrite them; the builder's code sets ``s``
            before = after = None
            if kind != "insert":
                before = g.image(pb, wb, 2, "b")
            if kind != "delete":
                after = g.image(pa, wa, 2)
            for line in builder.code(kind, before, after, g.const):
                g.emit(2, line)
            g.emit(2, "append(s)")
        elif kind == "update":
            before = g.image(pb, wb, 2)
            g.emit(2, f"b = [{', '.join(before)}]")
            after = g.image(pa, wa, 2)
            g.emit(2, f"append((b, [{', '.join(after)}]))")
        elif kind == "insert":
            items = g.image(pa, wa, 2)
            g.emit(2, f"append([{', '.join(items)}])")
        else:
            items = g.image(pb, wb, 2)
            g.emit(2, f"append([{', '.join(items)}])")
        g.emit(1, "if p != end:")
        g.emit(2, "raise BinlogError('row image overruns the rows event by %d bytes' % (p - end))")
        g.emit(1, "return out")
        src = "\n".join(g.lines) + "\n"
        code = compile(src, f"<rowcodec {self.table_map.schema}.{self.table_map.table} {kind}>",
                       "exec")
        ns = consts
        exec(code, ns)  # noqa: S102 - source built from integers and our own names only
        self.sources[key if builder is None else key + (builder,)] = src
        return ns["decode_rows"]

    def _native_rows(self, g: _Gen, kind: str, pb: bytes, pa: bytes, wb, wa, builder):
        """The statements of a rows event built by the native decoder (``_rowimage.rows``): the
        builder's pieces (its ``pieces``) or its guarded UPDATE (``update_rule``) as data. None
        when an image has a type the native decoder leaves to Python, or the UPDATE's images are
        not whole (the generated code then raises as the builder does)."""
        before = after = None
        if kind != "insert":
            before = g.native_spec(pb, wb, "b")
            if before is None:
                return None
        if kind != "delete":
            after = g.native_spec(pa, wa, "v")
            if after is None:
                return None
        pieces = builder.pieces(kind, before and before[1], after and after[1])
        if pieces is None:  # the guarded UPDATE: every column of both images, in column order
            n = len(g.cols)
            if len(before[2]) != n or len(after[2]) != n:
                return None
            rule = builder.update_rule()
            head, key, wcols, iskey, eq, ns = rule
            if not (len(iskey) == len(eq) == len(ns) == n and all(0 <= i < n for i in key + wcols)):
                return None  # names that do not fit the table map (a damaged one): the generated code decides
            plan = ("U",) + rule
        else:
            index = {name: k for k, name in enumerate((before[2] if before else []) + (after[2] if after else []))}
            if any(type(p) is not str and p not in index for p in pieces):
                return None
            plan = ("T", tuple(index[p] if type(p) is not str else p for p in pieces))
        bspec = before[0] if before else None
        aspec = after[0] if after else None
        rows = _rowimage.rows

        def statements(buf, p, end):
            return rows(buf, p, end, bspec, aspec, plan)

        def block(buf, p, end):
            return rows(buf, p, end, bspec, aspec, plan, True)
        statements.block = block
        return statements


def _joined(statements):
    """A ``statements`` function's list as ``RowCodec.block``'s (bytes, rows)."""
    def block(buf, p, end):
        out = statements(buf, p, end)
        return ("\n".join(reversed(out)) + "\n").encode("utf-8") if out else b"", len(out)
    return block


# --- single values (for tests and tools) -----------------------------------------------------------

def decode_value(column_type: int, meta: int, data: bytes, *, signed: bool = True,
                 collation: int | None = None, members: Sequence[bytes] | None = None,
                 real_type: int | None = None, native: bool | None = None) -> str:
    """The literal of one value, through the same generated code as RowCodec.

    ``data`` is the value as in a row image (length prefix included for strings)."""
    tm = TableMap()
    tm.table_id, tm.flags, tm.schema, tm.table = 0, 0, "test", "t"
    tm.column_types = (column_type,)
    tm.column_meta = (meta,)
    tm.nullable = (False,)
    if column_type == F.MYSQL_TYPE_STRING:
        from .events import string_real_type
        rt, ml = string_real_type(meta)
        tm.real_types, tm.max_lengths = (real_type or rt,), (ml,)
    else:
        tm.real_types = (real_type or column_type,)
        tm.max_lengths = (meta if column_type in (F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING)
                          else 0,)
    tm.signed = (signed,)
    tm.charsets = (collation,)
    tm.enum_values = (tuple(members),) if members is not None else None
    tm.set_values = (tuple(members),) if members is not None else None
    tm.column_names = tm.geometry_types = tm.primary_key = None
    tm.primary_key_prefixes = tm.visibility = tm.default_charset = None
    tm.raw = b""
    hdr = RowsEventHeader(0, 0, "insert", 1, b"\x01", b"\x01", 0, F.WRITE_ROWS_EVENT_V1)
    rows = RowCodec(tm, native).decode(b"\x00" + data, hdr)
    return rows[0][0]
