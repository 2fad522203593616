/* wagg.c: the engine of the C SDK and, in the Wasm build, the ABI exports.
 *
 * The state mirrors the Go SDK's so that the same input gives the same
 * bytes: per window a list of panes (one per window start) in increasing
 * start; per pane the groups in creation order (keys back to back, one hash
 * table of group indexes) and the groups changed since the last flush in
 * the order they were first touched. Rows and snapshots are written in that
 * order, which depends only on the input, so a replay emits the same bytes.
 */
#include "wagg.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 64
#define MAX_KEYS 16
#define MAX_METRICS 64
#define MAX_WINDOWS 255
#define MAX_WINDOWS_PER_RECORD 64
#define MAX_BATCH_RECORDS (1u << 20)
#define BATCH_MAGIC 0x31424757u /* "WGB1" */
#define ROWS_MAGIC 0x31524757u  /* "WGR1" */
#define SNAP_MAGIC 0x31534757u  /* "WGS1" */

/* The per-record path (key building, hashing, lookups) is forced inline:
 * in Wasm every call is also a metering point of the host. */
#define HOT static inline __attribute__((always_inline))

enum type { T_INT64, T_FLOAT64, T_STRING };
enum op { OP_ADD, OP_MIN, OP_MAX, OP_AVG, OP_DISTINCT };
enum wkind { W_GLOBAL, W_TUMBLING, W_HOPPING };

static const char *type_names[] = {"int64", "float64", "string"};

/* ---- little-endian bytes (Wasm and the usual hosts are little-endian) ---- */

HOT uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
HOT uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
HOT uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* tail reads the last n < 8 bytes at p as a little-endian word, in at most
 * three loads instead of a loop over bytes (a loop costs a meter check per
 * byte in Wasm). */
HOT uint64_t tail(const uint8_t *p, uint32_t n) {
    uint64_t t = 0;
    int sh = 0;
    if (n & 4) { t = rd32(p); p += 4; sh = 32; }
    if (n & 2) { t |= (uint64_t)rd16(p) << sh; p += 2; sh += 16; }
    if (n & 1) t |= (uint64_t)*p << sh;
    return t;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf;

__attribute__((noinline)) static void buf_grow_slow(buf *b, size_t n) {
    if (b->cap - b->len >= n) return;
    size_t c = b->cap ? b->cap : 256;
    while (c - b->len < n) c *= 2;
    b->p = realloc(b->p, c);
    if (!b->p) abort();
    b->cap = c;
}
HOT void buf_grow(buf *b, size_t n) {
    if (b->cap - b->len < n) buf_grow_slow(b, n);
}
HOT void put(buf *b, const void *v, size_t n) {
    buf_grow(b, n);
    memcpy(b->p + b->len, v, n);
    b->len += n;
}
static void put8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put64(buf *b, uint64_t v) { put(b, &v, 8); }
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }
static void put_uint(buf *b, uint64_t v) {
    char d[20];
    int n = 0;
    do d[n++] = (char)('0' + v % 10); while ((v /= 10) != 0);
    while (n) put8(b, (uint8_t)d[--n]);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) abort(); /* out of memory traps: the host discards the instance */
    return p;
}

/* ---- the spec ---- */

typedef struct {
    const char *name, *path;
    enum type type;
    int optional;
} field;
typedef struct {
    const char *name;
    enum type type;
} column;
typedef struct {
    const char *name, *kind;
    enum type type;
    enum op op;
    uint64_t ident; /* the value before the first update */
} metric;

struct wagg_spec {
    field in[MAX_FIELDS];
    int nin, raw;
    column keys[MAX_KEYS];
    int nkeys;
    metric m[MAX_METRICS];
    int nm;
    /* state: version (0: undeclared, 1), older versions accepted and migrated */
    int version, accepts[64], naccepts, migrates[64], nmigrates;
    wagg_migrate_fn migrate;
    const char *err; /* the first mistake, reported by wagg_describe */
};

static wagg_spec spec;
static int defined;
static int spec_distinct; /* a metric is distinct: rows and snapshots carry sketches */

static void define(void) {
    if (!defined) {
        defined = 1;
        wagg_define(&spec);
    }
}

static int add_input(wagg_spec *s, const char *name, enum type t) {
    if (s->nin == MAX_FIELDS) { s->err = "more than 64 input fields"; return 0; }
    s->in[s->nin] = (field){name, NULL, t, 0};
    return s->nin++;
}
int wagg_input_int64(wagg_spec *s, const char *n) { return add_input(s, n, T_INT64); }
int wagg_input_float64(wagg_spec *s, const char *n) { return add_input(s, n, T_FLOAT64); }
int wagg_input_string(wagg_spec *s, const char *n) { return add_input(s, n, T_STRING); }
void wagg_input_from(wagg_spec *s, int f, const char *path) {
    if (f >= 0 && f < s->nin) s->in[f].path = path;
}
void wagg_input_optional(wagg_spec *s, int f) {
    if (f >= 0 && f < s->nin) s->in[f].optional = 1;
}
void wagg_input_raw(wagg_spec *s) { s->raw = 1; }

static void add_key(wagg_spec *s, const char *name, enum type t) {
    if (s->nkeys == MAX_KEYS) { s->err = "more than 16 key columns"; return; }
    s->keys[s->nkeys++] = (column){name, t};
}
void wagg_key_int64(wagg_spec *s, const char *n) { add_key(s, n, T_INT64); }
void wagg_key_float64(wagg_spec *s, const char *n) { add_key(s, n, T_FLOAT64); }
void wagg_key_string(wagg_spec *s, const char *n) { add_key(s, n, T_STRING); }

static uint64_t fbits(double d) { uint64_t v; memcpy(&v, &d, 8); return v; }
static double bitsf(uint64_t v) { double d; memcpy(&d, &v, 8); return d; }

static int add_metric(wagg_spec *s, const char *name, const char *kind, enum type t, enum op op) {
    if (s->nm == MAX_METRICS) { s->err = "more than 64 metrics"; return 0; }
    uint64_t ident = 0;
    if (op == OP_MIN) ident = t == T_FLOAT64 ? fbits(1.0 / 0.0) : (uint64_t)INT64_MAX;
    if (op == OP_MAX) ident = t == T_FLOAT64 ? fbits(-1.0 / 0.0) : (uint64_t)INT64_MIN;
    s->m[s->nm] = (metric){name, kind, t, op, ident};
    return s->nm++;
}
int wagg_count(wagg_spec *s, const char *n) { return add_metric(s, n, "count", T_INT64, OP_ADD); }
int wagg_sum(wagg_spec *s, const char *n) { return add_metric(s, n, "sum", T_INT64, OP_ADD); }
int wagg_sum_float(wagg_spec *s, const char *n) { return add_metric(s, n, "sum", T_FLOAT64, OP_ADD); }
int wagg_min(wagg_spec *s, const char *n) { return add_metric(s, n, "min", T_INT64, OP_MIN); }
int wagg_min_float(wagg_spec *s, const char *n) { return add_metric(s, n, "min", T_FLOAT64, OP_MIN); }
int wagg_max(wagg_spec *s, const char *n) { return add_metric(s, n, "max", T_INT64, OP_MAX); }
int wagg_max_float(wagg_spec *s, const char *n) { return add_metric(s, n, "max", T_FLOAT64, OP_MAX); }
int wagg_distinct(wagg_spec *s, const char *n) { return add_metric(s, n, "distinct", T_INT64, OP_DISTINCT); }

static const char *suffixed(const char *name, const char *suffix) {
    size_t a = strlen(name), b = strlen(suffix);
    char *p = malloc(a + b + 1); /* lives as long as the spec */
    if (!p) abort();
    memcpy(p, name, a);
    memcpy(p + a, suffix, b + 1);
    return p;
}

int wagg_average(wagg_spec *s, const char *n) {
    int m = add_metric(s, suffixed(n, "_sum"), "sum", T_FLOAT64, OP_AVG);
    add_metric(s, suffixed(n, "_count"), "count", T_INT64, OP_ADD);
    return m;
}

void wagg_state_version(wagg_spec *s, int v) { s->version = v; }
void wagg_state_accepts(wagg_spec *s, int v) {
    if (s->naccepts + s->nmigrates == 64) { s->err = "more than 64 older state versions"; return; }
    s->accepts[s->naccepts++] = v;
}
void wagg_state_migrates(wagg_spec *s, int v, wagg_migrate_fn fn) {
    if (s->naccepts + s->nmigrates == 64) { s->err = "more than 64 older state versions"; return; }
    if (!fn) { s->err = "wagg_state_migrates without a function"; return; }
    s->migrates[s->nmigrates++] = v;
    s->migrate = fn;
}

/* ---- errors ---- */

static buf last_err;

static int fail(int code, const char *msg) {
    last_err.len = 0;
    puts_(&last_err, msg);
    return code;
}

wagg_bytes wagg_engine_last_error(void) { return (wagg_bytes){last_err.p, (uint32_t)last_err.len}; }

/* ---- describe ---- */

static void put_json_string(buf *b, const char *s) {
    put8(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            put8(b, '\\');
            put8(b, c);
        } else if (c < 0x20) {
            puts_(b, "\\u00");
            put8(b, "0123456789abcdef"[c >> 4]);
            put8(b, "0123456789abcdef"[c & 15]);
        } else {
            put8(b, c);
        }
    }
    put8(b, '"');
}

static buf schema_json;

