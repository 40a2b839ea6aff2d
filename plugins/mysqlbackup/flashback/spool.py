"""A disk spool that turns a stream of transactions into the reversed flashback script.

Statements arrive in blocks (the statements of one rows event) and each block is appended to a
data file already reversed; two index files of fixed 8-byte records (block starts; per
transaction: first block and header offset) let the output be written newest transaction
first, its blocks newest first, reading everything back in chunks of bounded size. Memory use
does not depend on the size of the window.

Why blocks: the reversal and the index cost per record, not per byte; a rows event's statements
reversed as it is written (one join, one encode, one index record for 8 KB of binlog) made the
spool and the reversal pass 3-5x cheaper than one record per statement (docs/flashback.md).

The statement text stays in memory up to ``memory`` bytes (MEMORY by default) and moves to the
data file, once, when it would pass that: a window whose script fits is never written to disk
and read back (on the bench's nopk shape, 32.5 MB of SQL, that write and read were 0.1 s of a
0.4 s run); a larger one costs one copy more than writing to the file from the start. Memory
stays bounded by the cap, whatever the window.
"""
from __future__ import annotations

import os
import struct
import tempfile
from array import array
from typing import BinaryIO

_U64 = struct.Struct("<Q")
_TX = struct.Struct("<QQQ")  # first block index, header offset, header length
_CHUNK = 8192  # records read back per chunk
_GROUP_BYTES = 8 << 20  # at most this much statement text read back at once (more only for one block larger than it)
MEMORY = 40 << 20  # statement text kept in memory before the spool moves it to its data file


