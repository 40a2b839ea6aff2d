from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mysqlbackup.cmdb import AlertConfig, Instance, Policy, StorageLocation
from mysqlbackup.planner import (
    MIB,
    NoBackupSource,
    SourceChoice,
    choose_source,
    estimate_backup_bytes,
    human_bytes,
    replica_problem,
    reserve_target_bytes,
    space_check,
)

GIB = 1024 ** 3


def inst(name: str, role: str = "replica", replica_of: str | None = "shop", **policy: Any) -> Instance:
    return Instance(
        name=name, host=f"{name}.db", port=3306, role=role,  # type: ignore[arg-type]
        replica_of=None if role == "primary" else replica_of, flavor="mariadb",
        ssh_conn_id=f"ssh_{name}", mysql_conn_id="mysql_backup", owner="dba@example.com", app="shop",
        storage=StorageLocation("backup_storage", "/srv/mysql-backups"),
        policy=Policy(**policy), alerts=AlertConfig(),
    )


def primary(**policy: Any) -> Instance:
    return inst("shop", role="primary", **policy)


def rep(lag: int | None = 0, io: bool = True, sql: bool = True, err: str = "") -> dict[str, Any]:
    return {"reachable": True, "read_only": True, "version": "10.11.6-MariaDB",
            "replica": {"io_running": io, "sql_running": sql, "seconds_behind": lag, "last_error": err}}


UP = {"reachable": True, "read_only": False, "replica": None, "version": "10.11.6-MariaDB"}
DOWN = {"reachable": False, "error": "Can't connect to server on 'shop.db' (111)"}
R1, R2, R3 = inst("shop_r1"), inst("shop_r2"), inst("shop_r3")


@pytest.mark.parametrize(
    ("facts", "max_lag", "expected"),
    [
        (rep(0), 300, None),
        (rep(300), 300, None),
        (rep(301), 300, "301 s behind, over policy.max_replica_lag_seconds=300"),
        (rep(None), 300, "lag unknown (Seconds_Behind_Master is NULL)"),
        (rep(0, sql=False, err="Error 1062 Duplicate entry"), 300, "SQL thread stopped (Error 1062 Duplicate entry)"),
        (rep(None, io=False, sql=False), 300, "IO thread stopped, SQL thread stopped"),
        (rep(0, io=False, err="Error connecting to source"), 300, "IO thread stopped (Error connecting to source)"),
        (DOWN, 300, "unreachable (Can't connect to server on 'shop.db' (111))"),
        ({"reachable": False}, 300, "unreachable (no error given)"),
        (UP, 300, "not replicating (no replica status)"),
        (None, 300, "no facts collected"),
        ({}, 300, "no facts collected"),
    ],
)
def test_replica_problem(facts: dict | None, max_lag: int, expected: str | None) -> None:
    assert replica_problem(facts, max_lag) == expected


def test_lowest_lag_wins_and_reason_names_everyone() -> None:
    facts = {"shop": UP, "shop_r1": rep(0), "shop_r2": rep(0, sql=False, err="Error 1062 ..."),
             "shop_r3": rep(12)}
    choice = choose_source(primary(), [R3, R2, R1], facts)
    assert choice == SourceChoice(
        name="shop_r1", ssh_conn_id="ssh_shop_r1", host="shop_r1.db", port=3306, is_primary=False,
        reason="replica shop_r1 chosen: healthy, 0 s behind; shop_r3 also healthy, 12 s behind; "
               "shop_r2 rejected: SQL thread stopped (Error 1062 ...)",
        rejected=(("shop_r2", "SQL thread stopped (Error 1062 ...)"),),
    )


def test_ties_break_by_name() -> None:
    facts = {"shop": UP, "shop_r1": rep(5), "shop_r2": rep(5), "shop_r3": rep(5)}
    assert choose_source(primary(), [R3, R2, R1], facts).name == "shop_r1"


def test_lag_limit_comes_from_the_instance_policy() -> None:
    facts = {"shop": UP, "shop_r1": rep(100), "shop_r2": rep(20)}
    choice = choose_source(primary(max_replica_lag_seconds=50), [R1, R2], facts)
    assert choice.name == "shop_r2"
    assert choice.rejected == (("shop_r1", "100 s behind, over policy.max_replica_lag_seconds=50"),)


# allow_primary, replicas, replica facts -> chosen name, or None for NoBackupSource
@pytest.mark.parametrize(
    ("allow", "replicas", "replica_facts", "expected"),
    [
        ("when_no_replica", [], {}, "shop"),
        ("when_no_replica", [R1], {"shop_r1": rep(0)}, "shop_r1"),
        ("when_no_replica", [R1], {"shop_r1": rep(900)}, None),
        ("when_no_replica", [R1], {}, None),
        ("when_replicas_unhealthy", [], {}, "shop"),
        ("when_replicas_unhealthy", [R1], {"shop_r1": rep(0)}, "shop_r1"),
        ("when_replicas_unhealthy", [R1], {"shop_r1": DOWN}, "shop"),
        ("never", [], {}, None),
        ("never", [R1], {"shop_r1": rep(0)}, "shop_r1"),
        ("never", [R1], {"shop_r1": rep(0, sql=False)}, None),
    ],
)
def test_allow_primary_policy(allow: str, replicas: list[Instance], replica_facts: dict,
                              expected: str | None) -> None:
    facts = {"shop": UP, **replica_facts}
    if expected is None:
        with pytest.raises(NoBackupSource):
            choose_source(primary(allow_primary=allow), replicas, facts)
    else:
        choice = choose_source(primary(allow_primary=allow), replicas, facts)
        assert choice.name == expected
        assert choice.is_primary == (expected == "shop")


