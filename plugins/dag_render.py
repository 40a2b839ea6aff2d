"""Render CMDB instances into DAGs: one function, one DAG (cosmos / dag-factory style).

The DAG files in ``dags/`` stay thin: load the CMDB (a local file, never a network or a
database at parse time), then call ``render_all``.
"""
from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache

from airflow.sdk import DAG, chain

from mysqlbackup import params as P
from mysqlbackup.cmdb import Cmdb, Instance
from operators.alerting import BackupFailureCallback
from operators.backup import (CatalogBackupOperator, ChooseSourceOperator, CollectFactsOperator,
                              BackupOperator, RebuildCatalogOperator, ReserveSpaceOperator,
                              VerifyBackupOperator)
from operators.cmdb_health import CmdbHealthOperator
from operators.expire import ExpireBackupsOperator
from operators.archive import ArchiveFailureCallback, BinlogSuperviseOperator
from mysqlbackup.archive import archive_enabled

DAG_PREFIX = "mysql_backup__"
HEALTH_DAG_ID = "mysql_backup_cmdb_health"
REBUILD_DAG_ID = "mysql_backup_catalog_rebuild"
VERIFY_STORED_DAG_ID = "mysql_backup_verify_stored"


@lru_cache(maxsize=None)
def _dag_defaults() -> dict:
    """DAG arguments Airflow would read from its configuration once per DAG: read them once."""
    from airflow.sdk.configuration import conf
    return {"max_consecutive_failed_dag_runs": conf.getint("core", "max_consecutive_failed_dag_runs_per_dag"),
            "disable_bundle_versioning": conf.getboolean("dag_processor", "disable_bundle_versioning"),
            "max_active_tasks": 6, "catchup": False}


@lru_cache(maxsize=256)
def _timetable(schedule: str | None, *more: str | None):
    """One timetable per distinct schedule, shared by every DAG using it (they are immutable).

    DAGs get no start_date, so a new DAG waits for its next scheduled time (run_immediately=False)
    instead of running the latest missed one at once: adding 3,000 instances to the CMDB must not
    start 3,000 backups in the same minute.
    """
    crons = [c for c in (schedule, *more) if c]
    if not crons:
        return None
    from airflow.timetables.trigger import CronTriggerTimetable, MultipleCronTriggerTimetable
    import pendulum
    if len(crons) == 1:
        return CronTriggerTimetable(crons[0], timezone=pendulum.UTC)
    # full and incremental times: one run at a time either way; the run's logical date tells
    # ChooseSourceOperator which of the two schedules it is
    return MultipleCronTriggerTimetable(*crons, timezone=pendulum.UTC)


def _backup_params() -> dict:
    """The trigger form of a backup DAG (about 2 us: a Param validates its default lazily)."""
    from airflow.sdk import Param
    return {"kind": Param("auto", type="string", enum=["auto", "full", "incremental"],
                          values_display={"auto": "auto: as the policy says (full, or incremental on its schedule)",
                                          "full": "full: a new chain",
                                          "incremental": "incremental: on the newest usable backup of the chain"},
                          description="Which backup to take. auto (scheduled runs): a full at full_schedule times, "
                                      "an incremental at incremental_schedule times when the chain allows it, "
                                      "else a full. incremental: fails before anything runs when no backup can "
                                      "be its parent.")}


def task_retries() -> int:
    return int(os.environ.get("MYSQL_BACKUP_TASK_RETRIES", "2"))


