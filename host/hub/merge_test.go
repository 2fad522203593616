package hub

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/wagg/wagg/abi"
)

// These tests drive one aggregator's state directly, without connections:
// the merge (merge.go), the delta history (history.go) and snapshots
// (snapshot.go). hub_test.go checks the same through subscribers.

func newState(t *testing.T, o *Options) *aggState {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	o.Logger = quietLogger()
	opts := o.withDefaults()
	return newAggState("votes", "e1", testSchema, testWindows, &opts)
}

// publish is PublishAt without the hub: apply, then a delta when anything
// changed.
func (a *aggState) publish(partition int32, version int64, rows ...abi.Row) ([]outRow, []paneRef, error) {
	if a.stale(partition, version) {
		return nil, nil, nil
	}
	out, evicted, err := a.apply(partition, rows)
	if len(out) > 0 || len(evicted) > 0 {
		a.push(out, evicted)
	}
	return out, evicted, err
}

// describe is a merged row as "window start poll/option metrics [final]".
func describe(a *aggState, r outRow) string {
	s := fmt.Sprintf("%s %d %v/%v", a.windows[r.win].Name, r.start, r.k.vals[0], r.k.vals[1])
	for j, m := range r.metrics {
		s += fmt.Sprint(" ", a.schema.MetricValue(j, m))
	}
	if r.final {
		s += " final"
	}
	return s
}

func describeAll(a *aggState, rows []outRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, describe(a, r))
	}
	slices.Sort(out)
	return out
}

func TestMerge_EachMetricByItsKind(t *testing.T) {
	type v struct {
		votes, first, last int64
		score              float64
	}
	cases := []struct {
		name  string
		parts []v // one per partition
		want  string
	}{
		{"one partition is its own value", []v{{3, 10, 20, 1.5}}, "total 0 1/a 3 10 20 1.5"},
		{"two partitions", []v{{3, 10, 20, 1.5}, {4, 5, 15, 2.25}}, "total 0 1/a 7 5 20 3.75"},
		{"negative values", []v{{1, -10, -20, -1.5}, {1, -5, -30, 0.5}}, "total 0 1/a 2 -10 -20 -1"},
		{"three partitions, extremes in the middle one", []v{{1, 5, 5, 0}, {1, 1, 9, 0}, {1, 5, 5, 0}}, "total 0 1/a 3 1 9 0"},
		{"int64 extremes", []v{{0, math.MaxInt64, math.MinInt64, 0}, {0, -1, 1, 0}}, "total 0 1/a 0 -1 1 0"},
		{"counts past 2^53", []v{{1 << 60, 0, 0, 0}, {3, 0, 0, 0}}, fmt.Sprintf("total 0 1/a %d 0 0 0", int64(1<<60+3))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newState(t, nil)
			var out []outRow
			for p, v := range c.parts {
				var err error
				out, _, err = a.publish(int32(p), -1, row(total, 0, 1, "a", v.votes, v.first, v.last, v.score))
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := describeAll(a, out); len(got) != 1 || got[0] != c.want {
				t.Fatalf("merged %q, want %q", got, c.want)
			}
		})
	}
}

func TestMerge_OnlyTheGroupsThatChangedGoOut(t *testing.T) {
	a := newState(t, nil)
	a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0), row(total, 0, 1, "b", 1, 1, 1, 0), row(second, t0, 1, "a", 1, 1, 1, 0))
	seq := a.seq
	out, _, _ := a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0), row(total, 0, 1, "b", 2, 1, 1, 0), row(second, t0, 1, "a", 1, 1, 1, 0))
	if got := describeAll(a, out); !slices.Equal(got, []string{"total 0 1/b 2 1 1 0"}) {
		t.Fatalf("changed rows %q, want only 1/b", got)
	}
	out, _, _ = a.publish(1, -1, row(total, 0, 1, "a", 0, 1, 1, 0)) // adds nothing to the merge
	if len(out) != 0 || a.seq != seq+1 {
		t.Fatalf("a partition that changes no merged value made rows %q and seq %d", describeAll(a, out), a.seq)
	}
}

func TestMerge_APaneIsFinalOnlyWhileEveryContributorSentItFinal(t *testing.T) {
	a := newState(t, &Options{KeepClosed: 1})
	steps := []struct {
		partition int32
		r         abi.Row
		want      string // the merged row after the step; "" for none
	}{
		{0, final(row(second, t0, 1, "a", 3, 1, 2, 0)), "second 1764000000000 1/a 3 1 2 0 final"},
		{1, row(second, t0, 1, "a", 4, 1, 2, 0), "second 1764000000000 1/a 7 1 2 0"}, // a late contributor reopens it
		{0, row(second, t0, 1, "a", 1, 1, 1, 0), ""},                                 // partition 0 does not take its final value back
		{1, final(row(second, t0, 1, "a", 4, 1, 2, 0)), "second 1764000000000 1/a 7 1 2 0 final"},
	}
	for i, s := range steps {
		out, _, _ := a.publish(s.partition, -1, s.r)
		got := describeAll(a, out)
		if s.want == "" && len(got) != 0 || s.want != "" && (len(got) != 1 || got[0] != s.want) {
			t.Fatalf("step %d: %q, want %q", i, got, s.want)
		}
	}
	p := a.wins[second].panes[t0]
	if !p.closed() || p.open != 0 {
		t.Fatalf("pane open %d, closed %v: every group is final", p.open, p.closed())
	}
}

