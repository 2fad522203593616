/* internal/testwasm/distinctmigrate in C: votes, unique voters and unique
 * choices per poll, state version 2, migrating version 1: voters carries
 * over, choices starts empty, votes are version 1's ballots, poll 0's
 * groups are dropped (sdk/conformance, vectors/migrate-distinct.json). */
#include <string.h>
#include "wagg.h"

static int poll, user, choice, votes, voters, choices;

static int migrate(const wagg_old_group *old, wagg_new_group *g) {
    wagg_bytes key = wagg_old_key(old);
    int64_t p, n = 0;
    memcpy(&p, key.ptr, 8);
    if (p == 0) return 0;
    if (wagg_old_int64(old, "voters", &n)) {
        wagg_new_set(g, votes, -1);
        return 1;
    }
    wagg_old_int64(old, "ballots", &n);
    wagg_new_set(g, votes, n);
    return 1;
}

void wagg_define(wagg_spec *s) {
    poll = wagg_input_int64(s, "poll_id");
    user = wagg_input_string(s, "user_id");
    choice = wagg_input_int64(s, "choice");
    wagg_key_int64(s, "poll_id");
    votes = wagg_count(s, "votes");
    voters = wagg_distinct(s, "voters");
    choices = wagg_distinct(s, "choices");
    wagg_state_version(s, 2);
    wagg_state_migrates(s, 1, migrate);
}

int wagg_aggregate(const wagg_batch *b, wagg_groups *g) {
    const int64_t *polls = wagg_int64s(b, poll), *cs = wagg_int64s(b, choice);
    for (uint32_t i = 0; i < wagg_len(b); i++) {
        wagg_at(g, wagg_time(b, i));
        wagg_by_int64(g, polls[i]);
        wagg_add(g, votes, 1);
        wagg_add_distinct_string(g, voters, wagg_string(b, user, i));
        wagg_add_distinct(g, choices, cs[i]);
    }
    return 0;
}
