// Package server assembles a wagg host from its configuration: the
// ClickHouse connection, the sandbox runtime, the plugin registry, the live
// hub and one pipeline per deployment, and serves the HTTP API. It is what
// `wagg serve` runs and what integration tests start in-process.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/auth"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/config"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/pipeline"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/web"
	"github.com/wagg/wagg/plugins"
)

// Server is one wagg host.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	ch      driver.Conn
	admin   *kadm.Client
	rt      *sandbox.Runtime
	reg     *plugins.Registry
	specs   *plugins.Deployments
	hub     *hub.Hub
	auth    *auth.Verifier // nil: open mode, loopback only
	cps     *checkpoint.Store
	prom    *prometheus.Registry
	metrics *pipeline.Metrics
	failed  *prometheus.GaugeVec
	// breaker guards every write to ClickHouse of this host.
	breaker *sink.Breaker
	// hostID makes the host a static member of its consumer groups.
	hostID string
	// unsafeReplayOverlap is the crash tests' negative control
	// (WAGG_UNSAFE_REPLAY_OVERLAP): it makes results wrong on purpose.
	unsafeReplayOverlap int64

	// deploying serializes deploys, so that the dead-letter loop check and
	// the spec it admits are one step.
	deploying sync.Mutex

	mu      sync.Mutex
	running map[string]*running
}

// running is a deployment this host runs, or ran until it failed.
type running struct {
	spec    plugins.Deployment
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}

	mu      sync.Mutex
	failure *plugins.Failure
}

func (r *running) failed() *plugins.Failure {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failure
}

// New connects to ClickHouse and Kafka, waiting up to a minute for each,
// and opens the registry. It fails with a message saying which service is
// unreachable.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, running: map[string]*running{}}
	if cfg.Auth.Enabled() {
		v, err := auth.New(auth.Options{
			HMACKeyFiles: cfg.Auth.HMACKeyFiles, PublicKeyFiles: cfg.Auth.PublicKeyFiles, JWKSFiles: cfg.Auth.JWKSFiles,
			Issuer: cfg.Auth.Issuer, Audience: cfg.Auth.Audience,
		})
		if err != nil {
			return nil, fmt.Errorf("config field auth: %w", err)
		}
		s.auth = v
	}
	if cfg.TLS.Enabled() {
		if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return nil, fmt.Errorf("config field tls: %w", err)
		}
	}
	ch, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{cfg.ClickHouse.Addr},
		Auth:        clickhouse.Auth{Database: "default", Username: cfg.ClickHouse.Username, Password: cfg.ClickHouse.Password},
		Protocol:    clickhouse.Native,
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", cfg.ClickHouse.Addr, err)
	}
	s.ch = ch
	if err := waitFor(ctx, log, "clickhouse "+cfg.ClickHouse.Addr, ch.Ping); err != nil {
		return nil, fmt.Errorf("clickhouse %s is not reachable: %w", cfg.ClickHouse.Addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := ch.Exec(pctx, "CREATE DATABASE IF NOT EXISTS "+sink.Quote(cfg.ClickHouse.Database)); err != nil {
		return nil, fmt.Errorf("clickhouse: create database: %w", err)
	}
	if s.cps, err = checkpoint.Open(pctx, ch, cfg.ClickHouse.Database); err != nil {
		return nil, err
	}
	if err := ch.Exec(pctx, "CREATE TABLE IF NOT EXISTS "+s.auditTable()+` (
		at DateTime DEFAULT now(), subject String, remote String, action String, target String, detail String
	) ENGINE = MergeTree ORDER BY at`); err != nil {
		return nil, fmt.Errorf("clickhouse: create audit table: %w", err)
	}
	kc, err := kgo.NewClient(kgo.SeedBrokers(cfg.Kafka.Brokers...))
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	s.admin = kadm.NewClient(kc)
	if err := waitFor(ctx, log, fmt.Sprintf("kafka %v", cfg.Kafka.Brokers), func(ctx context.Context) error {
		_, err := s.admin.BrokerMetadata(ctx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("kafka %v is not reachable: %w", cfg.Kafka.Brokers, err)
	}
	if s.rt, err = sandbox.New(ctx, &sandbox.Options{
		MemoryPages:  cfg.Sandbox.MemoryPages,
		CallTimeout:  cfg.Sandbox.CallTimeout,
		MemoryBudget: cfg.Sandbox.MemoryBudget,
		CacheDir:     filepath.Join(cfg.DataDir, "compiled"),
		Log:          log,
	}); err != nil {
		return nil, err
	}
	if s.reg, err = plugins.Open(cfg.DataDir, s.rt, cfg.Sandbox.MaxUploadSize); err != nil {
		return nil, err
	}
	if s.specs, err = plugins.OpenDeployments(cfg.DataDir); err != nil {
		return nil, err
	}
	if s.hostID, err = hostID(cfg.DataDir); err != nil {
		return nil, err
	}
	if v := os.Getenv("WAGG_UNSAFE_REPLAY_OVERLAP"); v != "" {
		if s.unsafeReplayOverlap, err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil, fmt.Errorf("WAGG_UNSAFE_REPLAY_OVERLAP: %w", err)
		}
		log.Warn("WAGG_UNSAFE_REPLAY_OVERLAP is set: restored partitions count records twice (a test's negative control)", "offsets", s.unsafeReplayOverlap)
	}
	s.hub = hub.New(&hub.Options{OriginPatterns: cfg.Live.AllowedOrigins, Logger: log, Auth: s.auth, MaxGroupsPerPane: cfg.Sandbox.MaxGroupsPerPane})
	s.breaker = &sink.Breaker{}
	s.prom = prometheus.NewRegistry()
	s.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = pipeline.NewMetrics(s.prom)
	s.failed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wagg_deployment_failed", Help: "1 for a deployment that stopped by itself (see GET /v1/deployments), else 0.",
	}, []string{"deployment"})
	s.prom.MustRegister(s.failed, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wagg_clickhouse_breaker_state", Help: "The ClickHouse circuit breaker: 0 closed, 1 half-open (trying), 2 open (ClickHouse failing).",
	}, func() float64 {
		st, _ := s.breaker.Status()
		return float64(st)
	}))
	return s, nil
}

