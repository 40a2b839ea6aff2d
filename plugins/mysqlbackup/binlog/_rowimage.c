/* Row images -> SQL literals in native code: the optional fast path of binlog/decode.py.
 *
 * Why native: the flashback profile (docs/flashback.md, "Where the time goes") spends 70-75% of
 * its time decoding wide rows and rows without a key in the generated Python codecs, 1-2 us per
 * value in CPython; the C tool decodes nothing (it reverses event bytes) and runs 3-5x faster.
 * This module decodes one row image (the columns of a rows event's present bitmap) in one call
 * and returns the literal texts (image), or decodes a whole rows event and builds its inverse
 * statements from TableSQL's template or guarded-UPDATE rule (rows), as a list or as the
 * spool's UTF-8 block. decode.py uses it only when every column of the image is of a type
 * handled here, and keeps the generated Python decoders as the reference and the fallback
 * (no compiler on the host, MYSQLBACKUP_NATIVE=0): the tests compare both on every type.
 *
 * Every literal is the exact text the Python decoder makes (docs/flashback.md, "Literals"):
 * integers in decimal, FLOAT/DOUBLE by CPython's own repr (PyOS_double_to_string 'r'), DECIMAL
 * digit groups, the temporal types with their fractions, ENUM/SET members looked up in tables
 * decode.py builds, strings quoted with the same escapes when they are valid UTF-8 (CPython's
 * strict decoder decides) or as hex. A DECIMAL digit group out of range (never written by a
 * server: Python would print a number carried across groups) raises, as do a DECIMAL whose
 * scale is above its precision (a damaged table map) and an image that runs past the event.
 *
 * image(buf, p, spec) -> (literal, ..., new_p): the literals of the wanted columns in order.
 *   spec = (codes: bytes, 8 per present column, objs: tuple, one per present column)
 *   code = kind u8, flags u8 (1 nullable, 2 wanted), a u16, b u16, c u16 (little-endian)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

enum {
    K_I8S = 1, K_I8U, K_I16S, K_I16U, K_I24S, K_I24U, K_I32S, K_I32U, K_I64S, K_I64U,
    K_FLOAT, K_DOUBLE, K_YEAR, K_DATE, K_DECIMAL, K_TIME2, K_DATETIME2, K_TIMESTAMP2,
    K_ENUM, K_SET, K_BIN, K_UTF8, K_OTHER, K_BIT
};
#define F_NULLABLE 1
#define F_WANTED 2

static PyObject *binlog_error = NULL;   /* set_error(cls): decode.py's BinlogError */
static PyObject *s_null = NULL;         /* 'NULL' */
static const char HEX[] = "0123456789abcdef";
static const int DIG2BYTES[10] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};

static PyObject *overrun(void) {
    PyErr_SetString(binlog_error ? binlog_error : PyExc_ValueError,
                    "row image overruns the rows event");
    return NULL;
}

static PyObject *ascii(const char *s, Py_ssize_t n) {
    PyObject *u = PyUnicode_New(n, 127);
    if (u) memcpy(PyUnicode_1BYTE_DATA(u), s, n);
    return u;
}

static int fmt_u64(char *out, uint64_t v) {
    char t[24];
    int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (int i = 0; i < n; i++) out[i] = t[n - 1 - i];
    return n;
}

static int fmt_i64(char *out, int64_t v) {
    if (v < 0) { out[0] = '-'; return 1 + fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v); }
    return fmt_u64(out, (uint64_t)v);
}

/* %0<w>d of a non-negative value (wider values are written whole, as printf does) */
static int fmt_pad(char *out, uint64_t v, int w) {
    char t[24];
    int n = fmt_u64(t, v), k = 0;
    for (; k < w - n; k++) out[k] = '0';
    memcpy(out + k, t, n);
    return k + n;
}

/* Python's %0<w>d of any int64 (a negative value: '-' then the digits padded to w - 1) */
static int fmt_pyd(char *out, int64_t v, int w) {
    if (v < 0) { out[0] = '-'; return 1 + fmt_pad(out + 1, (uint64_t)0 - (uint64_t)v, w - 1); }
    return fmt_pad(out, (uint64_t)v, w);
}

static int64_t floordiv(int64_t a, int64_t b) { int64_t q = a / b; return (a % b && (a < 0) != (b < 0)) ? q - 1 : q; }
static int64_t floormod(int64_t a, int64_t b) { int64_t r = a % b; return (r && (r < 0) != (b < 0)) ? r + b : r; }

static uint64_t be(const unsigned char *s, int n) {
    uint64_t x = 0;
    for (int i = 0; i < n; i++) x = x << 8 | s[i];
    return x;
}

static uint64_t le(const unsigned char *s, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = x << 8 | s[i];
    return x;
}

