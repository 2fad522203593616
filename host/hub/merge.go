package hub

import (
	"fmt"
	"slices"

	"github.com/wagg/wagg/abi"
)

// This file holds the merge: each partition's latest absolute value of a
// group, and their combination into the merged value subscribers see (by
// each metric's kind, abi.Schema.Merge, shared with the ClickHouse view's
// aggregate functions in host/sink; a distinct count by the union of the
// partitions' sketches, whose estimate subscribers see), pane by pane, with
// the eviction of panes the hub no longer keeps.

// partValue is one partition's latest absolute value of a group.
type partValue struct {
	partition int32
	final     bool
	metrics   []uint64
	sketches  []*abi.Sketch // a distinct metric's sketch; nil without one
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
	open   int   // groups that are not final
	cost   int64 // groupCost of its groups
}

// groupCost is what a group counts against Options.MaxBytes: about what
// it takes of the host's memory (its structures, the key as bytes, as
// decoded values and as JSON, a value per metric for the merge and for
// its partition), measured with short keys at 1 KiB of RSS per group
// (3.9 GB at 4 million) once the collector's headroom is in. A key counts
// eight times its length: its copy, and its JSON, which takes up to six
// bytes per byte (a control character is written \u0000), with room for
// the collector. The partitions' distinct sketches count on top, as they
// grow (abi.SketchesSize).
func groupCost(key string, metrics int) int64 {
	return 512 + 8*int64(len(key)) + 16*int64(metrics)
}

// heldSketches is what the group holds of partition's sketches.
func (g *group) heldSketches(partition int32) int64 {
	for i := range g.parts {
		if g.parts[i].partition == partition {
			return int64(abi.SketchesSize(g.parts[i].sketches))
		}
	}
	return 0
}

func (p *pane) closed() bool { return p.open == 0 && len(p.groups) > 0 }

// windowState is one window of the aggregator: its panes by start.
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

// paneRef names a pane: a window by index, and a start.
type paneRef struct {
	win   int
	start int64
}

// stale reports whether rows of partition at version are a replay of values
// already merged (a partition restored from its checkpoint on another
// host), and otherwise records version as the partition's latest. A
// version below 0 is never stale. Called with a.mu held.
func (a *aggState) stale(partition int32, version int64) bool {
	if version < 0 {
		return false
	}
	if latest, ok := a.versions[partition]; ok && version < latest {
		return true
	}
	a.versions[partition] = version
	return false
}

