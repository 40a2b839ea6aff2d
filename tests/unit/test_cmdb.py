from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mysqlbackup.cmdb import (
    AlertConfig,
    Cmdb,
    CmdbError,
    CmdbInvalid,
    Instance,
    Policy,
    ReservePolicy,
    StorageHost,
    StorageLocation,
    _cron_error,
    cmdb_path,
    load_cmdb,
    parse_cmdb,
    pool_name,
)

DEFAULTS: dict[str, Any] = {
    "storage": {"ssh_conn_id": "backup_storage", "base_dir": "/srv/mysql-backups"},
    "alerts": {"email": {"smtp_conn_id": "smtp_default", "from": "backup@localhost"}},
}
DROP = object()


def row(name_: str = "shop_main", /, **over: Any) -> dict[str, Any]:
    """A valid primary row named ``name_``; ``field=value`` changes a field, ``field=DROP`` removes it."""
    name = name_
    r: dict[str, Any] = {
        "name": name, "host": "10.0.0.5", "port": 3306, "role": "primary", "flavor": "mariadb",
        "ssh_conn_id": f"ssh_{name}", "mysql_conn_id": "mysql_backup", "owner": "dba-team@example.com",
        "app": "shop",
    }
    for key, value in over.items():
        if value is DROP:
            r.pop(key, None)
        else:
            r[key] = value
    return r


def replica(name: str, of: str, **over: Any) -> dict[str, Any]:
    return row(name, role="replica", replica_of=of, **over)


def write(tmp_path: Path, instances: list[Any], **top: Any) -> Path:
    doc = {"defaults": DEFAULTS, **top, "instances": instances}
    path = tmp_path / "instances.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def load(tmp_path: Path, instances: list[Any], **top: Any) -> Cmdb:
    return load_cmdb(write(tmp_path, instances, **top))


def names(cmdb: Cmdb) -> list[str]:
    return [i.name for i in cmdb.instances]


def fields(cmdb: Cmdb, row_no: int | None) -> list[str | None]:
    return [e.field for e in cmdb.errors if e.row == row_no]


# ---------------------------------------------------------------- the happy path

DESIGN_EXAMPLE = """
defaults:
  storage: {ssh_conn_id: backup_storage, base_dir: /srv/mysql-backups}
  policy:
    full_schedule: "0 2 * * *"   # cron, or null for manual only
    retention_days: 7
    compress: zstd                # none | gzip | zstd
    parallel: 2
    allow_primary: when_no_replica   # never | when_no_replica | when_replicas_unhealthy
    max_replica_lag_seconds: 300
    reserve: {percent: 1.5, path: null}   # path null: beside the datadir
  alerts: {email: {smtp_conn_id: smtp_default, from: backup@localhost}, webhook: {conn_id: null, url: null}}
storages:
  - {ssh_conn_id: backup_storage, max_concurrent_backups: 4}
instances:
  - name: shop_main           # [A-Za-z0-9][A-Za-z0-9_-]{0,63}
    host: 10.0.0.5
    port: 3306
    role: primary             # primary | replica
    flavor: mariadb           # mariadb | mysql
    ssh_conn_id: ssh_shop_main
    mysql_conn_id: mysql_backup_shop
    owner: dba-team@example.com
    app: shop
    backup: {enabled: true}   # default: true for primaries, false for replicas whose primary is listed
    policy: {parallel: 4}     # merged over defaults.policy
    storage: {base_dir: /srv/shop-backups}   # merged over defaults.storage
  - name: shop_replica1
    host: 10.0.0.6
    port: 3306
    role: replica
    replica_of: shop_main
    flavor: mariadb
    ssh_conn_id: ssh_shop_replica1
    mysql_conn_id: mysql_backup_shop
    owner: dba-team@example.com
    app: shop
"""


def test_design_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "instances.yaml"
    path.write_text(DESIGN_EXAMPLE)
    cmdb = load_cmdb(path)
    assert cmdb.errors == ()
    assert cmdb.source == str(path)
    main = cmdb.by_name("shop_main")
    assert main == Instance(
        name="shop_main", host="10.0.0.5", port=3306, role="primary", replica_of=None, flavor="mariadb",
        ssh_conn_id="ssh_shop_main", mysql_conn_id="mysql_backup_shop", owner="dba-team@example.com",
        app="shop", storage=StorageLocation("backup_storage", "/srv/shop-backups"),
        policy=Policy("0 2 * * *", 7, "zstd", 4, "when_no_replica", 300, ReservePolicy(1.5, None), True),
        alerts=AlertConfig(("dba-team@example.com",), "smtp_default", "backup@localhost", None, None),
    )
    assert main.dag_id == "mysql_backup__shop_main"
    rep = cmdb.by_name("shop_replica1")
    assert rep is not None and rep.is_replica and rep.policy.backup_enabled is False
    assert rep.policy.parallel == 2
    assert cmdb.replicas_of("shop_main") == [rep]
    assert cmdb.storages == (StorageHost("backup_storage", 4),)
    assert cmdb.pools() == {"mysql_backup_storage__backup_storage": 4}


