"""The CMDB: which MySQL/MariaDB instances exist and how each one is backed up.

``load_cmdb`` never raises for bad content. Every problem becomes a ``CmdbError``
naming the row, the field, what is wrong and what would be right; rows with errors
are left out and the valid rows load regardless. The loader runs at every DAG parse,
so it validates with precompiled patterns and shares unchanged defaults between rows.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Union

import yaml

Role = Literal["primary", "replica"]
Flavor = Literal["mariadb", "mysql"]
Compress = Literal["none", "gzip", "zstd"]
AllowPrimary = Literal["never", "when_no_replica", "when_replicas_unhealthy"]

ROLES: tuple[str, ...] = ("primary", "replica")
FLAVORS: tuple[str, ...] = ("mariadb", "mysql")
COMPRESSIONS: tuple[str, ...] = ("none", "gzip", "zstd")
ALLOW_PRIMARY: tuple[str, ...] = ("never", "when_no_replica", "when_replicas_unhealthy")
SCHEDULE_PRESETS: tuple[str, ...] = (
    "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
)
ENV_VAR = "MYSQL_BACKUP_CMDB"
POOL_PREFIX = "mysql_backup_storage__"
DEFAULT_POOL_SLOTS = 4


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class ReservePolicy:
    """Reserve file on the database host: ``percent`` of the data filesystem, at ``path``
    (None: beside the datadir)."""

    percent: float = 1.5
    path: str | None = None


@dataclass(frozen=True)
class BinlogArchivePolicy:
    """The continuous binlog archive and its supervisor DAG ``mysql_binlog__<name>``.

    ``enabled`` None: on for primaries, off for replicas (their primary's archive has their
    transactions). ``lease_minutes``: a streamer whose supervisor stopped renewing its lease stops
    by itself after this long. ``lag_alert_seconds`` (an integer, or a duration like ``90s``, ``5m``,
    ``2h``): a lag above it alerts once. ``gap_alert``: a gap in the archive alerts once.
    ``conn_id``: the MySQL connection the streamer reads the binlog with (None: the row's
    mysql_conn_id; it needs REPLICATION SLAVE and BINLOG MONITOR). ``client_server_id``: the
    server_id the streamer presents (None: derived from the instance name).
    """

    enabled: bool | None = None
    schedule: str | None = "* * * * *"
    lease_minutes: int = 10
    lag_alert_seconds: int = 300
    gap_alert: bool = True
    stall_seconds: int = 120
    conn_id: str | None = None
    client_server_id: int | None = None


@dataclass(frozen=True)
class Policy:
    """How an instance is backed up. ``full_schedule`` None means manual runs only."""

    full_schedule: str | None = "0 2 * * *"
    retention_days: int = 7
    compress: Compress = "zstd"
    parallel: int = 2
    allow_primary: AllowPrimary = "when_no_replica"
    max_replica_lag_seconds: int = 300
    reserve: ReservePolicy = ReservePolicy()
    backup_enabled: bool = True
    safe_slave_backup: bool = False
    binlog_archive: BinlogArchivePolicy = BinlogArchivePolicy()
    # incremental backups: scheduled runs at these times take an incremental on the newest usable
    # backup of the chain (None: every run is a full); a chain holds at most max_chain_length
    # incrementals after its full, then the next run takes a full
    incremental_schedule: str | None = None
    max_chain_length: int = 6
    # retention (mysqlbackup.expire): keep a recovery window of retention_days and/or the newest
    # retention_full_chains chains; expire: apply (delete what the plan names), dry_run (log the
    # plan only) or off; keep_forever: labels kept whatever the rules say
    retention_full_chains: int | None = None
    expire: str = "apply"
    keep_forever: tuple[str, ...] = ()
    # restore drills (mysqlbackup.drill): restored on a drill target at least every this many days
    drill_every_days: int = 7


@dataclass(frozen=True)
class StorageLocation:
    """Where an instance's backups land: ``<base_dir>/<instance>/<label>/`` on that host."""

    ssh_conn_id: str
    base_dir: str


@dataclass(frozen=True)
class StorageHost:
    """A storage host and how many backups it takes at once (its Airflow pool size)."""

    ssh_conn_id: str
    max_concurrent_backups: int = DEFAULT_POOL_SLOTS


@dataclass(frozen=True)
class AlertConfig:
    """Who hears about failures, and through which notifiers."""

    email_to: tuple[str, ...] = ()
    smtp_conn_id: str | None = None
    email_from: str | None = None
    webhook_conn_id: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True)
class Instance:
    """One CMDB row: a database server and its backup settings."""

    name: str
    host: str
    port: int
    role: Role
    replica_of: str | None
    flavor: Flavor
    ssh_conn_id: str
    mysql_conn_id: str
    owner: str
    app: str
    storage: StorageLocation
    policy: Policy
    alerts: AlertConfig
    python: str = "python3"
    become: bool = False
    tags: tuple[str, ...] = ()

    @property
    def dag_id(self) -> str:
        return f"mysql_backup__{self.name}"

    @property
    def is_replica(self) -> bool:
        return self.role == "replica"


