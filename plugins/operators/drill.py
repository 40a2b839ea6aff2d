"""Operators of the restore drills (``mysql_restore_drill``): plan, then per drill slot a real restore, checks, record.

The decisions live in ``mysqlbackup.drill`` (pure). The DAG (``dag_render.restore_drill_dag``) is static: one
task group per drill target and slot (``<target>_<n>``, ``platform.drill_max_per_target`` slots, run one
after the other on a target; targets in parallel), each the very tasks of a restore:

    plan_drills >> [<target>_1: plan >> check_target .. verify_restored >> fetch_binlogs >> replay >> finish
                    >> report >> check_restored >> record] >> <target>_2 ... >> drill_alerts

``plan_drills`` chooses the run's drills (``plan_drills``) and touches no host. A slot's ``plan`` takes its
drill (none: the slot is skipped) and plans it as a DBA's restore would be planned: a point-in-time
restore to the newest point the binlog archive holds (the newest usable chain rolled forward), or, for an
instance without an archive, a full restore of its newest usable backup; the target is always
overwritten (a drill target holds nothing else). ``check_restored`` runs ``CHECK TABLE`` on the restored
tables (all, or a sample of ``DRILL_CHECK_TABLES``) and counts their rows, and counts the source's where
it answers (the source has moved on since the point: a difference is reported, not failed).
``record`` (runs whatever happened before it) writes the drill row: backup, target, seconds per step and
in all (RTO), the point reached and its age when the drill started (RPO), the result. ``drill_alerts``
alerts the owner of every failed drill and of every instance whose last successful drill is older than its
``drill_every_days``, and fails the run so the platform owner hears too.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mysqlbackup.drill import candidates_from, drill_figures, plan_drills, stale
from mysqlbackup.restore import RestorePlan, RestoreRefused
from operators.backup import HostScriptOperator, mysql_login
from operators.restore import PlanBase, RestoreStep, restore_id_for

PLAN_TASK = "plan_drills"
DRILL_CHECK_TABLES = 200  # CHECK TABLE on every table up to this many, else on a sample of this many


def _utc(value: Any) -> datetime | None:
    from mysqlbackup.archive import to_datetime
    return to_datetime(value)


def _candidates(catalog: Any, cmdb: Any) -> list:
    """The planner's view of every instance: its last successful drill and its oldest usable backup."""
    oldest: dict[str, datetime] = {}
    for row in catalog.backups(status="usable"):
        when = _utc(row.get("finished_at"))
        if when is not None and (row["instance"] not in oldest or when < oldest[row["instance"]]):
            oldest[row["instance"]] = when
    return candidates_from(cmdb.instances, cmdb.restore_targets, catalog.last_successful_drills(), oldest)


class PlanDrillsOperator(HostScriptOperator):
    """Which instances this run drills, on which target (no host is touched)."""

    ui_color = "#eef7e8"

    def run(self, context: Any) -> dict:
        from mysqlbackup.cmdb import cmdb_path, load_cmdb
        cmdb = load_cmdb(cmdb_path())
        candidates = _candidates(self.catalog, cmdb)
        now = datetime.now(timezone.utc)
        plan = plan_drills(candidates, now, max_per_target=cmdb.drill_max_per_target)
        for line in plan.describe():
            self.log.info("%s", line)
        if plan.late:
            self.log.warning("the drill targets are too few this run: %s will be drilled after its deadline",
                             ", ".join(plan.late))
        return {"drills": [{"instance": d.instance, "target": d.target, "why": d.why} for d in plan.drills],
                "late": plan.late, "skipped": plan.skipped, "planned_at": now.isoformat()}