static PyObject *lookup(PyObject *obj, uint64_t x) {
    if (obj != Py_None && PyTuple_Check(obj)) {
        if (x < (uint64_t)PyTuple_GET_SIZE(obj)) {
            PyObject *r = PyTuple_GET_ITEM(obj, (Py_ssize_t)x);
            Py_INCREF(r);
            return r;
        }
    } else if (obj != Py_None) {
        PyObject *n = PyLong_FromUnsignedLongLong(x);
        if (!n) return NULL;
        PyObject *r = PyObject_CallOneArg(obj, n);
        Py_DECREF(n);
        return r;
    }
    char t[24];
    return ascii(t, fmt_u64(t, x));
}

static PyObject *fraction_tail(char *o, int n, uint64_t x, int fsp, int fb, int close) {
    if (fsp) {
        uint64_t mask = (fb ? ((uint64_t)1 << (8 * fb)) - 1 : 0);
        uint64_t f = x & mask;
        if (fsp % 2) f /= 10;
        o[n++] = '.';
        n += fmt_pad(o + n, f, fsp);
    }
    if (close) o[n++] = '\'';
    return ascii(o, n);
}

static PyObject *decimal(const unsigned char *s, int prec, int scale, int size) {
    unsigned char d[40];
    char o[96];
    int intg = prec - scale, intg0 = intg / 9, intg0x = intg % 9;
    int frac0 = scale / 9, frac0x = scale % 9;
    /* scale above precision or no digits (a damaged table map: a server never writes one): its
     * digit groups are not the value's size bytes (a negative DIG2BYTES index, reads past them) */
    if (intg < 0 || size < 1) {
        PyErr_Format(binlog_error ? binlog_error : PyExc_ValueError, "DECIMAL(%d,%d): no such type", prec, scale);
        return NULL;
    }
    if (size > (int)sizeof d) return overrun();
    memcpy(d, s, size);
    int neg = !(d[0] & 0x80);
    int n = 0;
    if (neg) {
        for (int i = 0; i < size; i++) d[i] ^= 0xFF;
        o[n++] = '-';
    }
    d[0] ^= 0x80;
    const unsigned char *q = d;
    static const uint32_t pow10[10] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000,
                                       1000000000};
    int started = 0;
    int lb = DIG2BYTES[intg0x];
    if (lb) {
        uint64_t v = be(q, lb);
        q += lb;
        if (v >= pow10[intg0x]) goto bad;
        if (v) { n += fmt_u64(o + n, v); started = 1; }
    }
    for (int g = 0; g < intg0; g++, q += 4) {
        uint64_t v = be(q, 4);
        if (v >= 1000000000u) goto bad;
        if (started) n += fmt_pad(o + n, v, 9);
        else if (v) { n += fmt_u64(o + n, v); started = 1; }
    }
    if (!started) o[n++] = '0';
    if (scale) {
        o[n++] = '.';
        for (int g = 0; g < frac0; g++, q += 4) {
            uint64_t v = be(q, 4);
            if (v >= 1000000000u) goto bad;
            n += fmt_pad(o + n, v, 9);
        }
        int tb = DIG2BYTES[frac0x];
        if (tb) {
            uint64_t v = be(q, tb);
            if (v >= pow10[frac0x]) goto bad;
            n += fmt_pad(o + n, v, frac0x);
        }
    }
    return ascii(o, n);
bad:
    PyErr_SetString(binlog_error ? binlog_error : PyExc_ValueError,
                    "DECIMAL value with a digit group out of range");
    return NULL;
}

static PyObject *hex_literal(const char *pfx, Py_ssize_t np, const unsigned char *s, Py_ssize_t len,
                             Py_ssize_t padto) {
    Py_ssize_t h = 2 * len < padto ? padto : 2 * len;
    PyObject *u = PyUnicode_New(np + h + 1, 127);
    if (!u) return NULL;
    char *o = (char *)PyUnicode_1BYTE_DATA(u);
    memcpy(o, pfx, np);
    o += np;
    for (Py_ssize_t i = 0; i < len; i++) {
        *o++ = HEX[s[i] >> 4];
        *o++ = HEX[s[i] & 15];
    }
    for (Py_ssize_t i = 2 * len; i < h; i++) *o++ = '0';
    *o = '\'';
    return u;
}

static PyObject *prefixed_hex(PyObject *pfx, const unsigned char *s, Py_ssize_t len) {
    Py_ssize_t np;
    const char *p = PyUnicode_AsUTF8AndSize(pfx, &np);
    if (!p) return NULL;
    return hex_literal(p, np, s, len, 0);
}