wagg_bytes wagg_engine_describe(void) {
    define();
    buf *b = &schema_json;
    b->len = 0;
    if (spec.err) {
        fail(WAGG_ERR_NOT_READY, spec.err);
        return (wagg_bytes){NULL, 0};
    }
    puts_(b, "{\"abi\":1,\"input\":[");
    for (int i = 0; i < spec.nin; i++) {
        field *f = &spec.in[i];
        if (i) put8(b, ',');
        puts_(b, "{\"name\":");
        put_json_string(b, f->name);
        puts_(b, ",\"type\":\"");
        puts_(b, type_names[f->type]);
        put8(b, '"');
        if (f->path) {
            puts_(b, ",\"path\":");
            put_json_string(b, f->path);
        }
        if (f->optional) puts_(b, ",\"optional\":true");
        put8(b, '}');
    }
    put8(b, ']');
    if (spec.raw) puts_(b, ",\"raw\":true");
    puts_(b, ",\"keys\":[");
    for (int i = 0; i < spec.nkeys; i++) {
        if (i) put8(b, ',');
        puts_(b, "{\"name\":");
        put_json_string(b, spec.keys[i].name);
        puts_(b, ",\"type\":\"");
        puts_(b, type_names[spec.keys[i].type]);
        puts_(b, "\"}");
    }
    puts_(b, "],\"metrics\":[");
    for (int i = 0; i < spec.nm; i++) {
        if (i) put8(b, ',');
        puts_(b, "{\"name\":");
        put_json_string(b, spec.m[i].name);
        puts_(b, ",\"kind\":\"");
        puts_(b, spec.m[i].kind);
        puts_(b, "\",\"type\":\"");
        puts_(b, type_names[spec.m[i].type]);
        puts_(b, "\"}");
    }
    put8(b, ']');
    if (spec.version || spec.naccepts || spec.nmigrates) {
        puts_(b, ",\"state\":{\"version\":");
        put_uint(b, (uint64_t)(spec.version ? spec.version : 1));
        const char *names[2] = {"accepts", "migrates"};
        const int *lists[2] = {spec.accepts, spec.migrates};
        int counts[2] = {spec.naccepts, spec.nmigrates};
        for (int l = 0; l < 2; l++) {
            if (!counts[l]) continue;
            puts_(b, ",\"");
            puts_(b, names[l]);
            puts_(b, "\":[");
            for (int i = 0; i < counts[l]; i++) {
                if (i) put8(b, ',');
                put_uint(b, (uint64_t)lists[l][i]);
            }
            put8(b, ']');
        }
        put8(b, '}');
    }
    put8(b, '}');
    return (wagg_bytes){b->p, (uint32_t)b->len};
}

static char key_types[MAX_KEYS + 1], metric_types[MAX_METRICS + 1];

const char *wagg_engine_key_types(void) {
    define();
    for (int i = 0; i < spec.nkeys; i++) key_types[i] = "ifs"[spec.keys[i].type];
    key_types[spec.nkeys] = 0;
    return key_types;
}

const char *wagg_engine_metric_types(void) {
    define();
    for (int i = 0; i < spec.nm; i++) metric_types[i] = spec.m[i].op == OP_DISTINCT ? 'd' : "ifs"[spec.m[i].type];
    metric_types[spec.nm] = 0;
    return metric_types;
}

/* ---- the config: a small JSON reader for what wagg_init receives ---- */

typedef struct {
    const char *name;
    uint32_t name_len;
    enum wkind kind;
    int64_t size, slide; /* slide = size for tumbling */
} window;

typedef struct {
    const uint8_t *p, *end;
    int depth;
    const char *err;
} json;

static void ws(json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}
static int lit(json *j, char c) {
    ws(j);
    if (j->p < j->end && *j->p == c) { j->p++; return 1; }
    return 0;
}
/* A string without escapes (names and kinds never need them); escapes are
 * skipped correctly but make the value unusable (*esc set). */
static int str(json *j, const uint8_t **s, uint32_t *n, int *esc) {
    if (!lit(j, '"')) return 0;
    const uint8_t *start = j->p;
    *esc = 0;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p < 0x20) return 0;
        if (*j->p == '\\') {
            *esc = 1;
            if (++j->p == j->end) return 0;
        }
        j->p++;
    }
    if (j->p == j->end) return 0;
    *s = start;
    *n = (uint32_t)(j->p - start);
    j->p++;
    return 1;
}
/* An integer; a fraction or exponent is refused (the fields are int64). */
static int integer(json *j, int64_t *v) {
    ws(j);
    int neg = 0;
    if (j->p < j->end && *j->p == '-') { neg = 1; j->p++; }
    if (j->p == j->end || *j->p < '0' || *j->p > '9') return 0;
    uint64_t u = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        uint64_t d = (uint64_t)(*j->p++ - '0');
        if (u > (UINT64_MAX - d) / 10) return 0;
        u = u * 10 + d;
    }
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) return 0;
    if (neg ? u > (uint64_t)INT64_MAX + 1 : u > (uint64_t)INT64_MAX) return 0;
    *v = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 1;
}
static int word(json *j, const char *w) {
    ws(j);
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, w, n) != 0) return 0;
    j->p += n;
    return 1;
}
static int skip(json *j) {
    ws(j);
    if (j->p == j->end || ++j->depth > 64) return 0;
    int ok = 1;
    const uint8_t *s;
    uint32_t n;
    int esc;
    int64_t v;
    switch (*j->p) {
    case '{':
        j->p++;
        if (!lit(j, '}')) {
            do ok = str(j, &s, &n, &esc) && lit(j, ':') && skip(j);
            while (ok && lit(j, ','));
            ok = ok && lit(j, '}');
        }
        break;
    case '[':
        j->p++;
        if (!lit(j, ']')) {
            do ok = skip(j);
            while (ok && lit(j, ','));
            ok = ok && lit(j, ']');
        }
        break;
    case '"': ok = str(j, &s, &n, &esc); break;
    case 't': ok = word(j, "true"); break;
    case 'f': ok = word(j, "false"); break;
    case 'n': ok = word(j, "null"); break;
    default:
        ok = integer(j, &v);
        if (!ok) { /* any other number */
            while (j->p < j->end && strchr("+-.eE0123456789", *j->p)) j->p++;
            ok = 1;
        }
    }
    j->depth--;
    return ok;
}
static int key_is(const uint8_t *s, uint32_t n, const char *k) { return n == strlen(k) && memcmp(s, k, n) == 0; }

