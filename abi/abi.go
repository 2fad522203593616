package abi

import (
	"fmt"
	"math"
)

// Version is the ABI version this package speaks. A plugin declares it by
// exporting the function named VersionExport; the loader refuses modules that
// do not, so a mismatch is reported at upload instead of mid-stream.
const Version = 1

// Exports a plugin must provide. Their signatures are in ABI.md and checked by
// the host at upload.
const (
	VersionExport    = "wagg_abi_version_1" // () -> ()
	InitializeExport = "_initialize"        // () -> (), the reactor's start function
	InputExport      = "wagg_input_buffer"  // (size i32) -> ptr i32
	InitExport       = "wagg_init"          // (len i32) -> status i32
	DescribeExport   = "wagg_describe"      // () -> packed i64
	ProcessExport    = "wagg_process"       // (len i32) -> status i32
	FlushExport      = "wagg_flush"         // (watermark i64) -> packed i64
	SnapshotExport   = "wagg_snapshot"      // () -> packed i64
	RestoreExport    = "wagg_restore"       // (len i32) -> status i32
	LastErrorExport  = "wagg_last_error"    // () -> packed i64
)

// AllowedImports lists the only host functions a plugin may import: the WASI
// preview 1 calls that a standard Go (wasip1) runtime needs. The host backs
// them with no filesystem, no environment, fixed clocks and a seeded random
// source, so a guest stays deterministic and cannot reach outside.
var AllowedImports = map[string][]string{
	"wasi_snapshot_preview1": {
		"args_get", "args_sizes_get", "environ_get", "environ_sizes_get",
		"clock_res_get", "clock_time_get", "fd_close", "fd_fdstat_get",
		"fd_fdstat_set_flags", "fd_prestat_get", "fd_prestat_dir_name",
		"fd_read", "fd_seek", "fd_write", "poll_oneoff", "proc_exit",
		"random_get", "sched_yield",
	},
}

// Code is a status a guest returns from an export. Zero is success; the
// others are negative so that a packed result (see Pack) can carry them.
type Code int32

const (
	OK             Code = 0
	ErrBadInput    Code = -1 // the input buffer does not decode (batch, config or snapshot)
	ErrSchema      Code = -2 // the input does not match the plugin's declared schema
	ErrNotReady    Code = -3 // called before wagg_init succeeded
	ErrAggregate   Code = -4 // the aggregator's own code reported an error
	ErrOutputLimit Code = -5 // the output would exceed the buffer the guest may use
)

func (c Code) String() string {
	switch c {
	case OK:
		return "ok"
	case ErrBadInput:
		return "bad input"
	case ErrSchema:
		return "schema mismatch"
	case ErrNotReady:
		return "not initialized"
	case ErrAggregate:
		return "aggregator error"
	case ErrOutputLimit:
		return "output limit"
	}
	return fmt.Sprintf("code %d", int32(c))
}

// Pack returns the i64 an export uses to hand the host a region of guest
// memory: the pointer in the high 32 bits, the length in the low 32 bits.
// The pointer must be below 2^31 (a guest memory under 2 GiB), or the result
// is negative and reads as an error.
func Pack(ptr, n uint32) int64 { return int64(uint64(ptr)<<32 | uint64(n)) }

// Unpack splits a packed result. A negative value is an error Code; one
// below the int32 range (which no Code is) unpacks as math.MinInt32, so that
// a garbage result never reads as OK.
func Unpack(v int64) (ptr, n uint32, code Code) {
	if v < 0 {
		return 0, 0, Code(max(v, math.MinInt32))
	}
	return uint32(uint64(v) >> 32), uint32(v), OK
}