def backup_dag(inst: Instance, cmdb: Cmdb) -> DAG:
    """The nightly backup DAG of one instance: a full, or an incremental on its chain (param ``kind``)."""
    pol = inst.policy
    replicas = tuple(cmdb.replicas_of(inst.name))
    pool = cmdb.pool_name(inst.storage.ssh_conn_id)
    callback = BackupFailureCallback(inst.name, inst.owner, inst.app, inst.alerts, instance=inst)
    default_args = {"owner": inst.owner, "retries": task_retries(), "retry_delay": timedelta(minutes=5),
                    "retry_exponential_backoff": True, "on_failure_callback": callback}
    when = (f"full {pol.full_schedule or 'never scheduled'}"
            + (f", incremental {pol.incremental_schedule} (chains of at most {pol.max_chain_length})"
               if pol.incremental_schedule else "")) if pol.backup_enabled else "manual (backup disabled in the CMDB)"
    doc = (f"Backup of **{inst.name}** ({inst.flavor} {inst.role} {inst.host}:{inst.port}, app {inst.app}, "
           f"owner {inst.owner}). Source: a healthy replica ({', '.join(r.name for r in replicas) or 'none listed'}), "
           f"primary allowed: {pol.allow_primary}. Storage: `{inst.storage.ssh_conn_id}:{inst.storage.base_dir}`. "
           f"Schedule: {when}.")
    schedule = _timetable(pol.full_schedule, pol.incremental_schedule) if pol.backup_enabled else None
    with DAG(dag_id=DAG_PREFIX + inst.name, schedule=schedule,
             max_active_runs=1, default_args=default_args, **_dag_defaults(),
             tags=["mysql-backup", f"app:{inst.app}"[:100], f"owner:{inst.owner}"[:100], *inst.tags],
             doc_md=doc, dagrun_timeout=timedelta(hours=24)) as dag:
        # a hung mariabackup, prepare or ssh must not hold a storage pool slot for a day
        common = {"instance": inst, "replicas": replicas, "execution_timeout": timedelta(hours=1)}  # for_instance
        long = dict(common, execution_timeout=timedelta(hours=12), pool=pool)
        facts = CollectFactsOperator.for_instance(task_id="collect_facts", **common)
        source = ChooseSourceOperator.for_instance(task_id="choose_source", **common)
        reserve = ReserveSpaceOperator.for_instance(task_id="reserve_space", **common)
        backup = BackupOperator.for_instance(task_id="backup", **long)
        verify = VerifyBackupOperator.for_instance(task_id="verify_backup", **long)
        record = CatalogBackupOperator.for_instance(task_id="catalog_backup", **common)
        expire = ExpireBackupsOperator.for_instance(task_id="expire_backups", **common)
        chain(facts, source, reserve, backup, verify, record, expire)
    # the trigger form's params go on the DAG once its tasks exist: every operator built inside a
    # DAG deep-copies the DAG's params into its own (measured: 2 ms of the 2.8 ms per instance at
    # parse time); at run time Airflow merges the DAG's params with the task's and the conf anyway
    # set without the DAG's validator: it runs jsonschema on the defaults of every scheduled DAG
    # (about 0.3 ms each); the one default ("auto") is valid by construction (tests/unit/test_dags.py)
    from airflow.sdk.definitions.param import ParamsDict
    object.__setattr__(dag, "params", ParamsDict(_backup_params()))
    return dag


def health_dag(cmdb: Cmdb) -> DAG:
    """Fails (and alerts) while the CMDB has rows that cannot become DAGs."""
    with DAG(dag_id=HEALTH_DAG_ID, schedule=_timetable("@hourly"), catchup=False, max_active_runs=1,
             tags=["mysql-backup", "cmdb"], doc_md="Validates the CMDB; fails naming every bad row and field.",
             default_args={"owner": cmdb.platform_owner, "retries": 0,
                           "on_failure_callback": BackupFailureCallback("(cmdb)", cmdb.platform_owner,
                                                                        "mysql-backup", cmdb.platform)}) as dag:
        CmdbHealthOperator(task_id="check_cmdb", cmdb_source=cmdb.source)
    return dag


