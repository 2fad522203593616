package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
)

// Spec is a validated deployment, as the pipeline needs it.
type Spec struct {
	Name            string
	Topic           string
	DeadLetterTopic string
	Windows         []abi.Window
	Lateness        time.Duration
	IdleAfter       time.Duration // 0: never advance an idle partition
	MaxFuture       time.Duration // 0: no limit but the sink's range
	EmitEvery       time.Duration
	CheckpointEvery time.Duration
	MaxBatch        int
	// MaxPluginErrors is how many records in a row of one partition the
	// plugin may fail on (each dead-lettered) before the deployment is
	// stopped as failed; 0: no limit.
	MaxPluginErrors int
	// MaxGroupsPerPane is handed to the plugin (abi.Config.MaxGroups), which
	// should refuse records past it; Live enforces it whatever the plugin
	// does. 0: no limit.
	MaxGroupsPerPane int
	Params           json.RawMessage

	// Bounds of what a partition holds while it or ClickHouse is behind;
	// past them its fetching pauses. Defaults: 16 batches of records and
	// 100k pending rows.
	MaxQueued      int
	MaxPendingRows int
	// StopTimeout bounds how long stopping waits for ClickHouse to take the
	// final checkpoints (default 10s).
	StopTimeout time.Duration

	// UnsafeReplayOverlap breaks exactness on purpose, for the negative
	// control of the crash tests: a restored partition resumes this many
	// offsets before its checkpoint, so those records are counted twice.
	UnsafeReplayOverlap int64
}

func (s *Spec) applyDefaults() {
	if s.MaxBatch <= 0 {
		s.MaxBatch = 4096
	}
	if s.MaxQueued <= 0 {
		s.MaxQueued = 16 * s.MaxBatch
	}
	if s.MaxPendingRows <= 0 {
		s.MaxPendingRows = 100_000
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = 10 * time.Second
	}
}

// Deps are the shared components a Runner uses.
type Deps struct {
	Brokers     []string
	Admin       *kadm.Client // end offsets, and leaving the group for a static member
	Module      *sandbox.Module
	PluginSHA   string
	Rows        Rows
	Checkpoints Checkpoints
	Breaker     *sink.Breaker // shared by every deployment of the host
	Live        Live
	Metrics     *Metrics
	Log         *slog.Logger
	// InstanceID makes the host a static member of each deployment's
	// consumer group: restarted after a crash it gets its partitions back
	// at once instead of after the session timeout. Unique per host.
	InstanceID string
	// ClientOpts are extra franz-go options (tests shorten timeouts).
	ClientOpts []kgo.Opt
}

// FailedError is why a deployment stopped by itself.
type FailedError struct {
	Reason string // plugin_errors, groups (Live refused the rows) or plugin
	Count  int64  // records the plugin failed on, for plugin_errors
	Streak int    // of which in a row, in one partition
	Err    error  // the last plugin error
}

func (e *FailedError) Error() string {
	if e.Reason == "plugin_errors" {
		return fmt.Sprintf("stopped after the plugin failed on %d records in a row (%d in all); last: %v", e.Streak, e.Count, e.Err)
	}
	return fmt.Sprintf("stopped: %v", e.Err)
}

func (e *FailedError) Unwrap() error { return e.Err }

// Runner runs one deployment until its context ends or it fails.
type Runner struct {
	spec  Spec
	deps  Deps
	log   *slog.Logger
	cl    *kgo.Client
	env   *env
	group string

	mu      sync.Mutex
	workers map[int32]*worker
	commits map[int32]int64 // checkpointed next offsets not yet committed to Kafka
}

// sessionTimeout is how long the group waits for a member that stopped
// heartbeating (a host that died and does not come back).
const sessionTimeout = 10 * time.Second