func TestMerge_ClosedPanesBeyondKeepClosedAreEvictedAndStayGone(t *testing.T) {
	a := newState(t, &Options{KeepClosed: 2})
	var evicted []paneRef
	for i := range int64(4) {
		_, ev, _ := a.publish(0, -1, final(row(second, t0+i*1000, 1, "a", 1, 1, 1, 0)))
		evicted = append(evicted, ev...)
	}
	if want := []paneRef{{second, t0}, {second, t0 + 1000}}; !slices.Equal(evicted, want) {
		t.Fatalf("evicted %v, want the two oldest closed panes %v", evicted, want)
	}
	// An open pane older than the kept ones is not evicted for being old.
	a.publish(0, -1, row(second, t0+10_000, 1, "a", 1, 1, 1, 0))
	if _, ok := a.wins[second].panes[t0+10_000]; !ok {
		t.Fatal("an open pane was evicted")
	}
	// A row for an evicted pane (a late partition) does not bring it back.
	out, _, _ := a.publish(1, -1, final(row(second, t0, 1, "a", 5, 1, 1, 0)))
	if len(out) != 0 || a.wins[second].panes[t0] != nil || a.drops["row for an evicted pane"] != 1 {
		t.Fatalf("a row for an evicted pane made %q", describeAll(a, out))
	}
	// The running total is never evicted.
	for i := range int64(5) {
		a.publish(int32(i), -1, final(row(total, 0, i, "a", 1, 1, 1, 0)))
	}
	if len(a.wins[total].panes) != 1 {
		t.Fatalf("%d global panes", len(a.wins[total].panes))
	}
}

func TestMerge_OpenPanesAreBounded(t *testing.T) {
	a := newState(t, &Options{KeepClosed: 1})
	limit := a.keepClosed + maxOpenPanes
	var evicted []paneRef
	for i := range int64(limit + 3) {
		_, ev, _ := a.publish(0, -1, row(second, t0+i*1000, 1, "a", 1, 1, 1, 0))
		evicted = append(evicted, ev...)
	}
	if n := len(a.wins[second].panes); n != limit {
		t.Fatalf("%d panes kept, want the bound %d", n, limit)
	}
	if want := []paneRef{{second, t0}, {second, t0 + 1000}, {second, t0 + 2000}}; !slices.Equal(evicted, want) {
		t.Fatalf("evicted %v, want the oldest %v", evicted, want)
	}
}

func TestMerge_GroupsPastTheLimitAreLeftOutAndNamed(t *testing.T) {
	a := newState(t, &Options{MaxGroupsPerPane: 2})
	out, _, err := a.publish(3, -1, row(second, t0, 1, "a", 1, 1, 1, 0), row(second, t0, 1, "b", 1, 1, 1, 0),
		row(second, t0, 1, "c", 1, 1, 1, 0), row(second, t0, 1, "d", 1, 1, 1, 0), row(second, t0+1000, 1, "c", 1, 1, 1, 0))
	var tm *TooManyGroupsError
	if !errors.As(err, &tm) || tm.Window != "second" || tm.Start != t0 || tm.Limit != 2 || tm.Dropped != 2 || tm.Aggregator != "votes" {
		t.Fatalf("error %#v, want 2 rows of pane second@%d left out", err, int64(t0))
	}
	if len(out) != 3 {
		t.Fatalf("%d rows out, want the 2 that fit and the other pane's", len(out))
	}
	// Groups that exist go on changing.
	if out, _, err := a.publish(3, -1, row(second, t0, 1, "a", 9, 1, 1, 0)); err != nil || len(out) != 1 {
		t.Fatalf("an existing group: %v, %d rows", err, len(out))
	}
}

func TestMerge_OlderVersionsOfAPartitionAreReplays(t *testing.T) {
	cases := []struct {
		name     string
		versions []int64 // of successive publishes of partition 0
		applied  []bool
	}{
		{"increasing", []int64{10, 20, 30}, []bool{true, true, true}},
		{"the same again", []int64{10, 10}, []bool{true, true}},
		{"older", []int64{20, 10, 15, 20}, []bool{true, false, false, true}},
		{"unversioned is always applied", []int64{20, -1, 5}, []bool{true, true, false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newState(t, nil)
			for i, v := range c.versions {
				if got := !a.stale(0, v); got != c.applied[i] {
					t.Fatalf("publish %d at version %d: applied %v, want %v", i, v, got, c.applied[i])
				}
			}
			if a.stale(1, 0) {
				t.Fatal("another partition's versions are its own")
			}
		})
	}
}
