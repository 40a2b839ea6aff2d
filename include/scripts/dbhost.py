#!/usr/bin/env python3
"""Database-host verbs: facts, reserve, backup.

Runs ON the database host (over SSH). Stdlib only, Python 3.7+. Credentials for the MySQL /
MariaDB account arrive on stdin as one JSON line ({"user", "password", optional "host",
"port"}); they go to a 0600 option file in a private directory, never to argv or logs.
The last stderr line is always ``RESULT {json}``; exit codes are those of hostkit.py.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostkit
from hostkit import INTERNAL, PRECONDITION, TRANSIENT, USAGE, ScriptError, log

SCRIPT = "dbhost.py"

FLAVORS = ("mariadb", "mysql")
COMPRESSIONS = ("none", "gzip", "zstd")
BACKUP_TOOLS = {"mariadb": ("mariabackup", "mbstream"), "mysql": ("xtrabackup", "xbstream")}
FACT_TOOLS = ("mariabackup", "xtrabackup", "mbstream", "xbstream", "zstd", "gzip")

# global variables collected by `facts` (absent ones are reported as null)
FACT_VARIABLES = (
    "version", "version_comment", "hostname", "port", "server_id", "read_only",
    "gtid_strict_mode", "gtid_current_pos", "gtid_binlog_pos", "gtid_slave_pos",
    "gtid_mode", "gtid_executed", "log_bin", "binlog_format", "binlog_row_image",
    "datadir", "socket", "innodb_buffer_pool_size", "character_set_server", "collation_server",
)
INT_VARIABLES = ("port", "server_id", "innodb_buffer_pool_size")
BOOL_VARIABLES = ("read_only", "log_bin", "gtid_strict_mode")

SECTION = "__mbk_section__"

# client errors meaning "the server cannot be reached" (retry) / "the account is refused"
_UNREACHABLE_RE = re.compile(
    r"ERROR 20(02|03|05|06|13|26)\b|Can't connect|Lost connection|Unknown (MySQL|MariaDB) server host"
    r"|server has gone away|Connection refused|timed out", re.IGNORECASE)
_DENIED_RE = re.compile(r"ERROR (1045|1044|1698|1227|1142|1370)\b|Access denied", re.IGNORECASE)
# backup tool output meaning "retry may help"
_TOOL_TRANSIENT_RE = re.compile(
    r"Can't connect|Failed to connect|Lost connection|server has gone away|Lock wait timeout"
    r"|lock wait|Deadlock found|Broken pipe|Connection refused", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# pure helpers (unit tested)


def backup_argv(flavor, defaults_file, target_dir, lsn_dir, parallel, socket=None, host=None,
                port=None, slave_info=False, tool=None, safe_slave_backup=False, incremental_lsn=None):
    """The mariabackup / xtrabackup command line streaming a backup to stdout: a full one, or an
    incremental one of the pages changed since ``incremental_lsn`` (the parent's to_lsn).

    ``--defaults-file`` comes first (the tools require it). With ``port`` but no socket,
    ``--protocol=TCP`` is added so that host "localhost" cannot silently mean the default socket.
    """
    if flavor not in FLAVORS:
        raise ValueError("flavor must be one of %s" % (FLAVORS,))
    name, _ = BACKUP_TOOLS[flavor]
    stream = "mbstream" if flavor == "mariadb" else "xbstream"
    argv = [tool or name, "--defaults-file=%s" % defaults_file, "--backup", "--stream=%s" % stream,
            "--target-dir=%s" % target_dir, "--extra-lsndir=%s" % lsn_dir,
            "--parallel=%d" % int(parallel)]
    if incremental_lsn is not None:
        argv.append("--incremental-lsn=%d" % int(incremental_lsn))
    if slave_info:
        argv.append("--slave-info")
    if safe_slave_backup:
        argv.append("--safe-slave-backup")
    if socket:
        argv.append("--socket=%s" % socket)
    else:
        if host:
            argv.append("--host=%s" % host)
        if port:
            argv += ["--port=%d" % int(port), "--protocol=TCP"]
    return argv


def compress_argv(compress):
    """The compressor filter (stdin -> stdout), or None for ``none``."""
    if compress in (None, "", "none"):
        return None
    if compress == "zstd":
        return ["zstd", "-q", "-c", "-T0"]
    if compress == "gzip":
        return ["gzip", "-c", "-1"]
    raise ValueError("compress must be one of %s" % (COMPRESSIONS,))


def artifact_suffix(compress) -> str:
    return {"zstd": ".zst", "gzip": ".gz"}.get(compress or "none", "")


def unescape_batch(value: str):
    """One field of ``mysql --batch`` output: NULL -> None, \\t \\n \\\\ \\0 unescaped."""
    if value == "NULL":
        return None
    if "\\" not in value:
        return value
    out = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n:
            nxt = value[i + 1]
            out.append({"t": "\t", "n": "\n", "\\": "\\", "0": "\0", "r": "\r", "b": "\b"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_batch(text: str) -> list:
    """A ``--batch`` result set (header line + rows) -> list of dicts."""
    lines = [ln for ln in text.split("\n") if ln != ""]
    if not lines:
        return []
    header = [unescape_batch(h) for h in lines[0].split("\t")]
    rows = []
    for ln in lines[1:]:
        fields = [unescape_batch(f) for f in ln.split("\t")]
        rows.append(dict(zip(header, fields)))
    return rows


def parse_sections(text: str) -> dict:
    """Output of several statements separated by ``SELECT '<name>' AS __mbk_section__``.

    Returns {name: [row dicts]} (an empty result set prints nothing at all in batch mode,
    hence the markers)."""
    sections = {}
    current = None
    buf = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln == SECTION and i + 1 < len(lines):
            if current is not None:
                sections[current] = parse_batch("\n".join(buf))
            current = lines[i + 1]
            buf = []
            i += 2
            continue
        if current is not None:
            buf.append(ln)
        i += 1
    if current is not None:
        sections[current] = parse_batch("\n".join(buf))
    return sections


def _to_bool(v):
    if v is None:
        return None
    return str(v).strip().upper() in ("ON", "1", "YES", "TRUE")


def _to_int(v):
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def normalise_variables(rows: list) -> dict:
    raw = {}
    for r in rows:
        name = (r.get("Variable_name") or "").lower()
        raw[name] = r.get("Value")
    out = {}
    for name in FACT_VARIABLES:
        v = raw.get(name)
        if name in INT_VARIABLES:
            v = _to_int(v)
        elif name in BOOL_VARIABLES:
            v = _to_bool(v)
        out[name] = v
    return out


def replica_from_status(row: dict | None):
    """SHOW SLAVE STATUS (MariaDB / MySQL) or SHOW REPLICA STATUS (MySQL 8.0.22+) -> dict."""
    if not row:
        return None

    def g(*names):
        for n in names:
            if n in row:
                return row[n]
        return None
    errors = [e for e in (g("Last_IO_Error"), g("Last_SQL_Error")) if e]
    using_gtid = g("Using_Gtid")
    if using_gtid is None:
        auto = g("Auto_Position")
        using_gtid = "Auto_Position" if str(auto) == "1" else ("No" if auto is not None else None)
    return {
        "io_running": str(g("Slave_IO_Running", "Replica_IO_Running")) == "Yes",
        "sql_running": str(g("Slave_SQL_Running", "Replica_SQL_Running")) == "Yes",
        "seconds_behind": _to_int(g("Seconds_Behind_Master", "Seconds_Behind_Source")),
        "last_error": "; ".join(errors),
        "source_host": g("Master_Host", "Source_Host"),
        "source_port": _to_int(g("Master_Port", "Source_Port")),
        "using_gtid": using_gtid,
        "gtid_io_pos": g("Gtid_IO_Pos", "Retrieved_Gtid_Set"),
    }


def _version_tuple(version: str):
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


# ---------------------------------------------------------------------------------------------
# facts


def _client_for(flavor: str) -> str:
    if flavor == "mysql":
        return hostkit.which_tool("mysql", "mariadb")
    return hostkit.which_tool("mariadb", "mysql")


def _client_query(client: str, dfile: str, sql: str, tcp: bool) -> tuple:
    argv = [client, "--defaults-file=%s" % dfile, "--batch", "--default-character-set=utf8mb4",
            "--connect-timeout=10"]
    if tcp:
        argv.append("--protocol=TCP")
    argv += ["-e", sql]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
    except subprocess.TimeoutExpired:
        return 124, "", "client timed out after 120 s"
    return (r.returncode, r.stdout.decode("utf-8", "replace"),
            r.stderr.decode("utf-8", "replace").strip())


def _client_error(code: int, err: str, where: str) -> ScriptError:
    msg = err.strip().splitlines()[-1] if err.strip() else "client exited with %d" % code
    if _DENIED_RE.search(err):
        return ScriptError(PRECONDITION, "access denied on %s: %s" % (where, msg),
                           facts={"reachable": True, "error": msg})
    if _UNREACHABLE_RE.search(err) or code == 124:
        return ScriptError(TRANSIENT, "cannot reach the server %s: %s" % (where, msg),
                           facts={"reachable": False, "error": msg})
    return ScriptError(INTERNAL, "query failed on %s: %s" % (where, msg),
                       facts={"reachable": True, "error": msg})


def _describe_target(args) -> str:
    if args.socket:
        return "%s (socket %s)" % (hostkit.hostname(), args.socket)
    return "%s:%s" % (args.host or "localhost", args.port or "default port")


def datadir_bytes(datadir) -> "int | None":
    """Allocated bytes under the datadir (st_blocks), or None when it cannot be read."""
    if not datadir or not os.path.isdir(datadir):
        return None
    total = 0
    stack = [datadir]
    try:
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError as e:
        log("cannot size the datadir %s: %s", datadir, e)
        return None
    return total


def cmd_facts(args) -> dict:
    creds = hostkit.read_credentials()
    client = _client_for(args.flavor)
    where = _describe_target(args)
    tcp = bool(not args.socket and (args.port or creds.get("port")))
    names = ", ".join("'%s'" % n for n in FACT_VARIABLES)
    sql = ("SELECT 'vars' AS {s}; SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names}); "
           "SELECT 'status' AS {s}; SHOW GLOBAL STATUS WHERE Variable_name IN ('Uptime', 'Innodb_lsn_current');"
           ).format(s=SECTION, names=names)
    with hostkit.defaults_file(creds, socket=args.socket, host=args.host, port=args.port) as dfile:
        code, out, err = _client_query(client, dfile, sql, tcp)
        if code != 0:
            raise _client_error(code, err, where)
        sections = parse_sections(out)
        facts = normalise_variables(sections.get("vars", []))
        status = {(r.get("Variable_name") or "").lower(): r.get("Value") for r in sections.get("status", [])}
        facts["uptime"] = _to_int(status.get("uptime"))
        # the redo log's current LSN (MariaDB): an incremental's base LSN above it means the server is
        # not the one the chain was taken from (a rebuilt or another server)
        facts["innodb_lsn"] = _to_int(status.get("innodb_lsn_current"))
        # from the filesystem, not information_schema.TABLES: that query opens every table and can
        # take minutes on an instance with very many tables; the datadir's allocated blocks are also
        # what a physical backup copies (ibdata, undo, logs included)
        facts["data_bytes"] = datadir_bytes(facts.get("datadir"))
        version = facts.get("version") or ""
        detected = "mariadb" if "mariadb" in version.lower() else "mysql"
        facts["flavor_detected"] = detected
        if detected != args.flavor:
            raise ScriptError(PRECONDITION, "flavor mismatch on %s: the CMDB says %s, the server is %s (%s)"
                              % (where, args.flavor, detected, version),
                              facts=dict(facts, reachable=True))
        # replication
        if detected == "mysql" and _version_tuple(version) >= (8, 0, 22):
            statements = ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"]
        else:
            statements = ["SHOW SLAVE STATUS"]
        replica_row = None
        last_err = None
        for st in statements:
            code, out, err = _client_query(client, dfile, st, tcp)
            if code == 0:
                rows = parse_batch(out)
                replica_row = rows[0] if rows else None
                last_err = None
                break
            last_err = (code, err)
        if last_err is not None:
            raise _client_error(last_err[0], last_err[1], where)
        facts["replica"] = replica_from_status(replica_row)
    datadir = facts.get("datadir")
    facts["fs"] = None
    if datadir and os.path.isdir(datadir):
        try:
            facts["fs"] = hostkit.fs_usage(datadir)
        except OSError:
            facts["fs"] = None
    facts["tools"] = {name: hostkit.find_tool(name) for name in FACT_TOOLS}
    facts["reachable"] = True
    log("%s %s at %s: %s, replica: %s, data %s", detected, version, where,
        "read_only" if facts.get("read_only") else "read-write",
        "no" if facts["replica"] is None else "io=%s sql=%s lag=%s" % (
            facts["replica"]["io_running"], facts["replica"]["sql_running"],
            facts["replica"]["seconds_behind"]),
        hostkit.human_bytes(facts["data_bytes"]))
    return {"facts": facts}


# ---------------------------------------------------------------------------------------------
# reserve


def _sanitise(path: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", path.strip("/"))
    return s.strip("_") or "root"


def mount_point(path: str) -> str:
    path = os.path.realpath(path)
    dev = os.stat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            return path
        path = parent
    return path


def default_reserve_path(datadir: str) -> str:
    datadir = os.path.realpath(datadir)
    dev = os.stat(datadir).st_dev
    parent = os.path.dirname(datadir)
    if (parent != datadir and os.path.isdir(parent) and os.stat(parent).st_dev == dev
            and os.access(parent, os.W_OK | os.X_OK)):
        return os.path.join(parent, ".mysql-backup-reserve-" + (os.path.basename(datadir) or "root"))
    # the datadir is (or sits right under) a mount point: put it at the top of its filesystem
    # (when that is the datadir itself, mariabackup ignores unknown top-level files)
    return os.path.join(mount_point(datadir), ".mysql-backup-reserve-" + _sanitise(datadir))


def _allocated(st) -> int:
    return st.st_blocks * 512


def cmd_reserve(args) -> dict:
    pct = args.percent
    if math.isnan(pct) or pct < 0.01 or pct > 10:
        raise ScriptError(USAGE, "--percent must be between 0.01 and 10, got %s" % pct)
    datadir = args.datadir
    if not os.path.isabs(datadir):
        raise ScriptError(USAGE, "--datadir must be an absolute path, got %r" % datadir)
    if not os.path.isdir(datadir):
        raise ScriptError(PRECONDITION, "datadir %s does not exist on %s" % (datadir, hostkit.hostname()))
    data_dev = os.stat(datadir).st_dev
    if args.path:
        path = args.path
        if not os.path.isabs(path):
            raise ScriptError(USAGE, "--path must be an absolute path, got %r" % path)
        if os.path.isdir(path):
            raise ScriptError(USAGE, "--path %s is a directory; give a file path" % path)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise ScriptError(PRECONDITION, "the directory of --path %s does not exist" % path)
        if os.stat(parent).st_dev != data_dev:
            raise ScriptError(PRECONDITION, "reserve path %s is not on the datadir's filesystem (%s)"
                              % (path, datadir))
    else:
        path = default_reserve_path(datadir)
    usage = hostkit.fs_usage(datadir)
    total = usage["total_bytes"]
    target = int(total * pct / 100.0)
    host = hostkit.hostname()
    existed = os.path.exists(path)
    old_size = 0
    if existed:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise ScriptError(PRECONDITION, "reserve path %s on %s exists and is not a regular file" % (path, host))
        if st.st_dev != data_dev:
            raise ScriptError(PRECONDITION, "reserve file %s on %s is not on the datadir's filesystem"
                              % (path, host))
        old_size = st.st_size
        if st.st_size >= target and _allocated(st) >= target:
            log("reserve file %s is %s (target %s): ok", path, hostkit.human_bytes(st.st_size),
                hostkit.human_bytes(target))
            return _reserve_result(path, st.st_size, target, datadir, "ok")
        have = _allocated(st)
    else:
        have = 0
    need = target - have
    avail = usage["avail_bytes"]
    if need > avail:
        raise ScriptError(PRECONDITION,
                          "not enough space on %s for the reserve file %s: %s free, it needs %s more "
                          "(%s%% of %s)" % (host, path, hostkit.human_bytes(avail), hostkit.human_bytes(need),
                                            pct, hostkit.human_bytes(total)),
                          path=path, fs_free_bytes=avail, need_bytes=need, target_bytes=target)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    created = not existed
    try:
        if os.fstat(fd).st_dev != data_dev:
            raise ScriptError(PRECONDITION, "reserve file %s on %s is not on the datadir's filesystem"
                              % (path, host))
        size = max(target, old_size)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if hostkit.is_enospc(e):
                raise ScriptError(PRECONDITION,
                                  "not enough space on %s for the reserve file %s: %s free, it needs %s"
                                  % (host, path, hostkit.human_bytes(hostkit.fs_usage(datadir)["avail_bytes"]),
                                     hostkit.human_bytes(need)),
                                  path=path, need_bytes=need, target_bytes=target) from None
            raise
        os.fsync(fd)
        st = os.fstat(fd)
        if _allocated(st) < target:
            raise ScriptError(PRECONDITION, "reserve file %s on %s is not fully allocated after "
                              "posix_fallocate (%s of %s): the filesystem does not support it"
                              % (path, host, hostkit.human_bytes(_allocated(st)), hostkit.human_bytes(target)))
        created_ok = True
    except BaseException:
        created_ok = False
        raise
    finally:
        if not created_ok:
            try:
                if created:
                    os.unlink(path)
                else:
                    os.ftruncate(fd, old_size)
            except OSError:
                pass
        os.close(fd)
    action = "created" if created else "grown"
    log("reserve file %s %s: %s (%s%% of %s)", path, action, hostkit.human_bytes(size), pct,
        hostkit.human_bytes(total))
    return _reserve_result(path, size, target, datadir, action)


def _reserve_result(path, size, target, datadir, action) -> dict:
    usage = hostkit.fs_usage(datadir)
    return {"path": path, "size_bytes": size, "target_bytes": target,
            "fs_total_bytes": usage["total_bytes"], "fs_free_bytes": usage["avail_bytes"],
            "action": action}


# ---------------------------------------------------------------------------------------------
# backup


def _zstd_threads_ok(zstd: str) -> bool:
    try:
        r = subprocess.run([zstd, "-q", "-c", "-T0"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _restart_sql_thread(flavor: str, dfile: str, tcp: bool) -> bool:
    """The backup died after --safe-slave-backup stopped the replica's SQL thread: start it
    again (mariabackup only does so when it finishes). Never raises."""
    try:
        client = _client_for(flavor)
        statements = ["START SLAVE SQL_THREAD"]
        if flavor == "mysql":
            statements.insert(0, "START REPLICA SQL_THREAD")
        for st in statements:
            code, _out, err = _client_query(client, dfile, st, tcp)
            if code == 0:
                log("restarted the replica SQL thread that --safe-slave-backup had stopped")
                return True
        log("warning: could not restart the replica SQL thread: %s", err)
    except BaseException as e:
        log("warning: could not restart the replica SQL thread: %s", e)
    return False


def classify_tool_failure(tail_text: str) -> int:
    if re.search(r"Access denied", tail_text, re.IGNORECASE):
        return PRECONDITION
    if _TOOL_TRANSIENT_RE.search(tail_text):
        return TRANSIENT
    return INTERNAL


def cmd_backup(args) -> dict:
    if args.parallel < 1:
        raise ScriptError(USAGE, "--parallel must be at least 1")
    if args.incremental_lsn is not None and args.incremental_lsn < 0:
        raise ScriptError(USAGE, "--incremental-lsn must be >= 0")
    if args.socket and (args.host or args.port):
        raise ScriptError(USAGE, "give either --socket or --host/--port, not both")
    if args.tmpdir and not os.path.isdir(args.tmpdir):
        raise ScriptError(USAGE, "--tmpdir %s is not a directory" % args.tmpdir)
    try:
        if os.isatty(1):
            raise ScriptError(USAGE, "stdout is a terminal: pipe the backup stream somewhere")
    except OSError:
        pass
    creds = hostkit.read_credentials()
    name = BACKUP_TOOLS[args.flavor][0]
    tool = hostkit.which_tool(name)
    comp = compress_argv(args.compress)
    if comp:
        comp[0] = hostkit.which_tool(comp[0])
        if args.compress == "zstd" and not _zstd_threads_ok(comp[0]):
            comp = [a for a in comp if a != "-T0"]
    version = hostkit.tool_version(tool)
    socket_path = os.path.abspath(args.socket) if args.socket else None  # the tool cds to the datadir
    started = time.monotonic()
    tool_proc = comp_proc = None
    with hostkit.private_dir(prefix="mysql-backup-work-", dir=args.tmpdir) as work, \
            hostkit.defaults_file(creds, socket=socket_path, host=args.host, port=args.port) as dfile:
        target = os.path.join(work, "target")
        lsn = os.path.join(work, "lsn")
        os.mkdir(target, 0o700)
        os.mkdir(lsn, 0o700)
        argv = backup_argv(args.flavor, dfile, target, lsn, args.parallel, socket=socket_path,
                           host=args.host, port=args.port, slave_info=args.slave_info, tool=tool,
                           safe_slave_backup=args.safe_slave_backup, incremental_lsn=args.incremental_lsn)
        log("starting %s (%s), %s, stream %s, compress %s, parallel %d, %s", name, version,
            "incremental from LSN %d" % args.incremental_lsn if args.incremental_lsn is not None else "full",
            "mbstream" if args.flavor == "mariadb" else "xbstream", args.compress, args.parallel,
            "socket %s" % socket_path if socket_path else "%s:%s" % (args.host or "localhost", args.port or "default"))
        state = {"completed": False, "sql_stopped": False, "sql_started": False}
        comp_err_path = os.path.join(work, "compressor.err")
        tcp = bool(not socket_path and (args.port or creds.get("port")))

        def seen(line):
            if "completed OK!" in line:
                state["completed"] = True
            elif "Slave open temp tables" in line or "Slave is safe to backup" in line:
                state["sql_stopped"] = True  # --safe-slave-backup stopped the SQL thread
            elif "Starting slave SQL thread" in line:
                state["sql_started"] = True
        try:
            tool_proc = hostkit.spawn(argv, stdout=subprocess.PIPE if comp else 1,
                                      stderr=subprocess.PIPE, cwd=work)
            if comp:
                with open(comp_err_path, "wb") as comp_err:
                    comp_proc = hostkit.spawn(comp, stdin=tool_proc.stdout, stdout=1, stderr=comp_err)
                tool_proc.stdout.close()  # the compressor owns the pipe now
            tail = hostkit.relog_lines(tool_proc.stderr, name + ": ", seen=seen)
            tool_rc = hostkit.wait_proc(tool_proc)
            comp_rc = hostkit.wait_proc(comp_proc) if comp_proc else 0
        except BaseException:
            hostkit.terminate([tool_proc, comp_proc])
            if state["sql_stopped"] and not state["sql_started"]:
                _restart_sql_thread(args.flavor, dfile, tcp)
            raise
        finally:
            if tool_proc is not None and tool_proc.stderr:
                tool_proc.stderr.close()
        seconds = round(time.monotonic() - started, 3)
        comp_err_text = ""
        if os.path.exists(comp_err_path):
            with open(comp_err_path, "r", errors="replace") as f:
                comp_err_text = f.read().strip()
        if tool_rc != 0 or comp_rc != 0 or not state["completed"]:
            restarted = None
            if state["sql_stopped"] and not state["sql_started"]:
                restarted = _restart_sql_thread(args.flavor, dfile, tcp)
            tail_text = "\n".join(tail)
            what = []
            if tool_rc != 0:
                what.append("%s exited with %d" % (name, tool_rc))
            elif not state["completed"]:
                what.append("%s did not report 'completed OK!'" % name)
            if comp_rc != 0:
                what.append("%s exited with %d%s" % (os.path.basename(comp[0]), comp_rc,
                                                      (": " + comp_err_text) if comp_err_text else ""))
            code = classify_tool_failure(tail_text + "\n" + comp_err_text)
            if comp_rc < 0 or tool_rc < 0:  # killed by a signal (SIGPIPE: the receiver went away)
                code = TRANSIENT if code == INTERNAL else code
            raise ScriptError(code, "backup failed on %s: %s; last lines:\n%s"
                              % (hostkit.hostname(), ", ".join(what), tail_text),
                              tool=version, seconds=seconds, tool_exit=tool_rc, compressor_exit=comp_rc,
                              sql_thread_restarted=restarted)
        checkpoints = hostkit.parse_checkpoints(hostkit.read_meta(lsn, "checkpoints"))
        info = hostkit.parse_kv(hostkit.read_meta(lsn, "info") or "")
        binlog = hostkit.parse_binlog_pos(info.get("binlog_pos"))
    log("backup completed in %.1f s: to_lsn %s, binlog %s:%s, gtid %s", seconds, checkpoints.get("to_lsn"),
        binlog["file"], binlog["pos"], binlog["gtid"])
    return {"tool": version, "checkpoints": checkpoints, "binlog": binlog,
            "server_version": info.get("server_version"), "seconds": seconds,
            "compress": args.compress, "suffix": artifact_suffix(args.compress)}


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> hostkit.ArgumentParser:
    p = hostkit.ArgumentParser(
        prog=SCRIPT,
        description="Database-host verbs of the MySQL/MariaDB backup pipeline. Logs go to stderr; "
                    "the last stderr line is always 'RESULT {json}'. Exit codes: 0 ok, 1 internal, "
                    "2 usage, 3 precondition, 4 transient, 5 partial (interrupted, cleaned up).")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=hostkit.ArgumentParser)
    sub.required = True

    def conn_args(sp):
        sp.add_argument("--flavor", required=True, choices=FLAVORS,
                        help="server flavor: mariadb (mariabackup, mbstream) or mysql (xtrabackup, xbstream)")
        sp.add_argument("--socket", metavar="PATH", help="unix socket of the server (wins over host/port)")
        sp.add_argument("--host", metavar="H", help="server host (TCP)")
        sp.add_argument("--port", metavar="N", type=int, help="server port (TCP; forces --protocol=TCP)")

    f = sub.add_parser("facts", help="collect server facts (credentials JSON on stdin)",
                       description="Connect with the mariadb/mysql client and print, in the RESULT line, "
                                   "the server's facts: version, gtid, replication status, datadir and its "
                                   "filesystem, data size, available backup tools. Credentials: one JSON line "
                                   "on stdin {\"user\", \"password\", optional \"host\", \"port\"}. "
                                   "Unreachable server: exit 4 with facts.reachable=false.")
    conn_args(f)
    f.set_defaults(func=cmd_facts)

    r = sub.add_parser("reserve", help="ensure a preallocated reserve file beside the datadir",
                       description="Ensure a reserve file of PERCENT %% of the datadir's filesystem exists "
                                   "and is fully allocated (posix_fallocate); grow it when smaller, leave it "
                                   "when big enough. Fails (exit 3) naming host, path, free space and need.")
    r.add_argument("--datadir", required=True, metavar="PATH", help="the server's data directory")
    r.add_argument("--percent", required=True, type=float, metavar="P",
                   help="size of the reserve as a percentage (0.01 to 10) of the filesystem's total size")
    r.add_argument("--path", metavar="FILE",
                   help="reserve file (default: <datadir parent>/.mysql-backup-reserve-<datadir name>, or at "
                        "the filesystem's mount point when the parent is another filesystem); must be on "
                        "the datadir's filesystem")
    r.set_defaults(func=cmd_reserve)

    b = sub.add_parser("backup", help="stream a full or incremental physical backup to stdout (credentials JSON "
                                      "on stdin)",
                       description="Run mariabackup (mariadb) or xtrabackup (mysql) with --stream, optionally "
                                   "piped through a compressor, straight to stdout (no Python in the data path). "
                                   "The tool's log is re-logged to stderr. Credentials: one JSON line on stdin.")
    conn_args(b)
    b.add_argument("--parallel", type=int, default=1, metavar="N", help="copy threads (default 1)")
    b.add_argument("--compress", choices=COMPRESSIONS, default="none",
                   help="compress the stream on this host: none, gzip (-1) or zstd (-T0) (default none)")
    b.add_argument("--slave-info", action="store_true",
                   help="backing up a replica: record the source's position in xtrabackup_slave_info")
    b.add_argument("--safe-slave-backup", action="store_true",
                   help="stop the replica's SQL thread during the backup (mariabackup --safe-slave-backup). "
                        "Only needed for replicas applying statement-based temporary tables; in 10.11 it stops "
                        "the thread for the WHOLE backup, so lag grows. The account needs REPLICATION SLAVE "
                        "ADMIN (MariaDB) / REPLICATION_SLAVE_ADMIN (MySQL). If the backup dies, the thread is "
                        "restarted by this script")
    b.add_argument("--incremental-lsn", type=int, metavar="LSN",
                   help="an incremental backup: only the pages changed since LSN (the parent backup's to_lsn); "
                        "default: a full backup")
    b.add_argument("--tmpdir", metavar="DIR",
                   help="where the private work directory (target dir, LSN files) is created (default $TMPDIR)")
    b.set_defaults(func=cmd_backup)
    return p


def main(argv=None) -> None:
    hostkit.main(build_parser(), argv, script=SCRIPT)


if __name__ == "__main__":
    main()
