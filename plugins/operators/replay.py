"""Operators of the point-in-time restore (``mysql_restore_pitr``): plan, fetch_binlogs, replay.

The DAG is ``plan`` (this module: the recovery target checked, the backup chosen, the replay planned)
-> the full restore's middle steps (``operators.restore.restore_tasks``: check_target .. verify_restored,
which read the ``RestorePlan`` in ``plan``'s XCom) -> ``fetch_binlogs`` -> ``replay`` -> finish -> report.

The decisions live in ``mysqlbackup.replay`` (pure); the work on the target is ``replay.py`` (one ssh call
per verb). ``plan`` touches no host that it could change: it reads the CMDB and the catalog, and (read
only, from the worker) the source's database list when ``databases`` is given. Its XCom is the
``RestorePlan.as_dict()`` plus ``replay`` (``ReplayPlan.as_dict()``). ``fetch_binlogs`` streams each
archived file ``ssh storage binlog_archive.py fetch | ssh target replay.py receive`` (two OpenSSH processes
joined by a pipe on the worker; the sha256 is checked on the target against the catalog for a closed file
and against what the storage host sent, always). ``replay`` applies them from the backup's exact GTID to the
target and returns the point reached.
"""
from __future__ import annotations

import json
import time
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from mysqlbackup.replay import ReplayPlan, ReplayRequest, plan_pitr
from mysqlbackup.restore import RestorePlan, RestoreRefused
from operators.backup import mysql_login, raise_for
from operators.restore import PlanBase, RestoreStep

SCRIPT = "replay.py"


def replay_dir(plan: RestorePlan) -> str:
    """The replay's work directory on the target: inside the restore's (``finish`` removes it)."""
    return plan.target_spec["work_dir"].rstrip("/") + "/replay"


def _source_databases(inst) -> list[str] | None:
    """The source's databases (read only, from the worker); None when it cannot be asked."""
    try:
        import pymysql
        conn = mysql_login(inst.mysql_conn_id)
        db = pymysql.connect(host=conn.host or inst.host, port=int(conn.port or inst.port), user=conn.login,
                             password=conn.password or "", connect_timeout=5, read_timeout=10)
        try:
            with db.cursor() as cur:
                cur.execute("SHOW DATABASES")
                return [r[0] for r in cur.fetchall()]
        finally:
            db.close()
    except Exception:  # noqa: BLE001 - not known: the replay checks on the restored server
        return None


class PlanPitrOperator(PlanBase):
    """The run's params -> RestorePlan + ReplayPlan (XCom). A refusal fails the run naming the param."""

    ui_color = "#fdf0e6"

    def run(self, context: Any) -> dict:
        from mysqlbackup.cmdb import cmdb_path, load_cmdb
        params, conf, run_id, restore_id = self.run_input(context)
        cmdb = load_cmdb(cmdb_path())
        try:
            return plan_pitr_xcom(self, cmdb, {**params, **conf}, restore_id, run_id, given=conf.keys())
        except RestoreRefused as exc:  # a ReplayRefused, or the full restore's planner refusing
            self.catalog.refuse_restore(restore_id, params.get("instance"), params.get("target"), run_id, str(exc))
            self.log.error("point-in-time restore refused, nothing was touched: %s", exc)
            raise AirflowFailException(f"point-in-time restore refused (nothing was touched): {exc}") from None


