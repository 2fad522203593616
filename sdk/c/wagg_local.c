/* wagg_local.c: the native test harness (wagg_local.h). */
#include "wagg_local.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    size_t len, cap;
} lbuf;

static void lput(lbuf *b, const void *v, size_t n) {
    if (b->cap - b->len < n) {
        size_t c = b->cap ? b->cap : 256;
        while (c - b->len < n) c *= 2;
        b->p = realloc(b->p, c);
        if (!b->p) abort();
        b->cap = c;
    }
    memcpy(b->p + b->len, v, n);
    b->len += n;
}
static void lput32(lbuf *b, uint32_t v) { lput(b, &v, 4); }
static void lput64(lbuf *b, uint64_t v) { lput(b, &v, 8); }
static void lpad(lbuf *b) {
    static const uint8_t z[8];
    lput(b, z, (8 - b->len % 8) % 8);
}

/* The pending batch: per column, fixed values or strings. */
#define MAXC 65
typedef struct {
    char type; /* i, f, s; 0 before the first value */
    lbuf vals, offs, data;
} col;

static lbuf times;
static col cols[MAXC];
static int ncols, cur, raw;
static uint32_t nrec;
static lbuf enc, out, err;

static void reset(void) {
    times.len = 0;
    for (int i = 0; i < MAXC; i++) cols[i].vals.len = cols[i].offs.len = cols[i].data.len = 0;
    nrec = 0;
    cur = 0;
    raw = 0;
}

static void set_err(const char *m, size_t n) {
    err.len = 0;
    lput(&err, m, n);
    lput(&err, "", 1);
}

static void engine_err(void) {
    wagg_bytes b = wagg_engine_last_error();
    set_err((const char *)b.ptr, b.len);
}

const char *wagg_local_error(void) { return err.len ? (const char *)err.p : ""; }

int wagg_local_init(const char *cfg) {
    reset();
    ncols = 0;
    for (int i = 0; i < MAXC; i++) cols[i].type = 0;
    int st = wagg_engine_init((const uint8_t *)cfg, (uint32_t)strlen(cfg));
    if (st) engine_err();
    return st;
}

void wagg_local_record(int64_t ts) {
    lput64(&times, (uint64_t)ts);
    nrec++;
    cur = 0;
}

static col *next(char t) {
    if (cur >= MAXC) abort();
    col *c = &cols[cur++];
    if (cur > ncols) ncols = cur;
    if (!c->type) c->type = t;
    if (c->type != t) {
        fprintf(stderr, "wagg_local: column %d was %c, now %c\n", cur - 1, c->type, t);
        abort();
    }
    return c;
}

void wagg_local_int64(int64_t v) { lput64(&next('i')->vals, (uint64_t)v); }
void wagg_local_float64(double v) { lput(&next('f')->vals, &v, 8); }
void wagg_local_string(const char *s) { lput(&next('s')->data, s, strlen(s)); lput32(&cols[cur - 1].offs, (uint32_t)cols[cur - 1].data.len); }
void wagg_local_raw(const char *s) { raw = 1; wagg_local_string(s); }

