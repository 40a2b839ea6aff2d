"""Helpers for tests that drive a real Airflow 3 api-server through its REST API and a real chromium.

    with airflow_api_server(env={"MYSQL_BACKUP_CMDB": str(cmdb)}) as server:
        token = server.token()                               # POST /auth/token
        server.api("GET", "/api/v2/dags")                    # with that Bearer token
        with chromium() as browser:
            page = new_page(browser)
            login(page, server.base_url, server.username, server.password)
            save_screenshot(page, tmp_path / "dags.png")

What they do, and why:

- ``airflow_api_server`` runs ``airflow api-server`` (Airflow 3.3) on a free loopback port with the
  session's AIRFLOW_HOME and metadata DB (tests/conftest.py makes both temporary; the DB must be
  migrated first: the ``airflow_db`` fixture), this repo's dags/ and plugins/, no examples. The
  DAGs are serialized into the DB with ``airflow dags reserialize`` while the server starts (the
  api-server only reads serialized DAGs, per request; no dag-processor or scheduler runs), with
  ``[core] min_serialized_dag_update_interval`` 0 so a DAG an earlier test serialized from another
  CMDB moments ago is overwritten, not kept. It authenticates with the simple
  auth manager: ``[core] simple_auth_manager_users`` names the user and its role, and the
  passwords file (``[core] simple_auth_manager_passwords_file``; by default
  ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``) is written beforehand with a
  known password (random per server unless given), so the manager finds the user there and
  generates nothing. All-admins mode is forced off: requests without a token get 401. The server
  runs in its own session and its whole process group is stopped on exit (checked empty).
- ``chromium`` launches Debian's /usr/bin/chromium through Playwright's sync API
  (``playwright install``, the browser download, is neither needed nor possible here).
- ``login`` signs in on the UI's login page; a wrong password fails at once with the page's error.

Nothing here mocks anything, and nothing uses a fixed port.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).with_name("airflow")

#: Debian's chromium (scripts/install.sh --dev installs it); CHROMIUM overrides the path.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Headless, no sandbox (root in CI), and nothing that reaches the network on its own.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

#: How long the api-server may take to answer its health check (about 7 s on an idle 2-core machine).
STARTUP_TIMEOUT_S = 180.0
#: How long it may take to stop after SIGTERM before its process group is killed.
STOP_TIMEOUT_S = 20.0


class AirflowServerError(RuntimeError):
    """The api-server did not start (the message carries the end of its log)."""


class LoginError(AssertionError):
    """The UI refused the login (the message carries the page's error)."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the OS picks it: bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest_token(base_url: str, username: str, password: str, *, timeout: float = 30.0) -> str:
    """A JWT for the REST API: POST /auth/token with the user's login (201 {"access_token"})."""
    res = httpx.post(f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=timeout)
    if res.status_code != 201:
        raise AssertionError(f"POST /auth/token as {username!r}: HTTP {res.status_code} {res.text[:500]}")
    return res.json()["access_token"]


@dataclass
class AirflowServer:
    """A running ``airflow api-server``; ``api()`` calls its REST API as the admin user."""

    base_url: str
    username: str
    password: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen
    #: when the DAGs were serialized for this server (DAGs parsed before come from other tests)
    serialized_at: datetime
    _token: str | None = field(default=None, repr=False)
    _client: httpx.Client | None = field(default=None, repr=False)

    def token(self) -> str:
        """The admin's REST token (fetched once, then reused)."""
        if self._token is None:
            self._token = rest_token(self.base_url, self.username, self.password)
        return self._token

    def api(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """One REST call (``path`` starts with /), with the admin's Bearer token unless ``token`` is given."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=60.0)
        headers = {"Authorization": f"Bearer {token or self.token()}", **kwargs.pop("headers", {})}
        return self._client.request(method, path, headers=headers, **kwargs)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def airflow_env(*, port: int, home: str, passwords_file: Path, username: str,
                dags_folder: Path, plugins_folder: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the api-server and of the CLI calls that prepare it."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # write every parsed DAG: by default a DAG serialized less than 30 s ago (by an earlier
        # test's dag.test(), from another CMDB) is silently kept
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # tokens are signed with this; one worker, but never a guessable default
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
    })
    env.update(extra or {})
    return env


def reserialize_dags(env: Mapping[str, str]) -> None:
    """Parse the DAGs folder and write the serialized DAGs into the metadata DB (about 4 s).

    ``airflow dags reserialize`` is what the api-server needs and nothing more: it reads DAGs only
    from the DB, and a dag-processor run would cost its start-up on top of the same parse.
    """
    res = subprocess.run([str(AIRFLOW), "dags", "reserialize"], env=dict(env), capture_output=True, text=True,
                         check=False, timeout=300)
    if res.returncode != 0:
        raise AirflowServerError(f"airflow dags reserialize failed ({res.returncode}):\n{res.stderr[-4000:]}")


def _wait_healthy(proc: subprocess.Popen, base_url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if proc.poll() is not None:
            raise AirflowServerError(f"airflow api-server exited with {proc.returncode} before it answered:\n"
                                     f"{log_path.read_text(errors='replace')[-4000:]}")
        try:
            res = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5.0)
            if res.status_code == 200 and res.json().get("metadatabase", {}).get("status") == "healthy":
                return
            last = f"HTTP {res.status_code} {res.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise AirflowServerError(f"airflow api-server not healthy after {timeout:.0f} s (last: {last}):\n"
                                     f"{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)


def stop_process_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after ``timeout``; return once it is empty."""
    pgid = proc.pid  # started with start_new_session: it leads its own group
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.1)
    proc.wait(timeout=5)
    if _group_alive(pgid):
        raise RuntimeError(f"process group {pgid} still has members after SIGKILL")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def airflow_api_server(*, env: Mapping[str, str] | None = None, username: str = "admin",
                       password: str | None = None, dags_folder: Path = REPO / "dags",
                       plugins_folder: Path = REPO / "plugins", home: str | None = None,
                       state_dir: Path | None = None, reserialize: bool = True,
                       startup_timeout: float = STARTUP_TIMEOUT_S) -> Iterator[AirflowServer]:
    """Start ``airflow api-server`` on a free 127.0.0.1 port; stop its whole process group on exit.

    env: extra variables for the server and the DAG parse (e.g. MYSQL_BACKUP_CMDB).
    home: AIRFLOW_HOME (default: the session's, from tests/conftest.py); its DB must be migrated.
    state_dir: where the passwords file and the server log go (default: a temporary dir, removed).
    """
    home = home or os.environ["AIRFLOW_HOME"]
    password = password or secrets.token_urlsafe(12)
    own_state = state_dir is None
    state = Path(tempfile.mkdtemp(prefix="mbk-api-")) if state_dir is None else Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    passwords_file = state / "simple_auth_manager_passwords.json"
    passwords_file.write_text(json.dumps({username: password}) + "\n")
    passwords_file.chmod(0o600)
    log_path = state / "api-server.log"
    port = free_port()
    full_env = airflow_env(port=port, home=home, passwords_file=passwords_file, username=username,
                           dags_folder=dags_folder, plugins_folder=plugins_folder, extra=env)
    base_url = full_env["AIRFLOW__API__BASE_URL"]
    server: AirflowServer | None = None
    proc: subprocess.Popen | None = None
    try:
        serialized_at = datetime.now(UTC)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(port),
                                     "--workers", "1"],
                                    env=full_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=state)
        # the server reads serialized DAGs per request, not at start-up: parse while it starts
        if reserialize:
            reserialize_dags(full_env)
        _wait_healthy(proc, base_url, log_path, startup_timeout)
        server = AirflowServer(base_url=base_url, username=username, password=password, env=full_env,
                               log_path=log_path, process=proc, serialized_at=serialized_at)
        # our random password logs in: the port is ours, not another server's that took it first
        try:
            server.token()
        except AssertionError as exc:
            raise AirflowServerError(f"{exc}\n{server.log_tail()}") from None
        yield server
    finally:
        if server is not None:
            server.close()
        if proc is not None:
            stop_process_group(proc)
        if own_state:
            shutil.rmtree(state, ignore_errors=True)


