"""The host-script standard, shared by dbhost.py and storage.py.

Stdlib only, Python 3.7+. Deployed as a directory next to the scripts that import it.

The contract (docs/design.md, "Host scripts: the standard"):

- logs go to stderr, one line each: ``2026-11-24T23:40:00Z dbhost.py backup: message``;
- the very last stderr line is always ``RESULT {json}`` with at least ``status`` (ok | error),
  ``verb``, ``exit_code``, ``host`` and ``error`` when failed, printed even on failure;
- stdout carries data only (a backup stream, list output) or nothing;
- exit codes: see the constants below (mirrored by ``mysqlbackup.exitcodes``);
- secrets arrive on stdin as one JSON line, go to a 0600 option file in a private 0700
  directory removed on exit, and never appear in argv, logs or results.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

# Exit codes. Keep equal to plugins/mysqlbackup/exitcodes.py (a unit test checks it).
OK = 0            # success
INTERNAL = 1      # unexpected error: retry
USAGE = 2         # bad input: fail, no retry
PRECONDITION = 3  # space, missing binary, wrong state: fail, no retry
TRANSIENT = 4     # server unreachable, lock wait: retry
PARTIAL = 5       # work started and was cleaned up (signal): retry

EXIT_NAMES = {OK: "OK", INTERNAL: "INTERNAL", USAGE: "USAGE", PRECONDITION: "PRECONDITION",
              TRANSIENT: "TRANSIENT", PARTIAL: "PARTIAL"}

RESULT_PREFIX = "RESULT "
TAIL_LINES = 50
CHUNK = 1 << 20

# where tools are looked for after $PATH (a non-interactive ssh session has a short PATH)
_EXTRA_BIN_DIRS = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin")

# the package that provides a tool, for the "not found" message
PACKAGE_HINTS = {
    "mariabackup": "mariadb-backup", "mbstream": "mariadb-backup",
    "xtrabackup": "percona-xtrabackup-80", "xbstream": "percona-xtrabackup-80",
    "mariadb": "mariadb-client", "mysql": "mysql-client (or mariadb-client)",
    "zstd": "zstd", "gzip": "gzip",
}


class ScriptError(Exception):
    """A failure with a known exit code; ``details`` go into the RESULT line."""

    def __init__(self, code: int, message: str, **details):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM / SIGHUP so that ``finally`` blocks run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = "signal %d" % self.signum
        return "terminated by %s" % name


_STATE = {"script": os.path.basename(sys.argv[0] or "") or "hostkit", "verb": None,
          "terminating": False}
_SECRETS = set()


def set_context(script: str | None = None, verb: str | None = None) -> None:
    if script:
        _STATE["script"] = script
    if verb is not None:
        _STATE["verb"] = verb


def register_secret(value) -> None:
    """Never print this value: log() and the RESULT line mask it."""
    if isinstance(value, str) and len(value) >= 4:
        _SECRETS.add(value)


def _redact(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr gone (ssh channel closed): keep cleaning up


def utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(fmt: str, *args) -> None:
    """One stderr line per message line: ``<UTC> <script> <verb>: <message>``."""
    msg = (fmt % args) if args else fmt
    msg = _redact(str(msg))
    prefix = "%s %s%s: " % (utc_stamp(), _STATE["script"], (" " + _STATE["verb"]) if _STATE["verb"] else "")
    lines = msg.splitlines() or [""]
    _write_stderr("".join(prefix + line + "\n" for line in lines))


def human_bytes(n) -> str:
    """1536 -> '1.5 KiB' (binary units)."""
    if n is None:
        return "?"
    n = float(n)
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < 1024:
        return "%s%d B" % (sign, int(n))
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024.0
        if n < 1024 or unit == "PiB":
            return "%s%.1f %s" % (sign, n, unit)
    return "%s%.1f PiB" % (sign, n)  # pragma: no cover


def hostname() -> str:
    return socket.gethostname()


# ---------------------------------------------------------------------------------------------
# running a verb


def _on_signal(signum, frame):
    if _STATE["terminating"]:
        return  # already unwinding: let the cleanup finish
    _STATE["terminating"] = True
    raise Terminated(signum)


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread
            pass


def _ignore_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):
            pass


def result_line(status: str, verb: str, exit_code: int, error: str | None = None, **details) -> str:
    res = {"status": status, "verb": verb, "exit_code": exit_code, "host": hostname()}
    if error is not None:
        res["error"] = error
    for k, v in details.items():
        if k not in res:
            res[k] = v
    return _redact(RESULT_PREFIX + json.dumps(res, default=str, sort_keys=False))


def emit_result(status: str, verb: str, exit_code: int, error: str | None = None, **details) -> None:
    _write_stderr(result_line(status, verb, exit_code, error, **details) + "\n")


def execute(verb: str, func, args) -> int:
    """Run ``func(args) -> dict``, print the RESULT line last, return the exit code."""
    set_context(verb=verb)
    install_signal_handlers()
    error = None
    details = {}
    try:
        try:
            out = func(args)
            details = dict(out or {})
            code = OK
        except ScriptError as e:
            code, error, details = e.code, e.message, dict(e.details)
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM/SIGHUP through Terminated
            code = PARTIAL
            error = str(e) if isinstance(e, Terminated) else "interrupted (SIGINT)"
            error += "; cleaned up"
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else INTERNAL
            if code != OK:
                error = "exited with %s" % e.code
        except BaseException as e:
            code = INTERNAL
            error = "internal error: %s: %s" % (type(e).__name__, e)
            log("%s", traceback.format_exc().rstrip())
    except KeyboardInterrupt as e:  # a signal that landed inside an except clause above
        code = PARTIAL
        error = "%s; cleaned up" % e
    _ignore_signals()
    if error is not None:
        log("error (%s): %s", EXIT_NAMES.get(code, code), error)
    emit_result("ok" if code == OK else "error", verb, code, error, **details)
    return code


def run(verb_name: str, func, args) -> None:
    """execute() then exit with its code (never returns)."""
    code = execute(verb_name, func, args)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    sys.exit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are USAGE ScriptErrors (so a RESULT line is still printed)."""

    def error(self, message):
        raise ScriptError(USAGE, "%s: %s" % (self.prog, message))