def rebuild_dag(cmdb: Cmdb) -> DAG:
    """Reconcile the catalog with the manifests on every storage location of the CMDB (hourly by default)."""
    locations = sorted({(i.storage.ssh_conn_id, i.storage.base_dir) for i in cmdb.instances})
    alert = BackupFailureCallback("(catalog)", cmdb.platform_owner, "mysql-backup", cmdb.platform)
    with DAG(dag_id=REBUILD_DAG_ID, schedule=_timetable(cmdb.reconcile_schedule), catchup=False, max_active_runs=1,
             tags=["mysql-backup", "catalog"],
             default_args={"owner": cmdb.platform_owner, "retries": 0, "on_failure_callback": alert},
             dagrun_timeout=timedelta(hours=2),
             doc_md="Reconciles the catalog with storage: indexes every `manifest.json` found, marks a usable "
                    "backup whose directory is gone `missing` and one that lost its manifest `damaged` (never "
                    "restorable), alerts the owners, and fails when it found something new. The manifests are "
                    "the truth; the catalog is an index. Never deletes anything. Schedule: "
                    f"{cmdb.reconcile_schedule or 'manual'} (`platform.catalog_reconcile_schedule`).") as dag:
        RebuildCatalogOperator(task_id="rebuild_catalog", locations=locations, instances=list(cmdb.instances),
                               execution_timeout=timedelta(hours=1))
    return dag


def verify_stored_dag(cmdb: Cmdb) -> DAG:
    """Re-read a share of the stored backups each day, per storage location, in its pool."""
    from operators.verify import VerifyStoredOperator
    locations = sorted({(i.storage.ssh_conn_id, i.storage.base_dir) for i in cmdb.instances})
    alert = BackupFailureCallback("(stored backups)", cmdb.platform_owner, "mysql-backup", cmdb.platform)
    with DAG(dag_id=VERIFY_STORED_DAG_ID, schedule=_timetable(cmdb.stored_verify_schedule), catchup=False,
             max_active_runs=1, tags=["mysql-backup", "verify"],
             default_args={"owner": cmdb.platform_owner, "retries": 0, "on_failure_callback": alert},
             doc_md="Re-reads stored backup artifacts from disk and compares their sha256 with the manifest's, "
                    f"a share each run so that every usable backup is re-read within "
                    f"{cmdb.stored_verify_window_days} days, at most {cmdb.stored_verify_max_mib_per_s} MiB/s per "
                    "read. A changed or vanished artifact marks the backup damaged (or missing), alerts its "
                    "owner and fails the run. `platform.stored_verify_*` in the CMDB.") as dag:
        for n, (conn_id, base_dir) in enumerate(locations, start=1):
            VerifyStoredOperator(task_id=f"verify_stored_{n}", location=(conn_id, base_dir),
                                 instances=[i for i in cmdb.instances
                                            if (i.storage.ssh_conn_id, i.storage.base_dir) == (conn_id, base_dir)],
                                 window_days=cmdb.stored_verify_window_days,
                                 max_mib_per_s=cmdb.stored_verify_max_mib_per_s, pool=cmdb.pool_name(conn_id),
                                 execution_timeout=timedelta(hours=12), doc_md=f"`{conn_id}:{base_dir}`")
    return dag


BINLOG_DAG_PREFIX = "mysql_binlog__"


def binlog_dag(inst: Instance, cmdb: Cmdb) -> DAG:
    """The supervisor of the instance's continuous binlog archive: one short task per run (every minute by
    default); the streamer it looks after runs detached on the storage host."""
    pol = inst.policy.binlog_archive
    callback = ArchiveFailureCallback(inst.name, inst.owner, inst.app, inst.alerts)
    with DAG(dag_id=BINLOG_DAG_PREFIX + inst.name, schedule=_timetable(pol.schedule), max_active_runs=1,
             default_args={"owner": inst.owner, "retries": 0, "on_failure_callback": callback}, **_dag_defaults(),
             tags=["mysql-backup", "binlog", f"app:{inst.app}"[:100], f"owner:{inst.owner}"[:100]],
             doc_md=f"Binlog archive of **{inst.name}** ({inst.host}:{inst.port}) to "
                    f"`{inst.storage.ssh_conn_id}:{inst.storage.base_dir}/{inst.name}/binlog`; lease "
                    f"{pol.lease_minutes} min, lag alert over {pol.lag_alert_seconds} s.",
             dagrun_timeout=timedelta(minutes=10)) as dag:
        BinlogSuperviseOperator.for_instance(inst, task_id="supervise_archive", execution_timeout=timedelta(minutes=5))
    return dag


FLASHBACK_DAG_ID = "mysql_flashback"


