package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wagg/wagg/abi"
)

// Options configure a Runtime. Nil means the defaults below.
type Options struct {
	// MemoryPages caps each instance's linear memory, in 64 KiB pages
	// (default 1024, 64 MiB).
	MemoryPages uint32
	// MaxOutput caps the bytes a guest may hand back from one call
	// (default 64 MiB).
	MaxOutput uint32
	// Interruptible makes a call stop when its context ends, at the cost of
	// checks in the guest's loops (wazero's WithCloseOnContextDone). Off by
	// default: see RATIONALE.md.
	Interruptible bool
	// CacheDir keeps compiled code across restarts; empty keeps it in memory.
	CacheDir string
	// Log receives guest stdout and stderr (rate-limited). Default slog.Default.
	Log *slog.Logger
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.MemoryPages == 0 {
		r.MemoryPages = 1024
	}
	if r.MaxOutput == 0 {
		r.MaxOutput = 64 << 20
	}
	if r.Log == nil {
		r.Log = slog.Default()
	}
	return r
}

// Runtime compiles and instantiates plugins. It is safe for concurrent use.
type Runtime struct {
	opts  Options
	rt    wazero.Runtime
	cache wazero.CompilationCache
}

// New starts a runtime with WASI preview 1 available to guests.
func New(ctx context.Context, o *Options) (*Runtime, error) {
	opts := o.withDefaults()
	var cache wazero.CompilationCache
	if opts.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("sandbox: compilation cache: %w", err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(opts.MemoryPages).
		WithMemoryCapacityFromMax(true). // grow in place: no copy of the whole memory per page
		WithCloseOnContextDone(opts.Interruptible)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("sandbox: wasi: %w", err)
	}
	return &Runtime{opts: opts, rt: rt, cache: cache}, nil
}

// Close releases every module and instance of the runtime.
func (r *Runtime) Close(ctx context.Context) error {
	err := r.rt.Close(ctx)
	return errors.Join(err, r.cache.Close(ctx))
}

// Module is a compiled, checked plugin.
type Module struct {
	r        *Runtime
	compiled wazero.CompiledModule
	Schema   abi.Schema
}

// ErrInvalid is wrapped by every reason Compile refuses a module.
var ErrInvalid = errors.New("invalid plugin")

var i32, i64 = api.ValueTypeI32, api.ValueTypeI64

// exports are the required exports and their signatures.
var exports = []struct {
	name           string
	params, result []api.ValueType
}{
	{abi.VersionExport, nil, nil},
	{abi.InitializeExport, nil, nil},
	{abi.InputExport, []api.ValueType{i32}, []api.ValueType{i32}},
	{abi.InitExport, []api.ValueType{i32}, []api.ValueType{i32}},
	{abi.DescribeExport, nil, []api.ValueType{i64}},
	{abi.ProcessExport, []api.ValueType{i32}, []api.ValueType{i32}},
	{abi.FlushExport, []api.ValueType{i64}, []api.ValueType{i64}},
	{abi.SnapshotExport, nil, []api.ValueType{i64}},
	{abi.RestoreExport, []api.ValueType{i32}, []api.ValueType{i32}},
	{abi.LastErrorExport, nil, []api.ValueType{i64}},
}

// Compile compiles wasm, checks it against the ABI and reads its schema by
// instantiating it once. Every refusal wraps ErrInvalid and says what to fix.
func (r *Runtime) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	c, err := r.rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: not a WebAssembly module wagg can compile: %v", ErrInvalid, err)
	}
	m := &Module{r: r, compiled: c}
	if err := check(c); err != nil {
		c.Close(ctx)
		return nil, err
	}
	inst, err := m.instantiate(ctx)
	if err != nil {
		c.Close(ctx)
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	defer inst.Close(ctx)
	raw, err := inst.packed(ctx, inst.describe)
	if err != nil {
		c.Close(ctx)
		return nil, fmt.Errorf("%w: wagg_describe: %v", ErrInvalid, err)
	}
	if err := decodeSchema(raw, &m.Schema); err != nil {
		c.Close(ctx)
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return m, nil
}

func check(c wazero.CompiledModule) error {
	allowed := map[[2]string]bool{}
	for mod, names := range abi.AllowedImports {
		for _, n := range names {
			allowed[[2]string{mod, n}] = true
		}
	}
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		if !allowed[[2]string{mod, name}] {
			return fmt.Errorf("%w: imports %s.%s, which wagg does not provide (allowed: wasi_snapshot_preview1 basics, see abi/ABI.md)", ErrInvalid, mod, name)
		}
	}
	if len(c.ImportedMemories()) > 0 {
		return fmt.Errorf("%w: imports a memory; a plugin must define its own", ErrInvalid)
	}
	fns := c.ExportedFunctions()
	if _, ok := fns[abi.VersionExport]; !ok {
		return fmt.Errorf("%w: no %s export: not built for wagg ABI v%d (rebuild with the current SDK)", ErrInvalid, abi.VersionExport, abi.Version)
	}
	for _, e := range exports {
		f, ok := fns[e.name]
		if !ok {
			return fmt.Errorf("%w: missing export %s", ErrInvalid, e.name)
		}
		if !same(f.ParamTypes(), e.params) || !same(f.ResultTypes(), e.result) {
			return fmt.Errorf("%w: export %s has signature %v -> %v, want %v -> %v", ErrInvalid,
				e.name, names(f.ParamTypes()), names(f.ResultTypes()), names(e.params), names(e.result))
		}
	}
	if _, ok := c.ExportedMemories()["memory"]; !ok {
		return fmt.Errorf("%w: no exported memory named \"memory\"", ErrInvalid)
	}
	return nil
}

func same(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func names(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}

// Close releases the compiled code.
func (m *Module) Close(ctx context.Context) error { return m.compiled.Close(ctx) }

func (m *Module) instantiate(ctx context.Context) (*Instance, error) {
	out := newGuestLog(m.r.opts.Log)
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(abi.InitializeExport).
		WithStdout(out).WithStderr(out).
		WithStdin(eof{})
	mod, err := m.r.rt.InstantiateModule(ctx, m.compiled, cfg)
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	i := &Instance{m: m, mod: mod, mem: mod.Memory(), maxOut: m.r.opts.MaxOutput}
	i.input = mod.ExportedFunction(abi.InputExport)
	i.init = mod.ExportedFunction(abi.InitExport)
	i.describe = mod.ExportedFunction(abi.DescribeExport)
	i.process = mod.ExportedFunction(abi.ProcessExport)
	i.flush = mod.ExportedFunction(abi.FlushExport)
	i.snapshot = mod.ExportedFunction(abi.SnapshotExport)
	i.restore = mod.ExportedFunction(abi.RestoreExport)
	i.lastErr = mod.ExportedFunction(abi.LastErrorExport)
	return i, nil
}

type eof struct{}

func (eof) Read([]byte) (int, error) { return 0, io.EOF }
