package hub

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/wagg/wagg/abi"
)

func TestHub_SubscribeGetsSnapshotThenContinuousDeltas(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 5, 5, 0.5)})

	c := dial(t, url, Subscribe{Aggregator: "votes"})
	var v View
	follow(t, c, &v, (*View).Live)
	if v.Seq != 1 || v.Epoch == "" || len(v.Windows) != 2 || len(v.Metrics) != 4 {
		t.Fatalf("snapshot: seq %d epoch %q windows %v metrics %v", v.Seq, v.Epoch, v.Windows, v.Metrics)
	}
	for i := int64(2); i <= 50; i++ {
		h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", i, 5, 5+i, 0.5)})
	}
	frames := follow(t, c, &v, func(v *View) bool { return v.Seq == 50 })
	for i, f := range frames {
		if f.Type != TypeDelta || f.Seq != uint64(i)+2 || f.Prev != f.Seq-1 {
			t.Fatalf("frame %d: %s seq %d prev %d, want delta %d after %d", i, f.Type, f.Seq, f.Prev, i+2, i+1)
		}
	}
	got := compact(v.Rows())
	want := []string{"total 0 1/a 50 5 55 0.5"}
	if !slices.Equal(got, want) {
		t.Fatalf("rows %q, want %q", got, want)
	}
}

