"""mysql-flashback: undo row changes from the binlog, reviewably.

  mysql-flashback generate [source] [window] [filters] --output FILE   write the inverse SQL
  mysql-flashback apply --file FILE [target]                           apply a reviewed file

Sources: a live server (as a replication client), archived binlog files (--binlog-dir, --binlog),
or an instance's continuous binlog archive (--archive <base_dir>/<instance>/binlog): the files
that cover the window are picked, and a window the archive does not hold whole is refused.

Credentials never go on the command line: give a MySQL option file (--defaults-file, its
[client] section: user, password, host, port, socket) or set MYSQL_PWD in the environment.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from functools import partial
from pathlib import Path
from typing import Callable

from mysqlbackup.binlog.reader import BinlogError
from mysqlbackup.flashback.select import STATEMENT_TYPES, Selection, SelectionError, UserError

EXIT_OK, EXIT_USAGE, EXIT_STOPPED, EXIT_ERROR = 0, 2, 3, 1


def _csv(values: list[str] | None) -> list[str]:
    return [v for item in values or () for v in item.split(",") if v.strip()]


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "s": " ", "\\": "\\", '"': '"', "'": "'"}


def option_value(raw: str) -> str:
    """A value as the MySQL client reads it: quotes removed, backslash escapes undone, and an
    unquoted ``#`` starting a comment."""
    raw = raw.strip()
    if raw[:1] in ('"', "'"):
        quote, out, i = raw[0], [], 1
        while i < len(raw) and raw[i] != quote:
            if raw[i] == "\\" and i + 1 < len(raw):
                out.append(_ESCAPES.get(raw[i + 1], raw[i + 1]))
                i += 2
            else:
                out.append(raw[i])
                i += 1
        return "".join(out)
    value = raw.split("#", 1)[0].strip()
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), value)


