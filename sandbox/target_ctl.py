"""The sandbox restore target's stop_command and start_command (run over the sandbox's sshd by target.py).

  target_ctl.py start --base DIR --port N   start mariadbd on DIR/data (server_id from $MYSQL_RESTORE_SERVER_ID,
                                            --skip-slave-start), detached; return once it answers (exit 1 with
                                            its log's tail when it does not)
  target_ctl.py stop --base DIR             stop the mariadbd of DIR/data (its pid file), wait until it is gone;
                                            nothing running is fine

What systemctl start/stop mariadb is on a real target. The server is the sandbox's own MariaDB argv.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.servers import MariaDB, _pid_alive, _runs, stop_pid  # noqa: E402


def server(base: str, port: int, server_id: int) -> MariaDB:
    return MariaDB("target", base, port, server_id)


def start(base: str, port: int) -> int:
    sid = int(os.environ.get("MYSQL_RESTORE_SERVER_ID") or 0)
    if sid < 1:
        print("MYSQL_RESTORE_SERVER_ID is not set: target.py start passes it", file=sys.stderr)
        return 2
    srv = server(base, port, sid)
    try:
        srv.start(timeout=120, extra=["--skip-slave-start"])
    except RuntimeError as exc:
        print(str(exc)[-3000:], file=sys.stderr)
        return 1
    print(f"mariadbd pid {srv.pid} on 127.0.0.1:{port}, datadir {srv.datadir}, server_id {sid}")
    return 0


def running_pid(base: str) -> int:
    try:
        pid = int(Path(base, "mysqld.pid").read_text().strip())
    except (OSError, ValueError):
        return 0
    return pid if _pid_alive(pid) and _runs(pid, f"{base}/data") else 0


def stop(base: str) -> int:
    pid = running_pid(base)
    if not pid:
        print(f"no server runs on {base}/data")
        return 0
    stop_pid(pid, timeout=60)
    print(f"stopped mariadbd pid {pid}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="target_ctl.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--base", required=True, help="the target's directory (the datadir is BASE/data)")
    ap.add_argument("--port", type=int, default=0, help="with start: the port")
    args = ap.parse_args(argv)
    base = os.path.abspath(args.base)
    return start(base, args.port) if args.action == "start" else stop(base)


if __name__ == "__main__":
    sys.exit(main())
