package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/plugins"
)

// backfill is a fresh start of a deployment catching up in a generation of
// its own beside the generation that serves the view and the live hub.
// Once every partition of the new one has checkpointed at least as far as
// the old one, it takes over: the old stops, the view moves over in one
// RENAME, the hub starts a new epoch, and the new generation runs on as the
// deployment from its checkpoints (its first flush re-emits its whole
// state to the hub). It is not stored: a host restarted meanwhile forgets
// it and runs the old generation on.
type backfill struct {
	d       plugins.Deployment // the new generation's spec
	prev    plugins.Deployment // the generation it replaces
	from    string
	man     plugins.Manifest
	mod     *sandbox.Module
	parts   int
	cancel  context.CancelFunc // stops the runner and the watch
	done    chan struct{}      // closed when the runner returned
	watched chan struct{}      // closed when the watch returned

	mu     sync.Mutex
	status string
}

func (b *backfill) setStatus(s string) {
	b.mu.Lock()
	b.status = s
	b.mu.Unlock()
}

func (b *backfill) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("generation %d from %s: %s", b.d.Generation, b.from, b.status)
}

// discard is the live hub of a generation that backfills: its rows go to
// its own table only.
type discard struct{}

func (discard) PublishAt(string, int32, int64, []abi.Row) error { return nil }

// startFresh starts d anew from d.Start. With no deployment of the name
// before, that is a plain start; otherwise a backfill into the next
// generation that has no checkpoints yet.
func (m *Manager) startFresh(ctx context.Context, d plugins.Deployment, man plugins.Manifest, mod *sandbox.Module, prev *plugins.Deployment) (api.Deployment, error) {
	at, err := plugins.ParseStart(d.Start)
	if err != nil {
		return api.Deployment{}, err
	}
	parts, err := m.ensureTopics(ctx, d)
	if err != nil {
		return api.Deployment{}, err
	}
	start, err := m.startOffsets(ctx, d.Topic, parts, at)
	if err != nil {
		return api.Deployment{}, err
	}
	if prev == nil {
		return m.launch(ctx, d, man, mod, start, true)
	}
	for d.Generation = prev.Generation + 1; ; d.Generation++ {
		w, err := m.o.Checkpoints.Writers(ctx, d.Storage(), d.Topic)
		if err != nil {
			return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
		}
		if len(w) == 0 {
			break // a generation a backfill given up left behind is not reused
		}
	}
	table, err := sink.Ensure(ctx, m.o.ClickHouse, m.o.Database, hiddenView(d.Storage()), d.Storage(), &mod.Schema, d.ABIWindows())
	if err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	runner, err := m.runner(d, man, mod, table, discard{}, m.o.Checkpoints, start)
	if err != nil {
		return api.Deployment{}, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	b := &backfill{d: d, prev: *prev, from: d.Start, man: man, mod: mod, parts: parts, cancel: cancel,
		done: make(chan struct{}), watched: make(chan struct{}), status: "catching up"}
	b.d.Start = ""
	m.mu.Lock()
	m.backfills[d.Name] = b
	m.mu.Unlock()
	go func() {
		defer close(b.done)
		if err := runner.Run(rctx); err != nil {
			b.setStatus("failed: " + err.Error())
			m.o.Log.Error("backfill failed; the old generation runs on", "deployment", d.Name, "generation", d.Generation, "err", err)
		}
	}()
	go m.watch(rctx, b)
	m.o.Log.Info("backfill started", "deployment", d.Name, "generation", d.Generation, "from", d.Start, "plugin", d.Plugin)
	st := api.Deployment{Deployment: *prev, Table: m.o.Database + "." + d.Name, Status: api.StatusRunning}
	m.mu.Lock()
	if r := m.running[d.Name]; r != nil {
		st = m.status(r)
	}
	m.mu.Unlock()
	st.Backfill = b.String()
	return st, nil
}

// relaunch starts a stored spec again with its own plugin.
func (m *Manager) relaunch(ctx context.Context, d plugins.Deployment) error {
	name, version := d.PluginRef()
	man, err := m.o.Registry.Get(name, version)
	if err != nil {
		return err
	}
	mod, err := m.o.Registry.Module(ctx, man)
	if err != nil {
		return err
	}
	_, err = m.launch(ctx, d, man, mod, nil, false)
	return err
}

// viewGeneration is the generation the view of a deployment that is not
// stored (undeployed) shows, so that deploying it again goes on with it:
// the latest whose raw table exists and whose own view took the
// deployment's name (a backfill given up keeps its hidden view).
func (m *Manager) viewGeneration(ctx context.Context, name string) (int, error) {
	ts, err := sink.Tables(ctx, m.o.ClickHouse, m.o.Database, name)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	g := 0
	for i := 1; ; i++ {
		s := plugins.GenerationName(name, i)
		if !ts[sink.RawTable(s)] {
			return g, nil
		}
		if !ts[hiddenView(s)] {
			g = i
		}
	}
}

// hiddenView is the view Ensure gives a generation before it takes over,
// and the name the view of a replaced generation keeps.
func hiddenView(storage string) string { return storage + "__view" }

// startOffsets resolves where each partition of a fresh start begins.
func (m *Manager) startOffsets(ctx context.Context, topic string, parts int, at plugins.StartAt) (map[int32]int64, error) {
	out := map[int32]int64{}
	if at.Time.IsZero() {
		for p := range parts {
			out[int32(p)] = at.Offset
		}
		return out, nil
	}
	offs, err := m.o.Admin.ListOffsetsAfterMilli(ctx, at.Time.UnixMilli(), topic)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka: offsets at %s: %w", api.ErrUnavailable, at.Time.Format(time.RFC3339), err)
	}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out, nil
}