# Trigger-form params (the patterns, lengths and their hints live in mysqlbackup.params). The
# rule for every form: it opens triggerable with defaults that only do the safe thing; optional
# fields are null by default (type ["null", ...]); a required field says so in its description.
def _opt(pattern: str, max_length: int, description: str, **extra):
    """An optional string param: null by default, checked by pattern and length when given."""
    from airflow.sdk import Param
    return Param(None, type=["null", "string"], pattern=pattern, maxLength=max_length, description=description,
                 **extra)


def _names(item_pattern: str, description: str):
    """An optional list of names: empty means all."""
    from airflow.sdk import Param
    return Param([], type=["null", "array"], maxItems=P.MAX_LIST, uniqueItems=True,
                 items={"type": "string", "pattern": item_pattern, "maxLength": P.TABLE_MAX_LENGTH},
                 description=description)


def flashback_params(cmdb: Cmdb) -> dict:
    """The trigger form of mysql_flashback: it opens triggerable, and its defaults only review."""
    from airflow.sdk import Param
    names = [i.name for i in cmdb.instances]
    when = P.HINTS[P.DATETIME]
    return {
        "instance": Param(names[0] if names else "", type="string", **({"enum": names} if names else {}),
                          description="Required: the CMDB instance whose binlog to read."),
        "start_datetime": _opt(P.DATETIME, 40, f"Start of the window (inclusive): {when}. One of start_datetime, "
                                              "start_position or start_gtid is required."),
        "stop_datetime": _opt(P.DATETIME, 40, f"Stop of the window (exclusive): {when}. Empty: up to now."),
        "start_position": _opt(P.POSITION, 240, "Start of the window as FILE:POS of the instance's binlog "
                                               "(binlog.000012:4), inclusive."),
        "stop_position": _opt(P.POSITION, 240, "Stop of the window as FILE:POS, exclusive."),
        "start_gtid": _opt(P.GTID, 45, "First transaction of the window as DOMAIN-SERVER-SEQ (0-1-4711), inclusive."),
        "stop_gtid": _opt(P.GTID, 45, "Last transaction of the window, inclusive."),
        "databases": _names(P.DATABASE, f"Only these databases; empty: all. Names with other characters than "
                                       f"letters, digits, $ and _ in backticks: `my-db`. At most {P.MAX_LIST}."),
        "tables": _names(P.TABLE, f"Only these tables, as db.table or table (in any database); empty: all. "
                                 f"Quote odd names: `my db`.`t.1`. At most {P.MAX_LIST}."),
        "types": Param(["insert", "update", "delete"], type="array", minItems=1, uniqueItems=True,
                       items={"type": "string", "enum": ["insert", "update", "delete"]},
                       examples=["insert", "update", "delete"], description="Statement types to undo (at least one)."),
        "where": Param("row", type="string", enum=["row", "key"],
                       values_display={"row": "row: key + whole row image (a row changed since stops the apply)",
                                       "key": "key: primary key only (faster, overwrites later changes)"},
                       description="How the inverse statements find their row."),
        "apply": Param(False, type="boolean",
                       description="Apply the script after writing it. Off (the default): only write it for review."),
        "apply_conn_id": _opt(P.CONN_ID, 250, "Required when apply is on: the Airflow connection of a user allowed to "
                                             "change the selected tables."),
        "binlog_conn_id": _opt(P.CONN_ID, 250, "The Airflow connection used to read the binlog from the live server "
                                              "(needs REPLICATION SLAVE; also asked which columns are generated). "
                                              "Empty: the instance's mysql_conn_id."),
        "binlog_source": Param("auto", type="string", enum=list(P.BINLOG_SOURCES),
                               values_display=P.BINLOG_SOURCE_LABELS,
                               description="Where to read the binlog. auto: the live server while it still holds "
                                           "the whole window, else the instance's binlog archive (the log says "
                                           "which and why). A window the archive does not hold whole is refused."),
    }


