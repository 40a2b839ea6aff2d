"""Pure backup decisions: which server to back up from, how much space it needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from mysqlbackup.cmdb import Instance

MIB = 1024 * 1024
HEADROOM = 1.2
# Rough size of a compressed backup relative to the data it holds. Real ratios vary
# widely (text-heavy tables compress far better than already compressed blobs); these
# only size the first backup, later ones use the history.
COMPRESS_FACTORS: dict[str, float] = {"none": 1.0, "gzip": 0.5, "zstd": 0.45}


class NoBackupSource(ValueError):
    """No server may be backed up: every candidate was rejected or the policy forbids the primary."""


@dataclass(frozen=True)
class SourceChoice:
    """The server to back up, why, and every candidate turned down (name, why)."""

    name: str
    ssh_conn_id: str
    host: str
    port: int
    is_primary: bool
    reason: str
    rejected: tuple[tuple[str, str], ...] = ()


def replica_problem(facts: Mapping[str, Any] | None, max_lag: int) -> str | None:
    """None when these facts show a healthy replica (threads running, lag known and
    within ``max_lag``), else why not, as a short phrase."""
    if not facts:
        return "no facts collected"
    if not facts.get("reachable"):
        return f"unreachable ({facts.get('error') or 'no error given'})"
    status = facts.get("replica")
    if not status:
        return "not replicating (no replica status)"
    problems = []
    if not status.get("io_running"):
        problems.append("IO thread stopped")
    if not status.get("sql_running"):
        problems.append("SQL thread stopped")
    lag = status.get("seconds_behind")
    if not problems:
        if not isinstance(lag, int) or isinstance(lag, bool):
            problems.append("lag unknown (Seconds_Behind_Master is NULL)")
        elif lag > max_lag:
            problems.append(f"{lag} s behind, over policy.max_replica_lag_seconds={max_lag}")
    if not problems:
        return None
    last_error = status.get("last_error")
    return ", ".join(problems) + (f" ({last_error})" if last_error else "")


def choose_source(instance: Instance, replicas: list[Instance],
                  facts: Mapping[str, Mapping[str, Any]], prefer: str | None = None) -> SourceChoice:
    """Pick the server to back up ``instance`` from.

    The healthy replica with the lowest lag wins (ties by name); ``prefer`` (the source of the
    chain an incremental would build on) wins over it when it is healthy too. With none healthy, a
    primary is used only where ``instance.policy.allow_primary`` permits; a replica
    instance falls back to itself when healthy, never to another server. Raises
    ``NoBackupSource`` naming every candidate and why it was rejected.
    """
    max_lag = instance.policy.max_replica_lag_seconds
    rejected: list[tuple[str, str]] = []
    healthy: list[tuple[int, str, Instance]] = []
    for replica in sorted(replicas, key=lambda r: r.name):
        problem = replica_problem(facts.get(replica.name), max_lag)
        if problem is None:
            healthy.append((facts[replica.name]["replica"]["seconds_behind"], replica.name, replica))
        else:
            rejected.append((replica.name, problem))
    rejections = "".join(f"; {name} rejected: {why}" for name, why in rejected)

    if healthy:
        healthy.sort(key=lambda h: (h[1] != prefer, h[0], h[1]))
        lag, _, best = healthy[0]
        if best.name == prefer:
            others = "".join(f"; {n} also healthy, {lg} s behind" for lg, n, _ in healthy[1:])
            return _choice(best, False, f"replica {best.name} chosen: the source of the chain to build on, "
                           f"healthy, {lag} s behind{others}{rejections}", rejected)
        others = "".join(f"; {n} also healthy, {lg} s behind" for lg, n, _ in healthy[1:])
        return _choice(best, False, f"replica {best.name} chosen: healthy, {lag} s behind"
                       f"{others}{rejections}", rejected)

    if instance.is_replica:
        problem = replica_problem(facts.get(instance.name), max_lag)
        if problem is None:
            lag = facts[instance.name]["replica"]["seconds_behind"]
            return _choice(instance, False, f"replica {instance.name} (this instance) chosen: "
                           f"healthy, {lag} s behind{rejections}", rejected)
        rejected.append((instance.name, problem))
        raise NoBackupSource(
            f"no backup source for replica {instance.name}: {_listing(rejected)}; a replica is "
            "backed up only from itself or its own replicas, so fix replication first")

    policy = instance.policy.allow_primary
    if policy == "when_replicas_unhealthy" or (policy == "when_no_replica" and not replicas):
        why = ("no healthy replica" if replicas else "no replica in the CMDB")
        own = facts.get(instance.name) or {}
        if not own.get("reachable"):
            rejected.append((instance.name, f"unreachable ({own.get('error') or 'no facts collected'})"))
            raise NoBackupSource(f"no backup source for {instance.name}: {_listing(rejected)}")
        return _choice(instance, True, f"primary {instance.name} chosen: {why} and "
                       f"policy.allow_primary is {policy}{rejections}", rejected)

    if policy == "never":
        hint = ("set policy.allow_primary: when_replicas_unhealthy" if replicas
                else "set policy.allow_primary: when_no_replica (or when_replicas_unhealthy)")
    else:
        hint = "set policy.allow_primary: when_replicas_unhealthy"
    found = _listing(rejected) if rejected else "it has no replica in the CMDB"
    raise NoBackupSource(
        f"no backup source for {instance.name}: {found}; policy.allow_primary is {policy}, "
        f"so the primary is not used; {hint} to back up the primary instead")


def _listing(rejected: list[tuple[str, str]]) -> str:
    return "; ".join(f"{name} rejected: {why}" for name, why in rejected)


def _choice(inst: Instance, is_primary: bool, reason: str,
            rejected: list[tuple[str, str]]) -> SourceChoice:
    return SourceChoice(inst.name, inst.ssh_conn_id, inst.host, inst.port, is_primary,
                        reason, tuple(rejected))


def estimate_backup_bytes(history_sizes: list[int], data_bytes: int | None, compress: str) -> int:
    """Bytes to expect for the next full backup, with 20 % headroom.

    ``history_sizes`` are past full backup sizes, oldest first: the largest of the last
    three wins. Without history, ``data_bytes`` times the rough ``COMPRESS_FACTORS``
    ratio; with neither, 0 (nothing to go on).
    """
    if compress not in COMPRESS_FACTORS:
        raise ValueError(f"unknown compress {compress!r}; expected one of: {', '.join(COMPRESS_FACTORS)}")
    if history_sizes:
        return math.ceil(max(history_sizes[-3:]) * HEADROOM)
    if data_bytes:
        return math.ceil(data_bytes * COMPRESS_FACTORS[compress] * HEADROOM)
    return 0


def reserve_target_bytes(fs_total_bytes: int, percent: float) -> int:
    """Size of the reserve file: ``percent`` of the filesystem, rounded up to 1 MiB."""
    if fs_total_bytes < 0 or percent < 0:
        raise ValueError(f"expected sizes >= 0, got fs_total_bytes={fs_total_bytes}, percent={percent}")
    return math.ceil(fs_total_bytes * percent / 100 / MIB) * MIB


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units: ``512 B``, ``12.3 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def space_check(host: str, free_bytes: int, need_bytes: int, what: str) -> str | None:
    """None if ``need_bytes`` fits in ``free_bytes``, else a message naming host, free and need."""
    if free_bytes >= need_bytes:
        return None
    return (f"{host}: not enough free space for {what}: {human_bytes(free_bytes)} free, "
            f"{human_bytes(need_bytes)} needed ({human_bytes(need_bytes - free_bytes)} short)")
