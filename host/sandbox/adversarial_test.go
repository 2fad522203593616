package sandbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

// Each guest here misbehaves in one way; each test asserts that the host
// answers with a clear error, within a bounded time, and gives back what the
// guest held. Guests are assembled by internal/testwasm.Guest.

const timeout = 200 * time.Millisecond

// bound is how long containment may take at most: the deadline plus
// generous slack for a loaded CI box. It is a bound on a hang, not a
// performance assertion.
const bound = 10 * time.Second

func runtimeFor(t *testing.T, o sandbox.Options) *sandbox.Runtime {
	t.Helper()
	ctx := context.Background()
	if o.CallTimeout == 0 {
		o.CallTimeout = timeout
	}
	if o.MemoryPages == 0 {
		o.MemoryPages = 64
	}
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	rt, err := sandbox.New(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n := rt.Reserved(); n != 0 {
			t.Errorf("%d bytes of memory budget still reserved after every instance closed", n)
		}
		rt.Close(ctx)
	})
	return rt
}

// within runs f on its own goroutine and fails the test if it does not
// return within bound, forcing garbage collections meanwhile: a guest that
// cannot be preempted would hold up the collector's stop-the-world forever.
func within(t *testing.T, f func() error) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	gcs := make(chan struct{})
	go func() {
		defer close(gcs)
		for i := 0; i < 3; i++ {
			runtime.GC()
		}
	}()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	var err error
	select {
	case err = <-done:
	case <-deadline.C:
		t.Fatalf("guest call still running after %v", bound)
	}
	select {
	case <-gcs:
	case <-deadline.C:
		t.Fatalf("garbage collection blocked for %v while a guest ran", bound)
	}
	return err, time.Since(start)
}

func wantDeadline(t *testing.T, err error, export string) {
	t.Helper()
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) || !errors.Is(err, sandbox.ErrDeadline) || ge.Export != export {
		t.Fatalf("got %v, want a *GuestError in %s wrapping ErrDeadline", err, export)
	}
	if !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("message %q does not say deadline", err)
	}
}

func compileGuest(t *testing.T, rt *sandbox.Runtime, g testwasm.Guest) *sandbox.Module {
	t.Helper()
	m, err := rt.Compile(context.Background(), g.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func guestBatch(t *testing.T, m *sandbox.Module) []byte {
	t.Helper()
	return batch(t, m, 1, 2, 3)
}

func TestAdversarial_LoopInProcessIsInterruptedAtTheDeadline(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{})
	m := compileGuest(t, rt, testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.Loop()}})
	inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	b := guestBatch(t, m)
	err, took := within(t, func() error { return inst.Process(ctx, b) })
	wantDeadline(t, err, abi.ProcessExport)
	if took < timeout {
		t.Fatalf("interrupted after %v, before its %v deadline", took, timeout)
	}
	// The interrupted instance is broken for good; the module is not.
	if err := inst.Process(ctx, b); err == nil {
		t.Fatal("an interrupted instance accepted another call")
	}
	freshInstanceWorks(t, rt, "the interruption")
}

// freshInstanceWorks checks that a well-behaved plugin still runs on rt
// after what a test did to another.
func freshInstanceWorks(t *testing.T, rt *sandbox.Runtime, after string) {
	t.Helper()
	ctx := context.Background()
	m := compileGuest(t, rt, testwasm.Guest{})
	fresh, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close(ctx)
	if err := fresh.Process(ctx, guestBatch(t, m)); err != nil {
		t.Fatalf("a well-behaved instance after %s: %v", after, err)
	}
}

