package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"runtime"
	"strings"
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

// The meter sits where the rewrite says: at the entry unless every path
// from the entry reaches the first loop header before it branches or
// calls (then that header charges the whole body), and before a bulk
// instruction whose constant length would take the function past
// maxPrepaid.
func TestMeter_ChecksWhereTheBodyNeedsThem(t *testing.T) {
	loop := []byte{0x03, 0x40, 0x0b} // loop end
	fill := func(n int32) []byte {   // memory.fill(0, 0, n)
		b := append([]byte{0x41, 0, 0x41, 0, 0x41}, appendSLEB(nil, n)...)
		return append(b, 0xfc, 11, 0)
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		body       []byte
		entry      bool // a check before the first instruction
		runTimeLen int  // bulk instructions charged when they run
	}{
		{"a loop first", loop, false, 0},
		{"a loop after blocks and plain code", cat([]byte{0x02, 0x40, 0x41, 1, 0x1a, 0x0b}, loop), false, 0},
		{"no loop", []byte{0x41, 1, 0x1a}, true, 0},
		{"a branch before the loop", cat([]byte{0x02, 0x40, 0x41, 1, 0x0d, 0, 0x0b}, loop), true, 0},
		{"a return before the loop", cat([]byte{0x41, 1, 0x04, 0x40, 0x0f, 0x0b}, loop), true, 0},
		{"a call before the loop", cat([]byte{0x10, byte(testwasm.ExtraIndex(0, 0))}, loop), true, 0},
		{"small constant fills", cat(fill(4096), fill(4096)), true, 0},
		{"constant fills past the bound", cat(fill(maxPrepaid-10), fill(4096), fill(8)), true, 1},
		{"a negative constant", fill(-1), true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := testwasm.Guest{ExtraFns: [][]byte{nil, tc.body}}
			out, _, err := instrument(g.Bytes(), true, 1<<18)
			if err != nil {
				t.Fatal(err)
			}
			code := definedBody(t, out, int(testwasm.ExtraIndex(1, 0)))
			if got := code[0] == opGlobalGet; got != tc.entry {
				t.Fatalf("a check at the entry: %v, want %v (code % x)", got, tc.entry, code)
			}
			if at := bytes.Index(code, []byte{opLoop, blockTypeNil}); !tc.entry && (at < 0 || code[at+2] != opGlobalGet) {
				t.Fatalf("no check at the entry and none after the first loop header (code % x)", code)
			}
			if got := bytes.Count(code, []byte{fuelShift, 0x76}); got != tc.runTimeLen { // i32.const 6; i32.shr_u
				t.Fatalf("%d bulk lengths charged when they run, want %d", got, tc.runTimeLen)
			}
		})
	}
}

// definedBody returns the code (after the local declarations) of defined
// function i of wasm.
func definedBody(t *testing.T, wasm []byte, i int) []byte {
	t.Helper()
	r := reader{b: wasm, off: 8}
	for r.off < len(r.b) {
		id := r.b[r.off]
		r.off++
		size, _ := r.u32()
		body := wasm[r.off : r.off+int(size)]
		r.off += int(size)
		if id != secCode {
			continue
		}
		br, n, _ := vector(body, "code")
		for k := uint32(0); k < n; k++ {
			sz, _ := br.u32()
			fn := br.b[br.off : br.off+int(sz)]
			br.off += int(sz)
			if int(k) == i {
				_, _, _, code, ok := splitLocals(fn)
				if !ok {
					t.Fatal("local declarations")
				}
				return code
			}
		}
	}
	t.Fatalf("no function %d", i)
	return nil
}

// Passive element segments are kept per instance on the Go heap, a
// reference per element: together they may hold what the tables may.
func TestInstrument_RefusesElementSegmentsPastWhatTheTablesHold(t *testing.T) {
	module := func(items int) []byte {
		seg := append([]byte{0x01, 0x01, 0x00}, binary.AppendUvarint(nil, uint64(items))...) // one passive funcref segment
		seg = append(seg, make([]byte, items)...)                                            // function 0, items times
		wasm := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00")
		wasm = append(append(append(wasm, 0x09), binary.AppendUvarint(nil, uint64(len(seg)))...), seg...)
		return append(wasm, "\x0a\x04\x01\x02\x00\x0b"...)
	}
	const maxTable = 4 // so 32 elements in all
	if _, _, err := instrument(module(32), true, maxTable); err != nil {
		t.Fatalf("32 elements: %v", err)
	}
	if _, _, err := instrument(module(33), true, maxTable); !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("33 elements: got %v, want ErrTooLarge", err)
	}
}

// A guest's output is logged with the deployment and partition its
// instance serves, outside what the guest writes: a line saying
// deployment=other cannot pass for another deployment's.
func TestGuestLog_NamesTheDeploymentAndPartition(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	rt, err := New(ctx, &Options{Log: slog.New(slog.NewTextHandler(&out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	m, err := rt.Compile(ctx, testwasm.BuildC(t, "examples/votes/c/votes.c"))
	if err != nil {
		t.Fatal(err)
	}
	inst, err := m.instantiate(WithLogAttrs(ctx, "deployment", "votes", "partition", int32(3)))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	inst.out.begin()
	inst.out.Write([]byte("deployment=other partition=9\n"))
	if err := inst.out.end(abi.ProcessExport); err != nil {
		t.Fatal(err)
	}
	if line := out.String(); !strings.Contains(line, `msg=plugin deployment=votes partition=3 out="deployment=other partition=9"`) {
		t.Fatalf("log: %q", line)
	}
}
