package api

import (
	"sync"
	"time"
)

// Per-client request limits, on hosts with keys: a token bucket per client,
// the client being the token's subject (or, without one, the token). In open
// mode every client is the same loopback machine, and not limited. Generous for people and scripts; a loop gets
// 429 rate_limited instead of the host's attention.
const (
	RequestsPerSecond = 20
	RequestBurst      = 50
	maxClients        = 10_000 // buckets kept; idle ones are dropped beyond this
)

type bucket struct {
	tokens float64
	last   time.Time
}

type limiter struct {
	mu      sync.Mutex
	clients map[string]*bucket
}

func newLimiter() *limiter { return &limiter{clients: map[string]*bucket{}} }

// allow takes one request from client's bucket.
func (l *limiter) allow(client string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[client]
	if b == nil {
		if len(l.clients) >= maxClients {
			for k, o := range l.clients {
				// A bucket idle for long enough to be full again says nothing.
				if now.Sub(o.last) > RequestBurst*time.Second/RequestsPerSecond {
					delete(l.clients, k)
				}
			}
		}
		b = &bucket{tokens: RequestBurst, last: now}
		l.clients[client] = b
	}
	b.tokens = min(RequestBurst, b.tokens+now.Sub(b.last).Seconds()*RequestsPerSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
