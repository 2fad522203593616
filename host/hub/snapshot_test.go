package hub

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func frameOf(t *testing.T, b []byte) Frame {
	t.Helper()
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return f
}

// snap is the snapshot frame a subscriber with sub would get now.
func snap(t *testing.T, a *aggState, sub Subscribe) Frame {
	t.Helper()
	f, perr := compileFilter(a, &sub)
	if perr != nil {
		t.Fatal(perr)
	}
	return frameOf(t, a.snapshot(f).frame(a))
}

func TestSnapshot_RowsInWindowStartAndKeyOrder(t *testing.T) {
	a := newState(t, nil)
	a.publish(0, -1,
		row(second, t0+1000, 10, "b", 1, 1, 1, 0),
		row(total, 0, 10, "a", 1, 1, 1, 0),
		row(second, t0, 10, "a", 1, 1, 1, 0),
		row(total, 0, 2, "b", 1, 1, 1, 0),
		row(total, 0, -3, "z", 1, 1, 1, 0),
		row(total, 0, 2, "a", 1, 1, 1, 0),
		row(second, t0+1000, 9, "a", 1, 1, 1, 0),
	)
	want := []string{ // numbers by value, not as text
		"total 0 -3/z 1 1 1 0", "total 0 2/a 1 1 1 0", "total 0 2/b 1 1 1 0", "total 0 10/a 1 1 1 0",
		"second 1764000000000 10/a 1 1 1 0", "second 1764000001000 9/a 1 1 1 0", "second 1764000001000 10/b 1 1 1 0",
	}
	f := snap(t, a, Subscribe{Aggregator: "votes"})
	if f.Type != TypeSnapshot || f.Seq != a.seq || f.Epoch != "e1" {
		t.Fatalf("frame %s %d %s", f.Type, f.Seq, f.Epoch)
	}
	if got := compact(f.Rows); !slices.Equal(got, want) {
		t.Fatalf("rows %q\nwant %q", got, want)
	}
}

func TestSnapshot_TheLatestPanesOfEachWindowedWindow(t *testing.T) {
	a := newState(t, &Options{KeepClosed: 10})
	for i := range int64(5) {
		a.publish(0, -1, row(second, t0+i*1000, 1, "a", i, 1, 1, 0), row(total, 0, 1, "a", i, 1, 1, 0))
	}
	cases := []struct {
		panes int
		want  []string
	}{
		{0, []string{"total 0 1/a 4 1 1 0", "second 1764000000000 1/a 0 1 1 0", "second 1764000001000 1/a 1 1 1 0",
			"second 1764000002000 1/a 2 1 1 0", "second 1764000003000 1/a 3 1 1 0", "second 1764000004000 1/a 4 1 1 0"}},
		{2, []string{"total 0 1/a 4 1 1 0", "second 1764000003000 1/a 3 1 1 0", "second 1764000004000 1/a 4 1 1 0"}},
		{9, []string{"total 0 1/a 4 1 1 0", "second 1764000000000 1/a 0 1 1 0", "second 1764000001000 1/a 1 1 1 0",
			"second 1764000002000 1/a 2 1 1 0", "second 1764000003000 1/a 3 1 1 0", "second 1764000004000 1/a 4 1 1 0"}},
	}
	for _, c := range cases {
		if got := compact(snap(t, a, Subscribe{Aggregator: "votes", Panes: c.panes}).Rows); !slices.Equal(got, c.want) {
			t.Errorf("panes %d: %q\nwant %q", c.panes, got, c.want)
		}
	}
}

