package hub

import (
	"fmt"
	"slices"
	"testing"

	"github.com/wagg/wagg/abi"
)

// TestHub_MergesDistinctSketchesAcrossPartitions publishes overlapping
// voters of one poll from three partitions and checks that subscribers see
// the estimate of the union of the sketches, not a sum, that a sketch
// whose registers change is merged again, and that a row without its
// sketch is dropped.
func TestHub_MergesDistinctSketchesAcrossPartitions(t *testing.T) {
	schema := &abi.Schema{
		ABI:   abi.Version,
		Input: []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "user_id", Type: abi.String}},
		Keys:  []abi.Column{{Name: "poll_id", Type: abi.Int64}},
		Metrics: []abi.Metric{
			{Name: "votes", Kind: abi.Count, Type: abi.Int64},
			{Name: "voters", Kind: abi.Distinct, Type: abi.Int64},
		},
	}
	windows := []abi.Window{{Name: "total", Kind: abi.Global}}
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
