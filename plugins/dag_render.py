"""Render CMDB instances into DAGs: one function, one DAG (cosmos / dag-factory style).

The DAG files in ``dags/`` stay thin: load the CMDB (a local file, never a network or a
database at parse time), then call ``render_all``.
"""
from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache

from airflow.sdk import DAG, chain

from mysqlbackup.cmdb import Cmdb, Instance
from operators.alerting import BackupFailureCallback
from operators.backup import (CatalogBackupOperator, ChooseSourceOperator, CollectFactsOperator,
                              FullBackupOperator, RebuildCatalogOperator, ReserveSpaceOperator,
                              VerifyBackupOperator)
from operators.cmdb_health import CmdbHealthOperator

DAG_PREFIX = "mysql_backup__"
HEALTH_DAG_ID = "mysql_backup_cmdb_health"
REBUILD_DAG_ID = "mysql_backup_catalog_rebuild"


@lru_cache(maxsize=None)
def _dag_defaults() -> dict:
    """DAG arguments Airflow would read from its configuration once per DAG: read them once."""
    from airflow.sdk.configuration import conf
    return {"max_consecutive_failed_dag_runs": conf.getint("core", "max_consecutive_failed_dag_runs_per_dag"),
            "disable_bundle_versioning": conf.getboolean("dag_processor", "disable_bundle_versioning"),
            "max_active_tasks": 6, "catchup": False}


@lru_cache(maxsize=256)
def _timetable(schedule: str | None):
    """One timetable per distinct schedule, shared by every DAG using it (they are immutable).

    DAGs get no start_date, so a new DAG waits for its next scheduled time (run_immediately=False)
    instead of running the latest missed one at once: adding 3,000 instances to the CMDB must not
    start 3,000 backups in the same minute.
    """
    if schedule is None:
        return None
    from airflow.timetables.trigger import CronTriggerTimetable
    import pendulum
    return CronTriggerTimetable(schedule, timezone=pendulum.UTC)


def task_retries() -> int:
    return int(os.environ.get("MYSQL_BACKUP_TASK_RETRIES", "2"))


def backup_dag(inst: Instance, cmdb: Cmdb) -> DAG:
    """The nightly full backup DAG of one instance."""
    pol = inst.policy
    replicas = tuple(cmdb.replicas_of(inst.name))
    pool = cmdb.pool_name(inst.storage.ssh_conn_id)
    callback = BackupFailureCallback(inst.name, inst.owner, inst.app, inst.alerts)
    default_args = {"owner": inst.owner, "retries": task_retries(), "retry_delay": timedelta(minutes=5),
                    "retry_exponential_backoff": True, "on_failure_callback": callback}
    doc = (f"Full backup of **{inst.name}** ({inst.flavor} {inst.role} {inst.host}:{inst.port}, app {inst.app}, "
           f"owner {inst.owner}). Source: a healthy replica ({', '.join(r.name for r in replicas) or 'none listed'}), "
           f"primary allowed: {pol.allow_primary}. Storage: `{inst.storage.ssh_conn_id}:{inst.storage.base_dir}`. "
           f"Schedule: {pol.full_schedule if pol.backup_enabled else 'manual (backup disabled in the CMDB)'}.")
    with DAG(dag_id=DAG_PREFIX + inst.name, schedule=_timetable(pol.full_schedule if pol.backup_enabled else None),
             max_active_runs=1, default_args=default_args, **_dag_defaults(),
             tags=["mysql-backup", f"app:{inst.app}"[:100], f"owner:{inst.owner}"[:100], *inst.tags],
             doc_md=doc, dagrun_timeout=timedelta(hours=24)) as dag:
        # a hung mariabackup, prepare or ssh must not hold a storage pool slot for a day
        common = {"instance": inst, "replicas": replicas, "execution_timeout": timedelta(hours=1)}
        long = dict(common, execution_timeout=timedelta(hours=12), pool=pool)
        facts = CollectFactsOperator(task_id="collect_facts", **common)
        source = ChooseSourceOperator(task_id="choose_source", **common)
        reserve = ReserveSpaceOperator(task_id="reserve_space", **common)
        backup = FullBackupOperator(task_id="full_backup", **long)
        verify = VerifyBackupOperator(task_id="verify_backup", **long)
        record = CatalogBackupOperator(task_id="catalog_backup", **common)
        chain(facts, source, reserve, backup, verify, record)
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
    """Manual: rebuild the catalog from the manifests on every storage location of the CMDB."""
    locations = sorted({(i.storage.ssh_conn_id, i.storage.base_dir) for i in cmdb.instances})
    with DAG(dag_id=REBUILD_DAG_ID, schedule=None, catchup=False, max_active_runs=1,
             tags=["mysql-backup", "catalog"], default_args={"owner": "mysql-backup", "retries": 0},
             doc_md="Re-indexes every `manifest.json` found on storage into the catalog. The manifests are "
                    "the truth; the catalog is an index. Never deletes a row; reports what is missing.") as dag:
        RebuildCatalogOperator(task_id="rebuild_catalog", locations=locations,
                               instance_names=[i.name for i in cmdb.instances])
    return dag


