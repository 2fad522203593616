package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/decode"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/source"
	"github.com/wagg/wagg/host/window"
)

// Dead-letter reasons set by the worker (window.Reason* are the others).
const (
	ReasonLate        = "late"
	ReasonMalformed   = "malformed"
	ReasonPluginError = "plugin_error"
)

// worker owns one partition: its plugin instance, watermark and the rows
// emitted since the last checkpoint. Only its own goroutine touches them;
// the checkpoint writer beside it gets each save by value.
type worker struct {
	env   *env
	p     int32
	queue *queue
	gate  *gate

	inst *sandbox.Instance
	// base is the plugin's state at the last good point (nil: a fresh
	// instance) and ops what was applied since, in order: after a failed
	// call a fresh instance is restored to base and ops are replayed, so no
	// half-applied batch survives.
	base []byte
	// baseFrom is the schema of the plugin that wrote base when module
	// migrates it (a checkpoint of an older state version); nil when base is
	// module's own or one it takes as it is.
	baseFrom *abi.Schema
	ops      []op
	opsB     int // bytes held by ops

	dec, one *decode.Decoder
	enc      *abi.BatchEncoder
	batch    []*kgo.Record // the records in dec, in order
	wm       *window.Watermark
	guard    window.Guard
	next     int64 // the next offset to process
	// failStreak counts the records in a row the plugin failed on.
	failStreak int
	// replayed counts the calls rebuilds replayed (tests bound it).
	replayed int
	// leaving is set by stop, so that isolating poison records one call
	// deadline at a time does not hold up a stop; abandoned is set when
	// that cut a batch short: the partition's state then runs past records
	// it did not fold in, so it takes no more checkpoints and its next
	// owner replays from the last one, as after a crash.
	leaving   atomic.Bool
	abandoned bool

	// pending holds the latest row per (window, start, key) since the last
	// save; the next save writes them, versioned by next.
	pending    map[rowKey]abi.Row
	pendingB   int // bytes of the flushes the pending rows came from
	rows       []abi.Row
	dirty      bool // records handled since the last checkpoint
	lastRecord time.Time

	inflight bool // a save is with the writer
	due      bool // a checkpoint fell due while one was in flight
	hold     bool // an idle advance waits until its checkpoint is durable
	// paceUntil is when the next checkpoint may go (Spec.SnapshotRate);
	// until then saves write rows alone.
	paceUntil time.Time
	pacedLog  bool // the pacing was logged

	saves chan save
	acks  chan error
	quit  chan bool // true: checkpoint before leaving
	done  chan struct{}

	dlMu     sync.Mutex
	dlFailed []*kgo.Record // dead letters Kafka refused, produced again before the next save

	// failingSince is when the save the writer is on first failed (zero
	// while saves go through), and failErr why it failed last (failing).
	failMu       sync.Mutex
	failingSince time.Time
	failErr      error

	partStr string
}

// op is one call applied to the instance since base: a batch or a flush.
type op struct {
	batch []byte
	flush bool
	wm    int64
}

// save is what the writer stores: rows versioned by the offset the
// partition reached, then the checkpoint at that offset, unless pacing
// holds it back (cp nil).
type save struct {
	rows    []abi.Row
	version int64
	cp      *checkpoint.Checkpoint
}

type rowKey struct {
	window uint8
	start  int64
	key    string
}

func newWorker(e *env, p int32) *worker {
	schema := &e.module.Schema
	g := &gate{p: p, kafka: e.kafka}
	return &worker{
		env: e, p: p, gate: g,
		queue:      newQueue(e.spec.MaxQueued, g),
		dec:        decode.New(schema),
		one:        decode.New(schema),
		enc:        abi.NewBatchEncoder(schema),
		wm:         window.New(e.spec.Windows, e.spec.Lateness.Milliseconds(), window.Start),
		guard:      window.NewGuard(e.spec.MaxFuture.Milliseconds(), e.spec.Windows),
		pending:    map[rowKey]abi.Row{},
		lastRecord: time.Now(),
		saves:      make(chan save, 1),
		acks:       make(chan error, 1),
		quit:       make(chan bool, 1),
		done:       make(chan struct{}),
		partStr:    strconv.Itoa(int(p)),
	}
}

