"""DAG integrity: the DAG files import cleanly, render the CMDB, and bad rows are loud."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def dagbag(monkeypatch, cmdb: Path | None):
    if cmdb is None:
        monkeypatch.delenv("MYSQL_BACKUP_CMDB", raising=False)
    else:
        monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(cmdb))
    from airflow.dag_processing.dagbag import BundleDagBag
    return BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")


def row(name: str, **kw) -> dict:
    base = {"name": name, "host": "db.example.internal", "port": 3306, "role": "primary", "flavor": "mariadb",
            "ssh_conn_id": "ssh_db", "mysql_conn_id": "mysql_backup", "owner": "dba@example.internal",
            "app": "shop"}
    base.update(kw)
    return base


def write_cmdb(tmp_path: Path, rows: list[dict], **defaults) -> Path:
    doc = {"defaults": {"storage": {"ssh_conn_id": "store1", "base_dir": "/srv/backups"}, **defaults},
           "storages": [{"ssh_conn_id": "store1", "max_concurrent_backups": 3}],
           "instances": rows}
    path = tmp_path / "cmdb.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_default_cmdb_imports_without_errors(monkeypatch):
    bag = dagbag(monkeypatch, None)
    assert bag.import_errors == {}
    assert {"mysql_backup_cmdb_health", "mysql_backup__shop_main", "mysql_backup__shop_replica1"} <= set(bag.dag_ids)


def test_backup_dag_shape(monkeypatch, tmp_path):
    cmdb = write_cmdb(tmp_path, [row("shop_main", policy={"full_schedule": "30 1 * * *"}),
                                 row("shop_r1", role="replica", replica_of="shop_main", host="db2.example.internal")])
    bag = dagbag(monkeypatch, cmdb)
    assert bag.import_errors == {}
    dag = bag.dags["mysql_backup__shop_main"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "collect_facts", "choose_source", "reserve_space", "backup", "verify_backup", "catalog_backup",
        "expire_backups"]
    assert dag.max_active_runs == 1
    # the trigger form: kind, whose default is valid (the DAG's own validator is skipped at parse time)
    assert dag.params.validate() == {"kind": "auto"} and dag.get_task("backup").params.validate() == {}
    assert {"mysql-backup", "app:shop", "owner:dba@example.internal"} <= set(dag.tags)
    assert dag.timetable.summary == "30 1 * * *"
    assert dag.get_task("backup").pool == "mysql_backup_storage__store1"
    assert dag.get_task("verify_backup").pool == "mysql_backup_storage__store1"
    assert all(t.on_failure_callback for t in dag.tasks)
    assert all(t.execution_timeout for t in dag.tasks)
    assert dag.get_task("backup").execution_timeout.total_seconds() == 12 * 3600
    assert [r.name for r in dag.get_task("collect_facts").replicas] == ["shop_r1"]
    # a replica whose primary is listed gets a DAG, but no schedule: the primary's DAG backs it up
    assert bag.dags["mysql_backup__shop_r1"].schedule is None


@pytest.mark.parametrize("bad, field", [
    ({"flavor": "postgres"}, "flavor"),
    ({"name": "bad name; rm -rf /"}, "name"),
    ({"role": "replica", "replica_of": "nowhere"}, "replica_of"),
    ({"port": "3306x"}, "port"),
    ({"replcia_of": "shop_main"}, "replcia_of"),
])
def test_bad_row_is_an_import_error_and_good_rows_keep_their_dags(monkeypatch, tmp_path, bad, field):
    broken = row("broken")
    broken.update(bad)
    del_missing = {k: v for k, v in broken.items()}
    cmdb = write_cmdb(tmp_path, [row("good_one"), del_missing, row("good_two")])
    bag = dagbag(monkeypatch, cmdb)
    assert "mysql_backup__good_one" in bag.dag_ids and "mysql_backup__good_two" in bag.dag_ids
    assert "mysql_backup_cmdb_health" in bag.dag_ids
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    assert list(errors) == ["mysql_backup_cmdb_errors.py"]
    text = errors["mysql_backup_cmdb_errors.py"]
    assert "row 2" in text and f"'{field}'" in text, text


def test_missing_required_field_names_it(monkeypatch, tmp_path):
    broken = row("broken")
    del broken["mysql_conn_id"]
    bag = dagbag(monkeypatch, write_cmdb(tmp_path, [broken, row("fine")]))
    text = next(iter(bag.import_errors.values()))
    assert "mysql_conn_id" in text and "broken" in text
    assert "mysql_backup__fine" in bag.dag_ids and "mysql_backup__broken" not in bag.dag_ids


def test_unreadable_cmdb_still_gives_the_health_dag(monkeypatch, tmp_path):
    path = tmp_path / "cmdb.yaml"
    path.write_text("instances: [unclosed")
    bag = dagbag(monkeypatch, path)
    assert "mysql_backup_cmdb_health" in bag.dag_ids
    assert len(bag.import_errors) == 1


def test_health_dag_fails_naming_the_bad_row_and_alerts_the_platform(monkeypatch, tmp_path, airflow_db):
    import json

    from receivers import Hook
    hook = Hook().start()
    try:
        cmdb = write_cmdb(tmp_path, [row("good"), row("bad", flavor="oracle")],
                          alerts={"webhook": {"url": hook.url("/cmdb")}})
        doc = yaml.safe_load(cmdb.read_text())
        doc["platform"] = {"owner": "dba-platform", "email_to": ["platform@example.internal"]}
        cmdb.write_text(yaml.safe_dump(doc))
        bag = dagbag(monkeypatch, cmdb)
        dr = bag.dags["mysql_backup_cmdb_health"].test()
        assert dr.state == "failed"
        [req] = hook.requests
        alert = json.loads(req["body"])
        assert alert["dag_id"] == "mysql_backup_cmdb_health" and alert["owner"] == "dba-platform"
        assert "row 2" in alert["error"] and "'flavor'" in alert["error"] and "oracle" in alert["error"]
    finally:
        hook.stop()
    cmdb.write_text(cmdb.read_text().replace("oracle", "mariadb"))
    dr = bag.dags["mysql_backup_cmdb_health"].test()
    assert dr.state == "success"


def test_plugin_manager_does_not_reimport_our_modules_under_bare_names():
    """Airflow imports every plugins/*.py as sys.modules[<stem>]: our packages must be ignored; only the
    plugin file itself is loaded that way."""
    from airflow._shared.module_loading import find_path_from_directory
    found = [Path(p).relative_to(REPO / "plugins").as_posix()
             for p in find_path_from_directory(str(REPO / "plugins"), ".airflowignore", "glob")
             if p.endswith(".py")]
    assert found == ["mysqlbackup_plugin.py"]


def test_the_plugin_registers_the_trigger_guard():
    from airflow import plugins_manager
    _apps, middlewares = plugins_manager.get_fastapi_plugins()
    assert [m["name"] for m in middlewares] == ["mysql-backup trigger guard"]


def test_an_incremental_schedule_runs_the_dag_at_both_times(monkeypatch, tmp_path):
    cmdb = write_cmdb(tmp_path, [row("shop_main", policy={"full_schedule": "0 2 * * 0",
                                                          "incremental_schedule": "0 2 * * 1-6"})])
    dag = dagbag(monkeypatch, cmdb).dags["mysql_backup__shop_main"]
    assert type(dag.timetable).__name__ == "MultipleCronTriggerTimetable"
    assert dag.timetable.summary == "0 2 * * 0, 0 2 * * 1-6"
    assert "incremental 0 2 * * 1-6 (chains of at most 6)" in dag.doc_md
