package relay

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
)

// bootstrapPanes is how far back, in slides of each window, the state is
// loaded: a little more than the closed panes a hub keeps by default.
const bootstrapPanes = 64

// follower is what Run knows of the relay topic and of every source
// partition it has heard of.
type follower struct {
	r      *Relay
	layout string  // the incarnation the offsets below belong to
	parts  int32   // its partition count
	seen   []int64 // per relay partition: the offset after the last record looked at
	src    map[int32]*part
	chain  map[chainKey]int64 // the seq of the last record of a process and partition seen
	dst    []abi.Row
}

type chainKey struct {
	host string
	p    int32
}

// part is one source partition as this host follows it. A partition is
// followed (its relay records applied) only from a checkpoint whose relay
// position is still in the topic; otherwise it is parked: the hub holds
// its checkpointed state, and its records are ignored until a checkpoint
// it can follow from comes.
type part struct {
	parked bool
	from   int64  // relay offset its records count from
	min    int64  // version they must reach: the checkpoint's next offset
	tried  string // the checkpoint last loaded or found unusable: a parked partition waits for another
}

// Run loads the state the checkpoints left into the hub, then feeds it the
// other hosts' rows until ctx ends. A loss on the relay (a record expired
// or the topic deleted under it) parks the partitions it may concern until
// their next checkpoint.
func (r *Relay) Run(ctx context.Context) {
	defer r.setReady()
	f := &follower{r: r, src: map[int32]*part{}, chain: map[chainKey]int64{}}
	first := true
	for ctx.Err() == nil {
		starts, err := f.load(ctx, first)
		if err != nil {
			if ctx.Err() == nil {
				r.o.Log.Warn("relay: loading the live state from ClickHouse and Kafka; retrying", "deployment", r.o.Deployment, "err", err)
				sleep(ctx, 2*time.Second)
			}
			continue
		}
		if first {
			r.setReady()
			first = false
		}
		f.consume(ctx, starts)
	}
}

// load describes the relay topic and loads into the hub the checkpointed
// state of the partitions to (re)load: all on the first call, then those
// parked whose checkpoint changed. It returns where to read each relay
// partition from.
func (f *follower) load(ctx context.Context, first bool) ([]int64, error) {
	r := f.r
	l, err := r.describe(ctx, true)
	if err != nil {
		return nil, err
	}
	if l.key != f.layout {
		if f.layout != "" {
			r.o.Log.Warn("relay: the relay topic was recreated or repartitioned; following each partition again from its next checkpoint",
				"deployment", r.o.Deployment, "topic", r.o.Topic)
		}
		for _, pt := range f.src {
			pt.parked, pt.tried = true, ""
		}
		f.layout, f.parts = l.key, l.parts
		clear(f.chain)
		f.seen = make([]int64, l.parts)
		for k := range f.seen {
			f.seen[k] = -1
		}
	}
	for k, at := range f.seen {
		if at >= 0 && at < l.starts[k] {
			// Expired before this host read them.
			f.lose(int32(k), fmt.Sprintf("offsets %d to %d expired", at, l.starts[k]-1))
			f.seen[k] = l.starts[k]
		}
	}
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cps, err := r.o.Checkpoints.Progress(lctx, r.o.Generation, r.o.SourceTopic)
	if err != nil {
		return nil, err
	}
	cand := map[int32]checkpoint.Checkpoint{}
	for _, c := range cps {
		pt := f.src[c.Partition]
		if pt == nil {
			pt = &part{parked: true}
			f.src[c.Partition] = pt
		}
		if first || pt.parked && cpKey(c) != pt.tried {
			cand[c.Partition] = c
		}
	}
	if len(cand) > 0 {
		if err := f.publishStored(lctx, cand); err != nil {
			return nil, err
		}
	}
	starts := make([]int64, l.parts)
	for k := range starts {
		starts[k] = l.ends[k]
		if f.seen[k] >= 0 {
			starts[k] = f.seen[k]
		}
	}
	// Partitions followed already skip what they have had.
	for p, pt := range f.src {
		if _, ok := cand[p]; !ok && !pt.parked && f.seen[p%l.parts] >= 0 {
			pt.from = max(pt.from, f.seen[p%l.parts])
		}
	}
	var parked []int32
	for p, c := range cand {
		pt, k := f.src[p], p%l.parts
		pt.tried = cpKey(c)
		if c.RelayTopic == l.key && c.RelayOffset >= l.starts[k] && c.RelayOffset <= l.ends[k] {
			pt.parked, pt.from, pt.min = false, c.RelayOffset, c.NextOffset
			starts[k] = min(starts[k], c.RelayOffset)
			for ck := range f.chain {
				if ck.p == p {
					delete(f.chain, ck) // its records are judged afresh from the position on
				}
			}
			continue
		}
		pt.parked = true
		parked = append(parked, p)
	}
	if len(parked) > 0 {
		sort.Slice(parked, func(i, j int) bool { return parked[i] < parked[j] })
		r.o.Log.Info("relay: partitions shown at their checkpoint until one the relay still holds the rows after",
			"deployment", r.o.Deployment, "partitions", parked)
	}
	return starts, nil
}

