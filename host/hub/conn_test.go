package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/abi"
)

func TestHub_SlowSubscriberIsClosedWhileAFastOneGetsEveryDelta(t *testing.T) {
	h, url := serve(t, &Options{QueueFrames: 4, History: 8, sweepEvery: 5 * time.Millisecond})
	h.Register("votes", testSchema, testWindows)

	fast := dial(t, url, Subscribe{Aggregator: "votes"})
	var fv View
	follow(t, fast, &fv, (*View).Live)
	slow := dial(t, url, Subscribe{Aggregator: "votes"}) // never read until it is closed
	eventually(t, "two subscribers", func() bool { return subscribers(h, "votes") == 2 })

	// Deltas of ~32 KiB fill the slow peer's socket buffers after a few
	// megabytes; from then on its writer is stuck and it falls out of the
	// History. The fast one is kept exactly up to date, so it never lags.
	pad := strings.Repeat("x", 8000)
	base := fv.Seq
	deadline := time.Now().Add(30 * time.Second)
	for i := int64(0); closedWith(h, StatusSlowConsumer) == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the slow subscriber was not closed")
		}
		rows := make([]abi.Row, 4)
		for j := range rows {
			rows[j] = row(total, 0, i, pad+strconv.Itoa(j), i, 0, 0, 0)
		}
		h.Publish("votes", 0, rows)
		head := seqOf(h, "votes")
		for _, f := range follow(t, fast, &fv, func(v *View) bool { return v.Seq == head }) {
			if f.Prev != f.Seq-1 {
				t.Fatalf("the fast subscriber got delta %d after %d: coalesced or skipped", f.Seq, f.Prev)
			}
		}
	}
	if closedWith(h, StatusSlowConsumer) != 1 {
		t.Fatal("more than the slow subscriber was closed")
	}

	// The slow peer reads again: what was buffered, then the close code.
	ctx := testCtx(t)
	for {
		_, err := slow.Next(ctx)
		if err == nil {
			continue
		}
		if got := websocket.CloseStatus(err); got != StatusSlowConsumer {
			t.Fatalf("slow subscriber ended with %v (status %d), want %d", err, got, StatusSlowConsumer)
		}
		break
	}

	// The fast one carries on.
	h.Publish("votes", 1, []abi.Row{row(total, 0, 1, "after", 1, 0, 0, 0)})
	head := seqOf(h, "votes")
	follow(t, fast, &fv, func(v *View) bool { return v.Seq == head })
	t.Logf("%d deltas until the slow one was closed", fv.Seq-base)
	if fv.Seq-base < 10 {
		t.Fatalf("only %d deltas published", fv.Seq-base)
	}
}

