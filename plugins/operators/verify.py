"""VerifyStoredOperator: re-read stored backups and compare their sha256 (scheduled verification).

The plan (which backups today) is ``mysqlbackup.verify.plan_stored_checks``; the read is
``storage.py check`` on the storage host, paced. A changed or vanished artifact marks the backup
``damaged`` (or ``missing``) in the catalog, alerts its instance's owner, and fails the task at
the end so that the platform owner hears of it too.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from airflow.sdk.exceptions import AirflowFailException

from mysqlbackup import planner
from mysqlbackup.cmdb import Instance
from mysqlbackup.text import capped
from mysqlbackup.verify import plan_stored_checks
from operators.backup import HostScriptOperator


class VerifyStoredOperator(HostScriptOperator):
    """Re-read today's share of the usable backups stored at one location."""

    def __init__(self, *, location: tuple[str, str], instances: Sequence[Instance] = (), window_days: int = 7,
                 max_mib_per_s: float = 200, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.location = tuple(location)
        self.instances = tuple(instances)
        self.window_days = window_days
        self.max_mib_per_s = max_mib_per_s

    def run(self, context: Any) -> dict:
        from operators.alerting import send_incident
        conn_id, base = self.location
        owners = {i.name: i for i in self.instances}
        here = [r for r in self.catalog.backups(status="usable")
                if r["storage_ssh_conn_id"] == conn_id and str(r["storage_path"] or "").startswith(base.rstrip("/") + "/")]
        plan = plan_stored_checks(here, self.catalog.last_checked(), self.window_days, datetime.now(timezone.utc))
        self.log.info("%d usable backups on %s:%s; re-reading %d today (each within %d days, at most %s MiB/s)",
                      len(here), conn_id, base, len(plan), self.window_days, self.max_mib_per_s)
        intact, incidents, errors, read = 0, [], [], 0
        for row in plan:
            argv = self.script(conn_id, "storage.py", "check", "--dir", row["storage_path"], "--artifact",
                               row["artifact"], "--sha256", row["sha256"], "--max-mib-per-s", str(self.max_mib_per_s))
            step = self.run_steps([(conn_id, argv)], timeout=12 * 3600)[0]
            result = step.result or {}
            found = "ok" if step.ok else result.get("found")
            if found is None:  # ssh or the host failed: nothing was learned about the backup
                errors.append(f"{row['instance']} {row['label']}: {step.error()}")
                self.log.warning("could not re-read %s of %s: %s", row["label"], row["instance"], step.error())
                continue
            read += int(result.get("size_bytes") or 0)
            self.catalog.record_check(row["instance"], row["label"], found, "" if found == "ok" else step.error(),
                                      result.get("size_bytes"), result.get("seconds"))
            if found == "ok":
                intact += 1
                continue
            status = "missing" if found == "no_directory" else "damaged"
            incidents.append(f"{row['instance']} {row['label']} {status}")
            self.log.error("backup %s of %s is %s: %s. It is never restored from", row["label"], row["instance"],
                           status.upper(), step.error())
            inst = owners.get(row["instance"])
            if inst is not None:
                send_incident(inst.name, inst.owner, inst.app, inst.alerts, status.upper(), f"backup {row['label']}",
                              f"the scheduled re-check of backup {row['label']} of {inst.name} on {conn_id} found: "
                              f"{step.error()}. It no longer counts as restorable.", context)
        self.log.info("re-read %d backups (%s): %d intact, %d damaged or missing, %d not reachable", len(plan),
                      planner.human_bytes(read), intact, len(incidents), len(errors))
        if incidents or errors:
            raise AirflowFailException(
                (f"{len(incidents)} stored backup(s) failed their re-check: {capped(incidents)} (marked in the "
                 "catalog, owners alerted). " if incidents else "")
                + (f"{len(errors)} could not be re-read: {capped(errors, 3)}" if errors else ""))
        return {"location": f"{conn_id}:{base}", "usable": len(here), "checked": len(plan), "intact": intact,
                "bytes": read}
