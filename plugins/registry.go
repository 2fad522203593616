package plugins

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
)

// Manifest describes a stored plugin.
type Manifest struct {
	Name       string     `json:"name"`
	Version    string     `json:"version"`
	SHA256     string     `json:"sha256"`
	ABI        int        `json:"abi"`
	Size       int        `json:"size"`
	Schema     abi.Schema `json:"schema"`
	UploadedAt time.Time  `json:"uploaded_at"`
}

// Ref is name@version.
func (m Manifest) Ref() string { return m.Name + "@" + m.Version }

// Errors a caller maps to HTTP statuses.
var (
	ErrInvalid  = errors.New("invalid")   // 400/422: the upload or spec is wrong
	ErrTooLarge = errors.New("too large") // 413
	ErrConflict = errors.New("conflict")  // 409: name@version exists with other bytes, or a dead-letter loop with another deployment
	ErrNotFound = errors.New("not found") // 404
	ErrFull     = errors.New("full")      // 507: storing the plugin would pass the host's plugin storage limits
)

// Registry stores plugins in a directory:
//
//	blobs/<sha256>.wasm             the module, content-addressed
//	plugins/<name>/<version>.json   its manifest, written last
type Registry struct {
	dir     string
	rt      *sandbox.Runtime
	maxSize int

	// compiling admits a bounded few compilations at a time: each takes a
	// core and up to hundreds of MiB while it runs, and none holds mu.
	compiling chan struct{}

	mu sync.Mutex
	// modules are the compiled modules by sha256, each checked by a dry
	// run, held weakly: a module's code stays while a deployment uses it
	// (or it is among the recent few) and goes with its last user, so that
	// uploads never pile up compiled code (sandbox.Module).
	modules map[string]weak.Pointer[sandbox.Module]
	recent  []*sandbox.Module // the last modules compiled or asked for, newest last
}

// Compilers is how many modules the registry compiles at once.
const Compilers = 2

// Recent is how many compiled modules the registry keeps without a user,
// so that a deploy right after its push finds the module compiled.
const Recent = 4

// DefaultMaxSize is the upload limit unless configured.
const DefaultMaxSize = 32 << 20

// Open opens (creating) a registry in dir.
func Open(dir string, rt *sandbox.Runtime, maxSize int) (*Registry, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	for _, d := range []string{"blobs", "plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("plugins: %w", err)
		}
	}
	return &Registry{dir: dir, rt: rt, maxSize: maxSize, compiling: make(chan struct{}, Compilers), modules: map[string]weak.Pointer[sandbox.Module]{}}, nil
}

// MaxSize is the largest module Push accepts.
func (r *Registry) MaxSize() int { return r.maxSize }

var (
	nameRE    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)
)

// Check validates wasm as name@version without storing it: the manifest
// Push would store. The same bytes already stored are their manifest;
// other bytes under a stored name@version are refused.
func (r *Registry) Check(ctx context.Context, name, version string, wasm []byte) (Manifest, error) {
	return r.check(ctx, name, version, wasm, true)
}

// check is Check; vet checks bytes not stored yet in a runtime of their own
// first (sandbox.Runtime.Scratch), so that a refusal leaves nothing in the
// host's.
func (r *Registry) check(ctx context.Context, name, version string, wasm []byte, vet bool) (Manifest, error) {
	if !nameRE.MatchString(name) {
		return Manifest{}, fmt.Errorf("%w: name %q: want a lower-case letter, then letters, digits or _ (at most 48)", ErrInvalid, name)
	}
	if !versionRE.MatchString(version) {
		return Manifest{}, fmt.Errorf("%w: version %q: want letters, digits and . _ + - (at most 64)", ErrInvalid, version)
	}
	if len(wasm) > r.maxSize {
		return Manifest{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(wasm), r.maxSize)
	}
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return Manifest{}, fmt.Errorf("%w: not a WebAssembly module (no \\0asm header); upload the .wasm built with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared", ErrInvalid)
	}
	sum := sha256.Sum256(wasm)
	sha := hex.EncodeToString(sum[:])
	if old, err := r.Get(name, version); err == nil {
		if old.SHA256 == sha {
			return old, nil
		}
		return Manifest{}, fmt.Errorf("%w: %s@%s exists with sha256 %s; push a new version", ErrConflict, name, version, old.SHA256)
	}
	if vet {
		_, err := os.Stat(r.blob(sha))
		vet = err != nil
	}
	mod, err := r.compile(ctx, sha, wasm, vet)
	if err != nil {
		return Manifest{}, err
	}
	return Manifest{Name: name, Version: version, SHA256: sha, ABI: abi.Version, Size: len(wasm), Schema: mod.Schema, UploadedAt: time.Now().UTC()}, nil
}

// Push validates wasm and stores it as name@version. Pushing the same bytes
// again is a no-op; other bytes under an existing name@version are refused.
func (r *Registry) Push(ctx context.Context, name, version string, wasm []byte) (Manifest, error) {
	return r.push(ctx, name, version, wasm, true)
}

