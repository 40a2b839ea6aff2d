"""Parsers for the event bodies the flashback needs (body = no header, no checksum)."""
from __future__ import annotations

import struct

from . import format as F
from .reader import BinlogError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MAX_COLUMNS = 4096  # a table has at most this many columns (MariaDB and MySQL)


def read_packed_int(buf: bytes | memoryview, p: int) -> tuple[int, int]:
    """A length-encoded integer at p: (value, next offset). 251 (NULL) reads as 0."""
    b = buf[p]
    if b < 251:
        return b, p + 1
    if b == 251:
        return 0, p + 1
    if b == 252:
        return buf[p + 1] | (buf[p + 2] << 8), p + 3
    if b == 253:
        return buf[p + 1] | (buf[p + 2] << 8) | (buf[p + 3] << 16), p + 4
    return int.from_bytes(buf[p + 1:p + 9], "little"), p + 9


class FormatDescription:
    __slots__ = (
        "binlog_version",
        "checksum_alg",
        "create_timestamp",
        "header_length",
        "post_header_lengths",
        "server_version",
    )

    def __init__(self, binlog_version: int, server_version: str, create_timestamp: int,
                 header_length: int, post_header_lengths: bytes, checksum_alg: int) -> None:
        self.binlog_version = binlog_version
        self.server_version = server_version
        self.create_timestamp = create_timestamp
        self.header_length = header_length
        self.post_header_lengths = post_header_lengths
        self.checksum_alg = checksum_alg

    @property
    def is_mariadb(self) -> bool:
        return "mariadb" in self.server_version.lower()

    def post_header_len(self, event_type: int) -> int | None:
        i = event_type - 1
        return self.post_header_lengths[i] if 0 <= i < len(self.post_header_lengths) else None

    def __repr__(self) -> str:
        return (f"FormatDescription(v{self.binlog_version}, {self.server_version!r}, "
                f"checksum_alg={self.checksum_alg})")


def parse_format_description(body: bytes | memoryview, checksum_alg: int | None = None
                             ) -> FormatDescription:
    """The body as given by the readers: the alg byte (and checksum slot) already stripped when
    checksums are on. ``checksum_alg`` is what the reader found; if None, it is guessed from
    the body (the trailing alg byte + 4-byte slot)."""
    b = bytes(body)
    version = _U16.unpack_from(b, 0)[0]
    server_version = b[2:52].split(b"\0", 1)[0].decode("ascii", "replace")
    created = _U32.unpack_from(b, 52)[0]
    header_len = b[56]
    rest = b[57:]
    if checksum_alg is None:
        checksum_alg = rest[-5] if len(rest) >= 5 else F.BINLOG_CHECKSUM_ALG_UNDEF
        rest = rest[:-5]
    elif checksum_alg == F.BINLOG_CHECKSUM_ALG_CRC32:
        rest = rest[:-1]           # the reader removed the CRC; the alg byte is left
    elif checksum_alg == F.BINLOG_CHECKSUM_ALG_OFF:
        rest = rest[:-1]           # reader removed the (unused) 4-byte slot; alg byte left
    return FormatDescription(version, server_version, created, header_len, rest, checksum_alg)


class Rotate:
    __slots__ = ("next_file", "pos")

    def __init__(self, next_file: str, pos: int) -> None:
        self.next_file = next_file
        self.pos = pos

    def __repr__(self) -> str:
        return f"Rotate({self.next_file}:{self.pos})"


def parse_rotate(body: bytes | memoryview) -> Rotate:
    return Rotate(bytes(body[8:]).decode("utf-8", "replace"), _U64.unpack_from(body, 0)[0])


class Xid:
    __slots__ = ("xid",)

    def __init__(self, xid: int) -> None:
        self.xid = xid

    def __repr__(self) -> str:
        return f"Xid({self.xid})"


def parse_xid(body: bytes | memoryview) -> Xid:
    return Xid(_U64.unpack_from(body, 0)[0])


class Gtid:
    """MariaDB GTID event: begins an event group (transaction or standalone DDL)."""

    __slots__ = ("commit_id", "domain", "flags", "seq_no", "server_id")

    def __init__(self, domain: int, server_id: int, seq_no: int, flags: int,
                 commit_id: int | None) -> None:
        self.domain = domain
        self.server_id = server_id
        self.seq_no = seq_no
        self.flags = flags
        self.commit_id = commit_id

    @property
    def gtid(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq_no}"

    @property
    def standalone(self) -> bool:
        return bool(self.flags & F.FL_STANDALONE)

    def __repr__(self) -> str:
        return f"Gtid({self.gtid}, flags={self.flags:#x}, commit_id={self.commit_id})"