def _guess_verb(argv, verbs) -> str:
    for a in argv:
        if a in verbs:
            return a
    return "-"


def main(parser: argparse.ArgumentParser, argv=None, script: str | None = None) -> None:
    """Parse the command line (a verb parser with ``func`` defaults) and run the verb."""
    set_context(script=script)
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            verbs.extend(action.choices)
    try:
        args = parser.parse_args(argv)
    except ScriptError as e:
        verb = _guess_verb(argv, verbs)
        set_context(verb=verb if verb != "-" else None)
        log("error (USAGE): %s", e.message)
        emit_result("error", verb, e.code, e.message)
        sys.exit(e.code)
    except SystemExit as e:  # --help
        code = e.code if isinstance(e.code, int) else USAGE
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        emit_result("ok" if code == 0 else "error", "help", code,
                    None if code == 0 else "bad arguments")
        sys.exit(code)
    func = getattr(args, "func", None)
    if func is None:
        emit_result("error", "-", USAGE, "a verb is required: " + ", ".join(verbs))
        sys.exit(USAGE)
    run(args.verb, func, args)


# ---------------------------------------------------------------------------------------------
# credentials and the client option file


def read_credentials(stream=None) -> dict:
    """One JSON line on stdin: {"user", "password", optional "host", "port"}."""
    stream = sys.stdin if stream is None else stream
    try:
        if stream.isatty():
            raise ScriptError(USAGE, "credentials expected as one JSON line on stdin, stdin is a terminal")
    except (AttributeError, ValueError):
        pass
    buf = getattr(stream, "buffer", stream)
    line = buf.readline()
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line:
        raise ScriptError(USAGE, "credentials expected as one JSON line on stdin, got nothing")
    try:
        creds = json.loads(line)
    except ValueError:
        raise ScriptError(USAGE, "credentials on stdin are not valid JSON") from None
    if not isinstance(creds, dict):
        raise ScriptError(USAGE, "credentials on stdin must be a JSON object")
    user = creds.get("user")
    password = creds.get("password", "")
    if not isinstance(user, str) or not user:
        raise ScriptError(USAGE, "credentials: 'user' must be a non-empty string")
    if password is None:
        password = ""
    if not isinstance(password, str):
        raise ScriptError(USAGE, "credentials: 'password' must be a string")
    out = {"user": user, "password": password}
    if creds.get("host") not in (None, ""):
        if not isinstance(creds["host"], str):
            raise ScriptError(USAGE, "credentials: 'host' must be a string")
        out["host"] = creds["host"]
    if creds.get("port") not in (None, ""):
        try:
            out["port"] = int(creds["port"])
        except (TypeError, ValueError):
            raise ScriptError(USAGE, "credentials: 'port' must be an integer") from None
    register_secret(password)
    return out


def option_value(value) -> str:
    """A value for a MySQL/MariaDB option file: double-quoted, backslash escapes."""
    s = str(value)
    s = (s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
         .replace("\r", "\\r").replace("\t", "\\t"))
    return '"' + s + '"'