static PyObject *utf8_literal(const unsigned char *s, Py_ssize_t len, PyObject *fallback) {
    char stack[1024];
    Py_ssize_t cap = 2 * len + 2;
    char *t = cap <= (Py_ssize_t)sizeof stack ? stack : PyMem_Malloc(cap);
    if (!t) return PyErr_NoMemory();
    Py_ssize_t n = 0;
    t[n++] = '\'';
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        switch (c) {
        case '\\': t[n++] = '\\'; t[n++] = '\\'; break;
        case '\'': t[n++] = '\\'; t[n++] = '\''; break;
        case 0: t[n++] = '\\'; t[n++] = '0'; break;
        case '\n': t[n++] = '\\'; t[n++] = 'n'; break;
        case '\r': t[n++] = '\\'; t[n++] = 'r'; break;
        case 0x1a: t[n++] = '\\'; t[n++] = 'Z'; break;
        default: t[n++] = (char)c;
        }
    }
    t[n++] = '\'';
    /* escapes replace ASCII bytes by ASCII bytes: this decodes iff the value's bytes do */
    PyObject *u = PyUnicode_DecodeUTF8(t, n, NULL);
    if (t != stack) PyMem_Free(t);
    if (!u && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return prefixed_hex(fallback, s, len);
    }
    return u;
}

static PyObject *value(int kind, int a, int b, int c, PyObject *obj, const unsigned char *s) {
    char o[64];
    int n;
    switch (kind) {
    case K_I8S: return ascii(o, fmt_i64(o, (int8_t)s[0]));
    case K_I8U: return ascii(o, fmt_u64(o, s[0]));
    case K_I16S: return ascii(o, fmt_i64(o, (int16_t)le(s, 2)));
    case K_I16U: return ascii(o, fmt_u64(o, le(s, 2)));
    case K_I24S: { int64_t v = (int64_t)le(s, 3); if (v & 0x800000) v -= 0x1000000; return ascii(o, fmt_i64(o, v)); }
    case K_I24U: return ascii(o, fmt_u64(o, le(s, 3)));
    case K_I32S: return ascii(o, fmt_i64(o, (int32_t)le(s, 4)));
    case K_I32U: return ascii(o, fmt_u64(o, le(s, 4)));
    case K_I64S: return ascii(o, fmt_i64(o, (int64_t)le(s, 8)));
    case K_I64U: return ascii(o, fmt_u64(o, le(s, 8)));
    case K_FLOAT: case K_DOUBLE: {
        double d;
        if (kind == K_FLOAT) { uint32_t w = (uint32_t)le(s, 4); float f; memcpy(&f, &w, 4); d = f; }
        else { uint64_t w = le(s, 8); memcpy(&d, &w, 8); }
        char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (!r) return NULL;
        PyObject *u = ascii(r, (Py_ssize_t)strlen(r));
        PyMem_Free(r);
        return u;
    }
    case K_YEAR:
        if (!s[0]) return ascii("0000", 4);
        return ascii(o, fmt_u64(o, 1900 + s[0]));
    case K_DATE: {
        uint64_t x = le(s, 3);
        n = 0;
        o[n++] = '\'';
        n += fmt_pad(o + n, x >> 9, 4); o[n++] = '-';
        n += fmt_pad(o + n, x >> 5 & 15, 2); o[n++] = '-';
        n += fmt_pad(o + n, x & 31, 2);
        o[n++] = '\'';
        return ascii(o, n);
    }
    case K_DECIMAL: return decimal(s, a, b, c);
    case K_TIME2: {
        int fb = (a + 1) / 2;
        int64_t x = (int64_t)(be(s, 3 + fb) - ((uint64_t)0x800000 << (8 * fb)));
        n = 0;
        o[n++] = '\'';
        if (x < 0) { x = -x; o[n++] = '-'; }
        int64_t h = fb ? x >> (8 * fb) : x;
        n += fmt_pad(o + n, (uint64_t)(h >> 12 & 1023), 2); o[n++] = ':';
        n += fmt_pad(o + n, (uint64_t)(h >> 6 & 63), 2); o[n++] = ':';
        n += fmt_pad(o + n, (uint64_t)(h & 63), 2);
        return fraction_tail(o, n, (uint64_t)x, a, fb, 1);
    }
    case K_DATETIME2: {
        int fb = (a + 1) / 2;
        /* the unsigned difference wraps to the signed value (8 bytes at fsp 5-6) */
        int64_t x = (int64_t)(be(s, 5 + fb) - ((uint64_t)0x8000000000 << (8 * fb)));
        int64_t d = x >> (17 + 8 * fb);   /* arithmetic shifts: Python's >> on negatives */
        int64_t h = (x >> (8 * fb)) & 131071;
        int64_t ym = d >> 5;
        n = 0;
        o[n++] = '\'';
        n += fmt_pyd(o + n, floordiv(ym, 13), 4); o[n++] = '-';
        n += fmt_pyd(o + n, floormod(ym, 13), 2); o[n++] = '-';
        n += fmt_pyd(o + n, d & 31, 2); o[n++] = ' ';
        n += fmt_pad(o + n, (uint64_t)(h >> 12), 2); o[n++] = ':';
        n += fmt_pad(o + n, (uint64_t)(h >> 6 & 63), 2); o[n++] = ':';
        n += fmt_pad(o + n, (uint64_t)(h & 63), 2);
        return fraction_tail(o, n, (uint64_t)x, a, fb, 1);
    }
    case K_TIMESTAMP2: {
        int fb = (a + 1) / 2;
        uint64_t x = be(s, 4 + fb);
        uint64_t sec = fb ? x >> (8 * fb) : x;
        n = 0;
        o[n++] = '\'';
        if (!sec) {
            memcpy(o + n, "0000-00-00 00:00:00", 19);
            n += 19;
        } else {
            time_t t = (time_t)sec;
            struct tm tm;
            if (!gmtime_r(&t, &tm)) { PyErr_SetString(PyExc_OverflowError, "timestamp out of range"); return NULL; }
            n += fmt_pyd(o + n, (int64_t)tm.tm_year + 1900, 4); o[n++] = '-';
            n += fmt_pad(o + n, (uint64_t)tm.tm_mon + 1, 2); o[n++] = '-';
            n += fmt_pad(o + n, (uint64_t)tm.tm_mday, 2); o[n++] = ' ';
            n += fmt_pad(o + n, (uint64_t)tm.tm_hour, 2); o[n++] = ':';
            n += fmt_pad(o + n, (uint64_t)tm.tm_min, 2); o[n++] = ':';
            n += fmt_pad(o + n, (uint64_t)tm.tm_sec, 2);
        }
        return fraction_tail(o, n, x, a, fb, 1);
    }
    case K_ENUM: return lookup(obj, le(s, a));
    case K_BIT: {  /* b'<binary digits, no leading zeros>' of the big-endian value (a: 0-8 bytes) */
        uint64_t x = be(s, a);
        char t[2 + 64 + 1];
        int k = 0;
        t[k++] = 'b'; t[k++] = '\'';
        if (!x) t[k++] = '0';
        for (int i = x ? 63 - __builtin_clzll(x) : -1; i >= 0; i--) t[k++] = (char)('0' + ((x >> i) & 1));
        t[k++] = '\'';
        return ascii(t, k);
    }
    case K_SET: return lookup(obj, le(s, a));
    default:
        PyErr_Format(PyExc_SystemError, "_rowimage: unknown column kind %d", kind);
        return NULL;
    }
}

