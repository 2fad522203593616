package plugins_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
	return registryCaching(t, "")
}

// registryCaching is a registry whose runtime keeps compiled code in cache
// ("": in memory).
func registryCaching(t *testing.T, cache string) (*plugins.Registry, *sandbox.Runtime) {
	t.Helper()
	ctx := context.Background()
	rt, err := sandbox.New(ctx, &sandbox.Options{CallTimeout: 300 * time.Millisecond, MemoryPages: 64, CacheDir: cache, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
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

// A refused upload leaves nothing in the host's runtime: neither the
// function types it declared (wazero's runtime keeps a table of every type
// it compiled, for good: 200 such uploads took a host's heap from 7 to 277
// MiB) nor compiled code in the runtime's cache directory.
func TestRegistry_RefusedUploadsLeaveNoTypesNorCompiledCode(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()
	r, _ := registryCaching(t, cache)
	// A module of nothing but 6,000 function types of 12 parameters, each
	// upload's its own: refused (it exports nothing) once compiled.
	types := func(seed int) []byte {
		const n = 6_000
		body := testwasm.ULEB(n)
		for i := range n {
			body = append(body, 0x60, 12)
			for k, v := 0, seed*n+i; k < 12; k, v = k+1, v/4 {
				body = append(body, 0x7c+byte(v%4)) // f64, f32, i64, i32
			}
			body = append(body, 0)
		}
		out := []byte("\x00asm\x01\x00\x00\x00\x01")
		out = append(out, testwasm.ULEB(uint64(len(body)))...)
		return append(out, body...)
	}
	before := testwasm.LiveHeap()
	for i := range 40 {
		if _, err := r.Push(ctx, "types", "1", types(i)); !errors.Is(err, plugins.ErrInvalid) {
			t.Fatalf("upload %d: %v, want it refused", i, err)
		}
	}
	grew := int64(testwasm.LiveHeap() - before)
	t.Logf("40 refused uploads: the heap grew by %d KiB", grew>>10)
	if grew > 8<<20 {
		t.Fatalf("40 refused uploads left %d MiB on the heap", grew>>20)
	}
	// Code that compiles and fails its dry run writes nothing to the cache.
	trap := testwasm.Guest{Bodies: map[string][]byte{abi.FlushExport: testwasm.Trap()}}.Bytes()
	if _, err := r.Push(ctx, "trap", "1", trap); !errors.Is(err, plugins.ErrInvalid) {
		t.Fatalf("a trapping dry run: %v", err)
	}
	var files []string
	filepath.WalkDir(cache, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) > 0 {
		t.Fatalf("refused uploads left compiled code on disk: %v", files)
	}
	// An accepted one is compiled into the cache, as before.
	if _, err := r.Push(ctx, "good", "1", testwasm.Guest{}.Bytes()); err != nil {
		t.Fatal(err)
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
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for rt.Modules() > plugins.Recent+1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d compiled modules after %d uploads, want at most %d (the deployed one and the recent)", rt.Modules(), uploads+1, plugins.Recent+1)
		}
		runtime.GC()
		<-tick.C
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

// good returns a valid plugin whose bytes differ by tag.
func good(tag string) []byte {
	return testwasm.Guest{Data: []testwasm.Segment{{Offset: 4096, Bytes: []byte(tag)}}}.Bytes()
}

func TestRegistry_NamesVersionsAndSizesAreCheckedBeforeCompiling(t *testing.T) {
	ctx := context.Background()
	_, rt := registry(t)
	r, err := plugins.Open(t.TempDir(), rt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, plugin, version string
		wasm                  []byte
		is                    error
		msg                   string
	}{
		{"empty name", "", "1", good("a"), plugins.ErrInvalid, "name"},
		{"upper-case name", "Votes", "1", good("a"), plugins.ErrInvalid, "name"},
		{"name starting with a digit", "1votes", "1", good("a"), plugins.ErrInvalid, "name"},
		{"name with a dash", "vo-tes", "1", good("a"), plugins.ErrInvalid, "name"},
		{"name leaving the directory", "../etc", "1", good("a"), plugins.ErrInvalid, "name"},
		{"name of 49 bytes", strings.Repeat("a", 49), "1", good("a"), plugins.ErrInvalid, "name"},
		{"empty version", "votes", "", good("a"), plugins.ErrInvalid, "version"},
		{"version starting with a dot", "votes", ".1", good("a"), plugins.ErrInvalid, "version"},
		{"version with a slash", "votes", "1/2", good("a"), plugins.ErrInvalid, "version"},
		{"version leaving the directory", "votes", "../../x", good("a"), plugins.ErrInvalid, "version"},
		{"version of 65 bytes", "votes", strings.Repeat("1", 65), good("a"), plugins.ErrInvalid, "version"},
		{"larger than the limit", "votes", "1", append(good("a"), make([]byte, 4096)...), plugins.ErrTooLarge, "limit is 4096"},
		{"not WebAssembly", "votes", "1", []byte("#!/bin/sh\nrm -rf /\n"), plugins.ErrInvalid, `\0asm`},
		{"shorter than a header", "votes", "1", []byte("\x00asm"), plugins.ErrInvalid, `\0asm`},
		{"a header and garbage", "votes", "1", []byte("\x00asm\x01\x00\x00\x00\xff\xff\xff"), plugins.ErrInvalid, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.Push(ctx, c.plugin, c.version, c.wasm)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.is, c.msg)
			}
		})
	}
	if l, err := r.List(); err != nil || len(l) != 0 {
		t.Fatalf("refused uploads left %v (%v)", l, err)
	}
}

func TestRegistry_ANameAtAVersionHoldsOneModuleForEver(t *testing.T) {
	ctx := context.Background()
	r, _ := registry(t)
	a, b := good("a"), good("b")
	first, err := r.Push(ctx, "votes", "1", a)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(a)
	if first.SHA256 != hex.EncodeToString(sum[:]) || first.Size != len(a) || first.ABI != abi.Version || first.Ref() != "votes@1" {
		t.Fatalf("manifest %+v does not describe the upload", first)
	}
	if len(first.Schema.Metrics) != 1 || first.Schema.Metrics[0].Name != "votes" {
		t.Fatalf("manifest schema %+v is not the plugin's", first.Schema)
	}

	// The same bytes again: the stored manifest, unchanged.
	again, err := r.Push(ctx, "votes", "1", a)
	if err != nil || again.SHA256 != first.SHA256 || !again.UploadedAt.Equal(first.UploadedAt) {
		t.Fatalf("pushing the same bytes again: %+v %v, want the stored manifest %+v", again, err, first)
	}
	// Other bytes under the same version: refused, naming what is stored.
	if _, err := r.Push(ctx, "votes", "1", b); !errors.Is(err, plugins.ErrConflict) || !strings.Contains(err.Error(), first.SHA256) {
		t.Fatalf("other bytes under votes@1: %v, want ErrConflict naming sha256 %s", err, first.SHA256)
	}
	if got, err := r.Get("votes", "1"); err != nil || got.SHA256 != first.SHA256 {
		t.Fatalf("votes@1 after a refused overwrite: %+v %v", got, err)
	}
	// A new version takes them.
	second, err := r.Push(ctx, "votes", "2", b)
	if err != nil || second.SHA256 == first.SHA256 {
		t.Fatalf("votes@2: %+v %v", second, err)
	}
	if _, err := r.Get("votes", "3"); !errors.Is(err, plugins.ErrNotFound) {
		t.Fatalf("a version never pushed: %v, want ErrNotFound", err)
	}
}

func TestRegistry_CheckValidatesWithoutStoring(t *testing.T) {
	ctx := context.Background()
	r, _ := registry(t)
	m, err := r.Check(ctx, "votes", "1", good("a"))
	if err != nil || m.Ref() != "votes@1" {
		t.Fatalf("Check: %+v %v", m, err)
	}
	if _, err := r.Get("votes", "1"); !errors.Is(err, plugins.ErrNotFound) {
		t.Fatalf("Check stored the plugin: %v", err)
	}
	if _, err := r.Push(ctx, "votes", "1", good("b")); err != nil {
		t.Fatalf("a checked version is still free to push: %v", err)
	}
	if _, err := r.Check(ctx, "votes", "1", good("a")); !errors.Is(err, plugins.ErrConflict) {
		t.Fatalf("Check of other bytes under a pushed version: %v, want ErrConflict", err)
	}
}

func TestRegistry_ListsByNameThenVersionAcrossReopening(t *testing.T) {
	ctx := context.Background()
	_, rt := registry(t)
	dir := t.TempDir()
	r, err := plugins.Open(dir, rt, 0)
	if err != nil {
		t.Fatal(err)
	}
	// "votes2" sorts after "votes" by name even though '2' < '@'.
	for _, p := range []struct{ name, version, tag string }{{"votes2", "1", "c"}, {"votes", "2", "b"}, {"votes", "1", "a"}, {"active", "1", "a"}} {
		if _, err := r.Push(ctx, p.name, p.version, good(p.tag)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"active@1", "votes@1", "votes@2", "votes2@1"}
	reopened, err := plugins.Open(dir, rt, 0)
	if err != nil {
		t.Fatal(err)
	}
	for name, reg := range map[string]*plugins.Registry{"registry": r, "reopened": reopened} {
		l, err := reg.List()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range l {
			got = append(got, m.Ref())
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s lists %v, want %v", name, got, want)
		}
	}
	// The module is found again by its manifest, from the stored blob;
	// the same bytes under two plugins are stored once.
	m, err := reopened.Get("active", "1")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := reopened.Module(ctx, m)
	if err != nil || len(mod.Schema.Metrics) != 1 {
		t.Fatalf("module of %s after reopening: %v", m.Ref(), err)
	}
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "*.wasm"))
	if len(blobs) != 3 {
		t.Fatalf("%d blobs for 3 distinct modules: %v", len(blobs), blobs)
	}
}

