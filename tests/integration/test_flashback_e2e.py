"""Flashback end to end on a real server: random DML, invert, apply, CHECKSUM TABLE equals the start.

The workload covers every type the literals must round-trip, tables without keys holding
duplicate rows, multi-row and multi-table transactions, and names that need quoting.
"""
from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mysqlbackup.flashback.apply import ApplyRefused, apply_script
from mysqlbackup.flashback.engine import FlashbackError, generate_from_files
from mysqlbackup.flashback.select import Selection

pytestmark = pytest.mark.server

DB = "fb db"  # a database name that needs quoting
QDB = "`fb db`"  # as a user gives it in --databases or the databases param
TABLES = {
    "typed": """CREATE TABLE `fb db`.`typed` (
        id INT UNSIGNED NOT NULL PRIMARY KEY,
        ti TINYINT, uti TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED, bi BIGINT, ubi BIGINT UNSIGNED,
        f FLOAT, d DOUBLE, dec1 DECIMAL(10,2), dec2 DECIMAL(30,10), dec3 DECIMAL(5,0),
        dt DATE, t0 TIME, t6 TIME(6), dtm DATETIME(3), dtm6 DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR,
        b1 BIT(1), b17 BIT(17), b64 BIT(64),
        e ENUM('new','paid','shipped'), s SET('a','b','c'),
        v VARCHAR(300) CHARACTER SET utf8mb4, c CHAR(10) CHARACTER SET latin1, bin BINARY(8), vb VARBINARY(40),
        txt TEXT CHARACTER SET utf8mb4, blb BLOB, j JSON, g GEOMETRY
    ) ENGINE=InnoDB""",
    "no key": """CREATE TABLE `fb db`.`no key` (
        `we``ird col` VARCHAR(20) CHARACTER SET utf8mb4, n INT, f DOUBLE) ENGINE=InnoDB""",
    "ünï": """CREATE TABLE `fb db`.`ünï` (
        a INT NOT NULL, b VARCHAR(10) NOT NULL, v DECIMAL(8,3), PRIMARY KEY (a, b)) ENGINE=InnoDB""",
    # MariaDB's own data types (10.5+/10.7+/10.10+), a UUID as the primary key
    "mdb": """CREATE TABLE `fb db`.`mdb` (
        u UUID NOT NULL PRIMARY KEY, i6 INET6, i4 INET4, n INT) ENGINE=InnoDB""",
}
UUIDS = ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-4fff-bfff-ffffffffffff",
         "123e4567-e89b-12d3-a456-426614174000"]
INETS6 = ["::", "::1", "2001:db8::ff00:42:8329", "::ffff:10.1.2.3", "fe80::1", None]
INETS4 = ["0.0.0.0", "255.255.255.255", "10.1.2.3", None]
TEXTS = ["plain", "emoji 😀🚀", "quote ' and \\ and \" ", "new\nline\ttab", "", "漢字", "nul \0 byte", "\x1a ctrl-z"]


def typed_row(rnd: random.Random, i: int) -> tuple:
    n = rnd.random() < 0.15
    def maybe(v):
        return None if n and rnd.random() < 0.5 else v
    return (i, maybe(rnd.randint(-128, 127)), maybe(rnd.randint(0, 255)), maybe(rnd.randint(-32768, 32767)),
            maybe(rnd.randint(0, 2**24 - 1)), maybe(rnd.randint(-2**63, 2**63 - 1)), maybe(rnd.choice([0, 2**64 - 1, rnd.randint(0, 2**64 - 1)])),
            maybe(rnd.uniform(-1e6, 1e6)), maybe(rnd.choice([rnd.uniform(-1e300, 1e300), 1 / 3, -0.0, 5e-324])),
            maybe(f"{rnd.randint(-10**7, 10**7)}.{rnd.randint(0, 99):02d}"),
            maybe(f"{rnd.randint(-10**19, 10**19)}.{rnd.randint(0, 10**10 - 1):010d}"), maybe(rnd.randint(-99999, 99999)),
            maybe(rnd.choice(["0000-00-00", "2024-02-29", "1000-01-01", "9999-12-31"])),
            maybe(rnd.choice(["-838:59:59", "00:00:00", "23:59:59", "100:00:01"])),
            maybe(f"{rnd.randint(-800, 800)}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}.{rnd.randint(0, 999999):06d}"),
            maybe(rnd.choice(["0000-00-00 00:00:00.000", "2024-03-01 12:34:56.789"])),
            maybe(f"20{rnd.randint(10, 30)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)} 01:02:03.{rnd.randint(0, 999999):06d}"),
            maybe(f"2025-0{rnd.randint(1, 9)}-01 00:00:0{rnd.randint(0, 9)}.{rnd.randint(0, 999999):06d}"),
            maybe(rnd.choice([0, 1901, 2155, 2024])),
            maybe(rnd.randint(0, 1)), maybe(rnd.randint(0, 2**17 - 1)), maybe(rnd.randint(0, 2**64 - 1)),
            maybe(rnd.choice(["new", "paid", "shipped"])), maybe(rnd.choice(["", "a", "a,c", "a,b,c"])),
            maybe(rnd.choice(TEXTS) + str(i)), maybe(rnd.choice(["ÄÖÜ", "abc", "é", ""])),
            maybe(rnd.choice([b"\x00" * 8, b"ab\x00\x00", os.urandom(8)])), maybe(os.urandom(rnd.randint(0, 40))),
            maybe(rnd.choice(TEXTS) * rnd.randint(1, 50)), maybe(os.urandom(rnd.randint(0, 300))),
            maybe(f'{{"k": {i}, "s": "ü😀", "a": [1, 2.5, null]}}'),
            None)