def test_instances_sorted_by_name(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("zeta"), row("Alpha"), row("beta"), row("alpha")])
    assert names(cmdb) == ["Alpha", "alpha", "beta", "zeta"]


def test_builtin_defaults_without_defaults_section(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row(storage={"ssh_conn_id": "st", "base_dir": "/b/"})], defaults=None)
    assert cmdb.errors == ()
    (inst,) = cmdb.instances
    assert inst.policy == Policy()
    assert inst.storage == StorageLocation("st", "/b")
    assert inst.alerts == AlertConfig(email_to=("dba-team@example.com",))
    assert (inst.python, inst.become, inst.tags) == ("python3", False, ())


def test_optional_row_fields(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row(python="/opt/py/bin/python3.9", become=True, tags=["tier1", "eu"])])
    (inst,) = cmdb.instances
    assert (inst.python, inst.become, inst.tags) == ("/opt/py/bin/python3.9", True, ("tier1", "eu"))


# ---------------------------------------------------------------- one bad row among good ones

BAD_ROWS: list[tuple[str, dict[str, Any], str | None, str]] = [
    # (case, changes to a valid primary row "bad", field named, text in the message)
    *[(f"missing-{f}", {f: DROP}, f, "missing; this field is required")
      for f in ("name", "host", "port", "role", "flavor", "ssh_conn_id", "mysql_conn_id", "owner", "app")],
    ("name-space", {"name": "bad name"}, "name", "must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"),
    ("name-leading-dash", {"name": "-bad"}, "name", "must match"),
    ("name-dot", {"name": "bad.name"}, "name", "must match"),
    ("name-too-long", {"name": "b" * 65}, "name", "must match"),
    ("name-int", {"name": 123}, "name", "invalid name 123"),
    ("name-empty", {"name": ""}, "name", "must match"),
    ("port-string", {"port": "3306"}, "port", "invalid port '3306': expected an integer 1..65535"),
    ("port-zero", {"port": 0}, "port", "expected an integer 1..65535"),
    ("port-high", {"port": 65536}, "port", "expected an integer 1..65535"),
    ("port-bool", {"port": True}, "port", "invalid port True"),
    ("port-float", {"port": 3306.0}, "port", "expected an integer"),
    ("role", {"role": "master"}, "role", "unknown role 'master'; expected one of: primary, replica"),
    ("flavor", {"flavor": "postgres"}, "flavor", "unknown flavor 'postgres'; expected one of: mariadb, mysql"),
    ("flavor-case", {"flavor": "MariaDB"}, "flavor", "unknown flavor 'MariaDB'"),
    ("host-space", {"host": "db 1"}, "host", "expected a hostname, IPv4 or IPv6 address"),
    ("host-semicolon", {"host": "db1;reboot"}, "host", "invalid host"),
    ("host-subshell", {"host": "$(id)"}, "host", "invalid host"),
    ("host-option", {"host": "-oProxyCommand=sh"}, "host", "invalid host"),
    ("host-empty", {"host": ""}, "host", "invalid host"),
    ("host-bad-ipv4", {"host": "10.0.0.256"}, "host", "invalid host"),
    ("host-bad-ipv6", {"host": "fe80:::1"}, "host", "invalid host"),
    ("host-ipv6-scope-shell", {"host": "fe80::1%$(id)"}, "host", "invalid host"),
    ("host-brackets", {"host": "[::1]"}, "host", "invalid host"),
    ("host-newline", {"host": "db1\n"}, "host", "invalid host"),
    ("ssh-conn", {"ssh_conn_id": "ssh conn"}, "ssh_conn_id", "expected an Airflow connection id"),
    ("ssh-conn-long", {"ssh_conn_id": "c" * 251}, "ssh_conn_id", "connection id"),
    ("mysql-conn", {"mysql_conn_id": ""}, "mysql_conn_id", "connection id"),
    ("owner-blank", {"owner": "  "}, "owner", "expected a non-empty string"),
    ("app-null", {"app": None}, "app", "expected a non-empty string"),
    ("unknown-key", {"replcia_of": "x"}, "replcia_of", "unknown key 'replcia_of' (did you mean 'replica_of'?)"),
    ("unknown-key-far", {"colour": "red"}, "colour", "unknown key 'colour'; expected one of:"),
    ("primary-with-replica_of", {"replica_of": "good_a"}, "replica_of", "a primary must not have replica_of"),
    ("replica-without-replica_of", {"role": "replica"}, "replica_of", "a replica needs replica_of"),
    ("replica-of-itself", {"role": "replica", "replica_of": "bad"}, "replica_of", "cannot be a replica of itself"),
    ("replica-of-nowhere", {"role": "replica", "replica_of": "nosuch"}, "replica_of",
     "replica_of 'nosuch' names no row in this CMDB"),
    ("replica-of-bad-form", {"role": "replica", "replica_of": "no such"}, "replica_of", "invalid replica_of"),
    ("python", {"python": "python3; rm -rf /"}, "python", "invalid python"),
    ("become", {"become": "yes"}, "become", "expected true or false"),
    ("tags-string", {"tags": "tier1"}, "tags", "expected a list of non-empty strings"),
    ("tags-empty-item", {"tags": ["ok", ""]}, "tags", "expected a list"),
    ("backup-enabled", {"backup": {"enabled": "yes"}}, "backup.enabled", "expected true or false"),
    ("backup-typo", {"backup": {"enable": True}}, "backup.enable", "did you mean 'enabled'?"),
    ("backup-not-mapping", {"backup": True}, "backup", "expected a mapping"),
    ("policy-not-mapping", {"policy": "daily"}, "policy", "expected a mapping"),
    ("policy-compress", {"policy": {"compress": "lz4"}}, "policy.compress",
     "unknown compress 'lz4'; expected one of: none, gzip, zstd"),
    ("policy-retention-0", {"policy": {"retention_days": 0}}, "policy.retention_days", "expected an integer >= 1"),
    ("policy-retention-str", {"policy": {"retention_days": "7"}}, "policy.retention_days", "integer"),
    ("policy-parallel-0", {"policy": {"parallel": 0}}, "policy.parallel", "expected an integer 1..64"),
    ("policy-parallel-65", {"policy": {"parallel": 65}}, "policy.parallel", "expected an integer 1..64"),
    ("policy-allow-primary", {"policy": {"allow_primary": "always"}}, "policy.allow_primary",
     "expected one of: never, when_no_replica, when_replicas_unhealthy"),
    ("policy-lag", {"policy": {"max_replica_lag_seconds": -1}}, "policy.max_replica_lag_seconds", ">= 0"),
    ("policy-cron-4-fields", {"policy": {"full_schedule": "0 2 * *"}}, "policy.full_schedule",
     "4 fields, expected 5"),
    ("policy-cron-6-fields", {"policy": {"full_schedule": "0 0 2 * * *"}}, "policy.full_schedule", "6 fields"),
    ("policy-cron-hour", {"policy": {"full_schedule": "0 24 * * *"}}, "policy.full_schedule", "bad hour '24'"),
    ("policy-cron-range", {"policy": {"full_schedule": "0 5-2 * * *"}}, "policy.full_schedule", "start after end"),
    ("policy-cron-junk", {"policy": {"full_schedule": "0 2 * * ?"}}, "policy.full_schedule", "bad day of week"),
    ("policy-cron-preset", {"policy": {"full_schedule": "@often"}}, "policy.full_schedule", "unknown preset '@often'"),
    ("policy-cron-once", {"policy": {"full_schedule": "@once"}}, "policy.full_schedule", "unknown preset"),
    ("policy-cron-int", {"policy": {"full_schedule": 2}}, "policy.full_schedule", "not a string but int"),
    ("policy-unknown", {"policy": {"compresion": "gzip"}}, "policy.compresion", "did you mean 'compress'?"),
    ("reserve-low", {"policy": {"reserve": {"percent": 0.005}}}, "policy.reserve.percent", "0.01..10"),
    ("reserve-high", {"policy": {"reserve": {"percent": 11}}}, "policy.reserve.percent", "0.01..10"),
    ("reserve-str", {"policy": {"reserve": {"percent": "1.5"}}}, "policy.reserve.percent", "expected a number"),
    ("reserve-path-relative", {"policy": {"reserve": {"path": "reserve"}}}, "policy.reserve.path",
     "expected an absolute path"),
    ("reserve-path-dotdot", {"policy": {"reserve": {"path": "/var/../etc"}}}, "policy.reserve.path", "'..'"),
    ("reserve-unknown", {"policy": {"reserve": {"size": 5}}}, "policy.reserve.size", "unknown key 'size'"),
    ("storage-base-relative", {"storage": {"base_dir": "backups"}}, "storage.base_dir", "absolute path"),
    ("storage-base-dotdot", {"storage": {"base_dir": "/srv/../etc"}}, "storage.base_dir", "no '.' or '..'"),
    ("storage-base-space", {"storage": {"base_dir": "/srv/my backups"}}, "storage.base_dir", "invalid base_dir"),
    ("storage-base-shell", {"storage": {"base_dir": "/srv/$(id)"}}, "storage.base_dir", "invalid base_dir"),
    ("storage-base-root", {"storage": {"base_dir": "/"}}, "storage.base_dir", "invalid base_dir"),
    ("storage-conn", {"storage": {"ssh_conn_id": "a b"}}, "storage.ssh_conn_id", "connection id"),
    ("storage-unknown", {"storage": {"path": "/x"}}, "storage.path", "unknown key 'path'"),
    ("storage-not-mapping", {"storage": "/srv"}, "storage", "expected a mapping"),
    ("alerts-email-to-string", {"alerts": {"email_to": "a@example.com"}}, "alerts.email_to",
     "expected a list of addresses"),
    ("alerts-email-to-bad", {"alerts": {"email_to": ["dba"]}}, "alerts.email_to", "invalid email_to"),
    ("alerts-from", {"alerts": {"email": {"from": "backup"}}}, "alerts.email.from", "expected user@domain"),
    ("alerts-smtp", {"alerts": {"email": {"smtp_conn_id": "smtp conn"}}}, "alerts.email.smtp_conn_id",
     "connection id"),
    ("alerts-webhook-url", {"alerts": {"webhook": {"url": "ftp://hooks"}}}, "alerts.webhook.url", "http://"),
    ("alerts-unknown", {"alerts": {"sms": "+1"}}, "alerts.sms", "unknown key 'sms'"),
    # control characters would end a mail header (a forged Bcc:), a tag or a log line
    ("owner-newline-bcc", {"owner": "dba@example.com\nBcc: all@example.com"}, "owner", "control character '\\n'"),
    ("owner-cr", {"owner": "dba\r"}, "owner", "control character '\\r'"),
    ("owner-escape", {"owner": "dba\x1b[31m"}, "owner", "control character '\\x1b'"),
    ("owner-line-separator", {"owner": "dba\u2028x"}, "owner", "control character '\\u2028'"),
    ("owner-too-long", {"owner": "o" * 201}, "owner", "at most 200"),
    ("app-tab", {"app": "shop\tx"}, "app", "control character '\\t'"),
    ("app-nul", {"app": "shop\x00"}, "app", "control character '\\x00'"),
    ("tags-newline", {"tags": ["team:dba\nx"]}, "tags", "printable text"),
    ("email-to-nul", {"alerts": {"email_to": ["dba@exa\x00mple.com"]}}, "alerts.email_to", "invalid email_to"),
    ("webhook-url-ctrl", {"alerts": {"webhook": {"url": "https://h.example/x\x07"}}}, "alerts.webhook.url",
     "invalid webhook url"),
]


