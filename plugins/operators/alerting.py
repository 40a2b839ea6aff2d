"""Failure callback: tell the instance's owner, and never leave a failed run looking usable."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseHook

from mysqlbackup.alerts import Alert, EmailNotifier, WebhookNotifier, send_all
from mysqlbackup.cmdb import AlertConfig

log = logging.getLogger(__name__)


def build_notifiers(cfg: AlertConfig) -> list:
    """Notifiers from the CMDB alert config; secrets come from Airflow connections only."""
    notifiers: list = []
    if cfg.email_to and cfg.smtp_conn_id:
        conn = BaseHook.get_connection(cfg.smtp_conn_id)
        extra = conn.extra_dejson or {}
        sender = cfg.email_from or extra.get("from_email") or (conn.login if conn.login and "@" in conn.login else None) \
            or "mysql-backup@localhost"
        notifiers.append(EmailNotifier(
            host=conn.host or "localhost", port=int(conn.port or 25), sender=sender,
            recipients=list(cfg.email_to), username=conn.login or None, password=conn.password or None,
            starttls=_truthy(extra.get("starttls")), ssl=_truthy(extra.get("ssl"))))
    url, headers = cfg.webhook_url, {}
    if cfg.webhook_conn_id:
        conn = BaseHook.get_connection(cfg.webhook_conn_id)
        extra = conn.extra_dejson or {}
        url = extra.get("url") or _http_url(conn)
        headers = dict(extra.get("headers") or {})
        if conn.password:  # a bearer token lives in the connection's password, never in the CMDB
            headers.setdefault("Authorization", f"Bearer {conn.password}")
    if url:
        notifiers.append(WebhookNotifier(url, headers=headers))
    return notifiers


class BackupFailureCallback:
    """``on_failure_callback`` of every task of an instance's DAG."""

    def __init__(self, instance_name: str, owner: str, app: str, alerts: AlertConfig,
                 instance: Any = None) -> None:
        self.instance_name = instance_name
        self.owner = owner
        self.app = app
        self.alerts = alerts
        self.instance = instance  # the CMDB Instance of a backup DAG: its failed backup is discarded

    def __call__(self, context: dict[str, Any]) -> None:
        ti = context.get("ti")
        error = context.get("exception")
        label = None
        try:
            label = ti.xcom_pull(task_ids="backup", key="label") if ti else None
        except Exception:  # noqa: BLE001 - the alert matters more than the label
            log.exception("could not read the backup label")
        if label:
            try:
                from mysqlbackup.catalog import Catalog
                Catalog().fail_backup(self.instance_name, label, f"{getattr(ti, 'task_id', '?')}: {error}"[:4000])
            except Exception:  # noqa: BLE001
                log.exception("could not mark backup %s failed in the catalog", label)
            if self.instance is not None:
                # the task failed for good (this callback runs after the last try): what it left on
                # storage goes now, not at the next backup (a full storage host needs the space back).
                # discard refuses a directory holding a manifest: a committed backup stays.
                try:
                    from operators.backup import discard_unfinished
                    discard_unfinished(self.instance, label)
                except Exception:  # noqa: BLE001 - the alert matters more
                    log.exception("could not discard the unfinished backup %s", label)
        alert = Alert(
            instance=self.instance_name, dag_id=getattr(ti, "dag_id", "?"), task_id=getattr(ti, "task_id", "?"),
            run_id=str(context.get("run_id") or getattr(ti, "run_id", "")),
            try_number=int(getattr(ti, "try_number", 0) or 0),
            error=str(error) if error is not None else "task failed (no exception recorded)",
            log_url=_log_url(ti), owner=self.owner, app=self.app,
            when=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        try:
            notifiers = build_notifiers(self.alerts)
        except Exception as exc:  # noqa: BLE001 - a broken alert config must still be visible
            log.error("alert for %s not sent: the alert configuration is broken: %s", self.instance_name, exc)
            return
        if not notifiers:
            # the CMDB sets no email_to or webhook for this instance: the failure is in the task's
            # state and log only (python -m mysqlbackup check lists instances without alerts)
            log.info("no notifier configured for %s (alerts in the CMDB): the failure is not sent anywhere",
                     self.instance_name)
            return
        for problem in send_all(alert, notifiers):
            log.error("alert delivery failed: %s", problem)


def send_incident(instance_name: str, owner: str, app: str, alerts: AlertConfig, event: str, what: str,
                  message: str, context: dict[str, Any]) -> list[str]:
    """Tell an instance's owner about an incident a task found (a backup MISSING from storage, one
    DAMAGED) without failing the task; returns the delivery problems (also logged)."""
    ti = context.get("ti")
    alert = Alert(
        instance=instance_name, dag_id=getattr(ti, "dag_id", "?"), task_id=getattr(ti, "task_id", "?"),
        run_id=str(context.get("run_id") or getattr(ti, "run_id", "")),
        try_number=int(getattr(ti, "try_number", 0) or 0), error=message, log_url=_log_url(ti), owner=owner,
        app=app, when=datetime.now(timezone.utc).isoformat(timespec="seconds"), event=event, what=what)
    try:
        notifiers = build_notifiers(alerts)
    except Exception as exc:  # noqa: BLE001 - a broken alert config must still be visible
        log.error("%s alert for %s not sent: the alert configuration is broken: %s", event, instance_name, exc)
        return [str(exc)]
    if not notifiers:
        log.warning("%s %s of %s: no notifier configured (alerts in the CMDB), nobody was told", event, what,
                    instance_name)
        return ["no notifier configured"]
    problems = send_all(alert, notifiers)
    for problem in problems:
        log.error("alert delivery failed: %s", problem)
    return problems


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _http_url(conn: Any) -> str | None:
    """An Airflow HTTP connection as a URL: host may be a whole URL, or scheme/host/port/path parts."""
    host = conn.host or ""
    if not host or "://" in host:
        return host or None
    port = f":{conn.port}" if conn.port else ""
    path = (conn.extra_dejson or {}).get("endpoint", "")
    return f"{conn.schema or 'https'}://{host}{port}/{str(path).lstrip('/')}"


def _log_url(ti: Any) -> str | None:
    try:
        return getattr(ti, "log_url", None)
    except Exception:  # noqa: BLE001
        return None
