"""Shared fixtures. Server fixtures start real MariaDB servers and a real sshd on loopback."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: make the whole session hermetic before
# any test imports it (own AIRFLOW_HOME, this repo's dags/plugins, no examples, no retries).
_SESSION_HOME = tempfile.mkdtemp(prefix="mbk-af-")
os.environ.update({
    "AIRFLOW_HOME": _SESSION_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    # Airflow records the worker's FQDN on every task run; a CI machine whose hostname is not
    # in /etc/hosts would wait on DNS each time
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",
    "MYSQL_BACKUP_TASK_RETRIES": "0",
    "MYSQL_BACKUP_HOME": os.path.join(_SESSION_HOME, "mysql-backup"),
})
os.environ.pop("MYSQL_BACKUP_CATALOG_URL", None)
os.environ.pop("MYSQL_BACKUP_CMDB", None)


def pytest_configure(config):
    """SIGTERM (a CI time limit, `timeout`) becomes KeyboardInterrupt, so fixture teardown still
    stops every server a test started instead of leaving them running."""
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated Airflow metadata DB (SQLite) for dag.test(); about 3 s once per session."""
    import subprocess
    import sys
    airflow = Path(sys.executable).with_name("airflow")
    res = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return _SESSION_HOME


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory) -> Path:
    from sandbox import make_template
    return make_template(tmp_path_factory.mktemp("mariadb") / "template")


def _sandbox(template: Path):
    """Start a source + GTID replica + sshd in a short private dir; stop and remove it after."""
    from sandbox import Sandbox
    state = tempfile.mkdtemp(prefix="mbk-sb-")  # short: unix socket paths are limited to 108 bytes
    sb = Sandbox.create(state, replica=True, template=template)
    try:
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox(mariadb_template):
    """One source + GTID replica + sshd for the whole session (tests must not break it)."""
    yield from _sandbox(mariadb_template)


@pytest.fixture
def fresh_sandbox(mariadb_template):
    """A private source + replica + sshd for a test that changes server state."""
    yield from _sandbox(mariadb_template)
