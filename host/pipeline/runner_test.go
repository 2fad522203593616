package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/sink"
)

// These tests run whole runners, consumer group and all, against kfake,
// franz-go's in-process broker, with the stand-in store of worker_test.go
// for ClickHouse. The integration tests (host/server) run the same against
// the real Kafka.

const runnerPartitions = 3

// cluster is an in-process Kafka with the deployment's topics.
type cluster struct {
	t     *testing.T
	addrs []string
	cl    *kgo.Client
	adm   *kadm.Client
	end   map[int32]int64 // what was produced, per partition
	ts    int64           // the next event time
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(runnerPartitions, "in", "in.dead-letters"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &cluster{t: t, addrs: c.ListenAddrs(), cl: cl, adm: kadm.NewClient(cl), end: map[int32]int64{},
		ts: time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC).UnixMilli()}
}

// produce writes n votes per partition, in order of event time, and adds
// them to w.
func (c *cluster) produce(w want, n int) {
	c.t.Helper()
	var recs []*kgo.Record
	for i := range n {
		for p := range int32(runnerPartitions) {
			poll, opt := (i+int(p))%9+1, options[i%len(options)]
			w.add(poll, opt)
			recs = append(recs, &kgo.Record{Topic: "in", Partition: p, Timestamp: time.UnixMilli(c.ts),
				Value: fmt.Appendf(nil, `{"poll_id":%d,"option":%q}`, poll, opt)})
			c.end[p]++
		}
		c.ts += 7
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		c.t.Fatal(err)
	}
}

// runner is a Runner of deployment t over the cluster, writing to store.
func (c *cluster) runner(s *store, id string) (*Runner, *live) {
	c.t.Helper()
	l := &live{}
	r, err := New(Spec{
		Name: "t", Topic: "in", DeadLetterTopic: "in.dead-letters",
		Windows: windows, Lateness: 100 * time.Millisecond,
		EmitEvery: 10 * time.Millisecond, CheckpointEvery: 50 * time.Millisecond, MaxBatch: 256, StopTimeout: 5 * time.Second,
	}, Deps{
		Brokers: c.addrs, Module: module(c.t, "examples/votes"), PluginSHA: "sha",
		Rows: s, Checkpoints: s, Live: l,
		Breaker: &sink.Breaker{Failures: 1, CoolDown: 10 * time.Millisecond, MaxCoolDown: 50 * time.Millisecond},
		Metrics: NewMetrics(prometheus.NewRegistry()),
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)).With("member", id),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return r, l
}

// run runs r until stop is called, which waits for Run to return.
func run(t *testing.T, r *Runner) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			cancel()
			err, stopped = <-done, true
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// countedAll checks that every partition is checkpointed at its end and
// that the stored rows are w.
func (c *cluster) countedAll(s *store, w want) func() error {
	return func() error {
		for p := range int32(runnerPartitions) {
			if n := s.next(p); n != c.end[p] {
				return fmt.Errorf("partition %d checkpointed at %d, want %d", p, n, c.end[p])
			}
		}
		if err := w.diff(s.sums(1)); err != nil {
			return fmt.Errorf("totals: %w", err)
		}
		if err := w.diff(s.sums(0)); err != nil {
			return fmt.Errorf("1-second windows: %w", err)
		}
		return nil
	}
}

// A deployment stopped and started again goes on from its checkpoints,
// whatever the group's committed offsets say (they may lag the checkpoints:
// a commit lost in a crash): nothing is counted twice, nothing is lost, and
// the commits catch up with the checkpoints.
func TestRunner_RestartCountsEveryRecordOnceWhateverTheCommittedOffsets(t *testing.T) {
	c := newCluster(t)
	s := newStore()
	w := want{}
	c.produce(w, 400)
	a, _ := c.runner(s, "a")
	stopA := run(t, a)
	eventually(t, 30*time.Second, "the first records counted", c.countedAll(s, w))
	if err := stopA(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// The group's commits go back to the start of the log.
	ctx := context.Background()
	var back kadm.Offsets
	for p := range int32(runnerPartitions) {
		back.Add(kadm.Offset{Topic: "in", Partition: p, At: 0, LeaderEpoch: -1})
	}
	if err := c.adm.CommitAllOffsets(ctx, "wagg.t", back); err != nil {
		t.Fatal(err)
	}

	c.produce(w, 300)
	b, live := c.runner(s, "b")
	stopB := run(t, b)
	eventually(t, 30*time.Second, "every record counted once after the restart", c.countedAll(s, w))
	if live.rows.Load() == 0 {
		t.Error("the restarted deployment published nothing live")
	}
	if err := stopB(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	offs, err := c.adm.FetchOffsets(ctx, "wagg.t")
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(runnerPartitions) {
		if o, ok := offs.Lookup("in", p); !ok || o.At != s.next(p) {
			t.Errorf("stopped with partition %d committed at %d, checkpointed at %d", p, o.At, s.next(p))
		}
	}
}

// owned is how many partitions r runs a worker for.
func owned(r *Runner) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.workers)
}

// Partitions move between the members of a deployment's group as members
// come and go, records arriving all the while: each partition's worker
// checkpoints when it is revoked and the next owner restores it, so every
// record is counted once.
func TestRunner_PartitionsHandedBetweenMembersAreCountedOnce(t *testing.T) {
	c := newCluster(t)
	s := newStore()
	w := want{}
	c.produce(w, 200)
	a, _ := c.runner(s, "a")
	stopA := run(t, a)
	eventually(t, 30*time.Second, "a counted the first records", c.countedAll(s, w))

	b, _ := c.runner(s, "b")
	stopB := run(t, b)
	c.produce(w, 40)
	eventually(t, 60*time.Second, "b took partitions from a", func() error {
		if na, nb := owned(a), owned(b); nb == 0 || na+nb != runnerPartitions {
			return fmt.Errorf("a owns %d partitions, b %d", na, nb)
		}
		return nil
	})
	for range 4 {
		c.produce(w, 40)
	}
	eventually(t, 60*time.Second, "a and b counted every record", c.countedAll(s, w))

	if err := stopA(); err != nil { // a leaves: b takes its partitions
		t.Fatalf("a: %v", err)
	}
	c.produce(w, 100)
	eventually(t, 60*time.Second, "b counted every record after a left", c.countedAll(s, w))
	if n := owned(b); n != runnerPartitions {
		t.Errorf("b owns %d partitions after a left", n)
	}
	if err := stopB(); err != nil {
		t.Fatalf("b: %v", err)
	}
}
