package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/catalog"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/pipeline"
	"github.com/wagg/wagg/host/relay"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/source"
	"github.com/wagg/wagg/plugins"
)

// Live is the host's hub: it learns each deployment's schema and windows
// before the deployment's rows reach it.
type Live interface {
	pipeline.Live
	Register(aggregator string, s *abi.Schema, windows []abi.Window)
	// ResetWith starts a new epoch whose first state load publishes.
	ResetWith(aggregator string, s *abi.Schema, windows []abi.Window, load func(publish func(partition int32, version int64, rows []abi.Row)))
	// Unregister forgets an undeployed aggregator and its subscribers.
	Unregister(aggregator string)
}

// Specs is where the deployment specs of the cluster live (catalog.Specs):
// every host's Manager reads and writes the same ones.
type Specs interface {
	// List is the spec of every deployment as it runs (catalog.Entry.Current).
	List() ([]plugins.Deployment, error)
	Entries() []catalog.Entry
	Entry(name string) (catalog.Entry, bool)
	Put(d plugins.Deployment, start map[int32]int64) error
	Delete(name string) error
	Failed(name string) (plugins.Failure, bool)
	SetFailed(name string, generation int, f plugins.Failure) error
	ClearFailed(name string) error
	PutBackfill(ctx context.Context, replaces int64, d plugins.Deployment, from string, offsets map[int32]int64) (catalog.Backfill, error)
	PutStage(ctx context.Context, name string, backfill int64, stage string) error
	GiveUpBackfill(ctx context.Context, name string, backfill int64) error
}

// Options are what a Manager starts deployments with. All are required
// but Log, InstanceID and UnsafeReplayOverlap.
type Options struct {
	Registry    *plugins.Registry
	Specs       Specs
	Brokers     []string
	Admin       *kadm.Client
	ClickHouse  driver.Conn
	Database    string
	Checkpoints *checkpoint.Store
	Breaker     *sink.Breaker // shared by every deployment of the host
	Live        Live
	Metrics     *pipeline.Metrics
	// Prometheus gets the wagg_deployment_failed gauge.
	Prometheus prometheus.Registerer
	// InstanceID makes the host a static member of each consumer group.
	InstanceID string
	// UnsafeReplayOverlap is the crash tests' negative control
	// (WAGG_UNSAFE_REPLAY_OVERLAP): it makes results wrong on purpose.
	UnsafeReplayOverlap int64
	// MaxGroupsPerPane is the host's limit of groups per pane
	// (sandbox.max_groups_per_pane), told to each plugin.
	MaxGroupsPerPane int
	// MaxDeployments bounds the cluster's deployments
	// (sandbox.max_deployments): a deploy of a new name past it is refused
	// with api.ErrLimit.
	MaxDeployments int
	// SnapshotRate paces each partition's checkpoints by their snapshots'
	// size (sandbox.snapshot_rate, pipeline.Spec.SnapshotRate).
	SnapshotRate int64
	// CatalogTopic is the cluster's catalog (kafka.catalog_topic): no
	// deployment reads it or dead-letters into it, whatever its name
	// (plugins.ReservedTopic covers the default).
	CatalogTopic string
	Log          *slog.Logger
}

// Manager starts, replaces and stops the deployments of one host.
type Manager struct {
	o      Options
	failed *prometheus.GaugeVec

	// deploying serializes deploys, so that the dead-letter loop check and
	// the spec it admits are one step.
	deploying sync.Mutex

	mu        sync.Mutex
	running   map[string]*running
	backfills map[string]*backfill
	changed   chan string // deployments another host changed
}

// running is a deployment this host runs, or ran until it failed, or
// stopped while a backfill switches over (idle).
type running struct {
	spec    plugins.Deployment
	runner  *pipeline.Runner // nil when it does not run here
	loaded  <-chan struct{}  // closed once the hub holds its checkpointed state (nil when it does not run here)
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	idle    bool

	mu      sync.Mutex
	failure *plugins.Failure
}

func (r *running) failed() *plugins.Failure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failure
}

