package hub

import (
	"cmp"
	"encoding/json"
	"log/slog"
	"math/bits"
	"slices"
	"strings"
	"sync"

	"github.com/wagg/wagg/abi"
)

// maxOpenPanes bounds the panes of one window that are not closed yet. The
// watermark keeps the real number small (a hopping window has at most
// size/slide open panes per partition); the bound only stops a broken
// pipeline from growing the hub without limit. Past it the oldest pane goes,
// open or not.
const maxOpenPanes = 4096

// maxKeyCache bounds the decoded keys kept for reuse across panes.
const maxKeyCache = 1 << 20

// keyInfo is a group key decoded once and shared by every pane and row that
// carries it: the encoded form (abi.Row.Key), the values for filters and the
// JSON object rows are written with.
type keyInfo struct {
	key  string
	vals []any
	json []byte
}

// partValue is one partition's latest absolute value of a group.
type partValue struct {
	partition int32
	final     bool
	metrics   []uint64
}

// group is one key in one pane: the per-partition values and their merge.
type group struct {
	k       *keyInfo
	parts   []partValue // usually one: a topic keyed by the group key
	merged  []uint64
	final   bool
	touched int // 1 + index in the current Publish's changes; 0 when untouched
}

// pane is one window instance (one start) of a window.
type pane struct {
	start  int64
	groups map[string]*group
	open   int // groups that are not final
}

func (p *pane) closed() bool { return p.open == 0 && len(p.groups) > 0 }

type windowState struct {
	def      abi.Window
	nameJSON []byte // the name as a JSON string
	panes    map[int64]*pane
	// horizon is the latest start evicted; a row for a pane that no longer
	// exists and starts at or before it is dropped rather than re-creating
	// the pane from the partitions that are late.
	horizon  int64
	evicted  bool
	mayClose bool // scratch: a pane closed during the current Publish
}

// outRow is a merged row as it went out in one delta or snapshot. It does not
// change after it is made, so the history and every writer share it.
type outRow struct {
	win     int
	start   int64
	k       *keyInfo
	metrics []uint64
	final   bool
}

type paneRef struct {
	win   int
	start int64
}

// delta is one numbered change of an aggregator's merged state.
type delta struct {
	seq     uint64
	rows    []outRow
	evicted []paneRef
	frame   []byte // encoded once, with prev = seq-1
}

// aggState is everything the hub holds for one registered aggregator in one
// epoch. Registering another schema replaces it with a new one.
type aggState struct {
	name    string
	epoch   string
	schema  *abi.Schema
	windows []abi.Window
	log     *slog.Logger

	keepClosed int
	history    int
	maxGroups  int

	// JSON pieces computed once at Register.
	metricNames [][]byte // `"votes":`
	keyNames    [][]byte // `"poll_id":`
	infoJSON    []byte   // `"windows":[...],"keys":[...],"metrics":[...]`

	mu       sync.RWMutex
	seq      uint64
	wins     []windowState
	keyCache map[string]*keyInfo
	hist     []*delta // oldest first, at most history deltas and maxHistoryBytes
	histLen  int      // encoded bytes in hist
	notify   chan struct{}
	subs     map[*subscription]struct{}
	gone     bool // replaced by a Register or the hub closed
	scratch  []uint64
	touched  []*group
	touchedW []paneRef
	drops    map[string]uint64
	// versions is the latest version (source offset) each partition's rows
	// were published at: rows older than it are a replay (another host
	// restoring the partition from its checkpoint) of values already shown.
	versions map[int32]int64
	// shared is the snapshot of the current seq handed to unfiltered
	// subscribers, so that a reconnect storm copies and encodes the state
	// once per seq rather than once per subscriber. Publish clears it.
	shared *sharedSnap
}

// sharedSnap is a snapshot copied under the lock and encoded, once, by the
// first writer that needs it, outside the lock.
type sharedSnap struct {
	seq   uint64
	panes int
	rows  []outRow
	once  sync.Once
	b     []byte
}

func (s *sharedSnap) frame(a *aggState) []byte {
	s.once.Do(func() {
		sortRows(s.rows)
		s.b = a.encodeSnapshot(s.seq, s.rows)
		s.rows = nil
	})
	return s.b
}