def parse_gtid(body: bytes | memoryview, server_id: int) -> Gtid:
    seq_no = _U64.unpack_from(body, 0)[0]
    domain = _U32.unpack_from(body, 8)[0]
    flags = body[12]
    commit_id = _U64.unpack_from(body, 13)[0] if flags & F.FL_GROUP_COMMIT_ID else None
    return Gtid(domain, server_id, seq_no, flags, commit_id)


def parse_gtid_list(body: bytes | memoryview) -> list[tuple[int, int, int]]:
    """MariaDB GTID_LIST: [(domain, server_id, seq_no), ...]."""
    n = _U32.unpack_from(body, 0)[0] & 0x0FFFFFFF
    out = []
    for i in range(n):
        d, s, q = struct.unpack_from("<IIQ", body, 4 + 16 * i)
        out.append((d, s, q))
    return out


class Query:
    __slots__ = ("error_code", "exec_time", "schema", "statement", "thread_id")

    def __init__(self, thread_id: int, exec_time: int, error_code: int, schema: str,
                 statement: str) -> None:
        self.thread_id = thread_id
        self.exec_time = exec_time
        self.error_code = error_code
        self.schema = schema
        self.statement = statement

    def __repr__(self) -> str:
        return f"Query({self.schema!r}, {self.statement[:80]!r})"


def parse_query(body: bytes | memoryview) -> Query:
    thread_id, exec_time, schema_len, error_code, status_len = struct.unpack_from("<IIBHH", body, 0)
    p = 13 + status_len
    schema = bytes(body[p:p + schema_len]).decode("utf-8", "replace")
    stmt = bytes(body[p + schema_len + 1:]).decode("utf-8", "replace")
    return Query(thread_id, exec_time, error_code, schema, stmt)


def parse_annotate_rows(body: bytes | memoryview) -> str:
    return bytes(body).decode("utf-8", "replace")


# --- TABLE_MAP ---------------------------------------------------------------------------------

def _bits_msb(data: bytes, count: int) -> list[bool]:
    return [bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(count)]


def _bits_lsb(data: bytes | memoryview, count: int) -> list[bool]:
    return [bool(data[i >> 3] & (1 << (i & 7))) for i in range(count)]


class TableMap:
    """A TABLE_MAP event with its optional metadata (binlog_row_metadata=FULL) decoded.

    Per-column tuples are indexed by column position. ``column_meta`` is the raw type metadata
    (STRING/ENUM/SET: ``byte0 << 8 | byte1`` as sent; BIT: ``bytes << 8 | bits``; NEWDECIMAL:
    ``precision << 8 | scale``; VARCHAR: max byte length; BLOB/GEOMETRY/JSON: length-prefix
    bytes; FLOAT/DOUBLE: pack length; TIME2/DATETIME2/TIMESTAMP2: fractional digits).
    ``real_types`` resolves STRING into ENUM/SET/STRING; ``max_lengths`` is the CHAR byte length.
    """

    __slots__ = (
        "charsets",
        "column_meta",
        "column_names",
        "column_types",
        "default_charset",
        "enum_values",
        "flags",
        "geometry_types",
        "max_lengths",
        "nullable",
        "primary_key",
        "primary_key_prefixes",
        "raw",
        "real_types",
        "schema",
        "set_values",
        "signed",
        "table",
        "table_id",
        "visibility",
    )

    table_id: int
    flags: int
    schema: str
    table: str
    column_types: tuple[int, ...]
    column_meta: tuple[int, ...]
    nullable: tuple[bool, ...]
    real_types: tuple[int, ...]
    max_lengths: tuple[int, ...]
    signed: tuple[bool, ...] | None
    charsets: tuple[int | None, ...] | None
    column_names: tuple[str, ...] | None
    enum_values: tuple[tuple[bytes, ...] | None, ...] | None
    set_values: tuple[tuple[bytes, ...] | None, ...] | None
    geometry_types: tuple[int | None, ...] | None
    primary_key: tuple[int, ...] | None
    primary_key_prefixes: tuple[int, ...] | None
    visibility: tuple[bool, ...] | None
    default_charset: int | None
    raw: bytes

    @property
    def column_count(self) -> int:
        return len(self.column_types)

    def same_shape(self, other: TableMap) -> bool:
        """True when both maps describe the same table the same way (body bytes after the id)."""
        return self.raw[6:] == other.raw[6:]

    def __repr__(self) -> str:
        return (f"TableMap({self.table_id}, {self.schema}.{self.table}, "
                f"{len(self.column_types)} columns, pk={self.primary_key})")