static int fixed_size(int kind, int a, int c) {
    switch (kind) {
    case K_I8S: case K_I8U: case K_YEAR: return 1;
    case K_I16S: case K_I16U: return 2;
    case K_I24S: case K_I24U: case K_DATE: return 3;
    case K_I32S: case K_I32U: case K_FLOAT: return 4;
    case K_I64S: case K_I64U: case K_DOUBLE: return 8;
    case K_DECIMAL: return c;
    case K_TIME2: return 3 + (a + 1) / 2;
    case K_DATETIME2: return 5 + (a + 1) / 2;
    case K_TIMESTAMP2: return 4 + (a + 1) / 2;
    case K_ENUM: case K_SET: case K_BIT: return a;
    default: return -1;   /* length-prefixed */
    }
}

/* The wanted columns of the image at buf[p:] into out[0..] (new references); the new p, or -1
 * with an exception set (out then holds nothing). */
static Py_ssize_t decode_into(const unsigned char *buf, Py_ssize_t p, Py_ssize_t end, PyObject *spec,
                              PyObject **out) {
    PyObject *codes = PyTuple_GET_ITEM(spec, 0), *objs = PyTuple_GET_ITEM(spec, 1);
    const unsigned char *cs = (const unsigned char *)PyBytes_AS_STRING(codes);
    Py_ssize_t ncols = PyBytes_GET_SIZE(codes) / 8;
    if (p < 0 || p > end) { overrun(); return -1; }
    Py_ssize_t nnull = (ncols + 7) / 8;
    if (end - p < nnull) { overrun(); return -1; }
    const unsigned char *nulls = buf + p;
    p += nnull;
    Py_ssize_t k = 0;
    for (Py_ssize_t j = 0; j < ncols; j++) {
        const unsigned char *c = cs + 8 * j;
        int kind = c[0], flags = c[1];
        int a = c[2] | c[3] << 8, b = c[4] | c[5] << 8, cc = c[6] | c[7] << 8;
        int wanted = flags & F_WANTED;
        if ((flags & F_NULLABLE) && (nulls[j >> 3] & (1 << (j & 7)))) {
            if (wanted) { Py_INCREF(s_null); out[k++] = s_null; }
            continue;
        }
        int size = fixed_size(kind, a, cc);
        PyObject *v = NULL;
        if (size >= 0) {
            if (end - p < size) { overrun(); goto fail; }
            if (wanted) v = value(kind, a, b, cc, PyTuple_GET_ITEM(objs, j), buf + p);
            p += size;
        } else {
            /* a: length-prefix bytes; b: BINARY(n) pad length */
            if (a < 1 || a > 4 || end - p < a) { overrun(); goto fail; }
            Py_ssize_t len = (Py_ssize_t)le(buf + p, a);
            p += a;
            if (end - p < len) { overrun(); goto fail; }
            if (wanted) {
                const unsigned char *s = buf + p;
                if (kind == K_BIN) v = hex_literal("X'", 2, s, len, 2 * (Py_ssize_t)b);
                else if (kind == K_UTF8) v = utf8_literal(s, len, PyTuple_GET_ITEM(objs, j));
                else if (kind == K_OTHER) v = prefixed_hex(PyTuple_GET_ITEM(objs, j), s, len);
                else { PyErr_Format(PyExc_SystemError, "_rowimage: unknown column kind %d", kind); }
            }
            p += len;
        }
        if (wanted) {
            if (!v) goto fail;
            out[k++] = v;
        }
    }
    return p;
fail:
    while (k > 0) Py_DECREF(out[--k]);
    return -1;
}

