"""Flashback from the binlog archive, without servers: which archived files a window needs
(``archive.window_coverage``), the refusals naming the field in the caller's words, the catalog's paths
checked, the storage host's ``fetch`` verb, the CLI's ``--archive`` and the DAG's ``binlog_source``."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mysqlbackup import archive as A
from test_archive import binlog

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "include" / "scripts" / "binlog_archive.py"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
ID = "1-263fea19a224"


def f(n: int, start: str, end: str, t0: float, t1: float, state: str = "closed", identity: str = ID,
      **kw) -> A.ArchivedFile:
    lo, hi = A.parse_gtid_state(start) or {}, A.parse_gtid_state(end) or {}
    first = f"0-1-{lo.get(0, (1, 0))[1] + 1}" if hi.get(0, (1, 0))[1] > lo.get(0, (1, 0))[1] else None
    return A.ArchivedFile(identity=identity, name=f"binlog.{n:06d}", state=state, size=1000,
                          start_state=lo, end_state=hi, first_gtid=first, last_gtid=first and f"0-1-{hi[0][1]}",
                          first_event_at=T0 + timedelta(minutes=t0), last_event_at=T0 + timedelta(minutes=t1),
                          archived_at=T0 + timedelta(minutes=t1), **kw)


CHAIN = [f(1, "", "0-1-10", 0, 10), f(2, "0-1-10", "0-1-20", 12, 20), f(3, "0-1-20", "0-1-30", 20, 30, "open")]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def names(cov) -> list[str]:
    return [x.name for x in cov.files]


# ------------------------------------------------------------------------------------------------ coverage


def test_a_window_starting_in_a_quiet_moment_after_a_rotation_is_covered():
    # nothing happened between 10:10 (binlog.000001's last event) and 10:12 (binlog.000002's first)
    assert "before the first archived file" in A.covering_files(CHAIN, start=at(11), stop=at(15)).uncovered[0]
    cov = A.window_coverage(CHAIN, start=at(11), stop=at(15))
    assert cov.complete and names(cov) == ["binlog.000002"] and cov.identity == ID and not cov.open_end
    # ... unless a file was purged in between: then the hole is named
    cov = A.window_coverage([CHAIN[0], f(2, "0-1-12", "0-1-20", 12, 20)], start=at(11), stop=at(15))
    assert [fields for fields, _ in cov.uncovered] == [("start_datetime", "stop_datetime")], cov.uncovered
    assert "the chain breaks between binlog.000001" in cov.uncovered[0][1]


def test_a_window_without_a_stop_runs_to_the_end_of_the_archive():
    cov = A.window_coverage(CHAIN, start=at(25), archived_until=at(40))
    assert cov.complete and cov.open_end and cov.end == at(40) and names(cov) == ["binlog.000003"]
    cov = A.window_coverage(CHAIN, start_gtid="0-1-15")
    assert cov.complete and cov.end == at(30) and names(cov) == ["binlog.000002", "binlog.000003"]
    # a given stop after the last archived event is not held
    cov = A.window_coverage(CHAIN, start=at(25), stop=at(45))
    assert cov.uncovered == [(("stop_datetime",), cov.uncovered[0][1])]
    assert "after the last archived event" in cov.uncovered[0][1]


@pytest.mark.parametrize("window, fields, text", [
    ({"start": at(-30), "stop": at(5)}, ("start_datetime",), "before the first archived file binlog.000001"),
    ({"start": at(5), "stop_gtid": "0-1-99"}, ("stop_gtid",),
     "0-1-99: after the last archived transaction (0-1-30, binlog.000003)"),
    ({"start_gtid": "0-1-5", "stop_gtid": "0-1-99"}, ("stop_gtid",), "0-?-31 .. 0-?-99: after binlog.000003"),
    ({"start_gtid": "0-1-5", "stop": at(45)}, ("stop_datetime",), "after the last archived event"),
    ({"start_position": ("binlog.000002", 4), "stop_position": ("binlog.000007", 4)}, ("stop_position",),
     "binlog.000007: not archived"),
    ({"start_position": ("binlog.000009", 4)}, ("start_position",), "no archived file of that name"),
    ({"start_gtid": "0-1-31", "stop_gtid": "0-1-40"}, ("start_gtid",), "no archived file holds it"),
])
def test_what_the_archive_does_not_hold_is_named_by_its_field(window, fields, text):
    cov = A.window_coverage(CHAIN, **window)
    assert not cov.complete
    assert any(got == fields and text in t for got, t in cov.uncovered), cov.uncovered


def test_a_window_across_a_gap_names_both_ends():
    files = [f(1, "", "0-1-10", 0, 10), f(4, "0-1-40", "0-1-50", 40, 50)]
    cov = A.window_coverage(files, start=at(5), stop=at(45))
    assert [fields for fields, _ in cov.uncovered] == [("start_datetime", "stop_datetime")]
    assert "the chain breaks between binlog.000001" in cov.uncovered[0][1]


def test_mixed_kinds_and_identities():
    # a time start with a GTID stop inside the archive: held, the files from the start to the stop's file
    cov = A.window_coverage(CHAIN, start=at(5), stop_gtid="0-1-15")
    assert cov.complete and names(cov)[:2] == ["binlog.000001", "binlog.000002"]
    other = [f(1, "", "0-1-30", 0, 30, identity="2-bbbbbbbbbbbb")]
    cov = A.window_coverage(CHAIN + other, start=at(5), stop=at(8), identity="2-bbbbbbbbbbbb")
    assert cov.complete and cov.identity == "2-bbbbbbbbbbbb"
    cov = A.window_coverage(CHAIN, start=at(5), identity="9-99")
    assert cov.files == [] and "no archived file of server 9-99" in cov.uncovered[0][1]
    damaged = [CHAIN[0], A.ArchivedFile(**{**CHAIN[1].__dict__, "state": "damaged"}), CHAIN[2]]
    assert not A.window_coverage(damaged, start=at(5), stop=at(25)).complete
    # files retention expired are no longer there: a window in them is before the archive
    expired = [A.ArchivedFile(**{**CHAIN[0].__dict__, "state": "expired"}), *CHAIN[1:]]
    cov = A.window_coverage(expired, start=at(5), stop=at(15))
    assert cov.uncovered[0][0] == ("start_datetime",) and "before the first archived file binlog.000002" in \
        cov.uncovered[0][1]
    from mysqlbackup.flashback.engine import archive_refusal
    assert "1 file(s) expired by retention" in str(archive_refusal("of shop", cov, expired))
    with pytest.raises(ValueError, match="start of the window"):
        A.window_coverage(CHAIN, stop=at(5))


def test_how_far_the_archive_is_known_complete():
    assert A.archived_until(None) is None
    assert A.archived_until({"caught_up": 1, "measured_at": "2026-11-24T10:05:00Z",
                             "last_event_at": "2026-11-24T10:01:00Z"}) == at(5)
    assert A.archived_until({"caught_up": 0, "measured_at": "2026-11-24T10:05:00Z",
                             "last_event_at": "2026-11-24T10:01:00Z"}) == at(1)


def test_a_catalog_path_is_never_trusted_blindly():
    bdir = "/srv/backups/shop/binlog"
    good = A.ArchivedFile(ID, "binlog.000003", "open", storage_path=f"{bdir}/{ID}/binlog.000003.open")
    assert A.archived_path(good, bdir) == f"{bdir}/{ID}/binlog.000003.open"
    assert A.archived_path(A.ArchivedFile(ID, "binlog.000002", "closed"), bdir + "/") == f"{bdir}/{ID}/binlog.000002"
    for bad, message in [
        (A.ArchivedFile(ID, "binlog.000003", "closed", storage_path="/etc/shadow"), "is not its place"),
        (A.ArchivedFile(ID, "binlog.000003", "closed", storage_path=f"{bdir}/{ID}/../../x/binlog.000003"),
         "is not its place"),
        (A.ArchivedFile("../../etc", "binlog.000003", "closed"), "server identity"),
        (A.ArchivedFile(ID, "../binlog.000003", "closed"), "not a binlog file name"),
        (A.ArchivedFile(ID, "binlog.000003/x", "closed"), "not a binlog file name"),
    ]:
        with pytest.raises(ValueError, match=message):
            A.archived_path(bad, bdir)
    with pytest.raises(ValueError, match="absolute"):
        A.archived_path(good, "relative/binlog")


def test_the_refusal_speaks_of_params_in_the_dag_and_of_options_in_the_cli():
    from mysqlbackup.flashback.engine import archive_refusal
    cov = A.window_coverage(CHAIN, start=at(-30), stop_gtid="0-1-99")
    exc = archive_refusal("of shop", cov, CHAIN)
    assert "does not hold the whole window, so nothing was read: start_datetime: " in str(exc)
    assert "stop_gtid: 0-1-99: after the last archived transaction (0-1-30, binlog.000003)" in str(exc)
    assert "--start-datetime: " in exc.for_cli() and "--stop-gtid: " in exc.for_cli() and "--st" not in str(exc)
    assert f"The archive holds server {ID}: binlog.000001 (from 2026-11-24T10:00:00Z) .. binlog.000003 (open, last " \
           "event 2026-11-24T10:30:00Z), GTIDs up to 0-1-30" in str(exc)


# ------------------------------------------------------------------------------------------------ the fetch verb


def fetch(bdir: Path, *args: str) -> tuple[int, bytes, dict]:
    r = subprocess.run([sys.executable, str(SCRIPT), "fetch", "--dir", str(bdir), *args], capture_output=True,
                       timeout=60)
    last = r.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("RESULT "), r.stderr.decode()
    return r.returncode, r.stdout, json.loads(last[7:])


def second(rotate: bool = False) -> bytes:
    """binlog.000002: continues binlog.000001 (begins at 0-1-13)."""
    return binlog(start=((0, 1, 13),), gtids=(14, 15, 16), rotate=rotate, ts0=1_800_000_010)


@pytest.fixture
def archive(tmp_path) -> Path:
    bdir = tmp_path / "shop" / "binlog"
    idir = bdir / ID
    (idir / ".meta").mkdir(parents=True)
    (idir / "binlog.000001").write_bytes(binlog())
    # being written: half of its next event is there already
    (idir / "binlog.000002.open").write_bytes(second() + second(rotate=True)[len(second()):][:20])
    return bdir


def test_fetch_sends_a_closed_file_whole_and_checks_it_against_the_catalog(archive):
    data = binlog()
    sha = hashlib.sha256(data).hexdigest()
    code, out, res = fetch(archive, "--file", f"{ID}/binlog.000001", "--sha256", sha, "--size", str(len(data)))
    assert code == 0 and out == data and res["sha256"] == sha and res["size"] == len(data) and res["state"] == "closed"
    code, out, res = fetch(archive, "--file", f"{ID}/binlog.000001", "--sha256", "0" * 64)
    assert code == 3 and "the catalog recorded " + "0" * 64 in res["error"] and "do not use" in res["error"]
    code, _, res = fetch(archive, "--file", f"{ID}/binlog.000001", "--size", "7")
    assert code == 3 and "the catalog recorded 7" in res["error"]


def test_fetch_sends_the_open_file_as_far_as_its_last_complete_event(archive):
    code, out, res = fetch(archive, "--file", f"{ID}/binlog.000002", "--state", "open")
    assert code == 0 and out == second() and res["state"] == "open" and res["last_gtid"] == "0-1-16"
    assert res["bytes_on_disk"] > res["size"]
    # it closed since the catalog saw it: the closed file, whole
    idir = archive / ID
    (idir / "binlog.000002.open").rename(idir / "binlog.000002")
    (idir / "binlog.000002").write_bytes(second(rotate=True))
    code, out, res = fetch(archive, "--file", f"{ID}/binlog.000002", "--state", "open")
    assert code == 0 and out == second(rotate=True) and res["state"] == "closed"


def test_fetch_never_serves_anything_outside_the_archive(archive, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    os.symlink(secret, archive / ID / "binlog.000009")
    code, out, res = fetch(archive, "--file", f"{ID}/binlog.000009")
    assert code == 3 and out == b"" and "outside the archive" in res["error"]
    for bad in ("../x/binlog.000001", f"{ID}/../binlog.000001", f"{ID}/binlog.000001/x", ID, "1-aa/passwd"):
        code, out, res = fetch(archive, "--file", bad)
        assert code == 2 and out == b"" and "--file must be" in res["error"], bad
    code, _, res = fetch(archive, "--file", f"{ID}/binlog.000005")
    assert code == 3 and "is not in the archive" in res["error"]


def test_every_fetch_option_is_documented():
    r = subprocess.run([sys.executable, str(SCRIPT), "fetch", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for option in ("--dir", "--file", "--state", "--sha256", "--size"):
        assert option in r.stdout, option


# ------------------------------------------------------------------------------------------------ the CLI


def test_the_cli_reads_an_archive_directory_and_refuses_in_its_own_words(archive, tmp_path, capsys):
    from mysqlbackup.flashback.cli import main
    from mysqlbackup.flashback.engine import read_archive_dir
    records, paths = read_archive_dir(str(archive))
    assert [(r.name, r.state) for r in records] == [("binlog.000001", "closed"), ("binlog.000002", "open")]
    assert records[0].sha256 == hashlib.sha256(binlog()).hexdigest() and records[0].end_state == {0: (1, 13)}
    assert paths[(ID, "binlog.000002")][1] == len(second()) and records[1].last_gtid == "0-1-16"
    # one identity's directory works too; nothing was written into the archive
    assert [r.name for r in read_archive_dir(str(archive / ID))[0]] == ["binlog.000001", "binlog.000002"]
    assert list((archive / ID / ".meta").iterdir()) == []

    out = tmp_path / "out.sql"
    first = datetime.fromtimestamp(1_800_000_000, timezone.utc)
    assert main(["generate", "--archive", str(archive), "--start-datetime", "2020-01-01 00:00:00",
                 "--stop-datetime", (first + timedelta(seconds=3)).strftime("%Y-%m-%d %H:%M:%S"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mysql-flashback: error: the binlog archive " in err and "--start-datetime: 2020-01-01T00:00:00Z .. " in err
    assert "before the first archived file binlog.000001" in err and not out.exists()
    assert main(["generate", "--archive", str(archive), "--start-gtid", "0-1-11", "--identity", "7-77", "-o",
                 str(out)]) == 2
    assert f"has no files of server 7-77 (it has: {ID})" in capsys.readouterr().err
    assert main(["generate", "--archive", str(archive), "--binlog-dir", str(archive), "--start-gtid", "0-1-11",
                 "-o", str(out)]) == 2
    assert "--archive and --binlog-dir/--binlog are mutually exclusive" in capsys.readouterr().err
    assert main(["generate", "--binlog-dir", str(archive), "--identity", ID, "--start-gtid", "0-1-11",
                 "-o", str(out)]) == 2
    assert "--identity picks a server identity of an archive" in capsys.readouterr().err
    assert main(["generate", "--archive", str(tmp_path / "nowhere"), "--start-gtid", "0-1-11", "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a window the archive holds: the open file is read as far as its last complete event (no row changes here)
    assert main(["generate", "--archive", str(archive), "--start-gtid", "0-1-12", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no stop given: the window runs to the end of the archive" in err
    assert f"-- source: archive {archive}/{ID} (binlog.000001 .. binlog.000002)" in out.read_text()


def test_the_cli_help_names_the_archive():
    r = subprocess.run([sys.executable, str(REPO / "bin" / "mysql-flashback"), "generate", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--archive DIR" in r.stdout and "--identity" in r.stdout
    assert "<base_dir>/<instance>/binlog" in r.stdout and "Not with --binlog-dir" in r.stdout


# ------------------------------------------------------------------------------------------------ the DAG's form


def test_binlog_source_opens_on_auto_and_offers_three_sources(tmp_path):
    import yaml

    from dag_render import flashback_params
    from mysqlbackup.cmdb import load_cmdb
    doc = {"defaults": {"storage": {"ssh_conn_id": "store1", "base_dir": "/srv/backups"}},
           "instances": [{"name": "shop", "host": "db", "port": 3306, "role": "primary", "flavor": "mariadb",
                          "ssh_conn_id": "ssh_db", "mysql_conn_id": "m", "owner": "dba@example.internal",
                          "app": "shop"}]}
    path = tmp_path / "cmdb.yaml"
    path.write_text(yaml.safe_dump(doc))
    params = flashback_params(load_cmdb(path))
    p = params["binlog_source"]
    assert p.value == "auto" and p.schema["enum"] == ["auto", "live", "archive"]
    assert set(p.schema["values_display"]) == {"auto", "live", "archive"}
    for name in ("instance", "start_datetime", "stop_datetime", "start_position", "stop_position", "start_gtid",
                 "stop_gtid", "databases", "tables", "types", "where", "apply", "apply_conn_id", "binlog_conn_id"):
        assert name in params, name


def test_a_broken_chain_in_an_archive_directory_is_refused_naming_it(archive, tmp_path, capsys):
    from mysqlbackup.flashback.cli import main
    # binlog.000002 begins at 0-1-10 but binlog.000001 ended at 0-1-13: not the file that followed it
    (archive / ID / "binlog.000002.open").write_bytes(binlog(rotate=False, ts0=1_800_000_010))
    assert main(["generate", "--archive", str(archive), "--start-gtid", "0-1-12", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--start-gtid: the chain breaks between binlog.000001 (ends at 0-1-13) and binlog.000002 (begins at " \
           "0-1-10)" in err, err


def test_the_worker_end_of_a_fetch_hashes_what_arrives(tmp_path):
    from operators.flashback import _SINK
    dest = tmp_path / "binlog.000001"
    dest.write_bytes(b"stale")  # a first try that found the scripts missing left an empty file: overwritten
    data = os.urandom(3 << 20)
    r = subprocess.run([sys.executable, "-c", _SINK, str(dest)], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0 and dest.read_bytes() == data and oct(dest.stat().st_mode & 0o777) == "0o600"
    res = json.loads(r.stderr.decode().splitlines()[-1][7:])
    assert res == {"status": "ok", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    link = tmp_path / "link"
    os.symlink(tmp_path / "elsewhere", link)
    r = subprocess.run([sys.executable, "-c", _SINK, str(link)], input=b"x", capture_output=True, timeout=60)
    assert r.returncode != 0 and not (tmp_path / "elsewhere").exists()