// New makes a Manager; Start starts the stored deployments.
func New(o Options) *Manager {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	m := &Manager{o: o, running: map[string]*running{}, backfills: map[string]*backfill{}, changed: make(chan string, 64)}
	m.failed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wagg_deployment_failed", Help: "1 for a deployment that stopped by itself (see GET /v1/deployments), else 0.",
	}, []string{"deployment"})
	o.Prometheus.MustRegister(m.failed)
	return m
}

// Start runs what the specs hold (but deployments that failed: they stay
// failed, and visible, until deployed again), then follows them until ctx
// ends: Changed names a deployment another host changed, and every
// resyncEvery the whole list is compared again (a start that failed is
// retried).
func (m *Manager) Start(ctx context.Context) error {
	m.sync("")
	go func() {
		t := time.NewTicker(resyncEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case name := <-m.changed:
				m.sync(name)
			case <-t.C:
				m.sync("")
			}
		}
	}()
	return nil
}

// WaitLoaded waits until the hub holds the checkpointed state of every
// deployment running here, or ctx ends; it returns those still loading.
// A host that served before would show a restarted deployment empty, then
// partly filled, to the dashboards that connect first.
func (m *Manager) WaitLoaded(ctx context.Context) []string {
	m.mu.Lock()
	loading := map[string]<-chan struct{}{}
	for name, r := range m.running {
		if r.loaded != nil {
			loading[name] = r.loaded
		}
	}
	m.mu.Unlock()
	var pending []string
	for name, ch := range loading {
		select {
		case <-ch:
		case <-ctx.Done():
			pending = append(pending, name)
		}
	}
	sort.Strings(pending)
	return pending
}

// resyncEvery is how often a host compares what it runs with the specs.
const resyncEvery = 5 * time.Second

// Changed tells the Manager that another host changed a deployment's spec
// or failure. It does not wait.
func (m *Manager) Changed(name string) {
	select {
	case m.changed <- name:
	default: // the next resync sees it
	}
}

// sync makes this host run the named deployment (all of them: "") as the
// specs say: stopped when undeployed or failed, started or restarted when
// new or changed, with its share of a backfill.
func (m *Manager) sync(only string) {
	m.deploying.Lock()
	defer m.deploying.Unlock()
	m.syncLocked(only)
}

func (m *Manager) syncLocked(only string) {
	want := map[string]catalog.Entry{}
	for _, e := range m.o.Specs.Entries() {
		if only == "" || e.Spec.Name == only {
			want[e.Spec.Name] = e
		}
	}
	m.mu.Lock()
	gone := map[string]bool{}
	for name := range m.running {
		gone[name] = true
	}
	for name := range m.backfills {
		gone[name] = true
	}
	for name := range gone {
		if _, ok := want[name]; ok || (only != "" && name != only) {
			delete(gone, name)
		}
	}
	m.mu.Unlock()
	for name := range gone {
		m.cancelBackfill(name)
		if m.stop(name) {
			m.o.Log.Info("deployment undeployed through another host: stopped here", "deployment", name)
		}
		m.o.Live.Unregister(name)
	}
	for name, e := range want {
		d := e.Current()
		m.mu.Lock()
		r := m.running[name]
		m.mu.Unlock()
		bf := e.Backfill
		if bf != nil && bf.Stage != catalog.StageSwitched {
			// A backfill runs whatever the old generation does, failed
			// included: it is how a failed deployment starts over.
			ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			err := m.runBackfill(ctx, e)
			cancel()
			if err != nil {
				m.o.Log.Error("backfill not started on this host; trying again", "deployment", name, "generation", bf.Spec.Generation, "err", err)
			}
		} else {
			m.cancelBackfill(name) // none, or switched over: this host's share stops (it checkpoints)
		}
		if f, ok := m.o.Specs.Failed(name); ok {
			if r != nil && r.failed() != nil {
				continue
			}
			m.stop(name)
			m.o.Log.Warn("deployment failed; not running here (deploy it again to restart it)", "deployment", name, "err", f.Error)
			m.mu.Lock()
			m.running[name] = &running{spec: d, done: closed(), cancel: func() {}, failure: &f}
			m.mu.Unlock()
			m.failed.WithLabelValues(name).Set(1)
			continue
		}
		if bf != nil && bf.Stage == catalog.StageStopping {
			if r == nil || !r.idle {
				if m.stop(name) {
					m.o.Log.Info("backfill caught up: the old generation stopped here", "deployment", name, "generation", d.Generation)
				} else if err := m.showLast(d); err != nil {
					m.o.Log.Warn("the old generation's last values not loaded into the hub", "deployment", name, "err", err)
				}
				m.mu.Lock()
				m.running[name] = &running{spec: d, started: time.Now().UTC(), done: closed(), cancel: func() {}, idle: true}
				m.mu.Unlock()
			}
			continue
		}
		if r != nil && !r.idle && r.failed() == nil && sameSpec(r.spec, d) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		err := func() error {
			if bf != nil && bf.Stage == catalog.StageSwitched {
				if err := m.showView(ctx, name, d.Storage()); err != nil {
					return fmt.Errorf("switching the view over: %w", err)
				}
			}
			var start map[int32]int64
			if bf == nil || bf.Stage != catalog.StageSwitched {
				start = e.Start // e.Spec's
			}
			return m.relaunch(ctx, d, start)
		}()
		cancel()
		if err != nil {
			m.o.Log.Error("deployment not started on this host; trying again", "deployment", name, "err", err)
		} else if bf != nil && bf.Stage == catalog.StageSwitched {
			m.o.Log.Info("backfill took over here: the view and the live subscribers follow the new generation", "deployment", name, "generation", d.Generation, "from", bf.From)
		}
	}
}

