package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/source"
)

// Topic is the relay topic of a deployment in a database's cluster.
func Topic(database, deployment string) string { return "_wagg_live_" + database + "_" + deployment }

// Hub is where rows go on this host (hub.Hub).
type Hub interface {
	PublishAt(aggregator string, partition int32, version int64, rows []abi.Row) error
}

// Table is where the checkpointed rows come from (sink.Table).
type Table interface {
	Latest(ctx context.Context, since time.Time) ([]sink.Stored, error)
}

// Store is where the deployment's checkpoints are (checkpoint.Store).
type Store interface {
	Load(ctx context.Context, deployment, topic string, partition int32) (checkpoint.Checkpoint, error)
	Save(ctx context.Context, c checkpoint.Checkpoint) error
	Progress(ctx context.Context, deployment, topic string) ([]checkpoint.Checkpoint, error)
}

// Options configure a Relay.
type Options struct {
	Brokers []string
	Admin   *kadm.Client
	Topic   string
	// Partitions is how many partitions the relay topic gets when this
	// host creates it (the source topic's count then, at least 1). An
	// existing topic keeps its own: source partition p goes to relay
	// partition p modulo the topic's count, so the source may gain
	// partitions without the relay following.
	Partitions int32
	Deployment string // the aggregator's name in the hub
	// Generation names what the rows belong to (the deployment's storage
	// generation, the name its checkpoints are kept under): rows of
	// another one are not this deployment's any more.
	Generation  string
	SourceTopic string // the topic the checkpoints are of
	Schema      *abi.Schema
	Windows     []abi.Window
	Hub         Hub
	Table       Table
	Checkpoints Store
	// CheckpointEvery is the deployment's checkpoint cadence: how often a
	// partition this host cannot follow exactly looks for a checkpoint it
	// can follow from (at least every second).
	CheckpointEvery time.Duration
	Log             *slog.Logger
}

// Retention is how long a relay topic keeps rows: far longer than a
// checkpoint interval, short enough to stay small.
const Retention = time.Hour

// Relay publishes a deployment's rows of this host and feeds the hub the
// rows of the others.
type Relay struct {
	o     Options
	self  string // this process: its own records are in its hub already
	ready chan struct{}
	once  sync.Once
	lost  atomic.Int64
	lastW atomic.Int64 // unix seconds of the last warning about lost rows

	mu     sync.Mutex
	cl     *kgo.Client      // the producer, made again for a new incarnation of the topic
	layout layout           // the relay topic as last described
	marks  map[int32][]mark // per source partition, for position
	chain  map[int32]link   // per source partition, what this process published last
	unsent map[int32]bool   // source partitions a record of which failed
}

// link numbers a process's records of one source partition, so that a
// reader sees a record that never reached the topic (a produce that
// failed) as a gap: seq counts them, and each carries the version of the
// one before.
type link struct{ seq, version int64 }

// layout is the relay topic as Kafka describes it: its incarnation (ID and
// partition count, which together give a relay offset its meaning) and the
// offsets of its partitions.
type layout struct {
	key          string // topic ID/partition count
	parts        int32
	starts, ends []int64
}

// mark is the relay end offset listed before the first publish of a
// source partition at a version: every record produced from then on
// lands at or after floor.
type mark struct{ version, floor int64 }

// maxMarks bounds the marks kept per partition between two checkpoints
// (an emit a tenth of a second apart over minutes of a slow ClickHouse);
// past it neighbours merge toward the lower floor, which reads more but
// never misses a row.
const maxMarks = 1024

var errMissing = errors.New("relay topic missing")

// New creates the relay topic when missing and a producer for it.
func New(ctx context.Context, o Options) (*Relay, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Partitions = max(o.Partitions, 1)
	cl, err := producer(o)
	if err != nil {
		return nil, err
	}
	var b [8]byte
	rand.Read(b[:])
	r := &Relay{o: o, cl: cl, self: hex.EncodeToString(b[:]), ready: make(chan struct{}), marks: map[int32][]mark{}, chain: map[int32]link{}, unsent: map[int32]bool{}}
	if _, err := r.describe(ctx, true); err != nil {
		cl.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	return r, nil
}

// producer makes the client that writes the relay topic and reads its
// metadata.
func producer(o Options) (*kgo.Client, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(o.Brokers...),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond),
		// Every replica: a record acknowledged and then lost in a leader
		// change would leave a gap no reader could see.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DisableIdempotentWrite(),
		kgo.ProducerBatchMaxBytes(16<<20),
		// What waits to be sent is bounded: past it a publish waits, and
		// so does the partition emitting, instead of the host growing
		// with a plugin that returns tens of MB a flush.
		kgo.MaxBufferedBytes(64<<20),
		kgo.RecordRetries(3),
	)
	if err != nil {
		return nil, fmt.Errorf("relay: kafka client: %w", err)
	}
	return cl, nil
}

