package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/source"
)

// Topic is the relay topic of a deployment in a database's cluster.
func Topic(database, deployment string) string { return "_wagg_live_" + database + "_" + deployment }

// Hub is where rows go on this host (hub.Hub).
type Hub interface {
	PublishAt(aggregator string, partition int32, version int64, rows []abi.Row) error
}

// Table is where the bootstrap state comes from (sink.Table).
type Table interface {
	Latest(ctx context.Context, since time.Time) ([]sink.Stored, error)
}

// Options configure a Relay.
type Options struct {
	Brokers    []string
	Admin      *kadm.Client
	Topic      string
	Partitions int32 // of the source topic
	Deployment string
	// Generation names what the rows belong to (the deployment's storage
	// generation): rows of another one are not this deployment's any more.
	Generation string
	Schema     *abi.Schema
	Windows    []abi.Window
	Hub        Hub
	Table      Table
	// CheckpointEvery is the deployment's checkpoint cadence: the relay
	// topic is read from this long (twice, plus a margin) before the
	// checkpoints the state was loaded from.
	CheckpointEvery time.Duration
	Log             *slog.Logger
}

// Retention is how long a relay topic keeps rows: far longer than a
// bootstrap reads back, short enough to stay small.
const Retention = time.Hour

// Relay publishes a deployment's rows of this host and feeds the hub the
// rows of the others.
type Relay struct {
	o     Options
	cl    *kgo.Client
	self  string // this process: its own records are in its hub already
	gen   string
	lost  atomic.Int64
	lastW atomic.Int64 // unix seconds of the last warning about lost rows
}

// New creates the relay topic when missing and a producer for it.
func New(ctx context.Context, o Options) (*Relay, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ret := strconv.FormatInt(Retention.Milliseconds(), 10)
	if err := source.EnsureTopic(ctx, o.Admin, o.Topic, o.Partitions, map[string]*string{"retention.ms": &ret}); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.Brokers...),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerBatchMaxBytes(16<<20),
		kgo.RecordRetries(3),
	)
	if err != nil {
		return nil, fmt.Errorf("relay: kafka client: %w", err)
	}
	var b [8]byte
	rand.Read(b[:])
	return &Relay{o: o, cl: cl, self: hex.EncodeToString(b[:]), gen: o.Generation}, nil
}

// Close flushes (briefly) and closes the producer.
func (r *Relay) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.cl.Flush(ctx)
	r.cl.Close()
}

// PublishAt hands rows to this host's hub and, when it took them, to the
// relay topic for the others. It is the pipeline's Live.
func (r *Relay) PublishAt(aggregator string, partition int32, version int64, rows []abi.Row) error {
	if err := r.o.Hub.PublishAt(aggregator, partition, version, rows); err != nil {
		return err
	}
	w := abi.RowsWriter{}
	for i := range rows {
		w.AppendSketches(rows[i].Window, rows[i].Final, rows[i].Start, []byte(rows[i].Key), rows[i].Metrics, rows[i].Sketches)
	}
	rec := &kgo.Record{
		Partition: partition,
		Value:     w.Bytes(),
		Headers: []kgo.RecordHeader{
			{Key: "v", Value: strconv.AppendInt(nil, version, 10)},
			{Key: "g", Value: []byte(r.gen)},
			{Key: "h", Value: []byte(r.self)},
		},
	}
	r.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
		if err == nil {
			return
		}
		n := r.lost.Add(1)
		if now := time.Now().Unix(); r.lastW.Swap(now) < now-10 {
			r.o.Log.Warn("relay: rows not published to the other hosts (their next emit makes it good)", "deployment", r.o.Deployment, "lost_batches", n, "err", err)
		}
	})
	return nil
}

// bootstrapPanes is how far back, in slides of each window, the state is
// loaded: a little more than the closed panes a hub keeps by default.
const bootstrapPanes = 64