func TestAdversarial_LoopInFlushSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	for _, export := range []string{abi.FlushExport, abi.SnapshotExport, abi.RestoreExport, abi.InitExport} {
		t.Run(export, func(t *testing.T) {
			rt := runtimeFor(t, sandbox.Options{})
			m := compileGuest(t, rt, testwasm.Guest{Bodies: map[string][]byte{export: testwasm.Loop()}})
			var inst *sandbox.Instance
			err, _ := within(t, func() error {
				var err error
				inst, err = m.Instantiate(ctx, abi.Config{Windows: total})
				if err != nil {
					return err
				}
				switch export {
				case abi.FlushExport:
					_, err = inst.Flush(ctx, 0, nil)
				case abi.SnapshotExport:
					_, err = inst.Snapshot(ctx)
				case abi.RestoreExport:
					err = inst.Restore(ctx, []byte("state"))
				}
				return err
			})
			if inst != nil {
				inst.Close(ctx)
			}
			wantDeadline(t, err, export)
		})
	}
}

func TestAdversarial_LoopInStartFunctionOrDescribeFailsTheCompile(t *testing.T) {
	for _, export := range []string{abi.InitializeExport, abi.DescribeExport} {
		t.Run(export, func(t *testing.T) {
			rt := runtimeFor(t, sandbox.Options{})
			wasm := testwasm.Guest{Bodies: map[string][]byte{export: testwasm.Loop()}}.Bytes()
			err, _ := within(t, func() error {
				_, err := rt.Compile(context.Background(), wasm)
				return err
			})
			if !errors.Is(err, sandbox.ErrInvalid) || !errors.Is(err, sandbox.ErrDeadline) {
				t.Fatalf("got %v, want ErrInvalid wrapping ErrDeadline", err)
			}
		})
	}
}

func TestAdversarial_MemoryGrowthStopsAtTheCap(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{MemoryPages: 32})
	m := compileGuest(t, rt, testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.GrowForever()}})
	inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	if got := rt.Reserved(); got < 32<<16 || got > 32<<16+129<<10 {
		t.Fatalf("an instance reserves %d bytes, want its cap %d and what it takes on the heap (InstanceHeap)", got, 32<<16)
	}
	err, _ = within(t, func() error { return inst.Process(ctx, guestBatch(t, m)) })
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("got %v, want the guest's trap once memory.grow failed at the cap", err)
	}
	inst.Close(ctx)
}

func TestAdversarial_MemoryBudgetRefusesInstancesPastIt(t *testing.T) {
	ctx := context.Background()
	// room for two instances: their memory caps and what they take on the heap
	rt := runtimeFor(t, sandbox.Options{MemoryPages: 16, MemoryBudget: 2 * (16<<16 + 129<<10)})
	m := compileGuest(t, rt, testwasm.Guest{})
	a, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Instantiate(ctx, abi.Config{Windows: total})
	if !errors.Is(err, sandbox.ErrMemoryBudget) || !strings.Contains(err.Error(), "memory_budget") {
		t.Fatalf("third instance: %v, want ErrMemoryBudget naming sandbox.memory_budget", err)
	}
	a.Close(ctx)
	c, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatalf("after a close gave its memory back: %v", err)
	}
	b.Close(ctx)
	c.Close(ctx)
}

func TestAdversarial_DataSegmentsAndMemoryDeclarations(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{MemoryPages: 16})
	cases := []struct {
		name string
		g    testwasm.Guest
		msg  string
	}{
		// 3 MiB of data for a memory of 2 pages: it cannot be placed.
		{"data segment past memory", testwasm.Guest{MemMax: 2, Data: []testwasm.Segment{{Offset: 0, Bytes: make([]byte, 3<<20)}}}, "out of bounds"},
		{"data segment at the end of the address space", testwasm.Guest{Data: []testwasm.Segment{{Offset: 0xffffff00, Bytes: make([]byte, 512)}}}, "out of bounds"},
		{"minimum memory over the cap", testwasm.Guest{MemMin: 17}, "16"},
		{"a start function that traps", testwasm.Guest{ExtraFns: [][]byte{testwasm.Trap()}, Start: true}, "trapped in its start function: start function[11] failed: wasm error: unreachable"},
		{"a WASI import of the wrong type", testwasm.Guest{Imports: []testwasm.Import{{Module: "wasi_snapshot_preview1", Name: "fd_write"}}}, "signature mismatch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := rt.Compile(ctx, c.g.Bytes())
			if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want ErrInvalid mentioning %q", err, c.msg)
			}
			// _initialize did not run: it is not blamed
			if strings.Contains(err.Error(), abi.InitializeExport) || !c.g.Start && strings.Contains(err.Error(), "trapped") {
				t.Fatalf("got %v, which blames code that never ran", err)
			}
		})
	}
}