// startTimeout bounds one attempt to start a deployment.
const startTimeout = 30 * time.Second

func sameSpec(a, b plugins.Deployment) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Deploy starts (or restarts with the new spec) a deployment, clearing a
// failure: the plugin must be pushed, the topic must exist and no
// dead-letter loop may form with a stored deployment; the dead-letter topic
// and the ClickHouse table are created when missing. The
// old runner of the name has stopped (and made its last flush) before the
// new one registers with the hub.
func (m *Manager) Deploy(ctx context.Context, d plugins.Deployment) (api.Deployment, error) {
	if err := d.Validate(); err != nil {
		return api.Deployment{}, err
	}
	if c := m.o.CatalogTopic; d.Topic == c || d.DeadLetterTopic == c {
		return api.Deployment{}, fmt.Errorf("%w: deployment %s: %q is the cluster's catalog topic (kafka.catalog_topic); want another topic", plugins.ErrInvalid, d.Name, c)
	}
	m.deploying.Lock()
	defer m.deploying.Unlock()
	stored, err := m.o.Specs.List()
	if err != nil {
		return api.Deployment{}, err
	}
	if err := plugins.CheckDeadLetterLoop(d, stored); err != nil {
		return api.Deployment{}, err
	}
	if err := checkRoom(d.Name, stored, m.o.MaxDeployments); err != nil {
		return api.Deployment{}, err
	}
	man, mod, err := m.plugin(ctx, d)
	if errors.Is(err, plugins.ErrNotFound) {
		return api.Deployment{}, fmt.Errorf("%w: deployment field plugin: %s is not pushed (wagg plugin push)", plugins.ErrInvalid, d.Plugin)
	}
	if err != nil {
		return api.Deployment{}, err
	}
	// The generation is the host's: the one that runs, whatever was sent.
	var prev *catalog.Entry
	if e, ok := m.o.Specs.Entry(d.Name); ok {
		prev = &e
		cur := e.Current()
		if cur.Topic != d.Topic {
			// The table and the checkpoints are kept by source partition,
			// versions by offset: another topic's rows would mix with the
			// old ones, the higher offsets winning.
			return api.Deployment{}, fmt.Errorf("%w: deployment %s reads topic %s; a deployment keeps its topic: deploy %s under another name (and undeploy this one)",
				plugins.ErrConflict, d.Name, cur.Topic, d.Topic)
		}
		d.Generation = cur.Generation
	} else if d.Generation, err = m.viewGeneration(ctx, d.Name); err != nil {
		return api.Deployment{}, err
	}
	m.cancelBackfill(d.Name) // a deploy of the name replaces a backfill under way, on every host
	if d.Start != "" {
		return m.startFresh(ctx, d, man, mod, prev)
	}
	// An upgrade in place writes to the generation's table as it is.
	if diff, err := sink.Mismatch(ctx, m.o.ClickHouse, m.o.Database, d.Storage(), &mod.Schema); err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	} else if diff != "" {
		return api.Deployment{}, fmt.Errorf("%w: deployment %s: %s writes other columns than the deployment's table: %s. "+
			"A deploy in place keeps the table: keep its key and metric columns (a state migration may change what they hold); "+
			"or start fresh: wagg deploy -start earliest (or an offset, or a time) counts into a new generation of the tables beside the running one and takes over once caught up",
			plugins.ErrConflict, d.Name, d.Plugin, diff)
	}
	// Undeployed and deployed again, a name may find its table and
	// checkpoints: they must be of the same topic.
	topics, err := m.o.Checkpoints.Topics(ctx, d.Storage())
	if err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	for _, tp := range topics {
		if tp != d.Topic {
			return api.Deployment{}, fmt.Errorf("%w: deployment %s has the table and checkpoints of topic %s, kept after it was undeployed; a deployment keeps its topic: deploy %s under another name, or start fresh (wagg deploy -start earliest counts into a new generation of the tables)",
				plugins.ErrConflict, d.Name, tp, d.Topic)
		}
	}
	if err := m.checkUpgrade(ctx, d, man, &mod.Schema, prev); err != nil {
		return api.Deployment{}, err
	}
	return m.launch(ctx, d, man, mod, nil, true)
}