static int valid_name(const uint8_t *s, uint32_t n) {
    if (n == 0 || n > 63) return 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        int ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

static int parse_window(json *j, window *w) {
    const uint8_t *name = NULL, *kind = NULL, *s;
    uint32_t name_len = 0, kind_len = 0, n;
    int esc, name_esc = 0;
    int64_t size = 0, slide = 0;
    if (!lit(j, '{')) return 0;
    if (!lit(j, '}')) {
        do {
            if (!str(j, &s, &n, &esc) || !lit(j, ':')) return 0;
            if (key_is(s, n, "name")) {
                if (!str(j, &name, &name_len, &name_esc)) return 0;
            } else if (key_is(s, n, "kind")) {
                if (!str(j, &kind, &kind_len, &esc)) return 0;
                if (esc) kind_len = 0;
            } else if (key_is(s, n, "size_ms")) {
                if (!integer(j, &size)) return 0;
            } else if (key_is(s, n, "slide_ms")) {
                if (!integer(j, &slide)) return 0;
            } else if (!skip(j)) {
                return 0;
            }
        } while (lit(j, ','));
        if (!lit(j, '}')) return 0;
    }
    /* abi.Window.Validate */
    if (!name || name_esc || !valid_name(name, name_len)) { j->err = "window name: want lower-case letters, digits and _"; return 0; }
    w->name = (const char *)name;
    w->name_len = name_len;
    if (kind && key_is(kind, kind_len, "global")) {
        if (size != 0 || slide != 0) { j->err = "a global window has no size or slide"; return 0; }
        w->kind = W_GLOBAL;
        w->size = w->slide = 0;
        return 1;
    } else if (kind && key_is(kind, kind_len, "tumbling")) {
        if (slide != 0 && slide != size) { j->err = "a tumbling window has no slide"; return 0; }
        w->kind = W_TUMBLING;
        slide = size;
    } else if (kind && key_is(kind, kind_len, "hopping")) {
        if (slide <= 0 || slide % 1000 != 0) { j->err = "window slide: want a positive whole number of seconds"; return 0; }
        if (size % slide != 0 || size / slide > MAX_WINDOWS_PER_RECORD) { j->err = "window size: want a multiple of the slide, at most 64 slides"; return 0; }
        w->kind = W_HOPPING;
    } else {
        j->err = "window kind: want tumbling, hopping or global";
        return 0;
    }
    if (size <= 0 || size % 1000 != 0) { j->err = "window size: want a positive whole number of seconds"; return 0; }
    w->size = size;
    w->slide = slide;
    return 1;
}

/* from is what abi.Config.migrate_from says of the build whose snapshot is
 * to be migrated: its state version, key types and metrics. */
typedef struct {
    char name[64], kind[16];
    enum type type;
} old_metric;
static struct {
    int present;
    int64_t version;
    enum type keys[MAX_KEYS];
    int nkeys;
    old_metric m[MAX_METRICS];
    int nm;
} from;

static int parse_type(json *j, enum type *t) {
    const uint8_t *s;
    uint32_t n;
    int esc;
    if (!str(j, &s, &n, &esc) || esc) return 0;
    for (int i = 0; i < 3; i++) {
        if (key_is(s, n, type_names[i])) { *t = (enum type)i; return 1; }
    }
    return 0;
}

/* parse_from reads migrate_from (an abi.Schema) into from. */
static int parse_from(json *j) {
    const uint8_t *s;
    uint32_t n;
    int esc;
    from.present = 1;
    from.version = 1;
    from.nkeys = from.nm = 0;
    if (!lit(j, '{')) return 0;
    if (lit(j, '}')) return 1;
    do {
        if (!str(j, &s, &n, &esc) || !lit(j, ':')) return 0;
        if (key_is(s, n, "keys") || key_is(s, n, "metrics")) {
            int keys = key_is(s, n, "keys");
            if (!lit(j, '[')) return 0;
            if (lit(j, ']')) continue;
            do {
                if ((keys ? from.nkeys == MAX_KEYS : from.nm == MAX_METRICS) || !lit(j, '{')) return 0;
                old_metric m = {{0}, {0}, T_INT64};
                int have_type = 0;
                if (!lit(j, '}')) {
                    do {
                        const uint8_t *v;
                        uint32_t vn;
                        if (!str(j, &s, &n, &esc) || !lit(j, ':')) return 0;
                        if (key_is(s, n, "type")) {
                            if (!parse_type(j, &m.type)) return 0;
                            have_type = 1;
                        } else if (!keys && (key_is(s, n, "name") || key_is(s, n, "kind"))) {
                            char *dst = key_is(s, n, "name") ? m.name : m.kind;
                            size_t cap = key_is(s, n, "name") ? sizeof m.name : sizeof m.kind;
                            if (!str(j, &v, &vn, &esc) || esc || vn >= cap) return 0;
                            memcpy(dst, v, vn);
                            dst[vn] = 0;
                        } else if (!skip(j)) {
                            return 0;
                        }
                    } while (lit(j, ','));
                    if (!lit(j, '}')) return 0;
                }
                if (!have_type) return 0;
                if (keys) from.keys[from.nkeys++] = m.type;
                else from.m[from.nm++] = m;
            } while (lit(j, ','));
            if (!lit(j, ']')) return 0;
        } else if (key_is(s, n, "state")) {
            if (word(j, "null")) continue;
            if (!lit(j, '{')) return 0;
            if (lit(j, '}')) continue;
            do {
                if (!str(j, &s, &n, &esc) || !lit(j, ':')) return 0;
                if (key_is(s, n, "version")) {
                    if (!integer(j, &from.version)) return 0;
                } else if (!skip(j)) {
                    return 0;
                }
            } while (lit(j, ','));
            if (!lit(j, '}')) return 0;
        } else if (!skip(j)) {
            return 0;
        }
    } while (lit(j, ','));
    return lit(j, '}') && from.nm > 0;
}

/* parse_config reads an abi.Config into ws (at most 255) and from; 0 with
 * *err set when it does not decode or validate. */
static int parse_config(const uint8_t *p, uint32_t len, window *wins, int *nwin, int64_t *max_groups, const char **err) {
    json j = {p, p + len, 0, NULL};
    int64_t abi = -1;
    *max_groups = 0;
    from.present = 0;
    int have_windows = 0;
    const uint8_t *s;
    uint32_t n;
    int esc;
    *nwin = 0;
    if (!lit(&j, '{')) goto bad;
    if (!lit(&j, '}')) {
        do {
            if (!str(&j, &s, &n, &esc) || !lit(&j, ':')) goto bad;
            if (key_is(s, n, "abi")) {
                if (!integer(&j, &abi)) goto bad;
            } else if (key_is(s, n, "max_groups")) {
                if (!integer(&j, max_groups)) goto bad;
            } else if (key_is(s, n, "migrate_from")) {
                if (!word(&j, "null") && !parse_from(&j)) {
                    if (!j.err) j.err = "wagg: config migrate_from: not the JSON of an abi.Schema";
                    goto bad;
                }
            } else if (key_is(s, n, "windows")) {
                have_windows = 1;
                *nwin = 0;
                if (word(&j, "null")) continue;
                if (!lit(&j, '[')) goto bad;
                if (!lit(&j, ']')) {
                    do {
                        if (*nwin == MAX_WINDOWS) { *err = "wagg: more than 255 windows"; return 0; }
                        if (!parse_window(&j, &wins[*nwin])) goto bad;
                        (*nwin)++;
                    } while (lit(&j, ','));
                    if (!lit(&j, ']')) goto bad;
                }
            } else if (!skip(&j)) {
                goto bad;
            }
        } while (lit(&j, ','));
        if (!lit(&j, '}')) goto bad;
    }
    ws(&j);
    if (j.p != j.end) goto bad;
    if (abi != 1) { *err = "wagg: the host speaks another ABI than 1"; return 0; }
    if (!have_windows || *nwin == 0) { *err = "wagg: 0 windows, want 1 to 255"; return 0; }
    return 1;
bad:
    *err = j.err ? j.err : "wagg: config: not the JSON of an abi.Config";
    return 0;
}

/* ---- sketches: a distinct metric's HyperLogLog (abi/ABI.md "Distinct counts") ----
 *
 * Sparse, the set registers as index<<6 | rank in increasing index, while
 * at most SK_SPARSE_MAX are set; dense, a byte per register, beyond. */

#define SK_P 12
#define SK_M (1u << SK_P)
#define SK_MAX_RANK (64 - SK_P + 1)
#define SK_SPARSE_MAX (SK_M / 4 - 1)

typedef struct {
    uint32_t *e; /* sparse entries; NULL once dense */
    uint32_t n, cap;
    uint8_t *regs; /* dense registers, or NULL */
} sketch;

static uint64_t fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}
static uint64_t sk_hash(const uint8_t *b, uint32_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return fmix64(h);
}

static void sk_densify(sketch *k) {
    k->regs = calloc(SK_M, 1);
    if (!k->regs) abort();
    for (uint32_t i = 0; i < k->n; i++) k->regs[k->e[i] >> 6] = (uint8_t)(k->e[i] & 63);
    free(k->e);
    k->e = NULL;
    k->n = k->cap = 0;
}

static void sk_set(sketch *k, uint32_t idx, uint8_t rank) {
    if (k->regs) {
        if (k->regs[idx] < rank) k->regs[idx] = rank;
        return;
    }
    uint32_t lo = 0, hi = k->n, e = idx << 6 | rank;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if ((k->e[mid] >> 6) < idx) lo = mid + 1;
        else hi = mid;
    }
    if (lo < k->n && (k->e[lo] >> 6) == idx) {
        if (k->e[lo] < e) k->e[lo] = e;
        return;
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 4;
        k->e = xrealloc(k->e, (size_t)k->cap * 4);
    }
    memmove(k->e + lo + 1, k->e + lo, (size_t)(k->n - lo) * 4);
    k->e[lo] = e;
    k->n++;
    if (k->n > SK_SPARSE_MAX) sk_densify(k);
}

static void sk_add_hash(sketch *k, uint64_t h) {
    uint64_t w = h << SK_P | 1ull << (SK_P - 1);
    sk_set(k, (uint32_t)(h >> (64 - SK_P)), (uint8_t)(__builtin_clzll(w) + 1));
}

static void sk_free(sketch *k) {
    free(k->e);
    free(k->regs);
}

/* sk_put appends the row form: u32 length, then the entries or registers. */
static void sk_put(buf *b, const sketch *k) {
    if (k->regs) {
        put32(b, SK_M);
        put(b, k->regs, SK_M);
        return;
    }
    put32(b, 4 * k->n);
    if (k->n) put(b, k->e, (size_t)k->n * 4);
}

/* sk_read decodes a sketch at b (abi.DecodeSketch's checks: one encoding
 * per sketch) into the empty k and returns the bytes taken, or 0. */
static uint32_t sk_read(sketch *k, const uint8_t *b, uint64_t avail) {
    if (avail < 4) return 0;
    uint32_t n = rd32(b);
    if (n > SK_M || n > avail - 4) return 0;
    b += 4;
    if (n == SK_M) {
        uint32_t set = 0;
        for (uint32_t i = 0; i < SK_M; i++) {
            if (b[i] > SK_MAX_RANK) return 0;
            set += b[i] != 0;
        }
        if (set <= SK_SPARSE_MAX) return 0;
        k->regs = xrealloc(NULL, SK_M);
        memcpy(k->regs, b, SK_M);
        return 4 + n;
    }
    if (n % 4) return 0;
    for (uint32_t i = 0; i < n / 4; i++) {
        uint32_t e = rd32(b + 4 * i), r = e & 63;
        if (r == 0 || r > SK_MAX_RANK || (e >> 6) >= SK_M) return 0;
        if (i > 0 && (e >> 6) <= (rd32(b + 4 * i - 4) >> 6)) return 0;
    }
    if (n) {
        k->e = xrealloc(NULL, n);
        memcpy(k->e, b, n);
        k->n = k->cap = n / 4;
    }
    return 4 + n;
}

/* ---- panes: one window start's groups ---- */

typedef struct {
    int64_t start;
    uint8_t *keys;
    uint32_t keys_len, keys_cap;
    uint64_t *kpos;     /* group i's key: its offset in keys | its length
                         * << 32, one load. Keys start 8-aligned and are
                         * zero-padded to 8 bytes: compared by whole words. */
    uint64_t *vals;     /* nm values per group */
    uint8_t *marked;    /* group i is in dirty */
    uint32_t *link;     /* link[i]: the same key's group + 1 in the pane of
                         * the first global window, 0 while unknown */
    uint32_t n, cap;    /* groups */
    uint32_t *dirty;    /* groups changed since the last flush */
    uint32_t ndirty;
    uint64_t *slots;    /* open addressing: the key's hash's low 32 bits
                         * above the group index + 1; 0 is empty. One load
                         * per probe tells most other keys apart. */
    uint32_t mask;
    sketch *sk;         /* a distinct metric's value in vals is its index here */
    uint32_t nsk, capsk;
} pane;

static pane *pane_new(int64_t start) {
    pane *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->start = start;
    p->slots = calloc(16, 8);
    if (!p->slots) abort();
    p->mask = 15;
    return p;
}

static void pane_free(pane *p) {
    for (uint32_t i = 0; i < p->nsk; i++) sk_free(&p->sk[i]);
    free(p->sk);
    free(p->keys); free(p->kpos); free(p->vals); free(p->link);
    free(p->marked); free(p->dirty); free(p->slots); free(p);
}