def _column_meta(ctype: int, meta: bytes, p: int) -> tuple[int, int]:
    if ctype in (F.MYSQL_TYPE_FLOAT, F.MYSQL_TYPE_DOUBLE, F.MYSQL_TYPE_BLOB, F.MYSQL_TYPE_TINY_BLOB,
                 F.MYSQL_TYPE_MEDIUM_BLOB, F.MYSQL_TYPE_LONG_BLOB, F.MYSQL_TYPE_GEOMETRY,
                 F.MYSQL_TYPE_JSON, F.MYSQL_TYPE_TIMESTAMP2, F.MYSQL_TYPE_DATETIME2,
                 F.MYSQL_TYPE_TIME2, F.MYSQL_TYPE_BLOB_COMPRESSED):
        return meta[p], p + 1
    if ctype in (F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING, F.MYSQL_TYPE_VARCHAR_COMPRESSED):
        return meta[p] | (meta[p + 1] << 8), p + 2
    if ctype == F.MYSQL_TYPE_BIT:       # byte0 = bits % 8, byte1 = whole bytes
        return (meta[p + 1] << 8) | meta[p], p + 2
    if ctype in (F.MYSQL_TYPE_NEWDECIMAL, F.MYSQL_TYPE_STRING, F.MYSQL_TYPE_ENUM, F.MYSQL_TYPE_SET):
        return (meta[p] << 8) | meta[p + 1], p + 2
    return 0, p


def string_real_type(meta: int) -> tuple[int, int]:
    """(real type, max byte length) for a MYSQL_TYPE_STRING column's metadata.

    byte0 is the real type (STRING/ENUM/SET); for CHAR columns longer than 255 bytes, bits
    0x30 of byte0 carry the two high bits of the length, inverted (MySQL bug #37426)."""
    b0, b1 = meta >> 8, meta & 0xFF
    if b0 and (b0 & 0x30) != 0x30:
        return b0 | 0x30, b1 | (((b0 & 0x30) ^ 0x30) << 4)
    return (b0 or F.MYSQL_TYPE_STRING), b1


def parse_table_map(body: bytes | memoryview, post_header_len: int = 8,
                    mariadb: bool = True) -> TableMap:
    """Parse a TABLE_MAP body. ``mariadb`` selects MariaDB's rules for which columns carry a
    signedness bit / charset entry (see format.MARIADB_*); take it from the FORMAT_DESCRIPTION
    (``FormatDescription.is_mariadb``)."""
    b = bytes(body)
    tm = TableMap()
    tm.raw = b
    if post_header_len == 6:
        tm.table_id = _U32.unpack_from(b, 0)[0]
        p = 4
    else:
        tm.table_id = int.from_bytes(b[0:6], "little")
        p = 6
    tm.flags = _U16.unpack_from(b, p)[0]
    p += 2
    n = b[p]
    tm.schema = b[p + 1:p + 1 + n].decode("utf-8", "replace")
    p += n + 2
    n = b[p]
    tm.table = b[p + 1:p + 1 + n].decode("utf-8", "replace")
    p += n + 2
    ncols, p = read_packed_int(b, p)
    if not 0 < ncols <= MAX_COLUMNS or p + ncols > len(b):
        raise BinlogError(f"table map of {tm.schema}.{tm.table}: {ncols} columns in a {len(b)}-byte event "
                          "(a damaged event)")
    types = tuple(b[p:p + ncols])
    p += ncols
    mlen, p = read_packed_int(b, p)
    meta_bytes = b[p:p + mlen]
    p += mlen
    metas = []
    mp = 0
    for t in types:
        m, mp = _column_meta(t, meta_bytes, mp)
        metas.append(m)
    tm.column_types = types
    tm.column_meta = tuple(metas)
    nb = (ncols + 7) // 8
    tm.nullable = tuple(_bits_lsb(b[p:p + nb], ncols))
    p += nb
    real, maxlen = [], []
    for t, m in zip(types, metas):
        if t == F.MYSQL_TYPE_STRING:
            rt, ml = string_real_type(m)
            real.append(rt)
            maxlen.append(ml)
        else:
            real.append(t)
            maxlen.append(m if t in (F.MYSQL_TYPE_VARCHAR, F.MYSQL_TYPE_VAR_STRING) else 0)
    tm.real_types = tuple(real)
    tm.max_lengths = tuple(maxlen)
    tm.signed = tm.charsets = tm.column_names = tm.enum_values = tm.set_values = None
    tm.geometry_types = tm.primary_key = tm.primary_key_prefixes = tm.visibility = None
    tm.default_charset = None
    _parse_optional_metadata(tm, b, p, mariadb)
    return tm


