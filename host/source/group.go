package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Handler is what a Group calls as partitions come, go and receive records.
// Assigned and the stops run inside the group's rebalance callbacks: the
// group does not move on until they return.
type Handler interface {
	// Assigned is called for each newly assigned partition and returns the
	// offset to start fetching at (its checkpoint's next offset). An error
	// leaves the partition assigned but unfetched, and Assigned is called
	// for it again every startRetry while it stays with this member; the
	// other partitions run meanwhile.
	Assigned(ctx context.Context, p int32) (next int64, err error)
	// Revoked stops partitions that move to another member; checkpoint
	// says whether they may checkpoint first (they may not once lost).
	Revoked(ps []int32, checkpoint bool)
	// Records hands over fetched records of a partition. It must not block.
	Records(p int32, recs []*kgo.Record)
}

// Options configure a Group.
type Options struct {
	Brokers []string
	Group   string
	Topic   string
	// InstanceID makes the member static: restarted after a crash it gets
	// its partitions back at once instead of after the session timeout.
	InstanceID string
	// Admin reads end offsets and makes a static member leave on Close.
	Admin *kadm.Client
	// MaxPoll bounds the records of one poll (default 32768).
	MaxPoll int
	Log     *slog.Logger
	// ClientOpts are extra franz-go options (tests shorten timeouts).
	ClientOpts []kgo.Opt
}

// SessionTimeout is how long a group waits for a member that stopped
// heartbeating (a host that died and does not come back).
const SessionTimeout = 10 * time.Second

// RebalanceTimeout is how long the group waits in a rebalance for its
// members to rejoin, and how long a member waits for a join or a sync the
// broker holds. A member rejoins within a poll and its revocation (the
// pipeline's StopTimeout, 10 s); franz-go's 60 s default meant a restart of
// a deployment right after its start (its static member replaced while it
// was still joining) could hang in the group's sync for a whole minute
// before rejoining.
const RebalanceTimeout = 20 * time.Second

// Group is one member of a consumer group reading one topic, which also
// produces the deployment's dead letters.
type Group struct {
	o  Options
	h  Handler
	cl *kgo.Client

	mu      sync.Mutex
	commits map[int32]int64 // checkpointed next offsets not yet committed
	// unstarted are the assigned partitions whose Assigned failed: paused
	// until a retry at retryAt starts them.
	unstarted map[int32]bool
	retryAt   time.Time

	// topicID is the topic's identity when the group started (zero
	// without an Admin), checked when fetches say the topic is unknown.
	topicID   [16]byte
	checkedAt time.Time
}

// ErrTopicGone is returned by Poll when the topic was deleted, or deleted
// and created again: a topic of the same name is another log, whose
// offsets restart under what was counted (Kafka's client refuses to read
// it, and would otherwise be stuck on the old one for good).
var ErrTopicGone = errors.New("source: topic deleted")

// topicCheckEvery is how often Poll asks whether the topic is still the one
// it started on, while fetches say it is unknown.
const topicCheckEvery = 5 * time.Second

// startRetry is how often Poll tries again to start the partitions that
// did not start when assigned.
const startRetry = 5 * time.Second

// retryFor bounds one round of retryStarts.
const retryFor = RebalanceTimeout / 2

// New creates the member; Poll joins the group.
func New(o Options, h Handler) (*Group, error) {
	if o.MaxPoll <= 0 {
		o.MaxPoll = 32768
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	g := &Group{o: o, h: h, commits: map[int32]int64{}, unstarted: map[int32]bool{}}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // transaction markers move a partition's offset to the end
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsRevoked(g.revoked),
		kgo.OnPartitionsLost(g.lost),
		kgo.AdjustFetchOffsetsFn(g.adjust),
		kgo.SessionTimeout(SessionTimeout),
		kgo.RebalanceTimeout(RebalanceTimeout),
		kgo.HeartbeatInterval(time.Second),
		kgo.ProducerLinger(5 * time.Millisecond),
	}
	if o.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(o.InstanceID))
	}
	if o.Admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		id, err := g.currentTopicID(ctx)
		if err != nil {
			return nil, fmt.Errorf("source: topic %s: %w", o.Topic, err)
		}
		g.topicID = id
	}
	cl, err := kgo.NewClient(append(opts, o.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("source: kafka client: %w", err)
	}
	g.cl = cl
	return g, nil
}

// currentTopicID is the topic's identity now, ErrTopicGone when it does not
// exist.
func (g *Group) currentTopicID(ctx context.Context) ([16]byte, error) {
	topics, err := g.o.Admin.ListTopics(ctx, g.o.Topic)
	if err != nil {
		return [16]byte{}, err
	}
	t, ok := topics[g.o.Topic]
	if !ok || errors.Is(t.Err, kerr.UnknownTopicOrPartition) {
		return [16]byte{}, ErrTopicGone
	}
	if t.Err != nil {
		return [16]byte{}, t.Err
	}
	return t.ID, nil
}

