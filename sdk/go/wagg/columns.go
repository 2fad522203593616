package wagg

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wagg/wagg/abi"
)

// Columns is the batch-at-a-time form of At: the group keys of all records
// of a batch, filled a key column at a time, and each metric updated for
// all records by one call. It folds in exactly what the same calls through
// At would, record by record, and is the faster form: the work runs in
// loops over columns, where At pays for calls and checks per record.
//
//	g.Columns(b).Int64(b.Int64s(poll)).String(b.Strings(option)).Count(votes)
//
// Fill the key columns in declared order, then update metrics; misuse fails
// the batch as with At. Columns is reused by the next call of g.Columns: do
// not keep it.
type Columns struct {
	g     *Groups
	times []int64
	n     int
	cols  []keyColumn // the key columns filled so far
	state colState
	err   error
	// ends[i] is the end of record i's key in keys.
	ends []uint32
	keys []byte
	// per window, per record: the record's group as an index into panes
	// (high 32 bits) and the group's first value in that pane's vals (low
	// 32 bits); noTarget when no window of it holds the record's time.
	refs [][]uint64
	// hopping windows: a record falls in several panes of one; more lists
	// the record and the target of each beyond refs'.
	more  [][]extraRef
	panes []*pane
	// pane start per record for the window being resolved (scratch)
	starts []int64
}

type colState uint8

const (
	colFilling colState = iota
	colResolved
	colFailed
)

type keyColumn struct {
	t      keyType
	ints   []int64
	floats []float64
	strs   *abi.BatchColumn
}

type extraRef struct {
	i   uint32
	ref uint64
}

const noTarget = ^uint64(0)

// Columns starts the group keys of all of b's records, at their event
// times. Fill the key columns, each with one value per record, then update
// metrics.
func (g *Groups) Columns(b *Batch) *Columns {
	c := &g.cols
	c.g, c.times, c.n = g, b.b.Times, len(b.b.Times)
	c.cols, c.state, c.err = c.cols[:0], colFilling, nil
	return c
}

func (c *Columns) fail(err error) {
	c.state = colFailed
	if c.err == nil {
		c.err = err
	}
	if c.g.err == nil {
		c.g.err = err
	}
}

func (c *Columns) fill(t keyType, col keyColumn, n int) *Columns {
	switch {
	case c.state == colFailed:
	case c.state == colResolved:
		c.fail(fmt.Errorf("wagg: Columns.%s after a metric update: fill every key column first", method[t]))
	case len(c.cols) >= len(c.g.keys):
		c.fail(fmt.Errorf("wagg: Columns.%s fills key column %d, but the spec declares %d key columns", method[t], len(c.cols), len(c.g.keys)))
	case c.g.types[len(c.cols)] != t:
		k := c.g.keys[len(c.cols)]
		c.fail(fmt.Errorf("wagg: key column %d %q is declared %s, but Columns.%s filled it", len(c.cols), k.Name, k.Type, method[t]))
	case n != c.n:
		c.fail(fmt.Errorf("wagg: Columns.%s for key column %d %q got %d values for %d records", method[t], len(c.cols), c.g.keys[len(c.cols)].Name, n, c.n))
	default:
		col.t = t
		c.cols = append(c.cols, col)
	}
	return c
}

// Int64 fills the next key column, which must be declared Int64Key, with
// one value per record.
func (c *Columns) Int64(v []int64) *Columns {
	return c.fill(keyInt64, keyColumn{ints: v}, len(v))
}

// Float64 fills the next key column, which must be declared Float64Key,
// with one value per record.
func (c *Columns) Float64(v []float64) *Columns {
	return c.fill(keyFloat64, keyColumn{floats: v}, len(v))
}

// String fills the next key column, which must be declared StringKey, with
// the batch's string column v.
func (c *Columns) String(v Strings) *Columns {
	n := len(v.c.Offsets) - 1
	if n < 0 {
		n = 0
	}
	return c.fill(keyString, keyColumn{strs: v.c}, n)
}

