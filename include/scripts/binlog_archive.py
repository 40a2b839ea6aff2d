#!/usr/bin/env python3
"""Storage-host verbs of the continuous binlog archive: supervise, stream, stop, scan, fetch.

Runs ON the storage host (over SSH). Stdlib only, Python 3.7+. One detached ``stream`` process
per instance keeps ``mariadb-binlog --read-from-remote-server --raw --stop-never`` running as
its child and files what it writes into the archive; ``supervise`` (one short ssh call per
minute, from the DAG ``mysql_binlog__<name>``) makes sure the streamer runs on the current
script version, renews its lease, checksums every closed file and measures the lag.

Layout (``DIR`` is ``<base_dir>/<instance>/binlog``)::

    DIR/<server identity>/binlog.000041          closed: byte-identical to the server's file
    DIR/<server identity>/binlog.000042.open     being written (only complete events count)
    DIR/<server identity>/binlog.000040.incomplete  purged on the server before it was finished
    DIR/<server identity>/.meta/<file>.json      sidecar: size, sha256, GTID range, event times
    DIR/<server identity>/.spool/                the child's private output (resumes are spliced)
    DIR/.streamer/{lock,pid.json,lease.json,status.json,streamer.log}

``<server identity>`` is ``<server_id>-<first 12 hex digits of the server's uid>`` (MariaDB
``@@server_uid``, MySQL ``@@server_uuid``): after a failover the new primary's files go to
their own directory and never overwrite the old primary's.

Facts about ``mariadb-binlog --raw`` this design rests on (MariaDB 10.11, measured): it names
its output after the server's files and follows rotations; every event is flushed as it
arrives (small events: one write(2) each) but a large event is written in several write(2)
calls, so a kill can leave a partial event at the end; started at ``--start-position=P`` it
opens the result file with O_TRUNC and writes the magic, a FORMAT_DESCRIPTION with log_pos 0
and then the events from P: it never appends. So the archive's open file is never handed to
it: a resume truncates the archived file to its last complete event P, runs the child into
``.spool`` from P, and appends the spool's events after checking that they start at P.
The last stderr line of every verb is ``RESULT {json}``; exit codes are those of hostkit.py.
"""
from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostkit
from hostkit import INTERNAL, PRECONDITION, TRANSIENT, USAGE, ScriptError, log

SCRIPT = "binlog_archive.py"
FLAVORS = ("mariadb", "mysql")

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, log_pos, flags
HEADER_LEN = 19
FDE_MIN = HEADER_LEN + 57 + 1 + 4
STOP_EVENT, ROTATE_EVENT, FDE_EVENT = 3, 4, 15
GTID_EVENT, GTID_LIST_EVENT = 162, 163
ARTIFICIAL_F, IN_USE_F = 0x20, 0x01
CRC32_ALG = 1

OPEN_SUFFIX = ".open"
INCOMPLETE_SUFFIX = ".incomplete"
META_DIR = ".meta"
SPOOL_DIR = ".spool"
CTL_DIR = ".streamer"
NAME_RE = re.compile(r"^([A-Za-z0-9_.-]+)\.([0-9]{6,})$")
IDENTITY_RE = re.compile(r"^[0-9]+-[0-9a-f]{1,40}$")
READ_CHUNK = 4 << 20
SPLICE_STEP = 16 << 20  # copied per loop turn while streaming (the loop stays responsive)
LOG_LIMIT = 8 << 20
BACKOFF_MAX = 30.0


# ---------------------------------------------------------------------------------------------
# binlog files: names, scanning


def file_number(name: str):
    """``binlog.000042`` -> 42 (None when it is not a binlog file name)."""
    m = NAME_RE.match(name)
    return int(m.group(2)) if m else None


def sort_key(name: str):
    return (file_number(name) or 0, name)


def gtid_text(state) -> str:
    """{domain: (server_id, seq)} -> ``0-1-100,1-2-7`` (sorted by domain)."""
    return ",".join("%d-%d-%d" % (d, s, q) for d, (s, q) in sorted(state.items()))


def fde_checksum_alg(event: bytes) -> int:
    return event[len(event) - 5] if len(event) >= FDE_MIN else 255


def event_crc_ok(event, is_fde: bool) -> bool:
    data = bytearray(event[:-4]) if is_fde else event[:-4]
    if is_fde:
        data[17] &= ~IN_USE_F & 0xFF  # the server computes it with the in-use flag cleared
    return zlib.crc32(data) & 0xFFFFFFFF == int.from_bytes(event[-4:], "little")


def same_fde(archived: bytes, resent: bytes) -> bool:
    """Whether the FORMAT_DESCRIPTION a resumed dump sends is the archived file's own. The server resends
    it with log_pos 0, the in-use flag cleared and its ``created`` field zeroed (that field is set only in
    the first binlog after a server start): compare timestamp, type, server_id, size and the body
    without ``created`` and the checksum."""
    created = HEADER_LEN + 52
    return (len(archived) == len(resent) and archived[:13] == resent[:13]
            and archived[HEADER_LEN:created] == resent[HEADER_LEN:created]
            and archived[created + 4:-4] == resent[created + 4:-4])


def new_scan() -> dict:
    return {"end": 0, "alg": None, "fde": None, "events": 0, "transactions": 0, "start_state": None,
            "state": {}, "first_gtid": None, "last_gtid": None, "first_ts": None, "last_ts": None,
            "ended_by": None, "rotate_to": None, "problem": None, "server_id": None}


