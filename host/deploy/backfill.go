package deploy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/catalog"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/plugins"
)

// A backfill is a fresh start of a deployment catching up in a generation
// of its own beside the generation that serves the view and the live hubs.
// It lives in the catalog (catalog.Backfill), so every host runs its share
// of the new generation's partitions (its consumer group spreads them) and
// a host that restarts resumes it from its checkpoints. It moves through
// stages that any host may record, each recorded for every host at once:
//
//   - catching up: every host runs the old generation as the deployment and
//     the new one beside it, its rows to its own table only. A host that
//     finds every partition of the new one checkpointed at least as far as
//     the old one records stopping.
//   - stopping: every host stops the old generation (its last checkpoint).
//     A host that finds the old generation's consumer group empty and the
//     new one caught up with its last checkpoints records switched.
//   - switched: every host stops its share of the new generation, makes
//     the view show it (one RENAME, done by whichever host comes first; the
//     others find it done), starts a new epoch in its hub and runs the new
//     generation as the deployment from its checkpoints (its first flush
//     re-emits its whole state).
//
// The decision is the record, the RENAME follows it: hosts that race write
// equal records, one that crashes halfway leaves the others (or itself,
// restarted) to find the stage and go on, and the view only ever moves to
// the generation the log chose.
type backfill struct {
	b      catalog.Backfill   // as recorded; Revision names it
	prev   plugins.Deployment // the generation it replaces
	parts  int
	cancel context.CancelFunc // stops the runner and the watch
	done   chan struct{}      // closed when the runner returned
	// watched is closed when the watch returned.
	watched chan struct{}

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
	return fmt.Sprintf("generation %d from %s: %s", b.b.Spec.Generation, b.b.From, b.status)
}

// discard is the live hub of a generation that backfills: its rows go to
// its own table only.
type discard struct{}

func (discard) PublishAt(string, int32, int64, []abi.Row) error { return nil }

// startFresh records a fresh start of d from d.Start. With no deployment of
// the name before, that is a plain start; otherwise a backfill into a new
// generation, which every host (this one too, before it answers) starts.
func (m *Manager) startFresh(ctx context.Context, d plugins.Deployment, man plugins.Manifest, mod *sandbox.Module, prev *catalog.Entry) (api.Deployment, error) {
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
	replaces := prev.Revision
	if cur := prev.Current(); cur.Generation != prev.Spec.Generation {
		// The deployment runs a generation an earlier backfill switched
		// to: record that as its spec first, so that the new backfill
		// replaces it and not the one before.
		if err := m.o.Specs.Put(cur, nil); err != nil {
			return api.Deployment{}, err
		}
		e, ok := m.o.Specs.Entry(d.Name)
		if !ok {
			return api.Deployment{}, fmt.Errorf("%w: deployment %s undeployed meanwhile", plugins.ErrNotFound, d.Name)
		}
		replaces = e.Revision
	}
	from := d.Start
	b, err := m.o.Specs.PutBackfill(ctx, replaces, d, from, start)
	if errors.Is(err, catalog.ErrStale) {
		return api.Deployment{}, fmt.Errorf("%w: %w; deploy again", plugins.ErrConflict, err)
	}
	if err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	m.o.Log.Info("backfill recorded", "deployment", d.Name, "generation", b.Spec.Generation, "from", from, "plugin", d.Plugin)
	m.syncLocked(d.Name)
	for _, st := range m.List() {
		if st.Name == d.Name {
			if st.Backfill == "" {
				st.Backfill = fmt.Sprintf("generation %d from %s: not started on this host yet", b.Spec.Generation, from)
			}
			return st, nil
		}
	}
	return api.Deployment{Deployment: prev.Spec, Table: m.o.Database + "." + d.Name, Status: api.StatusRunning,
		Backfill: fmt.Sprintf("generation %d from %s: not started on this host yet", b.Spec.Generation, from)}, nil
}

