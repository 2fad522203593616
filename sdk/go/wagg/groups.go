package wagg

import (
	"fmt"
	"math"
	"slices"
	"strings"

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
	err     error    // the first misuse in the current batch
	order   []int64  // flush's scratch: pane starts in order
	sorted  []*group // flush's scratch: groups in key order
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

// fail records the first misuse of the batch; the key stops updating.
func (k *Key) fail(err error) {
	if k.err == nil {
		k.err = err
	}
	if k.g.err == nil {
		k.g.err = err
	}
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

// method is the Key method that fills a column of each type.
var method = map[abi.Type]string{abi.Int64: "Int64", abi.Float64: "Float64", abi.String: "String"}

func (k *Key) next(t abi.Type) bool {
	if k.err != nil {
		return false
	}
	if k.resolved {
		k.fail(fmt.Errorf("wagg: Key.%s after Add: fill every key column first", method[t]))
		return false
	}
	if k.col >= len(k.g.keys) {
		k.fail(fmt.Errorf("wagg: Key.%s fills key column %d, but the spec declares %d key columns", method[t], k.col, len(k.g.keys)))
		return false
	}
	if c := k.g.keys[k.col]; c.Type != t {
		k.fail(fmt.Errorf("wagg: key column %d %q is declared %s, but Key.%s filled it", k.col, c.Name, c.Type, method[t]))
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
		k.fail(fmt.Errorf("wagg: Add before key column %d %q was filled (%d of %d key columns filled)", k.col, k.g.keys[k.col].Name, k.col, len(k.g.keys)))
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

// known reports whether m is listed in the registered spec (Register sets
// idx), so that a stray Metric is an error rather than a panic.
func (k *Key) known(m *Metric) bool {
	if m == nil || m.idx < 0 || m.idx >= len(k.g.metrics) {
		name := "<nil>"
		if m != nil {
			name = m.def.Name
		}
		k.fail(fmt.Errorf("wagg: metric %s is not one of the registered spec's Metrics", name))
		return false
	}
	return true
}

// Add folds an int64 value into an int64 metric of the key's groups: a count
// or sum adds it, a min or max keeps the extreme. For a Count, v is usually 1.
func (k *Key) Add(m *Metric, v int64) *Key {
	if !k.resolve() || !k.known(m) {
		return k
	}
	if m.def.Type != abi.Int64 {
		k.fail(fmt.Errorf("wagg: metric %s is %s, use AddFloat", m.def.Name, m.def.Type))
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
	if !k.resolve() || !k.known(m) {
		return k
	}
	if m.def.Type != abi.Float64 {
		k.fail(fmt.Errorf("wagg: metric %s is %s, use Add", m.def.Name, m.def.Type))
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
// Rows come in a fixed order (window, start, key), whatever the history of
// the maps, so that a replay from a snapshot emits the same bytes.
func (g *Groups) flush(watermark int64) []byte {
	g.out.Reset()
	for w, win := range g.windows {
		g.order = g.order[:0]
		for start := range g.panes[w] {
			g.order = append(g.order, start)
		}
		slices.Sort(g.order)
		for _, start := range g.order {
			p := g.panes[w][start]
			if win.Closed(start, watermark) {
				for _, gr := range g.sortGroups(p.groups) {
					g.out.Append(uint8(w), true, start, gr.key, gr.vals)
				}
				clear(g.sorted) // do not keep the forgotten groups alive
				delete(g.panes[w], start)
				if g.last[w] == p {
					g.last[w] = nil
				}
				continue
			}
			slices.SortFunc(p.dirty, byKey)
			for _, gr := range p.dirty {
				g.out.Append(uint8(w), false, start, gr.key, gr.vals)
				gr.dirty = false
			}
			clear(p.dirty)
			p.dirty = p.dirty[:0]
		}
	}
	return g.out.Bytes()
}

// sortGroups returns the groups of a pane in key order, in scratch memory.
func (g *Groups) sortGroups(m map[string]*group) []*group {
	g.sorted = g.sorted[:0]
	for _, gr := range m {
		g.sorted = append(g.sorted, gr)
	}
	slices.SortFunc(g.sorted, byKey)
	return g.sorted
}

func byKey(a, b *group) int { return strings.Compare(a.key, b.key) }
