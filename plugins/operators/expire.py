"""ExpireBackupsOperator: run the instance's retention plan after a successful backup.

The plan is ``mysqlbackup.expire.plan_expiry`` over the catalog; this operator first lists
storage and reconciles the catalog with it, and refuses to delete anything when the two
disagreed (it says what differed; the next run, on a reconciled catalog, goes on). Each planned
backup is marked ``expired`` in the catalog, then deleted on storage (``storage.py expire``:
the manifest first). A run killed halfway leaves expired rows whose directories the next run
deletes. ``policy.expire: dry_run`` logs the plan and deletes nothing.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from mysqlbackup.expire import plan_expiry
from mysqlbackup.text import capped
from operators.backup import HostScriptOperator, raise_for


class ExpireBackupsOperator(HostScriptOperator):
    """Expire this instance's backups that its retention no longer needs."""

    def run(self, context: Any) -> dict:
        inst = self.instance
        pol = inst.policy
        if pol.expire == "off":
            self.log.info("policy.expire is off: nothing expires for %s", inst.name)
            return {"mode": "off"}
        listing = self.list_storage(inst.storage.ssh_conn_id, inst.storage.base_dir, inst.name)
        report = self.reconcile(listing, {inst.name: inst}, context)
        differences = ([f"{name} {label} {status}" for status, name, label, _ in report.incidents]
                       + [f"{path}: {error}" for path, error in report.invalid]
                       + ([f"{report.added} manifest(s) the catalog did not know"] if report.added else [])
                       + [f"{label} back on storage" for _, label in report.restored])
        rows = self.catalog.backups(instance=inst.name)
        plan = plan_expiry(rows, datetime.now(timezone.utc), pol.retention_days, pol.retention_full_chains,
                           pol.keep_forever)
        for line in plan.describe():
            self.log.info("retention plan: %s", line)
        result = {"mode": pol.expire, "keep": sorted(plan.keep), "expire": sorted(plan.expire),
                  "binlog_horizon": plan.binlog_horizon, "expired": [], "freed_bytes": 0}
        if pol.expire == "dry_run":
            self.log.info("policy.expire is dry_run: %d backup(s) would expire, nothing is deleted", len(plan.expire))
            return result
        if differences:
            raise AirflowFailException(
                f"refusing to expire anything for {inst.name}: the catalog and storage disagreed ("
                + capped(differences) + "). The catalog is reconciled now; the next run expires on that picture")
        by_label = {r["label"]: r for r in rows}
        # what an earlier, killed expiry marked but did not delete
        leftover = sorted(set(r["label"] for r in rows if r["status"] == "expired")
                          & {d.rstrip("/").rsplit("/", 1)[-1] for d in listing.incomplete}
                          | {p.split("/")[-2] for p, _ in listing.manifests
                             if by_label.get(p.split("/")[-2], {}).get("status") == "expired"})
        for label in sorted(plan.expire) + leftover:
            row = by_label[label]
            self.catalog.expire_backup(inst.name, label, plan.expire.get(label, "finishing an earlier expiry"))
            if row["status"] == "missing":
                self.log.info("expired %s: it was already gone from storage", label)
                result["expired"].append(label)
                continue
            step = self.run_steps([(inst.storage.ssh_conn_id,
                                    self.storage_script("expire", "--dir", row["storage_path"], "--label", label))],
                                  timeout=3600)[0]
            raise_for(step, f"expiring {label}")
            result["expired"].append(label)
            result["freed_bytes"] += int(step.result.get("freed_bytes") or 0)
            self.log.info("expired %s (%s)", label, plan.expire.get(label, "an earlier expiry finished"))
        self.log.info("retention of %s: %d kept, %d expired", inst.name, len(plan.keep), len(result["expired"]))
        return result