// build lays the records' keys out back to back, a column at a time.
func (c *Columns) build() {
	n := c.n
	ends := grow32(c.ends, n)
	for i := range ends {
		ends[i] = 0
	}
	// the width of each record's key, then its end
	for _, col := range c.cols {
		if col.t != keyString {
			for i := range ends {
				ends[i] += 8
			}
			continue
		}
		offs := col.strs.Offsets[:n+1]
		for i := range ends {
			ends[i] += 4 + offs[i+1] - offs[i]
		}
	}
	total := uint32(0)
	for i, w := range ends {
		total += w
		ends[i] = total
	}
	keys := c.keys[:0]
	if cap(keys) < int(total) {
		keys = make([]byte, total, total+total/4)
	}
	keys = keys[:total]
	// each column into every key: at is where the column goes in record i's key
	at := grow32(c.g.scratch32, n)
	from := uint32(0)
	for i, e := range ends {
		at[i] = from
		from = e
	}
	le := binary.LittleEndian
	for _, col := range c.cols {
		switch col.t {
		case keyInt64:
			v := col.ints[:n]
			for i, o := range at {
				le.PutUint64(keys[o:], uint64(v[i]))
				at[i] = o + 8
			}
		case keyFloat64:
			v := col.floats[:n]
			for i, o := range at {
				le.PutUint64(keys[o:], math.Float64bits(v[i]))
				at[i] = o + 8
			}
		default:
			offs, data := col.strs.Offsets[:n+1], col.strs.Data
			for i, o := range at {
				s := data[offs[i]:offs[i+1]]
				le.PutUint32(keys[o:], uint32(len(s)))
				copy(keys[o+4:], s)
				at[i] = o + 4 + uint32(len(s))
			}
		}
	}
	c.g.scratch32 = at
	c.ends, c.keys = ends, keys
}

func grow32(b []uint32, n int) []uint32 {
	if cap(b) < n {
		return make([]uint32, n, n+n/4)
	}
	return b[:n]
}

func grow64(b []uint64, n int) []uint64 {
	if cap(b) < n {
		return make([]uint64, n, n+n/4)
	}
	return b[:n]
}

// resolve finds (or creates) every record's group in every window its time
// falls in, window by window, records in order: groups are created in the
// order the record-at-a-time path creates them.
func (c *Columns) resolve() bool {
	switch c.state {
	case colResolved:
		return true
	case colFailed:
		return false
	}
	g := c.g
	if len(c.cols) != len(g.keys) {
		col := len(c.cols)
		c.fail(fmt.Errorf("wagg: metric update before key column %d %q was filled (%d of %d key columns filled)", col, g.keys[col].Name, col, len(g.keys)))
		return false
	}
	c.state = colResolved
	c.build()
	n := c.n
	hs := grow64(g.scratch64, n)
	from := uint32(0)
	for i, e := range c.ends {
		hs[i] = hashKey(c.keys[from:e])
		from = e
	}
	g.scratch64 = hs
	for len(c.refs) < len(g.windows) {
		c.refs = append(c.refs, nil)
		c.more = append(c.more, nil)
	}
	c.panes = c.panes[:0]
	for w, kind := range g.kinds {
		refs := grow64(c.refs[w], n)
		c.refs[w] = refs
		c.more[w] = c.more[w][:0]
		var ok bool
		switch kind {
		case winGlobal:
			ok = c.resolveGlobal(w, hs, refs)
		case winTumbling:
			ok = c.resolveTumbling(w, hs, refs)
		default:
			ok = c.resolveHopping(w, hs, refs)
		}
		if !ok {
			return false
		}
	}
	return true
}

// paneRef is the index of p in c.panes, which it joins if new; the last
// one is checked first (records of a batch mostly share panes).
func (c *Columns) paneRef(p *pane) uint64 {
	for i := len(c.panes) - 1; i >= 0; i-- {
		if c.panes[i] == p {
			return uint64(i)
		}
	}
	c.panes = append(c.panes, p)
	return uint64(len(c.panes) - 1)
}

// pending marks a record's target whose pane is known (the high 32 bits)
// and whose group is still to be found.
const pending = 0xffffffff

// lookup finds (or creates) the group of every pending target of refs in
// its pane and marks it changed, records in order; false on the host's
// limit. The probe is pane.lookup's written out: in Wasm a call per record
// costs more than the probe.
func (c *Columns) lookup(w int, hs, refs []uint64) bool {
	g := c.g
	keys, ends := c.keys, c.ends
	last := noTarget
	var p *pane
	var slots []uint32
	var mask uint64
	for i, r := range refs {
		if uint32(r) != pending || r == noTarget {
			continue
		}
		if r>>32 != last {
			last = r >> 32
			p = c.panes[last]
			slots, mask = p.slots, uint64(len(p.slots)-1)
		}
		from := uint32(0)
		if i > 0 {
			from = ends[i-1]
		}
		key, h := keys[from:ends[i]], hs[i]
		var gi uint32
		for j := h & mask; ; j = (j + 1) & mask {
			s := slots[j]
			if s == 0 {
				var err error
				if gi, err = g.create(w, p, key, h, j); err != nil {
					c.fail(err)
					return false
				}
				slots, mask = p.slots, uint64(len(p.slots)-1)
				break
			}
			if p.hashes[s-1] == h {
				a := uint32(0)
				if s > 1 {
					a = p.ends[s-2]
				}
				if k := p.keys[a:p.ends[s-1]]; len(k) == len(key) && sameKey(k, key) {
					gi = s - 1
					break
				}
			}
		}
		if !p.marked[gi] {
			p.marked[gi] = true
			p.dirty = append(p.dirty, gi)
		}
		refs[i] = r&^pending | uint64(gi*uint32(p.nm))
	}
	return true
}

