"""Incremental against full: the same dataset, 5% of its rows changed in between, in one run.

On one private sandbox (MariaDB source + GTID replica + sshd on loopback), through the real DAG
(``dag.test()`` of ``mysql_backup__sandbox``):

1. load ``--gib`` GiB (bench/orchestration_overhead.py's dataset: LONGBLOB rows of 1-4 MiB, half
   compressible text, half random) and take a full (``kind=full``);
2. change ``--changed`` (default 5%) of the rows (a new value for every column of the row);
3. take an incremental (``kind=incremental``) on that full.

Printed: each backup's stored size and the times of its backup and verify tasks, and the
incremental's size as a share of the full's. Target: under 15%. The incremental's verify
prepares the whole chain (the full, then the incremental), as a restore does, so it is expected
to take longer than the full's.

    .venv/bin/python bench/incremental_bench.py --gib 0.05     # smoke run
    .venv/bin/python bench/incremental_bench.py [--gib 1.0] [--changed 0.05] [--compress zstd] [--keep]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "plugins"),
                str(Path(__file__).resolve().parents[1])]

from orchestration_overhead import (MIB, airflow_db_migrate, fd_redirect, hermetic_airflow_env,  # noqa: E402
                                    load_dataset, out, say, write_cmdb)

TARGET = 0.15


def change_rows(sb, share: float, db: str = "bench", seed: int = 5) -> int:
    """Give ``share`` of the rows of every table a new payload (as big as the old one)."""
    rnd = random.Random(seed)
    conn = sb.source.connect()
    changed = 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.TABLES WHERE table_schema = %s", (db,))
            for (table,) in cur.fetchall():
                cur.execute(f"SELECT id, LENGTH(data) FROM `{db}`.`{table}`")
                rows = cur.fetchall()
                for rid, size in rnd.sample(rows, max(1, round(len(rows) * share))):
                    cur.execute(f"UPDATE `{db}`.`{table}` SET data = %s, created = NOW() WHERE id = %s",
                                (os.urandom(int(size)), rid))
                    changed += 1
    finally:
        conn.close()
    sb.sync_replica(timeout=600)
    return changed


def run_dag(kind: str, log: Path) -> dict:
    from airflow.dag_processing.dagbag import BundleDagBag
    dags = Path(__file__).resolve().parents[1] / "dags"
    with fd_redirect(log):
        bag = BundleDagBag(dag_folder=str(dags), bundle_path=str(dags), bundle_name="dags-folder")
        dr = bag.dags["mysql_backup__sandbox"].test(run_conf={"kind": kind})
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    if dr.state != "success":
        raise SystemExit(f"the {kind} run failed: {({k: t.state for k, t in tis.items()})}; see {log}")
    return {k: (t.end_date - t.start_date).total_seconds() for k, t in tis.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--changed", type=float, default=0.05, help="share of the rows changed (default 0.05)")
    ap.add_argument("--compress", default="zstd", choices=("none", "gzip", "zstd"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from sandbox import Sandbox
    tmp = Path(tempfile.mkdtemp(prefix="mbk-incr-"))
    sb = Sandbox.create(tmp / "sb", replica=True)
    try:
        hermetic_airflow_env(tmp, sb)
        write_cmdb(tmp, sb, args.compress)
        airflow_db_migrate()
        data = load_dataset(sb, args.gib)
        say(f"loaded {data['payload_bytes'] / MIB:.0f} MiB in {data['rows']} rows")
        full_t = run_dag("full", tmp / "airflow-output.log")
        changed = change_rows(sb, args.changed)
        say(f"changed {changed} of {data['rows']} rows")
        inc_t = run_dag("incremental", tmp / "airflow-output.log")
        from mysqlbackup.catalog import Catalog
        rows = sorted(Catalog().backups(instance="sandbox", status="usable"), key=lambda r: r["label"])
        full, inc = rows[0], rows[-1]
        assert (full["kind"], inc["kind"]) == ("full", "incremental"), [r["kind"] for r in rows]
        ratio = inc["size_bytes"] / full["size_bytes"]
        out(f"dataset: {data['payload_bytes'] / MIB:.0f} MiB in {data['rows']} rows; {changed} rows "
            f"({args.changed:.0%}) changed between the two backups; compress {args.compress}")
        out(f"{'':14}{'stored':>12}{'backup task':>14}{'verify task':>14}")
        for name, row, t in (("full", full, full_t), ("incremental", inc, inc_t)):
            out(f"{name:14}{row['size_bytes'] / MIB:>9.1f} MiB{t['backup']:>12.2f} s{t['verify_backup']:>12.2f} s")
        out(f"incremental / full size = {ratio:.3f} (target under {TARGET}: {'met' if ratio < TARGET else 'NOT met'}); "
            f"backup time ratio {inc_t['backup'] / full_t['backup']:.2f}")
        out("the incremental's verify prepares the chain (full, then incremental), as a restore does")
        return 0
    finally:
        sb.stop()
        if args.keep:
            out(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
