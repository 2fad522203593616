package hub

import (
	"cmp"
	"slices"
	"strings"
	"sync"

	"github.com/wagg/wagg/abi"
)

// This file holds snapshots: the merged state a filter wants, copied under
// the lock and encoded outside it, shared by the unfiltered subscribers of
// one seq.

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
