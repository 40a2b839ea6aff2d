"""Tests for mysqlbackup.manifest: schema, validation, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from factories import manifest_data
from mysqlbackup.manifest import (
    FIELDS,
    OPTIONAL_FIELDS,
    Manifest,
    ManifestError,
    from_dict,
    from_json,
    manifest_path,
    parse_utc,
    to_dict,
    to_json,
    validate,
)




def test_round_trip_is_exact() -> None:
    m = from_dict(manifest_data())
    text = to_json(m)
    assert from_json(text) == m
    assert text.endswith("\n")
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed)
    assert parsed["to_lsn"] == 2**40
    assert text.startswith('{\n  "')


def test_to_dict_has_every_field() -> None:
    m = from_dict(manifest_data())
    assert set(to_dict(m)) == set(FIELDS)
    assert set(FIELDS) - OPTIONAL_FIELDS == set(manifest_data())  # optional: older manifests lack them


def test_manifest_is_frozen() -> None:
    m = from_dict(manifest_data())
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.label = "20240316-020000F"  # type: ignore[misc]


def test_nullable_fields_accept_null() -> None:
    m = from_dict(manifest_data(binlog_file=None, binlog_pos=None, gtid=None,
                                from_lsn=None, to_lsn=None, last_lsn=None))
    assert from_json(to_json(m)) == m


def test_both_utc_spellings_are_accepted() -> None:
    assert parse_utc("2024-03-15T02:00:00Z") == parse_utc("2024-03-15T02:00:00+00:00")
    from_dict(manifest_data(started_at="2024-03-15T02:00:00+00:00", finished_at="2024-03-15T02:10:00Z"))


@pytest.mark.parametrize("value", ["2024-03-15T02:00:00", "2024-03-15T02:00:00+01:00", "yesterday", ""])
def test_non_utc_timestamps_are_rejected(value: str) -> None:
    with pytest.raises(ManifestError, match="started_at"):
        from_dict(manifest_data(started_at=value))


def test_finished_before_started_is_rejected() -> None:
    with pytest.raises(ManifestError, match="finished_at"):
        from_dict(manifest_data(finished_at="2024-03-15T01:00:00Z"))


def test_missing_field_is_named() -> None:
    data = manifest_data()
    del data["sha256"]
    with pytest.raises(ManifestError, match="missing field.*sha256"):
        from_json(json.dumps(data))


def test_missing_version_is_named() -> None:
    data = manifest_data()
    del data["version"]
    with pytest.raises(ManifestError, match="version: missing"):
        from_json(json.dumps(data))


@pytest.mark.parametrize("version", [0, 2, "1", True, None])
def test_unknown_version_is_rejected(version: Any) -> None:
    with pytest.raises(ManifestError, match="unknown manifest version"):
        from_json(json.dumps(manifest_data(version=version)))


def test_bad_json_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        from_json("{not json")
    with pytest.raises(ManifestError, match="JSON object"):
        from_json("[1, 2]")
    assert issubclass(ManifestError, ValueError)


def test_unknown_extra_keys_are_ignored() -> None:
    m = from_json(json.dumps(manifest_data(comment="added by hand")))
    assert m.instance == "shop_main"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("label", "2024-03-15", "label"),
        ("label", "20240315-020000", "label"),
        ("label", "20240315-020000I", "label"),
        ("label", "20241399-020000F", "label"),
        ("instance", "bad name", "instance"),
        ("kind", "weekly", "kind"),
        ("kind", "incremental", "not an incremental backup label"),
        ("flavor", "postgres", "flavor"),
        ("compress", "xz", "compress"),
        ("sha256", "ab" * 31, "sha256"),
        ("sha256", "AB" * 32, "sha256"),
        ("sha256", "zz" * 32, "sha256"),
        ("size_bytes", -1, "size_bytes"),
        ("size_bytes", 1.5, "size_bytes"),
        ("size_bytes", True, "size_bytes"),
        ("source_port", 0, "source_port"),
        ("source_port", "3306", "source_port"),
        ("source_is_primary", "no", "source_is_primary"),
        ("duration_seconds", -1.0, "duration_seconds"),
        ("duration_seconds", float("nan"), "duration_seconds"),
        ("artifact", "../backup.xbstream.zst", "artifact"),
        ("artifact", "backup.xbstream.gz", "artifact"),
        ("storage_path", "relative/shop_main/20240315-020000F", "storage_path"),
        ("storage_path", "/srv/mysql-backups/other/20240315-020000F", "storage_path"),
        ("binlog_pos", -5, "binlog_pos"),
        ("to_lsn", "12", "to_lsn"),
        ("server_version", None, "server_version"),
        ("status", "failed", "status"),
        ("verify", [], "verify"),
    ],
)
def test_invalid_field_is_named(field: str, value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        from_dict(manifest_data(**{field: value}))


def test_storage_path_trailing_slash_is_fine() -> None:
    from_dict(manifest_data(storage_path="/srv/mysql-backups/shop_main/20240315-020000F/"))


def test_uncompressed_artifact() -> None:
    from_dict(manifest_data(compress="none", artifact="backup.xbstream"))
    with pytest.raises(ManifestError, match="artifact"):
        from_dict(manifest_data(compress="none", artifact="backup.xbstream.zst"))


@pytest.mark.parametrize(
    "verify",
    [
        {"status": "failed", "prepared": True, "files": 1, "checksums_file": "SHA256SUMS", "seconds": 1.0, "message": "x"},
        {"status": "ok", "prepared": False, "files": 1, "checksums_file": "SHA256SUMS", "seconds": 1.0, "message": "x"},
    ],
)
def test_only_verified_backups_have_a_manifest(verify: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="only written for a verified backup"):
        from_dict(manifest_data(verify=verify))


def test_verify_keys_are_required() -> None:
    verify = dict(manifest_data()["verify"])
    del verify["checksums_file"]
    with pytest.raises(ManifestError, match="verify.checksums_file"):
        from_dict(manifest_data(verify=verify))
    with pytest.raises(ManifestError, match="verify.status"):
        from_dict(manifest_data(verify=dict(manifest_data()["verify"], status="maybe")))


def test_validate_and_to_json_check_a_built_manifest() -> None:
    m = from_dict(manifest_data())
    validate(m)
    bad = dataclasses.replace(m, sha256="nothex")
    with pytest.raises(ManifestError, match="sha256"):
        validate(bad)
    with pytest.raises(ManifestError, match="sha256"):
        to_json(bad)
    with pytest.raises(ManifestError):
        validate({"not": "a manifest"})  # type: ignore[arg-type]


def test_manifest_is_built_directly() -> None:
    data = manifest_data()
    del data["status"]
    m = Manifest(**data)
    assert m.status == "usable"
    validate(m)


def test_manifest_path() -> None:
    assert manifest_path("/srv/b", "shop_main", "20240315-020000F") == "/srv/b/shop_main/20240315-020000F/manifest.json"


def test_replica_source_is_optional_and_checked():
    m = from_dict(manifest_data())
    assert m.replica_source is None
    m2 = from_dict(manifest_data(replica_source={"gtid": "0-1-5", "file": None, "pos": None, "text": "x"}))
    assert m2.replica_source["gtid"] == "0-1-5"
    with pytest.raises(ManifestError, match="replica_source"):
        from_dict(manifest_data(replica_source="0-1-5"))


def test_chain_fields_of_an_incremental() -> None:
    inc = "20240315-020000F_20240316-020000I"
    base = dict(manifest_data(), kind="incremental", label=inc, storage_path=f"/srv/mysql-backups/shop_main/{inc}",
                parent="20240315-020000F", chain="20240315-020000F", from_lsn=100, to_lsn=200)
    m = from_dict(base)
    assert (m.parent, m.chain) == ("20240315-020000F", "20240315-020000F")
    from_dict(dict(base, label=inc.replace("16-", "17-"), storage_path=f"/srv/mysql-backups/shop_main/"
                   f"{inc.replace('16-', '17-')}", parent=inc))  # on an earlier incremental of the chain
    for changes, message in [
        ({"parent": None}, "names its parent"),
        ({"chain": "20240314-020000F"}, "is not the full"),
        ({"parent": "20240314-020000F"}, "not an earlier link"),
        ({"parent": inc}, "not an earlier link"),
        ({"from_lsn": None}, "records both"),
    ]:
        with pytest.raises(ManifestError, match=message):
            from_dict(dict(base, **changes))
    with pytest.raises(ManifestError, match="a full backup has no parent"):
        from_dict(dict(manifest_data(), parent="20240314-020000F"))