def client_option_text(creds: dict, socket=None, host=None, port=None) -> str:
    """The ``[client]`` option file text. An explicit socket wins over host/port from creds."""
    lines = ["[client]", "user=" + option_value(creds["user"]),
             "password=" + option_value(creds.get("password") or "")]
    if socket:
        lines.append("socket=" + option_value(socket))
    else:
        host = host or creds.get("host")
        port = port or creds.get("port")
        if host:
            lines.append("host=" + option_value(host))
        if port:
            lines.append("port=%d" % int(port))
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def private_dir(prefix: str = "mysql-backup-", dir: str | None = None):
    """A 0700 temporary directory removed on exit (also when a signal unwinds the stack)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def defaults_file(creds: dict, socket=None, host=None, port=None):
    """Yield the path of a 0600 ``[client]`` option file in a private 0700 temp directory."""
    with private_dir(prefix="mysql-backup-cred-") as d:
        path = os.path.join(d, "client.cnf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, client_option_text(creds, socket, host, port).encode("utf-8"))
        finally:
            os.close(fd)
        yield path


# ---------------------------------------------------------------------------------------------
# tools and child processes


def find_tool(name: str) -> str | None:
    path = shutil.which(name)
    if path:
        return path
    for d in _EXTRA_BIN_DIRS:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def which_tool(*names: str) -> str:
    """The first of ``names`` found, else PRECONDITION naming the host and the package."""
    for n in names:
        p = find_tool(n)
        if p:
            return p
    first = names[0]
    raise ScriptError(PRECONDITION, "%s not found on %s; install %s"
                      % (first, hostname(), PACKAGE_HINTS.get(first, first)), tool=first)


_LIBC = []


def _child_setup():  # pragma: no cover - runs in the forked child
    """Children die with us (PR_SET_PDEATHSIG) even when we are SIGKILLed.

    SIGKILL, not SIGTERM: mariabackup blocks SIGTERM, SIGHUP and SIGPIPE in all its threads."""
    if _LIBC:
        try:
            _LIBC[0].prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except Exception:
            pass


def child_preexec():
    """The preexec_fn for Popen (loads libc in the parent: nothing to import in the child)."""
    if not sys.platform.startswith("linux"):
        return None
    if not _LIBC:
        try:
            import ctypes
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except Exception:
            return None
    return _child_setup


def spawn(argv, **kw) -> subprocess.Popen:
    """Popen with stdin from /dev/null unless given, and death-with-parent on Linux."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("preexec_fn", child_preexec())
    try:
        return subprocess.Popen(argv, **kw)
    except FileNotFoundError:
        raise ScriptError(PRECONDITION, "%s not found on %s" % (argv[0], hostname())) from None


def _signal_live(procs, sig) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except OSError:
                pass


