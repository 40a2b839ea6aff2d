"""python -m sandbox ACTION --dir DIR: the embedded sandbox of scripts/demo.sh.

  up           start the sandbox: resume it on its existing data when there is one (same ports
               when free), else create it; write the CMDB and the backup user's option file;
               load the sample database `shop` once
  down         stop it (the data stays), and end whatever process the demo left behind
  status       JSON: running, ports
  reset        stop it and delete its state (servers' data, storage, catalog, records)
  connections  the Airflow connections as JSON (0600 file, for `airflow connections import`)
  airflow-setup      set the connections and pools in a running Airflow (REST)
  airflow-run DAG    trigger a run of DAG and wait for it (REST)
  bad-delete         run the demo's bad DELETE once (after the first backup) and record it
  flashback          the mysql_flashback run for that DELETE, once (REST), review only
  restore            the mysql_restore_full run of the sandbox to its restore target, once (REST), and
                     CHECKSUM TABLE shop.orders on both
  pitr               the mysql_restore_pitr run of the sandbox to just before the bad DELETE (stop_datetime,
                     the DELETE's second), once (REST), and CHECKSUM TABLE shop.orders against its value
                     before the DELETE
  summary            the sample data, the bad DELETE and how to undo it (CLI and DAG)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from sandbox.servers import MARK_ENV, Sandbox, sweep

FLASHBACK_DAG = "mysql_flashback"
RESTORE_DAG = "mysql_restore_full"
RESTORE_RECORD = "restore.json"
PITR_DAG = "mysql_restore_pitr"
PITR_RECORD = "pitr.json"


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def up(state: Path, replica: bool, sample: bool) -> Sandbox:
    from sandbox import sample as sample_data
    if (state / "state.json").exists():
        sb = Sandbox.load(state)
        if sb.running():
            err(f"sandbox already running in {state}: source port {sb.source.port}, "
                f"replica port {sb.replica.port if sb.replica else '-'}, sshd port {sb.sshd.port}")
        else:
            sb = Sandbox.resume(state, log=lambda m: err(f"sandbox: {m}"))
            moved = "".join(f"; {k} moved {a} -> {b}" for k, (a, b) in sb.moved.items())
            err(f"sandbox resumed on its data in {state}: source port {sb.source.port}, "
                f"replica port {sb.replica.port if sb.replica else '-'}, sshd port {sb.sshd.port}{moved}")
    else:
        sb = Sandbox.create(state, replica=replica)
        err(f"sandbox created in {state}: source port {sb.source.port}, "
            f"replica port {sb.replica.port if sb.replica else '-'}, sshd port {sb.sshd.port}")
    if _write_if_changed(state / "cmdb.yaml", yaml.safe_dump(sb.cmdb(), sort_keys=False)):
        err(f"sandbox: wrote {state / 'cmdb.yaml'}")
    sample_data.write_defaults_file(sb)
    if sample:
        sample_data.ensure_loaded(sb, log=err)
    return sb


def connections(sb: Sandbox) -> dict[str, dict]:
    out = {}
    for conn_id, conn in sb.connections().items():
        c = dict(conn)
        if isinstance(c.get("extra"), dict):
            c["extra"] = json.dumps(c["extra"])
        out[conn_id] = c
    return out


def reset(state: Path) -> None:
    """Stop the sandbox and delete its state; the template (a clean initialised datadir) stays."""
    if (state / "state.json").exists():
        Sandbox.load(state).stop()
    _sweep(state)
    if not state.is_dir():
        err(f"nothing to remove: {state} does not exist")
        return
    for p in sorted(state.iterdir()):
        if p.name in ("template",):
            print(f"kept     {p}  (a clean initialised datadir, copied for new servers)", flush=True)
            continue
        print(f"removing {p}", flush=True)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _sweep(state: Path) -> None:
    mark = os.environ.get(MARK_ENV) or os.path.abspath(state)
    left = sweep(mark)
    if left:
        err(f"ended {len(left)} leftover process(es) of the demo:")
        for pid, cmd in sorted(left.items()):
            err(f"  {pid} {cmd[:160]}")


def _api(args):
    from sandbox.airflow_api import Airflow
    return Airflow(args.base_url or os.environ["AIRFLOW__API__BASE_URL"], args.airflow_home or os.environ["AIRFLOW_HOME"])


def flashback(state: Path, args) -> int:
    """Trigger mysql_flashback for the recorded DELETE once (review only) and record where it wrote."""
    from sandbox import sample as sample_data
    from sandbox.airflow_api import AirflowError
    rec_path = state / sample_data.DELETE_RECORD
    rec = json.loads(rec_path.read_text())
    if rec.get("flashback_run"):
        err(f"{FLASHBACK_DAG} ran already for the bad DELETE (run {rec['flashback_run']['run_id']})")
        return 0
    api = _api(args)
    run_id = f"demo_undo_bad_delete__{rec['gtid']}"
    err(f"triggering {FLASHBACK_DAG} (run {run_id}) for the bad DELETE, review only (apply: false)")
    try:
        api.wait_dag(FLASHBACK_DAG, 240)
        final = api.run(FLASHBACK_DAG, run_id, sample_data.flashback_conf(rec), timeout=args.timeout)
        err(f"run {run_id}: {final}")
        if final != "success":
            return 1
        result = api.xcom(FLASHBACK_DAG, run_id, "flashback")
    except AirflowError as exc:
        err(f"ERROR: {exc}")
        return 2
    rec["flashback_run"] = {"run_id": run_id, "stored": result.get("stored"), "rows": result.get("rows"),
                            "sha256": result.get("sha256")}
    rec_path.write_text(json.dumps(rec, indent=2) + "\n")
    return 0


def restore(state: Path, sb: Sandbox, args) -> int:
    """Restore the sandbox's newest backup to the sandbox's restore target once; record what came of it."""
    from sandbox.airflow_api import AirflowError
    from sandbox.servers import MariaDB
    rec_path = state / RESTORE_RECORD
    if rec_path.exists():
        err(f"{RESTORE_DAG} ran already (run {json.loads(rec_path.read_text())['run_id']})")
        return 0
    api = _api(args)
    run_id = f"demo_restore__{datetime_now()}"
    conf = {"instance": "sandbox", "target": "sandbox_target", "overwrite": True}
    err(f"triggering {RESTORE_DAG} (run {run_id}): the newest backup of sandbox to sandbox_target")
    try:
        from sandbox.servers import ADMIN_ADDED
        if (state / ADMIN_ADDED).exists():
            # the backups of a sandbox made before the restore target existed lack its admin login
            err("taking an incremental backup first: the sandbox's backups predate the restore target's admin login")
            if api.run("mysql_backup__sandbox", f"demo_before_restore__{datetime_now()}", {"kind": "incremental"},
                       timeout=args.timeout) != "success":
                return 1
            (state / ADMIN_ADDED).unlink()
        api.wait_dag(RESTORE_DAG, 240)
        final = api.run(RESTORE_DAG, run_id, conf, timeout=args.timeout)
        err(f"run {run_id}: {final}")
        if final != "success":
            return 1
        report = api.xcom(RESTORE_DAG, run_id, "report")
    except AirflowError as exc:
        err(f"ERROR: {exc}")
        return 2
    target = MariaDB("target", sb.target.base, sb.target.port, 0)
    query = "CHECKSUM TABLE shop.orders EXTENDED"
    rec = {"run_id": run_id, "report": report, "checksum_source": sb.source.sql(query)[0][1],
           "checksum_target": target.sql(query)[0][1]}
    rec_path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return 0


def pitr(state: Path, sb: Sandbox, args) -> int:
    """Restore the sandbox to just before its bad DELETE once (the archive rolls the backup forward)."""
    from sandbox import sample as sample_data
    from sandbox.airflow_api import AirflowError
    from sandbox.servers import MariaDB
    rec_path = state / PITR_RECORD
    if rec_path.exists():
        err(f"{PITR_DAG} ran already (run {json.loads(rec_path.read_text())['run_id']})")
        return 0
    delete_path = state / sample_data.DELETE_RECORD
    if not delete_path.exists():
        err("no bad DELETE recorded: nothing to restore to just before")
        return 0
    bad = json.loads(delete_path.read_text())
    api = _api(args)
    run_id = f"demo_pitr__{datetime_now()}"
    conf = {"instance": "sandbox", "target": "sandbox_target", "overwrite": True,
            "stop_datetime": bad["start_utc"][:19].replace("T", " ")}
    err(f"triggering {PITR_DAG} (run {run_id}): sandbox to just before the bad DELETE ({conf['stop_datetime']} UTC)")
    try:
        api.wait_dag(PITR_DAG, 240)
        final = api.run(PITR_DAG, run_id, conf, timeout=args.timeout)
        err(f"run {run_id}: {final}")
        if final != "success":
            return 1
        report = api.xcom(PITR_DAG, run_id, "report")
    except AirflowError as exc:
        err(f"ERROR: {exc}")
        return 2
    target = MariaDB("target", sb.target.base, sb.target.port, 0)
    rec = {"run_id": run_id, "conf": conf, "report": report, "checksum_before": bad.get("orders_checksum_before"),
           "checksum_target": target.sql("CHECKSUM TABLE shop.orders EXTENDED")[0][1],
           "checksum_source": sb.source.sql("CHECKSUM TABLE shop.orders EXTENDED")[0][1]}
    rec_path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return 0


def _pitr_summary(state: Path, pad: str) -> None:
    rec_path = state / PITR_RECORD
    if not rec_path.exists():
        return
    rec = json.loads(rec_path.read_text())
    r = rec.get("report") or {}
    rp = r.get("replay") or {}
    print(f"PITR:          {PITR_DAG} run {rec['run_id']}: {r.get('instance')} to stop_datetime "
          f"{rec['conf']['stop_datetime']} UTC (the bad DELETE's second, exclusive) -> {r.get('target')}, "
          f"{r.get('seconds')} s")
    reached = (f"point reached: GTID {rp.get('last_gtid')} at {rp.get('last_position')}, event time "
               f"{rp.get('last_event_at')}" if rp.get("transactions") else "nothing after the backup to replay")
    print(f"{pad}from backup {r.get('backup_label')}, {rp.get('transactions')} transaction(s) replayed "
          f"({rp.get('mode')}); {reached}")
    same = "equal" if rec["checksum_before"] == rec["checksum_target"] else "DIFFERENT"
    print(f"{pad}CHECKSUM TABLE shop.orders: before the DELETE {rec['checksum_before']}, restored "
          f"{rec['checksum_target']} ({same}); the source now {rec['checksum_source']}")


def datetime_now() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")


def _restore_summary(state: Path, sb: Sandbox, pad: str) -> None:
    rec_path = state / RESTORE_RECORD
    if not rec_path.exists():
        return
    rec = json.loads(rec_path.read_text())
    r = rec.get("report") or {}
    steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in r.get("steps") or [])
    print(f"Restore:       {RESTORE_DAG} run {rec['run_id']}: {r.get('instance')} backup {r.get('backup_label')} "
          f"({len(r.get('labels') or [])} link(s), finished {r.get('backup_finished_at')}) -> "
          f"{r.get('target')} {r.get('target_address')} {r.get('datadir')}, {r.get('seconds')} s")
    print(f"{pad}seconds per step: {steps}")
    same = "equal" if rec["checksum_source"] == rec["checksum_target"] else "DIFFERENT"
    print(f"{pad}CHECKSUM TABLE shop.orders: source {rec['checksum_source']}, restored {rec['checksum_target']} "
          f"({same}); the restored server runs with server_id {r.get('server_id')} until scripts/demo.sh stop")


def summary(state: Path, sb: Sandbox, args) -> None:
    """The sample data and flashback part of the demo's summary."""
    from sandbox import sample as sample_data
    pad = " " * 15
    loaded = state / sample_data.SAMPLE_RECORD
    if loaded.exists():
        rows = json.loads(loaded.read_text())["rows"]
        print(f"Sample data:   database {sample_data.DB} on the source 127.0.0.1:{sb.source.port} "
              f"(replicated): {', '.join(f'{t} {n}' for t, n in rows.items())} rows as loaded")
    rec_path = state / sample_data.DELETE_RECORD
    if not rec_path.exists():
        return
    rec = json.loads(rec_path.read_text())
    root = Path(args.root or Path(__file__).resolve().parent.parent)
    conf = sample_data.flashback_conf(rec)
    print(f"Bad DELETE:    {rec['statement']}  ({rec['rows_deleted']} rows, after the first backup)")
    print(f"{pad}GTID {rec['gtid']}; binlog {rec['start_position']} .. {rec['stop_position']}; "
          f"UTC {rec['start_utc']} .. {rec['stop_utc']}")
    print(f"Undo it, CLI:  (run from {root}; writes the undo SQL for review, applies nothing)")
    print(f"{pad}{sample_data.flashback_command(sb, rec, root)}")
    print(f"Undo it, DAG:  trigger {FLASHBACK_DAG} with this conf (apply false: review first):")
    print(f"{pad}{json.dumps(conf)}")
    run = rec.get("flashback_run")
    if run:
        print(f"{pad}run {run['run_id']} wrote {run.get('rows')} rows of undo SQL on the storage host:")
        print(f"{pad}{run['stored']}")
    _archive_summary(sb, pad)
    _restore_summary(state, sb, pad)
    _pitr_summary(state, pad)
    _drill_summary(pad)


