package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wagg/wagg/abi"
)

// Instance is one plugin instance: the state of one partition of one
// deployment. Not safe for concurrent use. After a trap every call fails:
// the instance must be closed and replaced.
type Instance struct {
	m      *Module
	mod    api.Module
	mem    api.Memory
	out    *guestLog
	broken bool
	closed bool
	meter  callMeter

	inPtr, inCap uint32
	stack        [1]uint64
	windows      []abi.Window

	input, init, describe, process, flush, snapshot, restore, lastErr api.Function
}

// GuestError is a failed call into a plugin.
type GuestError struct {
	Export  string
	Code    abi.Code // the status the guest returned, or OK when it trapped
	Message string   // the guest's wagg_last_error, or the trap
	trap    error
}

func (e *GuestError) Error() string {
	if errors.Is(e.trap, ErrDeadline) {
		return fmt.Sprintf("plugin %s %s: the instance was stopped", e.Export, e.Message)
	}
	var exit *sys.ExitError
	if errors.As(e.trap, &exit) {
		return fmt.Sprintf("plugin %s %s", e.Export, e.Message)
	}
	if e.trap != nil {
		return fmt.Sprintf("plugin trapped in %s: %v", e.Export, e.trap)
	}
	return fmt.Sprintf("plugin %s failed (%s): %s", e.Export, e.Code, e.Message)
}

func (e *GuestError) Unwrap() error { return e.trap }

// Instantiate starts an instance for a deployment's windows and settings.
func (m *Module) Instantiate(ctx context.Context, cfg abi.Config) (*Instance, error) {
	i, err := m.instantiate(ctx)
	if err != nil {
		return nil, err
	}
	cfg.ABI = abi.Version
	b, err := json.Marshal(cfg)
	if err != nil {
		i.Close(ctx)
		return nil, err
	}
	if err := i.status(ctx, &i.init, b); err != nil {
		i.Close(ctx)
		return nil, err
	}
	i.windows = cfg.Windows
	return i, nil
}

// Close releases the instance and its memory; every later call fails.
func (i *Instance) Close(ctx context.Context) error {
	if i.closed {
		return nil
	}
	i.closed, i.broken = true, true
	return i.mod.Close(ctx)
}

// Process hands the guest an encoded batch (abi batch layout).
func (i *Instance) Process(ctx context.Context, batch []byte) error {
	return i.status(ctx, &i.process, batch)
}

// Flush returns the rows the guest emits at watermark.
func (i *Instance) Flush(ctx context.Context, watermark int64, dst []abi.Row) ([]abi.Row, error) {
	i.stack[0] = uint64(watermark)
	b, err := i.packed(ctx, &i.flush, i.m.r.opts.MaxOutput)
	if err != nil {
		return dst, err
	}
	if len(b) >= 8 {
		if n := binary.LittleEndian.Uint32(b[4:]); uint64(n) > uint64(i.m.r.opts.MaxRows) {
			return dst, &GuestError{Export: abi.FlushExport, Code: abi.ErrOutputLimit,
				Message: fmt.Sprintf("returned %d rows, the limit is %d (sandbox.max_rows)", n, i.m.r.opts.MaxRows)}
		}
	}
	rows, err := abi.DecodeRows(b, &i.m.Schema, len(i.windows), dst)
	if err != nil {
		return dst, &GuestError{Export: abi.FlushExport, Code: abi.ErrBadInput, Message: err.Error()}
	}
	for j, r := range rows[len(dst):] {
		if w := i.windows[r.Window]; !w.HasStart(r.Start) {
			clear(rows[len(dst):])
			return dst, &GuestError{Export: abi.FlushExport, Code: abi.ErrBadInput,
				Message: fmt.Sprintf("%v: row %d: window %s has no pane starting at %d ms (a multiple of its slide, from 1970 until a DateTime ends)", abi.ErrRows, j, w.Name, r.Start)}
		}
	}
	return rows, nil
}