class PlanDrillOperator(PlanBase):
    """One slot's drill, planned as a restore (XCom: a RestorePlan, with a replay plan when there is one)."""

    ui_color = "#eef7e8"
    drill_target: str = ""
    slot: int = 0

    @classmethod
    def for_slot(cls, target: str, slot: int, **kwargs: Any):
        op = cls(**kwargs)
        op.drill_target = target
        op.slot = slot
        return op

    def run(self, context: Any) -> dict:
        drills = (context["ti"].xcom_pull(task_ids=PLAN_TASK) or {}).get("drills") or []
        mine = [d for d in drills if d["target"] == self.drill_target]
        if self.slot >= len(mine):
            raise AirflowSkipException(f"no drill for slot {self.slot + 1} of target {self.drill_target} this run")
        drill = mine[self.slot]
        run_id = str(context.get("run_id") or "")
        restore_id = restore_id_for(f"{run_id}/{self.task_id}")
        try:
            return self._plan(drill, run_id, restore_id)
        except Exception as exc:
            # a drill that cannot even be planned is a failed drill: recorded, so drill_alerts tells the owner
            now = datetime.now(timezone.utc)
            self.catalog.record_drill(drill_id=restore_id, instance=drill["instance"], target=self.drill_target,
                                      run_id=run_id, backup_label=None, kind="full", result="failed", started_at=now,
                                      rto_seconds=None, rpo_seconds=None, point_time=None,
                                      details={"why": drill.get("why")}, error=f"plan: {exc}")
            raise

    def _plan(self, drill: dict, run_id: str, restore_id: str) -> dict:
        from mysqlbackup.cmdb import cmdb_path, load_cmdb
        cmdb = load_cmdb(cmdb_path())
        inst = cmdb.by_name(drill["instance"])
        if inst is None:
            raise AirflowFailException(f"instance {drill['instance']} is no longer a valid CMDB row")
        from operators.replay import plan_pitr_xcom
        from operators.restore import plan_full_xcom
        notes: list[str] = []
        out = None
        state = self.catalog.archive_state(inst.name)
        from mysqlbackup.archive import archive_enabled, archived_until
        point = archived_until(state) if archive_enabled(inst) else None
        if point is not None:
            # everything archived: up to and including the last archived transaction (a stop_datetime is exclusive
            # and to the second: it would leave out what the archive got in its last second)
            last = (state or {}).get("last_gtid")
            stop = {"stop_gtid": last} if last else \
                {"stop_datetime": point.replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S")}
            params = {"instance": inst.name, "target": self.drill_target, "overwrite": True, "replay_mode": "applier",
                      **stop}
            try:
                out = plan_pitr_xcom(self, cmdb, params, restore_id, run_id, kind="drill")
            except RestoreRefused as exc:
                notes.append(f"no point-in-time drill ({exc}): the newest backup is restored instead")
                self.log.warning("%s", notes[-1])
        else:
            notes.append("no binlog archive: the newest backup is restored (no roll-forward)")
        if out is None:
            params = {"instance": inst.name, "target": self.drill_target, "overwrite": True}
            try:
                out = plan_full_xcom(self, cmdb, params, restore_id, run_id, kind="drill")
            except RestoreRefused as exc:
                raise AirflowFailException(f"drill of {inst.name} on {self.drill_target} refused: {exc}") from None
        out["drill"] = {"instance": inst.name, "target": self.drill_target, "why": drill["why"], "notes": notes,
                        "archived_until": point.isoformat() if point is not None else None,
                        "started_at": datetime.now(timezone.utc).isoformat()}
        return out


class CheckRestoredOperator(RestoreStep):
    """CHECK TABLE and row counts on the restored server; the source's counts where it answers."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        import pymysql
        t = plan.target_spec
        login = mysql_login(t["mysql_conn_id"])
        conn = pymysql.connect(host=t["host"], port=int(t["port"]), user=login.login, password=login.password or "",
                               connect_timeout=20, read_timeout=3600, autocommit=True)
        try:
            tables = _tables(conn)
            sample = tables if len(tables) <= DRILL_CHECK_TABLES else \
                sorted(random.Random(plan.restore_id).sample(tables, DRILL_CHECK_TABLES))
            bad = []
            with conn.cursor() as cur:
                for schema, table in sample:
                    cur.execute(f"CHECK TABLE {_q(schema)}.{_q(table)}")
                    for row in cur.fetchall():
                        if row[2] in ("error",) or (row[2] == "status" and str(row[3]).lower() != "ok"):
                            bad.append(f"{schema}.{table}: {row[3]}")
            counts = _counts(conn, sample)
        finally:
            conn.close()
        source = self._source_counts(plan, sample)
        differ = sorted(k for k in counts if source is not None and k in source and source[k] != counts[k])
        result = {"tables": len(tables), "checked": len(sample), "check_errors": bad, "rows": sum(counts.values()),
                  "source_reachable": source is not None, "count_differences": len(differ),
                  "differing_tables": differ[:20]}
        self.log.info("restored server: %d tables, %d checked, %d rows; CHECK TABLE errors: %s", len(tables),
                      len(sample), result["rows"], "; ".join(bad) or "none")
        if source is None:
            self.log.info("the source did not answer: its row counts are not compared")
        elif differ:
            self.log.info("%d table(s) count other rows on the source now (it has moved on since the point): %s",
                          len(differ), ", ".join(differ[:20]))
        if bad:
            raise AirflowFailException(f"CHECK TABLE failed on the restored server: {'; '.join(bad[:10])}")
        return result

    def _source_counts(self, plan: RestorePlan, sample: list) -> dict | None:
        from mysqlbackup.cmdb import cmdb_path, load_cmdb
        import pymysql
        try:
            inst = load_cmdb(cmdb_path()).by_name(plan.instance)
            login = mysql_login(inst.mysql_conn_id)
            conn = pymysql.connect(host=inst.host, port=inst.port, user=login.login, password=login.password or "",
                                   connect_timeout=10, read_timeout=600, autocommit=True)
        except Exception as exc:  # noqa: BLE001 - "where reachable"
            self.log.info("source %s not reachable for row counts: %s", plan.instance, exc)
            return None
        try:
            present = set(_tables(conn))
            return _counts(conn, [t for t in sample if t in present])
        finally:
            conn.close()


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _tables(conn) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                    "AND table_schema NOT IN ('mysql', 'performance_schema', 'sys', 'information_schema') "
                    "ORDER BY table_schema, table_name")
        return [(r[0], r[1]) for r in cur.fetchall()]


def _counts(conn, tables: list) -> dict[str, int]:
    out = {}
    with conn.cursor() as cur:
        for schema, table in tables:
            cur.execute(f"SELECT COUNT(*) FROM {_q(schema)}.{_q(table)}")
            out[f"{schema}.{table}"] = int(cur.fetchone()[0])
    return out


class RecordDrillOperator(HostScriptOperator):
    """The drill row: backup, target, RTO per step and in all, point reached and RPO, result (runs always)."""

    ui_color = "#eef7e8"
    plan_task_id: str = ""
    check_task_id: str = ""

    @classmethod
    def for_slot(cls, plan_task_id: str, check_task_id: str, **kwargs: Any):
        op = cls(**kwargs)
        op.plan_task_id = plan_task_id
        op.check_task_id = check_task_id
        return op

    def run(self, context: Any) -> dict | None:
        ti = context["ti"]
        raw = ti.xcom_pull(task_ids=self.plan_task_id)
        if not raw:
            raise AirflowSkipException("this slot had no drill")
        plan = RestorePlan.from_dict(raw)
        drill = raw.get("drill") or {}
        row = self.catalog.restore(plan.restore_id) or {}
        check = ti.xcom_pull(task_ids=self.check_task_id)
        replayed = (raw.get("replay") and (row.get("result") or {}).get("replay")) or None
        # the point the restored server is exact to: a replay that succeeded reached its recovery target (every
        # transaction before the archive's newest point replayed); without a replay, the backup's finish
        point = None
        if raw.get("replay"):
            if replayed:
                point = ((raw["replay"].get("stop") or {}).get("stop_datetime") or drill.get("archived_until")
                         or replayed.get("last_event_at"))
        else:
            point = plan.backup_set.chosen.finished_at
        started = _utc(drill.get("started_at")) or datetime.now(timezone.utc)
        figures = drill_figures(row.get("steps") or [], started, _utc(point))
        ok = row.get("status") == "succeeded" and bool(check) and not check.get("check_errors")
        error = None if ok else (row.get("error") or ("the restored server's checks failed" if row.get("status") ==
                                                      "succeeded" else f"restore {row.get('status') or 'not started'}"))
        self.catalog.record_drill(
            drill_id=plan.restore_id, instance=plan.instance, target=plan.target, run_id=str(context.get("run_id")),
            backup_label=plan.backup_set.chosen.label, kind="pitr" if raw.get("replay") else "full",
            result="succeeded" if ok else "failed", started_at=started, rto_seconds=figures["rto_seconds"],
            rpo_seconds=figures["rpo_seconds"], point_time=_utc(point),
            details={"steps": figures["steps"], "check": check, "replay": replayed, "notes": drill.get("notes"),
                     "why": drill.get("why"), "labels": plan.backup_set.labels}, error=error)
        self.log.info("drill of %s on %s: %s; RTO %.1f s; point %s; RPO %s s", plan.instance, plan.target,
                      "succeeded" if ok else f"FAILED ({error})", figures["rto_seconds"], figures["point_time"],
                      figures["rpo_seconds"])
        return {"instance": plan.instance, "result": "succeeded" if ok else "failed", **figures}


class DrillAlertsOperator(HostScriptOperator):
    """Alert the owner of each failed drill of this run and of each instance drilled too long ago."""

    ui_color = "#eef7e8"

    def run(self, context: Any) -> dict:
        from mysqlbackup.cmdb import cmdb_path, load_cmdb
        from operators.alerting import send_incident
        cmdb = load_cmdb(cmdb_path())
        run_id = str(context.get("run_id") or "")
        recorded = self.catalog.drills(run_id=run_id)
        failed = [d for d in recorded if d["result"] != "succeeded"]
        plan = context["ti"].xcom_pull(task_ids=PLAN_TASK) or {}
        seen = {(d["instance"], d["target"]) for d in recorded}
        failed += [{"instance": d["instance"], "target": d["target"], "error": "the drill stopped before it was recorded"}
                   for d in plan.get("drills") or [] if (d["instance"], d["target"]) not in seen]
        now = datetime.now(timezone.utc)
        old = stale(_candidates(self.catalog, cmdb), now)
        for d in failed:
            inst = cmdb.by_name(d["instance"])
            if inst is not None:
                send_incident(inst.name, inst.owner, inst.app, inst.alerts, "DRILL_FAILED", f"restore drill on {d['target']}",
                              f"the restore drill of {inst.name} on {d['target']} failed: {d.get('error')}", context)
        for s in old:
            inst = cmdb.by_name(s.instance)
            if inst is not None:
                send_incident(inst.name, inst.owner, inst.app, inst.alerts, "DRILL_STALE", "restore drill",
                              s.message(now), context)
        summary = {"failed": [d["instance"] for d in failed], "stale": [s.instance for s in old],
                   "late": plan.get("late") or [], "skipped": plan.get("skipped") or {}}
        self.log.info("drills: %s", json.dumps(summary))
        if failed or old:
            raise AirflowFailException("restore drills: " + "; ".join(
                [f"{d['instance']} failed on {d['target']}" for d in failed] + [s.message(now) for s in old]))
        return summary
