package wagg

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wagg/wagg/abi"
)

// engine runs the registered aggregator for one deployment: the exports in
// the Wasm build and Local on the host both drive it.
type engine struct {
	schema *abi.Schema
	types  []abi.Type
	fn     Func
	groups *Groups
	batch  Batch
	snap   []byte
	// migrate converts the snapshots this instance restores, when the host
	// hands it those of a state version the aggregator migrates
	// (abi.Config.MigrateFrom); nil: snapshots are restored as they are.
	migrate *migration
}

func newEngine(cfg abi.Config) (*engine, error) {
	if registered.fn == nil {
		return nil, errNotRegistered
	}
	if cfg.ABI != abi.Version {
		return nil, fmt.Errorf("wagg: host speaks ABI %d, this SDK speaks %d", cfg.ABI, abi.Version)
	}
	if len(cfg.Windows) == 0 || len(cfg.Windows) > 255 {
		return nil, fmt.Errorf("wagg: %d windows, want 1 to 255", len(cfg.Windows))
	}
	for _, w := range cfg.Windows {
		if err := w.Validate(); err != nil {
			return nil, fmt.Errorf("wagg: window %w", err)
		}
	}
	s := &registered.schema
	e := &engine{schema: s, fn: registered.fn, groups: newGroups(cfg.Windows, s, cfg.MaxGroups)}
	if cfg.MigrateFrom != nil {
		m, err := newMigration(cfg.MigrateFrom, s, registered.spec.Migrate)
		if err != nil {
			return nil, err
		}
		e.migrate = m
	}
	for _, f := range s.Input {
		e.types = append(e.types, f.Type)
	}
	return e, nil
}

func newEngineJSON(cfg []byte) (*engine, error) {
	var c abi.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, fmt.Errorf("wagg: config: %w", err)
	}
	return newEngine(c)
}

// errSchema marks a batch laid out for other input fields than the
// registered ones: the host and the plugin disagree on the schema.
var errSchema = errors.New("wagg: batch does not match the declared input")

// process decodes an encoded batch and folds it in.
func (e *engine) process(buf []byte) error {
	if len(buf) >= 16 && binary.LittleEndian.Uint32(buf) == abi.BatchMagic {
		fields, raw := binary.LittleEndian.Uint32(buf[8:]), buf[12]&1 != 0
		if int(fields) != len(e.types) || raw != e.schema.Raw {
			return fmt.Errorf("%w: %d fields (raw %v), declared %d (raw %v)", errSchema, fields, raw, len(e.types), e.schema.Raw)
		}
	}
	if err := abi.DecodeBatch(buf, e.types, e.schema.Raw, &e.batch.b); err != nil {
		return err
	}
	return e.run(&e.batch)
}

// run folds a batch in. On error the batch may be partly folded in: the
// host discards the instance, Local's caller should discard the Local.
func (e *engine) run(b *Batch) error {
	g := e.groups
	g.err, g.key.err = nil, nil
	if err := e.fn(b, g); err != nil {
		return err
	}
	return g.err
}

// check reports how a decoded batch differs from the declared input, so
// that Local.Process fails with a message where the aggregator would panic.
func (e *engine) check(b *abi.Batch) error {
	n := len(b.Times)
	if len(b.Columns) != len(e.types) {
		return fmt.Errorf("%w: %d columns, declared %d input fields", errSchema, len(b.Columns), len(e.types))
	}
	if (b.Raw != nil) != e.schema.Raw {
		return fmt.Errorf("%w: Raw set %v, Spec.Raw %v", errSchema, b.Raw != nil, e.schema.Raw)
	}
	checkStrings := func(c *abi.BatchColumn) bool {
		if len(c.Offsets) != n+1 || c.Offsets[0] != 0 || uint64(c.Offsets[n]) > uint64(len(c.Data)) {
			return false
		}
		for i := range n {
			if c.Offsets[i] > c.Offsets[i+1] {
				return false
			}
		}
		return true
	}
	for i, t := range e.types {
		c, name := &b.Columns[i], e.schema.Input[i].Name
		switch {
		case t == abi.Int64 && len(c.Ints) != n,
			t == abi.Float64 && len(c.Floats) != n:
			return fmt.Errorf("%w: column %d %q (%s) does not hold %d values", errSchema, i, name, t, n)
		case t == abi.String && !checkStrings(c):
			return fmt.Errorf("%w: column %d %q (string): want %d+1 increasing offsets from 0 into Data", errSchema, i, name, n)
		}
	}
	if b.Raw != nil && !checkStrings(b.Raw) {
		return fmt.Errorf("%w: raw column: want %d+1 increasing offsets from 0 into Data", errSchema, n)
	}
	return nil
}

