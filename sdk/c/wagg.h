/* wagg.h: the C SDK for wagg aggregators (ABI v1, abi/ABI.md).
 *
 * An aggregator is two functions that the plugin defines:
 *
 *   void wagg_define(wagg_spec *s)
 *       declares the typed input fields, the group key columns and the
 *       metrics, in order; called once, before anything else.
 *   int wagg_aggregate(const wagg_batch *b, wagg_groups *g)
 *       folds a batch of records into groups; returns 0, or wagg_fail(...).
 *
 *   static int poll, option, votes;
 *
 *   void wagg_define(wagg_spec *s) {
 *       poll = wagg_input_int64(s, "poll_id");
 *       option = wagg_input_string(s, "option");
 *       wagg_key_int64(s, "poll_id");
 *       wagg_key_string(s, "option");
 *       votes = wagg_count(s, "votes");
 *   }
 *
 *   int wagg_aggregate(const wagg_batch *b, wagg_groups *g) {
 *       const int64_t *polls = wagg_int64s(b, poll);
 *       for (uint32_t i = 0; i < wagg_len(b); i++) {
 *           wagg_at(g, wagg_time(b, i));
 *           wagg_by_int64(g, polls[i]);
 *           wagg_by_string(g, wagg_string(b, option, i));
 *           wagg_add(g, votes, 1);
 *       }
 *       return 0;
 *   }
 *
 * The SDK keeps the state per window and group, emits the changed groups at
 * each flush, marks closed windows final, and snapshots and restores the
 * state (in the same layout as the Go SDK), so an aggregator holds no state
 * of its own and replays exactly.
 *
 * Build: clang --target=wasm32-wasi -mexec-model=reactor -O2 -o votes.wasm
 *        votes.c wagg.c   (sdk/c/README.md). Natively the same sources link
 *        with wagg_local.c, the test harness (wagg_local.h).
 */
#ifndef WAGG_H
#define WAGG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes (abi/ABI.md "Error codes"). */
enum {
    WAGG_OK = 0,
    WAGG_ERR_BAD_INPUT = -1,
    WAGG_ERR_SCHEMA = -2,
    WAGG_ERR_NOT_READY = -3,
    WAGG_ERR_AGGREGATE = -4,
    WAGG_ERR_OUTPUT_LIMIT = -5,
};

/* A byte string that aliases memory the SDK owns: copy it to keep it. */
typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} wagg_bytes;

typedef struct wagg_spec wagg_spec;
typedef struct wagg_batch wagg_batch;
typedef struct wagg_groups wagg_groups;

/* Defined by the aggregator. */
void wagg_define(wagg_spec *s);
int wagg_aggregate(const wagg_batch *b, wagg_groups *g);

/* --- wagg_define: each returns the index the batch and group calls take. */

/* Typed input fields, read by the host from the record's JSON key name. */
int wagg_input_int64(wagg_spec *s, const char *name);
int wagg_input_float64(wagg_spec *s, const char *name);
int wagg_input_string(wagg_spec *s, const char *name);
/* Reads field from another top-level JSON key. */
void wagg_input_from(wagg_spec *s, int field, const char *path);
/* A missing field reads as its zero value instead of being dead-lettered. */
void wagg_input_optional(wagg_spec *s, int field);
/* Also hand the aggregator each record's raw value (wagg_raw). */
void wagg_input_raw(wagg_spec *s);

/* Group key columns, filled by wagg_by_* in this order. */
void wagg_key_int64(wagg_spec *s, const char *name);
void wagg_key_float64(wagg_spec *s, const char *name);
void wagg_key_string(wagg_spec *s, const char *name);

/* Metrics: count is int64 and merged by sum across partitions; sums add,
 * min and max keep the extreme. The _float variants hold float64. */
int wagg_count(wagg_spec *s, const char *name);
int wagg_sum(wagg_spec *s, const char *name);
int wagg_sum_float(wagg_spec *s, const char *name);
int wagg_min(wagg_spec *s, const char *name);
int wagg_min_float(wagg_spec *s, const char *name);
int wagg_max(wagg_spec *s, const char *name);
int wagg_max_float(wagg_spec *s, const char *name);
/* An average of float64 values, carried as two metrics the host merges
 * exactly across partitions: name_sum (a float64 sum) and name_count (a
 * count); the average is their quotient, live and in ClickHouse.
 * wagg_add_float folds a value into both. */
int wagg_average(wagg_spec *s, const char *name);
/* A count of distinct values (unique users, say), estimated from a
 * HyperLogLog sketch that the host merges across partitions (abi/ABI.md
 * "Distinct counts"); fed by wagg_add_distinct or wagg_add_distinct_string,
 * one of the two. */
int wagg_distinct(wagg_spec *s, const char *name);

