package sandbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

var total = []abi.Window{{Name: "total", Kind: abi.Global}}

func compile(t *testing.T, pkg string) (*sandbox.Module, func()) {
	t.Helper()
	ctx := context.Background()
	rt, err := sandbox.New(ctx, &sandbox.Options{MemoryPages: 512})
	if err != nil {
		t.Fatal(err)
	}
	m, err := rt.Compile(ctx, testwasm.Build(t, pkg))
	if err != nil {
		rt.Close(ctx)
		t.Fatal(err)
	}
	return m, func() { rt.Close(ctx) }
}

func batch(t *testing.T, m *sandbox.Module, polls ...int64) []byte {
	t.Helper()
	b := &abi.Batch{Columns: []abi.BatchColumn{{Ints: polls}}}
	for range polls {
		b.Times = append(b.Times, 1_700_000_000_000)
	}
	buf, err := abi.NewBatchEncoder(&m.Schema).Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func TestInstance_GuestPanicFailsTheCallWithItsMessage(t *testing.T) {
	ctx := context.Background()
	m, done := compile(t, "internal/testwasm/panics")
	defer done()
	inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	if err := inst.Process(ctx, batch(t, m, 1, 2, 2)); err != nil {
		t.Fatalf("good batch: %v", err)
	}
	err = inst.Process(ctx, batch(t, m, 3, 13))
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) || ge.Export != abi.ProcessExport || ge.Code != abi.ErrAggregate || !strings.Contains(ge.Message, "cursed") {
		t.Fatalf("poisoned batch: %v, want ErrAggregate from %s with the panic's message", err, abi.ProcessExport)
	}
	// A new instance is unaffected: instances share nothing.
	fresh, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close(ctx)
	if err := fresh.Process(ctx, batch(t, m, 1)); err != nil {
		t.Fatalf("fresh instance: %v", err)
	}
	rows, err := fresh.Flush(ctx, 0, nil)
	if err != nil || len(rows) != 1 || rows[0].Metrics[0] != 1 {
		t.Fatalf("fresh instance rows %v, %v", rows, err)
	}
}

func TestInstance_GuestErrorsCarryTheGuestsMessage(t *testing.T) {
	ctx := context.Background()
	m, done := compile(t, "internal/testwasm/panics")
	defer done()
	inst, err := m.Instantiate(ctx, abi.Config{Windows: total})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(ctx)
	err = inst.Process(ctx, []byte("not a batch at all, just bytes of the wrong shape"))
	var ge *sandbox.GuestError
	if !errors.As(err, &ge) || ge.Code == abi.OK || !strings.Contains(ge.Message, "batch") {
		t.Fatalf("garbage batch: %v, want a status code and the guest's message", err)
	}
	if err := inst.Restore(ctx, []byte("garbage")); err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("garbage snapshot: %v", err)
	}
	if _, err := m.Instantiate(ctx, abi.Config{}); err == nil || !strings.Contains(err.Error(), "windows") {
		t.Fatalf("config without windows: %v", err)
	}
}

func TestCompile_RefusesModulesOutsideTheABI(t *testing.T) {
	ctx := context.Background()
	rt, err := sandbox.New(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	cases := []struct {
		name string
		wasm []byte
		msg  string
	}{
		{"not wasm", []byte("hello"), "not a WebAssembly module"},
		{"a program, not a plugin", testwasm.Build(t, "internal/testwasm/notaplugin"), abi.VersionExport},
		// (module (import "env" "evil" (func)))
		{"forbidden import", []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x02\x0c\x01\x03env\x04evil\x00\x00"), "env.evil"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := rt.Compile(ctx, c.wasm)
			if !errors.Is(err, sandbox.ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want ErrInvalid mentioning %q", err, c.msg)
			}
		})
	}
}
