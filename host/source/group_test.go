package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// startsFailing fails Assigned for one partition until allowed, then
// starts it at a given offset; it records what each partition receives.
type startsFailing struct {
	failing int32
	allowed bool
	fails   int
	startAt int64
	changed chan struct{} // has a value after records arrive

	mu       sync.Mutex
	started  map[int32]bool
	received map[int32][]int64
	early    []string // records of a partition before it started
}

func newStartsFailing(failing int32, startAt int64) *startsFailing {
	return &startsFailing{failing: failing, startAt: startAt, changed: make(chan struct{}, 1),
		started: map[int32]bool{}, received: map[int32][]int64{}}
}

func (h *startsFailing) Assigned(_ context.Context, p int32) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p == h.failing {
		if !h.allowed {
			h.fails++
			return 0, errors.New("no room in the memory budget")
		}
		h.started[p] = true
		return h.startAt, nil
	}
	h.started[p] = true
	return 0, nil
}

func (h *startsFailing) Revoked([]int32, bool) {}

func (h *startsFailing) Records(p int32, recs []*kgo.Record) {
	h.mu.Lock()
	for _, r := range recs {
		if !h.started[p] {
			h.early = append(h.early, fmt.Sprintf("%d/%d", p, r.Offset))
		}
		h.received[p] = append(h.received[p], r.Offset)
	}
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *startsFailing) offsets(p int32) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.received[p]...)
}

// waitFor waits until ok holds, checking it as records arrive, or fails
// the test once ctx ends.
func (h *startsFailing) waitFor(ctx context.Context, t *testing.T, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-h.changed:
		case <-ctx.Done():
			t.Fatalf("%s: not within the deadline; partition 0 got %v, partition 1 %v", what, h.offsets(0), h.offsets(1))
		}
	}
}

// testTopic makes a topic of partitions on the Kafka of WAGG_TEST_KAFKA
// with perPartition records in each, and returns the brokers and an admin
// client; ctx bounds the test.
func testTopic(ctx context.Context, t *testing.T, partitions, perPartition int) (brokers []string, topic string, adm *kadm.Client) {
	t.Helper()
	env := os.Getenv("WAGG_TEST_KAFKA")
	if env == "" {
		t.Skip("integration test: needs the Kafka that `make test` starts (WAGG_TEST_KAFKA)")
	}
	brokers = strings.Split(env, ",")
	topic = fmt.Sprintf("source-it-%d-%d", time.Now().UnixNano(), rand.IntN(1e6))
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm = kadm.NewClient(cl)
	if resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), topic) })
	var recs []*kgo.Record
	for i := range partitions * perPartition {
		recs = append(recs, &kgo.Record{Partition: int32(i % partitions), Value: []byte("v")})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return brokers, topic, adm
}

// poll runs g's poll loop until the test ends, then closes g.
func poll(t *testing.T, g *Group) {
	ctx, stop := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		g.Poll(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-polled
		g.Close()
	})
}

// A partition whose start fails is left paused while the member's other
// partitions run, and starts where the handler says once a retry works,
// without a rebalance. (An error from the group's offset adjustment ended
// the whole group session instead, and no partition of the member ran.)
func TestGroup_APartitionThatDoesNotStartLeavesTheOthersRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers, topic, _ := testTopic(ctx, t, 2, 10)
	h := newStartsFailing(1, 6)
	g, err := New(Options{Brokers: brokers, Group: topic, Topic: topic}, h)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, g)

	h.waitFor(ctx, t, "partition 0 read to its end while partition 1 does not start", func() bool { return len(h.offsets(0)) == 10 })
	h.mu.Lock()
	h.allowed = true
	h.mu.Unlock()
	h.waitFor(ctx, t, "partition 1 read from where it started once a retry worked", func() bool { return len(h.offsets(1)) == 4 })
	if got := h.offsets(1); got[0] != 6 || got[3] != 9 {
		t.Fatalf("partition 1 got offsets %v, want 6 to 9", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fails == 0 || len(h.early) > 0 {
		t.Fatalf("partition 1 failed to start %d times; records before their partition started: %v", h.fails, h.early)
	}
}

// logLines collects what a logger writes.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A partition whose checkpoint points at records the log no longer holds
// (deleted by retention while nothing counted them) starts at the log's
// start, and the loss is logged with its extent.
func TestGroup_RecordsDeletedBeforeTheyWereCountedAreReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers, topic, adm := testTopic(ctx, t, 1, 20)
	before := kadm.Offsets{}
	before.Add(kadm.Offset{Topic: topic, Partition: 0, At: 12})
	if resp, err := adm.DeleteRecords(ctx, before); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}

	h := newStartsFailing(-1, 0)
	log := &logLines{}
	g, err := New(Options{Brokers: brokers, Group: topic, Topic: topic, Admin: adm, Log: slog.New(slog.NewTextHandler(log, nil))}, h)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, g)
	h.waitFor(ctx, t, "partition 0 read to its end", func() bool { return len(h.offsets(0)) >= 8 })
	if got := h.offsets(0); got[0] != 12 || len(got) != 8 {
		t.Fatalf("partition 0 got offsets %v, want 12 to 19", got)
	}
	if s := log.String(); !strings.Contains(s, "deleted from the log before they were counted") || !strings.Contains(s, "from=0 to=12 lost=12") {
		t.Fatalf("log: %s", s)
	}
}

// A partition read up to its last stable offset is not at its end while a
// transaction is open in it: the records in it may yet commit.
func TestGroup_EndOffsetCountsAnOpenTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	brokers, topic, adm := testTopic(ctx, t, 1, 5)
	txn, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(topic+"-txn"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	defer txn.EndTransaction(context.Background(), kgo.TryAbort)
	g, err := New(Options{Brokers: brokers, Group: topic, Topic: topic, Admin: adm}, newStartsFailing(-1, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if end, err := g.EndOffset(ctx, 0); err != nil || end != 7 {
		t.Fatalf("end offset %d (%v), want 7: past the open transaction's two records", end, err)
	}
}
