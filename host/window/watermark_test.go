package window

import (
	"testing"

	"github.com/wagg/wagg/abi"
)

var second = []abi.Window{{Name: "s", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "t", Kind: abi.Global}}

func TestWatermark_LateOnlyOnceTheWindowClosed(t *testing.T) {
	w := New(second, 2000, Start)
	steps := []struct {
		ts   int64
		late bool
		wm   int64
	}{
		{10_500, false, 8_500},
		{9_100, false, 8_500}, // window [9000,10000) ends after the watermark
		{12_000, false, 10_000},
		{9_999, true, 10_000},   // window [9000,10000) closed at 10000
		{10_000, false, 10_000}, // window [10000,11000) still open
		{11_000, false, 10_000},
	}
	for i, s := range steps {
		if late := observe(w, s.ts); late != s.late || w.Value() != s.wm {
			t.Fatalf("step %d ts=%d: late=%v watermark=%d, want %v %d", i, s.ts, late, w.Value(), s.late, s.wm)
		}
	}
}

func TestWatermark_IdleAdvanceNeedsHistoryAndOnlyGoesForward(t *testing.T) {
	w := New(second, 1000, Start)
	if v := w.IdleTo(100_000); v != Start {
		t.Fatalf("a partition that never saw a record would advance to %d", v)
	}
	observe(w, 50_000)
	if v := w.IdleTo(105_000); v != 104_000 {
		t.Fatalf("idle advance to %d, want now-lateness 104000", v)
	}
	if v := w.IdleTo(40_000); v != 49_000 {
		t.Fatalf("idle advance behind the watermark: %d, want 49000", v)
	}
	w.Set(104_000)
	w.Set(60_000)
	if w.Value() != 104_000 {
		t.Fatalf("Set went backwards: %d", w.Value())
	}
}

func TestWatermark_NeverGoesBackwards(t *testing.T) {
	w := New(second, 0, 20_000)
	observe(w, 25_000)
	observe(w, 21_000)
	if w.Value() != 25_000 {
		t.Fatalf("watermark %d, want 25000", w.Value())
	}
}

// The same records give the same watermark and the same late decisions
// however they are split: the watermark depends on the input alone.
func TestWatermark_ReplayFromACheckpointReachesTheSameDecisions(t *testing.T) {
	ts := []int64{5_000, 9_000, 3_000, 12_000, 8_000, 11_500, 2_000, 15_000, 13_900, 14_100}
	full := New(second, 1000, Start)
	var want []bool
	for _, x := range ts {
		want = append(want, observe(full, x))
	}
	for cut := range ts {
		first := New(second, 1000, Start)
		var got []bool
		for _, x := range ts[:cut] {
			got = append(got, observe(first, x))
		}
		replay := New(second, 1000, first.Value()) // restored from a checkpoint at cut
		for _, x := range ts[cut:] {
			got = append(got, observe(replay, x))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("checkpoint after %d records: record %d late=%v, want %v", cut, i, got[i], want[i])
			}
		}
		if replay.Value() != full.Value() {
			t.Fatalf("checkpoint after %d records: watermark %d, want %d", cut, replay.Value(), full.Value())
		}
	}
}

func TestGuard_RefusesFutureAndOutOfRangeEventTimes(t *testing.T) {
	g := NewGuard(60_000, []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "five", Kind: abi.Hopping, SizeMs: 5000, SlideMs: 1000}, {Name: "total", Kind: abi.Global}})
	now := int64(1_700_000_000_000)
	cases := []struct {
		name   string
		ts     int64
		reason string
	}{
		{"now", now, ""},
		{"within max_future", now + 60_000, ""},
		{"past max_future", now + 60_001, ReasonFuture},
		{"an hour ahead", now + 3_600_000, ReasonFuture},
		{"the first second whose hopping panes all start in 1970", 4000, ""},
		{"a hopping pane before 1970", 3999, ReasonOutOfRange},
		{"the epoch, in a hopping pane of 1969", 0, ReasonOutOfRange},
		{"before 1970", -1, ReasonOutOfRange},
		{"past DateTime", MaxEventTime, ReasonOutOfRange},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reason, msg := g.Check(c.ts, now)
			if reason != c.reason || (reason != "" && msg == "") {
				t.Fatalf("Check(%d) = %q %q, want reason %q", c.ts, reason, msg, c.reason)
			}
		})
	}
	// Past DateTime is refused even without a max_future.
	if r, _ := NewGuard(0, []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}}).Check(MaxEventTime-500, now); r != ReasonOutOfRange {
		t.Fatalf("a pane ending past DateTime: reason %q", r)
	}
}

func observe(w *Watermark, ts int64) bool {
	if w.Late(ts) {
		return true
	}
	w.Advance(ts)
	return false
}
