package window

import (
	"testing"

	"github.com/wagg/wagg/abi"
)

var second = []abi.Window{{Name: "s", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "t", Kind: abi.Global}}

func TestWatermark_LateOnlyOnceTheWindowClosed(t *testing.T) {
	w := New(second, 2000, 0, Start)
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
		if late := observe(w, s.ts, 1); late != s.late || w.Value() != s.wm {
			t.Fatalf("step %d ts=%d: late=%v watermark=%d, want %v %d", i, s.ts, late, w.Value(), s.late, s.wm)
		}
	}
}

func TestWatermark_IdlePartitionAdvancesByWallClock(t *testing.T) {
	w := New(second, 1000, 5000, Start)
	w.Tick(100_000)
	if w.Value() != Start {
		t.Fatalf("a partition that never saw a record advanced to %d", w.Value())
	}
	observe(w, 50_000, 100_000)
	w.Tick(104_999)
	if w.Value() != 49_000 {
		t.Fatalf("advanced before the idle timeout: %d", w.Value())
	}
	w.Tick(105_000)
	if w.Value() != 104_000 {
		t.Fatalf("idle watermark %d, want now-lateness 104000", w.Value())
	}
	w.Tick(105_500)
	if w.Value() != 104_500 {
		t.Fatalf("idle watermark %d, want 104500", w.Value())
	}
}

func TestWatermark_NeverGoesBackwards(t *testing.T) {
	w := New(second, 0, 0, 20_000)
	observe(w, 25_000, 1)
	observe(w, 21_000, 1)
	if w.Value() != 25_000 {
		t.Fatalf("watermark %d, want 25000", w.Value())
	}
}

func observe(w *Watermark, ts, now int64) bool {
	if w.Late(ts) {
		return true
	}
	w.Advance(ts, now)
	return false
}