def flashback_dag(cmdb: Cmdb) -> DAG:
    """Manual: the flashback of a binlog window of one instance, reviewed before it is applied."""
    from operators.flashback import BinlogFlashbackOperator
    params = flashback_params(cmdb)
    alert = BackupFailureCallback("(flashback)", cmdb.platform_owner, "mysql-backup", cmdb.platform)
    with DAG(dag_id=FLASHBACK_DAG_ID, schedule=None, catchup=False, max_active_runs=4, params=params,
             tags=["mysql-backup", "flashback"],
             default_args={"owner": cmdb.platform_owner, "retries": 0, "on_failure_callback": alert},
             doc_md="Undo row changes from the binlog: writes the inverse SQL next to the instance's backups for "
                    "review, and applies it only when `apply` is true. See docs/flashback.md.") as dag:
        BinlogFlashbackOperator(task_id="flashback", execution_timeout=timedelta(hours=6))
    return dag


RESTORE_FULL_DAG_ID = "mysql_restore_full"


def _restore_where(cmdb: Cmdb, what: str) -> dict:
    """The params every restore form starts with: which instance (``what``: its description), to which target."""
    from airflow.sdk import Param
    names = [i.name for i in cmdb.instances]
    targets = [t.name for t in cmdb.restore_targets]
    return {
        "instance": Param(names[0], type="string", enum=names, description=f"Required: {what}"),
        "target": Param(targets[0], type="string", enum=targets,
                        description="Required: where to restore, a host declared in the CMDB's restore_targets "
                                    "(never a CMDB instance). Its datadir is replaced."),
    }


def _overwrite_param():
    from airflow.sdk import Param
    return Param(False, type="boolean", description="Replace a target datadir that is not empty. Off (the default): "
                                                    "such a target is refused before anything is touched.")


def restore_full_params(cmdb: Cmdb) -> dict:
    """The trigger form of mysql_restore_full: instance, target, which backup, and the two switches (off)."""
    from airflow.sdk import Param
    return {
        **_restore_where(cmdb, "the CMDB instance whose backup is restored."),
        "backup_date": Param(None, type=["null", "string"], format="date", pattern=P.DATE, maxLength=10,
                             description="The UTC day the backup finished: the newest restorable backup of that day "
                                         "is restored (with every link of its chain). Empty: the newest restorable "
                                         "backup. Not together with backup_label."),
        "backup_label": _opt(P.LABEL, 64, f"One backup by its label ({P.HINTS[P.LABEL]}); empty: by backup_date, "
                                          "else the newest."),
        "overwrite": _overwrite_param(),
        "make_replica_of_source": Param(False, type="boolean",
                                        description="After a successful restore, make the restored server a GTID "
                                                    "replica of the instance's primary."),
    }


def restore_full_dag(cmdb: Cmdb) -> DAG | None:
    """Manual: a full restore of one instance's backup set to a declared restore target (None: no targets)."""
    if not cmdb.restore_targets or not cmdb.instances:
        return None
    from operators.restore import PlanRestoreOperator, RestoreFailureCallback, finish_tasks, make_replica_task, \
        restore_tasks
    alert = BackupFailureCallback("(restore)", cmdb.platform_owner, "mysql-backup", cmdb.platform)
    with DAG(dag_id=RESTORE_FULL_DAG_ID, schedule=None, catchup=False, max_active_runs=1,
             params=restore_full_params(cmdb), tags=["mysql-backup", "restore"],
             default_args={"owner": cmdb.platform_owner, "retries": 0},
             doc_md="Full restore of an instance's backup (the full and every incremental up to it) to a host "
                    "declared in the CMDB's `restore_targets`, one task per step. Every param is checked in `plan` "
                    "before a host is touched. See docs/design.md, Restore.") as dag:
        plan = PlanRestoreOperator(task_id="plan", execution_timeout=timedelta(minutes=5),
                                   on_failure_callback=RestoreFailureCallback("plan", alert=alert))
        first, last = restore_tasks("plan", alert=alert)
        finish, report = finish_tasks("plan", alert=alert)
        chain(plan, first)
        chain(last, finish)
        chain(report, make_replica_task("plan", alert=alert))
    return dag


RESTORE_PITR_DAG_ID = "mysql_restore_pitr"


