"""BinlogFlashbackOperator: the inverse SQL of a binlog window, stored for review, applied on request.

It reads the binlog from the live server as a replication client (the instance's ``mysql_conn_id``, or
``binlog_conn_id``, needs REPLICATION SLAVE) or from the instance's continuous binlog archive on its
storage host (``binlog_source``: ``auto`` reads the live server while it still holds the whole window,
else the archive), writes the script next to the instance's backups
(``<base_dir>/<instance>/flashback/<YYYYMMDD-HHMMSS>_<run id>/flashback.sql`` on the storage host), logs
the summary, and applies it only when ``apply`` is true (with ``apply_conn_id``'s credentials).

From the archive: the catalog's ``binlog_files`` of the instance give the files that cover the window
(``mysqlbackup.archive.window_coverage``); a window they do not hold whole is refused before anything is
read. Each file is fetched over ssh (``binlog_archive.py fetch``) into a private temporary directory on
the worker, its sha256 computed on arrival: a closed file must match the catalog's, the open file is sent
as far as its last complete event.
"""
from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from functools import partial
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from mysqlbackup import archive as A
from mysqlbackup import params as P
from mysqlbackup.cmdb import cmdb_path, load_cmdb
from mysqlbackup.flashback.select import Selection, SelectionError, render
from mysqlbackup.text import capped
from operators.backup import HostScriptOperator, mysql_login, raise_for

SOURCES = P.BINLOG_SOURCES

# the worker's end of a fetch: stdin to a new file in the run's private directory, hashed on the way
# (an independent check of what the storage host says it sent); one RESULT line, like the host scripts
_SINK = r"""
import hashlib, json, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
os.fchmod(fd, 0o600)
h, n = hashlib.sha256(), 0
with os.fdopen(fd, "wb") as out:
    while True:
        b = sys.stdin.buffer.read(1 << 20)
        if not b:
            break
        h.update(b)
        out.write(b)
        n += len(b)
sys.stderr.write("RESULT " + json.dumps({"status": "ok", "size": n, "sha256": h.hexdigest()}) + "\n")
"""


def _conn_kwargs(conn_id: str, host: str, port: int) -> dict:
    conn = mysql_login(conn_id)
    return {"host": conn.host or host, "port": int(conn.port or port), "user": conn.login,
            "password": conn.password or "", "charset": "utf8mb4", "connect_timeout": 10}


