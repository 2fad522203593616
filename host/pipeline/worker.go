package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/decode"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/window"
)

// worker owns one partition: its plugin instance, watermark and the rows
// emitted since the last checkpoint. Only its own goroutine touches them.
type worker struct {
	r    *Runner
	p    int32
	inst *sandbox.Instance
	dec  *decode.Decoder
	enc  *abi.BatchEncoder
	wm   *window.Watermark
	next int64 // the next offset to process
	// pending holds the latest row per (window, start, key) since the last
	// checkpoint; the checkpoint writes them, versioned by next.
	pending map[rowKey]abi.Row
	rows    []abi.Row
	dirty   bool  // processed records since the last checkpoint
	failed  error // set by fail: the partition is parked

	in      chan []*kgo.Record
	quit    chan bool // true: checkpoint before leaving
	done    chan struct{}
	saves   chan save // to the partition's checkpoint writer, in order
	partStr string
}

// save is one checkpoint on its way to ClickHouse.
type save struct {
	rows []abi.Row
	cp   checkpoint.Checkpoint
}

type rowKey struct {
	window uint8
	start  int64
	key    string
}

func newWorker(ctx context.Context, r *Runner, p int32) (*worker, error) {
	cp, err := r.deps.Checkpoints.Load(ctx, r.spec.Name, r.spec.Topic, p)
	if err != nil && !errors.Is(err, checkpoint.ErrNone) {
		return nil, err
	}
	fresh := errors.Is(err, checkpoint.ErrNone)
	schema := &r.deps.Module.Schema
	inst, err := r.deps.Module.Instantiate(ctx, abi.Config{Windows: r.spec.Windows, Params: r.spec.Params})
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", p, err)
	}
	w := &worker{
		r: r, p: p, inst: inst,
		dec:     decode.New(schema),
		enc:     abi.NewBatchEncoder(schema),
		wm:      window.New(r.spec.Windows, r.spec.Lateness.Milliseconds(), r.spec.IdleAfter.Milliseconds(), window.Start),
		pending: map[rowKey]abi.Row{},
		in:      make(chan []*kgo.Record, 4),
		quit:    make(chan bool, 1),
		done:    make(chan struct{}),
		saves:   make(chan save, 1),
		partStr: strconv.Itoa(int(p)),
	}
	if !fresh {
		if err := inst.Restore(ctx, cp.Snapshot); err != nil {
			inst.Close(ctx)
			return nil, fmt.Errorf("partition %d: restoring checkpoint at offset %d: %w", p, cp.NextOffset, err)
		}
		w.next = cp.NextOffset
		w.wm = window.New(r.spec.Windows, r.spec.Lateness.Milliseconds(), r.spec.IdleAfter.Milliseconds(), cp.Watermark)
		r.log.Info("partition restored", "partition", p, "offset", cp.NextOffset)
	}
	return w, nil
}

func (w *worker) stop(checkpoint bool) { w.quit <- checkpoint }

func (w *worker) run() {
	defer close(w.done)
	ctx := context.Background()
	defer w.inst.Close(ctx)
	// The checkpoint writer runs beside the worker, so that ClickHouse round
	// trips do not hold up records and live deltas. It writes the saves in
	// order; leaving, the worker waits for it (or, when the partition was
	// lost to another host, stops it: that host writes from now on).
	wctx, stopWriter := context.WithCancel(ctx)
	written := make(chan struct{})
	go w.writer(wctx, written)
	defer func() {
		close(w.saves)
		select {
		case <-written:
		case <-time.After(30 * time.Second):
			w.r.log.Error("checkpoint writer still busy after 30s; leaving it", "partition", w.p)
		}
		stopWriter()
	}()
	emit := time.NewTicker(w.r.spec.EmitEvery)
	defer emit.Stop()
	cp := time.NewTicker(w.r.spec.CheckpointEvery)
	defer cp.Stop()
	for {
		select {
		case recs := <-w.in:
			w.handle(ctx, recs)
		case <-emit.C:
			w.wm.Tick(time.Now().UnixMilli())
			w.emit(ctx)
		case <-cp.C:
			w.checkpoint(ctx)
		case keep := <-w.quit:
			if !keep {
				stopWriter()
				return
			}
			for {
				select {
				case recs := <-w.in:
					w.handle(ctx, recs)
					continue
				default:
				}
				break
			}
			w.checkpoint(ctx)
			return
		}
	}
}

