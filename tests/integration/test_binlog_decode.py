"""Binlog reader + row codec against a real MariaDB 10.11: exactness by round trip.

Every row image the server wrote is decoded to SQL literals; the literals are applied to an
identical empty copy of each table (inserts as INSERT, updates/deletes as a NULL-safe match on
the full before image that must hit exactly one row), and the copy must end up equal to the
original (CHECKSUM TABLE, and HEX() of every column side by side).
"""
from __future__ import annotations

import os
import shutil

import pytest
from mysqlbackup.binlog import events as E
from mysqlbackup.binlog import format as F
from mysqlbackup.binlog.decode import RowCodec
from mysqlbackup.binlog.live import LiveReader
from mysqlbackup.binlog.reader import BinlogError, iter_events, iter_file_events

pytestmark = pytest.mark.server

DB = "bt"

WIDE_COLS = []
for _i in range(40):
    _t = ["INT", "VARCHAR(20)", "DECIMAL(12,3)", "DATETIME(6) NULL", "DOUBLE", "TEXT",
          "BIGINT UNSIGNED", "CHAR(3)"][_i % 8]
    WIDE_COLS.append(f"c{_i} {_t}")

SET20 = ",".join(f"'m{i}'" for i in range(20))
ENUM300 = ",".join(f"'e{i}'" for i in range(300))

TABLES = {
    "t_num": """id INT AUTO_INCREMENT PRIMARY KEY, ti TINYINT, uti TINYINT UNSIGNED,
        sm SMALLINT, usm SMALLINT UNSIGNED, md MEDIUMINT, umd MEDIUMINT UNSIGNED, i INT,
        ui INT UNSIGNED, bg BIGINT, ubg BIGINT UNSIGNED, f FLOAT, d DOUBLE,
        d52 DECIMAL(5,2), d100 DECIMAL(10,0), d2010 DECIMAL(20,10), d6530 DECIMAL(65,30),
        d189 DECIMAL(18,9), d99 DECIMAL(9,9), d10 DECIMAL(1,0), d3814 DECIMAL(38,14),
        y YEAR, b1 BIT(1), b17 BIT(17), b64 BIT(64)""",
    "t_time": """id INT PRIMARY KEY, dt DATE, t0 TIME, t1 TIME(1), t3 TIME(3), t5 TIME(5),
        t6 TIME(6), dt0 DATETIME, dt2 DATETIME(2), dt3 DATETIME(3), dt6 DATETIME(6),
        ts0 TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, ts6 TIMESTAMP(6) NULL""",
    "t_str": f"""id INT PRIMARY KEY, c_utf CHAR(10) CHARSET utf8mb4,
        c_long CHAR(100) CHARSET utf8mb4, c_lat CHAR(10) CHARSET latin1,
        vc VARCHAR(20) CHARSET utf8mb4, vc_long VARCHAR(300) CHARSET utf8mb4,
        vc_lat VARCHAR(300) CHARSET latin1, vc3 VARCHAR(10) CHARSET utf8mb3,
        bin BINARY(8), vbin VARBINARY(20), bl BLOB, tb TINYBLOB, mb MEDIUMBLOB, lb LONGBLOB,
        tx TEXT, ttx TINYTEXT CHARSET latin1, lt LONGTEXT, j JSON,
        e ENUM('a','b','c'), e300 ENUM({ENUM300}), e_lat ENUM('é','b') CHARSET latin1,
        s SET('x','y','z'), s20 SET({SET20}), s_lat SET('ä','ö') CHARSET latin1,
        gp POINT, gpoly POLYGON, g GEOMETRY""",
    "t_cpk": "a INT, b VARCHAR(10), c INT, PRIMARY KEY (b, a)",
    "t_nopk": "a INT, b TEXT, c DOUBLE",
    "t_wide": "id INT PRIMARY KEY, " + ", ".join(WIDE_COLS),
}

NUM_ROWS = [
    ("(NULL, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, "
     "9223372036854775807, 18446744073709551615, 3.4e38, 1.7976931348623157e308, 999.99, "
     "9999999999, 1234567890.0123456789, "
     "12345678901234567890123456789012345.123456789012345678901234567890, 123456789.123456789, "
     "0.999999999, 9, 123456789012345678901234.12345678901234, 2155, 1, 131071, 18446744073709551615)"),
    ("(NULL, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, "
     "-1.17549e-38, -2.2250738585072014e-308, -999.99, -9999999999, -1234567890.0123456789, "
     "-12345678901234567890123456789012345.123456789012345678901234567890, -0.000000001, "
     "-0.999999999, -9, -0.00000000000001, 1901, 0, 0, 0)"),
    ("(NULL, 0, 1, -1, 1, -1, 1, -1, 1, -1, 1, 0.1, 0.1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1)"),
    ("(NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
     "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"),
    ("(NULL, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, -0.0, 1e-300, 1.5, 42, -0.5, 0.000001, 1.1, 0.5, "
     "-1, 5.5, 2000, 1, 65536, 9223372036854775808)"),
]

