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

from mysqlbackup.expire import plan_binlog_expiry, plan_expiry
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
        here = f"{inst.storage.base_dir.rstrip('/')}/{inst.name}/"
        for label in sorted(plan.expire) + leftover:
            row = by_label[label]
            if row["status"] != "missing" and (row["storage_ssh_conn_id"] != inst.storage.ssh_conn_id
                                               or not str(row["storage_path"] or "").startswith(here)):
                # stored at another location (the CMDB moved the instance): not this run's to delete
                self.log.warning("not expiring %s: it is stored at %s:%s, not at this instance's location %s:%s",
                                 label, row["storage_ssh_conn_id"], row["storage_path"], inst.storage.ssh_conn_id,
                                 here)
                continue
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
        result["binlogs"] = self._expire_binlogs(plan.binlog_horizon and by_label[plan.binlog_horizon])
        return result

    def _expire_binlogs(self, horizon: dict | None) -> dict:
        """Delete the archived binlogs the oldest kept backup no longer needs (all of it kept without
        a kept backup, or when that backup has no GTID)."""
        inst = self.instance
        files = self.catalog.binlog_files(inst.name)
        if not files:
            return {"expired": [], "freed_bytes": 0}
        gtid = (horizon or {}).get("gtid")
        drop = plan_binlog_expiry(files, gtid)
        self.log.info("binlog archive of %s: %d file(s), the oldest kept backup %s is at GTID %s: %d file(s) no "
                      "longer needed", inst.name, len(files), (horizon or {}).get("label"), gtid, len(drop))
        by_dir: dict[str, list[dict]] = {}
        for f in drop:
            by_dir.setdefault(str(f["storage_path"]).rsplit("/", 1)[0], []).append(f)
        expired, freed = [], 0
        archive = f"{inst.storage.base_dir.rstrip('/')}/{inst.name}/binlog/"
        for idir, group in sorted(by_dir.items()):
            if not idir.startswith(archive):
                self.log.warning("not expiring %s: not under the instance's archive %s", idir, archive)
                continue
            for f in group:  # recorded first: a stale report can never bring an expired file back
                self.catalog.expire_binlog_file(inst.name, f["server_identity"], f["name"])
            args = ["expire-binlog", "--dir", idir]
            for f in group:
                args += ["--file", f["name"]]
            step = self.run_steps([(inst.storage.ssh_conn_id, self.storage_script(*args))], timeout=3600)[0]
            raise_for(step, f"expiring archived binlogs in {idir}")
            expired += [f"{f['server_identity']}/{f['name']}" for f in group]
            freed += int(step.result.get("freed_bytes") or 0)
        if expired:
            self.log.info("expired %d archived binlog file(s): %s", len(expired), capped(expired))
        return {"expired": expired, "freed_bytes": freed}
