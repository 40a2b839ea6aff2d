"""The JSON Schema pieces of this project's trigger forms (no Airflow import).

What JSON Schema can check is checked when a run is triggered: the UI form refuses it, and the
REST API answers 400. Names, datetimes, binlog positions, GTIDs and connection ids are checked by
pattern; lists and texts by length. Each pattern has a hint: the api-server's trigger guard
(plugins/web/guard.py) shows the hint instead of the regex in a refusal.
"""
from __future__ import annotations

# a MySQL identifier: unquoted letters, digits, $, _ and U+0080..U+FFFF, or anything printable in
# backticks (a backtick doubled); at most 64 characters
IDENT = r"(?:`(?:[^`\x00-\x1f]|``){1,64}`|[0-9A-Za-z$_\u0080-\uffff]{1,64})"
TABLE = rf"^{IDENT}(?:\.{IDENT})?$"
DATABASE = rf"^{IDENT}$"
DATETIME = (r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[T ](?:[01][0-9]|2[0-3]):[0-5][0-9]"
            r"(?::[0-5][0-9](?:\.[0-9]{1,6})?)?(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?$")
POSITION = r"^[A-Za-z0-9_.+-]{1,200}\.[0-9]{6,}:[0-9]{1,20}$"
GTID = r"^[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}$"
CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"
LABEL = r"^[0-9]{8}-[0-9]{6}F(?:_[0-9]{8}-[0-9]{6}I)?$"
DATE = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
MAX_LIST = 500
TABLE_MAX_LENGTH = 270  # two quoted 64-character names with every backtick doubled, and the dot

HINTS = {
    TABLE: "db.table or table, names of letters, digits, $ and _, other names in backticks: `my db`.`t.1`",
    DATABASE: "a database name of letters, digits, $ and _, other names in backticks: `my-db`",
    DATETIME: "YYYY-MM-DD HH:MM:SS, UTC unless an offset is given (2026-11-24 10:00:00, 2026-11-24T12:00:00+02:00)",
    POSITION: "FILE:POS of a binlog, like binlog.000012:4",
    GTID: "a MariaDB GTID DOMAIN-SERVER-SEQ, like 0-1-4711",
    CONN_ID: "an Airflow connection id (letters, digits, _ . -)",
    LABEL: "a backup label YYYYMMDD-HHMMSSF or YYYYMMDD-HHMMSSF_YYYYMMDD-HHMMSSI (UTC), like 20261124-020000F",
    DATE: "a day YYYY-MM-DD (UTC), like 2026-11-24",
}


def hint_for(message: str) -> str:
    """A refusal with each known regex replaced by what it expects, in words."""
    for pattern, hint in HINTS.items():
        message = message.replace(f"does not match {pattern!r}", f"does not match the expected form: {hint}")
    return message


# where mysql_flashback reads the binlog (param binlog_source)
BINLOG_SOURCES = ("auto", "live", "archive")
BINLOG_SOURCE_LABELS = {
    "auto": "auto: the live server while it holds the whole window, else the binlog archive",
    "live": "live: the server's own binlogs (refused when it purged part of the window)",
    "archive": "archive: the instance's continuous binlog archive on its storage host",
}
