"""Shows bad CMDB rows as an import error in the Airflow UI (the valid rows keep their DAGs).

This file defines no DAG. When the CMDB has errors, importing it raises, naming every row
and field, so ``airflow dags list-import-errors`` and the UI banner show what is wrong.
"""
from __future__ import annotations

from mysqlbackup.cmdb import CmdbInvalid, cmdb_path, load_cmdb

_cmdb = load_cmdb(cmdb_path())
if _cmdb.errors:
    raise CmdbInvalid(_cmdb.errors)
