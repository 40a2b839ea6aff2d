"""Point-in-time restore, planned: the recovery target, the backup to start from, the binlogs to replay
(pure, no Airflow, no I/O).

A point-in-time restore is a full restore (``mysqlbackup.restore``) of the newest usable backup before
the recovery target whose roll-forward to it is unbroken, then a replay of the archived binlogs from
that backup's exact GTID up to the target. Everything that can be decided without touching a host is
decided here, and refused with ``ReplayRefused`` (a ``RestoreRefused``: it names the param as the
trigger form calls it, and what would be right).

Semantics of the recovery target (exactly one):

- ``stop_datetime`` (to the second; UTC unless an offset is given) is **exclusive**: the replay applies,
  in binlog order, every transaction up to the first one that has an event timestamped at or after it;
  that transaction and everything after it are left out (what ``mariadb-binlog --stop-datetime`` does).
  Give the time of the bad statement: it is not replayed (nor is anything else in that same second:
  binlog timestamps have a resolution of one second; use ``stop_position``/``stop_gtid`` to be finer).
- ``stop_position`` (``binlog.000012:4711``, a position in the binlog of the instance's source server) is
  **exclusive**: the first event at or after it is not applied, and neither is the rest of its
  transaction (give the position of the bad transaction's GTID event, as ``SHOW BINLOG EVENTS`` shows).
- ``stop_gtid`` (``0-1-4711``) is **inclusive**: the last transaction applied is that one.

A transaction is never cut in half: every one is applied whole or not at all. The replay starts right
after the backup's GTID (never at a file boundary), so no event is applied twice and none is skipped.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from mysqlbackup import archive as A
from mysqlbackup import params as P
from mysqlbackup.restore import (SYSTEM_SCHEMAS, RestoreRefused, RestoreRequest, plan_restore, restorable_problem,
                                 shown)
from mysqlbackup.text import capped

PARAMS = ("instance", "target", "stop_datetime", "stop_position", "stop_gtid", "databases", "replay_mode",
          "overwrite")
STOPS = ("stop_datetime", "stop_position", "stop_gtid")
MODES = ("applier", "pipe")
MODE_LABELS = {
    "applier": "applier: the restored server's own replication SQL thread, parallel workers (fast)",
    "pipe": "pipe: mariadb-binlog | mariadb, every file in one client session (the classic way)",
}
# a database the replay may keep: plain names only (they go into mariadb-binlog --database and into a
# replication filter list, where a comma or a wildcard would mean something else)
PLAIN_DB = re.compile(r"^[0-9A-Za-z$_-]{1,64}$")
_DATETIME_RE = re.compile(P.DATETIME)
_POSITION_RE = re.compile(P.POSITION)
_GTID_RE = re.compile(P.GTID)
MAX_DATABASES = 64


class ReplayRefused(RestoreRefused):
    """A point-in-time restore that must not start (nothing was touched)."""


# ---------------------------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class RecoveryTarget:
    """Exactly one of ``at`` (exclusive), ``position`` (exclusive), ``gtid`` (inclusive)."""

    kind: str  # datetime | position | gtid
    at: datetime | None = None
    position: tuple[str, int] | None = None
    gtid: tuple[int, int, int] | None = None

    @property
    def field(self) -> str:
        return {"datetime": "stop_datetime", "position": "stop_position", "gtid": "stop_gtid"}[self.kind]

    def describe(self) -> str:
        if self.kind == "datetime":
            return f"before {A.iso(self.at)} (stop_datetime, exclusive)"
        if self.kind == "position":
            return f"before {self.position[0]}:{self.position[1]} (stop_position, exclusive)"
        return f"up to and including GTID {gtid_text(self.gtid)} (stop_gtid)"

    def host_args(self) -> list[str]:
        """The stop as ``replay.py replay`` takes it."""
        if self.kind == "datetime":
            return ["--stop-datetime", str(int(self.at.timestamp()))]
        if self.kind == "position":
            return ["--stop-position", f"{self.position[0]}:{self.position[1]}"]
        return ["--stop-gtid", gtid_text(self.gtid)]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "field": self.field, "stop_datetime": A.iso(self.at),
                "stop_position": f"{self.position[0]}:{self.position[1]}" if self.position else None,
                "stop_gtid": gtid_text(self.gtid) if self.gtid else None, "describe": self.describe()}


def gtid_text(g: tuple[int, int, int]) -> str:
    return f"{g[0]}-{g[1]}-{g[2]}"


def _text(value: Any, name: str, expected: str, max_length: int = 250) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ReplayRefused(name, f"{shown(value)} is not a string: expected {expected}")
    if len(value) > max_length or value != value.strip() or "\n" in value:
        raise ReplayRefused(name, f"{shown(value)} is not {expected}")
    return value


def parse_datetime(value: Any, now: datetime) -> datetime | None:
    text = _text(value, "stop_datetime", "a datetime: " + P.HINTS[P.DATETIME], 40)
    if text is None:
        return None
    if not _DATETIME_RE.match(text):
        raise ReplayRefused("stop_datetime", f"{shown(text)} is not a datetime: expected {P.HINTS[P.DATETIME]}")
    try:
        at = A.to_datetime(text)
    except ValueError:
        raise ReplayRefused("stop_datetime", f"{shown(text)} is not a real date and time: expected "
                                             f"{P.HINTS[P.DATETIME]}") from None
    if at.microsecond:
        raise ReplayRefused("stop_datetime", f"{shown(text)} has a fraction of a second: binlog events are "
                                             "timestamped to the second; give whole seconds (or use stop_position "
                                             "or stop_gtid to be finer)")
    at = at.astimezone(timezone.utc)
    if at > now:
        raise ReplayRefused("stop_datetime", f"{A.iso(at)} is in the future (now is {A.iso(now)}): give a past time, "
                                             "UTC unless an offset is given")
    return at


def parse_position(value: Any) -> tuple[str, int] | None:
    text = _text(value, "stop_position", "a binlog position: " + P.HINTS[P.POSITION], 230)
    if text is None:
        return None
    if not _POSITION_RE.match(text):
        raise ReplayRefused("stop_position", f"{shown(text)} is not a binlog position: expected "
                                             f"{P.HINTS[P.POSITION]} (FILE:POS of the instance's source server)")
    name, _, pos = text.rpartition(":")
    if not A.BINLOG_NAME.match(name) or int(pos) < 4 or int(pos) > 2 ** 63:
        raise ReplayRefused("stop_position", f"{shown(text)} is not a binlog position: the file must be a binlog "
                                             "file name (letters, digits, _ . -, then .NNNNNN) and the position at "
                                             "least 4 (the first event)")
    return name, int(pos)


def parse_gtid(value: Any) -> tuple[int, int, int] | None:
    text = _text(value, "stop_gtid", "a GTID: " + P.HINTS[P.GTID], 44)
    if text is None:
        return None
    if not _GTID_RE.match(text):
        raise ReplayRefused("stop_gtid", f"{shown(text)} is not a GTID: expected {P.HINTS[P.GTID]} (one GTID: the "
                                         "last transaction to include)")
    d, s, q = (int(x) for x in text.split("-"))
    if d >= 2 ** 32 or s >= 2 ** 32 or q >= 2 ** 64 or q < 1:
        raise ReplayRefused("stop_gtid", f"{shown(text)} is out of range: domain and server_id are 32-bit, the "
                                         "sequence number at least 1")
    return d, s, q


def parse_databases(value: Any) -> tuple[str, ...]:
    if value in (None, "", []):
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ReplayRefused("databases", f"{shown(value)} is not a list: expected a list of database names, like "
                                         '["shop", "billing"]')
    if len(value) > MAX_DATABASES:
        raise ReplayRefused("databases", f"{len(value)} databases: at most {MAX_DATABASES} (leave it empty to "
                                         "restore and replay every database)")
    out: list[str] = []
    for item in value:
        name = item
        if isinstance(name, str) and len(name) > 2 and name.startswith("`") and name.endswith("`"):
            name = name[1:-1].replace("``", "`")
        if not isinstance(name, str) or not PLAIN_DB.match(name) or name.endswith("\n"):
            raise ReplayRefused("databases", f"{shown(item)} is not a database name this restore can filter on: "
                                             "letters, digits, $, _ and -, at most 64")
        if name.lower() in SYSTEM_SCHEMAS:
            raise ReplayRefused("databases", f"{name} is a system schema: it is always restored; list only user "
                                             "databases")
        if name in out:
            raise ReplayRefused("databases", f"{name} is listed twice")
        out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class ReplayRequest:
    """The params of one point-in-time restore run, checked by form."""

    instance: str
    target: str
    stop: RecoveryTarget
    databases: tuple[str, ...] = ()
    mode: str = "applier"
    overwrite: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, Any], given: Iterable[str] = (), now: datetime | None = None
              ) -> "ReplayRequest":
        """From a run's params; ``given``: the keys the run's conf sets (an unknown one is refused)."""
        now = now or datetime.now(timezone.utc)
        unknown = sorted(str(k) for k in given if k not in PARAMS)
        if unknown:
            raise ReplayRefused(None, f"unknown param(s) {capped(shown(k, 40) for k in unknown)}; a point-in-time "
                                      f"restore takes only {', '.join(PARAMS)} (the target's datadir and commands "
                                      "come from the CMDB, never from a run)")
        try:
            base = RestoreRequest.parse({k: params.get(k) for k in ("instance", "target", "overwrite")})
        except ReplayRefused:
            raise
        except RestoreRefused as exc:
            raise ReplayRefused(exc.field, exc.message) from None
        at = parse_datetime(params.get("stop_datetime"), now)
        pos = parse_position(params.get("stop_position"))
        gtid = parse_gtid(params.get("stop_gtid"))
        given_stops = [f for f, v in zip(STOPS, (at, pos, gtid)) if v is not None]
        if not given_stops:
            raise ReplayRefused("stop_datetime", "no recovery target: give exactly one of stop_datetime (exclusive), "
                                                 "stop_position (exclusive) or stop_gtid (inclusive)")
        if len(given_stops) > 1:
            raise ReplayRefused(given_stops[1], f"more than one recovery target ({', '.join(given_stops)}): give "
                                                "exactly one of stop_datetime, stop_position or stop_gtid")
        stop = (RecoveryTarget("datetime", at=at) if at else RecoveryTarget("position", position=pos) if pos
                else RecoveryTarget("gtid", gtid=gtid))
        mode = params.get("replay_mode")
        mode = "applier" if mode in (None, "") else mode
        if mode not in MODES:
            raise ReplayRefused("replay_mode", f"{shown(mode)} is not a replay mode: expected applier (default) or "
                                               "pipe")
        return cls(base.instance, base.target, stop, parse_databases(params.get("databases")), mode, base.overwrite)


# ---------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ReplayPlan:
    """What the replay does after the restore: JSON-able, no secret. ``start_gtid``: the backup's GTID state
    (the replay begins right after it); ``files``: the archived files to fetch, in replay order."""

    instance: str
    backup_label: str
    backup_at: str | None
    start_gtid: str
    domain: int
    stop: dict[str, Any]
    identity: str
    files: list[dict[str, Any]]
    databases: tuple[str, ...]
    mode: str
    source_server_ids: tuple[int, ...]
    reason: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    archive_ssh_conn_id: str = ""  # where the files are fetched from: the instance's storage host
    archive_dir: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _readable(files: Iterable[A.ArchivedFile]) -> list[A.ArchivedFile]:
    return [f for f in files if f.state in A.READABLE]


def _domains(files: Sequence[A.ArchivedFile]) -> dict[int, set[int]]:
    """Per GTID domain, the server_ids the archive has seen in it."""
    out: dict[int, set[int]] = {}
    for f in files:
        for state in (f.start_state, f.end_state):
            for d, (s, q) in (state or {}).items():
                if q:
                    out.setdefault(d, set()).add(s)
        for g in (f.first_gtid, f.last_gtid):
            if g:
                try:
                    d, s, _ = A.parse_gtid(g)
                except ValueError:
                    continue
                out.setdefault(d, set()).add(s)
    return out


def _main_domain(files: Sequence[A.ArchivedFile]) -> int:
    newest = max((f for f in files if f.last_gtid), key=lambda f: (f.last_event_at or datetime.min.replace(
        tzinfo=timezone.utc), f.number), default=None)
    return A.parse_gtid(newest.last_gtid)[0] if newest else 0


def _window_text(window: A.RecoveryWindow) -> str:
    if not window.windows:
        return "no recovery window (no usable backup placed on the archive)"
    return "the recovery window is " + ", ".join(f"{A.iso(a)} .. {A.iso(b)}" for a, b in window.windows)


def _seq(state: A.GtidState | None, d: int) -> int:
    return (state or {}).get(d, (0, 0))[1]


def _position_before(row: Mapping[str, Any], pos: tuple[str, int], file: A.ArchivedFile | None, d: int,
                     state: A.GtidState) -> bool:
    """Whether a backup's point is at or before a binlog position of the source."""
    if file is not None and file.start_state is not None and _seq(state, d) <= _seq(file.start_state, d):
        return True  # at or before the start of the file
    try:
        manifest = json.loads(row.get("manifest_json") or "{}")
    except ValueError:
        manifest = {}
    from_primary = isinstance(manifest, dict) and manifest.get("source_is_primary") is True
    bfile, bpos = row.get("binlog_file"), row.get("binlog_pos")
    if from_primary and bfile and bpos is not None:
        return (A.file_number(bfile), int(bpos)) <= (A.file_number(pos[0]), pos[1])
    return False


