package hub

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/host/auth"
)

// Per-connection limits on what a client sends: a burst of frames, then a
// steady rate. A dashboard sends one subscribe and the odd ping.
const (
	frameBurst   = 20
	framesPerSec = 10
	cmdQueue     = 16 // answers (errors, pongs, the subscription) waiting for the writer
)

// session is one connection: a WebSocket or an SSE stream. For a WebSocket
// the goroutine of ServeHTTP reads and a second goroutine writes everything,
// so that a peer that stops reading never blocks the reader and nothing else
// ever blocks on the peer; an SSE stream has only the writer.
type session struct {
	h    *Hub
	conn transport
	cmds chan cmd
	done chan struct{}

	closeOnce sync.Once
	code      websocket.StatusCode // why done was closed; 0 when the connection just ended
	reason    string

	sub *subscription // set and read by the reader only

	// the frame bucket: the reader's, and a close handshake's reading
	// control frames
	bucketMu sync.Mutex
	tokens   float64
	last     time.Time

	// bearer is the token of the handshake (Authorization or
	// Sec-WebSocket-Protocol); a subscribe frame's token overrides it.
	bearer string
	// expiry closes the session with StatusTokenExpired when the token of
	// its subscription expires.
	expiry *time.Timer
}

type cmd struct {
	frame []byte
	sub   *subscription
}

// subscription is a session's view of one aggregator.
type subscription struct {
	sess     *session
	agg      *aggState
	f        *filter
	interval time.Duration
	// cursor is the seq of the last delta the writer has dealt with (sent or
	// filtered away); the sweep reads it.
	cursor atomic.Uint64

	// Owned by the writer.
	lastSent uint64      // seq of the last frame sent: the next delta's prev
	next     time.Time   // interval: earliest time of the next delta
	resumed  []byte      // the first frame when resuming
	snap     *sharedSnap // the snapshot when not
}

// ServeHTTP is the WebSocket endpoint (mounted at /v1/live). The protocol is
// in docs/protocol.md.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	release, ok := h.admit(w, r)
	if !ok {
		return
	}
	defer release()

	bearer := auth.FromHeader(r.Header.Get("Authorization"))
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, BearerProtocolPrefix) {
				bearer = strings.TrimPrefix(p, BearerProtocolPrefix)
			}
		}
	}
	// Control frames count with the others: the library answers a ping
	// inside Read, so a flood of them would otherwise cost the host a pong
	// each and never meet the limit.
	var s *session
	control := func() bool {
		if s.allow() {
			return true
		}
		s.closeWith(websocket.StatusPolicyViolation, "too many frames")
		return false
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		OriginPatterns: h.opts.OriginPatterns, Subprotocols: []string{Subprotocol},
		OnPingReceived: func(context.Context, []byte) bool { return control() },
		OnPongReceived: func(context.Context, []byte) { control() },
	})
	if err != nil {
		h.log.Debug("hub: websocket accept failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	conn.SetReadLimit(ReadLimit)
	s = h.newSession(wsTransport{conn}, bearer)
	if !h.track(s) {
		conn.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	defer h.untrack(s)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.writeLoop()
	}()
	s.readLoop(conn)
	s.closeWith(0, "")
	wg.Wait()
}

// admit counts a new connection of the request's remote address (with Auth)
// and answers 503 after Close or 429 past MaxConnsPerIP. When it admits,
// release undoes it; the hub's Close waits for that.
func (h *Hub) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return nil, false
	}
	ip := ""
	if h.opts.Auth != nil {
		ip = r.RemoteAddr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		if h.perIP[ip] >= h.opts.MaxConnsPerIP {
			h.mu.Unlock()
			http.Error(w, "too many connections from this address", http.StatusTooManyRequests)
			return nil, false
		}
		h.perIP[ip]++
	}
	h.wg.Add(1)
	h.mu.Unlock()
	return func() {
		if ip != "" {
			h.mu.Lock()
			if h.perIP[ip]--; h.perIP[ip] <= 0 {
				delete(h.perIP, ip)
			}
			h.mu.Unlock()
		}
		h.wg.Done()
	}, true
}

func (h *Hub) newSession(t transport, bearer string) *session {
	return &session{h: h, conn: t, cmds: make(chan cmd, cmdQueue), done: make(chan struct{}), tokens: frameBurst, last: time.Now(), bearer: bearer}
}

// track adds a session to those Close ends; false after Close.
func (h *Hub) track(s *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.sessions[s] = struct{}{}
	return true
}

// untrack forgets an ended session and its subscription.
func (h *Hub) untrack(s *session) {
	if s.expiry != nil {
		s.expiry.Stop()
	}
	if s.sub != nil {
		a := s.sub.agg
		a.mu.Lock()
		delete(a.subs, s.sub)
		a.mu.Unlock()
	}
	h.mu.Lock()
	delete(h.sessions, s)
	h.mu.Unlock()
}