// Handler is the whole HTTP surface: API, live WebSocket, metrics, page.
func (s *Server) Handler() http.Handler {
	return api.New(s, api.Handlers{
		Live:    s.hub,
		LiveSSE: http.HandlerFunc(s.hub.ServeSSE),
		Metrics: promhttp.HandlerFor(s.prom, promhttp.HandlerOpts{Registry: s.prom}),
		Web:     web.Handler(),
		Auth:    s.auth,
	})
}

// Run starts the stored deployments and serves HTTP on ln until ctx ends,
// then stops every deployment (each checkpoints) and closes the hub.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if s.auth == nil && !config.Loopback(ln.Addr().String()) {
		return fmt.Errorf("config field listen: %s is not a loopback address and auth has no keys (docs/security.md)", ln.Addr())
	}
	specs, err := s.specs.List()
	if err != nil {
		return err
	}
	for _, d := range specs {
		if f, ok := s.specs.Failed(d.Name); ok {
			s.log.Warn("stored deployment failed before; not started (deploy it again to restart it)", "deployment", d.Name, "err", f.Error)
			s.mu.Lock()
			s.running[d.Name] = &running{spec: d, done: closed(), cancel: func() {}, failure: &f}
			s.mu.Unlock()
			s.failed.WithLabelValues(d.Name).Set(1)
			continue
		}
		if _, err := s.Deploy(ctx, d); err != nil {
			s.log.Error("stored deployment not started", "deployment", d.Name, "err", err)
		}
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	scheme := "http"
	if s.cfg.TLS.Enabled() {
		scheme = "https"
		go func() { errc <- srv.ServeTLS(ln, s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	s.log.Info("wagg serving", "addr", ln.Addr().String(), "scheme", scheme)
	if s.auth == nil {
		s.log.Warn("auth: no keys configured: open mode, listening on loopback only; anyone on this machine may push, deploy and subscribe (docs/security.md)", "addr", ln.Addr().String())
	}
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.stopAll()
	s.hub.Close()
	srv.Shutdown(sctx)
	s.rt.Close(sctx)
	s.ch.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) stopAll() {
	s.mu.Lock()
	rs := s.running
	s.running = map[string]*running{}
	s.mu.Unlock()
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		<-r.done
	}
}

// AuditTable is the ClickHouse table (in the host's database) that records
// who pushed, deployed and deleted what and when (docs/security.md).
const AuditTable = "_wagg_audit"

func (s *Server) auditTable() string { return sink.Quote(s.cfg.ClickHouse.Database) + "." + AuditTable }

// audit records a change made through the API. It does not fail the change
// it records: the change is done by now. A row that cannot be written is
// logged at error level with everything it held.
func (s *Server) audit(ctx context.Context, action, target, detail string) {
	c, ok := auth.CallerFrom(ctx)
	if !ok {
		return // not from a request: a stored deployment restarting
	}
	subject := c.Subject
	if c.Open {
		subject = "(open mode)"
	}
	err := func() error {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		b, err := s.ch.PrepareBatch(actx, "INSERT INTO "+s.auditTable()+" (subject, remote, action, target, detail)")
		if err != nil {
			return err
		}
		defer b.Abort()
		if err := b.Append(subject, c.Remote, action, target, detail); err != nil {
			return err
		}
		return b.Send()
	}()
	if err != nil {
		s.log.Error("audit: row not written", "subject", subject, "remote", c.Remote, "action", action, "target", target, "detail", detail, "err", err)
	}
}

// PushPlugin validates and stores a plugin.
func (s *Server) PushPlugin(ctx context.Context, name, version string, wasm []byte) (plugins.Manifest, error) {
	m, err := s.reg.Push(ctx, name, version, wasm)
	if err == nil {
		s.audit(ctx, "plugin_push", name+"@"+version, "sha256 "+m.SHA256)
	}
	return m, err
}

// Plugins lists stored plugins.
func (s *Server) Plugins() ([]plugins.Manifest, error) { return s.reg.List() }

// MaxUpload is the plugin size limit.
func (s *Server) MaxUpload() int { return s.reg.MaxSize() }

// Deploy starts (or restarts with the new spec) a deployment, clearing a
// failure: the plugin must be pushed, the topic must exist and no
// dead-letter loop may form with a stored deployment; the dead-letter topic
// and the ClickHouse table are created when missing.
func (s *Server) Deploy(ctx context.Context, d plugins.Deployment) (api.Deployment, error) {
	if err := d.Validate(); err != nil {
		return api.Deployment{}, err
	}
	s.deploying.Lock()
	defer s.deploying.Unlock()
	stored, err := s.specs.List()
	if err != nil {
		return api.Deployment{}, err
	}
	if err := plugins.CheckDeadLetterLoop(d, stored); err != nil {
		return api.Deployment{}, err
	}
	name, version := d.PluginRef()
	m, err := s.reg.Get(name, version)
	if errors.Is(err, plugins.ErrNotFound) {
		return api.Deployment{}, fmt.Errorf("%w: deployment field plugin: %s is not pushed (wagg plugin push)", plugins.ErrInvalid, d.Plugin)
	}
	if err != nil {
		return api.Deployment{}, err
	}
	mod, err := s.reg.Module(ctx, m)
	if err != nil {
		return api.Deployment{}, err
	}
	partitions, err := s.ensureTopics(ctx, d)
	if err != nil {
		return api.Deployment{}, err
	}
	windows := make([]abi.Window, len(d.Windows))
	for i, w := range d.Windows {
		windows[i] = w.ABI()
	}
	table, err := sink.Ensure(ctx, s.ch, s.cfg.ClickHouse.Database, d.Name, &mod.Schema, windows)
	if err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	params, _ := json.Marshal(d.Params)
	if d.Params == nil {
		params = nil
	}
	runner, err := pipeline.New(pipeline.Spec{
		Name: d.Name, Topic: d.Topic, DeadLetterTopic: d.DeadLetterTopic, Windows: windows,
		Lateness: time.Duration(d.Lateness), IdleAfter: time.Duration(d.IdleAfter),
		EmitEvery: time.Duration(d.EmitEvery), CheckpointEvery: time.Duration(d.CheckpointEvery),
		MaxBatch: d.MaxBatch, MaxFuture: time.Duration(d.MaxFuture), MaxPluginErrors: d.MaxPluginErrors,
		MaxGroupsPerPane: s.cfg.Sandbox.MaxGroupsPerPane,
		Params:           params, UnsafeReplayOverlap: s.unsafeReplayOverlap,
	}, pipeline.Deps{
		Brokers: s.cfg.Kafka.Brokers, Admin: s.admin, Module: mod, PluginSHA: m.SHA256,
		Rows: table, Checkpoints: s.cps, Breaker: s.breaker, Live: s.hub,
		Metrics: s.metrics, Log: s.log, InstanceID: s.hostID,
	})
	if err != nil {
		return api.Deployment{}, err
	}
	if err := s.specs.Put(d); err != nil {
		return api.Deployment{}, err
	}
	s.stop(d.Name)
	if err := s.specs.ClearFailed(d.Name); err != nil {
		return api.Deployment{}, err
	}
	s.failed.WithLabelValues(d.Name).Set(0)
	s.hub.Register(d.Name, &mod.Schema, windows)
	rctx, cancel := context.WithCancel(context.Background())
	r := &running{spec: d, started: time.Now().UTC(), cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.running[d.Name] = r
	s.mu.Unlock()
	go func() {
		defer close(r.done)
		err := runner.Run(rctx)
		if err == nil {
			return
		}
		// It stopped by itself: keep it visible, and stopped across restarts.
		f := plugins.Failure{Error: err.Error(), At: time.Now().UTC()}
		r.mu.Lock()
		r.failure = &f
		r.mu.Unlock()
		s.failed.WithLabelValues(d.Name).Set(1)
		if err := s.specs.SetFailed(d.Name, f); err != nil {
			s.log.Error("recording a deployment's failure", "deployment", d.Name, "err", err)
		}
	}()
	s.log.Info("deployment started", "deployment", d.Name, "plugin", d.Plugin, "topic", d.Topic, "partitions", partitions)
	s.audit(ctx, "deploy", d.Name, fmt.Sprintf("plugin %s topic %s dead letters %s", d.Plugin, d.Topic, d.DeadLetterTopic))
	return s.status(r), nil
}

func (s *Server) stop(name string) bool {
	s.mu.Lock()
	r := s.running[name]
	delete(s.running, name)
	s.mu.Unlock()
	if r == nil {
		return false
	}
	r.cancel()
	<-r.done
	return true
}

// Undeploy stops a deployment (it checkpoints) and forgets its spec. Its
// ClickHouse table stays.
func (s *Server) Undeploy(ctx context.Context, name string) error {
	stopped := s.stop(name)
	if err := s.specs.Delete(name); err != nil && !(stopped && errors.Is(err, plugins.ErrNotFound)) {
		return err
	}
	s.audit(ctx, "undeploy", name, "")
	return nil
}

// Deployments lists running deployments.
func (s *Server) Deployments() []api.Deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.Deployment{}
	for _, r := range s.running {
		out = append(out, s.status(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Server) status(r *running) api.Deployment {
	d := api.Deployment{Deployment: r.spec, Started: r.started, Table: s.cfg.ClickHouse.Database + "." + r.spec.Name, Status: api.StatusRunning}
	if f := r.failed(); f != nil {
		d.Status, d.Error, d.Failed = api.StatusFailed, f.Error, f.At
	}
	return d
}

// healthTimeout bounds each probe of /healthz, so that it answers quickly
// while a service hangs.
const healthTimeout = 800 * time.Millisecond

// Health probes ClickHouse and Kafka (together, briefly) and reports the
// ClickHouse circuit breaker and failed deployments.
func (s *Server) Health(ctx context.Context) api.Health {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	var chErr, kErr error
	var wg sync.WaitGroup
	wg.Go(func() { chErr = s.ch.Ping(ctx) })
	wg.Go(func() { _, kErr = s.admin.BrokerMetadata(ctx) })
	wg.Wait()
	var reasons []string
	if chErr != nil {
		reasons = append(reasons, "clickhouse: not answering: "+chErr.Error())
	}
	if st, err := s.breaker.Status(); st != sink.Closed {
		reasons = append(reasons, fmt.Sprintf("clickhouse: writes failing, circuit %s: %v; results wait in memory and are written when it recovers", st, err))
	}
	if kErr != nil {
		reasons = append(reasons, "kafka: not answering: "+kErr.Error())
	}
	for _, d := range s.Deployments() {
		if d.Status == api.StatusFailed {
			reasons = append(reasons, fmt.Sprintf("deployment %s failed: %s", d.Name, d.Error))
		}
	}
	if len(reasons) > 0 {
		return api.Health{Status: "degraded", Reasons: reasons}
	}
	return api.Health{Status: "ok"}
}

// hostID returns the host's identity, kept in data_dir so that a restarted
// host rejoins its consumer groups as the member it was.
func hostID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "host-id")
	if b, err := os.ReadFile(p); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	var b [8]byte
	rand.Read(b[:])
	id := "wagg-" + hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("data_dir: %w", err)
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("data_dir: %w", err)
	}
	return id, nil
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (s *Server) ensureTopics(ctx context.Context, d plugins.Deployment) (int, error) {
	topics, err := s.admin.ListTopics(ctx, d.Topic, d.DeadLetterTopic)
	if err != nil {
		return 0, fmt.Errorf("%w: kafka: list topics: %w", api.ErrUnavailable, err)
	}
	in, ok := topics[d.Topic]
	if !ok || in.Err != nil {
		return 0, fmt.Errorf("%w: deployment field topic: topic %q does not exist in Kafka", plugins.ErrInvalid, d.Topic)
	}
	n := len(in.Partitions)
	if dl, ok := topics[d.DeadLetterTopic]; !ok || dl.Err != nil {
		resp, err := s.admin.CreateTopic(ctx, int32(n), -1, nil, d.DeadLetterTopic)
		if err != nil {
			return 0, fmt.Errorf("%w: kafka: create dead-letter topic %s: %w", api.ErrUnavailable, d.DeadLetterTopic, err)
		}
		if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("kafka: create dead-letter topic %s: %w", d.DeadLetterTopic, resp.Err)
		}
	}
	return n, nil
}