@pytest.mark.parametrize(("changes", "field", "text"), [c[1:] for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS])
def test_bad_row_is_rejected_and_named(tmp_path: Path, changes: dict, field: str, text: str) -> None:
    bad = row("bad", **changes)
    cmdb = load(tmp_path, [row("good_a"), bad, replica("good_b", "good_a")])
    assert names(cmdb) == ["good_a", "good_b"]
    assert fields(cmdb, 2) == [field], [str(e) for e in cmdb.errors]
    (error,) = cmdb.errors
    assert error.row == 2
    assert error.name == (bad["name"] if isinstance(bad.get("name"), str) else None)
    assert text in error.message
    assert str(error).startswith("row 2")


GOOD_VALUES: list[tuple[str, Any]] = [
    ("host", "db1.example.com"), ("host", "db-1"), ("host", "db_1"), ("host", "10.0.0.5"), ("host", "::1"),
    ("host", "2001:db8::5"), ("host", "fe80::1%eth0"), ("host", "localhost"),
    ("name", "a"), ("name", "0shop"), ("name", "Shop-main_2"), ("name", "b" * 64),
    ("port", 1), ("port", 65535), ("flavor", "mysql"),
    ("ssh_conn_id", "ssh.shop-main_1"), ("owner", "dba-team"), ("owner", "Jürgen Müller <jürgen@exämple.de>"),
    ("app", "商店"),
]


