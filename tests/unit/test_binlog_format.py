"""Pure pieces of the binlog codec: DECIMAL, temporal and string literals on known bytes."""
from __future__ import annotations

import struct

import pytest
from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.decode import RowCodec, decimal_size, decode_value, quote_text
from mysqlbackup.binlog.events import read_packed_int, string_real_type
from mysqlbackup.binlog.reader import BinlogError, iter_file_events


def dec(precision: int, scale: int, data: bytes) -> str:
    return decode_value(F.MYSQL_TYPE_NEWDECIMAL, precision << 8 | scale, data)


# --- DECIMAL ----------------------------------------------------------------------------------

def test_decimal_known_vectors():
    # the example from the MySQL manual (decimal.c): DECIMAL(14,4)
    assert dec(14, 4, bytes.fromhex("810DFB38D204D2")) == "1234567890.1234"
    assert dec(14, 4, bytes.fromhex("7EF204C72DFB2D")) == "-1234567890.1234"
    assert decimal_size(14, 4) == 7


def _pack_decimal(text: str, precision: int, scale: int) -> bytes:
    """Independent packer (straight from the format description) for the round trip below."""
    neg = text.startswith("-")
    ip, _, fp = text.lstrip("-").partition(".")
    fp = fp.ljust(scale, "0")
    intg = precision - scale
    ip = ip.rjust(intg, "0")
    d2b = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    out = b""
    lead = intg % 9
    if lead:
        out += int(ip[:lead]).to_bytes(d2b[lead], "big")
    for k in range(lead, intg, 9):
        out += int(ip[k:k + 9]).to_bytes(4, "big")
    full = scale // 9 * 9
    for k in range(0, full, 9):
        out += int(fp[k:k + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(fp[full:]).to_bytes(d2b[scale % 9], "big")
    b = bytearray(out)
    if neg:
        b = bytearray(x ^ 0xFF for x in b)
    b[0] ^= 0x80
    return bytes(b)


@pytest.mark.parametrize("text,precision,scale", [
    ("0.00", 5, 2), ("999.99", 5, 2), ("-999.99", 5, 2), ("-0.01", 5, 2),
    ("9999999999", 10, 0), ("-1", 10, 0), ("0", 1, 0), ("9", 1, 0), ("-9", 1, 0),
    ("0.999999999", 9, 9), ("-0.000000001", 9, 9), ("123456789.123456789", 18, 9),
    ("-12345678901234567890123456789012345.123456789012345678901234567890", 65, 30),
    ("1.000000000000000000000000000001", 65, 30), ("-99999999999999999999.1", 21, 1),
    ("1234567890123.1234567890", 23, 10), ("0.5", 1, 1), ("-0.5", 1, 1),
])
def test_decimal_round_trip(text, precision, scale):
    data = _pack_decimal(text, precision, scale)
    assert len(data) == decimal_size(precision, scale)
    assert dec(precision, scale, data) == text


# --- temporal ---------------------------------------------------------------------------------

def _frac_bytes(usec: int, fsp: int) -> bytes:
    if fsp in (1, 2):
        return (usec // 10000).to_bytes(1, "big")
    if fsp in (3, 4):
        return (usec // 100).to_bytes(2, "big")
    if fsp in (5, 6):
        return usec.to_bytes(3, "big")
    return b""


def pack_datetime2(y, mo, d, h, mi, s, usec, fsp) -> bytes:
    intpart = ((y * 13 + mo) << 22) | (d << 17) | (h << 12) | (mi << 6) | s
    return (intpart + 0x8000000000).to_bytes(5, "big") + _frac_bytes(usec, fsp)


def pack_time2(neg, h, mi, s, usec, fsp) -> bytes:
    """my_time_packed_to_binary, including its C (truncating) remainder for negative values."""
    nr = (((h << 12) | (mi << 6) | s) << 24) + usec
    if neg:
        nr = -nr
    intpart = nr >> 24
    crem = (abs(nr) % (1 << 24)) * (-1 if nr < 0 else 1)
    if fsp == 0:
        return (0x800000 + intpart).to_bytes(3, "big")
    if fsp in (1, 2):
        f = int(crem / 10000)
        return (0x800000 + intpart).to_bytes(3, "big") + (f & 0xFF).to_bytes(1, "big")
    if fsp in (3, 4):
        f = int(crem / 100)
        return (0x800000 + intpart).to_bytes(3, "big") + (f & 0xFFFF).to_bytes(2, "big")
    return (nr + 0x800000000000).to_bytes(6, "big")


@pytest.mark.parametrize("fsp,args,text", [
    (0, (2024, 2, 29, 23, 59, 58, 0), "'2024-02-29 23:59:58'"),
    (0, (0, 0, 0, 0, 0, 0, 0), "'0000-00-00 00:00:00'"),
    (3, (0, 0, 0, 0, 0, 0, 0), "'0000-00-00 00:00:00.000'"),
    (1, (1000, 1, 1, 0, 0, 0, 900000), "'1000-01-01 00:00:00.9'"),
    (2, (9999, 12, 31, 23, 59, 59, 990000), "'9999-12-31 23:59:59.99'"),
    (3, (2001, 2, 3, 4, 5, 6, 7000), "'2001-02-03 04:05:06.007'"),
    (4, (2001, 2, 3, 4, 5, 6, 7800), "'2001-02-03 04:05:06.0078'"),
    (5, (2001, 2, 3, 4, 5, 6, 12340), "'2001-02-03 04:05:06.01234'"),
    (6, (2024, 6, 30, 12, 34, 56, 123456), "'2024-06-30 12:34:56.123456'"),
    (6, (2024, 0, 0, 0, 0, 0, 1), "'2024-00-00 00:00:00.000001'"),
])
def test_datetime2(fsp, args, text):
    assert decode_value(F.MYSQL_TYPE_DATETIME2, fsp, pack_datetime2(*args, fsp)) == text


@pytest.mark.parametrize("fsp,args,text", [
    (0, (False, 838, 59, 59, 0), "'838:59:59'"),
    (0, (True, 838, 59, 59, 0), "'-838:59:59'"),
    (0, (True, 0, 0, 1, 0), "'-00:00:01'"),
    (0, (False, 0, 0, 0, 0), "'00:00:00'"),
    (1, (True, 0, 0, 0, 500000), "'-00:00:00.5'"),
    (1, (True, 838, 59, 59, 900000), "'-838:59:59.9'"),
    (2, (False, 1, 2, 3, 10000), "'01:02:03.01'"),
    (3, (True, 0, 0, 1, 500000), "'-00:00:01.500'"),
    (3, (True, 1, 0, 0, 1000), "'-01:00:00.001'"),
    (4, (True, 0, 0, 0, 100), "'-00:00:00.0001'"),
    (5, (True, 0, 0, 0, 10), "'-00:00:00.00001'"),
    (5, (True, 0, 0, 0, 999990), "'-00:00:00.99999'"),
    (6, (True, 12, 34, 56, 1), "'-12:34:56.000001'"),
    (6, (False, 0, 0, 0, 1), "'00:00:00.000001'"),
    (6, (True, 838, 59, 59, 0), "'-838:59:59.000000'"),
])
def test_time2(fsp, args, text):
    assert decode_value(F.MYSQL_TYPE_TIME2, fsp, pack_time2(*args, fsp)) == text


@pytest.mark.parametrize("fsp,data,text", [
    (0, struct.pack(">I", 0), "'0000-00-00 00:00:00'"),
    (0, struct.pack(">I", 2147483647), "'2038-01-19 03:14:07'"),
    (3, struct.pack(">IH", 1, 10), "'1970-01-01 00:00:01.001'"),
    (6, struct.pack(">I", 1719750896) + (999999).to_bytes(3, "big"), "'2024-06-30 12:34:56.999999'"),
    (1, struct.pack(">IB", 1719750896, 50), "'2024-06-30 12:34:56.5'"),
])
def test_timestamp2_is_utc(fsp, data, text):
    assert decode_value(F.MYSQL_TYPE_TIMESTAMP2, fsp, data) == text


def test_date_year_bit():
    v = (2024 << 9) | (2 << 5) | 29
    assert decode_value(F.MYSQL_TYPE_DATE, 0, v.to_bytes(3, "little")) == "'2024-02-29'"
    assert decode_value(F.MYSQL_TYPE_DATE, 0, b"\0\0\0") == "'0000-00-00'"
    assert decode_value(F.MYSQL_TYPE_YEAR, 0, b"\0") == "0000"
    assert decode_value(F.MYSQL_TYPE_YEAR, 0, bytes([255])) == "2155"
    # BIT(17): meta byte0 = bits % 8 = 1, byte1 = whole bytes = 2 -> 3 bytes big-endian
    assert decode_value(F.MYSQL_TYPE_BIT, (2 << 8) | 1, (0x1FFFF).to_bytes(3, "big")) == "b'" + "1" * 17 + "'"
    assert decode_value(F.MYSQL_TYPE_BIT, (0 << 8) | 1, b"\0") == "b'0'"


def test_integers_and_floats():
    assert decode_value(F.MYSQL_TYPE_TINY, 0, b"\x80") == "-128"
    assert decode_value(F.MYSQL_TYPE_TINY, 0, b"\x80", signed=False) == "128"
    assert decode_value(F.MYSQL_TYPE_INT24, 0, b"\xff\xff\xff") == "-1"
    assert decode_value(F.MYSQL_TYPE_INT24, 0, b"\xff\xff\xff", signed=False) == "16777215"
    assert decode_value(F.MYSQL_TYPE_LONGLONG, 0, b"\xff" * 8, signed=False) == str(2 ** 64 - 1)
    assert decode_value(F.MYSQL_TYPE_FLOAT, 4, struct.pack("<f", 0.1)) == "0.10000000149011612"
    assert decode_value(F.MYSQL_TYPE_DOUBLE, 8, struct.pack("<d", 1e-300)) == "1e-300"


# --- strings ----------------------------------------------------------------------------------

def test_quote_text_escapes():
    assert quote_text("it's \\ a\nb\r\0\x1a\"") == "'it\\'s \\\\ a\\nb\\r\\0\\Z\"'"


def varchar(data: bytes, collation: int, maxlen: int = 100) -> str:
    prefix = len(data).to_bytes(1 if maxlen < 256 else 2, "little")
    return decode_value(F.MYSQL_TYPE_VARCHAR, maxlen, prefix + data, collation=collation)


def test_string_literals():
    assert varchar("x😀'\n".encode(), 45) == "'x😀\\'\\n'"
    assert varchar("x😀".encode(), 45, maxlen=1200) == "'x😀'"
    assert varchar(b"\xff\xfe", 45) == "_utf8mb4 X'fffe'"
    assert varchar(b"\xe9", 8) == "_latin1 X'e9'"
    assert varchar(b"\x00\x01", 63) == "X'0001'"
    assert varchar(b"", 33) == "''"
    # CHAR(100) utf8mb4 = 400 bytes: metadata packs the high length bits into byte0
    rt, ml = string_real_type(0xEE90)
    assert (rt, ml) == (F.MYSQL_TYPE_STRING, 400)
    assert decode_value(F.MYSQL_TYPE_STRING, 0xEE90, b"\x02\x00ab", collation=45) == "'ab'"
    # BINARY(8): trailing zero bytes restored
    assert decode_value(F.MYSQL_TYPE_STRING, 0xFE08, b"\x02AB", collation=63) == "X'4142000000000000'"


def test_enum_and_set():
    members = [b"a", b"b'", b"c"]
    assert decode_value(F.MYSQL_TYPE_STRING, 0xF701, b"\x02", members=members) == "'b\\''"
    assert decode_value(F.MYSQL_TYPE_STRING, 0xF701, b"\x00", members=members) == "0"
    assert decode_value(F.MYSQL_TYPE_STRING, 0xF801, b"\x05", members=members) == "'a,c'"
    assert decode_value(F.MYSQL_TYPE_STRING, 0xF801, b"\x00", members=members) == "''"
    many = [f"m{i}".encode() for i in range(20)]
    assert decode_value(F.MYSQL_TYPE_STRING, 0xF803, (1 | 1 << 19).to_bytes(3, "little"),
                        members=many) == "'m0,m19'"


def test_packed_int_and_refusals(tmp_path):
    assert read_packed_int(b"\xfa", 0) == (250, 1)
    assert read_packed_int(b"\xfc\x01\x02", 0) == (0x201, 3)
    assert read_packed_int(b"\xfd\x01\x02\x03", 0) == (0x30201, 4)
    assert read_packed_int(b"\xfe" + (2 ** 40).to_bytes(8, "little"), 0) == (2 ** 40, 9)
    with pytest.raises(BinlogError, match="binary JSON"):
        decode_value(F.MYSQL_TYPE_JSON, 4, b"\x00\x00\x00\x00")
    from mysqlbackup.binlog.events import parse_rows_header
    with pytest.raises(BinlogError, match="compressed"):
        parse_rows_header(b"\0" * 20, F.WRITE_ROWS_COMPRESSED_EVENT)
    junk = tmp_path / "x"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BinlogError, match="not a binlog"):
        list(iter_file_events(junk))


def test_generated_source_has_no_table_strings():
    from mysqlbackup.binlog.events import RowsEventHeader, TableMap
    tm = TableMap()
    tm.table_id, tm.flags, tm.schema, tm.table = 1, 0, "s'); import os; #", "t"
    tm.column_types = (F.MYSQL_TYPE_STRING, F.MYSQL_TYPE_VARCHAR)
    tm.column_meta = (0xF701, 30)
    tm.nullable = (True, True)
    tm.real_types = (F.MYSQL_TYPE_ENUM, F.MYSQL_TYPE_VARCHAR)
    tm.max_lengths = (1, 30)
    tm.signed = None
    tm.charsets = (8, 8)
    tm.enum_values = ((b"x'); import os; #",), None)
    tm.set_values = None
    tm.column_names = ("'); import os; #", "b")
    tm.geometry_types = tm.primary_key = tm.primary_key_prefixes = tm.visibility = None
    tm.default_charset, tm.raw = None, b""
    codec = RowCodec(tm)
    hdr = RowsEventHeader(1, 0, "insert", 2, b"\x03", b"\x03", 0, F.WRITE_ROWS_EVENT_V1)
    rows = codec.decode(b"\x02\x01", hdr)
    assert rows == [["_latin1 X'" + b"x'); import os; #".hex() + "'", "NULL"]]
    src = "".join(codec.sources.values())
    assert "import" not in src and "latin1" not in src
