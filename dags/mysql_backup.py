"""One full-backup DAG per CMDB instance (``mysql_backup__<name>``), plus the CMDB health DAG.

Thin on purpose: the CMDB is a local file (``$MYSQL_BACKUP_CMDB`` or include/cmdb/instances.yaml);
everything else lives in plugins/. Bad CMDB rows are reported by mysql_backup_cmdb_errors.py
and by the health DAG; the valid rows still get their DAGs.
"""
from __future__ import annotations

from airflow.sdk import get_parsing_context

from dag_render import render_all
from mysqlbackup.cmdb import cmdb_path, load_cmdb

_cmdb = load_cmdb(cmdb_path())
_only = get_parsing_context().dag_id  # a task process builds just its own DAG
globals().update(render_all(_cmdb, only_dag_id=_only))