// Snapshot layout (private to this SDK, opaque to the host):
//
//	u32 snapMagic, u32 windows
//	per window: u32 panes; per pane: i64 start, u32 groups;
//	per group: u32 key length, key, metrics x u64 (a distinct metric:
//	its sketch, abi.Sketch.AppendEncoded)
//
// Panes come in increasing start and groups in the order they were created,
// same state always has the same snapshot, and restore accepts exactly the
// snapshots that snapshot writes.
//
// The layout holds values, not names: the metrics are those of the schema
// the snapshot was written with. A snapshot of another state version that
// the aggregator migrates is read with its writer's schema, which the host
// hands over (abi.Config.MigrateFrom), and converted group by group.
const snapMagic = 0x31534757 // "WGS1"

func (e *engine) snapshot() []byte {
	g := e.groups
	le := binary.LittleEndian
	b := le.AppendUint32(e.snap[:0], snapMagic)
	b = le.AppendUint32(b, uint32(len(g.windows)))
	for w := range g.windows {
		starts := g.paneStarts(w)
		b = le.AppendUint32(b, uint32(len(starts)))
		for _, start := range starts {
			p := g.panes[w][start]
			b = le.AppendUint64(b, uint64(start))
			b = le.AppendUint32(b, uint32(p.len()))
			for i := range uint32(p.len()) {
				k := p.key(i)
				b = le.AppendUint32(b, uint32(len(k)))
				b = append(b, k...)
				for j, v := range p.values(i) {
					if g.sketches != nil && g.metrics[j].Kind == abi.Distinct {
						b = p.sketch(i, j).AppendEncoded(b)
						continue
					}
					b = le.AppendUint64(b, v)
				}
			}
		}
	}
	e.snap = b
	return b
}

var errSnapshot = errors.New("wagg: malformed snapshot")

// restore replaces the state with a snapshot's, migrated when the engine
// migrates (e.migrate). On error the state is empty.
func (e *engine) restore(b []byte) error {
	old := e.groups
	g := newGroups(old.windows, e.schema, old.maxGroups)
	e.groups = g
	if err := e.decodeSnapshot(b, g); err != nil {
		e.groups = newGroups(old.windows, e.schema, old.maxGroups)
		return err
	}
	return nil
}

