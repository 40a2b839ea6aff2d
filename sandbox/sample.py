"""The demo's sample data: a small `shop` database, and one bad DELETE to undo with flashback.

``ensure_loaded`` creates `shop` on the sandbox's source once (deterministic rows of varied types:
INT/BIGINT keys, DECIMAL, DATETIME(6), utf8mb4 text with non-ASCII, JSON, BLOB, ENUM, NULLs; one
table without a primary key). ``bad_delete`` runs the DELETE once, after the first backup, and
records its window (binlog positions, GTID, UTC times) in ``bad_delete.json`` beside the sandbox
state, so every later ``up`` shows the same window. Nothing here runs twice: the records say what
is done.
"""
from __future__ import annotations

import json
import time
import os
import random
import shlex
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from sandbox.servers import BACKUP_USER, Sandbox

DB = "shop"
SAMPLE_RECORD = "sample.json"
DELETE_RECORD = "bad_delete.json"
DEFAULTS_FILE = "source-backup-user.cnf"
FLASHBACK_OUT = "flashback/undo-bad-delete.sql"
# the "bad" change: a clean-up meant for one test customer's cancelled orders, run without its
# customer filter
BAD_DELETE = "DELETE FROM shop.orders WHERE status = 'cancelled'"
WORK_BEFORE_DELETE = 40  # orders shipped after the backup, before the bad DELETE

