"""Test data factories shared by several test files."""
from __future__ import annotations

from typing import Any

from mysqlbackup.manifest import MANIFEST_VERSION


def manifest_data(**overrides: Any) -> dict[str, Any]:
    """A valid manifest as a dict, with overrides."""
    data: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "instance": "shop_main",
        "label": "20240315-020000F",
        "kind": "full",
        "flavor": "mariadb",
        "source_name": "shop_replica1",
        "source_host": "10.0.0.6",
        "source_port": 3306,
        "source_is_primary": False,
        "started_at": "2024-03-15T02:00:00Z",
        "finished_at": "2024-03-15T02:10:30.500000+00:00",
        "duration_seconds": 630.5,
        "size_bytes": 123456789,
        "artifact": "backup.xbstream.zst",
        "compress": "zstd",
        "sha256": "ab" * 32,
        "storage_ssh_conn_id": "backup_storage",
        "storage_path": "/srv/mysql-backups/shop_main/20240315-020000F",
        "binlog_file": "mysql-bin.000042",
        "binlog_pos": 1234,
        "gtid": "0-1-100",
        "from_lsn": 0,
        "to_lsn": 2**40,
        "last_lsn": 2**40 + 17,
        "server_version": "10.11.6-MariaDB",
        "verify": {
            "status": "ok",
            "prepared": True,
            "files": 312,
            "checksums_file": "SHA256SUMS",
            "seconds": 41.2,
            "message": "prepared with mariabackup",
        },
        "tool": "mariabackup 10.11.6",
        "status": "usable",
    }
    data.update(overrides)
    return data
