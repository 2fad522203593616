package hub

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/abi"
)

// The test aggregator: votes per (poll_id, option), with the earliest and
// latest vote time and a float score.
var (
	testSchema = &abi.Schema{
		ABI:   abi.Version,
		Input: []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Keys:  []abi.Column{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Metrics: []abi.Metric{
			{Name: "votes", Kind: abi.Count, Type: abi.Int64},
			{Name: "first", Kind: abi.Min, Type: abi.Int64},
			{Name: "last", Kind: abi.Max, Type: abi.Int64},
			{Name: "score", Kind: abi.Sum, Type: abi.Float64},
		},
	}
	testWindows = []abi.Window{
		{Name: "total", Kind: abi.Global},
		{Name: "second", Kind: abi.Tumbling, SizeMs: 1000},
	}
)

const (
	total  = 0 // window indexes
	second = 1
	t0     = 1_764_000_000_000
)

func key(poll int64, option string) string {
	return string(abi.AppendKeyString(abi.AppendKeyInt64(nil, poll), []byte(option)))
}

// row is one partition's absolute values for (window, start, poll, option).
func row(win uint8, start int64, poll int64, option string, votes, first, last int64, score float64) abi.Row {
	return abi.Row{Window: win, Start: start, Key: key(poll, option),
		Metrics: []uint64{uint64(votes), uint64(first), uint64(last), math.Float64bits(score)}}
}

func final(r abi.Row) abi.Row { r.Final = true; return r }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve starts a hub behind an httptest server and returns it with its
// WebSocket URL. Both are closed when the test ends.
func serve(t testing.TB, o *Options) (*Hub, string) {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	h := New(o)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return h, "ws" + strings.TrimPrefix(srv.URL, "http")
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t testing.TB, url string, sub Subscribe) *Conn {
	t.Helper()
	c, err := Dial(testCtx(t), url, sub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.c.CloseNow() })
	return c
}

func next(t *testing.T, c *Conn) Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("next frame: %v", err)
	}
	return f
}

// follow reads frames into v until cond holds.
func follow(t *testing.T, c *Conn, v *View, cond func(*View) bool) []Frame {
	t.Helper()
	var frames []Frame
	for !cond(v) {
		f := next(t, c)
		frames = append(frames, f)
		if err := v.Apply(f); err != nil {
			t.Fatalf("apply %s frame seq %d prev %d: %v", f.Type, f.Seq, f.Prev, err)
		}
	}
	return frames
}

// snapshot subscribes, returns the snapshot and closes.
func snapshot(t *testing.T, url string, sub Subscribe) Frame {
	t.Helper()
	c := dial(t, url, sub)
	defer c.Close()
	f := next(t, c)
	if f.Type != TypeSnapshot {
		t.Fatalf("got %s frame %+v, want a snapshot", f.Type, f)
	}
	return f
}

// eventually waits until cond holds, failing the test at the deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// subscribers counts the registered subscriptions of an aggregator.
func subscribers(h *Hub, name string) int {
	a := h.lookup(name)
	if a == nil {
		return 0
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.subs)
}

func seqOf(h *Hub, name string) uint64 {
	a := h.lookup(name)
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.seq
}

// closedWith counts sessions being closed with code.
func closedWith(h *Hub, code websocket.StatusCode) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for s := range h.sessions {
		select {
		case <-s.done:
			if s.code == code {
				n++
			}
		default:
		}
	}
	return n
}

// compact renders rows as "window start poll/option votes first last score final".
func compact(rows []Row) []string {
	var out []string
	for _, r := range rows {
		var b strings.Builder
		b.WriteString(r.Window)
		b.WriteString(" ")
		b.WriteString(jsonString(r.Start))
		b.WriteString(" ")
		b.WriteString(jsonString(r.Key["poll_id"]))
		b.WriteString("/")
		b.WriteString(jsonString(r.Key["option"]))
		for _, m := range testSchema.Metrics {
			b.WriteString(" ")
			b.WriteString(string(r.Values[m.Name]))
		}
		if r.Final {
			b.WriteString(" final")
		}
		out = append(out, b.String())
	}
	return out
}

func jsonString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