int wagg_local_process(void) {
    enc.len = 0;
    int fields = ncols - raw;
    lput32(&enc, 0x31424757u);
    lput32(&enc, nrec);
    lput32(&enc, (uint32_t)(fields < 0 ? 0 : fields));
    lput32(&enc, (uint32_t)raw);
    lput64(&enc, 0);
    lput64(&enc, 0);
    lput(&enc, times.p, times.len);
    for (int i = 0; i < ncols; i++) {
        col *c = &cols[i];
        if (c->type == 's') {
            lput32(&enc, 0);
            lput(&enc, c->offs.p, c->offs.len);
            lpad(&enc);
            lput(&enc, c->data.p, c->data.len);
            lpad(&enc);
        } else {
            lput(&enc, c->vals.p, c->vals.len);
        }
    }
    uint64_t total = enc.len;
    memcpy(enc.p + 16, &total, 8);
    /* the engine reads columns in place: hand it 8-aligned memory, as the
     * Wasm input buffer is */
    uint8_t *in = aligned_alloc(8, (enc.len + 7) & ~(size_t)7);
    if (!in) abort();
    memcpy(in, enc.p, enc.len);
    int st = wagg_engine_process(in, (uint32_t)enc.len);
    free(in);
    if (st) engine_err();
    reset();
    return st;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ln is the natural logarithm of x >= 1, without libm (so that the harness
 * links without -lm): x = 2^k * f, f in [1, 2), ln f = 2 atanh((f-1)/(f+1)). */
static double ln(double x) {
    int k = 0;
    while (x >= 2) {
        x /= 2;
        k++;
    }
    double y = (x - 1) / (x + 1), y2 = y * y, term = y, sum = 0;
    for (int i = 1; i < 60; i += 2) {
        sum += term / i;
        term *= y2;
    }
    return k * 0.69314718055994530942 + 2 * sum;
}

/* sketch_estimate is abi.Sketch.Estimate of a sketch in its row form. */
static int64_t sketch_estimate(const uint8_t *b, uint32_t n) {
    const double m = 4096;
    double sum = 0;
    int set = 0;
    for (uint32_t i = 0; i < (n == 4096 ? n : n / 4); i++) {
        uint32_t r = n == 4096 ? b[i] : get32(b + 4 * i) & 63;
        if (r) {
            sum += 1.0 / (double)(1ull << r);
            set++;
        }
    }
    int zeros = 4096 - set;
    sum += zeros;
    double e = 0.7213 / (1 + 1.079 / m) * m * m / sum;
    if (e <= 2.5 * m && zeros > 0) e = m * ln(m / zeros);
    return (int64_t)(e + 0.5);
}

static void print_value(lbuf *line, char t, const uint8_t **p) {
    char s[64];
    if (t == 'd') { /* a distinct count: its estimate */
        uint32_t n = get32(*p);
        snprintf(s, sizeof s, "%" PRId64, sketch_estimate(*p + 4, n));
        lput(line, s, strlen(s));
        *p += 4 + n;
        return;
    }
    if (t == 's') {
        uint32_t n = get32(*p);
        lput(line, "\"", 1);
        lput(line, *p + 4, n);
        lput(line, "\"", 1);
        *p += 4 + n;
        return;
    }
    uint64_t v = get64(*p);
    *p += 8;
    if (t == 'i') {
        snprintf(s, sizeof s, "%" PRId64, (int64_t)v);
    } else {
        double d;
        memcpy(&d, &v, 8);
        snprintf(s, sizeof s, "%.17g", d);
    }
    lput(line, s, strlen(s));
}

const char *wagg_local_flush(int64_t watermark) {
    wagg_bytes b = wagg_engine_flush(watermark);
    out.len = 0;
    if (!b.ptr) {
        engine_err();
        lput(&out, "", 1);
        return (const char *)out.p;
    }
    const char *kt = wagg_engine_key_types(), *mt = wagg_engine_metric_types();
    uint32_t n = get32(b.ptr + 4);
    char **lines = calloc(n ? n : 1, sizeof(char *));
    const uint8_t *p = b.ptr + 16;
    for (uint32_t r = 0; r < n; r++) {
        lbuf line = {0};
        char head[96];
        snprintf(head, sizeof head, "%u %" PRId64 " %s [", p[0], (int64_t)get64(p + 2), p[1] & 1 ? "final" : "open");
        lput(&line, head, strlen(head));
        p += 10;
        for (const char *t = kt; *t; t++) {
            if (t != kt) lput(&line, ",", 1);
            print_value(&line, *t, &p);
        }
        lput(&line, "] [", 3);
        for (const char *t = mt; *t; t++) {
            if (t != mt) lput(&line, ",", 1);
            print_value(&line, *t, &p);
        }
        lput(&line, "]\n", 3);
        lines[r] = (char *)line.p;
    }
    qsort(lines, n, sizeof(char *), cmp);
    for (uint32_t r = 0; r < n; r++) {
        lput(&out, lines[r], strlen(lines[r]));
        free(lines[r]);
    }
    free(lines);
    lput(&out, "", 1);
    return (const char *)out.p;
}

uint8_t *wagg_local_snapshot(uint32_t *len) {
    wagg_bytes b = wagg_engine_snapshot();
    uint8_t *c = malloc(b.len ? b.len : 1);
    if (!c) abort();
    memcpy(c, b.ptr, b.len);
    *len = b.len;
    return c;
}

int wagg_local_restore(const uint8_t *snap, uint32_t len) {
    uint8_t *in = aligned_alloc(8, (len + 7) & ~(size_t)7);
    if (!in) abort();
    memcpy(in, snap, len);
    int st = wagg_engine_restore(in, len);
    free(in);
    if (st) engine_err();
    return st;
}