// rawDial opens a WebSocket without sending anything.
func rawDial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(testCtx(t), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func roundTrip(t *testing.T, c *websocket.Conn, frame string) Frame {
	t.Helper()
	ctx := testCtx(t)
	if err := c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	cc := &Conn{c: c}
	f, err := cc.Next(ctx)
	if err != nil {
		t.Fatalf("after %.80s: %v", frame, err)
	}
	return f
}

func TestHub_BadFramesGetErrorFramesAndKeepTheConnection(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	many := make([]string, MaxFilterValues+1)
	for i := range many {
		many[i] = strconv.Itoa(i)
	}
	for _, tc := range []struct {
		name, frame, code string
	}{
		{"not JSON", `{"type":`, CodeBadFrame},
		{"not an object", `[1,2]`, CodeBadFrame},
		{"null", `null`, CodeBadFrame},
		{"a string", ` "ping" `, CodeBadFrame},
		{"a field of the wrong JSON type", `{"type":"subscribe","aggregator":7}`, CodeBadFrame},
		{"resume of the wrong shape", `{"type":"subscribe","aggregator":"votes","resume":{"seq":-1}}`, CodeBadFrame},
		{"two JSON values", `{"type":"ping"} {"type":"ping"}`, CodeBadFrame},
		{"no type", `{"aggregator":"votes"}`, CodeUnknownType},
		{"unknown type", `{"type":"unsubscribe"}`, CodeUnknownType},
		{"subscribe without an aggregator", `{"type":"subscribe"}`, CodeBadRequest},
		{"negative panes", `{"type":"subscribe","aggregator":"votes","panes":-1}`, CodeBadRequest},
		{"interval out of range", `{"type":"subscribe","aggregator":"votes","interval_ms":3600000}`, CodeBadRequest},
		{"too many key values", `{"type":"subscribe","aggregator":"votes","keys":{"poll_id":[` + strings.Join(many, ",") + `]}}`, CodeBadRequest},
		{"an empty value list", `{"type":"subscribe","aggregator":"votes","keys":{"option":[]}}`, CodeBadRequest},
		{"unknown aggregator", `{"type":"subscribe","aggregator":"nope"}`, CodeUnknownAggregator},
		{"unknown window", `{"type":"subscribe","aggregator":"votes","windows":["total","minute"]}`, CodeUnknownWindow},
		{"unknown key column", `{"type":"subscribe","aggregator":"votes","keys":{"user":[1]}}`, CodeUnknownKey},
		{"an int column given a string", `{"type":"subscribe","aggregator":"votes","keys":{"poll_id":["1"]}}`, CodeBadKey},
		{"an int column given a fraction", `{"type":"subscribe","aggregator":"votes","keys":{"poll_id":[1.5]}}`, CodeBadKey},
		{"a string column given a number", `{"type":"subscribe","aggregator":"votes","keys":{"option":[1]}}`, CodeBadKey},
		{"a string column given null", `{"type":"subscribe","aggregator":"votes","keys":{"option":[null]}}`, CodeBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, url)
			f := roundTrip(t, c, tc.frame)
			if f.Type != TypeError || f.Code != tc.code || f.Message == "" {
				t.Fatalf("got %+v, want an error frame with code %s", f, tc.code)
			}
			if f := roundTrip(t, c, `{"type":"ping"}`); f.Type != TypePong {
				t.Fatalf("after the error: got %+v, want a pong", f)
			}
			// A good subscribe still works on the same connection.
			if f := roundTrip(t, c, `{"type":"subscribe","aggregator":"votes","keys":{"poll_id":[1e0]}}`); f.Type != TypeSnapshot {
				t.Fatalf("after the error: got %+v, want a snapshot", f)
			}
		})
	}
	t.Run("a second subscribe", func(t *testing.T) {
		c := rawDial(t, url)
		if f := roundTrip(t, c, `{"type":"subscribe","aggregator":"votes"}`); f.Type != TypeSnapshot {
			t.Fatalf("got %+v", f)
		}
		if f := roundTrip(t, c, `{"type":"subscribe","aggregator":"votes"}`); f.Code != CodeAlreadySubscribed {
			t.Fatalf("got %+v, want %s", f, CodeAlreadySubscribed)
		}
	})
}

func TestHub_AbuseClosesTheConnectionWithItsCode(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	for _, tc := range []struct {
		name string
		send func(ctx context.Context, c *websocket.Conn) error
		want websocket.StatusCode
	}{
		{"a binary frame", func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageBinary, []byte(`{"type":"ping"}`))
		}, websocket.StatusUnsupportedData},
		{"a frame over the read limit", func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","x":"`+strings.Repeat("x", ReadLimit)+`"}`))
		}, websocket.StatusMessageTooBig},
		{"a flood of frames", func(ctx context.Context, c *websocket.Conn) error {
			for range 200 {
				if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
					return nil // the server may close before the flood ends
				}
			}
			return nil
		}, websocket.StatusPolicyViolation},
		{"a flood of control frames", func(ctx context.Context, c *websocket.Conn) error {
			go func() { // each Ping waits for its pong, which the Read below takes
				for range 200 {
					if c.Ping(ctx) != nil {
						return
					}
				}
			}()
			return nil
		}, websocket.StatusPolicyViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawDial(t, url)
			ctx := testCtx(t)
			if err := tc.send(ctx, c); err != nil {
				t.Fatal(err)
			}
			for {
				_, _, err := c.Read(ctx)
				if err == nil {
					continue
				}
				if got := websocket.CloseStatus(err); got != tc.want {
					t.Fatalf("closed with %v (status %d), want %d", err, got, tc.want)
				}
				return
			}
		})
	}
}

