package hub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/abi"
)

// serveBoth serves a hub's WebSocket at /v1/live and its SSE at
// /v1/live/sse, and returns the hub with the server's base URL.
func serveBoth(t testing.TB, o *Options) (*Hub, string) {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	h := New(o)
	mux := http.NewServeMux()
	mux.Handle("GET /v1/live", h)
	mux.HandleFunc("GET /v1/live/sse", h.ServeSSE)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return h, srv.URL
}

// sseStream is a test client of the SSE endpoint.
type sseStream struct {
	resp   *http.Response
	r      *bufio.Reader
	lastID string
}

type event struct {
	id   string
	data []byte
}

func openSSE(t *testing.T, base, query string, hdr http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/live/sse?"+query, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	return &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next reads one event, skipping comments; io.EOF when the stream ended.
func (s *sseStream) next() (event, error) {
	var ev event
	for {
		line, err := s.r.ReadBytes('\n')
		if err != nil {
			return ev, err
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		switch {
		case len(line) == 0:
			if ev.data != nil {
				if ev.id != "" {
					s.lastID = ev.id
				}
				return ev, nil
			}
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("id: ")):
			ev.id = string(line[4:])
		case bytes.HasPrefix(line, []byte("data: ")):
			ev.data = append([]byte(nil), line[6:]...)
		default:
			return ev, &json.SyntaxError{}
		}
	}
}

func (s *sseStream) frame(t *testing.T) (Frame, event) {
	t.Helper()
	done := make(chan struct{})
	var ev event
	var err error
	go func() {
		ev, err = s.next()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no SSE event within 10s")
	}
	if err != nil {
		t.Fatalf("SSE stream: %v", err)
	}
	var f Frame
	d := json.NewDecoder(bytes.NewReader(ev.data))
	d.UseNumber()
	if err := d.Decode(&f); err != nil {
		t.Fatalf("event data %q: %v", ev.data, err)
	}
	return f, ev
}

// closeFrame is the last frame of a stream the server ends.
type closeFrame struct {
	Type   string `json:"type"`
	Code   int    `json:"status"`
	Reason string `json:"reason"`
}

func (s *sseStream) closed(t *testing.T) closeFrame {
	t.Helper()
	for {
		_, ev := s.frame(t)
		var c closeFrame
		json.Unmarshal(ev.data, &c)
		if c.Type != TypeClose {
			continue
		}
		if _, err := s.next(); err != io.EOF {
			t.Fatalf("after the close frame: %v, want the end of the stream", err)
		}
		return c
	}
}

func TestSSE_CarriesTheSameFramesAsTheWebSocket(t *testing.T) {
	h, base := serveBoth(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 5, 5, 0.5)})

	ws := dial(t, "ws"+strings.TrimPrefix(base, "http")+"/v1/live", Subscribe{Aggregator: "votes"})
	s := openSSE(t, base, "aggregator=votes", nil)
	if ct := s.resp.Header.Get("Content-Type"); s.resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("status %d, content type %q", s.resp.StatusCode, ct)
	}
	var v View
	follow(t, ws, &v, (*View).Live)
	snap, ev := s.frame(t)
	if snap.Type != TypeSnapshot || ev.id != snap.Epoch+":1" || snap.Epoch != v.Epoch {
		t.Fatalf("first event id %q %+v, want the snapshot at %s:1", ev.id, snap, v.Epoch)
	}
	eventually(t, "both subscribed", func() bool { return subscribers(h, "votes") == 2 })
	for i := int64(2); i <= 20; i++ {
		h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", i, 5, 5+i, 0.5)})
	}
	var sv View
	if err := sv.Apply(snap); err != nil {
		t.Fatal(err)
	}
	for i := uint64(2); i <= 20; i++ {
		_, wsb, err := ws.c.Read(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		f, ev := s.frame(t)
		if !bytes.Equal(ev.data, wsb) {
			t.Fatalf("delta %d: SSE %s, WebSocket %s", i, ev.data, wsb)
		}
		if want := v.Epoch + ":" + jsonString(i); ev.id != want {
			t.Fatalf("delta id %q, want %q", ev.id, want)
		}
		if err := sv.Apply(f); err != nil {
			t.Fatal(err)
		}
	}
	if got := compact(sv.Rows()); !slices.Equal(got, []string{"total 0 1/a 20 5 25 0.5"}) {
		t.Fatalf("rows %q", got)
	}
}