def restore_pitr_params(cmdb: Cmdb) -> dict:
    """The trigger form of mysql_restore_pitr: instance, target, exactly one recovery target, databases, mode."""
    from airflow.sdk import Param
    from mysqlbackup.replay import MODE_LABELS, MODES
    return {
        **_restore_where(cmdb, "the CMDB instance to restore to a point in time."),
        "stop_datetime": _opt(P.DATETIME, 40, f"Recovery target as a time, to the second ({P.HINTS[P.DATETIME]}), "
                                              "EXCLUSIVE: every transaction before it is replayed, the first one "
                                              "with an event at or after it (the bad statement's time) and all later "
                                              "ones are not. Exactly one of stop_datetime, stop_position, stop_gtid."),
        "stop_position": _opt(P.POSITION, 240, "Recovery target as FILE:POS of the instance's source server's binlog "
                                               "(binlog.000012:4711), EXCLUSIVE: the transaction holding the first "
                                               "event at or after it is not replayed (give its GTID event's "
                                               "position)."),
        "stop_gtid": _opt(P.GTID, 45, "Recovery target as a GTID (0-1-4711), INCLUSIVE: the last transaction "
                                      "replayed."),
        "databases": Param([], type=["null", "array"], maxItems=64, uniqueItems=True,
                           items={"type": "string", "pattern": P.DATABASE, "maxLength": 66},
                           description="Replay only these databases; empty: every database. The others are "
                                       "dropped from the restored server after the replay (they would hold the "
                                       "backup's stale state)."),
        "replay_mode": Param("applier", type="string", enum=list(MODES), values_display=MODE_LABELS,
                             description="How the binlogs are applied; both are exact (no transaction twice, "
                                         "none skipped, none cut)."),
        "overwrite": _overwrite_param(),
    }


def restore_pitr_dag(cmdb: Cmdb) -> DAG | None:
    """Manual: a point-in-time restore of one instance to a declared restore target (None: no targets)."""
    if not cmdb.restore_targets or not cmdb.instances:
        return None
    from operators.replay import PlanPitrOperator, replay_tasks
    from operators.restore import RestoreFailureCallback, finish_tasks, restore_tasks
    alert = BackupFailureCallback("(restore)", cmdb.platform_owner, "mysql-backup", cmdb.platform)
    with DAG(dag_id=RESTORE_PITR_DAG_ID, schedule=None, catchup=False, max_active_runs=1,
             params=restore_pitr_params(cmdb), tags=["mysql-backup", "restore", "pitr"],
             default_args={"owner": cmdb.platform_owner, "retries": 0},
             doc_md="Point-in-time restore: the newest usable backup before the recovery target whose roll-forward "
                    "is unbroken is restored to a host of the CMDB's `restore_targets`, then the archived binlogs "
                    "are replayed from its exact GTID to the target. See docs/replay.md.") as dag:
        plan = PlanPitrOperator(task_id="plan", execution_timeout=timedelta(minutes=5),
                                on_failure_callback=RestoreFailureCallback("plan", alert=alert))
        first, last = restore_tasks("plan", alert=alert)
        fetch, replay = replay_tasks("plan", alert=alert)
        finish, _report = finish_tasks("plan", alert=alert)
        chain(plan, first)
        chain(last, fetch)
        chain(replay, finish)
    return dag


RESTORE_DRILL_DAG_ID = "mysql_restore_drill"