func TestAdversarial_OutputCaps(t *testing.T) {
	ctx := context.Background()
	manyRows := make([]byte, 16)
	binary.LittleEndian.PutUint32(manyRows, abi.RowsMagic)
	binary.LittleEndian.PutUint32(manyRows[4:], 1<<30)
	binary.LittleEndian.PutUint64(manyRows[8:], 16)
	cases := []struct {
		name string
		g    testwasm.Guest
		call func(*sandbox.Instance) error
		msg  string
	}{
		{"flush region over the output cap", testwasm.Guest{Bodies: map[string][]byte{abi.FlushExport: testwasm.Packed(0, 1<<30)}},
			func(i *sandbox.Instance) error { _, err := i.Flush(ctx, 0, nil); return err }, "limit"},
		{"flush rows over the row cap", testwasm.Guest{
			Bodies: map[string][]byte{abi.FlushExport: testwasm.Packed(4096, 16)},
			Data:   []testwasm.Segment{{Offset: 4096, Bytes: manyRows}}},
			func(i *sandbox.Instance) error { _, err := i.Flush(ctx, 0, nil); return err }, "max_rows"},
		{"snapshot over its cap", testwasm.Guest{Bodies: map[string][]byte{abi.SnapshotExport: testwasm.Packed(0, 1<<20+1)}},
			func(i *sandbox.Instance) error { _, err := i.Snapshot(ctx); return err }, "limit is 1048576"},
		{"flush region outside memory", testwasm.Guest{Bodies: map[string][]byte{abi.FlushExport: testwasm.Packed(0x7fff0000, 64)}},
			func(i *sandbox.Instance) error { _, err := i.Flush(ctx, 0, nil); return err }, "outside its memory"},
		{"input buffer outside memory", testwasm.Guest{Bodies: map[string][]byte{abi.InputExport: testwasm.I32(-16)}},
			func(i *sandbox.Instance) error { return i.Process(ctx, []byte("batch")) }, "outside memory"},
		{"null input buffer", testwasm.Guest{Bodies: map[string][]byte{abi.InputExport: testwasm.I32(0)}},
			func(i *sandbox.Instance) error { return i.Process(ctx, []byte("batch")) }, "null buffer"},
		{"garbage rows", testwasm.Guest{Bodies: map[string][]byte{abi.FlushExport: testwasm.Packed(testwasm.RowsPtr, 12)}},
			func(i *sandbox.Instance) error { _, err := i.Flush(ctx, 0, nil); return err }, "malformed rows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := runtimeFor(t, sandbox.Options{MaxOutput: 8 << 20, MaxRows: 1000, MaxSnapshot: 1 << 20})
			m := compileGuest(t, rt, c.g)
			inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
			if err == nil {
				defer inst.Close(ctx)
				err = c.call(inst)
			}
			var ge *sandbox.GuestError
			if !errors.As(err, &ge) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want a *GuestError mentioning %q", err, c.msg)
			}
		})
	}
}