// cancelBackfill gives up the backfill of a deployment, if one runs.
func (m *Manager) cancelBackfill(name string) {
	m.mu.Lock()
	b := m.backfills[name]
	delete(m.backfills, name)
	m.mu.Unlock()
	if b == nil {
		return
	}
	b.cancel()
	<-b.done
	<-b.watched
}

// caughtUp reports whether every partition of the new generation has
// checkpointed at least as far as the old one did.
func (m *Manager) caughtUp(ctx context.Context, b *backfill) (bool, error) {
	for p := range b.parts {
		nw, err := m.o.Checkpoints.Load(ctx, b.d.Storage(), b.d.Topic, int32(p))
		if errors.Is(err, checkpoint.ErrNone) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		old, err := m.o.Checkpoints.Load(ctx, b.prev.Storage(), b.prev.Topic, int32(p))
		if err != nil && !errors.Is(err, checkpoint.ErrNone) {
			return false, err
		}
		if nw.NextOffset < old.NextOffset {
			return false, nil
		}
	}
	return true, nil
}

// watch waits for the backfill to catch up, then switches over.
func (m *Manager) watch(ctx context.Context, b *backfill) {
	defer close(b.watched)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.done:
			return // failed: the old generation runs on
		case <-tick.C:
		}
		if ok, err := m.caughtUp(ctx, b); err != nil || !ok {
			continue
		}
		go m.switchOver(b) // cancelBackfill, which a deploy calls under m.deploying, waits for watch
		return
	}
}

// switchOver makes the caught-up generation the deployment.
func (m *Manager) switchOver(b *backfill) {
	m.deploying.Lock()
	defer m.deploying.Unlock()
	m.mu.Lock()
	current := m.backfills[b.d.Name] == b
	delete(m.backfills, b.d.Name)
	m.mu.Unlock()
	if !current {
		return // given up meanwhile
	}
	ctx := context.Background()
	log := m.o.Log.With("deployment", b.d.Name, "generation", b.d.Generation)
	b.setStatus("switching over")
	// The old generation stops first (its last checkpoint), then the new
	// one catches up with that, so that the view never goes back.
	m.stop(b.d.Name)
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := m.caughtUp(ctx, b)
		if ok || time.Now().After(deadline) {
			if !ok {
				log.Warn("switching over before the new generation reached the old one's last checkpoint", "err", err)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.cancel()
	<-b.done
	if err := sink.SwitchView(ctx, m.o.ClickHouse, m.o.Database, b.d.Name, hiddenView(b.d.Storage()), hiddenView(b.prev.Storage())); err != nil {
		log.Error("switching the view failed; the old generation runs on", "err", err)
		if err := m.relaunch(ctx, b.prev); err != nil {
			log.Error("restarting the old generation", "err", err)
		}
		return
	}
	m.o.Live.Reset(b.d.Name, &b.mod.Schema, b.d.ABIWindows())
	if _, err := m.launch(ctx, b.d, b.man, b.mod, nil, true); err != nil {
		log.Error("starting the new generation after the switch", "err", err)
		return
	}
	log.Info("backfill took over: the view and the live subscribers follow the new generation", "from", b.from)
}
