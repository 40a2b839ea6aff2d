#!/usr/bin/env python3
"""Point-in-time replay verbs: receive, replay, cleanup. Runs ON the restore target (over SSH), after the
full restore started the restored server and before it is marked restored. Stdlib only, Python 3.7+.

  receive   stdin (one archived binlog file, from ``binlog_archive.py fetch`` on the storage host) ->
            DIR/NAME, its size and sha256 computed as it lands; a closed file whose sha256 or size is not
            the catalogued one is refused (and removed). Never replayed in place: the applier mode copies.
  replay    walk the received files (every event CRC-checked), find the first transaction after the
            backup's GTID state (--start-gtid: never a file boundary) and the last one before the
            recovery target (exactly one of --stop-datetime, exclusive; --stop-position, exclusive;
            --stop-gtid, inclusive; a transaction is never cut), then apply exactly those:
              --mode pipe     mariadb-binlog --start-position=S --stop-position=E FILES | mariadb: one
                              client session for every file (temporary tables span files)
              --mode applier  the files copied in as the server's relay logs (CHANGE MASTER TO
                              RELAY_LOG_FILE/POS and MASTER_LOG_FILE/POS), START SLAVE SQL_THREAD UNTIL
                              MASTER_LOG_FILE/POS with parallel workers (the IO thread never runs: nothing
                              is replicated from anywhere), then RESET SLAVE ALL: no replica afterwards
            and report the point reached: GTID, file:position (of the source) and time of the last
            applied transaction, the number of transactions. With --databases, only those are replayed
            and every other user database is dropped afterwards.
  cleanup   remove DIR (only a directory receive created).

The admin login of the restored server arrives on stdin as one JSON line and goes to a 0600 option file
in a private directory; SQL goes to the client on stdin. The last stderr line is ``RESULT {json}``; exit
codes are those of hostkit.py.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostkit
from binlog_archive import (CRC32_ALG, FDE_EVENT, GTID_EVENT, GTID_LIST_EVENT, HEADER, HEADER_LEN, MAGIC,
                            ROTATE_EVENT, STOP_EVENT, event_crc_ok, fde_checksum_alg)
from hostkit import INTERNAL, PRECONDITION, TRANSIENT, USAGE, ScriptError, log

SCRIPT = "replay.py"
HEARTBEAT_EVENT, CHECKPOINT_EVENT, START_ENCRYPTION_EVENT = 27, 161, 164
NOT_IN_TRANSACTION = (FDE_EVENT, STOP_EVENT, ROTATE_EVENT, HEARTBEAT_EVENT, GTID_LIST_EVENT, CHECKPOINT_EVENT,
                      START_ENCRYPTION_EVENT)
ARTIFICIAL_F = 0x20
MARKER = ".replay-work"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.[0-9]{6,}$")
GTID_RE = re.compile(r"^[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}$")
STATE_RE = re.compile(r"^([0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})(,[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})*$")
DB_RE = re.compile(r"^[0-9A-Za-z$_-]{1,64}$")
SYSTEM_SCHEMAS = ("mysql", "performance_schema", "sys", "information_schema")
READ_CHUNK = 4 << 20


# ---------------------------------------------------------------------------------------------
# pure helpers (unit tested)


def parse_state(text: str) -> dict:
    """``0-1-100,1-2-7`` -> {0: (1, 100), 1: (2, 7)}."""
    out = {}
    if not text:
        return out
    if not STATE_RE.match(text):
        raise ScriptError(USAGE, "--start-gtid must be DOMAIN-SERVER-SEQ[,...], got %r" % text[:200])
    for part in text.split(","):
        d, s, q = (int(x) for x in part.split("-"))
        if d not in out or out[d][1] < q:
            out[d] = (s, q)
    return out


def state_text(state: dict) -> str:
    return ",".join("%d-%d-%d" % (d, s, q) for d, (s, q) in sorted(state.items()))


def file_number(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


def scan_transactions(path: str, name: str) -> dict:
    """Every transaction of one binlog file: GTID, first and end byte (the end of its last event), the
    latest event timestamp, server_id; the file's Gtid_list (the state before it). Every event is checked
    (its size against its log_pos, its CRC32 when the file says so); a partial event at the end stops the
    walk (an open file), a damaged one fails."""
    trx = []
    out = {"name": name, "start_state": None, "transactions": trx, "end": 4, "server_ids": set()}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != MAGIC:
            raise ScriptError(PRECONDITION, "%s is not a binlog file (no magic)" % name)
        pos, alg, cur = 4, None, None
        buf, base = b"", 4
        while True:
            off = pos - base
            if len(buf) - off < HEADER_LEN:
                more = f.read(READ_CHUNK)
                if not more:
                    break
                buf, base = buf[off:] + more, pos
                continue
            ts, etype, sid, esize, log_pos, flags = HEADER.unpack_from(buf, off)
            if esize < HEADER_LEN or (log_pos and log_pos != pos + esize):
                raise ScriptError(PRECONDITION, "%s: damaged event header at %d" % (name, pos))
            if len(buf) - off < esize:
                if pos + esize > size:
                    break  # a partial event: the open file's end
                more = f.read(max(READ_CHUNK, esize))
                buf, base = buf[off:] + more, pos
                continue
            ev = buf[off:off + esize]
            if pos == 4:
                if etype != FDE_EVENT:
                    raise ScriptError(PRECONDITION, "%s: the first event is not a FORMAT_DESCRIPTION" % name)
                alg = fde_checksum_alg(ev)
            csum = 4 if alg == CRC32_ALG else 0
            if csum and not event_crc_ok(ev, etype == FDE_EVENT):
                raise ScriptError(PRECONDITION, "%s: checksum mismatch at %d" % (name, pos))
            body = ev[HEADER_LEN:esize - csum]
            if etype == GTID_EVENT:
                seq = int.from_bytes(body[0:8], "little")
                domain = int.from_bytes(body[8:12], "little")
                cur = {"file": name, "start": pos, "end": pos + esize, "gtid": (domain, sid, seq), "ts": ts}
                trx.append(cur)
                out["server_ids"].add(sid)
            elif etype == GTID_LIST_EVENT and out["start_state"] is None:
                n = int.from_bytes(body[0:4], "little") & 0x0FFFFFFF
                st = {}
                for i in range(n):
                    d, gs, q = struct.unpack_from("<IIQ", body, 4 + 16 * i)
                    st[d] = (gs, q)
                out["start_state"] = st
            elif etype in NOT_IN_TRANSACTION:
                cur = None
            elif cur is not None and not flags & ARTIFICIAL_F:
                cur["end"] = pos + esize
                if ts > cur["ts"]:
                    cur["ts"] = ts
            pos += esize
            out["end"] = pos
    if out["start_state"] is None:
        out["start_state"] = {}
    return out


def plan_replay(scans: list, start: dict, stop_kind: str, stop_value) -> dict:
    """The exact range to apply: the transactions after the GTID state ``start`` up to the stop (``datetime``:
    epoch seconds, exclusive; ``position``: (file, pos), exclusive; ``gtid``: (d, s, q), inclusive).

    The files must continue each other (each one's Gtid_list is the state the one before ended with) and the
    first must begin at or before ``start`` (else transactions between the backup and the archive are
    missing). Raises PRECONDITION naming what is wrong."""
    if not scans:
        raise ScriptError(USAGE, "no binlog file to replay")
    first = scans[0]
    for d, (s, q) in first["start_state"].items():
        if d in start and start[d][1] < q:
            raise ScriptError(PRECONDITION, "%s begins after GTID %d-%d-%d (its Gtid_list), the backup is at %d-%d-%d: "
                                            "transactions %d-?-%d .. %d are not in the files received"
                              % (first["name"], d, s, q, d, start[d][0], start[d][1], d, start[d][1] + 1, q))
        if d not in start and q > 0:
            raise ScriptError(PRECONDITION, "%s begins after GTID %d-%d-%d, the backup has nothing of domain %d"
                              % (first["name"], d, s, q, d))
    state = dict(first["start_state"])
    for prev, nxt in zip(scans, scans[1:]):
        for t in prev["transactions"]:
            d, s, q = t["gtid"]
            state[d] = (s, q)
        if nxt["start_state"] != state:
            raise ScriptError(PRECONDITION, "%s does not continue %s: it begins at %s, %s ends at %s"
                              % (nxt["name"], prev["name"], state_text(nxt["start_state"]) or "nothing",
                                 prev["name"], state_text(state) or "nothing"))
    alltrx = [t for s in scans for t in s["transactions"]]
    if stop_kind == "position":
        names = [s["name"] for s in scans]
        if stop_value[0] not in names:
            raise ScriptError(PRECONDITION, "--stop-position %s:%d: %s is not among the files received (%s)"
                              % (stop_value[0], stop_value[1], stop_value[0], ", ".join(names)))
        sc = scans[names.index(stop_value[0])]
        if stop_value[1] > sc["end"]:
            raise ScriptError(PRECONDITION, "--stop-position %s:%d is past the last complete event of %s (%d)"
                              % (stop_value[0], stop_value[1], sc["name"], sc["end"]))
    # the first transaction not in the backup, and every later one: none may be in it
    begin = None
    for i, t in enumerate(alltrx):
        d, s, q = t["gtid"]
        if q > start.get(d, (0, 0))[1]:
            begin = i
            break
    for t in alltrx[begin or len(alltrx):]:
        d, s, q = t["gtid"]
        if q <= start.get(d, (0, 0))[1]:
            raise ScriptError(PRECONDITION, "GTID %d-%d-%d comes after the backup's first missing transaction and is "
                                            "in the backup already (several GTID domains interleaved): not replayed "
                                            "by position" % t["gtid"])
    if stop_kind == "gtid":
        d, s, q = stop_value
        if q < start.get(d, (0, 0))[1]:
            raise ScriptError(PRECONDITION, "--stop-gtid %d-%d-%d is before the backup's GTID %s"
                              % (d, s, q, state_text(start)))
        if not any(t["gtid"] == tuple(stop_value) for t in alltrx) and q != start.get(d, (0, 0))[1]:
            raise ScriptError(PRECONDITION, "--stop-gtid %d-%d-%d is not in the files received (they hold %s .. %s)"
                              % (d, s, q, "%d-%d-%d" % alltrx[0]["gtid"] if alltrx else "nothing",
                                 "%d-%d-%d" % alltrx[-1]["gtid"] if alltrx else "nothing"))
    chosen = []
    todo = alltrx[begin if begin is not None else len(alltrx):]
    if stop_kind == "gtid" and stop_value[2] <= start.get(stop_value[0], (0, 0))[1]:
        todo = []  # the backup is at the target already
    for t in todo:
        if stop_kind == "datetime" and t["ts"] >= stop_value:
            break
        if stop_kind == "position" and (file_number(t["file"]), t["end"]) > (file_number(stop_value[0]),
                                                                           stop_value[1]):
            break
        chosen.append(t)
        if stop_kind == "gtid" and t["gtid"][0] == stop_value[0] and t["gtid"][2] >= stop_value[2]:
            if t["gtid"] != tuple(stop_value):
                raise ScriptError(PRECONDITION, "--stop-gtid %d-%d-%d: the transaction with that sequence number is "
                                                "%d-%d-%d" % (tuple(stop_value) + t["gtid"]))
            break
    after = dict(start)
    for t in chosen:
        d, s, q = t["gtid"]
        after[d] = (s, q)
    out = {"transactions": len(chosen), "state_after": state_text(after), "start_state": state_text(start)}
    if chosen:
        a, b = chosen[0], chosen[-1]
        out.update(first_gtid="%d-%d-%d" % a["gtid"], start_file=a["file"], start_pos=a["start"],
                   last_gtid="%d-%d-%d" % b["gtid"], stop_file=b["file"], stop_pos=b["end"], last_event_ts=b["ts"],
                   files=[s["name"] for s in scans if file_number(a["file"]) <= file_number(s["name"])
                          <= file_number(b["file"])],
                   server_ids=sorted({t["gtid"][1] for t in chosen}))
    else:
        out.update(first_gtid=None, last_gtid=None, files=[], server_ids=[])
    return out


def sql_string(value) -> str:
    s = str(value)
    for a, b in (("\\", "\\\\"), ("'", "\\'"), ("\0", "\\0"), ("\n", "\\n"), ("\r", "\\r"), ("\x1a", "\\Z")):
        s = s.replace(a, b)
    return "'" + s + "'"


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def wild_filter(databases) -> str:
    """replicate_wild_do_table for whole databases (``_`` and ``%`` in a name escaped: no wildcard)."""
    return ",".join(d.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + ".%" for d in databases)


def utc(ts) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


# ---------------------------------------------------------------------------------------------
# the server


def _client(flavor: str) -> str:
    return hostkit.which_tool(*(("mariadb", "mysql") if flavor == "mariadb" else ("mysql", "mariadb")))


def _argv(flavor: str, dfile: str) -> list:
    return [_client(flavor), "--defaults-file=%s" % dfile, "--batch", "--default-character-set=utf8mb4",
            "--connect-timeout=5", "--protocol=TCP"]


def query(flavor: str, dfile: str, sql: str, where: str, timeout: float = 300) -> list:
    """Rows (dicts) of the last result set of SQL sent on stdin; ScriptError naming the cause."""
    from dbhost import parse_batch
    try:
        r = subprocess.run(_argv(flavor, dfile), input=sql.encode("utf-8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ScriptError(TRANSIENT, "the restored server %s did not answer within %d s" % (where, timeout)) from None
    err = r.stderr.decode("utf-8", "replace").strip()
    if r.returncode != 0:
        msg = err.splitlines()[-1] if err else "client exited with %d" % r.returncode
        if re.search(r"ERROR (1045|1044|1698|1227|1142)\b|Access denied", err):
            raise ScriptError(PRECONDITION, "the restored server %s refused the admin login: %s" % (where, msg))
        if re.search(r"ERROR 20(02|03|13)\b|Can't connect|Lost connection|server has gone away", err):
            raise ScriptError(TRANSIENT, "cannot reach the restored server %s: %s" % (where, msg))
        raise ScriptError(INTERNAL, "query failed on %s: %s" % (where, msg))
    return parse_batch(r.stdout.decode("utf-8", "replace"))


def one(flavor, dfile, sql, where) -> dict:
    rows = query(flavor, dfile, sql, where)
    return rows[0] if rows else {}


# ---------------------------------------------------------------------------------------------
# receive, cleanup


def _work(path: str, create: bool = False) -> str:
    d = hostkit.check_path(path)
    if create and not os.path.isdir(d):
        os.makedirs(d, 0o700, exist_ok=True)
        open(os.path.join(d, MARKER), "w").close()
    if not os.path.isfile(os.path.join(d, MARKER)):
        raise ScriptError(PRECONDITION, "%s is not a replay work directory (no %s): not touched" % (d, MARKER))
    return d


def cmd_receive(args) -> dict:
    if not NAME_RE.match(args.name):
        raise ScriptError(USAGE, "--name must be a binlog file name (like binlog.000042), got %r" % args.name[:200])
    if args.sha256 is not None and not re.match(r"^[0-9a-f]{64}$", args.sha256):
        raise ScriptError(USAGE, "--sha256 must be 64 hex digits")
    d = _work(args.dir, create=True)
    dest = os.path.join(d, args.name)
    part = dest + ".part"
    h, n = hashlib.sha256(), 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = hostkit.read_input(0)
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if args.size is not None and n != args.size:
            raise ScriptError(PRECONDITION, "%s arrived as %d bytes, the catalog recorded %d: not used"
                              % (args.name, n, args.size))
        if args.sha256 and digest != args.sha256:
            raise ScriptError(PRECONDITION, "%s arrived with sha256 %s, the catalog recorded %s: not used"
                              % (args.name, digest, args.sha256))
        os.rename(part, dest)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise
    log("received %s: %d bytes, sha256 %s", args.name, n, digest[:16])
    return {"name": args.name, "size": n, "sha256": digest, "path": dest}


def cmd_cleanup(args) -> dict:
    d = hostkit.check_path(args.dir)
    if not os.path.isdir(d):
        return {"removed": False}
    _work(d)
    shutil.rmtree(d)
    log("removed %s", d)
    return {"removed": True}


# ---------------------------------------------------------------------------------------------
# replay


def _scan(d: str, names: list) -> list:
    scans = []
    for name in names:
        if not NAME_RE.match(name):
            raise ScriptError(USAGE, "--files: %r is not a binlog file name" % name[:200])
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            raise ScriptError(PRECONDITION, "%s was not received into %s" % (name, d))
        scans.append(scan_transactions(path, name))
    return scans


def _stop(args):
    given = [(k, v) for k, v in (("datetime", args.stop_datetime), ("position", args.stop_position),
                                 ("gtid", args.stop_gtid)) if v is not None]
    if len(given) != 1:
        raise ScriptError(USAGE, "give exactly one of --stop-datetime, --stop-position, --stop-gtid")
    kind, value = given[0]
    if kind == "datetime":
        if not re.match(r"^[0-9]{1,12}$", value):
            raise ScriptError(USAGE, "--stop-datetime must be epoch seconds (UTC)")
        return kind, int(value)
    if kind == "position":
        m = re.match(r"^([A-Za-z0-9_.-]{1,200}\.[0-9]{6,}):([0-9]{1,20})$", value)
        if not m:
            raise ScriptError(USAGE, "--stop-position must be FILE:POS, got %r" % value[:200])
        return kind, (m.group(1), int(m.group(2)))
    if not GTID_RE.match(value):
        raise ScriptError(USAGE, "--stop-gtid must be DOMAIN-SERVER-SEQ, got %r" % value[:200])
    return kind, tuple(int(x) for x in value.split("-"))


def _databases(text: str) -> list:
    out = [x for x in (text or "").split(",") if x]
    for name in out:
        if not DB_RE.match(name) or name.lower() in SYSTEM_SCHEMAS:
            raise ScriptError(USAGE, "--databases: %r is not a user database name" % name[:80])
    return out


def _pipe(args, dfile: str, d: str, plan: dict, databases: list) -> dict:
    binlog = hostkit.which_tool("mariadb-binlog", "mysqlbinlog")
    files = [os.path.join(d, n) for n in plan["files"]]
    base = [binlog, "--no-defaults", "--start-position=%d" % plan["start_pos"],
            "--stop-position=%d" % plan["stop_pos"]]
    passes = [base + ["--database=%s" % db] + files for db in databases] or [base + files]
    client = [_client(args.flavor), "--defaults-file=%s" % dfile, "--binary-mode", "--connect-timeout=5",
              "--protocol=TCP"]
    log("pipe: %s .. %s, %d transaction(s), %d pass(es), one client session", plan["first_gtid"],
        plan["last_gtid"], plan["transactions"], len(passes))
    cproc = hostkit.spawn(client, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs = [cproc]
    started = time.monotonic()
    try:
        # the session's setup, then every pass into the same session
        cproc.stdin.write(b"SET SESSION sql_log_bin = 1;\n")
        cproc.stdin.flush()
        for argv in passes:
            p = hostkit.spawn(argv, stdout=cproc.stdin, stderr=subprocess.PIPE)
            procs.append(p)
            err = hostkit.read_to_end(p.stderr).decode("utf-8", "replace").strip()
            rc = hostkit.wait_proc(p)
            if rc != 0:
                raise ScriptError(PRECONDITION, "mariadb-binlog exited with %d: %s" % (rc, err[-2000:]))
        cproc.stdin.close()
        err = hostkit.read_to_end(cproc.stderr).decode("utf-8", "replace").strip()
        rc = hostkit.wait_proc(cproc)
        if rc != 0:
            raise ScriptError(PRECONDITION, "the client applying the binlog exited with %d: %s; the restored server "
                                            "holds part of the replay: it stays marked not restored"
                              % (rc, err.splitlines()[-1] if err else ""))
    except BaseException:
        hostkit.terminate(procs)
        raise
    # the server's replication position: where the replay got to (what the applier mode leaves too)
    query(args.flavor, dfile, "SET GLOBAL gtid_slave_pos = %s;\n" % sql_string(plan["state_after"]), args.where)
    return {"seconds": round(time.monotonic() - started, 3)}


def _relay_log(f: str, dfile: str, w: str) -> tuple:
    """(relay log basename, index file) of the server: what it says, else what CHANGE MASTER created (a
    server started without --relay-log names it after its pid file, in the datadir)."""
    v = one(f, dfile, "SELECT @@relay_log_basename AS basename, @@relay_log_index AS idx, @@datadir AS datadir", w)
    if v.get("basename") not in (None, "", "NULL") and v.get("idx") not in (None, "", "NULL"):
        return v["basename"], v["idx"]
    datadir = v.get("datadir") or ""
    found = []
    for name in os.listdir(datadir):
        if name.endswith(".index") and "relay" in name:
            path = os.path.join(datadir, name)
            found.append((os.stat(path).st_mtime, path))
    if not found:
        raise ScriptError(PRECONDITION, "the restored server %s created no relay log index in %s" % (w, datadir))
    index = max(found)[1]
    with open(index) as fh:
        first = fh.readline().strip()
    if not first:
        raise ScriptError(PRECONDITION, "the relay log index %s of %s is empty" % (index, w))
    path = first if first.startswith("/") else os.path.join(datadir, first)
    return os.path.normpath(path).rsplit(".", 1)[0], index


def _applier(args, dfile: str, d: str, plan: dict, databases: list) -> dict:
    w, f = args.where, args.flavor
    v = one(f, dfile, "SELECT @@slave_parallel_threads AS threads, @@slave_parallel_mode AS mode, "
                      "@@replicate_wild_do_table AS wild, @@slave_sql_verify_checksum AS verify", w)
    old = {"threads": int(v.get("threads") or 0), "mode": v.get("mode") or "optimistic", "wild": v.get("wild") or "",
           "verify": int(v.get("verify") or 0)}
    # a replication connection that is never started (no IO thread: nothing is read from anywhere)
    query(f, dfile, "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = 9, MASTER_USER = 'no-replication', "
                    "MASTER_USE_GTID = no;\n", w)
    copies = []
    try:
        basename, index = _relay_log(f, dfile, w)
        with open(index) as fh:
            existing = [ln.strip() for ln in fh if ln.strip()]
        # listed as the server lists its own (``./name`` relative to the datadir, or a path)
        prefix = existing[0][:len(existing[0]) - len(os.path.basename(existing[0]))] if existing else ""
        # the server reads a relay log index when the connection is created: remove the one just made
        # (RESET SLAVE ALL), put the copies and their index in its place, then create it on them
        query(f, dfile, "RESET SLAVE ALL;\n", w)
        # the copies: relay_log_purge deletes relay logs once applied; the received files stay as they are
        for i, name in enumerate(plan["files"], start=1):
            dest = "%s.%06d" % (basename, i)
            shutil.copyfile(os.path.join(d, name), dest)
            copies.append(dest)
        with open(index, "w") as fh:
            fh.write("".join(prefix + os.path.basename(c) + "\n" for c in copies))
    except BaseException:
        query(f, dfile, "RESET SLAVE ALL;\n", w)
        for c in copies:
            if os.path.exists(c):
                os.unlink(c)
        raise
    first_relay = os.path.basename(copies[0])
    # every event's CRC32 was checked by the scan already: the SQL thread need not check it again
    sql = ("SET GLOBAL slave_parallel_threads = %d;\nSET GLOBAL slave_parallel_mode = 'optimistic';\n"
           "SET GLOBAL slave_sql_verify_checksum = 0;\n"
           "SET GLOBAL replicate_wild_do_table = %s;\n"
           "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = 9, MASTER_USER = 'no-replication', "
           "MASTER_USE_GTID = no, RELAY_LOG_FILE = %s, RELAY_LOG_POS = %d, MASTER_LOG_FILE = %s, "
           "MASTER_LOG_POS = %d;\n"
           "START SLAVE SQL_THREAD UNTIL MASTER_LOG_FILE = %s, MASTER_LOG_POS = %d;\n"
           % (args.parallel, sql_string(wild_filter(databases)), sql_string(first_relay), plan["start_pos"],
              sql_string(plan["files"][0]), plan["start_pos"], sql_string(plan["stop_file"]), plan["stop_pos"]))
    log("applier: %s .. %s, %d transaction(s), relay logs %s (%d), %d parallel worker(s), until %s:%d",
        plan["first_gtid"], plan["last_gtid"], plan["transactions"], first_relay, len(copies), args.parallel,
        plan["stop_file"], plan["stop_pos"])
    started = time.monotonic()
    status = {}
    try:
        query(f, dfile, sql, w)
        deadline = time.monotonic() + args.timeout
        wait = "SELECT MASTER_POS_WAIT(%s, %d, %%d) AS w" % (sql_string(plan["stop_file"]), plan["stop_pos"])
        while True:
            # one blocking wait at a time (a poll loop would spawn a client every tick, on the cores the
            # workers need); -1: not yet (log where it is), NULL: the SQL thread stopped (UNTIL, or an error)
            waited = one(f, dfile, wait % 10, w).get("w")
            status = one(f, dfile, "SHOW SLAVE STATUS", w)
            if status.get("Slave_SQL_Running") == "No":
                break
            if waited not in ("-1", None, "NULL"):
                # reached: the UNTIL stops the thread right after, once an event after the stop shows it is
                # past it. When the relay logs end exactly at the stop (the archive's newest file copied up
                # to that transaction) no such event comes and the thread waits for more: it is done when
                # its executed position is the stop (STOP SLAVE below ends it)
                if (status.get("Relay_Master_Log_File"), int(status.get("Exec_Master_Log_Pos") or 0)) \
                        == (plan["stop_file"], plan["stop_pos"]):
                    break
                if time.monotonic() > deadline:
                    raise ScriptError(TRANSIENT, "the replay reached %s:%d but the applier did not stop within %d s"
                                      % (plan["stop_file"], plan["stop_pos"], args.timeout))
                time.sleep(0.05)
                continue
            if time.monotonic() > deadline:
                raise ScriptError(TRANSIENT, "the replay did not reach %s:%d within %d s (at %s:%s)"
                                  % (plan["stop_file"], plan["stop_pos"], args.timeout,
                                     status.get("Relay_Master_Log_File"), status.get("Exec_Master_Log_Pos")))
            log("applier at %s:%s", status.get("Relay_Master_Log_File"), status.get("Exec_Master_Log_Pos"))
        if status.get("Last_SQL_Errno") not in (None, "", "0"):
            raise ScriptError(PRECONDITION, "the replay stopped with an error at %s:%s: %s %s"
                              % (status.get("Relay_Master_Log_File"), status.get("Exec_Master_Log_Pos"),
                                 status.get("Last_SQL_Errno"), status.get("Last_SQL_Error")))
        at = (status.get("Relay_Master_Log_File"), int(status.get("Exec_Master_Log_Pos") or 0))
        if at != (plan["stop_file"], plan["stop_pos"]):
            raise ScriptError(PRECONDITION, "the applier stopped at %s:%d, not at %s:%d" % (at + (plan["stop_file"],
                                                                                             plan["stop_pos"])))
    finally:
        # no replica afterwards, and the server's own settings back (also after an error)
        try:
            query(f, dfile, "STOP SLAVE;\nRESET SLAVE ALL;\nSET GLOBAL slave_parallel_threads = %d;\n"
                            "SET GLOBAL slave_parallel_mode = %s;\nSET GLOBAL replicate_wild_do_table = %s;\n"
                            "SET GLOBAL slave_sql_verify_checksum = %d;\n"
                  % (old["threads"], sql_string(old["mode"]), sql_string(old["wild"]), old["verify"]), w)
        finally:
            for c in copies:
                if os.path.exists(c):
                    os.unlink(c)
    return {"seconds": round(time.monotonic() - started, 3), "parallel": args.parallel}


def cmd_replay(args) -> dict:
    d = _work(args.dir)
    start = parse_state(args.start_gtid)
    kind, value = _stop(args)
    databases = _databases(args.databases)
    names = [n for n in args.files.split(",") if n]
    if args.mode not in ("pipe", "applier"):
        raise ScriptError(USAGE, "--mode must be pipe or applier")
    if args.parallel == "auto":
        args.parallel = max(1, min(8, os.cpu_count() or 1))
    elif re.match(r"^[0-9]{1,3}$", str(args.parallel)) and int(args.parallel) <= 256:
        args.parallel = int(args.parallel)
    else:
        raise ScriptError(USAGE, "--parallel must be auto or a number of workers (0..256)")
    creds = hostkit.read_credentials()
    args.where = "%s:%d" % (args.host, args.port)
    t0 = time.monotonic()
    scans = _scan(d, names)
    plan = plan_replay(scans, start, kind, value)
    scan_s = round(time.monotonic() - t0, 3)
    log("scanned %d file(s) in %.2f s: from %s, %d transaction(s) to apply%s", len(scans), scan_s,
        state_text(start) or "nothing", plan["transactions"],
        " (%s .. %s)" % (plan["first_gtid"], plan["last_gtid"]) if plan["transactions"] else "")
    with hostkit.defaults_file(creds, host=args.host, port=args.port) as dfile:
        v = one(args.flavor, dfile, "SELECT @@server_id AS server_id, @@gtid_slave_pos AS pos", args.where)
        sid = int(v.get("server_id") or 0)
        sources = sorted({s for sc in scans for s in sc["server_ids"]})
        if sid in sources:
            raise ScriptError(PRECONDITION, "the restored server %s runs with server_id %d, which wrote events of "
                                            "these binlogs: it would skip them as its own; restart it with another "
                                            "server_id" % (args.where, sid))
        slaves = query(args.flavor, dfile, "SHOW ALL SLAVES STATUS", args.where)
        if slaves:
            raise ScriptError(PRECONDITION, "the restored server %s has replication configured (%s): a replay needs "
                                            "a server that replicates from nothing" % (args.where, ", ".join(
                                                r.get("Connection_name") or r.get("Master_Host") or "?" for r in slaves)))
        ran = {"seconds": 0.0}
        if plan["transactions"]:
            ran = (_pipe if args.mode == "pipe" else _applier)(args, dfile, d, plan, databases)
        dropped = []
        if databases:
            rows = query(args.flavor, dfile, "SHOW DATABASES", args.where)
            keep = set(databases) | set(SYSTEM_SCHEMAS)
            dropped = sorted(r["Database"] for r in rows if r.get("Database") not in keep)
            if dropped:
                query(args.flavor, dfile, "SET SESSION sql_log_bin = 0;\n" + "".join(
                    "DROP DATABASE %s;\n" % ident(x) for x in dropped), args.where)
                log("dropped the databases not replayed: %s", ", ".join(dropped))
        after = one(args.flavor, dfile, "SELECT @@gtid_slave_pos AS pos", args.where).get("pos") or ""
    rate = plan["transactions"] / ran["seconds"] if ran.get("seconds") else None
    log("replayed %d transaction(s) in %.2f s (%s): last %s at %s:%s, %s; the server's GTID position is %s",
        plan["transactions"], ran["seconds"], args.mode, plan.get("last_gtid"), plan.get("stop_file"),
        plan.get("stop_pos"), utc(plan.get("last_event_ts")), after)
    return {"mode": args.mode, "transactions": plan["transactions"], "first_gtid": plan["first_gtid"],
            "last_gtid": plan["last_gtid"], "last_position": ("%s:%d" % (plan["stop_file"], plan["stop_pos"])
                                                              if plan["transactions"] else None),
            "start_position": ("%s:%d" % (plan["start_file"], plan["start_pos"]) if plan["transactions"] else None),
            "last_event_at": utc(plan.get("last_event_ts")), "state_after": plan["state_after"],
            "gtid_slave_pos": after, "files": plan["files"], "seconds": ran["seconds"], "scan_seconds": scan_s,
            "transactions_per_second": round(rate, 1) if rate else None, "databases": databases,
            "dropped_databases": dropped, "server_id": sid, "source_server_ids": sources}


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> hostkit.ArgumentParser:
    p = hostkit.ArgumentParser(prog=SCRIPT, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb")
    r = sub.add_parser("receive", help="stdin -> DIR/NAME, sha256 and size checked")
    r.add_argument("--dir", required=True, metavar="DIR", help="the replay's work directory (created)")
    r.add_argument("--name", required=True, metavar="NAME", help="the binlog file's name (binlog.000042)")
    r.add_argument("--sha256", metavar="HEX", help="the catalogued sha256 (a closed file): checked")
    r.add_argument("--size", type=int, metavar="N", help="the catalogued size (a closed file): checked")
    r.set_defaults(func=cmd_receive)
    rp = sub.add_parser("replay", help="apply the received binlogs from the backup's GTID to the target "
                                       "(admin login JSON on stdin)")
    rp.add_argument("--dir", required=True, metavar="DIR", help="the replay's work directory (what receive filled)")
    rp.add_argument("--files", required=True, metavar="F1,F2", help="the received files, in replay order")
    rp.add_argument("--host", required=True, metavar="H", help="the restored server's host")
    rp.add_argument("--port", required=True, type=int, metavar="N", help="the restored server's port")
    rp.add_argument("--flavor", default="mariadb", choices=("mariadb",), help="only mariadb (GTID lists) for now")
    rp.add_argument("--mode", required=True, choices=("pipe", "applier"), help="pipe: mariadb-binlog | mariadb; "
                    "applier: the server's replication SQL thread on the files as relay logs")
    rp.add_argument("--start-gtid", required=True, metavar="GTID", help="the backup's GTID state: the replay "
                    "begins with the first transaction after it")
    rp.add_argument("--stop-datetime", metavar="EPOCH", help="exclusive: stop before the first transaction with "
                    "an event at or after this UTC second")
    rp.add_argument("--stop-position", metavar="FILE:POS", help="exclusive: stop before the transaction holding "
                    "the first event at or after it")
    rp.add_argument("--stop-gtid", metavar="GTID", help="inclusive: the last transaction to apply")
    rp.add_argument("--databases", default="", metavar="DB1,DB2", help="replay only these; drop every other user "
                    "database afterwards")
    rp.add_argument("--parallel", default="auto", metavar="N", help="applier: parallel workers (slave_parallel_threads; "
                    "default auto: the host's cores, at most 8; measured on 2 cores: 2 workers as fast as none, 4 "
                    "and 8 slower)")
    rp.add_argument("--timeout", type=float, default=6 * 3600, metavar="S", help="applier: seconds (default 6 h)")
    rp.set_defaults(func=cmd_replay)
    c = sub.add_parser("cleanup", help="remove the replay's work directory")
    c.add_argument("--dir", required=True, metavar="DIR", help="the replay's work directory")
    c.set_defaults(func=cmd_cleanup)
    return p


def main(argv=None) -> None:
    hostkit.main(build_parser(), argv, script=SCRIPT)


if __name__ == "__main__":
    main()