// snapshot returns the snapshot a filter wants at the current seq. Called
// with a.mu held.
func (a *aggState) snapshot(f *filter) *sharedSnap {
	if !f.all {
		return &sharedSnap{seq: a.seq, rows: a.snapshotRows(f)}
	}
	if s := a.shared; s != nil && s.seq == a.seq && s.panes == f.panes {
		return s
	}
	a.shared = &sharedSnap{seq: a.seq, panes: f.panes, rows: a.snapshotRows(f)}
	return a.shared
}

// maxHistoryBytes bounds the encoded deltas kept for resume, next to the
// History count, so a burst of huge deltas (every group of a closing pane)
// cannot hold gigabytes.
const maxHistoryBytes = 64 << 20

func newAggState(name, epoch string, s *abi.Schema, windows []abi.Window, o *Options) *aggState {
	a := &aggState{
		name:       name,
		epoch:      epoch,
		schema:     s,
		windows:    windows,
		log:        o.Logger.With("aggregator", name),
		keepClosed: o.KeepClosed,
		history:    o.History,
		maxGroups:  o.MaxGroupsPerPane,
		keyCache:   map[string]*keyInfo{},
		notify:     make(chan struct{}),
		subs:       map[*subscription]struct{}{},
		scratch:    make([]uint64, len(s.Metrics)),
		drops:      map[string]uint64{},
		versions:   map[int32]int64{},
	}
	for _, m := range s.Metrics {
		a.metricNames = append(a.metricNames, append(appendString(nil, m.Name), ':'))
	}
	for _, c := range s.Keys {
		a.keyNames = append(a.keyNames, append(appendString(nil, c.Name), ':'))
	}
	for _, w := range windows {
		a.wins = append(a.wins, windowState{def: w, nameJSON: appendString(nil, w.Name), panes: map[int64]*pane{}})
	}
	info := struct {
		Windows []abi.Window `json:"windows"`
		Keys    []abi.Column `json:"keys"`
		Metrics []abi.Metric `json:"metrics"`
	}{windows, s.Keys, s.Metrics}
	if info.Windows == nil {
		info.Windows = []abi.Window{}
	}
	if info.Keys == nil {
		info.Keys = []abi.Column{}
	}
	b, _ := json.Marshal(info) // plain structs of strings and ints: cannot fail
	a.infoJSON = b[1 : len(b)-1]
	return a
}

func (a *aggState) windowIndex(name string) int {
	for i, w := range a.windows {
		if w.Name == name {
			return i
		}
	}
	return -1
}

// drop counts a row the hub cannot use and logs the first of each reason and
// then every power of two, so a broken pipeline is visible without flooding
// the log.
func (a *aggState) drop(reason string) {
	a.drops[reason]++
	if n := a.drops[reason]; n&(n-1) == 0 {
		a.log.Warn("hub: dropped rows", "reason", reason, "count", n)
	}
}

func (a *aggState) keyInfo(key string) (*keyInfo, error) {
	if k := a.keyCache[key]; k != nil {
		return k, nil
	}
	vals, err := a.schema.KeyValues(key)
	if err != nil {
		return nil, err
	}
	b := []byte{'{'}
	for i, v := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, a.keyNames[i]...)
		switch v := v.(type) {
		case int64:
			b = appendInt(b, v)
		case float64:
			b = appendFloat(b, v)
		case string:
			b = appendString(b, v)
		}
	}
	b = append(b, '}')
	if len(a.keyCache) >= maxKeyCache {
		clear(a.keyCache)
	}
	k := &keyInfo{key: strings.Clone(key), vals: vals, json: b}
	a.keyCache[k.key] = k
	return k, nil
}