static int check_spec(PyObject *spec, Py_ssize_t *nwanted) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2) goto bad;
    PyObject *codes = PyTuple_GET_ITEM(spec, 0), *objs = PyTuple_GET_ITEM(spec, 1);
    if (!PyBytes_Check(codes) || !PyTuple_Check(objs) || PyBytes_GET_SIZE(codes) % 8
        || PyTuple_GET_SIZE(objs) != PyBytes_GET_SIZE(codes) / 8)
        goto bad;
    const unsigned char *cs = (const unsigned char *)PyBytes_AS_STRING(codes);
    Py_ssize_t n = 0;
    for (Py_ssize_t j = 0; j < PyBytes_GET_SIZE(codes) / 8; j++) n += (cs[8 * j + 1] & F_WANTED) != 0;
    *nwanted = n;
    return 0;
bad:
    PyErr_SetString(PyExc_TypeError, "spec is (codes: bytes, 8 per column; objs: tuple, 1 per column)");
    return -1;
}

static PyObject *image(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Py_ssize_t nwanted;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "image(buf: bytes, p: int, spec)");
        return NULL;
    }
    if (check_spec(args[2], &nwanted) < 0) return NULL;
    Py_ssize_t p = PyLong_AsSsize_t(args[1]);
    if (p == -1 && PyErr_Occurred()) return NULL;
    PyObject *out = PyTuple_New(nwanted + 1);
    if (!out) return NULL;
    p = decode_into((const unsigned char *)PyBytes_AS_STRING(args[0]), p, PyBytes_GET_SIZE(args[0]), args[2],
                    &PyTuple_GET_ITEM(out, 0));
    if (p < 0) {
        for (Py_ssize_t i = 0; i <= nwanted; i++) PyTuple_SET_ITEM(out, i, NULL);
        Py_DECREF(out);
        return NULL;
    }
    PyObject *np = PyLong_FromSsize_t(p);
    if (!np) { Py_DECREF(out); return NULL; }
    PyTuple_SET_ITEM(out, nwanted, np);
    return out;
}

/* --- statements ------------------------------------------------------------------------------ */

/* The concatenation of n str pieces (one allocation; a copy per piece). */
static PyObject *concat(PyObject **pc, Py_ssize_t n) {
    Py_ssize_t len = 0;
    Py_UCS4 maxc = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        len += PyUnicode_GET_LENGTH(pc[i]);
        Py_UCS4 m = PyUnicode_MAX_CHAR_VALUE(pc[i]);
        if (m > maxc) maxc = m;
    }
    PyObject *u = PyUnicode_New(len, maxc);
    if (!u) return NULL;
    if (PyUnicode_KIND(u) == PyUnicode_1BYTE_KIND) {
        Py_UCS1 *o = PyUnicode_1BYTE_DATA(u);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t l = PyUnicode_GET_LENGTH(pc[i]);
            memcpy(o, PyUnicode_1BYTE_DATA(pc[i]), l);
            o += l;
        }
    } else {
        /* wider text (a literal with non-Latin-1 characters): each piece copied or widened here,
         * not by PyUnicode_CopyCharacters (its checks per call cost more than the copy of a piece) */
        int tk = PyUnicode_KIND(u);
        char *o = PyUnicode_DATA(u);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t l = PyUnicode_GET_LENGTH(pc[i]);
            int sk = PyUnicode_KIND(pc[i]);
            const void *src = PyUnicode_DATA(pc[i]);
            if (sk == tk) {
                memcpy(o, src, (size_t)l * tk);
            } else if (tk == PyUnicode_2BYTE_KIND) {   /* from 1 byte */
                Py_UCS2 *d = (Py_UCS2 *)o;
                const Py_UCS1 *q = src;
                for (Py_ssize_t k = 0; k < l; k++) d[k] = q[k];
            } else if (sk == PyUnicode_1BYTE_KIND) {    /* 4 bytes from 1 */
                Py_UCS4 *d = (Py_UCS4 *)o;
                const Py_UCS1 *q = src;
                for (Py_ssize_t k = 0; k < l; k++) d[k] = q[k];
            } else {                                    /* 4 bytes from 2 */
                Py_UCS4 *d = (Py_UCS4 *)o;
                const Py_UCS2 *q = src;
                for (Py_ssize_t k = 0; k < l; k++) d[k] = q[k];
            }
            o += (size_t)l * tk;
        }
    }
    return u;
}

