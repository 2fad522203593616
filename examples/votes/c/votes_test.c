/* The votes aggregator natively, through the SDK's test harness:
 *   cc -I../../../sdk/c votes.c votes_test.c ../../../sdk/c/wagg.c ../../../sdk/c/wagg_local.c && ./a.out */
#include <stdint.h>
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
    const char *cfg = "{\"abi\":1,\"windows\":[{\"name\":\"second\",\"kind\":\"tumbling\",\"size_ms\":1000},{\"name\":\"total\",\"kind\":\"global\"}]}";
    if (wagg_local_init(cfg) != WAGG_OK) {
        fprintf(stderr, "init: %s\n", wagg_local_error());
        return 1;
    }
    wagg_local_record(1000); wagg_local_int64(7); wagg_local_string("yes");
    wagg_local_record(1500); wagg_local_int64(7); wagg_local_string("yes");
    wagg_local_record(2100); wagg_local_int64(7); wagg_local_string("no");
    if (wagg_local_process() != WAGG_OK) {
        fprintf(stderr, "process: %s\n", wagg_local_error());
        return 1;
    }
    expect("first flush", wagg_local_flush(2000),
           "0 1000 final [7,\"yes\"] [2]\n"
           "0 2000 open [7,\"no\"] [1]\n"
           "1 0 open [7,\"no\"] [1]\n"
           "1 0 open [7,\"yes\"] [2]\n");
    expect("nothing changed", wagg_local_flush(2000), "");

    uint32_t n;
    uint8_t *snap = wagg_local_snapshot(&n);
    wagg_local_record(2500); wagg_local_int64(7); wagg_local_string("no");
    wagg_local_process();
    if (wagg_local_restore(snap, n) != WAGG_OK) {
        fprintf(stderr, "restore: %s\n", wagg_local_error());
        return 1;
    }
    expect("restored state, all changed", wagg_local_flush(2000),
           "0 2000 open [7,\"no\"] [1]\n"
           "1 0 open [7,\"no\"] [1]\n"
           "1 0 open [7,\"yes\"] [2]\n");
    snap[0] ^= 1;
    if (wagg_local_restore(snap, n) != WAGG_ERR_BAD_INPUT) {
        fprintf(stderr, "FAIL a corrupt snapshot restored\n");
        failed++;
    }
    expect("state empty after a refused snapshot", wagg_local_flush(3000), "");
    free(snap);

    /* A record at INT64_MIN + 1 after one near INT64_MAX lies in no 1 s
     * window (its window would start before INT64_MIN): the totals count
     * it, the pane near INT64_MAX does not. */
    if (wagg_local_init(cfg) != WAGG_OK) {
        fprintf(stderr, "init: %s\n", wagg_local_error());
        return 1;
    }
    wagg_local_record(INT64_MAX - 807); wagg_local_int64(1); wagg_local_string("a");
    wagg_local_record(INT64_MIN + 1); wagg_local_int64(2); wagg_local_string("b");
    if (wagg_local_process() != WAGG_OK) {
        fprintf(stderr, "process: %s\n", wagg_local_error());
        return 1;
    }
    expect("times at the ends of int64", wagg_local_flush(INT64_MIN),
           "0 9223372036854775000 open [1,\"a\"] [1]\n"
           "1 0 open [1,\"a\"] [1]\n"
           "1 0 open [2,\"b\"] [1]\n");

    if (failed) return 1;
    printf("votes (C, native): ok\n");
    return 0;
}
