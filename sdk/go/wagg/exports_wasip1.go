//go:build wasip1

package wagg

import (
	"errors"
	"fmt"
	"runtime"
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
	schema  []byte  // wagg_describe's answer, kept alive for the host to read
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

// code is the status of an error of init, process or restore.
func code(err error) abi.Code {
	switch {
	case errors.Is(err, errNotRegistered):
		return abi.ErrNotReady
	case errors.Is(err, errSchema):
		return abi.ErrSchema
	case errors.Is(err, abi.ErrBatch), errors.Is(err, errSnapshot):
		return abi.ErrBadInput
	}
	return abi.ErrAggregate
}

// region hands the host b, which must stay reachable until the next call.
func region(b []byte) int64 { return abi.Pack(ptr(b), uint32(len(b))) }

func in(n int32) ([]byte, bool) {
	if n < 0 || int(n) > len(input) {
		return nil, false
	}
	return input[:n], true
}

// wagg_abi_version_1() -> (): never called; its presence declares ABI v1.
//
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

// wagg_init(len) -> status: reads an abi.Config as JSON from the first len
// bytes of the input buffer and starts an empty state for its windows.
// ErrBadInput when the config does not decode or validate (message in
// wagg_last_error), ErrNotReady when no aggregator is registered.
//
//go:wasmexport wagg_init
func initExport(n int32) int32 {
	b, ok := in(n)
	if !ok {
		return fail(abi.ErrBadInput, errLength)
	}
	e, err := newEngineJSON(b)
	if err != nil {
		if errors.Is(err, errNotRegistered) {
			return fail(abi.ErrNotReady, err)
		}
		return fail(abi.ErrBadInput, err)
	}
	current = e
	return int32(abi.OK)
}

// wagg_describe() -> packed: the registered abi.Schema as JSON. Callable
// before wagg_init. Negative (ErrNotReady) when nothing is registered.
//
//go:wasmexport wagg_describe
func describeExport() int64 {
	s, err := Describe()
	if err != nil {
		return int64(fail(abi.ErrNotReady, err))
	}
	schema = marshalSchema(&s)
	return region(schema)
}

// wagg_process(len) -> status: folds in the batch (abi batch layout) in the
// first len bytes of the input buffer. ErrSchema when the batch carries other
// fields than declared, ErrBadInput when it does not decode, ErrAggregate
// when the aggregator fails or panics (the message says which); the state
// may then hold part of the batch.
//
//go:wasmexport wagg_process
func processExport(n int32) (status int32) {
	defer func() {
		if r := recover(); r != nil {
			status = fail(abi.ErrAggregate, fmt.Errorf("aggregator panicked: %v", r))
		}
	}()
	if current == nil {
		return fail(abi.ErrNotReady, errNotInit)
	}
	b, ok := in(n)
	if !ok {
		return fail(abi.ErrBadInput, errLength)
	}
	if err := current.process(b); err != nil {
		return fail(code(err), err)
	}
	// A guest's goroutine runs only inside an export, and nothing else gets
	// scheduled there unless it yields: without this, the collector's
	// background marking never ran, a cycle stayed in its mark phase for
	// good, and every pointer write paid the write barrier (the votes
	// guest ran 30% slower).
	runtime.Gosched()
	return int32(abi.OK)
}

// wagg_flush(watermark) -> packed: the rows (abi rows layout) of the groups
// changed since the last flush, and of every group of the windows that end at
// or before watermark, final; those windows are then forgotten.
//
//go:wasmexport wagg_flush
func flushExport(watermark int64) int64 {
	if current == nil {
		return int64(fail(abi.ErrNotReady, errNotInit))
	}
	return region(current.groups.flush(watermark))
}

// wagg_snapshot() -> packed: the whole state, opaque to the host.
//
//go:wasmexport wagg_snapshot
func snapshotExport() int64 {
	if current == nil {
		return int64(fail(abi.ErrNotReady, errNotInit))
	}
	return region(current.snapshot())
}

// wagg_restore(len) -> status: replaces the state with the snapshot in the
// first len bytes of the input buffer, migrating it when wagg_init's config
// named its writer (migrate_from). ErrBadInput (state left empty) when it is
// not a snapshot of this aggregator with these windows, ErrAggregate when
// the aggregator's Migrate fails.
//
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
		return fail(code(err), err)
	}
	return int32(abi.OK)
}

// wagg_last_error() -> packed: the UTF-8 message of the last failed call.
//
//go:wasmexport wagg_last_error
func lastErrorExport() int64 { return region(lastErr) }