@pytest.mark.parametrize(("key", "value"), GOOD_VALUES)
def test_good_values(tmp_path: Path, key: str, value: Any) -> None:
    cmdb = load(tmp_path, [row("good", **{key: value})])
    assert cmdb.errors == ()
    assert getattr(cmdb.instances[0], key) == value


@pytest.mark.parametrize(
    ("policy", "attr", "expected"),
    [
        ({"full_schedule": None}, "full_schedule", None),
        ({"full_schedule": "@daily"}, "full_schedule", "@daily"),
        ({"full_schedule": "*/15 * * * *"}, "full_schedule", "*/15 * * * *"),
        ({"full_schedule": "30 1 * * MON-FRI"}, "full_schedule", "30 1 * * MON-FRI"),
        ({"full_schedule": "0 3 1,15 jan-jun 0"}, "full_schedule", "0 3 1,15 jan-jun 0"),
        ({"compress": "none"}, "compress", "none"),
        ({"parallel": 64}, "parallel", 64),
        ({"max_replica_lag_seconds": 0}, "max_replica_lag_seconds", 0),
        ({"reserve": {"percent": 0.1}}, "reserve", ReservePolicy(0.1, None)),
        ({"reserve": {"percent": 10, "path": "/var/lib/reserve"}}, "reserve", ReservePolicy(10.0, "/var/lib/reserve")),
    ],
)
def test_good_policy_values(tmp_path: Path, policy: dict, attr: str, expected: Any) -> None:
    cmdb = load(tmp_path, [row(policy=policy)])
    assert cmdb.errors == ()
    assert getattr(cmdb.instances[0].policy, attr) == expected