// New prepares a runner; Run starts it.
func New(spec Spec, deps Deps) (*Runner, error) {
	spec.applyDefaults()
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	if deps.Breaker == nil {
		deps.Breaker = &sink.Breaker{}
	}
	r := &Runner{
		spec:    spec,
		deps:    deps,
		log:     log.With("deployment", spec.Name),
		group:   "wagg." + spec.Name,
		workers: map[int32]*worker{},
		commits: map[int32]int64{},
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(deps.Brokers...),
		kgo.ConsumerGroup(r.group),
		kgo.ConsumeTopics(spec.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // transaction markers move a partition's offset to the end
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.lost),
		kgo.AdjustFetchOffsetsFn(r.adjust),
		kgo.SessionTimeout(sessionTimeout),
		kgo.HeartbeatInterval(time.Second),
		kgo.ProducerLinger(5 * time.Millisecond),
	}
	if deps.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(deps.InstanceID))
	}
	cl, err := kgo.NewClient(append(opts, deps.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("pipeline: kafka client: %w", err)
	}
	r.cl = cl
	e := newEnv()
	e.spec, e.module, e.plugin = spec, deps.Module, deps.PluginSHA
	e.rows, e.cps, e.breaker, e.live = deps.Rows, deps.Checkpoints, deps.Breaker, deps.Live
	e.m, e.log = deps.Metrics, r.log
	e.kafka = clientKafka{cl: cl, adm: deps.Admin, topic: spec.Topic}
	e.checkpointed = r.checkpointed
	r.env = e
	return r, nil
}

// Run consumes until ctx ends or the deployment fails, then checkpoints
// every partition it owns (unless it failed) and leaves the group. It
// returns a *FailedError when the deployment failed.
func (r *Runner) Run(ctx context.Context) error {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.env.failed:
			cancel()
		case <-pctx.Done():
		}
	}()
	backoff := 50 * time.Millisecond
	for {
		fetches := r.cl.PollRecords(pctx, 8*r.spec.MaxBatch)
		if fetches.IsClientClosed() || pctx.Err() != nil {
			break
		}
		fetchFailed := false
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				fetchFailed = true
				r.log.Warn("fetch", "topic", t, "partition", p, "err", err)
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			r.mu.Lock()
			w := r.workers[p.Partition]
			r.mu.Unlock()
			if w != nil && len(p.Records) > 0 {
				w.queue.push(p.Records) // never waits: a full queue pauses the partition
			}
		})
		r.commit(ctx, false)
		r.cl.AllowRebalance()
		if fetchFailed && fetches.NumRecords() == 0 {
			// Nothing but errors (the broker away, the topic deleted): do
			// not spin on them.
			backoff = min(2*backoff, time.Second)
			sleep(pctx, backoff)
		} else {
			backoff = 50 * time.Millisecond
		}
	}
	// Stopping: checkpoint what we own, commit, then leave the group.
	failed := r.env.hasFailed()
	r.mu.Lock()
	ws := r.workers
	r.workers = map[int32]*worker{}
	r.mu.Unlock()
	r.stopAll(ws, !failed)
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	r.commit(cctx, true)
	r.cl.AllowRebalance() // leaving the group revokes: let it
	r.cl.Close()
	r.leave(cctx)
	if failed {
		return r.env.failure
	}
	return nil
}

// leave hands the partitions over at once: a static member's Close does not
// leave the group (so that a restart keeps its partitions), a stop must.
func (r *Runner) leave(ctx context.Context) {
	if r.deps.InstanceID == "" || r.deps.Admin == nil {
		return
	}
	_, err := r.deps.Admin.LeaveGroup(ctx, kadm.LeaveGroup(r.group).InstanceIDs(r.deps.InstanceID).Reason("wagg: deployment stopped"))
	if err != nil {
		r.log.Warn("leaving the consumer group; its partitions move after the session timeout", "err", err)
	}
}

// commit hands Kafka the offsets that checkpoints already cover. Kafka's
// commit is not what makes results exact (the checkpoint is), but it keeps
// consumer-lag tooling truthful.
func (r *Runner) commit(ctx context.Context, sync bool) {
	r.mu.Lock()
	if len(r.commits) == 0 {
		r.mu.Unlock()
		return
	}
	offs := map[string]map[int32]kgo.EpochOffset{r.spec.Topic: {}}
	for p, o := range r.commits {
		offs[r.spec.Topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	clear(r.commits)
	r.mu.Unlock()
	if sync {
		r.cl.CommitOffsetsSync(ctx, offs, nil)
		return
	}
	r.cl.CommitOffsets(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn("offset commit", "err", err)
		}
	})
}

