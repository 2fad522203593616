package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/internal/testwasm"
)

// These tests run one partition worker against the real plugin sandbox and
// in-memory stand-ins for ClickHouse and Kafka that the test switches into
// faults on purpose. Expected counts come from what the test produced.

var errDown = errors.New("clickhouse: connection refused")

// store is ClickHouse: rows replace rows of the same key with a higher
// version (ReplacingMergeTree), checkpoints replace checkpoints.
type store struct {
	mu   sync.Mutex
	down bool // every call fails at once
	hang bool // every call waits until its context ends
	// refused counts the calls that failed because down was set
	refused atomic.Int64
	rows    map[storeKey]storedRow
	cps     map[int32]checkpoint.Checkpoint
	saves   []savedAt // every checkpoint saved, in order
}

// savedAt is when a checkpoint was saved and how long its snapshot was.
type savedAt struct {
	at    time.Time
	bytes int
}

type storeKey struct {
	p      int32
	window uint8
	start  int64
	key    string
}

type storedRow struct {
	version int64
	row     abi.Row
}

func newStore() *store {
	return &store{rows: map[storeKey]storedRow{}, cps: map[int32]checkpoint.Checkpoint{}}
}

func (s *store) set(down, hang bool) {
	s.mu.Lock()
	s.down, s.hang = down, hang
	s.mu.Unlock()
}

func (s *store) fault(ctx context.Context) error {
	s.mu.Lock()
	down, hang := s.down, s.hang
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if down {
		s.refused.Add(1)
		return errDown
	}
	return nil
}

func (s *store) Write(ctx context.Context, p int32, version int64, rows []abi.Row) error {
	if err := s.fault(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rows {
		k := storeKey{p, r.Window, r.Start, r.Key}
		if old, ok := s.rows[k]; !ok || version >= old.version {
			r.Metrics = append([]uint64(nil), r.Metrics...)
			s.rows[k] = storedRow{version, r}
		}
	}
	return nil
}

func (s *store) Load(ctx context.Context, _, _ string, p int32) (checkpoint.Checkpoint, error) {
	if err := s.fault(ctx); err != nil {
		return checkpoint.Checkpoint{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cp, ok := s.cps[p]
	if !ok {
		return cp, checkpoint.ErrNone
	}
	return cp, nil
}

func (s *store) Save(ctx context.Context, c checkpoint.Checkpoint) error {
	if err := s.fault(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cps[c.Partition] = c
	s.saves = append(s.saves, savedAt{time.Now(), len(c.Snapshot)})
	return nil
}

func (s *store) saved() []savedAt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.saves)
}

func (s *store) next(p int32) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cps[p].NextOffset
}

// sums adds up the metric of every stored row of a window by key (across
// partitions and, for a windowed window, panes), as the ClickHouse view does.
func (s *store) sums(window uint8) map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for k, r := range s.rows {
		if k.window == window {
			out[k.key] += int64(r.row.Metrics[0])
		}
	}
	return out
}

// broker is Kafka as a worker sees it: pauses, dead letters, end offsets.
type broker struct {
	mu     sync.Mutex
	paused bool
	pauses int
	dls    []*kgo.Record
	refuse bool // produce fails, as while the broker restarts
	// maxValue > 0 refuses records of longer values, as a topic's
	// max.message.bytes does
	maxValue int
	end      atomic.Int64
	flushes  atomic.Int64
}

func (b *broker) Pause(int32) {
	b.mu.Lock()
	b.paused = true
	b.pauses++
	b.mu.Unlock()
}

func (b *broker) Resume(int32) {
	b.mu.Lock()
	b.paused = false
	b.mu.Unlock()
}

func (b *broker) isPaused() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paused
}

func (b *broker) Produce(_ context.Context, r *kgo.Record, done func(*kgo.Record, error)) {
	b.mu.Lock()
	refuse, tooLarge := b.refuse, b.maxValue > 0 && len(r.Value) > b.maxValue
	if !refuse && !tooLarge {
		b.dls = append(b.dls, r)
	}
	b.mu.Unlock()
	switch {
	case refuse:
		done(r, errors.New("kafka: broker not available"))
	case tooLarge:
		done(r, fmt.Errorf("%w (uncompressed_bytes=%d)", kerr.MessageTooLarge, len(r.Value)))
	default:
		done(r, nil)
	}
}

func (b *broker) Flush(context.Context) error {
	b.flushes.Add(1)
	return nil
}

func (b *broker) EndOffset(context.Context, int32) (int64, error) { return b.end.Load(), nil }

func (b *broker) deadLetters() []*kgo.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*kgo.Record(nil), b.dls...)
}

type live struct {
	rows    atomic.Int64
	version atomic.Int64 // of the latest rows: the offset the worker had read to
}

