package hub

import (
	"math/bits"
	"slices"
)

// This file holds the delta history: the last deltas of an aggregator,
// numbered by seq and encoded once, that lagging subscribers and resumes
// after a reconnect replay.

// delta is one numbered change of an aggregator's merged state.
type delta struct {
	seq     uint64
	rows    []outRow
	evicted []paneRef
	frame   []byte // encoded once, with prev = seq-1
}

// push makes the merged rows that changed and the panes evicted the next
// delta, encodes it once for every unfiltered subscriber and appends it to
// the history, evicting the oldest beyond the History count or
// historyBytes, and wakes the writers. Called with a.mu held.
func (a *aggState) push(rows []outRow, evicted []paneRef) {
	a.seq++
	d := &delta{seq: a.seq, rows: rows, evicted: evicted}
	d.frame = a.encodeDelta(d.seq, d.seq-1, rows, evicted, nil)
	a.shared = nil
	a.hist = append(a.hist, d)
	a.histLen += len(d.frame)
	drop := 0
	for len(a.hist)-drop > 1 && (len(a.hist)-drop > a.history || a.histLen > a.historyBytes) {
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

// encodeCoalesced folds deltas into one: the latest value of every row they
// touched, then every pane they evicted, from the subscriber's last seq to
// head. Rows and deltas are immutable, so this runs without the lock.
func (a *aggState) encodeCoalesced(sub *subscription, ds []*delta, head uint64) []byte {
	type rowID struct {
		win   int
		start int64
		key   string
	}
	idx := map[rowID]int{}
	var rows []outRow
	var evicted []paneRef
	for _, d := range ds {
		for i := range d.rows {
			r := &d.rows[i]
			if !sub.f.matchRow(r) {
				continue
			}
			id := rowID{r.win, r.start, r.k.key}
			if j, ok := idx[id]; ok {
				rows[j] = *r
			} else {
				idx[id] = len(rows)
				rows = append(rows, *r)
			}
		}
		evicted = append(evicted, d.evicted...)
	}
	return a.encodeDelta(head, sub.lastSent, rows, evicted, sub.f)
}