// Adopt is Push for a plugin another host of the cluster checked (it comes
// from the catalog): compiled and dry-run in this host's runtime only, so
// that hosts pick a new plugin up as fast as before the scratch check.
func (r *Registry) Adopt(ctx context.Context, name, version string, wasm []byte) (Manifest, error) {
	return r.push(ctx, name, version, wasm, false)
}

func (r *Registry) push(ctx context.Context, name, version string, wasm []byte, vet bool) (Manifest, error) {
	m, err := r.check(ctx, name, version, wasm, vet)
	if err != nil {
		return Manifest{}, err
	}
	if _, err := r.Get(name, version); err == nil {
		return m, nil // stored before
	}
	if err := writeAtomic(r.blob(m.SHA256), wasm); err != nil {
		return Manifest{}, err
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.MkdirAll(filepath.Join(r.dir, "plugins", name), 0o755); err != nil {
		return Manifest{}, err
	}
	if err := writeAtomic(filepath.Join(r.dir, "plugins", name, version+".json"), b); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Room returns nil when m fits beside the stored plugins within max
// versions and maxBytes of distinct modules (the same bytes stored under
// another name@version take no more), and ErrFull saying what is used
// otherwise.
func (r *Registry) Room(m Manifest, max int, maxBytes int64) error {
	all, err := r.List()
	if err != nil {
		return err
	}
	used, bytes, have := 0, int64(0), map[string]bool{}
	for _, o := range all {
		if o.Name == m.Name && o.Version == m.Version {
			return nil // stored: takes no more
		}
		used++
		if !have[o.SHA256] {
			have[o.SHA256] = true
			bytes += int64(o.Size)
		}
	}
	grow := int64(m.Size)
	if have[m.SHA256] {
		grow = 0
	}
	switch {
	case used+1 > max:
		return fmt.Errorf("%w: %d plugin versions are stored, the limit is %d (sandbox.max_plugins): delete versions no deployment runs (wagg plugin delete)", ErrFull, used, max)
	case bytes+grow > maxBytes:
		return fmt.Errorf("%w: stored plugins take %d bytes, %d more would pass the limit of %d (sandbox.max_plugin_storage): delete versions no deployment runs (wagg plugin delete)", ErrFull, bytes, grow, maxBytes)
	}
	return nil
}

// compile returns the module of sha, compiling wasm and dry-running it
// the first time. Compilation and the dry run happen outside r.mu, at most
// Compilers at a time, so a slow or hostile upload holds up neither lookups
// of compiled modules nor more than its own slot; a module that fails is
// closed, so its compiled code does not stay in memory.
func (r *Registry) compile(ctx context.Context, sha string, wasm []byte, vet bool) (*sandbox.Module, error) {
	if m := r.cached(sha); m != nil {
		return m, nil
	}
	select {
	case r.compiling <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-r.compiling }()
	if m := r.cached(sha); m != nil { // compiled meanwhile by another caller
		return m, nil
	}
	if vet {
		scratch, err := r.rt.Scratch(ctx)
		if err != nil {
			return nil, err
		}
		m, err := compileIn(ctx, scratch, wasm)
		if m != nil {
			m.Close(ctx)
		}
		scratch.Close(ctx)
		if err != nil {
			return nil, err
		}
	}
	m, err := compileIn(ctx, r.rt, wasm)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.modules[sha].Value(); old != nil {
		m.Close(ctx)
		r.use(old)
		return old, nil
	}
	r.modules[sha] = weak.Make(m)
	r.use(m)
	return m, nil
}

// compileIn compiles wasm in rt and dry-runs it.
func compileIn(ctx context.Context, rt *sandbox.Runtime, wasm []byte) (*sandbox.Module, error) {
	m, err := rt.Compile(ctx, wasm)
	if err != nil {
		switch {
		case errors.Is(err, sandbox.ErrTooLarge):
			return nil, fmt.Errorf("%w: %v", ErrTooLarge, err)
		case errors.Is(err, sandbox.ErrInvalid):
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return nil, err
	}
	if err := dryRun(ctx, m); err != nil {
		m.Close(ctx)
		if errors.Is(err, sandbox.ErrMemoryBudget) {
			return nil, fmt.Errorf("dry run on a sample batch: %w", err)
		}
		return nil, fmt.Errorf("%w: dry run on a sample batch: %v", ErrInvalid, err)
	}
	return m, nil
}

// blob is where the module of sha is stored.
func (r *Registry) blob(sha string) string { return filepath.Join(r.dir, "blobs", sha+".wasm") }

// cached is the compiled module of sha, if it is still held somewhere.
func (r *Registry) cached(sha string) *sandbox.Module {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.modules[sha].Value()
	if m == nil {
		delete(r.modules, sha)
		return nil
	}
	r.use(m)
	return m
}

// use makes m the most recent module, letting the oldest of more than
// Recent go (its code stays while a deployment uses it). Under r.mu.
func (r *Registry) use(m *sandbox.Module) {
	r.recent = slices.DeleteFunc(r.recent, func(o *sandbox.Module) bool { return o == m })
	r.recent = append(r.recent, m)
	if n := len(r.recent) - Recent; n > 0 {
		r.recent = slices.Delete(r.recent, 0, n)
	}
}

// Delete removes name@version, and its module's bytes unless another
// version is the same bytes. A deployment that runs it keeps its compiled
// module; nothing can start it again.
func (r *Registry) Delete(name, version string) error {
	m, err := r.Get(name, version)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(r.dir, "plugins", name, version+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	os.Remove(filepath.Join(r.dir, "plugins", name)) // only when empty
	all, err := r.List()
	if err != nil {
		return err
	}
	for _, o := range all {
		if o.SHA256 == m.SHA256 {
			return nil
		}
	}
	if err := os.Remove(r.blob(m.SHA256)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Get returns the manifest of name@version.
func (r *Registry) Get(name, version string) (Manifest, error) {
	if !nameRE.MatchString(name) || !versionRE.MatchString(version) {
		return Manifest{}, fmt.Errorf("%w: plugin %s@%s", ErrNotFound, name, version)
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "plugins", name, version+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%w: plugin %s@%s", ErrNotFound, name, version)
	}
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("plugins: manifest %s@%s: %w", name, version, err)
	}
	return m, nil
}

// Module returns the compiled module of a stored plugin.
func (r *Registry) Module(ctx context.Context, m Manifest) (*sandbox.Module, error) {
	wasm, err := os.ReadFile(r.blob(m.SHA256))
	if err != nil {
		return nil, fmt.Errorf("plugins: module of %s: %w", m.Ref(), err)
	}
	return r.compile(ctx, m.SHA256, wasm, false)
}

// BySHA returns the manifest of a stored plugin by its module's sha256 (the
// first by name and version when several names hold the same bytes).
func (r *Registry) BySHA(sha string) (Manifest, error) {
	ms, err := r.List()
	if err != nil {
		return Manifest{}, err
	}
	for _, m := range ms {
		if m.SHA256 == sha {
			return m, nil
		}
	}
	return Manifest{}, fmt.Errorf("%w: plugin with sha256 %s", ErrNotFound, sha)
}

// List returns every stored manifest, by name then version.
func (r *Registry) List() ([]Manifest, error) {
	paths, err := filepath.Glob(filepath.Join(r.dir, "plugins", "*", "*.json"))
	if err != nil {
		return nil, err
	}
	out := []Manifest{}
	for _, p := range paths {
		v := filepath.Base(p)
		m, err := r.Get(filepath.Base(filepath.Dir(p)), v[:len(v)-len(".json")])
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	// By name, then version: not by Ref, where "votes2@1" would come
	// before "votes@1" ('2' sorts before '@').
	slices.SortFunc(out, func(a, b Manifest) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Version, b.Version))
	})
	return out, nil
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// dryRun exercises every export on a sample batch built from the schema:
// init, process, flush, snapshot and restore must all succeed, and the rows
// must decode.
func dryRun(ctx context.Context, mod *sandbox.Module) error {
	windows := []abi.Window{{Name: "dry_second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "dry_total", Kind: abi.Global}}
	inst, err := mod.Instantiate(ctx, abi.Config{Windows: windows})
	if err != nil {
		return err
	}
	defer inst.Close(ctx)
	s := &mod.Schema
	b := &abi.Batch{Columns: make([]abi.BatchColumn, len(s.Input))}
	const n = 3
	for i := range n {
		b.Times = append(b.Times, 1_700_000_000_000+int64(i)*700)
	}
	sample := func(c *abi.BatchColumn) {
		c.Offsets = []uint32{0}
		for i := range n {
			c.Data = append(c.Data, fmt.Sprintf("sample-%d", i)...)
			c.Offsets = append(c.Offsets, uint32(len(c.Data)))
		}
	}
	for i, f := range s.Input {
		c := &b.Columns[i]
		for j := range n {
			switch f.Type {
			case abi.Int64:
				c.Ints = append(c.Ints, int64(j+1))
			case abi.Float64:
				c.Floats = append(c.Floats, float64(j)+0.5)
			}
		}
		if f.Type == abi.String {
			sample(c)
		}
	}
	if s.Raw {
		b.Raw = &abi.BatchColumn{}
		sample(b.Raw)
	}
	buf, err := abi.NewBatchEncoder(s).Encode(b)
	if err != nil {
		return err
	}
	if err := inst.Process(ctx, buf); err != nil {
		return err
	}
	if _, err := inst.Flush(ctx, 1_700_000_001_000, nil); err != nil {
		return err
	}
	snap, err := inst.Snapshot(ctx)
	if err != nil {
		return err
	}
	return inst.Restore(ctx, snap)
}
