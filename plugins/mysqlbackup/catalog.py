"""The backup catalog: an SQL index of backups and instance facts, reconciled with storage.

The manifests on storage are the truth; the catalog is an index that never claims more than
storage holds. ``reconcile`` takes what a listing of storage found and, in one transaction,
indexes every valid manifest, marks a usable backup whose directory is gone ``missing`` and
one whose directory lost (or holds a broken) manifest ``damaged``. Only ``usable`` backups
are ever restorable. It works with SQLite (the default, at
``$MYSQL_BACKUP_HOME/catalog.sqlite``) and any SQLAlchemy URL (``$MYSQL_BACKUP_CATALOG_URL``).
Tables are created when missing (no migrations).

Statuses: ``running`` (a backup in progress), ``usable`` (a manifest on storage: restorable),
``failed`` (never finished; its directory is discarded), ``missing`` (was usable, its
directory is gone from storage), ``damaged`` (was usable, its directory is there but its
manifest is not, or is broken), ``expired`` (removed by retention).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import Connection, Engine, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from mysqlbackup.manifest import Manifest, ManifestError, from_json, parse_utc, to_json, validate

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
STATUSES = ("running", "usable", "failed", "missing", "damaged", "expired")
# A row in one of these states is never changed by a late failure callback or a new start:
# its label once had a manifest and is never reused.
_PROTECTED = ("usable", "missing", "damaged", "expired")
# what reconcile writes into ``error`` when it marks a row; it restores only rows it marked itself
# (a damage found by another check, a checksum mismatch, is never undone by a manifest showing up)
MISSING = "missing: the backup directory is gone from storage"
NO_MANIFEST = "damaged: the backup directory has no manifest.json"
BAD_MANIFEST = "damaged: manifest.json is unreadable or invalid"
_RECONCILE_REASONS = (MISSING, NO_MANIFEST, BAD_MANIFEST)
_ERROR_LIMIT = 60000  # stays under MySQL's TEXT limit (65535 bytes) for ASCII errors

metadata = MetaData()

backups_table = Table(
    "backups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False),
    Column("label", String(64), nullable=False),  # incremental labels are 33 chars
    Column("kind", String(16), nullable=False, default="full"),
    Column("parent", String(64)),  # an incremental's parent label (added later: see _add_missing_columns)
    Column("chain", String(64)),   # the label of the chain's full
    Column("status", String(16), nullable=False),
    Column("run_id", String(250)),
    Column("source_name", String(64)),
    Column("source_host", String(255)),
    Column("source_port", Integer),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("duration_seconds", Float),
    Column("size_bytes", BigInteger),
    Column("storage_ssh_conn_id", String(250)),
    Column("storage_path", String(1024)),
    Column("artifact", String(255)),
    Column("compress", String(16)),
    Column("sha256", String(64)),
    Column("binlog_file", String(255)),
    Column("binlog_pos", BigInteger),
    Column("gtid", Text),
    Column("from_lsn", BigInteger),
    Column("to_lsn", BigInteger),
    Column("last_lsn", BigInteger),
    Column("verify_status", String(16)),
    Column("verify_json", Text),
    Column("error", Text),
    Column("manifest_json", Text),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("instance", "label", name="uq_backups_instance_label"),
)
Index("ix_backups_instance_status", backups_table.c.instance, backups_table.c.status)

facts_table = Table(
    "instance_facts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False),
    Column("collected_at", DateTime, nullable=False),
    Column("facts_json", Text, nullable=False),
)
Index("ix_instance_facts_instance_collected_at", facts_table.c.instance, facts_table.c.collected_at)

# every re-check of a stored backup (mysql_backup_verify_stored): when, and what it found
checks_table = Table(
    "stored_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False),
    Column("label", String(64), nullable=False),
    Column("checked_at", DateTime, nullable=False),
    Column("ok", Integer, nullable=False),
    Column("found", String(32)),  # ok | mismatch | no_artifact | no_directory | unreadable
    Column("detail", Text),
    Column("size_bytes", BigInteger),
    Column("seconds", Float),
)
Index("ix_stored_checks_instance_label", checks_table.c.instance, checks_table.c.label)

# --- the continuous binlog archive (mysql_binlog__<name>, mysqlbackup.archive) --------------------
# every archived binlog file: open (being written), closed (byte-identical to the server's, with its
# sha256), incomplete (purged on the server before it was finished) or damaged (a closed file that
# does not parse to its end)
binlog_files_table = Table(
    "binlog_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False),
    Column("server_identity", String(64), nullable=False),  # <server_id>-<uid>
    Column("server_id", BigInteger),
    Column("name", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("size_bytes", BigInteger),
    Column("sha256", String(64)),
    Column("first_event_at", DateTime),
    Column("last_event_at", DateTime),
    Column("start_gtid_state", Text),  # the Gtid_list at the file's start
    Column("end_gtid_state", Text),    # the GTID state after its last complete event
    Column("first_gtid", String(80)),
    Column("last_gtid", String(80)),
    Column("events", BigInteger),
    Column("transactions", BigInteger),
    Column("ended_by", String(16)),
    Column("storage_ssh_conn_id", String(250)),
    Column("storage_path", String(1024)),
    Column("archived_at", DateTime, nullable=False),
    Column("closed_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("instance", "server_identity", "name", name="uq_binlog_files_instance_identity_name"),
)
Index("ix_binlog_files_instance", binlog_files_table.c.instance)

# every gap found in an instance's archive (transactions no archived file holds); never deleted
binlog_gaps_table = Table(
    "binlog_gaps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False),
    Column("gap_key", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("domain_id", BigInteger),
    Column("missing", Text),  # e.g. "0-1-101..0-1-250 (150 transactions)"
    Column("after_identity", String(64)),
    Column("after_file", String(255)),
    Column("before_identity", String(64)),
    Column("before_file", String(255)),
    Column("from_time", DateTime),  # the last archived event before the gap
    Column("to_time", DateTime),    # the first archived event after it
    Column("detail", Text),
    Column("found_at", DateTime, nullable=False),
    Column("alerted_at", DateTime),
    Column("resolved_at", DateTime),
    UniqueConstraint("instance", "gap_key", name="uq_binlog_gaps_instance_key"),
)

# backups that are not usable for point-in-time restore past a gap (their status stays usable:
# a full restore is fine); rewritten by every supervisor run
pitr_blocks_table = Table(
    "pitr_blocks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance", String(64), nullable=False),
    Column("label", String(64), nullable=False),
    Column("gap_key", String(255), nullable=False),
    Column("pitr_until", DateTime),  # the latest point a restore of this backup can reach
    Column("detail", Text),
    Column("found_at", DateTime, nullable=False),
    UniqueConstraint("instance", "label", "gap_key", name="uq_pitr_blocks_instance_label_gap"),
)

# one row per instance: the archive's head, lag, recovery window and alert state
binlog_archive_state_table = Table(
    "binlog_archive_state",
    metadata,
    Column("instance", String(64), primary_key=True),
    Column("server_identity", String(64)),
    Column("head_file", String(255)),
    Column("head_pos", BigInteger),
    Column("last_event_at", DateTime),
    Column("last_gtid", String(80)),
    Column("lag_seconds", Float),
    Column("lag_bytes", BigInteger),
    Column("caught_up", Integer),
    Column("measured_at", DateTime),
    Column("streamer_action", String(32)),
    Column("streamer_pid", Integer),
    Column("window_start", DateTime),
    Column("window_end", DateTime),
    Column("lag_alerted_at", DateTime),
    Column("failure_alerted_at", DateTime),
    Column("details_json", Text),
    Column("updated_at", DateTime, nullable=False),
)

# --- restores (mysql_restore_full, mysqlbackup.restore) ----------------------------------------------
# one row per restore run: what was restored from which backup(s) to which target, how long each step
# took, and how it ended (running | succeeded | failed | refused: refused before any host was touched)
restores_table = Table(
    "restores",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("restore_id", String(64), nullable=False),
    Column("instance", String(64), nullable=False),
    Column("target", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # full
    Column("backup_label", String(64)),  # the chosen backup (the set's last link)
    Column("labels_json", Text),  # the set, full first
    Column("status", String(16), nullable=False),
    Column("run_id", String(250)),
    Column("server_id", BigInteger),
    Column("gtid", Text),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("steps_json", Text),  # [[step, seconds], ...] in the order they ran
    Column("result_json", Text),
    Column("error", Text),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("restore_id", name="uq_restores_restore_id"),
)
Index("ix_restores_target", restores_table.c.target, restores_table.c.status)

# --- drills (mysql_restore_drill, mysqlbackup.drill) ---------------------------------------------------
# one row per drill: which backup was restored where, the restore time per step and in all (RTO), the
# point reached and its age when the drill started (RPO), and the result
drills_table = Table(
    "drills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("drill_id", String(64), nullable=False),  # the restore's id (restores.restore_id)
    Column("instance", String(64), nullable=False),
    Column("target", String(64), nullable=False),
    Column("run_id", String(250)),
    Column("kind", String(16), nullable=False),  # pitr | full
    Column("backup_label", String(64)),
    Column("result", String(16), nullable=False),  # succeeded | failed
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=False),
    Column("rto_seconds", Float),
    Column("rpo_seconds", Float),
    Column("point_time", DateTime),
    Column("details_json", Text),
    Column("error", Text),
    UniqueConstraint("drill_id", name="uq_drills_drill_id"),
)
Index("ix_drills_instance", drills_table.c.instance, drills_table.c.result, drills_table.c.finished_at)

_MANIFEST_COLUMNS = (
    "kind", "source_name", "source_host", "source_port", "duration_seconds", "size_bytes",
    "storage_ssh_conn_id", "storage_path", "artifact", "compress", "sha256", "binlog_file",
    "binlog_pos", "gtid", "from_lsn", "to_lsn", "last_lsn", "parent", "chain",
)
_DATETIME_COLUMNS = ("started_at", "finished_at", "updated_at")

T = TypeVar("T")


class CatalogError(RuntimeError):
    """A catalog operation that would break an invariant (e.g. restarting a usable backup)."""


@dataclass
class StorageListing:
    """What one listing of storage found (``storage.py list``), for the instances in ``scope``.

    ``manifests``: ``(path, text)`` of every ``<instance>/<label>/manifest.json``;
    ``incomplete``: label directories without a manifest; ``unreadable``: ``(path, error)`` of
    manifests that could not be read; ``listed_at``: when the listing started (a row written
    after it is newer than what the listing could see, and is left alone).
    """

    manifests: list[tuple[str, str]] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    scope: frozenset[str] | None = None
    listed_at: datetime | None = None
    location: tuple[str, str] | None = None  # (storage ssh_conn_id, base_dir) that was listed

    def holds(self, conn_id: str | None, path: str | None) -> bool:
        """Could this listing have seen a backup stored at conn_id:path?"""
        if self.location is None:
            return True
        conn, base = self.location
        return conn_id == conn and bool(path) and str(path).startswith(base.rstrip("/") + "/")


@dataclass
class RebuildReport:
    """What ``reconcile`` (and ``rebuild_from_manifests``) did.

    ``added``/``updated``/``unchanged`` count valid manifests; ``invalid`` lists ``(path,
    error)``; ``restored``: missing or damaged rows whose manifest is back (usable again).
    ``missing`` and ``damaged`` list ``(instance, label, reason)`` of the rows marked so by this
    run: each is an incident to alert on. ``not_on_storage``: ``(instance, label)`` of the rows
    marked missing (the older name of the same list).
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    restored: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    damaged: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def not_on_storage(self) -> list[tuple[str, str]]:
        return [(i, label) for i, label, _ in self.missing]

    @property
    def incidents(self) -> list[tuple[str, str, str, str]]:
        """``(status, instance, label, reason)`` of every row this run marked missing or damaged."""
        return ([("missing", *m) for m in self.missing] + [("damaged", *d) for d in self.damaged])