TIME_ROWS = [
    ("(1, '2024-02-29', '838:59:59', '-838:59:59.9', '12:34:56.789', '-00:00:00.00001', "
     "'-12:34:56.000001', '9999-12-31 23:59:59', '2000-01-01 00:00:00.01', "
     "'1000-01-01 00:00:00.001', '2024-06-30 12:34:56.123456', '2038-01-19 03:14:07', "
     "'1970-01-01 00:00:01.001', '2024-06-30 12:34:56.999999')"),
    ("(2, '0000-00-00', '00:00:00', '-00:00:00.5', '-00:00:01.500', '00:00:00.00001', "
     "'-838:59:59.000000', '0000-00-00 00:00:00', '0000-00-00 00:00:00.00', "
     "'0000-00-00 00:00:00.000', '0000-00-00 00:00:00.000000', 0, 0, 0)"),
    ("(3, '2024-00-00', '-00:00:01', '00:00:00.1', '-01:00:00.001', '-00:00:00.99999', "
     "'00:00:00.000001', '2024-00-00 00:00:00', '1999-12-31 23:59:59.99', "
     "'2024-02-29 23:59:59.999', '2024-01-01 00:00:00.000001', '2001-02-03 04:05:06', "
     "'2001-02-03 04:05:06.5', '2001-02-03 04:05:06.000001')"),
    ("(4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"),
]

STR_ROWS = [
    ("(1, 'ab', 'x😀y', 'é', 'it''s \\\\ a\\nb\\r\\0\\Z\"', REPEAT('ü', 300), REPEAT('é', 300), "
     "'€uro', X'0102000000000000', X'00FF00', X'DEADBEEF', X'', REPEAT(X'AB', 70000), X'00', "
     "'text 😀', 'té', REPEAT('long ', 1000), '{\"a\": [1, 2, \"é\"]}', 'b', 'e299', 'é', '', "
     "'m0,m19', 'ä,ö', ST_GeomFromText('POINT(1.5 -2)'), "
     "ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(1 1,2 1,2 2,1 1))'), "
     "ST_GeomFromText('LINESTRING(0 0,1 1,2 1)'))"),
    ("(2, '', '', '', '', '', '', '', X'', X'', X'', X'', X'', X'', '', '', '', '[]', 'a', 'e0', "
     "'b', 'x,y,z', '', 'ö', ST_GeomFromText('POINT(0 0)'), "
     "ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), ST_GeomFromText('POINT(1 1)', 4326))"),
    ("(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
     "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"),
    ("(4, 'a  ', REPEAT('😀', 100), 'ÿ ', '  lead', 'x', 'y', 'z', X'4142', X'4142000000', "
     "X'00', X'01', X'02', X'03', '\\\\', 'a', '''', 'null', 'c', 'e150', 'b', 'y', 'm5', "
     "'ä', ST_GeomFromText('POINT(-1e300 1e-300)'), NULL, NULL)"),
]


def _wide_row(i: int, nulls: bool) -> str:
    vals = []
    for c in range(40):
        if nulls and c % 3 == 1:
            vals.append("NULL")
            continue
        vals.append([str(i * 100 + c), f"'v{i}-{c}'", f"{i}{c}.125", f"'2024-01-{1 + c % 28:02d} 01:02:03.{c:06d}'",
                     f"{i / 7 + c}", f"'t{c}'", str(2 ** 63 + c), f"'{c % 10}'"][c % 8])
    return f"({i}, " + ", ".join(vals) + ")"