def _parse_optional_metadata(tm: TableMap, b: bytes, p: int, mariadb: bool) -> None:
    types = tm.real_types
    ncols = len(types)
    numeric_types = F.MARIADB_NUMERIC_TYPES if mariadb else F.NUMERIC_TYPES
    character_types = F.MARIADB_CHARACTER_TYPES if mariadb else F.CHARACTER_TYPES
    numeric = [i for i, t in enumerate(types) if t in numeric_types]
    character = [i for i, t in enumerate(types) if t in character_types]
    enumset = [i for i, t in enumerate(types) if t in F.ENUM_SET_TYPES]
    enums = [i for i, t in enumerate(types) if t == F.MYSQL_TYPE_ENUM]
    sets = [i for i, t in enumerate(types) if t == F.MYSQL_TYPE_SET]
    geoms = [i for i, t in enumerate(types) if t == F.MYSQL_TYPE_GEOMETRY]
    charsets: list[int | None] = [None] * ncols
    have_cs = False
    end = len(b)
    while p < end:
        ftype = b[p]
        flen, p = read_packed_int(b, p + 1)
        v = b[p:p + flen]
        p += flen
        if ftype == F.SIGNEDNESS:
            bits = _bits_msb(v, len(numeric))
            signed = [False] * ncols
            for i, unsigned in zip(numeric, bits):
                signed[i] = not unsigned
            tm.signed = tuple(signed)
        elif ftype in (F.DEFAULT_CHARSET, F.ENUM_AND_SET_DEFAULT_CHARSET):
            cols = character if ftype == F.DEFAULT_CHARSET else enumset
            default, q = read_packed_int(v, 0)
            if ftype == F.DEFAULT_CHARSET:
                tm.default_charset = default
            for i in cols:
                charsets[i] = default
            while q < len(v):
                idx, q = read_packed_int(v, q)
                cs, q = read_packed_int(v, q)
                if idx >= len(cols):
                    raise BinlogError(f"table map {tm.schema}.{tm.table}: charset entry for "
                                      f"column #{idx} of {len(cols)}")
                charsets[cols[idx]] = cs
            have_cs = True
        elif ftype in (F.COLUMN_CHARSET, F.ENUM_AND_SET_COLUMN_CHARSET):
            cols = character if ftype == F.COLUMN_CHARSET else enumset
            q = 0
            got = []
            while q < len(v):
                cs, q = read_packed_int(v, q)
                got.append(cs)
            if len(got) != len(cols):
                raise BinlogError(f"table map {tm.schema}.{tm.table}: {len(got)} column charsets "
                                  f"for {len(cols)} columns")
            for i, cs in zip(cols, got):
                charsets[i] = cs
            have_cs = True
        elif ftype == F.COLUMN_NAME:
            names = []
            q = 0
            while q < len(v):
                n, q = read_packed_int(v, q)
                names.append(v[q:q + n].decode("utf-8", "replace"))
                q += n
            tm.column_names = tuple(names)
        elif ftype in (F.SET_STR_VALUE, F.ENUM_STR_VALUE):
            cols = sets if ftype == F.SET_STR_VALUE else enums
            per: list[tuple[bytes, ...] | None] = [None] * ncols
            q = 0
            k = 0
            while q < len(v):
                count, q = read_packed_int(v, q)
                vals = []
                for _ in range(count):
                    n, q = read_packed_int(v, q)
                    vals.append(v[q:q + n])
                    q += n
                if k < len(cols):
                    per[cols[k]] = tuple(vals)
                k += 1
            if ftype == F.SET_STR_VALUE:
                tm.set_values = tuple(per)
            else:
                tm.enum_values = tuple(per)
        elif ftype == F.GEOMETRY_TYPE:
            gt: list[int | None] = [None] * ncols
            q = 0
            k = 0
            while q < len(v):
                g, q = read_packed_int(v, q)
                if k < len(geoms):
                    gt[geoms[k]] = g
                k += 1
            tm.geometry_types = tuple(gt)
        elif ftype == F.SIMPLE_PRIMARY_KEY:
            pk = []
            q = 0
            while q < len(v):
                i, q = read_packed_int(v, q)
                pk.append(i)
            tm.primary_key = tuple(pk)
            tm.primary_key_prefixes = tuple(0 for _ in pk)
        elif ftype == F.PRIMARY_KEY_WITH_PREFIX:
            pk, pref = [], []
            q = 0
            while q < len(v):
                i, q = read_packed_int(v, q)
                n, q = read_packed_int(v, q)
                pk.append(i)
                pref.append(n)
            tm.primary_key = tuple(pk)
            tm.primary_key_prefixes = tuple(pref)
        elif ftype == F.COLUMN_VISIBILITY:
            tm.visibility = tuple(_bits_msb(v, ncols))
        # unknown fields are skipped (forward compatible)
    if have_cs:
        tm.charsets = tuple(charsets)


