"""A small client of Airflow 3's REST API (stdlib only), for scripts/demo.sh.

It logs in as the simple auth manager's generated admin (the passwords file in $AIRFLOW_HOME),
and replaces what would otherwise be one `airflow` CLI start (several seconds each) per poll.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


class AirflowError(RuntimeError):
    pass


class Airflow:
    def __init__(self, base_url: str, home: str | Path, user: str = "admin"):
        self.base_url = base_url.rstrip("/")
        self.home = Path(home)
        self.user = user
        self._token: str | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=3) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def password(self) -> str:
        data = json.loads((self.home / PASSWORDS_FILE).read_text())
        return data[self.user]

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": self.user, "password": self.password()}).encode()
            req = urllib.request.Request(f"{self.base_url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                self._token = json.load(r)["access_token"]
        return self._token

    def call(self, method: str, path: str, body=None, ok_missing: bool = False, raw: bool = False,
             attempts: int = 6):
        """One API call. A server error is tried again (SQLite, the demo's metadata DB, answers
        "database is locked" while the scheduler and the DAG processor write to it)."""
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(1, attempts + 1):
            req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json",
                                                  "Authorization": f"Bearer {self.token()}"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    payload = r.read()
                break
            except urllib.error.HTTPError as exc:
                if ok_missing and exc.code == 404:
                    return None
                text = exc.read()[:2000].decode(errors="replace")
                if exc.code < 500 or attempt == attempts:
                    raise AirflowError(f"{method} {path}: HTTP {exc.code}: {text}") from exc
            except (OSError, urllib.error.URLError) as exc:
                if attempt == attempts:
                    raise AirflowError(f"{method} {path}: {exc}") from exc
            time.sleep(attempt)
        if raw:
            return payload.decode(errors="replace")
        return json.loads(payload) if payload else None

    def wait_healthy(self, timeout: float, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy() and (self.home / PASSWORDS_FILE).exists():
                return
            if not alive():
                raise AirflowError("Airflow exited while starting")
            time.sleep(0.5)
        raise AirflowError(f"Airflow was not healthy after {timeout:.0f} s")

    def wait_dag(self, dag_id: str, timeout: float) -> dict:
        """Wait until the DAG processor has parsed ``dag_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dag = self.call("GET", f"/api/v2/dags/{dag_id}", ok_missing=True)
            if dag:
                return dag
            time.sleep(1)
        errors = self.call("GET", "/api/v2/importErrors?limit=5") or {}
        raise AirflowError(f"DAG {dag_id} did not appear in {timeout:.0f} s; import errors: "
                           f"{json.dumps(errors.get('import_errors', []))[:2000]}")

    def upsert(self, kind: str, entities: list[dict]) -> None:
        """Create or overwrite connections or pools (``kind``: connections, pools) in one call."""
        res = self.call("PATCH", f"/api/v2/{kind}", {"actions": [
            {"action": "create", "entities": entities, "action_on_existence": "overwrite"}]})
        errors = (res or {}).get("create", {}).get("errors") or []
        if errors:
            raise AirflowError(f"setting {kind}: {errors}")

    def run(self, dag_id: str, run_id: str, conf: dict | None = None, timeout: float = 1800,
            log=None) -> str:
        """Unpause, trigger ``run_id`` (unless it exists) and wait for it; returns its final state."""
        self.call("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": False})
        if not self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", ok_missing=True):
            try:
                self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                          {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
            except AirflowError as exc:
                if "HTTP 409" not in str(exc):  # 409: an earlier attempt created it
                    raise
        deadline = time.monotonic() + timeout
        state, last = "", ""
        while time.monotonic() < deadline:
            state = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            if log and state != last:
                log(f"{dag_id} {run_id}: {state}")
            last = state
            time.sleep(1)
        raise AirflowError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        res = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                               f"{urllib.parse.quote(key)}?deserialize=true&stringify=false")
        return res["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
                                "?full_content=true", raw=True)