class Spool:
    """Collect transactions of inverse statements; write them out reversed."""

    def __init__(self, directory: str | None = None, memory: int = MEMORY) -> None:
        self._dir = tempfile.mkdtemp(prefix="flashback-spool-", dir=directory)
        self._data = open(os.path.join(self._dir, "statements"), "w+b")
        self._memory = memory
        self._mem: bytearray | None = bytearray()  # the statement text while it fits in memory; None after
        self._blocks = open(os.path.join(self._dir, "blocks.idx"), "w+b")
        self._txs = open(os.path.join(self._dir, "transactions.idx"), "w+b")
        self._offsets = array("Q")   # block starts not yet in the index file, flushed in chunks
        self._n_blocks = 0
        self._data_end = 0
        self._open: tuple[int, int, bytes] | None = None  # first block index, statements before, header
        self._n_stmts = 0  # statements added (in committed and open transactions)
        self.transactions = 0
        self.statements = 0

    # -- writing, in binlog order ------------------------------------------------------------
    def begin(self, header: str) -> None:
        if self._open is not None:
            raise RuntimeError("a transaction is already open in the spool")
        self._open = (self._n_blocks, self._n_stmts, header.encode("utf-8"))

    def add(self, statement: str) -> None:
        self.add_many([statement])

    def add_many(self, statements: list[str]) -> None:
        """The statements (in binlog order) as one block, written reversed: one line each."""
        if statements:
            self.add_block(("\n".join(reversed(statements)) + "\n").encode("utf-8"), len(statements))

    def add_block(self, data: bytes, n: int) -> None:
        """``n`` statements as one block already reversed and encoded, a newline after each (what
        ``RowCodec.block`` gives)."""
        if not n:
            return
        self._offsets.append(self._data_end)
        self._write(data)
        self._n_blocks += 1
        self._n_stmts += n
        if len(self._offsets) >= _CHUNK:
            self._flush_offsets()

    def commit(self, header: str | None = None) -> None:
        """Close the open transaction (``header`` replaces the one given to begin); one without
        statements is dropped."""
        if self._open is None:
            return
        first, stmts_before, header_bytes = self._open
        header = header_bytes if header is None else header.encode("utf-8")
        self._open = None
        if self._n_blocks == first:
            return
        head_off = self._data_end  # (the block starts stay in memory until _CHUNK of them: see add_block)
        self._write(header)
        self._txs.write(_TX.pack(first, head_off, len(header)))
        self.transactions += 1
        self.statements += self._n_stmts - stmts_before

    def discard(self) -> None:
        """Forget the open transaction (its statements stay in the data file, unreferenced)."""
        if self._open is None:
            return
        first, stmts_before, _ = self._open
        self._flush_offsets()
        self._blocks.truncate(first * _U64.size)
        self._blocks.seek(0, os.SEEK_END)
        self._n_blocks = first
        self._n_stmts = stmts_before
        self._open = None

    def limit(self, memory: int) -> None:
        """Keep at most ``memory`` bytes of text in memory from now on (moved to the data file at
        the next write past it)."""
        self._memory = min(self._memory, memory)

    def _write(self, data: bytes) -> None:
        mem = self._mem
        if mem is not None:
            if self._data_end + len(data) <= self._memory:
                mem += data
                self._data_end += len(data)
                return
            self._data.write(mem)  # past the cap: the text so far to the data file, the rest after it
            self._mem = None
        self._data.write(data)
        self._data_end += len(data)

    def _flush_offsets(self) -> None:
        if self._offsets:
            self._blocks.write(self._offsets.tobytes())
            self._offsets = array("Q")

    # -- reading back, reversed ---------------------------------------------------------------
    def write_reversed(self, out: BinaryIO, begin: bytes = b"BEGIN;\n", commit: bytes = b"COMMIT;\n") -> None:
        """Every transaction, newest first, its statements in reverse order (its blocks newest first,
        each written reversed already)."""
        if self._open is not None:
            raise RuntimeError("commit or discard the open transaction first")
        self._flush_offsets()
        for f in (self._data, self._blocks, self._txs):
            f.flush()
        idx_fd, tx_fd = self._blocks.fileno(), self._txs.fileno()
        if self._mem is not None:
            text = memoryview(self._mem)

            def read(n: int, off: int) -> memoryview:
                return text[off:off + n]
        else:
            data_fd = self._data.fileno()

            def read(n: int, off: int) -> memoryview:
                return memoryview(os.pread(data_fd, n, off))
        n_tx = self.transactions
        # transaction records read back in chunks, newest first; block i ends where block i+1 starts,
        # or, for the last of a transaction, at its header. Small transactions are written in groups
        # (one read of their index and of their bytes for up to _CHUNK blocks and _GROUP_BYTES).
        next_first = self._n_blocks  # first block of the transaction after the one at hand
        hi_tx = n_tx
        while hi_tx > 0:
            lo_tx = max(0, hi_tx - _CHUNK)
            recs = array("Q")
            recs.frombytes(os.pread(tx_fd, (hi_tx - lo_tx) * _TX.size, lo_tx * _TX.size))
            tx = hi_tx - 1
            while tx >= lo_tx:
                r = 3 * (tx - lo_tx)
                first = recs[r]
                if next_first - first > _CHUNK // 4:  # a large transaction: its blocks in chunks
                    self._write_one(out, read, idx_fd, first, next_first, recs[r + 1], recs[r + 2], begin, commit)
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
                    self._write_one(out, read, idx_fd, first, next_first, recs[r + 1], recs[r + 2], begin, commit)
                    next_first = first
                    tx -= 1
                    continue
                base = starts[recs[3 * (g - lo_tx)] - g_first]
                block = read(head_end - base, base)
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
    def _write_one(out: BinaryIO, read, idx_fd: int, first: int, next_first: int, head_off: int,
                   head_len: int, begin: bytes, commit: bytes) -> None:
        """One transaction, its blocks [first, next_first) read back in chunks of up to _CHUNK blocks
        and _GROUP_BYTES (or one block), newest first."""
        out.write(read(head_len, head_off))
        out.write(begin)
        end = head_off
        hi = next_first
        while hi > first:
            lo = max(first, hi - _CHUNK)
            starts = array("Q")
            starts.frombytes(os.pread(idx_fd, (hi - lo) * _U64.size, lo * _U64.size))
            k = len(starts) - 1  # the blocks [k, hi - lo) that fit in _GROUP_BYTES, at least one
            while k > 0 and end - starts[k - 1] <= _GROUP_BYTES:
                k -= 1
            base = starts[k]
            chunk = read(end - base, base)  # slices without copies
            stop = end - base
            pieces = []
            for i in range(len(starts) - 1, k - 1, -1):
                s = starts[i] - base
                pieces.append(chunk[s:stop])
                stop = s
            out.write(b"".join(pieces))  # one write per chunk
            end = base
            hi = lo + k
        out.write(commit)

    def close(self) -> None:
        self._mem = None
        for f in (self._data, self._blocks, self._txs):
            f.close()
        for name in ("statements", "blocks.idx", "transactions.idx"):
            try:
                os.unlink(os.path.join(self._dir, name))
            except FileNotFoundError:
                pass
        os.rmdir(self._dir)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