// checkRoom refuses a deployment of a new name when the cluster has max
// (0: no limit) already. The count is this host's view of the catalog, so
// hosts deploying new names at once may each take the last place.
func checkRoom(name string, stored []plugins.Deployment, max int) error {
	if max <= 0 || len(stored) < max {
		return nil
	}
	for _, d := range stored {
		if d.Name == name {
			return nil
		}
	}
	return fmt.Errorf("%w: the cluster has %d deployments, the most it takes (sandbox.max_deployments): undeploy one first, or deploy onto an existing name", api.ErrLimit, len(stored))
}

// launch starts d as the deployment of its name, replacing the one that
// runs: its generation's table and view, a runner from its checkpoints (or
// from start where it has none), the stored spec. The old runner has
// stopped (and made its last flush) before the new one registers with the
// hub.
//
// store writes the spec for every host; a host that starts what the specs
// already hold does not.
func (m *Manager) launch(ctx context.Context, d plugins.Deployment, man plugins.Manifest, mod *sandbox.Module, start map[int32]int64, store bool) (api.Deployment, error) {
	partitions, err := m.ensureTopics(ctx, d)
	if err != nil {
		return api.Deployment{}, err
	}
	windows := d.ABIWindows()
	table, err := sink.Ensure(ctx, m.o.ClickHouse, m.o.Database, d.Name, d.Storage(), &mod.Schema, windows)
	if err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	rel, err := relay.New(ctx, relay.Options{
		Brokers: m.o.Brokers, Admin: m.o.Admin, Topic: relay.Topic(m.o.Database, d.Name), Partitions: int32(partitions),
		Deployment: d.Name, Generation: d.Storage(), SourceTopic: d.Topic, Schema: &mod.Schema, Windows: windows,
		Hub: m.o.Live, Table: table, Checkpoints: m.o.Checkpoints, CheckpointEvery: time.Duration(d.CheckpointEvery), Log: m.o.Log,
	})
	if err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	runner, err := m.runner(d, man, mod, table, rel, rel.Checkpoints(), start)
	if err != nil {
		rel.Close()
		return api.Deployment{}, err
	}
	d.Start = ""
	if store {
		if err := m.o.Specs.Put(d, start); err != nil {
			rel.Close()
			return api.Deployment{}, err
		}
	}
	m.mu.Lock()
	old := m.running[d.Name]
	m.mu.Unlock()
	// Another generation's values must not linger beside this one's: the
	// hub starts a new epoch, holding at once the state this generation's
	// checkpoints left, so that the subscribers it closes come back to a
	// whole snapshot, not to one the relay has yet to fill.
	var preload map[int32][]abi.Row
	var versions map[int32]int64
	reset := old != nil && old.spec.Generation != d.Generation
	if reset {
		if preload, versions, err = relay.Stored(ctx, table, windows, all); err != nil {
			rel.Close()
			return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
		}
	}
	m.stop(d.Name)
	if err := m.o.Specs.ClearFailed(d.Name); err != nil {
		return api.Deployment{}, err
	}
	m.failed.WithLabelValues(d.Name).Set(0)
	if reset {
		m.o.Live.ResetWith(d.Name, &mod.Schema, windows, publishAll(preload, versions))
	} else {
		m.o.Live.Register(d.Name, &mod.Schema, windows)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &running{spec: d, runner: runner, loaded: rel.Loaded(), started: time.Now().UTC(), cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.running[d.Name] = r
	m.mu.Unlock()
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		rel.Run(rctx)
	}()
	go func() {
		defer close(r.done)
		err := runner.Run(rctx)
		cancel()
		<-relayDone
		rel.Close()
		if err == nil {
			return
		}
		// It stopped by itself: keep it visible, and stopped on every host
		// and across restarts.
		f := plugins.Failure{Error: err.Error(), At: time.Now().UTC()}
		r.mu.Lock()
		r.failure = &f
		r.mu.Unlock()
		m.failed.WithLabelValues(d.Name).Set(1)
		if err := m.o.Specs.SetFailed(d.Name, d.Generation, f); err != nil {
			m.o.Log.Error("recording a deployment's failure", "deployment", d.Name, "err", err)
		}
	}()
	m.o.Log.Info("deployment started", "deployment", d.Name, "plugin", d.Plugin, "topic", d.Topic, "partitions", partitions, "generation", d.Generation)
	return m.status(r), nil
}

// showLast gives the hub the values d's checkpoints left, for a host that
// starts while a backfill switches over: its dashboards see the old
// generation's last values, as on the hosts that ran it, until the switch.
func (m *Manager) showLast(d plugins.Deployment) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	_, mod, err := m.plugin(ctx, d)
	if err != nil {
		return err
	}
	windows := d.ABIWindows()
	table, err := sink.Ensure(ctx, m.o.ClickHouse, m.o.Database, d.Name, d.Storage(), &mod.Schema, windows)
	if err != nil {
		return err
	}
	stored, versions, err := relay.Stored(ctx, table, windows, all)
	if err != nil {
		return err
	}
	m.o.Live.ResetWith(d.Name, &mod.Schema, windows, publishAll(stored, versions))
	return nil
}