func (c *Columns) resolveGlobal(w int, hs, refs []uint64) bool {
	g := c.g
	p := g.pane(w, 0)
	pr := c.paneRef(p)<<32 | pending
	// the link from the first tumbling window's groups (Key.resolve)
	var from []uint64
	if w == g.linkW {
		for v := range w {
			if g.kinds[v] == winTumbling {
				from = c.refs[v]
				break
			}
		}
	}
	if from == nil {
		for i := range refs {
			refs[i] = pr
		}
		return c.lookup(w, hs, refs)
	}
	nm := uint32(p.nm)
	for i, r := range from {
		refs[i] = pr
		if r == noTarget {
			continue
		}
		lp := c.panes[r>>32]
		if l := lp.link[uint32(r)/uint32(lp.nm)]; l != 0 {
			if !p.marked[l-1] {
				p.marked[l-1] = true
				p.dirty = append(p.dirty, l-1)
			}
			refs[i] = pr&^pending | uint64((l-1)*nm)
		}
	}
	if !c.lookup(w, hs, refs) {
		return false
	}
	for i, r := range from {
		if r != noTarget {
			lp := c.panes[r>>32]
			lp.link[uint32(r)/uint32(lp.nm)] = uint32(refs[i])/nm + 1
		}
	}
	return true
}

func (c *Columns) resolveTumbling(w int, hs, refs []uint64) bool {
	g := c.g
	size := g.windows[w].SizeMs
	var pr uint64
	lo, hi := int64(1), int64(0) // the current pane's times: [lo, hi]
	for i, ts := range c.times[:len(refs)] {
		if ts < lo || ts > hi {
			m := ts % size
			if m < 0 {
				m += size
			}
			if ts < math.MinInt64+m { // no window holds ts (the host dead-letters it)
				refs[i] = noTarget
				continue
			}
			start := ts - m
			pr = c.paneRef(g.pane(w, start))<<32 | pending
			lo, hi = start, start+(size-1)
			if hi < start { // past MaxInt64
				hi = math.MaxInt64
			}
		}
		refs[i] = pr
	}
	return c.lookup(w, hs, refs)
}

func (c *Columns) resolveHopping(w int, hs, refs []uint64) bool {
	g := c.g
	for i, h := range hs {
		refs[i] = noTarget
		g.starts = g.windows[w].Starts(c.times[i], g.starts[:0])
		from := uint32(0)
		if i > 0 {
			from = c.ends[i-1]
		}
		key := c.keys[from:c.ends[i]]
		for _, s := range g.starts {
			p := g.pane(w, s)
			gi, slot, ok := p.lookup(key, h)
			if !ok {
				var err error
				if gi, err = g.create(w, p, key, h, slot); err != nil {
					c.fail(err)
					return false
				}
			}
			p.touch(gi)
			ref := c.paneRef(p)<<32 | uint64(gi*uint32(p.nm))
			if refs[i] == noTarget {
				refs[i] = ref
			} else {
				c.more[w] = append(c.more[w], extraRef{uint32(i), ref})
			}
		}
	}
	return true
}

// metric checks m for an update of values of n records; false after misuse.
func (c *Columns) metric(m *Metric, n int, name string) bool {
	if !c.resolve() {
		return false
	}
	switch {
	case m == nil || uint(m.idx) >= uint(len(c.g.metrics)):
		nm := "<nil>"
		if m != nil {
			nm = m.def.Name
		}
		c.fail(fmt.Errorf("wagg: metric %s is not one of the registered spec's Metrics", nm))
	case n != c.n:
		c.fail(fmt.Errorf("wagg: Columns.%s of metric %s got %d values for %d records", name, m.def.Name, n, c.n))
	default:
		return true
	}
	return false
}

// each calls f with every target's values and the record's index.
func (c *Columns) each(j int, f func(vals []uint64, at uint32, i int)) {
	for w, refs := range c.refs[:len(c.g.windows)] {
		for i, r := range refs {
			if r != noTarget {
				f(c.panes[r>>32].vals, uint32(r)+uint32(j), i)
			}
		}
		for _, e := range c.more[w] {
			f(c.panes[e.ref>>32].vals, uint32(e.ref)+uint32(j), int(e.i))
		}
	}
}