// closeWith ends the session. With a code, the writer sends that close
// frame after the frame it is writing, if any; without one, the connection is
// dropped. The first call wins.
func (s *session) closeWith(code websocket.StatusCode, reason string) {
	s.closeOnce.Do(func() {
		s.code, s.reason = code, reason
		close(s.done)
	})
}

func (s *session) readLoop(conn *websocket.Conn) {
	for {
		typ, b, err := conn.Read(context.Background())
		if err != nil {
			return
		}
		if !s.allow() {
			s.closeWith(websocket.StatusPolicyViolation, "too many frames")
			return
		}
		if typ != websocket.MessageText {
			s.closeWith(websocket.StatusUnsupportedData, "send JSON text frames")
			return
		}
		c := s.handle(b)
		select {
		case s.cmds <- c:
		default:
			// The peer sends faster than it reads our answers.
			s.closeWith(websocket.StatusPolicyViolation, "too many frames")
			return
		}
	}
}

// allow is a token bucket over the frames a client sends.
func (s *session) allow() bool {
	s.bucketMu.Lock()
	defer s.bucketMu.Unlock()
	now := time.Now()
	s.tokens = min(frameBurst, s.tokens+now.Sub(s.last).Seconds()*framesPerSec)
	s.last = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

func (s *session) handle(b []byte) cmd {
	f, perr := decodeClientFrame(b)
	if perr != nil {
		return cmd{frame: encodeError(perr)}
	}
	if f.Type == TypePing {
		return cmd{frame: pongFrame}
	}
	if s.sub != nil {
		return cmd{frame: encodeError(refuse(CodeAlreadySubscribed,
			"this connection follows %q; open another connection for another subscription", s.sub.agg.name))}
	}
	sub, perr := s.start(&f.Subscribe)
	if perr != nil {
		return cmd{frame: encodeError(perr)}
	}
	return cmd{sub: sub}
}

// start checks the token of a subscription (with Auth) and registers it as
// the session's one subscription.
func (s *session) start(req *Subscribe) (*subscription, *protoError) {
	var expires time.Time
	if v := s.h.opts.Auth; v != nil {
		raw := req.Token
		if raw == "" {
			raw = s.bearer
		}
		tok, err := v.Verify(raw)
		switch {
		case errors.Is(err, auth.ErrNoToken):
			return nil, refuse(CodeUnauthorized, `no token: send a JWT with scope %s as "token" in the subscribe frame, the token parameter (SSE) or an Authorization: Bearer header`, auth.Live(req.Aggregator))
		case errors.Is(err, auth.ErrExpired):
			return nil, refuse(CodeTokenExpired, "the token expired: get a new one")
		case err != nil:
			return nil, refuse(CodeUnauthorized, "%v", err)
		case !tok.Allows(auth.Live(req.Aggregator)):
			return nil, refuse(CodeForbidden, "the token has no scope %.300s (nor %s)", auth.Live(req.Aggregator), auth.ScopeLiveAll)
		}
		expires = tok.Expires
	}
	req.Token = ""
	sub, perr := s.h.subscribe(s, req)
	if perr != nil {
		return nil, perr
	}
	s.sub = sub
	if !expires.IsZero() {
		s.expiry = time.AfterFunc(time.Until(expires), func() {
			s.closeWith(StatusTokenExpired, "token expired")
		})
	}
	return sub, nil
}

// subscribe checks a subscription and registers it. The snapshot is copied
// (or the resume accepted) under the same lock Publish holds while it
// applies rows and numbers the delta, so the first delta the subscriber gets
// is exactly the one after its snapshot.
func (h *Hub) subscribe(s *session, req *Subscribe) (*subscription, *protoError) {
	a := h.lookup(req.Aggregator)
	if a == nil {
		return nil, refuse(CodeUnknownAggregator, "no aggregator %.64q is registered on this host", req.Aggregator)
	}
	// Windows and schema do not change within a state, so the filter needs
	// no lock; it is compiled again only if a Register replaced the state
	// meanwhile.
	f, perr := compileFilter(a, req)
	if perr != nil {
		return nil, perr
	}
	locked := h.locked(req.Aggregator)
	if locked == nil {
		return nil, refuse(CodeUnknownAggregator, "no aggregator %.64q is registered on this host", req.Aggregator)
	}
	defer locked.mu.Unlock()
	if locked != a {
		a = locked
		if f, perr = compileFilter(a, req); perr != nil {
			return nil, perr
		}
	}
	sub := &subscription{sess: s, agg: a, f: f, interval: time.Duration(req.IntervalMs) * time.Millisecond}
	if r := req.Resume; r != nil && r.Epoch == a.epoch && r.Seq <= a.seq && r.Seq+1 >= a.oldest() {
		sub.resumed = a.encodeResumed(r.Seq)
		sub.lastSent = r.Seq
	} else {
		sub.snap = a.snapshot(f)
		sub.lastSent = a.seq
	}
	sub.cursor.Store(sub.lastSent)
	a.subs[sub] = struct{}{}
	return sub, nil
}

var errSlow = errors.New("hub: subscriber fell out of the history")

// writeLoop writes every frame of the session: answers, the snapshot, the
// deltas, pings and finally the close frame.
func (s *session) writeLoop() {
	h := s.h
	ping := time.NewTicker(h.opts.pingEvery)
	defer ping.Stop()
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	defer pace.Stop()
	defer func() {
		if s.code != 0 {
			s.conn.close(s.code, s.reason)
		} else {
			s.conn.closeNow()
		}
	}()

	var sub *subscription
	for {
		select {
		case <-s.done:
			return
		default:
		}
		var wake <-chan struct{}
		var paced <-chan time.Time
		if sub != nil {
			more, notify, wait, err := s.step(sub)
			if err != nil {
				if errors.Is(err, errSlow) {
					s.closeWith(StatusSlowConsumer, "slow consumer")
				} else {
					s.closeWith(0, "")
				}
				continue
			}
			if more {
				select {
				case c := <-s.cmds:
					if sub, err = s.run(c, sub); err != nil {
						s.closeWith(0, "")
					}
				default:
				}
				continue
			}
			wake = notify
			if wait > 0 {
				pace.Reset(wait)
				paced = pace.C
			}
		}
		select {
		case <-s.done:
			return
		case c := <-s.cmds:
			var err error
			if sub, err = s.run(c, sub); err != nil {
				s.closeWith(0, "")
			}
		case <-wake:
		case <-paced:
		case <-ping.C:
			ctx, cancel := context.WithTimeout(context.Background(), h.opts.writeTimeout)
			err := s.conn.ping(ctx)
			cancel()
			if err != nil {
				s.closeWith(0, "")
			}
		}
	}
}

// run writes an answer, or the first frame of a new subscription.
func (s *session) run(c cmd, sub *subscription) (*subscription, error) {
	if c.sub == nil {
		return sub, s.write(c.frame, nil)
	}
	sub = c.sub
	a := sub.agg
	if sub.resumed != nil {
		b := sub.resumed
		sub.resumed = nil
		return sub, s.write(b, &state{a.epoch, sub.lastSent})
	}
	snap := sub.snap
	sub.snap = nil
	if sub.interval > 0 {
		sub.next = time.Now().Add(sub.interval)
	}
	return sub, s.write(snap.frame(a), &state{a.epoch, snap.seq})
}

// step sends what the subscriber is missing: delta by delta while it keeps
// up, or coalesced into one delta when it is more than QueueFrames behind or
// asked for an interval. It reports whether it did anything (so the caller
// looks again), else the channel that signals the next delta and, when
// pacing, how long to wait.
func (s *session) step(sub *subscription) (more bool, notify <-chan struct{}, wait time.Duration, err error) {
	a := sub.agg
	if sub.interval > 0 {
		if d := time.Until(sub.next); d > 0 {
			return false, nil, d, nil
		}
	}
	cur := sub.cursor.Load()
	a.mu.RLock()
	head := a.seq
	if a.gone || cur == head {
		notify = a.notify
		a.mu.RUnlock()
		return false, notify, 0, nil
	}
	if cur+1 < a.oldest() {
		a.mu.RUnlock()
		return false, nil, 0, errSlow
	}
	coalesce := sub.interval > 0 || lag(head, cur) > s.h.opts.QueueFrames
	ds := a.since(cur, lag(head, cur))
	a.mu.RUnlock()

	if coalesce {
		if b := a.encodeCoalesced(sub, ds, head); b != nil {
			if err := s.write(b, &state{a.epoch, head}); err != nil {
				return false, nil, 0, err
			}
			sub.lastSent = head
			if sub.interval > 0 {
				sub.next = time.Now().Add(sub.interval)
			}
		}
		sub.cursor.Store(head)
		return true, nil, 0, nil
	}
	for _, d := range ds {
		select {
		case <-s.done:
			return false, nil, 0, nil
		default:
		}
		var b []byte
		if sub.f.all && sub.lastSent == d.seq-1 {
			b = d.frame
		} else {
			b = a.encodeDelta(d.seq, sub.lastSent, d.rows, d.evicted, sub.f)
		}
		if b != nil {
			if err := s.write(b, &state{a.epoch, d.seq}); err != nil {
				return false, nil, 0, err
			}
			sub.lastSent = d.seq
		}
		sub.cursor.Store(d.seq)
	}
	return true, nil, 0, nil
}

// write writes one frame; at is the state the frame brings the client to
// (snapshot, resumed, delta), nil for the others.
func (s *session) write(b []byte, at *state) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.opts.writeTimeout)
	defer cancel()
	return s.conn.write(ctx, b, at)
}
