package sandbox_test

import (
	"errors"
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