func TestHub_MergesPartitions(t *testing.T) {
	type pub struct {
		partition int32
		rows      []abi.Row
	}
	nan := math.NaN()
	for _, tc := range []struct {
		name string
		pubs []pub
		want []string
	}{
		{
			name: "count and sum add across partitions, min and max take the extreme",
			pubs: []pub{
				{0, []abi.Row{row(total, 0, 1, "a", 3, 10, 20, 1.5)}},
				{1, []abi.Row{row(total, 0, 1, "a", 4, 5, 15, 2.25)}},
			},
			want: []string{"total 0 1/a 7 5 20 3.75"},
		},
		{
			name: "a partition's new absolute value replaces its old one",
			pubs: []pub{
				{0, []abi.Row{row(total, 0, 1, "a", 3, 10, 20, 0)}},
				{1, []abi.Row{row(total, 0, 1, "a", 2, 30, 30, 0)}},
				{0, []abi.Row{row(total, 0, 1, "a", 5, 10, 25, 0)}},
			},
			want: []string{"total 0 1/a 7 10 30 0"},
		},
		{
			name: "groups stay apart by key and by pane",
			pubs: []pub{
				{0, []abi.Row{row(second, t0, 1, "a", 1, 1, 1, 0), row(second, t0+1000, 1, "a", 2, 2, 2, 0), row(second, t0, 1, "b", 3, 3, 3, 0)}},
			},
			want: []string{"second 1764000000000 1/a 1 1 1 0", "second 1764000000000 1/b 3 3 3 0", "second 1764000001000 1/a 2 2 2 0"},
		},
		{
			name: "not final while a contributing partition has not sent it final",
			pubs: []pub{
				{0, []abi.Row{final(row(second, t0, 1, "a", 3, 1, 2, 0))}},
				{1, []abi.Row{row(second, t0, 1, "a", 4, 1, 2, 0)}},
			},
			want: []string{"second 1764000000000 1/a 7 1 2 0"},
		},
		{
			name: "final once every contributing partition sent it final",
			pubs: []pub{
				{0, []abi.Row{final(row(second, t0, 1, "a", 3, 1, 2, 0))}},
				{1, []abi.Row{row(second, t0, 1, "a", 4, 1, 2, 0)}},
				{1, []abi.Row{final(row(second, t0, 1, "a", 4, 1, 2, 0))}},
			},
			want: []string{"second 1764000000000 1/a 7 1 2 0 final"},
		},
		{
			name: "a partition does not take a final row back (replay after restart)",
			pubs: []pub{
				{0, []abi.Row{final(row(second, t0, 1, "a", 3, 1, 2, 0))}},
				{0, []abi.Row{row(second, t0, 1, "a", 1, 1, 1, 0)}},
			},
			want: []string{"second 1764000000000 1/a 3 1 2 0 final"},
		},
		{
			name: "a global row has start 0 whatever the row says",
			pubs: []pub{{0, []abi.Row{row(total, 12345, 1, "a", 1, 1, 1, 0)}}},
			want: []string{"total 0 1/a 1 1 1 0"},
		},
		{
			name: "NaN and infinite floats are sent as null",
			pubs: []pub{{0, []abi.Row{row(total, 0, 1, "a", 1, 1, 1, nan), row(total, 0, 2, "a", 1, 1, 1, math.Inf(1))}}},
			want: []string{"total 0 1/a 1 1 1 ", "total 0 2/a 1 1 1 "},
		},
		{
			name: "rows naming an unknown window or with the wrong number of metrics are dropped",
			pubs: []pub{{0, []abi.Row{
				{Window: 7, Key: key(1, "a"), Metrics: []uint64{1, 1, 1, 0}},
				{Window: total, Key: key(1, "a"), Metrics: []uint64{1}},
				{Window: total, Key: "\x01", Metrics: []uint64{1, 1, 1, 0}},
				row(total, 0, 2, "ok", 1, 1, 1, 0),
			}}},
			want: []string{"total 0 2/ok 1 1 1 0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, url := serve(t, nil)
			h.Register("votes", testSchema, testWindows)
			// One subscriber follows the deltas, a second takes a snapshot
			// afterwards: both must agree with the expectation.
			c := dial(t, url, Subscribe{Aggregator: "votes"})
			var v View
			follow(t, c, &v, (*View).Live)
			for _, p := range tc.pubs {
				h.Publish("votes", p.partition, p.rows)
			}
			head := seqOf(h, "votes")
			follow(t, c, &v, func(v *View) bool { return v.Seq == head })
			if got := compact(v.Rows()); !slices.Equal(got, tc.want) {
				t.Errorf("live rows %q, want %q", got, tc.want)
			}
			var s View
			if err := s.Apply(snapshot(t, url, Subscribe{Aggregator: "votes"})); err != nil {
				t.Fatal(err)
			}
			if got := compact(s.Rows()); !slices.Equal(got, tc.want) {
				t.Errorf("snapshot rows %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHub_RepublishingTheSameValuesMakesNoDelta(t *testing.T) {
	h, _ := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	rows := []abi.Row{row(total, 0, 1, "a", 3, 1, 2, 0), row(second, t0, 1, "a", 3, 1, 2, 0)}
	h.Publish("votes", 0, rows)
	h.Publish("votes", 0, rows)
	if s := seqOf(h, "votes"); s != 1 {
		t.Fatalf("seq %d after publishing the same rows twice, want 1", s)
	}
}

// filterFixture publishes rows over two windows and four keys.
func filterFixture(h *Hub) {
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{
		row(total, 0, 1, "a", 1, 0, 0, 0),
		row(total, 0, 1, "b", 2, 0, 0, 0),
		row(total, 0, 2, "a", 3, 0, 0, 0),
		row(total, 0, 3, "c", 4, 0, 0, 0),
		row(second, t0, 1, "a", 1, 0, 0, 0),
		row(second, t0, 2, "a", 3, 0, 0, 0),
	})
}

func TestHub_Filters(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  Subscribe
		want []string
	}{
		{
			name: "no filter gets every row",
			sub:  Subscribe{},
			want: []string{"total 0 1/a 1 0 0 0", "total 0 1/b 2 0 0 0", "total 0 2/a 3 0 0 0", "total 0 3/c 4 0 0 0",
				"second 1764000000000 1/a 1 0 0 0", "second 1764000000000 2/a 3 0 0 0"},
		},
		{
			name: "window filter keeps the named windows",
			sub:  Subscribe{Windows: []string{"second"}},
			want: []string{"second 1764000000000 1/a 1 0 0 0", "second 1764000000000 2/a 3 0 0 0"},
		},
		{
			name: "key filter on an int column",
			sub:  Subscribe{Keys: map[string][]any{"poll_id": {1}}},
			want: []string{"total 0 1/a 1 0 0 0", "total 0 1/b 2 0 0 0", "second 1764000000000 1/a 1 0 0 0"},
		},
		{
			name: "key columns are ANDed and the values of one column ORed",
			sub:  Subscribe{Keys: map[string][]any{"poll_id": {1, 2}, "option": {"a"}}},
			want: []string{"total 0 1/a 1 0 0 0", "total 0 2/a 3 0 0 0", "second 1764000000000 1/a 1 0 0 0", "second 1764000000000 2/a 3 0 0 0"},
		},
		{
			name: "window and key filters together",
			sub:  Subscribe{Windows: []string{"total"}, Keys: map[string][]any{"option": {"c", "b"}}},
			want: []string{"total 0 1/b 2 0 0 0", "total 0 3/c 4 0 0 0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, url := serve(t, nil)
			// A subscriber before the rows (deltas) and one after (snapshot).
			sub := tc.sub
			sub.Aggregator = "votes"
			h.Register("votes", testSchema, testWindows)
			c := dial(t, url, sub)
			var v View
			follow(t, c, &v, (*View).Live)
			filterFixture(h)
			follow(t, c, &v, func(v *View) bool { return len(v.Rows()) == len(tc.want) })
			if got := compact(v.Rows()); !slices.Equal(got, tc.want) {
				t.Errorf("live rows %q, want %q", got, tc.want)
			}
			var s View
			if err := s.Apply(snapshot(t, url, sub)); err != nil {
				t.Fatal(err)
			}
			if got := compact(s.Rows()); !slices.Equal(got, tc.want) {
				t.Errorf("snapshot rows %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHub_FilteredSubscriberSkipsDeltasItDoesNotWantAndSaysSoInPrev(t *testing.T) {
	h, url := serve(t, nil)
	filterFixture(h)
	c := dial(t, url, Subscribe{Aggregator: "votes", Keys: map[string][]any{"poll_id": {1}}})
	var v View
	follow(t, c, &v, (*View).Live)
	base := v.Seq
	h.Publish("votes", 0, []abi.Row{row(total, 0, 3, "c", 5, 0, 0, 0)}) // not for this subscriber
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 9, 0, 0, 0)})
	f := next(t, c)
	if f.Type != TypeDelta || f.Prev != base || f.Seq != base+2 {
		t.Fatalf("got %s seq %d prev %d, want delta %d after %d", f.Type, f.Seq, f.Prev, base+2, base)
	}
	if err := v.Apply(f); err != nil {
		t.Fatal(err)
	}
}

func TestHub_Resume(t *testing.T) {
	for _, tc := range []struct {
		name   string
		missed int                                // deltas published while away
		resume func(v *View) *Resume              // what the client sends
		want   func(t *testing.T, frames []Frame) // the frames up to the head
	}{
		{
			name:   "missed deltas still kept: resumed, then each missed delta",
			missed: 3,
			resume: (*View).Resume,
			want: func(t *testing.T, fs []Frame) {
				wantTypes(t, fs, TypeResumed, TypeDelta, TypeDelta, TypeDelta)
				for i, f := range fs[1:] {
					if f.Prev != f.Seq-1 || f.Seq != fs[0].Seq+uint64(i)+1 {
						t.Errorf("delta %d: seq %d prev %d", i, f.Seq, f.Prev)
					}
				}
			},
		},
		{
			name:   "nothing missed: resumed alone",
			missed: 0,
			resume: (*View).Resume,
			want:   func(t *testing.T, fs []Frame) { wantTypes(t, fs, TypeResumed) },
		},
		{
			name:   "more missed than QueueFrames: resumed, then one coalesced delta",
			missed: 6,
			resume: (*View).Resume,
			want: func(t *testing.T, fs []Frame) {
				wantTypes(t, fs, TypeResumed, TypeDelta)
				if fs[1].Prev != fs[0].Seq || fs[1].Seq != fs[0].Seq+6 {
					t.Errorf("coalesced delta seq %d prev %d", fs[1].Seq, fs[1].Prev)
				}
			},
		},
		{
			name:   "missed deltas no longer kept: fresh snapshot",
			missed: 9,
			resume: (*View).Resume,
			want:   func(t *testing.T, fs []Frame) { wantTypes(t, fs, TypeSnapshot) },
		},
		{
			name:   "another epoch: fresh snapshot",
			missed: 1,
			resume: func(v *View) *Resume { return &Resume{Epoch: "0123456789abcdef", Seq: v.Seq} },
			want:   func(t *testing.T, fs []Frame) { wantTypes(t, fs, TypeSnapshot) },
		},
		{
			name:   "a seq ahead of the hub: fresh snapshot",
			missed: 1,
			resume: func(v *View) *Resume { return &Resume{Epoch: v.Epoch, Seq: v.Seq + 100} },
			want:   func(t *testing.T, fs []Frame) { wantTypes(t, fs, TypeSnapshot) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, url := serve(t, &Options{QueueFrames: 4, History: 8})
			h.Register("votes", testSchema, testWindows)
			h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 0, 0, 0)})
			c := dial(t, url, Subscribe{Aggregator: "votes"})
			var v View
			follow(t, c, &v, (*View).Live)
			c.Close()
			for i := range tc.missed {
				h.Publish("votes", int32(i%3), []abi.Row{row(total, 0, int64(i%4), "a", int64(i+2), 0, 0, 0)})
			}
			head := seqOf(h, "votes")
			c = dial(t, url, Subscribe{Aggregator: "votes", Resume: tc.resume(&v)})
			frames := follow(t, c, &v, func(w *View) bool { return w.Seq == head && w.Live() })
			if len(frames) == 0 || frames[len(frames)-1].Seq != head {
				frames = append(frames, next(t, c)) // the resumed frame of "nothing missed"
				if err := v.Apply(frames[len(frames)-1]); err != nil {
					t.Fatal(err)
				}
			}
			tc.want(t, frames)
			var s View
			if err := s.Apply(snapshot(t, url, Subscribe{Aggregator: "votes"})); err != nil {
				t.Fatal(err)
			}
			if got, want := compact(v.Rows()), compact(s.Rows()); !slices.Equal(got, want) {
				t.Errorf("after resume the view holds %q, a fresh snapshot %q", got, want)
			}
			// And it stays live.
			h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 100, 0, 0, 0)})
			follow(t, c, &v, func(w *View) bool { return w.Seq == head+1 })
		})
	}
}

