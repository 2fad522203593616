package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wagg/wagg/abi"
)

// Options configure a Runtime. Nil means the defaults below.
type Options struct {
	// MemoryPages caps each instance's linear memory, in 64 KiB pages
	// (default 1024, 64 MiB).
	MemoryPages uint32
	// MemoryBudget caps the linear memory reserved by all live instances
	// together, in bytes (default 4 GiB). Each instance reserves its cap
	// (MemoryPages, or the module's declared maximum when smaller) at
	// Instantiate, which fails with ErrMemoryBudget past the budget. The
	// reservation is address space, not RSS: see memory.go.
	MemoryBudget uint64
	// CallTimeout bounds the CPU time of every call into a guest, the start
	// function and the upload's dry run included (default 1s). A call past it fails with
	// a *GuestError wrapping ErrDeadline and breaks its instance. Negative
	// turns deadlines off, and with them the meter Compile adds to guest
	// code (meter.go): for measuring its cost only, never for untrusted code.
	CallTimeout time.Duration
	// MaxOutput caps the bytes a guest may hand back from one call
	// (default 64 MiB).
	MaxOutput uint32
	// MaxRows caps the rows one flush may return (default 1<<20).
	MaxRows int
	// MaxSnapshot caps the bytes of one snapshot (default 64 MiB).
	MaxSnapshot uint32
	// MaxLogLines caps the lines a guest may write to stdout and stderr in
	// one call (default 1000); past it the call fails. The host log is also
	// rate-limited per second, whatever this cap.
	MaxLogLines int
	// Code limits what Compile accepts before it compiles anything.
	Code CodeLimits
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
	if r.MemoryBudget == 0 {
		r.MemoryBudget = 4 << 30
	}
	if r.CallTimeout == 0 {
		r.CallTimeout = time.Second
	}
	if r.MaxOutput == 0 {
		r.MaxOutput = 64 << 20
	}
	if r.MaxRows == 0 {
		r.MaxRows = 1 << 20
	}
	if r.MaxSnapshot == 0 {
		r.MaxSnapshot = 64 << 20
	}
	if r.MaxLogLines == 0 {
		r.MaxLogLines = 1000
	}
	r.Code = r.Code.withDefaults()
	if r.Log == nil {
		r.Log = slog.Default()
	}
	return r
}

// Runtime compiles and instantiates plugins. It is safe for concurrent use.
type Runtime struct {
	opts    Options
	rt      wazero.Runtime
	cache   wazero.CompilationCache
	budget  budget
	modules atomic.Int64 // compiled modules holding code (Modules)
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
		WithMemoryLimitPages(opts.MemoryPages)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(experimental.WithFunctionListenerFactory(ctx, hostCalls{}), rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("sandbox: wasi: %w", err)
	}
	if err := instantiateMeter(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("sandbox: meter: %w", err)
	}
	return &Runtime{opts: opts, rt: rt, cache: cache, budget: budget{limit: opts.MemoryBudget}}, nil
}

// Scratch starts a runtime of r's options that shares nothing with r, its
// compiled code kept in memory only: a module that may be refused is
// checked there. wazero's runtime keeps, for as long as it lives, a table
// of every function type it compiled, and r writes compiled code to its
// cache directory for good: 200 refused uploads of 15,000 types each had
// taken a host's heap from 7 to 277 MiB, and each refused 4 MB upload had
// left 17 MB on disk.
func (r *Runtime) Scratch(ctx context.Context) (*Runtime, error) {
	o := r.opts
	o.CacheDir = ""
	return New(ctx, &o)
}

// Reserved is the linear memory reserved by live instances, in bytes.
func (r *Runtime) Reserved() uint64 { return r.budget.used.Load() }

// Close releases every module and instance of the runtime.
func (r *Runtime) Close(ctx context.Context) error {
	err := r.rt.Close(ctx)
	return errors.Join(err, r.cache.Close(ctx))
}

// Module is a compiled, checked plugin. Its compiled code (machine code
// outside the Go heap, megabytes for a Go guest) is released by Close, or
// once nothing references the Module any more, whichever comes first: an
// instance references its module, so code in use stays.
type Module struct {
	r      *Runtime
	code   *compiledCode
	memCap uint64 // bytes of the budget one instance reserves: its memory cap and its tables
	Schema abi.Schema
}

// compiledCode is a module's compiled code, closed once.
type compiledCode struct {
	c      wazero.CompiledModule
	live   *atomic.Int64 // the runtime's count of modules not closed
	closed atomic.Bool
}

func (c *compiledCode) close(ctx context.Context) error {
	if c.closed.Swap(true) {
		return nil
	}
	c.live.Add(-1)
	return c.c.Close(ctx)
}