HOT const uint8_t *pane_key(const pane *p, uint32_t g, uint32_t *len) {
    uint64_t e = p->kpos[g];
    *len = (uint32_t)(e >> 32);
    return p->keys + (uint32_t)e;
}

/* copy_short copies n bytes by words and a tail: keys and values are
 * short, and in Wasm a call to memcpy costs more than the copy. */
HOT void copy_short(uint8_t *d, const uint8_t *src, size_t n) {
    for (; n >= 8; src += 8, d += 8, n -= 8) memcpy(d, src, 8);
    if (n & 4) { memcpy(d, src, 4); src += 4; d += 4; }
    if (n & 2) { memcpy(d, src, 2); src += 2; d += 2; }
    if (n & 1) *d = *src;
}

/* key_eq compares keys of n bytes, both zero-padded to 8 and readable for
 * at least 24 bytes (KEY_SLACK, KEY_ROOM). The first three words are
 * compared without a branch, the last first, their excess masked off: in
 * Wasm each branch would start a block whose loads are bounds-checked
 * again, and each loop iteration pays the host's meter check. */
#define KEY_SLACK 24
HOT int key_eq(const uint8_t *a, const uint8_t *b, uint32_t n) {
    uint64_t d = (rd64(a + 16) ^ rd64(b + 16)) & (0 - (uint64_t)(n > 16));
    d |= (rd64(a + 8) ^ rd64(b + 8)) & (0 - (uint64_t)(n > 8));
    d |= (rd64(a) ^ rd64(b)) & (0 - (uint64_t)(n > 0));
    for (uint32_t i = 24; d == 0 && i < n; i += 8) d |= rd64(a + i) ^ rd64(b + i);
    return d == 0;
}

/* lookup returns key's group + 1, or 0 and the empty slot where it goes;
 * key is zero-padded to 8 bytes. */
HOT uint32_t pane_lookup(const pane *p, const uint8_t *key, uint32_t len, uint64_t h, uint32_t *slot) {
    uint32_t tag = (uint32_t)h;
    for (uint32_t i = tag & p->mask;; i = (i + 1) & p->mask) {
        uint64_t s = p->slots[i];
        if (s == 0) { *slot = i; return 0; }
        if ((uint32_t)(s >> 32) == tag) {
            uint32_t g = (uint32_t)s - 1, kl;
            const uint8_t *k = pane_key(p, g, &kl);
            if (kl == len && key_eq(k, key, len)) return (uint32_t)s;
        }
    }
}

static void pane_rehash(pane *p) {
    uint32_t size = (p->mask + 1) * 2;
    uint64_t *old = p->slots;
    uint32_t oldsize = p->mask + 1;
    p->slots = calloc(size, 8);
    if (!p->slots) abort();
    p->mask = size - 1;
    for (uint32_t j = 0; j < oldsize; j++) {
        uint64_t s = old[j];
        if (!s) continue;
        uint32_t i = (uint32_t)(s >> 32) & p->mask;
        while (p->slots[i]) i = (i + 1) & p->mask;
        p->slots[i] = s;
    }
    free(old);
}

static uint32_t pane_insert(pane *p, const uint8_t *key, uint32_t len, uint64_t h, uint32_t slot, const uint64_t *ident, int nm) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->kpos = xrealloc(p->kpos, (size_t)p->cap * 8);
        p->vals = xrealloc(p->vals, (size_t)p->cap * 8 * (nm ? nm : 1));
        p->marked = xrealloc(p->marked, p->cap);
        p->link = xrealloc(p->link, (size_t)p->cap * 4);
        p->dirty = xrealloc(p->dirty, (size_t)p->cap * 4);
    }
    uint32_t padded = (len + 7) & ~7u;
    /* KEY_SLACK more bytes stay allocated past the last key: key_eq reads
     * three words of any key */
    if (p->keys_cap - p->keys_len < padded + KEY_SLACK) {
        while (p->keys_cap - p->keys_len < padded + KEY_SLACK) p->keys_cap = p->keys_cap ? 2 * p->keys_cap : 64;
        p->keys = xrealloc(p->keys, p->keys_cap);
    }
    uint32_t g = p->n++;
    memcpy(p->keys + p->keys_len, key, len);
    memset(p->keys + p->keys_len + len, 0, padded - len);
    p->kpos[g] = (uint64_t)len << 32 | p->keys_len;
    p->keys_len += padded;
    memcpy(p->vals + (size_t)g * nm, ident, (size_t)nm * 8);
    if (spec_distinct) {
        for (int m = 0; m < nm; m++) {
            if (spec.m[m].op != OP_DISTINCT) continue;
            if (p->nsk == p->capsk) {
                p->capsk = p->capsk ? 2 * p->capsk : 8;
                p->sk = xrealloc(p->sk, (size_t)p->capsk * sizeof(sketch));
            }
            p->sk[p->nsk] = (sketch){NULL, 0, 0, NULL};
            p->vals[(size_t)g * nm + m] = p->nsk++;
        }
    }
    p->marked[g] = 0;
    p->link[g] = 0;
    p->slots[slot] = (uint64_t)(uint32_t)h << 32 | (g + 1);
    if (2 * p->n > p->mask + 1) pane_rehash(p);
    return g;
}

HOT void pane_touch(pane *p, uint32_t g) {
    if (!p->marked[g]) {
        p->marked[g] = 1;
        p->dirty[p->ndirty++] = g;
    }
}

/* ---- the groups ---- */

typedef struct {
    pane **panes; /* in increasing start */
    uint32_t n, cap;
    pane *last;   /* the pane used last: the common case */
    int64_t latest; /* the latest start found for the last record's time */
    int64_t span;   /* the slide once latest is set, else 0 (a record's
                     * time within span of latest has the same latest) */
    /* the window's kind and lengths, copied here: in Wasm the loads of
     * resolve from one base pointer are cheaper than from two */
    int64_t slide, size;
    enum wkind kind;
} wstate;

/* The states of the record being keyed besides the key columns' types
 * (enum type): past the last column, resolved by a wagg_add, and no
 * wagg_at yet in this batch. */
enum { K_END = 3, K_RESOLVED, K_NONE };
static const uint8_t k_resolved = K_RESOLVED, k_none = K_NONE;

/* KEY_ROOM: the key buffer always has this much room past the key: every
 * int64 or float64 column of the spec fits, and a string's tail may be
 * stored as a whole word, so those columns grow nothing. */
#define KEY_ROOM (8 * MAX_KEYS + 8)
#define MAX_TARGETS (MAX_WINDOWS * MAX_WINDOWS_PER_RECORD)

struct wagg_groups {
    window windows[MAX_WINDOWS];
    wstate ws[MAX_WINDOWS];
    int nwin, nm, nkeys;
    int link_w; /* the first global window, if one follows another window; else -1 */
    int64_t max_groups; /* the host's limit of groups per pane; 0: none */
    uint64_t ident[MAX_METRICS];
    uint8_t plan[MAX_KEYS + 1]; /* the key columns' types, then K_END */
    uint8_t int_op[MAX_METRICS], float_op[MAX_METRICS]; /* op + 1 of a metric wagg_add (wagg_add_float) takes, else 0 */
    /* The record being keyed. In Wasm every load and store of linear memory
     * is bounds-checked, so a call of the per-record API reads and writes
     * only these few words: next is the type the next key column must have
     * (in plan, or k_resolved, k_none), one load checks the call; h hashes
     * the key as its columns come, so resolving it reads no key back. */
    int64_t ts;
    const uint8_t *next;
    uint64_t h;
    buf key; /* KEY_ROOM free past len */
    /* The record's groups, once resolved: their values (p->vals moves only
     * when p grows, and a record adds at most one group to a pane) and
     * panes (for a distinct metric's sketch). */
    uint64_t *tvals[MAX_TARGETS];
    pane *tpanes[MAX_TARGETS];
    uint32_t ntargets;
    const char *err; /* the first misuse in this batch */
    buf msg;
};

static wagg_groups groups;
static int ready;

static void misuse(wagg_groups *g, const char *msg) {
    if (!g->err) g->err = msg;
}

__attribute__((noinline)) static pane *find_pane_slow(wagg_groups *g, int w, int64_t start) {
    wstate *s = &g->ws[w];
    uint32_t lo = 0, hi = s->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (s->panes[mid]->start < start) lo = mid + 1;
        else hi = mid;
    }
    if (lo == s->n || s->panes[lo]->start != start) {
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 4;
            s->panes = xrealloc(s->panes, (size_t)s->cap * sizeof(pane *));
        }
        memmove(s->panes + lo + 1, s->panes + lo, (size_t)(s->n - lo) * sizeof(pane *));
        s->panes[lo] = pane_new(start);
        s->n++;
    }
    s->last = s->panes[lo];
    return s->last;
}

HOT pane *find_pane(wagg_groups *g, int w, int64_t start) {
    pane *p = g->ws[w].last;
    return p && p->start == start ? p : find_pane_slow(g, w, start);
}

static void clear_groups(wagg_groups *g) {
    for (int w = 0; w < g->nwin; w++) {
        wstate *s = &g->ws[w];
        for (uint32_t i = 0; i < s->n; i++) pane_free(s->panes[i]);
        s->n = 0;
        s->last = NULL;
        s->span = 0;
    }
}

/* The key's hash: the words of its columns (a string's length, then its
 * bytes 8 at a time and a tail) folded by multiply-rotate as they come,
 * then mixed with the key's length. hash_key computes the same from a key's
 * bytes, for a restored group. */
