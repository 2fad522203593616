package sandbox_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

func TestScanCode_AcceptsTheGoPlugin(t *testing.T) {
	st, err := sandbox.ScanCode(testwasm.Build(t, "examples/votes"), sandbox.CodeLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Functions < 100 || st.CodeSize == 0 || st.MaxBlocks == 0 {
		t.Fatalf("implausible stats of a Go plugin: %+v", st)
	}
}

// A section whose element count is larger than its bytes could hold is
// refused before the compiler allocates for the count.
func TestScanCode_RefusesCountsLargerThanTheirSection(t *testing.T) {
	// An export section of 5 bytes claiming 2^27 exports.
	wasm := []byte("\x00asm\x01\x00\x00\x00\x07\x05\x80\x80\x80\x40\x00")
	if _, err := sandbox.ScanCode(wasm, sandbox.CodeLimits{}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
}

// FuzzScanCode feeds the scanner arbitrary bytes: it must never panic, must
// return ErrInvalid for anything it refuses, and its stats must stay within
// the limits it was given.
func FuzzScanCode(f *testing.F) {
	f.Add(testwasm.Guest{}.Bytes())
	f.Add(testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.Loop()}}.Bytes())
	f.Add(testwasm.Guest{ExtraFns: [][]byte{{0x02, 0x40, 0x0e, 0x02, 0x00, 0x00, 0x00, 0x0b}}}.Bytes())
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x0a\x05\x01\x03\x00\x01\x0b"))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x0a\xff\xff\xff\xff\x0f"))
	limits := sandbox.CodeLimits{MaxFunctions: 50, MaxFunctionSize: 4096, MaxCodeSize: 1 << 16, MaxLocals: 100, MaxTotalLocals: 1000, MaxBlocks: 50, MaxBlockWork: 1000, MaxTypeWork: 100, MaxLoopWork: 10_000}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		st, err := sandbox.ScanCode(wasm, limits)
		if err != nil {
			if !errors.Is(err, sandbox.ErrInvalid) {
				t.Fatalf("refusal without ErrInvalid: %v", err)
			}
			return
		}
		if st.Functions > limits.MaxFunctions || st.MaxFunctionSize > limits.MaxFunctionSize ||
			st.CodeSize > limits.MaxCodeSize || st.MaxLocals > limits.MaxLocals ||
			st.MaxBlocks > limits.MaxBlocks || st.BlockWork > limits.MaxBlockWork || st.Locals > limits.MaxTotalLocals || st.TypeWork > limits.MaxTypeWork || st.LoopWork > limits.MaxLoopWork {
			t.Fatalf("accepted stats over the limits: %+v", st)
		}
	})
}

// Entries the compiler and every instance keep a structure for are bounded
// per section: a 25 MB upload of 5 million globals took 370 MB of the Go
// heap per instance, outside the memory budget.
func TestScanCode_RefusesSectionsOfTooManyEntries(t *testing.T) {
	module := func(id byte, count int, entry []byte) []byte {
		body := binary.AppendUvarint(nil, uint64(count))
		for range count {
			body = append(body, entry...)
		}
		return append(append([]byte("\x00asm\x01\x00\x00\x00"), id), append(binary.AppendUvarint(nil, uint64(len(body))), body...)...)
	}
	global := []byte{0x7f, 0x00, 0x41, 0x00, 0x0b} // i32, immutable, i32.const 0
	if _, err := sandbox.ScanCode(module(6, 100_000, global), sandbox.CodeLimits{}); err != nil {
		t.Fatalf("100,000 globals: %v", err)
	}
	_, err := sandbox.ScanCode(module(6, 100_001, global), sandbox.CodeLimits{})
	if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "global section") || !strings.Contains(err.Error(), "max_entries") {
		t.Fatalf("100,001 globals: got %v, want ErrTooLarge naming max_entries", err)
	}
	segment := []byte{0x00, 0x41, 0x00, 0x0b, 0x01, 0x2a} // active at 0, one byte
	limits := sandbox.CodeLimits{MaxDataSegments: 10}
	if _, err := sandbox.ScanCode(module(11, 10, segment), limits); err != nil {
		t.Fatalf("10 data segments: %v", err)
	}
	if _, err := sandbox.ScanCode(module(11, 11, segment), limits); !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_data_segments") {
		t.Fatalf("11 data segments past a limit of 10: got %v", err)
	}
}