SETUP = [
    "SET sql_mode=''",
    "SET time_zone='+00:00'",
    f"CREATE DATABASE {DB}",
    *[f"CREATE TABLE {DB}.{n} ({ddl})" for n, ddl in TABLES.items()],
    f"INSERT INTO {DB}.t_num VALUES " + ", ".join(NUM_ROWS),
    f"INSERT INTO {DB}.t_time VALUES " + ", ".join(TIME_ROWS),
    *[f"INSERT INTO {DB}.t_str VALUES {r}" for r in STR_ROWS],
    f"INSERT INTO {DB}.t_cpk VALUES (1, 'a', 1), (2, 'a', 2), (1, 'b', NULL), (3, 'é', 4)",
    f"INSERT INTO {DB}.t_nopk VALUES (1, 'x', 1.5), (1, 'x', 1.5), (NULL, NULL, NULL), (2, 'y', -0.25)",
    f"INSERT INTO {DB}.t_wide VALUES " + ", ".join(_wide_row(i, i % 2 == 1) for i in range(1, 6)),
    # updates and deletes (full before images must match exactly one row in the copy)
    f"UPDATE {DB}.t_num SET i = i + 1, d52 = -d52, f = 2.5 WHERE ti IN (0, 5)",
    f"UPDATE {DB}.t_num SET b17 = 5, y = 1999, ubg = 1 WHERE ti = 1",
    f"DELETE FROM {DB}.t_num WHERE ti = -128",
    (f"UPDATE {DB}.t_time SET t3 = '-00:00:00.001', dt6 = '2024-12-31 23:59:59.999999', "
     f"ts6 = '2030-01-01 00:00:00.5' WHERE id IN (1, 3)"),
    f"DELETE FROM {DB}.t_time WHERE id = 2",
    f"UPDATE {DB}.t_str SET vc = 'upd ''q''', s = 'x,z', s20 = 'm1,m2,m18', gp = ST_GeomFromText('POINT(9 9)') WHERE id IN (1, 2)",
    f"UPDATE {DB}.t_str SET bl = REPEAT(X'CD', 300), e300 = 'e298' WHERE id = 3",
    f"DELETE FROM {DB}.t_str WHERE id = 4",
    f"UPDATE {DB}.t_cpk SET c = c + 10, b = CONCAT(b, 'z') WHERE a = 1",
    f"DELETE FROM {DB}.t_cpk WHERE a = 2",
    f"UPDATE {DB}.t_nopk SET c = 9 WHERE a = 2",
    f"DELETE FROM {DB}.t_nopk WHERE a IS NULL",
    f"UPDATE {DB}.t_wide SET c1 = 'changed', c3 = NULL WHERE id IN (2, 3)",
    f"DELETE FROM {DB}.t_wide WHERE id = 5",
]


def _binlogs(srv) -> list[str]:
    names = [r[0] for r in srv.sql("SHOW BINARY LOGS")]
    return [os.path.join(srv.datadir, n) for n in names]


def _decode_all(paths, want_before=None, want_after=None):
    """[(table, kind, row)] in binlog order, plus the table maps by table name."""
    out = []
    maps: dict[str, E.TableMap] = {}
    codecs: dict[int, RowCodec] = {}
    fde = None
    for ev in iter_events(paths):
        t = ev.type
        if t == F.FORMAT_DESCRIPTION_EVENT:
            fde = E.parse_format_description(ev.body, F.BINLOG_CHECKSUM_ALG_CRC32)
        elif t == F.TABLE_MAP_EVENT:
            tm = E.parse_table_map(ev.body, fde.post_header_len(t), fde.is_mariadb)
            old = codecs.get(tm.table_id)
            if old is None or not old.table_map.same_shape(tm):
                codecs[tm.table_id] = RowCodec(tm)
            maps[tm.table] = tm
        elif t in F.ROWS_EVENTS:
            hdr = E.parse_rows_header(ev.body, t, fde.post_header_len(t))
            codec = codecs[hdr.table_id]
            if codec.table_map.schema != DB:
                continue
            for row in codec.decode(ev.body, hdr, want_before, want_after):
                out.append((codec.table_map.table, hdr.kind, row))
    return out, maps


def _where(names, lits):
    return " AND ".join(f"`{n}` <=> {v}" for n, v in zip(names, lits))


@pytest.fixture
def loaded(fresh_sandbox):
    sb = fresh_sandbox
    conn = sb.source.connect()
    try:
        with conn.cursor() as cur:
            for st in SETUP:
                cur.execute(st)
    finally:
        conn.close()
    return sb


def test_round_trip_every_type(loaded):
    srv = loaded.source
    paths = _binlogs(srv)
    rows, maps = _decode_all(paths)
    kinds = {(t, k) for t, k, _ in rows}
    for t in TABLES:
        assert (t, "insert") in kinds
    conn = srv.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET sql_log_bin=0")
            cur.execute("SET NAMES utf8mb4")
            cur.execute("SET time_zone='+00:00'")
            cur.execute("SET sql_mode=''")
            for t in TABLES:
                cur.execute(f"CREATE TABLE {DB}.{t}_copy LIKE {DB}.{t}")
            for t, kind, row in rows:
                names = maps[t].column_names
                if kind == "insert":
                    cur.execute(f"INSERT INTO {DB}.{t}_copy VALUES ({', '.join(row)})")
                elif kind == "delete":
                    n = cur.execute(f"DELETE FROM {DB}.{t}_copy WHERE {_where(names, row)} LIMIT 1")
                    assert n == 1, (t, row)
                else:
                    before, after = row
                    n = cur.execute(f"DELETE FROM {DB}.{t}_copy WHERE {_where(names, before)} LIMIT 1")
                    assert n == 1, (t, before)
                    cur.execute(f"INSERT INTO {DB}.{t}_copy VALUES ({', '.join(after)})")
            for t in TABLES:
                cur.execute(f"CHECKSUM TABLE {DB}.{t}, {DB}.{t}_copy EXTENDED")
                (_, a), (_, b) = cur.fetchall()
                assert a == b, t
                names = maps[t].column_names
                hexes = ", ".join(f"HEX(`{n}`)" for n in names)
                cur.execute(f"SELECT {hexes} FROM {DB}.{t} ORDER BY {hexes}")
                orig = cur.fetchall()
                cur.execute(f"SELECT {hexes} FROM {DB}.{t}_copy ORDER BY {hexes}")
                assert cur.fetchall() == orig, t
                assert len(orig) > 0
    finally:
        conn.close()