#define HASH_M1 0x9e3779b97f4a7c15ull
#define HASH_M2 0xc2b2ae3d27d4eb4full
HOT uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
HOT uint64_t hash_word(uint64_t h, uint64_t w) { return rotl((h ^ w) * HASH_M2, 31); }
HOT uint64_t hash_end(uint64_t h, uint32_t n) {
    h = (h ^ n) * HASH_M1;
    h ^= h >> 29;
    h *= HASH_M2;
    return h ^ (h >> 32);
}
static uint64_t hash_key(const uint8_t *k, uint32_t n) {
    uint64_t h = 0;
    const uint8_t *p = k;
    for (int c = 0; c < spec.nkeys; c++) {
        if (spec.keys[c].type != T_STRING) {
            h = hash_word(h, rd64(p));
            p += 8;
            continue;
        }
        uint32_t l = rd32(p);
        h = hash_word(h, l);
        p += 4;
        for (; l >= 8; p += 8, l -= 8) h = hash_word(h, rd64(p));
        h = hash_word(h, tail(p, l));
        p += l;
    }
    return hash_end(h, n);
}

void wagg_at(wagg_groups *g, int64_t ts) {
    g->ts = ts;
    g->next = g->plan;
    g->h = 0;
    g->key.len = 0;
}

__attribute__((noinline)) static void col_misuse(wagg_groups *g) {
    uint8_t t = *g->next;
    if (t == K_NONE) misuse(g, "wagg: a key column filled before wagg_at");
    else if (t == K_RESOLVED) misuse(g, "wagg: a key column filled after wagg_add: fill every key column first");
    else if (t == K_END) misuse(g, "wagg: more key columns filled than the spec declares");
    else misuse(g, "wagg: a key column filled with a value of another type than declared");
}

/* by_word appends an int64 or float64 column (KEY_ROOM has room for it).
 * The state is read into locals once: a byte store into the key may alias
 * anything, and every reload would be a checked load in Wasm. */
HOT void by_word(wagg_groups *g, enum type t, uint64_t v) {
    const uint8_t *next = g->next;
    if (*next != t) { col_misuse(g); return; }
    size_t len = g->key.len;
    uint64_t h = g->h;
    memcpy(g->key.p + len, &v, 8);
    g->next = next + 1;
    g->key.len = len + 8;
    g->h = hash_word(h, v);
}
void wagg_by_int64(wagg_groups *g, int64_t v) { by_word(g, T_INT64, (uint64_t)v); }
void wagg_by_float64(wagg_groups *g, double v) { by_word(g, T_FLOAT64, fbits(v)); }

void wagg_by_string(wagg_groups *g, wagg_bytes v) {
    const uint8_t *next = g->next;
    if (*next != T_STRING) { col_misuse(g); return; }
    uint32_t n = v.len;
    if (g->key.cap - g->key.len < 4 + (size_t)n + 8 + KEY_ROOM) buf_grow_slow(&g->key, 4 + (size_t)n + 8 + KEY_ROOM);
    size_t len = g->key.len;
    uint8_t *d = g->key.p + len;
    const uint8_t *s = v.ptr;
    uint64_t h = hash_word(g->h, n);
    memcpy(d, &n, 4);
    d += 4;
    /* copied and hashed in one pass, the first word outside the loop (in
     * Wasm a loop iteration also pays a meter check); the tail stored as a
     * whole word (the room is there), one store instead of up to three */
    if (n >= 8) {
        uint64_t w = rd64(s);
        memcpy(d, &w, 8);
        h = hash_word(h, w);
        s += 8, d += 8, n -= 8;
    }
    for (; n >= 8; s += 8, d += 8, n -= 8) {
        uint64_t w = rd64(s);
        memcpy(d, &w, 8);
        h = hash_word(h, w);
    }
    uint64_t t = tail(s, n);
    memcpy(d, &t, 8);
    g->next = next + 1;
    g->key.len = len + 4 + v.len;
    g->h = hash_word(h, t);
}

/* add_group finds (or creates) the key's group in pane p, marks it
 * changed, and returns it + 1; 0 on the host's limit. */
HOT uint32_t add_group(wagg_groups *g, pane *p, const uint8_t *key, uint32_t len, uint64_t h) {
    uint32_t slot = 0, s = pane_lookup(p, key, len, h, &slot);
    if (!s) {
        if (g->max_groups > 0 && (int64_t)p->n >= g->max_groups) {
            /* the host keeps at most max_groups per pane (abi.Config) */
            misuse(g, "wagg: too many groups in one pane: the pane holds the host's limit (sandbox.max_groups_per_pane)");
            return 0;
        }
        s = pane_insert(p, key, len, h, slot, g->ident, g->nm) + 1;
    }
    pane_touch(p, s - 1);
    return s;
}

/* floor_start is the start of the latest window of the slide at or before
 * ts, and 0 when that start is below INT64_MIN (abi latestStart). */
HOT int floor_start(int64_t ts, int64_t slide, int64_t *s) {
    int64_t m = ts % slide;
    if (m < 0) m += slide;
    if (ts < INT64_MIN + m) return 0;
    *s = ts - m;
    return 1;
}

/* resolved_or_misuse is resolve when the record is not keyed and ready:
 * already resolved, or a misuse. */
__attribute__((noinline)) static int resolved_or_misuse(wagg_groups *g) {
    const uint8_t *next = g->next;
    if (*next == K_RESOLVED) return g->err == NULL;
    g->next = &k_resolved;
    if (*next == K_NONE) misuse(g, "wagg: wagg_add before wagg_at");
    else misuse(g, "wagg: wagg_add before every key column was filled");
    return 0;
}

/* push_target keeps group i of pane p as the record's next target, and adds
 * v to its metric m unless m < 0. */
HOT void push_target(wagg_groups *g, uint32_t *nt, pane *p, uint32_t i, int nm, int m, int64_t v) {
    uint64_t *vals = p->vals + (size_t)i * nm;
    g->tvals[*nt] = vals;
    g->tpanes[(*nt)++] = p;
    if (m >= 0) vals[m] += (uint64_t)v; /* wraps like Go */
}

/* resolve finds (or creates) the key's group in every window holding the
 * record's time and keeps them as the record's targets; 0 on misuse. The
 * record's first wagg_add of a sum (m >= 0) is applied as the groups are
 * found: in Wasm reading the targets back costs checked loads. */
HOT int resolve(wagg_groups *g, int m, int64_t v) {
    if (*g->next != K_END) return resolved_or_misuse(g);
    g->next = &k_resolved;
    if (g->err) return 0;
    /* the key in locals: the stores below may alias its buffer's fields */
    uint8_t *key = g->key.p;
    uint32_t len = (uint32_t)g->key.len;
    uint64_t h = hash_end(g->h, len);
    uint64_t zero = 0;
    memcpy(key + len, &zero, 8); /* the pad to 8 bytes (KEY_ROOM) */
    int64_t ts = g->ts;
    int nm = g->nm, nwin = g->nwin;
    uint32_t nt = 0;
    /* The record's first group links to its group in the first global
     * window's one pane (it lives as long as the panes do): a key seen
     * again in the same pane skips the second lookup. */
    pane *lp = NULL;
    uint32_t lg = 0;
    /* st walks the windows by pointer: its fields are then loads at
     * constant offsets from it, which Wasm encodes in the load and wazero
     * checks once for the highest (an index would add each offset apart) */
    wstate *st = g->ws;
    for (int w = 0; w < nwin; w++, st++) {
        int64_t s;
        pane *p;
        uint32_t i;
        if (st->kind == W_GLOBAL) {
            /* the window's one pane, at start 0, lives as long as the state */
            p = st->last ? st->last : find_pane_slow(g, w, 0);
            if (w != g->link_w || !lp) {
                i = add_group(g, p, key, len, h);
            } else if ((i = lp->link[lg]) != 0) {
                pane_touch(p, i - 1);
            } else {
                i = lp->link[lg] = add_group(g, p, key, len, h);
            }
            if (i) {
                push_target(g, &nt, p, i - 1, nm, m, v);
            }
            continue;
        }
        /* Records come mostly in time order: reuse the last latest start
         * while ts lies within one slide of it, and divide otherwise. */
        if (ts >= st->latest && (uint64_t)ts - (uint64_t)st->latest < (uint64_t)st->span) {
            s = st->latest;
        } else if (floor_start(ts, st->slide, &s)) {
            st->latest = s;
            st->span = st->slide;
        } else {
            continue;
        }
        if (st->kind == W_TUMBLING) { /* size == slide: the one window */
            p = find_pane(g, w, s);
            i = add_group(g, p, key, len, h);
            if (i) {
                if (!lp) {
                    lp = p;
                    lg = i - 1;
                }
                push_target(g, &nt, p, i - 1, nm, m, v);
            }
            continue;
        }
        /* latest first, as abi.Window.Starts */
        while (ts - s < st->size) {
            p = find_pane(g, w, s);
            i = add_group(g, p, key, len, h);
            if (i) {
                push_target(g, &nt, p, i - 1, nm, m, v);
            }
            if (s < INT64_MIN + st->slide) break;
            s -= st->slide;
        }
    }
    g->ntargets = nt;
    return g->err == NULL;
}

__attribute__((noinline)) static void metric_misuse(wagg_groups *g, int m, int is_float) {
    if (m < 0 || m >= g->nm) misuse(g, "wagg: a metric that is not one of the spec's");
    else if (spec.m[m].op == OP_DISTINCT) misuse(g, "wagg: a distinct metric, use wagg_add_distinct");
    else misuse(g, is_float ? "wagg: wagg_add_float on an int64 metric, use wagg_add" : "wagg: wagg_add on a float64 metric, use wagg_add_float");
}

