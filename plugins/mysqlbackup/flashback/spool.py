"""A disk spool that turns a stream of transactions into the reversed flashback script.

Statements are appended in binlog order to a data file; two index files of fixed 8-byte
records (statement starts; per transaction: first statement and header offset) let the
output be written newest transaction first, statements reversed, reading everything back in
chunks. Memory use does not depend on the size of the window.
"""
from __future__ import annotations

import os
import struct
import tempfile
from array import array
from itertools import accumulate
from operator import add
from typing import BinaryIO

_U64 = struct.Struct("<Q")
_TX = struct.Struct("<QQQ")  # first statement index, header offset, header length
_CHUNK = 8192  # records read back per chunk
_GROUP_BYTES = 8 << 20  # at most this much statement text read back at once for a group of small transactions


class Spool:
    """Collect transactions of inverse statements; write them out reversed."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="flashback-spool-", dir=directory)
        self._data = open(os.path.join(self._dir, "statements"), "w+b")
        self._stmts = open(os.path.join(self._dir, "statements.idx"), "w+b")
        self._txs = open(os.path.join(self._dir, "transactions.idx"), "w+b")
        self._offsets = array("Q")   # statement starts of the buffered block, flushed in chunks
        self._n_stmts = 0
        self._data_end = 0
        self._open: tuple[int, bytes] | None = None  # first statement index, header
        self.transactions = 0
        self.statements = 0

    # -- writing, in binlog order ------------------------------------------------------------
    def begin(self, header: str) -> None:
        if self._open is not None:
            raise RuntimeError("a transaction is already open in the spool")
        self._open = (self._n_stmts, header.encode("utf-8"))

    def add(self, statement: str) -> None:
        data = statement.encode("utf-8") + b"\n"
        self._offsets.append(self._data_end)
        self._data.write(data)
        self._data_end += len(data)
        self._n_stmts += 1
        if len(self._offsets) >= _CHUNK:
            self._flush_offsets()

    def add_many(self, statements: list[str]) -> None:
        """``add`` for each statement, in one write: the start offsets are running sums of the
        lengths (of the characters when the text is ASCII, which its encoded length tells)."""
        if not statements:
            return
        text = "\n".join(statements) + "\n"
        if text.isascii():  # known without a scan (CPython keeps it with the string): bytes = characters
            data = text.encode("ascii")
            lengths = map(len, statements)
        else:
            parts = [t.encode("utf-8") for t in statements]
            data = b"\n".join(parts) + b"\n"
            lengths = map(len, parts)
        # start of statement k: the end so far + the lengths before it + one newline each (map stops
        # with range: the running sum after the last statement is no start)
        self._offsets.extend(map(add, accumulate(lengths, initial=self._data_end), range(len(statements))))
        self._data.write(data)
        self._data_end += len(data)
        self._n_stmts += len(statements)
        if len(self._offsets) >= _CHUNK:
            self._flush_offsets()

    def commit(self, header: str | None = None) -> None:
        """Close the open transaction (``header`` replaces the one given to begin); one without
        statements is dropped."""
        if self._open is None:
            return
        first, header_bytes = self._open
        header = header_bytes if header is None else header.encode("utf-8")
        self._open = None
        if self._n_stmts == first:
            return
        self._flush_offsets()
        head_off = self._data_end
        self._data.write(header)
        self._data_end += len(header)
        self._txs.write(_TX.pack(first, head_off, len(header)))
        self.transactions += 1
        self.statements += self._n_stmts - first

    def discard(self) -> None:
        """Forget the open transaction (its statements stay in the data file, unreferenced)."""
        if self._open is None:
            return
        first, _ = self._open
        self._flush_offsets()
        self._stmts.truncate(first * _U64.size)
        self._stmts.seek(0, os.SEEK_END)
        self._n_stmts = first
        self._open = None

    def _flush_offsets(self) -> None:
        if self._offsets:
            self._stmts.write(self._offsets.tobytes())
            self._offsets = array("Q")

    # -- reading back, reversed ---------------------------------------------------------------
    def write_reversed(self, out: BinaryIO, begin: bytes = b"BEGIN;\n", commit: bytes = b"COMMIT;\n") -> None:
        """Every transaction, newest first, its statements in reverse order."""
        if self._open is not None:
            raise RuntimeError("commit or discard the open transaction first")
        self._flush_offsets()
        for f in (self._data, self._stmts, self._txs):
            f.flush()
        data_fd, idx_fd, tx_fd = self._data.fileno(), self._stmts.fileno(), self._txs.fileno()
        n_tx = self.transactions
        # transaction records read back in chunks, newest first; statement i ends where statement i+1
        # starts, or, for the last of a transaction, at its header. Small transactions are written in
        # groups (one read of their index and of their bytes for up to _CHUNK statements and _GROUP_BYTES).
        next_first = self._n_stmts  # first statement of the transaction after the one at hand
        hi_tx = n_tx
        while hi_tx > 0:
            lo_tx = max(0, hi_tx - _CHUNK)
            recs = array("Q")
            recs.frombytes(os.pread(tx_fd, (hi_tx - lo_tx) * _TX.size, lo_tx * _TX.size))
            tx = hi_tx - 1
            while tx >= lo_tx:
                r = 3 * (tx - lo_tx)
                first = recs[r]
                if next_first - first > _CHUNK // 4:  # a large transaction: its statements in chunks
                    self._write_one(out, data_fd, idx_fd, first, next_first, recs[r + 1], recs[r + 2], begin, commit)
                    next_first = first
                    tx -= 1
                    continue
                # a group of small transactions [g, tx], newest (tx) first
                g = tx
                while g > lo_tx:
                    prev_first = recs[3 * (g - 1 - lo_tx)]
                    if next_first - prev_first > _CHUNK or recs[3 * (g - lo_tx)] - prev_first > _CHUNK // 4:
                        break
                    g -= 1
                g_first = recs[3 * (g - lo_tx)]
                head_end = recs[r + 1] + recs[r + 2]
                starts = array("Q")
                starts.frombytes(os.pread(idx_fd, (next_first - g_first) * _U64.size, g_first * _U64.size))
                # as many of them as _GROUP_BYTES hold (their text is contiguous, up to tx's header end)
                while g < tx and head_end - starts[recs[3 * (g - lo_tx)] - g_first] > _GROUP_BYTES:
                    g += 1
                if head_end - starts[first - g_first] > _GROUP_BYTES:  # one wide transaction: in chunks
                    self._write_one(out, data_fd, idx_fd, first, next_first, recs[r + 1], recs[r + 2], begin, commit)
                    next_first = first
                    tx -= 1
                    continue
                base = starts[recs[3 * (g - lo_tx)] - g_first]
                block = memoryview(os.pread(data_fd, head_end - base, base))
                pieces = []
                for t in range(tx, g - 1, -1):
                    q = 3 * (t - lo_tx)
                    t_first, h_off, h_len = recs[q], recs[q + 1], recs[q + 2]
                    pieces.append(block[h_off - base:h_off + h_len - base])
                    pieces.append(begin)
                    stop = h_off - base
                    for k in range(next_first - 1 - g_first, t_first - 1 - g_first, -1):
                        st = starts[k] - base  # starts holds the index from g_first on
                        pieces.append(block[st:stop])
                        stop = st
                    pieces.append(commit)
                    next_first = t_first
                out.write(b"".join(pieces))
                tx = g - 1
            hi_tx = lo_tx

    @staticmethod
    def _write_one(out: BinaryIO, data_fd: int, idx_fd: int, first: int, next_first: int, head_off: int,
                   head_len: int, begin: bytes, commit: bytes) -> None:
        """One transaction, its statements [first, next_first) read back in chunks, reversed."""
        out.write(os.pread(data_fd, head_len, head_off))
        out.write(begin)
        end = head_off
        hi = next_first
        while hi > first:
            lo = max(first, hi - _CHUNK)
            starts = array("Q")
            starts.frombytes(os.pread(idx_fd, (hi - lo) * _U64.size, lo * _U64.size))
            block = memoryview(os.pread(data_fd, end - starts[0], starts[0]))  # slices without copies
            base = starts[0]
            stop = end - base
            pieces = []
            for i in range(len(starts) - 1, -1, -1):
                s = starts[i] - base
                pieces.append(block[s:stop])
                stop = s
            out.write(b"".join(pieces))  # one write per chunk
            end = starts[0]
            hi = lo
        out.write(commit)

    def close(self) -> None:
        for f in (self._data, self._stmts, self._txs):
            f.close()
        for name in ("statements", "statements.idx", "transactions.idx"):
            try:
                os.unlink(os.path.join(self._dir, name))
            except FileNotFoundError:
                pass
        os.rmdir(self._dir)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