func TestSSE_ResumesFromLastEventIDWithoutAGap(t *testing.T) {
	h, base := serveBoth(t, nil)
	h.Register("votes", testSchema, testWindows)
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 1, 1, 1, 0)})
	q := "aggregator=votes&window=total&key.option=a&key.poll_id=1"

	s := openSSE(t, base, q, nil)
	var v View
	f, _ := s.frame(t)
	if err := v.Apply(f); err != nil {
		t.Fatal(err)
	}
	eventually(t, "subscribed", func() bool { return subscribers(h, "votes") == 1 })
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 2, 1, 2, 0)})
	f, _ = s.frame(t)
	if err := v.Apply(f); err != nil {
		t.Fatal(err)
	}
	s.resp.Body.Close()
	eventually(t, "the stream ended", func() bool { return subscribers(h, "votes") == 0 })

	// Missed while away: one delta of the filtered key, one of another.
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 3, 1, 3, 0)})
	h.Publish("votes", 0, []abi.Row{row(total, 0, 2, "b", 9, 1, 3, 0)})
	h.Publish("votes", 0, []abi.Row{row(total, 0, 1, "a", 4, 1, 4, 0)})

	for _, how := range []string{"header", "parameter"} {
		t.Run(how, func(t *testing.T) {
			v := v
			var r *sseStream
			if how == "header" {
				r = openSSE(t, base, q, http.Header{"Last-Event-Id": {s.lastID}})
			} else {
				r = openSSE(t, base, q+"&last_event_id="+url.QueryEscape(s.lastID), nil)
			}
			f, ev := r.frame(t)
			if f.Type != TypeResumed || ev.id != s.lastID {
				t.Fatalf("first frame %s id %q, want resumed at %q", f.Type, ev.id, s.lastID)
			}
			if err := v.Apply(f); err != nil {
				t.Fatal(err)
			}
			for v.Seq != 5 {
				f, _ := r.frame(t)
				if err := v.Apply(f); err != nil {
					t.Fatalf("%s frame prev %d seq %d on a view at %d: %v", f.Type, f.Prev, f.Seq, v.Seq, err)
				}
			}
			if got := compact(v.Rows()); !slices.Equal(got, []string{"total 0 1/a 4 1 4 0"}) {
				t.Fatalf("rows %q", got)
			}
		})
	}

	// An id of another epoch (another host, or a redeploy) gets a snapshot.
	r := openSSE(t, base, q, http.Header{"Last-Event-Id": {"0123:3"}})
	if f, _ := r.frame(t); f.Type != TypeSnapshot || f.Seq != 5 {
		t.Fatalf("stale epoch: %s at %d, want the snapshot at 5", f.Type, f.Seq)
	}
}

func TestSSE_RefusalsAreHTTPErrorsWithTheErrorFrame(t *testing.T) {
	v := testVerifier(t)
	h, base := serveBoth(t, &Options{Auth: v})
	h.Register("votes", testSchema, testWindows)
	hour := time.Now().Add(time.Hour)
	good := liveToken(t, testKey, testIssuer, testAudience, hour, "live:votes")
	other := liveToken(t, testKey, testIssuer, testAudience, hour, "live:other")
	every := liveToken(t, testKey, testIssuer, testAudience, hour, "live:*")
	for _, c := range []struct {
		name   string
		query  string
		hdr    http.Header
		status int
		code   string
	}{
		{"no token", "aggregator=votes", nil, 401, CodeUnauthorized},
		{"expired", "aggregator=votes&token=" + liveToken(t, testKey, testIssuer, testAudience, time.Now().Add(-time.Minute), "live:votes"), nil, 401, CodeTokenExpired},
		{"another aggregator's scope", "aggregator=votes&token=" + other, nil, 403, CodeForbidden},
		{"no aggregator", "token=" + good, nil, 400, CodeBadRequest},
		{"unknown parameter", "aggregator=votes&windows=total&token=" + good, nil, 400, CodeBadRequest},
		{"unknown aggregator", "aggregator=nope&token=" + every, nil, 404, CodeUnknownAggregator},
		{"unknown window", "aggregator=votes&window=minute&token=" + good, nil, 400, CodeUnknownWindow},
		{"unknown key", "aggregator=votes&key.user=1&token=" + good, nil, 400, CodeUnknownKey},
		{"bad key value", "aggregator=votes&key.poll_id=x&token=" + good, nil, 400, CodeBadKey},
		{"bad interval", "aggregator=votes&interval_ms=-1&token=" + good, nil, 400, CodeBadRequest},
		{"bad last event id", "aggregator=votes&token=" + good, http.Header{"Last-Event-Id": {"nocolon"}}, 400, CodeBadRequest},
		{"token in the header", "aggregator=votes", http.Header{"Authorization": {"Bearer " + good}}, 200, ""},
		{"token in the query", "aggregator=votes&key.poll_id=1&token=" + good, nil, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openSSE(t, base, c.query, c.hdr)
			if s.resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", s.resp.StatusCode, c.status)
			}
			if c.code == "" {
				if f, _ := s.frame(t); f.Type != TypeSnapshot {
					t.Fatalf("%s frame, want a snapshot", f.Type)
				}
				return
			}
			var f Frame
			if err := json.NewDecoder(s.resp.Body).Decode(&f); err != nil {
				t.Fatal(err)
			}
			if f.Type != TypeError || f.Code != c.code || f.Message == "" {
				t.Fatalf("body %+v, want an error frame %s", f, c.code)
			}
		})
	}
}

