package abi_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

var (
	tumble1s  = abi.Window{Name: "w1s", Kind: abi.Tumbling, SizeMs: 1000}
	hop10by5  = abi.Window{Name: "h10", Kind: abi.Hopping, SizeMs: 10_000, SlideMs: 5000}
	hop3by1   = abi.Window{Name: "h3", Kind: abi.Hopping, SizeMs: 3000, SlideMs: 1000}
	hopSame   = abi.Window{Name: "hs", Kind: abi.Hopping, SizeMs: 2000, SlideMs: 2000}
	global    = abi.Window{Name: "total", Kind: abi.Global}
	allWindow = []abi.Window{tumble1s, hop10by5, hop3by1, hopSame, global}
)

func TestWindow_Validate(t *testing.T) {
	for _, w := range append(allWindow,
		abi.Window{Name: "t", Kind: abi.Tumbling, SizeMs: 60_000, SlideMs: 60_000},
		abi.Window{Name: "h", Kind: abi.Hopping, SizeMs: 64_000, SlideMs: 1000},
	) {
		if err := w.Validate(); err != nil {
			t.Errorf("%+v: %v", w, err)
		}
	}
	for _, c := range []struct {
		w    abi.Window
		want string
	}{
		{abi.Window{Name: "Bad", Kind: abi.Global}, `name "Bad"`},
		{abi.Window{Name: "", Kind: abi.Global}, `name ""`},
		{abi.Window{Name: "g", Kind: abi.Global, SizeMs: 1000}, "g: a global window has no size or slide"},
		{abi.Window{Name: "g", Kind: abi.Global, SlideMs: 1000}, "g: a global window has no size or slide"},
		{abi.Window{Name: "t", Kind: abi.Tumbling}, "t.size: want a positive whole number of seconds"},
		{abi.Window{Name: "t", Kind: abi.Tumbling, SizeMs: -1000}, "t.size"},
		{abi.Window{Name: "t", Kind: abi.Tumbling, SizeMs: 1500}, "t.size: want a positive whole number of seconds"},
		{abi.Window{Name: "t", Kind: abi.Tumbling, SizeMs: 2000, SlideMs: 1000}, "t.slide: a tumbling window has no slide"},
		{abi.Window{Name: "h", Kind: abi.Hopping, SizeMs: 2000}, "h.slide: want a positive whole number of seconds"},
		{abi.Window{Name: "h", Kind: abi.Hopping, SizeMs: 2000, SlideMs: 500}, "h.slide: want a positive whole number of seconds"},
		{abi.Window{Name: "h", Kind: abi.Hopping, SizeMs: 2500, SlideMs: 1000}, "h.size: want a multiple of the slide, at most 64 slides"},
		{abi.Window{Name: "h", Kind: abi.Hopping, SizeMs: 65_000, SlideMs: 1000}, "h.size: want a multiple of the slide, at most 64 slides"},
		{abi.Window{Name: "h", Kind: abi.Hopping, SizeMs: 0, SlideMs: 1000}, "h.size: want a positive whole number of seconds"},
		{abi.Window{Name: "s", Kind: "session"}, `s.kind "session": want tumbling, hopping or global`},
	} {
		if err := c.w.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error containing %q", c.w, err, c.want)
		}
	}
}

func TestWindow_Starts(t *testing.T) {
	for _, c := range []struct {
		w    abi.Window
		ts   int64
		want []int64
	}{
		{tumble1s, 0, []int64{0}},
		{tumble1s, 999, []int64{0}},
		{tumble1s, 1000, []int64{1000}},
		{tumble1s, 1_700_000_000_123, []int64{1_700_000_000_000}},
		{tumble1s, -1, []int64{-1000}},
		{tumble1s, -1000, []int64{-1000}},
		{tumble1s, -1001, []int64{-2000}},
		{hop10by5, 0, []int64{0, -5000}},
		{hop10by5, 4999, []int64{0, -5000}},
		{hop10by5, 5000, []int64{5000, 0}},
		{hop10by5, 12_345, []int64{10_000, 5000}},
		{hop10by5, -1, []int64{-5000, -10_000}},
		{hop3by1, 2500, []int64{2000, 1000, 0}},
		{hop3by1, -2500, []int64{-3000, -4000, -5000}},
		{hopSame, 3999, []int64{2000}},
		{global, -5, []int64{0}},
		{global, 1_700_000_000_123, []int64{0}},
	} {
		if got := c.w.Starts(c.ts, nil); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s.Starts(%d) = %v, want %v", c.w.Name, c.ts, got, c.want)
		}
	}
	if got := hop3by1.Starts(0, []int64{7}); !reflect.DeepEqual(got, []int64{7, 0, -1000, -2000}) {
		t.Errorf("Starts does not append to dst: %v", got)
	}
}

