"""Full restore planning: which backup set goes to which target, with which server_id (pure, no Airflow).

A full restore takes one instance's backup, the full plus every incremental up to the chosen one (a
"backup set"), to a host declared in the CMDB's ``restore_targets``. Everything that can be decided
without touching a host is decided here, and refused with a message that says what is wrong and what
would be right (``RestoreRefused`` names the param the way the trigger form calls it):

- ``RestoreRequest.parse``: the run's params, every string checked by form before it is compared with
  anything (an instance or a target is an exact CMDB name; a label has the label form; a date is
  ``YYYY-MM-DD`` and a real day; booleans are JSON booleans); unknown params are refused, so a conf
  cannot smuggle in a ``datadir`` or a ``stop_command``.
- ``choose_backup_set``: by ``backup_label``, by ``backup_date`` (the newest restorable backup that
  finished that day, UTC; when there is none, the nearest days that have one), or the newest
  restorable backup. A backup is restorable when it and every link of its chain are ``usable``: a
  ``damaged``, ``missing``, ``expired``, ``failed`` or ``running`` link is named, never restored.
- ``choose_server_id``: the target's own ``server_id``, else one derived from its name in
  4,000,000,000..4,294,967,295 (the binlog archive's client ids live below), never one a CMDB
  instance uses (as last seen), nor the backup's source's: a restored server that keeps the source's
  server_id silently skips that server's events later, as its own.
- ``plan_restore``: all of the above, plus the target's permission for the instance, into a
  ``RestorePlan`` (what the DAG's tasks pass on, JSON-able, never a secret).

What only the target can tell is judged here too, from what ``target.py check`` reported:
``version_problem`` (the target's mariabackup prepares the set: same flavor and major.minor series as
the tool that took it; the target's server the same series as the backed-up server),
``target_problems`` (a non-empty datadir without ``overwrite``, a server still running on a datadir
that is not ours, space) and, after the start, ``compare_restored`` (the prepared set and the running
server against what the backup recorded).

The point-in-time replay builds on this module: a ``RestorePlan``'s ``backup_set`` and ``gtid`` are
where its roll-forward starts.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from mysqlbackup.labels import FULL, is_label, parse_label
from mysqlbackup.text import capped

KIND_FULL = "full"
PARAMS = ("instance", "target", "backup_date", "backup_label", "overwrite", "make_replica_of_source")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# server_ids a restore picks by itself (the binlog archive derives its client ids in 1e9..4e9-1)
SERVER_ID_BASE = 4_000_000_000
SERVER_ID_MAX = 4_294_967_295
# the space a restore needs beyond its estimate (redo log, the prepared copy growing)
SPACE_MARGIN = 1.10
SPACE_SLACK = 64 << 20
SYSTEM_SCHEMAS = ("mysql", "performance_schema", "sys", "information_schema")
# a backup's compression: how much larger its extracted files are, when nothing better is known
EXPANSION = {"zstd": 4.0, "gzip": 4.0, "none": 1.0}


class RestoreRefused(ValueError):
    """A restore that must not start (nothing was touched); ``field`` is the param to fix, if one is."""

    def __init__(self, field_: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field_
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def shown(value: Any, limit: int = 80) -> str:
    """A value for a message: repr (newlines and escapes stay visible, never forge a log line), cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class RestoreRequest:
    """The params of one restore run, checked by form (not yet against the CMDB or the catalog)."""

    instance: str
    target: str
    backup_date: date | None = None
    backup_label: str | None = None
    overwrite: bool = False
    make_replica_of_source: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, Any], given: Iterable[str] = ()) -> "RestoreRequest":
        """From a run's params; ``given``: the keys the run's conf sets (an unknown one is refused)."""
        unknown = sorted(str(k) for k in given if k not in PARAMS)
        if unknown:
            raise RestoreRefused(None, f"unknown param(s) {capped(shown(k, 40) for k in unknown)}; a restore "
                                       f"takes only {', '.join(PARAMS)} (the target's datadir and commands come "
                                       "from the CMDB, never from a run)")
        instance = _name(params.get("instance"), "instance", "an instance name of the CMDB")
        target = _name(params.get("target"), "target", "a restore target name of the CMDB")
        label = params.get("backup_label")
        if label in (None, ""):
            label = None
        elif not isinstance(label, str) or len(label) > 64 or not label.isascii() or not is_label(label):
            raise RestoreRefused("backup_label", f"{shown(label)} is not a backup label: expected "
                                                 "YYYYMMDD-HHMMSSF (a full) or YYYYMMDD-HHMMSSF_YYYYMMDD-HHMMSSI "
                                                 "(an incremental), in UTC, like 20261124-020000F")
        day = _day(params.get("backup_date"))
        if label is not None and day is not None:
            raise RestoreRefused("backup_date", "give backup_date or backup_label, not both (the label names one "
                                                "backup already)")
        return cls(instance, target, day, label, _flag(params.get("overwrite"), "overwrite"),
                   _flag(params.get("make_replica_of_source"), "make_replica_of_source"))