func TestSSE_EndsWithTheCloseCodesOfTheWebSocket(t *testing.T) {
	t.Run("token expired", func(t *testing.T) {
		h, base := serveBoth(t, &Options{Auth: testVerifier(t)})
		h.Register("votes", testSchema, testWindows)
		tok := liveToken(t, testKey, testIssuer, testAudience, time.Now().Add(1500*time.Millisecond), "live:votes")
		s := openSSE(t, base, "aggregator=votes&token="+tok, nil)
		if c := s.closed(t); c.Code != int(StatusTokenExpired) {
			t.Fatalf("closed with %+v, want %d", c, StatusTokenExpired)
		}
	})
	t.Run("redeployed", func(t *testing.T) {
		h, base := serveBoth(t, nil)
		h.Register("votes", testSchema, testWindows)
		s := openSSE(t, base, "aggregator=votes", nil)
		s.frame(t)
		h.Register("votes", testSchema, testWindows[:1])
		if c := s.closed(t); c.Code != int(StatusRedeployed) {
			t.Fatalf("closed with %+v, want %d", c, StatusRedeployed)
		}
	})
	t.Run("slow consumer", func(t *testing.T) {
		h, base := serveBoth(t, &Options{QueueFrames: 1, History: 4})
		h.Register("votes", testSchema, testWindows)
		s := openSSE(t, base, "aggregator=votes", nil)
		s.frame(t)
		eventually(t, "subscribed", func() bool { return subscribers(h, "votes") == 1 })
		// The peer does not read while a burst of large deltas fills the
		// TCP buffers and then the history moves past it.
		big := make([]abi.Row, 2000)
		// Until the hub closes it: an SSE session can end at once (its close
		// frame fits in the socket buffer), so gone counts as well.
		for i := int64(0); closedWith(h, StatusSlowConsumer) == 0 && subscribers(h, "votes") == 1; i++ {
			if i > 100_000 {
				t.Fatal("the slow SSE subscriber was not closed")
			}
			for j := range big {
				big[j] = row(total, 0, int64(j), "option with a long name", i, 1, i, 0)
			}
			h.Publish("votes", 0, big)
		}
		if c := s.closed(t); c.Code != int(StatusSlowConsumer) {
			t.Fatalf("closed with %+v, want %d", c, StatusSlowConsumer)
		}
	})
	t.Run("hub closed", func(t *testing.T) {
		h, base := serveBoth(t, nil)
		h.Register("votes", testSchema, testWindows)
		s := openSSE(t, base, "aggregator=votes", nil)
		s.frame(t)
		go h.Close()
		if c := s.closed(t); c.Code != int(websocket.StatusGoingAway) {
			t.Fatalf("closed with %+v, want %d", c, websocket.StatusGoingAway)
		}
	})
}

func TestSSE_AClientThatGoesAwayIsForgotten(t *testing.T) {
	h, base := serveBoth(t, nil)
	h.Register("votes", testSchema, testWindows)
	s := openSSE(t, base, "aggregator=votes", nil)
	s.frame(t)
	eventually(t, "subscribed", func() bool { return subscribers(h, "votes") == 1 })
	s.resp.Body.Close()
	eventually(t, "the subscription ended", func() bool { return subscribers(h, "votes") == 0 })
	h.mu.RLock()
	n := len(h.sessions)
	h.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

func TestSSE_OtherOriginsNeedTheOriginPatterns(t *testing.T) {
	h, base := serveBoth(t, &Options{OriginPatterns: []string{"dash.example.com"}})
	h.Register("votes", testSchema, testWindows)
	for _, c := range []struct {
		origin string
		status int
		cors   string
	}{
		{"", 200, ""},
		{"https://dash.example.com", 200, "https://dash.example.com"},
		{"http://" + strings.TrimPrefix(base, "http://"), 200, "http://" + strings.TrimPrefix(base, "http://")},
		{"https://evil.example.com", 403, ""},
		{"null", 403, ""},
	} {
		hdr := http.Header{}
		if c.origin != "" {
			hdr.Set("Origin", c.origin)
		}
		s := openSSE(t, base, "aggregator=votes", hdr)
		if s.resp.StatusCode != c.status || s.resp.Header.Get("Access-Control-Allow-Origin") != c.cors {
			t.Errorf("origin %q: %d, CORS %q; want %d, %q", c.origin, s.resp.StatusCode, s.resp.Header.Get("Access-Control-Allow-Origin"), c.status, c.cors)
		}
		if c.status == 403 { // the refusal is an error frame, as every other
			var f Frame
			if err := json.NewDecoder(s.resp.Body).Decode(&f); err != nil || f.Type != TypeError || f.Code != CodeCrossOrigin {
				t.Errorf("origin %q: body %+v (%v), want an error frame %s", c.origin, f, err, CodeCrossOrigin)
			}
		}
	}
}
