package hub

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/host/auth"
)

// TypeClose is the last frame of an SSE stream, {"type":"close","status":
// 4008,"reason":"slow consumer"}: what a WebSocket says with a close code (StatusSlowConsumer, StatusRedeployed, StatusTokenExpired,
// 1001 going away), so an SSE client can act on the same codes.
const TypeClose = "close"

// ServeSSE is the Server-Sent Events endpoint (mounted at /v1/live/sse): the
// same subscription and frames as the WebSocket, for clients that cannot
// open one. The subscription is in the query string (ParseSSE), the resume
// point in the Last-Event-ID header that EventSource sends back on its own
// after a reconnect. A refused subscription is an HTTP error whose body is
// the error frame. docs/protocol.md has the details.
func (h *Hub) ServeSSE(w http.ResponseWriter, r *http.Request) {
	release, ok := h.admit(w, r)
	if !ok {
		return
	}
	defer release()

	// A page of another origin reads the stream only with CORS: allowed for
	// the origins the WebSocket allows (OriginPatterns), refused for others.
	if origin := r.Header.Get("Origin"); origin != "" {
		if !h.allowOrigin(r.Host, origin) {
			sseRefuse(w, refuse(CodeCrossOrigin, "origin %.200q is not allowed (hub OriginPatterns)", origin))
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	req, perr := ParseSSE(r.URL.Query(), r.Header.Get("Last-Event-ID"))
	if perr != nil {
		sseRefuse(w, perr)
		return
	}
	t := &sseTransport{w: w, rc: http.NewResponseController(w)}
	s := h.newSession(t, auth.FromHeader(r.Header.Get("Authorization")))
	if !h.track(s) {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	defer h.untrack(s)
	sub, perr := s.start(req)
	if perr != nil {
		sseRefuse(w, perr)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // proxies: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	s.cmds <- cmd{sub: sub}

	stop := context.AfterFunc(r.Context(), func() { s.closeWith(0, "") })
	defer stop()
	s.writeLoop()
}

// allowOrigin matches an Origin header as the WebSocket handshake does: the
// request's own host, or a host (or scheme://host) pattern of
// OriginPatterns (path.Match syntax, case-insensitive).
func (h *Hub) allowOrigin(host, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range h.opts.OriginPatterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// sseRefuse answers a refused subscription with the HTTP status of its code
// and the error frame as the body. EventSource does not retry on such an
// answer; a client that reads the body (fetch) gets the code and message.
func sseRefuse(w http.ResponseWriter, e *protoError) {
	status := http.StatusBadRequest
	switch e.code {
	case CodeUnknownAggregator:
		status = http.StatusNotFound
	case CodeUnauthorized, CodeTokenExpired:
		status = http.StatusUnauthorized
	case CodeForbidden, CodeCrossOrigin:
		status = http.StatusForbidden
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(encodeError(e))
}

// ParseSSE reads an SSE subscription from its query string:
//
//	aggregator=votes      the deployment (required)
//	window=total          repeatable; none: every window
//	key.poll_id=7         repeatable per key column: values of a column ORed, columns ANDed
//	panes=2, interval_ms=250, token=<jwt>   as in the subscribe frame
//	last_event_id=<epoch>:<seq>             the resume point, for clients that cannot set Last-Event-ID
//
// lastEventID, the Last-Event-ID header, wins over last_event_id. The limits
// are those of a subscribe frame; an unknown parameter is refused so a typo
// does not silently widen a subscription.
func ParseSSE(q url.Values, lastEventID string) (*Subscribe, *protoError) {
	s := &Subscribe{}
	resume := ""
	for name, vals := range q {
		one := func() (string, *protoError) {
			if len(vals) != 1 {
				return "", refuse(CodeBadRequest, "parameter %s given %d times, want once", name, len(vals))
			}
			return vals[0], nil
		}
		num := func() (int, *protoError) {
			v, perr := one()
			if perr != nil {
				return 0, perr
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, refuse(CodeBadRequest, "parameter %s: %.64q is not an integer", name, v)
			}
			return n, nil
		}
		var perr *protoError
		switch {
		case name == "aggregator":
			s.Aggregator, perr = one()
		case name == "window":
			s.Windows = append(s.Windows, vals...)
		case name == "panes":
			s.Panes, perr = num()
		case name == "interval_ms":
			s.IntervalMs, perr = num()
		case name == "token":
			s.Token, perr = one()
		case name == "last_event_id":
			resume, perr = one()
		case strings.HasPrefix(name, "key.") && len(name) > len("key."):
			if s.Keys == nil {
				s.Keys = map[string][]any{}
			}
			for _, v := range vals {
				s.Keys[name[len("key."):]] = append(s.Keys[name[len("key."):]], queryValue(v))
			}
		default:
			perr = refuse(CodeBadRequest, "unknown parameter %.64q: want aggregator, window, key.<column>, panes, interval_ms, token or last_event_id", name)
		}
		if perr != nil {
			return nil, perr
		}
	}
	if lastEventID != "" {
		resume = lastEventID
	}
	if resume != "" {
		i := strings.LastIndexByte(resume, ':')
		seq, err := strconv.ParseUint(resume[i+1:], 10, 64)
		if i <= 0 || i > 64 || err != nil {
			return nil, refuse(CodeBadRequest, "last event id %.80q: want <epoch>:<seq> as the server sent it", resume)
		}
		s.Resume = &Resume{Epoch: resume[:i], Seq: seq}
	}
	if perr := checkSubscribe(s); perr != nil {
		return nil, perr
	}
	return s, nil
}

// queryValue is a key filter value from a query string: text that is
// read as the type of its column (keyValue), where a JSON frame has a number
// or a string.
type queryValue string

// sseTransport writes frames as SSE events: "id: <epoch>:<seq>" on those that
// bring the client to a state, so EventSource resumes from the last one it
// got, and "data: <frame>". Frames are single-line JSON (the encoder escapes
// every control character).
type sseTransport struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	b  []byte
}

func (t *sseTransport) write(ctx context.Context, frame []byte, at *state) error {
	if d, ok := ctx.Deadline(); ok {
		t.rc.SetWriteDeadline(d)
	}
	b := t.b[:0]
	if at != nil {
		b = append(b, "id: "...)
		b = append(b, at.epoch...)
		b = append(b, ':')
		b = strconv.AppendUint(b, at.seq, 10)
		b = append(b, '\n')
	}
	b = append(b, "data: "...)
	if _, err := t.w.Write(b); err != nil {
		return err
	}
	if _, err := t.w.Write(frame); err != nil {
		return err
	}
	if _, err := t.w.Write([]byte("\n\n")); err != nil {
		return err
	}
	t.b = b
	return t.rc.Flush()
}

// ping is an SSE comment: it keeps proxies from timing the stream out and
// finds a peer that went away.
func (t *sseTransport) ping(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		t.rc.SetWriteDeadline(d)
	}
	if _, err := t.w.Write([]byte(": ping\n\n")); err != nil {
		return err
	}
	return t.rc.Flush()
}

func (t *sseTransport) close(code websocket.StatusCode, reason string) {
	b := []byte(`{"type":"close","status":`)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"reason":`...)
	b = appendString(b, reason)
	b = append(b, '}')
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	t.write(ctx, b, nil)
}

// closeNow makes a blocked write fail at once; the handler then returns,
// which ends the response.
func (t *sseTransport) closeNow() { t.rc.SetWriteDeadline(time.Now()) }