func (l *live) PublishAt(_ string, _ int32, version int64, rows []abi.Row) error {
	l.rows.Add(int64(len(rows)))
	l.version.Store(version)
	return nil
}

// rig is one worker with its stand-ins.
type rig struct {
	t      *testing.T
	env    *env
	store  *store
	broker *broker
	live   *live
	w      *worker
	offset int64 // the next offset the test produces
}

var (
	modMu   sync.Mutex
	modules = map[string]*sandbox.Module{}
)

func module(t *testing.T, pkg string) *sandbox.Module {
	t.Helper()
	modMu.Lock()
	defer modMu.Unlock()
	if m, ok := modules[pkg]; ok {
		return m
	}
	rt, err := sandbox.New(context.Background(), &sandbox.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	wasm := testwasm.Build
	if strings.HasSuffix(pkg, ".c") { // a plugin without the SDK
		wasm = testwasm.BuildRawC
	}
	m, err := rt.Compile(context.Background(), wasm(t, pkg))
	if err != nil {
		t.Fatal(err)
	}
	modules[pkg] = m
	return m
}

var windows = []abi.Window{
	{Name: "second", Kind: abi.Tumbling, SizeMs: 1000},
	{Name: "total", Kind: abi.Global},
}

func newRig(t *testing.T, pkg string, spec Spec) *rig {
	spec.Name, spec.Topic, spec.DeadLetterTopic, spec.Windows = "t", "in", "in.dead-letters", windows
	if spec.EmitEvery == 0 {
		spec.EmitEvery = 10 * time.Millisecond
	}
	if spec.CheckpointEvery == 0 {
		spec.CheckpointEvery = 20 * time.Millisecond
	}
	if spec.Lateness == 0 {
		spec.Lateness = 100 * time.Millisecond
	}
	if spec.StopTimeout == 0 {
		spec.StopTimeout = time.Second
	}
	spec.applyDefaults()
	r := &rig{t: t, store: newStore(), broker: &broker{}, live: &live{}}
	e := newEnv()
	e.spec, e.module, e.plugin = spec, module(t, pkg), "sha"
	e.rows, e.cps, e.live = r.store, r.store, r.live
	e.breaker = &sink.Breaker{Failures: 1, CoolDown: 10 * time.Millisecond, MaxCoolDown: 50 * time.Millisecond}
	e.m = NewMetrics(prometheus.NewRegistry())
	e.log = slog.New(slog.NewTextHandler(testLog{t}, nil))
	e.kafka = r.broker
	e.checkpointed = func(int32, int64) {}
	r.env = e
	return r
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start restores the worker from the store and runs it.
func (r *rig) start() {
	r.t.Helper()
	r.w = newWorker(r.env, 0)
	if err := r.w.restore(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	go r.w.run()
	w := r.w
	r.t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			w.stop(false)
			<-w.done
		}
	})
}

// stop stops the worker, checkpointing when keep.
func (r *rig) stop(keep bool) {
	r.w.stop(keep)
	<-r.w.done
}

// vote makes the record of a vote for poll at ts.
func (r *rig) vote(poll int, option string, ts int64) *kgo.Record {
	rec := &kgo.Record{
		Topic: "in", Partition: 0, Offset: r.offset, Timestamp: time.UnixMilli(ts),
		Value: fmt.Appendf(nil, `{"poll_id":%d,"option":%q}`, poll, option),
	}
	r.offset++
	return rec
}

// feed hands records to the worker as the poll loop does: never while the
// partition is paused (the records stay in Kafka meanwhile).
func (r *rig) feed(recs []*kgo.Record) {
	r.broker.end.Store(recs[len(recs)-1].Offset + 1)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for len(recs) > 0 {
		if r.broker.isPaused() {
			<-tick.C
			continue
		}
		n := min(len(recs), 50)
		r.w.queue.push(recs[:n])
		recs = recs[n:]
	}
}

func eventually(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.After(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%s: not within %s: %v", what, d, err)
		case <-tick.C:
		}
	}
}

// want is the oracle: votes per encoded key of the votes plugin.
type want map[string]int64

func (w want) add(poll int, option string) {
	k := abi.AppendKeyInt64(nil, int64(poll))
	k = abi.AppendKeyString(k, []byte(option))
	w[string(k)]++
}

func (w want) addPoll(poll int) { w[string(abi.AppendKeyInt64(nil, int64(poll)))]++ }

func (w want) diff(got map[string]int64) error {
	for k, n := range w {
		if got[k] != n {
			return fmt.Errorf("key %x: %d, want %d", k, got[k], n)
		}
	}
	if len(got) != len(w) {
		return fmt.Errorf("%d keys, want %d", len(got), len(w))
	}
	return nil
}