@contextmanager
def chromium(*, executable: str = CHROMIUM, args: tuple[str, ...] = CHROMIUM_ARGS) -> Iterator[Browser]:
    """A headless chromium driven by Playwright (sync API); closed with its driver on exit.

    Playwright gives the browser a fresh temporary profile (user data dir) and removes it after.
    """
    from playwright.sync_api import sync_playwright
    if not os.access(executable, os.X_OK):
        raise FileNotFoundError(f"{executable} not found: scripts/install.sh --dev installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=list(args),
                                     chromium_sandbox=False)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, *, width: int = 1400, height: int = 1000, timeout_ms: float = 30_000) -> Page:
    """A page in a new context (own cookies) with a fixed viewport, an English UI and a UTC clock."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US",
                                  timezone_id="UTC")
    context.set_default_timeout(timeout_ms)
    return context.new_page()


def login(page: Page, base_url: str, user: str, password: str, *, timeout: float = 30.0) -> None:
    """Sign in on the UI's login page (the simple auth manager's /auth/login).

    Returns once the UI left the login page and holds its ``_token`` cookie; raises LoginError
    with the page's message (e.g. "401 Unauthorized Invalid credentials") when it refuses.
    """
    page.goto(f"{base_url}/auth/login")
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    page.locator("button[type=submit]").click()
    failure = page.locator(".chakra-alert__description").filter(has_text=re.compile(r"\b[45]\d\d\b"))
    deadline = time.monotonic() + timeout
    while "/auth/login" in page.url:
        if failure.count():
            raise LoginError(f"login as {user!r} refused: {' '.join(failure.first.inner_text().split())}")
        if time.monotonic() > deadline:
            raise LoginError(f"login as {user!r}: still on {page.url} after {timeout:.0f} s")
        page.wait_for_timeout(100)
    if not any(c["name"] == "_token" for c in page.context.cookies(base_url)):
        raise LoginError(f"login as {user!r}: left the login page but the UI set no _token cookie")


def save_screenshot(target: Page | Locator, path: str | os.PathLike[str], *, full_page: bool = True) -> Path:
    """Write a PNG of a page (the whole scrollable page by default) or of one element; returns its path."""
    from playwright.sync_api import Page
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(target, Page):
        target.screenshot(path=str(out), full_page=full_page)
    else:
        target.screenshot(path=str(out))
    return out
