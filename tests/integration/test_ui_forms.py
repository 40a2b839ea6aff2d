"""Every DAG trigger form, in the real UI (a real api-server and chromium), and trigger-time checks.

1. Every DAG that has params (found from the server's serialized DAGs, not from a list here) opens
   its trigger form in the UI; the Trigger button must be enabled with nothing typed, and a click
   must create a run whose conf is the params' defaults. A form that is not triggerable as it
   opens fails with the DAG and the fields the UI marks required or invalid.
2. POST /api/v2/dags/mysql_flashback/dagRuns refuses bad conf with HTTP 400 (and creates no run)
   and accepts good conf: Airflow validates the conf against the params' JSON schema at trigger.

One api-server (and one browser) for the whole module. No scheduler runs: a run is only created
(queued). The module deletes the runs it made and pauses again what it unpaused.

The opened mysql_flashback form is saved as a screenshot in the test's temporary dir, and to
docs/flashback-trigger-form.png when that file is missing or UPDATE_SCREENSHOTS=1 is set (its
logical date is the time of the run: rewriting it on every run would dirty the work tree).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from uikit import REPO, AirflowServer, LoginError, airflow_api_server, chromium, login, new_page, save_screenshot

pytestmark = pytest.mark.server

FLASHBACK = "mysql_flashback"
INSTANCES = ("ui_shop_main", "ui_shop_replica")
SCREENSHOT = REPO / "docs" / "flashback-trigger-form.png"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this module's screenshots go (a failing form is saved there too)."""
    return tmp_path_factory.mktemp("screenshots")