// all takes every partition.
func all(int32) bool { return true }

// publishAll hands each partition's stored state (relay.Stored) to publish.
func publishAll(rows map[int32][]abi.Row, versions map[int32]int64) func(publish func(int32, int64, []abi.Row)) {
	return func(publish func(int32, int64, []abi.Row)) {
		for p, batch := range rows {
			publish(p, versions[p], batch)
		}
	}
}

// ConsumerGroup is the Kafka consumer group of generation storage
// (plugins.Deployment.Storage) of a deployment of the cluster whose
// ClickHouse database is database. The database is in it as it is in the
// catalog and relay topics: two clusters on one Kafka with a deployment
// of the same name would otherwise share a group and split its partitions
// between them, each counting part of the topic.
func ConsumerGroup(database, storage string) string {
	return "wagg." + database + "." + storage
}

// runner makes the pipeline of d's generation, publishing to live and
// checkpointing to cps.
func (m *Manager) runner(d plugins.Deployment, man plugins.Manifest, mod *sandbox.Module, table *sink.Table, live pipeline.Live, cps pipeline.Checkpoints, start map[int32]int64) (*pipeline.Runner, error) {
	params, _ := json.Marshal(d.Params)
	if d.Params == nil {
		params = nil
	}
	return pipeline.New(pipeline.Spec{
		Name: d.Storage(), Aggregator: d.Name, Group: ConsumerGroup(m.o.Database, d.Storage()), Topic: d.Topic, DeadLetterTopic: d.DeadLetterTopic, Windows: d.ABIWindows(),
		Lateness: time.Duration(d.Lateness), IdleAfter: time.Duration(d.IdleAfter),
		EmitEvery: time.Duration(d.EmitEvery), CheckpointEvery: time.Duration(d.CheckpointEvery), SnapshotRate: m.o.SnapshotRate,
		MaxBatch: d.MaxBatch, MaxFuture: time.Duration(d.MaxFuture), MaxPluginErrors: d.MaxPluginErrors,
		MaxGroupsPerPane: m.o.MaxGroupsPerPane, StartOffsets: start,
		Params: params, UnsafeReplayOverlap: m.o.UnsafeReplayOverlap,
	}, pipeline.Deps{
		Brokers: m.o.Brokers, Admin: m.o.Admin, Module: mod, PluginSHA: man.SHA256, StateSchema: m.stateSchema,
		Rows: table, Checkpoints: cps, Breaker: m.o.Breaker, Live: live,
		Metrics: m.o.Metrics, Log: m.o.Log, InstanceID: m.o.InstanceID,
		// Partitions added to the topic join within this (franz-go's
		// default is 5 minutes).
		ClientOpts: []kgo.Opt{kgo.MetadataMaxAge(10 * time.Second)},
	})
}

