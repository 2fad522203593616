//go:build wasip1

package wagg

import (
	"unsafe"

	"github.com/wagg/wagg/abi"
)

// The Wasm glue: each export documents its buffer convention in abi/ABI.md.
// All state lives in these globals because a plugin instance is
// single-threaded and serves one partition.
var (
	input   []byte  // the host writes batches, configs and snapshots here
	current *engine // set by wagg_init
	lastErr []byte  // the message of the last failed call
)

func ptr(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

func fail(c abi.Code, err error) int32 {
	lastErr = append(lastErr[:0], err.Error()...)
	return int32(c)
}

func region(b []byte) int64 { return abi.Pack(ptr(b), uint32(len(b))) }

func in(n int32) ([]byte, bool) {
	if n < 0 || int(n) > len(input) {
		return nil, false
	}
	return input[:n], true
}

//go:wasmexport wagg_abi_version_1
func abiVersion1() {}

// wagg_input_buffer(size) -> ptr: makes the input buffer at least size bytes
// and returns its address. The host calls it once per instance and again only
// when a batch outgrows it.
//
//go:wasmexport wagg_input_buffer
func inputBuffer(size int32) uint32 {
	if size < 0 {
		return 0
	}
	if cap(input) < int(size) {
		input = make([]byte, size)
	}
	input = input[:cap(input)]
	return ptr(input)
}

//go:wasmexport wagg_init
func initExport(n int32) int32 {
	b, ok := in(n)
	if !ok {
		return fail(abi.ErrBadInput, errLength)
	}
	e, err := newEngineJSON(b)
	if err != nil {
		return fail(abi.ErrBadInput, err)
	}
	current = e
	return int32(abi.OK)
}

//go:wasmexport wagg_describe
func describeExport() int64 {
	s, err := Describe()
	if err != nil {
		return int64(fail(abi.ErrNotReady, err))
	}
	return region(marshalSchema(&s))
}

//go:wasmexport wagg_process
func processExport(n int32) int32 {
	if current == nil {
		return fail(abi.ErrNotReady, errNotInit)
	}
	b, ok := in(n)
	if !ok {
		return fail(abi.ErrBadInput, errLength)
	}
	if err := current.process(b); err != nil {
		return fail(abi.ErrAggregate, err)
	}
	return int32(abi.OK)
}

//go:wasmexport wagg_flush
func flushExport(watermark int64) int64 {
	if current == nil {
		return int64(fail(abi.ErrNotReady, errNotInit))
	}
	return region(current.groups.flush(watermark))
}

//go:wasmexport wagg_snapshot
func snapshotExport() int64 {
	if current == nil {
		return int64(fail(abi.ErrNotReady, errNotInit))
	}
	return region(current.snapshot())
}

//go:wasmexport wagg_restore
func restoreExport(n int32) int32 {
	if current == nil {
		return fail(abi.ErrNotReady, errNotInit)
	}
	b, ok := in(n)
	if !ok {
		return fail(abi.ErrBadInput, errLength)
	}
	if err := current.restore(b); err != nil {
		return fail(abi.ErrBadInput, err)
	}
	return int32(abi.OK)
}

//go:wasmexport wagg_last_error
func lastErrorExport() int64 { return region(lastErr) }
