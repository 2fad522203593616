package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/config"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/server"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// env is the real Kafka and ClickHouse that `make test` starts.
type env struct {
	brokers []string
	chAddr  string
}

func services(t testing.TB) env {
	t.Helper()
	b, c := os.Getenv("WAGG_TEST_KAFKA"), os.Getenv("WAGG_TEST_CLICKHOUSE")
	if b == "" || c == "" {
		t.Skip("integration test: needs the Kafka and ClickHouse that `make test` starts (WAGG_TEST_KAFKA, WAGG_TEST_CLICKHOUSE)")
	}
	return env{brokers: strings.Split(b, ","), chAddr: c}
}

// host is a wagg server running in-process on its own database.
type host struct {
	url  string
	db   string
	ch   driver.Conn
	stop func() // stops the server (it checkpoints); safe to call twice
}

func hostConfig(t *testing.T, e env) config.Config {
	cfg := config.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Kafka.Brokers = e.brokers
	cfg.ClickHouse.Addr = e.chAddr
	cfg.ClickHouse.Database = fmt.Sprintf("wagg_it_%d_%d", time.Now().Unix(), rand.IntN(1e6))
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{e.chAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.ClickHouse.Database)
		ch.Close()
		deleteClusterTopics(e, cfg.ClickHouse.Database)
	})
	return cfg
}

// deleteClusterTopics deletes the catalog and relay topics of a database's
// cluster.
func deleteClusterTopics(e env, db string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...))
	if err != nil {
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return
	}
	var gone []string
	for _, name := range topics.Names() {
		if name == "_wagg_catalog_"+db || strings.HasPrefix(name, "_wagg_live_"+db+"_") {
			gone = append(gone, name)
		}
	}
	if len(gone) > 0 {
		adm.DeleteTopics(ctx, gone...)
	}
}

func startHost(t *testing.T, e env) *host { return runHost(t, e, hostConfig(t, e)) }

// runHost starts a server with cfg; several may run one after the other on
// the same data directory and database.
func runHost(t *testing.T, e env, cfg config.Config) *host {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, cfg, log, ln) }()
	url, scheme := "http://"+ln.Addr().String(), "http://"
	if cfg.TLS.Enabled() {
		scheme = "https://"
	}
	serves := answers(scheme + ln.Addr().String())
	eventually(t, 2*time.Minute, "the host serves", func() error {
		select {
		case err := <-done:
			t.Fatalf("server: %v", err)
		default:
		}
		return serves()
	})
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{e.chAddr}})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
			ch.Close()
		})
	}
	t.Cleanup(stop)
	return &host{url: url, db: cfg.ClickHouse.Database, ch: ch, stop: stop}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (h *host) post(t testing.TB, path, ctype string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(h.url+path, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func newTopic(t testing.TB, e env, partitions int) (string, *kgo.Client) {
	t.Helper()
	topic := fmt.Sprintf("votes-it-%d-%d", time.Now().UnixNano(), rand.IntN(1e6))
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
	t.Cleanup(func() {
		adm.DeleteTopics(context.Background(), topic, topic+".dead-letters")
		cl.Close()
	})
	return topic, cl
}

// eventually retries check until it returns nil or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.After(d)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%s: not reached within %s: %v", what, d, err)
		case <-tick.C:
		}
	}
}