def workload(conn, rnd: random.Random, steps: int) -> None:
    """Random transactions: inserts, updates, deletes, several rows and several tables at once."""
    with conn.cursor() as cur:
        cur.execute("SELECT MAX(id) FROM `fb db`.`typed`")
        next_id = (cur.fetchone()[0] or 0) + 1
        for _ in range(steps):
            cur.execute("BEGIN")
            for _ in range(rnd.randint(1, 4)):
                op = rnd.random()
                if op < 0.35:
                    rows = [typed_row(rnd, next_id + k) for k in range(rnd.randint(1, 3))]
                    next_id += len(rows)
                    cur.executemany(f"INSERT INTO `fb db`.`typed` VALUES ({', '.join(['%s'] * 32)})", rows)
                    cur.execute("UPDATE `fb db`.`typed` SET g = ST_GeomFromText(%s) WHERE id=%s",
                                (f"POINT({rnd.randint(0, 9)} {rnd.randint(0, 9)})", rows[0][0]))
                elif op < 0.6:
                    cur.execute("SELECT id FROM `fb db`.`typed` ORDER BY RAND(%s) LIMIT 2", (rnd.randint(0, 10**6),))
                    for (i,) in cur.fetchall():
                        new = typed_row(rnd, i)
                        cur.execute("UPDATE `fb db`.`typed` SET " + ", ".join(
                            f"`{c}`=%s" for c in ("ti", "ubi", "d", "dec2", "t6", "ts", "b64", "s", "v", "c", "bin",
                                                  "txt", "j")) + " WHERE id=%s",
                            (new[1], new[6], new[8], new[10], new[14], new[17], new[21], new[23], new[24], new[25],
                             new[26], new[28], new[30], i))
                elif op < 0.72:
                    cur.execute("DELETE FROM `fb db`.`typed` ORDER BY RAND(%s) LIMIT 1", (rnd.randint(0, 10**6),))
                elif op < 0.86:
                    k = rnd.choice(TEXTS[:3] + [None])
                    cur.execute("INSERT INTO `fb db`.`no key` VALUES (%s, %s, %s), (%s, %s, %s)",
                                (k, 1, 0.5, k, 1, 0.5))  # duplicates on purpose
                    cur.execute("UPDATE `fb db`.`no key` SET n = n + 1 WHERE n = %s LIMIT 1", (rnd.randint(1, 3),))
                    cur.execute("DELETE FROM `fb db`.`no key` WHERE n = %s LIMIT 1", (rnd.randint(1, 4),))
                elif op < 0.93:
                    u = rnd.choice(UUIDS + [None] * 3)  # None: a time-based UUID() (its bytes are stored swapped)
                    cur.execute("INSERT INTO `fb db`.`mdb` VALUES (" + ("%s" if u else "UUID()") + ", %s, %s, %s) "
                                "ON DUPLICATE KEY UPDATE n = n + 1, i6 = VALUES(i6)",
                                ((u,) if u else ()) + (rnd.choice(INETS6), rnd.choice(INETS4), rnd.randint(0, 9)))
                    cur.execute("UPDATE `fb db`.`mdb` SET i4 = %s, i6 = %s WHERE n = %s",
                                (rnd.choice(INETS4), rnd.choice(INETS6), rnd.randint(0, 9)))
                    cur.execute("DELETE FROM `fb db`.`mdb` WHERE n = %s LIMIT 1", (rnd.randint(0, 12),))
                else:
                    a = rnd.randint(1, 30)
                    cur.execute("INSERT INTO `fb db`.`ünï` VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE v = v + 1",
                                (a, rnd.choice(["x", "ÿ", "😀"]), f"{rnd.randint(-9999, 9999)}.{rnd.randint(0, 999):03d}"))
                    cur.execute("DELETE FROM `fb db`.`ünï` WHERE a = %s", (rnd.randint(1, 30),))
            cur.execute("COMMIT")