func wantTypes(t *testing.T, fs []Frame, types ...string) {
	t.Helper()
	var got []string
	for _, f := range fs {
		got = append(got, f.Type)
	}
	if !slices.Equal(got, types) {
		t.Fatalf("frames %v, want %v", got, types)
	}
}

func TestHub_FilteredResumeGetsOnlyItsMissedRows(t *testing.T) {
	h, url := serve(t, nil)
	filterFixture(h)
	sub := Subscribe{Aggregator: "votes", Keys: map[string][]any{"poll_id": {2}}}
	c := dial(t, url, sub)
	var v View
	follow(t, c, &v, (*View).Live)
	c.Close()
	base := v.Seq
	h.Publish("votes", 0, []abi.Row{row(total, 0, 2, "a", 10, 0, 0, 0)})
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 10, 0, 0, 0)})
	h.Publish("votes", 0, []abi.Row{row(total, 0, 3, "c", 10, 0, 0, 0)})
	h.Publish("votes", 0, []abi.Row{row(total, 0, 2, "a", 11, 0, 0, 0)})
	sub.Resume = v.Resume()
	c = dial(t, url, sub)
	frames := follow(t, c, &v, func(w *View) bool { return w.Seq == base+4 })
	wantTypes(t, frames, TypeResumed, TypeDelta, TypeDelta)
	if frames[1].Seq != base+1 || frames[2].Prev != base+1 || frames[2].Seq != base+4 {
		t.Fatalf("deltas %d<-%d and %d<-%d", frames[1].Seq, frames[1].Prev, frames[2].Seq, frames[2].Prev)
	}
	got := compact(v.Rows())
	want := []string{"total 0 2/a 11 0 0 0", "second 1764000000000 2/a 3 0 0 0"}
	if !slices.Equal(got, want) {
		t.Fatalf("rows %q, want %q", got, want)
	}
}