// topicGone tells, at most every topicCheckEvery, whether the topic was
// deleted since the group started (an error wrapping ErrTopicGone), when
// fetches say it is unknown: briefly after a topic is made they may, while
// it is still the same topic.
func (g *Group) topicGone(ctx context.Context) error {
	if g.o.Admin == nil || time.Since(g.checkedAt) < topicCheckEvery {
		return nil
	}
	g.checkedAt = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := g.currentTopicID(ctx)
	switch {
	case errors.Is(err, ErrTopicGone):
		return fmt.Errorf("%w: %s no longer exists; what was counted stays in ClickHouse. Create it and count it afresh: wagg deploy -start earliest", ErrTopicGone, g.o.Topic)
	case err != nil:
		return nil // cannot tell now
	case id != g.topicID:
		return fmt.Errorf("%w: %s was deleted and created again: the new topic's offsets start over under what was counted, from records no longer in it. "+
			"Count it afresh: wagg deploy -start earliest", ErrTopicGone, g.o.Topic)
	}
	return nil
}

// Poll fetches and hands records over until ctx ends, committing what
// checkpoints cover as it goes, or until the topic is found deleted (an
// error wrapping ErrTopicGone). It returns with the group still joined:
// stop the partitions, then Close.
func (g *Group) Poll(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for {
		// A poll waits at most commitEvery, so that what checkpoints cover
		// reaches Kafka while a topic is quiet too.
		pctx, cancel := context.WithTimeout(ctx, commitEvery)
		fetches := g.cl.PollRecords(pctx, g.o.MaxPoll)
		cancel()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetchFailed, unknownTopic := false, false
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				fetchFailed = true
				unknownTopic = unknownTopic || errors.Is(err, kerr.UnknownTopicID) || errors.Is(err, kerr.UnknownTopicOrPartition)
				g.o.Log.Warn("fetch", "topic", t, "partition", p, "err", err)
			}
		})
		if unknownTopic {
			if err := g.topicGone(ctx); err != nil {
				return err
			}
		}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) > 0 {
				g.h.Records(p.Partition, p.Records)
			}
		})
		g.retryStarts(ctx)
		g.commit(ctx, false)
		g.cl.AllowRebalance()
		if fetchFailed && fetches.NumRecords() == 0 {
			// Nothing but errors (the broker away, the topic deleted): do
			// not spin on them.
			backoff = min(2*backoff, time.Second)
			sleep(ctx, backoff)
		} else {
			backoff = 50 * time.Millisecond
		}
	}
}

// commitEvery is how long checkpointed offsets wait at most for a commit.
const commitEvery = time.Second

// Close commits what checkpoints cover, closes the client and leaves the
// group, so that the partitions move at once.
func (g *Group) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g.commit(ctx, true)
	g.cl.AllowRebalance() // leaving the group revokes: let it
	g.cl.Close()
	g.leave(ctx)
}

// leave hands the partitions over at once: a static member's Close does not
// leave the group (so that a restart keeps its partitions), a stop must.
func (g *Group) leave(ctx context.Context) {
	if g.o.InstanceID == "" || g.o.Admin == nil {
		return
	}
	resp, err := g.o.Admin.LeaveGroup(ctx, kadm.LeaveGroup(g.o.Group).InstanceIDs(g.o.InstanceID).Reason("wagg: deployment stopped"))
	if err == nil {
		err = resp.Error() // the member's own answer: not in the group, fenced
	}
	if err != nil {
		g.o.Log.Warn("leaving the consumer group; its partitions move after the session timeout", "err", err)
	}
}

// Checkpointed records that a partition's checkpoint covers offsets up to
// next: the next commit hands it to Kafka.
func (g *Group) Checkpointed(p int32, next int64) {
	g.mu.Lock()
	g.commits[p] = next
	g.mu.Unlock()
}

// commit hands Kafka the offsets that checkpoints already cover.
func (g *Group) commit(ctx context.Context, sync bool) {
	offs := g.pending()
	if offs == nil {
		return
	}
	if sync {
		g.cl.CommitOffsetsSync(ctx, offs, nil)
		return
	}
	g.cl.CommitOffsets(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			g.o.Log.Warn("offset commit", "err", err)
		}
	})
}

// pending takes the offsets to commit (nil: none).
func (g *Group) pending() map[string]map[int32]kgo.EpochOffset {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.commits) == 0 {
		return nil
	}
	offs := map[string]map[int32]kgo.EpochOffset{g.o.Topic: {}}
	for p, o := range g.commits {
		offs[g.o.Topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	clear(g.commits)
	return offs
}

// adjust starts each assigned partition where the handler says (its
// checkpoint), not at Kafka's committed offset. The group keeps
// heartbeating while the handler waits for ClickHouse.
//
// A partition that does not start (no room in the memory budget, its
// checkpoint unreadable) is assigned paused, and retryStarts tries it
// again: an error here would end the group session, and with it the
// partitions of this member that did start.
func (g *Group) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	nexts := map[int32]int64{}
	for p := range offsets[g.o.Topic] {
		next, err := g.h.Assigned(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err // the session ends anyway
			}
			// Paused before it is assigned, so that nothing is fetched
			// for it; At(0) only gives it a position SetOffsets can move.
			g.cl.PauseFetchPartitions(map[string][]int32{g.o.Topic: {p}})
			g.mu.Lock()
			if len(g.unstarted) == 0 {
				g.retryAt = time.Now().Add(startRetry)
			}
			g.unstarted[p] = true
			g.mu.Unlock()
			offsets[g.o.Topic][p] = kgo.NewOffset().At(0).WithEpoch(-1)
			continue
		}
		g.started(p)
		nexts[p] = next
		offsets[g.o.Topic][p] = kgo.NewOffset().At(next).WithEpoch(-1)
	}
	g.reportDeleted(ctx, nexts)
	return offsets, nil
}

