/* bigstate: a plugin without the SDK whose every snapshot is STATE_BYTES
 * long, whatever it was given, and whose flushes return no rows. For tests
 * of how much a plugin's snapshots may write to ClickHouse. */
#include <stdint.h>

#define EXPORT(n) __attribute__((export_name(n)))
#define STATE_BYTES (4 << 20)

static uint8_t state[STATE_BYTES]; /* also the input buffer: a restore reads the snapshot into it */
static uint8_t rows[16] = {0x57, 0x47, 0x52, 0x31, 0, 0, 0, 0, 16}; /* no rows: magic, 0, 16 bytes */
static const char schema[] =
    "{\"abi\":1,\"input\":[{\"name\":\"poll_id\",\"type\":\"int64\"}],"
    "\"keys\":[{\"name\":\"poll_id\",\"type\":\"int64\"}],"
    "\"metrics\":[{\"name\":\"votes\",\"kind\":\"count\",\"type\":\"int64\"}]}";

static int64_t pack(const void *p, uint32_t n) { return (int64_t)(((uint64_t)(uintptr_t)p << 32) | n); }

EXPORT("wagg_abi_version_1") void version(void) {}
EXPORT("wagg_input_buffer") uint8_t *input_buffer(int32_t n) { return (uint32_t)n <= sizeof state ? state : 0; }
EXPORT("wagg_init") int32_t init(int32_t n) { (void)n; return 0; }
EXPORT("wagg_describe") int64_t describe(void) { return pack(schema, sizeof schema - 1); }
EXPORT("wagg_process") int32_t process(int32_t n) { (void)n; return 0; }
EXPORT("wagg_flush") int64_t flush(int64_t watermark) { (void)watermark; return pack(rows, sizeof rows); }
EXPORT("wagg_snapshot") int64_t snapshot(void) { return pack(state, sizeof state); }
EXPORT("wagg_restore") int32_t restore(int32_t n) { (void)n; return 0; }
EXPORT("wagg_last_error") int64_t last_error(void) { return 0; }
