/* The uniquevoters aggregator natively, through the SDK's test harness:
 *   cc -I../../../sdk/c uniquevoters.c uniquevoters_test.c ../../../sdk/c/wagg.c ../../../sdk/c/wagg_local.c && ./a.out */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wagg_local.h"

static int failed;

static void expect(const char *what, const char *got, const char *want) {
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "FAIL %s:\n got:\n%s want:\n%s", what, got, want);
        failed++;
    }
}

int main(void) {
    const char *cfg = "{\"abi\":1,\"windows\":[{\"name\":\"ten\",\"kind\":\"tumbling\",\"size_ms\":10000}]}";
    if (wagg_local_init(cfg) != WAGG_OK) {
        fprintf(stderr, "init: %s\n", wagg_local_error());
        return 1;
    }
    /* Poll 1: users u0..u2999, each voting twice; poll 2: three votes of two users. */
    char u[32];
    for (int i = 0; i < 6000; i++) {
        snprintf(u, sizeof u, "u%d", i % 3000);
        wagg_local_record(1000); wagg_local_int64(1); wagg_local_string(u);
    }
    wagg_local_record(2000); wagg_local_int64(2); wagg_local_string("ann");
    wagg_local_record(2500); wagg_local_int64(2); wagg_local_string("bob");
    wagg_local_record(3000); wagg_local_int64(2); wagg_local_string("ann");
    if (wagg_local_process() != WAGG_OK) {
        fprintf(stderr, "process: %s\n", wagg_local_error());
        return 1;
    }
    uint32_t n;
    uint8_t *snap = wagg_local_snapshot(&n);
    const char *rows = wagg_local_flush(10000);
    long long votes1, voters1;
    if (sscanf(rows, "0 0 final [1] [%lld,%lld]\n", &votes1, &voters1) != 2 || votes1 != 6000 ||
        fabs((double)voters1 - 3000) > 3 * 1.04 / 64 * 3000) {
        fprintf(stderr, "FAIL poll 1: want 6000 votes and about 3000 voters, got:\n%s", rows);
        failed++;
    }
    if (!strstr(rows, "0 0 final [2] [3,2]\n")) {
        fprintf(stderr, "FAIL poll 2: want 3 votes of 2 voters, got:\n%s", rows);
        failed++;
    }
    if (wagg_local_restore(snap, n) != WAGG_OK) {
        fprintf(stderr, "restore: %s\n", wagg_local_error());
        return 1;
    }
    char *again = malloc(strlen(rows) + 1);
    strcpy(again, rows);
    expect("the restored sketches", wagg_local_flush(10000), again);
    free(again);
    snap[n - 1] ^= 0x40; /* the last sketch entry now names register 2^18 */
    if (wagg_local_restore(snap, n) != WAGG_ERR_BAD_INPUT) {
        fprintf(stderr, "FAIL a corrupt sketch restored\n");
        failed++;
    }
    free(snap);
    if (failed) return 1;
    printf("uniquevoters (C, native): ok\n");
    return 0;
}
