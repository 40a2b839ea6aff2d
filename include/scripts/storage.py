#!/usr/bin/env python3
"""Storage-host verbs: space, receive, verify, check, commit, list, discard, expire.

Runs ON the storage host (over SSH). Stdlib only, Python 3.7+. Layout:
``<base>/<instance>/<label>/backup.xbstream[.gz|.zst]``, ``SHA256SUMS`` and, written last by
``commit``, ``manifest.json``: a label directory without a manifest is not a backup.
The last stderr line is always ``RESULT {json}``; exit codes are those of hostkit.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hostkit
from hostkit import PRECONDITION, USAGE, ScriptError, log

SCRIPT = "storage.py"
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
PARTIAL_SUFFIX = ".partial"
FLAVORS = ("mariadb", "mysql")
EXTRACTORS = {"mariadb": "mbstream", "mysql": "xbstream"}
PREPARERS = {"mariadb": "mariabackup", "mysql": "xtrabackup"}


def _check_name(name: str, what: str = "--artifact") -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ScriptError(USAGE, "%s must be a plain file name, got %r" % (what, name))
    return name


def decompress_argv(artifact: str):
    """The decompressor for an artifact name (by suffix), or None when it is a plain stream."""
    if artifact.endswith(".zst"):
        return ["zstd", "-d", "-q", "-c"]
    if artifact.endswith(".gz"):
        return ["gzip", "-d", "-c"]
    return None


def extract_argv(flavor: str, directory: str) -> list:
    return [EXTRACTORS[flavor], "-x", "-C", directory]


def prepare_argv(flavor: str, directory: str, use_memory: str, incremental_dir: str | None = None,
                 more_links: bool = False) -> list:
    """--prepare of a full backup in DIRECTORY, or of an incremental in INCREMENTAL_DIR applied on the
    prepared DIRECTORY. xtrabackup must keep the redo log unapplied (--apply-log-only) while more
    links of the chain follow; mariabackup needs no such flag."""
    argv = [PREPARERS[flavor], "--no-defaults", "--prepare", "--target-dir=%s" % directory,
            "--use-memory=%s" % use_memory]
    if incremental_dir is not None:
        argv.append("--incremental-dir=%s" % incremental_dir)
    if more_links and flavor == "mysql":
        argv.append("--apply-log-only")
    return argv


def parse_base(text: str) -> tuple:
    """``LABELDIR:ARTIFACT:SHA256`` of one earlier link of a chain (--base)."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3:
        raise ScriptError(USAGE, "--base must be LABELDIR:ARTIFACT:SHA256, got %r" % text)
    labeldir = hostkit.check_path(parts[0], "--base")
    digest = parts[2].strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ScriptError(USAGE, "--base %r: the sha256 must be 64 hex digits" % text)
    return labeldir, _check_name(parts[1], "--base artifact"), digest


def sha256sums_line(digest: str, rel: str) -> str:
    """One line in ``sha256sum`` format (names with a backslash or newline are escaped)."""
    if "\\" in rel or "\n" in rel:
        return "\\%s  %s\n" % (digest, rel.replace("\\", "\\\\").replace("\n", "\\n"))
    return "%s  %s\n" % (digest, rel)


# ---------------------------------------------------------------------------------------------
# space


def cmd_space(args) -> dict:
    base = hostkit.check_path(args.dir)
    if args.need < 0:
        raise ScriptError(USAGE, "--need must be >= 0")
    try:
        os.makedirs(base, mode=0o750, exist_ok=True)
    except OSError as e:
        raise ScriptError(PRECONDITION, "storage host %s: cannot create %s: %s"
                          % (hostkit.hostname(), base, e.strerror or e)) from None
    _probe_writable(base)
    usage = hostkit.fs_usage(base)
    free = usage["avail_bytes"]
    fits = free >= args.need
    res = {"dir": base, "free_bytes": free, "total_bytes": usage["total_bytes"],
           "need_bytes": args.need, "fits": fits}
    if not fits:
        raise ScriptError(PRECONDITION, "storage host %s: %s has %s free, the backup needs about %s"
                          % (hostkit.hostname(), base, hostkit.human_bytes(free), hostkit.human_bytes(args.need)),
                          **res)
    log("%s: %s free of %s, need about %s: fits", base, hostkit.human_bytes(free),
        hostkit.human_bytes(usage["total_bytes"]), hostkit.human_bytes(args.need))
    return res


