"""Our own binlog v4 reader (files and a live replication client) and row-image decoders.

See docs/flashback.md ("Why our own binlog reader", "Literals").
"""
from __future__ import annotations

from .decode import RowCodec, decode_value
from .events import (
                     FormatDescription,
                     Gtid,
                     Query,
                     Rotate,
                     RowsEventHeader,
                     TableMap,
                     Xid,
                     parse_format_description,
                     parse_gtid,
                     parse_query,
                     parse_rotate,
                     parse_rows_header,
                     parse_table_map,
                     parse_xid,
)
from .reader import BinlogError, DamagedBinlog, RawEvent, iter_events, iter_file_events

__all__ = [
                     "BinlogError",
                     "DamagedBinlog",
                     "FormatDescription",
                     "Gtid",
                     "Query",
                     "RawEvent",
                     "Rotate",
                     "RowCodec",
                     "RowsEventHeader",
                     "TableMap",
                     "Xid",
                     "decode_value",
                     "iter_events",
                     "iter_file_events",
                     "parse_format_description",
                     "parse_gtid",
                     "parse_query",
                     "parse_rotate",
                     "parse_rows_header",
                     "parse_table_map",
                     "parse_xid",
]