func TestWindow_EndAndClosed(t *testing.T) {
	for _, c := range []struct {
		w         abi.Window
		start     int64
		end       int64
		watermark int64
		closed    bool
	}{
		{tumble1s, 0, 1000, 999, false},
		{tumble1s, 0, 1000, 1000, true},
		{tumble1s, -1000, 0, 0, true},
		{tumble1s, -1000, 0, -1, false},
		{hop10by5, 5000, 15_000, 14_999, false},
		{hop10by5, 5000, 15_000, 15_000, true},
		{global, 0, math.MaxInt64, math.MaxInt64, false},
		{tumble1s, math.MaxInt64 - 500, math.MaxInt64, math.MaxInt64 - 1, false}, // saturates
	} {
		if got := c.w.End(c.start); got != c.end {
			t.Errorf("%s.End(%d) = %d, want %d", c.w.Name, c.start, got, c.end)
		}
		if got := c.w.Closed(c.start, c.watermark); got != c.closed {
			t.Errorf("%s.Closed(%d, %d) = %v, want %v", c.w.Name, c.start, c.watermark, got, c.closed)
		}
	}
}

func TestWindow_Late(t *testing.T) {
	for _, c := range []struct {
		w      abi.Window
		ts, wm int64
		late   bool
	}{
		{tumble1s, 500, 999, false},
		{tumble1s, 500, 1000, true},
		{tumble1s, 1000, 1000, false},
		{tumble1s, -1, 0, true},
		{tumble1s, -1, -1, false},
		// hop10by5: ts 12345 is in [5000,15000) and [10000,20000); the earliest ends at 15000.
		{hop10by5, 12_345, 14_999, false},
		{hop10by5, 12_345, 15_000, true},
		{hop10by5, -1, -1, false}, // earliest window [-10000, 0)
		{hop10by5, -1, 0, true},
		{hop3by1, 2500, 2999, false}, // earliest [0, 3000)
		{hop3by1, 2500, 3000, true},
		{global, -1 << 40, math.MaxInt64, false},
	} {
		if got := c.w.Late(c.ts, c.wm); got != c.late {
			t.Errorf("%s.Late(%d, %d) = %v, want %v", c.w.Name, c.ts, c.wm, got, c.late)
		}
	}
}

// lateByStarts is the definition: late iff the earliest window containing
// ts has ended by the watermark.
func lateByStarts(w abi.Window, ts, wm int64) bool {
	starts := w.Starts(ts, nil)
	if len(starts) == 0 {
		return true
	}
	return w.Closed(starts[len(starts)-1], wm)
}

func TestWindow_LateMatchesEarliestWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		w := allWindow[r.IntN(len(allWindow))]
		ts := r.Int64N(200_000) - 100_000
		wm := ts + r.Int64N(40_000) - 10_000
		if w.Kind == abi.Global {
			if w.Late(ts, wm) {
				t.Fatalf("global window: Late(%d, %d)", ts, wm)
			}
			continue
		}
		if got, want := w.Late(ts, wm), lateByStarts(w, ts, wm); got != want {
			t.Fatalf("%s.Late(%d, %d) = %v, want %v (starts %v)", w.Name, ts, wm, got, want, w.Starts(ts, nil))
		}
		// Every start contains ts, the starts are a slide apart, and there are
		// size/slide of them.
		starts := w.Starts(ts, nil)
		slide := w.SizeMs
		if w.Kind == abi.Hopping {
			slide = w.SlideMs
		}
		if int64(len(starts)) != w.SizeMs/slide {
			t.Fatalf("%s.Starts(%d) = %v: want %d starts", w.Name, ts, starts, w.SizeMs/slide)
		}
		for i, s := range starts {
			if s > ts || w.End(s) <= ts || s%slide != 0 || (i > 0 && starts[i-1]-s != slide) {
				t.Fatalf("%s.Starts(%d) = %v", w.Name, ts, starts)
			}
		}
	}
}

func TestWindow_ExtremeTimestampsTerminate(t *testing.T) {
	for _, w := range allWindow {
		for _, ts := range []int64{
			math.MinInt64, math.MinInt64 + 1, math.MinInt64 + 999, math.MinInt64 + 1100,
			math.MinInt64 + 5000, math.MinInt64 + 12_345, math.MaxInt64, math.MaxInt64 - 1, -1, 0,
		} {
			starts := w.Starts(ts, nil)
			if len(starts) > abi.MaxWindowsPerRecord {
				t.Fatalf("%s.Starts(%d): %d starts", w.Name, ts, len(starts))
			}
			for _, s := range starts {
				if w.Kind == abi.Global {
					break
				}
				if s > ts || w.End(s) < s || (w.End(s) <= ts && w.End(s) != math.MaxInt64) {
					t.Fatalf("%s.Starts(%d) = %v: a start that does not hold ts", w.Name, ts, starts)
				}
			}
			for _, wm := range []int64{math.MinInt64, -1, 0, math.MaxInt64} {
				if got, want := w.Late(ts, wm), w.Kind != abi.Global && lateByStarts(w, ts, wm); got != want {
					t.Fatalf("%s.Late(%d, %d) = %v, want %v (starts %v)", w.Name, ts, wm, got, want, starts)
				}
			}
		}
	}
}

func TestConfig_JSON(t *testing.T) {
	cfg := abi.Config{ABI: abi.Version, Windows: []abi.Window{tumble1s, hop10by5, global}, Params: json.RawMessage(`{"top":10}`)}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"abi":1,"windows":[{"name":"w1s","kind":"tumbling","size_ms":1000},` +
		`{"name":"h10","kind":"hopping","size_ms":10000,"slide_ms":5000},{"name":"total","kind":"global"}],"params":{"top":10}}`
	if string(b) != want {
		t.Fatalf("Config JSON\n got %s\nwant %s", b, want)
	}
}
