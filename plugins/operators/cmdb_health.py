"""CmdbHealthOperator: the CMDB's bad rows as a failing task (and so an alert)."""
from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from mysqlbackup.cmdb import load_cmdb


class CmdbHealthOperator(BaseOperator):
    """Reloads the CMDB and fails naming every row and field that could not become a DAG."""

    template_fields = ("cmdb_source",)

    def __init__(self, *, cmdb_source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cmdb_source = cmdb_source

    def execute(self, context: Any) -> dict:
        cmdb = load_cmdb(self.cmdb_source)
        self.log.info("CMDB %s: %d valid instances, %d errors", self.cmdb_source, len(cmdb.instances),
                      len(cmdb.errors))
        if cmdb.errors:
            lines = "\n".join(f"  - {e}" for e in cmdb.errors)
            raise AirflowFailException(f"CMDB {self.cmdb_source} has {len(cmdb.errors)} error(s); the rows named "
                                       f"below have NO backup DAG until fixed:\n{lines}")
        return {"instances": len(cmdb.instances), "pools": cmdb.pools()}
