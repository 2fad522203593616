/* flood: a plugin without the SDK whose every flush returns rows of groups
 * it never saw: FLOOD_ROWS final rows of fresh int64 keys, spread over 4000
 * one-second panes before the watermark, whatever it was given. For tests
 * of what the host holds when a plugin returns far more rows than the
 * records it folds change. */
#include <stdint.h>
#include <string.h>

#define EXPORT(n) __attribute__((export_name(n)))
#define FLOOD_ROWS 500
#define ROW 26 /* window, flags, start, an int64 key, one count */

static uint8_t input[1 << 20];
static uint8_t rows[16 + FLOOD_ROWS * ROW];
static const char schema[] =
    "{\"abi\":1,\"input\":[{\"name\":\"poll_id\",\"type\":\"int64\"}],"
    "\"keys\":[{\"name\":\"poll_id\",\"type\":\"int64\"}],"
    "\"metrics\":[{\"name\":\"votes\",\"kind\":\"count\",\"type\":\"int64\"}]}";
static int64_t next_key;

static int64_t pack(const void *p, uint32_t n) { return (int64_t)(((uint64_t)(uintptr_t)p << 32) | n); }

EXPORT("wagg_abi_version_1") void version(void) {}
EXPORT("wagg_input_buffer") uint8_t *input_buffer(int32_t n) { return (uint32_t)n <= sizeof input ? input : 0; }
EXPORT("wagg_init") int32_t init(int32_t n) { (void)n; return 0; }
EXPORT("wagg_describe") int64_t describe(void) { return pack(schema, sizeof schema - 1); }
EXPORT("wagg_process") int32_t process(int32_t n) { (void)n; return 0; }
EXPORT("wagg_snapshot") int64_t snapshot(void) { return pack(rows, 0); }
EXPORT("wagg_restore") int32_t restore(int32_t n) { (void)n; return 0; }
EXPORT("wagg_last_error") int64_t last_error(void) { return 0; }

EXPORT("wagg_flush") int64_t flush(int64_t watermark) {
    uint32_t magic = 0x31524757, n = FLOOD_ROWS;
    uint64_t total = sizeof rows;
    memcpy(rows, &magic, 4);
    memcpy(rows + 4, &n, 4);
    memcpy(rows + 8, &total, 8);
    int64_t sec = watermark / 1000;
    if (sec < 5000) sec = 1700000000; /* no watermark yet */
    uint8_t *p = rows + 16;
    for (uint32_t i = 0; i < FLOOD_ROWS; i++, p += ROW) {
        int64_t k = next_key++, start = (sec - 10 - k % 4000) * 1000, one = 1;
        p[0] = 0; /* the deployment's first window, a tumbling one of 1 s */
        p[1] = 1; /* final */
        memcpy(p + 2, &start, 8);
        memcpy(p + 10, &k, 8);
        memcpy(p + 18, &one, 8);
    }
    return pack(rows, sizeof rows);
}