func TestHub_CloseClosesSubscribersWithGoingAway(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 0, 0, 0)})
	ends := make(chan error, 3)
	for range 3 {
		c := dial(t, url, Subscribe{Aggregator: "votes"})
		if f := next(t, c); f.Type != TypeSnapshot {
			t.Fatalf("got %s", f.Type)
		}
		go func() {
			for {
				if _, err := c.Next(context.Background()); err != nil {
					ends <- err
					return
				}
			}
		}()
	}
	idle := rawDial(t, url) // connected, never subscribed
	go func() {
		_, _, err := idle.Read(context.Background())
		ends <- err
	}()
	eventually(t, "four sessions", func() bool {
		h.mu.RLock()
		defer h.mu.RUnlock()
		return len(h.sessions) == 4
	})

	h.Close()
	for range 4 {
		if err := <-ends; websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("subscriber ended with %v, want going away", err)
		}
	}
	h.mu.RLock()
	n := len(h.sessions)
	h.mu.RUnlock()
	if n != 0 {
		t.Errorf("%d sessions left after Close", n)
	}
	_, resp, err := websocket.Dial(testCtx(t), url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Close: %v, %v; want 503", err, resp)
	}
	h.Close() // twice is fine
}

func TestHub_RegisterWithANewSchemaStartsANewEpoch(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 0, 0, 0)})
	c := dial(t, url, Subscribe{Aggregator: "votes"})
	var v View
	follow(t, c, &v, (*View).Live)

	// The same declaration again keeps everything.
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 2, 0, 0, 0)})
	follow(t, c, &v, func(v *View) bool { return v.Seq == 2 })

	// Another one resets, and closes the subscribers with its code.
	s2 := *testSchema
	s2.Metrics = append(s2.Metrics[:len(s2.Metrics):len(s2.Metrics)], abi.Metric{Name: "extra", Kind: abi.Sum, Type: abi.Int64})
	h.Register("votes", &s2, testWindows)
	_, err := c.Next(testCtx(t))
	if got := websocket.CloseStatus(err); got != StatusRedeployed {
		t.Fatalf("subscriber ended with %v, want %d", err, StatusRedeployed)
	}
	c = dial(t, url, Subscribe{Aggregator: "votes", Resume: v.Resume()})
	f := next(t, c)
	if f.Type != TypeSnapshot || f.Epoch == v.Epoch || f.Seq != 0 || len(f.Rows) != 0 || len(f.Metrics) != 5 {
		t.Fatalf("after redeploy got %s epoch %s seq %d rows %d metrics %d", f.Type, f.Epoch, f.Seq, len(f.Rows), len(f.Metrics))
	}
}

func TestHub_UnregisteredAggregator(t *testing.T) {
	h, url := serve(t, nil)
	h.Publish("later", 0, []abi.Row{row(total, 0, 1, "a", 1, 0, 0, 0)}) // dropped, no panic
	c := dial(t, url, Subscribe{Aggregator: "later"})
	f := next(t, c)
	var v View
	var e *Error
	if err := v.Apply(f); !errors.As(err, &e) || e.Code != CodeUnknownAggregator {
		t.Fatalf("got %v, want an %s error", err, CodeUnknownAggregator)
	}
	// Once registered, the same connection may subscribe.
	h.Register("later", testSchema, testWindows)
	if f := roundTrip(t, c.c, `{"type":"subscribe","aggregator":"later"}`); f.Type != TypeSnapshot || len(f.Rows) != 0 {
		t.Fatalf("got %+v", f)
	}
}