func TestVotes_EndToEndCountsMatchInClickHouseAndLive(t *testing.T) {
	e := services(t)
	const votes, partitions, bad = 100_000, 4, 25
	topic, cl := newTopic(t, e, partitions)

	// Produce the votes, keyed by user so they spread over all partitions,
	// and some records the aggregator cannot parse. Expected counts come
	// from what was produced.
	want := gen.Counts{}
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 500})
	t0 := time.Now().Add(-time.Minute).UnixMilli()
	ctx := context.Background()
	var recs []*kgo.Record
	for i := range votes {
		v := g.Next(t0 + int64(i)/4) // 25 s of event time
		want.Add(v)
		recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)})
		if i%(votes/bad) == 0 {
			recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: []byte(`{"poll_id":"not a number","option":"x"}`), Timestamp: time.UnixMilli(v.TS)})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	h := startHost(t, e)
	wasm := testwasm.Build(t, "examples/votes")
	if code, body := h.post(t, "/v1/plugins/votes/1", "application/wasm", wasm); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}],
		"lateness":"2s","checkpoint_every":"500ms"}`, topic)
	if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}

	wsURL := strings.Replace(h.url, "http", "ws", 1) + "/v1/live"
	live, err := hub.Dial(ctx, wsURL, hub.Subscribe{Aggregator: "votes", Windows: []string{"total"}})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	view := &hub.View{}
	frames := make(chan error, 1)
	go func() {
		for {
			f, err := live.Next(ctx)
			if err == nil {
				err = view.Apply(f)
			}
			if err != nil {
				frames <- err
				return
			}
		}
	}()

	eventually(t, 3*time.Minute, "ClickHouse totals equal the produced votes", func() error {
		got, err := h.totals(ctx)
		if err != nil {
			return err
		}
		return diff(got, want)
	})
	var windowed int64
	if err := h.ch.QueryRow(ctx, "SELECT sum(votes) FROM "+h.db+".votes WHERE window_name = 'second'").Scan(&windowed); err != nil {
		t.Fatal(err)
	}
	if windowed != votes {
		t.Errorf("1-second windows sum to %d votes, want %d", windowed, votes)
	}
	eventually(t, time.Minute, "the live view equals the produced votes", func() error {
		select {
		case err := <-frames:
			t.Fatalf("live connection: %v", err)
		default:
		}
		got := gen.Counts{}
		for _, r := range view.Rows() {
			n, err := r.Values["votes"].Int64()
			if err != nil {
				return err
			}
			id, _ := r.Key["poll_id"].(json.Number).Int64()
			got[gen.Key{PollID: id, Option: r.Key["option"].(string)}] = n
		}
		return diff(got, want)
	})
	t.Run("browser", func(t *testing.T) {
		// The group with the most votes is on the page's top list.
		var top gen.Key
		for k, n := range want {
			if n > want[top] || n == want[top] && (k.PollID < top.PollID || k.PollID == top.PollID && k.Option < top.Option) {
				top = k
			}
		}
		browser(t, h.url+"/?aggregator=votes", fmt.Sprintf("poll_id=%d,option=%s", top.PollID, top.Option), want[top])
	})
	dead := consumeAll(t, e, topic+".dead-letters", bad)
	for _, r := range dead {
		if !strings.Contains(header(r, "wagg.error"), "poll_id") || header(r, "wagg.topic") != topic {
			t.Fatalf("dead letter without reason or source: %v", r.Headers)
		}
	}
}

// browser runs host/web/e2e/live.test.mjs in headless Chromium against
// the live page: the running total of key must reach want.
func browser(t *testing.T, url, key string, want int64) {
	e2e(t, "live.test.mjs", 1, "WAGG_E2E_URL="+url, "WAGG_E2E_KEY="+key, fmt.Sprintf("WAGG_E2E_WANT=%d", want))
}

// e2e runs a node test file of host/web/e2e (Playwright, headless Chromium)
// with env and fails unless all of its pass tests pass. make test installs
// Chromium and the npm packages; without them the test is skipped (failed
// under make test: testwasm.Missing).
func e2e(t *testing.T, script string, pass int, env ...string) {
	t.Helper()
	dir := filepath.Join(testwasm.Root(t), "host", "web", "e2e")
	node, err := exec.LookPath("node")
	if err != nil {
		testwasm.Missing(t, "browser test: no node (make test installs what it needs)")
	}
	for _, need := range []string{"/usr/bin/chromium", filepath.Join(dir, "..", "node_modules", "playwright-core")} {
		if _, err := os.Stat(need); err != nil {
			testwasm.Missing(t, fmt.Sprintf("browser test: %s is missing (make test installs it)", need))
		}
	}
	cmd := exec.Command(node, "--test", "--test-concurrency=1", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("%s:\n%s", script, out)
	if err != nil {
		t.Fatalf("browser test %s failed: %v", script, err)
	}
	if !strings.Contains(string(out), fmt.Sprintf("# pass %d\n", pass)) || !strings.Contains(string(out), "# fail 0\n") {
		t.Fatalf("browser test %s: not %d passed", script, pass)
	}
}

func (h *host) totals(ctx context.Context) (gen.Counts, error) {
	rows, err := h.ch.Query(ctx, "SELECT poll_id, option, votes FROM "+h.db+".votes WHERE window_name = 'total'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := gen.Counts{}
	for rows.Next() {
		var k gen.Key
		var n int64
		if err := rows.Scan(&k.PollID, &k.Option, &n); err != nil {
			return nil, err
		}
		got[k] = n
	}
	return got, rows.Err()
}

func diff(got, want gen.Counts) error {
	var total int64
	for k, n := range want {
		total += n
		if got[k] != n {
			return fmt.Errorf("%v: got %d, want %d (%d of %d groups present)", k, got[k], n, len(got), len(want))
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("%d groups, want %d", len(got), len(want))
	}
	return nil
}

func consumeAll(t *testing.T, e env, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: %d records, want %d", topic, len(out), n)
		}
		out = append(out, f.Records()...)
	}
	return out
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func TestPluginPush_RefusesWhatIsNotAPlugin(t *testing.T) {
	e := services(t)
	h := startHost(t, e)
	cases := []struct {
		name string
		body []byte
		code int
		msg  string
	}{
		{"not wasm", []byte("hello, I am a text file"), 422, "not a WebAssembly module"},
		{"truncated wasm", []byte("\x00asm\x01\x00\x00\x00\x01"), 422, "compile"},
		{"wasm without the ABI", testwasm.Build(t, "internal/testwasm/notaplugin"), 422, "wagg_abi_version_1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := h.post(t, "/v1/plugins/bad/1", "application/wasm", c.body)
			var e api.ErrorBody
			json.Unmarshal(body, &e)
			if code != c.code || !strings.Contains(e.Error.Message, c.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, body, c.code, c.msg)
			}
		})
	}
	code, body := h.post(t, "/v1/deployments", "application/json", []byte(`{"name":"x","plugin":"nope@1","topic":"t","windows":[{"name":"w","kind":"sliding"}]}`))
	if code != 400 || !strings.Contains(string(body), "windows[0]") {
		t.Fatalf("bad deployment: got %d %s", code, body)
	}
}

func TestVotes_RestartResumesFromTheCheckpointWithoutDoubleCounting(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 3)
	cfg := hostConfig(t, e)
	want := gen.Counts{}
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 100})
	t0 := time.Now().Add(-time.Minute).UnixMilli()
	next := 0
	produce := func(n int) {
		var recs []*kgo.Record
		for range n {
			v := g.Next(t0 + int64(next)/2)
			next++
			want.Add(v)
			recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	counted := func(h *host) func() error {
		return func() error {
			got, err := h.totals(context.Background())
			if err != nil {
				return err
			}
			return diff(got, want)
		}
	}

	first := runHost(t, e, cfg)
	if code, body := first.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}],"checkpoint_every":"300ms"}`, topic)
	if code, body := first.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	produce(20_000)
	eventually(t, 2*time.Minute, "first host counted the first votes", counted(first))
	first.stop()

	// The second host finds the deployment in the data directory, restores
	// each partition from its checkpoint and reads on from its offset. From
	// its first answer on, its dashboards see every vote counted so far:
	// not an empty view filling up while it loads.
	// A subscriber knocks every few milliseconds from before the host
	// listens, so that it takes the very first snapshot the host serves.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	ln.Close()
	firstVotes := make(chan int64, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := snapshotVotes(ctx, "ws://"+cfg.Listen+"/v1/live", "votes"); err == nil {
				firstVotes <- n
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	second := runHost(t, e, cfg)
	select {
	case got := <-firstVotes:
		if got != int64(next) {
			t.Fatalf("the restarted host's first live snapshot shows %d votes, want the %d counted before the restart", got, next)
		}
	case <-ctx.Done():
		t.Fatal("no live snapshot from the restarted host")
	}
	produce(20_000)
	eventually(t, 2*time.Minute, "second host counted every vote exactly once", counted(second))
	var windowed int64
	if err := second.ch.QueryRow(context.Background(), "SELECT sum(votes) FROM "+second.db+".votes WHERE window_name = 'second'").Scan(&windowed); err != nil {
		t.Fatal(err)
	}
	if windowed != int64(next) {
		t.Fatalf("1-second windows sum to %d, want %d", windowed, next)
	}
}

// snapshotVotes subscribes to the total window of an aggregator at a live
// endpoint and returns the votes of the first snapshot it sends.
func snapshotVotes(ctx context.Context, url, aggregator string) (int64, error) {
	c, err := hub.Dial(ctx, url, hub.Subscribe{Aggregator: aggregator, Windows: []string{"total"}})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for {
		f, err := c.Next(ctx)
		if err != nil {
			return 0, err
		}
		if f.Type == "error" {
			return 0, fmt.Errorf("%s: %s", f.Code, f.Message)
		}
		if f.Type != "snapshot" {
			continue
		}
		var n int64
		for _, r := range f.Rows {
			v, _ := r.Values["votes"].Int64()
			n += v
		}
		return n, nil
	}
}

// Two clusters (two ClickHouse databases) on one Kafka, each with a
// deployment named votes on the same topic: each counts the whole topic.
// Their consumer groups carry the database, as their catalog and relay
// topics do; with one group between them they split the partitions, and
// each counted only its share.
func TestVotes_TwoClustersOnOneKafkaEachCountTheWholeTopic(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 4)
	produceBacklog(t, cl, 20_000)
	x := readTopic(t, e.brokers, topic)
	a, b := startHost(t, e), startHost(t, e)
	a.deployVotes(t, "votes", topic, "")
	b.deployVotes(t, "votes", topic, "")
	for _, h := range []*host{a, b} {
		eventually(t, time.Minute, h.db+" exact", func() error { return h.check(context.Background(), x) })
	}
}