// handle decodes and checks records and folds the good ones in, in batches
// of at most MaxBatch.
func (w *worker) handle(ctx context.Context, recs []*kgo.Record) {
	if w.failed != nil {
		return
	}
	now := time.Now().UnixMilli()
	m := w.r.deps.Metrics
	name := w.r.spec.Name
	for _, rec := range recs {
		if w.failed != nil {
			return
		}
		if rec.Offset < w.next {
			continue // covered by the checkpoint already
		}
		ts := rec.Timestamp.UnixMilli()
		switch {
		case w.wm.Late(ts):
			w.deadLetter(ctx, rec, "late", fmt.Sprintf("late: event time %d is before the watermark %d allows (window closed)", ts, w.wm.Value()))
		default:
			err := w.dec.Add(rec.Value, ts)
			if errors.Is(err, decode.ErrFull) {
				w.process(ctx)
				err = w.dec.Add(rec.Value, ts)
			}
			if err != nil {
				w.deadLetter(ctx, rec, "malformed", err.Error())
				break
			}
			w.wm.Advance(ts, now)
			m.Records.WithLabelValues(name, "processed").Inc()
		}
		w.next = rec.Offset + 1
		w.dirty = true
		if w.dec.Len() >= w.r.spec.MaxBatch {
			w.process(ctx)
		}
	}
	w.process(ctx)
}

func (w *worker) process(ctx context.Context) {
	if w.dec.Len() == 0 {
		return
	}
	defer w.dec.Reset()
	buf, err := w.enc.Encode(w.dec.Batch())
	if err != nil {
		w.fail(fmt.Errorf("encoding batch: %w", err))
		return
	}
	start := time.Now()
	if err := w.inst.Process(ctx, buf); err != nil {
		w.fail(err)
		return
	}
	w.r.deps.Metrics.CallSeconds.WithLabelValues(w.r.spec.Name, "process").Observe(time.Since(start).Seconds())
}

// fail parks the partition after a plugin failure: it stops fetching and
// writes no further checkpoint, so nothing after the last checkpoint is lost;
// the partition resumes from it when it is assigned again (restart or
// rebalance). Isolating the poison record is the sandbox's job (RATIONALE.md).
func (w *worker) fail(err error) {
	if w.failed != nil {
		return
	}
	w.failed = err
	w.r.log.Error("partition stopped: plugin failed; it resumes from its last checkpoint on the next assignment", "partition", w.p, "err", err)
	w.r.cl.PauseFetchPartitions(map[string][]int32{w.r.spec.Topic: {w.p}})
	w.r.deps.Metrics.Failures.WithLabelValues(w.r.spec.Name).Inc()
}

// emit flushes the plugin at the watermark and hands the rows to the live
// hub; they wait in pending for the next checkpoint.
func (w *worker) emit(ctx context.Context) {
	if w.failed != nil {
		return
	}
	start := time.Now()
	rows, err := w.inst.Flush(ctx, w.wm.Value(), w.rows[:0])
	if err != nil {
		w.fail(err)
		return
	}
	w.r.deps.Metrics.CallSeconds.WithLabelValues(w.r.spec.Name, "flush").Observe(time.Since(start).Seconds())
	w.rows = rows
	if len(rows) == 0 {
		return
	}
	w.r.deps.Metrics.Rows.WithLabelValues(w.r.spec.Name).Add(float64(len(rows)))
	w.r.deps.Hub.Publish(w.r.spec.Name, w.p, rows)
	for _, r := range rows {
		w.pending[rowKey{r.Window, r.Start, r.Key}] = r
	}
}

