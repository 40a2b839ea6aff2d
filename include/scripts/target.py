#!/usr/bin/env python3
"""Restore-target verbs: check, stop, receive, prepare, copy-back, fix-ownership, start, verify, finish,
abort, status, replicate; and send (on the storage host: the sending end of a transfer).

Runs ON the restore target (over SSH), except ``send``, which runs on the storage host. Stdlib only,
Python 3.7+. A full restore runs the verbs in this order, one ssh call each:

  check          read-only: tools and their versions, the datadir's state, whether a server runs, space
  stop           run the target's stop_command (sh -c), wait until no server runs on the datadir, then
                 write the marker DATADIR/mysql-restore.NOT-RESTORED (from here on the target is the
                 restore's) and the work directory WORK (state.json)
  receive        stdin (a stored artifact, from ``send`` on the storage host) -> sha256 + decompress +
                 mbstream -x into WORK/NN-LABEL; a sha256 that is not the catalogued one fails
  prepare        mariabackup --prepare the full, then apply each incremental in order (the set's own
                 metadata is read back: binlog position, GTID, LSNs, the tables of each schema)
  copy-back      remove the datadir's old content (never the marker), mariabackup --copy-back into
                 DATADIR/.restoring, drop replication state files that belong to the backed-up server
  fix-ownership  chown the restored files to the datadir's owner, then move them into DATADIR, the
                 system schema mysql/ last: until then no server can start on DATADIR (mariadbd
                 aborts without mysql/), so a killed restore never leaves a half-restored server
  start          run the start_command (sh -c) with MYSQL_RESTORE_SERVER_ID and MYSQL_RESTORE_DATADIR in
                 its environment; wait until the server answers; make sure it runs with that server_id
                 and has no replication configured
  verify         the running server: server_id, version, its own GTID state, then gtid_slave_pos set to
                 the backup's GTID, the tables it opens per schema, its LSN, replication
  finish         remove the marker, record DATADIR/mysql-restore.json (what was restored), remove WORK
  abort          (a failed restore) when the marker is there: stop the server if one runs, keep the
                 marker, remove WORK's data; when it is not, change nothing
  status         read-only: restored, not restored (and how far it got), or no restore at all
  replicate      (make_replica_of_source) CHANGE MASTER TO the primary, MASTER_USE_GTID=slave_pos, START
                 SLAVE, wait until both threads run

Credentials (the target's admin login, and for replicate the replication login) arrive on stdin as one
JSON line; they go to a 0600 option file in a private directory and never to argv or a log. SQL goes to
the client on stdin, never on its command line. The last stderr line is always ``RESULT {json}``; exit
codes are those of hostkit.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostkit
from hostkit import INTERNAL, PRECONDITION, TRANSIENT, USAGE, ScriptError, log

SCRIPT = "target.py"
FLAVORS = ("mariadb", "mysql")
COMPRESSIONS = ("none", "gzip", "zstd")
TOOLS = {"mariadb": ("mariabackup", "mbstream", ("mariadbd", "mysqld"), ("mariadb", "mysql")),
         "mysql": ("xtrabackup", "xbstream", ("mysqld",), ("mysql", "mariadb"))}
MARKER = "mysql-restore.NOT-RESTORED"
RESTORED = "mysql-restore.json"
STAGING = ".restoring"
STATE = "state.json"
PREPARED = "prepared.json"
# replication state of the backed-up server: never the target's (a restored server would start replicating)
_REPLICATION_FILES = re.compile(r"^(master(-.+)?\.info|relay-log(-.+)?\.info|multi-master\.info)$")
# the datadir is emptied and filled: never a system directory (as the CMDB checks)
_SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media", "/mnt",
                "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib",
                "/var/tmp")
_SYSTEM_TREES = ("/bin/", "/boot/", "/dev/", "/etc/", "/lib/", "/lib32/", "/lib64/", "/proc/", "/run/", "/sbin/",
                 "/sys/", "/usr/")
_GTID_RE = re.compile(r"^[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}(,[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})*$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")
_LINK_RE = re.compile(r"^[0-9]{2}-[0-9]{8}-[0-9]{6}F(?:_[0-9]{8}-[0-9]{6}I)?$")


# ---------------------------------------------------------------------------------------------
# pure helpers (unit tested)


def check_datadir(path: str, what: str = "--datadir") -> str:
    """An absolute datadir path that is no system directory; returns it normalised."""
    norm = hostkit.check_path(path, what)
    if norm in _SYSTEM_DIRS or norm.startswith(_SYSTEM_TREES):
        raise ScriptError(USAGE, "%s %s is a system directory: a restore empties and fills it" % (what, norm))
    return norm


def check_work(work: str, datadir: str) -> str:
    w = check_datadir(work, "--work")
    if w == datadir or w.startswith(datadir + "/") or datadir.startswith(w + "/"):
        raise ScriptError(USAGE, "--work %s and --datadir %s must not contain each other" % (w, datadir))
    return w


def sql_string(value) -> str:
    """A MariaDB/MySQL string literal (the session runs with sql_mode '' so backslash escapes hold)."""
    s = str(value)
    for a, b in (("\\", "\\\\"), ("'", "\\'"), ("\0", "\\0"), ("\n", "\\n"), ("\r", "\\r"), ("\x1a", "\\Z")):
        s = s.replace(a, b)
    return "'" + s + "'"


# the marker's phases, in order; until "cleared" the datadir still holds what it held before the restore
PHASES = ("stopped", "prepared", "cleared", "copied_back", "in_place", "starting", "started", "verified")


def datadir_state(datadir: str) -> dict:
    """What DATADIR holds: ``absent``, ``empty``, ``not_restored`` (an unfinished restore's files only:
    replaced without overwrite), ``data`` (a server's data, or an unfinished restore that had not yet
    removed it: replaced only with overwrite), or a problem (``not_a_directory``, ``unreadable``)."""
    out = {"datadir": datadir, "datadir_state": "absent", "datadir_entries": [], "datadir_bytes": 0, "marker": None,
           "restored": None}
    if not os.path.lexists(datadir):
        return out
    if not os.path.isdir(datadir) or os.path.islink(datadir):
        out.update(datadir_state="not_a_directory", datadir_detail="it is not a directory (or a symlink)")
        return out
    try:
        entries = sorted(os.listdir(datadir))
    except OSError as e:
        out.update(datadir_state="unreadable", datadir_detail=str(e))
        return out
    out["datadir_entries"] = entries[:20]
    out["datadir_bytes"] = tree_bytes(datadir)
    marker = read_json(os.path.join(datadir, MARKER))
    out["marker"] = marker
    out["restored"] = read_json(os.path.join(datadir, RESTORED))
    if not entries:
        out["datadir_state"] = "empty"
    elif marker is None:
        out["datadir_state"] = "data"
    elif marker.get("state_before") == "data" and marker.get("phase") in ("stopped", "prepared"):
        out["datadir_state"] = "data"
        out["datadir_detail"] = ("restore %s stopped before it removed the old data: the old data is still there"
                                 % marker.get("restore_id"))
    else:
        out["datadir_state"] = "not_restored"
    return out


def tree_bytes(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return total


def read_json(path: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def write_json(path: str, data: dict) -> None:
    """Atomically (tmp, fsync, rename, fsync the directory)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    hostkit.fsync_dir(os.path.dirname(path))


