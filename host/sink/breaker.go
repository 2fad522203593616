package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// State is a circuit breaker's state.
type State int

const (
	Closed   State = iota // writes go through
	HalfOpen              // one trial write is allowed; its result decides
	Open                  // writes are refused until the cool-down ends
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	}
	return "open"
}

// ErrOpen is returned by Do while the breaker refuses writes.
var ErrOpen = errors.New("sink: circuit open")

// Breaker guards the writes to ClickHouse of every partition of a host, so
// that while ClickHouse is down they wait together instead of each
// hammering it: after Failures consecutive failures it opens for a cool-down
// that doubles with each failed trial (up to MaxCoolDown), then lets one
// trial through (half-open); a success closes it. It is safe for concurrent
// use.
type Breaker struct {
	Failures    int           // consecutive failures that open it (default 3)
	CoolDown    time.Duration // first cool-down (default 500ms)
	MaxCoolDown time.Duration // longest cool-down (default 10s)

	mu      sync.Mutex
	state   State
	fails   int
	wait    time.Duration
	until   time.Time // open: when the next trial may go
	trial   bool      // half-open: a trial is in flight
	lastErr error
	changed chan struct{} // closed and replaced on each state change
}

// Status is the state and, unless closed, the error that opened it.
func (b *Breaker) Status() (State, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.lastErr
}

// Do runs write when the breaker lets it, waiting (until ctx ends) while it
// is open or another trial is in flight, and records the result.
func (b *Breaker) Do(ctx context.Context, write func(context.Context) error) error {
	for {
		wait, ch, ok := b.admit()
		if ok {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%v): %w", ErrOpen, b.lastError(), ctx.Err())
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
	err := write(ctx)
	if ctx.Err() != nil && err != nil {
		// Our own cancellation says nothing about ClickHouse.
		b.release()
		return err
	}
	b.record(err)
	return err
}

func (b *Breaker) lastError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr
}

// admit says whether a write may go now; if not, how long to wait at most
// and a channel closed when the state changes.
func (b *Breaker) admit() (time.Duration, <-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	switch b.state {
	case Closed:
		return 0, nil, true
	case Open:
		if d := b.until.Sub(time.Now()); d > 0 {
			return d, b.changed, false
		}
		b.setLocked(HalfOpen)
		b.trial = true
		return 0, nil, true
	default: // half-open
		if !b.trial {
			b.trial = true
			return 0, nil, true
		}
		return time.Second, b.changed, false
	}
}

func (b *Breaker) release() {
	b.mu.Lock()
	b.trial = false
	b.mu.Unlock()
}

func (b *Breaker) record(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if err == nil {
		b.fails, b.wait, b.lastErr = 0, 0, nil
		b.setLocked(Closed)
	} else {
		b.fails++
		b.lastErr = err
		if b.state == HalfOpen || b.fails >= b.failures() {
			if b.wait == 0 {
				b.wait = b.coolDown()
			} else {
				b.wait = min(2*b.wait, b.maxCoolDown())
			}
			b.until = time.Now().Add(b.wait)
			b.setLocked(Open)
		}
	}
}

func (b *Breaker) setLocked(s State) {
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	if s != b.state {
		b.state = s
		close(b.changed)
		b.changed = make(chan struct{})
	}
}

func (b *Breaker) failures() int {
	if b.Failures > 0 {
		return b.Failures
	}
	return 3
}

func (b *Breaker) coolDown() time.Duration {
	if b.CoolDown > 0 {
		return b.CoolDown
	}
	return 500 * time.Millisecond
}

func (b *Breaker) maxCoolDown() time.Duration {
	if b.MaxCoolDown > 0 {
		return b.MaxCoolDown
	}
	return 10 * time.Second
}
