"""DAG parse cost: time to build every DAG from a generated CMDB, after Airflow is imported.

Each size runs in a fresh interpreter: import Airflow and our modules first (not counted),
then time the DAG file itself (load the CMDB, render every DAG) the way the DAG processor
executes it. Target: under 1 ms per instance, growing linearly.

    .venv/bin/python bench/parse_cost.py [--sizes 500,1000,2000,3000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import importlib.util, json, os, sys, time
sys.path[:0] = [os.path.join(sys.argv[1], "plugins")]
t_import = time.perf_counter()
import airflow.sdk  # noqa: F401
import dag_render  # noqa: F401  (our modules: imported once per process by the processor too)
t_ready = time.perf_counter()
spec = importlib.util.spec_from_file_location("bench_dagfile", os.path.join(sys.argv[1], "dags", "mysql_backup.py"))
mod = importlib.util.module_from_spec(spec)
t0 = time.perf_counter()
spec.loader.exec_module(mod)
t1 = time.perf_counter()
dags = [v for v in vars(mod).values() if type(v).__name__ == "DAG"]
tasks = sum(len(d.tasks) for d in dags)
print(json.dumps({"import_s": t_ready - t_import, "build_s": t1 - t0, "dags": len(dags), "tasks": tasks}))
"""


def make_cmdb(path: Path, n: int) -> None:
    rows = []
    for i in range(n):
        primary = i % 3 == 0
        base = i - i % 3
        rows.append({"name": f"db{i:05d}", "host": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "port": 3306,
                     "role": "primary" if primary else "replica", "flavor": "mariadb",
                     "ssh_conn_id": f"ssh_db{i:05d}", "mysql_conn_id": "mysql_backup",
                     "owner": f"team{i % 40}@example.internal", "app": f"app{i % 200}",
                     **({} if primary else {"replica_of": f"db{base:05d}"})})
    doc = {"defaults": {"storage": {"ssh_conn_id": "store1", "base_dir": "/srv/backups"},
                        "policy": {"full_schedule": "0 2 * * *"}},
           "storages": [{"ssh_conn_id": "store1", "max_concurrent_backups": 8}],
           "instances": rows}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def measure(n: int, workdir: Path) -> dict:
    cmdb = workdir / f"cmdb-{n}.yaml"
    make_cmdb(cmdb, n)
    env = dict(os.environ, MYSQL_BACKUP_CMDB=str(cmdb), AIRFLOW_HOME=str(workdir / "airflow"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500,1000,2000,3000")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; the best is reported")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in sizes:
            runs = [measure(n, Path(tmp)) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["build_s"])
            results[n] = best
            print(f"{n:>6} instances: {best['dags']} DAGs, {best['tasks']} tasks, build {best['build_s']:.3f} s "
                  f"= {best['build_s'] / n * 1000:.3f} ms/instance (airflow + modules import {best['import_s']:.2f} s, "
                  f"not counted)")
    lo, hi = sizes[0], sizes[-1]
    per_lo = results[lo]["build_s"] / lo
    per_hi = results[hi]["build_s"] / hi
    print(f"linearity: per-instance cost at {hi} / at {lo} = {per_hi / per_lo:.2f} (1.00 is perfectly linear)")
    verdict = "met" if per_hi * 1000 < 1.0 else "NOT met"
    print(f"target < 1 ms/instance at {hi}: {per_hi * 1000:.3f} ms -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
