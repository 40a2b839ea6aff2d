"""Tests for mysqlbackup.catalog on a real SQLite file."""

from __future__ import annotations

import dataclasses
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import inspect

from factories import manifest_data
from mysqlbackup.catalog import Catalog, CatalogError, RebuildReport, StorageListing, catalog_url
from mysqlbackup.manifest import Manifest, from_dict, manifest_path, to_json




START = datetime(2024, 3, 15, 2, 0, 0, tzinfo=timezone.utc)


def make_manifest(instance: str = "shop_main", day: int = 15, size: int = 1000, **overrides: Any) -> Manifest:
    """A valid manifest for instance on 2024-03-<day>."""
    label = f"202403{day:02d}-020000F"
    data = manifest_data(
        instance=instance, label=label, size_bytes=size,
        started_at=f"2024-03-{day:02d}T02:00:00Z", finished_at=f"2024-03-{day:02d}T02:10:00Z",
        storage_path=f"/srv/mysql-backups/{instance}/{label}",
    )
    data.update(overrides)
    return from_dict(data)


def start(cat: Catalog, instance: str = "shop_main", label: str = "20240315-020000F",
          when: datetime = START) -> None:
    """start_backup with typical values."""
    cat.start_backup(instance, label, "scheduled__2024-03-15T02:00:00+00:00", "shop_replica1",
                     "10.0.0.6", 3306, when, "backup_storage", f"/srv/mysql-backups/{instance}/{label}")


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog(f"sqlite:///{tmp_path}/catalog.sqlite")
    yield catalog
    catalog.close()


def test_tables_are_created(cat: Catalog) -> None:
    names = set(inspect(cat.engine).get_table_names())
    assert {"backups", "instance_facts"} <= names
    # A second Catalog on the same file finds the tables and does not fail.
    Catalog(cat.url).close()


def test_catalog_url_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", "postgresql://u:p@db/catalog")
    assert catalog_url() == "postgresql://u:p@db/catalog"
    monkeypatch.delenv("MYSQL_BACKUP_CATALOG_URL")
    home = tmp_path / "home" / "nested"
    monkeypatch.setenv("MYSQL_BACKUP_HOME", str(home))
    assert catalog_url() == f"sqlite:///{home}/catalog.sqlite"
    assert home.is_dir()


