package hub

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
)

// seqs are the seqs of deltas.
func seqs(ds []*delta) []uint64 {
	var out []uint64
	for _, d := range ds {
		out = append(out, d.seq)
	}
	return out
}

func TestHistory_KeepsTheLastHistoryDeltasForResumes(t *testing.T) {
	a := newState(t, &Options{QueueFrames: 1, History: 4})
	if a.oldest() != 1 || a.since(0, 10) != nil {
		t.Fatalf("empty history: oldest %d", a.oldest())
	}
	for i := range int64(10) {
		a.publish(0, -1, row(total, 0, 1, "a", i+1, 1, 1, 0))
	}
	if a.seq != 10 || a.oldest() != 7 || len(a.hist) != 4 {
		t.Fatalf("seq %d, oldest %d, %d kept; want 10, 7, 4", a.seq, a.oldest(), len(a.hist))
	}
	cases := []struct {
		after uint64
		n     int
		want  []uint64
	}{
		{6, 10, []uint64{7, 8, 9, 10}}, // a resume from the oldest kept
		{8, 10, []uint64{9, 10}},
		{6, 2, []uint64{7, 8}}, // at most n
		{10, 10, nil},          // up to date
	}
	for _, c := range cases {
		if got := seqs(a.since(c.after, c.n)); !slices.Equal(got, c.want) {
			t.Errorf("since(%d, %d) = %v, want %v", c.after, c.n, got, c.want)
		}
	}
	// Each delta's frame is the delta from the seq before it.
	for _, d := range a.hist {
		var f Frame
		if err := json.Unmarshal(d.frame, &f); err != nil || f.Type != TypeDelta || f.Seq != d.seq || f.Prev != d.seq-1 || len(f.Rows) != 1 {
			t.Fatalf("frame of delta %d: %s (%v)", d.seq, d.frame, err)
		}
	}
}

func TestHistory_IsBoundedInBytesButKeepsTheLatestDelta(t *testing.T) {
	a := newState(t, &Options{History: 1000})
	a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0))
	one := len(a.hist[0].frame)
	a.historyBytes = 3*one + one/2
	for i := range int64(10) {
		a.publish(0, -1, row(total, 0, 1, "a", i+2, 1, 1, 0))
	}
	if len(a.hist) != 3 || a.histLen > a.historyBytes || a.oldest() != a.seq-2 {
		t.Fatalf("%d deltas of %d bytes kept (bound %d), oldest %d of %d", len(a.hist), a.histLen, a.historyBytes, a.oldest(), a.seq)
	}
	// A single delta larger than the bound is still kept: it is the head.
	a.historyBytes = 1
	a.publish(0, -1, row(total, 0, 1, "a", 100, 1, 1, 0))
	if len(a.hist) != 1 || a.oldest() != a.seq {
		t.Fatalf("%d deltas kept, oldest %d of %d; want the head alone", len(a.hist), a.oldest(), a.seq)
	}
}

func TestHistory_PublishWakesTheWriters(t *testing.T) {
	a := newState(t, nil)
	notify := a.notify
	a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0))
	select {
	case <-notify:
	default:
		t.Fatal("a delta did not wake the writers waiting for it")
	}
	notify = a.notify
	a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0)) // no change, no delta
	select {
	case <-notify:
		t.Fatal("writers woken without a delta")
	default:
	}
}

func TestHistory_CoalescedDeltasHoldTheLatestValueOfEachRow(t *testing.T) {
	a := newState(t, &Options{KeepClosed: 1})
	a.publish(0, -1, row(total, 0, 1, "a", 1, 1, 1, 0), row(total, 0, 1, "b", 1, 1, 1, 0))
	a.publish(0, -1, row(total, 0, 1, "a", 2, 1, 1, 0), final(row(second, t0, 2, "x", 1, 1, 1, 0)))
	a.publish(0, -1, row(total, 0, 1, "a", 3, 1, 1, 0), final(row(second, t0+1000, 2, "x", 1, 1, 1, 0))) // evicts second@t0
	cases := []struct {
		name  string
		sub   Subscribe
		after uint64
		rows  []string
		evict []Pane
	}{
		// The evicted pane's row is there too: a client applies the
		// evictions after the rows, as for one delta.
		{"everything", Subscribe{Aggregator: "votes"}, 0,
			[]string{"second 1764000000000 2/x 1 1 1 0 final", "second 1764000001000 2/x 1 1 1 0 final", "total 0 1/a 3 1 1 0", "total 0 1/b 1 1 1 0"},
			[]Pane{{Window: "second", Start: t0}}},
		{"from seq 1", Subscribe{Aggregator: "votes"}, 1,
			[]string{"second 1764000000000 2/x 1 1 1 0 final", "second 1764000001000 2/x 1 1 1 0 final", "total 0 1/a 3 1 1 0"},
			[]Pane{{Window: "second", Start: t0}}},
		{"from seq 2", Subscribe{Aggregator: "votes"}, 2,
			[]string{"second 1764000001000 2/x 1 1 1 0 final", "total 0 1/a 3 1 1 0"}, []Pane{{Window: "second", Start: t0}}},
		{"one key", Subscribe{Aggregator: "votes", Keys: map[string][]any{"option": {"a"}}}, 0,
			[]string{"total 0 1/a 3 1 1 0"}, []Pane{{Window: "second", Start: t0}}},
		{"one window", Subscribe{Aggregator: "votes", Windows: []string{"total"}}, 0,
			[]string{"total 0 1/a 3 1 1 0", "total 0 1/b 1 1 1 0"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, perr := compileFilter(a, &c.sub)
			if perr != nil {
				t.Fatal(perr)
			}
			sub := &subscription{agg: a, f: f, lastSent: c.after}
			b := a.encodeCoalesced(sub, a.since(c.after, math.MaxInt32), a.seq)
			var fr Frame
			if err := json.Unmarshal(b, &fr); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if fr.Seq != a.seq || fr.Prev != c.after {
				t.Fatalf("seq %d prev %d, want %d %d", fr.Seq, fr.Prev, a.seq, c.after)
			}
			if got := compact(fr.Rows); !slices.Equal(sorted(got), c.rows) {
				t.Errorf("rows %q, want %q", got, c.rows)
			}
			if !slices.Equal(fr.Evicted, c.evict) {
				t.Errorf("evicted %v, want %v", fr.Evicted, c.evict)
			}
		})
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

func TestHistory_LagSaturates(t *testing.T) {
	for _, c := range []struct {
		head, cursor uint64
		want         int
	}{{10, 10, 0}, {10, 3, 7}, {math.MaxUint64, 0, 1 << 62}, {1 << 63, 1, 1 << 62}} {
		if got := lag(c.head, c.cursor); got != c.want {
			t.Errorf("lag(%d, %d) = %d, want %d", c.head, c.cursor, got, c.want)
		}
	}
}