// Run loads the state the checkpoints left into the hub, then feeds it the
// other hosts' rows until ctx ends.
func (r *Relay) Run(ctx context.Context) {
	from, err := r.bootstrap(ctx)
	for err != nil {
		if ctx.Err() != nil {
			return
		}
		r.o.Log.Warn("relay: loading the live state from ClickHouse; retrying", "deployment", r.o.Deployment, "err", err)
		sleep(ctx, 2*time.Second)
		from, err = r.bootstrap(ctx)
	}
	offsets, err := r.startOffsets(ctx, from)
	for err != nil {
		if ctx.Err() != nil {
			return
		}
		r.o.Log.Warn("relay: reading offsets; retrying", "deployment", r.o.Deployment, "err", err)
		sleep(ctx, time.Second)
		offsets, err = r.startOffsets(ctx, from)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(r.o.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.o.Topic: offsets}),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		r.o.Log.Error("relay: kafka client", "err", err)
		return
	}
	defer cl.Close()
	var dst []abi.Row
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				r.o.Log.Warn("relay: fetch", "deployment", r.o.Deployment, "partition", p, "err", err)
			}
		})
		fs.EachRecord(func(rec *kgo.Record) {
			var version int64 = -2
			var gen, host string
			for _, h := range rec.Headers {
				switch h.Key {
				case "v":
					if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
						version = v
					}
				case "g":
					gen = string(h.Value)
				case "h":
					host = string(h.Value)
				}
			}
			if host == r.self || gen != r.gen || version < 0 {
				return // ours (in the hub already), another generation's, or not a relay record
			}
			rows, err := abi.DecodeRows(rec.Value, r.o.Schema, len(r.o.Windows), dst[:0])
			if err != nil {
				r.o.Log.Warn("relay: record skipped", "deployment", r.o.Deployment, "partition", rec.Partition, "offset", rec.Offset, "err", err)
				return
			}
			dst = rows
			if err := r.o.Hub.PublishAt(r.o.Deployment, rec.Partition, version, rows); err != nil {
				r.o.Log.Warn("relay: rows refused by the hub", "deployment", r.o.Deployment, "partition", rec.Partition, "err", err)
			}
		})
	}
}

// bootstrap publishes the checkpointed state of every partition, oldest
// version first, and returns per partition when its last save reached
// ClickHouse (none: no rows yet).
func (r *Relay) bootstrap(ctx context.Context) (map[int32]time.Time, error) {
	var span int64 // ms: how far back the panes a hub keeps reach
	for _, w := range r.o.Windows {
		if w.Kind == abi.Global {
			continue
		}
		slide := w.SlideMs
		if slide == 0 {
			slide = w.SizeMs
		}
		span = max(span, bootstrapPanes*slide+w.SizeMs)
	}
	since := time.Now().Add(-time.Duration(span) * time.Millisecond)
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	stored, err := r.o.Table.Latest(lctx, since)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(stored, func(i, j int) bool {
		if stored[i].Partition != stored[j].Partition {
			return stored[i].Partition < stored[j].Partition
		}
		return stored[i].Version < stored[j].Version
	})
	from := map[int32]time.Time{}
	var batch []abi.Row
	for i, s := range stored {
		batch = append(batch, s.Row)
		if s.InsertedAt.After(from[s.Partition]) {
			from[s.Partition] = s.InsertedAt
		}
		if i+1 == len(stored) || stored[i+1].Partition != s.Partition || stored[i+1].Version != s.Version {
			if err := r.o.Hub.PublishAt(r.o.Deployment, s.Partition, s.Version, batch); err != nil {
				r.o.Log.Warn("relay: stored rows refused by the hub", "deployment", r.o.Deployment, "partition", s.Partition, "err", err)
			}
			batch = batch[:0]
		}
	}
	r.o.Log.Info("relay: live state loaded from ClickHouse", "deployment", r.o.Deployment, "rows", len(stored), "partitions", len(from))
	return from, nil
}

// startOffsets is where each relay partition is read from: shortly before
// the save its state came from, or the start when it had none.
func (r *Relay) startOffsets(ctx context.Context, from map[int32]time.Time) (map[int32]kgo.Offset, error) {
	margin := 2*r.o.CheckpointEvery + 30*time.Second
	out := map[int32]kgo.Offset{}
	for p := range r.o.Partitions {
		out[p] = kgo.NewOffset().AtStart()
	}
	byTime := map[int64][]int32{}
	for p, t := range from {
		ms := t.Add(-margin).UnixMilli()
		byTime[ms] = append(byTime[ms], p)
	}
	for ms, ps := range byTime {
		offs, err := r.o.Admin.ListOffsetsAfterMilli(ctx, ms, r.o.Topic)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			o, ok := offs.Lookup(r.o.Topic, p)
			if !ok || o.Err != nil {
				return nil, fmt.Errorf("offset of partition %d at %d: %v", p, ms, o.Err)
			}
			out[p] = kgo.NewOffset().At(o.Offset)
		}
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
