"""Running host scripts over OpenSSH: command lines, script deployment, result lines, pipelines.

No Airflow here: ``hooks.openssh`` turns an Airflow connection into an ``SSHTarget``.
The data path of a backup is two ``ssh`` processes joined by an OS pipe, so no Python
sits between the database host and the storage host.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import signal
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mysqlbackup import exitcodes

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "include" / "scripts"
SCRIPT_FILES = ("hostkit.py", "dbhost.py", "storage.py", "binlog_archive.py", "target.py", "replay.py")
RESULT_PREFIX = "RESULT "
REMOTE_ROOT = ".mysql-backup"  # relative to the remote login's home directory
SCRIPTS_MISSING = 97  # exit code of the guard in front of every remote call: deploy, then run again


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach a host with the OpenSSH client."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts_file: str | None = None  # None: the user's default known_hosts
    strict_host_key_checking: bool = True
    connect_timeout: int = 30
    extra_options: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The ``ssh`` command up to (not including) the remote command."""
        args = ["ssh", "-F", "none", "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8"]
        if self.key_file:
            args += ["-i", self.key_file, "-o", "IdentitiesOnly=yes"]
        if self.strict_host_key_checking:
            args += ["-o", "StrictHostKeyChecking=yes"]
            if self.known_hosts_file:
                args += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        else:
            args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "LogLevel=ERROR"]
        for opt in self.extra_options:
            args += ["-o", opt]
        args.append(f"{self.user}@{self.host}" if self.user else self.host)
        return args

    def command(self, remote_argv: Sequence[str], become: bool = False, require: str | None = None) -> list[str]:
        """``ssh ... -- 'quoted remote command'``: every remote word is shell-quoted.

        ``require``: a remote file that must exist, else the call exits ``SCRIPTS_MISSING`` before
        running anything (one ssh round trip for the check and the call together).
        """
        words = (["sudo", "-n", "--"] if become else []) + [str(w) for w in remote_argv]
        line = " ".join(shlex.quote(w) for w in words)
        if require:
            line = f"test -f {shlex.quote(require)} || exit {SCRIPTS_MISSING}; exec {line}"
        return self.argv() + ["--", line]

    def describe(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class ScriptBundle:
    """The host scripts as one tar, named by the hash of their content."""

    data: bytes
    digest: str

    @classmethod
    def build(cls, directory: Path = SCRIPTS_DIR) -> "ScriptBundle":
        buf = io.BytesIO()
        h = hashlib.sha256()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in SCRIPT_FILES:
                content = (directory / name).read_bytes()
                h.update(name.encode() + b"\0" + content + b"\0")
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(content), 0o755, 0
                tar.addfile(info, io.BytesIO(content))
        return cls(buf.getvalue(), h.hexdigest()[:16])

    @property
    def remote_dir(self) -> str:
        return f"{REMOTE_ROOT}/scripts-{self.digest}"

    def install_command(self) -> list[str]:
        """A remote shell command that unpacks the tar from stdin once (idempotent, atomic)."""
        d = self.remote_dir
        script = (f'set -e; umask 077; d="$HOME/{d}"; '
                  f'if [ -f "$d/.complete" ]; then cat >/dev/null; exit 0; fi; '
                  f'mkdir -p "$HOME/{REMOTE_ROOT}"; t=$(mktemp -d "$HOME/{REMOTE_ROOT}/.tmp.XXXXXX"); '
                  f'tar -x -C "$t"; touch "$t/.complete"; '
                  f'if ! mv -T "$t" "$d" 2>/dev/null; then rm -rf "$t"; fi')
        return ["sh", "-c", script]

    @property
    def marker(self) -> str:
        """The file whose presence says this bundle is installed (relative to the remote home)."""
        return f"{self.remote_dir}/.complete"

    def script_argv(self, python: str, script: str, *args: str) -> list[str]:
        """The remote argv to run one script; ``~`` is expanded by the remote shell via $HOME."""
        return [python, f"{self.remote_dir}/{script}", *args]


def parse_result(stderr: str) -> dict | None:
    """The last ``RESULT {json}`` line of a host script's stderr, or None."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                value = json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


@dataclass
class StepResult:
    """What one remote process did."""

    name: str
    returncode: int
    result: dict | None
    stderr_tail: list[str] = field(default_factory=list)
    stdout: bytes = b""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.result) and self.result.get("status") == "ok"

    @property
    def outcome(self) -> str:
        if self.ok:
            return "ok"
        if self.result is None and self.returncode == 0:
            return "retry"  # exited 0 without a result line: something cut it short
        return exitcodes.outcome(self.returncode)

    def error(self) -> str:
        if self.result and self.result.get("error"):
            return str(self.result["error"])
        if self.returncode == exitcodes.SSH_FAILED:
            tail = " | ".join(self.stderr_tail[-3:])
            return f"ssh failed (exit 255): {tail}"
        tail = "\n".join(self.stderr_tail[-15:])
        return f"exit {self.returncode} without a result line; last output:\n{tail}"


LogFn = Callable[[str], None]


def _pump_stderr(stream, name: str, log: LogFn, keep: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        keep.append(line)
        if len(keep) > 200:
            del keep[:100]
        if not line.startswith(RESULT_PREFIX):
            log(f"[{name}] {line}")
    stream.close()


class Pipeline:
    """Run processes joined stdout->stdin; stderr of each is logged line by line.

    ``stdin_data`` is written to the first process's stdin (credentials JSON), then closed.
    The last process's stdout is captured (small outputs only). ``terminate()`` stops all.
    """

    def __init__(self, steps: Sequence[tuple[str, list[str]]], log: LogFn,
                 stdin_data: bytes | None = None, capture_stdout: bool = True, stdin_path: str | None = None):
        self.steps = list(steps)
        self.log = log
        self.stdin_data = stdin_data
        self.stdin_path = stdin_path  # a file streamed into the first process (never read into memory)
        self.capture_stdout = capture_stdout
        self.procs: list[subprocess.Popen] = []

    def run(self, timeout: float | None = None) -> list[StepResult]:
        tails: list[list[str]] = []
        threads = []
        prev_stdout = open(self.stdin_path, "rb") if self.stdin_path else None
        for i, (name, argv) in enumerate(self.steps):
            last = i == len(self.steps) - 1
            proc = subprocess.Popen(
                argv,
                stdin=prev_stdout if prev_stdout is not None else subprocess.PIPE,
                stdout=subprocess.PIPE if (not last or self.capture_stdout) else subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
            if prev_stdout is not None:
                prev_stdout.close()  # the next process holds it now; lets SIGPIPE reach the writer
            self.procs.append(proc)
            keep: list[str] = []
            tails.append(keep)
            t = threading.Thread(target=_pump_stderr, args=(proc.stderr, name, self.log, keep), daemon=True)
            t.start()
            threads.append(t)
            prev_stdout = proc.stdout if not last else None
        first = self.procs[0]
        if first.stdin is not None:
            try:
                if self.stdin_data:
                    first.stdin.write(self.stdin_data)
                first.stdin.close()
            except BrokenPipeError:
                pass
        out = b""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_proc = self.procs[-1]
        try:
            if last_proc.stdout is not None:
                out = last_proc.stdout.read()
            for proc in self.procs:
                remaining = None if deadline is None else max(0.1, deadline - time.monotonic())
                proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.terminate()
            raise
        for t in threads:
            t.join(timeout=10)
        results = []
        for (name, _), proc, keep in zip(self.steps, self.procs, tails):
            results.append(StepResult(name, proc.returncode, parse_result("\n".join(keep)), keep))
        results[-1].stdout = out
        return results

    def terminate(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