// reportDeleted logs the partitions whose next offset to count the log no
// longer holds: records deleted (by retention, say) before they were
// counted. Kafka's client then starts at the log's start; the records
// between are lost, and this is the one place that says so.
func (g *Group) reportDeleted(ctx context.Context, nexts map[int32]int64) {
	if g.o.Admin == nil || len(nexts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	starts, err := g.o.Admin.ListStartOffsets(ctx, g.o.Topic)
	if err != nil {
		return // only a report
	}
	for p, next := range nexts {
		if s, ok := starts.Lookup(g.o.Topic, p); ok && s.Err == nil && s.Offset > next {
			g.o.Log.Error("records deleted from the log before they were counted (retention?): counting goes on from the log's start",
				"topic", g.o.Topic, "partition", p, "from", next, "to", s.Offset, "lost", s.Offset-next)
		}
	}
}

// retryStarts tries again to start the partitions that did not start when
// assigned, once startRetry has passed. It runs in the poll loop while
// rebalances wait, so that none of them is revoked meanwhile; so it gives
// up after retryFor (a checkpoint that cannot be read while ClickHouse is
// away), well inside RebalanceTimeout, and the partitions it did not start
// wait for the next round.
func (g *Group) retryStarts(ctx context.Context) {
	g.mu.Lock()
	if len(g.unstarted) == 0 || time.Now().Before(g.retryAt) {
		g.mu.Unlock()
		return
	}
	ps := slices.Sorted(maps.Keys(g.unstarted))
	g.retryAt = time.Now().Add(startRetry)
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, retryFor)
	defer cancel()
	for _, p := range ps {
		next, err := g.h.Assigned(ctx, p)
		if err != nil {
			continue // the handler reports it; tried again later
		}
		g.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{g.o.Topic: {p: {Epoch: -1, Offset: next}}})
		g.started(p)
		g.reportDeleted(ctx, map[int32]int64{p: next})
	}
}

// started lets a partition that did not start before be fetched.
func (g *Group) started(p int32) {
	g.mu.Lock()
	was := g.unstarted[p]
	delete(g.unstarted, p)
	g.mu.Unlock()
	if was {
		g.cl.ResumeFetchPartitions(map[string][]int32{g.o.Topic: {p}})
	}
}

func (g *Group) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	g.forget(revoked[g.o.Topic])
	g.h.Revoked(revoked[g.o.Topic], true)
	g.commit(ctx, true)
}

func (g *Group) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	g.forget(lost[g.o.Topic])
	g.h.Revoked(lost[g.o.Topic], false)
}

// forget drops partitions that leave this member from those waiting to
// start, and lifts their pause: a pause outlives the assignment, and the
// partition may come back.
func (g *Group) forget(ps []int32) {
	for _, p := range ps {
		g.started(p)
	}
}

// Pause stops fetching partition p (its worker is full).
func (g *Group) Pause(p int32) { g.cl.PauseFetchPartitions(map[string][]int32{g.o.Topic: {p}}) }

// Resume fetches partition p again.
func (g *Group) Resume(p int32) { g.cl.ResumeFetchPartitions(map[string][]int32{g.o.Topic: {p}}) }

// Produce writes a record (a dead letter) with the group's client.
func (g *Group) Produce(ctx context.Context, r *kgo.Record, done func(*kgo.Record, error)) {
	g.cl.Produce(ctx, r, done)
}

// Flush waits until every record produced so far is written or failed.
func (g *Group) Flush(ctx context.Context) error { return g.cl.Flush(ctx) }

// EndOffset is the partition's high watermark: the offset past its last
// record, committed or not. A partition read up to its last stable offset
// is not caught up while a transaction is open: the records in it may yet
// commit, and an idle advance meanwhile would make them late.
func (g *Group) EndOffset(ctx context.Context, p int32) (int64, error) {
	if g.o.Admin == nil {
		return 0, errors.New("no admin client")
	}
	offs, err := g.o.Admin.ListEndOffsets(ctx, g.o.Topic)
	if err != nil {
		return 0, err
	}
	o, ok := offs.Lookup(g.o.Topic, p)
	if !ok {
		return 0, fmt.Errorf("no end offset for partition %d", p)
	}
	if o.Err != nil {
		return 0, o.Err
	}
	return o.Offset, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
