"""The remote layer: ssh command lines, quoting, result lines, exit-code mapping, the hook."""
from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from mysqlbackup import exitcodes
from mysqlbackup.remote import Pipeline, ScriptBundle, SSHTarget, StepResult, parse_result


def test_remote_words_are_shell_quoted():
    t = SSHTarget(host="db1", port=2222, user="backup", key_file="/k", known_hosts_file="/kh")
    argv = t.command(["python3", "x.py", "--dir", "/srv/it's here; rm -rf /", "$(id)"])
    assert argv[:3] == ["ssh", "-F", "none"] and argv[argv.index("-p") + 1] == "2222"
    assert "UserKnownHostsFile=/kh" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[-3:-1] == ["backup@db1", "--"]
    # the remote shell sees exactly the words we meant
    assert shlex.split(argv[-1]) == ["python3", "x.py", "--dir", "/srv/it's here; rm -rf /", "$(id)"]
    become = t.command(["id"], become=True)
    assert shlex.split(become[-1]) == ["sudo", "-n", "--", "id"]


def test_guarded_call_exits_97_when_the_scripts_are_missing(tmp_path):
    t = SSHTarget(host="h")
    line = t.command(["python3", "x y.py"], require=".mysql-backup/scripts-ab/.complete")[-1]
    assert line == "test -f .mysql-backup/scripts-ab/.complete || exit 97; exec python3 'x y.py'"
    # run the remote line in a local shell: missing -> 97, present -> the command runs
    assert subprocess.run(["sh", "-c", line.replace("python3 'x y.py'", "true")], cwd=tmp_path).returncode == 97
    (tmp_path / ".mysql-backup" / "scripts-ab").mkdir(parents=True)
    (tmp_path / ".mysql-backup" / "scripts-ab" / ".complete").touch()
    assert subprocess.run(["sh", "-c", line.replace("python3 'x y.py'", "true")], cwd=tmp_path).returncode == 0


def test_no_host_key_check_is_explicit():
    argv = SSHTarget(host="h", strict_host_key_checking=False).argv()
    assert "StrictHostKeyChecking=no" in argv and "UserKnownHostsFile=/dev/null" in argv


@pytest.mark.parametrize("stderr, expected", [
    ("log\nRESULT {\"status\": \"ok\", \"x\": 1}\n", {"status": "ok", "x": 1}),
    ("RESULT {\"status\": \"ok\"}\nRESULT {\"status\": \"error\"}", {"status": "error"}),
    ("no result here", None),
    ("RESULT not json", None),
    ("RESULT [1, 2]", None),
])
def test_parse_result_takes_the_last_result_line(stderr, expected):
    assert parse_result(stderr) == expected


@pytest.mark.parametrize("code, result, outcome", [
    (0, {"status": "ok"}, "ok"),
    (0, None, "retry"),                       # exited 0 but never said it finished
    (exitcodes.USAGE, {"status": "error"}, "fail"),
    (exitcodes.PRECONDITION, {"status": "error"}, "fail"),
    (exitcodes.TRANSIENT, {"status": "error"}, "retry"),
    (exitcodes.PARTIAL, {"status": "error"}, "retry"),
    (exitcodes.INTERNAL, None, "retry"),
    (255, None, "retry"),
    (-9, None, "retry"),                      # killed by a signal
])
def test_step_outcome(code, result, outcome):
    assert StepResult("h", code, result, ["x"]).outcome == outcome


def test_raise_for_maps_outcomes_to_airflow_exceptions():
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from operators.backup import raise_for
    raise_for(StepResult("h", 0, {"status": "ok"}), "x")
    with pytest.raises(AirflowFailException, match="backup failed on db1: disk full"):
        raise_for(StepResult("db1", 3, {"status": "error", "error": "disk full"}), "backup")
    with pytest.raises(AirflowException) as info:
        raise_for(StepResult("db1", 255, None, ["ssh: connect to host db1 port 22: Connection refused"]), "backup")
    assert not isinstance(info.value, AirflowFailException) and "Connection refused" in str(info.value)