func (c *Columns) intMetric(m *Metric, name string) bool {
	switch {
	case m.float:
		c.fail(fmt.Errorf("wagg: metric %s is %s, use Columns.AddFloat", m.def.Name, m.def.Type))
	case m.op == opDistinct:
		c.fail(fmt.Errorf("wagg: metric %s is a distinct count, use Columns.AddDistinct", m.def.Name))
	default:
		return true
	}
	return false
}

// Count adds 1 per record to an int64 metric of the records' groups (a
// Count, usually).
func (c *Columns) Count(m *Metric) *Columns {
	if !c.metric(m, c.n, "Count") || !c.intMetric(m, "Count") {
		return c
	}
	if m.op != opAdd {
		c.fold(m, nil, 1)
		return c
	}
	j := uint32(m.idx)
	for w, refs := range c.refs[:len(c.g.windows)] {
		var vals []uint64
		last := noTarget
		for _, r := range refs {
			if r == noTarget {
				continue
			}
			if r>>32 != last {
				last = r >> 32
				vals = c.panes[last].vals
			}
			vals[uint32(r)+j]++
		}
		for _, e := range c.more[w] {
			c.panes[e.ref>>32].vals[uint32(e.ref)+j]++
		}
	}
	return c
}

// Add folds one int64 value per record into an int64 metric of the
// records' groups, as Key.Add does.
func (c *Columns) Add(m *Metric, v []int64) *Columns {
	if !c.metric(m, len(v), "Add") || !c.intMetric(m, "Add") {
		return c
	}
	c.fold(m, v, 0)
	return c
}

// fold folds v (or, with v nil, one) into int64 metric m.
func (c *Columns) fold(m *Metric, v []int64, one int64) {
	op := m.op
	c.each(m.idx, func(vals []uint64, at uint32, i int) {
		x := one
		if v != nil {
			x = v[i]
		}
		cur := int64(vals[at])
		switch op {
		case opMin:
			cur = min(cur, x)
		case opMax:
			cur = max(cur, x)
		default:
			cur += x
		}
		vals[at] = uint64(cur)
	})
}

// AddFloat folds one float64 value per record into a float64 metric, as
// Key.AddFloat does.
func (c *Columns) AddFloat(m *Metric, v []float64) *Columns {
	if !c.metric(m, len(v), "AddFloat") {
		return c
	}
	switch {
	case m.op == opDistinct:
		c.fail(fmt.Errorf("wagg: metric %s is a distinct count, use Columns.AddDistinct", m.def.Name))
		return c
	case !m.float:
		c.fail(fmt.Errorf("wagg: metric %s is %s, use Columns.Add", m.def.Name, m.def.Type))
		return c
	}
	op, avg := m.op, m.avg
	c.each(m.idx, func(vals []uint64, at uint32, i int) {
		if avg {
			vals[at] = math.Float64bits(math.Float64frombits(vals[at]) + v[i])
			vals[at+1]++
			return
		}
		cur := math.Float64frombits(vals[at])
		switch op {
		case opMin:
			cur = math.Min(cur, v[i])
		case opMax:
			cur = math.Max(cur, v[i])
		default:
			cur += v[i]
		}
		vals[at] = math.Float64bits(cur)
	})
	return c
}

// AddDistinct folds one int64 value per record into a Distinct metric of
// the records' groups.
func (c *Columns) AddDistinct(m *Metric, v []int64) *Columns {
	if c.distinct(m, len(v), "AddDistinct") {
		c.sketches(m, func(i int) uint64 { return abi.HashInt64(v[i]) })
	}
	return c
}

// AddDistinctString folds one string per record into a Distinct metric of
// the records' groups.
func (c *Columns) AddDistinctString(m *Metric, v Strings) *Columns {
	if c.distinct(m, len(v.c.Offsets)-1, "AddDistinctString") {
		c.sketches(m, func(i int) uint64 { return abi.HashString(v.At(i)) })
	}
	return c
}

func (c *Columns) distinct(m *Metric, n int, name string) bool {
	if !c.metric(m, n, name) {
		return false
	}
	if m.op != opDistinct {
		c.fail(fmt.Errorf("wagg: metric %s is a %s, use Columns.Add or Columns.AddFloat", m.def.Name, m.def.Kind))
		return false
	}
	return true
}

func (c *Columns) sketches(m *Metric, hash func(i int) uint64) {
	for w, refs := range c.refs[:len(c.g.windows)] {
		for i, r := range refs {
			if r != noTarget {
				p := c.panes[r>>32]
				p.sketches[p.vals[uint32(r)+uint32(m.idx)]].AddHash(hash(i))
			}
		}
		for _, e := range c.more[w] {
			p := c.panes[e.ref>>32]
			p.sketches[p.vals[uint32(e.ref)+uint32(m.idx)]].AddHash(hash(int(e.i)))
		}
	}
}
