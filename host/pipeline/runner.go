package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/hub"
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
	EmitEvery       time.Duration
	CheckpointEvery time.Duration
	MaxBatch        int
	Params          json.RawMessage
}

// Deps are the shared components a Runner uses.
type Deps struct {
	Brokers     []string
	Module      *sandbox.Module
	PluginSHA   string
	Table       *sink.Table
	Checkpoints *checkpoint.Store
	Hub         *hub.Hub
	Metrics     *Metrics
	Log         *slog.Logger
	// ClientOpts are extra franz-go options (tests shorten timeouts).
	ClientOpts []kgo.Opt
}

// Runner runs one deployment until its context ends.
type Runner struct {
	spec Spec
	deps Deps
	log  *slog.Logger
	cl   *kgo.Client

	mu      sync.Mutex
	workers map[int32]*worker
	commits map[int32]int64 // checkpointed next offsets not yet committed to Kafka
}

// New prepares a runner; Run starts it.
func New(spec Spec, deps Deps) (*Runner, error) {
	if spec.MaxBatch <= 0 {
		spec.MaxBatch = 4096
	}
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{
		spec:    spec,
		deps:    deps,
		log:     log.With("deployment", spec.Name),
		workers: map[int32]*worker{},
		commits: map[int32]int64{},
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(deps.Brokers...),
		kgo.ConsumerGroup("wagg." + spec.Name),
		kgo.ConsumeTopics(spec.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.lost),
		kgo.AdjustFetchOffsetsFn(r.adjust),
		kgo.ProducerLinger(5 * time.Millisecond),
	}
	cl, err := kgo.NewClient(append(opts, deps.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("pipeline: kafka client: %w", err)
	}
	r.cl = cl
	deps.Hub.Register(spec.Name, &deps.Module.Schema, spec.Windows)
	return r, nil
}

// Run consumes until ctx ends, then checkpoints every partition it owns and
// leaves the group.
func (r *Runner) Run(ctx context.Context) error {
	defer r.cl.Close()
	for {
		fetches := r.cl.PollRecords(ctx, 8*r.spec.MaxBatch)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				r.log.Warn("fetch", "topic", t, "partition", p, "err", err)
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			r.mu.Lock()
			w := r.workers[p.Partition]
			r.mu.Unlock()
			if w != nil && len(p.Records) > 0 {
				w.in <- p.Records // blocks when the worker is behind: backpressure
			}
		})
		r.commit(ctx, false)
		r.cl.AllowRebalance()
	}
	// Shutting down: checkpoint what we own, commit, then leave the group.
	r.mu.Lock()
	ws := r.workers
	r.workers = map[int32]*worker{}
	r.mu.Unlock()
	r.stopAll(ws, true)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.commit(cctx, true)
	r.cl.AllowRebalance() // leaving the group revokes: let it
	return nil
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

func (r *Runner) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	for _, p := range assigned[r.spec.Topic] {
		if _, err := r.ensure(ctx, p); err != nil {
			r.log.Error("partition not started", "partition", p, "err", err)
		}
	}
}

// adjust starts each assigned partition at its checkpoint's offset (or the
// start of the log when it has none), not at Kafka's committed offset: the
// checkpoint is what the restored plugin state corresponds to.
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
	defer r.mu.Unlock()
	if w := r.workers[p]; w != nil {
		return w, nil
	}
	w, err := newWorker(ctx, r, p)
	if err != nil {
		return nil, err
	}
	r.workers[p] = w
	r.deps.Metrics.Partitions.WithLabelValues(r.spec.Name).Inc()
	go w.run()
	return w, nil
}

func (r *Runner) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	r.stopPartitions(revoked[r.spec.Topic], true)
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