func TestHub_EvictsClosedPanesBeyondKeepClosed(t *testing.T) {
	h, url := serve(t, &Options{KeepClosed: 2})
	h.Register("votes", testSchema, testWindows)
	c := dial(t, url, Subscribe{Aggregator: "votes"})
	var v View
	follow(t, c, &v, (*View).Live)
	var evicted []Pane
	// An open pane, older than the kept closed ones, is not evicted.
	h.Publish("votes", 1, []abi.Row{row(second, t0-5000, 1, "a", 1, 0, 0, 0)})
	for i := range int64(4) {
		h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", i+1, 0, 0, 0), final(row(second, t0+i*1000, 1, "a", 1, 0, 0, 0))})
	}
	head := seqOf(h, "votes")
	for _, f := range follow(t, c, &v, func(w *View) bool { return w.Seq == head }) {
		evicted = append(evicted, f.Evicted...)
	}
	if want := []Pane{{"second", t0}, {"second", t0 + 1000}}; !slices.Equal(evicted, want) {
		t.Errorf("evicted %v, want %v", evicted, want)
	}
	want := []string{"total 0 1/a 4 0 0 0", "second 1763999995000 1/a 1 0 0 0",
		"second 1764000002000 1/a 1 0 0 0 final", "second 1764000003000 1/a 1 0 0 0 final"}
	if got := compact(v.Rows()); !slices.Equal(got, want) {
		t.Errorf("live rows %q, want %q", got, want)
	}
	var s View
	if err := s.Apply(snapshot(t, url, Subscribe{Aggregator: "votes"})); err != nil {
		t.Fatal(err)
	}
	if got := compact(s.Rows()); !slices.Equal(got, want) {
		t.Errorf("snapshot rows %q, want %q", got, want)
	}
	// A late row for an evicted pane does not bring back a partial pane;
	// neither does one for a pane older than the evicted ones.
	h.Publish("votes", 3, []abi.Row{row(second, t0, 1, "a", 7, 0, 0, 0)})
	h.Publish("votes", 3, []abi.Row{row(second, t0-9000, 1, "a", 7, 0, 0, 0)})
	if s := seqOf(h, "votes"); s != head {
		t.Errorf("a row for an evicted pane made delta %d", s)
	}
	// The snapshot can be limited to the latest panes.
	var p View
	if err := p.Apply(snapshot(t, url, Subscribe{Aggregator: "votes", Panes: 1})); err != nil {
		t.Fatal(err)
	}
	if got, want := compact(p.Rows()), []string{want[0], want[3]}; !slices.Equal(got, want) {
		t.Errorf("panes=1 snapshot %q, want %q", got, want)
	}
}

