"""The backup manifest: the sentinel written last, as ``<base_dir>/<instance>/<label>/manifest.json``.

A backup without a manifest does not exist. A manifest is only ever written for a backup that
was received, checksummed, extracted and prepared successfully, so its ``status`` is always
``usable`` and its ``verify`` block always says ``ok`` / prepared.
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"

KINDS = ("full", "incremental")
FLAVORS = ("mariadb", "mysql")
COMPRESS = ("none", "gzip", "zstd")
STATUSES = ("usable",)
VERIFY_STATUSES = ("ok", "failed")

_INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_LABEL_RE = re.compile(r"^\d{8}-\d{6}F(?:_\d{8}-\d{6}I)?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMPRESS_SUFFIX = {"gzip": ".gz", "zstd": ".zst"}


class ManifestError(ValueError):
    """A manifest that is missing a field, has an invalid one, or has an unknown version."""


@dataclass(frozen=True)
class Manifest:
    """One usable backup, as recorded on storage (field meanings: docs/design.md)."""

    version: int
    instance: str
    label: str
    kind: str
    flavor: str
    source_name: str
    source_host: str
    source_port: int
    source_is_primary: bool
    started_at: str
    finished_at: str
    duration_seconds: float
    size_bytes: int
    artifact: str
    compress: str
    sha256: str
    storage_ssh_conn_id: str
    storage_path: str
    binlog_file: str | None
    binlog_pos: int | None
    gtid: str | None
    from_lsn: int | None
    to_lsn: int | None
    last_lsn: int | None
    server_version: str
    verify: dict[str, Any]
    tool: str
    status: str = "usable"
    # taken from a replica: the source's coordinates at the backup point (xtrabackup_slave_info):
    # {"gtid": ..., "file": ..., "pos": ..., "text": ...}; binlog_file/binlog_pos above are the replica's own
    replica_source: dict[str, Any] | None = None
    # the chain: a full is its own chain with no parent; an incremental names the backup it was
    # taken on (its from_lsn is that parent's to_lsn) and the full its chain starts with
    parent: str | None = None
    chain: str | None = None
    source_server_id: int | None = None  # the source's server_id when it was backed up


# manifests written before a field existed stay readable
OPTIONAL_FIELDS = frozenset({"replica_source", "parent", "chain", "source_server_id"})
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Manifest))

# Field -> (accepted types, nullable). bool is excluded from int checks explicitly.
_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "version": (_INT, False),
    "instance": (_STR, False),
    "label": (_STR, False),
    "kind": (_STR, False),
    "flavor": (_STR, False),
    "source_name": (_STR, False),
    "source_host": (_STR, False),
    "source_port": (_INT, False),
    "source_is_primary": ((bool,), False),
    "started_at": (_STR, False),
    "finished_at": (_STR, False),
    "duration_seconds": (_NUM, False),
    "size_bytes": (_INT, False),
    "artifact": (_STR, False),
    "compress": (_STR, False),
    "sha256": (_STR, False),
    "storage_ssh_conn_id": (_STR, False),
    "storage_path": (_STR, False),
    "binlog_file": (_STR, True),
    "binlog_pos": (_INT, True),
    "gtid": (_STR, True),
    "from_lsn": (_INT, True),
    "to_lsn": (_INT, True),
    "last_lsn": (_INT, True),
    "server_version": (_STR, False),
    "verify": ((dict,), False),
    "tool": (_STR, False),
    "status": (_STR, False),
    "replica_source": ((dict,), True),
    "parent": (_STR, True),
    "chain": (_STR, True),
    "source_server_id": (_INT, True),
}

_VERIFY_SCHEMA: dict[str, tuple[type, ...]] = {
    "status": _STR,
    "prepared": (bool,),
    "files": _INT,
    "checksums_file": _STR,
    "seconds": _NUM,
    "message": _STR,
}


def parse_utc(value: str) -> datetime:
    """Parse an ISO-8601 UTC timestamp (``...Z`` or ``...+00:00``) into an aware datetime."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() != timedelta(0):
        raise ValueError(f"timestamp is not UTC (needs 'Z' or '+00:00'): {value!r}")
    return parsed.astimezone(timezone.utc)