func TestSnapshot_UnfilteredOnesOfOneSeqAreShared(t *testing.T) {
	a := newState(t, nil)
	a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0))
	all, _ := compileFilter(a, &Subscribe{Aggregator: "votes"})
	last2, _ := compileFilter(a, &Subscribe{Aggregator: "votes", Panes: 2})
	one, _ := compileFilter(a, &Subscribe{Aggregator: "votes", Windows: []string{"total"}})
	s := a.snapshot(all)
	if a.snapshot(all) != s {
		t.Fatal("two unfiltered snapshots of one seq are copied twice")
	}
	if a.snapshot(one) == s || a.snapshot(one) == a.snapshot(one) {
		t.Fatal("a filtered snapshot is shared")
	}
	if a.snapshot(last2) == s {
		t.Fatal("a snapshot of the latest panes is the one of all panes")
	}
	a.publish(0, -1, row(total, 0, 1, "a", 2, 1, 1, 0))
	if n := a.snapshot(all); n == s || n.seq != a.seq {
		t.Fatal("a snapshot of an older seq is handed out")
	}
	if got := compact(frameOf(t, s.frame(a)).Rows); !slices.Equal(got, []string{"total 0 1/a 1 1 1 0"}) {
		t.Fatalf("the snapshot of seq 1 changed with the state: %q", got)
	}
}

// Whatever a subscriber's snapshot, the deltas after it, one by one or
// coalesced, bring it to the state a new subscriber's snapshot shows: the
// merge, the history and snapshots agree.
func TestSnapshot_ThenTheDeltasAfterItIsTheLatestSnapshot(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	subs := []Subscribe{
		{Aggregator: "votes"},
		{Aggregator: "votes", Keys: map[string][]any{"poll_id": {json.Number("1"), json.Number("3")}}},
		{Aggregator: "votes", Windows: []string{"second"}},
	}
	for _, sub := range subs {
		a := newState(t, &Options{KeepClosed: 2, History: 1000})
		f, _ := compileFilter(a, &sub)
		var snaps []Frame // by seq
		snaps = append(snaps, snap(t, a, sub))
		for range 200 {
			p := int32(rng.IntN(3))
			win := uint8(rng.IntN(2))
			start := t0 + int64(rng.IntN(6))*1000
			r := row(win, start, int64(rng.IntN(4)), []string{"a", "b"}[rng.IntN(2)], int64(rng.IntN(50)), int64(rng.IntN(9)), int64(rng.IntN(9)), float64(rng.IntN(8))/4)
			if rng.IntN(3) == 0 {
				r = final(r)
			}
			before := a.seq
			a.publish(p, -1, r)
			if a.seq != before {
				snaps = append(snaps, snap(t, a, sub))
			}
		}
		head := snaps[len(snaps)-1]
		want := compact((&viewOf{t: t, f: head}).rows())
		for k := range snaps {
			// One delta at a time, each encoded for this subscriber.
			v := &View{}
			if err := v.Apply(snaps[k]); err != nil {
				t.Fatal(err)
			}
			last := uint64(k)
			for _, d := range a.since(uint64(k), math.MaxInt32) {
				b := a.encodeDelta(d.seq, last, d.rows, d.evicted, f)
				if b == nil {
					continue // nothing this subscriber wants
				}
				if err := v.Apply(frameOf(t, b)); err != nil {
					t.Fatalf("%v: delta %d after snapshot %d: %v", sub, d.seq, k, err)
				}
				last = d.seq
			}
			if got := compact(v.Rows()); !slices.Equal(got, want) {
				t.Fatalf("%v: snapshot %d and the deltas after it: %q\nthe latest snapshot: %q", sub, k, got, want)
			}
			// Coalesced into one.
			c := &View{}
			c.Apply(snaps[k])
			if b := a.encodeCoalesced(&subscription{agg: a, f: f, lastSent: uint64(k)}, a.since(uint64(k), math.MaxInt32), a.seq); b != nil {
				if err := c.Apply(frameOf(t, b)); err != nil {
					t.Fatalf("%v: coalesced after snapshot %d: %v", sub, k, err)
				}
			}
			if got := compact(c.Rows()); !slices.Equal(got, want) {
				t.Fatalf("%v: snapshot %d and the coalesced delta: %q\nthe latest snapshot: %q", sub, k, got, want)
			}
		}
	}
}

// viewOf is the rows of a snapshot frame, in View order.
type viewOf struct {
	t *testing.T
	f Frame
}

func (v *viewOf) rows() []Row {
	var w View
	if err := w.Apply(v.f); err != nil {
		v.t.Fatal(err)
	}
	return w.Rows()
}