func TestHub_IntervalCoalescesDeltas(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	c := dial(t, url, Subscribe{Aggregator: "votes", IntervalMs: 300})
	var v View
	follow(t, c, &v, (*View).Live)
	for i := range int64(20) {
		h.Publish("votes", 0, []abi.Row{row(total, 0, i%3, "a", i, 0, 0, 0)})
	}
	frames := follow(t, c, &v, func(w *View) bool { return w.Seq == 20 })
	// 20 publishes take far less than the interval: they arrive as one
	// delta (two if the scheduler split them across an interval).
	if len(frames) > 2 {
		t.Errorf("%d deltas for 20 changes with a 300ms interval", len(frames))
	}
	want := []string{"total 0 0/a 18 0 0 0", "total 0 1/a 19 0 0 0", "total 0 2/a 17 0 0 0"}
	if got := compact(v.Rows()); !slices.Equal(got, want) {
		t.Errorf("rows %q, want %q", got, want)
	}
}

func TestHub_UnfilteredSnapshotsOfOneSeqAreCopiedAndEncodedOnce(t *testing.T) {
	h, url := serve(t, nil)
	filterFixture(h)
	a := h.lookup("votes")
	a.mu.Lock()
	all, _ := compileFilter(a, &Subscribe{Aggregator: "votes", Windows: []string{"second", "total"}})
	one, _ := compileFilter(a, &Subscribe{Aggregator: "votes", Windows: []string{"total"}})
	s1, s2, s3 := a.snapshot(all), a.snapshot(all), a.snapshot(one)
	a.mu.Unlock()
	if s1 != s2 || s1 == s3 {
		t.Fatalf("unfiltered snapshots shared: %v, filtered one shared: %v", s1 == s2, s1 == s3)
	}
	h.Publish("votes", 0, []abi.Row{row(total, 0, 9, "z", 1, 0, 0, 0)})
	a.mu.Lock()
	s4 := a.snapshot(all)
	a.mu.Unlock()
	if s4 == s1 || s4.seq != s1.seq+1 {
		t.Fatal("a snapshot outlived its seq")
	}
	// Subscribers get the same bytes.
	f1, f2 := snapshot(t, url, Subscribe{Aggregator: "votes"}), snapshot(t, url, Subscribe{Aggregator: "votes"})
	if len(f1.Rows) != 7 || len(f2.Rows) != 7 {
		t.Fatalf("snapshots of %d and %d rows", len(f1.Rows), len(f2.Rows))
	}
}

