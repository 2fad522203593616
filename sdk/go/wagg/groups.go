package wagg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/wagg/wagg/abi"
)

// Groups holds the aggregator's state: per window of the deployment, per
// window start, per group key, the metric values. Aggregators reach it
// through At.
type Groups struct {
	windows []abi.Window
	panes   []map[int64]*pane // per window
	last    []*pane           // per window, the pane used last (the common case)
	metrics []abi.Metric
	keys    []abi.Column
	kinds   []winKind // per window
	types   []keyType // per key column
	idents  []uint64
	// distinct lists the distinct metrics; sketches is flush's scratch
	// (a row's sketch per metric, nil for the others).
	distinct []int
	sketches []*abi.Sketch
	key      Key
	cols     Columns
	// scratch of Columns
	scratch32 []uint32
	scratch64 []uint64
	starts    []int64
	out       abi.RowsWriter
	err       error   // the first misuse in the current batch
	order     []int64 // scratch: pane starts in order
	// maxGroups is the host's limit of groups per pane (abi.Config.MaxGroups); 0: none.
	maxGroups int
	// linkW is the first global window if another window comes before it,
	// else -1: a record's group in a tumbling window before it links to the
	// key's group in its one pane (Key.resolve).
	linkW int
}

type winKind uint8

const (
	winGlobal winKind = iota
	winTumbling
	winHopping
)

type keyType uint8

const (
	keyInt64 keyType = iota
	keyFloat64
	keyString
)

var keyTypes = map[abi.Type]keyType{abi.Int64: keyInt64, abi.Float64: keyFloat64, abi.String: keyString}

// target is one group a key resolved to.
type target struct {
	p *pane
	g uint32
}

func newGroups(windows []abi.Window, s *abi.Schema, maxGroups int) *Groups {
	g := &Groups{
		windows:   windows,
		maxGroups: maxGroups,
		panes:     make([]map[int64]*pane, len(windows)),
		last:      make([]*pane, len(windows)),
		metrics:   s.Metrics,
		keys:      s.Keys,
	}
	for i := range g.panes {
		g.panes[i] = map[int64]*pane{}
	}
	for j, m := range s.Metrics {
		g.idents = append(g.idents, identity(m))
		if m.Kind == abi.Distinct {
			g.distinct = append(g.distinct, j)
		}
	}
	if len(g.distinct) > 0 {
		g.sketches = make([]*abi.Sketch, len(s.Metrics))
	}
	for _, c := range s.Keys {
		g.types = append(g.types, keyTypes[c.Type])
	}
	for _, w := range windows {
		k := winHopping
		switch w.Kind {
		case abi.Global:
			k = winGlobal
		case abi.Tumbling:
			k = winTumbling
		}
		g.kinds = append(g.kinds, k)
	}
	g.linkW = -1
	for w := 1; w < len(g.kinds); w++ {
		if g.kinds[w] == winGlobal {
			g.linkW = w
			break
		}
	}
	g.key.g, g.key.types = g, g.types
	return g
}

// At starts the group key of a record with event time ts. Fill the key
// columns in declared order with Key's methods, then update metrics.
func (g *Groups) At(ts int64) *Key {
	k := &g.key
	k.ts, k.col, k.buf, k.h, k.resolved, k.err = ts, 0, k.buf[:0], hashSeed, false, nil
	return k
}

// closed is Key.col once the key is resolved or failed: no column fits.
const closed = math.MaxInt

// fail records the first misuse of the batch; the key stops updating.
func (k *Key) fail(err error) {
	k.col = closed
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
	types    []keyType // Groups.types
	ts       int64
	col      int
	buf      []byte
	h        uint64 // the hash of the columns filled (hashKey)
	resolved bool
	targets  []target
	err      error
}

// method is the Key method that fills a column of each type.
var method = map[keyType]string{keyInt64: "Int64", keyFloat64: "Float64", keyString: "String"}

func (k *Key) misuse(t keyType) {
	switch {
	case k.err != nil:
	case k.resolved:
		k.fail(fmt.Errorf("wagg: Key.%s after Add: fill every key column first", method[t]))
	case k.col >= len(k.g.keys):
		k.fail(fmt.Errorf("wagg: Key.%s fills key column %d, but the spec declares %d key columns", method[t], k.col, len(k.g.keys)))
	default:
		c := k.g.keys[k.col]
		k.fail(fmt.Errorf("wagg: key column %d %q is declared %s, but Key.%s filled it", k.col, c.Name, c.Type, method[t]))
	}
}