// restore loads the partition's checkpoint, retrying while ClickHouse does
// not answer (until ctx ends), and starts the plugin instance from it.
func (w *worker) restore(ctx context.Context) error {
	e := w.env
	var cp checkpoint.Checkpoint
	fresh := false
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := e.breaker.Do(ctx, func(ctx context.Context) error {
			var err error
			cp, err = e.cps.Load(ctx, e.spec.Name, e.spec.Topic, w.p)
			fresh = errors.Is(err, checkpoint.ErrNone)
			if fresh {
				return nil
			}
			return err
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("partition %d: loading its checkpoint: %w", w.p, err)
		}
		e.log.Warn("checkpoint not loaded; retrying", "partition", w.p, "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
	}
	if !fresh && cp.Plugin != e.plugin && !e.module.Schema.AcceptsState(cp.StateVersion) {
		from, err := w.migrateFrom(cp)
		if err != nil {
			// The deploy checks this first; a checkpoint written since by a
			// plugin of another state version ends here.
			e.fail(&FailedError{Reason: "state", Err: err})
			return err
		}
		w.baseFrom = from
	}
	if fresh {
		// The first checkpoint records where the partition starts, records
		// or not, so that a restart or a generation taking over (which
		// waits for a checkpoint of every partition) starts there too.
		w.next, w.dirty = e.spec.StartOffsets[w.p], true
	} else {
		w.base = cp.Snapshot
		w.next = max(0, cp.NextOffset-e.spec.UnsafeReplayOverlap)
		w.wm = window.New(e.spec.Windows, e.spec.Lateness.Milliseconds(), cp.Watermark)
	}
	if err := w.rebuild(ctx); err != nil {
		return fmt.Errorf("partition %d: restoring its checkpoint at offset %d: %w", w.p, cp.NextOffset, err)
	}
	if !fresh {
		if w.baseFrom != nil {
			e.log.Info("partition restored, migrating its state", "partition", w.p, "offset", cp.NextOffset, "from_state_version", cp.StateVersion, "to_state_version", e.module.Schema.StateVersion())
		} else {
			e.log.Info("partition restored", "partition", w.p, "offset", cp.NextOffset)
		}
	}
	return nil
}

// migrateFrom is the schema through which the plugin reads and migrates
// cp, a checkpoint of a state version it does not take as it is: that of
// the plugin that wrote it.
func (w *worker) migrateFrom(cp checkpoint.Checkpoint) (*abi.Schema, error) {
	e := w.env
	s := &e.module.Schema
	if !s.MigratesState(cp.StateVersion) {
		return nil, fmt.Errorf("partition %d: its checkpoint holds state version %d of plugin sha256 %s, which this plugin (state version %d) neither accepts nor migrates",
			w.p, cp.StateVersion, cp.Plugin, s.StateVersion())
	}
	var from *abi.Schema
	err := errors.New("no registry of plugins")
	if e.stateSchema != nil {
		from, err = e.stateSchema(cp.Plugin)
	}
	if err == nil && from.StateVersion() != cp.StateVersion {
		err = fmt.Errorf("it declares state version %d", from.StateVersion())
	}
	if err != nil {
		return nil, fmt.Errorf("partition %d: its checkpoint holds state version %d of plugin sha256 %s, which this plugin migrates, but that plugin's schema is not known: %w",
			w.p, cp.StateVersion, cp.Plugin, err)
	}
	return from, nil
}

func (w *worker) stop(checkpoint bool) {
	w.leaving.Store(true)
	w.quit <- checkpoint
}

func (w *worker) run() {
	defer close(w.done)
	ctx := context.Background()
	defer func() {
		if w.inst != nil {
			w.inst.Close(ctx)
		}
	}()
	// The checkpoint writer runs beside the worker, so that ClickHouse round
	// trips, outages included, hold up neither records nor live deltas. It
	// gets one save at a time; rows coalesce in pending meanwhile.
	wctx, stopWriter := context.WithCancel(ctx)
	written := make(chan struct{})
	go w.writer(wctx, written)
	defer func() {
		close(w.saves)
		stopWriter()
		<-written
		w.gate.open(pauseQueue | pauseBacklog)
	}()
	emit := time.NewTicker(w.env.spec.EmitEvery)
	defer emit.Stop()
	cp := time.NewTicker(w.env.spec.CheckpointEvery)
	defer cp.Stop()
	for {
		var ready <-chan struct{}
		if !w.hold {
			ready = w.queue.ready
		}
		select {
		case <-ready:
			w.take(ctx)
		case <-emit.C:
			// Rows wait in pending while ClickHouse is behind; fetching
			// stops at MaxPendingRows or MaxPendingBytes, and the emits
			// at twice that: a
			// plugin can return rows that no record changed (a flush of
			// made-up groups) and would otherwise fill the host. Its
			// changes wait in the plugin until the next checkpoint's emit.
			if !w.pendingPast(2) {
				w.emit(ctx)
			}
		case <-cp.C:
			w.tick(ctx)
		case err := <-w.acks:
			w.acked(ctx, err)
		case keep := <-w.quit:
			if keep && !w.env.hasFailed() {
				w.leave(ctx)
				return
			}
			// No checkpoint: the records are read again by the next
			// owner. The dead letters already counted are written still,
			// within the spec's StopTimeout, before the client closes:
			// a failed deployment is often not deployed again.
			dctx, cancel := context.WithTimeout(ctx, w.env.spec.StopTimeout)
			if err := w.flushDeadLetters(dctx); err != nil {
				w.env.log.Warn("partition stopped with dead letters not written", "partition", w.p, "err", err)
			}
			cancel()
			return
		}
	}
}

func (w *worker) take(ctx context.Context) {
	for _, recs := range w.queue.take() {
		w.lastRecord = time.Now()
		w.handle(ctx, recs)
	}
}

// leave makes what the partition read durable, waiting for ClickHouse no
// longer than the spec's StopTimeout in all: what is not durable then is
// replayed by the partition's next owner.
func (w *worker) leave(ctx context.Context) {
	deadline := time.NewTimer(w.env.spec.StopTimeout)
	defer deadline.Stop()
	wait := func() bool {
		if !w.inflight {
			return true
		}
		select {
		case err := <-w.acks:
			w.inflight, w.hold = false, false
			return err == nil
		case <-deadline.C:
			w.env.log.Warn("stopping without a final checkpoint: it was not stored in time (ClickHouse, or dead letters Kafka has not taken, see the warnings before); the next owner replays from the last one",
				"partition", w.p, "timeout", w.env.spec.StopTimeout)
			return false
		}
	}
	if !wait() { // an idle advance's checkpoint first: what is queued is judged against it
		return
	}
	w.take(ctx)
	w.paceUntil = time.Time{} // the next owner starts from this one
	w.checkpoint(ctx, false)
	wait()
}

// handle checks records and folds the good ones in, in batches of at most
// MaxBatch. Every decision depends on the record and on the watermark, which
// depends on the records before it, and on nothing else but the wall clock
// of the max_future guard.
func (w *worker) handle(ctx context.Context, recs []*kgo.Record) {
	now := time.Now().UnixMilli()
	for _, rec := range recs {
		if w.env.hasFailed() || w.abandoned {
			return
		}
		if rec.Offset < w.next {
			// The fetch starts at next and the client drops what comes
			// before it in a batch: an earlier offset means the log went
			// back under what is counted, and Kafka reset the position.
			// Its records now are not those the counts cover, and rows
			// versioned by lower offsets would not replace the counted
			// ones: stop rather than skip them, or count them, silently.
			w.env.fail(&FailedError{Reason: "source", Err: fmt.Errorf("partition %d: Kafka handed over offset %d after offsets up to %d were counted: "+
				"the topic %s was deleted and created again, or its log truncated (an unclean leader election). "+
				"The counts cover records no longer in the log: count it afresh with wagg deploy -start earliest",
				w.p, rec.Offset, w.next-1, w.env.spec.Topic)})
			return
		}
		w.next = rec.Offset + 1
		w.dirty = true
		if rec.Attrs.IsControl() {
			continue // a transaction marker: it only moves the offset
		}
		ts := rec.Timestamp.UnixMilli()
		if reason, msg := w.guard.Check(ts, now); reason != "" {
			w.deadLetter(ctx, rec, reason, msg)
			continue
		}
		if w.wm.Late(ts) {
			w.deadLetter(ctx, rec, ReasonLate, fmt.Sprintf("late: event time %d is before the watermark %d allows (window closed)", ts, w.wm.Value()))
			continue
		}
		err := w.dec.Add(rec.Value, ts)
		if errors.Is(err, decode.ErrFull) {
			w.process(ctx)
			err = w.dec.Add(rec.Value, ts)
		}
		if err != nil {
			w.deadLetter(ctx, rec, ReasonMalformed, err.Error())
			continue
		}
		w.batch = append(w.batch, rec)
		w.wm.Advance(ts)
		if w.dec.Len() >= w.env.spec.MaxBatch {
			w.process(ctx)
		}
	}
	w.process(ctx)
}

// process hands the decoded batch to the plugin. When the call fails, the
// records it fails on are found one by one and dead-lettered; the rest are
// counted, in a fresh instance restored to the last good point.
func (w *worker) process(ctx context.Context) {
	if w.dec.Len() == 0 || w.env.hasFailed() || w.abandoned {
		return
	}
	defer func() {
		w.dec.Reset()
		clear(w.batch)
		w.batch = w.batch[:0]
	}()
	m, name := w.env.m, w.env.spec.Name
	buf, err := w.enc.Encode(w.dec.Batch())
	if err != nil {
		w.env.fail(fmt.Errorf("partition %d: encoding a batch: %w", w.p, err))
		return
	}
	start := time.Now()
	err = w.inst.Process(ctx, buf)
	m.CallSeconds.WithLabelValues(name, "process").Observe(time.Since(start).Seconds())
	if err == nil {
		w.applied(op{batch: bytes.Clone(buf)})
		m.Records.WithLabelValues(name, "processed").Add(float64(len(w.batch)))
		w.failStreak = 0
		return
	}
	w.env.log.Warn("plugin failed on a batch; isolating the records it fails on", "partition", w.p, "records", len(w.batch), "err", err)
	// Each rebuild below starts from a snapshot taken after the one before,
	// so it replays only the records since: isolating p poison records in
	// a batch of n replays at most n calls, not p times the batches since
	// the last checkpoint.
	if !w.rebuildAndRebase(ctx) {
		return
	}
	for _, rec := range w.batch {
		if w.leaving.Load() {
			w.abandoned = true
			w.env.log.Warn("stopping while isolating poison records: no final checkpoint; the next owner replays from the last one", "partition", w.p)
			return
		}
		w.one.Reset()
		if err := w.one.Add(rec.Value, rec.Timestamp.UnixMilli()); err != nil {
			w.env.fail(fmt.Errorf("partition %d: a record decoded once and not again: %w", w.p, err))
			return
		}
		one, err := w.enc.Encode(w.one.Batch())
		if err == nil {
			err = w.inst.Process(ctx, one)
		}
		if err == nil {
			w.applied(op{batch: bytes.Clone(one)})
			m.Records.WithLabelValues(name, "processed").Inc()
			w.failStreak = 0
			continue
		}
		w.deadLetter(ctx, rec, ReasonPluginError, err.Error())
		w.failStreak++
		w.env.pluginError(err, w.failStreak)
		if w.env.hasFailed() || !w.rebuildAndRebase(ctx) {
			return
		}
	}
	w.rebase(ctx) // a new last good point: the singles need not be replayed again
}

// rebuildAndRebase replaces a failed instance and makes its state the last
// good point, reporting whether the partition can go on.
func (w *worker) rebuildAndRebase(ctx context.Context) bool {
	if err := w.rebuild(ctx); err != nil {
		w.env.fail(err)
		return false
	}
	return w.rebase(ctx)
}

// applied records a successful call since base; past a bound it takes a
// snapshot instead, so replays stay short.
func (w *worker) applied(o op) {
	w.ops = append(w.ops, o)
	w.opsB += len(o.batch) + 16
	if w.opsB > maxOpsBytes {
		w.rebase(context.Background())
	}
}

// maxOpsBytes bounds the batches kept for a replay between snapshots.
const maxOpsBytes = 64 << 20

// rebuild replaces the instance by a fresh one restored to base with ops
// replayed. An error means the plugin cannot reach its last good state
// again (a broken snapshot, or a plugin that is not deterministic).
func (w *worker) rebuild(ctx context.Context) error {
	e := w.env
	if w.inst != nil {
		w.inst.Close(ctx)
		w.inst = nil
	}
	cfg := abi.Config{Windows: e.spec.Windows, Params: e.spec.Params, MaxGroups: e.spec.MaxGroupsPerPane}
	if w.base != nil {
		cfg.MigrateFrom = w.baseFrom
	}
	inst, err := e.module.Instantiate(sandbox.WithLogAttrs(ctx, "deployment", e.spec.Name, "partition", w.p), cfg)
	if err != nil {
		return fmt.Errorf("partition %d: starting the plugin: %w", w.p, err)
	}
	if w.base != nil {
		if err := inst.Restore(ctx, w.base); err != nil {
			inst.Close(ctx)
			return fmt.Errorf("partition %d: restoring the plugin's state: %w", w.p, err)
		}
	}
	w.replayed += len(w.ops)
	for i, o := range w.ops {
		if o.flush {
			_, err = inst.Flush(ctx, o.wm, w.rows[:0])
		} else {
			err = inst.Process(ctx, o.batch)
		}
		if err != nil {
			inst.Close(ctx)
			return fmt.Errorf("partition %d: replaying call %d of %d since the last snapshot failed where it had succeeded (is the plugin deterministic?): %w", w.p, i+1, len(w.ops), err)
		}
	}
	w.inst = inst
	return nil
}

// rebase makes the current state the last good point.
func (w *worker) rebase(ctx context.Context) bool {
	snap, err := w.inst.Snapshot(ctx)
	if err != nil {
		if err = w.rebuild(ctx); err == nil {
			snap, err = w.inst.Snapshot(ctx)
		}
	}
	if err != nil {
		w.env.fail(fmt.Errorf("partition %d: snapshot: %w", w.p, err))
		return false
	}
	w.base, w.baseFrom = snap, nil
	clear(w.ops)
	w.ops, w.opsB = w.ops[:0], 0
	return true
}

// emit flushes the plugin at the watermark and hands the rows to the live
// hub; they wait in pending for the next save.
func (w *worker) emit(ctx context.Context) {
	e := w.env
	if e.hasFailed() {
		return
	}
	wm := w.wm.Value()
	start := time.Now()
	rows, err := w.inst.Flush(ctx, wm, w.rows[:0])
	if err != nil {
		// Not tied to a record: a fresh instance at the same state gets one
		// more try.
		e.log.Warn("plugin flush failed; retrying in a fresh instance", "partition", w.p, "err", err)
		if err = w.rebuild(ctx); err == nil {
			rows, err = w.inst.Flush(ctx, wm, w.rows[:0])
		}
		if err != nil {
			e.fail(fmt.Errorf("partition %d: flush: %w", w.p, err))
			return
		}
	}
	e.m.CallSeconds.WithLabelValues(e.spec.Name, "flush").Observe(time.Since(start).Seconds())
	w.applied(op{flush: true, wm: wm})
	w.rows = rows
	if len(rows) == 0 {
		return
	}
	e.m.Rows.WithLabelValues(e.spec.Name).Add(float64(len(rows)))
	if err := e.live.PublishAt(e.spec.Aggregator, w.p, w.next, rows); err != nil {
		e.fail(&FailedError{Reason: "groups", Err: fmt.Errorf("partition %d: %w", w.p, err)})
		return
	}
	for _, r := range rows {
		w.pending[rowKey{r.Window, r.Start, r.Key}] = r
		w.pendingB += r.Bytes()
	}
	if w.pendingPast(1) {
		w.gate.close(pauseBacklog) // ClickHouse is behind: stop fetching
	}
}

// pendingPast reports whether the rows waiting for the next save reach n
// times the spec's bound, in rows or in the bytes of their flushes (every
// row of a flush counts: those replaced since may still keep it alive).
func (w *worker) pendingPast(n int) bool {
	s := &w.env.spec
	return len(w.pending) >= n*s.MaxPendingRows || w.pendingB >= n*s.MaxPendingBytes
}

// tick is the checkpoint cadence: an idle advance when the partition has
// nothing left to fetch, then a checkpoint.
func (w *worker) tick(ctx context.Context) {
	if w.env.hasFailed() {
		return
	}
	idle := !w.paced() && w.idleAdvance(ctx)
	w.checkpoint(ctx, idle)
	if idle && w.inflight {
		// Nothing is judged against the advanced watermark before the
		// checkpoint that records it is durable, so a replay after a
		// crash reaches the same decisions.
		w.hold = true
	}
}

// idleAdvance moves the watermark of a quiet partition by the wall clock so
// that its last windows close, but only when the partition is truly caught
// up: nothing queued, not paused, no save in flight, ClickHouse taking
// writes, quiet for IdleAfter, and the broker's last stable offset is where
// the partition stands.
func (w *worker) idleAdvance(ctx context.Context) bool {
	e := w.env
	if e.spec.IdleAfter <= 0 || w.inflight || w.hold || time.Since(w.lastRecord) < e.spec.IdleAfter ||
		!w.queue.empty() || w.gate.paused() {
		return false
	}
	if s, _ := e.breaker.Status(); s != sink.Closed {
		return false
	}
	target := w.wm.IdleTo(time.Now().UnixMilli())
	if !closesPane(e.spec.Windows, w.wm.Value(), target) {
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	end, err := e.kafka.EndOffset(lctx, w.p)
	if err != nil || end > w.next {
		return false
	}
	w.wm.Set(target)
	return true
}

// closesPane reports whether moving the watermark from wm to target closes
// at least one pane of a windowed window. The earliest pane still open
// holds wm (a pane is closed once its end is at or below the watermark),
// so the panes holding wm are the ones to look at; those holding wm+1 miss
// the pane that ends at wm+1.
func closesPane(windows []abi.Window, wm, target int64) bool {
	if target <= wm {
		return false
	}
	var starts []int64
	for _, win := range windows {
		if win.Kind == abi.Global {
			continue
		}
		starts = win.Starts(wm, starts[:0])
		for _, s := range starts {
			if win.Closed(s, target) {
				return true
			}
		}
	}
	return false
}

// checkpoint hands the writer what makes the progress durable: the rows
// emitted since the last save and the plugin's snapshot at the next offset.
// While a save is in flight it only notes that the next one is due, which
// goes when the writer is free again; rows coalesce in pending meanwhile.
// force writes even when nothing changed (an idle advance).
//
// A snapshot may be 64 MiB and a checkpoint due every 100 ms, so
// checkpoints are paced: after one, the next waits as long as its snapshot
// takes at Spec.SnapshotRate. Meanwhile saves write the rows alone,
// versioned by the offset reached, as a save whose checkpoint failed
// leaves them: a restart replays from the last checkpoint and rewrites
// them with the same counts.
func (w *worker) checkpoint(ctx context.Context, force bool) {
	if w.inflight {
		// the next save goes when the writer acknowledges this one
		// (acked), with what is emitted then: emitting now would only
		// pile rows up in pending while ClickHouse is behind
		w.due = true
		return
	}
	w.emit(ctx)
	paced := w.paced()
	if w.env.hasFailed() || w.abandoned || !force && len(w.pending) == 0 && (paced || !w.dirty) {
		return
	}
	s := save{rows: make([]abi.Row, 0, len(w.pending)), version: w.next}
	for _, r := range w.pending {
		s.rows = append(s.rows, r)
	}
	if !paced {
		if !w.rebase(ctx) {
			return
		}
		e := w.env
		s.cp = &checkpoint.Checkpoint{
			Deployment: e.spec.Name, Topic: e.spec.Topic, Partition: w.p,
			NextOffset: w.next, Watermark: w.wm.Value(), Snapshot: w.base, Plugin: e.plugin,
			StateVersion: e.module.Schema.StateVersion(),
		}
		w.pace(len(w.base))
		w.dirty = false
	}
	w.saves <- s
	clear(w.pending)
	w.pendingB = 0
	w.inflight, w.due = true, false
	w.gate.open(pauseBacklog)
}

// paced reports whether the next checkpoint must wait (Spec.SnapshotRate).
func (w *worker) paced() bool { return time.Now().Before(w.paceUntil) }

// pace spaces the next checkpoint from one of a snapshot of n bytes.
func (w *worker) pace(n int) {
	rate := w.env.spec.SnapshotRate
	if rate <= 0 {
		return
	}
	wait := time.Duration(int64(n) * int64(time.Second) / rate)
	w.paceUntil = time.Now().Add(wait)
	if wait > w.env.spec.CheckpointEvery && !w.pacedLog {
		w.pacedLog = true
		w.env.log.Warn("checkpoints spaced by the size of the plugin's snapshot; rows still go to ClickHouse at every checkpoint_every",
			"partition", w.p, "snapshot_bytes", n, "every", wait.Round(time.Millisecond), "snapshot_rate", rate)
	}
}

func (w *worker) acked(ctx context.Context, err error) {
	w.inflight, w.hold = false, false
	if err == nil && w.due {
		w.checkpoint(ctx, false)
	}
}

// writer stores saves in order, each until it is stored or ctx ends, and
// acknowledges each; it returns when saves is closed.
func (w *worker) writer(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	e := w.env
	for s := range w.saves {
		err := w.store(ctx, s)
		if err == nil && s.cp != nil {
			e.m.Checkpoints.WithLabelValues(e.spec.Name, "ok").Inc()
			e.m.Watermark.WithLabelValues(e.spec.Name, w.partStr).Set(float64(s.cp.Watermark) / 1000)
			e.checkpointed(w.p, s.cp.NextOffset)
		}
		w.acks <- err
	}
}

// storeTimeout bounds one attempt at a save, so a ClickHouse that accepts
// connections and never answers counts as down.
const storeTimeout = 30 * time.Second

// store writes dead letters, rows, then the checkpoint, retrying with
// backoff behind the host's circuit breaker until it succeeds or ctx ends.
func (w *worker) store(ctx context.Context, s save) error {
	e := w.env
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := w.flushDeadLetters(ctx)
		if err == nil {
			err = e.breaker.Do(ctx, func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, storeTimeout)
				defer cancel()
				if err := e.rows.Write(ctx, w.p, s.version, s.rows); err != nil {
					return err
				}
				if s.cp == nil {
					return nil
				}
				return e.cps.Save(ctx, *s.cp)
			})
		}
		if err == nil {
			w.failMu.Lock()
			w.failingSince, w.failErr = time.Time{}, nil
			w.failMu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.failMu.Lock()
		if w.failingSince.IsZero() {
			w.failingSince = time.Now()
		}
		w.failErr = err
		w.failMu.Unlock()
		e.m.Checkpoints.WithLabelValues(e.spec.Name, "error").Inc()
		e.log.Warn("checkpoint failed; retrying", "partition", w.p, "err", err, "in", backoff)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
	}
}

