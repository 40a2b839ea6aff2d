"""Host scripts (include/scripts): pure parts, and the RESULT contract on bad input. No servers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dbhost
import hostkit
import pytest
import storage

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "include" / "scripts"


def run_script(script: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str, dict]:
    r = subprocess.run([sys.executable, str(SCRIPTS / script), *args], input=stdin,
                       capture_output=True, timeout=60)
    err = r.stderr.decode()
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("RESULT "), err
    return r.returncode, r.stdout.decode(), err, json.loads(last[len("RESULT "):])


# --- command lines -----------------------------------------------------------------------------

def test_backup_argv_mariadb_socket():
    argv = dbhost.backup_argv("mariadb", "/tmp/d/client.cnf", "/w/target", "/w/lsn", 4, socket="/run/my.sock")
    assert argv == ["mariabackup", "--defaults-file=/tmp/d/client.cnf", "--backup", "--stream=mbstream",
                    "--target-dir=/w/target", "--extra-lsndir=/w/lsn", "--parallel=4",
                    "--socket=/run/my.sock"]


def test_backup_argv_mariadb_host_port_slave_info():
    argv = dbhost.backup_argv("mariadb", "/d.cnf", "/t", "/l", 2, host="10.0.0.5", port=3307,
                              slave_info=True)
    assert argv[1] == "--defaults-file=/d.cnf"
    assert argv == ["mariabackup", "--defaults-file=/d.cnf", "--backup", "--stream=mbstream", "--target-dir=/t",
                    "--extra-lsndir=/l", "--parallel=2", "--slave-info",
                    "--host=10.0.0.5", "--port=3307", "--protocol=TCP"]
    safe = dbhost.backup_argv("mariadb", "/d.cnf", "/t", "/l", 2, socket="/s", slave_info=True,
                              safe_slave_backup=True)
    assert safe[-3:] == ["--slave-info", "--safe-slave-backup", "--socket=/s"]


def test_backup_argv_mysql_same_flags_xbstream():
    for kw in ({"socket": "/s.sock"}, {"host": "db1", "port": 3306, "slave_info": True},
               {"socket": "/s", "slave_info": True, "safe_slave_backup": True}):
        maria = dbhost.backup_argv("mariadb", "/d.cnf", "/t", "/l", 3, **kw)
        mysql = dbhost.backup_argv("mysql", "/d.cnf", "/t", "/l", 3, **kw)
        assert mysql[0] == "xtrabackup"
        assert "--stream=xbstream" in mysql and "--stream=mbstream" not in mysql
        assert [a for a in mysql[1:] if a != "--stream=xbstream"] == \
            [a for a in maria[1:] if a != "--stream=mbstream"]
    no_slave = dbhost.backup_argv("mysql", "/d.cnf", "/t", "/l", 1, socket="/s")
    assert "--slave-info" not in no_slave and "--safe-slave-backup" not in no_slave
    assert dbhost.backup_argv("mysql", "/d.cnf", "/t", "/l", 1, tool="/opt/x/xtrabackup")[0] == "/opt/x/xtrabackup"
    with pytest.raises(ValueError):
        dbhost.backup_argv("postgres", "/d", "/t", "/l", 1)


def test_compress_argv():
    assert dbhost.compress_argv("none") is None
    assert dbhost.compress_argv(None) is None
    assert dbhost.compress_argv("gzip") == ["gzip", "-c", "-1"]
    z = dbhost.compress_argv("zstd")
    assert z[:3] == ["zstd", "-q", "-c"] and "-T0" in z
    with pytest.raises(ValueError):
        dbhost.compress_argv("bzip2")


def test_storage_argvs():
    assert storage.decompress_argv("backup.xbstream.zst") == ["zstd", "-d", "-q", "-c"]
    assert storage.decompress_argv("backup.xbstream.gz") == ["gzip", "-d", "-c"]
    assert storage.decompress_argv("backup.xbstream") is None
    assert storage.extract_argv("mariadb", "/s") == ["mbstream", "-x", "-C", "/s"]
    assert storage.extract_argv("mysql", "/s") == ["xbstream", "-x", "-C", "/s"]
    assert storage.prepare_argv("mariadb", "/s", "256M") == [
        "mariabackup", "--no-defaults", "--prepare", "--target-dir=/s", "--use-memory=256M"]
    assert storage.prepare_argv("mysql", "/s", "1G")[:2] == ["xtrabackup", "--no-defaults"]


# --- option file -------------------------------------------------------------------------------

def test_option_value_escaping():
    assert hostkit.option_value("plain") == '"plain"'
    assert hostkit.option_value('a"b') == '"a\\"b"'
    assert hostkit.option_value("a\\b") == '"a\\\\b"'
    assert hostkit.option_value("x#y;z 'q'") == "\"x#y;z 'q'\""
    assert hostkit.option_value("t\tn\n") == '"t\\tn\\n"'


def test_defaults_file_private_and_removed():
    creds = {"user": "backup", "password": 'p"w\\#1'}
    with hostkit.defaults_file(creds, socket="/run/my.sock") as path:
        d = os.path.dirname(path)
        assert os.stat(d).st_mode & 0o777 == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o600
        text = Path(path).read_text()
        assert text.splitlines()[0] == "[client]"
        assert 'password="p\\"w\\\\#1"' in text
        assert 'socket="/run/my.sock"' in text and "host=" not in text
    assert not os.path.exists(d)
    text = hostkit.client_option_text({"user": "u", "password": "", "host": "h", "port": 3307})
    assert 'host="h"' in text and "port=3307" in text


def test_defaults_file_removed_on_exception():
    with pytest.raises(RuntimeError):
        with hostkit.defaults_file({"user": "u", "password": "p"}) as path:
            raise RuntimeError("boom")
    assert not os.path.exists(os.path.dirname(path))


# --- metadata parsing --------------------------------------------------------------------------

def test_parse_binlog_pos():
    line = "binlog_pos = filename 'binlog.000001', position '859', GTID of the last change '0-1-3'"
    info = hostkit.parse_kv("tool_version = 10.11.19-MariaDB\n" + line + "\nformat = mbstream\n")
    assert info["tool_version"] == "10.11.19-MariaDB" and info["format"] == "mbstream"
    assert hostkit.parse_binlog_pos(info["binlog_pos"]) == {"file": "binlog.000001", "pos": 859, "gtid": "0-1-3"}
    assert hostkit.parse_binlog_pos(line)["pos"] == 859
    assert hostkit.parse_binlog_pos("filename 'mysql-bin.000002', position '4'") == \
        {"file": "mysql-bin.000002", "pos": 4, "gtid": None}
    assert hostkit.parse_binlog_pos(None) == {"file": None, "pos": None, "gtid": None}
    assert hostkit.parse_binlog_pos("garbage") == {"file": None, "pos": None, "gtid": None}


def test_parse_binlog_info():
    assert hostkit.parse_binlog_info("binlog.000001\t859\t0-1-3\n") == \
        {"file": "binlog.000001", "pos": 859, "gtid": "0-1-3"}
    assert hostkit.parse_binlog_info("binlog.000001\t859\n") == {"file": "binlog.000001", "pos": 859, "gtid": None}
    # MySQL: a GTID set may hold several uuids separated by ",\n"-free commas
    assert hostkit.parse_binlog_info("bin.000003\t157\tuuid:1-5,uuid2:1-2\n")["gtid"] == "uuid:1-5,uuid2:1-2"
    assert hostkit.parse_binlog_info(None)["file"] is None


def test_parse_checkpoints():
    text = "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 44420\nlast_lsn = 54769\nrecover_binlog_info = 0\n"
    assert hostkit.parse_checkpoints(text) == {"backup_type": "full-backuped", "from_lsn": 0,
                                               "to_lsn": 44420, "last_lsn": 54769}


def test_read_meta_accepts_both_names(tmp_path):
    (tmp_path / "mariadb_backup_checkpoints").write_text("backup_type = full-backuped\nto_lsn = 7\n")
    (tmp_path / "xtrabackup_info").write_text("server_version = 10.11\n")
    assert hostkit.parse_checkpoints(hostkit.read_meta(str(tmp_path), "checkpoints"))["to_lsn"] == 7
    assert hostkit.read_meta(str(tmp_path), "info").startswith("server_version")
    assert hostkit.read_meta(str(tmp_path), "slave_info") is None


def test_parse_tool_version():
    assert hostkit.parse_tool_version(
        "mariabackup", "mariabackup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)") \
        == "mariabackup 10.11.19"
    assert hostkit.parse_tool_version(
        "xtrabackup", "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64)") \
        == "xtrabackup 8.0.35-30"


# --- client output parsing ---------------------------------------------------------------------

def test_batch_unescape_and_sections():
    assert dbhost.unescape_batch("a\\tb\\nc\\\\d") == "a\tb\nc\\d"
    assert dbhost.unescape_batch("NULL") is None
    assert dbhost.unescape_batch("") == ""
    out = ("__mbk_section__\nvars\nVariable_name\tValue\nversion\t10.11.19-MariaDB-log\nread_only\tOFF\n"
           "port\t3306\nsocket\tNULL\n"
           "__mbk_section__\nempty\n"
           "__mbk_section__\ndata\ndata_bytes\n12345\n")
    sections = dbhost.parse_sections(out)
    assert sections["empty"] == []
    assert sections["data"] == [{"data_bytes": "12345"}]
    facts = dbhost.normalise_variables(sections["vars"])
    assert facts["version"] == "10.11.19-MariaDB-log" and facts["read_only"] is False
    assert facts["port"] == 3306 and facts["socket"] is None and facts["gtid_mode"] is None


def test_replica_from_status_mariadb_and_mysql():
    maria = {"Slave_IO_Running": "Yes", "Slave_SQL_Running": "No", "Seconds_Behind_Master": None,
             "Last_IO_Error": "", "Last_SQL_Error": "Duplicate entry", "Master_Host": "10.0.0.5",
             "Master_Port": "3306", "Using_Gtid": "Slave_Pos", "Gtid_IO_Pos": "0-1-9"}
    assert dbhost.replica_from_status(maria) == {
        "io_running": True, "sql_running": False, "seconds_behind": None, "last_error": "Duplicate entry",
        "source_host": "10.0.0.5", "source_port": 3306, "using_gtid": "Slave_Pos", "gtid_io_pos": "0-1-9"}
    mysql = {"Replica_IO_Running": "Connecting", "Replica_SQL_Running": "Yes", "Seconds_Behind_Source": "12",
             "Last_IO_Error": "error connecting", "Last_SQL_Error": "x", "Source_Host": "db1",
             "Source_Port": "3306", "Auto_Position": "1", "Retrieved_Gtid_Set": "uuid:1-4"}
    r = dbhost.replica_from_status(mysql)
    assert r["io_running"] is False and r["sql_running"] is True and r["seconds_behind"] == 12
    assert r["last_error"] == "error connecting; x" and r["using_gtid"] == "Auto_Position"
    assert dbhost.replica_from_status(None) is None


def test_misc_helpers(tmp_path):
    assert hostkit.human_bytes(512) == "512 B"
    assert hostkit.human_bytes(1536) == "1.5 KiB"
    assert hostkit.human_bytes(3 * 1024 ** 3) == "3.0 GiB"
    assert storage.sha256sums_line("ab" * 32, "mysql/user.frm") == "ab" * 32 + "  mysql/user.frm\n"
    assert storage.sha256sums_line("ab" * 32, "a\\b").startswith("\\")
    assert dbhost._sanitise("/var/lib/mysql") == "var_lib_mysql"
    with pytest.raises(hostkit.ScriptError) as e:
        hostkit.check_path("relative/x")
    assert e.value.code == hostkit.USAGE
    with pytest.raises(hostkit.ScriptError):
        hostkit.check_path("/srv/../etc")
    assert hostkit.check_path("/srv/backups/") == "/srv/backups"
    assert dbhost.default_reserve_path(str(tmp_path / "." )).startswith(str(tmp_path.parent))


def test_which_tool_missing_is_precondition():
    with pytest.raises(hostkit.ScriptError) as e:
        hostkit.which_tool("surely-not-a-tool-xyz")
    assert e.value.code == hostkit.PRECONDITION and "not found on" in e.value.message


# --- the RESULT contract -----------------------------------------------------------------------

def test_usage_error_prints_result_and_exits_2():
    code, out, err, res = run_script("dbhost.py", "backup", "--flavor", "oracle")
    assert code == hostkit.USAGE == 2
    assert res["status"] == "error" and res["verb"] == "backup" and res["exit_code"] == 2
    assert "--flavor" in res["error"] and res["host"]
    assert out == ""
    code, out, err, res = run_script("storage.py", "receive", "--dir", "relative/dir", "--artifact", "x")
    assert code == 2 and res["verb"] == "receive"
    code, out, err, res = run_script("storage.py", "receive", "--dir", "/tmp/x", "--artifact", "a/b")
    assert code == 2
    code, out, err, res = run_script("dbhost.py", "nosuchverb")
    assert code == 2 and res["status"] == "error"


def test_log_lines_are_stamped():
    code, out, err, res = run_script("dbhost.py", "reserve", "--datadir", "/tmp", "--percent", "50")
    assert code == 2 and "--percent" in res["error"]
    first = err.splitlines()[0]
    import re
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ dbhost\.py reserve: ", first), first


def test_bad_credentials_are_usage():
    code, _, _, res = run_script("dbhost.py", "facts", "--flavor", "mariadb", "--socket", "/nonexistent",
                                 stdin=b"not json\n")
    assert code == 2 and "JSON" in res["error"]
    code, _, _, res = run_script("dbhost.py", "facts", "--flavor", "mariadb", "--socket", "/nonexistent")
    assert code == 2


def test_help_documents_every_parameter():
    for script, verbs in (("dbhost.py", ["facts", "reserve", "backup"]),
                          ("storage.py", ["space", "receive", "verify", "commit", "list", "discard"])):
        r = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and all(v in r.stdout for v in verbs)
        for v in verbs:
            r = subprocess.run([sys.executable, str(SCRIPTS / script), v, "--help"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert r.stderr.rstrip().splitlines()[-1].startswith("RESULT ")
            assert "--dir" in r.stdout or "--flavor" in r.stdout or "--datadir" in r.stdout


def test_storage_receive_commit_list_discard_locally(tmp_path):
    label = tmp_path / "inst" / "20261124-234000F"
    code, _, _, res = run_script("storage.py", "receive", "--dir", str(label), "--artifact", "backup.xbstream",
                                 stdin=b"")
    assert code == hostkit.PRECONDITION and "empty stream" in res["error"]
    assert not (label / "backup.xbstream.partial").exists() and not (label / "backup.xbstream").exists()
    data = os.urandom(3 * 1024 * 1024 + 17)
    code, _, _, res = run_script("storage.py", "receive", "--dir", str(label), "--artifact", "backup.xbstream",
                                 stdin=data)
    import hashlib
    assert code == 0 and res["size_bytes"] == len(data) and res["sha256"] == hashlib.sha256(data).hexdigest()
    code, _, _, res = run_script("storage.py", "commit", "--dir", str(label),
                                 stdin=json.dumps({"label": "other", "artifact": "backup.xbstream"}).encode())
    assert code == hostkit.USAGE
    code, _, _, res = run_script("storage.py", "commit", "--dir", str(label),
                                 stdin=json.dumps({"label": label.name, "artifact": "missing.zst"}).encode())
    assert code == hostkit.PRECONDITION
    (tmp_path / "inst" / "20261124-000000F").mkdir()
    (tmp_path / "inst" / "flashback" / "20261124-120000").mkdir(parents=True)  # not a backup: never listed
    (tmp_path / ".scratch" / "inst-20261124-000000").mkdir(parents=True)  # verify's scratch: not listed
    code, _, _, res = run_script("storage.py", "commit", "--dir", str(label),
                                 stdin=json.dumps({"label": label.name, "artifact": "backup.xbstream"}).encode())
    assert code == 0 and (label / "manifest.json").exists() and not (label / "manifest.json.tmp").exists()
    code, out, _, res = run_script("storage.py", "list", "--dir", str(tmp_path))
    assert code == 0 and res["count"] == 1
    assert res["incomplete"] == [str(tmp_path / "inst" / "20261124-000000F")]
    line = json.loads(out.splitlines()[0])
    assert json.loads(line["manifest"])["label"] == label.name
    code, _, _, res = run_script("storage.py", "receive", "--dir", str(label), "--artifact", "again",
                                 stdin=b"x")
    assert code == hostkit.PRECONDITION
    code, _, _, res = run_script("storage.py", "discard", "--dir", str(label))
    assert code == hostkit.PRECONDITION and label.exists()
    code, _, _, res = run_script("storage.py", "discard", "--dir", str(tmp_path / "inst"))
    assert code == hostkit.PRECONDITION and label.exists()
    code, _, _, res = run_script("storage.py", "discard", "--dir", str(tmp_path / "inst" / "20261124-000000F"))
    assert code == 0 and res["removed"] is True
    code, _, _, res = run_script("storage.py", "discard", "--dir", str(tmp_path / "inst" / "nope"))
    assert code == 0 and res["removed"] is False


def test_storage_space(tmp_path):
    code, _, _, res = run_script("storage.py", "space", "--dir", str(tmp_path / "b"), "--need", "1024")
    assert code == 0 and res["fits"] is True and (tmp_path / "b").is_dir()
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o750
    code, _, _, res = run_script("storage.py", "space", "--dir", str(tmp_path / "b"), "--need", str(1 << 62))
    assert code == hostkit.PRECONDITION and res["fits"] is False
    assert "needs about" in res["error"] and "free" in res["error"]


def test_storage_verify_rejects_bad_sha(tmp_path):
    label = tmp_path / "l"
    label.mkdir()
    (label / "backup.xbstream").write_bytes(b"abc")
    code, _, _, res = run_script("storage.py", "verify", "--dir", str(label), "--artifact", "backup.xbstream",
                                 "--sha256", "0" * 64, "--flavor", "mariadb", "--scratch", str(tmp_path / "s"))
    assert code == hostkit.PRECONDITION and "expected " + "0" * 64 in res["error"]
    assert not (tmp_path / "s").exists()


def test_exit_codes_match_mysqlbackup():
    path = REPO / "plugins" / "mysqlbackup" / "exitcodes.py"
    if not path.exists():
        pytest.skip("plugins/mysqlbackup/exitcodes.py not written yet")
    import importlib
    ec = importlib.import_module("mysqlbackup.exitcodes")
    for name in ("OK", "INTERNAL", "USAGE", "PRECONDITION", "TRANSIENT", "PARTIAL"):
        theirs = getattr(ec, name, None)
        if theirs is None and hasattr(ec, "ExitCode"):
            theirs = getattr(ec.ExitCode, name)
        assert theirs is not None, name
        assert int(theirs) == getattr(hostkit, name), name
    assert (hostkit.OK, hostkit.INTERNAL, hostkit.USAGE, hostkit.PRECONDITION, hostkit.TRANSIENT,
            hostkit.PARTIAL) == (0, 1, 2, 3, 4, 5)


# --- reserve (on a temporary "datadir", with the filesystem size faked small) -------------------

def _fake_fs(monkeypatch, total, avail):
    monkeypatch.setattr(hostkit, "fs_usage", lambda path: {"total_bytes": total, "free_bytes": avail,
                                                          "avail_bytes": avail})


def test_reserve_created_grown_ok(tmp_path, monkeypatch):
    import argparse
    datadir = tmp_path / "data"
    datadir.mkdir()
    _fake_fs(monkeypatch, 100 * 1024 * 1024, 50 * 1024 * 1024)
    res = dbhost.cmd_reserve(argparse.Namespace(datadir=str(datadir), percent=1.0, path=None))
    path = tmp_path / ".mysql-backup-reserve-data"
    assert res["path"] == str(path) and res["action"] == "created"
    assert res["target_bytes"] == 1024 * 1024 and path.stat().st_size == 1024 * 1024
    assert path.stat().st_blocks * 512 >= 1024 * 1024
    assert dbhost.cmd_reserve(argparse.Namespace(datadir=str(datadir), percent=1.0, path=None))["action"] == "ok"
    # a sparse file of the right size is not a reserve: it gets allocated
    os.truncate(path, 0)
    os.truncate(path, 2 * 1024 * 1024)
    assert path.stat().st_blocks * 512 < 2 * 1024 * 1024
    res = dbhost.cmd_reserve(argparse.Namespace(datadir=str(datadir), percent=2.0, path=None))
    assert res["action"] == "grown" and path.stat().st_blocks * 512 >= 2 * 1024 * 1024


def test_reserve_not_enough_space_names_host_path_free_need(tmp_path, monkeypatch):
    import argparse
    datadir = tmp_path / "data"
    datadir.mkdir()
    _fake_fs(monkeypatch, 10 * 1024 ** 3, 10 * 1024 * 1024)
    with pytest.raises(hostkit.ScriptError) as e:
        dbhost.cmd_reserve(argparse.Namespace(datadir=str(datadir), percent=5.0, path=None))
    err = e.value
    assert err.code == hostkit.PRECONDITION
    assert hostkit.hostname() in err.message and ".mysql-backup-reserve-data" in err.message
    assert "10.0 MiB free" in err.message and "512.0 MiB" in err.message
    assert not (tmp_path / ".mysql-backup-reserve-data").exists()


def test_reserve_explicit_path_and_bad_input(tmp_path, monkeypatch):
    import argparse
    datadir = tmp_path / "data"
    datadir.mkdir()
    _fake_fs(monkeypatch, 100 * 1024 * 1024, 50 * 1024 * 1024)
    target = tmp_path / "my-reserve"
    res = dbhost.cmd_reserve(argparse.Namespace(datadir=str(datadir), percent=0.5, path=str(target)))
    assert res["path"] == str(target) and target.stat().st_size == res["target_bytes"]
    for ns, code in ((argparse.Namespace(datadir=str(datadir), percent=0.005, path=None), hostkit.USAGE),
                     (argparse.Namespace(datadir="relative", percent=1.0, path=None), hostkit.USAGE),
                     (argparse.Namespace(datadir=str(tmp_path / "nope"), percent=1.0, path=None),
                      hostkit.PRECONDITION),
                     (argparse.Namespace(datadir=str(datadir), percent=1.0, path=str(tmp_path)), hostkit.USAGE)):
        with pytest.raises(hostkit.ScriptError) as e:
            dbhost.cmd_reserve(ns)
        assert e.value.code == code, ns


def test_default_reserve_path_at_mount_point_when_parent_is_elsewhere(monkeypatch):
    # "/" is its own mount point with no parent: the file goes to its top
    assert dbhost.mount_point("/") == "/"
    assert dbhost._sanitise("/srv/mysql data/") == "srv_mysql_data"