def _instance(name: str, **kw: Any) -> dict[str, Any]:
    row = {"name": name, "host": f"{name}.example.internal", "port": 3306, "role": "primary", "flavor": "mariadb",
           "ssh_conn_id": "ssh_db", "mysql_conn_id": "mysql_backup", "owner": "dba@example.internal", "app": "shop"}
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def cmdb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CMDB of two fake instances (a primary and its replica); nothing ever connects to them."""
    doc = {"defaults": {"storage": {"ssh_conn_id": "store1", "base_dir": "/srv/backups"}},
           "storages": [{"ssh_conn_id": "store1", "max_concurrent_backups": 2}],
           "instances": [_instance(INSTANCES[0]),
                         _instance(INSTANCES[1], role="replica", replica_of=INSTANCES[0])],
           # the restore DAGs exist only with a declared target (nothing connects to it either)
           "restore_targets": [{"name": "restore1", "host": "10.9.9.9", "port": 3306, "ssh_conn_id": "ssh_restore1",
                                "mysql_conn_id": "mysql_restore1", "datadir": "/var/lib/mysql", "flavor": "mariadb",
                                "stop_command": "systemctl stop mariadb", "start_command": "systemctl start mariadb"}]}
    path = tmp_path_factory.mktemp("cmdb") / "cmdb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Cleanup:
    """What this module changed in the session's metadata DB, undone at module teardown."""

    def __init__(self, server: AirflowServer) -> None:
        self.server = server
        self.runs: list[tuple[str, str]] = []
        self.paused: dict[str, bool] = {}

    def run(self, dag_id: str, run_id: str) -> None:
        self.runs.append((dag_id, run_id))

    def pause_state(self, dag_id: str, is_paused: bool) -> None:
        self.paused.setdefault(dag_id, is_paused)

    def undo(self) -> None:
        failed = []
        for dag_id, run_id in self.runs:
            res = self.server.api("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if res.status_code not in (204, 404):
                failed.append(f"DELETE run {dag_id}/{run_id}: HTTP {res.status_code} {res.text[:200]}")
        for dag_id, was_paused in self.paused.items():
            res = self.server.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": was_paused})
            if res.status_code != 200:
                failed.append(f"PATCH is_paused={was_paused} {dag_id}: HTTP {res.status_code} {res.text[:200]}")
        assert not failed, "could not undo what the module changed:\n" + "\n".join(failed)


@pytest.fixture(scope="module")
def server(airflow_db: str, cmdb_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    with airflow_api_server(env={"MYSQL_BACKUP_CMDB": str(cmdb_file)},
                            state_dir=tmp_path_factory.mktemp("api-server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def cleanup(server: AirflowServer) -> Iterator[Cleanup]:
    undo = Cleanup(server)
    try:
        yield undo
    finally:
        undo.undo()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page(browser, server: AirflowServer):
    """The admin's page, logged in through the UI's login form."""
    pg = new_page(browser)
    login(pg, server.base_url, server.username, server.password)
    yield pg
    pg.context.close()


# --- the DAGs and their runs, through the REST API ---------------------------------------------

def _ok(res, what: str) -> Any:
    assert res.status_code == 200, f"{what}: HTTP {res.status_code} {res.text[:1000]}"
    return res.json()


def serialized_dags(server: AirflowServer) -> list[dict]:
    """The DAGs this server's parse wrote (the session DB may hold others, from earlier tests)."""
    dags, offset = [], 0
    while True:
        batch = _ok(server.api("GET", "/api/v2/dags", params={"limit": 100, "offset": offset}), "GET /api/v2/dags")
        dags += batch["dags"]
        offset += len(batch["dags"])
        if not batch["dags"] or offset >= batch["total_entries"]:
            break
    fresh = []
    for dag in dags:
        parsed = dag.get("last_parsed_time")
        if not dag.get("is_stale") and parsed and _utc(parsed) >= server.serialized_at:
            fresh.append(dag)
    return fresh


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text)  # Python 3.11 reads the Z


def dags_with_params(server: AirflowServer) -> dict[str, dict]:
    """dag_id -> its params as the API gives them ({name: {"value", "schema", "description"}})."""
    found = {}
    for dag in serialized_dags(server):
        details = _ok(server.api("GET", f"/api/v2/dags/{dag['dag_id']}/details"), f"details of {dag['dag_id']}")
        if details.get("params"):
            found[dag["dag_id"]] = details
    return found


def run_ids(server: AirflowServer, dag_id: str) -> set[str]:
    ids: set[str] = set()
    offset = 0
    while True:
        batch = _ok(server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100, "offset": offset}),
                    f"runs of {dag_id}")
        ids |= {r["dag_run_id"] for r in batch["dag_runs"]}
        offset += len(batch["dag_runs"])
        if not batch["dag_runs"] or offset >= batch["total_entries"]:
            return ids


def test_the_cmdb_parses_without_import_errors(server: AirflowServer) -> None:
    errors = _ok(server.api("GET", "/api/v2/importErrors", params={"limit": 100}), "GET /api/v2/importErrors")
    ours = [e for e in errors["import_errors"] if e.get("bundle_name") in (None, "dags-folder")]
    assert ours == [], "\n\n".join(f"{e['filename']}:\n{e['stack_trace'][-2000:]}" for e in ours)
    names = {d["dag_id"] for d in serialized_dags(server)}
    assert {FLASHBACK, *(f"mysql_backup__{i}" for i in INSTANCES)} <= names, sorted(names)
    # the server serves this module's parse, not a DAG an earlier test serialized from its CMDB
    details = _ok(server.api("GET", f"/api/v2/dags/{FLASHBACK}/details"), f"details of {FLASHBACK}")
    assert details["params"]["instance"]["schema"].get("enum") == list(INSTANCES), details["params"]["instance"]


def test_authentication_is_real(server: AirflowServer, browser) -> None:
    """The simple auth manager checks the password (all-admins mode is off), in the API and the UI."""
    res = server.api("POST", "/auth/token", json={"username": server.username, "password": "wrong"})
    assert res.status_code == 401, res.text[:300]
    anonymous = httpx.post(f"{server.base_url}/api/v2/dags/{FLASHBACK}/dagRuns",
                           json={"logical_date": None, "conf": {}}, timeout=30)
    assert anonymous.status_code == 401, anonymous.text[:300]
    pg = new_page(browser)
    try:
        with pytest.raises(LoginError, match="Invalid credentials"):
            login(pg, server.base_url, server.username, "wrong")
    finally:
        pg.context.close()


# --- 1. every trigger form, in the browser ------------------------------------------------------

# Each param row of the form: the Chakra field root, its label (the param's title or name, then
# " *" when required), whether the UI marks it required or invalid, and its error text. Rows of
# the "Advanced Options" section (run id, note, conf JSON) are not params and are left out.
_FORM_ROWS_JS = """(form) => Array.from(form.querySelectorAll('[data-scope=field][data-part=root]'))
  .filter((row) => !row.closest('[id$="item:advancedOptions"]'))
  .map((row) => {
    const label = row.querySelector('label[data-part=label]');
    const error = row.querySelector('[data-part=error-text]');
    return {
      label: label ? label.textContent.replace(/\\*\\s*$/, '').trim() : '',
      required: Boolean(label && label.hasAttribute('data-required')),
      invalid: row.hasAttribute('data-invalid') || Boolean(label && label.hasAttribute('data-invalid')),
      error: error ? error.textContent.trim() : '',
    };
  })"""


def _form_rows(form) -> list[dict]:
    return form.evaluate(_FORM_ROWS_JS)


def _ui_required(schema: dict) -> bool:
    """The UI's rule (isParamRequired.tsx): a field is required when its schema has a type that
    does not include "null"; a required field whose value is null or "" keeps Trigger disabled."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def _describe(rows: list[dict], details: dict) -> str:
    required = [r["label"] for r in rows if r["required"]]
    invalid = [f"{r['label']} ({r['error'] or 'invalid'})" for r in rows if r["invalid"]]
    empty = [name for name, p in details["params"].items() if _ui_required(p["schema"]) and p["value"] in (None, "")]
    return (f"fields marked invalid: {invalid or 'none'}; fields marked required: {required or 'none'}; "
            f"required (typed without null) yet null or empty by default: {empty or 'none'}")


def _open_form(page, server: AirflowServer, dag_id: str, details: dict):
    """Open the DAG's trigger dialog; return (dialog, form) once every param has its row."""
    from playwright.sync_api import expect
    page.goto(f"{server.base_url}/dags/{dag_id}")
    page.get_by_test_id("trigger-dag-button").first.click()
    # the trigger dialog (the page may hold other, hidden, role=dialog elements: popovers)
    dialog = page.get_by_role("dialog").filter(has=page.get_by_test_id("trigger-dag-submit"))
    form = dialog.get_by_test_id("config-form")
    expect(form).to_be_visible()
    titles = {p["schema"].get("title") or name for name, p in details["params"].items()}
    rows: list[dict] = []
    for _ in range(300):  # the rows appear once the form has fetched the DAG's params
        rows = _form_rows(form)
        if titles <= {r["label"] for r in rows}:
            break
        page.wait_for_timeout(100)
    else:
        raise AssertionError(f"the trigger form shows no row for {sorted(titles - {r['label'] for r in rows})}")
    return dialog, form


def _fit_viewport(page, dialog) -> None:
    """Make the viewport tall enough for the whole dialog (for a readable screenshot of all of it)."""
    height = dialog.evaluate("(d) => d.scrollHeight")
    top = dialog.bounding_box()["y"]
    page.set_viewport_size({"width": page.viewport_size["width"], "height": int(height + 2 * top + 40)})
    page.wait_for_timeout(300)  # the dialog re-lays out


def _trigger_in_ui(page, server: AirflowServer, cleanup: Cleanup, dag_id: str, details: dict,
                   shots: Path) -> str | None:
    """Open, check, click, verify. Returns what went wrong (a screenshot of it is in shots), or None."""
    from playwright.sync_api import Error as PlaywrightError
    try:
        problem = _trigger_steps(page, server, cleanup, dag_id, details, shots)
    except (AssertionError, PlaywrightError) as exc:  # a step that timed out: report it with the others
        problem = f"{dag_id}: {type(exc).__name__}: {str(exc)[:1500]}"
    if problem:
        shot = save_screenshot(page, shots / f"{dag_id}-problem.png")
        problem += f" (screenshot: {shot})"
    return problem


def _trigger_steps(page, server: AirflowServer, cleanup: Cleanup, dag_id: str, details: dict,
                   shots: Path) -> str | None:
    from playwright.sync_api import expect

    before = run_ids(server, dag_id)
    cleanup.pause_state(dag_id, details["is_paused"])  # the form unpauses a paused DAG on trigger
    dialog, form = _open_form(page, server, dag_id, details)
    submit = dialog.get_by_test_id("trigger-dag-submit")
    try:
        expect(submit).to_be_enabled(timeout=10_000)
    except AssertionError:
        return (f"{dag_id}: the Trigger button is disabled as the form opens; "
                f"{_describe(_form_rows(form), details)}")
    if dag_id == FLASHBACK:
        size = page.viewport_size
        _fit_viewport(page, dialog)
        shot = save_screenshot(dialog, shots / SCREENSHOT.name)
        page.set_viewport_size(size)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists():
            shutil.copyfile(shot, SCREENSHOT)
    # success closes the dialog (and opens the new run); a refused trigger shows the error in it
    refused = dialog.locator(".chakra-alert__description")
    alerts = refused.count()
    submit.click()
    for _ in range(300):
        if refused.count() > alerts:
            return f"{dag_id}: the server refused the form's trigger: {' '.join(refused.last.inner_text().split())}"
        if not dialog.count():
            break
        page.wait_for_timeout(100)
    else:
        return f"{dag_id}: after Trigger the dialog neither closed nor showed an error"

    new: set[str] = set()
    for _ in range(100):
        new = run_ids(server, dag_id) - before
        if new:
            break
        page.wait_for_timeout(100)
    for run_id in new:
        cleanup.run(dag_id, run_id)
    if len(new) != 1:
        return f"{dag_id}: expected one new run after Trigger, found {sorted(new)}"
    run = _ok(server.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{new.pop()}"), f"the new run of {dag_id}")
    defaults = {name: p["value"] for name, p in details["params"].items()}
    if run["conf"] != defaults:
        diff = {k: (defaults.get(k), run["conf"].get(k)) for k in defaults.keys() | run["conf"].keys()
                if defaults.get(k) != run["conf"].get(k)}
        return f"{dag_id}: the run's conf is not the params' defaults: {{param: (default, conf)}} = {diff}"
    if run["triggered_by"] != "ui" or run["state"] != "queued":
        return f"{dag_id}: the new run is {run['state']}, triggered by {run['triggered_by']}"
    return None


def test_every_trigger_form_is_triggerable_as_it_opens(server: AirflowServer, page, cleanup: Cleanup,
                                                        shots: Path) -> None:
    forms = dags_with_params(server)
    assert FLASHBACK in forms, f"no params found for {FLASHBACK}: the discovery is broken ({sorted(forms)})"
    problems = [p for dag_id, details in sorted(forms.items())
                if (p := _trigger_in_ui(page, server, cleanup, dag_id, details, shots))]
    assert not problems, "\n".join(problems)
    assert (shots / SCREENSHOT.name).stat().st_size > 10_000


# --- 2. trigger-time validation through the REST API -------------------------------------------

def _trigger(server: AirflowServer, conf: dict):
    return server.api("POST", f"/api/v2/dags/{FLASHBACK}/dagRuns", json={"logical_date": None, "conf": conf})


REFUSED = {
    "table-with-shell": {"tables": ["shop.orders; rm -rf /"]},
    "table-command-substitution": {"tables": ["$(reboot)"]},
    "database-with-space": {"databases": ["a b"]},
    "200000-tables": {"tables": [f"shop.t{i}" for i in range(200_000)]},
    "datetime-word": {"start_datetime": "yesterday"},
    "datetime-out-of-range": {"start_datetime": "2026-13-45 99:00:00"},
    "position-with-sql": {"start_position": "binlog.000001:4; DROP"},
    "unknown-instance": {"instance": "nope"},
}


@pytest.mark.parametrize("conf", REFUSED.values(), ids=REFUSED.keys())
def test_bad_conf_is_refused_at_trigger(server: AirflowServer, cleanup: Cleanup, conf: dict) -> None:
    before = run_ids(server, FLASHBACK)
    res = _trigger(server, conf)
    if res.status_code == 200:
        cleanup.run(FLASHBACK, res.json()["dag_run_id"])
    shown = {k: (v if len(str(v)) < 200 else f"<{len(v)} items>") for k, v in conf.items()}
    assert res.status_code == 400, f"{shown}: HTTP {res.status_code} {res.text[:500]}"
    assert run_ids(server, FLASHBACK) == before, f"{shown}: refused, yet a run was created"
    # short, whatever was sent (200,000 table names must not come back in the answer)
    assert len(res.content) < 10_000, f"{shown}: the 400 body is {len(res.content)} bytes: {res.text[:300]}"


ACCEPTED = {
    "all-defaults": {},
    "window-and-tables": {"instance": INSTANCES[0], "start_datetime": "2026-11-24 10:00:00",
                          "stop_datetime": "2026-11-24 10:05:00", "tables": ["shop.orders", "`my db`.`t.1`"]},
    # only the task can tell the window is reversed (it may be given in other fields too)
    "reversed-window": {"start_datetime": "2026-11-24 10:05:00", "stop_datetime": "2026-11-24 10:00:00"},
}


@pytest.mark.parametrize("conf", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_good_conf_is_accepted_at_trigger(server: AirflowServer, cleanup: Cleanup, conf: dict) -> None:
    res = _trigger(server, conf)
    assert res.status_code == 200, f"{conf}: HTTP {res.status_code} {res.text[:1000]}"
    run = res.json()
    cleanup.run(FLASHBACK, run["dag_run_id"])
    assert run["state"] == "queued"
    assert run["conf"] == conf
    got = _ok(server.api("GET", f"/api/v2/dags/{FLASHBACK}/dagRuns/{run['dag_run_id']}"), "the new run")
    assert got["conf"] == conf