func (r *rig) counted(w want, next int64) func() error {
	return func() error {
		if n := r.store.next(0); n != next {
			return fmt.Errorf("checkpoint at offset %d, want %d", n, next)
		}
		if err := w.diff(r.store.sums(1)); err != nil {
			return fmt.Errorf("totals: %w", err)
		}
		if err := w.diff(r.store.sums(0)); err != nil {
			return fmt.Errorf("1-second windows: %w", err)
		}
		return nil
	}
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

var options = []string{"a", "b", "c", "d", "e"}

// A ClickHouse outage with votes arriving live (event time = wall clock),
// a quiet spell past idle_after while it is down and a lateness shorter
// than the outage: every vote is counted once it is back, none is
// dead-lettered, the partition paused instead of buffering without bound,
// and live deltas went on from what was read.
func TestWorker_ClickHouseOutageDeadLettersNoValidRecord(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{IdleAfter: 30 * time.Millisecond, MaxPendingRows: 40, MaxQueued: 200, MaxBatch: 64})
	r.start()
	w := want{}
	batch := func(n int) []*kgo.Record {
		var recs []*kgo.Record
		now := time.Now().UnixMilli()
		for i := range n {
			poll, opt := i%20+1, options[i%len(options)]
			w.add(poll, opt)
			recs = append(recs, r.vote(poll, opt, now))
		}
		return recs
	}
	r.feed(batch(1000))
	eventually(t, 10*time.Second, "first votes checkpointed", r.counted(w, 1000))

	r.store.set(true, false)
	liveBefore := r.live.rows.Load()
	fed := make(chan struct{})
	seen := make(chan struct{})
	go func() {
		// Votes go on arriving until the pause has been seen: whether a
		// fixed number of them pauses the partition is a race with the
		// checkpoint that takes the rows read so far into its save.
		defer close(fed)
		for i := 0; i < 500; i++ {
			select {
			case <-seen:
				return
			default:
			}
			r.feed(batch(200))
		}
	}()
	eventually(t, 10*time.Second, "partition paused and breaker open while ClickHouse is down", func() error {
		if st, _ := r.env.breaker.Status(); st == sink.Closed {
			return errors.New("breaker closed")
		}
		if !r.broker.isPaused() {
			return errors.New("not paused")
		}
		return nil
	})
	close(seen)
	if r.live.rows.Load() == liveBefore {
		t.Error("no live deltas while ClickHouse was down")
	}
	// Down for many checkpoint intervals, longer than the lateness,
	// idle_after and a window: what an outage must not turn into late
	// records.
	<-time.After(1500 * time.Millisecond)
	r.store.set(false, false)
	<-fed
	eventually(t, 20*time.Second, "every vote counted after ClickHouse is back", r.counted(w, r.offset))
	if dl := r.broker.deadLetters(); len(dl) > 0 {
		t.Fatalf("%d valid records dead-lettered, first: %s %s", len(dl), header(dl[0], "wagg.reason"), header(dl[0], "wagg.error"))
	}
	if st, _ := r.env.breaker.Status(); st != sink.Closed {
		t.Errorf("breaker %s after recovery", st)
	}
}

// A plugin that fails on one value: each such record is dead-lettered with
// the plugin's message and its source, everything else is counted exactly,
// the partition goes on.
func TestWorker_PoisonRecordsAreIsolated(t *testing.T) {
	r := newRig(t, "internal/testwasm/panics", Spec{MaxBatch: 256, MaxPluginErrors: 100})
	r.start()
	w := want{}
	var recs []*kgo.Record
	poison := map[int64]bool{}
	now := time.Now().UnixMilli()
	for i := range 3000 {
		poll := i%40 + 1
		if i%300 == 7 {
			poll = 13 // the plugin panics on poll 13
		}
		if poll == 13 {
			poison[r.offset] = true
		} else {
			w.addPoll(poll)
		}
		recs = append(recs, r.vote(poll, "a", now-int64(3000-i)))
	}
	r.feed(recs)
	eventually(t, 30*time.Second, "every other record counted", r.counted(w, r.offset))
	dl := r.broker.deadLetters()
	if len(dl) != len(poison) {
		t.Fatalf("%d dead letters, want %d", len(dl), len(poison))
	}
	for _, d := range dl {
		off, _ := strconv.ParseInt(header(d, "wagg.offset"), 10, 64)
		if !poison[off] || header(d, "wagg.reason") != ReasonPluginError || header(d, "wagg.topic") != "in" || header(d, "wagg.partition") != "0" {
			t.Fatalf("dead letter %v", d.Headers)
		}
		if !strings.Contains(header(d, "wagg.error"), "poll 13 is cursed") {
			t.Fatalf("dead letter without the plugin's message: %q", header(d, "wagg.error"))
		}
	}
	if r.env.hasFailed() {
		t.Fatalf("deployment failed: %v", r.env.failure)
	}
}