def test_catalog_url_default_is_repo_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYSQL_BACKUP_CATALOG_URL", raising=False)
    monkeypatch.delenv("MYSQL_BACKUP_HOME", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert catalog_url() == f"sqlite:///{repo / 'var'}/catalog.sqlite"


def test_repr_hides_password() -> None:
    c = Catalog.__new__(Catalog)
    c.url = "postgresql://backup:s3cret@db.example/catalog"
    assert "s3cret" not in repr(c)
    assert "db.example" in repr(c)


def test_start_then_fail(cat: Catalog) -> None:
    start(cat)
    [row] = cat.backups()
    assert row["status"] == "running"
    assert row["run_id"].startswith("scheduled__")
    assert row["started_at"] == "2024-03-15T02:00:00Z"
    assert row["kind"] == "full"
    assert cat.fail_backup("shop_main", "20240315-020000F", "storage.py receive: exit 3 (no space)") is True
    [row] = cat.backups()
    assert row["status"] == "failed"
    assert row["error"] == "storage.py receive: exit 3 (no space)"
    assert row["source_name"] == "shop_replica1"  # other fields kept
    assert row["storage_path"] == "/srv/mysql-backups/shop_main/20240315-020000F"
    assert cat.last_usable("shop_main") is None
    assert cat.history_sizes("shop_main") == []


def test_retry_after_failure_restarts(cat: Catalog) -> None:
    start(cat)
    cat.fail_backup("shop_main", "20240315-020000F", "boom")
    start(cat)
    [row] = cat.backups()
    assert row["status"] == "running"
    assert row["error"] is None


def test_start_then_usable(cat: Catalog) -> None:
    start(cat)
    m = make_manifest()
    cat.record_manifest(m)
    [row] = cat.backups()
    assert row["status"] == "usable"
    assert row["run_id"].startswith("scheduled__")  # kept from start_backup
    assert row["sha256"] == m.sha256
    assert row["size_bytes"] == m.size_bytes
    assert row["verify_status"] == "ok"
    assert json.loads(row["verify_json"]) == m.verify
    assert row["manifest_json"] == to_json(m)
    assert row["finished_at"] == "2024-03-15T02:10:00Z"
    assert row["binlog_file"] == "mysql-bin.000042"
    assert cat.last_usable("shop_main")["label"] == m.label  # type: ignore[index]


def test_late_fail_does_not_downgrade(cat: Catalog) -> None:
    start(cat)
    cat.record_manifest(make_manifest())
    assert cat.fail_backup("shop_main", "20240315-020000F", "late callback") is False
    [row] = cat.backups()
    assert row["status"] == "usable"
    assert row["error"] is None


def test_usable_backup_cannot_be_restarted(cat: Catalog) -> None:
    cat.record_manifest(make_manifest())
    with pytest.raises(CatalogError, match="already usable"):
        start(cat)
    assert cat.backups()[0]["status"] == "usable"


def test_fail_creates_missing_row(cat: Catalog) -> None:
    cat.fail_backup("shop_main", "20240316-020000F", "failed before start_backup")
    [row] = cat.backups()
    assert (row["instance"], row["label"], row["status"]) == ("shop_main", "20240316-020000F", "failed")
    assert row["updated_at"].endswith("Z")


def test_record_manifest_without_start(cat: Catalog) -> None:
    cat.record_manifest(make_manifest())
    [row] = cat.backups()
    assert row["status"] == "usable"
    assert row["run_id"] is None


def test_big_lsns_round_trip(cat: Catalog) -> None:
    m = make_manifest(from_lsn=2**40, to_lsn=2**40 + 1, last_lsn=2**62, binlog_pos=2**33, size_bytes=5 * 2**40)
    cat.record_manifest(m)
    [row] = cat.backups()
    assert (row["from_lsn"], row["to_lsn"], row["last_lsn"]) == (2**40, 2**40 + 1, 2**62)
    assert row["binlog_pos"] == 2**33
    assert row["size_bytes"] == 5 * 2**40


def test_history_sizes_newest_first(cat: Catalog) -> None:
    for day, size in [(10, 100), (12, 120), (11, 110), (13, 130), (14, 140)]:
        cat.record_manifest(make_manifest(day=day, size=size))
    cat.record_manifest(make_manifest(instance="other", day=20, size=999))
    start(cat, label="20240320-020000F")  # running: not in the history
    cat.fail_backup("shop_main", "20240321-020000F", "x")  # failed: not in the history
    assert cat.history_sizes("shop_main") == [140, 130, 120]
    assert cat.history_sizes("shop_main", limit=5) == [140, 130, 120, 110, 100]
    assert cat.history_sizes("nobody") == []
    assert cat.last_usable("shop_main")["size_bytes"] == 140  # type: ignore[index]


def test_backups_filters(cat: Catalog) -> None:
    cat.record_manifest(make_manifest(day=10))
    cat.record_manifest(make_manifest(day=12))
    cat.record_manifest(make_manifest(instance="other", day=11))
    start(cat, label="20240313-020000F", when=START.replace(day=13))
    labels = [r["label"] for r in cat.backups()]
    assert labels == ["20240313-020000F", "20240312-020000F", "20240311-020000F", "20240310-020000F"]
    assert [r["label"] for r in cat.backups(instance="other")] == ["20240311-020000F"]
    assert [r["label"] for r in cat.backups(status="running")] == ["20240313-020000F"]
    assert len(cat.backups(status=["running", "usable"])) == 4
    since = datetime(2024, 3, 11, 12, 0, tzinfo=timezone.utc)
    assert [r["label"] for r in cat.backups(since=since)] == ["20240313-020000F", "20240312-020000F"]
    assert [r["label"] for r in cat.backups(since="2024-03-11T12:00:00Z", instance="shop_main",
                                            status="usable")] == ["20240312-020000F"]
    with pytest.raises(ValueError, match="unknown backup status"):
        cat.backups(status="done")


def test_facts(cat: Catalog) -> None:
    assert cat.latest_facts("shop_main") is None
    cat.record_facts("shop_main", {"datadir_bytes": 10, "version": "10.11"}, START)
    cat.record_facts("shop_main", {"datadir_bytes": 30}, START + timedelta(hours=1))
    cat.record_facts("shop_main", {"datadir_bytes": 20}, "2024-03-15T01:00:00Z")  # older, recorded late
    cat.record_facts("other", {"datadir_bytes": 99}, START + timedelta(days=1))
    assert cat.latest_facts("shop_main") == {"datadir_bytes": 30}
    assert cat.latest_facts("other") == {"datadir_bytes": 99}


def manifest_item(m: Manifest, base: str = "/srv/mysql-backups") -> tuple[str, str]:
    """(path, text) as listed from storage."""
    return manifest_path(base, m.instance, m.label), to_json(m)


def test_rebuild_from_manifests(cat: Catalog) -> None:
    kept = make_manifest(day=10)
    changed = make_manifest(day=11)
    cat.record_manifest(kept)
    cat.record_manifest(dataclasses.replace(changed, size_bytes=1))
    cat.record_manifest(make_manifest(day=9))  # usable in the catalog, gone from storage
    cat.record_manifest(make_manifest(instance="other", day=9))  # other instance: out of scope
    start(cat, label="20240312-020000F")  # running row, its manifest shows up: now usable
    new = make_manifest(day=12)
    bad = json.loads(to_json(make_manifest(day=13)))
    bad["sha256"] = "nope"
    moved = make_manifest(day=14)
    items = [
        manifest_item(kept),
        manifest_item(changed),
        manifest_item(new),
        ("/srv/mysql-backups/shop_main/20240313-020000F/manifest.json", json.dumps(bad)),
        ("/srv/mysql-backups/shop_main/broken/manifest.json", "{truncated"),
        ("/srv/mysql-backups/shop_main/20240399-020000F/manifest.json", to_json(moved)),
    ]
    report = cat.rebuild_from_manifests(items)
    assert isinstance(report, RebuildReport)
    assert (report.added, report.updated, report.unchanged) == (0, 2, 1)
    assert [path for path, _ in report.invalid] == [items[3][0], items[4][0], items[5][0]]
    errors = dict(report.invalid)
    assert "sha256" in errors[items[3][0]]
    assert "JSON" in errors[items[4][0]]
    assert "found in shop_main/20240399-020000F" in errors[items[5][0]]
    assert report.not_on_storage == [("shop_main", "20240309-020000F")]
    rows = {r["label"]: r for r in cat.backups(instance="shop_main")}
    assert rows["20240312-020000F"]["status"] == "usable"
    assert rows["20240311-020000F"]["size_bytes"] == changed.size_bytes
    assert rows["20240309-020000F"]["status"] == "missing"  # usable in the catalog, gone from storage
    assert report.missing == [("shop_main", "20240309-020000F", "missing: the backup directory is gone from storage")]
    assert cat.backups(instance="other")[0]["status"] == "usable"  # out of scope
    assert "20240313-020000F" not in rows


def test_rebuild_into_empty_catalog_and_again(tmp_path: Path) -> None:
    ms = [make_manifest(day=d) for d in (1, 2, 3)] + [make_manifest(instance="other", day=2)]
    with Catalog(f"sqlite:///{tmp_path}/fresh.sqlite") as fresh:
        report = fresh.rebuild_from_manifests(manifest_item(m) for m in ms)
        assert (report.added, report.updated, report.unchanged, report.invalid) == (4, 0, 0, [])
        assert fresh.history_sizes("shop_main") == [1000, 1000, 1000]
        again = fresh.rebuild_from_manifests([manifest_item(m) for m in ms])
        assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
        scoped = fresh.rebuild_from_manifests([], instances=["other"])
        assert scoped.not_on_storage == [("other", "20240302-020000F")]


def _listing(*ms: Manifest, incomplete=(), unreadable=(), scope=("shop_main",), listed_at=None, location=None):
    return StorageListing(manifests=[manifest_item(m) for m in ms], incomplete=list(incomplete),
                          unreadable=list(unreadable), scope=frozenset(scope), listed_at=listed_at, location=location)


def test_reconcile_marks_missing_and_damaged_and_restores_what_comes_back(cat: Catalog) -> None:
    ms = {d: make_manifest(day=d) for d in (1, 2, 3, 4, 5)}
    for m in ms.values():
        cat.record_manifest(m)
    base = "/srv/mysql-backups/shop_main"
    broken = (f"{base}/{ms[4].label}/manifest.json", "{truncated")
    listing = _listing(ms[1], incomplete=[f"{base}/{ms[2].label}"],
                       unreadable=[(f"{base}/{ms[5].label}/manifest.json", "Input/output error")])
    listing.manifests.append(broken)
    report = cat.reconcile(listing)
    assert [(i, label) for i, label, _ in report.missing] == [("shop_main", ms[3].label)]
    assert sorted(label for _, label, _ in report.damaged) == [ms[2].label, ms[4].label, ms[5].label]
    assert report.incidents[0][0] == "missing"
    status = cat.statuses("shop_main")
    assert status == {ms[1].label: "usable", ms[2].label: "damaged", ms[3].label: "missing",
                      ms[4].label: "damaged", ms[5].label: "damaged"}
    assert [r["label"] for r in cat.backups(instance="shop_main", status="usable")] == [ms[1].label]
    assert cat.history_sizes("shop_main") == [1000]  # never counted as restorable
    # marked once: the next run finds nothing new to alert on
    again = cat.reconcile(listing)
    assert again.incidents == []
    # everything is back on storage: restored
    back = cat.reconcile(_listing(*ms.values()))
    assert sorted(label for _, label in back.restored) == sorted(m.label for m in ms.values() if m is not ms[1])
    assert set(cat.statuses("shop_main").values()) == {"usable"}


def test_reconcile_leaves_rows_it_could_not_see(cat: Catalog) -> None:
    old, new, elsewhere = make_manifest(day=1), make_manifest(day=2), make_manifest(day=3)
    cat.record_manifest(old)
    cat.record_manifest(dataclasses.replace(elsewhere, storage_ssh_conn_id="other_storage"))
    listed_at = datetime.now(timezone.utc)
    cat.record_manifest(new)  # committed while the listing ran: not in it, yet not missing
    report = cat.reconcile(_listing(listed_at=listed_at, location=("backup_storage", "/srv/mysql-backups")))
    assert report.not_on_storage == [("shop_main", old.label)]
    assert cat.statuses("shop_main") == {old.label: "missing", new.label: "usable", elsewhere.label: "usable"}


def test_reconcile_never_undoes_another_checks_damage_and_protects_marked_labels(cat: Catalog) -> None:
    m = make_manifest(day=1)
    cat.record_manifest(m)
    with cat.engine.begin() as conn:
        from mysqlbackup.catalog import backups_table as t
        conn.execute(t.update().values(status="damaged", error="damaged: sha256 mismatch"))
    assert cat.reconcile(_listing(m)).restored == []
    assert cat.statuses("shop_main") == {m.label: "damaged"}
    assert cat.fail_backup("shop_main", m.label, "late callback") is False
    with pytest.raises(CatalogError):
        start(cat, label=m.label)


def test_in_memory_url() -> None:
    with Catalog("sqlite://") as c:
        c.record_manifest(make_manifest())
        assert c.history_sizes("shop_main") == [1000]


def test_concurrent_writers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/busy.sqlite"
    Catalog(url).close()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with Catalog(url) as c:
                for day in range(1, 11):
                    label = f"202403{day:02d}-020000F"
                    c.record_facts(f"db{n}", {"n": n, "day": day})
                    c.start_backup(f"db{n}", label, None, "src", "h", 3306, START, "st", "/x")
                    c.fail_backup("shared", label, f"worker {n}")
                    c.record_manifest(make_manifest(instance=f"db{n}", day=day))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Catalog(url) as c:
        assert len(c.backups(status="usable")) == 60
        assert len(c.backups(instance="shared", status="failed")) == 10