// An undeployed aggregator's state goes with it: its subscribers are
// closed as redeployed and a new subscription is refused as unknown, until
// it is registered again, in a new epoch.
func TestHub_UnregisterDropsTheStateAndClosesItsSubscribers(t *testing.T) {
	h, url := serve(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 0, 0, 0)})
	c := dial(t, url, Subscribe{Aggregator: "votes"})
	var v View
	follow(t, c, &v, (*View).Live)

	h.Unregister("votes")
	_, err := c.Next(testCtx(t))
	if got := websocket.CloseStatus(err); got != StatusRedeployed {
		t.Fatalf("subscriber ended with %v, want %d", err, StatusRedeployed)
	}
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 2, 0, 0, 0)}) // dropped, no panic
	c = dial(t, url, Subscribe{Aggregator: "votes", Resume: v.Resume()})
	var e *Error
	if err := new(View).Apply(next(t, c)); !errors.As(err, &e) || e.Code != CodeUnknownAggregator {
		t.Fatalf("subscribing after Unregister: %v, want %s", err, CodeUnknownAggregator)
	}
	h.Register("votes", testSchema, testWindows)
	if f := roundTrip(t, c.c, `{"type":"subscribe","aggregator":"votes"}`); f.Type != TypeSnapshot || f.Epoch == v.Epoch || len(f.Rows) != 0 {
		t.Fatalf("registered again: %s epoch %s (was %s), %d rows; want an empty snapshot of a new epoch", f.Type, f.Epoch, v.Epoch, len(f.Rows))
	}
	h.Unregister("never registered") // nothing to do
}

func TestView_RejectsGapsAndStaleEpochs(t *testing.T) {
	snap := Frame{Type: TypeSnapshot, Epoch: "e1", Seq: 5}
	for _, tc := range []struct {
		name  string
		frame Frame
		want  error
	}{
		{"a delta after a gap", Frame{Type: TypeDelta, Epoch: "e1", Seq: 7, Prev: 6}, ErrGap},
		{"a delta that goes backwards", Frame{Type: TypeDelta, Epoch: "e1", Seq: 5, Prev: 5}, ErrGap},
		{"a delta of another epoch", Frame{Type: TypeDelta, Epoch: "e2", Seq: 6, Prev: 5}, ErrStaleEpoch},
		{"a resume at another seq", Frame{Type: TypeResumed, Epoch: "e1", Seq: 4}, ErrGap},
		{"a resume of another epoch", Frame{Type: TypeResumed, Epoch: "e2", Seq: 5}, ErrStaleEpoch},
		{"the next delta", Frame{Type: TypeDelta, Epoch: "e1", Seq: 6, Prev: 5}, nil},
		{"a filtered delta that skips seqs", Frame{Type: TypeDelta, Epoch: "e1", Seq: 9, Prev: 5}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v View
			if err := v.Apply(snap); err != nil {
				t.Fatal(err)
			}
			if err := v.Apply(tc.frame); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	var v View
	if err := v.Apply(Frame{Type: TypeDelta, Epoch: "e1", Seq: 1}); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("delta before snapshot: %v", err)
	}
}

func ExampleView() {
	var v View
	frames := []Frame{
		{Type: TypeSnapshot, Epoch: "e", Seq: 41, Rows: []Row{{Window: "total", Key: map[string]any{"poll_id": "1"}, Values: map[string]json.Number{"votes": "12"}}}},
		{Type: TypeDelta, Epoch: "e", Seq: 42, Prev: 41, Rows: []Row{{Window: "total", Key: map[string]any{"poll_id": "1"}, Values: map[string]json.Number{"votes": "13"}}}},
	}
	for _, f := range frames {
		if err := v.Apply(f); err != nil {
			fmt.Println(err)
		}
	}
	for _, r := range v.Rows() {
		fmt.Println(r.Window, r.Key["poll_id"], r.Values["votes"], v.Seq)
	}
	// Output: total 1 13 42
}