def schema_inventory(directory: str) -> dict:
    """schema -> number of table definitions (.frm) in a prepared set or a datadir."""
    out = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        p = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isdir(p) or os.path.islink(p):
            continue
        try:
            out[name] = sum(1 for f in os.listdir(p) if f.endswith(".frm"))
        except OSError:
            continue
    return out


def schema_name(directory_name: str) -> str:
    """A schema directory name back to the schema name (MariaDB encodes odd characters as @XXXX)."""
    return re.sub(r"@([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), directory_name)


def now_utc() -> str:
    return hostkit.utc_stamp()


# ---------------------------------------------------------------------------------------------
# is a server running on this datadir?


def _port_open(host: str, port: int) -> bool:
    if not host or not port:
        return False
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def datadir_processes(datadir: str) -> list:
    """Processes whose working directory is DATADIR (mariadbd and mysqld chdir to their datadir)."""
    try:
        real = os.path.realpath(datadir)
    except OSError:
        return []
    found = []
    if not os.path.isdir("/proc"):
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/cwd" % name) != real:
                continue
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            with open("/proc/%s/stat" % name) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append({"pid": int(name), "cmd": cmd[:200]})
    return found


def running(datadir: str, host: str, port: int) -> dict:
    procs = datadir_processes(datadir)
    port_open = _port_open(host, port)
    return {"running": bool(procs) or port_open, "pids": [p["pid"] for p in procs], "processes": procs,
            "port_open": port_open}


def wait_stopped(datadir: str, host: str, port: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = running(datadir, host, port)
        if not state["running"] or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# shell commands from the CMDB and the SQL client


def run_command(what: str, command: str, timeout: float, env_extra=None) -> dict:
    """Run a CMDB command with ``sh -c`` (its output re-logged); fail naming the exit code and the tail.

    It is waited for by its exit, not by the end of its output: a daemon it starts may keep the pipe."""
    import threading
    from collections import deque
    if not command or "\n" in command or "\0" in command:
        raise ScriptError(USAGE, "%s must be one line of shell" % what)
    env = dict(os.environ)
    env.update(env_extra or {})
    started = time.monotonic()
    proc = hostkit.spawn(["/bin/sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    tail = deque(maxlen=20)
    reader = threading.Thread(target=hostkit.relog_lines, args=(proc.stdout, "%s: " % what, tail), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                hostkit.terminate([proc])
                raise ScriptError(PRECONDITION, "%s did not finish in %d s: %s" % (what, timeout, command))
            time.sleep(0.05)
    except BaseException:
        hostkit.terminate([proc])
        raise
    reader.join(2.0)
    rc = proc.returncode
    seconds = round(time.monotonic() - started, 3)
    if rc != 0:
        raise ScriptError(PRECONDITION, "%s exited with %d: %s; last lines:\n%s" % (what, rc, command, "\n".join(tail)))
    log("%s done in %.1f s", what, seconds)
    return {"seconds": seconds, "exit_code": rc}


def _client(flavor: str) -> str:
    return hostkit.which_tool(*TOOLS[flavor][3])


def query(flavor: str, dfile: str, sql: str, timeout: float = 120) -> tuple:
    """(exit code, stdout, stderr) of SQL sent to the client on stdin (never on its command line)."""
    argv = [_client(flavor), "--defaults-file=%s" % dfile, "--batch", "--default-character-set=utf8mb4",
            "--connect-timeout=5", "--protocol=TCP"]
    try:
        r = subprocess.run(argv, input=sql.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", "client timed out after %d s" % timeout
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace").strip()


def sections(flavor: str, dfile: str, parts: list, where: str) -> dict:
    """Run several statements; {name: rows} (see dbhost.parse_sections)."""
    from dbhost import SECTION, parse_sections
    sql = "".join("SELECT '%s' AS %s;\n%s;\n" % (name, SECTION, st) for name, st in parts)
    code, out, err = query(flavor, dfile, sql)
    if code != 0:
        raise _sql_error(code, err, where)
    return parse_sections(out)


def _sql_error(code: int, err: str, where: str) -> ScriptError:
    msg = err.strip().splitlines()[-1] if err.strip() else "client exited with %d" % code
    if re.search(r"ERROR (1045|1044|1698|1227|1142)\b|Access denied", err):
        return ScriptError(PRECONDITION, "the restored server %s refused the admin login: %s (the target's "
                                         "mysql_conn_id must be a login the backed-up server had)" % (where, msg))
    if re.search(r"ERROR 20(02|03|13)\b|Can't connect|Lost connection|server has gone away", err) or code == 124:
        return ScriptError(TRANSIENT, "cannot reach the restored server %s: %s" % (where, msg))
    return ScriptError(INTERNAL, "query failed on %s: %s" % (where, msg))


# ---------------------------------------------------------------------------------------------
# check


def cmd_check(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    tool, extractor, servers, _clients = TOOLS[args.flavor]
    out = datadir_state(datadir)
    out.update(running(datadir, args.host, args.port))
    out["work_dir"] = work
    path = hostkit.find_tool(tool)
    out["tool"] = path
    out["tool_version"] = hostkit.tool_version(path) if path else None
    server = next((p for p in (hostkit.find_tool(n) for n in servers) if p), None)
    out["server_binary"] = server
    out["server_version"] = _server_version(server) if server else None
    out["missing_extractor"] = None if hostkit.find_tool(extractor) else \
        "%s not found on the target; install %s" % (extractor, hostkit.PACKAGE_HINTS.get(extractor, extractor))
    for comp in ("zstd", "gzip"):
        out["has_" + comp] = bool(hostkit.find_tool(comp))
    out["python"] = "%d.%d.%d" % sys.version_info[:3]
    work_base = _existing_parent(work)
    data_base = _existing_parent(datadir)
    out["work_fs"] = hostkit.fs_usage(work_base)
    out["datadir_fs"] = hostkit.fs_usage(data_base)
    out["same_fs"] = os.stat(work_base).st_dev == os.stat(data_base).st_dev
    st = os.stat(datadir if os.path.isdir(datadir) else data_base)
    out["owner"] = [st.st_uid, st.st_gid]
    log("datadir %s: %s (%s), server %s, %s, %s free for the set, %s", datadir, out["datadir_state"],
        hostkit.human_bytes(out["datadir_bytes"]), "running" if out["running"] else "not running",
        out["tool_version"] or "no %s" % tool, hostkit.human_bytes(out["work_fs"]["avail_bytes"]),
        out["server_version"] or "no server binary on PATH")
    return out


def _existing_parent(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _server_version(path: str) -> str | None:
    try:
        r = subprocess.run([path, "--no-defaults", "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Ver\s+(\S+)", r.stdout.decode("utf-8", "replace"))
    return "%s %s" % (os.path.basename(path), m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# stop


def cmd_stop(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    restore_id = _restore_id(args.restore_id)
    before = datadir_state(datadir)
    if before["datadir_state"] in ("not_a_directory", "unreadable"):
        raise ScriptError(PRECONDITION, "datadir %s is %s" % (datadir, before["datadir_state"]))
    was = running(datadir, args.host, args.port)
    log("stopping the target server (%s): %s", "running, pid %s" % (was["pids"] or "?") if was["running"]
        else "not running", args.stop_command)
    cmd = run_command("stop_command", args.stop_command, args.timeout)
    now = wait_stopped(datadir, args.host, args.port, args.timeout)
    if now["running"]:
        raise ScriptError(PRECONDITION, "the stop_command returned but a server still runs on %s (pids %s, port %s "
                                        "%s): nothing was changed; fix the target's stop_command"
                          % (datadir, now["pids"], args.port, "open" if now["port_open"] else "closed"))
    st = os.stat(datadir if os.path.isdir(datadir) else _existing_parent(datadir))
    owner = [st.st_uid, st.st_gid]
    if not os.path.isdir(datadir):
        os.makedirs(datadir, mode=0o750)
        os.chown(datadir, owner[0], owner[1])
    # the marker first: from here on the datadir is the restore's, and says so until `finish`
    marker = {"restore_id": restore_id, "instance": args.instance, "labels": args.labels, "phase": "stopped",
              "state_before": before["datadir_state"], "started_at": now_utc(),
              "note": "an unfinished restore: this datadir is not a restored server; run a new restore"}
    write_json(os.path.join(datadir, MARKER), marker)
    # the work directory: a private one of this restore (an earlier, killed restore's is removed)
    if os.path.lexists(work):
        if not os.path.isdir(work) or os.path.islink(work):
            raise ScriptError(PRECONDITION, "work directory %s is not a directory" % work)
        if os.listdir(work) and read_json(os.path.join(work, STATE)) is None:
            raise ScriptError(PRECONDITION, "work directory %s exists and is not a restore's work directory: "
                                            "remove it or set the target's work_dir" % work)
        shutil.rmtree(work)
    os.makedirs(work, mode=0o700)
    write_json(os.path.join(work, STATE), {"restore_id": restore_id, "datadir": datadir, "owner": owner,
                                           "state_before": before["datadir_state"], "started_at": marker["started_at"]})
    log("target stopped and marked not restored (%s); work directory %s", MARKER, work)
    return {"stopped": True, "was_running": was["running"], "state_before": before["datadir_state"],
            "owner": owner, "marker": os.path.join(datadir, MARKER), "stop_seconds": cmd["seconds"]}


def _restore_id(value: str) -> str:
    if not value or not _ID_RE.match(value):
        raise ScriptError(USAGE, "--restore-id must be 1-128 of letters, digits and _ . : + -")
    return value


def _owned(datadir: str, restore_id: str | None = None) -> dict:
    """The marker of a restore in progress (of that restore, when given), else PRECONDITION."""
    marker = read_json(os.path.join(datadir, MARKER))
    if marker is None:
        raise ScriptError(PRECONDITION, "%s has no restore marker: `stop` did not run for this restore, the target "
                                        "is not the restore's to change" % datadir)
    if restore_id is not None and marker.get("restore_id") != restore_id:
        raise ScriptError(PRECONDITION, "%s is marked by restore %s, not %s" % (datadir, marker.get("restore_id"),
                                                                                 restore_id))
    return marker


def _phase(datadir: str, phase: str, **more) -> None:
    path = os.path.join(datadir, MARKER)
    marker = read_json(path) or {}
    marker.update(phase=phase, **more)
    write_json(path, marker)


# ---------------------------------------------------------------------------------------------
# send (storage host) and receive (target)


def cmd_send(args) -> dict:
    path = hostkit.check_path(args.file, "--file")
    if not re.match(r"^backup\.(xbstream|mbstream)(\.gz|\.zst)?$", os.path.basename(path)):
        raise ScriptError(USAGE, "--file must be a stored artifact (backup.xbstream[.zst|.gz]), got %s" % path)
    try:
        if os.isatty(1):
            raise ScriptError(USAGE, "stdout is a terminal: pipe the artifact to `target.py receive`")
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ScriptError(PRECONDITION, "cannot read %s on %s: %s" % (path, hostkit.hostname(), e.strerror or e)) \
            from None
    started = time.monotonic()
    sent = 0
    try:
        size = os.fstat(fd).st_size
        out = sys.stdout.fileno()
        while sent < size:
            try:
                n = os.sendfile(out, fd, sent, min(size - sent, 8 << 20))
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise ScriptError(TRANSIENT, "the receiving end went away after %s of %s"
                                  % (hostkit.human_bytes(sent), hostkit.human_bytes(size))) from None
            if n == 0:
                break
            sent += n
    finally:
        os.close(fd)
    seconds = round(time.monotonic() - started, 3)
    log("sent %s (%s) in %.1f s", path, hostkit.human_bytes(sent), seconds)
    return {"path": path, "size_bytes": sent, "seconds": seconds}


def cmd_receive(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    _owned(datadir, _restore_id(args.restore_id))
    if not _LINK_RE.match(args.link):
        raise ScriptError(USAGE, "--link must be NN-LABEL (00-20261124-020000F), got %r" % args.link)
    digest = (args.sha256 or "").strip().lower()
    if not re.match(r"^[0-9a-f]{64}$", digest):
        raise ScriptError(USAGE, "--sha256 must be 64 hex digits")
    try:
        if os.isatty(0):
            raise ScriptError(USAGE, "stdin is a terminal: pipe the artifact in (from `target.py send`)")
    except OSError:
        pass
    tool, extractor, _s, _c = TOOLS[args.flavor]
    dest = os.path.join(work, args.link)
    if os.path.lexists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest, mode=0o700)
    from storage import decompress_argv
    suffix = {"zstd": ".zst", "gzip": ".gz", "none": ""}[args.compress]
    dec = decompress_argv("x" + suffix)
    ext = [hostkit.which_tool(extractor), "-x", "-C", dest]
    if dec:
        dec[0] = hostkit.which_tool(dec[0])
    import hashlib
    h = hashlib.sha256()
    size = 0
    started = time.monotonic()
    dec_proc = ext_proc = None
    ok = False
    try:
        if dec:
            dec_proc = hostkit.spawn(dec, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ext_proc = hostkit.spawn(ext, stdin=dec_proc.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dec_proc.stdout.close()
            sink = dec_proc.stdin
        else:
            ext_proc = hostkit.spawn(ext, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            sink = ext_proc.stdin
        wfd = sink.fileno()
        os.set_blocking(wfd, False)
        import select
        broken = False
        while True:
            chunk = hostkit.read_input(0)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view and not broken:
                select.select([], [wfd], [], 1.0)
                try:
                    n = os.write(wfd, view)
                    view = view[n:]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    broken = True
            if broken:
                break
        sink.close()
        errs = []
        rcs = []
        for p in (ext_proc, dec_proc):
            if p is None:
                continue
            errs.append(hostkit.read_to_end(p.stderr).decode("utf-8", "replace").strip())
            rcs.append(hostkit.wait_proc(p))
        for text in errs:
            for line in text.splitlines():
                log("extract: %s", line)
        if broken or any(rc != 0 for rc in rcs):
            raise ScriptError(PRECONDITION, "extracting %s failed (exit %s; a truncated or corrupt stream?): %s"
                              % (args.link, rcs, " | ".join(e[-500:] for e in errs if e)))
        actual = h.hexdigest()
        if actual != digest:
            raise ScriptError(PRECONDITION, "sha256 of the received %s is %s, the catalog recorded %s: the stored "
                                            "backup is damaged; it is not restored" % (args.link, actual, digest),
                              sha256_ok=False)
        ok = True
    except BaseException:
        hostkit.terminate([dec_proc, ext_proc])
        raise
    finally:
        for p in (dec_proc, ext_proc):
            if p is not None and p.stderr:
                p.stderr.close()
        if not ok:
            shutil.rmtree(dest, ignore_errors=True)
    seconds = round(time.monotonic() - started, 3)
    log("received %s: %s in %.1f s, sha256 ok, extracted to %s", args.link, hostkit.human_bytes(size), seconds, dest)
    return {"link": args.link, "dir": dest, "size_bytes": size, "sha256": digest, "sha256_ok": True,
            "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# prepare


def _links(work: str) -> list:
    links = sorted(n for n in os.listdir(work) if _LINK_RE.match(n) and os.path.isdir(os.path.join(work, n)))
    if not links or not links[0].endswith("F"):
        raise ScriptError(PRECONDITION, "work directory %s holds no received full backup (00-<label>F): run "
                                        "receive first" % work)
    return links


def cmd_prepare(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    _owned(datadir, _restore_id(args.restore_id))
    links = _links(work)
    if args.links is not None and args.links != len(links):
        raise ScriptError(PRECONDITION, "%d link(s) received, the set has %d" % (len(links), args.links))
    from storage import prepare_argv
    full = os.path.join(work, links[0])
    name = TOOLS[args.flavor][0]
    started = time.monotonic()
    timings = []
    for i, link in enumerate(links):
        incdir = None if i == 0 else os.path.join(work, link)
        argv = prepare_argv(args.flavor, full, args.use_memory, incdir, more_links=i < len(links) - 1)
        argv[0] = hostkit.which_tool(argv[0])
        t0 = time.monotonic()
        completed = []
        proc = hostkit.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=full)
        try:
            tail = hostkit.relog_lines(proc.stdout, name + ": ", seen=lambda line: completed.append(1)
                                       if "completed OK!" in line else None)
            rc = hostkit.wait_proc(proc)
        except BaseException:
            hostkit.terminate([proc])
            raise
        finally:
            proc.stdout.close()
        if rc != 0 or not completed:
            raise ScriptError(PRECONDITION, "prepare of %s failed (%s exit %d%s): %s"
                              % (link, name, rc, "" if completed else ", no 'completed OK!'", "\n".join(tail)))
        timings.append([link, round(time.monotonic() - t0, 3)])
        if incdir:
            shutil.rmtree(incdir)  # applied: its space is needed for the copy-back
        log("prepared %s (%d of %d) in %.1f s", link, i + 1, len(links), timings[-1][1])
    binlog = hostkit.parse_binlog_info(hostkit.read_meta(full, "binlog_info"))
    info = hostkit.parse_kv(hostkit.read_meta(full, "info") or "")
    if binlog["file"] is None and info.get("binlog_pos"):
        binlog = hostkit.parse_binlog_pos(info.get("binlog_pos"))
    result = {"links": links, "binlog": binlog, "checkpoints": hostkit.parse_checkpoints(hostkit.read_meta(full, "checkpoints")),
              "server_version": info.get("server_version"), "tool_version": info.get("tool_version"),
              "schemas": {schema_name(k): v for k, v in schema_inventory(full).items()},
              "bytes": tree_bytes(full), "seconds": round(time.monotonic() - started, 3), "link_seconds": timings}
    write_json(os.path.join(work, PREPARED), result)
    _phase(datadir, "prepared")
    log("the set is prepared: %d link(s), at binlog %s:%s GTID %s, last_lsn %s", len(links), binlog["file"],
        binlog["pos"], binlog["gtid"], result["checkpoints"].get("last_lsn"))
    return result


# ---------------------------------------------------------------------------------------------
# copy-back and fix-ownership


def cmd_copy_back(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    marker = _owned(datadir, _restore_id(args.restore_id))
    state = read_json(os.path.join(work, STATE)) or {}
    full = os.path.join(work, _links(work)[0])
    if read_json(os.path.join(work, PREPARED)) is None:
        raise ScriptError(PRECONDITION, "the set in %s is not prepared: run prepare first" % work)
    before = marker.get("state_before") or state.get("state_before")
    if before == "data" and not args.overwrite:
        raise ScriptError(USAGE, "%s held a server's data before this restore and --overwrite is not given" % datadir)
    removed = 0
    for name in os.listdir(datadir):
        if name == MARKER:
            continue
        p = os.path.join(datadir, name)
        removed += 1
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)
    hostkit.fsync_dir(datadir)
    _phase(datadir, "cleared")
    if removed:
        log("removed the %d entries the datadir held before (%s)", removed,
            "overwrite" if before == "data" else "an unfinished restore's")
    staging = os.path.join(datadir, STAGING)
    argv = [hostkit.which_tool(TOOLS[args.flavor][0]), "--no-defaults", "--copy-back", "--target-dir=%s" % full,
            "--datadir=%s" % staging, "--parallel=%d" % args.parallel]
    started = time.monotonic()
    proc = hostkit.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=full)
    completed = []
    try:
        tail = hostkit.relog_lines(proc.stdout, "copy-back: ", seen=lambda line: completed.append(1)
                                   if "completed OK!" in line else None, keep=20)
        rc = hostkit.wait_proc(proc)
    except BaseException:
        hostkit.terminate([proc])
        raise
    finally:
        proc.stdout.close()
    if rc != 0 or not completed:
        raise ScriptError(PRECONDITION, "copy-back failed (exit %d): %s" % (rc, "\n".join(tail)))
    dropped = [n for n in os.listdir(staging) if _REPLICATION_FILES.match(n)]
    for n in dropped:
        os.unlink(os.path.join(staging, n))
        log("removed %s: the backed-up server's replication state, never the target's", n)
    _phase(datadir, "copied_back")
    size = tree_bytes(staging)
    seconds = round(time.monotonic() - started, 3)
    log("copied back %s into %s in %.1f s", hostkit.human_bytes(size), staging, seconds)
    return {"staging": staging, "bytes": size, "seconds": seconds, "removed_entries": removed,
            "replication_files_removed": dropped}


def _chown_tree(path: str, uid: int, gid: int) -> int:
    n = 0
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, f) for f in files + dirs]:
            st = os.lstat(name)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.lchown(name, uid, gid)
                n += 1
    return n


def cmd_fix_ownership(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    _owned(datadir, _restore_id(args.restore_id))
    state = read_json(os.path.join(work, STATE)) or {}
    staging = os.path.join(datadir, STAGING)
    if not os.path.isdir(staging):
        raise ScriptError(PRECONDITION, "%s does not exist: run copy-back first" % staging)
    uid, gid = state.get("owner") or [os.stat(datadir).st_uid, os.stat(datadir).st_gid]
    if args.owner:
        uid, gid = _owner(args.owner)
    started = time.monotonic()
    changed = _chown_tree(staging, int(uid), int(gid))
    os.lchown(datadir, int(uid), int(gid))
    # into place: everything but the system schema, then mysql/ (a server cannot start without it)
    entries = sorted(os.listdir(staging), key=lambda n: (n == "mysql", n))
    for name in entries:
        dst = os.path.join(datadir, name)
        if os.path.lexists(dst):
            raise ScriptError(PRECONDITION, "%s exists: the datadir is not empty besides the restore's files" % dst)
        os.rename(os.path.join(staging, name), dst)
    os.rmdir(staging)
    hostkit.fsync_dir(datadir)
    _phase(datadir, "in_place")
    seconds = round(time.monotonic() - started, 3)
    log("ownership %d:%d on %d changed entries; %d entries moved into %s (mysql/ last) in %.1f s", uid, gid, changed,
        len(entries), datadir, seconds)
    return {"owner": [uid, gid], "changed": changed, "entries": len(entries), "seconds": seconds}


def _owner(text: str):
    import grp
    import pwd
    user, _, group = text.partition(":")
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        gid = pw.pw_gid
        if group:
            gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
        return pw.pw_uid, gid
    except (KeyError, ValueError):
        raise ScriptError(USAGE, "--owner %r: no such user or group on %s" % (text, hostkit.hostname())) from None


# ---------------------------------------------------------------------------------------------
# start, verify


def _wait_up(flavor: str, dfile: str, where: str, timeout: float) -> dict:
    from dbhost import parse_batch
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        code, out, err = query(flavor, dfile, "SELECT @@server_id AS server_id, @@version AS version;\n", timeout=30)
        if code == 0:
            rows = parse_batch(out)
            return rows[0] if rows else {}
        last = err
        if not re.search(r"ERROR 20(02|03|13)\b|Can't connect|Lost connection|server has gone away|ERROR 1040",
                         err) and code != 124:
            raise _sql_error(code, err, where)
        if time.monotonic() > deadline:
            raise ScriptError(PRECONDITION, "the restored server %s did not answer within %d s: %s"
                              % (where, timeout, last.strip().splitlines()[-1] if last.strip() else "no answer"))
        time.sleep(0.1)


def cmd_start(args) -> dict:
    datadir = check_datadir(args.datadir)
    _owned(datadir, _restore_id(args.restore_id))
    if not os.path.isdir(os.path.join(datadir, "mysql")):
        raise ScriptError(PRECONDITION, "%s has no mysql/ system schema: the restore is not in place "
                                        "(fix-ownership did not finish)" % datadir)
    if args.server_id < 1:
        raise ScriptError(USAGE, "--server-id must be >= 1")
    creds = hostkit.read_credentials()
    where = "%s:%d" % (args.host, args.port)
    _phase(datadir, "starting", server_id=args.server_id)
    env = {"MYSQL_RESTORE_SERVER_ID": str(args.server_id), "MYSQL_RESTORE_DATADIR": datadir}
    started = time.monotonic()
    run_command("start_command", args.start_command, args.timeout, env)
    with hostkit.defaults_file(creds, host=args.host, port=args.port) as dfile:
        up = _wait_up(args.flavor, dfile, where, args.timeout)
        sid = int(up.get("server_id") or 0)
        notes = []
        if sid != args.server_id:
            log("warning: the server started with server_id %s (its configuration's), not %d: setting it now. Make "
                "the target's start pass --server-id=$MYSQL_RESTORE_SERVER_ID, or a restart brings %s back",
                sid, args.server_id, sid)
            code, _out, err = query(args.flavor, dfile, "SET GLOBAL server_id = %d;\n" % args.server_id)
            if code != 0:
                raise _sql_error(code, err, where)
            notes.append("server_id set at runtime: the target's configuration gives %s" % sid)
        rows = sections(args.flavor, dfile, [("id", "SELECT @@server_id AS server_id"),
                                             ("slaves", "SHOW ALL SLAVES STATUS")], where)
        sid = int((rows.get("id") or [{}])[0].get("server_id") or 0)
        replication = [r.get("Connection_name") or r.get("Master_Host") or "?" for r in rows.get("slaves") or []]
    if sid != args.server_id:
        raise ScriptError(PRECONDITION, "the restored server runs with server_id %s, not %d" % (sid, args.server_id))
    if replication:
        raise ScriptError(PRECONDITION, "the restored server has replication configured (%s) before the restore "
                                        "finished: it is left stopped" % ", ".join(replication))
    _phase(datadir, "started", server_id=sid)
    seconds = round(time.monotonic() - started, 3)
    log("the restored server answers on %s: %s, server_id %d (%.1f s)", where, up.get("version"), sid, seconds)
    return {"server_id": sid, "version": up.get("version"), "seconds": seconds, "notes": notes}


def cmd_verify(args) -> dict:
    datadir = check_datadir(args.datadir)
    _owned(datadir, _restore_id(args.restore_id))
    gtid = args.gtid or ""
    if gtid and not _GTID_RE.match(gtid):
        raise ScriptError(USAGE, "--gtid must be DOMAIN-SERVER-SEQ[,...], got %r" % gtid)
    creds = hostkit.read_credentials()
    where = "%s:%d" % (args.host, args.port)
    with hostkit.defaults_file(creds, host=args.host, port=args.port) as dfile:
        first = sections(args.flavor, dfile, [("pos", "SELECT @@gtid_slave_pos AS gtid_slave_pos")], where)
        restored_pos = (first.get("pos") or [{}])[0].get("gtid_slave_pos") or ""
        if gtid:
            code, _out, err = query(args.flavor, dfile, "SET GLOBAL gtid_slave_pos = %s;\n" % sql_string(gtid))
            if code != 0:
                raise _sql_error(code, err, where)
        skip = ", ".join(sql_string(s) for s in ("mysql", "performance_schema", "sys", "information_schema"))
        rows = sections(args.flavor, dfile, [
            ("vars", "SELECT @@server_id AS server_id, @@version AS version, @@gtid_slave_pos AS gtid_slave_pos, "
                     "@@gtid_binlog_pos AS gtid_binlog_pos, @@read_only AS read_only"),
            ("lsn", "SHOW GLOBAL STATUS LIKE 'Innodb_lsn_current'"),
            ("schemas", "SELECT table_schema AS s, COUNT(*) AS n FROM information_schema.TABLES WHERE table_schema "
                        "NOT IN (%s) GROUP BY table_schema" % skip),
            ("databases", "SHOW DATABASES"),
            ("slaves", "SHOW ALL SLAVES STATUS")], where)
    v = (rows.get("vars") or [{}])[0]
    schemas = {r.get("s"): int(r.get("n") or 0) for r in rows.get("schemas") or []}
    for r in rows.get("databases") or []:
        name = r.get("Database")
        if name and name not in schemas and name not in ("mysql", "performance_schema", "sys", "information_schema"):
            schemas[name] = 0
    lsn = next((int(r.get("Value") or 0) for r in rows.get("lsn") or []), None)
    out = {"server_id": int(v.get("server_id") or 0), "version": v.get("version"),
           "gtid_slave_pos": v.get("gtid_slave_pos") or "", "gtid_binlog_pos": v.get("gtid_binlog_pos") or "",
           "restored_gtid_slave_pos": restored_pos, "read_only": v.get("read_only"), "innodb_lsn": lsn,
           "schemas": schemas, "replication": [r.get("Connection_name") or r.get("Master_Host") or "?"
                                               for r in rows.get("slaves") or []]}
    _phase(datadir, "verified")
    log("restored server %s: server_id %s, %s, GTID position %s (the data's own: %s), %d user schema(s)", where,
        out["server_id"], out["version"], out["gtid_slave_pos"] or "-", restored_pos or "-", len(schemas))
    return out


# ---------------------------------------------------------------------------------------------
# finish, abort, status


def cmd_finish(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    marker = _owned(datadir, _restore_id(args.restore_id))
    if marker.get("phase") != "verified":
        raise ScriptError(PRECONDITION, "restore %s got to %s, not verified: it is not finished"
                          % (args.restore_id, marker.get("phase")))
    summary = {}
    if args.summary:
        try:
            summary = json.loads(args.summary)
        except ValueError:
            raise ScriptError(USAGE, "--summary must be a JSON object") from None
    record = dict(summary, restore_id=args.restore_id, restored_at=now_utc(), instance=marker.get("instance"),
                  labels=marker.get("labels"), server_id=marker.get("server_id"))
    write_json(os.path.join(datadir, RESTORED), record)
    os.unlink(os.path.join(datadir, MARKER))
    hostkit.fsync_dir(datadir)
    if os.path.isdir(work):
        shutil.rmtree(work, ignore_errors=True)
    log("restore %s finished: %s is a restored server (%s)", args.restore_id, datadir, RESTORED)
    return {"finished": True, "record": os.path.join(datadir, RESTORED)}


def cmd_abort(args) -> dict:
    datadir = check_datadir(args.datadir)
    work = check_work(args.work, datadir)
    marker = read_json(os.path.join(datadir, MARKER))
    if marker is None:
        log("no restore marker in %s: the target was not changed by a restore (or the restore finished); "
            "nothing to do", datadir)
        return {"marked": False, "stopped": None}
    if args.restore_id and marker.get("restore_id") != args.restore_id:
        log("the marker is restore %s's, not %s's: left as it is", marker.get("restore_id"), args.restore_id)
        return {"marked": True, "stopped": None, "other_restore": marker.get("restore_id")}
    state = running(datadir, args.host, args.port)
    stopped = False
    if state["running"]:
        log("a server runs on the unfinished restore's datadir (pids %s): stopping it", state["pids"])
        run_command("stop_command", args.stop_command, args.timeout)
        state = wait_stopped(datadir, args.host, args.port, args.timeout)
        if state["running"]:
            raise ScriptError(PRECONDITION, "could not stop the server on %s (pids %s)" % (datadir, state["pids"]))
        stopped = True
    _phase(datadir, marker.get("phase") or "?", aborted_at=now_utc(), abort_reason=(args.reason or "")[:500])
    if os.path.isdir(work):
        shutil.rmtree(work, ignore_errors=True)
    log("restore %s aborted at %s: the target is stopped and marked not restored (%s)", marker.get("restore_id"),
        marker.get("phase"), MARKER)
    return {"marked": True, "stopped": stopped, "phase": marker.get("phase"), "restore_id": marker.get("restore_id")}


def cmd_status(args) -> dict:
    datadir = check_datadir(args.datadir)
    out = datadir_state(datadir)
    out.update(running(datadir, args.host, args.port))
    if out["marker"] is not None:
        out["restore"] = "not_restored"
    elif out["restored"] is not None:
        out["restore"] = "restored"
    else:
        out["restore"] = "none"
    log("%s: %s, server %s", datadir, out["restore"], "running" if out["running"] else "not running")
    return out


# ---------------------------------------------------------------------------------------------
# replicate


def cmd_replicate(args) -> dict:
    from dbhost import parse_batch
    creds = hostkit.read_credentials()
    # the replication login is a second JSON line (read_credentials took the first)
    line = sys.stdin.buffer.readline().decode("utf-8", "replace").strip()
    try:
        repl = json.loads(line) if line else None
    except ValueError:
        raise ScriptError(USAGE, "the replication login on stdin is not valid JSON") from None
    if not isinstance(repl, dict) or not isinstance(repl.get("user"), str) or not repl.get("user"):
        raise ScriptError(USAGE, "the replication login is expected as a second JSON line on stdin {user, password}")
    hostkit.register_secret(str(repl.get("password") or ""))
    if not re.match(r"^[A-Za-z0-9_.:-]{1,255}$", args.primary_host):
        raise ScriptError(USAGE, "--primary-host %r is not a host name" % args.primary_host)
    where = "%s:%d" % (args.host, args.port)
    sql = ("SET SESSION sql_mode = '';\n"
           "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %d, MASTER_USER = %s, MASTER_PASSWORD = %s, "
           "MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 5;\nSTART SLAVE;\n"
           % (sql_string(args.primary_host), args.primary_port, sql_string(repl["user"]),
              sql_string(repl.get("password") or "")))
    with hostkit.defaults_file(creds, host=args.host, port=args.port) as dfile:
        code, _out, err = query("mariadb", dfile, sql)
        if code != 0:
            raise _sql_error(code, err, where)
        deadline = time.monotonic() + args.timeout
        status = {}
        while True:
            code, out, err = query("mariadb", dfile, "SHOW SLAVE STATUS;\n")
            if code != 0:
                raise _sql_error(code, err, where)
            rows = parse_batch(out)
            status = rows[0] if rows else {}
            io_ok = status.get("Slave_IO_Running") == "Yes"
            sql_ok = status.get("Slave_SQL_Running") == "Yes"
            if io_ok and sql_ok:
                break
            error = status.get("Last_IO_Error") or status.get("Last_SQL_Error")
            if (error and status.get("Slave_IO_Running") == "No") or time.monotonic() > deadline:
                raise ScriptError(PRECONDITION, "the restored server %s does not replicate from %s:%d: IO %s, SQL %s: "
                                                "%s" % (where, args.primary_host, args.primary_port,
                                                        status.get("Slave_IO_Running"), status.get("Slave_SQL_Running"),
                                                        error or "not running after %d s" % args.timeout))
            time.sleep(0.2)
    log("the restored server %s replicates from %s:%d (GTID, slave_pos %s), %s s behind", where, args.primary_host,
        args.primary_port, status.get("Gtid_Slave_Pos"), status.get("Seconds_Behind_Master"))
    return {"replicating": True, "primary": "%s:%d" % (args.primary_host, args.primary_port),
            "seconds_behind": status.get("Seconds_Behind_Master"), "gtid_io_pos": status.get("Gtid_IO_Pos")}


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> hostkit.ArgumentParser:
    p = hostkit.ArgumentParser(
        prog=SCRIPT,
        description="Restore-target verbs of the MySQL/MariaDB restore pipeline (and `send`, run on the storage "
                    "host). Logs go to stderr; the last stderr line is always 'RESULT {json}'. Exit codes: 0 ok, "
                    "1 internal, 2 usage, 3 precondition, 4 transient, 5 partial (interrupted, cleaned up). The "
                    "datadir carries the marker %s from `stop` until `finish`: a target so marked is not a "
                    "restored server." % MARKER)
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=hostkit.ArgumentParser)
    sub.required = True

    def where(sp, work=True, server=True):
        sp.add_argument("--datadir", required=True, metavar="DIR", help="the target server's data directory")
        if work:
            sp.add_argument("--work", required=True, metavar="DIR",
                            help="the restore's work directory (the set is received and prepared there)")
        if server:
            sp.add_argument("--host", required=True, metavar="H", help="the target server's host (as it listens)")
            sp.add_argument("--port", required=True, type=int, metavar="N", help="the target server's port")

    def flavor(sp):
        sp.add_argument("--flavor", required=True, choices=FLAVORS,
                        help="mariadb (mariabackup, mbstream) or mysql (xtrabackup, xbstream)")

    def rid(sp):
        sp.add_argument("--restore-id", required=True, metavar="ID", help="the restore's id (in the marker)")

    c = sub.add_parser("check", help="read-only: tools, versions, the datadir's state, a running server, space",
                       description="Change nothing; report the backup tool and server versions, whether mbstream, "
                                   "zstd, gzip are there, the datadir's state (absent, empty, not_restored: only an "
                                   "unfinished restore's files, data: a server's data), whether a server runs on "
                                   "it (a process whose working directory is the datadir, or the port open), the "
                                   "free space of the work directory's and the datadir's filesystems.")
    where(c)
    flavor(c)
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("stop", help="stop the target server, then mark the datadir not restored",
                       description="Run STOP_COMMAND with sh -c, wait until no server runs on the datadir "
                                   "(exit 3 when one still does: nothing is changed), then write the marker "
                                   "%s into the datadir (created when absent) and a fresh work directory." % MARKER)
    where(s)
    rid(s)
    s.add_argument("--stop-command", required=True, metavar="CMD", help="the CMDB's stop_command (run with sh -c)")
    s.add_argument("--instance", default="", metavar="NAME", help="the instance restored (recorded in the marker)")
    s.add_argument("--labels", default="", metavar="L1,L2", help="the backup set's labels (recorded in the marker)")
    s.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds for the stop (default 600)")
    s.set_defaults(func=cmd_stop)

    se = sub.add_parser("send", help="(storage host) stream a stored artifact to stdout",
                        description="Write FILE (a stored backup.xbstream[.zst|.gz]) to stdout with sendfile, for "
                                    "`target.py receive` on the target, the two joined by a pipe on the worker.")
    se.add_argument("--file", required=True, metavar="PATH", help="the artifact's absolute path")
    se.set_defaults(func=cmd_send)

    r = sub.add_parser("receive", help="stdin -> sha256 + decompress + extract into WORK/LINK",
                       description="Read an artifact on stdin, hash it, decompress it (by --compress) and extract "
                                   "it with mbstream/xbstream into WORK/LINK. A sha256 other than --sha256 fails "
                                   "(exit 3) and removes what was extracted. Needs the marker of --restore-id.")
    where(r, server=False)
    flavor(r)
    rid(r)
    r.add_argument("--link", required=True, metavar="NN-LABEL", help="the link's directory name: 00-<full label>, "
                                                                       "01-<first incremental label>, ...")
    r.add_argument("--compress", required=True, choices=COMPRESSIONS, help="how the artifact is compressed")
    r.add_argument("--sha256", required=True, metavar="HEX", help="the artifact's catalogued sha256")
    r.set_defaults(func=cmd_receive)

    pr = sub.add_parser("prepare", help="prepare the full, then apply each incremental in order",
                        description="mariabackup/xtrabackup --prepare WORK/00-*, then --incremental-dir each "
                                    "further link in order (each removed once applied); read the prepared set's "
                                    "binlog position, GTID, LSNs and table definitions per schema.")
    where(pr, server=False)
    flavor(pr)
    rid(pr)
    pr.add_argument("--links", type=int, metavar="N", help="the number of links the set has (checked)")
    pr.add_argument("--use-memory", default="256M", metavar="SIZE", help="buffer pool for --prepare (default 256M)")
    pr.set_defaults(func=cmd_prepare)

    cb = sub.add_parser("copy-back", help="empty the datadir (never the marker), copy the prepared set back",
                        description="Remove what the datadir holds (its old data needs --overwrite), then "
                                    "--copy-back the prepared set into DATADIR/%s and drop the backed-up server's "
                                    "replication state files (master.info, relay-log.info)." % STAGING)
    where(cb, server=False)
    flavor(cb)
    rid(cb)
    cb.add_argument("--overwrite", action="store_true", help="the datadir held a server's data: remove it")
    cb.add_argument("--parallel", type=int, default=2, metavar="N", help="copy threads (default 2)")
    cb.set_defaults(func=cmd_copy_back)

    fo = sub.add_parser("fix-ownership", help="chown the restored files, then move them into the datadir",
                        description="chown -R DATADIR/%s to the datadir's owner (as it was before the restore, or "
                                    "--owner), then rename each entry into DATADIR, the system schema mysql/ last: "
                                    "until then no server can start on the datadir." % STAGING)
    where(fo, server=False)
    rid(fo)
    fo.add_argument("--owner", metavar="USER[:GROUP]", help="another owner than the datadir's")
    fo.set_defaults(func=cmd_fix_ownership)

    st = sub.add_parser("start", help="start the restored server with a server_id (admin login JSON on stdin)",
                        description="Run START_COMMAND with sh -c, MYSQL_RESTORE_SERVER_ID and MYSQL_RESTORE_DATADIR "
                                    "in its environment; wait until the server answers the admin login (one JSON line "
                                    "on stdin); set server_id when its configuration gave another; exit 3 when "
                                    "replication is configured on it.")
    where(st, work=False)
    flavor(st)
    rid(st)
    st.add_argument("--start-command", required=True, metavar="CMD", help="the CMDB's start_command (sh -c)")
    st.add_argument("--server-id", required=True, type=int, metavar="N", help="the restored server's server_id")
    st.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds for the start (default 600)")
    st.set_defaults(func=cmd_start)

    ve = sub.add_parser("verify", help="read the restored server's state; set its GTID position to the backup's",
                        description="Read the restored data's own gtid_slave_pos, set gtid_slave_pos to --gtid (the "
                                    "backup's), then report server_id, version, GTID positions, the InnoDB LSN, the "
                                    "tables each schema opens, replication. Admin login JSON on stdin.")
    where(ve, work=False)
    flavor(ve)
    rid(ve)
    ve.add_argument("--gtid", default="", metavar="GTID", help="the backup's GTID (DOMAIN-SERVER-SEQ[,...])")
    ve.set_defaults(func=cmd_verify)

    fi = sub.add_parser("finish", help="remove the marker: the target is a restored server",
                        description="Only after verify: write DATADIR/%s (what was restored), remove the marker and "
                                    "the work directory." % RESTORED)
    where(fi, server=False)
    rid(fi)
    fi.add_argument("--summary", metavar="JSON", help="what was restored (a JSON object, recorded)")
    fi.set_defaults(func=cmd_finish)

    ab = sub.add_parser("abort", help="a failed restore: stop the server if one runs on the marked datadir",
                        description="When the datadir carries the marker (of --restore-id, when given): stop the "
                                    "server if one runs (STOP_COMMAND), keep the marker, remove the work directory. "
                                    "Without the marker: change nothing.")
    where(ab)
    ab.add_argument("--restore-id", default="", metavar="ID", help="only this restore's marker")
    ab.add_argument("--stop-command", required=True, metavar="CMD", help="the CMDB's stop_command (sh -c)")
    ab.add_argument("--reason", default="", metavar="TEXT", help="why (recorded in the marker)")
    ab.add_argument("--timeout", type=float, default=600, metavar="S", help="seconds for the stop (default 600)")
    ab.set_defaults(func=cmd_abort)

    su = sub.add_parser("status", help="read-only: restored, not restored, or no restore",
                        description="Report whether the datadir is a finished restore (%s), an unfinished one (the "
                                    "marker: how far it got) or neither, and whether a server runs." % RESTORED)
    where(su, work=False)
    su.set_defaults(func=cmd_status)

    rp = sub.add_parser("replicate", help="make the restored server a GTID replica of the primary",
                        description="Two JSON lines on stdin: the admin login, then the replication login {user, "
                                    "password} (a user of the primary with REPLICATION SLAVE). CHANGE MASTER TO the "
                                    "primary with MASTER_USE_GTID=slave_pos, START SLAVE, wait until the IO and SQL "
                                    "threads run.")
    rp.add_argument("--host", required=True, metavar="H", help="the restored server's host")
    rp.add_argument("--port", required=True, type=int, metavar="N", help="the restored server's port")
    rp.add_argument("--primary-host", required=True, metavar="H", help="the primary's host")
    rp.add_argument("--primary-port", required=True, type=int, metavar="N", help="the primary's port")
    rp.add_argument("--timeout", type=float, default=120, metavar="S", help="seconds to wait (default 120)")
    rp.set_defaults(func=cmd_replicate)
    return p


def main(argv=None) -> None:
    hostkit.main(build_parser(), argv, script=SCRIPT)


if __name__ == "__main__":
    main()
