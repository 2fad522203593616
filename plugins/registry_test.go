package plugins_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/plugins"
)

func registry(t *testing.T) (*plugins.Registry, *sandbox.Runtime) {
	t.Helper()
	ctx := context.Background()
	rt, err := sandbox.New(ctx, &sandbox.Options{CallTimeout: 300 * time.Millisecond, MemoryPages: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	r, err := plugins.Open(t.TempDir(), rt, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r, rt
}

func TestRegistry_RefusedUploadsAreNamedAndLeaveNothing(t *testing.T) {
	ctx := context.Background()
	r, rt := registry(t)
	cases := []struct {
		name string
		wasm []byte
		is   error
		msg  string
	}{
		{"compile bomb", testwasm.Guest{ExtraFns: [][]byte{bytes.Repeat([]byte{0x01}, 1<<20)}}.Bytes(), plugins.ErrTooLarge, "max_function_size"},
		{"too many blocks", testwasm.Guest{ExtraFns: [][]byte{bytes.Repeat([]byte{0x02, 0x40, 0x0b}, 20_000)}}.Bytes(), plugins.ErrTooLarge, "max_blocks"},
		{"looping start function", testwasm.Guest{Bodies: map[string][]byte{abi.InitializeExport: testwasm.Loop()}}.Bytes(), plugins.ErrInvalid, "deadline"},
		{"looping dry run", testwasm.Guest{Bodies: map[string][]byte{abi.ProcessExport: testwasm.Loop()}}.Bytes(), plugins.ErrInvalid, "dry run"},
		{"trapping dry run", testwasm.Guest{Bodies: map[string][]byte{abi.FlushExport: testwasm.Trap()}}.Bytes(), plugins.ErrInvalid, "unreachable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.Push(ctx, "bad", "1", c.wasm)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.is, c.msg)
			}
		})
	}
	if l, err := r.List(); err != nil || len(l) != 0 {
		t.Fatalf("refused uploads left %v (%v)", l, err)
	}
	if n := rt.Reserved(); n != 0 {
		t.Fatalf("refused uploads hold %d bytes of the memory budget", n)
	}
}

// While an upload's start function loops, lookups of compiled modules and
// other uploads go on: compiling and dry runs hold no registry-wide lock.
func TestRegistry_ALoopingUploadBlocksNoOne(t *testing.T) {
	ctx := context.Background()
	r, _ := registry(t)
	good, err := r.Push(ctx, "good", "1", testwasm.Guest{}.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	bad := make(chan error, 1)
	go func() {
		_, err := r.Push(ctx, "bad", "1", testwasm.Guest{Bodies: map[string][]byte{abi.InitializeExport: testwasm.Loop()}}.Bytes())
		bad <- err
	}()
	start := time.Now()
	if _, err := r.Module(ctx, good); err != nil {
		t.Fatal(err)
	}
	other := testwasm.Guest{Bodies: map[string][]byte{abi.InitExport: testwasm.I32(0)}, Schema: strings.Replace(testwasm.DefaultSchema, "votes", "n", 1)}
	if _, err := r.Push(ctx, "other", "1", other.Bytes()); err != nil {
		t.Fatal(err)
	}
	var badErr error
	select {
	case badErr = <-bad:
		// On a loaded box the looper may use up its CPU time first.
		t.Logf("the looping upload ended first (%v) after %v", badErr, time.Since(start))
	default:
		deadline := time.NewTimer(10 * time.Second)
		defer deadline.Stop()
		select {
		case badErr = <-bad:
		case <-deadline.C:
			t.Fatal("the looping upload never ended")
		}
	}
	if !errors.Is(badErr, plugins.ErrInvalid) {
		t.Fatalf("looping upload: %v", badErr)
	}
}