func TestHub_RefusesMoreGroupsPerPaneThanTheLimit(t *testing.T) {
	h, url := serve(t, &Options{MaxGroupsPerPane: 3})
	h.Register("votes", testSchema, testWindows)
	// Two partitions fill the global pane between them; a pane of another
	// window has a limit of its own.
	if err := h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 5, 5, 0), row(total, 0, 2, "a", 1, 5, 5, 0)}); err != nil {
		t.Fatal(err)
	}
	err := h.Publish("votes", 1, []abi.Row{
		row(total, 0, 1, "a", 2, 5, 5, 0), // an existing group: merged
		row(total, 0, 3, "a", 1, 5, 5, 0), // the third
		row(total, 0, 4, "a", 1, 5, 5, 0), // one too many
		row(total, 0, 5, "a", 1, 5, 5, 0),
		row(second, t0, 9, "z", 1, 5, 5, 0),
	})
	var tm *TooManyGroupsError
	if !errors.As(err, &tm) || tm.Window != "total" || tm.Limit != 3 || tm.Dropped != 2 ||
		!strings.Contains(err.Error(), "sandbox.max_groups_per_pane") || !strings.Contains(err.Error(), "aggregator votes") {
		t.Fatalf("got %v, want a TooManyGroupsError for window total dropping 2 rows", err)
	}
	got := compact(snapshot(t, url, Subscribe{Aggregator: "votes"}).Rows)
	want := []string{"total 0 1/a 3 5 5 0", "total 0 2/a 1 5 5 0", "total 0 3/a 1 5 5 0", "second 1764000000000 9/z 1 5 5 0"}
	if !slices.Equal(got, want) {
		t.Fatalf("rows %q, want %q", got, want)
	}
	// A later value of a group that exists is still taken.
	if err := h.Publish("votes", 0, []abi.Row{row(total, 0, 3, "a", 7, 5, 5, 0)}); err != nil {
		t.Fatal(err)
	}
}