// cpKey names a checkpoint's progress and relay position.
func cpKey(c checkpoint.Checkpoint) string {
	return fmt.Sprintf("%d %s %d", c.NextOffset, c.RelayTopic, c.RelayOffset)
}

// publishStored publishes the stored rows of the partitions in cand (see
// Stored).
func (f *follower) publishStored(ctx context.Context, cand map[int32]checkpoint.Checkpoint) error {
	r := f.r
	rows, versions, err := Stored(ctx, r.o.Table, r.o.Windows, func(p int32) bool { _, ok := cand[p]; return ok })
	if err != nil {
		return err
	}
	n := 0
	for p, batch := range rows {
		n += len(batch)
		if err := r.o.Hub.PublishAt(r.o.Deployment, p, versions[p], batch); err != nil {
			r.o.Log.Warn("relay: stored rows refused by the hub", "deployment", r.o.Deployment, "partition", p, "err", err)
		}
	}
	r.o.Log.Info("relay: live state loaded from ClickHouse", "deployment", r.o.Deployment, "rows", n, "partitions", len(cand))
	return nil
}

// Stored reads, for each partition that want takes, its state at its last
// save as one batch of rows at the partition's newest version: each save
// writes every row changed since the one before at the save's offset, so
// the newest row of every key is the partition's state at its last save
// (its checkpoint, or a save whose checkpoint failed after its rows). Only
// the panes a hub keeps are read: bootstrapPanes slides of each window.
// A hub takes such a batch only where it is not older than what it shows.
func Stored(ctx context.Context, t Table, windows []abi.Window, want func(int32) bool) (map[int32][]abi.Row, map[int32]int64, error) {
	var span int64 // ms: how far back the panes a hub keeps reach
	for _, w := range windows {
		if w.Kind == abi.Global {
			continue
		}
		slide := w.SlideMs
		if slide == 0 {
			slide = w.SizeMs
		}
		span = max(span, bootstrapPanes*slide+w.SizeMs)
	}
	stored, err := t.Latest(ctx, time.Now().Add(-time.Duration(span)*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	rows, versions := map[int32][]abi.Row{}, map[int32]int64{}
	for _, s := range stored {
		if want(s.Partition) {
			rows[s.Partition] = append(rows[s.Partition], s.Row)
			versions[s.Partition] = max(versions[s.Partition], s.Version)
		}
	}
	return rows, versions, nil
}

// consume reads the relay from starts until ctx ends or a load is due: a
// loss, a new incarnation of the topic, or a parked partition with a new
// checkpoint.
func (f *follower) consume(ctx context.Context, starts []int64) {
	r := f.r
	offs := map[int32]kgo.Offset{}
	for k, s := range starts {
		offs[int32(k)] = kgo.NewOffset().At(s)
		f.seen[k] = s
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(r.o.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.o.Topic: offs}),
		// An offset gone (expired, the topic recreated) is a loss to
		// handle, not a jump to make silently.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		r.o.Log.Error("relay: kafka client", "err", err)
		sleep(ctx, 2*time.Second)
		return
	}
	defer cl.Close()
	every := max(r.o.CheckpointEvery, time.Second)
	nextDescribe, nextProgress := time.Now().Add(time.Second), time.Now().Add(every)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		lost := false
		fs.EachError(func(_ string, k int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			f.lose(k, err.Error())
			lost = true
		})
		fs.EachRecord(func(rec *kgo.Record) {
			if f.record(rec) {
				lost = true
			}
		})
		if lost {
			sleep(ctx, time.Second) // a topic being deleted fails every fetch for a while
			return
		}
		if now := time.Now(); now.After(nextDescribe) {
			nextDescribe = now.Add(time.Second)
			r.resend()
			// Fresh end offsets keep the positions of this host's
			// checkpoints close; a new incarnation voids what was read.
			l, err := r.describe(ctx, false)
			if errors.Is(err, errMissing) || err == nil && l.key != f.layout {
				return
			}
		}
		if now := time.Now(); now.After(nextProgress) {
			nextProgress = now.Add(every)
			if f.newCheckpoint(ctx) {
				return
			}
		}
	}
}

