"""Operators of the full restore (``mysql_restore_full``), one task per step: the run reads as the restore log.

The decisions live in ``mysqlbackup.restore`` (pure); the work on the target is ``target.py`` (one ssh call
per verb); these operators only say what each task means. ``plan`` turns the run's params into a
``RestorePlan`` (XCom, ``RestorePlan.as_dict``) and touches no host; every later task reads that plan
and nothing else (never the params): the target's host, datadir, work directory, commands and
connections all come from the CMDB, through the plan.

Reuse (the point-in-time DAG builds on the same steps)::

    with DAG(...):
        plan = PlanRestoreOperator(task_id="plan")          # or a planner of its own: any task whose
        first, last = restore_tasks(plan_task_id="plan")    # XCom is a RestorePlan.as_dict()
        finish, report = finish_tasks(plan_task_id="plan")
        plan >> first; last >> <replay task> >> finish

``restore_tasks`` creates ``check_target >> stop_target >> transfer >> prepare >> copy_back >>
fix_ownership >> start_target >> verify_restored`` in the current DAG and returns (first, last);
``finish_tasks`` creates ``finish >> report`` and returns both. A planner of its own can subclass
``PlanBase`` (``run_input``: params, conf, run id, restore id; ``claim_target``: abandoned rows marked
failed, the server_ids in use). A task inserted between them (a replay)
should take ``on_failure_callback=RestoreFailureCallback(plan_task_id, abort=True)`` and may call
``RestoreStep.record`` (or subclass ``RestoreStep``) so that its seconds appear in the report.

Safety: from ``stop_target`` on, the target carries the marker ``mysql-restore.NOT-RESTORED`` in its
datadir until ``finish``. The failure callback of every task after ``stop_target`` runs ``target.py
abort`` (the server is stopped when one runs on the marked datadir, the marker stays, the work
directory goes) and marks the restores row failed; a run killed without its callback leaves a
``running`` row, which the next run's ``plan`` marks failed, and a marked datadir, which the next
restore replaces.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mysqlbackup.restore import RestorePlan, RestoreRefused, RestoreRequest, compare_restored, plan_restore, \
    target_problems
from mysqlbackup.text import capped
from operators.backup import HostScriptOperator, mysql_login, raise_for

log = logging.getLogger(__name__)

TARGET_SCRIPT = "target.py"
# the middle steps, in order (task ids)
RESTORE_STEPS = ("check_target", "stop_target", "transfer", "prepare", "copy_back", "fix_ownership", "start_target",
                 "verify_restored")
FINISH_STEPS = ("finish", "report")


def restore_id_for(run_id: str, now: datetime | None = None) -> str:
    """A restore's id: the time its plan ran and a digest of the run id (safe in a marker, a path, a log)."""
    when = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{when}-{hashlib.sha256(str(run_id).encode()).hexdigest()[:10]}"


def _login_line(conn_id: str) -> bytes:
    conn = mysql_login(conn_id)
    return (json.dumps({"user": conn.login, "password": conn.password or ""}) + "\n").encode()