func TestAdversarial_RefusedBeforeCompiling(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{Code: sandbox.CodeLimits{MaxFunctionSize: 64 << 10, MaxFunctions: 100, MaxCodeSize: 1 << 20, MaxLocals: 1000}})
	// A body of 100k nops (0x01): harmless, but over the function size limit.
	huge := bytes.Repeat([]byte{0x01}, 100_000)
	many := make([][]byte, 120)
	manyLocals := append(testwasm.ULEB(1), testwasm.ULEB(1_000_000)...)
	manyLocals = append(manyLocals, 0x7f)
	cases := []struct {
		name string
		g    testwasm.Guest
		msg  string
	}{
		{"one huge function", testwasm.Guest{ExtraFns: [][]byte{huge}}, "max_function_size"},
		{"too many functions", testwasm.Guest{ExtraFns: many}, "max_functions"},
		{"a million locals", testwasm.Guest{Locals: map[string][]byte{abi.ProcessExport: manyLocals}}, "max_locals"},
		{"code section too large", testwasm.Guest{ExtraFns: [][]byte{huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000], huge[:60_000]}}, "max_code_size"},
		{"forbidden import", testwasm.Guest{Imports: []testwasm.Import{{Module: "env", Name: "evil"}}}, "env.evil"},
		{"a WASI call outside the allow-list", testwasm.Guest{Imports: []testwasm.Import{{Module: "wasi_snapshot_preview1", Name: "sock_accept"}}}, "sock_accept"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, err := rt.Compile(ctx, c.g.Bytes())
			if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want ErrInvalid mentioning %q", err, c.msg)
			}
			if strings.HasPrefix(c.msg, "max_") && !errors.Is(err, sandbox.ErrTooLarge) {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
			if d := time.Since(start); d > bound {
				t.Fatalf("refusal took %v", d)
			}
		})
	}
}

// The worst functions the default limits accept still compile in bounded
// time: the largest body of cheap instructions, and the most blocks allowed
// (compile time grows with the square of a function's blocks), flat and
// nested.
func TestAdversarial_CompileBombWithinTheLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the largest functions the limits accept")
	}
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{})
	const size = 512<<10 - 16
	const blocks = 5_000
	bodies := map[string][]byte{
		// (i32.const 1) (drop), repeated: many short-lived values.
		"const-drop": bytes.Repeat([]byte{0x41, 0x01, 0x1a}, size/3),
		// N constants on the stack, then N-1 adds: N values live at once.
		"all-live": func() []byte {
			n := size / 3
			b := bytes.Repeat([]byte{0x41, 0x01}, n)
			b = append(b, bytes.Repeat([]byte{0x6a}, n-1)...)
			return append(b, 0x1a)
		}(),
		"flat-blocks":   bytes.Repeat([]byte{0x02, 0x40, 0x0b}, blocks),
		"nested-blocks": append(bytes.Repeat([]byte{0x02, 0x40}, blocks), bytes.Repeat([]byte{0x0b}, blocks)...),
		// each br_if ends a block of the compiler's
		"br_if": append(append([]byte{0x02, 0x40}, bytes.Repeat([]byte{0x41, 0x00, 0x0d, 0x00}, blocks-1)...), 0x0b),
		// each target an edge into one block
		"br_table": append(append([]byte{0x02, 0x40, 0x41, 0x00, 0x0e}, testwasm.ULEB(blocks-2)...), append(make([]byte, blocks-1), 0x0b)...),
		// the meter checks after each call with a long tail
		"calls": bytes.Repeat(append([]byte{0x10}, testwasm.ULEB(uint64(testwasm.ExtraIndex(0, 0)))...), blocks),
		// the meter checks before each fill of a length it does not know
		"fills": bytes.Repeat([]byte{0x41, 0x00, 0x41, 0x00, 0x3f, 0x00, 0xfc, 0x0b, 0x00}, blocks/4),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			m, err := rt.Compile(ctx, testwasm.Guest{ExtraFns: [][]byte{body}}.Bytes())
			took := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			m.Close(ctx)
			t.Logf("a %d-byte function compiled in %v", len(body), took)
			if took > bound {
				t.Fatalf("compiling it took %v", took)
			}
		})
	}
	// One more block than allowed is refused before compiling, whatever
	// makes the blocks: 100,000 br_if compiled for 6 minutes, a br_table of
	// 500,000 targets for 94 s, 40,000 calls for 81 s.
	for _, body := range [][]byte{
		bytes.Repeat([]byte{0x02, 0x40, 0x0b}, blocks+1),
		append(bytes.Repeat([]byte{0x41, 0x00, 0x0d, 0x00}, blocks+1), 0x00),
		append(append([]byte{0x02, 0x40, 0x41, 0x00, 0x0e}, testwasm.ULEB(blocks)...), append(make([]byte, blocks+1), 0x0b)...),
		bytes.Repeat(append([]byte{0x10}, testwasm.ULEB(uint64(testwasm.ExtraIndex(0, 0)))...), blocks+1),
		bytes.Repeat([]byte{0x41, 0x00, 0x41, 0x00, 0x3f, 0x00, 0xfc, 0x0b, 0x00}, blocks/4+1),
	} {
		_, err := rt.Compile(ctx, testwasm.Guest{ExtraFns: [][]byte{body}}.Bytes())
		if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_blocks") {
			t.Fatalf("%.16x...: got %v, want ErrTooLarge naming max_blocks", body, err)
		}
	}
	// Many functions just under the per-function limit add up past the
	// module's budget.
	fns := make([][]byte, 7)
	for i := range fns {
		fns[i] = bytes.Repeat([]byte{0x02, 0x40, 0x0b}, blocks)
	}
	_, err := rt.Compile(ctx, testwasm.Guest{ExtraFns: fns}.Bytes())
	if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_block_work") {
		t.Fatalf("got %v, want ErrTooLarge naming max_block_work", err)
	}
}