func TestRegistry_ACorruptManifestIsAnErrorNotAPlugin(t *testing.T) {
	ctx := context.Background()
	_, rt := registry(t)
	dir := t.TempDir()
	r, err := plugins.Open(dir, rt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Push(ctx, "votes", "1", good("a")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugins", "votes", "1.json"), []byte(`{"name": "votes", "sha`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("votes", "1"); err == nil || errors.Is(err, plugins.ErrNotFound) || !strings.Contains(err.Error(), "votes@1") {
		t.Fatalf("Get of a corrupt manifest: %v, want an error naming votes@1", err)
	}
	if _, err := r.List(); err == nil {
		t.Fatal("List with a corrupt manifest: no error")
	}
}

// Room counts stored versions and the bytes of their distinct modules: a
// push of bytes stored under another name@version takes a version but no
// bytes, one already stored takes nothing, and a push past either limit is
// ErrFull naming the limit.
func TestRegistry_RoomCountsVersionsAndDistinctModules(t *testing.T) {
	ctx := context.Background()
	r, _ := registry(t)
	a := testwasm.Guest{}.Bytes()
	b := testwasm.Guest{Schema: strings.Replace(testwasm.DefaultSchema, `"votes"`, `"ballots"`, 1)}.Bytes()
	ma, err := r.Push(ctx, "polls", "1", a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Push(ctx, "polls", "2", a); err != nil {
		t.Fatal(err)
	}
	mb, err := r.Check(ctx, "ballots", "1", b)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes := ma
	sameBytes.Name = "copy"
	bytesA := int64(len(a))
	cases := []struct {
		name     string
		m        plugins.Manifest
		max      int
		maxBytes int64
		full     string // "" when it fits, else what the error names
	}{
		{"fits", mb, 3, bytesA + int64(len(b)), ""},
		{"one version too many", mb, 2, 1 << 30, "sandbox.max_plugins"},
		{"one byte short", mb, 3, bytesA + int64(len(b)) - 1, "sandbox.max_plugin_storage"},
		{"stored bytes under a new name take no bytes", sameBytes, 3, bytesA, ""},
		{"stored bytes under a new name still take a version", sameBytes, 2, 1 << 30, "sandbox.max_plugins"},
		{"a stored version takes nothing", ma, 2, bytesA, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := r.Room(c.m, c.max, c.maxBytes)
			switch {
			case c.full == "" && err != nil:
				t.Fatalf("got %v, want room", err)
			case c.full != "" && (!errors.Is(err, plugins.ErrFull) || !strings.Contains(err.Error(), c.full)):
				t.Fatalf("got %v, want ErrFull naming %s", err, c.full)
			}
		})
	}
}