def _name(value: Any, what: str, expected: str) -> str:
    if not isinstance(value, str) or not value:
        raise RestoreRefused(what, f"required: {expected} (got {shown(value)})")
    if not NAME_RE.match(value) or value.endswith("\n"):
        raise RestoreRefused(what, f"{shown(value)} is not a name: expected {expected} (letters, digits, _ and -, "
                                   "at most 64)")
    return value


def _day(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        raise RestoreRefused("backup_date", f"{shown(value)} is a point in time: expected a day, YYYY-MM-DD (UTC)")
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not DATE_RE.match(value) or value.endswith("\n"):
        raise RestoreRefused("backup_date", f"{shown(value)} is not a date: expected YYYY-MM-DD, the UTC day the "
                                            "backup finished, like 2026-11-24")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RestoreRefused("backup_date", f"{shown(value)} is not a real day: expected YYYY-MM-DD, like "
                                            "2026-11-24") from None


def _flag(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RestoreRefused(what, f"{shown(value)} is not a boolean: expected true or false")
    return value


# ---------------------------------------------------------------------------------------------- the backup set


@dataclass(frozen=True)
class Link:
    """One backup of a set (the catalog row as much as a restore needs of it)."""

    label: str
    kind: str
    storage_ssh_conn_id: str
    storage_path: str
    artifact: str
    compress: str
    sha256: str
    size_bytes: int
    finished_at: str | None
    to_lsn: int | None
    last_lsn: int | None
    gtid: str | None
    binlog_file: str | None
    binlog_pos: int | None
    tool: str
    server_version: str
    source_name: str | None
    source_server_id: int | None
    source_is_primary: bool | None
    replica_source_gtid: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Link":
        m = _manifest(row)
        replica = m.get("replica_source") or {}
        return cls(label=row["label"], kind=row.get("kind") or FULL,
                   storage_ssh_conn_id=str(row.get("storage_ssh_conn_id") or ""),
                   storage_path=str(row.get("storage_path") or ""), artifact=str(row.get("artifact") or ""),
                   compress=str(row.get("compress") or m.get("compress") or "none"), sha256=str(row.get("sha256") or ""),
                   size_bytes=int(row.get("size_bytes") or 0), finished_at=row.get("finished_at"),
                   to_lsn=_int(row.get("to_lsn")), last_lsn=_int(row.get("last_lsn")), gtid=row.get("gtid") or None,
                   binlog_file=row.get("binlog_file"), binlog_pos=_int(row.get("binlog_pos")),
                   tool=str(m.get("tool") or ""), server_version=str(m.get("server_version") or ""),
                   source_name=row.get("source_name"), source_server_id=_int(m.get("source_server_id")),
                   source_is_primary=m.get("source_is_primary"), replica_source_gtid=replica.get("gtid"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackupSet:
    """A full and every incremental up to the chosen backup, full first."""

    links: tuple[Link, ...]
    reason: str

    @property
    def chosen(self) -> Link:
        return self.links[-1]

    @property
    def full(self) -> Link:
        return self.links[0]

    @property
    def labels(self) -> list[str]:
        return [link.label for link in self.links]


def _manifest(row: Mapping[str, Any]) -> dict:
    import json
    try:
        value = json.loads(row.get("manifest_json") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _why_status(row: Mapping[str, Any]) -> str:
    status = row.get("status")
    error = str(row.get("error") or "").strip()
    why = {"running": "it never finished (left running by a run that stopped)",
           "failed": "it never finished",
           "missing": "its directory is gone from storage",
           "damaged": "its stored copy is damaged",
           "expired": "retention removed it"}.get(str(status), f"its status is {status}")
    return f"{why}{': ' + error[:200] if error else ''}"


def restorable_problem(row: Mapping[str, Any], by_label: Mapping[str, Mapping[str, Any]]) -> tuple[str | None,
                                                                                                  list[Mapping]]:
    """(why ``row`` cannot be restored, or None; its chain, full first, up to it)."""
    label = row["label"]
    if row.get("status") != "usable":
        return f"{label} is {row.get('status')}: {_why_status(row)}; only usable backups are restored", []
    if row.get("verify_status") not in (None, "ok"):
        return f"{label} was not verified ({row.get('verify_status')})", []
    chain: list[Mapping] = []
    cur: Mapping[str, Any] | None = row
    seen: set[str] = set()
    while cur is not None:
        if cur["label"] in seen:
            return f"the chain of {label} loops at {cur['label']}: the catalog is inconsistent", []
        seen.add(cur["label"])
        chain.append(cur)
        if (cur.get("kind") or FULL) == FULL or parse_label(cur["label"]).kind == FULL:
            break
        parent = cur.get("parent") or _manifest(cur).get("parent")
        prev = by_label.get(parent) if parent else None
        if prev is None:
            return f"the chain of {label} is broken: its link {parent or '?'} is not in the catalog", []
        if prev.get("status") != "usable":
            return (f"the chain of {label} has the link {parent}, which is {prev.get('status')}: {_why_status(prev)}; "
                    "a chain is restored only when every link is usable"), []
        cur = prev
    for link in chain:
        if not link.get("artifact") or not link.get("storage_path") or not link.get("sha256"):
            return f"{link['label']} has no stored artifact recorded (storage path, artifact, sha256)", []
    chain.reverse()
    return None, chain


def _finished_day(row: Mapping[str, Any]) -> date | None:
    value = row.get("finished_at")
    if not value:
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    else:
        text = str(value).replace("Z", "+00:00")
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).date()


def choose_backup_set(rows: Iterable[Mapping[str, Any]], instance: str, label: str | None = None,
                      day: date | None = None, label_owners: Sequence[str] = ()) -> BackupSet:
    """The backup set to restore from one instance's catalog rows (any status).

    ``label_owners``: the instances that have a backup called ``label`` (to say so when it is not this
    instance's). Raises ``RestoreRefused`` naming the param.
    """
    by_label = {r["label"]: r for r in rows}
    if label is not None:
        row = by_label.get(label)
        if row is None:
            others = sorted(set(label_owners) - {instance})
            if others:
                raise RestoreRefused("backup_label", f"{label} is a backup of {capped(others)}, not of {instance}: "
                                                     f"choose a label of {instance}'s backups"
                                                     + _newest_hint(by_label))
            raise RestoreRefused("backup_label", f"{instance} has no backup {label}" + _newest_hint(by_label))
        problem, chain = restorable_problem(row, by_label)
        if problem:
            raise RestoreRefused("backup_label", f"{label} of {instance} cannot be restored: {problem}"
                                 + _newest_hint(by_label))
        return BackupSet(tuple(Link.from_row(r) for r in chain), f"backup_label {label}")
    candidates = []
    refused_that_day = []
    for row in sorted(by_label.values(), key=lambda r: (str(r.get("finished_at") or ""), r["label"]), reverse=True):
        if day is not None and _finished_day(row) != day:
            continue
        problem, chain = restorable_problem(row, by_label)
        if problem is None:
            candidates.append(chain)
            break
        if day is not None and row.get("status") not in ("running",):
            refused_that_day.append(problem)
    if candidates:
        chain = candidates[0]
        why = (f"backup_date {day.isoformat()}: the newest restorable backup that finished that day (UTC)"
               if day is not None else "no backup_date or backup_label: the newest restorable backup")
        return BackupSet(tuple(Link.from_row(r) for r in chain), why)
    if day is None:
        raise RestoreRefused("instance", f"{instance} has no restorable backup"
                             + (f" ({capped(refused_that_day)})" if refused_that_day else "")
                             + ": take a backup first (mysql_backup__" + instance + ")")
    before, after = nearest_restorable_days(by_label.values(), day)
    near = [f"{d.isoformat()} (before)" for d in before] + [f"{d.isoformat()} (after)" for d in after]
    raise RestoreRefused("backup_date", f"{instance} has no restorable backup that finished on {day.isoformat()} "
                                        "(UTC)" + (f": {capped(refused_that_day, 3)}" if refused_that_day else "")
                         + (f". Nearest days with one: {', '.join(near)}" if near
                            else ". It has no restorable backup on any day"))


def _newest_hint(by_label: Mapping[str, Mapping[str, Any]]) -> str:
    usable = sorted((lb for lb, r in by_label.items() if restorable_problem(r, by_label)[0] is None), reverse=True)
    return f" (restorable: {capped(usable, 5)})" if usable else " (it has no restorable backup)"


def nearest_restorable_days(rows: Iterable[Mapping[str, Any]], day: date) -> tuple[list[date], list[date]]:
    """The closest day before and the closest after ``day`` on which a restorable backup finished."""
    rows = list(rows)
    by_label = {r["label"]: r for r in rows}
    days = sorted({d for r in rows if (d := _finished_day(r)) is not None
                   and restorable_problem(r, by_label)[0] is None})
    before = [d for d in days if d < day][-1:]
    after = [d for d in days if d > day][:1]
    return before, after


# ---------------------------------------------------------------------------------------------- server_id


def derived_server_id(target_name: str) -> int:
    """The server_id a target gets when the CMDB gives none: from its name, the same every restore."""
    span = SERVER_ID_MAX - SERVER_ID_BASE
    return SERVER_ID_BASE + 1 + zlib.crc32(f"restore-target:{target_name}".encode()) % span


def choose_server_id(target_name: str, explicit: int | None, used: Mapping[int, str]) -> tuple[int, str]:
    """(the restored server's server_id, why). ``used``: server_id -> who uses it (CMDB instances as last
    seen, the backup's source, the binlog archive's clients, other targets' explicit ids)."""
    if explicit is not None:
        if explicit in used:
            raise RestoreRefused("target", f"restore target {target_name}'s server_id {explicit} is the server_id of "
                                           f"{used[explicit]}: a restored server with that server_id would skip its "
                                           "events as its own; set another server_id in restore_targets (or none)")
        return explicit, f"the target's server_id {explicit} (CMDB)"
    sid = derived_server_id(target_name)
    start = sid
    while sid in used:
        sid = SERVER_ID_BASE + 1 + (sid - SERVER_ID_BASE) % (SERVER_ID_MAX - SERVER_ID_BASE)
        if sid == start:  # pragma: no cover - 294 million ids in use
            raise RestoreRefused("target", "no free server_id left for the restored server")
    return sid, (f"server_id {sid}, derived from the target's name (no CMDB server_id), used by no instance, the "
                 "backup's source, the binlog archive or another target")


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class RestorePlan:
    """What a full restore does: JSON-able (``as_dict``/``from_dict``), passed between the DAG's tasks."""

    restore_id: str
    instance: str
    target: str
    backup_set: BackupSet
    server_id: int
    server_id_reason: str
    overwrite: bool
    make_replica_of_source: bool
    flavor: str
    data_bytes: int  # the estimated size of the prepared data
    primary: dict[str, Any] | None = None  # name, host, port of the instance's primary (make_replica_of_source)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # where the tasks work (from the CMDB, never from a run's conf): the target's host, port, connections,
    # datadir, work directory, stop/start commands (``target_spec``); how the storage host runs scripts
    target_spec: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)

    @property
    def gtid(self) -> str | None:
        """The GTID the restored server is at: the chosen backup's (for a replica's backup, the source's)."""
        return self.backup_set.chosen.gtid

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = self.backup_set.labels
        d["gtid"] = self.gtid
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RestorePlan":
        bs = d["backup_set"]
        return cls(restore_id=d["restore_id"], instance=d["instance"], target=d["target"],
                   backup_set=BackupSet(tuple(Link(**link) for link in bs["links"]), bs["reason"]),
                   server_id=int(d["server_id"]), server_id_reason=d["server_id_reason"], overwrite=bool(d["overwrite"]),
                   make_replica_of_source=bool(d["make_replica_of_source"]), flavor=d["flavor"],
                   data_bytes=int(d["data_bytes"]), primary=d.get("primary"), notes=tuple(d.get("notes") or ()),
                   target_spec=dict(d.get("target_spec") or {}), storage=dict(d.get("storage") or {}))


def plan_restore(request: RestoreRequest, cmdb: Any, rows: Iterable[Mapping[str, Any]], restore_id: str,
                 used_server_ids: Mapping[int, str] | None = None, label_owners: Sequence[str] = (),
                 data_bytes: int | None = None) -> RestorePlan:
    """Everything a restore decides before it touches a host (``cmdb``: a ``mysqlbackup.cmdb.Cmdb``).

    ``rows``: the instance's catalog rows (any status). ``used_server_ids``: server_id -> who (the
    operator adds the CMDB instances as last seen by the catalog); the backup set's source's
    server_id and the binlog archive's client ids are added here. ``data_bytes``: the backed-up
    server's data size when it was backed up (None: estimated from the artifacts).
    """
    inst = cmdb.by_name(request.instance)
    if inst is None:
        raise RestoreRefused("instance", f"unknown instance {shown(request.instance)}: not a valid row of the CMDB "
                                         f"(instances: {capped(i.name for i in cmdb.instances)})")
    target = cmdb.restore_target(request.target)
    if target is None:
        known = [t.name for t in cmdb.restore_targets]
        raise RestoreRefused("target", f"unknown restore target {shown(request.target)}: "
                             + (f"the CMDB declares {capped(known)}" if known else
                                "the CMDB declares no restore_targets; add one (a host that is no instance)"))
    if not target.allows(inst.name):
        raise RestoreRefused("target", f"restore target {target.name} does not take {inst.name}: its "
                                       f"allowed_instances are {capped(target.allowed_instances or ())}; choose "
                                       f"another target, or add {inst.name} to its allowed_instances")
    if target.flavor != inst.flavor:
        raise RestoreRefused("target", f"restore target {target.name} is {target.flavor}, {inst.name} is "
                                       f"{inst.flavor}: a physical backup restores only to the same flavor")
    bset = choose_backup_set(rows, inst.name, request.backup_label, request.backup_date, label_owners)
    used = dict(used_server_ids or {})
    for link in bset.links:
        if link.source_server_id is not None:
            used.setdefault(link.source_server_id, f"{link.source_name}, the source of backup {link.label}")
    from mysqlbackup.archive import archive_enabled, client_server_id
    for other in cmdb.instances:
        if archive_enabled(other):
            used.setdefault(client_server_id(other), f"the binlog archive client of {other.name}")
    for t in cmdb.restore_targets:
        if t.server_id is not None and t.name != target.name:
            used.setdefault(t.server_id, f"restore target {t.name}")
    server_id, why = choose_server_id(target.name, target.server_id, used)
    primary = inst if inst.role == "primary" else cmdb.by_name(inst.replica_of or "")
    notes = []
    if bset.chosen.source_is_primary is False and not bset.chosen.gtid:
        notes.append(f"backup {bset.chosen.label} has no GTID: make_replica_of_source cannot position a replica")
    if request.make_replica_of_source and not bset.chosen.gtid:
        raise RestoreRefused("make_replica_of_source", f"backup {bset.chosen.label} recorded no GTID: a GTID "
                                                       "replica cannot be positioned; restore without it")
    if request.make_replica_of_source and primary is None:
        raise RestoreRefused("make_replica_of_source", f"{inst.name}'s primary {inst.replica_of} is not a valid CMDB "
                                                       "row: there is nothing to replicate from")
    estimate = data_bytes if data_bytes and data_bytes > 0 else \
        int(bset.full.size_bytes * EXPANSION.get(bset.full.compress, 4.0))
    spec = {"name": target.name, "host": target.host, "port": target.port, "ssh_conn_id": target.ssh_conn_id,
            "mysql_conn_id": target.mysql_conn_id, "datadir": target.datadir, "work_dir": target.work_path,
            "flavor": target.flavor, "stop_command": target.stop_command, "start_command": target.start_command,
            "python": target.python, "become": target.become}
    primary_spec = None
    if primary is not None:
        primary_spec = {"name": primary.name, "host": primary.host, "port": primary.port,
                        "replication_conn_id": target.replication_conn_id or primary.policy.binlog_archive.conn_id
                        or primary.mysql_conn_id}
    return RestorePlan(
        restore_id=restore_id, instance=inst.name, target=target.name, backup_set=bset, server_id=server_id,
        server_id_reason=why, overwrite=request.overwrite, make_replica_of_source=request.make_replica_of_source,
        flavor=inst.flavor, data_bytes=estimate, primary=primary_spec, notes=tuple(notes), target_spec=spec,
        storage={"python": inst.python, "become": inst.become})


# ---------------------------------------------------------------------------------------------- the target's check


def _series(version: str | None) -> tuple[int, int] | None:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _patch(version: str | None) -> tuple[int, int, int] | None:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(x) for x in m.groups()) if m else None  # type: ignore[return-value]


def version_problem(flavor: str, backup_tool: str, backup_server: str, target_tool: str | None,
                    target_server: str | None) -> tuple[str | None, list[str]]:
    """(why the target cannot restore this backup, or None; notes). The target's mariabackup (xtrabackup)
    prepares the set: the same major.minor series as the tool that took it (the redo log format changes
    between series); the target's server then starts the prepared files: the same series as the server
    that was backed up."""
    tool_name = "mariabackup" if flavor == "mariadb" else "xtrabackup"
    notes: list[str] = []
    if not target_tool:
        return f"{tool_name} is not installed on the target (install {'mariadb-backup' if flavor == 'mariadb' else 'percona-xtrabackup-80'})", notes
    if tool_name not in target_tool:
        return f"the target's backup tool is {target_tool!r}, a {flavor} backup needs {tool_name}", notes
    want, have = _series(backup_tool) or _series(backup_server), _series(target_tool)
    if want is None:
        notes.append(f"the backup does not record its tool's version ({backup_tool!r}): version not compared")
    elif have is None:
        return f"cannot read the target's {tool_name} version from {target_tool!r}", notes
    elif want != have:
        return (f"the backup was taken with {tool_name} {want[0]}.{want[1]} ({backup_tool}), the target has "
                f"{target_tool}: prepare needs the same major.minor series; install {tool_name} {want[0]}.{want[1]} "
                "on the target"), notes
    elif (_patch(target_tool) or (0, 0, 0)) < (_patch(backup_tool) or (0, 0, 0)):
        notes.append(f"the target's {target_tool} is older than the {backup_tool} that took the backup (same series: "
                     "fine)")
    server_want = _series(backup_server)
    if not target_server:
        notes.append("no server binary found on the target's PATH: its version is not compared (the start_command "
                     "starts what it starts)")
    elif server_want is not None and _series(target_server) != server_want:
        return (f"the backed-up server was {backup_server}, the target's server is {target_server}: the prepared "
                f"files start only on the same major.minor series ({server_want[0]}.{server_want[1]})"), notes
    return None, notes


def space_need(plan: RestorePlan, data_bytes: int | None = None) -> dict[str, int]:
    """Bytes the work area and the datadir need: the extracted set (the full plus each incremental,
    extracted together before the chain is prepared) in the work area, the prepared copy in the
    datadir (copy-back), with a margin."""
    data = int(data_bytes or plan.data_bytes)
    full = plan.backup_set.full
    expansion = (data / full.size_bytes) if full.size_bytes else EXPANSION.get(full.compress, 4.0)
    incrementals = sum(min(data, int(link.size_bytes * expansion)) for link in plan.backup_set.links[1:])
    return {"work": int((data + incrementals) * SPACE_MARGIN) + SPACE_SLACK,
            "datadir": int(data * SPACE_MARGIN) + SPACE_SLACK}


def target_problems(plan: RestorePlan, check: Mapping[str, Any], backup_tool: str | None = None,
                    backup_server: str | None = None) -> tuple[list[str], list[str]]:
    """(why the target cannot take this restore now, notes) from ``target.py check``'s result."""
    problems: list[str] = []
    chosen = plan.backup_set.chosen
    why, notes = version_problem(plan.flavor, backup_tool or chosen.tool, backup_server or chosen.server_version,
                                 check.get("tool_version"), check.get("server_version"))
    if why:
        problems.append(why)
    state = check.get("datadir_state")
    datadir = check.get("datadir")
    if state == "data" and not plan.overwrite:
        entries = capped(check.get("datadir_entries") or (), 5)
        problems.append(f"the target's datadir {datadir} is not empty ({entries}; "
                        f"{_human(check.get('datadir_bytes'))}): set overwrite to true to replace it, or choose "
                        "another target")
    elif state == "not_restored":
        notes.append(f"the target's datadir {datadir} holds an unfinished restore "
                     f"({(check.get('marker') or {}).get('restore_id', '?')}): it is replaced")
    elif state not in ("absent", "empty", "data"):
        problems.append(f"the target's datadir {datadir} is {state}: {check.get('datadir_detail') or ''}".rstrip(": "))
    need = space_need(plan)
    freed = int(check.get("datadir_bytes") or 0) if state in ("data", "not_restored") else 0
    work_free = int((check.get("work_fs") or {}).get("avail_bytes") or 0)
    data_free = int((check.get("datadir_fs") or {}).get("avail_bytes") or 0)
    if check.get("same_fs"):
        total = need["work"] + need["datadir"]
        if work_free < need["work"] or work_free + freed < total:
            problems.append(f"not enough space on the target: {_human(work_free)} free"
                            + (f" (+ {_human(freed)} of the old datadir, removed before the copy-back)" if freed else "")
                            + f" on the filesystem of {check.get('work_dir')} and {datadir}; the restore needs about "
                              f"{_human(need['work'])} for the backup set and {_human(need['datadir'])} for the "
                              "copied-back datadir")
    else:
        if work_free < need["work"]:
            problems.append(f"not enough space on the target for the backup set: {_human(work_free)} free in "
                            f"{check.get('work_dir')}, about {_human(need['work'])} needed")
        if data_free + freed < need["datadir"]:
            problems.append(f"not enough space on the target for the datadir: {_human(data_free)} free"
                            + (f" (+ {_human(freed)} of the old datadir)" if freed else "")
                            + f" for {datadir}, about {_human(need['datadir'])} needed")
    for tool in ("extractor", "python"):
        if check.get("missing_" + tool):
            problems.append(str(check["missing_" + tool]))
    return problems, notes


def _human(n: Any) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


# ---------------------------------------------------------------------------------------------- after the start


def gtid_set(text: str | None) -> dict[tuple[int, int], int]:
    """``0-1-10,1-2-5`` -> {(domain, server): seq} (MariaDB GTID positions, the highest per domain and server)."""
    out: dict[tuple[int, int], int] = {}
    for part in (text or "").replace("\n", ",").split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)-(\d+)", part)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            out[key] = max(out.get(key, 0), int(m.group(3)))
    return out


def same_position(a: str | None, b: str | None) -> bool:
    """Two GTID positions name the same point (per domain, the last GTID)."""
    def per_domain(text: str | None) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for (domain, server), seq in gtid_set(text).items():
            if domain not in out or seq > out[domain][1]:
                out[domain] = (server, seq)
        return out
    return per_domain(a) == per_domain(b)


def compare_restored(plan: RestorePlan, prepared: Mapping[str, Any], observed: Mapping[str, Any]) -> tuple[list[str],
                                                                                                         list[str]]:
    """(differences, notes) between what the backup recorded and what was restored.

    ``prepared``: ``target.py prepare``'s result (the set's metadata after the last link was applied:
    binlog position and GTID, LSNs, the tables of each schema). ``observed``: ``target.py verify``'s
    (the running server: server_id, version, GTID state, the tables it opens, replication)."""
    chosen = plan.backup_set.chosen
    diffs: list[str] = []
    notes: list[str] = []
    cp = prepared.get("checkpoints") or {}
    # to_lsn: the checkpoint the set is consistent at (mariabackup keeps the full's last_lsn in a prepared
    # chain's checkpoints file: that one is only a note)
    got, want = cp.get("to_lsn"), chosen.to_lsn
    if want is not None and got is not None and int(got) != int(want):
        diffs.append(f"the prepared set's to_lsn is {got}, backup {chosen.label} recorded {want}: the chain did "
                     "not apply up to the chosen backup")
    got, want = cp.get("last_lsn"), chosen.last_lsn
    if want is not None and got is not None and int(got) != int(want):
        notes.append(f"the prepared set's checkpoints say last_lsn {got}, backup {chosen.label} recorded {want}")
    binlog = prepared.get("binlog") or {}
    if chosen.gtid and binlog.get("gtid") is not None and not same_position(binlog.get("gtid"), chosen.gtid):
        diffs.append(f"the prepared set is at GTID {binlog.get('gtid')}, backup {chosen.label} recorded {chosen.gtid}")
    if observed.get("server_id") is not None and int(observed["server_id"]) != plan.server_id:
        diffs.append(f"the restored server runs with server_id {observed['server_id']}, the restore chose "
                     f"{plan.server_id}")
    if chosen.gtid and not same_position(observed.get("gtid_slave_pos"), chosen.gtid):
        diffs.append(f"the restored server's GTID position is {observed.get('gtid_slave_pos')!r}, the backup's is "
                     f"{chosen.gtid}")
    restored_own = observed.get("restored_gtid_slave_pos")
    if chosen.replica_source_gtid and restored_own and not same_position(restored_own, chosen.replica_source_gtid):
        diffs.append(f"the restored data's own replication position (mysql.gtid_slave_pos) is {restored_own}, the "
                     f"backup of the replica recorded {chosen.replica_source_gtid}")
    want_series, got_series = _series(chosen.server_version), _series(observed.get("version"))
    if want_series and got_series and want_series != got_series:
        diffs.append(f"the restored server is {observed.get('version')}, the backup is of {chosen.server_version}")
    if observed.get("replication"):
        diffs.append(f"the restored server has replication configured before the restore finished: "
                     f"{capped(observed['replication'])}")
    files = {k: int(v) for k, v in (prepared.get("schemas") or {}).items() if k not in SYSTEM_SCHEMAS}
    tables = {k: int(v) for k, v in (observed.get("schemas") or {}).items() if k not in SYSTEM_SCHEMAS}
    for schema in sorted(set(files) | set(tables)):
        if files.get(schema, 0) != tables.get(schema, 0):
            diffs.append(f"schema {schema}: the backup holds {files.get(schema, 0)} table definition(s), the restored "
                         f"server opens {tables.get(schema, 0)}")
    if not files:
        notes.append("the backup holds no user schema")
    lsn = observed.get("innodb_lsn")
    if lsn is not None and chosen.last_lsn is not None and int(lsn) < int(chosen.last_lsn):
        diffs.append(f"the restored server's LSN {lsn} is below the backup's last_lsn {chosen.last_lsn}")
    return diffs, notes