// apply merges one partition's rows into the state and returns the merged
// rows that changed, and the panes evicted; rows that would pass maxGroups
// in their pane are left out, and the error says where. Called with a.mu
// held.
func (a *aggState) apply(partition int32, rows []abi.Row) ([]outRow, []paneRef, error) {
	nm := len(a.schema.Metrics)
	var evicted []paneRef
	var tooMany *TooManyGroupsError
	touched := a.touched[:0]
	where := a.touchedW[:0]
	for i := range rows {
		r := &rows[i]
		if int(r.Window) >= len(a.wins) {
			a.drop("window index out of range")
			continue
		}
		if len(r.Metrics) != nm {
			a.drop("wrong number of metrics")
			continue
		}
		wi := int(r.Window)
		w := &a.wins[wi]
		start := r.Start
		if w.def.Kind == abi.Global {
			start = 0
		}
		p := w.panes[start]
		if p == nil {
			if w.evicted && start <= w.horizon {
				a.drop("row for an evicted pane")
				continue
			}
			p = &pane{start: start, groups: map[string]*group{}}
			w.panes[start] = p
			if len(w.panes) > a.keepClosed+maxOpenPanes {
				evicted = a.evictOldest(wi, evicted)
				if w.panes[start] == nil {
					a.drop("row for an evicted pane")
					continue
				}
			}
		}
		g := p.groups[r.Key]
		fresh := g == nil
		if fresh && len(p.groups) >= a.maxGroups {
			if tooMany == nil {
				tooMany = &TooManyGroupsError{Aggregator: a.name, Window: w.def.Name, Start: start, Limit: a.maxGroups}
			}
			tooMany.Dropped++
			continue
		}
		if fresh {
			k, err := a.keyInfo(r.Key)
			if err != nil {
				a.drop("key does not decode")
				continue
			}
			g = &group{k: k, merged: make([]uint64, nm)}
			p.groups[k.key] = g
			p.open++
		}
		if !g.set(partition, r.Final, r.Metrics) && !fresh {
			continue
		}
		wasFinal := g.final
		if !g.merge(a.schema, a.scratch) && !fresh {
			continue
		}
		if g.final != wasFinal {
			if g.final {
				p.open--
				w.mayClose = true
			} else {
				p.open++
			}
		}
		if g.touched == 0 {
			touched = append(touched, g)
			where = append(where, paneRef{wi, start})
			g.touched = len(touched)
		}
	}
	out := make([]outRow, len(touched))
	slab := make([]uint64, len(touched)*nm)
	for i, g := range touched {
		m := slab[i*nm : (i+1)*nm : (i+1)*nm]
		copy(m, g.merged)
		out[i] = outRow{win: where[i].win, start: where[i].start, k: g.k, metrics: m, final: g.final}
		g.touched = 0
		touched[i] = nil
	}
	a.touched, a.touchedW = touched[:0], where[:0]
	for wi := range a.wins {
		if a.wins[wi].mayClose {
			a.wins[wi].mayClose = false
			evicted = a.evictClosed(wi, evicted)
		}
	}
	if tooMany != nil {
		return out, evicted, tooMany
	}
	return out, evicted, nil
}

// set records a partition's value and reports whether it changed. A partition
// that sent a row final does not take it back: a replay after a restart
// re-emits the pane's earlier, partial values before closing it again with
// the same final value, and the live view should not go backwards meanwhile.
func (g *group) set(partition int32, final bool, metrics []uint64) bool {
	for i := range g.parts {
		pv := &g.parts[i]
		if pv.partition != partition {
			continue
		}
		if pv.final && !final {
			return false
		}
		if pv.final == final && slices.Equal(pv.metrics, metrics) {
			return false
		}
		pv.final = final
		copy(pv.metrics, metrics)
		return true
	}
	g.parts = append(g.parts, partValue{partition: partition, final: final, metrics: slices.Clone(metrics)})
	return true
}

// merge recomputes the merged value and finality and reports whether either
// changed. A merged row is final when every partition that contributed to it
// sent it final.
func (g *group) merge(s *abi.Schema, scratch []uint64) bool {
	copy(scratch, g.parts[0].metrics)
	final := g.parts[0].final
	for _, pv := range g.parts[1:] {
		for j, v := range pv.metrics {
			scratch[j] = s.Merge(j, scratch[j], v)
		}
		final = final && pv.final
	}
	if final == g.final && slices.Equal(scratch, g.merged) {
		return false
	}
	copy(g.merged, scratch)
	g.final = final
	return true
}

// evictClosed drops the oldest closed panes of window wi beyond keepClosed.
// Global windows are never evicted: their one pane is the running total.
func (a *aggState) evictClosed(wi int, evicted []paneRef) []paneRef {
	w := &a.wins[wi]
	if w.def.Kind == abi.Global {
		return evicted
	}
	var closed []int64
	for s, p := range w.panes {
		if p.closed() {
			closed = append(closed, s)
		}
	}
	if len(closed) <= a.keepClosed {
		return evicted
	}
	slices.Sort(closed)
	for _, s := range closed[:len(closed)-a.keepClosed] {
		evicted = a.evict(wi, s, evicted)
	}
	return evicted
}