def test_literal_details(loaded):
    rows, maps = _decode_all(_binlogs(loaded.source))
    ins = {t: [r for tt, k, r in rows if tt == t and k == "insert"] for t in TABLES}
    num = ins["t_num"][0]
    names = maps["t_num"].column_names
    v = dict(zip(names, num))
    assert v["uti"] == "255" and v["ubg"] == "18446744073709551615" and v["bg"] == "9223372036854775807"
    assert v["d6530"] == "12345678901234567890123456789012345.123456789012345678901234567890"
    assert v["d100"] == "9999999999" and v["y"] == "2155" and v["b1"] == "b'1'"
    assert v["b64"] == "b'" + "1" * 64 + "'"
    neg = dict(zip(names, ins["t_num"][1]))
    assert neg["d189"] == "-0.000000001" and neg["d3814"] == "-0.00000000000001"
    assert neg["ti"] == "-128" and neg["b17"] == "b'0'"
    assert dict(zip(names, ins["t_num"][2]))["f"] == repr(float.fromhex("0x1.99999ap-4"))
    assert dict(zip(names, ins["t_num"][3]))["d52"] == "NULL"
    tv = dict(zip(maps["t_time"].column_names, ins["t_time"][0]))
    assert tv["t1"] == "'-838:59:59.9'" and tv["t5"] == "'-00:00:00.00001'"
    assert tv["t6"] == "'-12:34:56.000001'" and tv["dt6"] == "'2024-06-30 12:34:56.123456'"
    assert tv["ts0"] == "'2038-01-19 03:14:07'" and tv["ts3"] == "'1970-01-01 00:00:01.001'"
    zv = dict(zip(maps["t_time"].column_names, ins["t_time"][1]))
    assert zv["dt"] == "'0000-00-00'" and zv["ts0"] == "'0000-00-00 00:00:00'"
    assert zv["dt3"] == "'0000-00-00 00:00:00.000'" and zv["t3"] == "'-00:00:01.500'"
    sv = dict(zip(maps["t_str"].column_names, ins["t_str"][0]))
    assert sv["c_utf"] == "'ab'" and sv["c_long"] == "'x😀y'" and sv["c_lat"] == "_latin1 X'e9'"
    assert sv["vc"] == "'it\\'s \\\\ a\\nb\\r\\0\\Z\"'"
    assert sv["bin"] == "X'0102000000000000'" and sv["e"] == "'b'" and sv["e300"] == "'e299'"
    assert sv["s"] == "''" and sv["s20"] == "'m0,m19'" and sv["e_lat"] == "_latin1 X'e9'"
    assert sv["s_lat"] == "_latin1 X'e42cf6'"
    assert sv["gp"].startswith("X'00000000") and sv["tb"] == "X''"


def test_table_map_matches_information_schema(loaded):
    srv = loaded.source
    _, maps = _decode_all(_binlogs(srv))
    for t in TABLES:
        tm = maps[t]
        cols = srv.sql("SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE FROM information_schema.COLUMNS "
                       "WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s ORDER BY ORDINAL_POSITION", (DB, t))
        assert tm.column_names == tuple(c[0] for c in cols)
        pk = srv.sql("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE "
                     "TABLE_SCHEMA=%s AND TABLE_NAME=%s AND CONSTRAINT_NAME='PRIMARY' "
                     "ORDER BY ORDINAL_POSITION", (DB, t))
        if pk:
            assert tm.primary_key == tuple(tm.column_names.index(r[0]) for r in pk)
        else:
            assert tm.primary_key is None
        for i, (name, ctype, dtype) in enumerate(cols):
            if dtype in ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float",
                         "double"):
                assert tm.signed[i] == ("unsigned" not in ctype), name
            if dtype == "enum":
                assert tm.enum_values[i] and len(tm.enum_values[i]) == ctype.count("'") // 2
    tm = maps["t_str"]
    names = tm.column_names
    cs = {n: F.COLLATION_CHARSET[c] for n, c in zip(names, tm.charsets) if c is not None}
    assert cs["c_lat"] == "latin1" and cs["vc"] == "utf8mb4" and cs["vc3"] == "utf8mb3"
    assert cs["bin"] == "binary" and cs["e_lat"] == "latin1" and cs["s"] == "utf8mb4"
    assert tm.real_types[names.index("e")] == F.MYSQL_TYPE_ENUM
    assert tm.real_types[names.index("s20")] == F.MYSQL_TYPE_SET
    assert tm.max_lengths[names.index("c_long")] == 400
    assert tm.geometry_types[names.index("gp")] == 1
    assert tm.geometry_types[names.index("gpoly")] == 3