def plan_pitr_xcom(op: PlanBase, cmdb: Any, params: dict, restore_id: str, run_id: str, given: Any = (),
                   kind: str = "pitr") -> dict:
    """Plan a point-in-time restore (raises ReplayRefused, touching nothing that could change), record it
    running; the plan's XCom (RestorePlan.as_dict() plus ``replay``). The drills plan with it too."""
    request = ReplayRequest.parse(params, given=given)
    inst = cmdb.by_name(request.instance)
    used = op.claim_target(cmdb.restore_target(request.target), restore_id)
    known = _source_databases(inst) if (inst is not None and request.databases) else None
    if request.databases and known is None:
        op.log.warning("the source's databases could not be read: databases is checked on the restored "
                       "server")
    plan, replay = plan_pitr(request, cmdb, op.catalog.backups(instance=request.instance),
                             op.catalog.binlog_files(request.instance),
                             op.catalog.archive_state(request.instance), restore_id, used,
                             known_databases=known)
    facts = op.catalog.facts_before(plan.instance, plan.backup_set.chosen.finished_at)
    data = (facts or {}).get("data_bytes")
    if isinstance(data, int) and data > 0:
        from dataclasses import replace
        plan = replace(plan, data_bytes=data)
    op.catalog.start_restore(plan.restore_id, plan.instance, plan.target, plan.backup_set.labels, run_id,
                             plan.server_id, plan.gtid, kind=kind)
    op.log.info("point-in-time restore %s of %s to target %s: %s", plan.restore_id, plan.instance, plan.target,
                replay.stop["describe"])
    op.log.info("backup: %s; set %s", replay.reason, " -> ".join(plan.backup_set.labels))
    op.log.info("replay (%s) from GTID %s, %d archived file(s) of server %s: %s", replay.mode,
                replay.start_gtid, len(replay.files), replay.identity,
                ", ".join(f["name"] for f in replay.files))
    op.log.info("server_id: %s", plan.server_id_reason)
    for note in (*plan.notes, *replay.notes):
        op.log.warning("%s", note)
    return {**plan.as_dict(), "replay": replay.as_dict()}


class ReplayStep(RestoreStep):
    """A step after the restore that also reads the replay plan."""

    def replay_plan(self, context: Any) -> dict:
        raw = context["ti"].xcom_pull(task_ids=self.plan_task_id) or {}
        if not raw.get("replay"):
            raise AirflowFailException(f"no replay plan in the XCom of {self.plan_task_id!r}")
        return raw["replay"]

    def run(self, context: Any) -> Any:
        plan = self.plan(context)
        raw = context["ti"].xcom_pull(task_ids=self.plan_task_id) or {}
        if raw.get("drill") and not raw.get("replay"):
            # a drill of an instance without a binlog archive restores its newest backup: nothing to replay
            self.log.info("this drill restores a backup without a roll-forward: nothing to replay")
            return {"replayed": False}
        started = time.monotonic()
        result = self.act(plan, self.replay_plan(context), context)
        self.record(plan.restore_id, time.monotonic() - started)
        return result

    def act(self, plan: RestorePlan, replay: dict, context: Any) -> Any:
        raise NotImplementedError

    def replay_call(self, plan: RestorePlan, *args: str, stdin: bytes | None = None, timeout: float = 3600,
                    what: str = "replay.py") -> dict:
        t = plan.target_spec
        argv = self.script(t["ssh_conn_id"], SCRIPT, *args, become=bool(t.get("become")),
                           python=t.get("python") or "python3")
        step = self.run_steps([(f"target {t['name']}", argv)], stdin=stdin, timeout=timeout)[0]
        raise_for(step, what)
        return step.result or {}


class FetchBinlogsOperator(ReplayStep):
    """Every archived file the replay reads, storage host -> target, checked on arrival."""

    def act(self, plan: RestorePlan, replay: dict, context: Any) -> dict:
        t = plan.target_spec
        conn_id, bdir = replay["archive_ssh_conn_id"], replay["archive_dir"]
        storage = plan.storage or {}
        work = replay_dir(plan)
        fetched, total = [], 0
        for f in replay["files"]:
            args = ["fetch", "--dir", bdir, "--file", f"{f['identity']}/{f['name']}", "--state", f["state"]]
            recv = ["receive", "--dir", work, "--name", f["name"]]
            if f["state"] in ("closed", "incomplete") and f.get("sha256"):
                args += ["--sha256", f["sha256"], "--size", str(f["size"])]
                recv += ["--sha256", f["sha256"], "--size", str(f["size"])]
            steps = [(f"storage {conn_id}", self.script(conn_id, "binlog_archive.py", *args,
                                                        become=bool(storage.get("become")),
                                                        python=storage.get("python") or "python3")),
                     (f"target {t['name']}", self.script(t["ssh_conn_id"], SCRIPT, *recv, become=bool(t.get("become")),
                                                         python=t.get("python") or "python3"))]
            sent, got = self.run_steps(steps, timeout=6 * 3600)
            raise_for(sent, f"fetching {f['identity']}/{f['name']} from the binlog archive")
            raise_for(got, f"receiving {f['name']} on the target")
            a, b = sent.result, got.result
            if (a.get("size"), a.get("sha256")) != (b.get("size"), b.get("sha256")):
                raise AirflowFailException(f"{f['name']} arrived as {b.get('size')} bytes with sha256 {b.get('sha256')}, "
                                           f"the storage host sent {a.get('size')} bytes with sha256 {a.get('sha256')}")
            total += int(b["size"])
            fetched.append({"name": f["name"], "state": a.get("state"), "size": b["size"], "sha256": b["sha256"]})
            self.log.info("fetched %s (%s, %s bytes, sha256 %s)", f["name"], a.get("state"), b["size"],
                          b["sha256"][:16])
        return {"files": fetched, "bytes": total, "dir": work}