class RestoreStep(HostScriptOperator):
    """Base of the steps after ``plan``: reads the RestorePlan from XCom, runs ``do``, records its seconds."""

    ui_color = "#fdf0e6"
    plan_task_id: str = "plan"

    @classmethod
    def for_plan(cls, plan_task_id: str = "plan", **kwargs: Any):
        op = cls(**kwargs)
        op.plan_task_id = plan_task_id
        return op

    def plan(self, context: Any) -> RestorePlan:
        raw = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        if not raw:
            raise AirflowFailException(f"no restore plan in the XCom of {self.plan_task_id!r}")
        return RestorePlan.from_dict(raw)

    def run(self, context: Any) -> Any:
        plan = self.plan(context)
        started = time.monotonic()
        result = self.do(plan, context)
        self.record(plan.restore_id, time.monotonic() - started)
        return result

    def sibling(self, task_id: str) -> str:
        """The id of a task of this restore (in a drill, restores run in task groups: ``<group>.<task>``)."""
        group = self.task_id.rpartition(".")[0]
        return f"{group}.{task_id}" if group else task_id

    def record(self, restore_id: str, seconds: float) -> None:
        self.catalog.restore_step(restore_id, self.task_id.rpartition(".")[2], seconds)  # in a drill: no group

    def do(self, plan: RestorePlan, context: Any) -> Any:
        raise NotImplementedError

    # --- target.py calls

    def target_call(self, plan: RestorePlan, verb: str, *args: str, stdin: bytes | None = None,
                    timeout: float | None = 3600, what: str | None = None) -> dict:
        t = plan.target_spec
        argv = self.script(t["ssh_conn_id"], TARGET_SCRIPT, verb, *args, become=bool(t.get("become")),
                           python=t.get("python") or "python3")
        step = self.run_steps([(f"target {t['name']}", argv)], stdin=stdin, timeout=timeout)[0]
        raise_for(step, what or f"target.py {verb}")
        return step.result or {}

    @staticmethod
    def where(plan: RestorePlan, work: bool = True, server: bool = True) -> list[str]:
        t = plan.target_spec
        args = ["--datadir", t["datadir"]]
        if work:
            args += ["--work", t["work_dir"]]
        if server:
            args += ["--host", t["host"], "--port", str(t["port"])]
        return args

    @staticmethod
    def ids(plan: RestorePlan) -> list[str]:
        return ["--restore-id", plan.restore_id]

    def admin_login(self, plan: RestorePlan) -> bytes:
        return _login_line(plan.target_spec["mysql_conn_id"])


class PlanBase(HostScriptOperator):
    """What every restore planner does before its own decisions (no host is touched)."""

    ui_color = "#fdf0e6"

    @staticmethod
    def run_input(context: Any) -> tuple[dict, dict, str, str]:
        """(params, the run's conf as given, run_id, this restore's id)."""
        params = dict(context.get("params") or {})
        conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
        run_id = str(context.get("run_id") or "")
        return params, conf, run_id, restore_id_for(run_id)

    def claim_target(self, target: Any, restore_id: str) -> dict[int, str]:
        """Mark failed the rows a dead run left running on ``target`` (one restore at a time); return the
        server_ids in use (CMDB instances as the catalog last saw them)."""
        if target is not None:
            for old in self.catalog.abandon_restores(target.name, keep=restore_id):
                self.log.warning("restore %s to %s was left running by a run that stopped: marked failed", old,
                                 target.name)
        return {sid: f"the CMDB instance {name} (as last seen)" for name, sid in self.catalog.latest_server_ids().items()}


class PlanRestoreOperator(PlanBase):
    """The run's params -> a RestorePlan (XCom). Touches no host: only the CMDB file and the catalog.

    A refusal is recorded in the catalog (``refused``) and fails the run naming the param."""

    def run(self, context: Any) -> dict:
        from mysqlbackup.cmdb import cmdb_path, load_cmdb
        params, conf, run_id, restore_id = self.run_input(context)
        cmdb = load_cmdb(cmdb_path())
        try:
            return plan_full_xcom(self, cmdb, {**params, **conf}, restore_id, run_id, given=conf.keys())
        except RestoreRefused as exc:
            self.catalog.refuse_restore(restore_id, params.get("instance"), params.get("target"), run_id, str(exc))
            self.log.error("restore refused, nothing was touched: %s", exc)
            raise AirflowFailException(f"restore refused (nothing was touched): {exc}") from None