static void add_distinct_hash(wagg_groups *g, int m, uint64_t h) {
    if (!resolve(g, -1, 0)) return;
    if (m < 0 || m >= g->nm) { misuse(g, "wagg: a metric that is not one of the spec's"); return; }
    if (spec.m[m].op != OP_DISTINCT) { misuse(g, "wagg: wagg_add_distinct on a metric that is not distinct, use wagg_add or wagg_add_float"); return; }
    for (uint32_t t = 0; t < g->ntargets; t++) sk_add_hash(&g->tpanes[t]->sk[g->tvals[t][m]], h);
}

void wagg_add_distinct(wagg_groups *g, int m, int64_t v) {
    uint8_t b[8];
    memcpy(b, &v, 8);
    add_distinct_hash(g, m, sk_hash(b, 8));
}

void wagg_add_distinct_string(wagg_groups *g, int m, wagg_bytes v) { add_distinct_hash(g, m, sk_hash(v.ptr, v.len)); }

void wagg_add(wagg_groups *g, int m, int64_t v) {
    int op = (unsigned)m < MAX_METRICS ? g->int_op[m] : 0;
    if (op == OP_ADD + 1 && *g->next == K_END) { /* the record's first add */
        resolve(g, m, v);
        return;
    }
    if (!resolve(g, -1, 0)) return;
    if (!op) { metric_misuse(g, m, 0); return; }
    uint32_t n = g->ntargets;
    /* the op chosen once, not per group */
    if (op == OP_ADD + 1) {
        for (uint32_t t = 0; t < n; t++) {
            uint64_t *val = &g->tvals[t][m];
            *val += (uint64_t)v; /* wraps like Go */
        }
        return;
    }
    for (uint32_t t = 0; t < n; t++) {
        uint64_t *val = &g->tvals[t][m];
        int64_t cur = (int64_t)*val;
        *val = (uint64_t)(op == OP_MIN + 1 ? (v < cur ? v : cur) : (v > cur ? v : cur));
    }
}

/* fmin and fmax as Go's math.Min and math.Max: NaN wins, -0 < +0. */
static double gomin(double a, double b) {
    if (a != a || b != b) return a != a ? a : b;
    if (a == 0 && b == 0) return (fbits(a) >> 63) ? a : b;
    return a < b ? a : b;
}
static double gomax(double a, double b) {
    if (a != a || b != b) return a != a ? a : b;
    if (a == 0 && b == 0) return (fbits(a) >> 63) ? b : a;
    return a > b ? a : b;
}

void wagg_add_float(wagg_groups *g, int m, double v) {
    if (!resolve(g, -1, 0)) return;
    int op = (unsigned)m < MAX_METRICS ? g->float_op[m] : 0;
    if (!op) { metric_misuse(g, m, 1); return; }
    op--;
    for (uint32_t t = 0; t < g->ntargets; t++) {
        uint64_t *val = &g->tvals[t][m];
        double cur = bitsf(*val);
        if (op == OP_MIN) cur = gomin(cur, v);
        else if (op == OP_MAX) cur = gomax(cur, v);
        else cur += v;
        *val = fbits(cur);
        if (op == OP_AVG) val[1]++; /* the count follows the sum */
    }
}

int wagg_fail(wagg_groups *g, const char *msg) {
    g->msg.len = 0;
    puts_(&g->msg, msg);
    put8(&g->msg, 0);
    misuse(g, (const char *)g->msg.p);
    return WAGG_ERR_AGGREGATE;
}

/* ---- init ---- */

int wagg_engine_init(const uint8_t *cfg, uint32_t len) {
    define();
    if (spec.err) return fail(WAGG_ERR_NOT_READY, spec.err);
    window wins[MAX_WINDOWS];
    int n;
    int64_t max_groups;
    const char *err;
    if (!parse_config(cfg, len, wins, &n, &max_groups, &err)) {
        from.present = 0;
        return fail(WAGG_ERR_BAD_INPUT, err);
    }
    if (from.present) {
        int ok = 0;
        for (int i = 0; i < spec.nmigrates; i++) ok |= spec.migrates[i] == from.version;
        const char *why = ok ? NULL : "wagg: config migrate_from: a state version this build does not migrate";
        ok = from.nkeys == spec.nkeys;
        for (int i = 0; ok && i < spec.nkeys; i++) ok = from.keys[i] == spec.keys[i].type;
        if (!why && !ok) why = "wagg: config migrate_from: other key column types: a migration keeps the key's column types";
        if (why) {
            from.present = 0;
            return fail(WAGG_ERR_BAD_INPUT, why);
        }
    }
    clear_groups(&groups);
    memcpy(groups.windows, wins, (size_t)n * sizeof(window));
    for (int w = 0; w < n; w++) {
        groups.ws[w].kind = wins[w].kind;
        groups.ws[w].slide = wins[w].slide;
        groups.ws[w].size = wins[w].size;
    }
    groups.nwin = n;
    groups.link_w = -1;
    for (int w = 1; w < n; w++)
        if (groups.windows[w].kind == W_GLOBAL) {
            groups.link_w = w;
            break;
        }
    groups.max_groups = max_groups;
    groups.nm = spec.nm;
    groups.nkeys = spec.nkeys;
    for (int i = 0; i < spec.nkeys; i++) groups.plan[i] = (uint8_t)spec.keys[i].type;
    groups.plan[spec.nkeys] = K_END;
    groups.next = &k_none;
    groups.ntargets = 0;
    groups.key.len = 0;
    buf_grow(&groups.key, KEY_ROOM);
    spec_distinct = 0;
    memset(groups.int_op, 0, sizeof groups.int_op);
    memset(groups.float_op, 0, sizeof groups.float_op);
    for (int i = 0; i < spec.nm; i++) {
        groups.ident[i] = spec.m[i].ident;
        if (spec.m[i].op == OP_DISTINCT) spec_distinct = 1;
        else if (spec.m[i].type == T_FLOAT64) groups.float_op[i] = (uint8_t)(spec.m[i].op + 1);
        else groups.int_op[i] = (uint8_t)(spec.m[i].op + 1);
    }
    ready = 1;
    return WAGG_OK;
}

/* ---- process: decode a batch (abi.DecodeBatch's checks) and fold it in ---- */

#define MAX_COLS (MAX_FIELDS + 1)

struct wagg_batch {
    uint32_t n;
    const int64_t *times;
    const uint8_t *cols[MAX_COLS];  /* int64/float64 values, or string data */
    const uint32_t *offs[MAX_COLS]; /* string offsets */
};

static wagg_batch batch;

uint32_t wagg_len(const wagg_batch *b) { return b->n; }
int64_t wagg_time(const wagg_batch *b, uint32_t i) { return b->times[i]; }
const int64_t *wagg_times(const wagg_batch *b) { return b->times; }
const int64_t *wagg_int64s(const wagg_batch *b, int f) { return (const int64_t *)b->cols[f]; }
const double *wagg_float64s(const wagg_batch *b, int f) { return (const double *)b->cols[f]; }
wagg_bytes wagg_string(const wagg_batch *b, int f, uint32_t i) {
    const uint32_t *o = b->offs[f];
    return (wagg_bytes){b->cols[f] + o[i], o[i + 1] - o[i]};
}
wagg_bytes wagg_raw(const wagg_batch *b, uint32_t i) { return wagg_string(b, spec.nin, i); }

static uint32_t pad8(uint64_t k) { return (uint32_t)((8 - k % 8) % 8); }

static int zeros(const uint8_t *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (p[i]) return 0;
    return 1;
}

/* backwards reports whether offsets o[0..n] ever decrease: four at a time
 * without a branch each (in Wasm a loop iteration also pays a meter check). */
static int backwards(const uint32_t *o, uint32_t n) {
    uint32_t i = 0, bad = 0;
    for (; i + 4 <= n; i += 4)
        bad |= (o[i + 1] < o[i]) | (o[i + 2] < o[i + 1]) | (o[i + 3] < o[i + 2]) | (o[i + 4] < o[i + 3]);
    for (; i < n; i++) bad |= o[i + 1] < o[i];
    return bad != 0;
}

/* The batch lies in the 8-aligned input buffer and every section starts on
 * an 8-byte boundary of it, so columns are read in place. */
static int decode_batch(const uint8_t *p, uint32_t len, wagg_batch *b) {
    if (len < 32 || rd32(p) != BATCH_MAGIC) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: bad header");
    uint32_t n = rd32(p + 4), flags = rd32(p + 12);
    if (n > MAX_BATCH_RECORDS) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: too many records");
    if (flags & ~1u) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: unknown flags");
    if (rd64(p + 16) != len) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: the header's length is not the batch's");
    if (rd64(p + 24) != 0) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: reserved header bytes are not zero");
    uint64_t off = 32;
    b->n = n;
#define TAKE(k) do { if ((uint64_t)(k) > len - off) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: a section overruns the batch"); } while (0)
    TAKE(8ull * n);
    b->times = (const int64_t *)(p + off);
    off += 8ull * n;
    int ncols = spec.nin + (spec.raw ? 1 : 0);
    for (int c = 0; c < ncols; c++) {
        enum type t = c < spec.nin ? spec.in[c].type : T_STRING;
        if (t != T_STRING) {
            TAKE(8ull * n);
            b->cols[c] = p + off;
            off += 8ull * n;
            continue;
        }
        uint64_t ob = 4ull * (n + 1);
        TAKE(ob + pad8(ob));
        const uint32_t *o = (const uint32_t *)(p + off);
        if (!zeros(p + off + ob, pad8(ob))) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: padding is not zero");
        off += ob + pad8(ob);
        if (o[0] != 0 || backwards(o, n)) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: string offsets go backwards");
        uint64_t dl = o[n];
        TAKE(dl + pad8(dl));
        b->offs[c] = o;
        b->cols[c] = p + off;
        if (!zeros(p + off + dl, pad8(dl))) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: padding is not zero");
        off += dl + pad8(dl);
    }
#undef TAKE
    if (off != len) return fail(WAGG_ERR_BAD_INPUT, "abi: malformed batch: trailing bytes");
    return WAGG_OK;
}