static int str_differ(PyObject *x, PyObject *y) {
    if (x == y) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(x);
    if (n != PyUnicode_GET_LENGTH(y) || PyUnicode_KIND(x) != PyUnicode_KIND(y)) return 1;
    return memcmp(PyUnicode_DATA(x), PyUnicode_DATA(y), n * PyUnicode_KIND(x)) != 0;
}

/* The statements of a rows event as one UTF-8 block: each row's text appended to buf (its start in
 * starts), reversed at the end into one bytes object, one line per statement. */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    Py_ssize_t *starts;
    Py_ssize_t nrows, scap;
} block_t;

static int block_put(block_t *b, PyObject **pc, Py_ssize_t n) {
    Py_ssize_t need = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyUnicode_IS_ASCII(pc[i])) {
            need += PyUnicode_GET_LENGTH(pc[i]);
        } else {
            Py_ssize_t l;
            if (!PyUnicode_AsUTF8AndSize(pc[i], &l)) return -1;  /* cached in the str: used again below */
            need += l;
        }
    }
    if (b->nrows == b->scap) {
        Py_ssize_t c = b->scap ? 2 * b->scap : 256;
        Py_ssize_t *t = PyMem_Realloc(b->starts, sizeof(Py_ssize_t) * (size_t)c);
        if (!t) { PyErr_NoMemory(); return -1; }
        b->starts = t; b->scap = c;
    }
    if (b->len + need > b->cap) {
        Py_ssize_t c = b->cap ? 2 * b->cap : 16384;
        while (c < b->len + need) c *= 2;
        char *t = PyMem_Realloc(b->buf, (size_t)c);
        if (!t) { PyErr_NoMemory(); return -1; }
        b->buf = t; b->cap = c;
    }
    b->starts[b->nrows++] = b->len;
    char *o = b->buf + b->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t l;
        const char *src;
        if (PyUnicode_IS_ASCII(pc[i])) {
            l = PyUnicode_GET_LENGTH(pc[i]);
            src = (const char *)PyUnicode_1BYTE_DATA(pc[i]);
        } else {
            src = PyUnicode_AsUTF8AndSize(pc[i], &l);
        }
        memcpy(o, src, (size_t)l);
        o += l;
    }
    b->len = o - b->buf;
    return 0;
}

/* (bytes, rows): the rows newest first, each followed by a newline */
static PyObject *block_take(block_t *b) {
    PyObject *data = PyBytes_FromStringAndSize(NULL, b->len + b->nrows);
    if (!data) return NULL;
    char *o = PyBytes_AS_STRING(data);
    Py_ssize_t stop = b->len;
    for (Py_ssize_t r = b->nrows - 1; r >= 0; r--) {
        Py_ssize_t st = b->starts[r];
        memcpy(o, b->buf + st, (size_t)(stop - st));
        o += stop - st;
        *o++ = '\n';
        stop = st;
    }
    return Py_BuildValue("(Nn)", data, b->nrows);
}

/* rows(buf, p, end, before_spec|None, after_spec|None, plan) -> [statement, ...]: every row of a
 * rows event decoded and its inverse statement built, as TableSQL.code's code would (decode.py
 * uses this only for whole images of native types; the tests compare both).
 *   plan ("T", pieces): each piece a str, or an int: the literal at that index of the row's
 *        wanted before literals followed by its wanted after literals;
 *   plan ("U", head, key, cols, iskey, eq, ns): the guarded UPDATE of TableSQL.update_rule.
 * rows(..., plan, True) -> (block: bytes, rows): the same statements as one UTF-8 block, newest first,
 * each followed by a newline ("\n".join(reversed(statements)) + "\n", encoded): what the flashback
 * spool stores, without a str per statement, a list, a join and an encode. */