def format_utc(value: datetime) -> str:
    """Format a datetime as ISO-8601 UTC with a 'Z' (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    spec = "microseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def manifest_path(base_dir: str, instance: str, label: str) -> str:
    """Where a backup's manifest lives on storage: ``<base_dir>/<instance>/<label>/manifest.json``."""
    return posixpath.join(base_dir, instance, label, MANIFEST_NAME)


def _check_label(label: str) -> None:
    """Check a label with ``mysqlbackup.labels.parse_label``, or the bare format if it is absent."""
    try:
        from mysqlbackup.labels import parse_label
    except ImportError:
        parse_label = None
    if parse_label is not None:
        try:
            parse_label(label)
        except ValueError as exc:
            raise ManifestError(f"label: {exc}") from None
        return
    if not _LABEL_RE.match(label):
        raise ManifestError(f"label: invalid backup label {label!r} (expected YYYYMMDD-HHMMSSF)")
    try:
        datetime.strptime(label[:-1], "%Y%m%d-%H%M%S")
    except ValueError:
        raise ManifestError(f"label: invalid backup label {label!r} (not a real date/time)") from None


def _check_type(name: str, value: Any, types: tuple[type, ...], nullable: bool) -> None:
    """Raise ManifestError unless value has one of types (bool never counts as a number)."""
    if value is None:
        if nullable:
            return
        raise ManifestError(f"{name}: must not be null")
    if isinstance(value, bool) and bool not in types:
        raise ManifestError(f"{name}: expected {_type_names(types)}, got a boolean")
    if not isinstance(value, types):
        raise ManifestError(f"{name}: expected {_type_names(types)}, got {type(value).__name__}")


