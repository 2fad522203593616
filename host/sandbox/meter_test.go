package sandbox_test

import (
	"context"
	"errors"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

// A guest that loops must not hold up the Go runtime: garbage collections
// (which stop the world) complete while the guest still runs, and the
// call ends when its context does.
func TestMeter_GarbageCollectsWhileAGuestLoops(t *testing.T) {
	rt := runtimeFor(t, sandbox.Options{CallTimeout: time.Hour})
	m := compileGuest(t, rt, testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.Loop()}})
	inst, err := m.Instantiate(context.Background(), abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(context.Background())
	b := guestBatch(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- inst.Process(ctx, b) }()
	gcs := make(chan struct{})
	go func() {
		defer close(gcs)
		for range 5 {
			runtime.GC()
		}
	}()
	hang := time.NewTimer(bound)
	defer hang.Stop()
	select {
	case <-gcs:
	case err := <-done:
		t.Fatalf("the looping call returned before it was stopped: %v", err)
	case <-hang.C:
		t.Fatalf("garbage collection blocked for %v by a looping guest", bound)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want the call stopped by its context", err)
		}
	case <-hang.C:
		t.Fatalf("a looping call ignored its context for %v", bound)
	}
}

// Code without loops can still run for ever: a function that calls itself
// twice 40 levels deep. The meter at every function entry stops it.
func TestMeter_RecursionWithoutLoopsMeetsTheDeadline(t *testing.T) {
	rt := runtimeFor(t, sandbox.Options{})
	m := compileGuest(t, rt, testwasm.Guest{
		ExtraFns: [][]byte{recursion(0)},
		Bodies:   map[string][]byte{abi.ProcessExport: append(call(0), testwasm.I32(0)...)},
	})
	processMeetsTheDeadline(t, m)
}

// A function whose first instruction is a loop header has no check at its
// entry: the header's check charges the whole body. Recursion through it
// still passes that check once per call, and is stopped.
func TestMeter_RecursionThroughALoopHeaderMeetsTheDeadline(t *testing.T) {
	rt := runtimeFor(t, sandbox.Options{})
	m := compileGuest(t, rt, testwasm.Guest{
		ExtraFns: [][]byte{append(append([]byte{0x03, 0x40}, recursion(0)...), 0x0b)},
		Bodies:   map[string][]byte{abi.ProcessExport: append(call(0), testwasm.I32(0)...)},
	})
	processMeetsTheDeadline(t, m)
}

// A call followed by a long tail is checked again when it returns: a
// million frames deep, each frame's tail (30,000 stores) runs while the
// chain unwinds, long after the entry checks that charged it.
func TestMeter_UnwindingADeepChainMeetsTheDeadline(t *testing.T) {
	load := []byte{0x41, 0, 0x28, 2, 0}
	// if depth < 1M { depth++; f() }
	body := append(append([]byte{}, load...), 0x41, 0xc0, 0x84, 0x3d, 0x49, 0x04, 0x40)
	body = append(body, 0x41, 0)
	body = append(body, load...)
	body = append(body, 0x41, 1, 0x6a, 0x36, 2, 0)
	body = append(body, call(0)...)
	body = append(body, 0x0b)
	for range 30000 {
		body = append(body, 0x41, 8, 0x41, 1, 0x36, 2, 0) // i32.store(8, 1)
	}
	rt := runtimeFor(t, sandbox.Options{})
	m := compileGuest(t, rt, testwasm.Guest{
		ExtraFns: [][]byte{body},
		Bodies:   map[string][]byte{abi.ProcessExport: append(call(0), testwasm.I32(0)...)},
	})
	processMeetsTheDeadline(t, m)
}

// Constant bulk lengths are charged ahead with the code only up to a bound
// per function: past it, a straight-line body of large constant fills (no
// loop, no call: nothing else to check) is charged fill by fill.
func TestMeter_ConstantFillsInStraightLineMeetTheDeadline(t *testing.T) {
	const n = 32 << 20
	fill := []byte{0x41, 0, 0x41, 0, 0x41, 0x80, 0x80, 0x80, 0x10, 0xfc, 11, 0} // memory.fill(0, 0, 32 MiB)
	var body []byte
	for range 1200 { // 38 GB of filling, and under the 5,000 blocks a function may have
		body = append(body, fill...)
	}
	rt := runtimeFor(t, sandbox.Options{MemoryPages: 1024})
	m := compileGuest(t, rt, testwasm.Guest{MemMin: n >> 16, Bodies: map[string][]byte{abi.ProcessExport: append(body, testwasm.I32(0)...)}})
	processMeetsTheDeadline(t, m)
}

