/* The votes aggregator natively, for comparison with its Wasm build
 * (examples/votes/bench_test.go runs both; BENCHMARKS.md):
 *   bench FILE ITERATIONS   folds ITERATIONS batches from FILE (u32 length +
 *   encoded batch, repeated), flushing every 64, and prints the nanoseconds
 *   the loop took. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wagg.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bench FILE ITERATIONS\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    long iters = atol(argv[2]);
    uint8_t *bufs[4096];
    uint32_t lens[4096];
    int n = 0;
    uint32_t len;
    while (n < 4096 && fread(&len, 4, 1, f) == 1) {
        bufs[n] = aligned_alloc(8, (len + 7) & ~7u);
        if (!bufs[n] || fread(bufs[n], 1, len, f) != len) { fprintf(stderr, "short file\n"); return 1; }
        lens[n++] = len;
    }
    fclose(f);
    const char *cfg = "{\"abi\":1,\"windows\":[{\"name\":\"second\",\"kind\":\"tumbling\",\"size_ms\":1000},{\"name\":\"total\",\"kind\":\"global\"}]}";
    if (n == 0 || wagg_engine_init((const uint8_t *)cfg, (uint32_t)strlen(cfg)) != WAGG_OK) { fprintf(stderr, "init\n"); return 1; }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < iters; i++) {
        if (wagg_engine_process(bufs[i % n], lens[i % n]) != WAGG_OK) { fprintf(stderr, "process failed\n"); return 1; }
        if (i % 64 == 63) wagg_engine_flush(0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
    return 0;
}
