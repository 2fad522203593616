package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/source"
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
	// SnapshotRate paces a partition's checkpoints by their snapshots'
	// size: after a snapshot of n bytes the next checkpoint waits n/rate
	// seconds (rows still go at CheckpointEvery). 0: unpaced.
	SnapshotRate int64
	MaxBatch     int
	// MaxPluginErrors is how many records in a row of one partition the
	// plugin may fail on (each dead-lettered) before the deployment is
	// stopped as failed; 0: no limit.
	MaxPluginErrors int
	// MaxGroupsPerPane is handed to the plugin (abi.Config.MaxGroups), which
	// should refuse records past it; Live enforces it whatever the plugin
	// does. 0: no limit.
	MaxGroupsPerPane int
	Params           json.RawMessage
	// Aggregator is the name live rows are published under (default Name,
	// which also names the checkpoints). A generation that backfills runs
	// under a name of its own and publishes under its deployment's only
	// once it takes over.
	Aggregator string
	// Group is the Kafka consumer group that spreads the partitions over
	// the hosts (default "wagg." + Name). Hosts of one cluster share it;
	// another cluster on the same Kafka must not (deploy.ConsumerGroup).
	Group string
	// StartOffsets are where partitions without a checkpoint begin
	// (missing: 0, the earliest).
	StartOffsets map[int32]int64

	// Bounds of what a partition holds while it or ClickHouse is behind;
	// past them its fetching pauses. Defaults: 16 batches of records and
	// 100k pending rows (MaxPendingBytes below).
	MaxQueued      int
	MaxPendingRows int
	// MaxPendingBytes bounds the same by the bytes of the flushes the
	// pending rows came from (default 32 MiB): a row keeps its flush's
	// keys and values alive, and a plugin may return 64 MiB a flush.
	MaxPendingBytes int
	// StopTimeout bounds how long stopping waits for ClickHouse to take the
	// final checkpoints (default 10s).
	StopTimeout time.Duration
	// StalledAfter is how long a partition's saves may fail before
	// Stalled reports it (default 30s).
	StalledAfter time.Duration

	// UnsafeReplayOverlap breaks exactness on purpose, for the negative
	// control of the crash tests: a restored partition resumes this many
	// offsets before its checkpoint, so those records are counted twice.
	UnsafeReplayOverlap int64
}

func (s *Spec) applyDefaults() {
	if s.Aggregator == "" {
		s.Aggregator = s.Name
	}
	if s.Group == "" {
		s.Group = "wagg." + s.Name
	}
	if s.MaxBatch <= 0 {
		s.MaxBatch = 4096
	}
	if s.MaxQueued <= 0 {
		s.MaxQueued = 16 * s.MaxBatch
	}
	if s.MaxPendingRows <= 0 {
		s.MaxPendingRows = 100_000
	}
	if s.MaxPendingBytes <= 0 {
		s.MaxPendingBytes = 32 << 20
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = 10 * time.Second
	}
	if s.StalledAfter <= 0 {
		s.StalledAfter = 30 * time.Second
	}
}