// Close flushes (briefly) and closes the producer.
func (r *Relay) Close() {
	r.setReady()
	r.mu.Lock()
	cl := r.cl
	r.mu.Unlock()
	closeProducer(cl)
}

func closeProducer(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cl.Flush(ctx)
	cl.Close()
}

func (r *Relay) setReady() { r.once.Do(func() { close(r.ready) }) }

// Loaded is closed once Run has loaded the state the checkpoints left into
// the hub (or the relay closed first).
func (r *Relay) Loaded() <-chan struct{} { return r.ready }

// describe reads the relay topic's incarnation and offsets, creating the
// topic when it is missing and create is set, and adopts them for the
// positions it hands out. A new incarnation voids the floors listed in
// the old one.
func (r *Relay) describe(ctx context.Context, create bool) (layout, error) {
	l, err := r.list(ctx)
	if errors.Is(err, errMissing) && create {
		ret := strconv.FormatInt(Retention.Milliseconds(), 10)
		if err := source.EnsureTopic(ctx, r.o.Admin, r.o.Topic, r.o.Partitions, map[string]*string{"retention.ms": &ret}); err != nil {
			return layout{}, err
		}
		// A topic just made takes a moment to show in the metadata.
		for range 100 {
			if l, err = r.list(ctx); !errors.Is(err, errMissing) {
				break
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
	if err != nil {
		return layout{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.key != r.layout.key && r.layout.key != "" {
		// A client that wrote the old incarnation goes on naming it (by
		// its ID) and fails every record: a new one.
		cl, err := producer(r.o)
		if err != nil {
			return layout{}, err
		}
		go closeProducer(r.cl)
		r.cl = cl
	}
	r.adopt(l)
	return l, nil
}

// adopt makes l the layout positions are given in; r.mu held. Floors
// listed in another incarnation mean nothing in l: 0 is below every
// record of it.
func (r *Relay) adopt(l layout) {
	if l.key != r.layout.key {
		for _, ms := range r.marks {
			for i := range ms {
				ms[i].floor = 0
			}
		}
	}
	r.layout = l
}

func (r *Relay) list(ctx context.Context) (layout, error) {
	// A metadata request of its own: kadm's answers come from a cache that
	// may still hold the topic as missing, or as it was before a deletion.
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(r.o.Topic)
	req.Topics = append(req.Topics, rt)
	r.mu.Lock()
	cl := r.cl
	r.mu.Unlock()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return layout{}, err
	}
	if len(resp.Topics) != 1 {
		return layout{}, fmt.Errorf("metadata of %d topics", len(resp.Topics))
	}
	td := resp.Topics[0]
	if err := kerr.ErrorForCode(td.ErrorCode); errors.Is(err, kerr.UnknownTopicOrPartition) || err == nil && len(td.Partitions) == 0 {
		return layout{}, errMissing
	} else if err != nil {
		return layout{}, err
	}
	adm := kadm.NewClient(cl)
	n := int32(len(td.Partitions))
	l := layout{key: fmt.Sprintf("%s/%d", kadm.TopicID(td.TopicID), n), parts: n, starts: make([]int64, n), ends: make([]int64, n)}
	for _, get := range []struct {
		list func(context.Context, ...string) (kadm.ListedOffsets, error)
		into []int64
	}{{adm.ListStartOffsets, l.starts}, {adm.ListEndOffsets, l.ends}} {
		offs, err := get.list(ctx, r.o.Topic)
		if err != nil {
			return layout{}, err
		}
		for k := range n {
			o, ok := offs.Lookup(r.o.Topic, k)
			if !ok {
				return layout{}, fmt.Errorf("no offsets of partition %d", k)
			}
			if o.Err != nil {
				return layout{}, fmt.Errorf("offsets of partition %d: %w", k, o.Err)
			}
			get.into[k] = o.Offset
		}
	}
	return l, nil
}

// PublishAt hands rows to this host's hub and to the relay topic for the
// others. It is the pipeline's Live. Until the checkpointed state is in
// the hub (Run's first load) it waits, so that a partition's first
// emits are never taken for newer than that state.
func (r *Relay) PublishAt(aggregator string, partition int32, version int64, rows []abi.Row) error {
	<-r.ready
	if err := r.o.Hub.PublishAt(aggregator, partition, version, rows); err != nil {
		return err
	}
	r.mu.Lock()
	k, prev := r.note(partition, version)
	cl := r.cl
	r.mu.Unlock()
	w := abi.RowsWriter{}
	for i := range rows {
		w.AppendSketches(rows[i].Window, rows[i].Final, rows[i].Start, []byte(rows[i].Key), rows[i].Metrics, rows[i].Sketches)
	}
	r.send(cl, k, partition, version, prev, w.Bytes())
	return nil
}

// send produces one relay record. One that fails is followed by an empty
// record of the same partition (resend), so that readers see the gap in
// the numbering even when the partition emits nothing more for a while.
func (r *Relay) send(cl *kgo.Client, k, p int32, version int64, prev link, value []byte) {
	rec := &kgo.Record{
		Partition: k,
		Value:     value,
		Headers: []kgo.RecordHeader{
			{Key: "p", Value: strconv.AppendInt(nil, int64(p), 10)},
			{Key: "v", Value: strconv.AppendInt(nil, version, 10)},
			{Key: "s", Value: strconv.AppendInt(nil, prev.seq+1, 10)},
			{Key: "pv", Value: strconv.AppendInt(nil, prev.version, 10)},
			{Key: "g", Value: []byte(r.o.Generation)},
			{Key: "h", Value: []byte(r.self)},
		},
	}
	cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
		if err == nil {
			return
		}
		r.mu.Lock()
		r.unsent[p] = true
		r.mu.Unlock()
		n := r.lost.Add(1)
		if now := time.Now().Unix(); r.lastW.Swap(now) < now-10 {
			r.o.Log.Warn("relay: rows not published to the other hosts (they show the partition at its values until a checkpoint after this)", "deployment", r.o.Deployment, "lost_batches", n, "err", err)
		}
	})
}

// resend produces an empty record for each partition a record of which
// failed: it carries the next number, so every reader notices the gap.
func (r *Relay) resend() {
	r.mu.Lock()
	type due struct {
		k, p    int32
		version int64
		prev    link
	}
	var out []due
	for p := range r.unsent {
		version := r.chain[p].version
		k, prev := r.note(p, version)
		out = append(out, due{k, p, version, prev})
	}
	clear(r.unsent)
	cl := r.cl
	r.mu.Unlock()
	for _, d := range out {
		r.send(cl, d.k, d.p, d.version, d.prev, (&abi.RowsWriter{}).Bytes())
	}
}

// note records a publish of partition p at version for the positions and
// the numbering of records, returning the relay partition it goes to and
// the link before it; r.mu held.
func (r *Relay) note(p int32, version int64) (int32, link) {
	k := p % r.layout.parts
	ms := r.marks[p]
	if len(ms) == 0 || version > ms[len(ms)-1].version {
		if len(ms) == maxMarks {
			for i := 0; i+1 < len(ms); i += 2 {
				ms[i/2] = mark{version: ms[i+1].version, floor: ms[i].floor}
			}
			ms = ms[:len(ms)/2]
		}
		r.marks[p] = append(ms, mark{version: version, floor: r.layout.ends[k]})
	}
	prev, ok := r.chain[p]
	if !ok {
		prev = link{seq: 0, version: -1}
	}
	r.chain[p] = link{seq: prev.seq + 1, version: version}
	return k, prev
}

// position is where a host that loads the checkpoint of partition p at
// next offset reads the relay from: the floor listed before the first
// publish past next, or the latest floor when there was none yet. Records
// produced after a listing land at or after its end offset, and every
// publish after the checkpoint is either past next or at next with the
// values the checkpoint holds, so nothing the checkpoint lacks is before
// it.
func (r *Relay) position(p int32, next int64) (string, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms := r.marks[p]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].version > next })
	at := r.layout.ends[p%r.layout.parts]
	if i < len(ms) {
		at = min(at, ms[i].floor)
	}
	r.marks[p] = slices.Delete(ms, 0, i)
	return r.layout.key, at
}

// Positioned is the checkpoint store a deployment's pipeline saves through:
// each checkpoint records the relay position that goes with it.
type Positioned struct{ r *Relay }

// Checkpoints returns the store the pipeline is to save through.
func (r *Relay) Checkpoints() Positioned { return Positioned{r} }

// Load is the store's Load.
func (c Positioned) Load(ctx context.Context, deployment, topic string, partition int32) (checkpoint.Checkpoint, error) {
	return c.r.o.Checkpoints.Load(ctx, deployment, topic, partition)
}

// Save saves cp with its relay position.
func (c Positioned) Save(ctx context.Context, cp checkpoint.Checkpoint) error {
	cp.RelayTopic, cp.RelayOffset = c.r.position(cp.Partition, cp.NextOffset)
	return c.r.o.Checkpoints.Save(ctx, cp)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
