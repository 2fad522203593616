package wagg

import (
	"fmt"
	"math"

	"github.com/wagg/wagg/abi"
)

// group is the state of one group key in one window.
type group struct {
	key   string
	vals  []uint64
	dirty bool
}

// pane is one window instance (one start) of one window.
type pane struct {
	start  int64
	groups map[string]*group
	dirty  []*group
}

// Groups holds the aggregator's state: per window of the deployment, per
// window start, per group key, the metric values. Aggregators reach it
// through At.
type Groups struct {
	windows []abi.Window
	panes   []map[int64]*pane // per window
	last    []*pane           // per window, the pane used last (the common case)
	metrics []abi.Metric
	keys    []abi.Column
	idents  []uint64
	key     Key
	starts  []int64
	out     abi.RowsWriter
	rowsErr error
}

func newGroups(windows []abi.Window, s *abi.Schema) *Groups {
	g := &Groups{
		windows: windows,
		panes:   make([]map[int64]*pane, len(windows)),
		last:    make([]*pane, len(windows)),
		metrics: s.Metrics,
		keys:    s.Keys,
	}
	for i := range g.panes {
		g.panes[i] = map[int64]*pane{}
	}
	for _, m := range s.Metrics {
		g.idents = append(g.idents, identity(m))
	}
	g.key.g = g
	return g
}

// At starts the group key of a record with event time ts. Fill the key
// columns in declared order with Key's methods, then update metrics.
func (g *Groups) At(ts int64) *Key {
	k := &g.key
	k.ts, k.col, k.buf, k.resolved, k.err = ts, 0, k.buf[:0], false, nil
	return k
}

// Key is a group key being built. It is reused by the next At: do not keep it.
type Key struct {
	g        *Groups
	ts       int64
	col      int
	buf      []byte
	resolved bool
	targets  []*group
	err      error
}

func (k *Key) next(t abi.Type) bool {
	if k.col >= len(k.g.keys) || k.g.keys[k.col].Type != t {
		if k.err == nil {
			k.err = fmt.Errorf("wagg: key column %d filled as %s, but the spec declares %d key columns: %v", k.col, t, len(k.g.keys), k.g.keys)
		}
		return false
	}
	k.col++
	return true
}

// Int64 fills the next key column, which must be declared Int64Key.
func (k *Key) Int64(v int64) *Key {
	if k.next(abi.Int64) {
		k.buf = abi.AppendKeyInt64(k.buf, v)
	}
	return k
}

// Float64 fills the next key column, which must be declared Float64Key.
func (k *Key) Float64(v float64) *Key {
	if k.next(abi.Float64) {
		k.buf = abi.AppendKeyFloat64(k.buf, v)
	}
	return k
}

// String fills the next key column, which must be declared StringKey.
func (k *Key) String(v []byte) *Key {
	if k.next(abi.String) {
		k.buf = abi.AppendKeyString(k.buf, v)
	}
	return k
}

// resolve finds (or creates) the group of this key in every window the
// record's time falls in.
func (k *Key) resolve() bool {
	if k.resolved {
		return k.err == nil
	}
	k.resolved = true
	if k.err == nil && k.col != len(k.g.keys) {
		k.err = fmt.Errorf("wagg: %d of %d key columns filled", k.col, len(k.g.keys))
	}
	if k.err != nil {
		return false
	}
	g := k.g
	k.targets = k.targets[:0]
	for w := range g.windows {
		g.starts = g.windows[w].Starts(k.ts, g.starts[:0])
		for _, s := range g.starts {
			k.targets = append(k.targets, g.lookup(w, s, k.buf))
		}
	}
	return true
}

func (g *Groups) lookup(w int, start int64, key []byte) *group {
	p := g.last[w]
	if p == nil || p.start != start {
		p = g.panes[w][start]
		if p == nil {
			p = &pane{start: start, groups: map[string]*group{}}
			g.panes[w][start] = p
		}
		g.last[w] = p
	}
	gr := p.groups[string(key)]
	if gr == nil {
		gr = &group{key: string(key), vals: append([]uint64(nil), g.idents...)}
		p.groups[gr.key] = gr
	}
	if !gr.dirty {
		gr.dirty = true
		p.dirty = append(p.dirty, gr)
	}
	return gr
}

// Add folds an int64 value into an int64 metric of the key's groups: a count
// or sum adds it, a min or max keeps the extreme. For a Count, v is usually 1.
func (k *Key) Add(m *Metric, v int64) *Key {
	if !k.resolve() {
		return k
	}
	if m.def.Type != abi.Int64 {
		k.err = fmt.Errorf("wagg: metric %s is %s, use AddFloat", m.def.Name, m.def.Type)
		return k
	}
	j := m.idx
	for _, gr := range k.targets {
		cur := int64(gr.vals[j])
		switch m.def.Kind {
		case abi.Min:
			cur = min(cur, v)
		case abi.Max:
			cur = max(cur, v)
		default:
			cur += v
		}
		gr.vals[j] = uint64(cur)
	}
	return k
}

// AddFloat folds a float64 value into a float64 metric.
func (k *Key) AddFloat(m *Metric, v float64) *Key {
	if !k.resolve() {
		return k
	}
	if m.def.Type != abi.Float64 {
		k.err = fmt.Errorf("wagg: metric %s is %s, use Add", m.def.Name, m.def.Type)
		return k
	}
	j := m.idx
	for _, gr := range k.targets {
		cur := math.Float64frombits(gr.vals[j])
		switch m.def.Kind {
		case abi.Min:
			cur = math.Min(cur, v)
		case abi.Max:
			cur = math.Max(cur, v)
		default:
			cur += v
		}
		gr.vals[j] = math.Float64bits(cur)
	}
	return k
}

// flush writes the rows of every changed group, and every group of each
// window that watermark closed (final), then forgets the closed windows.
func (g *Groups) flush(watermark int64) []byte {
	g.out.Reset()
	for w, win := range g.windows {
		for start, p := range g.panes[w] {
			if win.Closed(start, watermark) {
				for _, gr := range p.groups {
					g.out.Append(uint8(w), true, start, gr.key, gr.vals)
				}
				delete(g.panes[w], start)
				if g.last[w] == p {
					g.last[w] = nil
				}
				continue
			}
			for _, gr := range p.dirty {
				g.out.Append(uint8(w), false, start, gr.key, gr.vals)
				gr.dirty = false
			}
			p.dirty = p.dirty[:0]
		}
	}
	return g.out.Bytes()
}
