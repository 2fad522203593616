package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
)

// Rows is where a partition's result rows go (sink.Table).
type Rows interface {
	Write(ctx context.Context, partition int32, version int64, rows []abi.Row) error
}

// Checkpoints is where partitions keep their progress (checkpoint.Store).
type Checkpoints interface {
	Load(ctx context.Context, deployment, topic string, partition int32) (checkpoint.Checkpoint, error)
	Save(ctx context.Context, c checkpoint.Checkpoint) error
}

// Live receives the rows a partition emits (hub.Hub). An error means the
// rows would grow it past its bounds (too many groups in a pane): the
// deployment stops. version is the partition's next source offset: the
// rows are its values as of there.
type Live interface {
	PublishAt(aggregator string, partition int32, version int64, rows []abi.Row) error
}

// kafka is what a partition worker does with Kafka besides receiving
// records: pause and resume its partition, write dead letters and wait for
// them, and ask whether anything is left to fetch.
// source.Group is the one in production.
type kafka interface {
	Pause(p int32)
	Resume(p int32)
	Produce(ctx context.Context, r *kgo.Record, done func(*kgo.Record, error))
	Flush(ctx context.Context) error
	EndOffset(ctx context.Context, p int32) (int64, error)
}

// env is what the workers of one deployment share: the spec, the plugin,
// the sinks and the deployment-wide counters. Workers reach the runner only
// through it.
type env struct {
	spec   Spec
	module *sandbox.Module
	plugin string
	// stateSchema finds the schema of the plugin that wrote a checkpoint
	// module migrates (Deps.StateSchema).
	stateSchema func(pluginSHA string) (*abi.Schema, error)
	rows        Rows
	cps         Checkpoints
	breaker     *sink.Breaker
	live        Live
	m           *Metrics
	log         *slog.Logger
	kafka       kafka

	// checkpointed is told the offset each durable checkpoint covers.
	checkpointed func(p int32, next int64)

	pluginErrors atomic.Int64
	failOnce     sync.Once
	failed       chan struct{} // closed when the deployment has failed
	failure      error
}

func newEnv() *env { return &env{failed: make(chan struct{})} }

// fail stops the deployment: a plugin that cannot go on, or too many poison
// records. The first reason wins.
func (e *env) fail(err error) {
	e.failOnce.Do(func() {
		e.failure = err
		e.m.Failures.WithLabelValues(e.spec.Name).Inc()
		e.log.Error("deployment failed: stopping every partition", "err", err)
		close(e.failed)
	})
}

// hasFailed reports whether fail was called.
func (e *env) hasFailed() bool {
	select {
	case <-e.failed:
		return true
	default:
		return false
	}
}

// pluginError counts one record the plugin failed on; streak is how many
// records in a row of the partition it failed on. Past the spec's
// MaxPluginErrors in a row the deployment fails: the plugin cannot handle
// the stream, and dead-lettering all of it would help no one.
func (e *env) pluginError(err error, streak int) {
	n := e.pluginErrors.Add(1)
	if e.spec.MaxPluginErrors > 0 && streak >= e.spec.MaxPluginErrors {
		e.fail(&FailedError{Reason: "plugin_errors", Err: err, Count: n, Streak: streak})
	}
}