// evictOldest drops the oldest pane of window wi, closed or not.
func (a *aggState) evictOldest(wi int, evicted []paneRef) []paneRef {
	w := &a.wins[wi]
	first := true
	var oldest int64
	for s := range w.panes {
		if first || s < oldest {
			oldest, first = s, false
		}
	}
	if first || w.def.Kind == abi.Global {
		return evicted
	}
	return a.evict(wi, oldest, evicted)
}

func (a *aggState) evict(wi int, start int64, evicted []paneRef) []paneRef {
	w := &a.wins[wi]
	delete(w.panes, start)
	if !w.evicted || start > w.horizon {
		w.horizon, w.evicted = start, true
	}
	return append(evicted, paneRef{wi, start})
}

// snapshotRows copies the rows a filter wants. Called with a.mu held; the
// copy is sorted and encoded later, outside the lock.
func (a *aggState) snapshotRows(f *filter) []outRow {
	nm := len(a.schema.Metrics)
	var out []outRow
	for wi := range a.wins {
		if !f.window(wi) {
			continue
		}
		w := &a.wins[wi]
		starts := make([]int64, 0, len(w.panes))
		for s := range w.panes {
			starts = append(starts, s)
		}
		slices.Sort(starts)
		if f.panes > 0 && w.def.Kind != abi.Global && len(starts) > f.panes {
			starts = starts[len(starts)-f.panes:]
		}
		for _, s := range starts {
			p := w.panes[s]
			slab := make([]uint64, 0, len(p.groups)*nm)
			for _, g := range p.groups {
				if !f.matchKey(g.k) {
					continue
				}
				slab = append(slab, g.merged...)
				m := slab[len(slab)-nm : len(slab) : len(slab)]
				out = append(out, outRow{win: wi, start: s, k: g.k, metrics: m, final: g.final})
			}
		}
	}
	return out
}

// sortRows orders rows by window, start and key values, so snapshots are
// deterministic and read naturally.
func sortRows(rows []outRow) {
	slices.SortFunc(rows, func(x, y outRow) int {
		if c := cmp.Compare(x.win, y.win); c != 0 {
			return c
		}
		if c := cmp.Compare(x.start, y.start); c != 0 {
			return c
		}
		for i, v := range x.k.vals {
			var c int
			switch v := v.(type) {
			case int64:
				c = cmp.Compare(v, y.k.vals[i].(int64))
			case float64:
				c = cmp.Compare(v, y.k.vals[i].(float64))
			case string:
				c = strings.Compare(v, y.k.vals[i].(string))
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
}

// push appends a delta to the history, evicting the oldest beyond the
// History count or maxHistoryBytes, and wakes the writers.
func (a *aggState) push(d *delta) {
	a.shared = nil
	a.hist = append(a.hist, d)
	a.histLen += len(d.frame)
	drop := 0
	for len(a.hist)-drop > 1 && (len(a.hist)-drop > a.history || a.histLen > maxHistoryBytes) {
		a.histLen -= len(a.hist[drop].frame)
		a.hist[drop] = nil
		drop++
	}
	if drop > 0 {
		a.hist = a.hist[drop:]
		// Reallocate now and then so the dropped prefix is freed.
		if cap(a.hist) > 2*max(a.history, 16) {
			a.hist = slices.Clone(a.hist)
		}
	}
	close(a.notify)
	a.notify = make(chan struct{})
}

// oldest is the seq of the oldest delta still kept; a.seq+1 when none is.
func (a *aggState) oldest() uint64 {
	if len(a.hist) == 0 {
		return a.seq + 1
	}
	return a.hist[0].seq
}

// since returns the kept deltas after seq, at most n of them. The caller
// checked that seq+1 >= oldest.
func (a *aggState) since(seq uint64, n int) []*delta {
	if len(a.hist) == 0 || seq >= a.seq {
		return nil
	}
	i := int(seq + 1 - a.hist[0].seq)
	j := min(len(a.hist), i+n)
	return slices.Clone(a.hist[i:j])
}

// lag is how far a cursor is behind the head, saturated to an int.
func lag(head, cursor uint64) int {
	d := head - cursor
	if bits.Len64(d) > 62 {
		return 1 << 62
	}
	return int(d)
}