@dataclass(frozen=True)
class RestoreTarget:
    """A host a restore may write to (top-level ``restore_targets:``). Never a CMDB instance.

    ``stop_command`` / ``start_command`` are shell commands run with ``sh -c`` over SSH on the target
    only (``systemctl stop mariadb``); ``start_command`` sees ``MYSQL_RESTORE_SERVER_ID`` (and
    ``MYSQL_RESTORE_DATADIR``) in its environment. ``server_id`` None: one no CMDB instance uses,
    chosen at restore time. ``allowed_instances`` None: every instance. ``work_dir`` None:
    ``<datadir's parent>/.mysql-restore-<datadir's name>`` (the backup set is received and prepared
    there). ``replication_conn_id`` None: the primary's binlog-reading connection (for
    ``make_replica_of_source``).
    """

    name: str
    host: str
    port: int
    ssh_conn_id: str
    mysql_conn_id: str
    datadir: str
    flavor: Flavor
    stop_command: str
    start_command: str
    server_id: int | None = None
    allowed_instances: tuple[str, ...] | None = None
    work_dir: str | None = None
    replication_conn_id: str | None = None
    python: str = "python3"
    become: bool = False
    drill: bool = False  # mysql_restore_drill may restore onto it (it holds nothing else)

    def allows(self, instance: str) -> bool:
        return self.allowed_instances is None or instance in self.allowed_instances

    @property
    def work_path(self) -> str:
        if self.work_dir:
            return self.work_dir.rstrip("/")
        parent, _, base = self.datadir.rstrip("/").rpartition("/")
        return f"{parent}/.mysql-restore-{base}"