def plan_full_xcom(op: PlanBase, cmdb: Any, params: dict, restore_id: str, run_id: str, given: Any = (),
                   kind: str = "full") -> dict:
    """Plan a full restore (raises RestoreRefused, touching nothing), record it running; the plan's XCom.
    (The drills plan their restores with it too.)"""
    request = RestoreRequest.parse(params, given=given)
    used = op.claim_target(cmdb.restore_target(request.target), restore_id)
    rows = op.catalog.backups(instance=request.instance)
    owners = op.catalog.label_owners(request.backup_label) if request.backup_label else []
    plan = plan_restore(request, cmdb, rows, restore_id, used, owners)
    facts = op.catalog.facts_before(plan.instance, plan.backup_set.chosen.finished_at)
    data = (facts or {}).get("data_bytes")
    if isinstance(data, int) and data > 0:
        from dataclasses import replace
        plan = replace(plan, data_bytes=data)
    op.catalog.start_restore(plan.restore_id, plan.instance, plan.target, plan.backup_set.labels, run_id,
                             plan.server_id, plan.gtid, kind=kind)
    op.log.info("restore %s: %s -> target %s (%s:%s, datadir %s)", plan.restore_id, plan.instance, plan.target,
                plan.target_spec["host"], plan.target_spec["port"], plan.target_spec["datadir"])
    op.log.info("backup set (%s): %s", plan.backup_set.reason, " -> ".join(plan.backup_set.labels))
    op.log.info("server_id: %s", plan.server_id_reason)
    for note in plan.notes:
        op.log.warning("%s", note)
    return plan.as_dict()


class CheckTargetOperator(RestoreStep):
    """Read-only: the target is reachable, its tools match the backup, its datadir may be replaced, space."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        check = self.target_call(plan, "check", *self.where(plan), "--flavor", plan.flavor)
        problems, notes = target_problems(plan, check)
        for note in notes:
            self.log.warning("%s", note)
        if problems:
            raise AirflowFailException(f"target {plan.target} cannot take this restore (nothing was changed): "
                                       + "; ".join(problems))
        self.log.info("target %s: datadir %s is %s, %s free for the set, %s, %s", plan.target, check.get("datadir"),
                      check.get("datadir_state"), (check.get("work_fs") or {}).get("avail_bytes"),
                      check.get("tool_version"), "a server runs" if check.get("running") else "no server runs")
        return {k: check.get(k) for k in ("datadir_state", "datadir_bytes", "running", "tool_version",
                                          "server_version", "work_fs", "datadir_fs", "owner")}


class StopTargetOperator(RestoreStep):
    """Stop the target server (its stop_command), then mark its datadir not restored."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        t = plan.target_spec
        return self.target_call(plan, "stop", *self.where(plan), *self.ids(plan), "--stop-command",
                                t["stop_command"], "--instance", plan.instance, "--labels",
                                ",".join(plan.backup_set.labels))


def link_dir(n: int, label: str) -> str:
    return f"{n:02d}-{label}"


# the data crosses two ssh sessions (storage -> worker -> target): AES-GCM first (AES-NI), then the client's
# defaults. Measured on loopback, 300 MB over two hops: 2.5 s against 3.7 s with the default chacha20.
TRANSFER_SSH_OPTIONS = ("Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com", "Compression=no")