// call calls extra function k of a guest without imports.
func call(k int) []byte {
	return append([]byte{0x10}, testwasm.ULEB(uint64(testwasm.ExtraIndex(k, 0)))...)
}

// recursion is a body without loops that runs for ever: extra function k
// calling itself twice, 40 levels deep (the depth lives at address 0):
//
//	if depth < 40 { depth++; f(); f(); depth-- }
func recursion(k int) []byte {
	load := []byte{0x41, 0, 0x28, 2, 0}
	body := append(append([]byte{}, load...), 0x41, 40, 0x49, 0x04, 0x40)
	body = append(body, 0x41, 0)
	body = append(body, load...)
	body = append(body, 0x41, 1, 0x6a, 0x36, 2, 0)
	body = append(body, call(k)...)
	body = append(body, call(k)...)
	body = append(body, 0x41, 0)
	body = append(body, load...)
	return append(body, 0x41, 1, 0x6b, 0x36, 2, 0, 0x0b)
}

// The meter's global and import belong to the sandbox: an upload that
// names either is refused, not given access to its own fuel.
func TestMeter_GuestCannotReachTheFuel(t *testing.T) {
	rt := runtimeFor(t, sandbox.Options{})
	for name, g := range map[string]testwasm.Guest{
		// The module defines no globals: global 0 would be the fuel.
		"global past the module's": {Bodies: map[string][]byte{abi.ProcessExport: {0x41, 0, 0x24, 0, 0x41, 0}}},
		"the sandbox's import":     {Imports: []testwasm.Import{{Module: "wagg_sandbox", Name: "refuel"}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := rt.Compile(context.Background(), g.Bytes())
			if !errors.Is(err, sandbox.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), "global") && !strings.Contains(err.Error(), "sandbox") {
				t.Fatalf("message %q does not say what was refused", err)
			}
		})
	}
}

// The metered votes plugin computes exactly what the unmetered one does.
func TestMeter_KeepsWhatTheGoPluginComputes(t *testing.T) {
	ctx := context.Background()
	wasm := testwasm.Build(t, "examples/votes")
	windows := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	run := func(timeout time.Duration) ([]abi.Row, []byte) {
		rt := runtimeFor(t, sandbox.Options{CallTimeout: timeout, MemoryPages: 1024})
		m, err := rt.Compile(ctx, wasm)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close(ctx)
		inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
		if err != nil {
			t.Fatal(err)
		}
		defer inst.Close(ctx)
		for _, b := range votesBatches(t, m, 1024, 8) {
			if err := inst.Process(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		rows, err := inst.Flush(ctx, 1_764_000_000_000+100, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := inst.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rows, snap
	}
	rowsOn, snapOn := run(10 * time.Second)
	rowsOff, snapOff := run(-1)
	if len(rowsOn) == 0 || !reflect.DeepEqual(rowsOn, rowsOff) {
		t.Fatalf("metered plugin flushed %d rows, unmetered %d, or they differ", len(rowsOn), len(rowsOff))
	}
	if !reflect.DeepEqual(snapOn, snapOff) {
		t.Fatal("metered and unmetered snapshots differ")
	}
}

// Tables live on the Go heap, outside the guest's memory cap: a table
// declared past sandbox.Options.Code.MaxTableElements is refused before it
// is compiled, and a table may not grow past it.
func TestAdversarial_TablesAreCapped(t *testing.T) {
	ctx := context.Background()
	rt := runtimeFor(t, sandbox.Options{Code: sandbox.CodeLimits{MaxTableElements: 1000}})
	_, err := rt.Compile(ctx, testwasm.Guest{Tables: []testwasm.Limits{{Min: 100_000_000}}}.Bytes())
	if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_table_elements") {
		t.Fatalf("a 100M-element table: got %v, want ErrTooLarge naming the limit", err)
	}
	// wagg_process returns what table.grow(ref.null, 50M) returns: -1
	// when the grow is refused (a status the host reports), the old size
	// (0, success) when it is not.
	grow := []byte{0xd0, 0x70, 0x41, 0x80, 0xe1, 0xeb, 0x17, 0xfc, 15, 0}
	unbounded := uint32(1 << 31)
	for name, l := range map[string]testwasm.Limits{"no maximum": {Min: 10}, "a larger maximum": {Min: 10, Max: &unbounded}} {
		t.Run(name, func(t *testing.T) {
			m := compileGuest(t, rt, testwasm.Guest{Tables: []testwasm.Limits{l}, Bodies: map[string][]byte{abi.ProcessExport: grow}})
			inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(ctx)
			var ge *sandbox.GuestError
			if err := inst.Process(ctx, guestBatch(t, m)); !errors.As(err, &ge) || ge.Code != -1 {
				t.Fatalf("table.grow by 50M elements: got %v, want it refused (-1)", err)
			}
		})
	}
}

// Bulk memory instructions do work in proportion to their length operand,
// not to their size in code: a loop of 32 MiB memory.fill is metered by the
// bytes it fills.
func TestMeter_BulkMemoryMeetsTheDeadline(t *testing.T) {
	const n = 32 << 20
	fill := []byte{0x03, 0x40, 0x41, 0, 0x41, 0, 0x41}
	fill = append(fill, 0x80, 0x80, 0x80, 0x10) // 32 MiB, signed LEB
	fill = append(fill, 0xfc, 11, 0, 0x0c, 0, 0x0b, 0x00)
	rt := runtimeFor(t, sandbox.Options{MemoryPages: 1024})
	m := compileGuest(t, rt, testwasm.Guest{MemMin: n >> 16, Bodies: map[string][]byte{abi.ProcessExport: fill}})
	processMeetsTheDeadline(t, m)
}

// A length the bytes cannot back is refused (or dropped, in the name
// section) before the compiler sees it: the compiler allocates a data
// segment's or a name's declared size before reading it, so a 40-byte
// upload could make it allocate 4 GiB.
func TestCompile_LyingLengthsAllocateNothing(t *testing.T) {
	rt := runtimeFor(t, sandbox.Options{})
	huge := []byte{0xf0, 0xff, 0xff, 0xff, 0x0f}
	header := []byte("\x00asm\x01\x00\x00\x00")
	data := append(append([]byte{}, header...), 0x05, 0x03, 0x01, 0x00, 0x01, 0x0b, 12, 0x01, 0x00, 0x41, 0x00, 0x0b)
	data = append(append(data, huge...), 'h', 'i')
	name := append(append([]byte{}, header...), 0x00, 12, 0x04, 'n', 'a', 'm', 'e', 0x00, 0x05)
	name = append(name, huge...)
	for what, wasm := range map[string][]byte{"a data segment": data, "a module name": name} {
		t.Run(what, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := rt.Compile(context.Background(), wasm)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, sandbox.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Fatalf("refusing %d bytes allocated %d MiB", len(wasm), grew>>20)
			}
		})
	}
}