func (e *engine) decodeSnapshot(b []byte, g *Groups) error {
	le := binary.LittleEndian
	nm := len(e.schema.Metrics)
	from := e.schema // the schema the snapshot was written with
	if e.migrate != nil {
		from = e.migrate.schema
	}
	take := func(n int) []byte {
		if n < 0 || n > len(b) {
			return nil
		}
		v := b[:n]
		b = b[n:]
		return v
	}
	u32 := func() (int, bool) {
		v := take(4)
		if v == nil {
			return 0, false
		}
		return int(le.Uint32(v)), true
	}
	if m, ok := u32(); !ok || m != snapMagic {
		return fmt.Errorf("%w: bad magic", errSnapshot)
	}
	if n, ok := u32(); !ok {
		return fmt.Errorf("%w: truncated", errSnapshot)
	} else if n != len(g.windows) {
		return fmt.Errorf("%w: taken with %d windows, the deployment has %d", errSnapshot, n, len(g.windows))
	}
	vals := make([]uint64, len(from.Metrics))
	sketches := make([]*abi.Sketch, len(from.Metrics))
	for w, win := range g.windows {
		panes, ok := u32()
		if !ok {
			return fmt.Errorf("%w: truncated", errSnapshot)
		}
		var starts []int64
		var prevStart int64
		for i := range panes {
			h := take(12)
			if h == nil {
				return fmt.Errorf("%w: truncated pane", errSnapshot)
			}
			p := newPane(int64(le.Uint64(h)), nm)
			if i > 0 && p.start <= prevStart {
				return fmt.Errorf("%w: window %d: panes out of order", errSnapshot, w)
			}
			prevStart = p.start
			if starts = win.Starts(p.start, starts[:0]); len(starts) == 0 || starts[0] != p.start {
				return fmt.Errorf("%w: window %d: %d is not a window start", errSnapshot, w, p.start)
			}
			n := int(le.Uint32(h[8:]))
			for range n {
				kl, ok := u32()
				key := take(kl)
				if !ok || key == nil {
					return fmt.Errorf("%w: truncated group", errSnapshot)
				}
				// The group's metrics in the snapshot's schema: 8 bytes
				// each but a distinct metric's sketch, of its own length.
				for j, m := range from.Metrics {
					if m.Kind == abi.Distinct {
						sk, k, err := abi.DecodeSketch(b)
						if err != nil {
							return fmt.Errorf("%w: window %d pane %d: %v", errSnapshot, w, p.start, err)
						}
						sketches[j] = sk
						take(k)
						continue
					}
					v := take(8)
					if v == nil {
						return fmt.Errorf("%w: truncated group", errSnapshot)
					}
					vals[j] = le.Uint64(v)
				}
				kv, err := e.schema.KeyValues(string(key))
				if err != nil {
					return fmt.Errorf("%w: window %d pane %d: %v", errSnapshot, w, p.start, err)
				}
				h := hashKey(g.types, key)
				_, slot, dup := p.lookup(key, h)
				if dup {
					return fmt.Errorf("%w: window %d pane %d: a group appears twice", errSnapshot, w, p.start)
				}
				src := vals
				if e.migrate != nil {
					var keep bool
					if src, keep, err = e.migrate.convert(win, p.start, kv, src, g.idents); err != nil {
						return fmt.Errorf("%w: window %q, pane at %d, key %v: %w", errMigrate, win.Name, p.start, kv, err)
					} else if !keep {
						continue
					}
				}
				// Every restored group is marked changed, whatever it was when
				// the snapshot was taken: the first flush after a restore emits
				// the whole state, so a host that starts afresh (its live hub
				// empty) shows every group, not only those that change next.
				i := p.insert(key, h, g.idents, g.distinct, slot)
				for j, m := range e.schema.Metrics {
					if m.Kind != abi.Distinct {
						p.vals[int(i)*nm+j] = src[j]
						continue
					}
					// A distinct metric's sketch comes from the snapshot's
					// metric at carry[j] (itself when not migrating); a
					// new one starts empty.
					o := j
					if e.migrate != nil {
						o = e.migrate.carry[j]
					}
					if o >= 0 {
						*p.sketch(i, j) = *sketches[o]
					}
				}
				p.touch(i)
			}
			if e.migrate == nil || p.len() > 0 {
				g.panes[w][p.start] = p
			}
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errSnapshot, len(b))
	}
	return nil
}

// Describe returns the schema of the registered aggregator.
func Describe() (abi.Schema, error) {
	if registered.fn == nil {
		return abi.Schema{}, errNotRegistered
	}
	return registered.schema, nil
}

// Local runs the registered aggregator natively, without a Wasm runtime, for
// unit tests and for comparing a plugin with its native speed.
type Local struct{ e *engine }

// NewLocal prepares the registered aggregator for the given windows.
func NewLocal(windows ...abi.Window) (*Local, error) {
	return NewLocalConfig(abi.Config{ABI: abi.Version, Windows: windows})
}

// NewLocalConfig prepares the registered aggregator with the config
// wagg_init would hand it (windows, params, the host's group limit, and the
// schema of an older build whose snapshot Restore is to migrate).
func NewLocalConfig(cfg abi.Config) (*Local, error) {
	e, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	return &Local{e: e}, nil
}

// Process folds a decoded batch in, as wagg_process would. It refuses a
// batch whose columns do not match the registered Spec.Input. On error the
// batch may be partly folded in, as in the guest, where the host then
// discards the instance: discard the Local too.
func (l *Local) Process(b *abi.Batch) error {
	if err := l.e.check(b); err != nil {
		return err
	}
	return l.e.run(&Batch{b: *b})
}

// ProcessEncoded folds in a batch in its ABI encoding (abi.BatchEncoder).
func (l *Local) ProcessEncoded(buf []byte) error { return l.e.process(buf) }

// Flush returns the rows a flush at watermark emits.
func (l *Local) Flush(watermark int64) ([]abi.Row, error) {
	return abi.DecodeRows(l.e.groups.flush(watermark), l.e.schema, len(l.e.groups.windows), nil)
}

// Snapshot returns the state; Restore puts it back.
func (l *Local) Snapshot() []byte { return append([]byte(nil), l.e.snapshot()...) }

// Restore replaces the state with a snapshot taken by Snapshot for the same
// windows. It refuses anything else, leaving the state empty. With a
// Config.MigrateFrom, the snapshot is one of that build's, which Spec.Migrate
// converts group by group.
func (l *Local) Restore(b []byte) error { return l.e.restore(b) }