def test_keys_only_decoding(loaded):
    srv = loaded.source
    full, maps = _decode_all(_binlogs(srv))
    pk = frozenset(maps["t_wide"].primary_key)
    part, _ = _decode_all(_binlogs(srv), want_before=None, want_after=pk)
    assert len(full) == len(part)
    seen = set()
    for (t, k, a), (_, _, b) in zip(full, part):
        if t != "t_wide":
            continue
        seen.add(k)
        if k == "insert":
            assert b == [a[0]] + [None] * 40
        elif k == "update":
            assert b[0] == a[0] and b[1] == [a[1][0]] + [None] * 40
        else:
            assert b == a
    assert seen == {"insert", "update", "delete"}


def test_live_reader_matches_files(loaded):
    srv = loaded.source
    paths = _binlogs(srv)
    srv.sql("FLUSH BINARY LOGS")
    srv.sql(f"INSERT INTO {DB}.t_cpk VALUES (9, 'live', 9)")
    paths = _binlogs(srv)
    from sandbox.servers import REPL_USER
    interesting = {F.TABLE_MAP_EVENT, *F.ROWS_EVENTS, F.FORMAT_DESCRIPTION_EVENT, F.QUERY_EVENT,
                   F.GTID_EVENT, F.XID_EVENT, F.ROTATE_EVENT}

    def pick(evs):
        out = []
        for e in evs:
            if e.type in interesting:
                body = bytes(e.body)
                if e.type == F.FORMAT_DESCRIPTION_EVENT:
                    # a dump starting past the FDE gets it with create_timestamp zeroed
                    body = body[:52] + body[56:]
                out.append((e.type, e.file, e.pos, e.log_pos, body))
        return out

    files = pick(iter_events(paths))
    live = pick(LiveReader("127.0.0.1", srv.port, REPL_USER, loaded.backup_password, 4242,
                           os.path.basename(paths[0]), 4))
    assert len(files) > 20
    assert live == files
    # from a position inside the first file to one inside the second
    rows_pos = [(e[1], e[2]) for e in files if e[0] in F.ROWS_EVENTS]
    start, stop = rows_pos[3], rows_pos[-1]
    files2 = pick(iter_events(paths, start=start, stop=stop))
    live2 = pick(LiveReader("127.0.0.1", srv.port, REPL_USER, loaded.backup_password, 4243,
                            start[0], start[1], stop=stop))
    assert live2 == files2
    assert next(e for e in files2 if e[0] != F.FORMAT_DESCRIPTION_EVENT)[2] == start[1]
    assert all(e[0] != F.WRITE_ROWS_EVENT_V1 or (e[1], e[2]) < stop for e in files2)


