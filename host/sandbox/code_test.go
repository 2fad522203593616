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
	limits := sandbox.CodeLimits{MaxFunctions: 50, MaxFunctionSize: 4096, MaxCodeSize: 1 << 16, MaxLocals: 100, MaxBlocks: 50, MaxBlockWork: 1000}
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
			st.MaxBlocks > limits.MaxBlocks || st.BlockWork > limits.MaxBlockWork {
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
