"""The supervisor of an instance's continuous binlog archive (the one task of ``mysql_binlog__<name>``).

One short ssh call to the storage host (``binlog_archive.py supervise``) keeps the detached streamer
running and reports what changed; this operator records it in the catalog, judges continuity, gaps
and the recovery window with the pure ``mysqlbackup.archive``, alerts once per incident, and returns
the state to XCom. It holds no worker slot between runs: the streamer runs on the storage host.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from airflow.sdk.exceptions import AirflowException

from mysqlbackup import archive as A
from operators.alerting import BackupFailureCallback, send_incident
from operators.backup import HostScriptOperator, mysql_login, raise_for

log = logging.getLogger(__name__)
SCRIPT = "binlog_archive.py"


class BinlogSuperviseOperator(HostScriptOperator):
    """Make sure the instance's streamer runs, catalog its files, measure the lag, find the gaps."""

    ui_color = "#eef7e8"

    def run(self, context: Any) -> dict:
        inst = self.instance
        pol = inst.policy.binlog_archive
        conn = mysql_login(pol.conn_id or inst.mysql_conn_id)
        creds = json.dumps({"user": conn.login, "password": conn.password or ""})
        known = self.catalog.binlog_known(inst.name)
        bdir = A.archive_dir(inst)
        argv = self.script(inst.storage.ssh_conn_id, SCRIPT, "supervise", "--dir", bdir, "--host", inst.host,
                           "--port", str(inst.port), "--flavor", inst.flavor,
                           "--client-server-id", str(A.client_server_id(inst)),
                           "--lease-minutes", str(pol.lease_minutes), "--stall-seconds", str(pol.stall_seconds),
                           become=inst.become, python=inst.python)
        step = self.run_steps([(inst.storage.ssh_conn_id, argv)],
                              stdin=(creds + "\n" + json.dumps(known) + "\n").encode(), timeout=600)[0]
        res = step.result or {}
        if "files" in res:  # also when the server was unreachable: the archive is still described
            changed = self.catalog.record_binlog_files(inst.name, res["files"], inst.storage.ssh_conn_id, bdir)
            for ident, name, state in changed:
                self.log.info("catalog: %s/%s is %s", ident, name, state)
        streamer = res.get("streamer") or {}
        if streamer:
            self.log.info("streamer: %s (%s); pid %s, state %s, restarts %s%s", streamer.get("action"),
                          streamer.get("reason"), streamer.get("pid"), streamer.get("state"), streamer.get("restarts"),
                          f"; last error: {streamer['last_error']}" if streamer.get("last_error") else "")
            for note in streamer.get("notes") or []:
                self.log.warning("streamer note: %s", note.get("note"))
        if not step.ok:
            self.catalog.record_archive_state(inst.name, streamer_action=streamer.get("action"),
                                              streamer_pid=streamer.get("pid"),
                                              details_json=json.dumps(_clip(res), default=str))
            raise_for(step, "binlog archive supervision")
        return self.judge(res, context)

    def judge(self, res: dict, context: Any) -> dict:
        """Continuity, gaps, recovery window and lag from the catalog; alerts once per incident."""
        inst = self.instance
        pol = inst.policy.binlog_archive
        files = [A.ArchivedFile.from_row(r) for r in self.catalog.binlog_files(inst.name)]
        backups = [A.BackupPoint.from_row(r) for r in self.catalog.backups(instance=inst.name, status="usable")]
        caught_up = bool(res.get("caught_up"))
        measured = A.to_datetime(res.get("measured_at"))
        last_event = A.to_datetime(res.get("last_event_at"))
        archived_until = measured if caught_up and measured else last_event
        window = A.recovery_window(files, backups, archived_until)
        open_gaps = self.catalog.record_gaps(inst.name, [g.row() for g in window.gaps])
        self.catalog.record_pitr_blocks(inst.name, window.blocks)
        by_key = {g.key: g for g in window.gaps}
        for row in open_gaps:
            g = by_key.get(row["gap_key"])
            text = g.describe() if g else f"{row['missing']}: {row['detail']}"
            self.log.error("GAP in the binlog archive of %s: %s", inst.name, text)
            if row["alerted_at"] is None and pol.gap_alert:
                blocked = sorted({b["label"] for b in window.blocks if b["gap_key"] == row["gap_key"]})
                send_incident(inst.name, inst.owner, inst.app, inst.alerts, "GAP", f"binlog gap {row['gap_key']}",
                              f"the binlog archive of {inst.name} misses {text}. Backups whose roll-forward crosses it "
                              f"are not usable for point-in-time restore past it (a full restore is fine): "
                              f"{', '.join(blocked) or 'none'}.", context)
                self.catalog.mark_gap_alerted(inst.name, row["gap_key"])
        for block in window.blocks:
            self.log.warning("backup %s: %s", block["label"], block["detail"])
        state = self.catalog.archive_state(inst.name) or {}
        lag, threshold = res.get("lag_seconds"), pol.lag_alert_seconds
        lag_alerted = state.get("lag_alerted_at")
        now = datetime.now(timezone.utc)
        if A.lag_over(lag, threshold, caught_up):
            self.log.error("the binlog archive of %s trails the server by %s s (%s bytes), over the %s s threshold",
                           inst.name, lag, res.get("lag_bytes"), threshold)
            if lag_alerted is None:
                send_incident(inst.name, inst.owner, inst.app, inst.alerts, "LAG", f"binlog archive lag {lag} s",
                              f"the binlog archive of {inst.name} trails the server by {lag} s ({res.get('lag_bytes')} "
                              f"bytes), over the threshold of {threshold} s. Streamer: {res.get('streamer')}", context)
                lag_alerted = now
        elif lag_alerted is not None and (caught_up or (lag is not None and lag <= threshold)):
            self.log.warning("the lag of the binlog archive of %s is back under %s s (it alerted at %s)",
                             inst.name, threshold, lag_alerted)
            lag_alerted = None
        summary = window.summary()
        out = {"instance": inst.name, "identity": res.get("identity"),
               "streamer": {k: (res.get("streamer") or {}).get(k)
                            for k in ("action", "reason", "pid", "state", "restarts", "last_error")},
               "head": {"file": res.get("head_file"), "pos": res.get("head_pos"), "state": res.get("head_state"),
                        "last_gtid": res.get("last_gtid")},
               "last_event_at": A.iso(last_event), "lag_seconds": lag, "lag_bytes": res.get("lag_bytes"),
               "caught_up": caught_up, "measured_at": A.iso(measured),
               "server": {k: (res.get("server") or {}).get(k) for k in ("file", "pos", "gtid", "identity")},
               "files": {"reported": len(res.get("files") or []), "catalogued": len(files),
                         "closed": sum(1 for f in files if f.state == "closed")},
               "gaps": [{"key": g.key, "kind": g.kind, "missing": g.missing, "from": A.iso(g.from_time),
                         "to": A.iso(g.to_time), "detail": g.detail} for g in window.gaps],
               "recovery_window": summary,
               "pitr_blocked": sorted({b["label"] for b in window.blocks})}
        self.catalog.record_archive_state(
            inst.name, server_identity=res.get("identity"), head_file=res.get("head_file"),
            head_pos=res.get("head_pos"), last_event_at=last_event, last_gtid=res.get("last_gtid"), lag_seconds=lag,
            lag_bytes=res.get("lag_bytes"), caught_up=int(caught_up), measured_at=measured,
            streamer_action=out["streamer"]["action"], streamer_pid=out["streamer"]["pid"],
            window_start=window.earliest, window_end=window.latest, lag_alerted_at=lag_alerted,
            failure_alerted_at=None, details_json=json.dumps(out, default=str))
        self.log.info("archive of %s: head %s:%s, last event %s, lag %s s; recovery window %s .. %s; %d gap(s)",
                      inst.name, out["head"]["file"], out["head"]["pos"], out["last_event_at"], lag,
                      summary["earliest"], summary["latest"], len(window.gaps))
        streamer = res.get("streamer") or {}
        if streamer.get("state") == "waiting" and streamer.get("last_error") and (lag is None or lag > threshold):
            # e.g. access denied for a new instance: no head, so no lag to alert on; fail (alerted once)
            raise AirflowException(f"the binlog streamer of {inst.name} is not streaming and the archive is not "
                                   f"current: {streamer['last_error']}")
        return out


class ArchiveFailureCallback(BackupFailureCallback):
    """The supervisor runs every minute: a failure alerts once, until a run succeeds again."""

    def __call__(self, context: dict[str, Any]) -> None:
        try:
            from mysqlbackup.catalog import Catalog
            with Catalog() as cat:
                state = cat.archive_state(self.instance_name) or {}
                if state.get("failure_alerted_at"):
                    log.warning("the binlog archive supervisor of %s failed again; the owner was told at %s (once, "
                                "until a run succeeds)", self.instance_name, state["failure_alerted_at"])
                    return
                cat.record_archive_state(self.instance_name, failure_alerted_at=datetime.now(timezone.utc))
        except Exception:  # noqa: BLE001 - the alert matters more than its dedup
            log.exception("could not read the archive state of %s", self.instance_name)
        super().__call__(context)


def _clip(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "files"}