def test_primary_reason() -> None:
    choice = choose_source(primary(allow_primary="when_replicas_unhealthy"), [R1],
                           {"shop": UP, "shop_r1": rep(None, io=False)})
    assert choice.is_primary
    assert choice.reason == ("primary shop chosen: no healthy replica and policy.allow_primary is "
                             "when_replicas_unhealthy; shop_r1 rejected: IO thread stopped")
    assert choose_source(primary(), [], {"shop": UP}).reason == (
        "primary shop chosen: no replica in the CMDB and policy.allow_primary is when_no_replica")


def test_unreachable_primary_is_no_source() -> None:
    with pytest.raises(NoBackupSource, match=r"shop rejected: unreachable \(Can't connect"):
        choose_source(primary(), [], {"shop": DOWN})
    with pytest.raises(NoBackupSource, match="shop rejected: unreachable .no facts collected"):
        choose_source(primary(), [], {})


def test_no_source_message_names_every_replica_and_the_setting() -> None:
    facts = {"shop": UP, "shop_r1": rep(0, sql=False, err="Error 1062"), "shop_r2": DOWN}
    with pytest.raises(NoBackupSource) as exc:
        choose_source(primary(allow_primary="never"), [R1, R2], facts)
    message = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert "shop_r1 rejected: SQL thread stopped (Error 1062)" in message
    assert "shop_r2 rejected: unreachable" in message
    assert "policy.allow_primary is never" in message
    assert "set policy.allow_primary: when_replicas_unhealthy" in message


def test_when_no_replica_with_unhealthy_replicas_suggests_the_setting() -> None:
    with pytest.raises(NoBackupSource, match="set policy.allow_primary: when_replicas_unhealthy"):
        choose_source(primary(), [R1], {"shop": UP, "shop_r1": rep(None)})


def test_never_without_replicas() -> None:
    with pytest.raises(NoBackupSource, match="has no replica in the CMDB.*when_no_replica"):
        choose_source(primary(allow_primary="never"), [], {"shop": UP})


class TestReplicaInstance:
    me = inst("shop_r1")
    child = inst("shop_r1a", replica_of="shop_r1")

    def test_itself_when_healthy(self) -> None:
        choice = choose_source(self.me, [], {"shop_r1": rep(4)})
        assert (choice.name, choice.is_primary) == ("shop_r1", False)
        assert choice.reason == "replica shop_r1 (this instance) chosen: healthy, 4 s behind"

    def test_own_replicas_preferred(self) -> None:
        choice = choose_source(self.me, [self.child], {"shop_r1": rep(0), "shop_r1a": rep(3)})
        assert choice.name == "shop_r1a"

    def test_itself_when_own_replicas_unhealthy(self) -> None:
        choice = choose_source(self.me, [self.child], {"shop_r1": rep(0), "shop_r1a": DOWN})
        assert choice.name == "shop_r1"
        assert choice.rejected == (("shop_r1a", f"unreachable ({DOWN['error']})"),)

    @pytest.mark.parametrize("allow", ["never", "when_no_replica", "when_replicas_unhealthy"])
    def test_unhealthy_replica_never_falls_back(self, allow: str) -> None:
        me = replace(self.me, policy=Policy(allow_primary=allow))  # type: ignore[arg-type]
        with pytest.raises(NoBackupSource, match="shop_r1 rejected: SQL thread stopped"):
            choose_source(me, [], {"shop_r1": rep(0, sql=False)})


@pytest.mark.parametrize(
    ("history", "data", "compress", "expected"),
    [
        ([100, 200, 300, 50], None, "zstd", 360),  # max of the last three * 1.2
        ([1000, 10, 20, 30], 10**9, "none", 36),  # history wins over the data size
        ([7], None, "gzip", 9),  # rounded up
        ([], 1000, "none", 1200),
        ([], 1000, "gzip", 600),
        ([], 1000, "zstd", 540),
        ([], None, "zstd", 0),
        ([], 0, "zstd", 0),
    ],
)
def test_estimate_backup_bytes(history: list[int], data: int | None, compress: str, expected: int) -> None:
    assert estimate_backup_bytes(history, data, compress) == expected


def test_estimate_rejects_unknown_compression() -> None:
    with pytest.raises(ValueError, match="unknown compress 'lz4'; expected one of: none, gzip, zstd"):
        estimate_backup_bytes([], 1, "lz4")


@pytest.mark.parametrize(
    ("total", "percent", "expected"),
    [
        (100 * GIB, 1.5, 1536 * MIB),
        (100 * GIB, 1.0, 1024 * MIB),
        (1000, 1.5, MIB),
        (0, 1.5, 0),
        (3 * 10**12, 2, 57221 * MIB),
    ],
)
def test_reserve_target_bytes(total: int, percent: float, expected: int) -> None:
    got = reserve_target_bytes(total, percent)
    assert got == expected
    assert got % MIB == 0 and got >= total * percent / 100


def test_reserve_target_rejects_negative() -> None:
    with pytest.raises(ValueError):
        reserve_target_bytes(-1, 1.5)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536 * MIB, "1.5 GiB"),
     (int(12.3 * GIB), "12.3 GiB"), (5 * 1024 * GIB, "5.0 TiB"), (3 * 1024 ** 6, "3072.0 PiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_space_check() -> None:
    assert space_check("store1", 10 * GIB, 10 * GIB, "the backup of shop") is None
    assert space_check("store1", 10 * GIB, 1, "x") is None
    assert space_check("store1", int(12.3 * GIB), 20 * GIB, "the backup of shop") == (
        "store1: not enough free space for the backup of shop: 12.3 GiB free, 20.0 GiB needed "
        "(7.7 GiB short)")