def checksums(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE `fb db`.`typed`, `fb db`.`no key`, `fb db`.`ünï`, `fb db`.`mdb` EXTENDED")
        return dict(cur.fetchall())


def master_pos(conn):
    with conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        f, p = cur.fetchone()[:2]
        return f, p


@pytest.fixture
def server(fresh_sandbox):
    src = fresh_sandbox.source
    conn = src.connect()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode=''")  # zero dates
        cur.execute("CREATE DATABASE `fb db` CHARACTER SET utf8mb4")
        for ddl in TABLES.values():
            cur.execute(ddl)
    rnd = random.Random(11)
    conn.autocommit(True)
    workload(conn, rnd, 40)  # the state before the window
    yield src, conn, rnd
    conn.close()


def binlogs(src) -> list[str]:
    return sorted(str(p) for p in Path(src.datadir).glob("binlog.[0-9]*"))


@pytest.mark.parametrize("seed", [1, 2])
def test_flashback_restores_the_start_of_the_window(server, tmp_path, seed):
    src, conn, _ = server
    before = checksums(conn)
    start = master_pos(conn)
    workload(conn, random.Random(seed), 120)
    with conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
    assert checksums(conn) != before
    out = tmp_path / "undo.sql"
    sel = Selection.parse(databases=[QDB], start_position=f"{start[0]}:{start[1]}")
    summary = generate_from_files(binlogs(src), sel, str(out), str(tmp_path))
    assert summary.rows > 100 and summary.transactions > 50
    text = out.read_text()
    assert text.startswith("-- mysql-flashback: inverse of") and "SET time_zone='+00:00';" in text
    report = apply_script(io.StringIO(text), src.connect, log=lambda _m: None)
    assert report.transactions == summary.transactions
    assert checksums(conn) == before


def test_table_and_type_filters(server, tmp_path):
    src, conn, _ = server
    start = master_pos(conn)
    before = checksums(conn)
    workload(conn, random.Random(5), 60)
    out = tmp_path / "undo.sql"
    sel = Selection.parse(tables=["`fb db`.`ünï`"], types=["delete", "insert", "update"],
                          start_position=f"{start[0]}:{start[1]}")
    summary = generate_from_files(binlogs(src), sel, str(out), str(tmp_path))
    assert set(k for k, v in summary.per_table.items() if sum(v.values())) == {"fb db.ünï"}
    apply_script(io.StringIO(out.read_text()), src.connect, log=lambda _m: None)
    after = checksums(conn)
    assert after["fb db.ünï"] == before["fb db.ünï"]
    assert after["fb db.typed"] != before["fb db.typed"]  # untouched by this flashback


def test_refusals(server, tmp_path):
    src, conn, _ = server
    start = master_pos(conn)
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE `fb db`.`ünï` ADD COLUMN extra INT")
        cur.execute("INSERT INTO `fb db`.`ünï` (a, b) VALUES (999, 'z')")
    out = tmp_path / "undo.sql"
    with pytest.raises(FlashbackError, match="DDL on fb db.ünï"):
        generate_from_files(binlogs(src), Selection.parse(start_position=f"{start[0]}:{start[1]}"), str(out))
    # the refusal lists what the window really holds, and names the field in the caller's words
    with pytest.raises(FlashbackError, match=r"tables: `fb db`\.nope not found in the binlog window \(the window "
                                             r"holds row changes of: `fb db`\.ünï\)") as info:
        generate_from_files(binlogs(src), Selection.parse(tables=["`fb db`.nope"],
                                                          start_position=f"{start[0]}:{start[1]}"), str(out))
    assert info.value.for_cli().startswith("--tables: ")
    with pytest.raises(FlashbackError, match="outside the binlogs"):
        generate_from_files(binlogs(src), Selection.parse(start_position="binlog.999999:4"), str(out))
    assert not out.exists()


def test_statement_based_binlog_is_refused(server, tmp_path):
    src, conn, _ = server
    start = master_pos(conn)
    with conn.cursor() as cur:
        cur.execute("SET SESSION binlog_format='STATEMENT'")
        cur.execute("UPDATE `fb db`.`ünï` SET v = 1 WHERE a < 5")
        cur.execute("SET SESSION binlog_format='ROW'")
    with pytest.raises(FlashbackError, match="binlog_format=ROW"):
        generate_from_files(binlogs(src), Selection.parse(start_position=f"{start[0]}:{start[1]}"),
                            str(tmp_path / "u.sql"))


def test_cli_generate_then_apply(server, tmp_path):
    import sys
    src, conn, _ = server
    before = checksums(conn)
    start = master_pos(conn)
    workload(conn, random.Random(9), 30)
    cli = Path(__file__).resolve().parents[2] / "bin" / "mysql-flashback"
    out = tmp_path / "undo.sql"
    cnf = tmp_path / "root.cnf"
    cnf.write_text(f"[client]\nuser=root\nsocket={src.socket}\n")
    res = subprocess.run([sys.executable, str(cli), "generate", "--binlog-dir", src.datadir,
                          "--start-position", f"{start[0]}:{start[1]}", "--databases", QDB, "-o", str(out),
                          "--apply", "--target-defaults-file", str(cnf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stderr and "applied" in res.stderr
    assert checksums(conn) == before


def test_live_server_and_archived_files_give_the_same_sql(server, tmp_path):
    src, conn, _ = server
    start = master_pos(conn)
    workload(conn, random.Random(21), 40)
    with conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'fbrepl'@'localhost' IDENTIFIED BY 'x-Repl-1'")
        cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'fbrepl'@'localhost'")
    from mysqlbackup.flashback.engine import generate_from_live
    sel = Selection.parse(databases=[QDB], start_position=f"{start[0]}:{start[1]}")
    live = generate_from_live({"unix_socket": src.socket, "user": "fbrepl", "password": "x-Repl-1"}, sel,
                              str(tmp_path / "live.sql"), str(tmp_path))
    files = generate_from_files(binlogs(src), sel, str(tmp_path / "files.sql"), str(tmp_path))
    assert live.rows == files.rows > 0 and live.per_table == files.per_table

    def body(p):  # everything after the header comments (the source line differs, nothing else)
        text = (tmp_path / p).read_text()
        return text[text.index("SET NAMES"):]
    assert body("live.sql") == body("files.sql")


def test_mariadb_binlog_flashback_oracle_reaches_the_same_state(server, tmp_path):
    """MariaDB's own C flashback, on the same local files, is the second oracle: both undo the window
    to the same CHECKSUM TABLE, and our statement count matches its row count."""
    src, conn, _ = server
    before = checksums(conn)
    start = master_pos(conn)
    workload(conn, random.Random(33), 60)
    end = master_pos(conn)
    assert end[0] == start[0], "keep the window in one binlog file for mariadb-binlog"
    ours = generate_from_files(binlogs(src), Selection.parse(
        databases=[QDB], start_position=f"{start[0]}:{start[1]}", stop_position=f"{end[0]}:{end[1]}"),
        str(tmp_path / "ours.sql"), str(tmp_path))
    oracle = subprocess.run(["mariadb-binlog", "--no-defaults", "--flashback", f"--start-position={start[1]}",
                             f"--stop-position={end[1]}", os.path.join(src.datadir, start[0])],
                            capture_output=True, check=True)
    applied = subprocess.run(["mariadb", "--no-defaults", f"--socket={src.socket}", "-uroot",
                              "--default-character-set=utf8mb4"], input=oracle.stdout, capture_output=True)
    assert applied.returncode == 0, applied.stderr.decode()[-2000:]
    assert checksums(conn) == before
    text = (tmp_path / "ours.sql").read_text()
    statements = sum(1 for line in text.splitlines() if line.startswith(("INSERT ", "UPDATE ", "DELETE ")))
    assert statements == ours.rows > 0


def _gtid_now(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        return cur.fetchone()[0]


def test_time_gtid_and_type_windows(server, tmp_path):
    """Only the middle stretch is undone, selected by time, by GTID or by type: the rest stays."""
    import time as _time
    from datetime import datetime, timedelta, timezone
    src, conn, _ = server
    workload(conn, random.Random(41), 10)            # before the window
    _time.sleep(1.1)
    t_start = datetime.now(timezone.utc).replace(microsecond=0)
    g_first = None
    with conn.cursor() as cur:
        cur.execute("INSERT INTO `fb db`.`ünï` VALUES (901, 'w', 1.5)")
        g_first = _gtid_now(conn)
        cur.execute("DELETE FROM `fb db`.`ünï` WHERE a = 901")
        cur.execute("INSERT INTO `fb db`.`ünï` VALUES (902, 'w', 2.5)")
        cur.execute("UPDATE `fb db`.`ünï` SET v = 7 WHERE a = 902")
    g_last = _gtid_now(conn)
    _time.sleep(1.1)
    t_stop = datetime.now(timezone.utc).replace(microsecond=0)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO `fb db`.`ünï` VALUES (903, 'after', 3.5)")   # after the window

    def run(**kw):
        out = tmp_path / "w.sql"
        s = generate_from_files(binlogs(src), Selection.parse(tables=["`fb db`.`ünï`"], **kw), str(out), str(tmp_path))
        return s, out.read_text()

    for kw in ({"start_time": t_start.isoformat(), "stop_time": (t_stop - timedelta(seconds=0)).isoformat()},
               {"start_gtid": g_first, "stop_gtid": g_last}):
        s, text = run(**kw)
        counts = s.per_table["fb db.ünï"]
        assert (counts["insert"], counts["delete"], counts["update"]) == (2, 1, 1), (kw, counts)
        assert "903" not in text and "901" in text and "902" in text
        # newest first: the undo of the UPDATE of 902 comes before the undo of its INSERT
        assert text.index("UPDATE `fb db`.`ünï` SET") < text.index("DELETE FROM `fb db`.`ünï` WHERE `a`=902")
    s, text = run(start_gtid=g_first, stop_gtid=g_last, types=["delete"])
    assert dict(s.per_table["fb db.ünï"]) == {"delete": 1}
    assert text.count("INSERT INTO `fb db`.`ünï`") == 1 and "DELETE FROM" not in text


def test_partial_images_and_missing_metadata_are_refused(server, tmp_path):
    src, conn, _ = server
    start = master_pos(conn)
    with conn.cursor() as cur:
        cur.execute("SET SESSION binlog_row_image='MINIMAL'")
        cur.execute("UPDATE `fb db`.`ünï` SET v = v + 1 WHERE a > 0 LIMIT 1")
        cur.execute("INSERT INTO `fb db`.`ünï` VALUES (990, 'm', 1)")
        cur.execute("SET SESSION binlog_row_image='FULL'")
    with pytest.raises(FlashbackError, match="binlog_row_image"):
        generate_from_files(binlogs(src), Selection.parse(start_position=f"{start[0]}:{start[1]}"),
                            str(tmp_path / "u.sql"))
    start = master_pos(conn)
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL binlog_row_metadata='MINIMAL'")
    try:
        c2 = src.connect()
        with c2.cursor() as cur:
            cur.execute("INSERT INTO `fb db`.`ünï` VALUES (991, 'm', 1)")
        c2.close()
    finally:
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL binlog_row_metadata='FULL'")
    with pytest.raises(FlashbackError, match="binlog_row_metadata"):
        generate_from_files(binlogs(src), Selection.parse(start_position=f"{start[0]}:{start[1]}"),
                            str(tmp_path / "u.sql"))


def test_time_window_outside_the_binlogs_is_refused(server, tmp_path):
    src, conn, _ = server
    for kw, msg in (({"start_time": "2099-01-01 00:00:00"}, "after the last transaction"),
                    ({"start_time": "2000-01-01 00:00:00", "stop_time": "2000-01-02 00:00:00"}, "before the first")):
        with pytest.raises(FlashbackError, match=msg):
            generate_from_files(binlogs(src), Selection.parse(**kw), str(tmp_path / "u.sql"))


def test_progress_is_reported(server, tmp_path):
    src, conn, _ = server
    start = master_pos(conn)
    with conn.cursor() as cur:  # 4,000 single-row transactions: about 20,000 events
        cur.execute("BEGIN NOT ATOMIC FOR i IN 1..4000 DO "
                    "INSERT INTO `fb db`.`no key` VALUES ('p', i, 0); END FOR; END")
    lines: list[str] = []
    s = generate_from_files(binlogs(src), Selection.parse(databases=[QDB], start_position=f"{start[0]}:{start[1]}"),
                            str(tmp_path / "u.sql"), str(tmp_path), log=lines.append, progress_seconds=0)
    assert s.events > 16384
    progress = [line for line in lines if line.startswith("progress:")]
    assert progress and "events read" in progress[0] and "rows selected" in progress[0], lines


def test_a_row_changed_again_after_the_window_stops_the_apply(server, tmp_path):
    """The default WHERE guards the whole row: a later change is reported, never overwritten."""
    from mysqlbackup.flashback.apply import ApplyStopped
    src, conn, _ = server
    with conn.cursor() as cur:
        cur.execute("INSERT INTO `fb db`.`ünï` VALUES (700, 'g', 1.0)")
    start = master_pos(conn)
    with conn.cursor() as cur:
        cur.execute("UPDATE `fb db`.`ünï` SET v = 2.0 WHERE a = 700")   # the bad change
    stop = master_pos(conn)
    with conn.cursor() as cur:
        cur.execute("UPDATE `fb db`.`ünï` SET v = 3.0 WHERE a = 700")   # someone changed it again since
    sel = Selection.parse(start_position=f"{start[0]}:{start[1]}", stop_position=f"{stop[0]}:{stop[1]}")
    connect = src.connect
    generate_from_files(binlogs(src), sel, str(tmp_path / "row.sql"), str(tmp_path))
    with pytest.raises(ApplyStopped, match="matched no row"):
        apply_script(io.StringIO((tmp_path / "row.sql").read_text()), connect, log=lambda _m: None)
    assert src.sql("SELECT v FROM `fb db`.`ünï` WHERE a = 700")[0][0] == 3  # the later change is kept
    # --where key: the key alone matches, and the later change is overwritten (the documented trade-off)
    generate_from_files(binlogs(src), sel, str(tmp_path / "key.sql"), str(tmp_path), where="key")
    apply_script(io.StringIO((tmp_path / "key.sql").read_text()), connect, log=lambda _m: None)
    assert src.sql("SELECT v FROM `fb db`.`ünï` WHERE a = 700")[0][0] == 1


def test_two_processes_write_exactly_what_one_writes(server, tmp_path, monkeypatch):
    """Files and live, position, GTID and time windows, a table filter: the window read by two
    processes (split where the rows halve) gives the bytes one process writes, and applies."""
    import time
    from datetime import datetime, timezone

    from mysqlbackup.flashback import engine, parallel
    from mysqlbackup.flashback.engine import generate_from_live
    src, conn, _ = server
    with conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'fbrepl'@'localhost' IDENTIFIED BY 'x-Repl-1'")
        cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'fbrepl'@'localhost'")
        cur.execute("SELECT @@gtid_binlog_pos")
        domain, server_id, seq = cur.fetchone()[0].split(",")[0].split("-")
    time.sleep(1.05)  # every earlier event is in an earlier second than the window's start
    since = datetime.now(timezone.utc).replace(microsecond=0)
    start = master_pos(conn)
    before = checksums(conn)
    workload(conn, random.Random(77), 150)
    with conn.cursor() as cur:  # one large transaction after many small ones
        cur.execute("BEGIN")
        cur.execute("INSERT INTO `fb db`.`no key` SELECT CONCAT('big', seq), seq, seq / 7 FROM `fb db`.seq_1_to_3000")
        cur.execute("COMMIT")
    stop = master_pos(conn)
    live_kw = {"unix_socket": src.socket, "user": "fbrepl", "password": "x-Repl-1"}
    windows = {
        "position": Selection.parse(databases=[QDB], start_position=f"{start[0]}:{start[1]}",
                                    stop_position=f"{stop[0]}:{stop[1]}"),
        "gtid": Selection.parse(start_gtid=f"{domain}-{server_id}-{int(seq) + 1}"),
        "time": Selection.parse(start_time=since.strftime("%Y-%m-%d %H:%M:%S"), tables=["`fb db`.typed"]),
    }
    from mysqlbackup.binlog.reader import iter_events
    for name, sel in windows.items():
        where = "key" if name == "gtid" else "row"
        # the fast walk of archived files sees what the reader sees: the same split, the same work
        first, last = (sel.start_position.coords if sel.start_position else None,
                       sel.stop_position.coords if sel.stop_position else None)
        for lo in (first, (os.path.basename(binlogs(src)[0]), 4)):
            fast = parallel.plan_parts(parallel.walk_files(binlogs(src), lo, last), sel, where, min_work=0)
            assert fast is not None and fast == parallel.plan_parts(
                iter_events(binlogs(src), lo, last, verify_checksums=False), sel, where, min_work=0), name
        for path in ("files", "live"):
            def run(out, jobs, log=None):
                if path == "files":
                    return generate_from_files(binlogs(src), sel, str(tmp_path / out), str(tmp_path), jobs=jobs,
                                               log=log, where=where)
                return generate_from_live(live_kw, sel, str(tmp_path / out), str(tmp_path), jobs=jobs, log=log,
                                          where=where)
            monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 1 << 40)
            one = run("one.sql", 2)  # too little work for a second process: one reads it all
            monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 1)
            monkeypatch.setattr(parallel, "MIN_SPLIT_WORK", 0)
            monkeypatch.setattr(engine, "PARTS_FIRST", True)  # small windows: both processes read parts
            logs: list[str] = []
            two = run("two.sql", 2, logs.append)
            # a live window without a start position is read from the oldest binlog: not split
            split = path == "files" or sel.start_position is not None
            assert any("by the second process" in line for line in logs) == split, (name, path, logs)
            assert (two.rows, two.transactions, two.per_table) == (one.rows, one.transactions, one.per_table)
            assert two.rows > 0, (name, path)
            assert (tmp_path / "two.sql").read_bytes() == (tmp_path / "one.sql").read_bytes(), (name, path)
            assert not list(tmp_path.glob("*.part*"))
            # without waiting for the parts: a small window is read by the first process before the second
            # one publishes (or after: either way the same bytes)
            monkeypatch.setattr(engine, "PARTS_FIRST", False)
            run("three.sql", 2)
            assert (tmp_path / "three.sql").read_bytes() == (tmp_path / "one.sql").read_bytes(), (name, path)
            assert not list(tmp_path.glob("*.part*"))
            (tmp_path / "two.sql").rename(tmp_path / f"{name}-{path}.sql")
    apply_script(io.StringIO((tmp_path / "position-live.sql").read_text()), src.connect, log=lambda _m: None)
    assert checksums(conn) == before


_HEAVY_MAIN = """
import json, os, sys
if __name__ == "__mp_main__":  # spawn ran this file again in the second process: what an airflow worker would pay
    open(os.environ["MARKER"], "w").close()


def main():
    args = json.loads(sys.argv[1])
    sys.path.insert(0, args["plugins"])
    from mysqlbackup.flashback import engine, parallel
    from mysqlbackup.flashback.select import Selection
    parallel.PARALLEL_MIN_BYTES, parallel.MIN_SPLIT_WORK, engine.PARTS_FIRST = 1, 0, True
    logs = []
    engine.generate_from_files(args["files"], Selection.parse(start_position=args["start"]), args["out"],
                               args["spool"], jobs=2, log=logs.append)
    print(json.dumps(logs))


if __name__ == "__main__":
    main()
"""


def test_the_second_process_does_not_run_the_callers_main_script(server, tmp_path):
    """spawn would run the caller's __main__ file again in the second process (in an Airflow worker,
    the airflow command: an import of Airflow); it is started without it."""
    import json
    src, conn, _ = server
    start = master_pos(conn)
    workload(conn, random.Random(5), 60)
    script = tmp_path / "heavy_main.py"
    script.write_text(_HEAVY_MAIN)
    marker = tmp_path / "main-ran-again"
    args = {"plugins": str(Path(__file__).resolve().parents[2] / "plugins"), "files": binlogs(src),
            "start": f"{start[0]}:{start[1]}", "out": str(tmp_path / "o.sql"), "spool": str(tmp_path)}
    res = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MARKER": str(marker)})
    assert res.returncode == 0, res.stderr
    logs = json.loads(res.stdout.strip().splitlines()[-1])
    assert any("by the second process" in line for line in logs), logs
    assert not marker.exists()


def test_generated_and_invisible_columns(server, tmp_path):
    """Generated columns are never written back (the server computes them); invisible ones are."""
    from mysqlbackup.flashback.apply import ApplyStopped
    from mysqlbackup.flashback.engine import generate_from_live, generated_columns
    src, conn, _ = server
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE `fb db`.gen (id INT PRIMARY KEY, a INT, v INT AS (a * 2) VIRTUAL, "
                    "st INT AS (a + 1) STORED, inv INT INVISIBLE DEFAULT 5)")
        cur.execute("INSERT INTO `fb db`.gen (id, a, inv) VALUES (1, 10, 6), (2, 20, 7)")
    before = src.sql("CHECKSUM TABLE `fb db`.gen EXTENDED")

    def window():
        """The same changes (update, delete, insert); their window as positions."""
        first = master_pos(conn)
        with conn.cursor() as cur:
            cur.execute("UPDATE `fb db`.gen SET a = a + 5, inv = inv + 1")
            cur.execute("DELETE FROM `fb db`.gen WHERE id = 1")
            cur.execute("INSERT INTO `fb db`.gen (id, a, inv) VALUES (3, 30, 8)")
        last = master_pos(conn)
        return f"{first[0]}:{first[1]}", f"{last[0]}:{last[1]}"

    start, stop = window()
    sel = Selection.parse(tables=["`fb db`.gen"], start_position=start, stop_position=stop)
    connect = src.connect
    root = {"unix_socket": src.socket, "user": "root", "password": ""}
    assert generated_columns(root)[("fb db", "gen")] == {"v", "st"}

    # archived files, no server asked: apply refuses before anything runs, naming the columns
    generate_from_files(binlogs(src), sel, str(tmp_path / "blind.sql"), str(tmp_path))
    assert "generated columns: unknown" in (tmp_path / "blind.sql").read_text()
    with pytest.raises(ApplyRefused, match=r"fb db\.gen has generated columns \(v, st\) and the script was written"):
        apply_script(io.StringIO((tmp_path / "blind.sql").read_text()), connect, log=lambda _m: None)
    assert src.sql("CHECKSUM TABLE `fb db`.gen EXTENDED") != before  # nothing was applied
    # --force runs it: the server then refuses the first generated value, with a hint
    with pytest.raises(ApplyStopped, match="generated columns: generate the script with access"):
        apply_script(io.StringIO((tmp_path / "blind.sql").read_text()), connect, log=lambda _m: None, dry_run=True,
                     force=True)

    # the CLI from archived files with --apply asks the target, and the target defaults to the
    # source server when one is given: generated columns are left out, the apply is exact
    import sys
    cli = Path(__file__).resolve().parents[2] / "bin" / "mysql-flashback"
    cnf = tmp_path / "root.cnf"
    cnf.write_text(f"[client]\nuser=root\nsocket={src.socket}\n")
    argv = [sys.executable, str(cli), "generate", "--binlog-dir", src.datadir, "--tables", "`fb db`.gen", "--apply"]
    res = subprocess.run(argv + ["--start-position", start, "--stop-position", stop, "-o", str(tmp_path / "t1.sql"),
                                 "--target-defaults-file", str(cnf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "2 found on the server" in (tmp_path / "t1.sql").read_text()
    assert src.sql("CHECKSUM TABLE `fb db`.gen EXTENDED") == before
    start, stop = window()
    res = subprocess.run(argv + ["--start-position", start, "--stop-position", stop, "-o", str(tmp_path / "t2.sql"),
                                 "--defaults-file", str(cnf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert src.sql("CHECKSUM TABLE `fb db`.gen EXTENDED") == before
    start, stop = window()
    sel = Selection.parse(tables=["`fb db`.gen"], start_position=start, stop_position=stop)

    # archived files with a server to ask, and live: generated columns are left out of INSERT and SET
    generate_from_files(binlogs(src), sel, str(tmp_path / "files.sql"), str(tmp_path),
                        generated=generated_columns(root))
    generate_from_live(root, sel, str(tmp_path / "live.sql"), str(tmp_path))
    text = (tmp_path / "live.sql").read_text()
    assert "INSERT INTO `fb db`.`gen` (`id`, `a`, `inv`) VALUES" in text and "`v`=" not in text
    body = text[text.index("SET NAMES"):]
    files_text = (tmp_path / "files.sql").read_text()
    assert files_text[files_text.index("SET NAMES"):] == body
    apply_script(io.StringIO(text), connect, log=lambda _m: None)
    assert src.sql("CHECKSUM TABLE `fb db`.gen EXTENDED") == before


def test_gtid_and_position_windows_outside_the_binlogs_are_refused(server, tmp_path):
    src, conn, _ = server
    with conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
    last = binlogs(src)[-1]
    name = os.path.basename(last)
    end = os.path.getsize(last)
    for kw, msg in (({"start_gtid": "1-1-1"}, "is not in the binlogs read"),
                    ({"start_gtid": "0-1-99999999"}, "is not in the binlogs read"),
                    ({"start_gtid": "0-7-5", "stop_gtid": "0-7-9"},
                     r"GTID 0-7-5 is not in the binlogs: at that sequence number they hold 0-1-5 \(binlog"),
                    ({"start_gtid": "0-1-7", "stop_gtid": "0-7-9"}, "GTID 0-7-9 is not in the binlogs"),
                    ({"start_position": f"{name}:{end + 1000}"}, "holds no transaction")):
        with pytest.raises(FlashbackError, match=msg):
            generate_from_files(binlogs(src), Selection.parse(**kw), str(tmp_path / "u.sql"), str(tmp_path))