class TransferOperator(RestoreStep):
    """Each link of the set: ``ssh storage target.py send | ssh target target.py receive`` (sha256 checked)."""

    def script(self, ssh_conn_id: str, script: str, *args: str, become: bool = False, python: str = "python3"):
        from dataclasses import replace
        hook = self.hook(ssh_conn_id)
        target = hook.target
        if not set(TRANSFER_SSH_OPTIONS) <= set(target.extra_options):
            hook.__dict__["target"] = replace(target, extra_options=tuple(target.extra_options) + TRANSFER_SSH_OPTIONS)
        return super().script(ssh_conn_id, script, *args, become=become, python=python)

    def do(self, plan: RestorePlan, context: Any) -> dict:
        t, st = plan.target_spec, plan.storage
        out = []
        for n, link in enumerate(plan.backup_set.links):
            send = self.script(link.storage_ssh_conn_id, TARGET_SCRIPT, "send", "--file",
                               f"{link.storage_path}/{link.artifact}", become=bool(st.get("become")),
                               python=st.get("python") or "python3")
            recv = self.script(t["ssh_conn_id"], TARGET_SCRIPT, "receive", *self.where(plan, server=False),
                               "--flavor", plan.flavor, *self.ids(plan), "--link", link_dir(n, link.label),
                               "--compress", link.compress, "--sha256", link.sha256, become=bool(t.get("become")),
                               python=t.get("python") or "python3")
            sender, receiver = self.run_steps([(f"storage {link.storage_ssh_conn_id}", send),
                                               (f"target {t['name']}", recv)])
            order = [(receiver, f"receiving {link.label}"), (sender, f"sending {link.label}")]
            if not sender.ok and (sender.result or {}).get("error") and not (receiver.result or {}).get("error"):
                order.reverse()
            for step, what in order:
                raise_for(step, what)
            r = receiver.result
            self.log.info("%s: %s bytes in %.1f s, sha256 ok", link.label, r.get("size_bytes"), r.get("seconds") or 0)
            out.append({"label": link.label, "size_bytes": r.get("size_bytes"), "seconds": r.get("seconds")})
        return {"links": out}


class PrepareOperator(RestoreStep):
    """Prepare the full, then apply every incremental in order, on the target."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        return self.target_call(plan, "prepare", *self.where(plan, server=False), "--flavor", plan.flavor,
                                *self.ids(plan), "--links", str(len(plan.backup_set.links)), timeout=None)


class CopyBackOperator(RestoreStep):
    """Empty the datadir (its old data only with overwrite), copy the prepared set back beside it."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        return self.target_call(plan, "copy-back", *self.where(plan, server=False), "--flavor", plan.flavor,
                                *self.ids(plan), *(["--overwrite"] if plan.overwrite else []), timeout=None)


class FixOwnershipOperator(RestoreStep):
    """chown the restored files to the datadir's owner and move them into place, the system schema last."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        return self.target_call(plan, "fix-ownership", *self.where(plan, server=False), *self.ids(plan))


class StartTargetOperator(RestoreStep):
    """Start the restored server (its start_command) with the chosen server_id."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        t = plan.target_spec
        return self.target_call(plan, "start", *self.where(plan, work=False), "--flavor", plan.flavor,
                                *self.ids(plan), "--start-command", t["start_command"], "--server-id",
                                str(plan.server_id), stdin=self.admin_login(plan))


class VerifyRestoredOperator(RestoreStep):
    """The restored server is up, at the backup's GTID, and holds what the backup recorded."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        observed = self.target_call(plan, "verify", *self.where(plan, work=False), "--flavor", plan.flavor,
                                    *self.ids(plan), "--gtid", plan.gtid or "", stdin=self.admin_login(plan))
        prepared = context["ti"].xcom_pull(task_ids=self.sibling("prepare")) or {}
        diffs, notes = compare_restored(plan, prepared, observed)
        for note in notes:
            self.log.warning("%s", note)
        if diffs:
            raise AirflowFailException(f"the restored server does not match backup {plan.backup_set.chosen.label}: "
                                       + capped(diffs))
        self.log.info("restored server matches backup %s: server_id %s, GTID %s, schemas %s",
                      plan.backup_set.chosen.label, observed.get("server_id"), observed.get("gtid_slave_pos"),
                      observed.get("schemas"))
        return observed


class FinishOperator(RestoreStep):
    """Remove the marker: from now on the target is a restored server (``mysql-restore.json`` says of what)."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        summary = {"backup_labels": plan.backup_set.labels, "gtid": plan.gtid, "server_id": plan.server_id,
                   "instance": plan.instance}
        replayed = _replayed(self, context)
        if replayed:  # a point-in-time restore: the server is at the point reached, not at the backup
            summary.update(gtid=replayed.get("gtid_slave_pos") or replayed.get("state_after") or plan.gtid,
                           point_reached={k: replayed.get(k) for k in ("last_gtid", "last_position", "last_event_at",
                                                                       "transactions")})
        return self.target_call(plan, "finish", *self.where(plan, server=False), *self.ids(plan), "--summary",
                                json.dumps(summary, separators=(",", ":")))