func TestAdversarial_TrapBreaksOnlyItsInstance(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{})
	m := compileGuest(t, rt, testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.Trap()}})
	inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	err = inst.Process(ctx, guestBatch(t, m))
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) || ge.Export != abi.ProcessExport || errors.Unwrap(err) == nil || errors.Is(err, sandbox.ErrDeadline) {
		t.Fatalf("got %v, want a trap in %s", err, abi.ProcessExport)
	}
	if _, err := inst.Flush(ctx, 0, nil); err == nil || !strings.Contains(err.Error(), "trapped") {
		t.Fatalf("call after a trap: %v, want a refusal", err)
	}
	if _, err := inst.Snapshot(ctx); err == nil {
		t.Fatal("snapshot of a trapped instance succeeded")
	}
	other, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := other.Flush(ctx, 0, nil); err != nil {
		t.Fatalf("another instance of the same module: %v", err)
	}
}

// A plugin's rows name panes of the deployment's windows: a start that is no
// pane of its window (off the slide's grid, before 1970, past what a DateTime
// holds, or not 0 in a global window) would be written wrapped onto another
// pane's row in ClickHouse, so the flush is refused instead.
func TestAdversarial_RowsOfPanesThatDoNotExist(t *testing.T) {
	ctx := context.Background()
	windows := []abi.Window{{Name: "minute", Kind: abi.Tumbling, SizeMs: 60_000}, {Name: "hour", Kind: abi.Hopping, SizeMs: 3_600_000, SlideMs: 60_000}, {Name: "total", Kind: abi.Global}}
	rowsOf := func(window uint8, start int64) []byte {
		var w abi.RowsWriter
		w.Reset()
		w.Append(window, false, start, abi.AppendKeyInt64(nil, 7), []uint64{1})
		return w.Bytes()
	}
	cases := []struct {
		name   string
		window uint8
		start  int64
		ok     bool
	}{
		{"a minute", 0, 1_700_000_040_000, true},
		{"an hour sliding by the minute", 1, 1_700_000_040_000, true},
		{"the total", 2, 0, true},
		{"off the minute's grid", 0, 1_700_000_040_001, false},
		{"before 1970", 0, -60_000, false},
		{"past a DateTime", 0, abi.MaxTimeMs - abi.MaxTimeMs%60_000, false},
		{"2^32 seconds on, where a DateTime wraps", 0, 1_700_000_040_000 + 1<<32*1000, false},
		{"a total that starts somewhere", 2, 60_000, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rows := rowsOf(c.window, c.start)
			rt := runtimeFor(t, sandbox.Options{})
			m := compileGuest(t, rt, testwasm.Guest{
				Bodies: map[string][]byte{abi.FlushExport: testwasm.Packed(4096, uint32(len(rows)))},
				Data:   []testwasm.Segment{{Offset: 4096, Bytes: rows}}})
			inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(ctx)
			got, err := inst.Flush(ctx, 0, nil)
			if c.ok {
				if err != nil || len(got) != 1 || got[0].Start != c.start {
					t.Fatalf("flush: %v %+v, want the row", err, got)
				}
				return
			}
			var ge *sandbox.GuestError
			if !errors.As(err, &ge) || ge.Export != abi.FlushExport || !strings.Contains(err.Error(), "no pane starting at") || len(got) != 0 {
				t.Fatalf("flush: %v %+v, want a *GuestError naming the pane", err, got)
			}
		})
	}
}

