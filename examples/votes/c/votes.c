/* votes: votes per (poll_id, option), counted in every window the
 * deployment declares (../deploy.yaml); the C twin of ../main.go.
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I../../../sdk/c \
 *       -o votes.wasm votes.c ../../../sdk/c/wagg.c
 */
#include "wagg.h"

static int poll, option, votes;

void wagg_define(wagg_spec *s) {
    poll = wagg_input_int64(s, "poll_id");
    option = wagg_input_string(s, "option");
    wagg_key_int64(s, "poll_id");
    wagg_key_string(s, "option");
    votes = wagg_count(s, "votes");
}

int wagg_aggregate(const wagg_batch *b, wagg_groups *g) {
    const int64_t *polls = wagg_int64s(b, poll);
    for (uint32_t i = 0; i < wagg_len(b); i++) {
        wagg_at(g, wagg_time(b, i));
        wagg_by_int64(g, polls[i]);
        wagg_by_string(g, wagg_string(b, option, i));
        wagg_add(g, votes, 1);
    }
    return 0;
}