// processMeetsTheDeadline fails unless a batch in a fresh instance of m is
// stopped at its deadline.
func processMeetsTheDeadline(t *testing.T, m *sandbox.Module) {
	t.Helper()
	inst, err := m.Instantiate(context.Background(), abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(context.Background())
	b := guestBatch(t, m)
	err, _ = within(t, func() error { return inst.Process(context.Background(), b) })
	wantDeadline(t, err, abi.ProcessExport)
}

// The fuel counts guest code, not the work of the WASI functions it calls,
// and one such call can work in proportion to its arguments: a loop around
// one runs few instructions per iteration and would reach the next refuel
// hours later. The deadline is checked after every WASI call.
func TestMeter_LoopsAroundWASICallsMeetTheDeadline(t *testing.T) {
	i32 := func(v int32) []byte { return testwasm.I32(v) }
	for _, c := range []struct {
		name         string
		params, args []byte
	}{
		// random_get(buf 0, len 3 MiB): fills 3 MiB per call
		{"random_get", []byte{0x7f, 0x7f}, slices.Concat(i32(0), i32(3<<20))},
		// poll_oneoff(in 0, out 2 MiB, 40,000 subscriptions, nevents 3.5 MiB)
		{"poll_oneoff", []byte{0x7f, 0x7f, 0x7f, 0x7f}, slices.Concat(i32(0), i32(2<<20), i32(40000), i32(7<<19))},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := runtimeFor(t, sandbox.Options{})
			// (loop (drop (call $f args...)) (br 0)) unreachable
			body := slices.Concat([]byte{0x03, 0x40}, c.args, []byte{0x10, 0x00, 0x1a, 0x0c, 0x00, 0x0b, 0x00})
			m := compileGuest(t, rt, testwasm.Guest{
				MemMin:  64,
				Imports: []testwasm.Import{{Module: "wasi_snapshot_preview1", Name: c.name, Params: c.params, Results: []byte{0x7f}}},
				Bodies:  map[string][]byte{abi.ProcessExport: body},
			})
			processMeetsTheDeadline(t, m)
		})
	}
}