// Int64, Float64 and String check inline that the next key column is of
// their type and the key has room (in Wasm a call costs more than the
// check); make is their slow path: it reports the same, growing the key when the column fits, and records
// misuse (a column of another type, too many columns, a column after Add).
func (k *Key) make(t keyType, n int) bool {
	if c := k.col; c < len(k.types) && k.types[c] == t {
		k.buf = slices.Grow(k.buf, n)
		return true
	}
	k.misuse(t)
	return false
}

// Int64 fills the next key column, which must be declared Int64Key.
func (k *Key) Int64(v int64) *Key {
	if c := k.col; c < len(k.types) && k.types[c] == keyInt64 && cap(k.buf)-len(k.buf) >= 8 || k.make(keyInt64, 8) {
		k.col++
		n := len(k.buf)
		k.buf = k.buf[:n+8]
		binary.LittleEndian.PutUint64(k.buf[n:], uint64(v))
		k.h = mix(k.h, uint64(v))
	}
	return k
}

// Float64 fills the next key column, which must be declared Float64Key.
func (k *Key) Float64(v float64) *Key {
	if c := k.col; c < len(k.types) && k.types[c] == keyFloat64 && cap(k.buf)-len(k.buf) >= 8 || k.make(keyFloat64, 8) {
		k.col++
		n := len(k.buf)
		k.buf = k.buf[:n+8]
		binary.LittleEndian.PutUint64(k.buf[n:], math.Float64bits(v))
		k.h = mix(k.h, math.Float64bits(v))
	}
	return k
}

