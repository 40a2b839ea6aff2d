"""OpenSSHHook: an Airflow SSH connection as an OpenSSH client command line.

Why not paramiko: a backup is a stream of gigabytes from one host to another; with two
OpenSSH processes joined by a pipe no Python sits in that path. The connection is the same
one the ssh provider uses (host, port, login, extra ``key_file`` / ``private_key`` /
``host_key`` / ``no_host_key_check`` / ``conn_timeout``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException

from mysqlbackup.remote import SSHTarget


class OpenSSHHook(BaseHook):
    """Builds ``ssh`` command lines from an Airflow connection of type ``ssh``."""

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "OpenSSH client"

    def __init__(self, ssh_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssh_conn_id = ssh_conn_id
        self._tmpdir: str | None = None

    def _private_dir(self) -> str:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="mysql-backup-ssh-")
            os.chmod(self._tmpdir, 0o700)
        return self._tmpdir

    def _write_private(self, name: str, content: str) -> str:
        path = os.path.join(self._private_dir(), name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content if content.endswith("\n") else content + "\n")
        return path

    @cached_property
    def target(self) -> SSHTarget:
        conn = self.get_connection(self.ssh_conn_id)
        extra = conn.extra_dejson or {}
        if not conn.host:
            raise AirflowException(f"connection {self.ssh_conn_id!r} has no host: set the database or storage host")
        if extra.get("private_key_passphrase") or conn.password:
            raise AirflowException(
                f"connection {self.ssh_conn_id!r} uses a password or key passphrase; the OpenSSH client runs "
                "with BatchMode=yes: use an unencrypted key (key_file or private_key) or an ssh-agent")
        key_file = extra.get("key_file")
        if extra.get("private_key"):
            key_file = self._write_private("id_key", str(extra["private_key"]))
        if key_file and not os.path.exists(key_file):
            raise AirflowException(f"connection {self.ssh_conn_id!r}: key_file {key_file} does not exist on this worker")
        no_check = str(extra.get("no_host_key_check", "false")).lower() in ("true", "1", "yes")
        known_hosts = None
        port = int(conn.port or 22)
        if extra.get("host_key"):
            key = str(extra["host_key"]).strip()
            if " " not in key:  # Airflow's form is the base64 key alone; OpenSSH wants "type base64"
                key = _key_type(key) + " " + key
            host = conn.host if port == 22 else f"[{conn.host}]:{port}"
            known_hosts = self._write_private("known_hosts", f"{host} {key}")
            no_check = False
        return SSHTarget(host=conn.host, port=port, user=conn.login or None, key_file=key_file,
                         known_hosts_file=known_hosts, strict_host_key_checking=not no_check,
                         connect_timeout=int(extra.get("conn_timeout") or 30))

    def get_conn(self) -> SSHTarget:
        return self.target

    def close(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self.__dict__.pop("target", None)

    def __enter__(self) -> "OpenSSHHook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key_type(b64: str) -> str:
    """The key type encoded at the start of an OpenSSH public key blob."""
    import base64
    import struct
    try:
        raw = base64.b64decode(b64)
        (n,) = struct.unpack(">I", raw[:4])
        return raw[4:4 + n].decode()
    except Exception as exc:  # noqa: BLE001 - any decode failure is a bad connection extra
        raise AirflowException(f"host_key in the connection extra is not a base64 OpenSSH public key: {exc}") from exc
