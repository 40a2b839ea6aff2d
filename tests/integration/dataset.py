"""Test data covering the types a backup must carry exactly, and the restore proof."""
from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from sandbox import MariaDB, free_port

TABLES = ("typed", "no_pk", "wide_blob")

SCHEMA = [
    """CREATE TABLE typed (
         id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
         doc JSON NULL,
         amount DECIMAL(20,6) NULL,
         at DATETIME(6) NULL,
         payload BLOB NULL,
         state ENUM('new','paid','shipped','cancelled') NULL,
         note VARCHAR(200) CHARACTER SET utf8mb4 NULL,
         ratio DOUBLE NULL,
         flags SET('a','b','c') NULL
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE no_pk (
         k VARCHAR(40) CHARACTER SET utf8mb4 NULL,
         v INT NULL,
         t TIMESTAMP(3) NULL
       ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE wide_blob (
         id BIGINT PRIMARY KEY,
         data LONGBLOB NOT NULL
       ) ENGINE=InnoDB""",
]

NOTES = ["plain", "emoji 😀🚀", "accents éàü", "cjk 漢字", "quote ' and \\ backslash", "", None]


def load(server: MariaDB, db: str = "shop", rows: int = 300, blob_kib: int = 16, seed: int = 7) -> None:
    """Create ``db`` with every table in TABLES, filled deterministically."""
    rnd = random.Random(seed)
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{db}`")
            for ddl in SCHEMA:
                cur.execute(ddl)
            typed, nopk, blobs = [], [], []
            for i in range(rows):
                null = i % 11 == 0
                typed.append((
                    None if null else f'{{"i": {i}, "tags": ["x", "ü"], "nested": {{"ok": true}}}}',
                    None if null else f"{rnd.randint(-10**9, 10**9)}.{rnd.randint(0, 999999):06d}",
                    None if null else f"2024-0{1 + i % 9}-1{i % 10} 12:34:56.{rnd.randint(0, 999999):06d}",
                    None if null else rnd.randbytes(rnd.randint(0, 64)),
                    None if null else ("new", "paid", "shipped", "cancelled")[i % 4],
                    NOTES[i % len(NOTES)],
                    None if null else rnd.random() * 1e6,
                    None if null else ("", "a", "a,b", "a,b,c")[i % 4],
                ))
                nopk.append((None if i % 7 == 0 else f"key-{i % 50}", i % 13, "2025-03-01 00:00:00.123"))
            cur.executemany("INSERT INTO typed (doc, amount, at, payload, state, note, ratio, flags) "
                            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", typed)
            # duplicate rows on purpose: a table without a key may hold identical rows
            cur.executemany("INSERT INTO no_pk VALUES (%s,%s,%s)", nopk + nopk[:20])
            for i in range(max(1, rows // 30)):
                blobs.append((i, rnd.randbytes(blob_kib * 1024)))
            cur.executemany("INSERT INTO wide_blob VALUES (%s,%s)", blobs)
    finally:
        conn.close()


def checksums(server: MariaDB, db: str = "shop") -> dict[str, int]:
    rows = server.sql(f"CHECKSUM TABLE {', '.join(f'`{db}`.`{t}`' for t in TABLES)} EXTENDED")
    return {name.split(".", 1)[1]: value for name, value in rows}


def row_counts(server: MariaDB, db: str = "shop") -> dict[str, int]:
    return {t: server.sql(f"SELECT COUNT(*) FROM `{db}`.`{t}`")[0][0] for t in TABLES}


def _extract(src: Path, into: Path) -> None:
    into.mkdir(parents=True)
    decompress = {".zst": ["zstd", "-d", "-q", "-c"], ".gz": ["gzip", "-d", "-c"]}.get(src.suffix)
    with open(src, "rb") as f:
        if decompress:
            d = subprocess.Popen(decompress, stdin=f, stdout=subprocess.PIPE)
            subprocess.run(["mbstream", "-x", "-C", str(into)], stdin=d.stdout, check=True)
            d.stdout.close()
            assert d.wait() == 0
        else:
            subprocess.run(["mbstream", "-x", "-C", str(into)], stdin=f, check=True)


def _prepare(data: Path, incremental: Path | None = None) -> None:
    argv = ["mariabackup", "--no-defaults", "--prepare", f"--target-dir={data}", "--use-memory=128M"]
    if incremental is not None:
        argv.append(f"--incremental-dir={incremental}")
    res = subprocess.run(argv, capture_output=True, text=True)
    assert res.returncode == 0 and "completed OK!" in res.stderr, res.stderr[-2000:]


def restore(label_dir: Path, artifact: str, workdir: Path, server_id: int = 99,
            incrementals: list[tuple[Path, str]] = ()) -> tuple[MariaDB, subprocess.Popen]:
    """Extract, prepare and start a fresh mariadbd on a stored backup (the restore proof). With
    ``incrementals`` (label dir, artifact), in order: the full is prepared, then each is applied."""
    base = workdir / "restored"
    data = base / "data"
    _extract(label_dir / artifact, data)
    _prepare(data)
    for i, (inc_dir, inc_artifact) in enumerate(incrementals):
        inc = base / f"inc{i}"
        _extract(inc_dir / inc_artifact, inc)
        _prepare(data, inc)
        shutil.rmtree(inc)
    server = MariaDB("restored", str(base), free_port(), server_id)
    proc = server.start()
    return server, proc


def cleanup(server: MariaDB, proc: subprocess.Popen, workdir: Path) -> None:
    server.stop(proc)
    shutil.rmtree(workdir / "restored", ignore_errors=True)