def test_every_error_of_a_row_is_reported(tmp_path: Path) -> None:
    bad = row("shop-2", port="x", flavor="postgres", replcia_of="a", host=DROP,
              policy={"compress": "lz4", "reserve": {"percent": 50}})
    cmdb = load(tmp_path, [row("a"), row("b"), bad])
    assert names(cmdb) == ["a", "b"]
    assert sorted(fields(cmdb, 3)) == sorted(
        ["port", "flavor", "replcia_of", "host", "policy.compress", "policy.reserve.percent"])
    flavor = next(e for e in cmdb.errors if e.field == "flavor")
    assert str(flavor) == ("row 3 (name 'shop-2'), field 'flavor': unknown flavor 'postgres'; "
                           "expected one of: mariadb, mysql")


@pytest.mark.parametrize("item", ["just a string", 42, None, ["a", "list"]])
def test_row_that_is_not_a_mapping(tmp_path: Path, item: Any) -> None:
    cmdb = load(tmp_path, [row("a"), item])
    assert names(cmdb) == ["a"]
    (error,) = cmdb.errors
    assert (error.row, error.name, error.field) == (2, None, None)
    assert "expected a mapping of fields" in error.message


def test_missing_storage_names_both_fields(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("a"), row("b", storage={"ssh_conn_id": "st"})], defaults={})
    assert cmdb.instances == ()
    assert fields(cmdb, 1) == ["storage.ssh_conn_id", "storage.base_dir"]
    assert fields(cmdb, 2) == ["storage.base_dir"]
    assert "set storage.base_dir in this row or in defaults.storage" in cmdb.errors[-1].message


# ---------------------------------------------------------------- names and replica links


def test_duplicate_names_first_row_keeps_its_dag(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("shop", host="first.db"), row("other"), row("shop", host="second.db")])
    assert names(cmdb) == ["other", "shop"]
    assert cmdb.by_name("shop").host == "first.db"  # type: ignore[union-attr]
    reported = {(e.row, e.field) for e in cmdb.errors}
    assert reported == {(1, "name"), (3, "name")}
    first, second = sorted(cmdb.errors, key=lambda e: e.row or 0)
    assert "also used by row 3, which is ignored" in first.message
    assert "row 1 already uses it and keeps its DAG; this row is ignored" in second.message


def test_replica_of_a_duplicate_name_follows_the_first_row(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("p"), row("p", flavor="postgres"), replica("r", "p")])
    assert names(cmdb) == ["p", "r"]


def test_replica_of_an_invalid_row_is_rejected(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("p", flavor="postgres"), replica("r", "p"), row("ok")])
    assert names(cmdb) == ["ok"]
    assert fields(cmdb, 2) == ["replica_of"]
    assert "replica_of 'p' names row 1, which has errors; fix that row first" in cmdb.errors[-1].message


def test_replica_chains_load_and_fail_together(tmp_path: Path) -> None:
    rows = [replica("r2", "r1"), replica("r1", "p"), row("p")]
    assert names(load(tmp_path, rows)) == ["p", "r1", "r2"]
    rows[2] = row("p", port=0)
    cmdb = load(tmp_path, rows)
    assert names(cmdb) == []
    assert fields(cmdb, 1) == ["replica_of"] and fields(cmdb, 2) == ["replica_of"]


def test_replica_cycle(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [replica("a", "b"), replica("b", "a"), replica("c", "a"), row("ok")])
    assert names(cmdb) == ["ok"]
    messages = {e.row: e.message for e in cmdb.errors}
    assert "cycle (a -> b -> a)" in messages[1] or "cycle (b -> a -> b)" in messages[1]
    assert "cycle" in messages[2]
    assert "names row 1, which has errors" in messages[3]


