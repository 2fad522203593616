package pipeline

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// queue holds the records the poll loop fetched for one partition until its
// worker takes them. The poll loop never waits on it: when it holds more
// than its limit, the partition is paused in Kafka until the worker takes
// them, so a slow or stuck worker costs a bounded amount of
// memory and never holds up the other partitions.
type queue struct {
	limit int
	gate  *gate
	ready chan struct{} // has a value while batches are queued

	mu      sync.Mutex
	batches [][]*kgo.Record
	n       int
}

func newQueue(limit int, g *gate) *queue {
	return &queue{limit: limit, gate: g, ready: make(chan struct{}, 1)}
}

// push appends records; it pauses the partition past the limit.
func (q *queue) push(recs []*kgo.Record) {
	q.mu.Lock()
	q.batches = append(q.batches, recs)
	q.n += len(recs)
	full := q.n >= q.limit
	q.mu.Unlock()
	if full {
		q.gate.close(pauseQueue)
	}
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take removes every queued batch.
func (q *queue) take() [][]*kgo.Record {
	q.mu.Lock()
	bs := q.batches
	q.batches = nil
	q.n = 0
	q.mu.Unlock()
	q.gate.open(pauseQueue)
	return bs
}

// empty reports whether nothing is queued.
func (q *queue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n == 0 && len(q.batches) == 0
}

// Reasons a partition's fetching is paused.
const (
	pauseQueue   = 1 << iota // its worker is behind
	pauseBacklog             // its rows wait for ClickHouse
)

// gate pauses a partition's fetching while any reason holds.
type gate struct {
	p       int32
	kafka   kafka
	mu      sync.Mutex
	reasons int
}

func (g *gate) close(reason int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reasons == 0 {
		g.kafka.Pause(g.p)
	}
	g.reasons |= reason
}

func (g *gate) open(reason int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reasons == 0 {
		return
	}
	g.reasons &^= reason
	if g.reasons == 0 {
		g.kafka.Resume(g.p)
	}
}

func (g *gate) paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reasons != 0
}
