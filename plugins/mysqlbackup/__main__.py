"""python -m mysqlbackup COMMAND: small operator commands that need no scheduler.

  pools [--cmdb FILE]        the Airflow pools the CMDB needs, as JSON for `airflow pools import`
  check [--cmdb FILE]        validate the CMDB; exit 1 listing every bad row and field (and warn
                             about instances whose failures would alert nobody)
  backups [--instance NAME]  list catalogued backups, newest first
"""
from __future__ import annotations

import argparse
import json
import sys

from mysqlbackup.cmdb import cmdb_path, load_cmdb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mysqlbackup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["pools", "check", "backups"])
    ap.add_argument("--cmdb", help="CMDB file (default: $MYSQL_BACKUP_CMDB or include/cmdb/instances.yaml)")
    ap.add_argument("--instance", help="with backups: one instance only")
    args = ap.parse_args(argv)
    if args.command == "backups":
        from mysqlbackup.catalog import Catalog
        rows = Catalog().backups(instance=args.instance)
        for r in rows:
            print(f"{r['instance']:<24} {r['label']:<18} {r['status']:<8} {r.get('size_bytes') or 0:>14} "
                  f"{r.get('storage_path') or ''}")
        return 0
    cmdb = load_cmdb(args.cmdb or cmdb_path())
    if args.command == "pools":
        print(json.dumps({name: {"slots": slots, "description": "mysql-backup: concurrent backups to one storage host",
                                 "include_deferred": False}
                          for name, slots in sorted(cmdb.pools().items())}, indent=2))
        return 0
    for err in cmdb.errors:
        print(f"CMDB error: {err}", file=sys.stderr)
    silent = [i.name for i in cmdb.instances
              if not ((i.alerts.email_to and i.alerts.smtp_conn_id) or i.alerts.webhook_url or i.alerts.webhook_conn_id)]
    if silent:
        from mysqlbackup.text import capped
        print(f"CMDB warning: no alert is sent anywhere for {capped(silent)}: give alerts.email_to with "
              "alerts.email.smtp_conn_id, or alerts.webhook", file=sys.stderr)
    print(f"{cmdb.source}: {len(cmdb.instances)} valid instances, {len(cmdb.errors)} errors", file=sys.stderr)
    return 1 if cmdb.errors else 0


if __name__ == "__main__":
    sys.exit(main())