class ReportOperator(RestoreStep):
    """What was restored, from which backup, to where, seconds per step; the restores row succeeded."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        row = self.catalog.restore(plan.restore_id) or {}
        steps = [[name, seconds] for name, seconds in row.get("steps") or []]
        chosen = plan.backup_set.chosen
        t = plan.target_spec
        report = {"restore_id": plan.restore_id, "instance": plan.instance, "target": plan.target,
                  "target_address": f"{t['host']}:{t['port']}", "datadir": t["datadir"],
                  "backup_label": chosen.label, "labels": plan.backup_set.labels,
                  "backup_finished_at": chosen.finished_at, "reason": plan.backup_set.reason, "gtid": plan.gtid,
                  "binlog": f"{chosen.binlog_file}:{chosen.binlog_pos}" if chosen.binlog_file else None,
                  "server_id": plan.server_id, "steps": steps,
                  "seconds": round(sum(s for _, s in steps), 3)}
        replayed = _replayed(self, context)
        if replayed:
            report.update(replay=replayed, gtid=replayed.get("gtid_slave_pos") or plan.gtid)
        self.catalog.finish_restore(plan.restore_id, "succeeded", result={**(row.get("result") or {}), **report})
        self.log.info("restored %s from backup %s (%s) to %s (%s:%s, %s), server_id %s, GTID %s", plan.instance,
                      chosen.label, " -> ".join(plan.backup_set.labels), plan.target, t["host"], t["port"],
                      t["datadir"], plan.server_id, plan.gtid)
        for name, seconds in steps:
            self.log.info("  %-16s %8.1f s", name, seconds)
        self.log.info("  %-16s %8.1f s", "total", report["seconds"])
        if replayed:
            self.log.info("point reached: %s transaction(s) replayed, last GTID %s at %s, event time %s",
                          replayed.get("transactions"), replayed.get("last_gtid"), replayed.get("last_position"),
                          replayed.get("last_event_at"))
        return report


def _replayed(step: RestoreStep, context: Any) -> dict | None:
    """What the ``replay`` task of this restore reached (None: a restore without a replay)."""
    raw = context["ti"].xcom_pull(task_ids=step.plan_task_id) or {}
    if not raw.get("replay"):
        return None
    return context["ti"].xcom_pull(task_ids=step.sibling("replay")) or None


class MakeReplicaOperator(RestoreStep):
    """(make_replica_of_source) the restored server becomes a GTID replica of the instance's primary."""

    def do(self, plan: RestorePlan, context: Any) -> dict:
        if not plan.make_replica_of_source:
            raise AirflowSkipException("make_replica_of_source is false: the restored server stays standalone")
        primary = plan.primary or {}
        stdin = self.admin_login(plan) + _login_line(primary["replication_conn_id"])
        t = plan.target_spec
        result = self.target_call(plan, "replicate", "--host", t["host"], "--port", str(t["port"]), "--primary-host",
                                  str(primary["host"]), "--primary-port", str(primary["port"]), stdin=stdin)
        self.catalog.add_restore_result(plan.restore_id, replica_of=primary.get("name"), replication=result)
        return result


