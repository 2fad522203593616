/* internal/testwasm/statev2migrate in C: counts votes per poll in tenths of
 * a vote, declares state version 2 and migrates version 1's whole votes by
 * multiplying them by 10; poll 0 it no longer counts, and drops version 1's
 * groups of it (sdk/conformance, vectors/migrate.json). */
#include <string.h>
#include "wagg.h"

static int poll, votes;

static int migrate(const wagg_old_group *old, wagg_new_group *g) {
    wagg_bytes key = wagg_old_key(old);
    int64_t p, n = 0;
    memcpy(&p, key.ptr, 8);
    if (p == 0) return 0;
    wagg_old_int64(old, "votes", &n);
    wagg_new_set(g, votes, 10 * n);
    return 1;
}

void wagg_define(wagg_spec *s) {
    poll = wagg_input_int64(s, "poll_id");
    wagg_key_int64(s, "poll_id");
    votes = wagg_count(s, "votes");
    wagg_state_version(s, 2);
    wagg_state_migrates(s, 1, migrate);
}

int wagg_aggregate(const wagg_batch *b, wagg_groups *g) {
    const int64_t *polls = wagg_int64s(b, poll);
    for (uint32_t i = 0; i < wagg_len(b); i++) {
        if (polls[i] == 0) continue;
        wagg_at(g, wagg_time(b, i));
        wagg_by_int64(g, polls[i]);
        wagg_add(g, votes, 10);
    }
    return 0;
}