static PyObject *rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if ((nargs != 6 && nargs != 7) || !PyBytes_Check(args[0]) || !PyTuple_Check(args[5])
        || PyTuple_GET_SIZE(args[5]) < 2) {
        PyErr_SetString(PyExc_TypeError, "rows(buf: bytes, p, end, before_spec, after_spec, plan: tuple[, block])");
        return NULL;
    }
    int as_block = nargs == 7 ? PyObject_IsTrue(args[6]) : 0;
    if (as_block < 0) return NULL;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t p = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]);
    if ((p == -1 || end == -1) && PyErr_Occurred()) return NULL;
    if (end > PyBytes_GET_SIZE(args[0]) || end < 0) return overrun();
    PyObject *bspec = args[3] == Py_None ? NULL : args[3], *aspec = args[4] == Py_None ? NULL : args[4];
    Py_ssize_t nb = 0, na = 0;
    if (bspec && check_spec(bspec, &nb) < 0) return NULL;
    if (aspec && check_spec(aspec, &na) < 0) return NULL;
    PyObject *plan = args[5];
    PyObject *tag = PyTuple_GET_ITEM(plan, 0);
    int guarded = PyUnicode_Check(tag) && PyUnicode_CompareWithASCIIString(tag, "U") == 0;
    PyObject *tmpl = NULL, *head = NULL, *key = NULL, *cols = NULL, *eq = NULL, *ns = NULL;
    const unsigned char *iskey = NULL;
    Py_ssize_t npieces;
    if (guarded) {
        if (PyTuple_GET_SIZE(plan) != 7) goto badplan;
        head = PyTuple_GET_ITEM(plan, 1); key = PyTuple_GET_ITEM(plan, 2); cols = PyTuple_GET_ITEM(plan, 3);
        PyObject *ik = PyTuple_GET_ITEM(plan, 4);
        eq = PyTuple_GET_ITEM(plan, 5); ns = PyTuple_GET_ITEM(plan, 6);
        if (!PyUnicode_Check(head) || !PyTuple_Check(key) || !PyTuple_Check(cols) || !PyBytes_Check(ik)
            || !PyTuple_Check(eq) || !PyTuple_Check(ns) || !bspec || !aspec || nb != na
            || PyBytes_GET_SIZE(ik) != nb || PyTuple_GET_SIZE(eq) != nb || PyTuple_GET_SIZE(ns) != nb)
            goto badplan;
        iskey = (const unsigned char *)PyBytes_AS_STRING(ik);
        for (Py_ssize_t i = 0; i < nb; i++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(eq, i)) || !PyUnicode_Check(PyTuple_GET_ITEM(ns, i))) goto badplan;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key) + PyTuple_GET_SIZE(cols); i++) {
            PyObject *o = i < PyTuple_GET_SIZE(key) ? PyTuple_GET_ITEM(key, i) : PyTuple_GET_ITEM(cols, i - PyTuple_GET_SIZE(key));
            Py_ssize_t x = PyLong_Check(o) ? PyLong_AsSsize_t(o) : -1;
            if (x < 0 || x >= nb) { PyErr_Clear(); goto badplan; }
        }
        /* head; SET: 3 per writable column; WHERE: 3 per key column, 3 per column; the tail */
        npieces = 3 * PyTuple_GET_SIZE(cols) + 3 * PyTuple_GET_SIZE(key) + 3 * nb + 8;
    } else {
        if (!PyUnicode_Check(tag) || PyUnicode_CompareWithASCIIString(tag, "T") != 0 || PyTuple_GET_SIZE(plan) != 2
            || !PyTuple_Check(PyTuple_GET_ITEM(plan, 1)))
            goto badplan;
        tmpl = PyTuple_GET_ITEM(plan, 1);
        npieces = PyTuple_GET_SIZE(tmpl);
        for (Py_ssize_t i = 0; i < npieces; i++) {
            PyObject *o = PyTuple_GET_ITEM(tmpl, i);
            if (PyUnicode_Check(o)) continue;
            Py_ssize_t x = PyLong_Check(o) ? PyLong_AsSsize_t(o) : -1;
            if (x < 0 || x >= nb + na) { PyErr_Clear(); goto badplan; }
        }
    }
    static PyObject *s_comma = NULL, *s_where = NULL, *s_and = NULL, *s_limit = NULL, *s_semi = NULL;
    if (!s_comma) {
        s_comma = PyUnicode_InternFromString(", ");
        s_where = PyUnicode_InternFromString(" WHERE ");
        s_and = PyUnicode_InternFromString(" AND ");
        s_limit = PyUnicode_InternFromString(" LIMIT 1;");
        s_semi = PyUnicode_InternFromString(";");
        if (!s_comma || !s_where || !s_and || !s_limit || !s_semi) return NULL;
    }
    PyObject **lit = PyMem_Malloc(sizeof(PyObject *) * (nb + na + npieces + 1));
    if (!lit) return PyErr_NoMemory();
    PyObject **pc = lit + nb + na;
    block_t blk = {NULL, 0, 0, NULL, 0, 0};
    PyObject *out = as_block ? NULL : PyList_New(0);
    if (!as_block && !out) { PyMem_Free(lit); return NULL; }
    while (p < end) {
        if (bspec && (p = decode_into(buf, p, end, bspec, lit)) < 0) goto fail;
        if (aspec && (p = decode_into(buf, p, end, aspec, lit + nb)) < 0) {
            for (Py_ssize_t i = 0; i < nb; i++) Py_DECREF(lit[i]);
            goto fail;
        }
        Py_ssize_t n = 0;
        if (!guarded) {
            for (Py_ssize_t i = 0; i < npieces; i++) {
                PyObject *o = PyTuple_GET_ITEM(tmpl, i);
                pc[n++] = PyUnicode_Check(o) ? o : lit[PyLong_AsSsize_t(o)];
            }
        } else {
            PyObject **B = lit, **A = lit + nb;
            Py_ssize_t nk = PyTuple_GET_SIZE(key), nc = PyTuple_GET_SIZE(cols), changed = 0;
            pc[n++] = head;
            for (Py_ssize_t j = 0; j < nc; j++) {
                Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(cols, j));
                if (str_differ(B[i], A[i])) {
                    if (changed++) pc[n++] = s_comma;
                    pc[n++] = PyTuple_GET_ITEM(eq, i);
                    pc[n++] = B[i];
                }
            }
            if (!changed) {  /* nothing (writable) changed: every writable column set back and matched */
                for (Py_ssize_t j = 0; j < nc; j++) {
                    Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(cols, j));
                    if (j) pc[n++] = s_comma;
                    pc[n++] = PyTuple_GET_ITEM(eq, i);
                    pc[n++] = B[i];
                }
            }
            pc[n++] = s_where;
            if (nk) {
                for (Py_ssize_t j = 0; j < nk; j++) {
                    Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(key, j));
                    if (j) pc[n++] = s_and;
                    pc[n++] = PyTuple_GET_ITEM(eq, i);
                    pc[n++] = A[i];
                }
                for (Py_ssize_t j = 0; j < nc; j++) {
                    Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(cols, j));
                    if (iskey[i] || (changed && !str_differ(B[i], A[i]))) continue;
                    pc[n++] = s_and;
                    pc[n++] = PyTuple_GET_ITEM(ns, i);
                    pc[n++] = A[i];
                }
                pc[n++] = s_semi;
            } else {
                for (Py_ssize_t i = 0; i < nb; i++) {
                    if (i) pc[n++] = s_and;
                    pc[n++] = PyTuple_GET_ITEM(ns, i);
                    pc[n++] = A[i];
                }
                pc[n++] = s_limit;
            }
        }
        if (as_block) {
            int r = block_put(&blk, pc, n);
            for (Py_ssize_t i = 0; i < nb + na; i++) Py_DECREF(lit[i]);
            if (r < 0) goto fail;
            continue;
        }
        PyObject *st = concat(pc, n);
        for (Py_ssize_t i = 0; i < nb + na; i++) Py_DECREF(lit[i]);
        if (!st) goto fail;
        int r = PyList_Append(out, st);
        Py_DECREF(st);
        if (r < 0) goto fail;
    }
    PyMem_Free(lit);
    if (as_block) {
        out = block_take(&blk);
        PyMem_Free(blk.buf);
        PyMem_Free(blk.starts);
    }
    return out;
fail:
    PyMem_Free(lit);
    PyMem_Free(blk.buf);
    PyMem_Free(blk.starts);
    Py_XDECREF(out);
    return NULL;
badplan:
    PyErr_SetString(PyExc_TypeError, "rows: plan is (\"T\", pieces) or (\"U\", head, key, cols, iskey, eq, ns) "
                    "matching the specs");
    return NULL;
}

static PyObject *set_error(PyObject *self, PyObject *cls) {
    (void)self;
    Py_INCREF(cls);
    Py_XSETREF(binlog_error, cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"image", (PyCFunction)(void (*)(void))image, METH_FASTCALL,
     "image(buf, p, spec) -> (literal, ..., new_p): one row image's wanted columns as SQL literals"},
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(buf, p, end, before_spec, after_spec, plan[, block]) -> [statement, ...] | (bytes, rows): a rows "
     "event's inverse statements"},
    {"set_error", set_error, METH_O, "set_error(cls): the exception raised for a damaged image"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowimage", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rowimage(void) {
    s_null = PyUnicode_InternFromString("NULL");
    if (!s_null) return NULL;
    return PyModule_Create(&module);
}
