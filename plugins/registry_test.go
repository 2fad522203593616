package plugins_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
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
	if n := rt.Modules(); n != 0 {
		t.Fatalf("refused uploads hold %d compiled modules", n)
	}
}

// Every upload is compiled to be checked, but only the modules a deployment
// uses and the few most recent keep their compiled code: a stream of
// uploads does not pile up machine code in the host.
func TestRegistry_UploadsDoNotPileUpCompiledCode(t *testing.T) {
	ctx := context.Background()
	r, rt := registry(t)
	plugin := func(i int) []byte {
		return testwasm.Guest{Schema: strings.Replace(testwasm.DefaultSchema, `"votes"`, fmt.Sprintf(`"votes_%d"`, i), 1)}.Bytes()
	}
	deployed, err := r.Push(ctx, "deployed", "1", plugin(0))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := r.Module(ctx, deployed)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := mod.Instantiate(ctx, abi.Config{Windows: []abi.Window{{Name: "total", Kind: abi.Global}}})
	if err != nil {
		t.Fatal(err)
	}
	// While something holds each upload's module (as deployments would),
	// all keep their code.
	const uploads = 24
	held := []*sandbox.Module{}
	for i := 1; i <= uploads; i++ {
		man, err := r.Push(ctx, "upload", fmt.Sprint(i), plugin(i))
		if err != nil {
			t.Fatal(err)
		}
		m, err := r.Module(ctx, man)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, m)
	}
	runtime.GC()
	if n := rt.Modules(); n != uploads+1 {
		t.Fatalf("%d compiled modules held, want %d", n, uploads+1)
	}
	runtime.KeepAlive(held)
	deadline := time.Now().Add(30 * time.Second)
	for rt.Modules() > plugins.Recent+1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d compiled modules after %d uploads, want at most %d (the deployed one and the recent)", rt.Modules(), uploads+1, plugins.Recent+1)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	// The deployed module's code stayed: its instance works, and so does a
	// new one (a partition restarting).
	if _, err := inst.Flush(ctx, 0, nil); err != nil {
		t.Fatalf("the deployed module's instance: %v", err)
	}
	inst.Close(ctx)
	again, err := mod.Instantiate(ctx, abi.Config{Windows: []abi.Window{{Name: "total", Kind: abi.Global}}})
	if err != nil {
		t.Fatalf("a new instance of the deployed module: %v", err)
	}
	again.Close(ctx)
	// An upload whose code went is compiled again when it is deployed.
	first, err := r.Get("upload", "1")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := r.Module(ctx, first); err != nil || m.Schema.Metrics[0].Name != "votes_1" {
		t.Fatalf("the first upload, deployed after its code went: %v", err)
	}
	runtime.KeepAlive(mod)
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
