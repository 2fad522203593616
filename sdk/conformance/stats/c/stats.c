/* stats: the C twin of ../main.go (sdk/conformance). */
#include "wagg.h"

static int region, status, tier, ms, size;
static int requests, bytes, smallest, largest, total, fastest, slowest, latency, distinct_sizes;

void wagg_define(wagg_spec *s) {
    region = wagg_input_string(s, "region");
    status = wagg_input_int64(s, "status");
    tier = wagg_input_float64(s, "tier");
    ms = wagg_input_float64(s, "ms");
    size = wagg_input_int64(s, "bytes");
    wagg_key_string(s, "region");
    wagg_key_int64(s, "status");
    wagg_key_float64(s, "tier");
    requests = wagg_count(s, "requests");
    bytes = wagg_sum(s, "bytes");
    smallest = wagg_min(s, "smallest");
    largest = wagg_max(s, "largest");
    total = wagg_sum_float(s, "ms_total");
    fastest = wagg_min_float(s, "fastest");
    slowest = wagg_max_float(s, "slowest");
    latency = wagg_average(s, "latency");
    distinct_sizes = wagg_distinct(s, "sizes");
}

int wagg_aggregate(const wagg_batch *b, wagg_groups *g) {
    const int64_t *statuses = wagg_int64s(b, status), *sizes = wagg_int64s(b, size);
    const double *tiers = wagg_float64s(b, tier), *mss = wagg_float64s(b, ms);
    for (uint32_t i = 0; i < wagg_len(b); i++) {
        if (statuses[i] < 0) return wagg_fail(g, "stats: a negative status");
        wagg_at(g, wagg_time(b, i));
        wagg_by_string(g, wagg_string(b, region, i));
        wagg_by_int64(g, statuses[i]);
        wagg_by_float64(g, tiers[i]);
        wagg_add(g, requests, 1);
        wagg_add(g, bytes, sizes[i]);
        wagg_add(g, smallest, sizes[i]);
        wagg_add(g, largest, sizes[i]);
        wagg_add_distinct(g, distinct_sizes, sizes[i]);
        if (statuses[i] < 400) {
            wagg_add_float(g, total, mss[i]);
            wagg_add_float(g, fastest, mss[i]);
            wagg_add_float(g, slowest, mss[i]);
            wagg_add_float(g, latency, mss[i]);
        }
    }
    return 0;
}