// runBackfill makes this host run its share of the catalog's backfill of e,
// unless it does already.
func (m *Manager) runBackfill(ctx context.Context, e catalog.Entry) error {
	cb := *e.Backfill
	name := cb.Spec.Name
	m.mu.Lock()
	cur := m.backfills[name]
	m.mu.Unlock()
	if cur != nil && cur.b.Revision == cb.Revision {
		return nil
	}
	m.cancelBackfill(name)
	d := cb.Spec
	man, mod, err := m.plugin(ctx, d)
	if err != nil {
		return err
	}
	parts, err := m.ensureTopics(ctx, d)
	if err != nil {
		return err
	}
	table, err := sink.Ensure(ctx, m.o.ClickHouse, m.o.Database, hiddenView(d.Storage()), d.Storage(), &mod.Schema, d.ABIWindows())
	if err != nil {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	runner, err := m.runner(d, man, mod, table, discard{}, m.o.Checkpoints, cb.Offsets)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	b := &backfill{b: cb, prev: e.Spec, parts: parts, cancel: cancel,
		done: make(chan struct{}), watched: make(chan struct{}), status: "catching up"}
	m.mu.Lock()
	m.backfills[name] = b
	m.mu.Unlock()
	log := m.o.Log.With("deployment", name, "generation", d.Generation)
	go func() {
		defer close(b.done)
		err := runner.Run(rctx)
		if err == nil {
			return // stopped
		}
		b.setStatus("failed: " + err.Error())
		log.Error("backfill failed: given up on every host; the old generation runs on", "err", err)
		go func() {
			wctx, wcancel := context.WithTimeout(context.Background(), startTimeout)
			defer wcancel()
			if err := m.o.Specs.GiveUpBackfill(wctx, name, cb.Revision); err != nil {
				log.Error("recording that the backfill was given up", "err", err)
			}
			m.Changed(name)
		}()
	}()
	go m.watch(rctx, b)
	log.Info("backfill running on this host", "from", cb.From, "plugin", d.Plugin)
	return nil
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
	for _, gen := range generations(name, ts) {
		if !ts[hiddenView(plugins.GenerationName(name, gen))] {
			g = max(g, gen)
		}
	}
	return g, nil
}

// generations lists the generations of name whose raw table is in ts.
func generations(name string, ts map[string]bool) []int {
	re := regexp.MustCompile("^" + regexp.QuoteMeta(name) + `(?:__g([0-9]+))?__partitions$`)
	var out []int
	for t := range ts {
		sm := re.FindStringSubmatch(t)
		if sm == nil {
			continue
		}
		g := 0
		if sm[1] != "" {
			n, err := strconv.Atoi(sm[1])
			if err != nil {
				continue
			}
			g = n
		}
		out = append(out, g)
	}
	return out
}

// showView makes the deployment's view show generation storage, unless it
// does: one RENAME that gives the view shown until then its hidden name.
// Hosts that race find it done; a host that looks while another renames
// (a RENAME of several tables is not atomic on every ClickHouse) looks
// again a few times.
func (m *Manager) showView(ctx context.Context, name, storage string) error {
	var err error
	for attempt := range showAttempts {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		var ts map[string]bool
		if ts, err = sink.Tables(ctx, m.o.ClickHouse, m.o.Database, name); err != nil {
			continue
		}
		if !ts[hiddenView(storage)] {
			return nil // shown
		}
		shown := ""
		for _, g := range generations(name, ts) {
			if s := plugins.GenerationName(name, g); s != storage && !ts[hiddenView(s)] {
				shown = s
			}
		}
		if shown == "" || !ts[name] {
			err = fmt.Errorf("view %s.%s: no generation it shows beside %s", m.o.Database, name, storage)
			continue
		}
		if err = sink.SwitchView(ctx, m.o.ClickHouse, m.o.Database, name, hiddenView(storage), hiddenView(shown)); err == nil {
			return nil
		}
	}
	return err
}

// showAttempts bounds how often showView looks at the tables.
const showAttempts = 8

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

// cancelBackfill stops this host's share of a deployment's backfill, if it
// runs one (its runner checkpoints); the catalog keeps it.
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
		nw, err := m.o.Checkpoints.Load(ctx, b.b.Spec.Storage(), b.b.Spec.Topic, int32(p))
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

// stopped reports whether no host runs the old generation any more: its
// consumer group has no member (a host that stopped it left; one killed
// is dropped after the session timeout).
func (m *Manager) stopped(ctx context.Context, b *backfill) (bool, error) {
	group := ConsumerGroup(m.o.Database, b.prev.Storage())
	gs, err := m.o.Admin.DescribeGroups(ctx, group)
	if err != nil {
		return false, err
	}
	g, ok := gs[group]
	if !ok {
		return false, fmt.Errorf("group %s not described", group)
	}
	if g.Err != nil {
		return false, g.Err
	}
	return len(g.Members) == 0, nil
}

// watchEvery is how often a host checks a backfill's progress.
const watchEvery = 500 * time.Millisecond

// watch moves the backfill to its next stage when this host finds it may,
// until it switched over or is no longer the deployment's.
func (m *Manager) watch(ctx context.Context, b *backfill) {
	defer close(b.watched)
	name := b.b.Spec.Name
	log := m.o.Log.With("deployment", name, "generation", b.b.Spec.Generation)
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.done:
			return // failed: the old generation runs on
		case <-tick.C:
		}
		e, ok := m.o.Specs.Entry(name)
		if !ok || e.Backfill == nil || e.Backfill.Revision != b.b.Revision {
			return // given up or replaced: the next sync stops it here
		}
		cctx, cancel := context.WithTimeout(ctx, startTimeout)
		var err error
		switch e.Backfill.Stage {
		case catalog.StageCatchingUp:
			var ok bool
			if ok, err = m.caughtUp(cctx, b); ok {
				if err = m.o.Specs.PutStage(cctx, name, b.b.Revision, catalog.StageStopping); err == nil {
					log.Info("backfill caught up: the old generation stops on every host")
					m.Changed(name)
				}
			}
		case catalog.StageStopping:
			b.setStatus("switching over")
			var ok, up bool
			if ok, err = m.stopped(cctx, b); ok {
				if up, err = m.caughtUp(cctx, b); up {
					if err = m.o.Specs.PutStage(cctx, name, b.b.Revision, catalog.StageSwitched); err == nil {
						log.Info("backfill caught up with the old generation's last checkpoints: switched over on every host")
						m.Changed(name)
					}
				}
			}
		case catalog.StageSwitched:
			cancel()
			m.Changed(name)
			return
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Warn("backfill: checking its progress", "err", err)
		}
	}
}