// apply merges one partition's rows into the state and returns the merged
// rows that changed, and the panes evicted; rows that would pass maxGroups
// in their pane are left out, and the error says where. Called with a.mu
// held.
func (a *aggState) apply(partition int32, rows []abi.Row) ([]outRow, []paneRef, error) {
	nm := len(a.schema.Metrics)
	var evicted []paneRef
	var tooMany *TooManyGroupsError
	full := false // no closed pane left to evict for a group past maxBytes
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
		if !a.sketched(r) {
			a.drop("distinct metric without its sketch")
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
		// What the row adds to the bound: a new group, or a partition's
		// sketches that grew (a sketch turning dense takes 4 KiB).
		var cost int64
		if len(a.distinct) > 0 {
			cost = int64(abi.SketchesSize(r.Sketches))
			if !fresh {
				cost -= g.heldSketches(partition)
			}
		}
		if fresh {
			cost += groupCost(r.Key, nm)
		}
		if cost > 0 && a.held+cost > a.maxBytes && !full {
			// one search per Publish: rows past the bound do not each
			// walk every pane again
			evicted = a.evictForRoom(wi, start, cost, evicted)
			full = a.held+cost > a.maxBytes
		}
		if fresh && len(p.groups) >= a.maxGroups || cost > 0 && a.held+cost > a.maxBytes {
			if tooMany == nil {
				tooMany = &TooManyGroupsError{Aggregator: a.name, Window: w.def.Name, Start: start, Limit: a.maxGroups}
				if !fresh || len(p.groups) < a.maxGroups {
					tooMany.Limit, tooMany.Bytes = 0, a.maxBytes
				}
			}
			tooMany.Dropped++
			if len(p.groups) == 0 {
				delete(w.panes, start) // made for this row alone
			}
			continue
		}
		if fresh {
			k, err := a.keyInfo(r.Key)
			if err != nil {
				a.drop("key does not decode")
				if len(p.groups) == 0 {
					delete(w.panes, start)
				}
				continue
			}
			g = &group{k: k, merged: make([]uint64, nm)}
			p.groups[k.key] = g
			p.open++
		}
		if !g.set(partition, r.Final, r.Metrics, r.Sketches) && !fresh {
			continue
		}
		p.cost += cost
		a.held += cost
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
func (g *group) set(partition int32, final bool, metrics []uint64, sketches []*abi.Sketch) bool {
	for i := range g.parts {
		pv := &g.parts[i]
		if pv.partition != partition {
			continue
		}
		if pv.final && !final {
			return false
		}
		if pv.final == final && slices.Equal(pv.metrics, metrics) && slices.EqualFunc(pv.sketches, sketches, sameSketch) {
			return false
		}
		pv.final = final
		copy(pv.metrics, metrics)
		pv.sketches = cloneSketches(sketches)
		return true
	}
	g.parts = append(g.parts, partValue{partition: partition, final: final, metrics: slices.Clone(metrics), sketches: cloneSketches(sketches)})
	return true
}

// sketched reports whether r carries a sketch for every distinct metric.
func (a *aggState) sketched(r *abi.Row) bool {
	for _, j := range a.distinct {
		if len(r.Sketches) != len(r.Metrics) || r.Sketches[j] == nil {
			return false
		}
	}
	return true
}

func sameSketch(a, b *abi.Sketch) bool { return a == b || a != nil && b != nil && a.Equal(b) }

func cloneSketches(s []*abi.Sketch) []*abi.Sketch {
	if s == nil {
		return nil
	}
	out := make([]*abi.Sketch, len(s))
	for j, sk := range s {
		if sk != nil {
			out[j] = sk.Clone()
		}
	}
	return out
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
	for j, m := range s.Metrics {
		if m.Kind != abi.Distinct {
			continue
		}
		union := g.parts[0].sketches[j].Clone() // every partition's row had it (sketched)
		for _, pv := range g.parts[1:] {
			union.Merge(pv.sketches[j])
		}
		scratch[j] = uint64(union.Estimate())
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

// evictForRoom drops the oldest closed panes of the tumbling and hopping
// windows, except the pane at start of window wi, until a group of cost
// fits in maxBytes or no such pane is left.
func (a *aggState) evictForRoom(wi int, start, cost int64, evicted []paneRef) []paneRef {
	for a.held+cost > a.maxBytes {
		ow, os := -1, int64(0)
		for i := range a.wins {
			if a.wins[i].def.Kind == abi.Global {
				continue
			}
			for s, p := range a.wins[i].panes {
				if p.closed() && (i != wi || s != start) && (ow < 0 || s < os) {
					ow, os = i, s
				}
			}
		}
		if ow < 0 {
			break
		}
		evicted = a.evict(ow, os, evicted)
	}
	return evicted
}

func (a *aggState) evict(wi int, start int64, evicted []paneRef) []paneRef {
	w := &a.wins[wi]
	if p := w.panes[start]; p != nil {
		a.held -= p.cost
	}
	delete(w.panes, start)
	if !w.evicted || start > w.horizon {
		w.horizon, w.evicted = start, true
	}
	return append(evicted, paneRef{wi, start})
}

// TooManyGroupsError is a Publish whose rows would make one pane hold more
// groups than Options.MaxGroupsPerPane (Limit), or the aggregator's groups
// take more than Options.MaxBytes (Bytes) with no closed pane left to
// evict.
type TooManyGroupsError struct {
	Aggregator string
	Window     string // where the first row was refused
	Start      int64  // the pane's start, Unix ms (0 for a global window)
	Limit      int
	Bytes      int64
	Dropped    int // rows left out
}

func (e *TooManyGroupsError) Error() string {
	if e.Bytes > 0 {
		return fmt.Sprintf("aggregator %s: the plugin's groups would take more than %d MiB of the host's memory in all, in panes that are not closed "+
			"(live.max_state_bytes; a group counts 512 bytes, three times its key, 16 per metric and its distinct sketches' registers), the first refused in window %s, pane at %d; "+
			"%d rows left out. Key by fewer or shorter values, close panes sooner (shorter windows or lateness), or raise the limit", e.Aggregator, e.Bytes>>20, e.Window, e.Start, e.Dropped)
	}
	return fmt.Sprintf("aggregator %s: window %s, pane at %d: the plugin emitted more than %d groups for one pane (sandbox.max_groups_per_pane); "+
		"%d rows left out. Key by fewer distinct values, or raise the limit", e.Aggregator, e.Window, e.Start, e.Limit, e.Dropped)
}