// checkUpgrade refuses a plugin that cannot take over the deployment's
// checkpoints: those another plugin wrote with a state version the new one
// neither accepts nor migrates, or migrates but cannot read because the
// plugin that wrote them (whose schema lays them out) is not stored.
func (m *Manager) checkUpgrade(ctx context.Context, d plugins.Deployment, man plugins.Manifest, s *abi.Schema, prev *catalog.Entry) error {
	writers, err := m.o.Checkpoints.Writers(ctx, d.Storage(), d.Topic)
	if err != nil {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	// The plugin that runs writes its last checkpoints as it stops, after
	// this check: what it will have written counts too. (A plugin deployed
	// a moment before may have written none yet.)
	if prev != nil && prev.Failure == nil {
		if cur := prev.Current(); cur.Storage() == d.Storage() {
			name, version := cur.PluginRef()
			if old, err := m.o.Registry.Get(name, version); err == nil {
				writers = append(writers, checkpoint.Writer{Plugin: old.SHA256, StateVersion: old.Schema.StateVersion()})
			}
		}
	}
	for _, w := range writers {
		if w.Plugin == man.SHA256 || s.AcceptsState(w.StateVersion) {
			continue
		}
		old, oldErr := m.o.Registry.BySHA(w.Plugin)
		if s.MigratesState(w.StateVersion) && oldErr == nil && old.Schema.StateVersion() == w.StateVersion {
			continue
		}
		e := &plugins.UpgradeError{Deployment: d.Name, Plugin: d.Plugin, Version: s.StateVersion(),
			Old: "the plugin with sha256 " + w.Plugin, OldVersion: w.StateVersion, Partitions: w.Partitions,
			Unknown: s.MigratesState(w.StateVersion) && oldErr != nil}
		if s.State != nil {
			e.Accepts, e.Migrates = s.State.Accepts, s.State.Migrates
		}
		if oldErr == nil {
			e.Old = old.Ref()
		}
		return e
	}
	return nil
}

// stateSchema is the schema of the stored plugin with sha256 sha, through
// which a plugin that migrates its state version reads the checkpoints it
// wrote.
func (m *Manager) stateSchema(sha string) (*abi.Schema, error) {
	man, err := m.o.Registry.BySHA(sha)
	if err != nil {
		return nil, err
	}
	return &man.Schema, nil
}

// stop stops a deployment's runner (it checkpoints) and waits for it,
// reporting whether one ran.
func (m *Manager) stop(name string) bool {
	m.mu.Lock()
	r := m.running[name]
	delete(m.running, name)
	m.mu.Unlock()
	if r == nil {
		return false
	}
	r.cancel()
	<-r.done
	return true
}

// Undeploy stops a deployment (it checkpoints) and forgets its spec. Its
// ClickHouse table stays.
func (m *Manager) Undeploy(_ context.Context, name string) error {
	// Under deploying, so that no sync restarts it from the spec meanwhile.
	m.deploying.Lock()
	defer m.deploying.Unlock()
	m.cancelBackfill(name)
	stopped := m.stop(name)
	if err := m.o.Specs.Delete(name); err != nil && !(stopped && errors.Is(err, plugins.ErrNotFound)) {
		return err
	}
	m.o.Live.Unregister(name)
	return nil
}

// Stop stops every deployment together; each checkpoints.
func (m *Manager) Stop() {
	m.deploying.Lock() // no backfill switches over behind it
	defer m.deploying.Unlock()
	m.mu.Lock()
	var names []string
	for n := range m.backfills {
		names = append(names, n)
	}
	m.mu.Unlock()
	for _, n := range names {
		m.cancelBackfill(n)
	}
	m.mu.Lock()
	rs := m.running
	m.running = map[string]*running{}
	m.mu.Unlock()
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		<-r.done
	}
}