// adjust starts each assigned partition at its checkpoint's offset (or the
// start of the log when it has none), not at Kafka's committed offset: the
// checkpoint is what the restored plugin state corresponds to. Loading
// waits for ClickHouse (the group keeps heartbeating meanwhile).
func (r *Runner) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for p := range offsets[r.spec.Topic] {
		w, err := r.ensure(ctx, p)
		if err != nil {
			return nil, err
		}
		offsets[r.spec.Topic][p] = kgo.NewOffset().At(w.next).WithEpoch(-1)
	}
	return offsets, nil
}

// ensure returns the worker of partition p, restoring it from its
// checkpoint and starting it when it does not run yet.
func (r *Runner) ensure(ctx context.Context, p int32) (*worker, error) {
	r.mu.Lock()
	w := r.workers[p]
	r.mu.Unlock()
	if w != nil {
		return w, nil
	}
	w = newWorker(r.env, p)
	if err := w.restore(ctx); err != nil {
		if !errors.Is(err, context.Canceled) {
			r.log.Error("partition not started", "partition", p, "err", err)
			var ge *sandbox.GuestError
			if errors.As(err, &ge) {
				r.env.fail(&FailedError{Reason: "plugin", Err: err})
			}
		}
		if w.inst != nil {
			w.inst.Close(context.Background())
		}
		return nil, err
	}
	r.mu.Lock()
	if old := r.workers[p]; old != nil {
		r.mu.Unlock()
		w.inst.Close(context.Background())
		return old, nil
	}
	r.workers[p] = w
	r.mu.Unlock()
	r.deps.Metrics.Partitions.WithLabelValues(r.spec.Name).Inc()
	go w.run()
	return w, nil
}

func (r *Runner) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	r.stopPartitions(revoked[r.spec.Topic], !r.env.hasFailed())
	r.commit(ctx, true)
}

func (r *Runner) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.stopPartitions(lost[r.spec.Topic], false)
}

func (r *Runner) stopPartitions(ps []int32, checkpoint bool) {
	r.mu.Lock()
	ws := map[int32]*worker{}
	for _, p := range ps {
		if w := r.workers[p]; w != nil {
			ws[p] = w
			delete(r.workers, p)
		}
	}
	r.mu.Unlock()
	r.stopAll(ws, checkpoint)
}

// stopAll stops workers together, so the time to stop is one StopTimeout at
// most, not one per partition.
func (r *Runner) stopAll(ws map[int32]*worker, checkpoint bool) {
	for _, w := range ws {
		w.stop(checkpoint)
	}
	for _, w := range ws {
		<-w.done
		r.deps.Metrics.Partitions.WithLabelValues(r.spec.Name).Dec()
	}
}

// checkpointed records that a partition's checkpoint covers offsets up to next.
func (r *Runner) checkpointed(p int32, next int64) {
	r.mu.Lock()
	r.commits[p] = next
	r.mu.Unlock()
}

// clientKafka is the worker's view of the deployment's Kafka client.
type clientKafka struct {
	cl    *kgo.Client
	adm   *kadm.Client
	topic string
}

func (k clientKafka) pause(p int32) {
	k.cl.PauseFetchPartitions(map[string][]int32{k.topic: {p}})
}

func (k clientKafka) resume(p int32) {
	k.cl.ResumeFetchPartitions(map[string][]int32{k.topic: {p}})
}

func (k clientKafka) produce(ctx context.Context, r *kgo.Record, done func(*kgo.Record, error)) {
	k.cl.Produce(ctx, r, done)
}

func (k clientKafka) flush(ctx context.Context) error { return k.cl.Flush(ctx) }

// endOffset is the partition's last stable offset: where a read-committed
// consumer that has read everything stands.
func (k clientKafka) endOffset(ctx context.Context, p int32) (int64, error) {
	if k.adm == nil {
		return 0, errors.New("no admin client")
	}
	offs, err := k.adm.ListCommittedOffsets(ctx, k.topic)
	if err != nil {
		return 0, err
	}
	o, ok := offs.Lookup(k.topic, p)
	if !ok {
		return 0, fmt.Errorf("no end offset for partition %d", p)
	}
	if o.Err != nil {
		return 0, o.Err
	}
	return o.Offset, nil
}