def test_replicas_of_and_by_name(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [replica("r_b", "p"), row("p"), replica("r_a", "p"), replica("r_a1", "r_a"), row("q")])
    assert [r.name for r in cmdb.replicas_of("p")] == ["r_a", "r_b"]
    assert [r.name for r in cmdb.replicas_of("r_a")] == ["r_a1"]
    assert cmdb.replicas_of("q") == [] and cmdb.replicas_of("nosuch") == []
    assert cmdb.by_name("nosuch") is None
    cmdb.replicas_of("p").clear()
    assert len(cmdb.replicas_of("p")) == 2


# ---------------------------------------------------------------- defaults and merging


def test_policy_merge(tmp_path: Path) -> None:
    defaults = {**DEFAULTS, "policy": {"compress": "gzip", "retention_days": 14,
                                       "reserve": {"percent": 1.0, "path": "/var/reserve"}}}
    cmdb = load(tmp_path, [row("a", policy={"parallel": 4, "reserve": {"percent": 2}}), row("b")],
                defaults=defaults)
    assert cmdb.errors == ()
    a, b = cmdb.instances
    assert a.policy == Policy(compress="gzip", retention_days=14, parallel=4,
                              reserve=ReservePolicy(2.0, "/var/reserve"))
    assert b.policy == Policy(compress="gzip", retention_days=14, reserve=ReservePolicy(1.0, "/var/reserve"))
    assert isinstance(b.policy.reserve.percent, float)


def test_storage_and_alerts_merge(tmp_path: Path) -> None:
    defaults = {
        "storage": {"ssh_conn_id": "st1", "base_dir": "/srv/b"},
        "alerts": {"email": {"smtp_conn_id": "smtp_default", "from": "backup@localhost"},
                   "webhook": {"conn_id": "hook", "url": None}},
    }
    cmdb = load(tmp_path, [
        row("a", storage={"ssh_conn_id": "st2"},
            alerts={"email_to": ["x@example.com", "y@example.com"], "email": {"from": "a@example.com"},
                    "webhook": {"conn_id": None, "url": "https://hooks.example.com/x"}}),
        row("b", owner="team-b"),
    ], defaults=defaults)
    assert cmdb.errors == ()
    a, b = cmdb.instances
    assert a.storage == StorageLocation("st2", "/srv/b")
    assert a.alerts == AlertConfig(("x@example.com", "y@example.com"), "smtp_default", "a@example.com",
                                   None, "https://hooks.example.com/x")
    assert b.alerts == AlertConfig((), "smtp_default", "backup@localhost", "hook", None)


def test_email_to_empty_list_means_nobody(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row(alerts={"email_to": []})])
    assert cmdb.instances[0].alerts.email_to == ()


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([row("p")], {"p": True}),
        ([row("p"), replica("r", "p")], {"p": True, "r": False}),
        ([row("p", backup={"enabled": False}), replica("r", "p", backup={"enabled": True})],
         {"p": False, "r": True}),
        ([row("p"), replica("r", "p", backup={})], {"p": True, "r": False}),
    ],
)
def test_backup_enabled_default(tmp_path: Path, rows: list, expected: dict) -> None:
    cmdb = load(tmp_path, rows)
    assert {i.name: i.policy.backup_enabled for i in cmdb.instances} == expected


def test_backup_enabled_with_policy_override(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("p"), replica("r", "p", policy={"parallel": 3})])
    assert cmdb.by_name("r").policy == Policy(parallel=3, backup_enabled=False)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("defaults", "field"),
    [
        ({**DEFAULTS, "policy": {"compress": "lz4"}}, "defaults.policy.compress"),
        ({**DEFAULTS, "policy": {"reserve": {"percent": 0}}}, "defaults.policy.reserve.percent"),
        ({**DEFAULTS, "policy": {"full_schedule": "nightly"}}, "defaults.policy.full_schedule"),
        ({**DEFAULTS, "polcy": {}}, "defaults.polcy"),
        ({**DEFAULTS, "alerts": {"email_to": ["a@b.c"]}}, "defaults.alerts.email_to"),
        ({**DEFAULTS, "alerts": {"webhook": {"url": "nope"}}}, "defaults.alerts.webhook.url"),
        ("not a mapping", "defaults"),
    ],
)
def test_defaults_errors_are_reported_and_built_ins_apply(tmp_path: Path, defaults: Any, field: str) -> None:
    rows = [row("a")] if isinstance(defaults, dict) else [row("a", storage=DEFAULTS["storage"])]
    cmdb = load(tmp_path, rows, defaults=defaults)
    assert [(e.row, e.field) for e in cmdb.errors] == [(None, field)]
    assert names(cmdb) == ["a"]
    assert cmdb.instances[0].policy == Policy()
    assert str(cmdb.errors[0]).startswith(f"field '{field}': ")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("a")], storage={"x": 1})
    assert [(e.row, e.field) for e in cmdb.errors] == [(None, "storage")]
    assert "did you mean 'storages'?" in cmdb.errors[0].message
    assert names(cmdb) == ["a"]