/* The state version (abi/ABI.md "State versions"; 1 when undeclared). Bump
 * it when a new build would count on differently from the groups an older
 * one left, and say what becomes of the older versions: accepted as they
 * are, or migrated by fn as a snapshot of them is restored. */
typedef struct wagg_old_group wagg_old_group;
typedef struct wagg_new_group wagg_new_group;
typedef int (*wagg_migrate_fn)(const wagg_old_group *old, wagg_new_group *g);
void wagg_state_version(wagg_spec *s, int version);
void wagg_state_accepts(wagg_spec *s, int version);
void wagg_state_migrates(wagg_spec *s, int version, wagg_migrate_fn fn);

/* --- wagg_migrate_fn: one group of a snapshot of an older state version,
 * read through the metrics of the build that wrote it (the host names it:
 * abi.Config.migrate_from). g starts with the old values of the metrics of
 * the same name, kind and type, the others empty; set what changes. Return
 * 1 to keep the group, 0 to drop it, or WAGG_ERR_AGGREGATE to fail the
 * restore. The group keeps its window, start and key. Deterministic, like
 * wagg_aggregate. A distinct metric is a sketch, not a value: wagg_old_int64
 * does not read an old one, and wagg_new_set of one fails the restore; a
 * new one of the same name, kind and type as an old one carries its sketch
 * over as it was, any other starts empty. */
int wagg_old_version(const wagg_old_group *o);
int wagg_old_window(const wagg_old_group *o); /* index into the deployment's windows */
int64_t wagg_old_start(const wagg_old_group *o);
wagg_bytes wagg_old_key(const wagg_old_group *o); /* encoded as in a row (abi/ABI.md) */
/* The old int64 (float64) metric called name into *v: 1, or 0 when the old
 * build had no such metric of that type (or it was a distinct one). */
int wagg_old_int64(const wagg_old_group *o, const char *name, int64_t *v);
int wagg_old_float64(const wagg_old_group *o, const char *name, double *v);
void wagg_new_set(wagg_new_group *g, int metric, int64_t v);
void wagg_new_set_float(wagg_new_group *g, int metric, double v);
void wagg_new_set_average(wagg_new_group *g, int metric, double sum, int64_t count);

/* --- wagg_aggregate: the batch, valid during the call only. */

uint32_t wagg_len(const wagg_batch *b);
int64_t wagg_time(const wagg_batch *b, uint32_t i); /* event time, Unix ms */
const int64_t *wagg_times(const wagg_batch *b);
const int64_t *wagg_int64s(const wagg_batch *b, int field);
const double *wagg_float64s(const wagg_batch *b, int field);
wagg_bytes wagg_string(const wagg_batch *b, int field, uint32_t i);
wagg_bytes wagg_raw(const wagg_batch *b, uint32_t i);

/* --- wagg_aggregate: the groups. wagg_at starts the key of a record with
 * event time ts, the wagg_by_* fill its columns in declared order, then
 * wagg_add / wagg_add_float fold values into its group in every window the
 * time falls in. Misuse (a column of the wrong type, too few columns, an
 * unknown metric) fails the batch with ERR_AGGREGATE and a message. */

void wagg_at(wagg_groups *g, int64_t ts);
void wagg_by_int64(wagg_groups *g, int64_t v);
void wagg_by_float64(wagg_groups *g, double v);
void wagg_by_string(wagg_groups *g, wagg_bytes v);
void wagg_add(wagg_groups *g, int metric, int64_t v);
void wagg_add_float(wagg_groups *g, int metric, double v);
/* Fold a value into a wagg_distinct metric: an int64 (hashed as its 8
 * little-endian bytes) or a string's bytes. */
void wagg_add_distinct(wagg_groups *g, int metric, int64_t v);
void wagg_add_distinct_string(wagg_groups *g, int metric, wagg_bytes v);

/* Fails the batch with the aggregator's own message; return its result
 * from wagg_aggregate. */
int wagg_fail(wagg_groups *g, const char *msg);

/* --- The engine behind the Wasm exports, also driven natively by
 * wagg_local.c. Inputs are the host's encodings (abi/ABI.md); results
 * alias SDK memory valid until the next call. */
wagg_bytes wagg_engine_describe(void);
int wagg_engine_init(const uint8_t *cfg, uint32_t len);
int wagg_engine_process(const uint8_t *batch, uint32_t len);
wagg_bytes wagg_engine_flush(int64_t watermark);
wagg_bytes wagg_engine_snapshot(void);
int wagg_engine_restore(const uint8_t *snap, uint32_t len);
wagg_bytes wagg_engine_last_error(void);
/* The declared key and metric types, one letter each (i int64, f float64,
 * s string, d a distinct count's sketch), for the native harness's row
 * printer. */
const char *wagg_engine_key_types(void);
const char *wagg_engine_metric_types(void);

#ifdef __cplusplus
}
#endif

#endif
