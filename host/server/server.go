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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/auth"
	"github.com/wagg/wagg/host/catalog"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/config"
	"github.com/wagg/wagg/host/deploy"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/pipeline"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/host/sink"
	"github.com/wagg/wagg/host/web"
	"github.com/wagg/wagg/plugins"
)

// Server is one wagg host.
type Server struct {
	cfg config.Config
	log *slog.Logger
	ch  driver.Conn
	// queries is the pool of POST /v1/query, apart from ch; querying
	// holds a token per query running (query.go)
	queries  driver.Conn
	querying chan struct{}
	admin    *kadm.Client
	kafka    *kgo.Client // admin's: health probes ask a broker through it
	rt       *sandbox.Runtime
	reg      *plugins.Registry
	hub      *hub.Hub
	auth     *auth.Verifier // nil: open mode, loopback only
	cps      *checkpoint.Store
	prom     *prometheus.Registry
	// breaker guards every write to ClickHouse of this host.
	breaker *sink.Breaker
	catalog *catalog.Catalog
	deploys *deploy.Manager
	health  probes
	id      string // this host's instance id in every consumer group
	// pushing admits one push at a time from its storage check to its
	// write, so that two pushes cannot both take the last room
	pushing sync.Mutex
}

// Serve runs a host on ln until ctx ends, then stops every deployment
// (each checkpoints) and closes the hub.
//
// It answers on ln from the start: until ClickHouse and Kafka answer, which
// it waits for as long as they take, and its stored deployments are
// started, /healthz says "starting" and what the host waits for, and every
// other request gets 503 (api.Starting). Then the whole HTTP surface.
func Serve(ctx context.Context, cfg config.Config, log *slog.Logger, ln net.Listener) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	var v *auth.Verifier
	if cfg.Auth.Enabled() {
		var err error
		if v, err = auth.New(auth.Options{
			HMACKeyFiles: cfg.Auth.HMACKeyFiles, PublicKeyFiles: cfg.Auth.PublicKeyFiles, JWKSFiles: cfg.Auth.JWKSFiles,
			Issuer: cfg.Auth.Issuer, Audience: cfg.Auth.Audience, Log: log,
		}); err != nil {
			return fmt.Errorf("config field auth: %w", err)
		}
	} else if !config.Loopback(ln.Addr().String()) {
		return fmt.Errorf("config field listen: %s is not a loopback address and auth has no keys (docs/security.md)", ln.Addr())
	}
	if cfg.TLS.Enabled() {
		if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return fmt.Errorf("config field tls: %w", err)
		}
	}
	var waiting atomic.Pointer[string]
	note := func(what string) { waiting.Store(&what) }
	note("connecting to clickhouse " + cfg.ClickHouse.Addr)
	sw := &handlerSwitch{}
	sw.set(api.Starting(v, func() string { return *waiting.Load() }))
	// A connection idle between requests is closed after IdleTimeout: kept
	// open for ever, 20,000 of them took every file descriptor (bodies are
	// bounded by api.BodyTimeout, headers by ReadHeaderTimeout).
	srv := &http.Server{Handler: sw, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	errc := make(chan error, 1)
	if cfg.TLS.Enabled() {
		go func() { errc <- srv.ServeTLS(ln, cfg.TLS.CertFile, cfg.TLS.KeyFile) }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	s, err := newServer(ctx, cfg, log, v, note)
	if err != nil {
		srv.Close()
		if ctx.Err() != nil { // stopped while it waited
			log.Info("stopped before serving", "while", *waiting.Load())
			return nil
		}
		return err
	}
	err = s.run(ctx, srv, sw, errc, note)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// handlerSwitch serves through the handler set last.
type handlerSwitch struct{ h atomic.Pointer[http.Handler] }

func (s *handlerSwitch) set(h http.Handler) { s.h.Store(&h) }

func (s *handlerSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// newServer connects to ClickHouse and Kafka, waiting for each as long as
// it takes (telling note what it waits for), and opens the registry and
// the catalog.
func newServer(ctx context.Context, cfg config.Config, log *slog.Logger, v *auth.Verifier, note func(string)) (*Server, error) {
	s := &Server{cfg: cfg, log: log, auth: v}
	chOpts := clickhouse.Options{
		Addr:        []string{cfg.ClickHouse.Addr},
		Auth:        clickhouse.Auth{Database: "default", Username: cfg.ClickHouse.Username, Password: cfg.ClickHouse.Password},
		Protocol:    clickhouse.Native,
		DialTimeout: 5 * time.Second,
		// A connection would keep the buffer of the largest insert it
		// ever sent (rows of long keys make hundreds of MB) for good.
		FreeBufOnConnRelease: true,
	}
	ch, err := clickhouse.Open(&chOpts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", cfg.ClickHouse.Addr, err)
	}
	s.ch = ch
	if s.queries, s.querying, err = openQueries(chOpts); err != nil {
		ch.Close()
		return nil, fmt.Errorf("clickhouse %s: %w", cfg.ClickHouse.Addr, err)
	}
	if err := waitFor(ctx, log, note, "clickhouse "+cfg.ClickHouse.Addr, ch.Ping); err != nil {
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
	s.admin, s.kafka = kadm.NewClient(kc), kc
	note(fmt.Sprintf("connecting to kafka %v", cfg.Kafka.Brokers))
	if err := waitFor(ctx, log, note, fmt.Sprintf("kafka %v", cfg.Kafka.Brokers), s.askKafka); err != nil {
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
	if s.catalog, err = catalog.Open(ctx, catalog.Options{
		Brokers: cfg.Kafka.Brokers, Admin: s.admin, Topic: cfg.CatalogTopic(), MaxPluginSize: cfg.Sandbox.MaxUploadSize, Log: log,
		Plugin: func(ctx context.Context, p catalog.Plugin) error {
			if p.Wasm == nil {
				if err := s.reg.Delete(p.Name, p.Version); err != nil && !errors.Is(err, plugins.ErrNotFound) {
					return err
				}
				return nil
			}
			_, err := s.reg.Adopt(ctx, p.Name, p.Version, p.Wasm)
			return err
		},
		Changed: func(name string) { s.deploys.Changed(name) },
	}); err != nil {
		return nil, err
	}
	note("reading the catalog topic " + cfg.CatalogTopic())
	if err := s.catalog.Load(ctx); err != nil {
		return nil, err
	}
	id, err := hostID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s.id = id
	var unsafeReplayOverlap int64
	if v := os.Getenv("WAGG_UNSAFE_REPLAY_OVERLAP"); v != "" {
		if unsafeReplayOverlap, err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil, fmt.Errorf("WAGG_UNSAFE_REPLAY_OVERLAP: %w", err)
		}
		log.Warn("WAGG_UNSAFE_REPLAY_OVERLAP is set: restored partitions count records twice (a test's negative control)", "offsets", unsafeReplayOverlap)
	}
	s.hub = hub.New(&hub.Options{OriginPatterns: cfg.Live.AllowedOrigins, Logger: log, Auth: s.auth, MaxGroupsPerPane: cfg.Sandbox.MaxGroupsPerPane, MaxBytes: cfg.Live.MaxStateBytes})
	s.breaker = &sink.Breaker{}
	s.prom = prometheus.NewRegistry()
	s.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.deploys = deploy.New(deploy.Options{
		Registry: s.reg, Specs: catalog.Specs{C: s.catalog}, Brokers: cfg.Kafka.Brokers, Admin: s.admin,
		ClickHouse: ch, Database: cfg.ClickHouse.Database, Checkpoints: s.cps, Breaker: s.breaker,
		Live: s.hub, Metrics: pipeline.NewMetrics(s.prom), Prometheus: s.prom,
		InstanceID: id, UnsafeReplayOverlap: unsafeReplayOverlap, MaxGroupsPerPane: cfg.Sandbox.MaxGroupsPerPane, MaxDeployments: cfg.Sandbox.MaxDeployments, SnapshotRate: cfg.Sandbox.SnapshotRate, CatalogTopic: cfg.CatalogTopic(), Log: log,
	})
	s.prom.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
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

// loadLiveTimeout bounds how long a starting host waits for the live state
// of its deployments before it serves anyway.
const loadLiveTimeout = 30 * time.Second

// run starts the stored deployments, then serves the whole HTTP surface
// through sw until ctx ends or srv fails (errc).
func (s *Server) run(ctx context.Context, srv *http.Server, sw *handlerSwitch, errc <-chan error, note func(string)) error {
	note("starting the deployments")
	if err := s.deploys.Start(ctx); err != nil {
		srv.Close()
		return err
	}
	note("loading the deployments' live state from ClickHouse")
	lctx, cancel := context.WithTimeout(ctx, loadLiveTimeout)
	if pending := s.deploys.WaitLoaded(lctx); len(pending) > 0 && ctx.Err() == nil {
		s.log.Warn("serving before the live state of these deployments is loaded: their dashboards fill as it comes", "deployments", pending, "waited", loadLiveTimeout)
	}
	cancel()
	s.probe(ctx)
	go s.probeLoop(ctx)
	cctx, stopCatalog := context.WithCancel(ctx)
	defer stopCatalog()
	catalogDone := make(chan struct{})
	go func() {
		defer close(catalogDone)
		s.catalog.Run(cctx)
	}()
	sw.set(s.Handler())
	scheme := "http"
	if s.cfg.TLS.Enabled() {
		scheme = "https"
	}
	s.log.Info("wagg serving", "addr", s.cfg.Listen, "scheme", scheme)
	if s.auth == nil {
		s.log.Warn("auth: no keys configured: open mode, listening on loopback only; anyone on this machine may push, deploy and subscribe (docs/security.md)", "addr", s.cfg.Listen)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stopCatalog()
	<-catalogDone
	s.deploys.Stop()
	s.catalog.Close()
	s.hub.Close()
	srv.Shutdown(sctx)
	s.rt.Close(sctx)
	s.ch.Close()
	s.queries.Close()
	return err
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
//
// The plugin is checked here, then written to the catalog topic; every host
// (this one too) stores it from there, in the log's order. So two hosts
// pushing other bytes under one name@version at once agree: the first in
// the log wins, the other push answers ErrConflict.
func (s *Server) PushPlugin(ctx context.Context, name, version string, wasm []byte) (plugins.Manifest, error) {
	if err := s.catalog.CatchUp(ctx); err != nil {
		return plugins.Manifest{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	m, err := s.reg.Check(ctx, name, version, wasm)
	if err != nil {
		return m, err
	}
	if old, err := s.reg.Get(name, version); err == nil && old.SHA256 == m.SHA256 {
		return old, nil // pushed before: the catalog has it
	}
	s.pushing.Lock()
	defer s.pushing.Unlock()
	if err := s.reg.Room(m, s.cfg.Sandbox.MaxPlugins, s.cfg.Sandbox.MaxPluginStorage); err != nil {
		return plugins.Manifest{}, err
	}
	if err := s.catalog.PutPlugin(ctx, name, version, m.SHA256, wasm); err != nil {
		return plugins.Manifest{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	stored, err := s.reg.Get(name, version)
	if err != nil {
		return plugins.Manifest{}, fmt.Errorf("plugin %s@%s written to the catalog but not stored: %w", name, version, err)
	}
	if stored.SHA256 != m.SHA256 {
		return plugins.Manifest{}, fmt.Errorf("%w: %s@%s was pushed meanwhile with sha256 %s; push a new version", plugins.ErrConflict, name, version, stored.SHA256)
	}
	s.audit(ctx, "plugin_push", name+"@"+version, "sha256 "+m.SHA256)
	return stored, nil
}

// DeletePlugin deletes name@version on every host. A plugin that a
// deployment's spec names (or its backfill's) is refused with ErrConflict
// naming the deployment.
func (s *Server) DeletePlugin(ctx context.Context, name, version string) error {
	if err := s.catalog.CatchUp(ctx); err != nil {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	m, err := s.reg.Get(name, version)
	if err != nil {
		return err
	}
	ref := m.Ref()
	for _, e := range s.catalog.Deployments() {
		if e.Spec.Plugin == ref || e.Backfill != nil && e.Backfill.Spec.Plugin == ref {
			return fmt.Errorf("%w: deployment %s runs %s: undeploy it, or deploy another version onto it, first", plugins.ErrConflict, e.Spec.Name, ref)
		}
	}
	if err := s.catalog.DeletePlugin(ctx, name, version, m.SHA256); err != nil {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	s.audit(ctx, "plugin_delete", ref, "sha256 "+m.SHA256)
	return nil
}

// Plugins lists stored plugins.
func (s *Server) Plugins() ([]plugins.Manifest, error) { return s.reg.List() }

// MaxUpload is the plugin size limit.
func (s *Server) MaxUpload() int { return s.reg.MaxSize() }

// Deploy starts (or restarts with the new spec) a deployment (deploy.Manager).
//
// It first reads the catalog to its end, so that what another host wrote
// (a plugin pushed there) is known here.
func (s *Server) Deploy(ctx context.Context, d plugins.Deployment) (api.Deployment, error) {
	if err := s.catalog.CatchUp(ctx); err != nil {
		return api.Deployment{}, fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	st, err := s.deploys.Deploy(ctx, d)
	if err == nil {
		s.audit(ctx, "deploy", d.Name, fmt.Sprintf("plugin %s topic %s dead letters %s", d.Plugin, d.Topic, d.DeadLetterTopic))
	}
	return st, err
}

// Undeploy stops a deployment and forgets its spec; its table stays.
func (s *Server) Undeploy(ctx context.Context, name string) error {
	if err := s.catalog.CatchUp(ctx); err != nil {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	if err := s.deploys.Undeploy(ctx, name); err != nil {
		return err
	}
	s.audit(ctx, "undeploy", name, "")
	return nil
}

// Deployments lists the deployments and their status.
func (s *Server) Deployments() []api.Deployment { return s.deploys.List() }

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