/* see wagg_engine_process */
static wagg_groups *volatile groups_ptr = &groups;
static const wagg_batch *volatile batch_ptr = &batch;

int wagg_engine_process(const uint8_t *p, uint32_t len) {
    if (!ready) return fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
    if (len >= 16 && rd32(p) == BATCH_MAGIC) {
        uint32_t f = rd32(p + 8);
        int raw = p[12] & 1;
        if (f != (uint32_t)spec.nin || raw != spec.raw) {
            fail(WAGG_ERR_SCHEMA, "wagg: batch does not match the declared input: ");
            put_uint(&last_err, f);
            puts_(&last_err, raw ? " fields (raw true), declared " : " fields (raw false), declared ");
            put_uint(&last_err, (uint64_t)spec.nin);
            puts_(&last_err, spec.raw ? " (raw true)" : " (raw false)");
            return WAGG_ERR_SCHEMA;
        }
    }
    int st = decode_batch(p, len, &batch);
    if (st) return st;
    groups.err = NULL;
    groups.next = &k_none; /* no record of an earlier batch is added to */
    groups.ntargets = 0;
    /* The aggregator reaches the groups and the batch through pointers
     * loaded from memory, which no optimizer folds into constant addresses
     * (an empty asm barrier does not survive binaryen's wasm-opt): in Wasm
     * an access through a constant address is bounds-checked every time,
     * one through a pointer in a local is not again for a lower offset from
     * the same pointer (wazero's known safe bounds). */
    int rc = wagg_aggregate(batch_ptr, groups_ptr);
    if (groups.err) return fail(WAGG_ERR_AGGREGATE, groups.err);
    if (rc) return fail(WAGG_ERR_AGGREGATE, "wagg: the aggregator failed");
    return WAGG_OK;
}

/* ---- flush ---- */

static buf rows;

/* put_values appends group g's metrics: 8 bytes each, a sketch for a
 * distinct one. */
static void put_values(buf *b, const pane *p, uint32_t g, int nm) {
    const uint64_t *v = p->vals + (size_t)g * nm;
    if (!spec_distinct) {
        buf_grow(b, (size_t)nm * 8);
        copy_short(b->p + b->len, (const uint8_t *)v, (size_t)nm * 8);
        b->len += (size_t)nm * 8;
        return;
    }
    for (int m = 0; m < nm; m++) {
        if (spec.m[m].op == OP_DISTINCT) sk_put(b, &p->sk[v[m]]);
        else put64(b, v[m]);
    }
}

static void put_row(int w, int final, const pane *p, uint32_t g, int nm) {
    uint32_t kl;
    const uint8_t *k = pane_key(p, g, &kl);
    buf_grow(&rows, 10 + (size_t)kl);
    uint8_t *d = rows.p + rows.len;
    d[0] = (uint8_t)w;
    d[1] = final ? 1 : 0;
    uint64_t start = (uint64_t)p->start;
    memcpy(d + 2, &start, 8);
    copy_short(d + 10, k, kl);
    rows.len += 10 + (size_t)kl;
    put_values(&rows, p, g, nm);
}

/* put_rows appends the rows of pane p's groups list[0..n) of window w (all
 * its groups when list is NULL) and clears their changed marks. The pane's
 * arrays and the end of the rows live in locals across the loop: a byte
 * store may alias anything, and in Wasm every reload is a checked load. A
 * key is copied by whole words (room for its pad is reserved). */
static void put_rows(int w, int final, pane *p, const uint32_t *list, uint32_t n, int nm) {
    if (spec_distinct) { /* the values carry sketches */
        for (uint32_t i = 0; i < n; i++) {
            uint32_t g = list ? list[i] : i;
            put_row(w, final, p, g, nm);
            p->marked[g] = 0;
        }
        return;
    }
    const uint64_t *kpos = p->kpos;
    const uint8_t *keys = p->keys;
    const uint64_t *vals = p->vals;
    uint8_t *marked = p->marked;
    uint64_t start = (uint64_t)p->start;
    uint16_t head = (uint16_t)(w | (final ? 1 : 0) << 8);
    uint8_t *d = rows.p + rows.len, *end = rows.p + rows.cap;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t g = list ? list[i] : i;
        uint64_t e = kpos[g];
        uint32_t kl = (uint32_t)(e >> 32);
        size_t need = 10 + (size_t)kl + KEY_SLACK + (size_t)nm * 8;
        if ((size_t)(end - d) < need) {
            rows.len = (size_t)(d - rows.p);
            buf_grow_slow(&rows, need);
            d = rows.p + rows.len;
            end = rows.p + rows.cap;
        }
        memcpy(d, &head, 2);
        memcpy(d + 2, &start, 8);
        d += 10;
        /* zero-padded and readable for 24 bytes (KEY_SLACK): copied by
         * words, the first three without a loop or branch (a meter check
         * per iteration in Wasm); what they copy past the key the values
         * overwrite, or lies past the rows' length */
        const uint8_t *k = keys + (uint32_t)e;
        memcpy(d + 16, k + 16, 8);
        memcpy(d + 8, k + 8, 8);
        memcpy(d, k, 8);
        for (uint32_t i = 24; i < kl; i += 8) memcpy(d + i, k + i, 8);
        d += kl;
        const uint64_t *v = vals + (size_t)g * nm;
        if (nm > 0) memcpy(d, v, 8);
        for (int m = 1; m < nm; m++) memcpy(d + 8 * m, &v[m], 8);
        d += (size_t)nm * 8;
        marked[g] = 0;
    }
    rows.len = (size_t)(d - rows.p);
}

static int closed(const window *w, int64_t start, int64_t watermark) {
    if (w->kind == W_GLOBAL) return 0;
    int64_t end = start > INT64_MAX - w->size ? INT64_MAX : start + w->size;
    return end <= watermark;
}

wagg_bytes wagg_engine_flush(int64_t watermark) {
    if (!ready) {
        fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
        return (wagg_bytes){NULL, 0};
    }
    rows.len = 0;
    put32(&rows, ROWS_MAGIC);
    put32(&rows, 0);
    put64(&rows, 0);
    uint32_t count = 0;
    int nm = groups.nm;
    for (int w = 0; w < groups.nwin; w++) {
        wstate *s = &groups.ws[w];
        uint32_t keep = 0;
        for (uint32_t i = 0; i < s->n; i++) {
            pane *p = s->panes[i];
            if (closed(&groups.windows[w], p->start, watermark)) {
                put_rows(w, 1, p, NULL, p->n, nm);
                count += p->n;
                if (s->last == p) s->last = NULL;
                pane_free(p);
                continue;
            }
            put_rows(w, 0, p, p->dirty, p->ndirty, nm);
            count += p->ndirty;
            p->ndirty = 0;
            s->panes[keep++] = p;
        }
        s->n = keep;
    }
    memcpy(rows.p + 4, &count, 4);
    uint64_t total = rows.len;
    memcpy(rows.p + 8, &total, 8);
    return (wagg_bytes){rows.p, (uint32_t)rows.len};
}

/* ---- snapshot and restore: the Go SDK's layout ----
 *
 *   u32 "WGS1", u32 windows
 *   per window: u32 panes; per pane: i64 start, u32 groups;
 *   per group: u32 key length, key, metrics x u64 (a distinct metric: its
 *   sketch as a row carries it)
 */

static buf snap;

wagg_bytes wagg_engine_snapshot(void) {
    if (!ready) {
        fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
        return (wagg_bytes){NULL, 0};
    }
    snap.len = 0;
    put32(&snap, SNAP_MAGIC);
    put32(&snap, (uint32_t)groups.nwin);
    for (int w = 0; w < groups.nwin; w++) {
        wstate *s = &groups.ws[w];
        put32(&snap, s->n);
        for (uint32_t i = 0; i < s->n; i++) {
            pane *p = s->panes[i];
            put64(&snap, (uint64_t)p->start);
            put32(&snap, p->n);
            for (uint32_t g = 0; g < p->n; g++) {
                uint32_t kl;
                const uint8_t *k = pane_key(p, g, &kl);
                put32(&snap, kl);
                put(&snap, k, kl);
                put_values(&snap, p, g, groups.nm);
            }
        }
    }
    return (wagg_bytes){snap.p, (uint32_t)snap.len};
}

/* valid_key reports whether key is exactly one value per key column. */
static int valid_key(const uint8_t *k, uint32_t n) {
    uint64_t off = 0;
    for (int c = 0; c < spec.nkeys; c++) {
        if (spec.keys[c].type == T_STRING) {
            if (n - off < 4) return 0;
            off += 4 + (uint64_t)rd32(k + off);
            if (off > n) return 0;
        } else {
            if (n - off < 8) return 0;
            off += 8;
        }
    }
    return off == n;
}

/* ---- migrating a snapshot of an older state version (abi/ABI.md) ---- */

struct wagg_old_group {
    int w;
    int64_t start;
    wagg_bytes key;
    const uint64_t *vals; /* from.nm values (a distinct metric's unused) */
};
struct wagg_new_group {
    uint64_t *vals;
    const char *err;
};

