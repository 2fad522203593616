package wagg

import (
	"fmt"
	"math"
	"unsafe"

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
	// ends[i] is the end of record i's key in keys.
	ends []uint32
	keys []byte
	// per window, per record: the record's group as an index into panes
	// (high 32 bits) and the group's index in that pane (low 32 bits);
	// noTarget when no window of it holds the record's time.
	refs [][]uint64
	// hopping windows: a record falls in several panes of one; more lists
	// the record and the target of each beyond refs'.
	more  [][]extraRef
	panes []*pane
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
	c.cols, c.state = c.cols[:0], colFilling
	return c
}

// fail records the first misuse of the batch (Groups.err); the columns
// stop updating.
func (c *Columns) fail(err error) {
	c.state = colFailed
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
	if v.c == nil || len(v.c.Offsets) == 0 {
		c.fail(fmt.Errorf("wagg: Columns.String for key column %d needs a string column of the batch (Batch.Strings of a String field)", len(c.cols)))
		return c
	}
	return c.fill(keyString, keyColumn{strs: v.c}, len(v.c.Offsets)-1)
}

// build lays the records' keys out back to back and hashes them (hashKey
// but its finish, which the lookups apply), a column at a time. A call per
// record costs more than the work here in Wasm, so the string column's
// hashing and copying are written out.
func (c *Columns) build() {
	n := c.n
	ends := grow(c.ends, n)
	hs := grow(c.g.scratch64, n)
	// at[i] is where the next column goes in record i's key
	at := grow(c.g.scratch32, n)
	fixed, strs := uint32(0), 0
	var offs []uint32 // the string column's offsets, when there is one
	for _, col := range c.cols {
		if col.t == keyString {
			strs++
			offs = col.strs.Offsets[:n+1]
		} else {
			fixed += 8
		}
	}
	// where each record's key starts and ends, in one pass when at most one
	// column is a string
	total := uint32(0)
	switch {
	case strs == 0:
		for i := range ends {
			at[i], hs[i] = total, hashSeed
			total += fixed
			ends[i] = total
		}
	case strs == 1:
		for i := range ends {
			at[i], hs[i] = total, hashSeed
			total += fixed + 4 + offs[i+1] - offs[i]
			ends[i] = total
		}
	default:
		for i := range ends {
			ends[i] = fixed
		}
		for _, col := range c.cols {
			if col.t == keyString {
				offs := col.strs.Offsets[:n+1]
				for i := range ends {
					ends[i] += 4 + offs[i+1] - offs[i]
				}
			}
		}
		for i, w := range ends {
			at[i], hs[i] = total, hashSeed
			total += w
			ends[i] = total
		}
	}
	keys := c.keys[:0]
	if cap(keys) < int(total) {
		keys = make([]byte, total, total+total/4)
	}
	keys = keys[:total]
	// Unchecked writes (unsafe.go): a column goes at at[i] in record i's
	// key, whose width counts it, and keys holds every key; the columns
	// hold n values (fill), a string column's offsets rise within its data
	// (the batch decoder and Local check them).
	kp, atp, hsp := data(keys), data(at), data(hs)
	for _, col := range c.cols {
		switch col.t {
		case keyInt64, keyFloat64:
			vp := data(col.ints)
			if col.t == keyFloat64 {
				vp = data(col.floats)
			}
			for i := range n {
				o, v := u32(atp, i), u64(vp, i)
				putWord(kp, o, v)
				set64(hsp, i, mix(u64(hsp, i), v))
				set32(atp, i, o+8)
			}
		default:
			sd := col.strs.Data
			op, dp := data(col.strs.Offsets), data(sd)
			for i := range n {
				o, a, b := u32(atp, i), u32(op, i), u32(op, i+1)
				ln := b - a
				set32b(kp, o, ln)
				h := mix(u64(hsp, i), uint64(ln))
				switch {
				case ln == 0:
				case ln < 8:
					// the tail as a word: the last 8 bytes before b, shifted
					// down, when the data has them
					var t uint64
					if b >= 8 {
						t = word(dp, b-8) >> (64 - 8*ln)
					} else {
						t = tail(sd[a:b])
					}
					h = mix(h, t)
					q := o + 4 // exactly ln bytes: the next ones are taken
					if ln&4 != 0 {
						set32b(kp, q, uint32(t))
						q, t = q+4, t>>32
					}
					if ln&2 != 0 {
						set16b(kp, q, uint16(t))
						q, t = q+2, t>>16
					}
					if ln&1 != 0 {
						*(*byte)(unsafe.Add(kp, q)) = byte(t)
					}
				case ln <= 16:
					w, z := word(dp, a), word(dp, b-8)
					putWord(kp, o+4, w)
					putWord(kp, o+4+ln-8, z)
					h = mix(h, w)
					if ln > 8 { // the bytes after the first 8, from z
						h = mix(h, z>>(128-8*ln))
					}
				default:
					copy(keys[o+4:o+4+ln], sd[a:b])
					h = hashString(u64(hsp, i), sd[a:b])
				}
				set64(hsp, i, h)
				set32(atp, i, o+4+ln)
			}
		}
	}
	c.g.scratch32, c.g.scratch64 = at, hs
	c.ends, c.keys = ends, keys
}