def _type_names(types: tuple[type, ...]) -> str:
    """Human names of types for messages."""
    return " or ".join({"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                        "dict": "object"}.get(t.__name__, t.__name__) for t in types)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ManifestError unless value is one of choices."""
    if value not in choices:
        raise ManifestError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def validate(m: Manifest) -> None:
    """Check every field of a manifest; raise ManifestError naming the first bad field."""
    if not isinstance(m, Manifest):
        raise ManifestError(f"not a Manifest: {type(m).__name__}")
    for name, (types, nullable) in _SCHEMA.items():
        _check_type(name, getattr(m, name), types, nullable)
    if m.version != MANIFEST_VERSION:
        raise ManifestError(f"version: unknown manifest version {m.version} (this code reads {MANIFEST_VERSION})")
    if not _INSTANCE_RE.match(m.instance):
        raise ManifestError(f"instance: invalid instance name {m.instance!r}")
    _check_label(m.label)
    _check_choice("kind", m.kind, KINDS)
    if m.kind == "full" and not m.label.endswith("F"):
        raise ManifestError(f"label: {m.label!r} is not a full backup label (must end with F)")
    if m.kind == "full" and (m.parent is not None or m.chain not in (None, m.label)):
        raise ManifestError(f"parent/chain: a full backup has no parent and is its own chain "
                            f"(parent={m.parent!r}, chain={m.chain!r})")
    if m.kind == "incremental":
        if not m.label.endswith("I"):
            raise ManifestError(f"label: {m.label!r} is not an incremental backup label (must end with I)")
        if not m.parent or not m.chain:
            raise ManifestError("parent/chain: an incremental backup names its parent and its chain's full")
        _check_label(m.parent)
        if m.chain != m.label.split("_", 1)[0]:
            raise ManifestError(f"chain: {m.chain!r} is not the full {m.label!r} is labelled with")
        if m.parent >= m.label or not (m.parent == m.chain or m.parent.startswith(m.chain + "_")):
            raise ManifestError(f"parent: {m.parent!r} is not an earlier link of the chain {m.chain!r}")
        if m.from_lsn is None or m.to_lsn is None:
            raise ManifestError("from_lsn/to_lsn: an incremental backup records both")
    _check_choice("flavor", m.flavor, FLAVORS)
    _check_choice("compress", m.compress, COMPRESS)
    for name in ("source_name", "source_host", "storage_ssh_conn_id", "server_version", "tool"):
        if not getattr(m, name).strip():
            raise ManifestError(f"{name}: must not be empty")
    if not 1 <= m.source_port <= 65535:
        raise ManifestError(f"source_port: {m.source_port} is not a TCP port")
    try:
        started = parse_utc(m.started_at)
        finished = parse_utc(m.finished_at)
    except ValueError as exc:
        raise ManifestError(f"started_at/finished_at: {exc}") from None
    if finished < started:
        raise ManifestError(f"finished_at: {m.finished_at} is before started_at {m.started_at}")
    if not math.isfinite(m.duration_seconds) or m.duration_seconds < 0:
        raise ManifestError(f"duration_seconds: {m.duration_seconds} is not a finite, non-negative number")
    if m.size_bytes < 0:
        raise ManifestError(f"size_bytes: {m.size_bytes} is negative")
    if not _SHA256_RE.match(m.sha256):
        raise ManifestError("sha256: expected 64 lowercase hex digits")
    if not m.artifact or "/" in m.artifact or m.artifact in (".", "..", MANIFEST_NAME):
        raise ManifestError(f"artifact: {m.artifact!r} is not a plain file name")
    suffix = _COMPRESS_SUFFIX.get(m.compress)
    if suffix and not m.artifact.endswith(suffix):
        raise ManifestError(f"artifact: {m.artifact!r} does not end with {suffix} (compress={m.compress})")
    if m.compress == "none" and m.artifact.endswith(tuple(_COMPRESS_SUFFIX.values())):
        raise ManifestError(f"artifact: {m.artifact!r} looks compressed but compress=none")
    path = posixpath.normpath(m.storage_path) if m.storage_path else ""
    if not path.startswith("/") or path.split("/")[-2:] != [m.instance, m.label]:
        raise ManifestError(
            f"storage_path: {m.storage_path!r} is not an absolute <base_dir>/{m.instance}/{m.label} directory")
    for name in ("binlog_pos", "from_lsn", "to_lsn", "last_lsn"):
        value = getattr(m, name)
        if value is not None and value < 0:
            raise ManifestError(f"{name}: {value} is negative")
    for key, types in _VERIFY_SCHEMA.items():
        if key not in m.verify:
            raise ManifestError(f"verify.{key}: missing")
        _check_type(f"verify.{key}", m.verify[key], types, False)
    _check_choice("verify.status", m.verify["status"], VERIFY_STATUSES)
    if not math.isfinite(m.verify["seconds"]) or m.verify["seconds"] < 0:
        raise ManifestError(f"verify.seconds: {m.verify['seconds']} is not a finite, non-negative number")
    if m.verify["files"] < 0:
        raise ManifestError(f"verify.files: {m.verify['files']} is negative")
    if m.verify["status"] != "ok" or m.verify["prepared"] is not True:
        raise ManifestError("a manifest is only written for a verified backup "
                            f"(verify.status={m.verify['status']!r}, verify.prepared={m.verify['prepared']!r})")
    _check_choice("status", m.status, STATUSES)


def to_dict(m: Manifest) -> dict[str, Any]:
    """The manifest as a plain JSON-ready dict (verify is copied)."""
    data = {name: getattr(m, name) for name in FIELDS}
    data["verify"] = dict(m.verify)
    return data


def from_dict(data: Mapping[str, Any]) -> Manifest:
    """Build and validate a Manifest from a dict; unknown extra keys are ignored."""
    if not isinstance(data, Mapping):
        raise ManifestError(f"manifest must be a JSON object, got {type(data).__name__}")
    if "version" not in data:
        raise ManifestError("version: missing")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != MANIFEST_VERSION:
        raise ManifestError(f"version: unknown manifest version {version!r} (this code reads {MANIFEST_VERSION})")
    missing = [name for name in FIELDS if name not in data and name not in OPTIONAL_FIELDS]
    if missing:
        raise ManifestError(f"missing field(s): {', '.join(missing)}")
    m = Manifest(**{name: data[name] for name in FIELDS if name in data})
    validate(m)
    return m


def to_json(m: Manifest) -> str:
    """Serialise a manifest (validated first): sorted keys, indent 2, trailing newline."""
    validate(m)
    return json.dumps(to_dict(m), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def from_json(text: str | bytes) -> Manifest:
    """Parse and validate a manifest; raise ManifestError on bad JSON, fields or version."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    return from_dict(data)
