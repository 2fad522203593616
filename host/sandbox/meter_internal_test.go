package sandbox

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/internal/testwasm"
)

// FuzzInstrument: the rewrite never panics, refuses only with ErrInvalid,
// and every module it accepts that the compiler accepts as it was, the
// compiler accepts after it, with one more import and the same exports.
func FuzzInstrument(f *testing.F) {
	f.Add(testwasm.Guest{}.Bytes())
	f.Add(testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.Loop()}}.Bytes())
	f.Add(testwasm.Guest{Imports: []testwasm.Import{{Module: "wasi_snapshot_preview1", Name: "sched_yield"}},
		ExtraFns: [][]byte{{0x02, 0x40, 0x03, 0x40, 0x0c, 0x01, 0x0b, 0x0b}}}.Bytes())
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x0a\x04\x01\x02\x00\x0b"))
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	f.Fuzz(func(t *testing.T, wasm []byte) {
		if _, err := ScanCode(wasm, CodeLimits{}); err != nil {
			return // Compile refuses it before anything else sees it
		}
		out, _, err := instrument(wasm, true, 1<<18)
		if err != nil {
			// Refusals are checked by the tests of each limit. The original
			// is not compiled here: a refused module may carry a length the
			// compiler would allocate before reading (4 GiB from 5 bytes).
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal without ErrInvalid: %v", err)
			}
			return
		}
		before, verr := rt.CompileModule(ctx, wasm)
		if verr != nil {
			return
		}
		defer before.Close(ctx)
		after, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("the rewrite of a valid module does not compile: %v", err)
		}
		defer after.Close(ctx)
		if len(after.ImportedFunctions()) != len(before.ImportedFunctions())+1 {
			t.Fatalf("imports: %d before, %d after", len(before.ImportedFunctions()), len(after.ImportedFunctions()))
		}
		for name, fb := range before.ExportedFunctions() {
			fa, ok := after.ExportedFunctions()[name]
			if !ok || len(fa.ParamTypes()) != len(fb.ParamTypes()) || len(fa.ResultTypes()) != len(fb.ResultTypes()) {
				t.Fatalf("export %s changed", name)
			}
		}
	})
}

// A metered call is charged the CPU time of its thread, not the time it
// spends waiting: a thread that waits uses next to none of it.
func TestThreadTime_ChargesCPUNotWaiting(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0, wall0 := threadTime(), time.Now()
	<-time.After(50 * time.Millisecond)
	cpu, wall := threadTime()-cpu0, time.Since(wall0)
	if cpu < 0 || cpu > wall/2 {
		t.Fatalf("a waiting thread was charged %v of CPU time over %v", cpu, wall)
	}
	cpu0 = threadTime()
	for x := 0; threadTime()-cpu0 < 5*time.Millisecond; x++ {
	}
	if threadTime() == cpu0 {
		t.Fatal("a busy thread's CPU clock did not move")
	}
}
