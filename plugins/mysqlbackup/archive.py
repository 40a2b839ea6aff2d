"""The continuous binlog archive, planned: GTID states, continuity and gaps, the recovery window,
the files that cover a window. Pure functions over catalog rows: no Airflow, no I/O.

Continuity is judged per GTID domain. Every archived file covers the GTID states from its start
(its Gtid_list event) to its end (after its last complete event): per domain the sequence numbers
``[start, end]``. The instance's archive is the union over every file of every server identity
(after a failover the new primary's binlog holds the old primary's transactions too). A *gap* is
a hole in that union: ``(lo, hi]`` in domain ``d`` means transactions ``lo+1 .. hi`` are in no
archived file. Consecutive files of one server continue each other exactly when the next file's
Gtid_list equals the state the previous one ended with, so a purged file, a file purged before it
was finished and a failover onto a server that lacks transactions all show up as holes.

A backup (its GTID state ``g``) can be rolled forward through domain ``d`` as far as the
interval holding ``g[d]`` reaches; it *crosses* every gap above ``g[d]``: it stays usable for a
full restore, but a point-in-time restore from it stops at the last event before the first gap.
The recovery window is the union, over usable backups, of ``[backup's point, how far its
roll-forward reaches]``.
"""
from __future__ import annotations

import posixpath
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

GtidState = dict  # {domain: (server_id, seq_no)}

_GTID_RE = re.compile(r"\s*([0-9]+)-([0-9]+)-([0-9]+)\s*")


# ---------------------------------------------------------------------------------------------- GTIDs


def parse_gtid_state(text: str | None) -> GtidState | None:
    """``0-1-100,1-2-7`` -> ``{0: (1, 100), 1: (2, 7)}``; ``""`` -> ``{}``; None or unparseable -> None."""
    if text is None:
        return None
    state: GtidState = {}
    for part in str(text).replace("\n", ",").split(","):
        if not part.strip():
            continue
        m = _GTID_RE.fullmatch(part)
        if m is None:
            return None
        d, s, q = (int(x) for x in m.groups())
        if d in state and state[d][1] >= q:
            continue
        state[d] = (s, q)
    return state


def format_gtid_state(state: GtidState | None) -> str | None:
    if state is None:
        return None
    return ",".join(f"{d}-{s}-{q}" for d, (s, q) in sorted(state.items()))


def parse_gtid(text: str) -> tuple[int, int, int]:
    """``0-1-100`` -> (domain, server_id, seq); ValueError otherwise."""
    m = _GTID_RE.fullmatch(str(text))
    if m is None:
        raise ValueError(f"not a GTID (domain-server-seq): {text!r}")
    d, s, q = (int(x) for x in m.groups())
    return d, s, q


def _seq(state: GtidState | None, domain: int) -> int:
    return state.get(domain, (0, 0))[1] if state else 0


# ---------------------------------------------------------------------------------------------- model