// Three things cost the compiler far more than their bytes: locals,
// declared as counts (10,000 functions of 50,000 locals each fit in 80 KB
// and took 3.9 GB, kept as long as the module), locals seen by loops (one
// function of 1,000 nested loops and 50,000 locals compiled for more than
// 9 minutes), and long function types (the compiler's time grows with the
// square of a type's length: 200,000 parameters in a 200 KB upload took
// 28 s). Each held one of the host's two compile slots all along.
func TestScanCode_RefusesLocalsAndTypesThatCostTheCompilerMore(t *testing.T) {
	section := func(id byte, body []byte) []byte {
		return append(append([]byte{id}, binary.AppendUvarint(nil, uint64(len(body)))...), body...)
	}
	code := func(functions, locals int) []byte {
		fn := binary.AppendUvarint([]byte{0x01}, uint64(locals)) // one group of locals
		fn = append(fn, 0x7f, 0x0b)                              // i32; end
		body := binary.AppendUvarint(nil, uint64(functions))
		for range functions {
			body = append(append(body, binary.AppendUvarint(nil, uint64(len(fn)))...), fn...)
		}
		return append([]byte("\x00asm\x01\x00\x00\x00"), section(10, body)...)
	}
	if _, err := sandbox.ScanCode(code(40, 50_000), sandbox.CodeLimits{}); err != nil {
		t.Fatalf("40 functions of 50,000 locals: %v", err)
	}
	_, err := sandbox.ScanCode(code(41, 50_000), sandbox.CodeLimits{})
	if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_total_locals") {
		t.Fatalf("41 functions of 50,000 locals: got %v, want ErrTooLarge naming max_total_locals", err)
	}
	// One function of nested loops reading its locals.
	loops := func(depth, locals int) []byte {
		fn := binary.AppendUvarint([]byte{0x01}, uint64(locals))
		fn = append(fn, 0x7e) // i64
		for range depth {
			fn = append(fn, 0x03, 0x40) // loop
		}
		for i := range locals {
			fn = append(binary.AppendUvarint(append(fn, 0x20), uint64(i)), 0x1a) // local.get i; drop
		}
		for range depth {
			fn = append(fn, 0x0b)
		}
		fn = append(fn, 0x0b)
		body := append([]byte{0x01}, binary.AppendUvarint(nil, uint64(len(fn)))...)
		return append([]byte("\x00asm\x01\x00\x00\x00"), section(10, append(body, fn...))...)
	}
	if st, err := sandbox.ScanCode(loops(1000, 700), sandbox.CodeLimits{}); err != nil || st.LoopWork != 1000*700*700 {
		t.Fatalf("1,000 loops and 700 locals: %+v %v", st, err)
	}
	for _, c := range [][2]int{{1000, 710}, {1, 50_000}} {
		_, err = sandbox.ScanCode(loops(c[0], c[1]), sandbox.CodeLimits{})
		if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_loop_work") {
			t.Fatalf("%d loops and %d locals: got %v, want ErrTooLarge naming max_loop_work", c[0], c[1], err)
		}
	}
	types := func(params ...int) []byte {
		body := binary.AppendUvarint(nil, uint64(len(params)))
		for _, n := range params {
			body = binary.AppendUvarint(append(body, 0x60), uint64(n))
			body = append(append(body, make([]byte, n)...), 0x01, 0x7f) // n parameters, one i32 result
			for i := len(body) - n - 2; i < len(body)-2; i++ {
				body[i] = 0x7e // i64
			}
		}
		return append([]byte("\x00asm\x01\x00\x00\x00"), section(1, body)...)
	}
	st, err := sandbox.ScanCode(types(998, 3, 0), sandbox.CodeLimits{})
	if err != nil || st.TypeWork != 999*999+4*4+1 {
		t.Fatalf("a type of 998 parameters: %+v %v", st, err)
	}
	for _, params := range [][]int{{1000}, {500, 500, 500, 500, 500}} {
		_, err := sandbox.ScanCode(types(params...), sandbox.CodeLimits{})
		if !errors.Is(err, sandbox.ErrTooLarge) || !strings.Contains(err.Error(), "max_type_work") {
			t.Fatalf("types of %v parameters: got %v, want ErrTooLarge naming max_type_work", params, err)
		}
	}
}