// failing reports since when the writer has failed to store the save it is
// on, and why; a zero time while saves go through.
func (w *worker) failing() (time.Time, error) {
	w.failMu.Lock()
	defer w.failMu.Unlock()
	return w.failingSince, w.failErr
}

// flushDeadLetters waits until every dead letter produced so far is in
// Kafka, producing again those Kafka refused: a checkpoint never covers a
// record whose dead letter is not written.
func (w *worker) flushDeadLetters(ctx context.Context) error {
	k := w.env.kafka
	if err := k.Flush(ctx); err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	w.dlMu.Lock()
	again := w.dlFailed
	w.dlFailed = nil
	w.dlMu.Unlock()
	if len(again) == 0 {
		return nil
	}
	for _, r := range again {
		w.produceDeadLetter(ctx, r)
	}
	if err := k.Flush(ctx); err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	w.dlMu.Lock()
	n := len(w.dlFailed)
	w.dlMu.Unlock()
	if n > 0 {
		return fmt.Errorf("dead letters: %d not written yet", n)
	}
	return nil
}

// deadLetter sends a record that cannot be counted to the dead-letter topic.
func (w *worker) deadLetter(ctx context.Context, rec *kgo.Record, reason, msg string) {
	e := w.env
	e.m.Records.WithLabelValues(e.spec.Name, "dead_letter").Inc()
	e.m.DeadLetters.WithLabelValues(e.spec.Name, reason).Inc()
	w.produceDeadLetter(ctx, source.DeadLetter(e.spec.DeadLetterTopic, e.spec.Name, rec, reason, msg))
}

func (w *worker) produceDeadLetter(ctx context.Context, dl *kgo.Record) {
	w.env.kafka.Produce(ctx, dl, func(r *kgo.Record, err error) {
		if err == nil {
			return
		}
		w.env.m.DeadLetters.WithLabelValues(w.env.spec.Name, "produce_retry").Inc()
		if source.Unwritable(err) {
			// Retrying it as it is would hold the partition's checkpoints
			// for good.
			w.env.log.Warn("dead letter refused by Kafka as it is; it is written without the record's key and value", "partition", w.p, "err", err)
			r = source.Stripped(r, err)
		} else {
			w.env.log.Warn("dead letter not written yet; it is retried before the next checkpoint", "partition", w.p, "err", err)
		}
		w.dlMu.Lock()
		w.dlFailed = append(w.dlFailed, r)
		w.dlMu.Unlock()
	})
}

// sleep waits d or until ctx ends, reporting whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
