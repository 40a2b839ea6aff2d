"""python -m sandbox up|down|status|env --dir DIR"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from sandbox.servers import Sandbox


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    ap.add_argument("action", choices=["up", "down", "status", "connections"])
    ap.add_argument("--out", help="with connections: file to write (0600) for `airflow connections import`")
    ap.add_argument("--dir", default=".sandbox", help="state directory (default .sandbox)")
    ap.add_argument("--no-replica", action="store_true", help="start the source only")
    args = ap.parse_args(argv)
    state = Path(args.dir)
    if args.action == "up":
        if (state / "state.json").exists():
            sb = Sandbox.load(state)
            if sb.running():
                print(f"sandbox already running in {state}", file=sys.stderr)
                return 0
            sb.stop()
            for sub in ("source", "replica", "sshd", "storage", "state.json"):
                p = state / sub
                if p.is_dir():
                    import shutil
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        sb = Sandbox.create(state, replica=not args.no_replica)
        (state / "cmdb.yaml").write_text(yaml.safe_dump(sb.cmdb(), sort_keys=False))
        print(f"sandbox up: source port {sb.source.port}, "
              f"replica port {sb.replica.port if sb.replica else '-'}, sshd port {sb.sshd.port}",
              file=sys.stderr)
        return 0
    if not (state / "state.json").exists():
        print(f"no sandbox in {state}", file=sys.stderr)
        return 0 if args.action == "down" else 1
    sb = Sandbox.load(state)
    if args.action == "down":
        sb.stop()
        print("sandbox stopped", file=sys.stderr)
    elif args.action == "status":
        print(json.dumps({"running": sb.running(), "source_port": sb.source.port,
                          "replica_port": sb.replica.port if sb.replica else None,
                          "sshd_port": sb.sshd.port}))
        return 0 if sb.running() else 1
    elif args.action == "connections":
        import os
        conns = {}
        for conn_id, conn in sb.connections().items():
            c = dict(conn)
            if isinstance(c.get("extra"), dict):
                c["extra"] = json.dumps(c["extra"])
            conns[conn_id] = c
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(conns, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
