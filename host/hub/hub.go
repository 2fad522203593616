package hub

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wagg/wagg/abi"
)

// Hub merges the per-partition rows of every registered aggregator and
// serves them to WebSocket subscribers. Its methods are safe for concurrent
// use.
type Hub struct {
	opts Options
	log  *slog.Logger

	mu       sync.RWMutex
	aggs     map[string]*aggState
	sessions map[*session]struct{}
	perIP    map[string]int // open connections per remote address (with Auth)
	closed   bool
	quit     chan struct{}
	wg       sync.WaitGroup // sessions and the sweeper
}

// New returns a running hub. Close it to release its goroutines.
func New(o *Options) *Hub {
	h := &Hub{
		opts:     o.withDefaults(),
		aggs:     map[string]*aggState{},
		sessions: map[*session]struct{}{},
		perIP:    map[string]int{},
		quit:     make(chan struct{}),
	}
	h.log = h.opts.Logger
	h.wg.Add(1)
	go h.sweep()
	return h
}

// Register declares an aggregator, or declares it again. The same schema and
// windows keep its state; another schema or other windows start a new epoch
// with empty state, because the old rows no longer mean the same thing, and
// close its subscribers with StatusRedeployed so they resubscribe.
//
// Rows name windows by their index into windows (abi.Row.Window).
func (h *Hub) Register(aggregator string, s *abi.Schema, windows []abi.Window) {
	h.register(aggregator, s, windows, false, nil)
}

// Reset starts an aggregator over in a new epoch with empty state, whatever
// its schema, closing its subscribers with StatusRedeployed so that they
// resubscribe: its rows are about to come from a new generation of its
// deployment, and the old values must not linger beside them.
func (h *Hub) Reset(aggregator string, s *abi.Schema, windows []abi.Window) {
	h.register(aggregator, s, windows, true, nil)
}

// ResetWith is Reset with the new epoch's first state: load hands it rows
// (each partition's in the order of their versions, as PublishAt takes
// them) before any subscriber can see the new epoch, so that the
// subscribers Reset closes come back to a whole snapshot, never an empty
// one. The rows make no deltas: the first snapshot carries them.
func (h *Hub) ResetWith(aggregator string, s *abi.Schema, windows []abi.Window, load func(publish func(partition int32, version int64, rows []abi.Row))) {
	h.register(aggregator, s, windows, true, load)
}

// Unregister forgets an aggregator that is no longer deployed: its state
// goes and its subscribers are closed with StatusRedeployed; subscribing to
// it is refused as unknown until it is registered again (its first
// snapshot then comes from the state its checkpoints left).
func (h *Hub) Unregister(aggregator string) {
	h.mu.Lock()
	old := h.aggs[aggregator]
	delete(h.aggs, aggregator)
	h.mu.Unlock()
	if old != nil {
		h.log.Info("hub: aggregator undeployed; its subscribers are closed", "aggregator", aggregator)
		old.retire(StatusRedeployed, "aggregator undeployed")
	}
}

func (h *Hub) register(aggregator string, s *abi.Schema, windows []abi.Window, reset bool, load func(func(int32, int64, []abi.Row))) {
	if s == nil || len(s.Metrics) == 0 {
		h.log.Error("hub: register without metrics ignored", "aggregator", aggregator)
		return
	}
	sc := &abi.Schema{
		ABI:     s.ABI,
		Input:   slices.Clone(s.Input),
		Raw:     s.Raw,
		Keys:    slices.Clone(s.Keys),
		Metrics: slices.Clone(s.Metrics),
	}
	wc := slices.Clone(windows)
	var next *aggState
	if load != nil {
		next = newAggState(aggregator, newEpoch(), sc, wc, &h.opts)
		load(func(partition int32, version int64, rows []abi.Row) {
			if latest, ok := next.versions[partition]; ok && version < latest {
				return
			}
			next.versions[partition] = version
			if _, _, err := next.apply(partition, rows); err != nil {
				h.log.Warn("hub: rows of a new epoch's first state refused", "aggregator", aggregator, "partition", partition, "err", err)
			}
		})
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	old := h.aggs[aggregator]
	if !reset && old != nil && reflect.DeepEqual(old.schema, sc) && slices.Equal(old.windows, wc) {
		h.mu.Unlock()
		return
	}
	if next == nil {
		next = newAggState(aggregator, newEpoch(), sc, wc, &h.opts)
	}
	h.aggs[aggregator] = next
	h.mu.Unlock()
	if old != nil {
		h.log.Info("hub: aggregator redeployed with a new schema; subscribers must resubscribe", "aggregator", aggregator)
		old.retire(StatusRedeployed, "aggregator redeployed")
	}
}

// newEpoch names a fresh state. It changes with every Register of a new
// schema and every process, so a client can never resume across either.
func newEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (h *Hub) lookup(name string) *aggState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.aggs[name]
}

