/* wagg_local.h: the native test harness of the C SDK, as the Go SDK's
 * wagg.NewLocal. Link the aggregator with wagg.c and wagg_local.c into a
 * native program and drive it as the host would:
 *
 *   assert(wagg_local_init("{\"abi\":1,\"windows\":[{\"name\":\"total\",\"kind\":\"global\"}]}") == WAGG_OK);
 *   wagg_local_record(1000); wagg_local_int64(7); wagg_local_string("yes");
 *   assert(wagg_local_process() == WAGG_OK);
 *   assert(strcmp(wagg_local_flush(0), "0 0 open [7,\"yes\"] [1]\n") == 0);
 *
 * Records are added field by field in declared order; wagg_local_process
 * encodes them as the host would (abi/ABI.md "Batch layout") and folds
 * them in. Flush prints the rows one per line, sorted:
 *   window start final|open [key values] [metric values]
 * The harness is single-threaded, as an instance is.
 */
#ifndef WAGG_LOCAL_H
#define WAGG_LOCAL_H

#include "wagg.h"

int wagg_local_init(const char *config_json);
void wagg_local_record(int64_t ts);
void wagg_local_int64(int64_t v);
void wagg_local_float64(double v);
void wagg_local_string(const char *s);
void wagg_local_raw(const char *s); /* with wagg_input_raw, after the fields */
int wagg_local_process(void);
const char *wagg_local_flush(int64_t watermark);
/* The snapshot, copied into memory the caller frees. */
uint8_t *wagg_local_snapshot(uint32_t *len);
int wagg_local_restore(const uint8_t *snap, uint32_t len);
/* The message of the last failed call. */
const char *wagg_local_error(void);

#endif