def restore_drill_dag(cmdb: Cmdb) -> DAG | None:
    """Scheduled: a rotating subset of instances restored onto the drill targets (None: no drill target)."""
    targets = [t for t in cmdb.restore_targets if t.drill]
    if not targets or not cmdb.instances:
        return None
    from airflow.sdk import TaskGroup
    from operators.drill import CheckRestoredOperator, DrillAlertsOperator, PlanDrillOperator, PlanDrillsOperator, \
        RecordDrillOperator
    from operators.replay import replay_tasks
    from operators.restore import finish_tasks, restore_tasks
    with DAG(dag_id=RESTORE_DRILL_DAG_ID, schedule=_timetable(cmdb.drill_schedule), catchup=False, max_active_runs=1,
             tags=["mysql-backup", "restore", "drill"], default_args={"owner": cmdb.platform_owner, "retries": 0},
             doc_md="Restore drills: every run restores a rotating subset of the instances onto the restore targets "
                    "declared with `drill: true` (each instance at least every `drill_every_days`), checks the "
                    "restored server and records RTO and RPO per drill. See docs/design.md, Restore drills.") as dag:
        plan = PlanDrillsOperator(task_id="plan_drills", execution_timeout=timedelta(minutes=5))
        alerts = DrillAlertsOperator(task_id="drill_alerts", trigger_rule="all_done",
                                     execution_timeout=timedelta(minutes=10))
        for t in targets:
            previous = plan
            for slot in range(cmdb.drill_max_per_target):
                with TaskGroup(group_id=f"{t.name}_{slot + 1}".replace("-", "_")) as group:
                    pid = f"{group.group_id}.plan"
                    slot_plan = PlanDrillOperator.for_slot(t.name, slot, task_id="plan", trigger_rule="all_done",
                                                           execution_timeout=timedelta(minutes=5))
                    first, last = restore_tasks(pid)
                    fetch, replay = replay_tasks(pid)
                    finish, report = finish_tasks(pid)
                    check = CheckRestoredOperator.for_plan(pid, task_id="check_restored",
                                                           execution_timeout=timedelta(hours=6))
                    record = RecordDrillOperator.for_slot(pid, f"{group.group_id}.check_restored", task_id="record",
                                                          trigger_rule="all_done",
                                                          execution_timeout=timedelta(minutes=5))
                    chain(slot_plan, first)
                    chain(last, fetch)
                    chain(replay, finish)
                    chain(report, check, record)
                previous >> group
                previous = record
            previous >> alerts
    return dag


def render_all(cmdb: Cmdb, only_dag_id: str | None = None) -> dict[str, DAG]:
    """Every DAG of this CMDB, in a stable order; only one when a task process asks for one.

    The cyclic garbage collector is paused while rendering: thousands of DAGs make thousands of
    young objects that survive, and each collection pass would walk all of them (measured in
    bench/parse_cost.py: it made the per-instance cost grow with the number of instances).
    """
    import gc
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _render(cmdb, only_dag_id)
    finally:
        if enabled:
            gc.enable()


def _render(cmdb: Cmdb, only_dag_id: str | None) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    if only_dag_id in (None, HEALTH_DAG_ID):
        dags[HEALTH_DAG_ID] = health_dag(cmdb)
    if only_dag_id in (None, REBUILD_DAG_ID):
        dags[REBUILD_DAG_ID] = rebuild_dag(cmdb)
    if only_dag_id in (None, VERIFY_STORED_DAG_ID):
        dags[VERIFY_STORED_DAG_ID] = verify_stored_dag(cmdb)
    if only_dag_id in (None, FLASHBACK_DAG_ID):
        dags[FLASHBACK_DAG_ID] = flashback_dag(cmdb)
    if only_dag_id in (None, RESTORE_FULL_DAG_ID) and (restore := restore_full_dag(cmdb)) is not None:
        dags[RESTORE_FULL_DAG_ID] = restore
    if only_dag_id in (None, RESTORE_PITR_DAG_ID) and (pitr := restore_pitr_dag(cmdb)) is not None:
        dags[RESTORE_PITR_DAG_ID] = pitr
    if only_dag_id in (None, RESTORE_DRILL_DAG_ID) and (drill := restore_drill_dag(cmdb)) is not None:
        dags[RESTORE_DRILL_DAG_ID] = drill
    for inst in cmdb.instances:
        dag_id = DAG_PREFIX + inst.name
        if only_dag_id is None or only_dag_id == dag_id:
            dags[dag_id] = backup_dag(inst, cmdb)
        if archive_enabled(inst) and (only_dag_id is None or only_dag_id == BINLOG_DAG_PREFIX + inst.name):
            dags[BINLOG_DAG_PREFIX + inst.name] = binlog_dag(inst, cmdb)
    return dags