// locked returns the current state of an aggregator with its lock held, or
// nil when it is not registered. It steps over a state that a concurrent
// Register replaced.
func (h *Hub) locked(name string) *aggState {
	for range 8 {
		a := h.lookup(name)
		if a == nil {
			return nil
		}
		a.mu.Lock()
		if !a.gone {
			return a
		}
		a.mu.Unlock()
	}
	return nil
}

// Publish merges one partition's rows into the aggregator's state: each row
// is that partition's absolute value of one group in one pane, final once
// the partition's watermark closed the pane. The merged rows that changed
// become one delta, numbered with the next seq and encoded once for every
// subscriber. Rows that change nothing (a replay re-sending the same values)
// make no delta.
//
// Publish never waits for a subscriber. Rows of an aggregator that is not
// registered are dropped. The hub does not keep rows after Publish returns.
// Rows that would make a pane hold more than MaxGroupsPerPane groups are
// left out, and the error says where: the caller should stop the plugin.
func (h *Hub) Publish(aggregator string, partition int32, rows []abi.Row) error {
	return h.PublishAt(aggregator, partition, -1, rows)
}

// PublishAt is Publish of rows current as of version, the partition's next
// source offset: rows of a version older than the partition's latest are a
// replay of values already merged (a partition restored from its
// checkpoint on another host) and are dropped, so that a live value never
// goes back. A version below 0 is always applied.
func (h *Hub) PublishAt(aggregator string, partition int32, version int64, rows []abi.Row) error {
	if len(rows) == 0 {
		return nil
	}
	a := h.locked(aggregator)
	if a == nil {
		h.log.Debug("hub: rows for an unregistered aggregator dropped", "aggregator", aggregator, "rows", len(rows))
		return nil
	}
	defer a.mu.Unlock()
	if a.stale(partition, version) {
		return nil
	}
	out, evicted, err := a.apply(partition, rows)
	if len(out) == 0 && len(evicted) == 0 {
		return err
	}
	a.push(out, evicted)
	return err
}

// sweep closes the subscribers that need deltas no longer kept. A writer
// notices that itself when it next looks at the history; the sweep is for
// writers stuck in a write to a peer that stopped reading, so the close is
// queued behind that write and reaches the peer as soon as it reads again.
func (h *Hub) sweep() {
	defer h.wg.Done()
	t := time.NewTicker(h.opts.sweepEvery)
	defer t.Stop()
	var sw sweeper
	for {
		select {
		case <-h.quit:
			return
		case <-t.C:
		}
		sw.sweep(h)
	}
}

// sweeper is one sweep's scratch, kept from one to the next.
type sweeper struct {
	aggs []*aggState
	slow []*subscription
}

func (sw *sweeper) sweep(h *Hub) {
	// cleared, not only cut: their arrays would keep an undeployed
	// aggregator's whole state alive
	clear(sw.aggs)
	clear(sw.slow)
	h.mu.RLock()
	sw.aggs = sw.aggs[:0]
	for _, a := range h.aggs {
		sw.aggs = append(sw.aggs, a)
	}
	h.mu.RUnlock()
	sw.slow = sw.slow[:0]
	for _, a := range sw.aggs {
		a.mu.RLock()
		oldest := a.oldest()
		for s := range a.subs {
			if s.cursor.Load()+1 < oldest {
				sw.slow = append(sw.slow, s)
			}
		}
		a.mu.RUnlock()
	}
	for _, s := range sw.slow {
		s.sess.closeWith(StatusSlowConsumer, "slow consumer")
	}
}

// Close closes every subscriber with StatusGoingAway and returns when their
// goroutines are done. Peers that do not answer the close handshake within a
// few seconds are disconnected. The hub serves no new connections after
// Close; Register and Publish become no-ops for new aggregators.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.wg.Wait()
		return
	}
	h.closed = true
	close(h.quit)
	sessions := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	for _, s := range sessions {
		s.closeWith(websocket.StatusGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(h.opts.closeGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	for _, s := range sessions {
		s.conn.closeNow()
	}
	<-done
}