def plan_pitr(request: ReplayRequest, cmdb: Any, rows: Sequence[Mapping[str, Any]],
              file_rows: Sequence[Mapping[str, Any]], archive_state: Mapping[str, Any] | None, restore_id: str,
              used_server_ids: Mapping[int, str] | None = None, label_owners: Sequence[str] = (),
              data_bytes: int | None = None, now: datetime | None = None,
              known_databases: Iterable[str] | None = None) -> tuple[Any, ReplayPlan]:
    """(the ``RestorePlan`` of the chosen backup, the ``ReplayPlan``), or ``ReplayRefused``.

    ``rows``: the instance's catalog backups (any status); ``file_rows``: its ``binlog_files`` rows;
    ``archive_state``: its ``binlog_archive_state`` row (how far the archive is known complete).
    ``known_databases``: the instance's databases (as its source server lists them; None: not known, then
    the replay checks them on the restored server before it applies anything).
    """
    now = now or datetime.now(timezone.utc)
    inst = cmdb.by_name(request.instance)
    if inst is None:
        raise ReplayRefused("instance", f"unknown instance {shown(request.instance)}: not a valid row of the CMDB "
                                        f"(instances: {capped(i.name for i in cmdb.instances)})")
    if cmdb.restore_target(request.target) is None:
        known = [t.name for t in cmdb.restore_targets]
        raise ReplayRefused("target", f"unknown restore target {shown(request.target)}: the CMDB declares "
                                      f"{capped(known) if known else 'none'}")
    if known_databases is not None and request.databases:
        known = {str(x) for x in known_databases}
        unknown = [x for x in request.databases if x not in known]
        if unknown:
            users = sorted(x for x in known if x.lower() not in SYSTEM_SCHEMAS)
            raise ReplayRefused("databases", f"{capped(unknown)}: not a database of {inst.name} (it has "
                                             f"{capped(users) if users else 'no user database'}); a database dropped "
                                             "since the backup is restored by leaving databases empty (every database)")
    stop = request.stop
    files = _readable(A.ArchivedFile.from_row(r) for r in file_rows)
    if not files:
        raise ReplayRefused("instance", f"the binlog archive of {inst.name} holds no file: a point-in-time restore "
                                        f"replays it (is mysql_binlog__{inst.name} running?)")
    until = A.archived_until(archive_state)
    by_label = {r["label"]: r for r in rows}
    usable = [r for r in rows if restorable_problem(r, by_label)[0] is None]
    points = [A.BackupPoint.from_row(r) for r in usable]
    window = A.recovery_window(files, points, until)
    domains = _domains(files)
    d = stop.gtid[0] if stop.kind == "gtid" else _main_domain(files)
    last_seq = max((_seq(f.end_state, d) for f in files), default=0)
    stop_file: A.ArchivedFile | None = None

    # the target, against the archive
    if stop.kind == "datetime":
        inside = any(a <= stop.at <= b for a, b in window.windows)
        if not inside:
            raise ReplayRefused("stop_datetime", f"{A.iso(stop.at)} is outside the recovery window of {inst.name}: "
                                                 f"{_window_text(window)}; give a time inside it")
    elif stop.kind == "gtid":
        dom, sid, seq = stop.gtid
        if dom not in domains:
            raise ReplayRefused("stop_gtid", f"{gtid_text(stop.gtid)} is of GTID domain {dom}; the binlog archive of "
                                             f"{inst.name} holds domain(s) {capped(sorted(domains)) or 'none'}: give a "
                                             "GTID of this instance")
        if sid not in domains[dom]:
            raise ReplayRefused("stop_gtid", f"{gtid_text(stop.gtid)} names server_id {sid}; transactions of domain "
                                             f"{dom} in the archive of {inst.name} come from server_id(s) "
                                             f"{capped(sorted(domains[dom]))}: give a GTID of this instance's source")
        if seq > last_seq:
            raise ReplayRefused("stop_gtid", f"{gtid_text(stop.gtid)} is after the last archived transaction of "
                                             f"{inst.name} (domain {dom} reaches sequence {last_seq}): give an "
                                             "archived GTID")
    else:
        name, pos = stop.position
        named = [f for f in files if f.name == name]
        if not named:
            names = sorted({f.name for f in files}, key=A.file_number)
            raise ReplayRefused("stop_position", f"{name} is not in the binlog archive of {inst.name} (it holds "
                                                 f"{names[0]} .. {names[-1]}): give a position of an archived file")
        stop_file = max(named, key=lambda f: (f.archived_at or datetime.min.replace(tzinfo=timezone.utc)))
        if pos > stop_file.size and stop_file.state != "open":
            raise ReplayRefused("stop_position", f"{name} is {stop_file.size} bytes long: position {pos} is past its "
                                                 "end; give a position inside the file")

    # the backup: the newest usable one before the target whose roll-forward reaches it without a gap
    gaps = [g for g in window.gaps if g.domain == d]
    placed = [(r, A.BackupPoint.from_row(r)) for r in usable]
    placed = [(r, b) for r, b in placed if b.state is not None]
    if not placed:
        raise ReplayRefused("instance", f"{inst.name} has no usable backup with a GTID: a point-in-time restore "
                                        "starts from one (take a backup first)")

    def before(r: Mapping[str, Any], b: A.BackupPoint) -> bool:
        if stop.kind == "datetime":
            return b.at is not None and b.at <= stop.at
        if stop.kind == "gtid":
            return _seq(b.state, d) <= stop.gtid[2]
        return _position_before(r, stop.position, stop_file, d, b.state)

    def blocking(b: A.BackupPoint) -> A.Gap | None:
        s = _seq(b.state, d)
        for g in gaps:
            if g.hi <= s:
                continue
            if stop.kind == "gtid" and g.lo >= stop.gtid[2]:
                continue
            if stop.kind == "datetime" and g.from_time is not None and g.from_time >= stop.at and g.kind != \
                    "before_archive":
                continue
            if stop.kind == "position" and g.after is not None and stop_file is not None and \
                    g.after.number >= stop_file.number and g.kind != "before_archive":
                continue
            return g
        return None

    candidates = sorted((x for x in placed if before(*x)), key=lambda x: (x[1].at, x[0]["label"]), reverse=True)
    if not candidates:
        oldest = min(placed, key=lambda x: x[1].at)
        raise ReplayRefused(stop.field, f"the recovery target, {stop.describe()}, is before the oldest usable backup "
                                        f"of {inst.name} ({oldest[0]['label']}, at {A.iso(oldest[1].at)}, GTID "
                                        f"{A.format_gtid_state(oldest[1].state)}): {_window_text(window)}")
    chosen = None
    first_gap = None
    skipped: list[str] = []
    for r, b in candidates:
        g = blocking(b)
        if g is None:
            chosen = (r, b)
            break
        first_gap = first_gap or g
        skipped.append(f"{r['label']} (its roll-forward crosses the gap {g.key})")
    if chosen is None:
        raise ReplayRefused(stop.field, f"no usable backup of {inst.name} before the recovery target can be rolled "
                                        f"forward to it: the binlog archive has a gap, {first_gap.describe()}; "
                                        f"{_window_text(window)}. Choose a target before the gap")
    row, point = chosen
    start_seq = _seq(point.state, d)
    if stop.kind == "gtid" and start_seq > stop.gtid[2]:  # pragma: no cover - excluded by before()
        raise ReplayRefused("stop_gtid", "the chosen backup is after the target")

    # the files: from the one holding the first transaction after the backup, to the one holding the target
    start_gtid = f"{d}-{point.state.get(d, (0, 0))[0]}-{start_seq}"
    cov = A.covering_files(files, start_gtid=start_gtid,
                           stop_gtid=gtid_text(stop.gtid) if stop.kind == "gtid" else None)
    chain = list(cov.files)
    if not chain:  # the backup is at the very end of the archive: the last file holds where it stops
        chain = [max(files, key=lambda f: f.number)]
    if stop.kind == "datetime":
        keep = [f for f in chain if f is chain[0] or f.first_event_at is None or f.first_event_at < stop.at]
        chain = keep
    elif stop.kind == "position":
        if stop_file.identity != cov.identity and cov.identity is not None:
            raise ReplayRefused("stop_position", f"{stop.position[0]} is a file of server {stop_file.identity}, the "
                                                 f"roll-forward of backup {row['label']} reads server {cov.identity}'s "
                                                 "files: give a position of that server")
        chain = [f for f in chain if f.number <= stop_file.number]
        if not chain or chain[-1].name != stop_file.name:
            raise ReplayRefused("stop_position", f"{stop.position[0]}:{stop.position[1]} is before backup "
                                                 f"{row['label']}'s point (GTID {start_gtid})")
    problems = [u for u in cov.uncovered if "after" not in u or stop.kind == "gtid"]
    problems += [f"the chain breaks {b}" for b in A._breaks(chain) if f"the chain breaks {b}" not in problems]
    if problems:
        raise ReplayRefused(stop.field, f"the binlog archive of {inst.name} does not hold the roll-forward of backup "
                                        f"{row['label']} to the target: {capped(problems, 3)}")

    # the restore of that backup (target, permissions, server_id)
    try:
        plan = plan_restore(RestoreRequest(request.instance, request.target, backup_label=row["label"],
                                           overwrite=request.overwrite),
                            cmdb, rows, restore_id, used_server_ids, label_owners, data_bytes)
    except ReplayRefused:
        raise
    except RestoreRefused as exc:
        raise ReplayRefused(exc.field, exc.message) from None
    sources = sorted({s for ids in domains.values() for s in ids})
    if plan.server_id in sources:
        raise ReplayRefused("target", f"the restored server would run with server_id {plan.server_id}, which wrote "
                                      f"events in the binlog archive of {inst.name}: the replay would skip them as its "
                                      "own; set another server_id for the target in restore_targets")
    notes = []
    if request.databases:
        notes.append(f"only {', '.join(request.databases)} are replayed; every other user database is dropped from "
                     "the restored server after the replay (it would hold the backup's stale state)")
    reason = (f"{row['label']}: the newest usable backup before the target ({stop.describe()}) whose roll-forward "
              "reaches it without a gap" + (f"; skipped {capped(skipped, 3)}" if skipped else ""))
    replay = ReplayPlan(
        instance=inst.name, backup_label=row["label"], backup_at=A.iso(point.at),
        start_gtid=A.format_gtid_state(point.state), domain=d, stop=stop.as_dict(), identity=chain[0].identity,
        files=[{"identity": f.identity, "name": f.name, "state": f.state, "size": f.size, "sha256": f.sha256,
                "first_event_at": A.iso(f.first_event_at), "last_event_at": A.iso(f.last_event_at)} for f in chain],
        databases=request.databases, mode=request.mode, source_server_ids=tuple(sources), reason=reason,
        notes=tuple(notes), archive_ssh_conn_id=inst.storage.ssh_conn_id, archive_dir=A.archive_dir(inst))
    return plan, replay