# ---------------------------------------------------------------- storages and pools


@pytest.mark.parametrize(
    ("storages", "field", "text"),
    [
        ("backup_storage", "storages", "expected a list"),
        ([{"ssh_conn_id": "s", "max_concurrent_backups": 0}], "storages[1].max_concurrent_backups", "1..1024"),
        ([{"ssh_conn_id": "s", "max_concurrent_backups": "4"}], "storages[1].max_concurrent_backups", "integer"),
        ([{"max_concurrent_backups": 2}], "storages[1].ssh_conn_id", "missing"),
        ([{"ssh_conn_id": "s bad"}], "storages[1].ssh_conn_id", "connection id"),
        ([{"ssh_conn_id": "s", "slots": 2}], "storages[1].slots", "unknown key"),
        ([{"ssh_conn_id": "s"}, {"ssh_conn_id": "s"}], "storages[2].ssh_conn_id", "duplicate storage 's'"),
        (["s"], "storages[1]", "expected a mapping"),
    ],
)
def test_storages_errors(tmp_path: Path, storages: Any, field: str, text: str) -> None:
    cmdb = load(tmp_path, [row("a")], storages=storages)
    assert [(e.row, e.field) for e in cmdb.errors] == [(None, field)]
    assert text in cmdb.errors[0].message
    assert names(cmdb) == ["a"]


def test_pools(tmp_path: Path) -> None:
    storages = [{"ssh_conn_id": "st1", "max_concurrent_backups": 2}, {"ssh_conn_id": "unused"}]
    cmdb = load(tmp_path, [
        row("a", storage={"ssh_conn_id": "st1"}), row("b", storage={"ssh_conn_id": "st1"}),
        row("c", storage={"ssh_conn_id": "st2"}), row("d"),
    ], storages=storages)
    assert cmdb.errors == ()
    assert cmdb.storages == (StorageHost("st1", 2), StorageHost("unused", 4))
    assert cmdb.pools() == {
        "mysql_backup_storage__backup_storage": 4,
        "mysql_backup_storage__st1": 2,
        "mysql_backup_storage__st2": 4,
    }


@pytest.mark.parametrize(
    ("conn", "pool"),
    [("backup_storage", "mysql_backup_storage__backup_storage"),
     ("st.eu-1", "mysql_backup_storage__st.eu-1"),
     ("a b/c", "mysql_backup_storage__a_b_c")],
)
def test_pool_name(conn: str, pool: str) -> None:
    assert pool_name(conn) == pool
    assert Cmdb.pool_name(conn) == pool


# ---------------------------------------------------------------- files that are not a CMDB


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("instances: [", "is not valid YAML"),
        ("\tinstances: []", "is not valid YAML"),
        ("", "top level must be a mapping"),
        ("- a\n- b\n", "top level must be a mapping with an 'instances' list, got list"),
        ("just text", "got str"),
        ("defaults: {}\n", "'instances' must be a list of rows, got nothing"),
        ("instances: {a: 1}\n", "'instances' must be a list of rows, got dict"),
        ("instances:\n", "got nothing"),
    ],
)
def test_not_a_cmdb(tmp_path: Path, content: str, text: str) -> None:
    path = tmp_path / "instances.yaml"
    path.write_text(content)
    cmdb = load_cmdb(path)
    assert cmdb.instances == ()
    (error,) = cmdb.errors
    assert (error.row, error.field) == (None, None)
    assert text in error.message
    assert str(error) == error.message


def test_empty_instances_list_is_fine(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [])
    assert (cmdb.instances, cmdb.storages, cmdb.errors, cmdb.source) == ((), (), (), str(tmp_path / "instances.yaml"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    cmdb = load_cmdb(str(path))
    assert cmdb.instances == ()
    assert cmdb.source == str(path)
    (error,) = cmdb.errors
    assert f"CMDB file {path} not found" in error.message
    assert "MYSQL_BACKUP_CMDB" in error.message


def test_unreadable_file(tmp_path: Path) -> None:
    cmdb = load_cmdb(tmp_path)  # a directory
    assert "cannot read CMDB file" in cmdb.errors[0].message
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"instances: []\n# caf\xe9\n")
    assert "cannot read CMDB file" in load_cmdb(bad).errors[0].message


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "instances.yaml"
    path.write_text("instances: !!python/object/apply:os.system ['true']\n")
    assert "is not valid YAML" in load_cmdb(path).errors[0].message


# ---------------------------------------------------------------- errors, raising, path


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (CmdbError(3, "shop-2", "flavor", "unknown flavor 'postgres'; expected one of: mariadb, mysql"),
         "row 3 (name 'shop-2'), field 'flavor': unknown flavor 'postgres'; expected one of: mariadb, mysql"),
        (CmdbError(3, None, "name", "missing"), "row 3, field 'name': missing"),
        (CmdbError(4, None, None, "expected a mapping"), "row 4: expected a mapping"),
        (CmdbError(None, None, "defaults.policy.compress", "bad"), "field 'defaults.policy.compress': bad"),
        (CmdbError(None, None, None, "file not found"), "file not found"),
    ],
)
def test_error_str(error: CmdbError, text: str) -> None:
    assert str(error) == text