def test_corruption_and_truncation(loaded, tmp_path):
    srv = loaded.source
    src = _binlogs(srv)[0]
    evs = [(e.type, e.pos, e.event_size) for e in iter_file_events(src)]
    _typ, pos, size = [e for e in evs if e[0] in F.ROWS_EVENTS][2]
    bad = tmp_path / "binlog.000001"
    shutil.copy(src, bad)
    with open(bad, "r+b") as f:
        f.seek(pos + 19 + 5)
        b = f.read(1)
        f.seek(pos + 19 + 5)
        f.write(bytes([b[0] ^ 0x40]))
    with pytest.raises(BinlogError) as exc:
        list(iter_file_events(bad))
    assert "binlog.000001" in str(exc.value) and f"position {pos}" in str(exc.value)
    # without verification the event comes through
    assert len(list(iter_file_events(bad, verify_checksums=False))) == len(evs)
    # truncated inside an event: clean end with the flag set
    cut = tmp_path / "cut" / "binlog.000001"
    cut.parent.mkdir()
    with open(src, "rb") as f, open(cut, "wb") as g:
        g.write(f.read(pos + size // 2))
    it = iter_file_events(cut)
    got = list(it)
    assert it.truncated and it.end_pos == pos and got[-1].pos + got[-1].event_size == pos
    whole = iter_file_events(src)
    list(whole)
    assert not whole.truncated
    # not a binlog
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world" * 10)
    with pytest.raises(BinlogError, match="not a binlog"):
        list(iter_file_events(junk))


# --- the live reader's own reading of the packet framing (COM_BINLOG_DUMP) ---------------------

def _pick_live(evs):
    """(type, file, pos, log_pos, body) of the events both readers give, as in
    test_live_reader_matches_files."""
    interesting = {F.TABLE_MAP_EVENT, *F.ROWS_EVENTS, F.FORMAT_DESCRIPTION_EVENT, F.QUERY_EVENT,
                   F.GTID_EVENT, F.XID_EVENT, F.ROTATE_EVENT}
    out = []
    for e in evs:
        if e.type in interesting:
            body = bytes(e.body)
            if e.type == F.FORMAT_DESCRIPTION_EVENT:
                body = body[:52] + body[56:]  # create_timestamp: zeroed when the dump starts past it
            out.append((e.type, e.file, e.pos, e.log_pos, body))
    return out


def _kept_and_copies(reader):
    """Every event, kept, with a copy of its body taken when it was yielded."""
    return [(e, bytes(e.body)) for e in reader]


def _bodies_still_equal(kept) -> None:
    changed = [(e.file, e.pos) for e, copy in kept if bytes(e.body) != copy]
    assert not changed, f"event bodies changed after later events were read: {changed[:5]}"


def test_live_reader_event_over_16mb(fresh_sandbox):
    """A row of 17 MB (an event in two packets) and one whose packet payload is exactly 0xFFFFFF
    bytes (continued by an empty packet), read whole, equal to the file reader's; the dump ends
    with the server's EOF; every kept body is still its bytes at the end; a stalled server makes
    the read time out."""
    import signal
    import time

    import pymysql
    from sandbox.servers import REPL_USER
    sb = fresh_sandbox
    srv = sb.source
    srv.sql("SET GLOBAL max_allowed_packet = 67108864")  # the default 16 MB would make REPEAT() NULL
    conn = srv.connect()  # a new session: it takes the new global value
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE big")
            cur.execute("CREATE TABLE big.t (id INT PRIMARY KEY, b LONGBLOB)")
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("SHOW MASTER STATUS")
            start_file = cur.fetchone()[0]
            pattern = "UNHEX(SHA2('live', 512))"  # 64 bytes: a chunk out of place would show
            cur.execute(f"INSERT INTO big.t VALUES (1, REPEAT({pattern}, %s))", ((17 << 20) // 64,))
            cur.execute("INSERT INTO big.t VALUES (2, 'small')")
            path = os.path.join(srv.datadir, start_file)
            small = [e for e in iter_file_events(path) if e.type in F.ROWS_EVENTS][-1]
            overhead = small.event_size - len(b"small")  # the same for any length of b
            exact = 0xFFFFFF - 1 - overhead  # packet payload = OK byte + event = 0xFFFFFF bytes
            cur.execute(f"INSERT INTO big.t VALUES (3, LEFT(REPEAT({pattern}, %s), %s))",
                        (exact // 64 + 1, exact))
            cur.execute("INSERT INTO big.t VALUES (4, 'after')")
    finally:
        conn.close()
    paths = [p for p in _binlogs(srv) if os.path.basename(p) >= start_file]
    reader = LiveReader("127.0.0.1", srv.port, REPL_USER, sb.backup_password, 4244, start_file, 4)
    kept = _kept_and_copies(reader)
    assert not reader.stopped and reader._conn is None  # the EOF ended it (no stop position)
    live = _pick_live(e for e, _ in kept)
    files = _pick_live(iter_events(paths))
    assert live == files
    sizes = sorted(e.event_size for e, _ in kept if e.type in F.ROWS_EVENTS)
    assert sizes[-1] > 17 << 20 and 0xFFFFFF - 1 in sizes, sizes
    _bodies_still_equal(kept)
    # the last row event is the one after the big ones, whole
    assert [e for e, _ in kept if e.type in F.ROWS_EVENTS][-1].body.tobytes().endswith(b"after")

    # a server that stops answering mid-dump: the read timeout raises (it does not hang)
    slow = LiveReader("127.0.0.1", srv.port, REPL_USER, sb.backup_password, 4245, start_file, 4,
                      read_timeout=1)
    it = iter(slow)
    assert next(it).type == F.FORMAT_DESCRIPTION_EVENT
    t0 = time.monotonic()
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        with pytest.raises(pymysql.err.OperationalError, match="timed out") as exc:
            for _ in it:
                pass
    finally:
        os.kill(srv.pid, signal.SIGCONT)
    assert time.monotonic() - t0 < 30
    assert start_file in str(exc.value)


def test_live_reader_small_reads(loaded, monkeypatch):
    """Socket reads of 7 bytes (headers and events cut anywhere): the same events as the files,
    and kept bodies stay their bytes."""
    from mysqlbackup.binlog import live
    from sandbox.servers import REPL_USER
    srv = loaded.source
    paths = _binlogs(srv)
    monkeypatch.setattr(live, "BLOCK", 7)
    reader = LiveReader("127.0.0.1", srv.port, REPL_USER, loaded.backup_password, 4246,
                        os.path.basename(paths[0]), 4)
    kept = _kept_and_copies(reader)
    assert _pick_live(e for e, _ in kept) == _pick_live(iter_events(paths))
    assert len(kept) > 20
    _bodies_still_equal(kept)


# --- the framing against a made-up server: exact streams, cuts, errors --------------------------

_FAKE_FILE = "binlog.000007"


def _fake_event(etype: int, pos: int, body: bytes, flags: int = 0, ts: int = 1_700_000_000) -> bytes:
    import struct
    import zlib
    size = F.HEADER_LEN + len(body) + F.CHECKSUM_LEN
    data = struct.pack("<IBIIIH", ts, etype, 1, size, pos + size if pos else 0, flags) + body
    return data + zlib.crc32(data).to_bytes(4, "little")


def _fake_frames(payloads, seq: int = 1) -> bytes:
    import struct
    out = bytearray()
    for p in payloads:
        while True:
            chunk, p = p[:0xFFFFFF], p[0xFFFFFF:]
            out += struct.pack("<I", len(chunk) | seq << 24) + chunk
            seq = (seq + 1) & 0xFF
            if len(chunk) < 0xFFFFFF:
                break
    return bytes(out)


def _fake_dump(bodies):
    """(events as the server sends them, what LiveReader must yield) for a dump from 4."""
    import struct
    fde_body = struct.pack("<H50sIB", 4, b"10.11.0-fake", 0, F.HEADER_LEN) + bytes(40) + b"\x01"
    rotate = _fake_event(F.ROTATE_EVENT, 0, struct.pack("<Q", 4) + _FAKE_FILE.encode(),
                         F.LOG_EVENT_ARTIFICIAL_F, ts=0)
    sent = [rotate, _fake_event(F.FORMAT_DESCRIPTION_EVENT, 4, fde_body)]
    want = [(F.FORMAT_DESCRIPTION_EVENT, 4, fde_body)]
    pos = 4 + len(sent[1])
    for body in bodies:
        sent.append(_fake_event(F.QUERY_EVENT, pos, body))
        want.append((F.QUERY_EVENT, pos, body))
        pos += len(sent[-1])
    return sent, want


class _FakeSocket:
    """What LiveReader reads after the command: ``data`` in reads of at most ``chunk`` bytes,
    then the end of the connection, or a read timeout."""

    def __init__(self, data: bytes, chunk: int, end: str = "closed"):
        import io

        class Raw(io.RawIOBase):
            off = 0

            def readable(self):
                return True

            def readinto(self, b):
                if self.off >= len(data):
                    if end == "timeout":
                        raise TimeoutError("timed out")
                    return 0
                n = min(len(b), chunk, len(data) - self.off)
                b[:n] = data[self.off:self.off + n]
                self.off += n
                return n
        self._rfile = io.BufferedReader(Raw())
        self._sock = self
        self._next_seq_id = 0
        self.timeouts = []
        self.closed = False

    def settimeout(self, t):
        self.timeouts.append(t)

    def _execute_command(self, command, payload):
        self.command = command
        self._next_seq_id = 1

    def close(self):
        self.closed = True


def _fake_reader(conn):
    reader = LiveReader("127.0.0.1", 1, "u", "p", 77, _FAKE_FILE, 4, read_timeout=5)

    def connect():
        reader._server_crc = True
        return conn
    reader._connect = connect
    return reader


EOF_PACKET = b"\xfe\x00\x00\x02\x00"


def _err_packet(errno: int, msg: str) -> bytes:
    return b"\xff" + errno.to_bytes(2, "little") + b"#HY000" + msg.encode()


def test_live_framing_small_events_any_cut():
    bodies = [bytes([i % 251]) * (i * 37 % 300) for i in range(60)]
    sent, want = _fake_dump(bodies)
    stream = _fake_frames([b"\x00" + e for e in sent] + [EOF_PACKET])
    for chunk in (1, 3, 7, 100, 1 << 20):
        conn = _FakeSocket(stream, chunk)
        reader = _fake_reader(conn)
        kept = _kept_and_copies(reader)
        assert [(e.type, e.pos, bytes(e.body)) for e, _ in kept] == want, chunk
        assert all(e.file == _FAKE_FILE for e, _ in kept) and reader.file == _FAKE_FILE
        assert not reader.stopped and conn.closed and conn.timeouts == [5]
        _bodies_still_equal(kept)
    # a stop position ends it at the first event at or past it
    stop = want[10][1]
    reader = _fake_reader(_FakeSocket(stream, 1 << 20))
    reader.stop = (_FAKE_FILE, stop)
    got = [(e.type, e.pos, bytes(e.body)) for e in reader]
    assert got == want[:10] and reader.stopped


def test_live_framing_events_over_16mb():
    big = bytes(range(256)) * ((17 << 20) // 256) + b"tail"
    exact = b"x" * (0xFFFFFF - 1 - F.HEADER_LEN - F.CHECKSUM_LEN)  # payload 0xFFFFFF: + an empty packet
    sent, want = _fake_dump([b"a", big, exact, b"b", exact + b"y", b"c"])
    payloads = [b"\x00" + e for e in sent]
    assert len(payloads[4]) == 0xFFFFFF and len(payloads[3]) > 0xFFFFFF
    stream = _fake_frames(payloads + [EOF_PACKET])
    for chunk in (65536, 1 << 22):
        reader = _fake_reader(_FakeSocket(stream, chunk))
        kept = _kept_and_copies(reader)
        assert [(e.type, e.pos) for e, _ in kept] == [(t, p) for t, p, _ in want]
        assert [bytes(e.body) == b for (e, _), (_, _, b) in zip(kept, want)] == [True] * len(want)
        _bodies_still_equal(kept)
    # the connection ends after the first packet of the big event, or inside its second
    import pymysql
    big_at = len(_fake_frames(payloads[:3]))
    for cut in (big_at + 4 + 0xFFFFFF, big_at + 4 + 0xFFFFFF + 2, big_at + 4 + 0xFFFFFF + 100):
        reader = _fake_reader(_FakeSocket(stream[:cut], 1 << 22))
        got = []
        with pytest.raises(pymysql.err.OperationalError, match=f"inside the event at {_FAKE_FILE}:{want[2][1]}"):
            for e in reader:
                got.append(e.pos)
        assert got == [p for _, p, _ in want[:2]]


def test_live_framing_cut_timeout_and_errors():
    import pymysql
    bodies = [b"q" * 50, b"r" * 5000, b"s" * 70]
    sent, want = _fake_dump(bodies)
    packets = [_fake_frames([b"\x00" + e], seq=1 + i) for i, e in enumerate(sent)]
    whole = b"".join(packets)
    second_at = len(b"".join(packets[:3]))  # the packet of the event at want[2]
    ev_pos = want[2][1]
    # the connection ends inside that event: its header, or its payload (never a partial event)
    for cut in (second_at + 2, second_at + 4, second_at + 30, second_at + len(packets[3]) - 1):
        reader = _fake_reader(_FakeSocket(whole[:cut], 1 << 20))
        got = []
        with pytest.raises(pymysql.err.OperationalError) as exc:
            for e in reader:
                got.append((e.type, e.pos, bytes(e.body)))
        assert got == want[:2], cut
        assert f"{_FAKE_FILE}:{ev_pos}" in str(exc.value) and exc.value.args[0] == 2013
    # the connection ends between two events, with no EOF
    reader = _fake_reader(_FakeSocket(whole, 1 << 20))
    with pytest.raises(pymysql.err.OperationalError, match=f"after {_FAKE_FILE}:{want[-1][1] + len(sent[-1])}"):
        list(reader)
    # no answer within the read timeout
    reader = _fake_reader(_FakeSocket(whole[:second_at + 30], 1 << 20, end="timeout"))
    with pytest.raises(pymysql.err.OperationalError, match="timed out"):
        list(reader)
    # a sequence number out of step
    bad = b"".join(packets[:3]) + _fake_frames([b"\x00" + sent[3]], seq=9) + EOF_PACKET
    with pytest.raises(BinlogError, match="sequence number 9, expected 4"):
        list(_fake_reader(_FakeSocket(bad, 1 << 20)))
    # the server's error, instead of an event: raised as pymysql raises it
    msg = "Could not find first log file name in binary log index file"
    err = b"".join(packets[:3]) + _fake_frames([_err_packet(1236, msg)], seq=4)
    with pytest.raises(pymysql.err.MySQLError, match=msg) as exc:
        list(_fake_reader(_FakeSocket(err, 1 << 20)))
    assert exc.value.args[0] == 1236
    # MariaDB's error packet numbered 0 (shutdown, the dump killed)
    err0 = b"".join(packets[:3]) + _fake_frames([_err_packet(1927, "Connection was killed")], seq=0)
    with pytest.raises(pymysql.err.MySQLError, match="killed"):
        list(_fake_reader(_FakeSocket(err0, 1 << 20)))
    # anything else
    odd = b"".join(packets[:3]) + _fake_frames([b"\x01abc"], seq=4)
    with pytest.raises(BinlogError, match="unexpected packet 01"):
        list(_fake_reader(_FakeSocket(odd, 1 << 20)))