// Isolating the poison records of a batch replays each call since the last
// good point once, not once per poison record: a rebuild starts from a
// snapshot taken after the previous one. (Replaying the batches since the
// last checkpoint for every poison record made a plugin that fails on 2% of
// records fall ever further behind.)
func TestWorker_IsolationReplaysEachCallOnce(t *testing.T) {
	r := newRig(t, "internal/testwasm/panics", Spec{MaxBatch: 4096, MaxPluginErrors: 100})
	r.start()
	w := want{}
	now := time.Now().UnixMilli()
	var good []*kgo.Record
	for i := range 2000 {
		w.addPoll(i%12 + 1)
		good = append(good, r.vote(i%12+1, "a", now-10_000))
	}
	r.feed(good)
	var recs []*kgo.Record
	poisons := 0
	for i := range 3000 {
		poll := i%12 + 1
		if i%75 == 5 {
			poll, poisons = 13, poisons+1 // the plugin panics on poll 13
		} else {
			w.addPoll(poll)
		}
		recs = append(recs, r.vote(poll, "a", now-5000))
	}
	// One fetch of them all: one batch into the plugin.
	r.broker.end.Store(recs[len(recs)-1].Offset + 1)
	r.w.queue.push(recs)
	eventually(t, 30*time.Second, "every other record counted", func() error {
		if n := len(r.broker.deadLetters()); n != poisons {
			return fmt.Errorf("%d dead letters, want %d", n, poisons)
		}
		return r.counted(w, r.offset)()
	})
	// At most: the calls before the first failure, then each record of the
	// failing batches once.
	if n := r.w.replayed; n > 2000+3000 {
		t.Fatalf("isolating %d poison records replayed %d calls, want at most %d", poisons, n, 5000)
	}
}

// A plugin that fails on every record stops after max_plugin_errors, as a
// failed deployment, instead of dead-lettering the whole topic.
func TestWorker_APluginThatAlwaysFailsStopsTheDeployment(t *testing.T) {
	r := newRig(t, "internal/testwasm/panics", Spec{MaxBatch: 32, MaxPluginErrors: 5})
	r.start()
	var recs []*kgo.Record
	for range 500 {
		recs = append(recs, r.vote(13, "a", time.Now().UnixMilli()))
	}
	go r.feed(recs)
	select {
	case <-r.env.failed:
	case <-time.After(30 * time.Second):
		t.Fatal("deployment did not fail")
	}
	var fe *FailedError
	if !errors.As(r.env.failure, &fe) || fe.Reason != "plugin_errors" || !strings.Contains(fe.Error(), "poll 13 is cursed") {
		t.Fatalf("failure %v", r.env.failure)
	}
	if n := len(r.broker.deadLetters()); n > 6 {
		t.Fatalf("%d dead letters after failing, want at most 6", n)
	}
	if r.store.next(0) != 0 {
		t.Fatalf("a failed partition checkpointed offset %d", r.store.next(0))
	}
}

// Kafka handing over offsets below what the partition counted (its topic
// created again, or its log truncated by an unclean leader election) stops
// the deployment: skipped, those records would be lost without a word.
func TestWorker_OffsetsGoingBackStopTheDeployment(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{MaxBatch: 64})
	r.start()
	w := want{}
	var recs []*kgo.Record
	for range 300 {
		recs = append(recs, r.vote(1, "a", time.Now().UnixMilli()))
		w.add(1, "a")
	}
	r.feed(recs)
	eventually(t, 10*time.Second, "the votes counted", r.counted(w, 300))
	r.offset = 0 // the log starts over
	r.feed([]*kgo.Record{r.vote(2, "b", time.Now().UnixMilli())})
	select {
	case <-r.env.failed:
	case <-time.After(10 * time.Second):
		t.Fatal("the deployment went on")
	}
	var fe *FailedError
	if !errors.As(r.env.failure, &fe) || fe.Reason != "source" || !strings.Contains(fe.Error(), "offset 0 after offsets up to 299") {
		t.Fatalf("failure %v", r.env.failure)
	}
	if err := r.counted(w, 300)(); err != nil {
		t.Fatalf("after the failure: %v", err)
	}
}

// Event times the host refuses: a record from the future does not move the
// watermark (the valid records after it are counted), a record before 1970
// gets its own reason.
func TestWorker_EventTimeGuard(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{MaxFuture: time.Minute})
	r.start()
	w := want{}
	now := time.Now().UnixMilli()
	var recs []*kgo.Record
	for i := range 500 {
		if i == 100 {
			recs = append(recs, r.vote(1, "a", now+time.Hour.Milliseconds()))
		}
		if i == 200 {
			recs = append(recs, r.vote(1, "a", -5000))
		}
		w.add(2, "b")
		recs = append(recs, r.vote(2, "b", now-5000+int64(i)))
	}
	r.feed(recs)
	eventually(t, 10*time.Second, "valid records counted", r.counted(w, r.offset))
	dl := r.broker.deadLetters()
	if len(dl) != 2 || header(dl[0], "wagg.reason") != "future" || header(dl[1], "wagg.reason") != "out_of_range" {
		for _, d := range dl {
			t.Log(header(d, "wagg.reason"), header(d, "wagg.error"))
		}
		t.Fatalf("%d dead letters, want future then out_of_range", len(dl))
	}
}