class ReplayOperator(ReplayStep):
    """Apply the fetched binlogs from the backup's GTID to the recovery target; the point reached to XCom."""

    def act(self, plan: RestorePlan, replay: dict, context: Any) -> dict:
        t = plan.target_spec
        rp = ReplayPlan(**{**replay, "databases": tuple(replay.get("databases") or ()),
                           "source_server_ids": tuple(replay.get("source_server_ids") or ()),
                           "notes": tuple(replay.get("notes") or ())})
        stop = rp.stop
        stop_args = (["--stop-datetime", str(int(_epoch(stop["stop_datetime"])))] if stop["kind"] == "datetime" else
                     ["--stop-position", stop["stop_position"]] if stop["kind"] == "position" else
                     ["--stop-gtid", stop["stop_gtid"]])
        work = replay_dir(plan)
        args = ["replay", "--dir", work, "--files", ",".join(f["name"] for f in rp.files), "--host", t["host"],
                "--port", str(t["port"]), "--mode", rp.mode, "--start-gtid", rp.start_gtid, *stop_args]
        if rp.databases:
            args += ["--databases", ",".join(rp.databases)]
        result = self.replay_call(plan, *args, stdin=self.admin_login(plan), timeout=24 * 3600,
                                  what=f"the replay ({rp.mode})")
        self.replay_call(plan, "cleanup", "--dir", work, what="replay.py cleanup")
        reached = {k: result.get(k) for k in ("mode", "transactions", "first_gtid", "last_gtid", "last_position",
                                              "start_position", "last_event_at", "state_after", "gtid_slave_pos",
                                              "seconds", "transactions_per_second", "dropped_databases")}
        reached.update(backup_label=rp.backup_label, target=stop["describe"])
        self.log.info("point reached: %s transaction(s) replayed (%s) in %s s; last GTID %s at %s, event time %s; "
                      "the restored server's GTID position is %s", result.get("transactions"), rp.mode,
                      result.get("seconds"), result.get("last_gtid"), result.get("last_position"),
                      result.get("last_event_at"), result.get("gtid_slave_pos"))
        self.log.info("recovery target: %s; from backup %s (GTID %s)", stop["describe"], rp.backup_label,
                      rp.start_gtid)
        if result.get("dropped_databases"):
            self.log.warning("databases not replayed, dropped from the restored server: %s",
                             ", ".join(result["dropped_databases"]))
        row = self.catalog.restore(plan.restore_id) or {}
        with self.catalog.engine.begin() as conn:
            from mysqlbackup.catalog import restores_table as rt
            conn.execute(rt.update().where(rt.c.restore_id == plan.restore_id).values(
                result_json=json.dumps(dict(row.get("result") or {}, replay=reached), default=str)))
        return reached


def _epoch(text: str) -> float:
    from mysqlbackup.archive import to_datetime
    return to_datetime(text).timestamp()


def replay_tasks(plan_task_id: str = "plan", alert: Any = None) -> tuple[Any, Any]:
    """``fetch_binlogs >> replay`` in the current DAG (their failure aborts the restore: the target stays
    stopped and marked not restored)."""
    from datetime import timedelta

    from operators.restore import RestoreFailureCallback
    fetch = FetchBinlogsOperator.for_plan(plan_task_id, task_id="fetch_binlogs",
                                          execution_timeout=timedelta(hours=12),
                                          on_failure_callback=RestoreFailureCallback(plan_task_id, abort=True,
                                                                                     alert=alert))
    replay = ReplayOperator.for_plan(plan_task_id, task_id="replay", execution_timeout=timedelta(hours=24),
                                     on_failure_callback=RestoreFailureCallback(plan_task_id, abort=True, alert=alert))
    fetch >> replay
    return fetch, replay