def scan_binlog(path: str, prev: dict | None = None, sha: bool = False, limit: int | None = None) -> dict:
    """Walk the complete events of a binlog file (from ``prev["end"]`` when given: incremental).

    ``end`` is the offset after the last complete, valid event: a partial event at the end (a
    file being written, or cut by a kill) or a damaged one stops the walk there (``problem``
    says which; a partial tail is normal in an open file). Every event must end where its header
    says (``log_pos``) and carry a valid CRC32 when the file's FORMAT_DESCRIPTION says so.
    ``start_state`` is the Gtid_list at the start of the file (the GTID state before it),
    ``state`` the state after the last complete event. With ``sha`` the whole file is hashed.
    """
    s = dict(prev) if prev else new_scan()
    s["state"] = {int(k): tuple(v) for k, v in (s.get("state") or {}).items()}
    if s.get("start_state") is not None:
        s["start_state"] = {int(k): tuple(v) for k, v in s["start_state"].items()}
    s["problem"] = None
    h = hashlib.sha256() if sha else None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None:
            size = min(size, limit)
        if h is not None:
            done = 0
            while done < size:
                b = f.read(min(READ_CHUNK, size - done))
                if not b:
                    break
                h.update(b)
                done += len(b)
            f.seek(0)
        pos = s["end"]
        if pos < 4:
            magic = f.read(4)
            if magic != MAGIC:
                s["problem"] = "not a binlog file (no magic)" if len(magic) == 4 else "partial: no magic yet"
                s["end"] = 0
                s["size"] = size
                if h is not None:
                    s["sha256"] = h.hexdigest()
                return s
            pos = 4
        f.seek(pos)
        buf = b""
        base = pos
        while True:
            off = pos - base
            if len(buf) - off < HEADER_LEN:
                more = f.read(READ_CHUNK) if base + len(buf) < size else b""
                if not more:
                    if len(buf) - off > 0:
                        s["problem"] = "partial event at %d" % pos
                    break
                buf = buf[off:] + more
                base = pos
                continue
            ts, etype, sid, esize, log_pos, flags = HEADER.unpack_from(buf, off)
            csum = 4 if s["alg"] == CRC32_ALG else 0
            if esize < HEADER_LEN + csum or (log_pos != pos + esize):
                s["problem"] = "damaged event header at %d (size %d, next %d)" % (pos, esize, log_pos)
                break
            if len(buf) - off < esize:
                if pos + esize > size:
                    s["problem"] = "partial event at %d" % pos
                    break
                more = f.read(max(READ_CHUNK, esize))
                buf = buf[off:] + more
                base = pos
                continue
            ev = memoryview(buf)[off:off + esize]
            if pos == 4:
                if etype != FDE_EVENT:
                    s["problem"] = "first event is not a FORMAT_DESCRIPTION"
                    break
                s["alg"] = fde_checksum_alg(ev)
                s["fde"] = bytes(ev).hex()
                csum = 4 if s["alg"] == CRC32_ALG else 0
            if csum and not event_crc_ok(ev, etype == FDE_EVENT):
                s["problem"] = "checksum mismatch at %d" % pos
                break
            body = ev[HEADER_LEN:esize - csum]
            if etype == GTID_EVENT:
                seq = int.from_bytes(body[0:8], "little")
                domain = int.from_bytes(body[8:12], "little")
                s["state"][domain] = (sid, seq)
                g = "%d-%d-%d" % (domain, sid, seq)
                if s["first_gtid"] is None:
                    s["first_gtid"] = g
                s["last_gtid"] = g
                s["transactions"] += 1
            elif etype == GTID_LIST_EVENT and s["start_state"] is None:
                n = int.from_bytes(body[0:4], "little") & 0x0FFFFFFF
                start = {}
                for i in range(n):
                    d, gs, q = struct.unpack_from("<IIQ", body, 4 + 16 * i)
                    start[d] = (gs, q)
                s["start_state"] = start
                for d, v in start.items():
                    s["state"].setdefault(d, v)
            elif etype == ROTATE_EVENT and not flags & ARTIFICIAL_F:
                s["ended_by"] = "rotate"
                s["rotate_to"] = bytes(body[8:]).decode("utf-8", "replace")
            elif etype == STOP_EVENT:
                s["ended_by"] = "stop"
            if ts and not flags & ARTIFICIAL_F:
                s["first_ts"] = ts if s["first_ts"] is None else min(s["first_ts"], ts)
                s["last_ts"] = ts if s["last_ts"] is None else max(s["last_ts"], ts)
            if s["server_id"] is None and etype != FDE_EVENT:
                s["server_id"] = sid
            s["events"] += 1
            pos += esize
            s["end"] = pos
    s["size"] = size
    if h is not None:
        s["sha256"] = h.hexdigest()
    return s


def scan_for_json(s: dict) -> dict:
    out = dict(s)
    out["state"] = {str(k): list(v) for k, v in s["state"].items()}
    if s.get("start_state") is not None:
        out["start_state"] = {str(k): list(v) for k, v in s["start_state"].items()}
    return out


def summary(name: str, identity: str, state: str, s: dict) -> dict:
    """What the catalog records of one archived file."""
    return {"identity": identity, "name": name, "state": state, "size": s["end"], "bytes_on_disk": s.get("size"),
            "sha256": s.get("sha256") if state != "open" else None,
            "first_event_at": s["first_ts"], "last_event_at": s["last_ts"],
            "start_gtid_state": gtid_text(s["start_state"]) if s.get("start_state") is not None else None,
            "end_gtid_state": gtid_text(s["state"]) if s.get("start_state") is not None or s["state"] else None,
            "first_gtid": s["first_gtid"], "last_gtid": s["last_gtid"], "events": s["events"],
            "transactions": s["transactions"], "ended_by": s["ended_by"], "server_id": s["server_id"],
            "problem": s["problem"]}


# ---------------------------------------------------------------------------------------------
# small file helpers


def write_json(path: str, data: dict) -> None:
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True, default=str)
    os.replace(tmp, path)