// grow returns b with length n, reusing its memory when it has room.
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n, n+n/4)
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
	n, hs := c.n, g.scratch64
	for len(c.refs) < len(g.windows) {
		c.refs = append(c.refs, nil)
		c.more = append(c.more, nil)
	}
	c.panes = c.panes[:0]
	for w, kind := range g.kinds {
		refs := grow(c.refs[w], n)
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

// lookup finds (or creates) each record's group in the pane refs names
// (in the high 32 bits, the low ones zero; noTarget: none), marks it
// changed and adds it to refs, records in order. With link (the records'
// groups in the first tumbling window, when w is the first global window),
// a record whose tumbling group links to its group here skips the probe,
// and one that does not gets the link (Key.resolve). False on the host's
// limit. The probe is pane.lookup's written out: in Wasm a call per record
// costs more than the probe.
func (c *Columns) lookup(w int, hs, refs, link []uint64) bool {
	g := c.g
	n := len(refs)
	if len(hs) < n || len(c.ends) < n || link != nil && len(link) < n {
		panic("wagg: Columns.lookup: columns shorter than the batch")
	}
	// The loop reads through unchecked pointers (unsafe.go): every index
	// is in range by construction (the batch's columns hold n values, a
	// slot index is masked, a slot holds a group's index + 1, a group's
	// key bounds lie in its pane's keys, a key of n >= 8 bytes has words
	// at 0, 8 when n > 16, and n-8). In Wasm each checked index is a
	// compare and a branch, and each slice three words the loop keeps
	// live, which Go's Wasm code spills to memory.
	keys, ends, hsp, refp := data(c.keys), data(c.ends), data(hs), data(refs)
	var linkp unsafe.Pointer
	if link != nil {
		linkp = data(link)
	}
	last, lastLink := noTarget, noTarget
	var p *pane
	var slots, groups, pkeys, lgroups unsafe.Pointer
	var mask uint64
	for i := range n {
		r := u64(refp, i)
		if r == noTarget {
			continue
		}
		if r>>32 != last {
			last = r >> 32
			p = c.panes[last]
			slots, groups, pkeys = data(p.slots), data(p.groups), data(p.keys)
			mask = uint64(len(p.slots) - 1)
		}
		var lg *group // the tumbling group to link
		if linkp != nil {
			if l := u64(linkp, i); l != noTarget {
				if l>>32 != lastLink {
					lastLink = l >> 32
					lgroups = data(c.panes[lastLink].groups)
				}
				lg = groupAt(lgroups, uint32(l))
			}
		}
		var gi uint32
		if lg != nil && lg.link != 0 {
			gi = lg.link - 1
		} else {
			from := uint32(0)
			if i > 0 {
				from = u32(ends, i-1)
			}
			to, h := u32(ends, i), finish(u64(hsp, i))
			kn := to - from
			for j := h & mask; ; j = (j + 1) & mask {
				s := u32(slots, int(j))
				if s == 0 {
					var err error
					if gi, err = g.create(w, p, c.keys[from:to], h, j); err != nil {
						c.fail(err)
						return false
					}
					slots, groups, pkeys = data(p.slots), data(p.groups), data(p.keys)
					mask = uint64(len(p.slots) - 1)
					break
				}
				gr := groupAt(groups, s-1)
				if gr.hash != h || gr.to-gr.from != kn {
					continue
				}
				// sameKey written out
				if kn < 8 || kn > 24 {
					if string(p.keys[gr.from:gr.to]) != string(c.keys[from:to]) {
						continue
					}
				} else if word(pkeys, gr.from) != word(keys, from) || word(pkeys, gr.to-8) != word(keys, to-8) ||
					kn > 16 && word(pkeys, gr.from+8) != word(keys, from+8) {
					continue
				}
				gi = s - 1
				break
			}
			if lg != nil {
				lg.link = gi + 1
			}
		}
		if gr := groupAt(groups, gi); !gr.marked {
			gr.marked = true
			p.dirty = append(p.dirty, gi)
		}
		set64(refp, i, r|uint64(gi))
	}
	return true
}

// resolveGlobal finds the records' groups in global window w's one pane.
func (c *Columns) resolveGlobal(w int, hs, refs []uint64) bool {
	g := c.g
	pr := c.paneRef(g.pane(w, 0)) << 32
	for i := range refs {
		refs[i] = pr
	}
	var link []uint64
	if w == g.linkW {
		for v := range w {
			if g.kinds[v] == winTumbling {
				link = c.refs[v]
				break
			}
		}
	}
	return c.lookup(w, hs, refs, link)
}

// resolveTumbling finds the records' groups in the panes of tumbling
// window w.
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
			pr = c.paneRef(g.pane(w, start)) << 32
			lo, hi = start, start+(size-1)
			if hi < start { // past MaxInt64
				hi = math.MaxInt64
			}
		}
		refs[i] = pr
	}
	return c.lookup(w, hs, refs, nil)
}