class RestoreFailureCallback:
    """``on_failure_callback`` of the restore tasks: mark the restores row failed; after ``stop_target``
    also run ``target.py abort`` (the target stays stopped and marked not restored); then alert."""

    def __init__(self, plan_task_id: str = "plan", abort: bool = False, alert: Any = None) -> None:
        self.plan_task_id = plan_task_id
        self.abort = abort
        self.alert = alert  # e.g. a BackupFailureCallback for the platform owner

    def __call__(self, context: dict[str, Any]) -> None:
        ti = context.get("ti")
        error = context.get("exception")
        plan = None
        try:
            raw = ti.xcom_pull(task_ids=self.plan_task_id) if ti else None
            plan = RestorePlan.from_dict(raw) if raw else None
        except Exception:  # noqa: BLE001 - the rest matters more
            log.exception("could not read the restore plan")
        if plan is not None:
            if self.abort:
                op = RestoreStep.for_plan(self.plan_task_id, task_id="abort_restore")
                try:
                    op.target_call(plan, "abort", *op.where(plan), "--restore-id", plan.restore_id, "--stop-command",
                                   plan.target_spec["stop_command"], "--reason",
                                   f"{getattr(ti, 'task_id', '?')}: {error}"[:400], what="abort")
                    log.warning("restore %s aborted: target %s is stopped and marked not restored", plan.restore_id,
                                plan.target)
                except Exception:  # noqa: BLE001
                    log.exception("could not abort the restore on target %s", plan.target)
                finally:
                    op.close_hooks()
            try:
                from mysqlbackup.catalog import Catalog
                Catalog().finish_restore(plan.restore_id, "failed",
                                         error=f"{getattr(ti, 'task_id', '?')}: {error}"[:4000])
            except Exception:  # noqa: BLE001
                log.exception("could not mark restore %s failed", plan.restore_id)
        if self.alert is not None:
            self.alert(context)


def _steps(classes: dict[str, type], plan_task_id: str, alert: Any, abort_from: str | None,
           timeouts: dict[str, float]) -> list:
    from datetime import timedelta
    tasks, abort = [], False
    for task_id, cls in classes.items():
        if task_id == abort_from:
            abort = True
        tasks.append(cls.for_plan(plan_task_id, task_id=task_id,
                                  on_failure_callback=RestoreFailureCallback(plan_task_id, abort=abort, alert=alert),
                                  execution_timeout=timedelta(seconds=timeouts.get(task_id, 3600))))
    for a, b in zip(tasks, tasks[1:]):
        a >> b
    return tasks


def restore_tasks(plan_task_id: str = "plan", alert: Any = None) -> tuple[Any, Any]:
    """``check_target >> ... >> verify_restored`` in the current DAG, reading the plan of ``plan_task_id``."""
    classes = dict(zip(RESTORE_STEPS, (CheckTargetOperator, StopTargetOperator, TransferOperator, PrepareOperator,
                                       CopyBackOperator, FixOwnershipOperator, StartTargetOperator,
                                       VerifyRestoredOperator)))
    # stop_target itself aborts on failure too: it may have written the marker before failing
    tasks = _steps(classes, plan_task_id, alert, "stop_target",
                   {"check_target": 600, "stop_target": 1800, "transfer": 24 * 3600, "prepare": 24 * 3600,
                    "copy_back": 24 * 3600, "fix_ownership": 6 * 3600, "start_target": 3600,
                    "verify_restored": 1800})
    return tasks[0], tasks[-1]


def finish_tasks(plan_task_id: str = "plan", alert: Any = None) -> tuple[Any, Any]:
    """``finish >> report`` in the current DAG: (finish, report)."""
    tasks = _steps({"finish": FinishOperator, "report": ReportOperator}, plan_task_id, alert, "finish",
                   {"finish": 600, "report": 600})
    return tasks[0], tasks[1]


def make_replica_task(plan_task_id: str = "plan", alert: Any = None) -> Any:
    """``make_replica`` (skipped unless the plan says make_replica_of_source); its failure leaves the restore
    succeeded (the data is restored) and says what failed after it."""
    from datetime import timedelta
    return MakeReplicaOperator.for_plan(plan_task_id, task_id="make_replica", execution_timeout=timedelta(minutes=30),
                                        on_failure_callback=RestoreFailureCallback(plan_task_id, alert=alert))