// Deps are the shared components a Runner uses.
type Deps struct {
	Brokers   []string
	Admin     *kadm.Client // end offsets, and leaving the group for a static member
	Module    *sandbox.Module
	PluginSHA string
	// StateSchema is the schema of the plugin with a sha256, through which
	// Module reads a checkpoint that plugin wrote with a state version
	// Module migrates (abi.Config.MigrateFrom). Nil: no checkpoint of
	// another plugin is migrated (the deployment fails on one).
	StateSchema func(pluginSHA string) (*abi.Schema, error)
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
	Reason string // plugin_errors, groups (Live refused the rows), state (a checkpoint it does not accept), plugin, or source (the topic's offsets went back)
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

// Runner runs one deployment until its context ends or it fails: a member
// of the deployment's consumer group with one worker per partition it owns.
type Runner struct {
	spec  Spec
	deps  Deps
	log   *slog.Logger
	group *source.Group
	env   *env

	mu      sync.Mutex
	workers map[int32]*worker
	// failedStarts are the partitions given to this host whose worker
	// did not start, with why and when, until it starts (NotStarted)
	failedStarts map[int32]failedStart
}

// failedStart is why a partition's worker did not start, and when.
type failedStart struct {
	err error
	at  time.Time
}

// failedStartsShown is how long NotStarted reports a partition that did not
// start: a failed start fails the group session, which gives the partition
// again (and the host retries) within seconds while the cause lasts; a
// partition another host took since is not this host's concern.
const failedStartsShown = 30 * time.Second

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
		workers: map[int32]*worker{},

		failedStarts: map[int32]failedStart{},
	}
	g, err := source.New(source.Options{
		Brokers: deps.Brokers, Group: spec.Group, Topic: spec.Topic,
		InstanceID: deps.InstanceID, Admin: deps.Admin, MaxPoll: 8 * spec.MaxBatch,
		Log: r.log, ClientOpts: deps.ClientOpts,
	}, r)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	r.group = g
	e := newEnv()
	e.spec, e.module, e.plugin, e.stateSchema = spec, deps.Module, deps.PluginSHA, deps.StateSchema
	e.rows, e.cps, e.breaker, e.live = deps.Rows, deps.Checkpoints, deps.Breaker, deps.Live
	e.m, e.log = deps.Metrics, r.log
	e.kafka = g
	e.checkpointed = g.Checkpointed
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
	if err := r.group.Poll(pctx); err != nil {
		r.env.fail(&FailedError{Reason: "source", Err: err})
	}
	// Stopping: checkpoint what we own, commit, then leave the group.
	failed := r.env.hasFailed()
	r.mu.Lock()
	ws := r.workers
	r.workers = map[int32]*worker{}
	r.mu.Unlock()
	r.stopAll(ws, !failed)
	r.group.Close()
	if failed {
		return r.env.failure
	}
	return nil
}

// Records queues fetched records with their partition's worker; it never
// waits: a full queue pauses the partition.
func (r *Runner) Records(p int32, recs []*kgo.Record) {
	r.mu.Lock()
	w := r.workers[p]
	r.mu.Unlock()
	if w != nil {
		w.queue.push(recs)
	}
}

// NotStarted says which partitions given to this host lately did not
// start, and why the first of them did not; "" when none.
func (r *Runner) NotStarted() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []int32
	for _, p := range slices.Sorted(maps.Keys(r.failedStarts)) {
		if time.Since(r.failedStarts[p].at) < failedStartsShown {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	return fmt.Sprintf("partitions %v not started on this host: %v", ps, r.failedStarts[ps[0]].err)
}

// Stalled says which partitions of this host have failed to store their
// rows and checkpoint for Spec.StalledAfter or longer, and why the first
// of them failed last (ClickHouse refusing writes, dead letters Kafka does
// not take); "" when none. Their records wait in Kafka meanwhile.
func (r *Runner) Stalled() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []int32
	var first error
	var longest time.Duration
	for _, p := range slices.Sorted(maps.Keys(r.workers)) {
		since, err := r.workers[p].failing()
		if d := time.Since(since); !since.IsZero() && d >= r.spec.StalledAfter {
			if first == nil {
				first = err
			}
			ps, longest = append(ps, p), max(longest, d)
		}
	}
	if len(ps) == 0 {
		return ""
	}
	return fmt.Sprintf("partitions %v have stored nothing for %v: %v", ps, longest.Round(time.Second), first)
}

// Assigned starts partition p's worker from its checkpoint (or the start of
// the log when it has none) and returns where to fetch from: the offset the
// restored plugin state corresponds to, not Kafka's committed offset.
func (r *Runner) Assigned(ctx context.Context, p int32) (int64, error) {
	w, err := r.ensure(ctx, p)
	if err != nil {
		return 0, err
	}
	return w.next, nil
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
			r.mu.Lock()
			r.failedStarts[p] = failedStart{err, time.Now()}
			r.mu.Unlock()
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
	delete(r.failedStarts, p)
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

// Revoked stops the workers of partitions that leave this member, with a
// checkpoint unless they were lost or the deployment failed.
func (r *Runner) Revoked(ps []int32, checkpoint bool) {
	r.mu.Lock()
	ws := map[int32]*worker{}
	for _, p := range ps {
		if w := r.workers[p]; w != nil {
			ws[p] = w
			delete(r.workers, p)
		}
	}
	r.mu.Unlock()
	r.stopAll(ws, checkpoint && !r.env.hasFailed())
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