def _probe_writable(base: str) -> None:
    """Write, fsync and remove a small file in BASE: a read-only mount or a directory this user
    cannot write is found here, before any byte of a backup is streamed."""
    fd, path = -1, ""
    try:
        fd, path = tempfile.mkstemp(prefix=".mysql-backup-probe-", dir=base)
        os.write(fd, b"probe\n")
        os.fsync(fd)
    except OSError as e:
        raise ScriptError(PRECONDITION, "storage host %s: cannot write in %s: %s: check the storage location's "
                          "mount (read-only?), its owner and permissions, and its free inodes"
                          % (hostkit.hostname(), base, e.strerror or e)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# receive


def cmd_receive(args) -> dict:
    labeldir = hostkit.check_path(args.dir)
    name = _check_name(args.artifact)
    if os.path.exists(os.path.join(labeldir, MANIFEST)):
        raise ScriptError(PRECONDITION, "%s already has a %s: a committed backup is never overwritten"
                          % (labeldir, MANIFEST))
    try:
        if os.isatty(0):
            raise ScriptError(USAGE, "stdin is a terminal: pipe the backup stream in")
    except OSError:
        pass
    created_dir = not os.path.isdir(labeldir)
    os.makedirs(labeldir, mode=0o750, exist_ok=True)
    final = os.path.join(labeldir, name)
    partial = final + PARTIAL_SUFFIX
    started = time.monotonic()
    h = hashlib.sha256()
    size = 0
    done = False
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        try:
            while True:
                chunk = hostkit.read_input(0)
                if not chunk:
                    break
                h.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            os.fsync(fd)
        except OSError as e:
            if hostkit.is_enospc(e):
                raise ScriptError(PRECONDITION, "storage host %s: no space left writing %s after %s"
                                  % (hostkit.hostname(), partial, hostkit.human_bytes(size))) from None
            raise
        finally:
            os.close(fd)
        if size == 0:
            raise ScriptError(PRECONDITION, "received an empty stream for %s" % final)
        os.rename(partial, final)
        hostkit.fsync_dir(labeldir)
        done = True
    finally:
        if not done:
            try:
                os.unlink(partial)
            except OSError:
                pass
            if created_dir:
                try:
                    os.rmdir(labeldir)  # only when empty: what we created, nothing else
                except OSError:
                    pass
    seconds = round(time.monotonic() - started, 3)
    digest = h.hexdigest()
    log("received %s: %s in %.1f s, sha256 %s", final, hostkit.human_bytes(size), seconds, digest)
    return {"path": final, "size_bytes": size, "sha256": digest, "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# verify


def _run_extract(flavor: str, artifact: str, scratch: str) -> None:
    dec = decompress_argv(artifact)
    ext = extract_argv(flavor, scratch)
    ext[0] = hostkit.which_tool(ext[0])
    if dec:
        dec[0] = hostkit.which_tool(dec[0])
    dec_proc = ext_proc = None
    src = open(artifact, "rb")
    try:
        if dec:
            dec_proc = hostkit.spawn(dec, stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ext_proc = hostkit.spawn(ext, stdin=dec_proc.stdout, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
            dec_proc.stdout.close()
        else:
            ext_proc = hostkit.spawn(ext, stdin=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        src.close()
        # both stderr outputs are small; read the extractor's, then the decompressor's
        ext_err = hostkit.read_to_end(ext_proc.stderr).decode("utf-8", "replace").strip()
        ext_rc = hostkit.wait_proc(ext_proc)
        dec_err = ""
        dec_rc = 0
        if dec_proc:
            dec_err = hostkit.read_to_end(dec_proc.stderr).decode("utf-8", "replace").strip()
            dec_rc = hostkit.wait_proc(dec_proc)
    except BaseException:
        hostkit.terminate([dec_proc, ext_proc])
        raise
    finally:
        src.close()
        for p in (dec_proc, ext_proc):
            if p is not None and p.stderr:
                p.stderr.close()
    for text in (dec_err, ext_err):
        for line in text.splitlines():
            log("extract: %s", line)
    if ext_rc != 0 or dec_rc != 0:
        parts = []
        if dec_proc and dec_rc != 0:
            parts.append("%s exited with %d: %s" % (os.path.basename(dec[0]), dec_rc, dec_err[-2000:]))
        if ext_rc != 0:
            parts.append("%s exited with %d: %s" % (os.path.basename(ext[0]), ext_rc, ext_err[-2000:]))
        raise ScriptError(PRECONDITION, "extract failed (truncated or corrupt stream?): " + "; ".join(parts))


def _write_checksums(scratch: str, labeldir: str) -> tuple:
    """SHA256SUMS of every extracted file (relative paths, sorted). Returns (path, files, bytes)."""
    entries = []
    total = 0
    for root, dirs, files in os.walk(scratch):
        dirs.sort()
        for fn in files:
            p = os.path.join(root, fn)
            if not os.path.isfile(p) or os.path.islink(p):
                continue
            entries.append(os.path.relpath(p, scratch))
    entries.sort()
    out = os.path.join(labeldir, CHECKSUMS)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for rel in entries:
            digest, n = hostkit.sha256_file(os.path.join(scratch, rel))
            total += n
            f.write(sha256sums_line(digest, rel))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, out)
    return out, len(entries), total


def _read_metadata(scratch: str) -> dict:
    info = hostkit.parse_kv(hostkit.read_meta(scratch, "info") or "")
    binlog_text = hostkit.read_meta(scratch, "binlog_info")
    binlog = hostkit.parse_binlog_info(binlog_text)
    if binlog["file"] is None and info.get("binlog_pos"):
        binlog = hostkit.parse_binlog_pos(info.get("binlog_pos"))
    elif binlog["gtid"] is None and info.get("binlog_pos"):
        binlog["gtid"] = hostkit.parse_binlog_pos(info.get("binlog_pos"))["gtid"]
    checkpoints_text = hostkit.read_meta(scratch, "checkpoints")
    checkpoints = hostkit.parse_checkpoints(checkpoints_text)
    slave_info = hostkit.read_meta(scratch, "slave_info")
    return {"binlog": binlog, "checkpoints": checkpoints, "info": info,
            "slave_info": slave_info.strip() if slave_info else None,
            "has_checkpoints": checkpoints_text is not None}


def _run_prepare(flavor: str, scratch: str, use_memory: str, incremental_dir: str | None = None,
                 more_links: bool = False) -> None:
    argv = prepare_argv(flavor, scratch, use_memory, incremental_dir, more_links)
    argv[0] = hostkit.which_tool(argv[0])
    name = PREPARERS[flavor]
    completed = []
    proc = hostkit.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=scratch)
    try:
        tail = hostkit.relog_lines(proc.stdout, name + ": ",
                                   seen=lambda line: completed.append(True) if "completed OK!" in line else None)
        rc = hostkit.wait_proc(proc)
    except BaseException:
        hostkit.terminate([proc])
        raise
    finally:
        proc.stdout.close()
    if rc != 0 or not completed:
        raise ScriptError(PRECONDITION, "prepare failed (%s exit %d%s): %s"
                          % (name, rc, "" if completed else ", no 'completed OK!'", "\n".join(tail)))


def _check_sha256(artifact: str, expected: str, what: str) -> int:
    if not os.path.isfile(artifact):
        raise ScriptError(PRECONDITION, "%s %s not found on %s" % (what, artifact, hostkit.hostname()))
    actual, size = hostkit.sha256_file(artifact)
    if actual != expected:
        raise ScriptError(PRECONDITION, "sha256 mismatch for %s %s: expected %s, actual %s"
                          % (what, artifact, expected, actual), sha256_ok=False, expected=expected, actual=actual)
    log("sha256 of %s %s (%s) ok", what, artifact, hostkit.human_bytes(size))
    return size


def cmd_verify(args) -> dict:
    """Prove a backup restores: sha256, extract, checksums, metadata, prepare. For an incremental,
    the chain is prepared as a restore would: the full, then each earlier link, then this one."""
    labeldir = hostkit.check_path(args.dir)
    name = _check_name(args.artifact)
    scratch = hostkit.check_path(args.scratch, "--scratch")
    bases = [parse_base(b) for b in args.base or []]
    expected = (args.sha256 or "").strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ScriptError(USAGE, "--sha256 must be 64 hex digits")
    artifact = os.path.join(labeldir, name)
    incdir = scratch + "-incremental"
    for path in (scratch, incdir):
        if os.path.realpath(path) == os.path.realpath(labeldir) or \
                os.path.realpath(labeldir).startswith(os.path.realpath(path) + "/"):
            raise ScriptError(USAGE, "--scratch must not be the label directory or contain it")
        if os.path.exists(path):
            if not os.path.isdir(path) or os.listdir(path):
                raise ScriptError(PRECONDITION, "scratch directory %s exists and is not empty" % path)
    started = time.monotonic()
    size = _check_sha256(artifact, expected, "artifact")
    # the earlier links are re-read too: a chain is only as good as each of its links
    for base_dir, base_name, base_sha in bases:
        _check_sha256(os.path.join(base_dir, base_name), base_sha, "chain link")
    kept = False
    extract_seconds = prepare_seconds = 0.0
    try:
        os.makedirs(scratch, mode=0o700, exist_ok=True)
        links = [os.path.join(d, n) for d, n, _ in bases] + [artifact]
        for i, link in enumerate(links):
            last = i == len(links) - 1
            target = scratch if i == 0 else incdir
            if i > 0:
                os.makedirs(incdir, mode=0o700, exist_ok=True)
            t0 = time.monotonic()
            _run_extract(args.flavor, link, target)
            extract_seconds += time.monotonic() - t0
            if last:
                checksums_file, files, extracted_bytes = _write_checksums(target, labeldir)
                log("extracted %d files (%s) of %s; checksums in %s", files, hostkit.human_bytes(extracted_bytes),
                    os.path.basename(labeldir), checksums_file)
                meta = _read_metadata(target)
                if not meta["has_checkpoints"]:
                    raise ScriptError(PRECONDITION, "incomplete backup: no xtrabackup_checkpoints / "
                                      "mariadb_backup_checkpoints in %s (stream cut short?)" % artifact)
                kind = meta["checkpoints"].get("backup_type")
                if bases and kind != "incremental" or not bases and kind == "incremental":
                    raise ScriptError(PRECONDITION, "%s is a %s backup but was verified as %s"
                                      % (artifact, kind, "an incremental" if bases else "a full"))
            t0 = time.monotonic()
            _run_prepare(args.flavor, scratch, args.use_memory, incdir if i > 0 else None, more_links=not last)
            prepare_seconds += time.monotonic() - t0
            if i > 0:
                shutil.rmtree(incdir)
            if bases:
                log("chain link %d of %d prepared: %s", i + 1, len(links), link)
        kept = args.keep_scratch
    finally:
        shutil.rmtree(incdir, ignore_errors=True)
        if not kept:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = round(time.monotonic() - started, 3)
    log("prepare ok in %.1f s%s; backup verified (binlog %s:%s, gtid %s)%s", prepare_seconds,
        " (the chain of %d links)" % (len(bases) + 1) if bases else "",
        meta["binlog"]["file"], meta["binlog"]["pos"], meta["binlog"]["gtid"],
        "; prepared copy kept in %s" % scratch if kept else "")
    return {"sha256_ok": True, "size_bytes": size, "files": files, "extracted_bytes": extracted_bytes,
            "checksums_file": checksums_file, "binlog": meta["binlog"], "checkpoints": meta["checkpoints"],
            "info": meta["info"], "slave_info": meta["slave_info"], "prepared": True,
            "chain_links": len(bases) + 1, "scratch": scratch if kept else None, "seconds": seconds,
            "extract_seconds": round(extract_seconds, 3), "prepare_seconds": round(prepare_seconds, 3)}


def cmd_check(args) -> dict:
    """Re-read a stored artifact from disk and compare its sha256 (scheduled re-verification)."""
    labeldir = hostkit.check_path(args.dir)
    name = _check_name(args.artifact)
    expected = (args.sha256 or "").strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ScriptError(USAGE, "--sha256 must be 64 hex digits")
    if args.max_mib_per_s < 0:
        raise ScriptError(USAGE, "--max-mib-per-s must be >= 0")
    if not os.path.isdir(labeldir):
        raise ScriptError(PRECONDITION, "backup directory %s is gone from storage host %s"
                          % (labeldir, hostkit.hostname()), found="no_directory")
    artifact = os.path.join(labeldir, name)
    if not os.path.isfile(artifact):
        raise ScriptError(PRECONDITION, "artifact %s is gone from storage host %s" % (artifact, hostkit.hostname()),
                          found="no_artifact")
    t0 = time.monotonic()
    try:
        actual, size = hostkit.sha256_file(artifact, max_rate=args.max_mib_per_s * 2**20, from_disk=True)
    except OSError as e:
        raise ScriptError(PRECONDITION, "artifact %s on storage host %s cannot be read: %s"
                          % (artifact, hostkit.hostname(), e.strerror or e), found="unreadable") from None
    seconds = round(time.monotonic() - t0, 3)
    rate = size / 2**20 / seconds if seconds else 0.0
    if actual != expected:
        raise ScriptError(PRECONDITION, "sha256 mismatch for %s on storage host %s: the manifest says %s, the "
                          "stored bytes give %s: the artifact changed since it was verified"
                          % (artifact, hostkit.hostname(), expected, actual), found="mismatch", expected=expected,
                          actual=actual, size_bytes=size, seconds=seconds)
    log("sha256 of %s ok: %s re-read from disk in %.1f s (%.0f MiB/s)", artifact, hostkit.human_bytes(size),
        seconds, rate)
    return {"sha256_ok": True, "size_bytes": size, "seconds": seconds, "mib_per_s": round(rate, 1)}


# ---------------------------------------------------------------------------------------------
# commit, list, discard


def cmd_commit(args) -> dict:
    labeldir = hostkit.check_path(args.dir)
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        text = raw.decode("utf-8")
        manifest = json.loads(text)
    except ValueError:
        raise ScriptError(USAGE, "the manifest on stdin is not valid UTF-8 JSON") from None
    if not isinstance(manifest, dict):
        raise ScriptError(USAGE, "the manifest on stdin must be a JSON object")
    label = os.path.basename(labeldir)
    if manifest.get("label") != label:
        raise ScriptError(USAGE, "manifest label %r does not match the directory %s"
                          % (manifest.get("label"), labeldir))
    artifact = manifest.get("artifact")
    if not isinstance(artifact, str):
        raise ScriptError(USAGE, "the manifest has no 'artifact' file name")
    _check_name(artifact, "manifest 'artifact'")
    if not os.path.isdir(labeldir):
        raise ScriptError(PRECONDITION, "label directory %s does not exist" % labeldir)
    if not os.path.isfile(os.path.join(labeldir, artifact)):
        raise ScriptError(PRECONDITION, "artifact %s is missing in %s: nothing to commit" % (artifact, labeldir))
    path = os.path.join(labeldir, MANIFEST)
    replaced = os.path.exists(path)
    if replaced:
        log("warning: %s exists and is replaced", path)
    tmp = path + ".tmp"
    body = text.strip() + "\n"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    hostkit.fsync_dir(labeldir)
    log("committed %s", path)
    return {"path": path, "replaced": replaced}


LABEL_RE = re.compile(r"^[0-9]{8}-[0-9]{6}F(?:_[0-9]{8}-[0-9]{6}I)?$")


def cmd_list(args) -> dict:
    base = hostkit.check_path(args.dir)
    if args.instance is not None:
        _check_name(args.instance, "--instance")
    count = 0
    incomplete = []
    unreadable = []
    if not os.path.isdir(base):
        log("%s does not exist: nothing to list", base)
        return {"count": 0, "incomplete": [], "unreadable": []}
    # dot directories (e.g. <base>/.scratch used by verify) are never instances nor labels
    instances = [args.instance] if args.instance else sorted(n for n in os.listdir(base) if not n.startswith("."))
    for inst in instances:
        idir = os.path.join(base, inst)
        if not os.path.isdir(idir):
            continue
        # only backup labels: other directories (e.g. <instance>/flashback) are not backups
        for label in sorted(n for n in os.listdir(idir) if LABEL_RE.match(n)):
            ldir = os.path.join(idir, label)
            if not os.path.isdir(ldir):
                continue
            mpath = os.path.join(ldir, MANIFEST)
            if not os.path.isfile(mpath):
                incomplete.append(ldir)
                continue
            try:
                with open(mpath, "r", encoding="utf-8") as f:
                    text = f.read()
            except (OSError, ValueError) as e:
                unreadable.append({"path": mpath, "error": str(e)})
                continue
            sys.stdout.write(json.dumps({"path": mpath, "manifest": text}) + "\n")
            count += 1
    sys.stdout.flush()
    log("%d manifests, %d label directories without a manifest", count, len(incomplete))
    return {"count": count, "incomplete": incomplete, "unreadable": unreadable}


def cmd_discard(args) -> dict:
    labeldir = hostkit.check_path(args.dir)
    if not os.path.lexists(labeldir):
        log("%s does not exist: nothing to discard", labeldir)
        return {"removed": False, "path": labeldir}
    if not os.path.isdir(labeldir) or os.path.islink(labeldir):
        raise ScriptError(PRECONDITION, "%s is not a directory" % labeldir)
    for root, _dirs, files in os.walk(labeldir):
        if MANIFEST in files:
            raise ScriptError(PRECONDITION, "%s holds a committed backup (%s): discard never removes one"
                              % (labeldir, os.path.join(root, MANIFEST)))
    shutil.rmtree(labeldir)
    try:
        hostkit.fsync_dir(os.path.dirname(labeldir))
    except OSError:
        pass
    log("removed %s", labeldir)
    return {"removed": True, "path": labeldir}


def cmd_expire(args) -> dict:
    """Delete a backup retention planned to expire: the manifest first (from then on the backup does
    not exist), the rest after. A run killed halfway leaves a directory without a manifest that the
    next expire run (or discard) removes."""
    labeldir = hostkit.check_path(args.dir)
    label = os.path.basename(labeldir.rstrip("/"))
    if not LABEL_RE.match(label):
        raise ScriptError(USAGE, "%s is not a backup label directory (<base>/<instance>/<label>)" % labeldir)
    if args.label != label:
        raise ScriptError(USAGE, "--label %s does not name the directory %s" % (args.label, labeldir))
    if not os.path.lexists(labeldir):
        log("%s does not exist: already expired", labeldir)
        return {"removed": False, "path": labeldir}
    if not os.path.isdir(labeldir) or os.path.islink(labeldir):
        raise ScriptError(PRECONDITION, "%s is not a directory" % labeldir)
    size = 0
    for root, _dirs, files in os.walk(labeldir):
        for fn in files:
            try:
                size += os.lstat(os.path.join(root, fn)).st_size
            except OSError:
                pass
    manifest = os.path.join(labeldir, MANIFEST)
    if os.path.exists(manifest):
        os.unlink(manifest)
        hostkit.fsync_dir(labeldir)
    shutil.rmtree(labeldir)
    try:
        hostkit.fsync_dir(os.path.dirname(labeldir))
    except OSError:
        pass
    log("expired %s (%s freed)", labeldir, hostkit.human_bytes(size))
    return {"removed": True, "path": labeldir, "freed_bytes": size}


BINLOG_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+\.[0-9]{6,}$")


def cmd_expire_binlog(args) -> dict:
    """Delete archived binlog files retention no longer needs (closed or incomplete ones only: the
    file being written, NAME.open, is never touched), with their sidecars."""
    idir = hostkit.check_path(args.dir)
    if os.path.basename(os.path.dirname(idir.rstrip("/"))) != "binlog":
        raise ScriptError(USAGE, "%s is not an archive identity directory (<base>/<instance>/binlog/<identity>)"
                          % idir)
    removed, freed = [], 0
    for name in args.file:
        if not BINLOG_NAME_RE.match(name):
            raise ScriptError(USAGE, "--file %r is not a binlog file name (like binlog.000012)" % name)
    for name in args.file:
        for path in (os.path.join(idir, name), os.path.join(idir, name + ".incomplete")):
            if os.path.isfile(path) and not os.path.islink(path):
                freed += os.path.getsize(path)
                os.unlink(path)
                removed.append(os.path.basename(path))
        for side in (name + ".json",):
            try:
                os.unlink(os.path.join(idir, ".meta", side))
            except FileNotFoundError:
                pass
    hostkit.fsync_dir(idir)
    log("expired %d archived binlog file(s) in %s (%s freed)", len(removed), idir, hostkit.human_bytes(freed))
    return {"removed": removed, "freed_bytes": freed}


# ---------------------------------------------------------------------------------------------
# command line


def build_parser() -> hostkit.ArgumentParser:
    p = hostkit.ArgumentParser(
        prog=SCRIPT,
        description="Storage-host verbs of the MySQL/MariaDB backup pipeline. Layout: "
                    "<base>/<instance>/<label>/{backup.xbstream[.gz|.zst], SHA256SUMS, manifest.json}. "
                    "Paths must be absolute without '..'. Logs go to stderr; the last stderr line is always "
                    "'RESULT {json}'. Exit codes: 0 ok, 1 internal, 2 usage, 3 precondition, 4 transient, "
                    "5 partial (interrupted, cleaned up).")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=hostkit.ArgumentParser)
    sub.required = True

    s = sub.add_parser("space", help="check free space for a backup",
                       description="Create BASE (0750) if needed, check that a file can be written there (a "
                                   "read-only mount or a directory without write permission is exit 3), and that "
                                   "its filesystem has NEED bytes available (exit 3 naming host, free space and "
                                   "need otherwise).")
    s.add_argument("--dir", required=True, metavar="BASE", help="base backup directory (absolute)")
    s.add_argument("--need", required=True, type=int, metavar="BYTES", help="estimated backup size in bytes")
    s.set_defaults(func=cmd_space)

    r = sub.add_parser("receive", help="write the backup stream from stdin into the label directory",
                       description="Read stdin in 1 MiB chunks into LABELDIR/NAME.partial computing its sha256, "
                                   "fsync, rename to NAME. The .partial file is removed on any failure. Refuses "
                                   "a label directory that already has a manifest.json.")
    r.add_argument("--dir", required=True, metavar="LABELDIR", help="label directory (absolute; created)")
    r.add_argument("--artifact", required=True, metavar="NAME",
                   help="artifact file name, e.g. backup.xbstream.zst (no '/')")
    r.set_defaults(func=cmd_receive)

    v = sub.add_parser("verify", help="check sha256, extract, checksum, read metadata, prepare",
                       description="Re-read the artifact and compare its sha256; extract it (decompressed by "
                                   "suffix .zst/.gz) with mbstream/xbstream into SCRATCH; write LABELDIR/SHA256SUMS; "
                                   "read binlog position, GTID, LSNs; run mariabackup/xtrabackup --prepare; "
                                   "remove SCRATCH (unless --keep-scratch; always on failure). An incremental is "
                                   "verified with its chain (--base, the full first): each link is sha256-checked, "
                                   "the full is extracted and prepared in SCRATCH, then each incremental in "
                                   "SCRATCH-incremental is applied on it, as a restore does. A corrupt backup "
                                   "is exit 3.")
    v.add_argument("--dir", required=True, metavar="LABELDIR", help="label directory (absolute)")
    v.add_argument("--artifact", required=True, metavar="NAME", help="artifact file name in LABELDIR")
    v.add_argument("--sha256", required=True, metavar="HEX", help="expected sha256 (from receive)")
    v.add_argument("--flavor", required=True, choices=FLAVORS,
                   help="mariadb (mbstream, mariabackup) or mysql (xbstream, xtrabackup)")
    v.add_argument("--scratch", required=True, metavar="DIR",
                   help="scratch directory for the extracted copy (absolute; must not exist or be empty)")
    v.add_argument("--use-memory", default="256M", metavar="SIZE",
                   help="buffer pool for --prepare (default 256M)")
    v.add_argument("--base", action="append", metavar="LABELDIR:ARTIFACT:SHA256",
                   help="an earlier link of this incremental's chain, the full first, in order (repeated); each "
                        "is sha256-checked, extracted and prepared before this backup is applied on top")
    v.add_argument("--keep-scratch", action="store_true",
                   help="keep the prepared copy in DIR after success (a valid datadir)")
    v.set_defaults(func=cmd_verify)

    k = sub.add_parser("check", help="re-read a stored artifact from disk and compare its sha256",
                       description="Re-read LABELDIR/NAME from disk (its cached pages dropped first), paced to at "
                                   "most --max-mib-per-s, and compare its sha256 with HEX. Exit 3 when the "
                                   "directory or the artifact is gone, unreadable, or its sha256 differs (the "
                                   "RESULT's 'found' says which: no_directory, no_artifact, unreadable, mismatch).")
    k.add_argument("--dir", required=True, metavar="LABELDIR", help="label directory (absolute)")
    k.add_argument("--artifact", required=True, metavar="NAME", help="artifact file name in LABELDIR")
    k.add_argument("--sha256", required=True, metavar="HEX", help="the sha256 the manifest records")
    k.add_argument("--max-mib-per-s", type=float, default=0, metavar="N",
                   help="read at most N MiB/s (default 0: as fast as the disk goes)")
    k.set_defaults(func=cmd_check)

    c = sub.add_parser("commit", help="write manifest.json (read from stdin) atomically",
                       description="Read the manifest JSON object from stdin; its 'label' must equal the "
                                   "directory name and its 'artifact' must exist in LABELDIR. Writes "
                                   "manifest.json.tmp, fsyncs, renames to manifest.json, fsyncs the directory.")
    c.add_argument("--dir", required=True, metavar="LABELDIR", help="label directory (absolute)")
    c.set_defaults(func=cmd_commit)

    ls = sub.add_parser("list", help="print every manifest as a JSON line on stdout",
                        description="Print one JSON line {\"path\", \"manifest\": <file text>} per "
                                    "BASE/<instance>/<label>/manifest.json; label directories without a "
                                    "manifest are listed in the RESULT as 'incomplete'.")
    ls.add_argument("--dir", required=True, metavar="BASE", help="base backup directory (absolute)")
    ls.add_argument("--instance", metavar="NAME", help="only this instance")
    ls.set_defaults(func=cmd_list)

    e = sub.add_parser("expire", help="delete a backup that retention planned to expire",
                       description="Delete LABELDIR, a committed backup: manifest.json first (then the backup "
                                   "no longer exists), then the rest. --label must repeat the directory's label. "
                                   "Only the expire task runs this, for labels its retention plan names.")
    e.add_argument("--dir", required=True, metavar="LABELDIR", help="label directory (absolute)")
    e.add_argument("--label", required=True, metavar="LABEL", help="the label being expired (a second check)")
    e.set_defaults(func=cmd_expire)

    eb = sub.add_parser("expire-binlog", help="delete archived binlog files that retention no longer needs",
                        description="Delete the closed (or incomplete) archived binlog files NAME of DIR, an "
                                    "archive identity directory <base>/<instance>/binlog/<identity>, and their "
                                    "sidecars. The open file (NAME.open) is never touched. Only the expire task "
                                    "runs this, for the files its plan names.")
    eb.add_argument("--dir", required=True, metavar="DIR", help="the identity directory (absolute)")
    eb.add_argument("--file", action="append", required=True, metavar="NAME", help="a file to delete (repeated)")
    eb.set_defaults(func=cmd_expire_binlog)

    d = sub.add_parser("discard", help="remove a label directory that has no manifest",
                       description="Remove LABELDIR when it holds no manifest.json (exit 3 if it does: a "
                                   "committed backup is never removed by discard). A missing LABELDIR is ok.")
    d.add_argument("--dir", required=True, metavar="LABELDIR", help="label directory (absolute)")
    d.set_defaults(func=cmd_discard)
    return p


def main(argv=None) -> None:
    hostkit.main(build_parser(), argv, script=SCRIPT)


if __name__ == "__main__":
    main()