// Stopping while ClickHouse hangs waits no longer than StopTimeout.
func TestWorker_StopIsBoundedWhileClickHouseHangs(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{StopTimeout: 300 * time.Millisecond})
	r.start()
	r.store.set(false, true)
	var recs []*kgo.Record
	for range 100 {
		recs = append(recs, r.vote(1, "a", time.Now().UnixMilli()))
	}
	r.feed(recs)
	eventually(t, 5*time.Second, "a save in flight", func() error {
		if r.w.queue.empty() {
			return nil
		}
		return errors.New("records still queued")
	})
	stopped := make(chan struct{})
	go func() {
		r.stop(true)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop waited on a hanging ClickHouse")
	}
}

// Dead letters Kafka refuses are produced again, and no checkpoint covers
// their records until they are written.
func TestWorker_DeadLettersSurviveABrokerOutage(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{})
	r.start()
	r.broker.mu.Lock()
	r.broker.refuse = true
	r.broker.mu.Unlock()
	w := want{}
	var recs []*kgo.Record
	for i := range 300 {
		if i%30 == 0 {
			rec := r.vote(1, "a", time.Now().UnixMilli())
			rec.Value = []byte(`{"poll_id":"x"}`)
			recs = append(recs, rec)
			continue
		}
		w.add(3, "c")
		recs = append(recs, r.vote(3, "c", time.Now().UnixMilli()))
	}
	r.feed(recs)
	eventually(t, 10*time.Second, "checkpoints retried while dead letters fail", func() error {
		if r.broker.flushes.Load() < 5 {
			return errors.New("few attempts")
		}
		return nil
	})
	if n := r.store.next(0); n != 0 {
		t.Fatalf("checkpoint at %d covers dead letters not written", n)
	}
	r.broker.mu.Lock()
	r.broker.refuse = false
	r.broker.mu.Unlock()
	eventually(t, 10*time.Second, "counted once the broker is back", r.counted(w, r.offset))
	dl := r.broker.deadLetters()
	if len(dl) != 10 {
		t.Fatalf("%d dead letters, want 10", len(dl))
	}
	for _, d := range dl {
		if header(d, "wagg.reason") != ReasonMalformed {
			t.Fatalf("dead letter %v", d.Headers)
		}
	}
}

// A dead letter Kafka refuses as it is (its value past the topic's
// max.message.bytes, its timestamp past the topic's bounds) would never be
// written, and no checkpoint may cover its record before it is: it is
// written without the record's key and value instead, and counting goes on.
func TestWorker_DeadLettersKafkaRefusesWholeAreWrittenStripped(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{})
	r.broker.mu.Lock()
	r.broker.maxValue = 100
	r.broker.mu.Unlock()
	r.start()
	w := want{}
	big := r.vote(1, "a", time.Now().UnixMilli())
	big.Value = []byte(`{"poll_id":"` + strings.Repeat("x", 200) + `"}`)
	recs := []*kgo.Record{big}
	for range 20 {
		w.add(3, "c")
		recs = append(recs, r.vote(3, "c", time.Now().UnixMilli()))
	}
	r.feed(recs)
	eventually(t, 10*time.Second, "counted past the record whose dead letter is too large", r.counted(w, r.offset))
	dl := r.broker.deadLetters()
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	d := dl[0]
	if header(d, "wagg.reason") != ReasonMalformed || header(d, "wagg.offset") != "0" || d.Value != nil ||
		!strings.Contains(header(d, "wagg.stripped"), fmt.Sprintf("value (%d bytes)", len(big.Value))) {
		t.Fatalf("dead letter: value %q, headers %v", d.Value, d.Headers)
	}
}

// Saves that fail for StalledAfter are reported, with why, until one goes
// through (GET /v1/deployments' stalled, and /healthz).
func TestWorker_SavesFailingForAWhileAreReported(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{StalledAfter: 200 * time.Millisecond})
	r.start()
	run := &Runner{spec: r.env.spec, workers: map[int32]*worker{0: r.w}}
	r.store.set(true, false)
	r.feed([]*kgo.Record{r.vote(1, "a", time.Now().UnixMilli())})
	eventually(t, 10*time.Second, "the partition reported stalled", func() error {
		if s := run.Stalled(); !strings.Contains(s, "partitions [0] have stored nothing for") || !strings.Contains(s, errDown.Error()) {
			return fmt.Errorf("Stalled() = %q", s)
		}
		return nil
	})
	r.store.set(false, false)
	eventually(t, 10*time.Second, "the report gone once a save goes through", func() error {
		if s := run.Stalled(); s != "" {
			return fmt.Errorf("Stalled() = %q", s)
		}
		return nil
	})
}