class BinlogFlashbackOperator(HostScriptOperator):
    """Generate (and optionally apply) the flashback of a binlog window of one CMDB instance.

    Every argument comes from the DAG run's params (validated by the trigger form):
    ``instance``, ``databases``, ``tables``, ``start_datetime``, ``stop_datetime``,
    ``start_position``, ``stop_position``, ``start_gtid``, ``stop_gtid``, ``types``, ``apply``,
    ``apply_conn_id``, ``binlog_conn_id``, ``binlog_source``.
    """

    ui_color = "#fbeee8"

    def run(self, context: Any) -> dict:
        p = context["params"]
        cmdb = load_cmdb(cmdb_path())
        inst = cmdb.by_name(str(p.get("instance") or ""))
        if inst is None:
            known = capped(i.name for i in cmdb.instances)
            raise AirflowFailException(f"instance: unknown instance {str(p.get('instance'))[:80]!r}: not a valid row "
                                       f"of the CMDB {cmdb.source} (known: {known})")
        self.instance = inst
        try:
            sel = Selection.parse(databases=p.get("databases") or (), tables=p.get("tables") or (),
                                  start_time=p.get("start_datetime") or None, stop_time=p.get("stop_datetime") or None,
                                  start_position=p.get("start_position") or None,
                                  stop_position=p.get("stop_position") or None,
                                  start_gtid=p.get("start_gtid") or None, stop_gtid=p.get("stop_gtid") or None,
                                  types=p.get("types") or None)
        except SelectionError as exc:
            raise AirflowFailException(f"bad flashback parameters: {exc}") from exc
        if not any((sel.start_time, sel.start_position, sel.start_gtid)):
            raise AirflowFailException("give the start of the window (start_datetime, start_position or "
                                       "start_gtid): a flashback of the whole binlog is almost never meant")
        apply = bool(p.get("apply"))
        apply_conn = str(p.get("apply_conn_id") or "")
        if apply and not apply_conn:
            raise AirflowFailException("apply is true but apply_conn_id is empty: name the Airflow connection of a "
                                       "user allowed to change the selected tables")
        from mysqlbackup.flashback.engine import FlashbackError, generate_from_live, live_window
        wanted = str(p.get("binlog_source") or "auto")
        if wanted not in SOURCES:
            raise AirflowFailException(f"binlog_source: {wanted[:40]!r} is not one of {', '.join(SOURCES)}")
        source = _conn_kwargs(str(p.get("binlog_conn_id") or inst.mysql_conn_id), inst.host, inst.port)
        where = str(p.get("where") or "row")
        live = None
        if wanted in ("auto", "live"):
            live = live_window(source, sel)
            if wanted == "live" and not live.holds:
                hint = ("use binlog_source archive (or auto) to read the instance's binlog archive" if live.reachable
                        else "use binlog_source archive (or auto) to read the instance's binlog archive, or check "
                             "binlog_conn_id")
                raise AirflowFailException(f"flashback of {inst.name} refused: binlog_source live: "
                                           f"{render(live.reason)}: {hint}")
        use = "live" if wanted == "live" or (wanted == "auto" and live.holds) else "archive"
        why = render(live.reason) if live is not None else "asked for"
        self.log.info("binlog_source %s: reading the %s: %s", wanted, "live server" if use == "live" else
                      "binlog archive", why)
        # unique per run: two runs in the same second must not write over each other's script
        run = "".join(c if c.isalnum() else "-" for c in str(context.get("run_id") or ""))[-40:].strip("-")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + (f"_{run}" if run else "")
        with tempfile.TemporaryDirectory(prefix="flashback-") as tmp:
            local = os.path.join(tmp, "flashback.sql")
            archived = None
            try:
                if use == "live":
                    summary = generate_from_live(source, sel, local, tmp, log=self.log.info, where=where)
                else:
                    # the live server is asked which columns are generated when it answers (not known
                    # to be unreachable)
                    summary, archived = self._from_archive(inst, sel, tmp, local, where, source,
                                                           live is None or live.reachable,
                                                           apply_conn if apply else None)
            except FlashbackError as exc:
                raise AirflowFailException(f"flashback of {inst.name} refused: {exc}") from exc
            self.log.info("%s", summary.header())
            target_dir = f"{inst.storage.base_dir}/{inst.name}/flashback/{stamp}"
            step = self.run_steps([(inst.storage.ssh_conn_id,
                                    self.storage_script("receive", "--dir", target_dir, "--artifact", "flashback.sql"))],
                                  timeout=3600, stdin_path=local)[0]
            raise_for(step, "storing the flashback script")
            stored = step.result["path"]
            self.log.info("flashback script stored on %s: %s (%s bytes, sha256 %s)", inst.storage.ssh_conn_id,
                          stored, step.result.get("size_bytes"), step.result.get("sha256"))
            result = {"instance": inst.name, "stored": stored, "sha256": step.result.get("sha256"),
                      **summary.as_dict(), "applied": False, "binlog_source": use, "binlog_source_reason": why}
            if archived is not None:
                result["archive"] = archived
            result["output"] = stored
            if apply:
                result["apply"] = self._apply(local, apply_conn, inst)
                result["applied"] = True
            return result

    def _from_archive(self, inst, sel: Selection, tmp: str, output: str, where: str, source: dict,
                      reachable: bool, apply_conn: str | None):
        """Generate from the archive: cover the window from the catalog, fetch exactly those files, read them."""
        from mysqlbackup.flashback.engine import (FlashbackError, archive_end_note, archive_refusal, generate_from_files,
                                                  generated_columns, window_args)
        bdir = A.archive_dir(inst)
        rows = self.catalog.binlog_files(inst.name)
        files = [A.ArchivedFile.from_row(r) for r in rows]
        if not files:
            raise FlashbackError(f"the binlog archive of {inst.name} has no catalogued file: is its supervisor "
                                 f"mysql_binlog__{inst.name} running (policy.binlog_archive.enabled)?")
        state = self.catalog.archive_state(inst.name)
        until = A.archived_until(state)
        cov = A.window_coverage(files, **window_args(sel), archived_until=until)
        if not cov.complete:
            raise archive_refusal(f"of {inst.name}", cov, files)
        names = [f.name for f in cov.files]
        self.log.info("binlog archive of %s: server %s, %d file(s) cover the window: %s", inst.name, cov.identity,
                      len(names), capped(f"{f.name} ({f.state})" for f in cov.files))
        if cov.open_end:
            lag = "" if not state else (
                f" (at its last measurement, {A.iso(A.to_datetime(state.get('measured_at')))}, the archive "
                + ("held everything the server had written)" if state.get("caught_up") else
                   f"trailed the server by {state.get('lag_seconds')} s)"))
            self.log.warning("%s%s", archive_end_note(cov), lag)
        try:  # every path checked before anything is fetched
            remotes = [A.archived_path(f, bdir) for f in cov.files]
        except ValueError as exc:
            raise FlashbackError(f"the binlog archive of {inst.name}: {exc}") from None
        binlogs = os.path.join(tmp, "binlogs")
        os.mkdir(binlogs, 0o700)
        paths, fetched, total = [], [], 0
        for f, remote in zip(cov.files, remotes):
            got = self._fetch(inst, bdir, f, os.path.join(binlogs, f.name))
            total += got["size"]
            fetched.append({"file": f.name, "state": got["state"], "size": got["size"], "sha256": got["sha256"],
                            "path": remote})
            if got["size"] > 4:  # an open file without a complete event yet has nothing to read
                paths.append(os.path.join(binlogs, f.name))
        if not paths:
            raise FlashbackError(f"the archived files of {inst.name} that cover the window hold no complete event yet")
        generated, asked = None, None
        if reachable:
            asked = "the live server"
            try:
                generated = generated_columns(source)
            except Exception as exc:  # noqa: BLE001 - then the apply target, else unknown (said in the header)
                self.log.warning("could not ask the live server which columns are generated: %s", exc)
                generated, asked = None, None
        if generated is None and apply_conn:
            asked = f"the apply target ({apply_conn})"
            generated = generated_columns(_conn_kwargs(apply_conn, inst.host, inst.port))
        self.log.info("generated columns: %s", f"asked of {asked}" if asked else
                      "no server to ask (the header says unknown; apply refuses tables that have them)")
        label = (f"archive {inst.storage.ssh_conn_id}:{bdir}/{cov.identity} ({names[0]} .. {names[-1]})")
        summary = generate_from_files(paths, sel, output, tmp, log=self.log.info, where=where, generated=generated,
                                      source=label, start_checked=True)
        return summary, {"identity": cov.identity, "files": fetched, "bytes": total,
                         "open_end": cov.open_end, "end": A.iso(cov.end) if cov.open_end else None}

    def _fetch(self, inst, bdir: str, f: A.ArchivedFile, dest: str) -> dict:
        """One archived file from the storage host into ``dest``: checked on arrival (size and sha256 against the
        catalog for a closed file; against what the storage host says it sent, always)."""
        import sys

        from mysqlbackup.flashback.engine import FlashbackError
        conn_id = inst.storage.ssh_conn_id
        args = ["fetch", "--dir", bdir, "--file", f"{f.identity}/{f.name}", "--state", f.state]
        if f.state in ("closed", "incomplete") and f.sha256:
            args += ["--sha256", f.sha256, "--size", str(f.size)]
        steps = [(conn_id, self.script(conn_id, "binlog_archive.py", *args, become=inst.become, python=inst.python)),
                 ("worker", [sys.executable, "-c", _SINK, dest])]
        remote, sink = self.run_steps(steps, timeout=3600)
        if not remote.ok:
            # a file that changed since it was catalogued is a refusal, not something a retry fixes
            raise_for(remote, f"fetching {f.where} from the binlog archive")
        if not sink.ok:
            raise AirflowFailException(f"writing {f.name} on the worker failed: {sink.error()}")
        got = dict(remote.result)
        mine = sink.result
        if (mine["size"], mine["sha256"]) != (got.get("size"), got.get("sha256")):
            raise FlashbackError(f"{f.where} arrived as {mine['size']} bytes with sha256 {mine['sha256']}, the storage "
                                 f"host sent {got.get('size')} bytes with sha256 {got.get('sha256')}: not used")
        if got.get("state") != "open" and f.state != "open" and f.sha256 and (
                mine["sha256"] != f.sha256 or mine["size"] != f.size):
            raise FlashbackError(f"{f.where} arrived as {mine['size']} bytes with sha256 {mine['sha256']}, the catalog "
                                 f"recorded {f.size} bytes with sha256 {f.sha256}: not used")
        self.log.info("fetched %s (%s, %d bytes, sha256 %s%s)", f.where, got.get("state"), mine["size"],
                      mine["sha256"][:16], ", matches the catalog" if f.state != "open" and f.sha256 else
                      ", to its last complete event" if got.get("state") == "open" else "")
        return {"state": got.get("state"), "size": mine["size"], "sha256": mine["sha256"]}

    def _apply(self, path: str, conn_id: str, inst) -> dict:
        import pymysql

        from mysqlbackup.flashback.apply import ApplyRefused, ApplyStopped, ScriptRefused, apply_script
        target = _conn_kwargs(conn_id, inst.host, inst.port)
        try:
            with open(path, "rb") as f:
                report = apply_script(f, partial(pymysql.connect, **target), log=self.log.info)
        except ApplyStopped as exc:
            raise AirflowFailException(f"apply stopped: {exc}") from exc
        except ScriptRefused as exc:
            raise AirflowFailException(f"apply of the flashback script {path} {exc}") from exc
        except ApplyRefused as exc:
            raise AirflowFailException(f"apply refused ({exc}); the script is stored for review: apply it with "
                                       "mysql-flashback apply --force once reviewed") from exc
        self.log.info("applied %d transactions, %d statements in %.1f s%s", report.transactions, report.statements,
                      report.seconds, f" ({report.edit_note})" if report.edited else "")
        return {"transactions": report.transactions, "statements": report.statements, "seconds": report.seconds,
                "edited": report.edited}
