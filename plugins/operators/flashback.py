"""BinlogFlashbackOperator: the inverse SQL of a binlog window, stored for review, applied on request.

It reads the instance's binlog as a replication client (the instance's ``mysql_conn_id``, or
``binlog_conn_id``, needs REPLICATION SLAVE), writes the script next to the instance's backups
(``<base_dir>/<instance>/flashback/<YYYYMMDD-HHMMSS>_<run id>/flashback.sql`` on the storage host), logs
the summary, and applies it only when ``apply`` is true (with ``apply_conn_id``'s credentials).
"""
from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from functools import partial
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from mysqlbackup.cmdb import cmdb_path, load_cmdb
from mysqlbackup.flashback.select import Selection, SelectionError
from mysqlbackup.text import capped
from operators.backup import HostScriptOperator, mysql_login, raise_for


def _conn_kwargs(conn_id: str, host: str, port: int) -> dict:
    conn = mysql_login(conn_id)
    return {"host": conn.host or host, "port": int(conn.port or port), "user": conn.login,
            "password": conn.password or "", "charset": "utf8mb4", "connect_timeout": 10}


class BinlogFlashbackOperator(HostScriptOperator):
    """Generate (and optionally apply) the flashback of a binlog window of one CMDB instance.

    Every argument comes from the DAG run's params (validated by the trigger form):
    ``instance``, ``databases``, ``tables``, ``start_datetime``, ``stop_datetime``,
    ``start_position``, ``stop_position``, ``start_gtid``, ``stop_gtid``, ``types``, ``apply``,
    ``apply_conn_id``, ``binlog_conn_id``.
    """

    ui_color = "#fbeee8"

    def run(self, context: Any) -> dict:
        p = context["params"]
        cmdb = load_cmdb(cmdb_path())
        inst = cmdb.by_name(str(p.get("instance") or ""))
        if inst is None:
            known = capped(i.name for i in cmdb.instances)
            raise AirflowFailException(f"instance: unknown instance {str(p.get('instance'))[:80]!r}: not a valid row "
                                       f"of the CMDB {cmdb.source} (known: {known})")
        self.instance = inst
        try:
            sel = Selection.parse(databases=p.get("databases") or (), tables=p.get("tables") or (),
                                  start_time=p.get("start_datetime") or None, stop_time=p.get("stop_datetime") or None,
                                  start_position=p.get("start_position") or None,
                                  stop_position=p.get("stop_position") or None,
                                  start_gtid=p.get("start_gtid") or None, stop_gtid=p.get("stop_gtid") or None,
                                  types=p.get("types") or None)
        except SelectionError as exc:
            raise AirflowFailException(f"bad flashback parameters: {exc}") from exc
        if not any((sel.start_time, sel.start_position, sel.start_gtid)):
            raise AirflowFailException("give the start of the window (start_datetime, start_position or "
                                       "start_gtid): a flashback of the whole binlog is almost never meant")
        apply = bool(p.get("apply"))
        apply_conn = str(p.get("apply_conn_id") or "")
        if apply and not apply_conn:
            raise AirflowFailException("apply is true but apply_conn_id is empty: name the Airflow connection of a "
                                       "user allowed to change the selected tables")
        from mysqlbackup.flashback.engine import FlashbackError, generate_from_live
        source = _conn_kwargs(str(p.get("binlog_conn_id") or inst.mysql_conn_id), inst.host, inst.port)
        # unique per run: two runs in the same second must not write over each other's script
        run = "".join(c if c.isalnum() else "-" for c in str(context.get("run_id") or ""))[-40:].strip("-")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + (f"_{run}" if run else "")
        with tempfile.TemporaryDirectory(prefix="flashback-") as tmp:
            local = os.path.join(tmp, "flashback.sql")
            try:
                summary = generate_from_live(source, sel, local, tmp, log=self.log.info,
                                             where=str(p.get("where") or "row"))
            except FlashbackError as exc:
                raise AirflowFailException(f"flashback of {inst.name} refused: {exc}") from exc
            self.log.info("%s", summary.header())
            target_dir = f"{inst.storage.base_dir}/{inst.name}/flashback/{stamp}"
            step = self.run_steps([(inst.storage.ssh_conn_id,
                                    self.storage_script("receive", "--dir", target_dir, "--artifact", "flashback.sql"))],
                                  timeout=3600, stdin_path=local)[0]
            raise_for(step, "storing the flashback script")
            stored = step.result["path"]
            self.log.info("flashback script stored on %s: %s (%s bytes, sha256 %s)", inst.storage.ssh_conn_id,
                          stored, step.result.get("size_bytes"), step.result.get("sha256"))
            result = {"instance": inst.name, "stored": stored, "sha256": step.result.get("sha256"),
                      **summary.as_dict(), "applied": False}
            result["output"] = stored
            if apply:
                result["apply"] = self._apply(local, apply_conn, inst)
                result["applied"] = True
            return result

    def _apply(self, path: str, conn_id: str, inst) -> dict:
        import pymysql

        from mysqlbackup.flashback.apply import ApplyRefused, ApplyStopped, ScriptRefused, apply_script
        target = _conn_kwargs(conn_id, inst.host, inst.port)
        try:
            with open(path, "rb") as f:
                report = apply_script(f, partial(pymysql.connect, **target), log=self.log.info)
        except ApplyStopped as exc:
            raise AirflowFailException(f"apply stopped: {exc}") from exc
        except ScriptRefused as exc:
            raise AirflowFailException(f"apply of the flashback script {path} {exc}") from exc
        except ApplyRefused as exc:
            raise AirflowFailException(f"apply refused ({exc}); the script is stored for review: apply it with "
                                       "mysql-flashback apply --force once reviewed") from exc
        self.log.info("applied %d transactions, %d statements in %.1f s%s", report.transactions, report.statements,
                      report.seconds, f" ({report.edit_note})" if report.edited else "")
        return {"transactions": report.transactions, "statements": report.statements, "seconds": report.seconds,
                "edited": report.edited}
