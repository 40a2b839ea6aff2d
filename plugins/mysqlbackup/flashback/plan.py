"""The inverse of one row change, as SQL text. Pure: literals in, statements out.

Values arrive as SQL literals already (``mysqlbackup.binlog.decode``). The WHERE clause uses
the primary key when the table has one; without a key it matches every column NULL-safely
(``<=>``) with ``LIMIT 1``, so one of several identical rows is touched, never all of them.
"""
from __future__ import annotations

from typing import Sequence


def quote_ident(name: str) -> str:
    """A MySQL identifier in backticks (backticks inside doubled): any name, unicode included."""
    return "`" + name.replace("`", "``") + "`"


class TableSQL:
    """Statement builders for one table, with its quoted names computed once."""

    __slots__ = ("target", "columns", "key", "_insert_head", "_col_list", "guard_row", "_rest", "_eq", "_ns",
                 "_update_head", "_delete_head", "_keyset", "_writable")

    def __init__(self, schema: str, table: str, columns: Sequence[str], key: Sequence[int] | None,
                 guard_row: bool = True, generated: frozenset[str] = frozenset()) -> None:
        if not columns:
            raise ValueError(f"{schema}.{table}: no column names (binlog_row_metadata=FULL is required)")
        self.target = f"{quote_ident(schema)}.{quote_ident(table)}"
        self.columns = [quote_ident(c) for c in columns]
        self.key = tuple(key) if key else None
        # guard_row: besides the key, match the rest of the row image NULL-safely, so a row changed
        # again after the window matches nothing and apply stops instead of overwriting that change
        self.guard_row = guard_row
        self._rest = tuple(i for i in range(len(columns)) if not self.key or i not in self.key)
        # generated columns are computed by the server: never written, only matched
        self._writable = [i for i, c in enumerate(columns) if c not in generated] if generated else None
        self._col_list = ", ".join(self.columns[i] for i in self._writable) if generated else ", ".join(self.columns)
        self._insert_head = f"INSERT INTO {self.target} ({self._col_list}) VALUES ("
        # per-column prefixes, built once: statements are then plain concatenations
        self._eq = [f"{c}=" for c in self.columns]
        self._ns = [f"{c}<=>" for c in self.columns]
        self._update_head = f"UPDATE {self.target} SET "
        self._delete_head = f"DELETE FROM {self.target} WHERE "
        self._keyset = frozenset(self.key or ())

    # -- the same statements as code, for the row decoder to generate (binlog.decode.RowCodec.statements) --
    def wants(self, kind: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
        """The columns (before, after) the statements of ``kind`` need decoded; None: all."""
        if not self.guard_row and self.key and kind != "delete":
            return None, self._keyset  # key-only mode: the after image's key finds the row
        return None, None

    @property
    def lazy_update(self) -> bool:
        """The guarded UPDATE can decode only the columns it needs (see ``code``); the key-only one
        sets back every column of the before image."""
        return self.guard_row

    def code(self, kind: str, before: list[str] | None, after: list[str] | None, const, decode=None,
             differ=None) -> list[str]:
        """Python lines setting ``s`` to the statement ``undo_<kind>`` would return, from the
        variables (or "None") holding each column's literal. Names and text from the table are
        never spliced into the code: ``const(text)`` gives the name of a global holding it.
        The same shapes as ``where``/``undo_insert``/``undo_delete``/``undo_update``, which stay
        the reference (tests compare the two).

        With ``decode``/``differ`` (a guarded UPDATE of two whole images, not yet decoded):
        ``decode("before"|"after", i)`` gives the lines that set column i's variable, and
        ``differ(i)`` an expression true when column i's bytes differ between the images. Equal
        bytes make equal literals, so only the columns whose bytes differ are decoded and
        compared (their literals may still be equal), besides what the WHERE always needs."""
        if decode is not None and kind == "update" and self.guard_row:
            return self._guarded_update(before, after, const, decode, differ)
        pieces = self.pieces(kind, before, after)
        if pieces is not None:
            return ["s = " + self._concat(pieces, const)]
        self._check_whole(before, after)
        return self._guarded_update(before, after, const, lambda _image, _i: [], None)

    def pieces(self, kind: str, before: list[str] | None, after: list[str] | None) -> list | None:
        """The statement of ``kind`` as text pieces and variables (``_Var``, names from ``before``/
        ``after`` as in ``code``), or None for the guarded UPDATE, which is no fixed sequence
        (``code``, ``update_rule``)."""
        if kind == "insert":
            return self._where_pieces(after, self._delete_head) + [";"]
        if kind == "delete":
            cols = self._writable if self._writable is not None else range(len(self.columns))
            pieces: list[str] = [self._insert_head]
            for n, i in enumerate(cols):
                if n:
                    pieces.append(", ")
                pieces.append("DEFAULT" if before[i] == "None" else _Var(before[i]))
            return pieces + [");"]
        if kind != "update":
            raise ValueError(f"no statement for a rows event of kind {kind!r}")
        eq = self._eq
        w = self._writable
        if not self.guard_row:  # key-only mode: set back every column of the before image, find the row by key
            pieces = [self._update_head]
            for i, v in enumerate(before):
                if v != "None" and (w is None or i in w):
                    if len(pieces) > 1:
                        pieces.append(", ")
                    pieces += [eq[i], _Var(v)]
            return self._where_pieces(after, pieces + [" WHERE "]) + [";"]
        return None

    def _check_whole(self, before: list[str], after: list[str]) -> None:
        if any(before[i] == "None" or after[i] == "None" for i in range(len(before))):
            raise ValueError(f"{self.target}: the guarded UPDATE needs both whole row images")

    def update_rule(self) -> tuple:
        """The guarded UPDATE (``_guarded_update``) as data, for the native statement builder
        (binlog/_rowimage.c, ``rows``): (head, key columns, writable columns, per column: 1 if in
        the key, ``col=`` and ``col<=>`` texts). Both images whole; a column of the writable ones
        is set back when its literals differ; none differs: all of them."""
        n = len(self.columns)
        cols = tuple(self._writable) if self._writable is not None else tuple(range(n))
        return (self._update_head, self.key or (), cols, bytes(i in self._keyset for i in range(n)),
                tuple(self._eq), tuple(self._ns))

    def _guarded_update(self, before: list[str], after: list[str], const, decode, differ) -> list[str]:
        """The guarded UPDATE's code; ``differ`` None: every literal is decoded already (``decode``
        gives no lines) and each column is compared as a literal."""
        eq, ns = self._eq, self._ns
        w = self._writable
        cols = list(w) if w is not None else list(range(len(before)))
        keyset = self._keyset
        lines: list[str] = []
        # what the WHERE needs whatever changed: the key of the after image, or (no key) all of it
        always = sorted(keyset) if self.key else list(range(len(after)))
        for i in always:
            lines += decode("after", i)
        lines.append("S = []")
        if self.key:
            lines.append("C = [" + ", ".join(f"{const(eq[i])} + {after[i]}" for i in self.key) + "]")
        for i in cols:
            inner = decode("before", i) + ([] if i in always else decode("after", i))
            inner.append(f"if {before[i]} != {after[i]}:")
            inner.append(f"    S.append({const(eq[i])} + {before[i]})")
            if self.key and i not in keyset:
                inner.append(f"    C.append({const(ns[i])} + {after[i]})")
            if differ is None:
                lines += inner
            else:
                lines.append(f"if {differ(i)}:")
                lines += ["    " + line for line in inner]
        # nothing (writable) changed: every writable column set back and matched (all decoded here)
        lines.append("if not S:")
        fallback: list[str] = []
        for i in range(len(before)):
            fallback += decode("before", i) + ([] if i in always else decode("after", i))
        fallback.append("S = [" + ", ".join(f"{const(eq[i])} + {before[i]}" for i in cols) + "]")
        if self.key:
            fallback.append("C += [" + ", ".join(f"{const(ns[i])} + {after[i]}" for i in cols if i not in keyset)
                            + "]")
        lines += ["    " + line for line in fallback]
        if self.key:
            cond = f"{const(' AND ')}.join(C)"
        else:
            cond = self._concat(self._where_pieces(after, []), const)
        lines.append(f"s = {const(self._update_head)} + {const(', ')}.join(S) + {const(' WHERE ')} + {cond} + "
                     f"{const(';')}")
        return lines

    def _where_pieces(self, values: list[str], head: list | str) -> list:
        """``where(values)`` as pieces (text, or _Var for a variable), after ``head``."""
        pieces: list = [head] if isinstance(head, str) else list(head)
        eq, ns = self._eq, self._ns
        if self.key:
            parts = [(eq[i], values[i]) for i in self.key]
            if self.guard_row:
                parts += [(ns[i], values[i]) for i in self._rest if values[i] != "None"]
            tail = ""
        else:
            parts = [(ns[i], v) for i, v in enumerate(values) if v != "None"]
            tail = " LIMIT 1"
        for n, (prefix, v) in enumerate(parts):
            pieces += [" AND " + prefix if n else prefix, _Var(v)]
        if tail:
            pieces.append(tail)
        return pieces

    @staticmethod
    def _concat(pieces: list, const) -> str:
        """An expression concatenating text pieces (adjacent ones merged, each a global) and variables."""
        merged: list = []
        for p in pieces:
            if not isinstance(p, _Var) and merged and not isinstance(merged[-1], _Var):
                merged[-1] += p
            elif p != "":
                merged.append(p)
        names = [str(p) if isinstance(p, _Var) else const(p) for p in merged]
        if not names:
            return "''"
        if len(names) <= 4:
            return " + ".join(names)
        return "''.join((" + ", ".join(names) + "))"

    def where(self, values: Sequence[str | None]) -> str:
        eq, ns = self._eq, self._ns
        if self.key:
            parts = [eq[i] + values[i] for i in self.key]
            if self.guard_row:
                parts += [ns[i] + values[i] for i in self._rest if values[i] is not None]
            return " AND ".join(parts)
        return " AND ".join([ns[i] + v for i, v in enumerate(values) if v is not None]) + " LIMIT 1"

    def undo_insert(self, row: Sequence[str | None]) -> str:
        """The inverse of an INSERT: delete that row."""
        return self._delete_head + self.where(row) + ";"

    def undo_delete(self, row: Sequence[str | None]) -> str:
        """The inverse of a DELETE: insert the row back, every column."""
        if self._writable is not None:
            row = [row[i] for i in self._writable]
        return self._insert_head + ", ".join(v if v is not None else "DEFAULT" for v in row) + ");"

    def undo_update(self, before: Sequence[str | None], after: Sequence[str | None]) -> str:
        """The inverse of an UPDATE: set back the columns it changed, finding the row by its key.

        With ``guard_row`` (and full images), only the changed columns are set back, and the WHERE
        also requires them to still hold the values the update gave them: a row changed again
        since matches nothing (apply stops), and later changes to other columns are kept.
        """
        eq, ns = self._eq, self._ns
        if not self.guard_row:  # key-only mode: the after image holds just the key
            w = self._writable
            sets = ", ".join([eq[i] + v for i, v in enumerate(before) if v is not None and (w is None or i in w)])
            return self._update_head + sets + " WHERE " + self.where(after) + ";"
        changed = [i for i, b in enumerate(before) if b != after[i]] or range(len(before))
        if self._writable is not None:
            writable = self._writable
            changed = [i for i in changed if i in writable] or writable
        sets = ", ".join([eq[i] + before[i] for i in changed])
        if self.key:
            keyset = self._keyset
            cond = " AND ".join([eq[i] + after[i] for i in self.key]
                                + [ns[i] + after[i] for i in changed if i not in keyset])
        else:
            cond = self.where(after)
        return self._update_head + sets + " WHERE " + cond + ";"


class _Var(str):
    """A variable's name among the text pieces of ``TableSQL.code``."""

    __slots__ = ()
