package hub

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/wagg/wagg/abi"
)

// votersSchema is votes and unique voters per poll, in running totals.
func votersSchema() (*abi.Schema, []abi.Window) {
	return &abi.Schema{
		ABI:   abi.Version,
		Input: []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "user_id", Type: abi.String}},
		Keys:  []abi.Column{{Name: "poll_id", Type: abi.Int64}},
		Metrics: []abi.Metric{
			{Name: "votes", Kind: abi.Count, Type: abi.Int64},
			{Name: "voters", Kind: abi.Distinct, Type: abi.Int64},
		},
	}, []abi.Window{{Name: "total", Kind: abi.Global}}
}

// TestHub_MergesDistinctSketchesAcrossPartitions publishes overlapping
// voters of one poll from three partitions and checks that subscribers see
// the estimate of the union of the sketches, not a sum, that a sketch
// whose registers change is merged again, and that a row without its
// sketch is dropped.
func TestHub_MergesDistinctSketchesAcrossPartitions(t *testing.T) {
	schema, windows := votersSchema()
	sketch := func(from, to int) *abi.Sketch {
		s := &abi.Sketch{}
		for u := from; u < to; u++ {
			s.AddString(fmt.Appendf(nil, "user-%d", u))
		}
		return s
	}
	pollRow := func(votes int64, sk *abi.Sketch) abi.Row {
		return abi.Row{Key: string(abi.AppendKeyInt64(nil, 7)), Metrics: []uint64{uint64(votes), uint64(sk.Estimate())}, Sketches: []*abi.Sketch{nil, sk}}
	}
	text := func(rows []Row) []string {
		var out []string
		for _, r := range rows {
			out = append(out, fmt.Sprintf("%s %s %s %s %s", r.Window, jsonString(r.Start), jsonString(r.Key["poll_id"]), r.Values["votes"], r.Values["voters"]))
		}
		return out
	}
	h, url := serve(t, nil)
	h.Register("voters", schema, windows)
	c := dial(t, url, Subscribe{Aggregator: "voters"})
	var v View
	follow(t, c, &v, (*View).Live)

	// Users 0-1499 on partition 0, 1000-2499 on 1, 2000-2999 on 2: 3000 unique.
	parts := []*abi.Sketch{sketch(0, 1500), sketch(1000, 2500), sketch(2000, 3000)}
	union := &abi.Sketch{}
	for p, sk := range parts {
		h.Publish("voters", int32(p), []abi.Row{pollRow(1500, sk)})
		union.Merge(sk)
	}
	head := seqOf(h, "voters")
	follow(t, c, &v, func(v *View) bool { return v.Seq == head })
	want := []string{fmt.Sprintf("total 0 7 4500 %d", union.Estimate())}
	if got := text(v.Rows()); !slices.Equal(got, want) {
		t.Fatalf("live rows %q, want %q (the union's estimate; the sum of the estimates would be %d)", got, want,
			parts[0].Estimate()+parts[1].Estimate()+parts[2].Estimate())
	}

	// Partition 2 now has users 2000-3999: its new absolute sketch
	// replaces its old one.
	grown := sketch(2000, 4000)
	h.Publish("voters", 2, []abi.Row{pollRow(2000, grown)})
	union = sketch(0, 4000)
	// A row without its sketch changes nothing.
	h.Publish("voters", 1, []abi.Row{{Key: string(abi.AppendKeyInt64(nil, 7)), Metrics: []uint64{1, 1}}})
	head = seqOf(h, "voters")
	follow(t, c, &v, func(v *View) bool { return v.Seq == head })
	want = []string{fmt.Sprintf("total 0 7 5000 %d", union.Estimate())}
	if got := text(v.Rows()); !slices.Equal(got, want) {
		t.Fatalf("live rows %q, want %q", got, want)
	}
	if e := union.Estimate(); e < 3880 || e > 4120 {
		t.Errorf("4000 users estimated %d, beyond 3 standard errors", e)
	}
}

// A distinct metric's sketches count against Options.MaxBytes as they
// grow: a dense sketch takes 4 KiB per partition, eight times what a
// group itself counts, so fresh keys with dense sketches, or sketches
// of groups that exist turning dense, would otherwise hold many times the
// bound.
func TestHub_DistinctSketchesCountAgainstTheStateBound(t *testing.T) {
	schema, windows := votersSchema()
	sketch := func(users int) *abi.Sketch {
		s := &abi.Sketch{}
		for u := range users {
			s.AddString(fmt.Appendf(nil, "user-%d", u))
		}
		return s
	}
	sparse, dense := sketch(10), sketch(5000)
	rows := func(polls int, sk *abi.Sketch) []abi.Row {
		out := make([]abi.Row, polls)
		for i := range out {
			out[i] = abi.Row{Key: string(abi.AppendKeyInt64(nil, int64(i))), Metrics: []uint64{1, uint64(sk.Estimate())}, Sketches: []*abi.Sketch{nil, sk}}
		}
		return out
	}
	const bound = 1 << 20
	held := func(h *Hub) int64 {
		a := h.aggs["voters"]
		a.mu.Lock()
		defer a.mu.Unlock()
		var sum int64
		for _, p := range a.wins[0].panes {
			for _, g := range p.groups {
				sum += groupCost(g.k.key, 2)
				for _, pv := range g.parts {
					sum += int64(abi.SketchesSize(pv.sketches))
				}
			}
		}
		if sum != a.held {
			t.Fatalf("the groups hold %d bytes as counted, the bound's count says %d", sum, a.held)
		}
		return sum
	}
	var tm *TooManyGroupsError

	// Fresh keys, dense at once: 1000 groups of 4.5 KiB and more.
	h, _ := serve(t, &Options{MaxBytes: bound})
	h.Register("voters", schema, windows)
	err := h.Publish("voters", 0, rows(1000, dense))
	if !errors.As(err, &tm) || tm.Bytes != bound || tm.Dropped == 0 {
		t.Fatalf("1000 groups with dense sketches under a 1 MiB bound: got %v, want the bound's TooManyGroupsError", err)
	}
	if n := held(h); n > bound {
		t.Fatalf("%d bytes held, past the bound", n)
	}

	// Groups that exist, whose sketches turn dense.
	h, _ = serve(t, &Options{MaxBytes: bound})
	h.Register("voters", schema, windows)
	if err := h.Publish("voters", 0, rows(400, sparse)); err != nil {
		t.Fatalf("400 groups with small sketches: %v", err)
	}
	before := held(h)
	err = h.Publish("voters", 0, rows(400, dense))
	if !errors.As(err, &tm) || tm.Bytes != bound || tm.Dropped == 0 || tm.Dropped == 400 {
		t.Fatalf("the same 400 groups turning dense: got %v, want some of them refused by the bound", err)
	}
	if n := held(h); n <= before || n > bound {
		t.Fatalf("%d bytes held after the growth (%d before), want more, within the bound", n, before)
	}
	// A sketch that shrinks gives its bytes back.
	h.Publish("voters", 0, rows(400, sparse))
	if n := held(h); n != before {
		t.Fatalf("%d bytes held once the sketches are small again, want %d", n, before)
	}
}