// String fills the next key column, which must be declared StringKey.
func (k *Key) String(v []byte) *Key {
	if c := k.col; c < len(k.types) && k.types[c] == keyString && cap(k.buf)-len(k.buf) >= 4+len(v) || k.make(keyString, 4+len(v)) {
		k.col++
		n := len(k.buf)
		k.buf = k.buf[:n+4+len(v)]
		binary.LittleEndian.PutUint32(k.buf[n:], uint32(len(v)))
		if d := k.buf[n+4:]; len(v) >= 8 && len(v) <= 16 {
			// the first and the last 8 bytes, overlapping: in Wasm, copy
			// is three calls deep
			le := binary.LittleEndian
			le.PutUint64(d, le.Uint64(v))
			le.PutUint64(d[len(v)-8:], le.Uint64(v[len(v)-8:]))
		} else {
			copy(d, v)
		}
		k.h = hashString(k.h, v)
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
	k.col = closed
	if k.err != nil {
		return false
	}
	g := k.g
	h := finish(k.h)
	k.targets = k.targets[:0]
	// The record's first group, in a tumbling window, links to its group in
	// the first global window's one pane, which lives as long as the panes
	// do: a key seen again in the same pane skips the second lookup.
	var lp *pane
	var lg uint32
	for w, kind := range g.kinds {
		switch kind {
		case winGlobal:
			switch {
			case w != g.linkW || lp == nil:
				k.target(w, 0, h)
			case lp.groups[lg].link != 0:
				p, l := g.pane(w, 0), lp.groups[lg].link-1
				p.touch(l)
				k.targets = append(k.targets, target{p, l})
			default:
				if i, ok := k.target(w, 0, h); ok {
					lp.groups[lg].link = i + 1
				}
			}
		case winTumbling:
			size := g.windows[w].SizeMs
			m := k.ts % size
			if m < 0 {
				m += size
			}
			if k.ts >= math.MinInt64+m { // else no window holds ts (the host dead-letters it)
				if i, ok := k.target(w, k.ts-m, h); ok && lp == nil {
					lp, lg = k.targets[len(k.targets)-1].p, i
				}
			}
		default:
			g.starts = g.windows[w].Starts(k.ts, g.starts[:0])
			for _, s := range g.starts {
				k.target(w, s, h)
			}
		}
	}
	return k.err == nil
}

// ErrTooManyGroups fails a batch with a record that would create a group in
// a pane that holds the host's limit already (abi.Config.MaxGroups, the
// host's sandbox.max_groups_per_pane). The host dead-letters such records
// (plugin_error); the groups that exist go on counting.
var ErrTooManyGroups = errors.New("wagg: too many groups in one pane")

// target finds (or creates) the key's group in the pane of window w at
// start, and marks it changed; false on the host's limit.
func (k *Key) target(w int, start int64, h uint64) (uint32, bool) {
	g := k.g
	p := g.pane(w, start)
	// pane.lookup written out
	i, slot, ok := uint32(0), uint64(0), false
	key := k.buf
	for mask, j := uint64(len(p.slots)-1), h&uint64(len(p.slots)-1); ; j = (j + 1) & mask {
		s := p.slots[j]
		if s == 0 {
			slot = j
			break
		}
		if gr := &p.groups[s-1]; gr.hash == h {
			if a := p.keys[gr.from:gr.to]; len(a) == len(key) && sameKey(a, key) {
				i, ok = s-1, true
				break
			}
		}
	}
	if !ok {
		var err error
		if i, err = g.create(w, p, key, h, slot); err != nil {
			k.fail(err)
			return 0, false
		}
	}
	p.touch(i)
	k.targets = append(k.targets, target{p, i})
	return i, true
}

// sameKey compares two keys of the same length. One of 8 to 24 bytes (an
// int64 and a short string, say) is compared as two or three overlapping
// words: in Wasm, comparing strings is two calls.
func sameKey(a, b []byte) bool {
	le, n := binary.LittleEndian, len(b)
	switch {
	case n < 8 || n > 24:
		return string(a) == string(b)
	case n > 16 && le.Uint64(a[8:]) != le.Uint64(b[8:]):
		return false
	}
	return le.Uint64(a) == le.Uint64(b) && le.Uint64(a[n-8:]) == le.Uint64(b[n-8:])
}

// create adds key's group to pane p of window w in the empty slot; an
// error at the host's limit of groups per pane.
func (g *Groups) create(w int, p *pane, key []byte, h, slot uint64) (uint32, error) {
	if g.maxGroups > 0 && p.len() >= g.maxGroups {
		return 0, fmt.Errorf("%w: window %q, pane at %d holds %d groups, the host's limit (sandbox.max_groups_per_pane); a key with fewer distinct values, or a higher limit, is needed",
			ErrTooManyGroups, g.windows[w].Name, p.start, p.len())
	}
	return p.insert(key, h, g.idents, g.distinct, slot), nil
}

// pane returns the pane of window w starting at start, creating it.
func (g *Groups) pane(w int, start int64) *pane {
	p := g.last[w]
	if p == nil || p.start != start {
		p = g.panes[w][start]
		if p == nil {
			p = newPane(start, len(g.metrics))
			g.panes[w][start] = p
		}
		g.last[w] = p
	}
	return p
}

// known reports whether m is listed in the registered spec (Register sets
// idx), so that a stray Metric is an error rather than a panic.
func (k *Key) known(m *Metric) bool {
	if m != nil && uint(m.idx) < uint(len(k.g.metrics)) {
		return true
	}
	return k.unknown(m)
}

func (k *Key) unknown(m *Metric) bool {
	name := "<nil>"
	if m != nil {
		name = m.def.Name
	}
	k.fail(fmt.Errorf("wagg: metric %s is not one of the registered spec's Metrics", name))
	return false
}

// Add folds an int64 value into an int64 metric of the key's groups: a count
// or sum adds it, a min or max keeps the extreme. For a Count, v is usually 1.
func (k *Key) Add(m *Metric, v int64) *Key {
	if !k.resolve() || !k.known(m) {
		return k
	}
	if m.float {
		k.fail(fmt.Errorf("wagg: metric %s is %s, use AddFloat", m.def.Name, m.def.Type))
		return k
	}
	if m.op == opDistinct {
		k.fail(fmt.Errorf("wagg: metric %s is a distinct count, use AddDistinct", m.def.Name))
		return k
	}
	j := m.idx
	for _, t := range k.targets {
		val := &t.p.vals[int(t.g)*t.p.nm+j]
		*val = foldInt(m.op, *val, v)
	}
	return k
}

// foldInt folds v into an int64 metric's value cur by the metric's op.
func foldInt(op op, cur uint64, v int64) uint64 {
	c := int64(cur)
	switch op {
	case opMin:
		c = min(c, v)
	case opMax:
		c = max(c, v)
	default:
		c += v
	}
	return uint64(c)
}

// foldFloat folds v into a float64 metric's value (its bits) cur.
func foldFloat(op op, cur uint64, v float64) uint64 {
	c := math.Float64frombits(cur)
	switch op {
	case opMin:
		c = math.Min(c, v)
	case opMax:
		c = math.Max(c, v)
	default:
		c += v
	}
	return math.Float64bits(c)
}

// AddFloat folds a float64 value into a float64 metric; into an Average,
// it adds v to the sum and 1 to the count.
func (k *Key) AddFloat(m *Metric, v float64) *Key {
	if !k.resolve() || !k.known(m) {
		return k
	}
	if m.op == opDistinct {
		k.fail(fmt.Errorf("wagg: metric %s is a distinct count, use AddDistinct", m.def.Name))
		return k
	}
	if !m.float {
		k.fail(fmt.Errorf("wagg: metric %s is %s, use Add", m.def.Name, m.def.Type))
		return k
	}
	j := m.idx
	if m.avg {
		for _, t := range k.targets {
			vals := t.p.vals[int(t.g)*t.p.nm+j:]
			vals[0] = math.Float64bits(math.Float64frombits(vals[0]) + v)
			vals[1]++
		}
		return k
	}
	for _, t := range k.targets {
		val := &t.p.vals[int(t.g)*t.p.nm+j]
		*val = foldFloat(m.op, *val, v)
	}
	return k
}

// AddDistinct folds an int64 value into a Distinct metric of the key's
// groups: the count goes up once per distinct value.
func (k *Key) AddDistinct(m *Metric, v int64) *Key {
	if k.distinct(m) {
		h := abi.HashInt64(v)
		for _, t := range k.targets {
			t.p.sketch(t.g, m.idx).AddHash(h)
		}
	}
	return k
}

// AddDistinctString folds a string value into a Distinct metric of the
// key's groups. The bytes are hashed, not kept.
func (k *Key) AddDistinctString(m *Metric, v []byte) *Key {
	if k.distinct(m) {
		h := abi.HashString(v)
		for _, t := range k.targets {
			t.p.sketch(t.g, m.idx).AddHash(h)
		}
	}
	return k
}

func (k *Key) distinct(m *Metric) bool {
	if !k.resolve() || !k.known(m) {
		return false
	}
	if m.op != opDistinct {
		k.fail(fmt.Errorf("wagg: metric %s is a %s, use Add or AddFloat", m.def.Name, m.def.Kind))
		return false
	}
	return true
}

// flush writes the rows of every changed group, and every group of each
// window that watermark closed (final), then forgets the closed windows.
// Rows come in a fixed order (window, start, then the order groups were
// created in), which depends only on the input, so a replay from a snapshot
// emits the same bytes.
func (g *Groups) flush(watermark int64) []byte {
	g.out.Reset()
	for w, win := range g.windows {
		for _, start := range g.paneStarts(w) {
			p := g.panes[w][start]
			if win.Closed(start, watermark) {
				g.rows(uint8(w), true, p, nil)
				delete(g.panes[w], start)
				if g.last[w] == p {
					g.last[w] = nil
				}
				continue
			}
			g.rows(uint8(w), false, p, p.dirty)
			for _, i := range p.dirty {
				p.groups[i].marked = false
			}
			p.dirty = p.dirty[:0]
		}
	}
	return g.out.Bytes()
}

// rows writes the rows of p's groups in list, or of all its groups with
// list nil. Without distinct metrics they are written in place, in one
// loop: in Wasm a call per row costs more than the row.
func (g *Groups) rows(w uint8, final bool, p *pane, list []uint32) {
	cnt := len(p.groups)
	if list != nil {
		cnt = len(list)
	}
	if len(g.distinct) > 0 {
		for k := range cnt {
			i := uint32(k)
			if list != nil {
				i = list[k]
			}
			g.out.AppendSketches(w, final, p.start, p.key(i), p.values(i), g.rowSketches(p, i))
		}
		return
	}
	nm := p.nm
	size := 0
	for k := range cnt {
		i := k
		if list != nil {
			i = int(list[k])
		}
		size += int(p.groups[i].to - p.groups[i].from)
	}
	b := g.out.Reserve(size+cnt*(10+8*nm), cnt)
	var flags byte
	if final {
		flags = abi.RowFinal
	}
	// Unchecked writes (unsafe.go): b has room for exactly these rows, a
	// group's key lies in keys and its values in vals.
	bp, kp, vp, o := data(b), data(p.keys), data(p.vals), uint32(0)
	for k := range cnt {
		i := k
		if list != nil {
			i = int(list[k])
		}
		gr := &p.groups[i]
		n := gr.to - gr.from
		*(*byte)(unsafe.Add(bp, o)) = w
		*(*byte)(unsafe.Add(bp, o+1)) = flags
		putWord(bp, o+2, uint64(p.start))
		o += 10
		if n >= 8 && n <= 24 { // as words: copy is three calls deep
			putWord(bp, o, word(kp, gr.from))
			putWord(bp, o+n-8, word(kp, gr.to-8))
			if n > 16 {
				putWord(bp, o+8, word(kp, gr.from+8))
			}
		} else {
			copy(b[o:o+n], p.keys[gr.from:gr.to])
		}
		o += n
		for j := range nm {
			putWord(bp, o, u64(vp, i*nm+j))
			o += 8
		}
	}
}

// rowSketches returns group i's sketches per metric, in scratch memory;
// nil when no metric is distinct.
func (g *Groups) rowSketches(p *pane, i uint32) []*abi.Sketch {
	for _, j := range g.distinct {
		g.sketches[j] = p.sketch(i, j)
	}
	return g.sketches
}

// paneStarts returns the starts of window w's panes in order, in scratch memory.
func (g *Groups) paneStarts(w int) []int64 {
	g.order = g.order[:0]
	for start := range g.panes[w] {
		g.order = append(g.order, start)
	}
	slices.Sort(g.order)
	return g.order
}