// Snapshot returns a copy of the guest's state.
func (i *Instance) Snapshot(ctx context.Context) ([]byte, error) {
	b, err := i.packed(ctx, &i.snapshot, i.m.r.opts.MaxSnapshot)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// Restore replaces the guest's state with a snapshot.
func (i *Instance) Restore(ctx context.Context, snap []byte) error {
	return i.status(ctx, &i.restore, snap)
}

// write copies b into the guest's input buffer, growing it when needed.
func (i *Instance) write(ctx context.Context, b []byte) error {
	if i.broken {
		// Its memory may be unmapped already: touch nothing.
		return &GuestError{Export: abi.InputExport, Message: "instance is broken", trap: errBroken}
	}
	if uint32(len(b)) > i.inCap || i.inPtr == 0 {
		size := max(uint32(len(b)), 64<<10)
		i.stack[0] = uint64(size)
		if err := i.call(ctx, &i.input); err != nil {
			return err
		}
		i.inPtr, i.inCap = uint32(i.stack[0]), size
		if i.inPtr == 0 {
			return &GuestError{Export: abi.InputExport, Code: abi.ErrBadInput, Message: "returned a null buffer"}
		}
	}
	if !i.mem.Write(i.inPtr, b) {
		return &GuestError{Export: abi.InputExport, Code: abi.ErrBadInput, Message: "input buffer lies outside memory"}
	}
	return nil
}

// call calls *f under the runtime's per-call deadline. Any failure breaks
// the instance: a trapped or interrupted guest may have left its state half
// updated, and wazero has closed an interrupted module already.
//
// Each api.Function keeps the call stack its calls grew, for as long as it
// lives, outside the memory budget: a guest recursing a million deep once
// held hundreds of MB per export and instance. So after a call long enough
// to have grown it far (restackAfter), *f is replaced by a fresh one and
// the old stack left to the collector.
func (i *Instance) call(ctx context.Context, f *api.Function) error {
	name := exportName(*f)
	if i.broken {
		return &GuestError{Export: name, Message: "instance is broken", trap: errBroken}
	}
	i.out.begin()
	start := time.Now()
	err := (*f).CallWithStack(i.m.r.metered(ctx, &i.meter), i.stack[:])
	i.meter.end()
	if err != nil {
		i.broken = true
		return i.m.r.guestError(name, err)
	}
	if time.Since(start) > restackAfter {
		*f = i.mod.ExportedFunction(name)
	}
	if err := i.out.end(name); err != nil {
		i.broken = true
		return err
	}
	return nil
}

// restackAfter is the call time past which call replaces the function: in
// less, a guest recursing as fast as it can grows a stack of some MB.
const restackAfter = time.Millisecond

// status calls an export that takes the length of the input it was given
// and returns a status code.
func (i *Instance) status(ctx context.Context, f *api.Function, in []byte) error {
	if err := i.write(ctx, in); err != nil {
		return err
	}
	i.stack[0] = uint64(len(in))
	if err := i.call(ctx, f); err != nil {
		return err
	}
	if c := abi.Code(int32(uint32(i.stack[0]))); c != abi.OK {
		return &GuestError{Export: exportName(*f), Code: c, Message: i.message(ctx)}
	}
	return nil
}

// packed calls an export that returns a region of guest memory; the bytes
// are a view valid until the next call.
func (i *Instance) packed(ctx context.Context, f *api.Function, limit uint32) ([]byte, error) {
	if err := i.call(ctx, f); err != nil {
		return nil, err
	}
	ptr, n, code := abi.Unpack(int64(i.stack[0]))
	if code != abi.OK {
		return nil, &GuestError{Export: exportName(*f), Code: code, Message: i.message(ctx)}
	}
	return i.view(exportName(*f), ptr, n, limit)
}

func (i *Instance) view(export string, ptr, n, limit uint32) ([]byte, error) {
	if n > limit {
		return nil, &GuestError{Export: export, Code: abi.ErrOutputLimit, Message: fmt.Sprintf("returned %d bytes, the limit is %d", n, limit)}
	}
	b, ok := i.mem.Read(ptr, n)
	if !ok {
		return nil, &GuestError{Export: export, Code: abi.ErrBadInput, Message: "returned a region outside its memory"}
	}
	return b, nil
}

func (i *Instance) message(ctx context.Context) string {
	if err := i.call(ctx, &i.lastErr); err != nil {
		return "(no message: " + err.Error() + ")"
	}
	ptr, n, code := abi.Unpack(int64(i.stack[0]))
	if code != abi.OK || n > 4096 {
		n = min(n, 4096)
	}
	b, ok := i.mem.Read(ptr, n)
	if !ok {
		return "(no message)"
	}
	return string(b)
}

// exportName is the name the module exports f under (the ABI's name).
func exportName(f api.Function) string {
	if names := f.Definition().ExportNames(); len(names) > 0 {
		return names[0]
	}
	return f.Definition().Name()
}