def terminate(procs, grace: float = 5.0) -> None:
    """Stop every live child: SIGTERM, then SIGINT after 0.5 s, then SIGKILL after ``grace``
    seconds; always reap. (mariabackup blocks SIGTERM in all threads but dies on SIGINT.)"""
    procs = [p for p in procs if p is not None]
    _signal_live(procs, signal.SIGTERM)
    deadline = time.monotonic() + 0.5
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal_live(procs, signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
        try:
            p.wait(timeout=10)
        except Exception:
            pass


def relog_lines(stream, prefix: str, tail=None, keep: int = TAIL_LINES, seen=None):
    """Read a child's output line by line, re-log each line, keep the last ``keep``."""
    from collections import deque
    tail = deque(maxlen=keep) if tail is None else tail

    def one(raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line.strip():
            return
        tail.append(line)
        if seen is not None:
            seen(line)
        log("%s%s", prefix, line)

    fd, rest = stream.fileno(), b""
    while True:
        chunk = read_input(fd, 65536)  # not readline(): a signal must not wait for the next line
        if not chunk:
            break
        *lines, rest = (rest + chunk).split(b"\n")
        for raw in lines:
            one(raw)
    if rest:
        one(rest)
    return tail


def read_to_end(stream) -> bytes:
    """``stream.read()`` of a child's pipe, waking like read_input."""
    parts = []
    while True:
        chunk = read_input(stream.fileno(), 65536)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def wait_proc(proc, tick: float = 1.0) -> int:
    """``proc.wait()`` that returns to Python at least every ``tick`` seconds (see read_input)."""
    while True:
        try:
            return proc.wait(timeout=tick)
        except subprocess.TimeoutExpired:
            pass


def tool_version(path: str) -> str:
    """``mariabackup 10.11.19`` / ``xtrabackup 8.0.35-30`` from ``--version`` (stderr or stdout)."""
    name = os.path.basename(path)
    try:
        r = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        text = r.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return name
    return parse_tool_version(name, text)


def parse_tool_version(name: str, text: str) -> str:
    m = re.search(r"(\d+\.\d+\.\d+(?:-\d+)?)", text)
    return "%s %s" % (name, m.group(1)) if m else name


# ---------------------------------------------------------------------------------------------
# backup metadata (xtrabackup_* / mariadb_backup_* files)

_BINLOG_POS_RE = re.compile(
    r"filename\s+'(?P<file>[^']*)'\s*,\s*position\s+'(?P<pos>[^']*)'"
    r"(?:\s*,\s*GTID of the last change\s+'(?P<gtid>[^']*)')?")


def parse_kv(text: str) -> dict:
    """``key = value`` lines (xtrabackup_info, xtrabackup_checkpoints)."""
    out = {}
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        k, v = line.split("=", 1)
        k = k.strip()
        if k:
            out[k] = v.strip()
    return out


def _int_or_none(v):
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def parse_binlog_pos(value: str | None) -> dict:
    """``filename 'binlog.000001', position '859', GTID of the last change '0-1-3'``
    (the value of ``binlog_pos`` in xtrabackup_info, or the whole line) -> {file, pos, gtid}."""
    out = {"file": None, "pos": None, "gtid": None}
    if not value:
        return out
    m = _BINLOG_POS_RE.search(value)
    if not m:
        return out
    out["file"] = m.group("file") or None
    out["pos"] = _int_or_none(m.group("pos"))
    gtid = m.group("gtid")
    out["gtid"] = gtid if gtid else None
    return out


def parse_binlog_info(text: str | None) -> dict:
    """xtrabackup_binlog_info: ``file<TAB>pos[<TAB>gtid]`` -> {file, pos, gtid}."""
    out = {"file": None, "pos": None, "gtid": None}
    if not text:
        return out
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    parts = line.split("\t") if "\t" in line else line.split()
    if parts:
        out["file"] = parts[0].strip() or None
    if len(parts) > 1:
        out["pos"] = _int_or_none(parts[1])
    if len(parts) > 2:
        out["gtid"] = "\t".join(parts[2:]).strip() or None
    return out


def parse_checkpoints(text: str | None) -> dict:
    """xtrabackup_checkpoints -> {backup_type, from_lsn, to_lsn, last_lsn} (LSNs as ints)."""
    kv = parse_kv(text or "")
    return {"backup_type": kv.get("backup_type"),
            "from_lsn": _int_or_none(kv.get("from_lsn")),
            "to_lsn": _int_or_none(kv.get("to_lsn")),
            "last_lsn": _int_or_none(kv.get("last_lsn"))}


def read_meta(directory: str, name: str) -> str | None:
    """The text of ``xtrabackup_<name>`` or ``mariadb_backup_<name>`` in ``directory``."""
    for prefix in ("mariadb_backup_", "xtrabackup_"):
        p = os.path.join(directory, prefix + name)
        if os.path.isfile(p):
            with open(p, "r", encoding="utf-8", errors="replace") as f:
                return f.read()
    return None


# ---------------------------------------------------------------------------------------------
# files


def check_path(path: str, what: str = "--dir") -> str:
    """Absolute, no ``..`` component, not the root: else USAGE. Returns it normalised."""
    if not path or not os.path.isabs(path):
        raise ScriptError(USAGE, "%s must be an absolute path, got %r" % (what, path))
    if ".." in path.split("/"):
        raise ScriptError(USAGE, "%s must not contain '..' components, got %r" % (what, path))
    norm = os.path.normpath(path)
    if norm == "/" or norm.startswith("//"):
        raise ScriptError(USAGE, "%s must not be the root directory" % what)
    return norm


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_input(fd: int, size: int = CHUNK, tick: float = 1.0) -> bytes:
    """``os.read(fd, size)`` that wakes at least every ``tick`` seconds while waiting.

    CPython runs a signal handler between bytecodes: a SIGTERM that lands just before a
    blocking read would otherwise wait for the next byte, which may never come."""
    while True:
        ready, _, _ = select.select([fd], [], [], tick)
        if ready:
            return os.read(fd, size)


def sha256_file(path: str, max_rate: float = 0, from_disk: bool = False) -> tuple:
    """(hexdigest, size) reading in 1 MiB chunks.

    ``max_rate`` (bytes/s, 0: unlimited) paces the read so that a re-check does not saturate the
    host's disks. ``from_disk``: drop the file's cached pages first and as it goes, so the bytes
    really come from the disk (a re-check of what is stored, not of the page cache) and the
    re-read does not evict what the host's other work keeps cached.
    """
    h = hashlib.sha256()
    n = 0
    drop = from_disk and hasattr(os, "posix_fadvise")
    t0 = time.monotonic()
    with open(path, "rb") as f:
        if drop:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
            if drop and not n % (64 * CHUNK):
                os.posix_fadvise(f.fileno(), 0, n, os.POSIX_FADV_DONTNEED)
            if max_rate > 0:
                ahead = n / max_rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))  # at most a second: signals are handled between sleeps
        if drop:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return h.hexdigest(), n


def fs_usage(path: str) -> dict:
    st = os.statvfs(path)
    return {"total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bfree * st.f_frsize,
            "avail_bytes": st.f_bavail * st.f_frsize}


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