// A guest that calls WASI's proc_exit ends its instance from inside a call
// (wazero closes the module), and one in _initialize with status 0 even
// counts as a successful start in wazero. Either way the sandbox answers
// with an error that names the export and proc_exit, the instance is
// broken, nothing stays reserved, and other instances go on.
func TestAdversarial_ProcExitEndsOnlyItsInstance(t *testing.T) {
	ctx := context.Background()
	procExit := []testwasm.Import{{Module: "wasi_snapshot_preview1", Name: "proc_exit", Params: []byte{0x7f}}}
	for _, status := range []int32{0, 3} {
		for _, export := range []string{
			abi.InitializeExport, abi.DescribeExport, abi.InitExport, abi.InputExport,
			abi.ProcessExport, abi.FlushExport, abi.SnapshotExport, abi.RestoreExport,
		} {
			t.Run(fmt.Sprintf("%s/%d", export, status), func(t *testing.T) {
				rt := runtimeFor(t, sandbox.Options{})
				// (call $proc_exit (i32.const status)) unreachable
				exits := testwasm.Guest{Imports: procExit, Bodies: map[string][]byte{
					export: append(testwasm.I32(status), 0x10, 0, 0x00),
				}}
				want := func(err error) {
					t.Helper()
					var ge *sandbox.GuestError
					if !errors.As(err, &ge) || ge.Export != export {
						t.Fatalf("got %v, want a *GuestError in %s", err, export)
					}
					if msg := fmt.Sprintf("proc_exit(%d)", status); !strings.Contains(err.Error(), msg) {
						t.Fatalf("message %q does not name %s", err, msg)
					}
				}
				m, err := rt.Compile(ctx, exits.Bytes())
				switch export {
				case abi.InitializeExport, abi.DescribeExport:
					if !errors.Is(err, sandbox.ErrInvalid) {
						t.Fatalf("compile: got %v, want ErrInvalid", err)
					}
					want(err)
				default:
					if err != nil {
						t.Fatal(err)
					}
					defer m.Close(ctx)
					inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
					if export == abi.InitExport || export == abi.InputExport {
						want(err)
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					b := guestBatch(t, m)
					switch export {
					case abi.ProcessExport:
						err = inst.Process(ctx, b)
					case abi.FlushExport:
						_, err = inst.Flush(ctx, 0, nil)
					case abi.SnapshotExport:
						_, err = inst.Snapshot(ctx)
					case abi.RestoreExport:
						err = inst.Restore(ctx, nil)
					}
					want(err)
					if err := inst.Process(ctx, b); err == nil {
						t.Fatal("the instance processed a batch after it exited")
					}
					inst.Close(ctx)
				}
				if n := rt.Reserved(); n != 0 {
					t.Fatalf("%d bytes stay reserved after the exit", n)
				}
				freshInstanceWorks(t, rt, "the exit")
			})
		}
	}
}

// A guest that recurses a million calls deep and returns grows wazero's
// call stack to tens or hundreds of MB, and the export's function kept it
// for the instance's life, outside the memory budget: 12 partitions of
// such a deployment held 4.9 GB. The stack must not outlive the call.
func TestAdversarial_DeepRecursionLeavesNoStackBehind(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{})
	const counter = 60_000 // an address in the guest's memory
	// Function 10, the first after the ten ABI exports: while the counter
	// is not 0, decrement it and call itself.
	recurse := append(testwasm.I32(counter), 0x28, 0x02, 0x00, 0x45, 0x04, 0x40, 0x0f, 0x0b) // i32.load; i32.eqz; if return end
	recurse = append(append(recurse, testwasm.I32(counter)...), testwasm.I32(counter)...)
	recurse = append(recurse, 0x28, 0x02, 0x00, 0x41, 0x01, 0x6b, 0x36, 0x02, 0x00) // i32.load; i32.const 1; i32.sub; i32.store
	recurse = append(recurse, 0x10, 10)                                             // call 10
	process := append(testwasm.I32(counter), testwasm.I32(1_000_000)...)
	process = append(process, 0x36, 0x02, 0x00, 0x10, 10, 0x41, 0x00) // i32.store; call 10; i32.const 0
	m := compileGuest(t, rt, testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: process}, ExtraFns: [][]byte{recurse}})
	inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	b := guestBatch(t, m)
	heap := testwasm.LiveHeap
	before := heap()
	if err := inst.Process(ctx, b); err != nil {
		t.Fatal(err)
	}
	if after := heap(); after > before+16<<20 {
		t.Fatalf("the Go heap grew from %d MB to %d MB over a call that returned", before>>20, after>>20)
	}
	// and the instance goes on
	if err := inst.Process(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// An instance's globals, data segments and element segments live on the Go
// heap, outside its linear memory: the memory budget counts them, so that a
// module of two pages and a million segments cannot take a host's memory
// far past its budget, one partition after another.
func TestAdversarial_TheBudgetCountsWhatAnInstanceTakesOnTheHeap(t *testing.T) {
	ctx := context.Background()
	heap := testwasm.LiveHeap
	for _, c := range []struct {
		name string
		g    testwasm.Guest
	}{
		{"globals", testwasm.Guest{Globals: 90_000}},
		{"imports", testwasm.Guest{Imports: slices.Repeat([]testwasm.Import{{Module: "wasi_snapshot_preview1", Name: "sched_yield", Results: []byte{0x7f}}}, 90_000)}},
		{"data segments", testwasm.Guest{Data: make([]testwasm.Segment, 400_000)}},
		{"elements", testwasm.Guest{Elems: 1_000_000}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := runtimeFor(t, sandbox.Options{})
			c.g.MemMax = 2
			m := compileGuest(t, rt, c.g)
			// a first instance, so that what compiling left is collected
			// and what the module keeps for all its instances is made
			warm, err := m.Instantiate(ctx, abi.Config{Windows: total})
			if err != nil {
				t.Fatal(err)
			}
			warm.Close(ctx)
			base, before := rt.Reserved(), heap()
			var insts []*sandbox.Instance
			for range 4 {
				inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
				if err != nil {
					t.Fatal(err)
				}
				insts = append(insts, inst)
			}
			took, reserved := int64(heap()-before), int64(rt.Reserved()-base)
			for _, inst := range insts {
				inst.Close(ctx)
			}
			if took < 1<<20 {
				t.Fatalf("4 instances took %d bytes of the heap: the module does not test what it should", took)
			}
			if reserved < took {
				t.Fatalf("4 instances took %d KiB of the Go heap, the budget counted %d KiB", took>>10, reserved>>10)
			}
			t.Logf("4 instances: %d KiB of the heap, %d KiB of the budget", took>>10, reserved>>10)
			if rt.Reserved() != base {
				t.Fatalf("closed instances still hold %d bytes of the budget", rt.Reserved()-base)
			}
		})
	}
}