// Fresh keys in panes that never close are bounded in all, not only per
// pane: otherwise 4096 open panes of a million groups each would take the
// host's memory. At the bound closed panes go first, oldest first; with
// none left the rows are refused and the error names the setting. Long
// keys count for what they take.
func TestHub_BoundsTheGroupsOfAllPanesTogether(t *testing.T) {
	one := groupCost(key(1, "a"), len(testSchema.Metrics))
	h, url := serve(t, &Options{MaxBytes: 6 * one, KeepClosed: 10})
	h.Register("votes", testSchema, testWindows)
	// two closed panes of 2 groups each, then 2 running totals: 6
	err := h.Publish("votes", 0, []abi.Row{
		final(row(second, t0, 1, "a", 1, 5, 5, 0)), final(row(second, t0, 2, "a", 1, 5, 5, 0)),
		final(row(second, t0+1000, 1, "a", 1, 5, 5, 0)), final(row(second, t0+1000, 2, "a", 1, 5, 5, 0)),
		row(total, 0, 1, "a", 2, 5, 5, 0), row(total, 0, 2, "a", 2, 5, 5, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	// a new open pane: the oldest closed pane makes room
	if err := h.Publish("votes", 0, []abi.Row{row(second, t0+2000, 1, "a", 1, 5, 5, 0), row(second, t0+2000, 2, "a", 1, 5, 5, 0)}); err != nil {
		t.Fatalf("with a closed pane to evict: %v", err)
	}
	// wantRows checks the snapshot's rows, in any order, and returns them
	wantRows := func(want ...string) []Row {
		t.Helper()
		s := snapshot(t, url, Subscribe{Aggregator: "votes"})
		got := compact(s.Rows)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("rows %q, want %q", got, want)
		}
		return s.Rows
	}
	wantRows("total 0 1/a 2 5 5 0", "total 0 2/a 2 5 5 0",
		"second 1764000001000 1/a 1 5 5 0 final", "second 1764000001000 2/a 1 5 5 0 final",
		"second 1764000002000 1/a 1 5 5 0", "second 1764000002000 2/a 1 5 5 0")
	// fresh keys in open panes: the last closed pane goes, then rows are
	// refused, and every existing group still takes its values
	err = h.Publish("votes", 0, []abi.Row{
		row(second, t0+3000, 3, "a", 1, 5, 5, 0), row(second, t0+3000, 4, "a", 1, 5, 5, 0),
		row(second, t0+4000, 5, "a", 1, 5, 5, 0), row(second, t0+5000, 6, "a", 1, 5, 5, 0),
		row(second, t0+2000, 1, "a", 9, 5, 5, 0),
	})
	var tm *TooManyGroupsError
	if !errors.As(err, &tm) || tm.Bytes != 6*one || tm.Dropped != 2 || !strings.Contains(err.Error(), "live.max_state_bytes") {
		t.Fatalf("got %v, want a TooManyGroupsError of all panes dropping 2 rows", err)
	}
	rows := wantRows("total 0 1/a 2 5 5 0", "total 0 2/a 2 5 5 0",
		"second 1764000002000 1/a 9 5 5 0", "second 1764000002000 2/a 1 5 5 0",
		"second 1764000003000 3/a 1 5 5 0", "second 1764000003000 4/a 1 5 5 0")
	// the refused rows made no pane
	for _, r := range rows {
		if r.Start == t0+4000 || r.Start == t0+5000 {
			t.Fatalf("a pane of refused rows is there: %+v", r)
		}
	}

	// one group whose key is longer than six short ones put together
	h2, _ := serve(t, &Options{MaxBytes: 6 * one})
	h2.Register("votes", testSchema, testWindows)
	err = h2.Publish("votes", 0, []abi.Row{row(total, 0, 1, strings.Repeat("x", int(2*one)), 1, 5, 5, 0)})
	if !errors.As(err, &tm) || tm.Bytes != 6*one || tm.Dropped != 1 {
		t.Fatalf("a key of %d bytes: got %v, want it refused", 2*one, err)
	}
}

func TestHub_ResetWithGivesTheNewEpochItsFirstStateAtOnce(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 5, 5, 5, 0)})
	before := snapshot(t, url, Subscribe{Aggregator: "votes"})
	h.ResetWith("votes", testSchema, testWindows, func(publish func(int32, int64, []abi.Row)) {
		publish(0, 10, []abi.Row{row(total, 0, 1, "a", 7, 7, 7, 0)})
		publish(1, 4, []abi.Row{row(total, 0, 2, "b", 3, 3, 3, 0)})
		publish(1, 2, []abi.Row{row(total, 0, 2, "b", 1, 1, 1, 0)}) // older: dropped
	})
	s := snapshot(t, url, Subscribe{Aggregator: "votes"})
	if s.Epoch == before.Epoch || s.Seq != 0 || len(s.Rows) != 2 {
		t.Fatalf("after ResetWith: epoch %s seq %d rows %v, want a new epoch at seq 0 with the 2 rows loaded", s.Epoch, s.Seq, s.Rows)
	}
	got := map[string]int64{}
	for _, r := range s.Rows {
		n, _ := r.Values["votes"].Int64()
		got[fmt.Sprint(r.Key["poll_id"])] = n
	}
	if got["1"] != 7 || got["2"] != 3 {
		t.Fatalf("after ResetWith: %v, want poll 1: 7, poll 2: 3", got)
	}
	// Rows go on from the loaded versions.
	h.PublishAt("votes", 1, 3, []abi.Row{row(total, 0, 2, "b", 9, 9, 9, 0)})
	if s := snapshot(t, url, Subscribe{Aggregator: "votes"}); len(s.Rows) != 2 || s.Seq != 0 {
		t.Fatalf("a row older than the loaded version applied: %+v", s)
	}
}

