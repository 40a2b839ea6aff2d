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
    # a DAG serialized less than this ago is not written again: tests that parse several CMDBs in one
    # session (dag.test(), the api-server's reserialize) must each see their own
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
    "MYSQL_BACKUP_TASK_RETRIES": "0",
    "MYSQL_BACKUP_HOME": os.path.join(_SESSION_HOME, "mysql-backup"),
})
os.environ.pop("MYSQL_BACKUP_CATALOG_URL", None)
os.environ.pop("MYSQL_BACKUP_CMDB", None)


_SESSION: list = []


def pytest_configure(config):
    """SIGTERM (a CI time limit, `timeout`) becomes KeyboardInterrupt and stops the session, so
    fixture teardown still stops every server a test started instead of leaving them running.
    (Code under test may catch the KeyboardInterrupt, as Airflow's task runner does: the stop
    flag still ends the session after that test.)"""
    _install_stop_handlers()


def _interrupt(signum, frame):
    for session in _SESSION:
        session.shouldstop = f"signal {signum}: stopping after this test"
    raise KeyboardInterrupt(f"signal {signum}")


def _install_stop_handlers() -> None:
    """SIGTERM and SIGUSR1 stop the session. Airflow's task runner takes SIGTERM over while a
    task runs (and fails only the task): scripts/test.sh's time limit sends SIGUSR1, which
    nothing else here handles."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        if signal.getsignal(sig) is not _interrupt:
            signal.signal(sig, _interrupt)


def pytest_sessionstart(session):
    _SESSION.append(session)


# pytest.ini's timeout fails a test by raising in it; code that swallows that (a task runner)
# could still hang. Past this limit every thread's stack is dumped and the session is stopped
# (SIGUSR1, teardown runs); a minute later the process exits, whatever it is doing.
_HARD_LIMIT_S = float(os.environ.get("TEST_HARD_LIMIT_S", "900"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import faulthandler
    import signal
    import sys
    import threading

    def stop():
        sys.stderr.write(f"\n{item.nodeid}: still running after {_HARD_LIMIT_S:.0f} s; stacks:\n")
        faulthandler.dump_traceback(all_threads=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    def bail_out():
        sys.stderr.write(f"\n{item.nodeid}: did not stop after SIGUSR1; exiting\n")
        sys.stderr.flush()
        os._exit(3)

    _install_stop_handlers()  # a test may have replaced them
    timers = [threading.Timer(_HARD_LIMIT_S, stop), threading.Timer(_HARD_LIMIT_S + 60, bail_out)]
    for t in timers:
        t.daemon = True
        t.start()
    try:
        yield
    finally:
        for t in timers:
            t.cancel()


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