int wagg_old_version(const wagg_old_group *o) { (void)o; return (int)from.version; }
int wagg_old_window(const wagg_old_group *o) { return o->w; }
int64_t wagg_old_start(const wagg_old_group *o) { return o->start; }
wagg_bytes wagg_old_key(const wagg_old_group *o) { return o->key; }
/* A distinct metric is a sketch, not a value the hook reads. */
static int old_metric_index(const char *name, enum type t) {
    for (int i = 0; i < from.nm; i++) {
        if (from.m[i].type == t && strcmp(from.m[i].name, name) == 0 && strcmp(from.m[i].kind, "distinct") != 0) return i;
    }
    return -1;
}
int wagg_old_int64(const wagg_old_group *o, const char *name, int64_t *v) {
    int i = old_metric_index(name, T_INT64);
    if (i < 0) return 0;
    *v = (int64_t)o->vals[i];
    return 1;
}
int wagg_old_float64(const wagg_old_group *o, const char *name, double *v) {
    int i = old_metric_index(name, T_FLOAT64);
    if (i < 0) return 0;
    *v = bitsf(o->vals[i]);
    return 1;
}
static int new_metric(wagg_new_group *g, int m, enum type t, int avg) {
    if (m < 0 || m >= spec.nm || spec.m[m].type != t || (spec.m[m].op == OP_AVG) != avg || spec.m[m].op == OP_DISTINCT) {
        if (!g->err) g->err = "wagg: migrate failed: a wagg_new_set call of another metric type than declared, or of an unknown metric";
        return 0;
    }
    return 1;
}
void wagg_new_set(wagg_new_group *g, int m, int64_t v) {
    if (new_metric(g, m, T_INT64, 0)) g->vals[m] = (uint64_t)v;
}
void wagg_new_set_float(wagg_new_group *g, int m, double v) {
    if (new_metric(g, m, T_FLOAT64, 0)) g->vals[m] = fbits(v);
}
void wagg_new_set_average(wagg_new_group *g, int m, double sum, int64_t count) {
    if (new_metric(g, m, T_FLOAT64, 1)) {
        g->vals[m] = fbits(sum);
        g->vals[m + 1] = (uint64_t)count;
    }
}

/* The sketches of the distinct metrics of the group decode_snapshot reads,
 * by the snapshot's metric; those it does not carry over are freed at the
 * next group or restore. */
static sketch old_sk[MAX_METRICS];
static void free_old_sketches(void) {
    for (int m = 0; m < MAX_METRICS; m++) {
        sk_free(&old_sk[m]);
        old_sk[m] = (sketch){0};
    }
}

static int decode_snapshot(const uint8_t *b, uint32_t len) {
    uint64_t off = 0;
    int nm = groups.nm;
    int width = from.present ? from.nm : nm; /* metrics per group in the snapshot */
    int distinct[MAX_METRICS];               /* the snapshot's metric m is a sketch */
    int carry[MAX_METRICS];                  /* per metric, the old one it starts from */
    for (int m = 0; m < width; m++) distinct[m] = from.present ? !strcmp(from.m[m].kind, "distinct") : spec.m[m].op == OP_DISTINCT;
    for (int i = 0; i < nm; i++) {
        carry[i] = from.present ? -1 : i;
        for (int k = 0; k < from.nm && from.present; k++) {
            if (!strcmp(from.m[k].name, spec.m[i].name) && !strcmp(from.m[k].kind, spec.m[i].kind) && from.m[k].type == spec.m[i].type) {
                carry[i] = k;
                break;
            }
        }
    }
    uint64_t old[MAX_METRICS], vals[MAX_METRICS];
#define NEED(k) do { if ((uint64_t)(k) > len - off) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: truncated"); } while (0)
    NEED(8);
    if (rd32(b) != SNAP_MAGIC) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: bad magic");
    if (rd32(b + 4) != (uint32_t)groups.nwin) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: taken with another number of windows");
    off = 8;
    for (int w = 0; w < groups.nwin; w++) {
        window *win = &groups.windows[w];
        NEED(4);
        uint32_t panes = rd32(b + off);
        off += 4;
        int64_t prev = 0;
        for (uint32_t i = 0; i < panes; i++) {
            NEED(12);
            int64_t start = (int64_t)rd64(b + off);
            uint32_t n = rd32(b + off + 8);
            off += 12;
            wstate *s = &groups.ws[w];
            if (i > 0 && start <= prev) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: panes out of order");
            prev = start;
            if (win->kind == W_GLOBAL ? start != 0 : start % win->slide != 0) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: not a window start");
            pane *p = find_pane(&groups, w, start);
            for (uint32_t j = 0; j < n; j++) {
                NEED(4);
                uint32_t kl = rd32(b + off);
                off += 4;
                NEED(kl);
                const uint8_t *k = b + off;
                if (!valid_key(k, kl)) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: a key does not match the key columns");
                uint64_t h = hash_key(k, kl);
                uint32_t slot = 0;
                /* lookups take a key zero-padded to 8 bytes */
                groups.key.len = 0;
                buf_grow(&groups.key, (size_t)kl + KEY_ROOM);
                memcpy(groups.key.p, k, kl);
                memset(groups.key.p + kl, 0, 8);
                if (pane_lookup(p, groups.key.p, kl, h, &slot)) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: a group appears twice");
                off += kl;
                /* The group's metrics in the snapshot's schema: 8 bytes each
                 * but a distinct metric's sketch, of its own length. */
                free_old_sketches();
                for (int m = 0; m < width; m++) {
                    if (distinct[m]) {
                        uint32_t took = sk_read(&old_sk[m], b + off, len - off);
                        if (!took) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: a sketch does not decode");
                        off += took;
                        continue;
                    }
                    NEED(8);
                    old[m] = rd64(b + off);
                    off += 8;
                }
                for (int m = 0; m < nm; m++) vals[m] = carry[m] >= 0 ? old[carry[m]] : groups.ident[m];
                if (from.present) {
                    wagg_old_group og = {w, start, {k, kl}, old};
                    wagg_new_group ng = {vals, NULL};
                    int keep = spec.migrate(&og, &ng);
                    if (ng.err) return fail(WAGG_ERR_AGGREGATE, ng.err);
                    if (keep < 0) return fail(WAGG_ERR_AGGREGATE, "wagg: migrate failed");
                    if (!keep) continue;
                }
                uint32_t g = pane_insert(p, k, kl, h, slot, groups.ident, nm);
                uint64_t *v = p->vals + (size_t)g * nm;
                for (int m = 0; m < nm; m++) {
                    if (spec.m[m].op != OP_DISTINCT) {
                        v[m] = vals[m];
                        continue;
                    }
                    /* A distinct metric's sketch comes from the snapshot's
                     * metric it carries (itself when not migrating); a new
                     * one starts empty. */
                    if (carry[m] >= 0) {
                        p->sk[v[m]] = old_sk[carry[m]];
                        old_sk[carry[m]] = (sketch){0};
                    }
                }
                /* Every restored group is marked changed: the first flush
                 * after a restore emits the whole state (abi/ABI.md). */
                pane_touch(p, g);
            }
            if (from.present && p->n == 0) { /* every group dropped */
                pane_free(p);
                s->n--;
                s->last = NULL;
            }
        }
    }
#undef NEED
    free_old_sketches();
    if (off != len) return fail(WAGG_ERR_BAD_INPUT, "wagg: malformed snapshot: trailing bytes");
    return WAGG_OK;
}

int wagg_engine_restore(const uint8_t *b, uint32_t len) {
    if (!ready) return fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
    clear_groups(&groups);
    int st = decode_snapshot(b, len);
    if (st) clear_groups(&groups); /* on error the state is empty */
    return st;
}

/* ---- the Wasm exports (abi/ABI.md "Exports") ---- */

#ifdef __wasm__
#define EXPORT(name) __attribute__((export_name(name)))

static uint8_t *input;
static uint32_t input_cap;

static int64_t region(wagg_bytes b) {
    if (!b.ptr && !b.len) return 0;
    return (int64_t)(((uint64_t)(uintptr_t)b.ptr << 32) | b.len);
}
static int64_t packed(wagg_bytes b) { return b.ptr || b.len ? region(b) : 0; }

EXPORT("wagg_abi_version_1") void wagg_abi_version_1(void) {}

EXPORT("wagg_input_buffer") uint32_t wagg_input_buffer(int32_t size) {
    if (size < 0) return 0;
    if ((uint32_t)size > input_cap) {
        free(input);
        input = aligned_alloc(8, ((uint32_t)size + 7) & ~7u);
        input_cap = input ? (uint32_t)size : 0;
    }
    return (uint32_t)(uintptr_t)input;
}

static const uint8_t *in(int32_t n) { return n >= 0 && (uint32_t)n <= input_cap ? input : NULL; }

EXPORT("wagg_describe") int64_t wagg_describe(void) {
    wagg_bytes b = wagg_engine_describe();
    return b.ptr ? region(b) : WAGG_ERR_NOT_READY;
}

EXPORT("wagg_init") int32_t wagg_init(int32_t n) {
    if (!in(n)) return fail(WAGG_ERR_BAD_INPUT, "wagg: length exceeds the input buffer");
    return wagg_engine_init(input, (uint32_t)n);
}

EXPORT("wagg_process") int32_t wagg_process(int32_t n) {
    if (!ready) return fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
    if (!in(n)) return fail(WAGG_ERR_BAD_INPUT, "wagg: length exceeds the input buffer");
    return wagg_engine_process(input, (uint32_t)n);
}

EXPORT("wagg_flush") int64_t wagg_flush(int64_t watermark) {
    if (!ready) return fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
    return packed(wagg_engine_flush(watermark));
}

EXPORT("wagg_snapshot") int64_t wagg_snapshot(void) {
    if (!ready) return fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
    return packed(wagg_engine_snapshot());
}

EXPORT("wagg_restore") int32_t wagg_restore(int32_t n) {
    if (!ready) return fail(WAGG_ERR_NOT_READY, "wagg: wagg_init has not succeeded");
    if (!in(n)) return fail(WAGG_ERR_BAD_INPUT, "wagg: length exceeds the input buffer");
    return wagg_engine_restore(input, (uint32_t)n);
}

EXPORT("wagg_last_error") int64_t wagg_last_error(void) { return packed(wagg_engine_last_error()); }
#endif