def _drill_summary(pad: str) -> None:
    """The newest restore drill (mysql_restore_drill: daily, and once by the demo)."""
    try:
        from mysqlbackup.catalog import Catalog
        with Catalog() as cat:
            drills = cat.drills()
    except Exception as exc:  # noqa: BLE001 - a summary line, never a failure
        print(f"Drill:         not readable ({exc})")
        return
    if not drills:
        return
    d = drills[0]
    check = (d.get("details") or {}).get("check") or {}
    print(f"Drill:         mysql_restore_drill: {d['instance']} on {d['target']} {d['result']} ({d['kind']}, backup "
          f"{d['backup_label']}): RTO {d['rto_seconds']} s, RPO {d['rpo_seconds']} s (point {d['point_time']})")
    print(f"{pad}CHECK TABLE on {check.get('checked')} of {check.get('tables')} tables: "
          f"{'; '.join(check.get('check_errors') or []) or 'all OK'}; {check.get('rows')} rows")


def _archive_summary(sb: Sandbox, pad: str) -> None:
    """The binlog archive's state, as its supervisor (mysql_binlog__sandbox, every minute) last saw it."""
    plugins = str(Path(__file__).resolve().parent.parent / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    try:
        from mysqlbackup.catalog import Catalog
        with Catalog() as cat:
            state = cat.archive_state("sandbox")
            files = cat.binlog_files("sandbox")
    except Exception as exc:  # noqa: BLE001 - a summary line, never a failure
        print(f"Binlog archive: not readable ({exc})")
        return
    if not state or not state.get("details_json"):
        print("Binlog archive: not yet supervised (mysql_binlog__sandbox runs every minute)")
        return
    d = json.loads(state["details_json"])
    window = d.get("recovery_window") or {}
    print(f"Binlog archive: {len(files)} file(s) in {sb.storage_dir}/sandbox/binlog/, last event "
          f"{d.get('last_event_at')}, lag {d.get('lag_seconds')} s, {len(d.get('gaps') or [])} gap(s)")
    print(f"{pad}recovery window {window.get('earliest')} .. {window.get('latest')} (as of {d.get('measured_at')})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down", "status", "reset", "connections", "airflow-setup", "airflow-run",
                                       "bad-delete", "flashback", "restore", "pitr", "summary"])
    ap.add_argument("dag_id", nargs="?", help="with airflow-run: the DAG")
    ap.add_argument("--out", help="with connections: file to write (0600) for `airflow connections import`")
    ap.add_argument("--dir", default=".sandbox", help="state directory (default .sandbox)")
    ap.add_argument("--no-replica", action="store_true", help="with up, on creation: start the source only")
    ap.add_argument("--no-sample", action="store_true", help="with up: do not load the sample database")
    ap.add_argument("--base-url", help="Airflow's API (default $AIRFLOW__API__BASE_URL)")
    ap.add_argument("--airflow-home", help="default $AIRFLOW_HOME")
    ap.add_argument("--pools", help="with airflow-setup: the pools JSON of `python -m mysqlbackup pools`")
    ap.add_argument("--run-id", help="with airflow-run")
    ap.add_argument("--conf", default="{}", help="with airflow-run: the run's conf (JSON)")
    ap.add_argument("--timeout", type=float, default=1800, help="with airflow-run, flashback: seconds to wait")
    ap.add_argument("--root", help="with summary: the repository root the printed command runs from")
    args = ap.parse_args(argv)
    state = Path(args.dir).resolve()
    if args.action == "up":
        up(state, replica=not args.no_replica, sample=not args.no_sample)
        return 0
    if args.action == "reset":
        reset(state)
        return 0
    if args.action == "airflow-run":
        from sandbox.airflow_api import AirflowError
        api = _api(args)
        try:
            api.wait_dag(args.dag_id, 240)
            result = api.run(args.dag_id, args.run_id, json.loads(args.conf), timeout=args.timeout)
        except AirflowError as exc:
            err(f"ERROR: {exc}")
            return 2
        print(result)
        return 0 if result == "success" else 1
    if not (state / "state.json").exists():
        if args.action == "down":
            _sweep(state)
        err(f"no sandbox in {state}")
        return 0 if args.action == "down" else 1
    sb = Sandbox.load(state)
    if args.action == "down":
        sb.stop()
        _sweep(state)
        err("sandbox stopped")
    elif args.action == "status":
        print(json.dumps({"running": sb.running(), "source_port": sb.source.port,
                          "replica_port": sb.replica.port if sb.replica else None,
                          "sshd_port": sb.sshd.port}))
        return 0 if sb.running() else 1
    elif args.action == "connections":
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(connections(sb), f)
    elif args.action == "airflow-setup":
        api = _api(args)
        conns = [{"connection_id": cid, **c} for cid, c in connections(sb).items()]
        api.upsert("connections", conns)
        if args.pools:
            pools = [{"name": name, **{k: v for k, v in p.items() if k in ("slots", "description", "include_deferred")}}
                     for name, p in json.loads(Path(args.pools).read_text()).items()]
            api.upsert("pools", pools)
        err(f"Airflow: connections {', '.join(c['connection_id'] for c in conns)} and pools set")
    elif args.action == "bad-delete":
        from sandbox import sample as sample_data
        sample_data.bad_delete(sb, log=err)
    elif args.action == "flashback":
        return flashback(state, args)
    elif args.action == "restore":
        return restore(state, sb, args)
    elif args.action == "pitr":
        return pitr(state, sb, args)
    elif args.action == "summary":
        summary(state, sb, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