// A plugin told the host's limit of groups per pane (the Go SDK) refuses the
// records that would pass it: they are dead-lettered, the groups that exist
// go on counting.
func TestWorker_RecordsPastTheGroupLimitAreDeadLettered(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{MaxBatch: 64, MaxPluginErrors: 1000, MaxGroupsPerPane: 50})
	r.start()
	w := want{}
	var recs []*kgo.Record
	now := time.Now().UnixMilli()
	for i := range 150 {
		poll := i%100 + 1 // 100 groups, then the first 50 again
		if poll <= 50 {
			w.add(poll, "a")
		}
		recs = append(recs, r.vote(poll, "a", now))
	}
	r.feed(recs)
	eventually(t, 30*time.Second, "the first 50 groups counted", func() error {
		if n := r.store.next(0); n != r.offset {
			return fmt.Errorf("checkpoint at offset %d, want %d", n, r.offset)
		}
		return w.diff(r.store.sums(1))
	})
	dl := r.broker.deadLetters()
	if len(dl) != 50 {
		t.Fatalf("%d dead letters, want the 50 records of new groups past the limit", len(dl))
	}
	for _, d := range dl {
		if off, _ := strconv.Atoi(header(d, "wagg.offset")); off < 50 || off >= 100 || header(d, "wagg.reason") != ReasonPluginError ||
			!strings.Contains(header(d, "wagg.error"), "too many groups in one pane") {
			t.Fatalf("dead letter %v", d.Headers)
		}
	}
	if r.env.hasFailed() {
		t.Fatalf("deployment failed: %v", r.env.failure)
	}
}

// A plugin that emits more groups for a pane than the host keeps, whatever
// it was told, stops the deployment as failed instead of growing the hub.
func TestWorker_RowsPastTheHubGroupLimitFailTheDeployment(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{MaxBatch: 64}) // the plugin is not told a limit
	h := hub.New(&hub.Options{MaxGroupsPerPane: 50, Logger: r.env.log})
	t.Cleanup(h.Close)
	h.Register("t", &r.env.module.Schema, windows)
	r.env.live = h
	r.start()
	var recs []*kgo.Record
	for i := range 500 {
		recs = append(recs, r.vote(i+1, "a", time.Now().UnixMilli()))
	}
	go r.feed(recs)
	select {
	case <-r.env.failed:
	case <-time.After(30 * time.Second):
		t.Fatal("deployment did not fail")
	}
	var fe *FailedError
	var tm *hub.TooManyGroupsError
	if !errors.As(r.env.failure, &fe) || fe.Reason != "groups" || !errors.As(r.env.failure, &tm) || tm.Limit != 50 {
		t.Fatalf("failure %v, want the hub's group limit", r.env.failure)
	}
}

