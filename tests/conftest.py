"""Shared fixtures. Server fixtures start real MariaDB servers and a real sshd on loopback."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory) -> Path:
    from sandbox import make_template
    return make_template(tmp_path_factory.mktemp("mariadb") / "template")


@pytest.fixture(scope="session")
def sandbox(mariadb_template):
    """One source + GTID replica + sshd for the whole session (tests must not break it)."""
    from sandbox import Sandbox
    # short path: unix socket paths are limited to 108 bytes
    state = tempfile.mkdtemp(prefix="mbk-sb-")
    sb = Sandbox.create(state, replica=True, template=mariadb_template)
    try:
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def fresh_sandbox(mariadb_template):
    """A private source + replica + sshd for a test that changes server state."""
    from sandbox import Sandbox
    state = tempfile.mkdtemp(prefix="mbk-sb-")
    sb = Sandbox.create(state, replica=True, template=mariadb_template)
    try:
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(state, ignore_errors=True)