func (c *Columns) resolveHopping(w int, hs, refs []uint64) bool {
	g := c.g
	for i, h := range hs {
		h = finish(h)
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
			ref := c.paneRef(p)<<32 | uint64(gi)
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

// each calls f with every target's pane, the index of metric j's value
// in the pane's vals, and the record's index.
func (c *Columns) each(j int, f func(p *pane, at uint32, i int)) {
	nm := uint32(len(c.g.metrics))
	for w, refs := range c.refs[:len(c.g.windows)] {
		for i, r := range refs {
			if r != noTarget {
				f(c.panes[r>>32], uint32(r)*nm+uint32(j), i)
			}
		}
		for _, e := range c.more[w] {
			f(c.panes[e.ref>>32], uint32(e.ref)*nm+uint32(j), int(e.i))
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
	j, nm := uint32(m.idx), uint32(len(c.g.metrics))
	for w, refs := range c.refs[:len(c.g.windows)] {
		// unchecked (unsafe.go): a target's group is in its pane, whose
		// vals hold nm values per group
		rp := data(refs)
		var vals unsafe.Pointer
		last := noTarget
		for i := range len(refs) {
			r := u64(rp, i)
			if r == noTarget {
				continue
			}
			if r>>32 != last {
				last = r >> 32
				vals = data(c.panes[last].vals)
			}
			k := int(uint32(r)*nm + j)
			set64(vals, k, u64(vals, k)+1)
		}
		for _, e := range c.more[w] {
			c.panes[e.ref>>32].vals[uint32(e.ref)*nm+j]++
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
	c.each(m.idx, func(p *pane, at uint32, i int) {
		x := one
		if v != nil {
			x = v[i]
		}
		p.vals[at] = foldInt(op, p.vals[at], x)
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
	c.each(m.idx, func(p *pane, at uint32, i int) {
		vals := p.vals
		if avg {
			vals[at] = math.Float64bits(math.Float64frombits(vals[at]) + v[i])
			vals[at+1]++
			return
		}
		vals[at] = foldFloat(op, vals[at], v[i])
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
	if v.c == nil || len(v.c.Offsets) == 0 {
		c.fail(fmt.Errorf("wagg: Columns.AddDistinctString needs a string column of the batch (Batch.Strings of a String field)"))
		return c
	}
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
	c.each(m.idx, func(p *pane, at uint32, i int) {
		p.sketches[p.vals[at]].AddHash(hash(i))
	})
}
