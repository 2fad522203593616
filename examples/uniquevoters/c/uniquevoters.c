/* uniquevoters: votes and unique voters per poll_id, in every window the
 * deployment declares (../deploy.yaml); the C twin of ../main.go.
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I../../../sdk/c \
 *       -o uniquevoters.wasm uniquevoters.c ../../../sdk/c/wagg.c
 */
#include "wagg.h"

static int poll, user, votes, voters;

void wagg_define(wagg_spec *s) {
    poll = wagg_input_int64(s, "poll_id");
    user = wagg_input_string(s, "user_id");
    wagg_key_int64(s, "poll_id");
    votes = wagg_count(s, "votes");
    voters = wagg_distinct(s, "voters");
}

int wagg_aggregate(const wagg_batch *b, wagg_groups *g) {
    const int64_t *polls = wagg_int64s(b, poll);
    for (uint32_t i = 0; i < wagg_len(b); i++) {
        wagg_at(g, wagg_time(b, i));
        wagg_by_int64(g, polls[i]);
        wagg_add(g, votes, 1);
        wagg_add_distinct_string(g, voters, wagg_string(b, user, i));
    }
    return 0;
}