def test_bundle_digest_follows_content_and_installs_idempotently(tmp_path):
    bundle = ScriptBundle.build()
    assert bundle.digest == ScriptBundle.build().digest and len(bundle.digest) == 16
    home = tmp_path / "home"
    home.mkdir()
    cmd = bundle.install_command()
    for _ in range(2):  # the second run is a no-op
        res = subprocess.run(cmd, input=bundle.data, env={**os.environ, "HOME": str(home)}, capture_output=True)
        assert res.returncode == 0, res.stderr
    installed = home / bundle.remote_dir
    from mysqlbackup.remote import SCRIPT_FILES
    assert sorted(p.name for p in installed.iterdir()) == sorted([".complete", *SCRIPT_FILES])
    assert {"binlog_archive.py", "dbhost.py", "hostkit.py", "storage.py", "target.py"} <= set(SCRIPT_FILES)
    res = subprocess.run([sys.executable, str(installed / "storage.py"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "RESULT " in res.stderr


def test_pipeline_joins_processes_and_captures_each_result():
    logged: list[str] = []
    producer = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 100000); "
                "sys.stderr.write('RESULT {\"status\": \"ok\"}\\n')"]
    consumer = [sys.executable, "-c", "import sys, json; n = len(sys.stdin.read()); "
                "sys.stderr.write('got\\nRESULT ' + json.dumps({'status': 'ok', 'n': n}) + '\\n')"]
    first, second = Pipeline([("a", producer), ("b", consumer)], logged.append).run(timeout=60)
    assert first.ok and second.ok and second.result["n"] == 100000
    assert "[b] got" in logged


def test_hook_turns_a_connection_into_openssh_options(monkeypatch):
    from hooks.openssh import OpenSSHHook
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"
    host_key = "AAAAC3NzaC1lZDI1NTE5AAAAIHK7Yk5n3nXCT0cTqX0p4Ih2sPnc6kKz0QZ8gG5cJvJY"
    monkeypatch.setenv("AIRFLOW_CONN_DB_X", json.dumps({
        "conn_type": "ssh", "host": "db.example.internal", "port": 2200, "login": "backup",
        "extra": {"private_key": key, "host_key": host_key}}))
    with OpenSSHHook("db_x") as hook:
        t = hook.target
        assert (t.host, t.port, t.user, t.strict_host_key_checking) == ("db.example.internal", 2200, "backup", True)
        assert stat.S_IMODE(os.stat(t.key_file).st_mode) == 0o600
        assert open(t.key_file).read().strip() == key
        assert open(t.known_hosts_file).read() == f"[db.example.internal]:2200 ssh-ed25519 {host_key}\n"
        assert key not in " ".join(t.argv())
        tmpdir = os.path.dirname(t.key_file)
    assert not os.path.exists(tmpdir)


def test_hook_refuses_password_connections(monkeypatch):
    from airflow.sdk.exceptions import AirflowException
    from hooks.openssh import OpenSSHHook
    monkeypatch.setenv("AIRFLOW_CONN_DB_PW", json.dumps({"conn_type": "ssh", "host": "h", "password": "s3cret"}))
    with pytest.raises(AirflowException, match="BatchMode") as info:
        OpenSSHHook("db_pw").target
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("conn, url", [
    ({"conn_type": "http", "host": "https://hooks.example.internal/x/y"}, "https://hooks.example.internal/x/y"),
    ({"conn_type": "http", "host": "hooks.example.internal", "schema": "http", "port": 8080,
      "extra": {"endpoint": "/alerts"}}, "http://hooks.example.internal:8080/alerts"),
    ({"conn_type": "http", "host": "h", "extra": {"url": "https://u/v"}}, "https://u/v"),
])
def test_webhook_connection_forms(monkeypatch, conn, url):
    from mysqlbackup.cmdb import AlertConfig
    from operators.alerting import build_notifiers
    monkeypatch.setenv("AIRFLOW_CONN_HOOK_X", json.dumps({**conn, "password": "tok-123"}))
    [notifier] = build_notifiers(AlertConfig(webhook_conn_id="hook_x"))
    assert notifier._url == url  # private: the notifier keeps the real URL out of repr and errors
    assert notifier._headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in repr(notifier)


@pytest.mark.parametrize("text, expected", [
    ("SET GLOBAL gtid_slave_pos = '0-1-3';\nCHANGE MASTER TO master_use_gtid = slave_pos;",
     {"gtid": "0-1-3", "file": None, "pos": None}),
    ("CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000042', MASTER_LOG_POS=1234",
     {"gtid": None, "file": "mysql-bin.000042", "pos": 1234}),
    ("", None), (None, None),
])
def test_parse_slave_info(text, expected):
    from operators.backup import parse_slave_info
    got = parse_slave_info(text)
    assert (got if got is None else {k: got[k] for k in ("gtid", "file", "pos")}) == expected