def catalog_url() -> str:
    """The catalog URL: ``$MYSQL_BACKUP_CATALOG_URL``, else SQLite in ``$MYSQL_BACKUP_HOME`` (or ``<repo>/var``)."""
    url = os.environ.get("MYSQL_BACKUP_CATALOG_URL", "").strip()
    if url:
        return url
    home_env = os.environ.get("MYSQL_BACKUP_HOME", "").strip()
    home = Path(home_env).expanduser() if home_env else REPO_ROOT / "var"
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home}/catalog.sqlite"


def _utc_naive(value: datetime | str | None) -> datetime | None:
    """A datetime or ISO string as a naive UTC datetime (naive input is taken as UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_utc(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or ISO-8601 string, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _iso(value: datetime | None) -> str | None:
    """A stored datetime as ISO-8601 UTC with 'Z'."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    spec = "microseconds" if value.microsecond else "seconds"
    return value.isoformat(timespec=spec) + "Z"


def _now() -> datetime:
    """Now, naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _row_dict(row: RowMapping) -> dict[str, Any]:
    """A result row as a plain dict, datetimes as ISO-8601 'Z' strings."""
    data = dict(row)
    for name in _DATETIME_COLUMNS + ("collected_at",):
        if name in data:
            data[name] = _iso(data[name])
    return data


class Catalog:
    """The catalog database. ``Catalog()`` uses ``catalog_url()``; close with ``close()`` or ``with``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or catalog_url()
        self.engine = self._make_engine(self.url)
        self._create_tables()

    def __repr__(self) -> str:
        return f"Catalog({make_url(self.url).render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    @staticmethod
    def _make_engine(url: str) -> Engine:
        """An engine; SQLite gets a busy timeout and BEGIN IMMEDIATE so concurrent writers queue."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
        database = parsed.database or ""
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}}
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"]["check_same_thread"] = False
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, emit BEGIN (the documented pysqlite recipe).
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Take the write lock up front: a deferred transaction that upgrades later can
            # fail with SQLITE_BUSY at once instead of waiting out the busy timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _create_tables(self) -> None:
        """Create missing tables and columns; tolerate another process doing it at the same time."""
        try:
            metadata.create_all(self.engine)
        except DBAPIError:
            names = set(inspect(self.engine).get_table_names())
            if not {t.name for t in metadata.sorted_tables} <= names:
                raise
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A catalog made by an older version lacks the columns added since: add them (nullable).

        The one kind of schema change this catalog makes: a new nullable column, added with
        ``ALTER TABLE ... ADD COLUMN`` (SQLite, MySQL and PostgreSQL all take it); nothing is
        ever dropped or rewritten."""
        insp = inspect(self.engine)
        for table in metadata.sorted_tables:
            have = {c["name"] for c in insp.get_columns(table.name)}
            for column in table.columns:
                if column.name in have or not column.nullable:
                    continue
                ddl = (f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                       f"{column.type.compile(dialect=self.engine.dialect)}")
                try:
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(ddl)
                    log.info("catalog: added column %s.%s", table.name, column.name)
                except DBAPIError:  # another process added it first
                    if column.name not in {c["name"] for c in inspect(self.engine).get_columns(table.name)}:
                        raise

    def _tx(self, work: Callable[[Connection], T]) -> T:
        """Run work in one transaction, retrying when a concurrent insert wins a unique key."""
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info("catalog: concurrent write on the same key, retrying")
        raise AssertionError("unreachable")

    @staticmethod
    def _get(conn: Connection, instance: str, label: str) -> RowMapping | None:
        """The backups row for (instance, label), or None."""
        t = backups_table
        return conn.execute(
            select(t).where(and_(t.c.instance == instance, t.c.label == label))
        ).mappings().first()

    @staticmethod
    def _upsert(conn: Connection, existing: RowMapping | None, instance: str, label: str,
                values: dict[str, Any]) -> None:
        """Insert or update the (instance, label) row with values."""
        t = backups_table
        values = dict(values, updated_at=_now())
        if existing is None:
            values.setdefault("kind", "full")
            conn.execute(t.insert().values(instance=instance, label=label, **values))
        else:
            conn.execute(t.update().where(t.c.id == existing["id"]).values(**values))

    # --- backups -------------------------------------------------------------------------

    def start_backup(self, instance: str, label: str, run_id: str | None, source_name: str,
                     source_host: str, source_port: int, started_at: datetime | str,
                     storage_ssh_conn_id: str, storage_path: str, kind: str = "full",
                     parent: str | None = None, chain: str | None = None) -> None:
        """Record a backup as running (upsert on (instance, label)).

        Raises CatalogError when the row is already usable or expired: a label that has a
        manifest is never reused, and its row is never downgraded.
        """
        values = {
            "status": "running", "run_id": run_id, "source_name": source_name,
            "source_host": source_host, "source_port": source_port,
            "started_at": _utc_naive(started_at), "finished_at": None, "error": None,
            "storage_ssh_conn_id": storage_ssh_conn_id, "storage_path": storage_path,
            "kind": kind, "parent": parent, "chain": chain or label,
        }

        def work(conn: Connection) -> None:
            existing = self._get(conn, instance, label)
            if existing is not None and existing["status"] in _PROTECTED:
                raise CatalogError(
                    f"backup {instance}/{label} is already {existing['status']}; it cannot be restarted")
            self._upsert(conn, existing, instance, label, values)

        self._tx(work)

    def fail_backup(self, instance: str, label: str, error: str) -> bool:
        """Mark a backup failed, keeping its other fields; create the row if missing.

        A usable (or expired) row is left alone: a late failure callback never downgrades it.
        Returns True when the row was written.
        """
        text = str(error)
        if len(text) > _ERROR_LIMIT:
            text = text[:_ERROR_LIMIT] + "\n[truncated]"

        def work(conn: Connection) -> bool:
            existing = self._get(conn, instance, label)
            if existing is not None and existing["status"] in _PROTECTED:
                log.info("catalog: %s/%s is %s; not marking it failed", instance, label, existing["status"])
                return False
            self._upsert(conn, existing, instance, label, {"status": "failed", "error": text})
            return True

        return self._tx(work)

    def record_manifest(self, manifest: Manifest) -> None:
        """Upsert the row for a manifest (validated first) as usable, with the manifest JSON."""
        validate(manifest)

        def work(conn: Connection) -> None:
            existing = self._get(conn, manifest.instance, manifest.label)
            self._upsert(conn, existing, manifest.instance, manifest.label, self._manifest_values(manifest))

        self._tx(work)

    @staticmethod
    def _manifest_values(m: Manifest) -> dict[str, Any]:
        """Column values for a usable backup described by manifest m."""
        values = {name: getattr(m, name) for name in _MANIFEST_COLUMNS}
        values.update(
            status="usable",
            started_at=_utc_naive(m.started_at),
            finished_at=_utc_naive(m.finished_at),
            verify_status=m.verify.get("status"),
            verify_json=json.dumps(m.verify, sort_keys=True),
            manifest_json=to_json(m),
            error=None,
        )
        return values

    def backups(self, instance: str | None = None, status: str | Iterable[str] | None = None,
                since: datetime | str | None = None) -> list[dict[str, Any]]:
        """Backup rows, newest label first; filter by instance, status(es) and start time >= since."""
        t = backups_table
        query = select(t)
        if instance is not None:
            query = query.where(t.c.instance == instance)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            unknown = [s for s in wanted if s not in STATUSES]
            if unknown:
                raise ValueError(f"unknown backup status {unknown}; expected one of {', '.join(STATUSES)}")
            query = query.where(t.c.status.in_(wanted))
        if since is not None:
            query = query.where(func.coalesce(t.c.started_at, t.c.updated_at) >= _utc_naive(since))
        query = query.order_by(t.c.label.desc(), t.c.instance, t.c.id.desc())
        with self.engine.connect() as conn:
            return [_row_dict(row) for row in conn.execute(query).mappings()]

    def last_usable(self, instance: str) -> dict[str, Any] | None:
        """The newest usable backup row of an instance, or None."""
        rows = self._newest_usable(instance, 1)
        return rows[0] if rows else None

    def history_sizes(self, instance: str, limit: int = 3) -> list[int]:
        """Sizes in bytes of the newest usable backups of an instance, newest first."""
        return [int(r["size_bytes"]) for r in self._newest_usable(instance, limit) if r["size_bytes"] is not None]

    def _newest_usable(self, instance: str, limit: int) -> list[dict[str, Any]]:
        """Up to limit newest usable rows of an instance."""
        t = backups_table
        query = (select(t).where(and_(t.c.instance == instance, t.c.status == "usable"))
                 .order_by(t.c.label.desc(), t.c.id.desc()).limit(max(0, int(limit))))
        with self.engine.connect() as conn:
            return [_row_dict(row) for row in conn.execute(query).mappings()]

    # --- facts ---------------------------------------------------------------------------

    def record_facts(self, instance: str, facts: dict[str, Any],
                     collected_at: datetime | str | None = None) -> None:
        """Store one facts snapshot of an instance (collected_at defaults to now)."""
        text = json.dumps(facts, sort_keys=True, default=str)
        when = _utc_naive(collected_at) if collected_at is not None else _now()

        def work(conn: Connection) -> None:
            conn.execute(facts_table.insert().values(instance=instance, collected_at=when, facts_json=text))

        self._tx(work)

    def latest_facts(self, instance: str) -> dict[str, Any] | None:
        """The newest facts dict recorded for an instance, or None."""
        t = facts_table
        query = (select(t.c.facts_json).where(t.c.instance == instance)
                 .order_by(t.c.collected_at.desc(), t.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            text = conn.execute(query).scalar()
        return None if text is None else json.loads(text)

    # --- rebuild -------------------------------------------------------------------------

    def rebuild_from_manifests(self, manifests: Iterable[tuple[str, str]],
                               instances: Iterable[str] | None = None) -> RebuildReport:
        """``reconcile`` with manifests only (every listed label directory had one)."""
        return self.reconcile(StorageListing(manifests=list(manifests),
                                             scope=frozenset(instances) if instances is not None else None))

    def reconcile(self, listing: StorageListing) -> RebuildReport:
        """Bring the catalog in line with what storage holds, in one transaction.

        - every valid manifest is indexed as usable (added, or updated when it differs; a row
          marked missing or damaged by an earlier reconcile whose manifest is back is restored);
        - a usable row of an instance in scope whose label directory was not listed at all is
          marked ``missing``; one whose directory has no manifest, or an invalid or unreadable
          one, is marked ``damaged``. Neither is ever restorable again until a valid manifest
          is found;
        - rows written after ``listing.listed_at`` are left alone (the listing could not see them),
          and so are rows stored elsewhere than ``listing.location``.

        Nothing is ever deleted. The scope is ``listing.scope``, by default the instances of
        the valid manifests.
        """
        report = RebuildReport()
        valid: dict[tuple[str, str], Manifest] = {}
        broken: dict[tuple[str, str], str] = {}  # (instance, label) -> why its manifest is not valid
        for path, text in listing.manifests:
            try:
                m = from_json(text)
                _check_path(path, m)
            except ManifestError as exc:
                report.invalid.append((path, str(exc)))
                key = _instance_label(path, manifest=True)
                if key:
                    broken[key] = str(exc)
                continue
            valid[(m.instance, m.label)] = m
        for path, error in listing.unreadable:
            report.invalid.append((path, f"unreadable: {error}"))
            key = _instance_label(path, manifest=True)
            if key:
                broken[key] = f"unreadable: {error}"
        no_manifest = {k for k in map(_instance_label, listing.incomplete) if k}
        scope = set(listing.scope) if listing.scope is not None else {key[0] for key in valid}
        listed_at = _utc_naive(listing.listed_at) if listing.listed_at else None

        def work(conn: Connection) -> None:
            for (instance, label), m in sorted(valid.items()):
                existing = self._get(conn, instance, label)
                values = self._manifest_values(m)
                if existing is None:
                    report.added += 1
                elif existing["status"] in ("missing", "damaged"):
                    if existing["error"] not in _RECONCILE_REASONS:
                        continue  # damaged by another check (a checksum): a manifest does not undo that
                    report.restored.append((instance, label))
                elif existing["status"] == "expired":
                    continue
                elif existing["status"] == "usable" and existing["manifest_json"] == values["manifest_json"]:
                    report.unchanged += 1
                    continue
                else:
                    report.updated += 1
                self._upsert(conn, existing, instance, label, values)
            if not scope:
                return
            t = backups_table
            rows = conn.execute(
                select(t.c.id, t.c.instance, t.c.label, t.c.updated_at, t.c.storage_ssh_conn_id, t.c.storage_path)
                .where(and_(t.c.status == "usable", t.c.instance.in_(sorted(scope))))
                .order_by(t.c.instance, t.c.label)
            ).all()
            for r in rows:
                key = (r.instance, r.label)
                if key in valid or (listed_at is not None and r.updated_at is not None and r.updated_at >= listed_at):
                    continue
                if not listing.holds(r.storage_ssh_conn_id, r.storage_path):
                    continue
                if key in broken:
                    status, reason, bucket = "damaged", BAD_MANIFEST, report.damaged
                    detail = f"{reason}: {broken[key]}"
                elif key in no_manifest:
                    status, reason, bucket = "damaged", NO_MANIFEST, report.damaged
                    detail = reason
                else:
                    status, reason, bucket = "missing", MISSING, report.missing
                    detail = reason
                conn.execute(t.update().where(t.c.id == r.id).values(status=status, error=reason, updated_at=_now()))
                bucket.append((r.instance, r.label, detail))

        def reset_and_work(conn: Connection) -> None:
            report.added = report.updated = report.unchanged = 0
            report.restored.clear()
            report.missing.clear()
            report.damaged.clear()
            work(conn)

        self._tx(reset_and_work)
        return report

    # --- re-checks of stored backups -------------------------------------------------------

    def last_checked(self, instance: str | None = None) -> dict[tuple[str, str], datetime]:
        """(instance, label) -> when its artifact was last re-read and found intact (naive UTC)."""
        t = checks_table
        query = select(t.c.instance, t.c.label, func.max(t.c.checked_at)).where(t.c.ok == 1)
        if instance is not None:
            query = query.where(t.c.instance == instance)
        query = query.group_by(t.c.instance, t.c.label)
        with self.engine.connect() as conn:
            return {(r[0], r[1]): r[2] for r in conn.execute(query)}

    def record_check(self, instance: str, label: str, found: str, detail: str = "",
                     size_bytes: int | None = None, seconds: float | None = None,
                     checked_at: datetime | str | None = None) -> None:
        """Record one re-check; when it found the artifact changed or gone, mark the backup so.

        A mismatch, a missing artifact or an unreadable one make a usable backup ``damaged``; a
        directory gone makes it ``missing`` (as reconcile would). Reconcile never restores a
        damage found here: only a new, successful backup replaces it.
        """
        when = _utc_naive(checked_at) if checked_at is not None else _now()
        text = str(detail)[:_ERROR_LIMIT]

        def work(conn: Connection) -> None:
            conn.execute(checks_table.insert().values(instance=instance, label=label, checked_at=when,
                                                      ok=int(found == "ok"), found=found, detail=text,
                                                      size_bytes=size_bytes, seconds=seconds))
            if found == "ok":
                return
            existing = self._get(conn, instance, label)
            if existing is None or existing["status"] != "usable":
                return
            status, reason = ("missing", MISSING) if found == "no_directory" else \
                ("damaged", f"damaged: {found.replace('_', ' ')}: {text}")
            t = backups_table
            conn.execute(t.update().where(t.c.id == existing["id"]).values(status=status, error=reason[:_ERROR_LIMIT],
                                                                           updated_at=_now()))

        self._tx(work)

    def expire_backup(self, instance: str, label: str, why: str) -> None:
        """Mark a backup expired (retention removes it next; its label is never reused)."""
        t = backups_table

        def work(conn: Connection) -> None:
            conn.execute(t.update().where(and_(t.c.instance == instance, t.c.label == label))
                         .values(status="expired", error=f"expired: {why}"[:_ERROR_LIMIT], updated_at=_now()))

        self._tx(work)

    def statuses(self, instance: str) -> dict[str, str]:
        """label -> status of every backup row of an instance."""
        t = backups_table
        with self.engine.connect() as conn:
            return {r.label: r.status for r in conn.execute(select(t.c.label, t.c.status)
                                                            .where(t.c.instance == instance))}

    # --- the continuous binlog archive -------------------------------------------------------
    # (mysqlbackup.archive plans; these methods only store. Times may be datetimes, ISO strings
    # or epoch seconds.)

    def binlog_known(self, instance: str) -> dict[str, dict[str, Any]]:
        """What the catalog has of each server identity's closed files: the newest closed name and how
        many there are (the storage host reports only what is newer, or everything when they disagree)."""
        t = binlog_files_table
        query = select(t.c.server_identity, t.c.name).where(
            and_(t.c.instance == instance, t.c.state.in_(("closed", "damaged"))))
        known: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for ident, name in conn.execute(query):
                k = known.setdefault(ident, {"closed_upto": None, "closed_count": 0, "_n": -1})
                k["closed_count"] += 1
                n = _binlog_number(name)
                if n > k["_n"]:
                    k["_n"], k["closed_upto"] = n, name
        for k in known.values():
            del k["_n"]
        return known

    def record_binlog_files(self, instance: str, records: Iterable[dict[str, Any]], storage_ssh_conn_id: str,
                            archive_dir: str) -> list[tuple[str, str, str]]:
        """Upsert archived files as the storage host reported them; returns (identity, name, state) of what
        changed. A closed file never goes back to open (a late report of an older scan)."""
        rank = {"open": 0, "incomplete": 1, "closed": 2, "damaged": 2, "expired": 3}
        suffix = {"open": ".open", "incomplete": ".incomplete"}
        changed: list[tuple[str, str, str]] = []
        now = _now()

        def work(conn: Connection) -> None:
            changed.clear()
            t = binlog_files_table
            for r in records:
                ident, name, state = r["identity"], r["name"], r["state"]
                existing = conn.execute(select(t).where(and_(
                    t.c.instance == instance, t.c.server_identity == ident, t.c.name == name))).mappings().first()
                if existing is not None and rank.get(existing["state"], 0) > rank.get(state, 0):
                    continue
                values = {
                    "server_id": r.get("server_id"), "state": state, "size_bytes": r.get("size"),
                    "sha256": r.get("sha256"), "first_event_at": _when(r.get("first_event_at")),
                    "last_event_at": _when(r.get("last_event_at")), "start_gtid_state": r.get("start_gtid_state"),
                    "end_gtid_state": r.get("end_gtid_state"), "first_gtid": r.get("first_gtid"),
                    "last_gtid": r.get("last_gtid"), "events": r.get("events"),
                    "transactions": r.get("transactions"), "ended_by": r.get("ended_by"),
                    "storage_ssh_conn_id": storage_ssh_conn_id,
                    "storage_path": f"{archive_dir.rstrip('/')}/{ident}/{name}{suffix.get(state, '')}",
                    "updated_at": now}
                if state in ("closed", "damaged", "incomplete"):
                    values["closed_at"] = (existing["closed_at"] if existing is not None and existing["closed_at"]
                                           else now)
                if existing is None:
                    conn.execute(t.insert().values(instance=instance, server_identity=ident, name=name,
                                                   archived_at=now, **values))
                    changed.append((ident, name, state))
                else:
                    if any(existing[k] != v for k, v in values.items() if k not in ("updated_at", "closed_at")):
                        changed.append((ident, name, state))
                    conn.execute(t.update().where(t.c.id == existing["id"]).values(**values))

        self._tx(work)
        return changed

    def binlog_files(self, instance: str, include_expired: bool = False) -> list[dict[str, Any]]:
        """Every archived file of an instance (datetimes as ISO 'Z' strings), by identity and file number;
        files retention deleted (state ``expired``) only when asked for."""
        t = binlog_files_table
        query = select(t).where(t.c.instance == instance)
        if not include_expired:
            query = query.where(t.c.state != "expired")
        with self.engine.connect() as conn:
            rows = [_plain(r) for r in conn.execute(query).mappings()]
        return sorted(rows, key=lambda r: (r["server_identity"], _binlog_number(r["name"]), r["name"]))

    def expire_binlog_file(self, instance: str, identity: str, name: str) -> None:
        """Mark an archived file deleted by retention (the row stays: what was archived, and when)."""
        t = binlog_files_table

        def work(conn: Connection) -> None:
            conn.execute(t.update().where(and_(t.c.instance == instance, t.c.server_identity == identity,
                                               t.c.name == name)).values(state="expired", updated_at=_now()))

        self._tx(work)

    def record_gaps(self, instance: str, gaps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record the gaps found now (by ``gap_key``); a gap no longer found is marked resolved (its
        transactions turned up in another file), one found again is reopened. Returns every open gap
        row, those never alerted with ``alerted_at`` None."""
        now = _now()
        found = {g["gap_key"]: g for g in gaps}
        columns = ("kind", "domain_id", "missing", "after_identity", "after_file", "before_identity", "before_file",
                   "detail")

        def work(conn: Connection) -> list[dict[str, Any]]:
            t = binlog_gaps_table
            existing = {r["gap_key"]: r for r in conn.execute(select(t).where(t.c.instance == instance)).mappings()}
            for key, g in found.items():
                values = {c: g.get(c) for c in columns}
                values.update(from_time=_when(g.get("from_time")), to_time=_when(g.get("to_time")), resolved_at=None)
                if key in existing:
                    conn.execute(t.update().where(t.c.id == existing[key]["id"]).values(**values))
                else:
                    conn.execute(t.insert().values(instance=instance, gap_key=key, found_at=now, **values))
            for key, r in existing.items():
                if key not in found and r["resolved_at"] is None:
                    conn.execute(t.update().where(t.c.id == r["id"]).values(resolved_at=now))
            return [_plain(r) for r in conn.execute(
                select(t).where(and_(t.c.instance == instance, t.c.resolved_at.is_(None))).order_by(t.c.id)).mappings()]

        return self._tx(work)

    def mark_gap_alerted(self, instance: str, gap_key: str) -> None:
        t = binlog_gaps_table
        self._tx(lambda conn: conn.execute(t.update().where(and_(t.c.instance == instance, t.c.gap_key == gap_key))
                                           .values(alerted_at=_now())))

    def binlog_gaps(self, instance: str, include_resolved: bool = False) -> list[dict[str, Any]]:
        t = binlog_gaps_table
        query = select(t).where(t.c.instance == instance)
        if not include_resolved:
            query = query.where(t.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query.order_by(t.c.id)).mappings()]

    def record_pitr_blocks(self, instance: str, blocks: Iterable[dict[str, Any]]) -> None:
        """Set which backups cannot be rolled forward past which gap (``label``, ``gap_key``,
        ``pitr_until``, ``detail``); the backups' status is not touched (a full restore stays fine)."""
        now = _now()
        wanted = {(b["label"], b["gap_key"]): b for b in blocks}

        def work(conn: Connection) -> None:
            t = pitr_blocks_table
            existing = {(r["label"], r["gap_key"]): r for r in conn.execute(
                select(t).where(t.c.instance == instance)).mappings()}
            for key, r in existing.items():
                if key not in wanted:
                    conn.execute(t.delete().where(t.c.id == r["id"]))
            for key, b in wanted.items():
                values = {"pitr_until": _when(b.get("pitr_until")), "detail": b.get("detail")}
                if key in existing:
                    conn.execute(t.update().where(t.c.id == existing[key]["id"]).values(**values))
                else:
                    conn.execute(t.insert().values(instance=instance, label=key[0], gap_key=key[1], found_at=now,
                                                   **values))

        self._tx(work)

    def pitr_blocks(self, instance: str, label: str | None = None) -> list[dict[str, Any]]:
        """Why backups of an instance cannot be rolled forward past some point (empty: nothing blocks)."""
        t = pitr_blocks_table
        query = select(t).where(t.c.instance == instance)
        if label is not None:
            query = query.where(t.c.label == label)
        with self.engine.connect() as conn:
            return [_plain(r) for r in conn.execute(query.order_by(t.c.label, t.c.gap_key)).mappings()]

    def record_archive_state(self, instance: str, **values: Any) -> None:
        """Upsert the instance's archive state row (columns of ``binlog_archive_state``)."""
        t = binlog_archive_state_table
        times = ("last_event_at", "measured_at", "window_start", "window_end", "lag_alerted_at",
                 "failure_alerted_at")
        clean = {k: (_when(v) if k in times else v) for k, v in values.items()}
        clean["updated_at"] = _now()

        def work(conn: Connection) -> None:
            if conn.execute(select(t.c.instance).where(t.c.instance == instance)).first() is None:
                conn.execute(t.insert().values(instance=instance, **clean))
            else:
                conn.execute(t.update().where(t.c.instance == instance).values(**clean))

        self._tx(work)

    def archive_state(self, instance: str) -> dict[str, Any] | None:
        t = binlog_archive_state_table
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.instance == instance)).mappings().first()
        return None if row is None else _plain(row)

    # --- restores (mysql_restore_full) -----------------------------------------------------------
    # (mysqlbackup.restore plans; these methods only store and answer what the plan needs)

    def label_owners(self, label: str) -> list[str]:
        """The instances that have a backup row called ``label`` (any status)."""
        t = backups_table
        with self.engine.connect() as conn:
            return sorted({r[0] for r in conn.execute(select(t.c.instance).where(t.c.label == label))})

    def latest_server_ids(self) -> dict[str, int]:
        """instance -> the server_id its newest facts snapshot recorded (one query for every instance)."""
        t = facts_table
        newest = select(t.c.instance, func.max(t.c.id).label("id")).group_by(t.c.instance).subquery()
        query = select(t.c.instance, t.c.facts_json).join(newest, t.c.id == newest.c.id)
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for instance, text in conn.execute(query):
                try:
                    sid = json.loads(text).get("server_id")
                except (ValueError, AttributeError):
                    continue
                if isinstance(sid, int) and not isinstance(sid, bool):
                    out[instance] = sid
        return out

    def facts_before(self, instance: str, when: datetime | str | None) -> dict[str, Any] | None:
        """The newest facts of an instance collected at or before ``when`` (None: the newest of all)."""
        t = facts_table
        query = select(t.c.facts_json).where(t.c.instance == instance)
        if when is not None:
            query = query.where(t.c.collected_at <= _utc_naive(when))
        query = query.order_by(t.c.collected_at.desc(), t.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            text = conn.execute(query).scalar()
        return None if text is None else json.loads(text)

    def start_restore(self, restore_id: str, instance: str, target: str, labels: Sequence[str], run_id: str | None,
                      server_id: int | None, gtid: str | None, kind: str = "full") -> None:
        """Record a restore as running (the row is written once per restore_id)."""
        now = _now()
        t = restores_table

        def work(conn: Connection) -> None:
            existing = conn.execute(select(t.c.id).where(t.c.restore_id == restore_id)).first()
            values = {"instance": instance[:64], "target": target[:64], "kind": kind,
                      "backup_label": labels[-1] if labels else None, "labels_json": json.dumps(list(labels)),
                      "status": "running", "run_id": run_id, "server_id": server_id, "gtid": gtid,
                      "started_at": now, "finished_at": None, "error": None, "updated_at": now}
            if existing is None:
                conn.execute(t.insert().values(restore_id=restore_id, steps_json="[]", **values))
            else:
                conn.execute(t.update().where(t.c.id == existing[0]).values(**values))

        self._tx(work)

    def restore_step(self, restore_id: str, step: str, seconds: float) -> None:
        """Add one finished step and its duration to a restore's row."""
        t = restores_table

        def work(conn: Connection) -> None:
            row = conn.execute(select(t.c.id, t.c.steps_json).where(t.c.restore_id == restore_id)).first()
            if row is None:
                return
            steps = [s for s in json.loads(row[1] or "[]") if s[0] != step] + [[step, round(float(seconds), 3)]]
            conn.execute(t.update().where(t.c.id == row[0]).values(steps_json=json.dumps(steps), updated_at=_now()))

        self._tx(work)

    def finish_restore(self, restore_id: str, status: str, result: dict[str, Any] | None = None,
                       error: str | None = None) -> None:
        """End a restore: ``succeeded`` or ``failed`` (with the error); a succeeded row is never failed later."""
        if status not in ("succeeded", "failed"):
            raise ValueError(f"a restore ends succeeded or failed, not {status!r}")
        t = restores_table

        def work(conn: Connection) -> None:
            row = conn.execute(select(t.c.id, t.c.status, t.c.result_json).where(t.c.restore_id == restore_id)).first()
            if row is None:
                return
            values: dict[str, Any] = {"updated_at": _now()}
            if row[1] == "succeeded" and status == "failed":
                # a later step (make_replica_of_source) failed: the data is restored; say what failed after
                merged = dict(json.loads(row[2] or "{}"), after_restore_error=str(error or "")[:_ERROR_LIMIT])
                values["result_json"] = json.dumps(merged, default=str)
                values["error"] = str(error or "")[:_ERROR_LIMIT]
            else:
                values.update(status=status, finished_at=_now(),
                              error=None if error is None else str(error)[:_ERROR_LIMIT])
                if result is not None:
                    values["result_json"] = json.dumps(result, default=str)
            conn.execute(t.update().where(t.c.id == row[0]).values(**values))

        self._tx(work)

    def add_restore_result(self, restore_id: str, **more: Any) -> None:
        """Add keys to a restore's recorded result (what a step after the report did)."""
        t = restores_table

        def work(conn: Connection) -> None:
            row = conn.execute(select(t.c.id, t.c.result_json).where(t.c.restore_id == restore_id)).first()
            if row is not None:
                merged = dict(json.loads(row[1] or "{}"), **more)
                conn.execute(t.update().where(t.c.id == row[0]).values(result_json=json.dumps(merged, default=str),
                                                                       updated_at=_now()))

        self._tx(work)

    def refuse_restore(self, restore_id: str, instance: Any, target: Any, run_id: str | None, error: str) -> None:
        """Record a restore refused before any host was touched (the params as given, cut)."""
        now = _now()
        t = restores_table

        def work(conn: Connection) -> None:
            if conn.execute(select(t.c.id).where(t.c.restore_id == restore_id)).first() is not None:
                return
            conn.execute(t.insert().values(restore_id=restore_id, instance=str(instance)[:64], target=str(target)[:64],
                                           kind="full", status="refused", run_id=run_id, started_at=now,
                                           finished_at=now, steps_json="[]", error=str(error)[:_ERROR_LIMIT],
                                           updated_at=now))

        self._tx(work)

    def abandon_restores(self, target: str, keep: str) -> list[str]:
        """Mark failed every restore to ``target`` still 'running' except ``keep`` (one restore runs at a time:
        those are left by runs that died). Returns their restore ids."""
        t = restores_table

        def work(conn: Connection) -> list[str]:
            rows = conn.execute(select(t.c.id, t.c.restore_id).where(and_(
                t.c.target == target, t.c.status == "running", t.c.restore_id != keep))).all()
            for r in rows:
                conn.execute(t.update().where(t.c.id == r[0]).values(
                    status="failed", finished_at=_now(), updated_at=_now(),
                    error="abandoned: the run that started it stopped before it finished"))
            return [r[1] for r in rows]

        return self._tx(work)

    def restores(self, instance: str | None = None, target: str | None = None,
                 restore_id: str | None = None) -> list[dict[str, Any]]:
        """Restore rows, newest first (``labels``, ``steps`` and ``result`` decoded)."""
        t = restores_table
        query = select(t)
        for column, value in ((t.c.instance, instance), (t.c.target, target), (t.c.restore_id, restore_id)):
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            rows = [_plain(r) for r in conn.execute(query.order_by(t.c.id.desc())).mappings()]
        for r in rows:
            r["labels"] = json.loads(r.get("labels_json") or "[]")
            r["steps"] = json.loads(r.get("steps_json") or "[]")
            r["result"] = json.loads(r["result_json"]) if r.get("result_json") else None
        return rows

    def restore(self, restore_id: str) -> dict[str, Any] | None:
        """One restore's row, or None."""
        rows = self.restores(restore_id=restore_id)
        return rows[0] if rows else None

    # --- drills (mysql_restore_drill) ------------------------------------------------------------

    def record_drill(self, drill_id: str, instance: str, target: str, run_id: str | None, backup_label: str | None,
                     kind: str, result: str, started_at: datetime, rto_seconds: float | None,
                     rpo_seconds: float | None, point_time: datetime | None, details: dict[str, Any] | None = None,
                     error: str | None = None) -> None:
        """Record one drill (again for the same drill_id: replaced)."""
        if result not in ("succeeded", "failed"):
            raise ValueError(f"a drill ends succeeded or failed, not {result!r}")
        t = drills_table
        values = {"instance": instance[:64], "target": target[:64], "run_id": run_id, "kind": kind[:16],
                  "backup_label": backup_label, "result": result, "started_at": _utc_naive(started_at),
                  "finished_at": _now(), "rto_seconds": rto_seconds, "rpo_seconds": rpo_seconds,
                  "point_time": None if point_time is None else _utc_naive(point_time),
                  "details_json": json.dumps(details or {}, default=str),
                  "error": None if error is None else str(error)[:_ERROR_LIMIT]}

        def work(conn: Connection) -> None:
            existing = conn.execute(select(t.c.id).where(t.c.drill_id == drill_id)).first()
            if existing is None:
                conn.execute(t.insert().values(drill_id=drill_id, **values))
            else:
                conn.execute(t.update().where(t.c.id == existing[0]).values(**values))

        self._tx(work)

    def drills(self, instance: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Drill rows, newest first (``details`` decoded)."""
        t = drills_table
        query = select(t)
        if instance is not None:
            query = query.where(t.c.instance == instance)
        if run_id is not None:
            query = query.where(t.c.run_id == run_id)
        with self.engine.connect() as conn:
            rows = [_plain(r) for r in conn.execute(query.order_by(t.c.id.desc())).mappings()]
        for r in rows:
            r["details"] = json.loads(r.get("details_json") or "{}")
        return rows

    def last_successful_drills(self) -> dict[str, datetime]:
        """instance -> when its newest successful drill finished (UTC)."""
        t = drills_table
        query = select(t.c.instance, func.max(t.c.finished_at)).where(t.c.result == "succeeded").group_by(t.c.instance)
        with self.engine.connect() as conn:
            return {i: when.replace(tzinfo=timezone.utc) for i, when in conn.execute(query) if when is not None}


def _binlog_number(name: str) -> int:
    """``binlog.000042`` -> 42 (-1 when the name has no number)."""
    tail = str(name).rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _when(value: Any) -> datetime | None:
    """Epoch seconds, a datetime or an ISO string as a naive UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc).replace(tzinfo=None)
    return _utc_naive(value)


def _plain(row: RowMapping) -> dict[str, Any]:
    """A row as a dict with every datetime as an ISO-8601 'Z' string."""
    return {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in dict(row).items()}


def _instance_label(path: str, manifest: bool = False) -> tuple[str, str] | None:
    """``(instance, label)`` of ``.../<instance>/<label>[/manifest.json]``, or None."""
    parts = posixpath.normpath(str(path).replace("\\", "/")).split("/")
    if manifest:
        if len(parts) < 3 or parts[-1] != "manifest.json":
            return None
        parts = parts[:-1]
    return (parts[-2], parts[-1]) if len(parts) >= 2 and parts[-1] and parts[-2] else None


def _check_path(path: str, m: Manifest) -> None:
    """A manifest found at ``.../<instance>/<label>/manifest.json`` must describe that backup."""
    parts = posixpath.normpath(path.replace("\\", "/")).split("/")
    if len(parts) >= 3 and parts[-1] == "manifest.json" and parts[-3:-1] != [m.instance, m.label]:
        raise ManifestError(
            f"manifest describes {m.instance}/{m.label} but was found in {parts[-3]}/{parts[-2]}")