def to_datetime(value: Any) -> datetime | None:
    """Epoch seconds, an ISO string (``Z`` or offset) or a datetime, as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    text = str(value).strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def file_number(name: str) -> int:
    tail = str(name).rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else -1


@dataclass(frozen=True)
class ArchivedFile:
    """One archived binlog file, as the catalog (or the storage host) describes it."""

    identity: str
    name: str
    state: str  # open | closed | incomplete | damaged
    size: int = 0
    sha256: str | None = None
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    start_state: GtidState | None = None
    end_state: GtidState | None = None
    first_gtid: str | None = None
    last_gtid: str | None = None
    archived_at: datetime | None = None
    storage_path: str | None = None

    @property
    def number(self) -> int:
        return file_number(self.name)

    @property
    def where(self) -> str:
        return f"{self.identity}/{self.name}"

    @classmethod
    def from_row(cls, row: dict) -> ArchivedFile:
        """From a ``binlog_files`` row or a host-script record."""
        return cls(identity=row.get("server_identity") or row.get("identity"), name=row["name"], state=row["state"],
                   size=int(row.get("size_bytes", row.get("size")) or 0), sha256=row.get("sha256"),
                   first_event_at=to_datetime(row.get("first_event_at")),
                   last_event_at=to_datetime(row.get("last_event_at")),
                   start_state=parse_gtid_state(row.get("start_gtid_state")),
                   end_state=parse_gtid_state(row.get("end_gtid_state")),
                   first_gtid=row.get("first_gtid"), last_gtid=row.get("last_gtid"),
                   archived_at=to_datetime(row.get("archived_at")), storage_path=row.get("storage_path"))


@dataclass(frozen=True)
class Gap:
    """Transactions ``lo+1 .. hi`` of GTID domain ``domain`` are in no archived file."""

    kind: str  # purged | missing_files | failover | state_mismatch | before_archive
    domain: int
    lo: int
    hi: int
    after: ArchivedFile | None
    before: ArchivedFile | None
    detail: str

    @property
    def key(self) -> str:
        """Stable across runs: the sequence numbers around the hole (a gap before the archive is named by
        where the archive begins: which backups need it changes as they expire)."""
        if self.kind == "before_archive":
            return f"gtid {self.domain}:..{self.hi} before the archive"
        return f"gtid {self.domain}:{self.lo}..{self.hi}"

    @property
    def transactions(self) -> int:
        return self.hi - self.lo

    @property
    def from_time(self) -> datetime | None:
        """The last archived event before the gap."""
        return self.after.last_event_at if self.after else None

    @property
    def to_time(self) -> datetime | None:
        """The first archived event after it."""
        return self.before.first_event_at if self.before else None

    @property
    def missing(self) -> str:
        s_lo = self.after.end_state.get(self.domain, (0, 0))[0] if self.after and self.after.end_state else "?"
        s_hi = self.before.start_state.get(self.domain, (0, 0))[0] if self.before and self.before.start_state else "?"
        return f"{self.domain}-{s_lo}-{self.lo + 1} .. {self.domain}-{s_hi}-{self.hi} ({self.transactions} transactions)"

    def row(self) -> dict[str, Any]:
        """The ``binlog_gaps`` values."""
        return {"gap_key": self.key, "kind": self.kind, "domain_id": self.domain, "missing": self.missing,
                "after_identity": self.after.identity if self.after else None,
                "after_file": self.after.name if self.after else None,
                "before_identity": self.before.identity if self.before else None,
                "before_file": self.before.name if self.before else None,
                "from_time": self.from_time, "to_time": self.to_time, "detail": self.detail}

    def describe(self) -> str:
        when = ""
        if self.from_time or self.to_time:
            when = f" between {iso(self.from_time) or '?'} and {iso(self.to_time) or '?'}"
        return f"{self.missing} missing{when}: {self.detail}"


# ---------------------------------------------------------------------------------------------- coverage


@dataclass
class _Interval:
    lo: int
    hi: int
    first: ArchivedFile  # the file the interval begins with
    last: ArchivedFile   # the file that reaches hi


def coverage(files: Iterable[ArchivedFile]) -> dict[int, list[_Interval]]:
    """Per domain, the merged ``[lo, hi]`` sequence ranges the archived files cover, in order. Files
    without a known start state (no Gtid_list: not MariaDB) take no part."""
    spans: dict[int, list[tuple[int, int, ArchivedFile]]] = {}
    for f in files:
        if f.start_state is None or f.end_state is None or f.state == "damaged":
            continue
        for d in set(f.start_state) | set(f.end_state):
            lo, hi = _seq(f.start_state, d), _seq(f.end_state, d)
            spans.setdefault(d, []).append((lo, max(lo, hi), f))
    out: dict[int, list[_Interval]] = {}
    for d, items in spans.items():
        items.sort(key=lambda x: (x[0], x[1], _order(x[2])))
        merged: list[_Interval] = []
        for lo, hi, f in items:
            if merged and lo <= merged[-1].hi:
                cur = merged[-1]
                if hi > cur.hi or (hi == cur.hi and _later(f, cur.last)):
                    cur.hi, cur.last = max(cur.hi, hi), f
            else:
                merged.append(_Interval(lo, hi, f, f))
        out[d] = merged
    return out


def _order(f: ArchivedFile) -> tuple:
    return (f.archived_at or datetime.min.replace(tzinfo=timezone.utc), f.identity, f.number)


def _later(a: ArchivedFile, b: ArchivedFile) -> bool:
    return (a.last_event_at or datetime.min.replace(tzinfo=timezone.utc)) > \
        (b.last_event_at or datetime.min.replace(tzinfo=timezone.utc))


def _kind(after: ArchivedFile, before: ArchivedFile) -> tuple[str, str]:
    if after.state == "incomplete":
        return "purged", (f"{after.where} was purged on the server before it was archived to its end; the files "
                          f"after it were archived from {before.where}")
    if after.identity != before.identity:
        return "failover", (f"the archive of server {before.identity} (from {before.name}) does not continue where "
                            f"server {after.identity} ended ({after.name}): transactions in between reached neither "
                            "archive")
    if before.number > after.number + 1:
        return "missing_files", (f"the files between {after.name} and {before.name} were purged on the server before "
                                 "they were archived")
    return "state_mismatch", (f"{before.where} does not begin with the GTID state {after.where} ends with (its "
                              "Gtid_list skips transactions)")


def find_gaps(files: Iterable[ArchivedFile]) -> list[Gap]:
    """Every hole in the archive between its first and its last archived transaction."""
    gaps = []
    for d, intervals in sorted(coverage(files).items()):
        for a, b in zip(intervals, intervals[1:]):
            kind, detail = _kind(a.last, b.first)
            gaps.append(Gap(kind, d, a.hi, b.lo, a.last, b.first, detail))
    return gaps


# ---------------------------------------------------------------------------------------------- backups


@dataclass(frozen=True)
class BackupPoint:
    """Where a usable backup sits: its label, when its consistent point is (finished_at) and its GTID state."""

    label: str
    at: datetime
    state: GtidState | None

    @classmethod
    def from_row(cls, row: dict) -> BackupPoint:
        return cls(label=row["label"], at=to_datetime(row.get("finished_at") or row.get("started_at")),
                   state=parse_gtid_state(row.get("gtid")))


@dataclass
class BackupReach:
    label: str
    start: datetime
    until: datetime
    crosses: list[Gap] = field(default_factory=list)


@dataclass
class RecoveryWindow:
    """What a restore can reach: ``earliest`` (the oldest usable backup) to ``latest``, as the union of
    ``windows``; ``reach`` per backup; ``gaps`` every gap (including those before the archive that a backup
    needs); ``blocks`` the (backup, gap) pairs: the backup cannot be rolled forward past that gap."""

    earliest: datetime | None
    latest: datetime | None
    windows: list[tuple[datetime, datetime]]
    reach: list[BackupReach]
    gaps: list[Gap]
    unplaced: list[str]  # backups without a GTID: restorable in full, not placeable on the archive

    @property
    def blocks(self) -> list[dict[str, Any]]:
        out = []
        for r in self.reach:
            for g in r.crosses:
                out.append({"label": r.label, "gap_key": g.key, "pitr_until": r.until,
                            "detail": f"not usable for point-in-time restore past {iso(r.until)}: its roll-forward "
                                      f"crosses the gap {g.describe()}"})
        return out

    def summary(self) -> dict[str, Any]:
        return {"earliest": iso(self.earliest), "latest": iso(self.latest),
                "windows": [[iso(a), iso(b)] for a, b in self.windows],
                "backups": {r.label: {"from": iso(r.start), "until": iso(r.until),
                                      "blocked_by": [g.key for g in r.crosses]} for r in self.reach},
                "unplaced_backups": self.unplaced}


def recovery_window(files: Sequence[ArchivedFile], backups: Iterable[BackupPoint],
                    archived_until: datetime | None) -> RecoveryWindow:
    """The recovery window of an instance.

    ``archived_until``: how far the archive is known complete (the server's clock when the archive held
    everything it had written, else the last archived event's time). A backup rolls forward, in every
    domain, as far as the archived interval holding its GTID reaches; the first gap above it stops it
    at the last event before that gap (``Gap.from_time``). A backup whose GTID is below the start of
    the archive cannot be rolled forward at all (a ``before_archive`` gap).
    """
    cov = coverage(files)
    gaps = find_gaps(files)
    holes = {d: [g for g in gaps if g.domain == d] for d in cov}
    leading: dict[tuple[int, int], Gap] = {}
    reach, unplaced = [], []
    for b in backups:
        if b.state is None:
            unplaced.append(b.label)
            continue
        until = archived_until if archived_until is not None else b.at
        crosses: list[Gap] = []
        for d, intervals in cov.items():
            s = _seq(b.state, d)
            first = intervals[0]
            if s < first.lo:
                key = (d, first.lo)
                g = leading.get(key)
                if g is None or g.lo > s:
                    g = Gap("before_archive", d, s, first.lo, None, first.first,
                            f"the archive of domain {d} begins at {first.first.where}; what came before it was "
                            "never archived")
                    leading[key] = g
                crosses.append(g)
                until = min(until, b.at)
                crosses.extend(holes[d])
                continue
            later = [g for g in holes[d] if s < g.hi]
            if later:
                crosses.extend(later)
                inside = any(iv.lo <= s <= iv.hi for iv in intervals)
                stop = later[0].from_time if inside and later[0].from_time else b.at
                until = min(until, stop)
        until = max(until, b.at)
        reach.append(BackupReach(b.label, b.at, until, crosses))
    # a gap before the archive is reported once, from the smallest GTID a backup needs
    for r in reach:
        r.crosses = [leading.get((g.domain, g.hi), g) if g.kind == "before_archive" else g for g in r.crosses]
    windows: list[tuple[datetime, datetime]] = []
    for r in sorted(reach, key=lambda r: r.start):
        if windows and r.start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], r.until))
        else:
            windows.append((r.start, r.until))
    all_gaps = gaps + sorted(leading.values(), key=lambda g: (g.domain, g.hi))
    return RecoveryWindow(earliest=windows[0][0] if windows else None, latest=max((w[1] for w in windows), default=None),
                          windows=windows, reach=reach, gaps=all_gaps, unplaced=unplaced)


# ---------------------------------------------------------------------------------------------- coverage of a window


@dataclass
class Coverage:
    """The archived files that hold a window, in replay order, and what of the window they do not hold."""

    identity: str | None
    files: list[ArchivedFile]
    uncovered: list[str]

    @property
    def complete(self) -> bool:
        return bool(self.files) and not self.uncovered


def covering_files(files: Sequence[ArchivedFile], *, start: datetime | None = None, stop: datetime | None = None,
                   start_gtid: str | None = None, stop_gtid: str | None = None,
                   start_position: tuple[str, int] | None = None, stop_position: tuple[str, int] | None = None,
                   identity: str | None = None, archived_until: datetime | None = None) -> Coverage:
    """The archived files of one server identity that hold a window given as a time range
    (``start`` inclusive, ``stop`` exclusive), a GTID range (inclusive, one domain) or a position range
    (``(file, pos)``; file names are the server's). ``identity`` None: the identity whose files hold most of
    the window. ``archived_until``: how far the archive is known complete (else the last archived event).
    ``uncovered`` names every part of the window no chosen file holds: a flashback or replay must refuse
    (or say so) when it is not empty.
    """
    if sum(x is not None for x in (start, start_gtid, start_position)) != 1:
        raise ValueError("give exactly one of start, start_gtid, start_position")
    usable = [f for f in files if f.state != "damaged"]
    chains: dict[str, list[ArchivedFile]] = {}
    for f in usable:
        chains.setdefault(f.identity, []).append(f)
    for chain in chains.values():
        chain.sort(key=lambda f: (f.number, f.name))
    if identity is not None:
        chains = {identity: chains.get(identity, [])}
    if start_gtid is not None:
        return _cover_gtid(chains, start_gtid, stop_gtid)
    if start_position is not None:
        return _cover_position(chains, start_position, stop_position)
    return _cover_time(chains, to_datetime(start), to_datetime(stop), to_datetime(archived_until))


def _breaks(chain: list[ArchivedFile]) -> list[str]:
    out = []
    for a, b in zip(chain, chain[1:]):
        if a.end_state is not None and b.start_state is not None and a.end_state != b.start_state:
            out.append(f"between {a.name} (ends at {format_gtid_state(a.end_state)}) and {b.name} (begins at "
                       f"{format_gtid_state(b.start_state)})")
        elif b.number != a.number + 1 and (a.end_state is None or b.start_state is None):
            out.append(f"between {a.name} and {b.name} (files missing)")
    return out


def _cover_time(chains, start, stop, archived_until) -> Coverage:
    best: Coverage | None = None
    best_score = 0.0
    for ident, chain in sorted(chains.items()):
        chosen = [f for f in chain
                  if (stop is None or (f.first_event_at or stop) < stop)
                  and (f.last_event_at is None or f.last_event_at >= start or f is chain[-1])]
        if not chosen:
            continue
        uncovered = []
        head = chosen[0].first_event_at
        if head and start < head:
            uncovered.append(f"{iso(start)} .. {iso(head)}: before the first archived file {chosen[0].name}")
        uncovered += [f"the chain breaks {b}" for b in _breaks(chosen)]
        until = chosen[-1].last_event_at
        if chosen[-1] is chain[-1] and archived_until is not None:
            until = max(until or archived_until, archived_until)
        want = stop or datetime.now(timezone.utc)
        if until is None or until < want - _SECOND:
            uncovered.append(f"{iso(until)} .. {iso(want)}: after the last archived event")
        lo = max(start, head or start)
        hi = min(want, until or want)
        score = (hi - lo).total_seconds() - 1e6 * len(uncovered)
        if best is None or score > best_score:
            best, best_score = Coverage(ident, chosen, uncovered), score
    return best or Coverage(None, [], [f"{iso(start)} .. {iso(stop)}: no archived file holds it"])


def _cover_gtid(chains, start_gtid, stop_gtid) -> Coverage:
    d, _s, q1 = parse_gtid(start_gtid)
    q2 = parse_gtid(stop_gtid)[2] if stop_gtid else None
    if stop_gtid and parse_gtid(stop_gtid)[0] != d:
        raise ValueError("start_gtid and stop_gtid must be of the same domain")
    best: Coverage | None = None
    for ident, chain in sorted(chains.items()):
        chosen = [f for f in chain if f.start_state is not None and f.end_state is not None
                  and _seq(f.end_state, d) >= q1 and (q2 is None or _seq(f.start_state, d) < q2)]
        if not chosen:
            continue
        uncovered = []
        if _seq(chosen[0].start_state, d) >= q1:
            uncovered.append(f"{d}-?-{q1} .. {d}-?-{_seq(chosen[0].start_state, d)}: before {chosen[0].name}")
        uncovered += [f"the chain breaks {b}" for b in _breaks(chosen)]
        if q2 is not None and _seq(chosen[-1].end_state, d) < q2:
            uncovered.append(f"{d}-?-{_seq(chosen[-1].end_state, d) + 1} .. {d}-?-{q2}: after {chosen[-1].name}")
        cov = Coverage(ident, chosen, uncovered)
        if best is None or (len(cov.uncovered), -len(cov.files)) < (len(best.uncovered), -len(best.files)):
            best = cov
    return best or Coverage(None, [], [f"{start_gtid} .. {stop_gtid or 'now'}: no archived file holds it"])


def _cover_position(chains, start_position, stop_position) -> Coverage:
    sfile, spos = start_position
    candidates = [(ident, chain) for ident, chain in sorted(chains.items()) if any(f.name == sfile for f in chain)]
    if not candidates:
        return Coverage(None, [], [f"{sfile}:{spos}: no archived file of that name"])
    # the identity that archived that file most recently (a failover back and forth reuses names)
    ident, chain = max(candidates, key=lambda c: max(_order(f) for f in c[1] if f.name == sfile))
    lo = file_number(sfile)
    hi = file_number(stop_position[0]) if stop_position else None
    chosen = [f for f in chain if f.number >= lo and (hi is None or f.number <= hi)]
    uncovered = [f"the chain breaks {b}" for b in _breaks(chosen)]
    if stop_position is not None:
        if not chosen or chosen[-1].name != stop_position[0]:
            uncovered.append(f"{stop_position[0]}: not archived")
        elif chosen[-1].size < stop_position[1] and chosen[-1].state != "closed":
            uncovered.append(f"{stop_position[0]}:{chosen[-1].size} .. {stop_position[1]}: not archived yet")
    if chosen and chosen[0].state == "incomplete" and chosen[0].size < spos:
        uncovered.append(f"{sfile}:{chosen[0].size} .. {spos}: purged before it was archived")
    return Coverage(ident, chosen, uncovered)


_SECOND = datetime(2000, 1, 1, 0, 0, 1) - datetime(2000, 1, 1)


# ---------------------------------------------------------------------------------------------- the CMDB side


def archive_enabled(instance: Any) -> bool:
    """Policy ``binlog_archive.enabled``; by default on for primaries, off for replicas (their primary's
    archive holds their transactions)."""
    enabled = instance.policy.binlog_archive.enabled
    return (instance.role != "replica") if enabled is None else bool(enabled)


def client_server_id(instance: Any) -> int:
    """The server_id the streamer presents to the server: the policy's, else one derived from the instance
    name in 1,000,000,000..3,999,999,999 (away from the small ids real servers use)."""
    explicit = instance.policy.binlog_archive.client_server_id
    if explicit:
        return int(explicit)
    return 1_000_000_000 + zlib.crc32(instance.name.encode()) % 3_000_000_000


def archive_dir(instance: Any) -> str:
    """``<base_dir>/<instance>/binlog`` on the instance's storage host."""
    return f"{instance.storage.base_dir.rstrip('/')}/{instance.name}/binlog"


def lag_over(lag_seconds: float | None, threshold: int, caught_up: bool) -> bool:
    """Whether a measured lag is an incident (an unmeasurable lag is not: the server being unreachable
    fails the run instead)."""
    return not caught_up and lag_seconds is not None and lag_seconds > threshold


# ---------------------------------------------------------------------------------------------- a flashback's window in the archive

IDENTITY_NAME = re.compile(r"^[0-9]+-[0-9a-f]{1,40}$")    # <server_id>-<hex of the uid>, as the host script names it
BINLOG_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.[0-9]{6,}$")  # binlog.000042
SUFFIXES = {"open": ".open", "incomplete": ".incomplete"}
READABLE = ("closed", "open", "incomplete")  # the states of an archived file that is there to be read
_FAR = datetime(9999, 1, 1, tzinfo=timezone.utc)


def archived_until(state: dict | None) -> datetime | None:
    """How far an instance's archive is known complete, from its ``binlog_archive_state`` row: the server's
    clock at the supervisor's last measurement when the archive held everything the server had written
    then, else the last archived event (None: no measurement yet)."""
    if not state:
        return None
    if state.get("caught_up") and state.get("measured_at"):
        return to_datetime(state["measured_at"])
    return to_datetime(state.get("last_event_at"))


def archived_path(f: ArchivedFile, archive_dir: str) -> str:
    """Where ``f`` lives on the storage host: ``<archive_dir>/<identity>/<name>[.open|.incomplete]``.

    The catalog's ``storage_path`` is not trusted as given: the identity and the name must be what the
    host script writes (no ``/``, no ``..``), and the path the catalog recorded must be exactly that one,
    under the instance's archive directory. ValueError otherwise."""
    base = posixpath.normpath(str(archive_dir or ""))
    if not base.startswith("/") or base == "/" or ".." in str(archive_dir).split("/"):
        raise ValueError(f"the archive directory {archive_dir!r} is not an absolute path")
    if not IDENTITY_NAME.match(str(f.identity or "")):
        raise ValueError(f"the catalog names a server identity {str(f.identity)[:80]!r} that is not one the archive "
                         "writes (<server_id>-<hex>)")
    if not BINLOG_NAME.match(str(f.name or "")):
        raise ValueError(f"the catalog names a binlog file {str(f.name)[:80]!r} that is not a binlog file name")
    path = f"{base}/{f.identity}/{f.name}{SUFFIXES.get(f.state, '')}"
    if f.storage_path is not None and posixpath.normpath(str(f.storage_path)) != path:
        raise ValueError(f"the catalog's storage path of {f.where}, {str(f.storage_path)[:200]!r}, is not its place "
                         f"in the instance's archive directory ({path}): not fetched")
    return path


def describe_archive(files: Sequence[ArchivedFile], limit: int = 4) -> str:
    """What an archive holds, per server identity: first and last file, event times and GTID states."""
    chains: dict[str, list[ArchivedFile]] = {}
    for f in files:
        if f.state in READABLE:
            chains.setdefault(f.identity, []).append(f)
    if not chains:
        return "no archived file"
    parts = []
    for ident, chain in sorted(chains.items())[:limit]:
        chain.sort(key=lambda f: (f.number, f.name))
        a, b = chain[0], chain[-1]
        gtids = ""
        if a.start_state is not None and b.end_state is not None:
            after = f" after {format_gtid_state(a.start_state)}" if a.start_state else ""
            gtids = f", GTIDs{after} up to {format_gtid_state(b.end_state) or 'none'}"
        parts.append(f"server {ident}: {a.name} (from {iso(a.first_event_at) or '?'}) .. {b.name} ({b.state}, last "
                     f"event {iso(b.last_event_at) or '?'}){gtids}")
    more = f" and {len(chains) - limit} more server(s)" if len(chains) > limit else ""
    return "; ".join(parts) + more


@dataclass
class WindowCoverage:
    """The archived files of one server identity that a flashback (or replay) of a window reads, in order.

    ``uncovered``: ``(fields, text)`` per part of the window those files do not hold, ``fields`` being the
    window's fields it concerns, as the ``mysql_flashback`` DAG names them (``start_datetime``,
    ``stop_gtid`` ...). ``open_end``: no stop was given, so the window runs to ``end``, the end of the
    archive (how far it is known complete, or its last archived event)."""

    identity: str | None
    files: list[ArchivedFile]
    uncovered: list[tuple[tuple[str, ...], str]]
    open_end: bool = False
    end: datetime | None = None

    @property
    def complete(self) -> bool:
        return bool(self.files) and not self.uncovered


def _field_of(text: str, start_field: str | None, stop_field: str | None) -> tuple[str, ...]:
    """Which end of the window an ``uncovered`` text of ``covering_files`` is about."""
    if text.startswith("the chain breaks"):
        return tuple(x for x in (start_field, stop_field) if x)
    if ("after the last archived event" in text or ": after " in text or text.endswith(": not archived")
            or text.endswith("not archived yet")):
        return (stop_field or start_field,) if (stop_field or start_field) else ()
    return (start_field or stop_field,) if (start_field or stop_field) else ()


def window_coverage(files: Sequence[ArchivedFile], *, start: datetime | None = None, stop: datetime | None = None,
                    start_gtid: str | None = None, stop_gtid: str | None = None,
                    start_position: tuple[str, int] | None = None, stop_position: tuple[str, int] | None = None,
                    identity: str | None = None, archived_until: datetime | None = None) -> WindowCoverage:
    """``covering_files`` for a whole flashback window, whose start and stop may be of different kinds (a
    time start and a GTID stop), several at once, or no stop at all.

    - The files are those of one server identity (``identity``, else the one ``covering_files`` picks for
      the window's start), a contiguous run of its chain; every start and every stop given must be held.
    - A time window's start in a quiet moment between two files (after the last event of one, before
      the first of the next) is held when the next file continues the one before (the GTID state it
      begins with is the one that file ended with): no transaction was purged in between. That file
      holds nothing of the window and is not read.
    - No stop: the window runs to the end of the archive, ``archived_until`` (how far it is known
      complete: the supervisor's last measurement) or the last archived event, whichever is later. The
      caller says so; a flashback then reads the files to their end (an open file as far as its last
      complete event).
    """
    start, stop, archived_until = to_datetime(start), to_datetime(stop), to_datetime(archived_until)
    if start is None and start_gtid is None and start_position is None:
        raise ValueError("give the start of the window: start, start_gtid or start_position")
    open_end = stop is None and stop_gtid is None and stop_position is None
    # a damaged file is not read; one retention expired (state expired) is no longer on storage
    usable = [f for f in files if f.state in READABLE]
    if identity is not None:
        usable = [f for f in usable if f.identity == identity]
    first_field = ("start_position" if start_position else "start_gtid" if start_gtid else "start_datetime")
    if not usable:
        where = f"no archived file of server {identity}" if identity else "no archived file"
        return WindowCoverage(identity, [], [((first_field,), f"{where} holds it: the archive is empty")], open_end)
    # the identity: the one that holds the start best
    if start_position is not None:
        probe = covering_files(usable, start_position=start_position, stop_position=stop_position, identity=identity)
    elif start_gtid is not None:
        probe = covering_files(usable, start_gtid=start_gtid, stop_gtid=stop_gtid, identity=identity)
    else:
        probe = covering_files(usable, start=start, stop=stop, identity=identity, archived_until=archived_until)
    ident = identity or probe.identity
    if ident is None:
        return WindowCoverage(None, [], [(_field_of(t, first_field, None), t) for t in probe.uncovered], open_end)
    chain = sorted((f for f in usable if f.identity == ident), key=lambda f: (f.number, f.name))
    last_event = max((f.last_event_at for f in chain if f.last_event_at), default=None)
    end = max((t for t in (archived_until, last_event) if t), default=None) if open_end else None

    calls: list[tuple[dict, str | None, str | None]] = []  # (covering_files arguments, start field, stop field)
    if start_position is not None:
        calls.append(({"start_position": start_position, "stop_position": stop_position}, "start_position",
                      "stop_position" if stop_position else None))
    if start_gtid is not None:
        calls.append(({"start_gtid": start_gtid, "stop_gtid": stop_gtid}, "start_gtid",
                      "stop_gtid" if stop_gtid else None))
    lead: ArchivedFile | None = None  # read only to show that the archive continues into the window
    if start is not None:
        start_eff = start
        inside = any(f.first_event_at is not None and f.first_event_at <= start
                     and (f.last_event_at is None or start <= f.last_event_at) for f in chain)
        before = [f for f in chain if f.last_event_at is not None and f.last_event_at < start]
        if before and not inside:  # a quiet moment between two files: show they continue each other
            lead = before[-1]
            start_eff = lead.last_event_at
        if stop is not None:
            kw = {"stop": stop, "archived_until": archived_until}
        elif open_end:
            kw = {"stop": (end + _SECOND) if end else None, "archived_until": end}
        else:  # the window ends at a GTID or a position: checked below, not by time
            kw = {"stop": None, "archived_until": _FAR}
        calls.append(({"start": start_eff, **kw}, "start_datetime", "stop_datetime" if stop else None))
    if stop_position is not None and start_position is None:
        calls.append(({"start_position": (stop_position[0], 4), "stop_position": stop_position}, None, "stop_position"))
    if stop_gtid is not None and start_gtid is None:
        calls.append(({"start_gtid": stop_gtid, "stop_gtid": stop_gtid}, None, "stop_gtid"))
    if stop is not None and start is None:
        calls.append(({"start": stop - _SECOND, "stop": stop, "archived_until": archived_until}, None, "stop_datetime"))

    uncovered: list[tuple[tuple[str, ...], str]] = []
    chosen: dict[tuple[int, str], ArchivedFile] = {}
    needed: set[tuple[int, str]] = set()  # chosen by a call other than the time start's
    tail = chain[-1]
    for kw, start_field, stop_field in calls:
        cov = covering_files(chain, identity=ident, **kw)
        for f in cov.files:
            chosen[(f.number, f.name)] = f
            if start_field != "start_datetime":
                needed.add((f.number, f.name))
        if start_field is None:  # a probe of a stop whose kind the window does not start with
            if not cov.files:
                cov.uncovered = [{
                    "stop_gtid": f"{stop_gtid}: after the last archived transaction "
                                 f"({format_gtid_state(tail.end_state) or 'none'}, {tail.name})",
                    "stop_datetime": f"{iso(stop)}: after the last archived event ({iso(last_event)}, {tail.name})",
                    "stop_position": f"{stop_position[0] if stop_position else ''}: not archived"}[stop_field]]
            else:  # its own start is the probe's, not the window's (checked by the window's start)
                cov.uncovered = [t for t in cov.uncovered if "before" not in t]
        for text in cov.uncovered:
            item = (_field_of(text, start_field, stop_field), text)
            if item not in uncovered:
                uncovered.append(item)
    if not chosen:
        return WindowCoverage(ident, [], uncovered or [((first_field,), "no archived file holds it")], open_end, end)
    lo, hi = min(chosen), max(chosen)
    run = [f for f in chain if lo <= (f.number, f.name) <= hi]
    stop_field = ("stop_position" if stop_position else "stop_gtid" if stop_gtid else
                  "stop_datetime" if stop else None)
    seen = {text for _, text in uncovered}
    for b in _breaks(run):
        text = f"the chain breaks {b}"
        if text not in seen:
            uncovered.append((tuple(x for x in (first_field, stop_field) if x), text))
    if lead is not None and run and run[0] is lead and (lead.number, lead.name) not in needed and len(run) > 1:
        run = run[1:]  # it holds nothing of the window: it only showed that the next file continues it
    return WindowCoverage(ident, run, uncovered, open_end, end)