def test_raise_for_errors(tmp_path: Path) -> None:
    cmdb = load(tmp_path, [row("a", port=0), row("b", flavor="x"), row("c")])
    with pytest.raises(CmdbInvalid) as exc:
        cmdb.raise_for_errors()
    assert exc.value.errors == cmdb.errors
    message = str(exc.value)
    assert message.startswith(f"{cmdb.source}: 2 CMDB error(s):\n")
    assert "  - row 1 (name 'a'), field 'port'" in message
    assert "  - row 2 (name 'b'), field 'flavor'" in message
    load(tmp_path, [row("c")]).raise_for_errors()


def test_cmdb_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MYSQL_BACKUP_CMDB", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert cmdb_path() == repo / "include" / "cmdb" / "instances.yaml"
    monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(tmp_path / "x.yaml"))
    assert cmdb_path() == tmp_path / "x.yaml"


def test_cron_check_is_stricter_than_croniter() -> None:
    """Anything accepted here must parse in Airflow, or the whole DAG file would fail."""
    croniter = pytest.importorskip("croniter").croniter
    exprs = ["0 2 * * *", "*/15 * * * *", "0 0 1 */3 *", "0 2 * * MON-FRI", "5/15 * * * *", "0 2 * * 7",
             "0 2 * * 0-7", "*/59 * * * *", "0 0 */31 * *", "1,2,3 * * * *", "0-59/5 * * * *", "00 02 * * *",
             "0 2 * jan-3 *", "0 24 * * *", "60 * * * *", "0 2 0 * *", "0 2 * 13 *", "0 2 * * 8",
             "0 2 * * L", "0/0 * * * *", "0 2 * * 1-MAR", "*/0 * * * *", "0 2 * * sun-sat"]
    for expr in exprs:
        if _cron_error(expr) is None:
            assert croniter.is_valid(expr), expr


# ---------------------------------------------------------------- size


def test_three_thousand_rows_load(tmp_path: Path) -> None:
    rows = []
    for i in range(3000):
        if i % 3 == 0:
            rows.append(row(f"db{i:04d}", host=f"10.0.{i // 250}.{i % 250 + 1}"))
        else:
            rows.append(replica(f"db{i:04d}", f"db{i - i % 3:04d}", policy={"parallel": 1 + i % 8}))
    rows.reverse()
    cmdb = load(tmp_path, rows)
    assert cmdb.errors == ()
    assert len(cmdb.instances) == 3000
    assert names(cmdb) == sorted(names(cmdb))
    assert [r.name for r in cmdb.replicas_of("db0003")] == ["db0004", "db0005"]
    assert sum(i.policy.backup_enabled for i in cmdb.instances) == 1000


def test_parse_cmdb_checks_an_already_parsed_document() -> None:
    cmdb = parse_cmdb({"defaults": DEFAULTS, "instances": [row("a"), row("b", port=-1)]})
    assert (names(cmdb), fields(cmdb, 2), cmdb.source) == (["a"], ["port"], "<memory>")


def test_safe_slave_backup_policy(tmp_path):
    import yaml as _yaml
    doc = {"defaults": {"storage": {"ssh_conn_id": "s", "base_dir": "/srv/b"}},
           "instances": [{"name": "a", "host": "h", "port": 3306, "role": "primary", "flavor": "mariadb",
                          "ssh_conn_id": "x", "mysql_conn_id": "m", "owner": "o", "app": "p",
                          "policy": {"safe_slave_backup": True}},
                         {"name": "b", "host": "h", "port": 3306, "role": "primary", "flavor": "mariadb",
                          "ssh_conn_id": "x", "mysql_conn_id": "m", "owner": "o", "app": "p",
                          "policy": {"safe_slave_backup": "yes"}}]}
    path = tmp_path / "c.yaml"
    path.write_text(_yaml.safe_dump(doc))
    cmdb = load_cmdb(path)
    assert [i.name for i in cmdb.instances] == ["a"] and cmdb.instances[0].policy.safe_slave_backup is True
    assert [e.field for e in cmdb.errors] == ["policy.safe_slave_backup"]
