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
	e := &engine{schema: s, fn: registered.fn, groups: newGroups(cfg.Windows, s)}
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

// process decodes an encoded batch and folds it in.
func (e *engine) process(buf []byte) error {
	if err := abi.DecodeBatch(buf, e.types, e.schema.Raw, &e.batch.b); err != nil {
		return err
	}
	return e.run()
}

func (e *engine) run() error {
	g := e.groups
	g.key.err = nil
	if err := e.fn(&e.batch, g); err != nil {
		return err
	}
	return g.key.err
}

// Snapshot layout (private to this SDK, opaque to the host):
//
//	u32 snapMagic, u32 windows
//	per window: u32 panes; per pane: i64 start, u32 groups;
//	per group: u32 key length, key, metrics x u64, u8 dirty
const snapMagic = 0x31534757 // "WGS1"

func (e *engine) snapshot() []byte {
	g := e.groups
	le := binary.LittleEndian
	b := le.AppendUint32(e.snap[:0], snapMagic)
	b = le.AppendUint32(b, uint32(len(g.windows)))
	for w := range g.windows {
		b = le.AppendUint32(b, uint32(len(g.panes[w])))
		for start, p := range g.panes[w] {
			b = le.AppendUint64(b, uint64(start))
			b = le.AppendUint32(b, uint32(len(p.groups)))
			for _, gr := range p.groups {
				b = le.AppendUint32(b, uint32(len(gr.key)))
				b = append(b, gr.key...)
				for _, v := range gr.vals {
					b = le.AppendUint64(b, v)
				}
				if gr.dirty {
					b = append(b, 1)
				} else {
					b = append(b, 0)
				}
			}
		}
	}
	e.snap = b
	return b
}

var errSnapshot = errors.New("wagg: malformed snapshot")

// restore replaces the state with a snapshot's. On error the state is empty.
func (e *engine) restore(b []byte) error {
	old := e.groups
	g := newGroups(old.windows, e.schema)
	e.groups = g
	le := binary.LittleEndian
	nm := len(e.schema.Metrics)
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
	if n, ok := u32(); !ok || n != len(g.windows) {
		return fmt.Errorf("%w: taken with %d windows, the deployment has %d", errSnapshot, n, len(g.windows))
	}
	for w := range g.windows {
		panes, ok := u32()
		if !ok {
			return fmt.Errorf("%w: truncated", errSnapshot)
		}
		for range panes {
			h := take(12)
			if h == nil {
				return fmt.Errorf("%w: truncated pane", errSnapshot)
			}
			p := &pane{start: int64(le.Uint64(h)), groups: map[string]*group{}}
			n := int(le.Uint32(h[8:]))
			for range n {
				kl, ok := u32()
				key := take(kl)
				body := take(8*nm + 1)
				if !ok || key == nil || body == nil {
					return fmt.Errorf("%w: truncated group", errSnapshot)
				}
				gr := &group{key: string(key), vals: make([]uint64, nm), dirty: body[8*nm] == 1}
				for j := range gr.vals {
					gr.vals[j] = le.Uint64(body[8*j:])
				}
				p.groups[gr.key] = gr
				if gr.dirty {
					p.dirty = append(p.dirty, gr)
				}
			}
			g.panes[w][p.start] = p
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
	e, err := newEngine(abi.Config{ABI: abi.Version, Windows: windows})
	if err != nil {
		return nil, err
	}
	return &Local{e: e}, nil
}

// Process folds a decoded batch in, as wagg_process would.
func (l *Local) Process(b *abi.Batch) error {
	l.e.batch.b = *b
	return l.e.run()
}

// ProcessEncoded folds in a batch in its ABI encoding.
func (l *Local) ProcessEncoded(buf []byte) error { return l.e.process(buf) }

// Flush returns the rows a flush at watermark emits.
func (l *Local) Flush(watermark int64) ([]abi.Row, error) {
	return abi.DecodeRows(l.e.groups.flush(watermark), l.e.schema, len(l.e.groups.windows), nil)
}

// Snapshot returns the state; Restore puts it back.
func (l *Local) Snapshot() []byte { return append([]byte(nil), l.e.snapshot()...) }

// Restore replaces the state with a snapshot taken by Snapshot.
func (l *Local) Restore(b []byte) error { return l.e.restore(b) }
