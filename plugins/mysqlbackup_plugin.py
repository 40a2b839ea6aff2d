"""The Airflow plugin of this project: what it adds to the api-server.

- ``TriggerGuard`` (plugins/web/guard.py): trigger requests of the ``mysql_*`` DAGs are bounded
  in size, and their refusals (HTTP 400) stay short and name the param.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from web.guard import TriggerGuard


class MysqlBackupPlugin(AirflowPlugin):
    name = "mysql_backup"
    fastapi_root_middlewares = [{"middleware": TriggerGuard, "args": [], "kwargs": {},
                                 "name": "mysql-backup trigger guard"}]
