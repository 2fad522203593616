package pipeline

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
)

// pauses counts what a gate asks of Kafka.
type pauses struct {
	mu             sync.Mutex
	paused         bool
	pause, resumes int
}

func (p *pauses) Pause(int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	p.pause++
}

func (p *pauses) Resume(int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
	p.resumes++
}

func (p *pauses) Produce(context.Context, *kgo.Record, func(*kgo.Record, error)) {}
func (p *pauses) Flush(context.Context) error                                    { return nil }
func (p *pauses) EndOffset(context.Context, int32) (int64, error)                { return 0, nil }

func (p *pauses) state() (paused bool, pause, resumes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused, p.pause, p.resumes
}

func records(n int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Offset: int64(i)}
	}
	return recs
}

func TestQueue_PausesThePartitionPastItsLimitUntilTheWorkerTakes(t *testing.T) {
	k := &pauses{}
	q := newQueue(100, &gate{p: 3, kafka: k})
	q.push(records(60))
	if paused, _, _ := k.state(); paused {
		t.Fatal("paused below the limit")
	}
	q.push(records(40))
	if paused, n, _ := k.state(); !paused || n != 1 {
		t.Fatalf("at the limit: paused %v after %d pauses, want paused once", paused, n)
	}
	q.push(records(10)) // the poll loop may still deliver what it fetched
	if _, n, _ := k.state(); n != 1 {
		t.Fatalf("paused %d times: one pause is enough", n)
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("queued records and no ready signal")
	}
	got := 0
	for _, b := range q.take() {
		got += len(b)
	}
	if got != 110 || !q.empty() {
		t.Fatalf("took %d records (empty after: %v), want all 110", got, q.empty())
	}
	if paused, _, resumes := k.state(); paused || resumes != 1 {
		t.Fatalf("after the worker took them: paused %v, %d resumes", paused, resumes)
	}
}

func TestGate_ResumesOnlyWhenEveryReasonIsGone(t *testing.T) {
	k := &pauses{}
	g := &gate{p: 0, kafka: k}
	g.close(pauseQueue)
	g.close(pauseBacklog)
	g.open(pauseQueue)
	if paused, _, resumes := k.state(); !paused || resumes != 0 || !g.paused() {
		t.Fatal("resumed while the backlog still holds it")
	}
	g.open(pauseQueue) // again: no effect
	g.open(pauseBacklog)
	if paused, pause, resumes := k.state(); paused || pause != 1 || resumes != 1 || g.paused() {
		t.Fatalf("paused %v after %d pauses and %d resumes, want one of each", paused, pause, resumes)
	}
	g.open(pauseBacklog | pauseQueue) // nothing holds it: no resume without a pause
	if _, _, resumes := k.state(); resumes != 1 {
		t.Fatalf("%d resumes of a partition that was not paused", resumes)
	}
}

func TestClosesPane_OnlyAnAdvancePastAPaneEndCounts(t *testing.T) {
	tumbling := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	hopping := []abi.Window{{Name: "hop", Kind: abi.Hopping, SizeMs: 10_000, SlideMs: 5000}}
	global := []abi.Window{{Name: "total", Kind: abi.Global}}
	cases := []struct {
		name       string
		windows    []abi.Window
		wm, target int64
		want       bool
	}{
		{"within one pane", tumbling, 1100, 1900, false},
		{"to the end of the open pane", tumbling, 1100, 2000, true},
		{"from the last instant of a pane to its end", tumbling, 1999, 2000, true},
		{"from a pane's end to just before the next one's", tumbling, 2000, 2999, false},
		{"far ahead", tumbling, 0, 1 << 40, true},
		{"backwards", tumbling, 5000, 1000, false},
		{"nowhere", tumbling, 5000, 5000, false},
		{"hopping: to the earliest open pane's end", hopping, 9999, 10_000, true},
		{"hopping: short of it", hopping, 10_000, 14_999, false},
		{"hopping: to the next one's", hopping, 10_000, 15_000, true},
		{"global windows never close", global, 0, math.MaxInt64, false},
		{"negative event times", tumbling, -1500, -1000, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := closesPane(c.windows, c.wm, c.target); got != c.want {
				t.Fatalf("closesPane(%d -> %d) = %v, want %v", c.wm, c.target, got, c.want)
			}
		})
	}
}

func TestSpec_DefaultsBoundWhatAPartitionHolds(t *testing.T) {
	cases := []struct {
		name string
		in   Spec
		want Spec
	}{
		{"nothing set", Spec{Name: "votes"}, Spec{Name: "votes", Aggregator: "votes", MaxBatch: 4096, MaxQueued: 16 * 4096, MaxPendingRows: 100_000, StopTimeout: 10 * time.Second}},
		{"a batch size", Spec{Name: "votes", MaxBatch: 100}, Spec{Name: "votes", Aggregator: "votes", MaxBatch: 100, MaxQueued: 1600, MaxPendingRows: 100_000, StopTimeout: 10 * time.Second}},
		{"a generation backfilling under its own name", Spec{Name: "votes__g2", Aggregator: "votes", MaxBatch: 1, MaxQueued: 5, MaxPendingRows: 7, StopTimeout: time.Second},
			Spec{Name: "votes__g2", Aggregator: "votes", MaxBatch: 1, MaxQueued: 5, MaxPendingRows: 7, StopTimeout: time.Second}},
		{"negative bounds", Spec{Name: "v", MaxBatch: -1, MaxQueued: -1, MaxPendingRows: -1, StopTimeout: -1}, Spec{Name: "v", Aggregator: "v", MaxBatch: 4096, MaxQueued: 16 * 4096, MaxPendingRows: 100_000, StopTimeout: 10 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.in
			got.applyDefaults()
			if got.Aggregator != c.want.Aggregator || got.MaxBatch != c.want.MaxBatch || got.MaxQueued != c.want.MaxQueued ||
				got.MaxPendingRows != c.want.MaxPendingRows || got.StopTimeout != c.want.StopTimeout {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