// newCheckpoint reports whether a parked partition has a checkpoint not
// tried yet. (A partition met in the relay before its first checkpoint is
// parked.)
func (f *follower) newCheckpoint(ctx context.Context) bool {
	parked := false
	for _, pt := range f.src {
		parked = parked || pt.parked
	}
	if !parked {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cps, err := f.r.o.Checkpoints.Progress(lctx, f.r.o.Generation, f.r.o.SourceTopic)
	if err != nil {
		return false
	}
	for _, c := range cps {
		if pt := f.src[c.Partition]; pt != nil && pt.parked && cpKey(c) != pt.tried {
			return true
		}
	}
	return false
}

// lose parks the partitions of relay partition k: records of theirs may
// be gone, so what comes after cannot be applied on what the hub holds.
func (f *follower) lose(k int32, why string) {
	var parked []int32
	for p, pt := range f.src {
		if p%f.parts == k && !pt.parked {
			pt.parked = true // until a checkpoint other than the one it was followed from
			parked = append(parked, p)
		}
	}
	f.r.o.Log.Warn("relay: rows may be lost; the partitions concerned show their state until their next checkpoint",
		"deployment", f.r.o.Deployment, "relay_partition", k, "partitions", parked, "why", why)
}

// record applies one relay record, reporting a gap before it.
func (f *follower) record(rec *kgo.Record) (lost bool) {
	r, k := f.r, rec.Partition
	if k >= f.parts {
		return false
	}
	if rec.Offset != f.seen[k] {
		f.lose(k, fmt.Sprintf("offsets %d to %d missing", f.seen[k], rec.Offset-1))
		return true
	}
	f.seen[k] = rec.Offset + 1
	var version, seq, prev int64 = -2, -1, -1
	p := rec.Partition // records written before the source partition was a header
	var gen, host string
	for _, h := range rec.Headers {
		switch h.Key {
		case "v":
			if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				version = v
			}
		case "s":
			if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				seq = v
			}
		case "pv":
			if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				prev = v
			}
		case "p":
			if v, err := strconv.ParseInt(string(h.Value), 10, 32); err == nil && v >= 0 {
				p = int32(v)
			} else {
				version = -2
			}
		case "g":
			gen = string(h.Value)
		case "h":
			host = string(h.Value)
		}
	}
	if host == r.self || gen != r.o.Generation || version < 0 || p%f.parts != k {
		return false // ours (in the hub already), another generation's, or not a relay record of this layout
	}
	pt := f.src[p]
	if pt == nil {
		// A partition without a checkpoint yet (new, or added to the
		// topic): followed from its first checkpoint.
		f.src[p] = &part{parked: true}
		return false
	}
	if seq > 0 {
		// A record of this process that never reached the topic: what
		// comes after it cannot be applied on what the hub holds. The
		// first record of a process seen may follow one the partition's
		// checkpoint does not cover (past its offset), which this host
		// would have seen had it been written.
		ck := chainKey{host, p}
		last, known := f.chain[ck]
		gap := known && seq > last+1 || !known && prev > pt.min
		if !known || seq > last {
			f.chain[ck] = seq
		}
		if gap && !pt.parked {
			pt.parked = true
			r.o.Log.Warn("relay: a record of a partition never reached the relay; it shows its state until its next checkpoint",
				"deployment", r.o.Deployment, "partition", p, "offset", rec.Offset)
			return false
		}
	}
	if pt.parked || rec.Offset < pt.from || version < pt.min {
		return false
	}
	rows, err := abi.DecodeRows(rec.Value, r.o.Schema, len(r.o.Windows), f.dst[:0])
	if err != nil {
		r.o.Log.Warn("relay: record skipped", "deployment", r.o.Deployment, "partition", k, "offset", rec.Offset, "err", err)
		return false
	}
	f.dst = rows
	if err := r.o.Hub.PublishAt(r.o.Deployment, p, version, rows); err != nil {
		r.o.Log.Warn("relay: rows refused by the hub", "deployment", r.o.Deployment, "partition", p, "err", err)
	}
	return false
}