FLASHBACK_DAG_ID = "mysql_flashback"
_POSITION = r"^[A-Za-z0-9_.+-]+\.[0-9]{6,}:[0-9]+$"
_GTID = r"^[0-9]+-[0-9]+-[0-9]+$"


def flashback_dag(cmdb: Cmdb) -> DAG:
    """Manual: the flashback of a binlog window of one instance, reviewed before it is applied."""
    from airflow.sdk import Param

    from operators.flashback import BinlogFlashbackOperator
    names = [i.name for i in cmdb.instances]
    opt_str = {"type": ["null", "string"]}
    params = {
        "instance": Param(names[0] if names else "", type="string", **({"enum": names} if names else {}),
                          description="the CMDB instance whose binlog to read"),
        "databases": Param([], type="array", items={"type": "string"}, description="only these databases (empty: all)"),
        "tables": Param([], type="array", items={"type": "string"},
                        description="only these tables: db.table or table; quote odd names: `my db`.`t 1`"),
        "start_datetime": Param(None, **opt_str, format="date-time", description="window start (UTC unless an offset is given)"),
        "stop_datetime": Param(None, **opt_str, format="date-time", description="window stop (exclusive)"),
        "start_position": Param(None, type=["null", "string"], pattern=_POSITION, description="e.g. binlog.000012:4"),
        "stop_position": Param(None, type=["null", "string"], pattern=_POSITION, description="exclusive"),
        "start_gtid": Param(None, type=["null", "string"], pattern=_GTID, description="e.g. 0-1-4711 (inclusive)"),
        "stop_gtid": Param(None, type=["null", "string"], pattern=_GTID, description="inclusive"),
        "types": Param(["insert", "update", "delete"], type="array", minItems=1,
                       items={"type": "string", "enum": ["insert", "update", "delete"]},
                       description="statement types to undo"),
        "where": Param("row", type="string", enum=["row", "key"],
                       description="row: WHERE on the key plus the whole row image (a row changed since stops the "
                                   "apply); key: primary key only (faster, overwrites later changes)"),
        "apply": Param(False, type="boolean", description="apply the script after writing it (off: review first)"),
        "apply_conn_id": Param("", type="string", description="connection of a user allowed to change the tables"),
        "binlog_conn_id": Param("", type="string",
                                description="connection used to read the binlog (default: the instance's mysql_conn_id; "
                                            "needs REPLICATION SLAVE)"),
    }
    alert = BackupFailureCallback("(flashback)", cmdb.platform_owner, "mysql-backup", cmdb.platform)
    with DAG(dag_id=FLASHBACK_DAG_ID, schedule=None, catchup=False, max_active_runs=4, params=params,
             tags=["mysql-backup", "flashback"],
             default_args={"owner": cmdb.platform_owner, "retries": 0, "on_failure_callback": alert},
             doc_md="Undo row changes from the binlog: writes the inverse SQL next to the instance's backups for "
                    "review, and applies it only when `apply` is true. See docs/flashback.md.") as dag:
        BinlogFlashbackOperator(task_id="flashback", execution_timeout=timedelta(hours=6))
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
    if only_dag_id in (None, FLASHBACK_DAG_ID):
        dags[FLASHBACK_DAG_ID] = flashback_dag(cmdb)
    for inst in cmdb.instances:
        dag_id = DAG_PREFIX + inst.name
        if only_dag_id is None or only_dag_id == dag_id:
            dags[dag_id] = backup_dag(inst, cmdb)
    return dags