// checkpoint hands the writer what makes the progress durable: the rows
// emitted since the last checkpoint and the plugin's snapshot at the next
// offset. The writer stores them in order (dead letters, rows, then the
// checkpoint); the Kafka commit follows from the poll loop. A crash between
// steps replays from the previous checkpoint and rewrites identical rows.
func (w *worker) checkpoint(ctx context.Context) {
	w.emit(ctx)
	if w.failed != nil || !w.dirty && len(w.pending) == 0 {
		return
	}
	snap, err := w.inst.Snapshot(ctx)
	if err != nil {
		w.fail(err)
		return
	}
	rows := make([]abi.Row, 0, len(w.pending))
	for _, r := range w.pending {
		rows = append(rows, r)
	}
	w.saves <- save{rows: rows, cp: checkpoint.Checkpoint{
		Deployment: w.r.spec.Name, Topic: w.r.spec.Topic, Partition: w.p,
		NextOffset: w.next, Watermark: w.wm.Value(), Snapshot: snap, Plugin: w.r.deps.PluginSHA,
	}}
	clear(w.pending)
	w.dirty = false
}

// writer stores saves in order, retrying each until it is stored or ctx
// ends, then closes done.
func (w *worker) writer(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	m := w.r.deps.Metrics
	for s := range w.saves {
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			if ctx.Err() != nil {
				break
			}
			err := w.store(ctx, s)
			if err == nil {
				m.Checkpoints.WithLabelValues(w.r.spec.Name, "ok").Inc()
				m.Watermark.WithLabelValues(w.r.spec.Name, w.partStr).Set(float64(s.cp.Watermark) / 1000)
				w.r.checkpointed(w.p, s.cp.NextOffset)
				break
			}
			m.Checkpoints.WithLabelValues(w.r.spec.Name, "error").Inc()
			w.r.log.Warn("checkpoint failed; retrying", "partition", w.p, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
		}
	}
}

func (w *worker) store(ctx context.Context, s save) error {
	if err := w.r.cl.Flush(ctx); err != nil {
		return fmt.Errorf("dead letters: %w", err)
	}
	if err := w.r.deps.Table.Write(ctx, w.p, s.cp.NextOffset, s.rows); err != nil {
		return err
	}
	return w.r.deps.Checkpoints.Save(ctx, s.cp)
}

// deadLetter sends a record that cannot be counted to the dead-letter topic,
// with the reason and where it came from in headers.
func (w *worker) deadLetter(ctx context.Context, rec *kgo.Record, reason, msg string) {
	w.r.deps.Metrics.Records.WithLabelValues(w.r.spec.Name, "dead_letter").Inc()
	w.r.deps.Metrics.DeadLetters.WithLabelValues(w.r.spec.Name, reason).Inc()
	dl := &kgo.Record{
		Topic:     w.r.spec.DeadLetterTopic,
		Key:       rec.Key,
		Value:     rec.Value,
		Timestamp: rec.Timestamp,
		Headers: []kgo.RecordHeader{
			{Key: "wagg.error", Value: []byte(msg)},
			{Key: "wagg.reason", Value: []byte(reason)},
			{Key: "wagg.deployment", Value: []byte(w.r.spec.Name)},
			{Key: "wagg.topic", Value: []byte(rec.Topic)},
			{Key: "wagg.partition", Value: []byte(strconv.Itoa(int(rec.Partition)))},
			{Key: "wagg.offset", Value: []byte(strconv.FormatInt(rec.Offset, 10))},
		},
	}
	w.r.cl.Produce(ctx, dl, func(_ *kgo.Record, err error) {
		if err != nil {
			w.r.deps.Metrics.DeadLetters.WithLabelValues(w.r.spec.Name, "produce_failed").Inc()
			w.r.log.Error("dead letter not written", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		}
	})
}