// List is the status of every deployment, by name.
func (m *Manager) List() []api.Deployment {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []api.Deployment{}
	for _, r := range m.running {
		st := m.status(r)
		if b := m.backfills[r.spec.Name]; b != nil {
			st.Backfill = b.String()
		} else if e, ok := m.o.Specs.Entry(r.spec.Name); ok && e.Backfill != nil && e.Backfill.Stage != catalog.StageSwitched {
			st.Backfill = fmt.Sprintf("generation %d from %s: not running on this host (%s)", e.Backfill.Spec.Generation, e.Backfill.From, stageName(e.Backfill.Stage))
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func stageName(s string) string {
	if s == catalog.StageCatchingUp {
		return "catching up"
	}
	return s
}

func (m *Manager) status(r *running) api.Deployment {
	d := api.Deployment{Deployment: r.spec, Started: r.started, Table: m.o.Database + "." + r.spec.Name, Status: api.StatusRunning}
	if f := r.failed(); f != nil {
		d.Status, d.Error, d.Failed = api.StatusFailed, f.Error, f.At
	} else if r.runner != nil {
		d.NotStarted, d.Stalled = r.runner.NotStarted(), r.runner.Stalled()
	}
	return d
}

// ensureTopics checks that the deployment's topic exists and creates its
// dead-letter topic with as many partitions when missing. It returns the
// topic's partition count.
func (m *Manager) ensureTopics(ctx context.Context, d plugins.Deployment) (int, error) {
	topics, err := m.o.Admin.ListTopics(ctx, d.Topic, d.DeadLetterTopic)
	if err != nil {
		return 0, fmt.Errorf("%w: kafka: list topics: %w", api.ErrUnavailable, err)
	}
	in, ok := topics[d.Topic]
	if !ok || in.Err != nil {
		return 0, fmt.Errorf("%w: deployment field topic: topic %q does not exist in Kafka", plugins.ErrInvalid, d.Topic)
	}
	n := len(in.Partitions)
	if dl, ok := topics[d.DeadLetterTopic]; !ok || dl.Err != nil {
		if err := source.EnsureTopic(ctx, m.o.Admin, d.DeadLetterTopic, int32(n), nil); err != nil {
			return 0, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
		}
	}
	return n, nil
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// plugin is the manifest and the compiled module of the plugin d names.
func (m *Manager) plugin(ctx context.Context, d plugins.Deployment) (plugins.Manifest, *sandbox.Module, error) {
	name, version := d.PluginRef()
	man, err := m.o.Registry.Get(name, version)
	if err != nil {
		return man, nil, err
	}
	mod, err := m.o.Registry.Module(ctx, man)
	return man, mod, err
}

// relaunch starts a stored spec again with its own plugin, partitions
// without a checkpoint from start.
func (m *Manager) relaunch(ctx context.Context, d plugins.Deployment, start map[int32]int64) error {
	man, mod, err := m.plugin(ctx, d)
	if err != nil {
		return err
	}
	_, err = m.launch(ctx, d, man, mod, start, false)
	return err
}