SCHEMA = [
    """CREATE TABLE customers (
         id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
         email VARCHAR(190) NOT NULL,
         name VARCHAR(100) NOT NULL,
         city VARCHAR(60) NULL,
         country CHAR(2) NOT NULL,
         tier ENUM('basic','silver','gold') NOT NULL DEFAULT 'basic',
         created_at DATETIME(6) NOT NULL,
         prefs JSON NULL,
         avatar BLOB NULL,
         UNIQUE KEY uq_email (email)
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE products (
         id INT NOT NULL PRIMARY KEY,
         sku VARCHAR(32) NOT NULL,
         name VARCHAR(200) NOT NULL,
         price DECIMAL(10,2) NOT NULL,
         weight_kg DECIMAL(7,3) NULL,
         attrs JSON NULL,
         thumbnail BLOB NULL,
         active TINYINT(1) NOT NULL DEFAULT 1,
         UNIQUE KEY uq_sku (sku)
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    """CREATE TABLE orders (
         id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
         customer_id INT UNSIGNED NOT NULL,
         status ENUM('new','paid','shipped','delivered','cancelled') NOT NULL,
         total DECIMAL(12,2) NOT NULL,
         currency CHAR(3) NOT NULL DEFAULT 'EUR',
         placed_at DATETIME(6) NOT NULL,
         shipped_at DATETIME(6) NULL,
         note VARCHAR(255) NULL,
         meta JSON NULL,
         KEY ix_customer (customer_id),
         KEY ix_status (status)
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
    # no primary key on purpose: flashback then matches every column (NULL-safe) with LIMIT 1
    """CREATE TABLE order_lines (
         order_id BIGINT UNSIGNED NOT NULL,
         line_no SMALLINT UNSIGNED NOT NULL,
         product_id INT NOT NULL,
         qty INT NOT NULL,
         unit_price DECIMAL(10,2) NOT NULL,
         discount DECIMAL(5,2) NULL,
         KEY ix_order (order_id)
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci""",
]

FIRST = ["Zoë", "José", "Łukasz", "Søren", "Ольга", "Àlex", "Françoise", "Jürgen", "Siobhán", "Ngọc",
         "健", "Aylin", "Dvořák", "Mía", "Olaf", "Priya", "Chloé", "Ömer", "Ana", "Tomás"]
LAST = ["Ångström", "Müller", "Żółć", "Nørgaard", "Иванова", "García", "Lefèvre", "Groß", "Ó Briain",
        "Nguyễn", "渡辺", "Yılmaz", "Novák", "Peña", "O'Neil", "Iyer", "Dubois", "Çelik", "Silva", "Smith"]
CITIES = ["Zürich", "Kraków", "Århus", "Москва", "São Paulo", "Besançon", "Köln", "Dún Laoghaire",
          "Hà Nội", "東京", "İzmir", "Brno", "Málaga", "Reykjavík", None]
COUNTRIES = ["CH", "PL", "DK", "RU", "BR", "FR", "DE", "IE", "VN", "JP", "TR", "CZ", "ES", "IS", "US"]
NOTES = [None, None, None, "leave at the door", "🎁 gift wrap, please", "Rückruf erwünscht",
         "appel avant livraison", "它是礼物", "quote ' and \\ backslash", "", "fragile — glass"]
PRODUCTS = ["Kaffeemühle", "Teekanne 1,2 l", "Crème brûlée torch", "Smørrebrød board", "Matcha 抹茶 30 g",
            "Żubrówka glass", "Paella pan Ø 34 cm", "Çay bardağı set", "Pho bowl", "Wool socks"]


def _rows(seed: int = 2026) -> dict[str, list[tuple]]:
    """The sample's rows (always the same ones)."""
    rnd = random.Random(seed)
    t0 = datetime(2025, 1, 6, 8, 0, 0)
    customers, products, orders, lines = [], [], [], []
    for i in range(1, 601):
        created = t0 + timedelta(seconds=rnd.randint(0, 300 * 86400), microseconds=rnd.randint(0, 999999))
        prefs = None if i % 7 == 0 else json.dumps(
            {"newsletter": i % 3 == 0, "lang": rnd.choice(["de", "fr", "pl", "ja", "vi"]),
             "tags": rnd.sample(["vip", "b2b", "früh", "夜"], rnd.randint(0, 3))}, ensure_ascii=False)
        customers.append((i, f"customer{i}@example.org", f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                          rnd.choice(CITIES), rnd.choice(COUNTRIES), rnd.choice(["basic"] * 6 + ["silver"] * 3 + ["gold"]),
                          created, prefs, None if i % 4 else rnd.randbytes(rnd.randint(16, 256))))
    for i in range(1, 151):
        attrs = None if i % 9 == 0 else json.dumps(
            {"colour": rnd.choice(["rot", "bleu", "zielony", "青"]), "sizes": [rnd.randint(1, 5) for _ in range(2)],
             "dims_cm": {"w": rnd.randint(5, 60), "h": rnd.randint(5, 60)}}, ensure_ascii=False)
        products.append((i, f"SKU-{i:05d}", f"{PRODUCTS[i % len(PRODUCTS)]} #{i}",
                         Decimal(rnd.randint(199, 49999)) / 100,
                         None if i % 5 == 0 else Decimal(rnd.randint(10, 25000)) / 1000,
                         attrs, None if i % 3 else rnd.randbytes(rnd.randint(64, 2048)), int(i % 11 != 0)))
    prices = {p[0]: p[3] for p in products}
    for i in range(1, 2501):
        oid = 5_000_000_000 + i * 7  # BIGINT keys beyond 2^32
        status = rnd.choices(["new", "paid", "shipped", "delivered", "cancelled"], [10, 20, 25, 33, 12])[0]
        placed = t0 + timedelta(seconds=rnd.randint(0, 330 * 86400), microseconds=rnd.randint(0, 999999))
        shipped = (placed + timedelta(hours=rnd.randint(4, 96), microseconds=rnd.randint(0, 999999))
                   if status in ("shipped", "delivered") else None)
        total = Decimal(0)
        for n in range(1, rnd.randint(1, 4) + 1):
            pid = rnd.randint(1, 150)
            qty = rnd.randint(1, 5)
            disc = None if rnd.random() < 0.7 else Decimal(rnd.choice([5, 10, 15, 50])) / 1
            lines.append((oid, n, pid, qty, prices[pid], disc))
            total += prices[pid] * qty * (1 - (disc or Decimal(0)) / 100)
        meta = None if i % 6 == 0 else json.dumps(
            {"channel": rnd.choice(["web", "app", "phone"]), "coupon": rnd.choice([None, "HERBST10", "ÉTÉ15"]),
             "ip": f"192.0.2.{rnd.randint(1, 254)}"}, ensure_ascii=False)
        orders.append((oid, rnd.randint(1, 600), status, total.quantize(Decimal("0.01")),
                       rnd.choice(["EUR"] * 5 + ["CHF", "PLN", "DKK"]), placed, shipped, rnd.choice(NOTES), meta))
    # a table without a key may hold identical rows: a few exact duplicates
    lines += lines[:15]
    return {"customers": customers, "products": products, "orders": orders, "order_lines": lines}


def ensure_loaded(sb: Sandbox, log=print) -> dict:
    """Load `shop` into the source once (and wait for the replica); later calls only read the record."""
    record = Path(sb.state_dir, SAMPLE_RECORD)
    if record.exists():
        return json.loads(record.read_text())
    if sb.source.sql("SHOW DATABASES LIKE %s", (DB,)):
        log(f"sample: {DB} exists but its load was never recorded as complete: loading it again")
    rows = _rows()
    conn = sb.source.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
            cur.execute(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            cur.execute(f"USE `{DB}`")
            for ddl in SCHEMA:
                cur.execute(ddl)
            for table, values in rows.items():  # one transaction: one GTID for all rows
                marks = ",".join(["%s"] * len(values[0]))
                cur.executemany(f"INSERT INTO `{table}` VALUES ({marks})", values)
        conn.commit()
    finally:
        conn.close()
    sb.sync_replica()
    counts = {t: sb.source.sql(f"SELECT COUNT(*) FROM `{DB}`.`{t}`")[0][0] for t in rows}
    data = {"database": DB, "rows": counts, "loaded_at": _utc_now(),
            "gtid_binlog_pos": sb.source.sql("SELECT @@gtid_binlog_pos")[0][0]}
    record.write_text(json.dumps(data, indent=2) + "\n")
    log(f"sample: loaded {DB} ({', '.join(f'{t} {n}' for t, n in counts.items())} rows)")
    return data


def _fmt(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def _utc_now() -> str:
    return _fmt(datetime.now(timezone.utc))


def bad_delete(sb: Sandbox, log=print) -> dict:
    """Run BAD_DELETE once and record its window; later calls return the record."""
    record = Path(sb.state_dir, DELETE_RECORD)
    if record.exists():
        return json.loads(record.read_text())
    conn = sb.source.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            # the day's work between the backup and the mistake: orders shipped, one transaction each (what a
            # point-in-time restore to just before the DELETE replays)
            cur.execute("SELECT id FROM shop.orders WHERE status = 'paid' ORDER BY id LIMIT %s", (WORK_BEFORE_DELETE,))
            for (oid,) in cur.fetchall():
                cur.execute("UPDATE shop.orders SET status = 'shipped' WHERE id = %s", (oid,))
                conn.commit()
            # the DELETE in a later second than that work (a stop_datetime is to the second)
            time.sleep(1.05 - (time.time() % 1.0))
            cur.execute("CHECKSUM TABLE shop.orders EXTENDED")
            checksum = cur.fetchone()[1]
            cur.execute("SELECT COUNT(*) FROM shop.orders")
            before_rows = cur.fetchone()[0]
            cur.execute("SHOW MASTER STATUS")
            file0, pos0 = cur.fetchone()[:2]
            cur.execute("SELECT @@gtid_binlog_pos, UTC_TIMESTAMP(6)")
            gtid0, t0 = cur.fetchone()
            deleted = cur.execute(BAD_DELETE)
            conn.commit()
            cur.execute("SELECT @@last_gtid, UTC_TIMESTAMP(6)")
            gtid, t1 = cur.fetchone()
            cur.execute("SHOW MASTER STATUS")
            file1, pos1 = cur.fetchone()[:2]
    finally:
        conn.close()
    sb.sync_replica()
    data = {"statement": BAD_DELETE, "rows_deleted": deleted, "orders_before": before_rows,
            "orders_checksum_before": checksum,
            "start_position": f"{file0}:{pos0}", "stop_position": f"{file1}:{pos1}",
            "gtid": gtid, "gtid_binlog_pos_before": gtid0,
            "start_utc": _fmt(t0), "stop_utc": _fmt(t1)}
    record.write_text(json.dumps(data, indent=2) + "\n")
    log(f"bad delete: {BAD_DELETE}: {deleted} rows, GTID {gtid}, binlog {file0}:{pos0} .. {file1}:{pos1}")
    return data


def write_defaults_file(sb: Sandbox) -> Path:
    """A MySQL option file (0600) with the backup user's login on the source: for mysql-flashback."""
    path = Path(sb.state_dir, DEFAULTS_FILE)
    Path(sb.state_dir, FLASHBACK_OUT).parent.mkdir(exist_ok=True)  # where the printed command writes
    text = (f"# written by scripts/demo.sh: the sandbox source's backup user (has REPLICATION SLAVE)\n"
            f"[client]\nuser={BACKUP_USER}\npassword={sb.backup_password}\nhost=127.0.0.1\n"
            f"port={sb.source.port}\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # also when it existed with other bits
    return path


def flashback_conf(rec: dict, instance: str = "sandbox") -> dict:
    """The mysql_flashback trigger conf that undoes the recorded DELETE (review only)."""
    return {"instance": instance, "databases": ["shop"], "tables": ["shop.orders"],
            "start_gtid": rec["gtid"], "stop_gtid": rec["gtid"], "types": ["delete"], "where": "row",
            "apply": False}


def flashback_command(sb: Sandbox, rec: dict, root: Path) -> str:
    """The mysql-flashback CLI line (run from the repository root) that writes the same undo SQL."""
    def rel(p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(root.resolve()))
        except ValueError:
            return str(p)
    args = ["bin/mysql-flashback", "generate", "--defaults-file", rel(Path(sb.state_dir, DEFAULTS_FILE)),
            "--databases", "shop", "--tables", "shop.orders", "--start-gtid", rec["gtid"], "--stop-gtid", rec["gtid"],
            "--types", "delete", "-o", rel(Path(sb.state_dir, FLASHBACK_OUT))]
    return " ".join(shlex.quote(a) for a in args)
