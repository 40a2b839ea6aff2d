"""The mysql_flashback DAG with dag.test(run_conf=...): review first, apply on request."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from test_flashback_e2e import DB, TABLES, checksums, master_pos, workload

pytestmark = pytest.mark.server

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def env(fresh_sandbox, airflow_db, tmp_path, monkeypatch):
    sb = fresh_sandbox
    src = sb.source
    conn = src.connect()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode=''")
        cur.execute(f"CREATE DATABASE `{DB}`")
        for ddl in TABLES.values():
            cur.execute(ddl)
        cur.execute("CREATE USER 'fbadmin'@'127.0.0.1' IDENTIFIED BY 'Adm-1-x'")
        cur.execute("GRANT ALL ON `fb db`.* TO 'fbadmin'@'127.0.0.1'")
    workload(conn, random.Random(3), 20)
    cmdb = tmp_path / "cmdb.yaml"
    doc = sb.cmdb()
    doc["defaults"]["storage"]["base_dir"] = str(tmp_path / "storage")
    cmdb.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("MYSQL_BACKUP_CMDB", str(cmdb))
    monkeypatch.setenv("MYSQL_BACKUP_CATALOG_URL", f"sqlite:///{tmp_path}/catalog.sqlite")
    conns = dict(sb.connections())
    conns["fb_admin"] = {"conn_type": "mysql", "host": "127.0.0.1", "port": src.port, "login": "fbadmin",
                         "password": "Adm-1-x"}
    for conn_id, c in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(c))
    yield sb, conn, tmp_path
    conn.close()


def run(conf: dict):
    from airflow.dag_processing.dagbag import BundleDagBag
    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=str(DAGS), bundle_name="dags-folder")
    assert bag.import_errors == {}
    dag = bag.dags["mysql_flashback"]
    assert dag.params.get_param("instance").schema.get("enum") == ["sandbox", "sandbox_replica"]
    dr = dag.test(run_conf=conf)
    [ti] = dr.get_task_instances()
    return dr.state, ti


def test_review_then_apply(env):
    sb, conn, tmp = env
    before = checksums(conn)
    start = master_pos(conn)
    workload(conn, random.Random(8), 40)
    conf = {"instance": "sandbox", "databases": [f"`{DB}`"], "start_position": f"{start[0]}:{start[1]}"}
    state, ti = run(conf)
    assert state == "success"
    stored = list((tmp / "storage" / "sandbox" / "flashback").glob("*/flashback.sql"))
    assert len(stored) == 1 and stored[0].read_text().startswith("-- mysql-flashback: inverse of")
    assert checksums(conn) != before  # review only: nothing applied
    state, ti = run({**conf, "apply": True, "apply_conn_id": "fb_admin"})
    assert state == "success"
    assert checksums(conn) == before


@pytest.mark.parametrize("conf, message", [
    ({"instance": "sandbox", "start_position": "binlog.000001:4", "stop_position": "binlog.000001:4"}, "empty position"),
    ({"instance": "sandbox"}, "give the start of the window"),
    ({"instance": "sandbox", "start_position": "binlog.000001:4", "apply": True}, "apply_conn_id is empty"),
    ({"instance": "sandbox", "start_position": "binlog.000001:4", "tables": ["`fb db`.nope"]},
     "tables: `fb db`.nope not found in the binlog window (the window holds row changes of: `fb db`."),
    ({"instance": "sandbox", "start_datetime": "2026-11-24 10:05:00", "stop_datetime": "2026-11-24 10:00:00"},
     "reversed time window: start_datetime 2026-11-24 10:05:00 UTC is not before stop_datetime"),
    ({"instance": "sandbox", "start_position": "binlog.000001:4", "databases": ["fb_db_typo"]},
     "databases: fb_db_typo not found in the binlog window (the window holds row changes of the databases: "),
])
def test_bad_requests_fail_clearly_and_apply_nothing(env, conf, message, capfd):
    sb, conn, tmp = env
    before = checksums(conn)
    state, ti = run(conf)
    assert state == "failed"
    out, err = capfd.readouterr()
    assert message in out + err, (out + err)[-3000:]
    assert "--st" not in out + err  # the DAG speaks of its params, not of the CLI's options
    assert checksums(conn) == before


def test_unknown_instance_is_refused_by_the_trigger_form(env):
    from airflow.sdk.exceptions import ParamValidationError
    with pytest.raises(ParamValidationError, match="'nope' is not one of"):
        run({"instance": "nope", "start_position": "binlog.000001:4"})
    with pytest.raises(ParamValidationError, match="does not match"):
        run({"instance": "sandbox", "start_position": "binlog.000001"})


def test_a_damaged_binlog_read_from_the_server_fails_the_run_with_one_clear_message(env, capfd):
    """A flipped byte in a row event of the server's own binlog (read as a replication client):
    the run fails with the file and position named, as a refusal, not as a decoder's traceback."""
    from mysqlbackup.binlog import format as F
    from mysqlbackup.binlog.reader import iter_file_events
    sb, conn, tmp = env
    start = master_pos(conn)
    workload(conn, random.Random(12), 5)
    with conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
    path = Path(sb.source.datadir) / start[0]
    rows = [e for e in iter_file_events(path) if e.type in F.ROWS_EVENT_KIND and e.pos >= start[1]]
    victim = rows[len(rows) // 2]
    pos, size = victim.pos, victim.event_size
    with open(path, "r+b") as f:
        f.seek(pos + size // 2)
        b = f.read(1)
        f.seek(pos + size // 2)
        f.write(bytes([b[0] ^ 0x5A]))
    before = checksums(conn)
    state, ti = run({"instance": "sandbox", "start_position": f"{start[0]}:{start[1]}", "apply": True,
                     "apply_conn_id": "fb_admin"})
    assert state == "failed"
    out, err = capfd.readouterr()
    assert (f"flashback of sandbox refused: cannot read the binlogs: {start[0]}: checksum mismatch at position "
            f"{pos}") in out + err, (out + err)[-3000:]
    assert "struct.error" not in out + err and "IndexError" not in out + err
    assert checksums(conn) == before