func TestHub_ResetStartsANewEpochWithTheSameSchema(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 5, 5, 5, 0)})
	before := snapshot(t, url, Subscribe{Aggregator: "votes"})
	c := dial(t, url, Subscribe{Aggregator: "votes"})
	next(t, c)
	h.Register("votes", testSchema, testWindows) // the same schema keeps the state
	if s := snapshot(t, url, Subscribe{Aggregator: "votes"}); s.Epoch != before.Epoch || len(s.Rows) != 1 {
		t.Fatalf("Register with the same schema: epoch %s rows %v, want the old state", s.Epoch, s.Rows)
	}
	h.Reset("votes", testSchema, testWindows)
	eventually(t, "the subscriber closed as redeployed", func() bool { return closedWith(h, StatusRedeployed) == 1 })
	if s := snapshot(t, url, Subscribe{Aggregator: "votes"}); s.Epoch == before.Epoch || len(s.Rows) != 0 {
		t.Fatalf("after Reset: epoch %s rows %v, want a new epoch and no rows", s.Epoch, s.Rows)
	}
}

// An undeployed aggregator's state goes with it: nothing the hub keeps
// from one sweep to the next holds it (the sweep's scratch held the whole
// state of the last one, hundreds of MB after a flood of long keys).
func TestHub_ForgetsAnUndeployedAggregator(t *testing.T) {
	h, _ := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 5, 5, 0.5)})
	state := weak.Make(h.lookup("votes"))
	var sw sweeper
	sw.sweep(h)
	h.Unregister("votes")
	sw.sweep(h)
	// the hub's own sweeper may have taken it too: it lets go at its next
	// sweep
	deadline := time.Now().Add(10 * time.Second)
	for runtime.GC(); state.Value() != nil; runtime.GC() {
		if time.Now().After(deadline) {
			t.Fatal("the undeployed aggregator's state is still held")
		}
		runtime.Gosched()
	}
	runtime.KeepAlive(&sw) // as the hub's sweeper lives on
}
