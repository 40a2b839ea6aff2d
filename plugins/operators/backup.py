"""Operators of the nightly full backup DAG.

Each operator says what its task means: which host script runs where, how its exit code maps
to the task state (one place: ``raise_for``), and what goes to XCom (never a secret). The
decisions themselves live in ``mysqlbackup.planner`` and friends, testable without Airflow.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Sequence

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hooks.openssh import OpenSSHHook
from mysqlbackup import backup as chains
from mysqlbackup import planner
from mysqlbackup.catalog import Catalog, RebuildReport, StorageListing
from mysqlbackup.cmdb import Instance
from mysqlbackup.labels import INCREMENTAL, is_label, new_label
from mysqlbackup.manifest import MANIFEST_VERSION, Manifest, to_json
from mysqlbackup.remote import SCRIPTS_MISSING, Pipeline, ScriptBundle, StepResult

ARTIFACT_BASE = "backup.xbstream"
SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}


def mysql_login(conn_id: str):
    """A MySQL connection from Airflow that names a user (fails for good when it does not)."""
    conn = BaseHook.get_connection(conn_id)
    if not conn.login:
        raise AirflowFailException(f"connection {conn_id!r} has no login: set the MySQL user")
    return conn


def raise_for(step: StepResult, what: str) -> None:
    """Map a failed host-script step to the task outcome: fail for good, or let Airflow retry."""
    if step.ok:
        return
    message = f"{what} failed on {step.name}: {step.error()}"
    if step.outcome == "fail":
        raise AirflowFailException(message)
    raise AirflowException(message)


class RemoteArgv(list):
    """An ssh command line that remembers which connection it goes to."""

    conn_id: str = ""


class HostScriptOperator(BaseOperator):
    """Base: runs this project's host scripts on hosts named by Airflow SSH connections.

    Subclasses implement ``run(context)``. Every remote call checks, in the same ssh round trip,
    that the scripts are installed; only a call that finds them missing installs them and runs
    again. Hooks (and their private key / known_hosts files) are closed however the task ends.
    """

    ui_color = "#e8f1fb"

    # the CMDB instance (and its replicas) a task works on, set by ``for_instance``: no __init__ of
    # our own, since Airflow wraps every operator class's __init__ and an extra layer costs each of
    # the thousands of operators a parse builds (measured: about 0.1 ms an operator)
    instance: Instance | None = None
    replicas: tuple[Instance, ...] = ()

    @classmethod
    def for_instance(cls, instance: Instance, replicas: Sequence[Instance] = (), **kwargs: Any):
        """An operator of this class for one CMDB instance."""
        op = cls(**kwargs)
        op.instance = instance
        op.replicas = tuple(replicas)
        return op

    # per-run state, created on first use: DAG parsing builds thousands of these operators
    @cached_property
    def _hooks(self) -> dict[str, OpenSSHHook]:
        return {}

    @cached_property
    def _deployed(self) -> set[str]:
        return set()

    _pipeline: Pipeline | None = None

    @cached_property
    def bundle(self) -> ScriptBundle:
        return ScriptBundle.build()

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog()

    def hook(self, ssh_conn_id: str) -> OpenSSHHook:
        if ssh_conn_id not in self._hooks:
            self._hooks[ssh_conn_id] = OpenSSHHook(ssh_conn_id)
        return self._hooks[ssh_conn_id]

    def _log_line(self, line: str) -> None:
        self.log.info("%s", line)

    def deploy(self, ssh_conn_id: str) -> None:
        """Install the host scripts on that host once (content-addressed directory)."""
        if ssh_conn_id in self._deployed:
            return
        target = self.hook(ssh_conn_id).target
        steps = [(target.describe(), target.command(self.bundle.install_command()))]
        res = Pipeline(steps, self._log_line, stdin_data=self.bundle.data).run(timeout=120)[0]
        if res.returncode != 0:
            tail = " | ".join(res.stderr_tail[-5:])
            msg = f"could not install host scripts on {target.describe()} ({ssh_conn_id}): exit {res.returncode}: {tail}"
            raise AirflowException(msg)
        self._deployed.add(ssh_conn_id)

    def script(self, ssh_conn_id: str, script: str, *args: str, become: bool = False,
               python: str = "python3") -> RemoteArgv:
        target = self.hook(ssh_conn_id).target
        argv = RemoteArgv(target.command(self.bundle.script_argv(python, script, *args), become=become,
                                         require=self.bundle.marker))
        argv.conn_id = ssh_conn_id
        return argv

    def run_steps(self, steps: list[tuple[str, list[str]]], stdin: bytes | None = None,
                  timeout: float | None = None, stdin_path: str | None = None) -> list[StepResult]:
        for attempt in (1, 2):
            self._pipeline = Pipeline(steps, self._log_line, stdin_data=stdin, stdin_path=stdin_path)
            try:
                results = self._pipeline.run(timeout=timeout)
            finally:
                self._pipeline = None
            missing = {getattr(argv, "conn_id", "") for (_, argv), r in zip(steps, results)
                       if r.returncode == SCRIPTS_MISSING}
            if not missing or attempt == 2:
                return results
            for conn_id in sorted(missing):
                self._deployed.discard(conn_id)
                self.deploy(conn_id)
        return results

    def execute(self, context: Any) -> Any:
        try:
            return self.run(context)
        finally:
            self.close_hooks()

    def run(self, context: Any) -> Any:
        raise NotImplementedError

    def close_hooks(self) -> None:
        for hook in self._hooks.values():
            hook.close()
        self._hooks.clear()
        self._deployed.clear()

    def db_script(self, inst: Instance, verb: str, *args: str) -> list[str]:
        return self.script(inst.ssh_conn_id, "dbhost.py", verb, *args, become=inst.become, python=inst.python)

    def storage_script(self, verb: str, *args: str) -> list[str]:
        inst = self.instance
        return self.script(inst.storage.ssh_conn_id, "storage.py", verb, *args, become=inst.become,
                           python=inst.python)

    @staticmethod
    def credentials(inst: Instance) -> bytes:
        """The backup user's credentials as one JSON line, for the host script's stdin only."""
        conn = mysql_login(inst.mysql_conn_id)
        return (json.dumps({"user": conn.login, "password": conn.password or ""}) + "\n").encode()

    def by_name(self, name: str) -> Instance:
        for inst in (self.instance, *self.replicas):
            if inst.name == name:
                return inst
        raise AirflowFailException(f"{name!r} is neither {self.instance.name} nor one of its replicas")

    def on_kill(self) -> None:
        if self._pipeline is not None:
            self._pipeline.terminate()

    def list_storage(self, conn_id: str, base_dir: str, instance: str | None = None,
                     scope: Sequence[str] = ()) -> StorageListing:
        """What one storage location holds: every manifest, and the label directories without one."""
        listed_at = datetime.now(timezone.utc)
        args = ["list", "--dir", base_dir] + (["--instance", instance] if instance else [])
        step = self.run_steps([(conn_id, self.script(conn_id, "storage.py", *args))], timeout=3600)[0]
        raise_for(step, f"listing {base_dir}")
        manifests = []
        for line in step.stdout.decode("utf-8", "replace").splitlines():
            if line.strip():
                item = json.loads(line)
                manifests.append((item["path"], item["manifest"]))
        unreadable = [(u.get("path", "?"), u.get("error", "?")) for u in step.result.get("unreadable") or []]
        return StorageListing(manifests=manifests, incomplete=list(step.result.get("incomplete") or []),
                              unreadable=unreadable, scope=frozenset(scope or ([instance] if instance else [])),
                              listed_at=listed_at, location=(conn_id, base_dir))

    def reconcile(self, listing: StorageListing, instances: dict[str, Instance], context: Any) -> RebuildReport:
        """Bring the catalog in line with a storage listing; alert each owner of a backup found missing or
        damaged (once: the row is marked, the next run finds nothing new)."""
        from operators.alerting import send_incident
        report = self.catalog.reconcile(listing)
        where = f"{listing.location[0]}:{listing.location[1]}" if listing.location else "storage"
        for path, error in report.invalid:
            self.log.error("invalid manifest %s on %s: %s", path, where, error)
        for name, label in report.restored:
            self.log.warning("backup %s of %s is back on %s with a valid manifest: usable again", label, name, where)
        for status, name, label, reason in report.incidents:
            self.log.error("backup %s of %s, catalogued as usable, is now %s: %s (on %s). It is never restored "
                           "from; find out what removed it", label, name, status.upper(), reason, where)
            inst = instances.get(name)
            if inst is not None:
                send_incident(name, inst.owner, inst.app, inst.alerts, status.upper(), f"backup {label}",
                              f"backup {label} of {name} on {where} was catalogued as usable and is now {status}: "
                              f"{reason}. It no longer counts as restorable.", context)
        return report

    def _discard_leftovers(self, context: Any) -> RebuildReport:
        """Reconcile this instance's backups with storage, then remove its unfinished ones.

        A label directory is removed only when it is provably an unfinished backup: no manifest,
        and no catalog row that ever called it usable (such a directory is damaged: kept and
        alerted). One run per instance at a time (max_active_runs=1), so no run of this instance
        is in progress; and discard itself refuses a directory holding a manifest.
        """
        inst = self.instance
        listing = self.list_storage(inst.storage.ssh_conn_id, inst.storage.base_dir, inst.name)
        report = self.reconcile(listing, {inst.name: inst}, context)
        statuses = self.catalog.statuses(inst.name)
        for label_dir in listing.incomplete:
            label = label_dir.rstrip("/").rsplit("/", 1)[-1]
            if not is_label(label):
                continue  # never anything but an unfinished backup
            if statuses.get(label) in ("usable", "missing", "damaged", "expired"):
                self.log.warning("keeping %s: it has no manifest but the catalog calls it %s (damaged, never "
                                 "removed by cleanup)", label_dir, statuses[label])
                continue
            self.log.warning("discarding %s: an earlier backup that never finished (no manifest, catalogued "
                             "as %s)", label_dir, statuses.get(label) or "nothing")
            self._discard(label_dir)
            # and the scratch copies a killed verify of it may have left (a whole extracted datadir)
            self._discard(self.scratch_dir(label))
            self._discard(self.scratch_dir(label) + "-incremental")
        # catalog rows still 'running' from a worker that died: one run at a time, so they are stale
        for row in self.catalog.backups(instance=inst.name, status="running"):
            self.log.warning("backup %s was left running by an earlier run: marked failed", row["label"])
            self.catalog.fail_backup(inst.name, row["label"],
                                     "abandoned: the run that started it stopped before it finished")
        return report

    def scratch_dir(self, label: str) -> str:
        return scratch_path(self.instance.storage.base_dir, self.instance.name, label)

    def _discard(self, label_dir: str) -> None:
        try:
            step = self.run_steps([(self.instance.storage.ssh_conn_id,
                                    self.storage_script("discard", "--dir", label_dir))], timeout=600)[0]
            if not step.ok:
                self.log.warning("could not discard %s: %s", label_dir, step.error())
        except Exception as exc:  # noqa: BLE001 - cleanup must not mask the real failure
            self.log.warning("could not discard %s: %s", label_dir, exc)


class CollectFactsOperator(HostScriptOperator):
    """Live facts of the instance and of each of its replicas, recorded in the catalog."""

    def run(self, context: Any) -> dict[str, dict]:
        facts: dict[str, dict] = {}
        for inst in (self.instance, *self.replicas):
            argv = self.db_script(inst, "facts", "--flavor", inst.flavor, "--host", inst.host,
                                  "--port", str(inst.port))
            try:
                step = self.run_steps([(inst.name, argv)], stdin=self.credentials(inst), timeout=300)[0]
            except AirflowException as exc:  # e.g. the replica's host is unreachable over ssh
                facts[inst.name] = {"reachable": False, "error": str(exc)}
                continue
            if step.ok:
                facts[inst.name] = dict(step.result.get("facts") or {}, reachable=True)
            else:
                got = (step.result or {}).get("facts") or {}
                facts[inst.name] = dict(got, reachable=False, error=step.error())
            self.log.info("facts of %s: %s", inst.name, _summary(facts[inst.name]))
        now = datetime.now(timezone.utc)
        for name, f in facts.items():
            self.catalog.record_facts(name, f, now)
        main = facts[self.instance.name]
        if main.get("reachable") and main.get("flavor_detected") not in (None, self.instance.flavor):
            raise AirflowFailException(
                f"{self.instance.name}: the CMDB says flavor {self.instance.flavor!r} but the server is "
                f"{main.get('version')!r}: fix the CMDB row")
        return facts


class ChooseSourceOperator(HostScriptOperator):
    """Pick the backup source (a healthy replica, the primary only where the policy allows) and the
    kind of backup: full, or an incremental on the newest backup of its chain (``kind`` param)."""

    def run(self, context: Any) -> dict:
        facts = context["ti"].xcom_pull(task_ids="collect_facts")
        requested = str((context.get("params") or {}).get("kind") or "auto")
        dag_run = context.get("dag_run")
        scheduled = str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled")
        scheduled_at = getattr(dag_run, "logical_date", None) if scheduled else None
        history = self.catalog.backups(instance=self.instance.name)
        want, _ = chains.wants_incremental(requested, self.instance.policy, scheduled_at)
        try:
            choice = planner.choose_source(self.instance, list(self.replicas), facts,
                                           prefer=chains.chain_source(history) if want else None)
        except planner.NoBackupSource as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("%s", choice.reason)
        try:
            plan = chains.plan_kind(requested, self.instance.policy, scheduled_at, history, choice.name,
                                    facts.get(choice.name))
        except chains.NoIncrementalBase as exc:
            raise AirflowFailException(str(exc)) from exc
        self.log.info("%s backup: %s", plan.kind, plan.reason)
        src = facts[choice.name]
        return {"name": choice.name, "host": choice.host, "port": choice.port,
                "ssh_conn_id": choice.ssh_conn_id, "is_primary": choice.is_primary,
                "reason": choice.reason, "datadir": src.get("datadir"), "socket": src.get("socket"),
                "version": src.get("version"), "data_bytes": src.get("data_bytes"),
                "server_id": src.get("server_id"), "is_replica": bool(src.get("replica")),
                **{f"kind_{k}" if k in ("reason", "requested") else k: v for k, v in plan.as_dict().items()}}


class ReserveSpaceOperator(HostScriptOperator):
    """Keep the reserve file on the source host; check the backup will fit on storage."""

    def run(self, context: Any) -> dict:
        src = context["ti"].xcom_pull(task_ids="choose_source")
        inst = self.by_name(src["name"])
        pol = self.instance.policy
        if not src.get("datadir"):
            raise AirflowFailException(f"{inst.name}: the facts have no datadir; cannot place the reserve file")
        args = ["--datadir", src["datadir"], "--percent", str(pol.reserve.percent)]
        if pol.reserve.path:
            args += ["--path", pol.reserve.path]
        step = self.run_steps([(inst.name, self.db_script(inst, "reserve", *args))], timeout=600)[0]
        raise_for(step, "reserve space")
        reserve = step.result
        self.log.info("reserve file %s: %s (%s bytes)", reserve.get("path"), reserve.get("action"),
                      reserve.get("size_bytes"))
        # the catalog is reconciled with storage, and what a dead run left there goes first: it
        # frees space before the space is checked
        reconciled = self._discard_leftovers(context)
        # the stored artifact, plus the scratch copy verify extracts and prepares next to it
        artifact = planner.estimate_backup_bytes(self.catalog.history_sizes(self.instance.name),
                                                 src.get("data_bytes"), pol.compress)
        scratch = planner.estimate_backup_bytes([], src.get("data_bytes"), "none")
        need = artifact + scratch
        step = self.run_steps([(self.instance.storage.ssh_conn_id,
                                self.storage_script("space", "--dir", self.instance.storage.base_dir,
                                                    "--need", str(need)))], timeout=300)[0]
        raise_for(step, "storage space check")
        self.log.info("storage has %s free; the backup needs about %s (artifact %s + verify scratch %s)",
                      planner.human_bytes(step.result["free_bytes"]), planner.human_bytes(need),
                      planner.human_bytes(artifact), planner.human_bytes(scratch))
        return {"reserve": reserve, "storage_free_bytes": step.result["free_bytes"], "need_bytes": need,
                "artifact_estimate_bytes": artifact, "scratch_estimate_bytes": scratch,
                "catalog": {"missing": len(reconciled.missing), "damaged": len(reconciled.damaged),
                            "restored": len(reconciled.restored), "added": reconciled.added}}


def discard_unfinished(instance: Instance, label: str) -> None:
    """Remove a failed backup's label directory (never one holding a manifest) and its verify scratch
    copy, from outside a task (the failure callback)."""
    op = HostScriptOperator.for_instance(instance, task_id="discard_unfinished_backup")
    try:
        op._discard(f"{instance.storage.base_dir}/{instance.name}/{label}")
        op._discard(op.scratch_dir(label))
        op._discard(op.scratch_dir(label) + "-incremental")
    finally:
        op.close_hooks()


def scratch_path(base_dir: str, instance: str, label: str) -> str:
    """Where verify extracts and prepares a backup (removed after verify)."""
    return f"{base_dir}/.scratch/{instance}-{label}"


class BackupOperator(HostScriptOperator):
    """Stream a full or an incremental physical backup from the source host into the storage host."""

    def run(self, context: Any) -> dict:
        ti = context["ti"]
        src = ti.xcom_pull(task_ids="choose_source")
        inst = self.by_name(src["name"])
        pol = self.instance.policy
        kind = src.get("kind") or "full"
        started = datetime.now(timezone.utc)
        label = new_label(kind, started, base=src.get("chain") if kind == INCREMENTAL else None)
        self.log.info("%s backup %s: %s", kind, label, src.get("kind_reason") or "")
        label_dir = f"{self.instance.storage.base_dir}/{self.instance.name}/{label}"
        artifact = ARTIFACT_BASE + SUFFIX[pol.compress]
        ti.xcom_push(key="label", value=label)
        self.catalog.start_backup(self.instance.name, label, context.get("run_id") or "", inst.name, inst.host,
                                  inst.port, started, self.instance.storage.ssh_conn_id, label_dir, kind=kind,
                                  parent=src.get("parent"), chain=src.get("chain"))
        db_args = ["--flavor", inst.flavor, "--host", inst.host, "--port", str(inst.port),
                   "--parallel", str(pol.parallel), "--compress", pol.compress]
        if kind == INCREMENTAL:
            db_args += ["--incremental-lsn", str(int(src["incremental_lsn"]))]
        if src.get("is_replica"):
            db_args.append("--slave-info")
            if pol.safe_slave_backup:
                db_args.append("--safe-slave-backup")
        steps = [(inst.name, self.db_script(inst, "backup", *db_args)),
                 (self.instance.storage.ssh_conn_id,
                  self.storage_script("receive", "--dir", label_dir, "--artifact", artifact))]
        t0 = time.monotonic()
        try:
            db, store = self.run_steps(steps, stdin=self.credentials(inst))
            # when the receiver failed and said why (a full or read-only disk), the database side's
            # failure is its consequence (a broken pipe): name the cause first
            order = [(db, "backup"), (store, "receiving the backup")]
            if not store.ok and (store.result or {}).get("error") and not (db.result or {}).get("error"):
                order.reverse()
            for step, what in order:
                raise_for(step, what)
        except BaseException as exc:
            self._discard(label_dir)
            self.catalog.fail_backup(self.instance.name, label, str(exc)[:4000])
            raise
        seconds = time.monotonic() - t0
        rate = store.result["size_bytes"] / seconds / 2**20 if seconds else 0
        self.log.info("backup %s: %s in %.1f s (%.1f MiB/s) to %s", label,
                      planner.human_bytes(store.result["size_bytes"]), seconds, rate, label_dir)
        return {"label": label, "label_dir": label_dir, "artifact": artifact, "compress": pol.compress,
                "kind": kind, "parent": src.get("parent"), "chain": src.get("chain") or label,
                "chain_links": src.get("chain_links") or [],
                "started_at": started.isoformat(), "finished_at": datetime.now(timezone.utc).isoformat(),
                "seconds": seconds, "size_bytes": store.result["size_bytes"], "sha256": store.result["sha256"],
                "source": src, "db": {k: db.result.get(k) for k in ("tool", "checkpoints", "binlog",
                                                                     "server_version", "seconds")}}

class VerifyBackupOperator(HostScriptOperator):
    """Re-read and checksum the artifact, extract a scratch copy and prepare it."""

    def run(self, context: Any) -> dict:
        ti = context["ti"]
        b = ti.xcom_pull(task_ids="backup")
        flavor = self.by_name(b["source"]["name"]).flavor
        scratch = self.scratch_dir(b["label"])
        bases = []
        for link in b.get("chain_links") or []:  # an incremental: the chain, full first, up to its parent
            bases += ["--base", f"{link['storage_path']}:{link['artifact']}:{link['sha256']}"]
        argv = self.storage_script("verify", "--dir", b["label_dir"], "--artifact", b["artifact"],
                                   "--sha256", b["sha256"], "--flavor", flavor, "--scratch", scratch, *bases)
        try:
            step = self.run_steps([(self.instance.storage.ssh_conn_id, argv)])[0]
            raise_for(step, "verify")
        except BaseException as exc:
            self.catalog.fail_backup(self.instance.name, b["label"], f"verify failed: {exc}"[:4000])
            raise
        r = step.result
        self.log.info("verified %s: sha256 ok, %s files checksummed, prepare ok in %.1f s%s", b["label"],
                      r.get("files"), r.get("prepare_seconds") or 0,
                      f" (the chain of {r.get('chain_links')} links, as a restore prepares it)" if bases else "")
        return {k: r.get(k) for k in ("sha256_ok", "files", "checksums_file", "binlog", "checkpoints",
                                      "info", "slave_info", "prepared", "seconds", "extract_seconds",
                                      "prepare_seconds", "chain_links")}


class CatalogBackupOperator(HostScriptOperator):
    """Write the manifest last on storage (the truth), then index it in the catalog."""

    def run(self, context: Any) -> dict:
        ti = context["ti"]
        b = ti.xcom_pull(task_ids="backup")
        v = ti.xcom_pull(task_ids="verify_backup")
        manifest = build_manifest(self.instance, b, v)
        argv = self.storage_script("commit", "--dir", b["label_dir"])
        try:
            step = self.run_steps([(self.instance.storage.ssh_conn_id, argv)],
                                  stdin=to_json(manifest).encode(), timeout=300)[0]
            raise_for(step, "writing the manifest")
        except BaseException as exc:
            self.catalog.fail_backup(self.instance.name, b["label"], f"manifest not written: {exc}"[:4000])
            raise
        self.catalog.record_manifest(manifest)
        self.log.info("backup %s of %s is usable: %s", manifest.label, self.instance.name, manifest.storage_path)
        return {"label": manifest.label, "kind": manifest.kind, "parent": manifest.parent, "chain": manifest.chain,
                "storage_path": manifest.storage_path, "status": manifest.status,
                "size_bytes": manifest.size_bytes, "gtid": manifest.gtid}


class RebuildCatalogOperator(HostScriptOperator):
    """Reconcile the catalog with every storage location: the catalog follows storage.

    Indexes every manifest found, marks usable backups whose directory is gone ``missing`` and
    those whose manifest is gone or broken ``damaged``, alerts each instance's owner once, and
    fails when it found a new incident (so the platform owner hears of it too). It reads
    manifests only: it does not re-read the backups' artifacts (their sha256 is checked by
    verify; scheduled re-verification of stored backups is a separate job).
    """

    def __init__(self, *, locations: Sequence[tuple[str, str]], instances: Sequence[Instance] = (),
                 instance_names: Sequence[str] = (), **kwargs: Any):
        super().__init__(**kwargs)
        self.locations = tuple(locations)
        self.instances = tuple(instances)
        self.instance_names = tuple(instance_names) or tuple(i.name for i in self.instances)

    def run(self, context: Any) -> dict:
        by_name = {i.name: i for i in self.instances}
        total = RebuildReport()
        manifests = 0
        for conn_id, base_dir in self.locations:
            scope = [n for n in self.instance_names
                     if n not in by_name or (by_name[n].storage.ssh_conn_id, by_name[n].storage.base_dir)
                     == (conn_id, base_dir)]
            listing = self.list_storage(conn_id, base_dir, scope=scope)
            for label_dir in listing.incomplete:
                self.log.warning("%s:%s has no manifest: an unfinished backup (or a damaged one), not usable",
                                 conn_id, label_dir)
            report = self.reconcile(listing, by_name, context)
            manifests += len(listing.manifests)
            for name in ("added", "updated", "unchanged"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            for name in ("invalid", "restored", "missing", "damaged"):
                getattr(total, name).extend(getattr(report, name))
        self.log.info("catalog reconciled with %d manifests: %d added, %d updated, %d unchanged, %d invalid, "
                      "%d restored, %d newly missing, %d newly damaged", manifests, total.added, total.updated,
                      total.unchanged, len(total.invalid), len(total.restored), len(total.missing),
                      len(total.damaged))
        self.log.info("this reconcile reads manifests only, not the artifacts: mysql_backup_verify_stored "
                      "re-reads the artifacts and compares their sha256")
        result = {"manifests": manifests, "added": total.added, "updated": total.updated,
                  "unchanged": total.unchanged, "invalid": len(total.invalid), "restored": len(total.restored),
                  "missing": len(total.missing), "damaged": len(total.damaged),
                  "not_on_storage": len(total.missing)}
        if total.incidents:
            from mysqlbackup.text import capped
            raise AirflowFailException(
                f"{len(total.incidents)} catalogued backup(s) are no longer on storage as they were: "
                + capped(f"{name} {label} {status}" for status, name, label, _ in total.incidents)
                + " (marked so in the catalog, never restored from; their owners were alerted)")
        return result


def build_manifest(instance: Instance, b: dict, v: dict) -> Manifest:
    """The manifest of a finished, verified backup (full or incremental), from the two tasks' results."""
    binlog = v.get("binlog") or (b.get("db") or {}).get("binlog") or {}
    cp = v.get("checkpoints") or (b.get("db") or {}).get("checkpoints") or {}
    info = v.get("info") or {}
    src = b["source"]
    finished = datetime.fromisoformat(b["finished_at"])
    started = datetime.fromisoformat(b["started_at"])
    kind = b.get("kind") or "full"
    return Manifest(
        version=MANIFEST_VERSION, instance=instance.name, label=b["label"], kind=kind,
        flavor=instance.flavor, source_name=src["name"], source_host=src["host"], source_port=src["port"],
        source_is_primary=bool(src["is_primary"]), started_at=b["started_at"], finished_at=b["finished_at"],
        duration_seconds=round((finished - started).total_seconds(), 3), size_bytes=int(b["size_bytes"]),
        artifact=b["artifact"], compress=b["compress"], sha256=b["sha256"],
        storage_ssh_conn_id=instance.storage.ssh_conn_id, storage_path=b["label_dir"],
        binlog_file=binlog.get("file"), binlog_pos=_int(binlog.get("pos")), gtid=binlog.get("gtid") or None,
        from_lsn=_int(cp.get("from_lsn")), to_lsn=_int(cp.get("to_lsn")), last_lsn=_int(cp.get("last_lsn")),
        server_version=info.get("server_version") or (b.get("db") or {}).get("server_version") or src.get("version"),
        verify={"status": "ok" if v.get("prepared") and v.get("sha256_ok") else "failed",
                "prepared": bool(v.get("prepared")), "files": int(v.get("files") or 0),
                "checksums_file": v.get("checksums_file") or "", "seconds": float(v.get("seconds") or 0),
                "message": "sha256 re-read ok, per-file checksums recorded, prepare completed OK"},
        tool=(b.get("db") or {}).get("tool") or info.get("tool_version") or "",
        status="usable",
        replica_source=parse_slave_info(v.get("slave_info")) if src.get("is_replica") else None,
        parent=b.get("parent") if kind == "incremental" else None, chain=b.get("chain") or b["label"],
        source_server_id=_int(src.get("server_id")),
    )


def parse_slave_info(text: str | None) -> dict | None:
    """The source's coordinates from xtrabackup_slave_info (GTID and/or binlog file and position)."""
    import re
    if not text or not text.strip():
        return None
    gtid = re.search(r"gtid_slave_pos\s*=\s*'([^']*)'", text, re.I)
    file = re.search(r"MASTER_LOG_FILE\s*=\s*'([^']+)'", text, re.I)
    pos = re.search(r"MASTER_LOG_POS\s*=\s*([0-9]+)", text, re.I)
    return {"gtid": gtid.group(1) if gtid else None, "file": file.group(1) if file else None,
            "pos": int(pos.group(1)) if pos else None, "text": text.strip()[:2000]}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _summary(f: dict) -> str:
    if not f.get("reachable"):
        return f"unreachable: {f.get('error')}"
    rep = f.get("replica")
    role = "replica" if rep else "not a replica"
    if rep:
        role += f" (io={rep.get('io_running')}, sql={rep.get('sql_running')}, lag={rep.get('seconds_behind')})"
    return (f"{f.get('version')}, {role}, server_id={f.get('server_id')}, datadir={f.get('datadir')}, "
            f"binlog={f.get('log_bin')}/{f.get('binlog_format')}")