// Isolating poison records costs a call deadline each; a stop does not wait
// for all of them, and takes no checkpoint past records it did not fold in.
func TestWorker_StopIsBoundedWhileIsolatingLoopingRecords(t *testing.T) {
	r := newRig(t, "internal/testwasm/spins", Spec{MaxBatch: 4096, MaxPluginErrors: 1000})
	r.start()
	var recs []*kgo.Record
	now := time.Now().UnixMilli()
	for i := range 400 {
		poll := i%10 + 1
		if i%4 == 0 {
			poll = 13 // the plugin loops on poll 13: 100 records of a call deadline each
		}
		recs = append(recs, r.vote(poll, "a", now))
	}
	r.feed(recs)
	eventually(t, 30*time.Second, "the first looping record dead-lettered", func() error {
		if len(r.broker.deadLetters()) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	stopped := make(chan struct{})
	go func() {
		r.stop(true)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second): // a bound on a hang: isolating all 100 takes 100 deadlines
		t.Fatal("stop waited for every looping record to be isolated")
	}
	if n := r.store.next(0); n != 0 {
		t.Fatalf("a stop cut short checkpointed offset %d, past records it did not fold in", n)
	}
	if n := len(r.broker.deadLetters()); n >= 100 {
		t.Fatalf("%d dead letters: the stop did not cut the isolation short", n)
	}
}

// A checkpoint written by another plugin with a state version this one does
// not accept is not restored: the deployment fails instead.
func TestWorker_RefusesACheckpointOfAStateVersionItDoesNotAccept(t *testing.T) {
	r := newRig(t, "examples/votes", Spec{})
	r.store.cps[0] = checkpoint.Checkpoint{Partition: 0, NextOffset: 10, Plugin: "another", StateVersion: 7, Snapshot: []byte("whatever it meant")}
	w := newWorker(r.env, 0)
	err := w.restore(context.Background())
	var fe *FailedError
	if err == nil || !errors.As(r.env.failure, &fe) || fe.Reason != "state" || !strings.Contains(err.Error(), "state version 7") {
		t.Fatalf("restore: %v, failure %v; want a refusal naming state version 7 and a failed deployment", err, r.env.failure)
	}
	// The plugin's own checkpoints, or those of its state version, restore.
	for _, cp := range []checkpoint.Checkpoint{{Plugin: "sha", StateVersion: 7}, {Plugin: "another", StateVersion: 1}} {
		r := newRig(t, "examples/votes", Spec{})
		r.store.cps[0] = cp
		w := newWorker(r.env, 0)
		if err := w.restore(context.Background()); err != nil {
			t.Fatalf("%+v: %v", cp, err)
		}
		w.inst.Close(context.Background())
	}
}

// A checkpoint of a state version the plugin migrates is read through the
// schema of the plugin that wrote it, converted (statev2migrate counts
// tenths of a vote and multiplies version 1's votes by 10), and counted on
// from; the checkpoints after carry the new version. Without the writer's
// schema the deployment fails rather than read the state as its own.
func TestWorker_MigratesACheckpointOfAStateVersionItMigrates(t *testing.T) {
	v1 := newRig(t, "internal/testwasm/panics", Spec{})
	v1.start()
	w := want{}
	var recs []*kgo.Record
	for i := range 300 {
		recs = append(recs, v1.vote(i%7+1, "a", 1000+int64(i)))
		w.addPoll(i%7 + 1)
	}
	v1.feed(recs)
	eventually(t, 10*time.Second, "version 1 checkpointed every vote", func() error {
		if n := v1.store.next(0); n != v1.offset {
			return fmt.Errorf("checkpoint at %d, want %d", n, v1.offset)
		}
		return w.diff(v1.store.sums(1))
	})
	v1.stop(true)
	old := v1.store.cps[0]
	old.Plugin = "old"
	if old.StateVersion != 1 {
		t.Fatalf("version 1 checkpointed state version %d", old.StateVersion)
	}

	r := newRig(t, "internal/testwasm/statev2migrate", Spec{})
	r.store.cps[0] = old
	err := newWorker(r.env, 0).restore(context.Background())
	var fe *FailedError
	if err == nil || !errors.As(r.env.failure, &fe) || fe.Reason != "state" || !strings.Contains(err.Error(), "which this plugin migrates, but that plugin's schema is not known") {
		t.Fatalf("restore without the writer's schema: %v, failure %v", err, r.env.failure)
	}

	r = newRig(t, "internal/testwasm/statev2migrate", Spec{})
	r.store.cps[0] = old
	r.offset = v1.offset
	r.env.stateSchema = func(sha string) (*abi.Schema, error) {
		if sha != "old" {
			return nil, fmt.Errorf("no plugin %s", sha)
		}
		return &module(t, "internal/testwasm/panics").Schema, nil
	}
	r.start()
	recs = recs[:0]
	for i := range 200 {
		recs = append(recs, r.vote(i%9+1, "a", 1500+int64(i)))
		w.addPoll(i%9 + 1)
	}
	r.feed(recs)
	tenths := want{}
	for k, n := range w {
		tenths[k] = 10 * n
	}
	eventually(t, 10*time.Second, "version 2 counted on from the migrated state, in tenths", func() error {
		if n := r.store.next(0); n != r.offset {
			return fmt.Errorf("checkpoint at %d, want %d", n, r.offset)
		}
		return tenths.diff(r.store.sums(1))
	})
	if cp := r.store.cps[0]; cp.StateVersion != 2 || cp.Plugin != "sha" {
		t.Fatalf("checkpoint after the migration: state version %d of plugin %s, want 2 of sha", cp.StateVersion, cp.Plugin)
	}
	// Restarted, it restores its own checkpoint as it is: the state is not
	// migrated twice.
	r.stop(true)
	r.w = nil
	r.start()
	more := []*kgo.Record{r.vote(1, "a", 2000)}
	tenths.addPoll(1)
	tenths[string(abi.AppendKeyInt64(nil, 1))] += 9
	r.feed(more)
	eventually(t, 10*time.Second, "counted on after a restart", func() error {
		if n := r.store.next(0); n != r.offset {
			return fmt.Errorf("checkpoint at %d, want %d", n, r.offset)
		}
		return tenths.diff(r.store.sums(1))
	})
}

// A plugin whose every flush returns rows of groups it never saw (final
// rows of fresh keys) while ClickHouse is down: the rows waiting for
// ClickHouse stay bounded. Fetching stops at MaxPendingRows, but the
// flushes go on with the emit cadence, and without a bound of their own
// each added its rows until the host ran out of memory.
func TestWorker_RowsWaitingForClickHouseStayBoundedWhateverThePluginReturns(t *testing.T) {
	const maxPending, perFlush = 1000, 500 // perFlush: internal/testwasm/flood
	r := newRig(t, "internal/testwasm/flood/flood.c", Spec{MaxPendingRows: maxPending})
	r.start()
	r.store.set(true, false)
	before := r.live.rows.Load()
	// 4 refused calls take the writer's backoff, many times the 10 ms
	// emit cadence: without the bound, far more than the bound's rows
	// would have been emitted by then
	eventually(t, 30*time.Second, "the writer refused 4 times", func() error {
		if n := r.store.refused.Load(); n < 4 {
			return fmt.Errorf("%d refusals", n)
		}
		return nil
	})
	r.stop(false)
	if n, most := len(r.w.pending), 2*maxPending+perFlush; n > most {
		t.Fatalf("%d rows wait for ClickHouse, want at most %d", n, most)
	}
	// what the save in flight took, and what waits
	if n, most := r.live.rows.Load()-before, int64(2*(2*maxPending+perFlush)); n > most {
		t.Fatalf("%d rows published while ClickHouse was down, want at most %d", n, most)
	}
}

// The same bound in bytes: a plugin may return few rows of long keys (up
// to 64 KiB each, 64 MiB a flush), and each row keeps its flush's keys and
// values alive while it waits.
func TestWorker_RowsWaitingForClickHouseStayBoundedInBytes(t *testing.T) {
	const maxBytes = 64 << 10
	const perFlush = 500 * 16 // internal/testwasm/flood: 500 rows of an 8-byte key and a count
	r := newRig(t, "internal/testwasm/flood/flood.c", Spec{MaxPendingRows: 1 << 30, MaxPendingBytes: maxBytes})
	r.start()
	r.store.set(true, false)
	eventually(t, 30*time.Second, "the writer refused 4 times", func() error {
		if n := r.store.refused.Load(); n < 4 {
			return fmt.Errorf("%d refusals", n)
		}
		return nil
	})
	r.stop(false)
	if n, most := r.w.pendingB, 2*maxBytes+perFlush; n > most {
		t.Fatalf("%d bytes of rows wait for ClickHouse, want at most %d", n, most)
	}
}

// A plugin may return a snapshot of up to 64 MiB at every checkpoint, and a
// deployment may checkpoint every 100 ms: unpaced, one partition would write
// 640 MiB a second into ClickHouse. A partition's checkpoints are spaced by
// their snapshots' size at the host's snapshot rate.
func TestWorker_CheckpointsArePacedBySnapshotSize(t *testing.T) {
	const rate = 16 << 20 // bigstate's snapshots are 4 MiB: a checkpoint every 250 ms at most
	r := newRig(t, "internal/testwasm/bigstate/bigstate.c", Spec{SnapshotRate: rate})
	r.start()
	ts := int64(1_700_000_000_000)
	eventually(t, 30*time.Second, "5 checkpoints", func() error {
		ts++
		r.feed([]*kgo.Record{r.vote(1, "a", ts)}) // every checkpoint has progress to save
		if n := len(r.store.saved()); n < 5 {
			return fmt.Errorf("%d checkpoints", n)
		}
		return nil
	})
	saves := r.store.saved()
	for i := 1; i < len(saves); i++ {
		gap, least := saves[i].at.Sub(saves[i-1].at), time.Duration(saves[i-1].bytes)*time.Second/rate
		if gap < least*9/10 {
			t.Fatalf("checkpoint %d came %v after one of %d bytes, want at least %v", i, gap, saves[i-1].bytes, least)
		}
	}
}

// Pacing delays the checkpoints of a running partition, never the last one
// of a partition that stops: its next owner starts from it.
func TestWorker_TheLastCheckpointIsNotPaced(t *testing.T) {
	r := newRig(t, "internal/testwasm/bigstate/bigstate.c", Spec{SnapshotRate: 1}) // 4 MiB: one checkpoint in 48 days
	r.start()
	ts := int64(1_700_000_000_000)
	var recs []*kgo.Record
	for i := range 20 {
		recs = append(recs, r.vote(1, "a", ts+int64(i)))
	}
	r.feed(recs[:10])
	eventually(t, 10*time.Second, "the first checkpoint", func() error {
		if n := len(r.store.saved()); n != 1 {
			return fmt.Errorf("%d checkpoints", n)
		}
		return nil
	})
	r.feed(recs[10:])
	r.stop(true)
	if n := len(r.store.saved()); n != 2 {
		t.Fatalf("%d checkpoints, want the first and the last", n)
	}
	if next := r.store.next(0); next != r.offset {
		t.Fatalf("the last checkpoint is at offset %d, want %d", next, r.offset)
	}
}
