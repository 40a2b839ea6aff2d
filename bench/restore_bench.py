"""Full restore: our DAG's steps against the bare tool steps typed by hand, on one backup chain, in one run.

On one private sandbox (MariaDB source + GTID replica + sshd on loopback, and the sandbox's restore target):

1. load ``--gib`` GiB (bench/orchestration_overhead.py's dataset), take a full, change ``--changed`` of the
   rows, take an incremental, change again, take a second incremental (the real backup DAG);
2. then, ``--rounds`` times in turn (A B A B ...), restore that chain to the target:
   - bare: what a DBA types, over the same ssh: stop the server, empty the datadir, for each link
     ``ssh storage cat ARTIFACT | ssh target 'zstd -dc | mbstream -x'`` (the path the DAG's transfer takes:
     storage -> worker -> target; plain ssh, its default cipher), ``mariabackup --prepare`` (then ``--prepare --incremental-dir`` for
     each incremental), ``mariabackup --copy-back``, ``chown -R``, start the server and wait until it answers;
   - ours: ``mysql_restore_full`` with ``dag.test()`` (overwrite true), timed from the start of
     ``check_target`` to the end of ``verify_restored`` (the steps the bare restore also does, plus the
     checks), and the whole run (plan to report) too.

Printed: every round's seconds, the medians and the ratio ours / bare. Target: at most 1.15.

    .venv/bin/python bench/restore_bench.py --gib 0.05 --rounds 1     # smoke run
    .venv/bin/python bench/restore_bench.py [--gib 0.5] [--rounds 2] [--changed 0.05] [--keep]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "plugins"),
                str(Path(__file__).resolve().parents[1])]

from incremental_bench import change_rows, run_dag as backup_dag  # noqa: E402
from orchestration_overhead import (MIB, airflow_db_migrate, fd_redirect, hermetic_airflow_env,  # noqa: E402
                                    load_dataset, out, remote, say, write_cmdb)

TARGET = 1.15


def bare_restore(sb, links: list[dict], work: Path) -> dict:
    """The restore typed by hand, each step over ssh to the target (the sandbox host); seconds per step."""
    t = sb.target
    ctl = sb.target_row()
    steps: dict[str, float] = {}

    def sh(name: str, command: str, pipe_from: str | None = None) -> None:
        t0 = time.monotonic()
        if pipe_from is None:
            r = subprocess.run(remote(sb, command), capture_output=True, text=True)
        else:  # storage -> worker -> target, as the DAG moves it (here both ends are the sandbox's host)
            src = subprocess.Popen(remote(sb, pipe_from), stdout=subprocess.PIPE)
            r = subprocess.run(remote(sb, command), stdin=src.stdout, capture_output=True, text=True)
            src.stdout.close()
            if src.wait() != 0:
                raise SystemExit(f"bare {name}: {pipe_from} failed")
        if r.returncode != 0:
            raise SystemExit(f"bare {name} failed ({r.returncode}): {command}\n{r.stderr[-2000:]}")
        steps[name] = steps.get(name, 0.0) + time.monotonic() - t0

    t0 = time.monotonic()
    sh("stop", ctl["stop_command"])
    sh("stop", f"rm -rf {t.datadir} {work} && mkdir -p {work}")
    for n, link in enumerate(links):
        sh("transfer", f"mkdir {work}/{n} && zstd -dc | mbstream -x -C {work}/{n}",
           pipe_from=f"cat {link['storage_path']}/{link['artifact']}")
    sh("prepare", f"mariabackup --no-defaults --prepare --target-dir={work}/0 --use-memory=256M")
    for n in range(1, len(links)):
        sh("prepare", f"mariabackup --no-defaults --prepare --target-dir={work}/0 --incremental-dir={work}/{n} "
                      "--use-memory=256M")
    sh("copy_back", f"mariabackup --no-defaults --copy-back --target-dir={work}/0 --datadir={t.datadir} --parallel=2")
    sh("chown", f"chown -R $(id -u):$(id -g) {t.datadir}")
    sh("start", f"MYSQL_RESTORE_SERVER_ID=4100000001 {ctl['start_command']}")
    steps["total"] = time.monotonic() - t0
    sh("cleanup", f"rm -rf {work}")
    return steps


def our_restore(log: Path) -> dict:
    from airflow.dag_processing.dagbag import BundleDagBag
    dags = Path(__file__).resolve().parents[1] / "dags"
    with fd_redirect(log):
        bag = BundleDagBag(dag_folder=str(dags), bundle_path=str(dags), bundle_name="dags-folder")
        dr = bag.dags["mysql_restore_full"].test(run_conf={"instance": "sandbox", "target": "sandbox_target",
                                                            "overwrite": True})
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    if dr.state != "success":
        raise SystemExit(f"the restore run failed: {({k: t.state for k, t in tis.items()})}; see {log}")
    out_ = {k: (t.end_date - t.start_date).total_seconds() for k, t in tis.items() if t.start_date}
    out_["steps"] = (tis["verify_restored"].end_date - tis["check_target"].start_date).total_seconds()
    out_["run"] = (tis["report"].end_date - tis["plan"].start_date).total_seconds()
    return out_


def checksum(srv) -> list:
    return srv.sql("CHECKSUM TABLE " + ", ".join(f"bench.`{r[0]}`" for r in srv.sql(
        "SELECT table_name FROM information_schema.TABLES WHERE table_schema='bench' ORDER BY 1")) + " EXTENDED")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=0.5)
    ap.add_argument("--changed", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from sandbox import MariaDB, Sandbox
    tmp = Path(tempfile.mkdtemp(prefix="mbk-rbench-"))
    sb = Sandbox.create(tmp / "sb", replica=True)
    log = tmp / "airflow-output.log"
    try:
        hermetic_airflow_env(tmp, sb)
        write_cmdb(tmp, sb, "zstd")
        airflow_db_migrate()
        data = load_dataset(sb, args.gib)
        say(f"loaded {data['payload_bytes'] / MIB:.0f} MiB in {data['rows']} rows")
        backup_dag("full", log)
        for _ in range(2):
            change_rows(sb, args.changed)
            backup_dag("incremental", log)
        from mysqlbackup.catalog import Catalog
        links = sorted(Catalog().backups(instance="sandbox", status="usable"), key=lambda r: r["label"])
        assert [r["kind"] for r in links] == ["full", "incremental", "incremental"], [r["kind"] for r in links]
        want = checksum(sb.source)
        target = MariaDB("target", sb.target.base, sb.target.port, 0)
        bare, ours = [], []
        for n in range(args.rounds):
            say(f"round {n + 1}: bare")
            bare.append(bare_restore(sb, links, Path(sb.target.base) / "bare-work"))
            assert checksum(target) == want, "the bare restore differs from the source"
            say(f"round {n + 1}: ours ({bare[-1]['total']:.1f} s bare)")
            ours.append(our_restore(log))
            assert checksum(target) == want, "our restore differs from the source"
            say(f"round {n + 1}: ours {ours[-1]['steps']:.1f} s")
        sb.stop_target()
        stored = sum(r["size_bytes"] for r in links)
        out(f"chain: a full + 2 incrementals of {data['payload_bytes'] / MIB:.0f} MiB of data "
            f"({stored / MIB:.0f} MiB stored, zstd); {args.rounds} round(s), bare and ours in turn; CHECKSUM TABLE "
            "equal to the source after every restore")
        for n, (b, o) in enumerate(zip(bare, ours), 1):
            out(f"round {n}: bare {b['total']:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in b.items()
                                                                 if k not in ("total", "cleanup")) + ")")
            out(f"         ours {o['steps']:.2f} s check_target..verify_restored, {o['run']:.2f} s the whole run ("
                + ", ".join(f"{k} {o[k]:.2f}" for k in ("check_target", "stop_target", "transfer", "prepare",
                                                         "copy_back", "fix_ownership", "start_target",
                                                         "verify_restored")) + ")")
        b_med = statistics.median(b["total"] for b in bare)
        o_med = statistics.median(o["steps"] for o in ours)
        r_med = statistics.median(o["run"] for o in ours)
        ratio = o_med / b_med
        # the tool steps alone, step by step: prepare, copy-back (+ chown / fix-ownership), start
        pairs = (("prepare", ("prepare",), ("prepare",)), ("copy-back + ownership", ("copy_back", "chown"),
                                                          ("copy_back", "fix_ownership")),
                 ("start", ("start",), ("start_target",)), ("transfer", ("transfer",), ("transfer",)),
                 ("stop", ("stop",), ("stop_target",)))
        for name, b_keys, o_keys in pairs:
            b_s = statistics.median(sum(b[k] for k in b_keys) for b in bare)
            o_s = statistics.median(sum(o[k] for k in o_keys) for o in ours)
            out(f"  {name:24} bare {b_s:6.2f} s  ours {o_s:6.2f} s  ratio {o_s / b_s:.2f}")
        out(f"median: bare {b_med:.2f} s, ours {o_med:.2f} s (whole run {r_med:.2f} s); ours / bare = {ratio:.3f} "
            f"(target at most {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}); whole run / bare = "
            f"{r_med / b_med:.3f}")
        return 0
    finally:
        sb.stop()
        if args.keep:
            out(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
