"""The demo's sandbox survives a stop: resume keeps data, keys and replication, and moves a taken port."""
from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pymysql
import pytest

pytestmark = pytest.mark.server


def _hold(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_resume_keeps_data_and_replication_and_moves_a_taken_port(mariadb_template):
    from sandbox import Sandbox
    from sandbox.servers import REPL_USER, port_free
    state = Path(tempfile.mkdtemp(prefix="mbk-rs-"))
    sb = Sandbox.create(state, replica=True, template=mariadb_template)
    held = None
    try:
        sb.source.sql("CREATE DATABASE keep")
        sb.source.sql("CREATE TABLE keep.t (id INT PRIMARY KEY, v VARCHAR(20))")
        sb.source.sql("INSERT INTO keep.t VALUES (1, 'before stop')")
        sb.sync_replica()
        key = Path(sb.sshd.client_key).read_bytes()
        old = {"source": sb.source.port, "replica": sb.replica.port, "sshd": sb.sshd.port}
        password = sb.backup_password
        sb.stop()
        assert not sb.running()

        held = _hold(old["source"])  # the source's port is taken while it is stopped
        sb = Sandbox.resume(state)
        assert sb.running()
        assert sb.source.port != old["source"] and sb.moved == {"source": (old["source"], sb.source.port)}
        assert (sb.replica.port, sb.sshd.port) == (old["replica"], old["sshd"])
        assert Sandbox.load(state).source.port == sb.source.port  # state.json follows
        assert sb.backup_password == password and Path(sb.sshd.client_key).read_bytes() == key
        assert sb.source.sql("SELECT v FROM keep.t") == [("before stop",)]

        # the replica follows the source on its new port, from where it was (GTID slave_pos)
        sb.source.sql("INSERT INTO keep.t VALUES (2, 'after resume')")
        sb.sync_replica(timeout=20)
        assert sb.replica.sql("SELECT id, v FROM keep.t ORDER BY id") == [(1, "before stop"), (2, "after resume")]
        status = sb.replica.connect(cursorclass=pymysql.cursors.DictCursor)
        try:
            with status.cursor() as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
        finally:
            status.close()
        assert (int(row["Master_Port"]), row["Using_Gtid"], row["Master_User"]) == (sb.source.port, "Slave_Pos", REPL_USER)
        assert row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes"
        # the sshd kept its keys and answers on its port
        assert sb.sshd.connection()["port"] == old["sshd"]

        # after another stop, with every port free, a resume keeps the (new) ports
        sb.stop()
        held.close()
        held = None
        assert port_free(sb.source.port)
        again = Sandbox.resume(state)
        assert again.moved == {} and again.source.port == sb.source.port
        assert again.replica.sql("SELECT COUNT(*) FROM keep.t") == [(2,)]
        sb = again
    finally:
        if held:
            held.close()
        sb.stop()
        shutil.rmtree(state, ignore_errors=True)