def read_json(path: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mkdir_private(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cmdline(pid) -> str:
    try:
        with open("/proc/%d/cmdline" % int(pid), "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except (OSError, ValueError, TypeError):
        return ""


def try_lock(path: str):
    """An fd holding an exclusive flock on path, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def own_digest() -> str:
    """The bundle this script runs from: ``scripts-<digest>``, else a hash of the file itself."""
    here = os.path.basename(os.path.dirname(os.path.abspath(__file__)))
    if here.startswith("scripts-"):
        return here[len("scripts-"):]
    with open(os.path.abspath(__file__), "rb") as f:
        return "file-" + hashlib.sha256(f.read()).hexdigest()[:16]


def secret_dir_base() -> str | None:
    """Where the streamer's credentials live: tmpfs (/dev/shm) when usable, so they never reach a disk."""
    for d in ("/dev/shm", os.environ.get("XDG_RUNTIME_DIR") or ""):
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return d
    return None


# ---------------------------------------------------------------------------------------------
# the server


def client_argv(flavor: str, cnf: str) -> list:
    client = hostkit.which_tool("mysql", "mariadb") if flavor == "mysql" else hostkit.which_tool("mariadb", "mysql")
    return [client, "--defaults-file=%s" % cnf, "--batch", "--skip-column-names", "--connect-timeout=10",
            "--protocol=TCP"]


def query(flavor: str, cnf: str, sql: str, timeout: float = 60) -> list:
    """Rows (lists of strings) of one statement; ScriptError TRANSIENT/PRECONDITION when it fails."""
    try:
        r = subprocess.run(client_argv(flavor, cnf) + ["-e", sql], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ScriptError(TRANSIENT, "the server did not answer within %d s" % timeout) from None
    err = r.stderr.decode("utf-8", "replace").strip()
    if r.returncode != 0:
        last = err.splitlines()[-1] if err else "client exited with %d" % r.returncode
        code = PRECONDITION if re.search(r"Access denied|ERROR 1227|ERROR 1045", err) else TRANSIENT
        raise ScriptError(code, "query failed: %s" % last)
    return [line.split("\t") for line in r.stdout.decode("utf-8", "replace").splitlines() if line]


def identity_of(server_id, uid) -> str:
    """``<server_id>-<12 hex of the uid>``: MariaDB's server_uid is base64 (a SHA1 of MAC and port),
    MySQL's server_uuid a UUID."""
    raw = (uid or "").strip()
    try:
        digest = binascii.hexlify(base64.b64decode(raw, validate=True)).decode() if "-" not in raw else ""
    except (binascii.Error, ValueError):
        digest = ""
    if not digest:
        digest = re.sub(r"[^0-9a-f]", "", raw.lower()) or hashlib.sha1(raw.encode()).hexdigest()
    return "%d-%s" % (int(server_id), digest[:12])


def server_info(flavor: str, cnf: str) -> dict:
    """Identity, binlog on/off, current position, every binlog file the server still has, its clock."""
    uid_var = "@@server_uuid" if flavor == "mysql" else "@@server_uid"
    row = query(flavor, cnf, "SELECT @@server_id, %s, @@log_bin, UNIX_TIMESTAMP(), @@gtid_binlog_pos" % uid_var
                if flavor == "mariadb" else
                "SELECT @@server_id, %s, @@log_bin, UNIX_TIMESTAMP(), @@gtid_executed" % uid_var)[0]
    info = {"server_id": int(row[0]), "uid": row[1], "log_bin": row[2] in ("1", "ON"),
            "now": int(float(row[3])), "gtid": row[4] if len(row) > 4 else None}
    info["identity"] = identity_of(info["server_id"], info["uid"])
    if not info["log_bin"]:
        info["binlogs"] = []
        return info
    logs = query(flavor, cnf, "SHOW BINARY LOGS")
    info["binlogs"] = [(r[0], int(r[1])) for r in logs]
    status = query(flavor, cnf, "SHOW MASTER STATUS")
    info["file"], info["pos"] = (status[0][0], int(status[0][1])) if status else (None, None)
    return info


# ---------------------------------------------------------------------------------------------
# the archive directory of one server identity


def list_identity(idir: str) -> dict:
    """name -> state (closed | open | incomplete) of the binlog files in an identity directory."""
    out = {}
    try:
        names = os.listdir(idir)
    except FileNotFoundError:
        return out
    for n in names:
        if n.startswith("."):
            continue
        if n.endswith(OPEN_SUFFIX):
            base, state = n[:-len(OPEN_SUFFIX)], "open"
        elif n.endswith(INCOMPLETE_SUFFIX):
            base, state = n[:-len(INCOMPLETE_SUFFIX)], "incomplete"
        else:
            base, state = n, "closed"
        if file_number(base) is None:
            continue
        if base in out and out[base] == "closed":
            continue  # a closed file wins over a stale open copy of it (never half-done)
        out[base] = state
    return out


def identities(bdir: str) -> list:
    try:
        return sorted(n for n in os.listdir(bdir) if IDENTITY_RE.match(n) and os.path.isdir(os.path.join(bdir, n)))
    except FileNotFoundError:
        return []


def path_of(idir: str, name: str, state: str) -> str:
    return os.path.join(idir, name + {"open": OPEN_SUFFIX, "incomplete": INCOMPLETE_SUFFIX}.get(state, ""))


def recover_open(path: str) -> int:
    """Truncate an open archived file to its last complete event; return that size (0: start over)."""
    s = scan_binlog(path)
    end = s["end"]
    if s["fde"] is None:
        end = 0
    size = os.path.getsize(path)
    if end < size:
        log("%s: dropping %d bytes after the last complete event at %d (%s)", os.path.basename(path), size - end,
            end, s["problem"] or "partial event")
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return end


# ---------------------------------------------------------------------------------------------
# stream: the detached streamer


class Stop(Exception):
    """The streamer stops by itself (its lease expired)."""


class Streamer:
    """Keeps one mariadb-binlog child running and files its output into the archive."""

    def __init__(self, args, cnf: str):
        self.args = args
        self.cnf = cnf
        self.bdir = args.dir
        self.ctl = os.path.join(self.bdir, CTL_DIR)
        self.child = None
        self.child_err = b""
        self.child_tail = []
        self.child_started = 0.0
        self.idir = None
        self.identity = None
        self.current = None     # archive file being written (adopted: the child writes it in place)
        self.splice = None      # {"name", "src", "src_off", "dst", "checked"} while resuming mid-file
        self.next_start = 0.0
        self.backoff = 0.0
        self.restarts = 0
        self.last_error = None
        self.last_error_at = None
        self.notes = []
        self.head_size = -1
        self.grew_at = time.time()
        self.state = "starting"
        self.status_written = 0.0

    # --- lease and status -------------------------------------------------------------------

    def check_lease(self) -> None:
        lease = read_json(os.path.join(self.ctl, "lease.json"))
        now = time.time()
        if lease is None:
            raise Stop("no lease file: nothing supervises this streamer")
        if now > float(lease.get("expires_at", 0)):
            raise Stop("lease expired at %s (renewed last at %s): the supervisor stopped running"
                       % (_iso(lease.get("expires_at")), _iso(lease.get("renewed_at"))))

    def note(self, text: str) -> None:
        log("%s", text)
        self.notes = (self.notes + [{"at": int(time.time()), "note": text}])[-20:]
        self.write_status(force=True)

    def error(self, text: str) -> None:
        log("error: %s", text)
        self.last_error, self.last_error_at = text, int(time.time())
        self.write_status(force=True)

    def head(self):
        if self.current is None or self.idir is None:
            return None, None
        p = path_of(self.idir, self.current, "open")
        try:
            return self.current, os.path.getsize(p)
        except OSError:
            return self.current, None

    def write_status(self, force: bool = False) -> None:
        now = time.time()
        name, size = self.head()
        if size is not None and size != self.head_size:
            self.head_size, self.grew_at = size, now
        if not force and now - self.status_written < 5:
            return
        self.status_written = now
        write_json(os.path.join(self.ctl, "status.json"), {
            "pid": os.getpid(), "digest": own_digest(), "state": self.state, "identity": self.identity,
            "head_file": name, "head_bytes": size, "grew_at": int(self.grew_at),
            "child_pid": self.child.pid if self.child else None, "child_started_at": int(self.child_started) or None,
            "restarts": self.restarts, "last_error": self.last_error, "last_error_at": self.last_error_at,
            "notes": self.notes, "updated_at": int(now), "splicing": self.splice["name"] if self.splice else None})

    # --- starting the child -------------------------------------------------------------------

    def plan(self, info: dict):
        """(file, position) to start the child at, after recovering the archive's last file."""
        server_files = [n for n, _ in info["binlogs"]]
        sizes = dict(info["binlogs"])
        by_number = {file_number(n): n for n in server_files}
        have = list_identity(self.idir)
        if not have:
            if not server_files:
                raise ScriptError(PRECONDITION, "the server lists no binary logs")
            first = server_files[0] if self.args.start == "first" else server_files[-1]
            return first, 4
        last = max(have, key=sort_key)
        state = have[last]
        newest = max((file_number(n) for n in server_files), default=-1)
        if file_number(last) > newest:
            raise ScriptError(PRECONDITION, "the server's binlog numbering went back (its newest is %s, the archive of "
                              "identity %s already has %s): RESET MASTER or a rebuilt server with the same server_id "
                              "and uid. Nothing is overwritten; move %s aside to archive the new history"
                              % (server_files[-1] if server_files else "none", self.identity, last, self.idir))
        if state == "open":
            p = path_of(self.idir, last, "open")
            end = recover_open(p)
            if last in sizes:
                if end > sizes[last]:
                    raise ScriptError(PRECONDITION, "%s is %d bytes in the archive but %d on the server: not the "
                                      "same file (RESET MASTER?)" % (last, end, sizes[last]))
                if end <= 4:
                    os.unlink(p)
                    return last, 4
                return last, end
            os.rename(p, path_of(self.idir, last, "incomplete"))
            hostkit.fsync_dir(self.idir)
            self.note("GAP: %s was purged on the server before it was archived to its end (archived up to byte %d): "
                      "kept as %s%s" % (last, end, last, INCOMPLETE_SUFFIX))
        nxt = file_number(last) + 1
        if nxt in by_number:
            return by_number[nxt], 4
        later = [n for n in server_files if file_number(n) > file_number(last)]
        if not later:
            raise ScriptError(PRECONDITION, "the server has no binlog after %s" % last)
        self.note("GAP: the server no longer has the files between %s and %s (purged before they were archived)"
                  % (last, later[0]))
        return later[0], 4

    def start_child(self) -> None:
        self.state = "connecting"
        info = server_info(self.args.flavor, self.cnf)
        if not info["log_bin"]:
            raise ScriptError(PRECONDITION, "the binary log is off on the server (log_bin=0): nothing to archive")
        if self.identity != info["identity"]:
            if self.identity is not None:
                self.note("the server's identity changed from %s to %s (a failover behind the same address?): "
                          "archiving under %s from now on" % (self.identity, info["identity"], info["identity"]))
            self.identity = info["identity"]
            self.idir = os.path.join(self.bdir, self.identity)
            os.makedirs(os.path.join(self.idir, META_DIR), mode=0o750, exist_ok=True)
            ident_file = os.path.join(self.idir, "identity.json")
            if not os.path.exists(ident_file):
                write_json(ident_file, {"identity": self.identity, "server_id": info["server_id"], "uid": info["uid"],
                                        "host": self.args.host, "port": self.args.port, "first_seen": int(time.time())})
        self.current = None
        spool = os.path.join(self.idir, SPOOL_DIR)
        shutil.rmtree(spool, ignore_errors=True)
        os.mkdir(spool, 0o700)
        name, pos = self.plan(info)
        argv = [hostkit.which_tool("mariadb-binlog", "mysqlbinlog"), "--defaults-file=%s" % self.cnf,
                "--read-from-remote-server", "--raw", "--stop-never", "--protocol=TCP",
                "--stop-never-slave-server-id=%d" % self.args.client_server_id,
                "--result-file=%s/" % spool]
        if pos > 4:
            argv.append("--start-position=%d" % pos)
            self.splice = {"name": name, "src": os.path.join(spool, name), "src_off": None, "dst_size": pos,
                           "fd": None}
            self.current = name
        else:
            self.splice = None
        argv.append(name)
        log("streaming %s from %s:%d (identity %s)%s", self.args.host, name, pos, self.identity,
            ", splicing onto the archived file" if pos > 4 else "")
        self.child = hostkit.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.set_blocking(self.child.stderr.fileno(), False)
        self.child_started = time.time()
        self.child_tail = []
        self.state = "streaming"
        self.write_status(force=True)

    # --- filing the child's output ----------------------------------------------------------

    def adopt(self, name: str) -> None:
        """A file the child started at position 4: move it into the archive; the child keeps writing it."""
        dst = path_of(self.idir, name, "open")
        if os.path.exists(path_of(self.idir, name, "closed")):
            raise ScriptError(INTERNAL, "%s is already archived as closed; refusing to overwrite it" % name)
        os.rename(os.path.join(self.idir, SPOOL_DIR, name), dst)
        hostkit.fsync_dir(self.idir)
        self.current = name

    def close(self, name: str) -> None:
        """The stream moved past ``name``: the file is complete; rename it to its final name."""
        src = path_of(self.idir, name, "open")
        with open(src, "rb") as f:
            os.fsync(f.fileno())
        os.rename(src, path_of(self.idir, name, "closed"))
        hostkit.fsync_dir(self.idir)
        log("closed %s (%d bytes)", name, os.path.getsize(path_of(self.idir, name, "closed")))
        if self.current == name:
            self.current = None

    def splice_copy(self, final: bool) -> None:
        """Append the child's events after P (checked to start at P) to the archived file: at most
        SPLICE_STEP bytes per call while streaming, everything there is when ``final``."""
        sp = self.splice
        try:
            src = open(sp["src"], "rb")
        except FileNotFoundError:
            return
        with src:
            if sp["src_off"] is None:
                head = src.read(4 + HEADER_LEN)
                if len(head) < 4 + HEADER_LEN:
                    return
                fde_size = HEADER.unpack_from(head, 4)[3]
                src.seek(4)
                fde = src.read(fde_size)
                if len(fde) < fde_size:
                    return
                with open(path_of(self.idir, sp["name"], "open"), "rb") as mine:
                    mine.seek(4)
                    ours = mine.read(fde_size)
                if not same_fde(ours, fde):
                    raise ScriptError(PRECONDITION, "the server's %s does not begin like the archived one (another "
                                      "FORMAT_DESCRIPTION): not the same file" % sp["name"])
                sp["src_off"] = 4 + fde_size
            copied = 0
            while final or copied < SPLICE_STEP:
                src.seek(sp["src_off"])
                data = src.read(READ_CHUNK)
                if not data:
                    return
                if not sp.get("checked"):
                    if len(data) < HEADER_LEN:
                        return
                    size, log_pos = HEADER.unpack_from(data, 0)[3:5]
                    if log_pos - size != sp["dst_size"]:
                        raise ScriptError(INTERNAL, "the resumed stream of %s starts at %d, the archive ends at %d"
                                          % (sp["name"], log_pos - size, sp["dst_size"]))
                    sp["checked"] = True
                fd = os.open(path_of(self.idir, sp["name"], "open"), os.O_WRONLY | os.O_APPEND)
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                finally:
                    os.close(fd)
                sp["src_off"] += len(data)
                sp["dst_size"] += len(data)
                copied += len(data)

    def pump(self, final: bool = False) -> None:
        spool = os.path.join(self.idir, SPOOL_DIR)
        try:
            names = sorted((n for n in os.listdir(spool) if file_number(n) is not None), key=sort_key)
        except FileNotFoundError:
            return
        for name in names:
            if self.splice and name == self.splice["name"]:
                self.splice_copy(final)
                continue
            if self.current is not None and sort_key(name) <= sort_key(self.current):
                continue
            # the child moved on to a later file: the one before is complete
            if self.splice:
                self.splice_copy(True)
                self.close(self.splice["name"])
                try:
                    os.unlink(self.splice["src"])
                except OSError:
                    pass
                self.splice = None
            elif self.current is not None:
                self.close(self.current)
            self.adopt(name)

    def drain_child_stderr(self) -> None:
        if self.child is None or self.child.stderr is None:
            return
        try:
            chunk = os.read(self.child.stderr.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            return
        if not chunk:
            return
        self.child_err += chunk
        *lines, self.child_err = self.child_err.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.child_tail = (self.child_tail + [line])[-10:]
                log("mariadb-binlog: %s", line)

    def child_exited(self, rc: int) -> None:
        self.drain_child_stderr()
        tail = " | ".join(self.child_tail[-3:]) or "no output"
        ran = time.time() - self.child_started
        self.child.stderr.close()
        self.child = None
        self.splice = None
        self.restarts += 1
        self.state = "waiting"
        if ran > 60:
            self.backoff = 0.0
        if "Could not find first log file" in tail:
            self.note("the file to stream from was purged meanwhile: planning again")
            self.next_start = time.monotonic() + 0.5
            return
        self.backoff = min(BACKOFF_MAX, max(1.0, self.backoff * 2))
        self.error("mariadb-binlog exited with %s after %.0f s: %s; restarting from the last complete event in "
                   "%.0f s" % (rc, ran, tail, self.backoff))
        self.next_start = time.monotonic() + self.backoff

    def stop_child(self) -> None:
        if self.child is not None:
            hostkit.terminate([self.child], grace=5)
            try:
                self.pump(final=True)
            except Exception as e:  # noqa: BLE001 - stopping: what was not filed is re-fetched at the next start
                log("while stopping: %s", e)
            if self.child.stderr:
                self.child.stderr.close()
            self.child = None

    def run(self) -> str:
        checked = 0.0
        while True:
            now = time.monotonic()
            if now - checked >= 1.0:  # the lease once a second: 3,000 streamers share a storage host
                self.check_lease()
                checked = now
            if self.child is None and time.monotonic() >= self.next_start:
                try:
                    self.start_child()
                except ScriptError as e:
                    if e.code == USAGE:
                        raise
                    self.child = None
                    self.backoff = min(BACKOFF_MAX, max(1.0, self.backoff * 2))
                    self.next_start = time.monotonic() + self.backoff
                    self.state = "waiting"
                    self.error("%s (retrying in %.0f s)" % (e.message, self.backoff))
            if self.child is not None:
                self.drain_child_stderr()
                try:
                    self.pump()
                except ScriptError as e:
                    self.error(e.message)
                    self.stop_child()
                    self.backoff = min(BACKOFF_MAX, max(1.0, self.backoff * 2))
                    self.next_start = time.monotonic() + self.backoff
                    self.state = "waiting"
                    continue
                rc = self.child.poll()
                if rc is not None:
                    try:
                        self.pump(final=True)
                    except ScriptError as e:
                        self.error(e.message)
                    self.child_exited(rc)
            self.write_status()
            # splicing copies what the child writes: poll fast; otherwise the child writes the archived
            # file in place and only a rotation needs noticing
            time.sleep(0.05 if self.splice else 0.2)


def _iso(epoch) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))
    except (TypeError, ValueError):
        return "?"


def streamer_option_text(creds: dict, host: str, port: int) -> str:
    return hostkit.client_option_text(creds, host=host, port=port)


def cmd_stream(args) -> dict:
    bdir = hostkit.check_path(args.dir)
    ctl = mkdir_private(os.path.join(bdir, CTL_DIR))
    lock = try_lock(os.path.join(ctl, "lock"))
    if lock is None:
        raise ScriptError(PRECONDITION, "another streamer already archives %s" % bdir)
    creds = hostkit.read_credentials()
    s = None
    try:
        with hostkit.private_dir(prefix="mysql-binlog-cred-", dir=secret_dir_base()) as secret:
            cnf = os.path.join(secret, "client.cnf")
            fd = os.open(cnf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, streamer_option_text(creds, args.host, args.port).encode("utf-8"))
            finally:
                os.close(fd)
            write_json(os.path.join(ctl, "pid.json"), {
                "pid": os.getpid(), "digest": own_digest(), "host": args.host, "port": args.port,
                "client_server_id": args.client_server_id, "flavor": args.flavor, "secret_dir": secret,
                "started_at": int(time.time()), "script": os.path.abspath(__file__)})
            log("streamer %d for %s (%s:%d), script version %s; credentials in %s (0600, removed on exit)",
                os.getpid(), bdir, args.host, args.port, own_digest(), secret)
            s = Streamer(args, cnf)
            try:
                s.run()
            except Stop as e:
                s.state = "stopped"
                log("stopping by itself: %s", e)
                return {"stopped": str(e), "restarts": s.restarts}
            finally:
                s.stop_child()
                if s.state != "stopped":
                    s.state = "stopped"
                s.write_status(force=True)
    finally:
        try:
            os.unlink(os.path.join(ctl, "pid.json"))
        except OSError:
            pass
        os.close(lock)
    return {}


# ---------------------------------------------------------------------------------------------
# supervise: one short call per minute


def streamer_running(ctl: str):
    """(running, pid.json) — running when the streamer holds its lock."""
    fd = try_lock(os.path.join(ctl, "lock"))
    if fd is not None:
        os.close(fd)
        return False, read_json(os.path.join(ctl, "pid.json"))
    return True, read_json(os.path.join(ctl, "pid.json"))


def stop_streamer(ctl: str, why: str, wait: float = 30.0) -> dict:
    """SIGTERM the streamer (it unwinds: child stopped, credentials removed), SIGKILL when it does not
    release its lock in time. Returns what was done."""
    running, pid_info = streamer_running(ctl)
    if not running:
        return {"stopped": False}
    pid = (pid_info or {}).get("pid")
    if not pid or SCRIPT not in cmdline(pid) or " stream" not in cmdline(pid):
        # the lock holder is unknown (pid.json not written yet, or not ours): wait a little
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pid = (read_json(os.path.join(ctl, "pid.json")) or {}).get("pid")
            if pid and SCRIPT in cmdline(pid):
                break
            time.sleep(0.1)
        else:
            raise ScriptError(PRECONDITION, "the streamer lock in %s is held by an unknown process" % ctl)
    log("stopping streamer %s: %s", pid, why)
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not streamer_running(ctl)[0]:
            return {"stopped": True, "pid": pid, "how": "SIGTERM"}
        time.sleep(0.05)
    try:
        os.kill(int(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and streamer_running(ctl)[0]:
        time.sleep(0.05)
    return {"stopped": True, "pid": pid, "how": "SIGKILL"}


def clean_stale(ctl: str, pid_info) -> None:
    """What a streamer killed with -9 left: its credentials directory."""
    if not pid_info:
        return
    secret = pid_info.get("secret_dir")
    if secret and os.path.basename(secret).startswith("mysql-binlog-cred-") and os.path.isdir(secret) \
            and not pid_alive(pid_info.get("pid")):
        shutil.rmtree(secret, ignore_errors=True)
        log("removed the credentials a killed streamer (pid %s) left in %s", pid_info.get("pid"), secret)
    try:
        os.unlink(os.path.join(ctl, "pid.json"))
    except OSError:
        pass


def renew_lease(ctl: str, minutes: float) -> dict:
    now = time.time()
    lease = {"renewed_at": int(now), "expires_at": int(now + minutes * 60), "minutes": minutes}
    write_json(os.path.join(ctl, "lease.json"), lease)
    return lease


def start_streamer(args, ctl: str, creds: dict) -> dict:
    logf = os.path.join(ctl, "streamer.log")
    try:
        if os.path.getsize(logf) > LOG_LIMIT:
            os.replace(logf, logf + ".1")
    except OSError:
        pass
    argv = [sys.executable, os.path.abspath(__file__), "stream", "--dir", args.dir, "--host", args.host,
            "--port", str(args.port), "--flavor", args.flavor, "--client-server-id", str(args.client_server_id),
            "--start", args.start]
    with open(logf, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out, start_new_session=True,
                                close_fds=True, cwd="/")
    proc.stdin.write((json.dumps({"user": creds["user"], "password": creds["password"]}) + "\n").encode())
    proc.stdin.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = read_json(os.path.join(ctl, "pid.json"))
        if info and info.get("pid") == proc.pid:
            break
        if proc.poll() is not None:
            tail = _tail(logf, 5)
            raise ScriptError(PRECONDITION, "the streamer exited at once (%s): %s" % (proc.returncode, tail))
        time.sleep(0.02)
    # reaped by init once this process exits; it runs in its own session, detached from ssh
    return {"pid": proc.pid}


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line for line in lines[-n:] if line.strip())


def file_record(idir: str, identity: str, name: str, state: str) -> dict:
    """The summary of one archived file, from its sidecar (computed once for closed files; incremental
    for the open one)."""
    meta = os.path.join(idir, META_DIR)
    os.makedirs(meta, mode=0o750, exist_ok=True)
    path = path_of(idir, name, state)
    if state == "open":
        side = os.path.join(meta, name + ".open.json")
        prev = read_json(side)
        try:
            size = os.path.getsize(path)
        except OSError:
            return {}
        if prev and prev.get("end", 0) > size:
            prev = None  # the streamer truncated a partial event we had not counted: rescan
        s = scan_binlog(path, prev=prev)
        write_json(side, scan_for_json(s))
        return summary(name, identity, "open", s)
    side = os.path.join(meta, name + ".json")
    cached = read_json(side)
    if cached and cached.get("state") == state and cached.get("bytes_on_disk") == os.path.getsize(path):
        return cached
    s = scan_binlog(path, sha=True)
    rec = summary(name, identity, state, s)
    if state == "closed" and (s["problem"] or s["end"] != s["size"]):
        rec["state"] = "damaged"
        log("warning: closed file %s does not parse to its end: %s", path, s["problem"])
    write_json(side, rec)
    try:
        os.unlink(os.path.join(meta, name + ".open.json"))
    except OSError:
        pass
    return rec


def read_known() -> dict:
    """The second stdin line: what the catalog already has ({identity: {closed_upto, closed_count}})."""
    try:
        line = sys.stdin.buffer.readline()
    except (OSError, ValueError):
        return {}
    try:
        known = json.loads(line.decode("utf-8")) if line.strip() else {}
    except ValueError:
        raise ScriptError(USAGE, "the second stdin line (what the catalog knows) is not JSON") from None
    return known if isinstance(known, dict) else {}


def needs_checksum(idir: str, name: str, state: str) -> int:
    """Bytes a report of this file would hash now (0: its sidecar is current, or it is the open file)."""
    if state == "open":
        return 0
    path = path_of(idir, name, state)
    cached = read_json(os.path.join(idir, META_DIR, name + ".json"))
    size = os.path.getsize(path)
    return 0 if cached and cached.get("bytes_on_disk") == size and cached.get("state") in (state, "damaged") else size


def archive_files(bdir: str, known: dict, budget: int = 4 << 30) -> tuple:
    """(records to report, totals): new closed files, and every open or incomplete one.

    At most ``budget`` bytes are checksummed per call (a run stays short after a long outage); the
    files after the first one left over are reported by a later run, in order, so the catalog never
    sees a later file without the ones before it."""
    out, totals = [], {}
    hashed = 0
    for identity in identities(bdir):
        idir = os.path.join(bdir, identity)
        have = list_identity(idir)
        k = known.get(identity) or {}
        upto = file_number(k.get("closed_upto") or "") or 0
        closed = sorted((n for n, st in have.items() if st == "closed"), key=sort_key)
        resync = sum(1 for n in closed if (file_number(n) or 0) <= upto) != int(k.get("closed_count") or 0)
        totals[identity] = {"closed": len(closed), "open": sum(1 for st in have.values() if st == "open"),
                            "incomplete": sum(1 for st in have.values() if st == "incomplete")}
        for name in sorted(have, key=sort_key):
            st = have[name]
            if st == "closed" and not resync and (file_number(name) or 0) <= upto:
                continue
            cost = needs_checksum(idir, name, st)
            if cost and hashed and hashed + cost > budget:
                totals[identity]["deferred_from"] = name
                log("checksummed %s this run; %s and later are reported next run", hostkit.human_bytes(hashed), name)
                break
            hashed += cost
            rec = file_record(idir, identity, name, st)
            if rec:
                out.append(rec)
    return out, totals


def head_of(bdir: str, identity: str):
    """(name, complete bytes, last event time, last gtid) of the newest file of an identity."""
    idir = os.path.join(bdir, identity)
    have = list_identity(idir)
    if not have:
        return None
    name = max(have, key=sort_key)
    return name, have[name]


def cmd_supervise(args) -> dict:
    bdir = hostkit.check_path(args.dir)
    if args.lease_minutes <= 0:
        raise ScriptError(USAGE, "--lease-minutes must be > 0")
    if not 1 <= args.client_server_id <= 4294967295:
        raise ScriptError(USAGE, "--client-server-id must be 1..4294967295")
    creds = hostkit.read_credentials()
    known = read_known()
    os.makedirs(bdir, mode=0o750, exist_ok=True)
    ctl = mkdir_private(os.path.join(bdir, CTL_DIR))
    digest = own_digest()
    result = {"dir": bdir, "digest": digest}

    # the server, as the storage host sees it (the streamer connects from here too)
    server = {"reachable": False}
    with hostkit.defaults_file(creds, host=args.host, port=args.port) as cnf:
        try:
            server = dict(server_info(args.flavor, cnf), reachable=True)
        except ScriptError as e:
            server = {"reachable": False, "error": e.message, "code": e.code}
    result["server"] = {k: v for k, v in server.items() if k != "binlogs"}
    result["server"]["binlog_files"] = len(server.get("binlogs") or [])
    if server.get("binlogs"):
        result["server"]["oldest"] = server["binlogs"][0][0]

    # the streamer: running, on this script version, towards this target, and not stalled
    lease = renew_lease(ctl, args.lease_minutes)
    running, pid_info = streamer_running(ctl)
    status = read_json(os.path.join(ctl, "status.json")) or {}
    action, reason = "running", "the streamer runs"
    if running and pid_info:
        if pid_info.get("digest") != digest:
            reason = "the streamer runs script version %s, this is %s" % (pid_info.get("digest"), digest)
        elif (pid_info.get("host"), int(pid_info.get("port") or 0), pid_info.get("client_server_id")) != \
                (args.host, args.port, args.client_server_id):
            reason = "the streamer reads %s:%s, the CMDB says %s:%s" % (pid_info.get("host"), pid_info.get("port"),
                                                                         args.host, args.port)
        else:
            reason = ""
            stalled = stall_reason(bdir, server, status, args.stall_seconds)
            if stalled:
                reason = stalled
        if reason:
            stop_streamer(ctl, reason)
            running, action = False, "restarted"
    elif running:
        action, reason = "running", "the streamer is starting"
    if not running:
        if action != "restarted":
            action = "started"
            reason = "no streamer was running" + (" (it stopped: %s)" % status.get("last_error")
                                                  if status.get("last_error") else "")
        _, stale = streamer_running(ctl)
        clean_stale(ctl, stale)
        try:
            os.unlink(os.path.join(ctl, "status.json"))  # the stopped streamer's: the new one writes its own
        except OSError:
            pass
        if not server.get("reachable") or server.get("log_bin"):
            started = start_streamer(args, ctl, creds)
            log("streamer %s started: %s", started["pid"], reason)
        else:
            action, reason = "not started", "the binary log is off on the server"
        status = {}
    elif reason:
        log("%s", reason)
    status = read_json(os.path.join(ctl, "status.json")) or status
    result["streamer"] = {"action": action, "reason": reason, "lease_expires_at": lease["expires_at"],
                          "pid": (read_json(os.path.join(ctl, "pid.json")) or {}).get("pid"),
                          "state": status.get("state"), "last_error": status.get("last_error"),
                          "last_error_at": status.get("last_error_at"), "restarts": status.get("restarts"),
                          "notes": status.get("notes") or [], "grew_at": status.get("grew_at"),
                          "identity": status.get("identity")}

    # the archive: checksum what closed, follow the open file, measure the lag
    files, totals = archive_files(bdir, known, int(args.max_checksum_mib * 2**20))
    result["files"] = files
    result["totals"] = totals
    identity = server.get("identity") or status.get("identity")
    result["identity"] = identity
    result.update(measure_lag(bdir, identity, server))
    if not server.get("reachable"):
        raise ScriptError(server.get("code") or TRANSIENT, "the server %s:%s cannot be reached from the storage host "
                          "%s: %s" % (args.host, args.port, hostkit.hostname(), server.get("error")), **result)
    if not server.get("log_bin"):
        raise ScriptError(PRECONDITION, "the binary log is off on %s:%s (log_bin=0): nothing to archive; set "
                          "policy.binlog_archive.enabled: false for this instance or turn log_bin on"
                          % (args.host, args.port), **result)
    log("%s: head %s, lag %s s (%s bytes); %d file(s) reported", identity, result.get("head_file"),
        result.get("lag_seconds"), result.get("lag_bytes"), len(files))
    return result


def stall_reason(bdir: str, server: dict, status: dict, stall_seconds: float) -> str:
    """Why a running streamer counts as stalled (a half-open connection): the server wrote more, the
    archive did not grow for stall_seconds."""
    if not server.get("reachable") or status.get("state") != "streaming" or not server.get("file"):
        return ""
    head = head_of(bdir, server["identity"])
    if head is None:
        return ""
    name, _state = head
    size = status.get("head_bytes") or 0
    behind = sort_key(name) < sort_key(server["file"]) or (name == server["file"] and size < server["pos"])
    grew_at = status.get("grew_at")
    quiet = time.time() - float(grew_at if grew_at is not None else time.time())
    if behind and quiet > stall_seconds:
        return "stalled: the server is at %s:%s, the archive has not grown for %.0f s at %s:%s" % (
            server["file"], server["pos"], quiet, name, size)
    return ""


def measure_lag(bdir: str, identity, server: dict) -> dict:
    """How far the archive trails the server: 0 when it holds everything the server wrote, else the
    server's clock minus the last archived event's time (an upper bound), and the bytes behind."""
    out = {"head_file": None, "head_pos": None, "head_state": None, "last_event_at": None, "last_gtid": None,
           "lag_seconds": None, "lag_bytes": None, "caught_up": False, "measured_at": server.get("now")}
    if not identity:
        return out
    head = head_of(bdir, identity)
    if head is None:
        if server.get("reachable") and server.get("binlogs"):
            out["lag_bytes"] = sum(size for _, size in server["binlogs"])
        return out
    name, state = head
    idir = os.path.join(bdir, identity)
    rec = file_record(idir, identity, name, state)
    out.update(head_file=name, head_pos=rec.get("size"), head_state=rec.get("state"),
               last_event_at=rec.get("last_event_at"), last_gtid=rec.get("last_gtid"))
    if not rec.get("last_event_at"):
        # a file with no event yet: the last event is in the file before
        have = list_identity(idir)
        older = sorted((n for n in have if sort_key(n) < sort_key(name)), key=sort_key)
        if older:
            prev = file_record(idir, identity, older[-1], have[older[-1]])
            out["last_event_at"] = prev.get("last_event_at")
    if not server.get("reachable") or not server.get("file"):
        return out
    pos = rec.get("size") or 0
    sizes = dict(server["binlogs"])
    if sort_key(name) > sort_key(server["file"]) or (name == server["file"] and pos >= server["pos"]):
        out.update(caught_up=True, lag_seconds=0, lag_bytes=0)
        return out
    behind = max(0, sizes.get(name, pos) - pos) + sum(
        size for n, size in server["binlogs"] if sort_key(n) > sort_key(name) and sort_key(n) < sort_key(server["file"]))
    if name != server["file"]:
        behind += server["pos"]
    out["lag_bytes"] = behind
    last = out["last_event_at"]
    out["lag_seconds"] = max(0, server["now"] - int(last)) if last else None
    return out


def cmd_stop(args) -> dict:
    bdir = hostkit.check_path(args.dir)
    ctl = os.path.join(bdir, CTL_DIR)
    if not os.path.isdir(ctl):
        return {"stopped": False}
    try:
        os.unlink(os.path.join(ctl, "lease.json"))  # a streamer that misses the signal stops within a second
    except OSError:
        pass
    out = stop_streamer(ctl, args.reason, wait=args.wait)
    clean_stale(ctl, read_json(os.path.join(ctl, "pid.json")))
    return out


def cmd_scan(args) -> dict:
    path = hostkit.check_path(args.file, "--file")
    if not os.path.isfile(path):
        raise ScriptError(PRECONDITION, "%s is not a file" % path)
    s = scan_binlog(path, sha=True)
    return {"scan": summary(os.path.basename(path), "-", "scanned", s), "sha256": s.get("sha256")}


def cmd_fetch(args) -> dict:
    """Stream one archived file to stdout: a closed (or incomplete) file whole, checked against the sha256
    and size the caller's catalog recorded; the open file as far as its last complete event. The file must
    be DIR/<identity>/<name>[.open|.incomplete], also once symlinks are resolved."""
    bdir = hostkit.check_path(args.dir)
    ident, _, name = args.file.partition("/")
    if not IDENTITY_RE.match(ident) or not NAME_RE.match(name) or file_number(name) is None:
        raise ScriptError(USAGE, "--file must be <server identity>/<binlog file name> (like 1-263fea19a224/"
                          "binlog.000042), got %r" % args.file[:200])
    if args.sha256 is not None and not re.match(r"^[0-9a-f]{64}$", args.sha256):
        raise ScriptError(USAGE, "--sha256 must be 64 hex digits")
    idir = os.path.join(bdir, ident)
    real_dir = os.path.realpath(bdir)

    def inside(path: str) -> str:
        real = os.path.realpath(path)
        if not real.startswith(real_dir.rstrip("/") + "/"):
            raise ScriptError(PRECONDITION, "%s resolves to %s, outside the archive %s: not served" % (path, real, bdir))
        return path

    served = args.state
    path = inside(path_of(idir, name, args.state))
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        closed = inside(path_of(idir, name, "closed"))
        if args.state != "open" or not os.path.isfile(closed):
            raise ScriptError(PRECONDITION, "%s is not in the archive (expired, or moved?)" % path) from None
        log("%s was closed since the catalog saw it open: serving the closed file", name)
        path, served = closed, "closed"
        f = open(path, "rb")
    with f:
        size = os.fstat(f.fileno()).st_size
        scan = None
        if served == "open":
            # the streamer only appends, or truncates to a complete event: this prefix stays valid
            prev = read_json(os.path.join(idir, META_DIR, name + ".open.json"))
            if prev and (prev.get("end", 0) > size or prev.get("fde") is None):
                prev = None
            fd_path = "/proc/self/fd/%d" % f.fileno()
            scan = scan_binlog(fd_path if os.path.exists(fd_path) else path, prev=prev)
            limit = scan["end"] if scan["fde"] is not None else 0
            if scan["problem"] and not scan["problem"].startswith("partial"):
                raise ScriptError(PRECONDITION, "%s: %s (at byte %d of %d)" % (path, scan["problem"], scan["end"], size))
        else:
            limit = size
            if args.size is not None and size != args.size:
                raise ScriptError(PRECONDITION, "%s is %d bytes, the catalog recorded %d: the archived file changed; "
                                  "not served" % (path, size, args.size))
        h = hashlib.sha256()
        out = sys.stdout.buffer
        done = 0
        while done < limit:
            chunk = f.read(min(READ_CHUNK, limit - done))
            if not chunk:
                raise ScriptError(PRECONDITION, "%s ended at byte %d while being read (%d expected)" % (path, done, limit))
            h.update(chunk)
            out.write(chunk)
            done += len(chunk)
        out.flush()
    digest = h.hexdigest()
    result = {"file": args.file, "path": path, "state": served, "size": done, "sha256": digest,
              "bytes_on_disk": size}
    if scan is not None:
        result.update(last_event_at=scan["last_ts"], last_gtid=scan["last_gtid"],
                      end_gtid_state=gtid_text(scan["state"]) if scan["state"] else None)
    if served != "open" and args.sha256 is not None and digest != args.sha256:
        raise ScriptError(PRECONDITION, "%s has sha256 %s, the catalog recorded %s: the archived file changed or is "
                          "damaged; do not use what was sent" % (path, digest, args.sha256), **result)
    log("sent %s (%s, %s%s)", path, served, hostkit.human_bytes(done),
        ", to its last complete event" if served == "open" else ", sha256 checked" if args.sha256 else "")
    return result


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> hostkit.ArgumentParser:
    p = hostkit.ArgumentParser(
        prog=SCRIPT,
        description="Continuous binlog archive on a storage host: a detached streamer per instance "
                    "(mariadb-binlog --read-from-remote-server --raw --stop-never as its child) and a short "
                    "supervise call that keeps it running. Layout: DIR/<server_id>-<uid>/<binlog file> "
                    "(closed, byte-identical), <file>.open (being written), <file>.incomplete (purged on "
                    "the server before it was finished). Credentials: one JSON line on stdin. Logs go to "
                    "stderr; the last stderr line is always 'RESULT {json}'. Exit codes: 0 ok, 1 internal, "
                    "2 usage, 3 precondition, 4 transient, 5 partial.")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=hostkit.ArgumentParser)
    sub.required = True

    def target(sp):
        sp.add_argument("--dir", required=True, metavar="DIR", help="the instance's archive: <base>/<instance>/binlog")
        sp.add_argument("--host", required=True, help="the database server to read the binlog from")
        sp.add_argument("--port", required=True, type=int, help="its port (TCP)")
        sp.add_argument("--flavor", choices=FLAVORS, default="mariadb", help="server flavor (default mariadb)")
        sp.add_argument("--client-server-id", required=True, type=int, metavar="N",
                        help="the server_id the streamer uses as a replication client: unique among the "
                             "server's replicas (a duplicate disconnects the other one)")
        sp.add_argument("--start", choices=("first", "current"), default="first",
                        help="where an empty archive begins: the oldest binlog the server has (default) or the "
                             "current one")

    s = sub.add_parser("supervise", help="keep the streamer running; checksum closed files; measure the lag",
                       description="Renew the streamer's lease (DIR/.streamer/lease.json) for LEASE minutes; start the "
                                   "streamer when none runs, restart it when it runs another script version, reads "
                                   "another server, or stalled (the server wrote more, the archive did not grow for "
                                   "STALL seconds); checksum (sha256) and summarise every closed file once (sidecar "
                                   "in <identity>/.meta); report new closed files, the open one, the lag. stdin: "
                                   "line 1 the credentials JSON, line 2 (optional) what the catalog already has: "
                                   "{identity: {closed_upto, closed_count}}.")
    target(s)
    s.add_argument("--lease-minutes", type=float, default=10, metavar="LEASE",
                   help="the streamer stops by itself when no supervise renewed its lease for this long (default 10)")
    s.add_argument("--stall-seconds", type=float, default=120, metavar="STALL",
                   help="restart a streamer whose archive did not grow for this long while the server wrote more "
                        "(default 120)")
    s.add_argument("--max-checksum-mib", type=float, default=4096, metavar="MIB",
                   help="checksum at most this much of newly closed files per run (default 4096); the rest is "
                        "reported by the next runs, in order")
    s.set_defaults(func=cmd_supervise)

    st = sub.add_parser("stream", help="the streamer itself (started detached by supervise)",
                        description="Run mariadb-binlog into DIR/<identity>/.spool and file its output: a file it "
                                    "starts at position 4 is moved into the archive as <file>.open and written in "
                                    "place; a resume at P splices the child's events (checked to start at P) onto "
                                    "the archived file; a file is closed (renamed) when the stream moved past it. "
                                    "Restarts the child from the last complete event when it exits (backoff up to "
                                    "30 s); stops by itself when the lease expires. Credentials on stdin go to a "
                                    "0600 file in a private directory on tmpfs, removed when it stops.")
    target(st)
    st.set_defaults(func=cmd_stream)

    sp = sub.add_parser("stop", help="stop the streamer of DIR",
                        description="Remove the lease, SIGTERM the streamer and wait for it to unwind (SIGKILL after "
                                    "WAIT seconds); remove what a killed one left (its credentials directory).")
    sp.add_argument("--dir", required=True, metavar="DIR", help="the instance's archive: <base>/<instance>/binlog")
    sp.add_argument("--wait", type=float, default=30, help="seconds to wait before SIGKILL (default 30)")
    sp.add_argument("--reason", default="asked to stop", help="logged")
    sp.set_defaults(func=cmd_stop)

    sc = sub.add_parser("scan", help="summarise one binlog file",
                        description="Walk FILE's complete events (CRC32 checked): size, sha256, GTID state at its "
                                    "start (Gtid_list) and end, first and last GTID and event time; a partial or "
                                    "damaged event ends the walk and is reported as 'problem'.")
    sc.add_argument("--file", required=True, help="the binlog file (absolute path)")
    sc.set_defaults(func=cmd_scan)

    fe = sub.add_parser("fetch", help="send one archived file to stdout (for a flashback or a replay)",
                        description="Write DIR/<identity>/<name> to stdout: a closed or incomplete file whole, "
                                    "checked against --sha256 and --size (what the catalog recorded; a mismatch "
                                    "fails after the bytes were sent: the caller must discard them); the open file "
                                    "(--state open: <name>.open) as far as its last complete, CRC-checked event (a "
                                    "file closed meanwhile is sent whole). The path must stay inside DIR once "
                                    "symlinks are resolved. RESULT: size and sha256 of what was sent.")
    fe.add_argument("--dir", required=True, metavar="DIR", help="the instance's archive: <base>/<instance>/binlog")
    fe.add_argument("--file", required=True, metavar="IDENTITY/NAME",
                    help="the archived file: its server identity directory and its name (binlog.000042)")
    fe.add_argument("--state", choices=("closed", "open", "incomplete"), default="closed",
                    help="the file's state in the catalog (default closed)")
    fe.add_argument("--sha256", metavar="HEX", help="the sha256 the catalog recorded (closed, incomplete)")
    fe.add_argument("--size", type=int, metavar="BYTES", help="the size the catalog recorded (closed, incomplete)")
    fe.set_defaults(func=cmd_fetch)
    return p


def main(argv=None) -> None:
    hostkit.main(build_parser(), argv, script=SCRIPT)


if __name__ == "__main__":
    main()