// Errors of the sandbox, for errors.Is.
var (
	// ErrInvalid is wrapped by every reason Compile refuses a module.
	ErrInvalid = errors.New("invalid plugin")
	// ErrTooLarge is wrapped, with ErrInvalid, when a module is over one of
	// the CodeLimits; the message names the limit.
	ErrTooLarge = errors.New("plugin too large")
	// ErrDeadline is wrapped by the *GuestError of a call that ran past
	// Options.CallTimeout.
	ErrDeadline = errors.New("sandbox: guest call deadline exceeded")
)

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
	st, err := ScanCode(wasm, r.opts.Code)
	if err != nil {
		return nil, err
	}
	wasm, tableElems, err := instrument(wasm, r.opts.CallTimeout > 0, uint32(r.opts.Code.MaxTableElements))
	if err != nil {
		return nil, err
	}
	c, err := r.rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("%w: not a WebAssembly module wagg can compile: %v", ErrInvalid, err)
	}
	code := &compiledCode{c: c, live: &r.modules}
	r.modules.Add(1)
	m := &Module{r: r, code: code}
	runtime.AddCleanup(m, func(c *compiledCode) { c.close(context.Background()) }, code)
	if err := check(c); err != nil {
		m.Close(ctx)
		return nil, err
	}
	pages := r.opts.MemoryPages
	if max, ok := c.ExportedMemories()["memory"].Max(); ok && max < pages {
		pages = max
	}
	// Tables live on the Go heap, 8 bytes an element, and so do an
	// instance's globals and segments: the budget counts them with the
	// memory.
	m.memCap = uint64(pages)*pageSize + tableElems*8 + st.InstanceHeap()
	inst, err := m.instantiate(ctx)
	if err != nil {
		m.Close(ctx)
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	defer inst.Close(ctx)
	raw, err := inst.packed(ctx, &inst.describe, r.opts.MaxOutput)
	if err != nil {
		m.Close(ctx)
		return nil, fmt.Errorf("%w: wagg_describe: %w", ErrInvalid, err)
	}
	if err := decodeSchema(raw, &m.Schema); err != nil {
		m.Close(ctx)
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
		if mod == meterModule { // added by instrument, which refuses it in an upload
			continue
		}
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

// Close releases the compiled code; instances started from it must be
// closed first. A Module nothing references is closed by itself.
func (m *Module) Close(ctx context.Context) error { return m.code.close(ctx) }

// Modules is how many compiled modules hold code: compiled and neither
// closed nor collected.
func (r *Runtime) Modules() int { return int(r.modules.Load()) }

type logAttrsKey struct{}

// WithLogAttrs returns ctx such that an instance started with it logs its
// guest's output with these attributes (the deployment and partition), so
// that a line is told by where it came from rather than by what the guest
// writes in it.
func WithLogAttrs(ctx context.Context, attrs ...any) context.Context {
	return context.WithValue(ctx, logAttrsKey{}, attrs)
}

func (m *Module) instantiate(ctx context.Context) (*Instance, error) {
	r := m.r
	if err := r.budget.reserve(m.memCap); err != nil {
		return nil, err
	}
	alloc := &allocator{b: &r.budget, reserved: m.memCap}
	log := r.opts.Log
	if a, ok := ctx.Value(logAttrsKey{}).([]any); ok {
		log = log.With(a...)
	}
	out := newGuestLog(log, r.opts.MaxLogLines)
	// _initialize is called here rather than as a start function, so that
	// its failure is told from the module's own start function and from
	// what fails before any code runs (a link or a data segment).
	cfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithStdout(out).WithStderr(out).
		WithStdin(eof{})
	var meter callMeter
	cctx := r.metered(experimental.WithMemoryAllocator(ctx, alloc), &meter)
	out.begin()
	mod, err := r.rt.InstantiateModule(cctx, m.code.c, cfg)
	failed := startFunction
	if err == nil {
		if init := mod.ExportedFunction(abi.InitializeExport); init != nil {
			failed = abi.InitializeExport
			if _, err = init.Call(cctx); err != nil {
				mod.Close(ctx)
			}
		}
	}
	meter.end()
	if err != nil {
		// wazero closes a module whose start function failed, but not one
		// that failed before (a data segment out of bounds): give back what
		// it held either way (Free is idempotent).
		if alloc.made != nil {
			alloc.made.Free()
		} else if alloc.reserved > 0 {
			r.budget.release(alloc.reserved)
		}
		var exit *sys.ExitError
		if failed == startFunction && !errors.Is(err, ErrDeadline) && !errors.As(err, &exit) && !strings.HasPrefix(err.Error(), "start ") {
			return nil, fmt.Errorf("instantiate: %w", err) // no code ran: a link or a data segment
		}
		return nil, fmt.Errorf("instantiate: %w", r.guestError(failed, err))
	}
	i := &Instance{m: m, mod: mod, mem: mod.Memory(), out: out}
	if err := out.end(abi.InitializeExport); err != nil {
		mod.Close(ctx)
		return nil, fmt.Errorf("instantiate: %w", err)
	}
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

// metered starts c, the meter of one guest call under the runtime's
// deadline, and returns the call's context; the caller ends c.
func (r *Runtime) metered(ctx context.Context, c *callMeter) context.Context {
	if r.opts.CallTimeout <= 0 {
		return ctx
	}
	return c.begin(ctx, r.opts.CallTimeout)
}

// guestError turns the error of a guest call into a *GuestError: a deadline
// becomes ErrDeadline, anything else a trap.
// startFunction names the module's start function (its start section) in
// errors, where an export's name goes otherwise.
const startFunction = "its start function"

func (r *Runtime) guestError(export string, err error) *GuestError {
	if errors.Is(err, ErrDeadline) {
		return &GuestError{Export: export, Message: fmt.Sprintf("ran past its deadline of %v of CPU time (sandbox.call_timeout)", r.opts.CallTimeout), trap: err}
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		return &GuestError{Export: export, Message: fmt.Sprintf("called proc_exit(%d), which ends the instance: an export must return instead", exit.ExitCode()), trap: err}
	}
	return &GuestError{Export: export, trap: err}
}

type eof struct{}

func (eof) Read([]byte) (int, error) { return 0, io.EOF }