# --- rows events ---------------------------------------------------------------------------

class RowsEventHeader:
    __slots__ = (
        "column_count",
        "flags",
        "kind",
        "present_after",
        "present_before",
        "rows_offset",
        "table_id",
        "type",
    )

    def __init__(self, table_id: int, flags: int, kind: str, column_count: int,
                 present_before: bytes, present_after: bytes | None, rows_offset: int,
                 type: int) -> None:
        self.table_id = table_id
        self.flags = flags
        self.kind = kind
        self.column_count = column_count
        self.present_before = present_before
        self.present_after = present_after
        self.rows_offset = rows_offset
        self.type = type

    def __repr__(self) -> str:
        return (f"RowsEventHeader({self.kind}, table_id={self.table_id}, "
                f"columns={self.column_count}, flags={self.flags:#x})")


_KIND = F.ROWS_EVENT_KIND


def parse_rows_header(body: bytes | memoryview, event_type: int,
                      post_header_len: int | None = None) -> RowsEventHeader:
    """Rows event v1 (23-25) or v2 (30-32). For update events, the before image's present
    bitmap is ``present_before`` and the after image's is ``present_after``; for insert the
    (only) image is the after image and ``present_after`` is set; for delete ``present_before``.
    """
    kind = _KIND.get(event_type)
    if kind is None:
        if event_type in F.COMPRESSED_EVENTS:
            raise BinlogError(f"compressed rows event (type {event_type}, log_bin_compress=ON) "
                              f"is not supported")
        raise BinlogError(f"event type {event_type} is not a rows event")
    if post_header_len == 6:
        table_id = _U32.unpack_from(body, 0)[0]
        p = 4
    else:
        table_id = int.from_bytes(body[0:6], "little")
        p = 6
    flags = body[p] | (body[p + 1] << 8)
    p += 2
    if event_type in F.ROWS_EVENTS_V2:
        extra = body[p] | (body[p + 1] << 8)     # includes its own 2 bytes
        p += extra
    b0 = body[p]
    if b0 < 251:
        ncols = b0
        p += 1
    else:
        ncols, p = read_packed_int(body, p)
    nb = (ncols + 7) >> 3
    if not 0 < ncols <= MAX_COLUMNS or p + nb * (2 if kind == "update" else 1) > len(body):
        raise BinlogError(f"rows event for table id {table_id}: {ncols} columns in a {len(body)}-byte event "
                          "(a damaged event)")
    first = bytes(body[p:p + nb])
    p += nb
    if kind == "update":
        second = bytes(body[p:p + nb])
        p += nb
        return RowsEventHeader(table_id, flags, kind, ncols, first, second, p, event_type)
    if kind == "insert":
        return RowsEventHeader(table_id, flags, kind, ncols, first, first, p, event_type)
    return RowsEventHeader(table_id, flags, kind, ncols, first, first, p, event_type)
