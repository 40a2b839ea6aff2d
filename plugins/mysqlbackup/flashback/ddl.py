"""Which tables a DDL statement touches (for the flashback preflight). Pure, best effort, loud.

A flashback across a DDL on one of its tables would write statements for a table shape that no
longer exists, so the engine refuses and names the statement. Statements this parser cannot
read are reported as touching ``(schema, "*")``: refusing is safer than guessing.
"""
from __future__ import annotations

import functools
import re

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$\u0080-\uffff]+)"
_QNAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S)
_TRANSACTION = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|XA\s|SAVEPOINT|RELEASE\s+SAVEPOINT)\b", re.I)
_DML = re.compile(r"\s*(INSERT|REPLACE|UPDATE|DELETE|LOAD\s+DATA)\b", re.I)
@functools.cache
def _patterns() -> tuple[list[re.Pattern], re.Pattern, re.Pattern]:
    """The DDL patterns, compiled when the first DDL is read: with the non-ASCII identifier range
    under re.I they take about 80 ms to compile, which every flashback paid at import before (a
    window without DDL never needs them)."""
    tables = [
        re.compile(rf"\b(?:ALTER|CREATE|DROP|TRUNCATE|OPTIMIZE|REPAIR|ANALYZE)\s+(?:ONLINE\s+|OR\s+REPLACE\s+|"
                   rf"TEMPORARY\s+|IGNORE\s+)*TABLES?\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?((?:{_QNAME})(?:\s*,\s*{_QNAME})*)",
                   re.I),
        re.compile(rf"\bTRUNCATE\s+(?!TABLE\b)({_QNAME})", re.I),
        re.compile(rf"\b(?:CREATE|DROP)\s+(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX\s+{_IDENT}\s+ON\s+({_QNAME})", re.I),
        re.compile(r"\bRENAME\s+TABLES?\s+(.+)$", re.I | re.S),
    ]
    database = re.compile(rf"\b(?:DROP|ALTER)\s+(?:DATABASE|SCHEMA)\s+(?:IF\s+EXISTS\s+)?({_IDENT})", re.I)
    name = re.compile(rf"({_IDENT})(?:\s*\.\s*({_IDENT}))?")
    return tables, database, name


def _unquote(ident: str) -> str:
    return ident[1:-1].replace("``", "`") if ident.startswith("`") else ident


def _names(text: str, schema: str | None) -> set[tuple[str | None, str]]:
    out = set()
    for m in _patterns()[2].finditer(text):
        a, b = m.group(1), m.group(2)
        if a.upper() in ("TO", "IF", "EXISTS", "NOT", "WAIT", "NOWAIT", "CASCADE", "RESTRICT"):
            continue
        out.add((_unquote(a), _unquote(b)) if b else (schema, _unquote(a)))
    return out


def classify(statement: str) -> str:
    """'transaction', 'dml' (statement-based row change) or 'ddl'."""
    text = _COMMENTS.sub(" ", statement)
    if _TRANSACTION.match(text):
        return "transaction"
    if _DML.match(text):
        return "dml"
    return "ddl"


def touched_tables(statement: str, schema: str | None) -> set[tuple[str | None, str]]:
    """(schema, table) pairs a DDL statement changes; (schema, '*') for a whole database or unknown."""
    text = _COMMENTS.sub(" ", statement).strip()
    tables, database, _ = _patterns()
    m = database.search(text)
    if m:
        return {(_unquote(m.group(1)), "*")}
    found: set[tuple[str | None, str]] = set()
    for pat in tables:
        for m in pat.finditer(text):
            found |= _names(m.group(1), schema)
    if not found and re.match(r"\s*(GRANT|REVOKE|CREATE\s+USER|DROP\s+USER|ALTER\s+USER|SET\s|FLUSH|"
                              r"CREATE\s+(DATABASE|SCHEMA)|CREATE\s+(OR\s+REPLACE\s+)?(VIEW|FUNCTION|PROCEDURE|"
                              r"TRIGGER|EVENT|SEQUENCE)|DROP\s+(VIEW|FUNCTION|PROCEDURE|TRIGGER|EVENT))", text, re.I):
        return set()  # does not change any table's rows or shape
    return found or {(schema, "*")}