@dataclass(frozen=True)
class CmdbError:
    """One problem in the CMDB. ``row`` counts instances from 1; None for file,
    ``defaults`` and ``storages`` problems."""

    row: int | None
    name: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (name {self.name!r})" if self.name else ""))
        elif self.name:
            where.append(f"name {self.name!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class CmdbInvalid(Exception):
    """The CMDB has errors; ``errors`` holds all of them."""

    def __init__(self, errors: Iterable[CmdbError], source: str | None = None) -> None:
        self.errors = tuple(errors)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{head}{len(self.errors)} CMDB error(s):\n{lines}")


def pool_name(storage_ssh_conn_id: str) -> str:
    """Airflow pool guarding one storage host: ``mysql_backup_storage__<conn id>``."""
    return POOL_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", storage_ssh_conn_id)


RECONCILE_SCHEDULE = "@hourly"  # default of platform.catalog_reconcile_schedule
# mysql_backup_verify_stored: once a day, away from the nightly backups; every stored backup is
# re-read within the window; each read is paced so that the storage host keeps serving backups
STORED_VERIFY_SCHEDULE = "30 13 * * *"
STORED_VERIFY_WINDOW_DAYS = 7
STORED_VERIFY_MAX_MIB_PER_S = 200
# mysql_restore_drill: once a day, after the nightly backups; at most this many drills per target and run
DRILL_SCHEDULE = "0 5 * * *"
DRILL_MAX_PER_TARGET = 2


@dataclass(frozen=True)
class Cmdb:
    """A loaded CMDB: valid instances sorted by name, storage hosts, and every error."""

    instances: tuple[Instance, ...] = ()
    storages: tuple[StorageHost, ...] = ()
    errors: tuple[CmdbError, ...] = ()
    source: str = ""
    platform: AlertConfig = AlertConfig()  # who hears about the CMDB itself (bad rows)
    platform_owner: str = "mysql-backup"
    # when mysql_backup_catalog_rebuild reconciles the catalog with storage (None: manual only)
    reconcile_schedule: str | None = RECONCILE_SCHEDULE
    stored_verify_schedule: str | None = STORED_VERIFY_SCHEDULE
    stored_verify_window_days: int = STORED_VERIFY_WINDOW_DAYS
    stored_verify_max_mib_per_s: int = STORED_VERIFY_MAX_MIB_PER_S
    restore_targets: tuple[RestoreTarget, ...] = ()  # where a restore may write (valid rows, by name)
    drill_schedule: str | None = DRILL_SCHEDULE
    drill_max_per_target: int = DRILL_MAX_PER_TARGET
    _by_name: dict[str, Instance] = field(init=False, repr=False, compare=False)
    _replicas: dict[str, list[Instance]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        replicas: dict[str, list[Instance]] = {}
        for inst in sorted(self.instances, key=lambda i: i.name):
            if inst.replica_of is not None:
                replicas.setdefault(inst.replica_of, []).append(inst)
        object.__setattr__(self, "_by_name", {i.name: i for i in self.instances})
        object.__setattr__(self, "_replicas", replicas)

    pool_name = staticmethod(pool_name)

    def by_name(self, name: str) -> Instance | None:
        """The valid instance called ``name``, or None."""
        return self._by_name.get(name)

    def restore_target(self, name: str) -> RestoreTarget | None:
        """The valid restore target called ``name``, or None."""
        return next((t for t in self.restore_targets if t.name == name), None)

    def replicas_of(self, name: str) -> list[Instance]:
        """Valid instances whose ``replica_of`` is ``name``, sorted by name."""
        return list(self._replicas.get(name, ()))

    def pools(self) -> dict[str, int]:
        """Pool name -> slots for every storage host an instance uses (default 4 slots)."""
        slots = {s.ssh_conn_id: s.max_concurrent_backups for s in self.storages}
        used = sorted({i.storage.ssh_conn_id for i in self.instances})
        return {pool_name(c): slots.get(c, DEFAULT_POOL_SLOTS) for c in used}

    def raise_for_errors(self) -> None:
        """Raise ``CmdbInvalid`` listing every error, if there is any."""
        if self.errors:
            raise CmdbInvalid(self.errors, self.source)


def cmdb_path() -> Path:
    """``$MYSQL_BACKUP_CMDB`` if set, else ``<repo>/include/cmdb/instances.yaml``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "include" / "cmdb" / "instances.yaml"


# ---------------------------------------------------------------- field checks
# A check takes a value and returns None when it is fine, else what is wrong.

Check = Callable[[Any], Union[str, None]]
Spec = dict[str, Union[Check, "Spec"]]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CONN_RE = re.compile(r"[A-Za-z0-9_.-]{1,250}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_IPV4ISH_RE = re.compile(r"[0-9.]+")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?")
_PATH_RE = re.compile(r"(?:/[A-Za-z0-9_.+@=,:-]+)+/?")
_PYTHON_RE = re.compile(r"[A-Za-z0-9_./+][A-Za-z0-9_./+-]{0,254}")
_EMAIL_RE = re.compile(r"[^@\s,;<>\"'()]+@[^@\s,;<>\"'()]+")
_URL_RE = re.compile(r"https?://[^\s\"'<>]+")
_CRON_PART_RE = re.compile(r"(?:\*|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS),
)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _enum(what: str, choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        return f"unknown {what} {_show(value)}; expected one of: {', '.join(choices)}"
    return check


def _int_range(what: str, lo: int, hi: int | None = None) -> Check:
    want = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def check(value: Any) -> str | None:
        if _is_int(value) and value >= lo and (hi is None or value <= hi):
            return None
        return f"invalid {what} {_show(value)}: expected {want}"
    return check


def _boolean(what: str) -> Check:
    def check(value: Any) -> str | None:
        return None if isinstance(value, bool) else f"invalid {what} {_show(value)}: expected true or false"
    return check


def _control(value: str) -> str | None:
    """The first control character (a newline, a tab, an escape, a line separator) in a text, if any:
    such a text would end or forge a mail header, a tag or a log line."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return ch
    return None


def _text(what: str, max_length: int = 200) -> Check:
    def check(value: Any) -> str | None:
        if not (isinstance(value, str) and value.strip()):
            return f"invalid {what} {_show(value)}: expected a non-empty string"
        bad = _control(value)
        if bad is not None:
            return (f"invalid {what} {_show(value)}: it holds the control character {bad!r} (a newline would "
                    "end a mail header or a log line): one line of printable text")
        if len(value) > max_length:
            return f"invalid {what} {_show(value)}: {len(value)} characters, at most {max_length}"
        return None
    return check


def _optional(check: Check) -> Check:
    def optional(value: Any) -> str | None:
        return None if value is None else check(value)
    return optional


def _conn_id(what: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and _CONN_RE.fullmatch(value):
            return None
        return (f"invalid {what} {_show(value)}: expected an Airflow connection id "
                "(1-250 of A-Z a-z 0-9 _ . -)")
    return check


def _check_name(value: Any) -> str | None:
    if isinstance(value, str) and _NAME_RE.fullmatch(value):
        return None
    return (f"invalid name {_show(value)}: must match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$ "
            "(a letter or digit, then letters, digits, '_' or '-'; at most 64 characters)")


def _check_replica_of(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and _NAME_RE.fullmatch(value)):
        return None
    return f"invalid replica_of {_show(value)}: expected the name of another row"


def _check_host(value: Any) -> str | None:
    if isinstance(value, str):
        if _IPV4ISH_RE.fullmatch(value):
            try:
                ipaddress.IPv4Address(value)
                return None
            except ValueError:
                pass
        elif ":" not in value and _HOSTNAME_RE.fullmatch(value):
            return None
        if ":" in value and _IPV6_RE.fullmatch(value):
            try:
                ipaddress.IPv6Address(value)
                return None
            except ValueError:
                pass
    return (f"invalid host {_show(value)}: expected a hostname, IPv4 or IPv6 address "
            "(no spaces, brackets or shell characters)")


def _path(what: str, example: str) -> Check:
    def check(value: Any) -> str | None:
        if (isinstance(value, str) and _PATH_RE.fullmatch(value)
                and not {".", ".."} & set(value.split("/"))):
            return None
        return (f"invalid {what} {_show(value)}: expected an absolute path like {example} "
                "(no '.' or '..' parts, spaces or shell characters)")
    return check


def _check_python(value: Any) -> str | None:
    if isinstance(value, str) and _PYTHON_RE.fullmatch(value):
        return None
    return (f"invalid python {_show(value)}: expected an interpreter name or path "
            "like python3 or /usr/bin/python3.9")


def _check_tags(value: Any) -> str | None:
    if isinstance(value, list) and all(
            isinstance(t, str) and t.strip() and len(t) <= 100 and _control(t) is None for t in value):
        return None
    return (f"invalid tags {_show(value)}: expected a list of non-empty strings of printable text (at most 100 "
            "characters each)")


def _check_email(value: Any) -> str | None:
    if isinstance(value, str) and _EMAIL_RE.fullmatch(value) and _control(value) is None and len(value) <= 254:
        return None
    return f"invalid email address {_show(value)}: expected user@domain"


def _check_email_list(value: Any) -> str | None:
    if isinstance(value, list) and all(_check_email(v) is None for v in value):
        return None
    return f"invalid email_to {_show(value)}: expected a list of addresses like [dba@example.com]"


def _check_url(value: Any) -> str | None:
    if isinstance(value, str) and _URL_RE.fullmatch(value) and _control(value) is None:
        return None
    return f"invalid webhook url {_show(value)}: expected http:// or https:// and no spaces"


def _check_percent(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.01 <= value <= 10:
        return None
    return f"invalid reserve percent {_show(value)}: expected a number 0.01..10 (1 to 2 is usual)"


@lru_cache(maxsize=512)
def _cron_error(expr: str) -> str | None:
    if expr.startswith("@"):
        if expr in SCHEDULE_PRESETS:
            return None
        return f"unknown preset {expr!r}; expected one of: {', '.join(SCHEDULE_PRESETS)}"
    parts = expr.split()
    if len(parts) != 5:
        return f"{len(parts)} fields, expected 5 (minute hour day-of-month month day-of-week)"
    for text, (what, lo, hi, names) in zip(parts, _CRON_FIELDS):
        for part in text.split(","):
            m = _CRON_PART_RE.fullmatch(part)
            if m is None:
                return f"bad {what} field {text!r}"
            start, end, step = m.groups()
            values = []
            for token in (start, end):
                if token is None:
                    continue
                number = int(token) if token.isdigit() else names.get(token.lower())
                if number is None or not lo <= number <= hi:
                    return f"bad {what} {token!r}: expected {lo}..{hi}"
                values.append(number)
            if len(values) == 2 and values[0] > values[1]:
                return f"bad {what} range {part!r}: start after end"
            if step is not None and not 1 <= int(step) <= hi:
                return f"bad {what} step {part!r}: expected 1..{hi}"
    return None


def _schedule(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        why = _cron_error(value) if isinstance(value, str) else f"not a string but {type(value).__name__}"
        if why is None:
            return None
        return (f"invalid {name} {_show(value)}: {why}; expected a 5-field cron string "
                f"like '0 2 * * *', a preset ({', '.join(SCHEDULE_PRESETS)}) or null for manual only")
    return check


_check_schedule = _schedule("full_schedule")

_DURATION_RE = re.compile(r"([0-9]{1,9})\s*(s|m|h|d)")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: Any) -> int | None:
    """A duration as seconds: an integer (seconds) or ``90s``, ``5m``, ``2h``, ``1d``; None when it is not one."""
    if _is_int(value):
        return value if value >= 1 else None
    if isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if m and int(m.group(1)) >= 1:
            return int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return None


def _schedule_gap_minutes(expr: str) -> int | None:
    """The longest wait, in minutes, between two runs of a (valid) cron schedule; None when it cannot
    be told from the minute and hour fields alone (then it is at least a day)."""
    presets = {"@hourly": 60}
    if expr.startswith("@"):
        return presets.get(expr)
    parts = expr.split()
    if parts[2:] != ["*", "*", "*"]:
        return None
    fields = []
    for text, (_what, lo, hi, _names) in zip(parts[:2], _CRON_FIELDS[:2]):
        values: set[int] = set()
        for part in text.split(","):
            m = _CRON_PART_RE.fullmatch(part)
            start, end, step = m.groups() if m else (None, None, None)
            first = lo if start is None else int(start)
            last = hi if start is None else (int(end) if end is not None else (hi if step else int(start)))
            values.update(range(first, last + 1, int(step or 1)))
        fields.append(values)
    fires = sorted(h * 60 + m for h in fields[1] for m in fields[0])
    return max(((b - a) % 1440 or 1440) for a, b in zip(fires, fires[1:] + fires[:1]))


def _check_archive_lease(policy: dict[str, Any], add: Callable[[str, str], None]) -> None:
    """A lease shorter than the supervisor's schedule cannot work: the streamer would stop between runs."""
    archive = policy.get("binlog_archive") or {}
    schedule, lease = archive.get("schedule"), archive.get("lease_minutes")
    if not isinstance(schedule, str) or not _is_int(lease) or _cron_error(schedule) is not None:
        return
    gap = _schedule_gap_minutes(schedule)
    if gap is None or gap >= lease:
        add("policy.binlog_archive.lease_minutes",
            f"lease_minutes {lease} is not longer than the wait between two runs of binlog_archive.schedule "
            f"{schedule!r} ({gap if gap is not None else 'a day or more'} minutes): the streamer would stop between "
            "runs; make the lease longer than that wait (two or three runs' worth)")


def _check_keep_forever(value: Any) -> str | None:
    from mysqlbackup.labels import is_label
    if isinstance(value, list) and all(is_label(v) for v in value):
        return None
    return (f"invalid keep_forever {_show(value)}: expected a list of backup labels like "
            "[20261124-020000F, 20261124-020000F_20261125-020000I]")


def _check_retention(policy: dict[str, Any], add: Callable[[str, str], None]) -> None:
    """A retention that keeps nothing cannot work: one of the two rules must be set."""
    if policy.get("retention_days") is None and policy.get("retention_full_chains") is None:
        add("policy.retention_days", "retention_days and retention_full_chains are both null: a retention that "
                                     "keeps nothing; set a recovery window in days, a number of chains, or both")


def _duration(what: str) -> Check:
    def check(value: Any) -> str | None:
        if duration_seconds(value) is not None:
            return None
        return (f"invalid {what} {_show(value)}: not a duration; expected a number of seconds (at least 1) or "
                "a duration like '90s', '5m', '2h', '1d'")
    return check


_RESERVE_SPEC: Spec = {
    "percent": _check_percent,
    "path": _optional(_path("reserve path", "/var/lib/mysql-reserve")),
}
_POLICY_SPEC: Spec = {
    "full_schedule": _check_schedule,
    "incremental_schedule": _schedule("incremental_schedule"),
    "max_chain_length": _int_range("max_chain_length", 1, 1000),
    "drill_every_days": _int_range("drill_every_days", 1, 366),
    "retention_days": _optional(_int_range("retention_days", 1)),
    "retention_full_chains": _optional(_int_range("retention_full_chains", 1, 10000)),
    "expire": _enum("expire", ("apply", "dry_run", "off")),
    "keep_forever": _check_keep_forever,
    "compress": _enum("compress", COMPRESSIONS),
    "parallel": _int_range("parallel", 1, 64),
    "allow_primary": _enum("allow_primary", ALLOW_PRIMARY),
    "max_replica_lag_seconds": _int_range("max_replica_lag_seconds", 0),
    "safe_slave_backup": _boolean("safe_slave_backup"),
    "binlog_archive": {
        "enabled": _optional(_boolean("binlog_archive.enabled")),
        "schedule": _schedule("binlog_archive.schedule"),
        "lease_minutes": _int_range("binlog_archive.lease_minutes", 1, 1440),
        "lag_alert_seconds": _duration("binlog_archive.lag_alert_seconds"),
        "gap_alert": _boolean("binlog_archive.gap_alert"),
        "stall_seconds": _int_range("binlog_archive.stall_seconds", 10, 86400),
        "conn_id": _optional(_conn_id("binlog_archive.conn_id")),
        "client_server_id": _optional(_int_range("binlog_archive.client_server_id", 1, 4294967295)),
    },
    "reserve": _RESERVE_SPEC,
}
_STORAGE_SPEC: Spec = {
    "ssh_conn_id": _conn_id("storage ssh_conn_id"),
    "base_dir": _path("base_dir", "/srv/mysql-backups"),
}
_DEFAULT_ALERTS_SPEC: Spec = {
    "email": {"smtp_conn_id": _optional(_conn_id("smtp_conn_id")), "from": _optional(_check_email)},
    "webhook": {"conn_id": _optional(_conn_id("webhook conn_id")), "url": _optional(_check_url)},
}
_ROW_SPEC: Spec = {
    "name": _check_name,
    "host": _check_host,
    "port": _int_range("port", 1, 65535),
    "role": _enum("role", ROLES),
    "replica_of": _check_replica_of,
    "flavor": _enum("flavor", FLAVORS),
    "ssh_conn_id": _conn_id("ssh_conn_id"),
    "mysql_conn_id": _conn_id("mysql_conn_id"),
    "owner": _text("owner"),
    "app": _text("app"),
    "python": _check_python,
    "become": _boolean("become"),
    "tags": _check_tags,
    "backup": {"enabled": _boolean("backup.enabled")},
    "policy": _POLICY_SPEC,
    "storage": _STORAGE_SPEC,
    "alerts": {**_DEFAULT_ALERTS_SPEC, "email_to": _check_email_list},
}
_DEFAULTS_SPEC: Spec = {"storage": _STORAGE_SPEC, "policy": _POLICY_SPEC, "alerts": _DEFAULT_ALERTS_SPEC}
_STORAGES_SPEC: Spec = {
    "ssh_conn_id": _conn_id("ssh_conn_id"),
    "max_concurrent_backups": _int_range("max_concurrent_backups", 1, 1024),
}
_PLATFORM_SPEC: Spec = {"owner": _text("platform.owner"), "email_to": _check_email_list,
                        "catalog_reconcile_schedule": _schedule("platform.catalog_reconcile_schedule"),
                        "stored_verify_schedule": _schedule("platform.stored_verify_schedule"),
                        "stored_verify_window_days": _int_range("platform.stored_verify_window_days", 1, 366),
                        "stored_verify_max_mib_per_s": _int_range("platform.stored_verify_max_mib_per_s", 1, 100000),
                        "drill_schedule": _schedule("platform.drill_schedule"),
                        "drill_max_per_target": _int_range("platform.drill_max_per_target", 1, 16)}
_TOP_KEYS = ("defaults", "storages", "instances", "platform", "restore_targets")
_REQUIRED = ("name", "host", "port", "role", "flavor", "ssh_conn_id", "mysql_conn_id", "owner", "app")
_BUILTIN_POLICY: dict[str, Any] = {k: v for k, v in asdict(Policy()).items() if k != "backup_enabled"}

Report = Callable[[Union[str, None], str], None]


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _unknown_key(key: Any, spec: Spec) -> str:
    hint = difflib.get_close_matches(str(key), list(spec), n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown key {_show(key)}{did_you_mean}; expected one of: {', '.join(sorted(spec))}"


def _validate(raw: Any, spec: Spec, prefix: str, report: Report) -> dict[str, Any]:
    """Check a mapping against ``spec``; report each problem; return the valid items."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        report(prefix or None, f"expected a mapping, got {_type(raw)} {_show(raw)}")
        return {}
    valid: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        check = spec.get(key) if isinstance(key, str) else None
        if check is None:
            report(where, _unknown_key(key, spec))
        elif isinstance(check, dict):
            valid[key] = _validate(value, check, where, report)
        else:
            problem = check(value)
            if problem is None:
                valid[key] = value
            else:
                report(where, problem)
    return valid


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, one level of nested mappings merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = {**below, **value} if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


def _policy(values: dict[str, Any], enabled: bool) -> Policy:
    reserve = values["reserve"]
    archive = values["binlog_archive"]
    values = {**values, "binlog_archive": BinlogArchivePolicy(
        **{**archive, "lag_alert_seconds": duration_seconds(archive["lag_alert_seconds"])})}
    return Policy(**{**values, "reserve": ReservePolicy(float(reserve["percent"]), reserve["path"]),
                     "keep_forever": tuple(values.get("keep_forever") or ())},
                  backup_enabled=enabled)


# ---------------------------------------------------------------- loading


class _Row:
    """One instances entry while it is being checked."""

    __slots__ = ("row", "name", "errors", "notes", "values", "policy", "storage", "alerts")

    def __init__(self, row: int, name: str | None) -> None:
        self.row = row
        self.name = name
        self.errors: list[CmdbError] = []
        self.notes: list[CmdbError] = []  # reported, but do not reject the row
        self.values: dict[str, Any] = {}
        self.policy: dict[str, Any] | None = None  # None: the shared defaults
        self.storage: dict[str, Any] = {}
        self.alerts: dict[str, Any] = {}

    def add(self, field_: str | None, message: str) -> None:
        self.errors.append(CmdbError(self.row, self.name, field_, message))

    def has_error(self, *fields: str) -> bool:
        return any(e.field in fields for e in self.errors)


def _broken(source: str, message: str) -> Cmdb:
    return Cmdb(errors=(CmdbError(None, None, None, message),), source=source)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same rules as safe_load, in C


def load_cmdb(path: str | Path) -> Cmdb:
    """Read and check the CMDB at ``path``. Bad content becomes errors, never an exception."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return _broken(source, f"CMDB file {source} not found; create it or point {ENV_VAR} at one")
    except (OSError, UnicodeDecodeError) as exc:
        return _broken(source, f"cannot read CMDB file {source}: {exc}")
    try:
        doc = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        return _broken(source, f"CMDB file {source} is not valid YAML: {exc}")
    return parse_cmdb(doc, source)


def parse_cmdb(doc: Any, source: str = "<memory>") -> Cmdb:
    """Check an already parsed CMDB document (see ``load_cmdb``)."""
    if not isinstance(doc, dict):
        return _broken(source, f"CMDB {source}: the top level must be a mapping with an "
                               f"'instances' list, got {_type(doc)}")
    if not isinstance(doc.get("instances"), list):
        return _broken(source, f"CMDB {source}: 'instances' must be a list of rows, "
                               f"got {_type(doc.get('instances'))}")
    errors: list[CmdbError] = []

    def report(where: str | None, message: str) -> None:
        errors.append(CmdbError(None, None, where, message))

    for key in doc:
        if key not in _TOP_KEYS:
            report(str(key), _unknown_key(key, dict.fromkeys(_TOP_KEYS)))  # type: ignore[arg-type]

    # Defaults: an invalid default value is reported and the built-in default applies.
    defaults = _validate(doc.get("defaults"), _DEFAULTS_SPEC, "defaults", report)
    base_policy = _merge(_BUILTIN_POLICY, defaults.get("policy", {}))
    base_storage: dict[str, Any] = defaults.get("storage", {})
    base_alerts: dict[str, Any] = _merge({"email": {}, "webhook": {}}, defaults.get("alerts", {}))
    shared_policy = {True: _policy(base_policy, True), False: _policy(base_policy, False)}

    storages = _storages(doc.get("storages"), report)
    platform = _validate(doc.get("platform"), _PLATFORM_SPEC, "platform", report)
    rows = [_check_row(i, raw, base_policy, base_storage, base_alerts)
            for i, raw in enumerate(doc["instances"], start=1)]
    valid = _resolve(rows)

    instances = []
    for r in rows:
        errors.extend(r.errors)
        errors.extend(r.notes)
        if valid[r.row]:
            v = r.values
            # A replica is valid only if its replica_of row is: its primary is listed here.
            enabled = v.get("backup", {}).get("enabled", v["role"] != "replica")
            policy = shared_policy[enabled] if r.policy is None else _policy(r.policy, enabled)
            instances.append(_instance(v, policy, r.storage, r.alerts))
    instances.sort(key=lambda i: i.name)
    targets = _restore_targets(doc.get("restore_targets"), rows, {i.name: i for i in instances}, errors)
    email, webhook = base_alerts["email"], base_alerts["webhook"]
    platform_alerts = AlertConfig(
        email_to=tuple(platform.get("email_to") or ()), smtp_conn_id=email.get("smtp_conn_id"),
        email_from=email.get("from"), webhook_conn_id=webhook.get("conn_id"), webhook_url=webhook.get("url"))
    return Cmdb(tuple(instances), storages, tuple(errors), source, platform_alerts,
                platform.get("owner") or "mysql-backup",
                platform.get("catalog_reconcile_schedule", RECONCILE_SCHEDULE),
                platform.get("stored_verify_schedule", STORED_VERIFY_SCHEDULE),
                platform.get("stored_verify_window_days", STORED_VERIFY_WINDOW_DAYS),
                platform.get("stored_verify_max_mib_per_s", STORED_VERIFY_MAX_MIB_PER_S),
                restore_targets=targets, drill_schedule=platform.get("drill_schedule", DRILL_SCHEDULE),
                drill_max_per_target=platform.get("drill_max_per_target", DRILL_MAX_PER_TARGET))


_COMMAND_MAX = 1000


def _command(what: str) -> Check:
    """A shell command from the CMDB (run with sh -c on the target only): one line of printable text."""
    text = _text(what, _COMMAND_MAX)

    def check(value: Any) -> str | None:
        problem = text(value)
        return None if problem is None else problem + " (a shell command run with sh -c on the target, " \
            "like 'systemctl stop mariadb')"
    return check


def _check_names(value: Any) -> str | None:
    if isinstance(value, list) and value and all(isinstance(v, str) and _NAME_RE.fullmatch(v) for v in value):
        return None
    return (f"invalid allowed_instances {_show(value)}: expected a non-empty list of instance names "
            "(leave it out to allow every instance)")


# a datadir a restore empties (overwrite) and fills: never a system directory
_SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt",
                "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/tmp")
_SYSTEM_TREES = ("/bin/", "/boot/", "/dev/", "/etc/", "/lib/", "/lib32/", "/lib64/", "/proc/", "/run/", "/sbin/",
                 "/sys/", "/usr/")


def _datadir(what: str) -> Check:
    path = _path(what, "/var/lib/mysql")

    def check(value: Any) -> str | None:
        problem = path(value)
        if problem is not None:
            return problem
        norm = value.rstrip("/")
        if norm in _SYSTEM_DIRS or norm.startswith(_SYSTEM_TREES):
            return (f"invalid {what} {_show(value)}: a system directory; a restore empties and fills this "
                    "directory: name the server's own data directory, like /var/lib/mysql")
        return None
    return check


_TARGET_SPEC: Spec = {
    "name": _check_name,
    "host": _check_host,
    "port": _int_range("port", 1, 65535),
    "ssh_conn_id": _conn_id("ssh_conn_id"),
    "mysql_conn_id": _conn_id("mysql_conn_id"),
    "datadir": _datadir("datadir"),
    "flavor": _enum("flavor", FLAVORS),
    "stop_command": _command("stop_command"),
    "start_command": _command("start_command"),
    "server_id": _optional(_int_range("server_id", 1, 4294967295)),
    "allowed_instances": _optional(_check_names),
    "work_dir": _optional(_datadir("work_dir")),
    "replication_conn_id": _optional(_conn_id("replication_conn_id")),
    "python": _check_python,
    "become": _boolean("become"),
    "drill": _boolean("drill"),
}
_TARGET_REQUIRED = ("name", "host", "port", "ssh_conn_id", "mysql_conn_id", "datadir", "flavor", "stop_command",
                    "start_command")


def _restore_targets(raw: Any, rows: list[_Row], valid: dict[str, Instance],
                     errors: list[CmdbError]) -> tuple[RestoreTarget, ...]:
    """The ``restore_targets`` list: each entry checked like a row (its errors name the target and the field
    ``restore_targets[N].<field>``); a target that is a CMDB instance is refused, naming the instance row."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(CmdbError(None, None, "restore_targets", f"expected a list of restore targets, got {_type(raw)}"))
        return ()
    by_addr = {(str(r.values["host"]).lower(), r.values["port"]): r for r in rows
               if "host" in r.values and "port" in r.values}
    row_names = {r.name: r for r in rows if r.name}
    archive_ids = {i.policy.binlog_archive.client_server_id: i.name for i in valid.values()
                   if i.policy.binlog_archive.client_server_id is not None}
    targets: dict[str, RestoreTarget] = {}
    server_ids: dict[int, str] = {}
    for n, item in enumerate(raw, start=1):
        where = f"restore_targets[{n}]"
        name = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else None
        problems: list[tuple[str | None, str]] = []

        def add(field_: str | None, message: str) -> None:
            problems.append((field_, message))

        values = _validate(item, _TARGET_SPEC, "", add) if isinstance(item, dict) else {}
        if not isinstance(item, dict):
            add(None, f"expected a mapping of fields, got {_type(item)} {_show(item)}")
        else:
            for key in _TARGET_REQUIRED:
                if key not in item:
                    add(key, "missing; this field is required")
        if name is not None and name in targets:
            add("name", f"duplicate restore target {name!r}; list each target once")
        elif name is not None and name in row_names:
            add("name", f"{name!r} is also the name of instance row {row_names[name].row}: a target is a host "
                        "that is no instance; give it another name")
        addr = (str(values["host"]).lower(), values["port"]) if "host" in values and "port" in values else None
        if addr in by_addr:
            r = by_addr[addr]
            add("host", f"restore target {name!r} is {values['host']}:{values['port']}, the CMDB instance "
                        f"{r.name!r} (row {r.row}, {r.values.get('role', 'instance')}): a restore would overwrite a "
                        "server in service. A target must be a host:port that no instance uses: fix the target, "
                        "or remove the instance row first")
        for inst in values.get("allowed_instances") or ():
            if inst not in row_names:
                add("allowed_instances", f"allowed_instances names {inst!r}, which is no instance row of this CMDB")
        sid = values.get("server_id")
        if sid is not None and sid in server_ids:
            add("server_id", f"server_id {sid} is also restore target {server_ids[sid]!r}'s: two restored servers "
                             "replicating from one primary need two server_ids")
        elif sid is not None and sid in archive_ids:
            add("server_id", f"server_id {sid} is the binlog archive's client_server_id of {archive_ids[sid]!r}: "
                             "give the target another one")
        errors.extend(CmdbError(None, name, f"{where}.{field_}" if field_ else where, message)
                      for field_, message in problems)
        if problems or name is None:
            continue
        if sid is not None:
            server_ids[sid] = name
        targets[name] = RestoreTarget(
            name=name, host=values["host"], port=values["port"], ssh_conn_id=values["ssh_conn_id"],
            mysql_conn_id=values["mysql_conn_id"], datadir=values["datadir"].rstrip("/"), flavor=values["flavor"],
            stop_command=values["stop_command"], start_command=values["start_command"], server_id=sid,
            allowed_instances=tuple(values["allowed_instances"]) if values.get("allowed_instances") else None,
            work_dir=values.get("work_dir"), replication_conn_id=values.get("replication_conn_id"),
            python=values.get("python", "python3"), become=values.get("become", False),
            drill=values.get("drill", False))
    return tuple(sorted(targets.values(), key=lambda t: t.name))


def _storages(raw: Any, report: Report) -> tuple[StorageHost, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report("storages", f"expected a list of storage hosts, got {_type(raw)}")
        return ()
    hosts: dict[str, StorageHost] = {}
    for n, item in enumerate(raw, start=1):
        where = f"storages[{n}]"
        values = _validate(item, _STORAGES_SPEC, where, report)
        if not isinstance(item, dict):
            continue
        conn = values.get("ssh_conn_id")
        if "ssh_conn_id" not in item:
            report(f"{where}.ssh_conn_id", "missing; every storage host needs its ssh_conn_id")
        elif conn in hosts:
            report(f"{where}.ssh_conn_id", f"duplicate storage {conn!r}; list each storage host once")
        elif conn is not None and len(values) == len(item):
            hosts[conn] = StorageHost(conn, values.get("max_concurrent_backups", DEFAULT_POOL_SLOTS))
    return tuple(sorted(hosts.values(), key=lambda s: s.ssh_conn_id))


def _check_row(n: int, raw: Any, base_policy: dict[str, Any], base_storage: dict[str, Any],
               base_alerts: dict[str, Any]) -> _Row:
    """Check every field of one row; the row keeps all of its errors."""
    name = raw.get("name") if isinstance(raw, dict) else None
    r = _Row(n, name if isinstance(name, str) else None)
    if not isinstance(raw, dict):
        r.add(None, f"expected a mapping of fields, got {_type(raw)} {_show(raw)}")
        return r
    v = r.values = _validate(raw, _ROW_SPEC, "", r.add)
    for key in _REQUIRED:
        if key not in raw:
            r.add(key, "missing; this field is required")
    role, replica_of = v.get("role"), raw.get("replica_of")
    if role == "replica" and replica_of is None:
        r.add("replica_of", "missing; a replica needs replica_of: <name of the row it replicates from>")
    elif role == "primary" and replica_of is not None:
        r.add("replica_of", "a primary must not have replica_of; set role: replica or remove replica_of")
    elif replica_of is not None and replica_of == name:
        r.add("replica_of", f"row {name!r} cannot be a replica of itself")
    if v.get("policy"):
        r.policy = _merge(base_policy, v["policy"])
    _check_archive_lease(r.policy or base_policy, r.add)
    _check_retention(r.policy or base_policy, r.add)
    r.storage = {**base_storage, **v.get("storage", {})}
    for key in _STORAGE_SPEC:
        if key not in r.storage and not r.has_error(f"storage.{key}", "storage"):
            r.add(f"storage.{key}", f"missing; set storage.{key} in this row or in defaults.storage")
    r.alerts = _merge(base_alerts, v.get("alerts", {}))
    return r


def _resolve(rows: list[_Row]) -> dict[int, bool]:
    """Apply name uniqueness and replica_of links; return row number -> valid."""
    first: dict[str, _Row] = {}
    for r in rows:
        if r.name is None or _check_name(r.name) is not None:
            continue
        winner = first.get(r.name)
        if winner is None:
            first[r.name] = r
            continue
        r.add("name", f"duplicate name {r.name!r}: row {winner.row} already uses it and keeps "
                      "its DAG; this row is ignored until it is renamed")
        winner.notes.append(CmdbError(winner.row, r.name, "name",
                                      f"name {r.name!r} is also used by row {r.row}, which is ignored"))

    valid: dict[int, bool] = {}
    for start in rows:
        path: list[_Row] = []
        on_path: set[int] = set()
        r = start
        while r.row not in valid:
            if r.errors:
                valid[r.row] = False
            elif r.values["role"] != "replica":
                valid[r.row] = True
            elif r.row in on_path:
                cycle = path[path.index(r):]
                chain = " -> ".join([c.name or "?" for c in cycle] + [r.name or "?"])
                for c in cycle:
                    c.add("replica_of", f"replica_of forms a cycle ({chain}); one of them must be a primary")
                    valid[c.row] = False
            elif r.values["replica_of"] not in first:
                r.add("replica_of", f"replica_of {r.values['replica_of']!r} names no row in this CMDB")
                valid[r.row] = False
            else:
                path.append(r)
                on_path.add(r.row)
                r = first[r.values["replica_of"]]
        for p in reversed(path):
            if p.row in valid:
                continue
            target = first[p.values["replica_of"]]
            if not valid[target.row]:
                p.add("replica_of", f"replica_of {target.name!r} names row {target.row}, which has "
                                    "errors; fix that row first")
            valid[p.row] = valid[target.row]
    return valid


def _instance(v: dict[str, Any], policy: Policy, storage: dict[str, Any],
              alerts: dict[str, Any]) -> Instance:
    owner: str = v["owner"]
    email, webhook = alerts["email"], alerts["webhook"]
    email_to = alerts.get("email_to")
    return Instance(
        name=v["name"], host=v["host"], port=v["port"], role=v["role"],
        replica_of=v.get("replica_of"), flavor=v["flavor"], ssh_conn_id=v["ssh_conn_id"],
        mysql_conn_id=v["mysql_conn_id"], owner=owner, app=v["app"],
        storage=StorageLocation(storage["ssh_conn_id"], storage["base_dir"].rstrip("/")),
        policy=policy,
        alerts=AlertConfig(
            email_to=tuple(email_to) if email_to is not None else ((owner,) if "@" in owner else ()),
            smtp_conn_id=email.get("smtp_conn_id"), email_from=email.get("from"),
            webhook_conn_id=webhook.get("conn_id"), webhook_url=webhook.get("url"),
        ),
        python=v.get("python", "python3"), become=v.get("become", False),
        tags=tuple(v.get("tags", ())),
    )