def read_defaults_file(path: str | None) -> dict[str, str]:
    """[client] (and [mysql-flashback]) of a MySQL option file: user, password, host, port, socket."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise SelectionError(f"defaults file {path} does not exist")
    out: dict[str, str] = {}
    section = None
    for line in p.read_text().splitlines():
        text = line.strip()
        if not text or text[0] in "#;" or text.startswith("!"):  # comments; !include is not followed
            continue
        if text.startswith("[") and text.endswith("]"):
            section = text[1:-1].strip().lower()
            continue
        if section in ("client", "mysql-flashback") and "=" in text:
            key, raw = text.split("=", 1)
            out[key.strip().replace("-", "_")] = option_value(raw)
    return out


def connection_args(args: argparse.Namespace, prefix: str = "") -> dict:
    """pymysql.connect() keyword arguments from options, the defaults file and MYSQL_PWD."""
    opts = read_defaults_file(getattr(args, f"{prefix}defaults_file"))
    host = getattr(args, f"{prefix}host") or opts.get("host")
    port = getattr(args, f"{prefix}port") or opts.get("port")
    sock = getattr(args, f"{prefix}socket") or opts.get("socket")
    user = getattr(args, f"{prefix}user") or opts.get("user") or os.environ.get("USER") or "root"
    password = opts.get("password", os.environ.get("MYSQL_PWD", ""))
    kw: dict = {"user": user, "password": password, "charset": "utf8mb4", "connect_timeout": 10}
    if sock:
        kw["unix_socket"] = sock
    else:
        kw["host"] = host or "127.0.0.1"
        kw["port"] = int(port or 3306)
    return kw


def source_given(args: argparse.Namespace) -> bool:
    """A live source server was named (--host, --socket or --defaults-file)."""
    return any(getattr(args, k, None) for k in ("host", "socket", "defaults_file"))


def target_args(args: argparse.Namespace) -> dict:
    """Connection of the apply target: the --target-* options; for generate --apply without them,
    the live source given with --host/--socket/--defaults-file."""
    given = any(getattr(args, f"target_{k}", None) for k in ("host", "port", "socket", "user", "defaults_file"))
    if not given and source_given(args):
        return connection_args(args)
    return connection_args(args, "target_")


def _conn_options(p: argparse.ArgumentParser, prefix: str = "", what: str = "the server") -> None:
    dash = prefix.replace("_", "-")
    p.add_argument(f"--{dash}host", help=f"host of {what}")
    p.add_argument(f"--{dash}port", type=int, help=f"port of {what} (default 3306)")
    p.add_argument(f"--{dash}socket", help=f"unix socket of {what} (instead of host/port)")
    p.add_argument(f"--{dash}user", help=f"user on {what}")
    p.add_argument(f"--{dash}defaults-file", metavar="FILE",
                   help=f"MySQL option file for {what}: [client] user, password, host, port, socket "
                        "(the password is read from here or from MYSQL_PWD, never from the command line)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mysql-flashback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the inverse SQL of a window of the binlog",
                       description="Read ROW-format binlog events (from archived files, from an instance's "
                                   "binlog archive, or from a live server as a replication client), invert the "
                                   "selected row changes and write a reviewable SQL file: newest transaction "
                                   "first, statements reversed. --apply runs it too.")
    src = g.add_argument_group("source (archived files, an instance's binlog archive, or a live server)")
    src.add_argument("--archive", metavar="DIR",
                       help="an instance's continuous binlog archive, <base_dir>/<instance>/binlog (on the storage "
                            "host, or a copy): the archived files that cover the window are read, the open file as "
                            "far as its last complete event; a window the archive does not hold whole (before it "
                            "began, across a gap, after its last event) is refused, naming what is missing. "
                            "Without a stop the window runs to the end of the archive. Not with --binlog-dir or "
                            "--binlog")
    src.add_argument("--binlog-dir", metavar="DIR", help="directory of archived binlog files (no server needed)")
    src.add_argument("--binlog", action="append", metavar="FILE", help="one archived binlog file (repeatable)")
    src.add_argument("--identity", metavar="SERVER_ID-UID",
                     help="with --archive: read the files of this server identity (the archive's <server_id>-<uid> "
                          "directory; default: the one that holds the window)")
    _conn_options(src, "", "the live server to read the binlog from (with --archive, --binlog-dir or --binlog: the "
                           "server asked which columns are generated, so they are left out of INSERT and SET)")
    src.add_argument("--server-id", type=int, help="replication server_id to use when reading a live server "
                     "(default: random, above 2^30)")
    win = g.add_argument_group("window (start inclusive, stop exclusive)")
    win.add_argument("--start-datetime", metavar="TIME", help="'YYYY-MM-DD HH:MM:SS', UTC unless an offset is given")
    win.add_argument("--stop-datetime", metavar="TIME")
    win.add_argument("--start-position", metavar="FILE:POS", help="e.g. binlog.000012:4")
    win.add_argument("--stop-position", metavar="FILE:POS")
    win.add_argument("--start-gtid", metavar="GTID", help="e.g. 0-1-4711 (inclusive)")
    win.add_argument("--stop-gtid", metavar="GTID", help="inclusive")
    flt = g.add_argument_group("filters")
    flt.add_argument("--databases", action="append", metavar="DB[,DB]", help="only these databases")
    flt.add_argument("--tables", action="append", metavar="[DB.]TABLE[,...]",
                     help="only these tables; quote names with dots or spaces: `my db`.`t.1`")
    flt.add_argument("--types", action="append", metavar="TYPE[,TYPE]",
                     help=f"statement types to invert: {', '.join(STATEMENT_TYPES)} (default all)")
    out = g.add_argument_group("output")
    out.add_argument("--output", "-o", required=True, metavar="FILE", help="the SQL file to write")
    out.add_argument("--where", choices=("row", "key"), default="row",
                     help="row (default): WHERE on the primary key plus the whole row image, so a row changed "
                          "again after the window matches nothing and apply stops there; key: primary key only "
                          "(faster; a later change to the row is overwritten)")
    out.add_argument("--tmpdir", metavar="DIR", help="where the spool lives while generating (default $TMPDIR)")
    out.add_argument("--progress-seconds", type=float, default=10.0, help="progress line interval (default 10)")
    ap = g.add_argument_group("apply (off unless --apply)")
    ap.add_argument("--apply", action="store_true", help="also apply the generated file to the target")
    ap.add_argument("--force", action="store_true", help="with --apply: see 'apply --force'")
    _conn_options(ap, "target_", "the target to apply to (default: the live source given above; also asked "
                                 "which columns are generated when the source is archived files)")

    a = sub.add_parser("apply", help="apply a reviewed flashback file",
                       description="Run a file written by 'generate' on the target: one transaction at a time, "
                                   "each statement must change exactly one row; at the first mismatch the "
                                   "transaction is rolled back and the run stops, naming the statement.")
    a.add_argument("--file", required=True, metavar="FILE", help="the flashback SQL file")
    a.add_argument("--dry-run", action="store_true",
                   help="run every transaction and roll it back: nothing is applied (the file is checked first, "
                        "so nothing that commits by itself can run)")
    a.add_argument("--force", action="store_true",
                   help="apply even though the target has triggers, cascading foreign keys, non-transactional or "
                        "system-versioned tables on the script's tables (each is named first; review before)")
    _conn_options(a, "target_", "the target to apply to")
    return p


def apply_file(path: str, args: argparse.Namespace, log=None, dry_run: bool = False) -> int:
    """Apply a flashback file to the target named by the --target-* options; the exit code."""
    import pymysql

    from mysqlbackup.flashback.apply import ApplyStopped, apply_script
    log = log or _log
    kw = target_args(args)
    try:
        with open(path, "rb") as f:
            report = apply_script(f, partial(pymysql.connect, **kw), log=log, dry_run=dry_run,
                                  force=getattr(args, "force", False))
    except ApplyStopped as exc:
        log(f"STOPPED: {exc}")
        return EXIT_STOPPED
    edited = f" ({report.edit_note})" if report.edited else ""
    if dry_run:
        log(f"dry run: {report.transactions} transactions, {report.statements} statements ran and were rolled "
            f"back in {report.seconds:.1f} s; nothing was applied (dry run){edited}")
    else:
        log(f"applied {report.transactions} transactions, {report.statements} statements in "
            f"{report.seconds:.1f} s{edited}")
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    return apply_file(args.file, args, dry_run=args.dry_run)


def cmd_generate(args: argparse.Namespace) -> int:
    if args.archive and (args.binlog_dir or args.binlog):
        raise SelectionError("--archive and --binlog-dir/--binlog are mutually exclusive: read either an instance's "
                             "archive or the binlog files given")
    if args.identity and not args.archive:
        raise SelectionError("--identity picks a server identity of an archive: give --archive DIR too")
    sel = Selection.parse(databases=_csv(args.databases), tables=_csv(args.tables),
                          start_time=args.start_datetime, stop_time=args.stop_datetime,
                          start_position=args.start_position, stop_position=args.stop_position,
                          start_gtid=args.start_gtid, stop_gtid=args.stop_gtid, types=_csv(args.types) or None)
    return generate(args, sel, _log)


def generate(args: argparse.Namespace, selection: Selection, log: Callable[[str], None]) -> int:
    """The generate command: the engine's plain functions, chosen by the source the options name."""
    import glob

    from mysqlbackup.flashback.engine import (FlashbackError, generate_from_archive_dir, generate_from_files,
                                              generate_from_live, generated_columns, live_window)
    files = list(args.binlog or [])
    if args.binlog_dir:
        files += [p for p in glob.glob(os.path.join(args.binlog_dir, "*.[0-9][0-9][0-9][0-9][0-9][0-9]"))]
    server = connection_args(args) if source_given(args) else None
    target = target_args(args) if getattr(args, "apply", False) else None
    if getattr(args, "archive", None):
        asked = server or target
        summary = generate_from_archive_dir(args.archive, selection, args.output, args.tmpdir, log,
                                            args.progress_seconds, args.where, identity=args.identity,
                                            generated=generated_columns(asked) if asked else None)
    elif files:
        # a server given beside the files (else the --apply target) is asked which columns are
        # generated: they are left out of INSERT and SET
        asked = server or target
        summary = generate_from_files(files, selection, args.output, args.tmpdir, log, args.progress_seconds,
                                      args.where, generated=generated_columns(asked) if asked else None)
    elif server:
        held = live_window(server, selection)
        if held.reachable and not held.holds:  # (an unreachable server fails below, as it always did)
            raise FlashbackError(f"{held.reason}. Read the instance's binlog archive instead: --archive "
                                 "<base_dir>/<instance>/binlog")
        summary = generate_from_live(server, selection, args.output, args.tmpdir, log, args.progress_seconds,
                                     args.server_id, args.where)
    else:
        raise FlashbackError("no source: give archived binlogs (--archive, --binlog-dir or --binlog) or a live "
                             "server (--host/--port, --socket or --defaults-file)")
    log(f"wrote {summary.output}: {summary.rows} rows in {summary.transactions} transactions "
        f"({summary.seconds:.1f} s, {summary.rows / max(summary.seconds, 1e-9):,.0f} rows/s)")
    for name in sorted(summary.per_table):
        counts = summary.per_table[name]
        if sum(counts.values()):
            log(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if getattr(args, "apply", False):
        return apply_file(summary.output, args, log)
    return 0


def _log(message: str) -> None:
    print(f"mysql-flashback: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import pymysql
    except ImportError:
        _log("error: the Python module pymysql is missing: run scripts/install.sh (it makes .venv), "
             "or pip install pymysql")
        return EXIT_ERROR
    try:
        return cmd_apply(args) if args.command == "apply" else cmd_generate(args)
    except UserError as exc:
        _log(f"error: {exc.for_cli()}")
        return EXIT_USAGE
    except (ValueError, BinlogError) as exc:
        _log(f"error: {exc}")
        return EXIT_USAGE
    except pymysql.err.MySQLError as exc:
        _log(f"error: the server answered {exc}: check the connection options / defaults file")
        return EXIT_ERROR
    except OSError as exc:
        _log(f"error: {exc}")
        return EXIT_ERROR
