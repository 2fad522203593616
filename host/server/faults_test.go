package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/config"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/server"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// The fault suite: real Kafka and ClickHouse, hurt on purpose while votes
// flow. Every expectation comes from the records in Kafka, read back by the
// test itself, never from wagg's code.

// private is a Kafka broker or ClickHouse server of the test's own
// (scripts/fault.sh), which it may stop without disturbing other tests.
type private struct {
	t    *testing.T
	kind string
	dir  string
	port int
}

func (p *private) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

func startPrivate(t *testing.T, kind string, port int) *private {
	t.Helper()
	for _, q := range []int{port, port + 1} {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
		if err != nil {
			t.Fatalf("fault test: port %d for a private %s is taken: %v", q, kind, err)
		}
		ln.Close()
	}
	p := &private{t: t, kind: kind, dir: t.TempDir(), port: port}
	p.run("up")
	t.Cleanup(func() { p.run("down") })
	return p
}

func (p *private) run(action string) {
	p.t.Helper()
	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(testwasm.Root(p.t), "scripts", "fault.sh"), p.kind, action, p.dir, strconv.Itoa(p.port))
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("scripts/fault.sh %s %s: %v\n%s", p.kind, action, err, out)
	}
	p.t.Logf("%s %s in %s", p.kind, action, time.Since(start).Round(time.Millisecond))
}

// report prints a line for `make test` to show after the run (go test
// shows a passing test's log only with -v).
func report(t *testing.T, format string, a ...any) {
	t.Helper()
	line := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, a...))
	t.Log(line)
	if p := os.Getenv("WAGG_TEST_REPORT"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

// expected is the oracle: what the input topic holds, read back with a
// plain consumer and parsed by the test.
type expected struct {
	totals    gen.Counts
	perSecond map[int64]int64 // window start (Unix seconds) -> votes
	malformed map[string]bool // "partition/offset" of records that are not votes
	votes     int64
}

func readTopic(t *testing.T, brokers []string, topic string) expected {
	t.Helper()
	// Transaction markers are kept: a partition's last offset may be one.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	x := expected{totals: gen.Counts{}, perSecond: map[int64]int64{}, malformed: map[string]bool{}}
	for len(left) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s back: %d partitions not read to the end", topic, len(left))
		}
		f.EachRecord(func(r *kgo.Record) {
			var v struct {
				PollID *int64  `json:"poll_id"`
				Option *string `json:"option"`
			}
			if r.Attrs.IsControl() {
				// a transaction marker: no record
			} else if json.Unmarshal(r.Value, &v) != nil || v.PollID == nil || v.Option == nil {
				x.malformed[fmt.Sprintf("%d/%d", r.Partition, r.Offset)] = true
			} else {
				x.totals[gen.Key{PollID: *v.PollID, Option: *v.Option}]++
				x.perSecond[r.Timestamp.UnixMilli()/1000]++
				x.votes++
			}
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return x
}

// check compares ClickHouse's totals and 1-second windows with x.
func (h *host) check(ctx context.Context, x expected) error {
	got, err := h.totals(ctx)
	if err != nil {
		return err
	}
	if err := diff(got, x.totals); err != nil {
		return fmt.Errorf("totals: %w", err)
	}
	rows, err := h.ch.Query(ctx, "SELECT toUInt32(window_start), sum(votes) FROM "+h.db+".votes WHERE window_name = 'second' GROUP BY window_start")
	if err != nil {
		return err
	}
	defer rows.Close()
	seconds := map[int64]int64{}
	for rows.Next() {
		var s uint32
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return err
		}
		seconds[int64(s)] = n
	}
	for s, n := range x.perSecond {
		if seconds[s] != n {
			return fmt.Errorf("1-second window at %d: %d votes, want %d", s, seconds[s], n)
		}
	}
	if len(seconds) != len(x.perSecond) {
		return fmt.Errorf("%d 1-second windows, want %d", len(seconds), len(x.perSecond))
	}
	return nil
}

// deadLetters reads the whole dead-letter topic.
func deadLetters(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	if n == 0 {
		return nil
	}
	return consumeAll(t, env{brokers: brokers}, topic, int(n))
}

// producer writes votes until stopped, each stamped with the wall clock
// minus a random delay (out of order by up to jitter), and a record that
// is not a vote every badEvery votes (0: none).
type producer struct {
	cl       *kgo.Client
	rate     int // votes per second
	jitter   time.Duration
	badEvery int

	mu     sync.Mutex
	paused bool
	sent   int64
	errs   int64
	stop   chan struct{}
	done   chan struct{}

	stopOnce sync.Once
}

func startProducer(cl *kgo.Client, rate int, jitter time.Duration, badEvery int) *producer {
	p := &producer{cl: cl, rate: rate, jitter: jitter, badEvery: badEvery, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *producer) run() {
	defer close(p.done)
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 300})
	const tickEvery = 20 * time.Millisecond
	per := max(1, p.rate*int(tickEvery)/int(time.Second))
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			continue
		}
		recs := make([]*kgo.Record, 0, per+1)
		for range per {
			ts := time.Now().Add(-time.Duration(rand.Int64N(int64(p.jitter) + 1)))
			v := g.Next(ts.UnixMilli())
			recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: ts})
			n++
			if p.badEvery > 0 && n%p.badEvery == 0 {
				recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: []byte(`{"poll_id":"NaN","option":7}`), Timestamp: ts})
			}
		}
		// Through a broker outage the client retries; what it reports
		// lost is simply not in the topic, which the oracle reads.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res := p.cl.ProduceSync(ctx, recs...)
		cancel()
		p.mu.Lock()
		for _, r := range res {
			if r.Err != nil {
				p.errs++
			} else {
				p.sent++
			}
		}
		p.mu.Unlock()
	}
}

func (p *producer) pause(on bool) {
	p.mu.Lock()
	p.paused = on
	p.mu.Unlock()
}

// count is how many votes are in the topic so far.
func (p *producer) count() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

func (p *producer) finish() (sent, errs int64) {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.errs
}

// deployVotes pushes the votes plugin and deploys it on topic with extra
// spec fields.
func (h *host) deployVotes(t *testing.T, name, topic, extra string) {
	t.Helper()
	if code, body := h.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated && code != http.StatusConflict {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":%q,"plugin":"votes@1","topic":%q,
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]%s}`, name, topic, extra)
	if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// metric sums the samples of a Prometheus series whose labels contain all
// of the given label pairs.
func metric(url, name string, labels ...string) (float64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no %s%v in /metrics", name, labels)
	}
	return sum, sc.Err()
}

// liveTotal follows the live "total" window of an aggregator and reports
// the votes it shows.
func liveTotal(t *testing.T, h *host, aggregator string) func() int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := hub.Dial(ctx, strings.Replace(h.url, "http", "ws", 1)+"/v1/live", hub.Subscribe{Aggregator: aggregator, Windows: []string{"total"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var mu sync.Mutex
	view := &hub.View{}
	go func() {
		for {
			f, err := c.Next(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			view.Apply(f)
			mu.Unlock()
		}
	}()
	return func() int64 {
		mu.Lock()
		defer mu.Unlock()
		var n int64
		for _, r := range view.Rows() {
			v, _ := r.Values["votes"].Int64()
			n += v
		}
		return n
	}
}

// ClickHouse killed (SIGKILL, as a crash: inserts and checkpoints cut
// mid-request) and down for longer than many checkpoint intervals while votes
// arrive live (event time = wall clock, lateness shorter than the outage,
// producers quiet for longer than idle_after meanwhile), then started:
// nothing valid is dead-lettered, totals and windows are exact, /healthz
// says degraded while it is down, and live deltas go on.
func TestFaults_ClickHouseOutage(t *testing.T) {
	e := services(t)
	ch := startPrivate(t, "clickhouse", 19000)
	pe := env{brokers: e.brokers, chAddr: ch.addr()}
	topic, cl := newTopic(t, pe, 4)
	h := runHost(t, pe, hostConfig(t, pe))
	h.deployVotes(t, "votes", topic, `,"lateness":"1s","idle_after":"1s","checkpoint_every":"500ms"`)
	live := liveTotal(t, h, "votes")

	p := startProducer(cl, 8000, 500*time.Millisecond, 0)
	<-time.After(3 * time.Second)
	ch.run("kill")
	down := time.Now()
	waitHealth(t, h.url, "degraded", "clickhouse:")
	// A deploy that needs ClickHouse now is refused as unavailable (503),
	// and nothing of it is kept.
	spec := fmt.Sprintf(`{"name":"later","plugin":"votes@1","topic":%q,"windows":[{"name":"total","kind":"global"}]}`, topic)
	code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec))
	var eb api.ErrorBody
	json.Unmarshal(body, &eb)
	if code != http.StatusServiceUnavailable || eb.Error.Code != api.CodeUnavailable {
		t.Fatalf("deploy while ClickHouse is down: %d %s", code, body)
	}
	eventually(t, 30*time.Second, "breaker open in /metrics", func() error {
		v, err := metric(h.url, "wagg_clickhouse_breaker_state")
		if err == nil && v == 0 {
			err = errors.New("closed")
		}
		return err
	})
	before := live()
	eventually(t, 30*time.Second, "live deltas while ClickHouse is down", func() error {
		if n := live(); n <= before {
			return fmt.Errorf("live total %d, was %d", n, before)
		}
		return nil
	})
	// Quiet producers while it is down: an idle rule that misreads a
	// stalled partition as caught up would advance the watermark now.
	p.pause(true)
	<-time.After(3 * time.Second)
	p.pause(false)
	<-time.After(time.Until(down.Add(12 * time.Second)))
	ch.run("up")
	report(t, "ClickHouse down for %s while votes arrived", time.Since(down).Round(100*time.Millisecond))
	<-time.After(4 * time.Second)
	sent, _ := p.finish()

	x := readTopic(t, e.brokers, topic)
	if x.votes != sent {
		t.Fatalf("topic holds %d votes, the producer sent %d", x.votes, sent)
	}
	ctx := context.Background()
	eventually(t, 2*time.Minute, "exact totals and windows after ClickHouse is back", func() error { return h.check(ctx, x) })
	if dl := deadLetters(t, e.brokers, topic+".dead-letters"); len(dl) > 0 {
		t.Fatalf("%d valid votes dead-lettered, first: %s %s", len(dl), header(dl[0], "wagg.reason"), header(dl[0], "wagg.error"))
	}
	waitHealth(t, h.url, "ok", "")
	report(t, "%d votes exact", x.votes)
}

// The Kafka broker killed (SIGKILL, as a crash) mid-stream and restarted,
// under the host and the producer: exact.
func TestFaults_KafkaBrokerRestart(t *testing.T) {
	e := services(t)
	k := startPrivate(t, "kafka", 19092)
	pe := env{brokers: []string{k.addr()}, chAddr: e.chAddr}
	topic, cl := newTopic(t, pe, 4)
	h := runHost(t, pe, hostConfig(t, pe))
	// A lateness longer than the outage: records the producer could not
	// deliver while the broker was away are late by its own clock, not
	// by the host's fault.
	h.deployVotes(t, "votes", topic, `,"lateness":"2m","checkpoint_every":"500ms"`)
	p := startProducer(cl, 5000, time.Second, 500)
	eventually(t, time.Minute, "votes counted before the restart", func() error {
		v, err := metric(h.url, "wagg_records_total", `outcome="processed"`)
		if err == nil && v < 10_000 {
			err = fmt.Errorf("%v processed", v)
		}
		return err
	})
	k.run("kill")
	down := time.Now()
	// The host's Kafka client knows its broker by now: /healthz must ask
	// the broker, not the client's cache.
	waitHealth(t, h.url, "degraded", "kafka:")
	k.run("up")
	report(t, "broker away for %s", time.Since(down).Round(100*time.Millisecond))
	eventually(t, 2*time.Minute, "progress after the restart", func() error {
		v, err := metric(h.url, "wagg_checkpoints_total", `result="ok"`)
		if err != nil {
			return err
		}
		before := v
		<-time.After(time.Second)
		if v, err = metric(h.url, "wagg_checkpoints_total", `result="ok"`); err == nil && v <= before {
			err = errors.New("no checkpoint")
		}
		return err
	})
	<-time.After(3 * time.Second)
	sent, lost := p.finish()
	x := readTopic(t, pe.brokers, topic)
	eventually(t, 2*time.Minute, "exact totals and windows", func() error { return h.check(context.Background(), x) })
	checkMalformedDeadLettered(t, deadLetters(t, pe.brokers, topic+".dead-letters"), x, true)
	waitHealth(t, h.url, "ok", "")
	report(t, "%d votes exact (%d acknowledged, %d reported lost by the producer), %d malformed dead-lettered", x.votes, sent, lost, len(x.malformed))
}

// waitHealth waits for /healthz to say status, with a reason containing
// reason when it is not empty.
func waitHealth(t *testing.T, url, status, reason string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("/healthz %s %s", status, reason), func() error {
		var hl api.Health
		if err := getJSON(url+"/healthz", &hl); err != nil {
			return err
		}
		if hl.Status != status || !strings.Contains(strings.Join(hl.Reasons, " "), reason) {
			return fmt.Errorf("%+v", hl)
		}
		return nil
	})
}

// A record dated an hour ahead and one before 1970 among valid votes: both
// dead-lettered with their reasons, nothing else affected (the future one
// moved no watermark).
func TestFaults_BadEventTimes(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 1)
	h := startHost(t, e)
	h.deployVotes(t, "votes", topic, `,"lateness":"1s","max_future":"1m"`)
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 50})
	now := time.Now().Add(-time.Minute)
	var recs []*kgo.Record
	vote := func(ts time.Time) *kgo.Record {
		v := g.Next(ts.UnixMilli())
		return &kgo.Record{Value: v.AppendJSON(nil), Timestamp: ts}
	}
	for i := range 5000 {
		switch i {
		case 1000:
			recs = append(recs, vote(time.Now().Add(time.Hour)))
		case 2000:
			recs = append(recs, vote(time.UnixMilli(-86_400_000)))
		}
		recs = append(recs, vote(now.Add(time.Duration(i)*time.Millisecond)))
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The oracle: every record dated within [1970, now+1m] is a vote.
	x := expected{totals: gen.Counts{}, perSecond: map[int64]int64{}}
	for _, r := range recs {
		if ts := r.Timestamp; ts.Before(time.Unix(0, 0)) || ts.After(time.Now().Add(time.Minute)) {
			continue
		}
		var v struct {
			PollID int64  `json:"poll_id"`
			Option string `json:"option"`
		}
		json.Unmarshal(r.Value, &v)
		x.totals[gen.Key{PollID: v.PollID, Option: v.Option}]++
		x.perSecond[r.Timestamp.UnixMilli()/1000]++
	}
	eventually(t, time.Minute, "valid votes exact", func() error { return h.check(context.Background(), x) })
	dl := consumeAll(t, e, topic+".dead-letters", 2)
	reasons := map[string]string{}
	for _, d := range dl {
		reasons[header(d, "wagg.offset")] = header(d, "wagg.reason")
	}
	if reasons["1000"] != "future" || reasons["2001"] != "out_of_range" {
		t.Fatalf("dead letters by offset: %v, want 1000: future, 2001: out_of_range", reasons)
	}
}

// A plugin that fails on one record value: those records are in the
// dead-letter topic with the plugin's message, every other record is
// counted, and the partition goes on. A plugin that fails on everything
// stops as a failed deployment, visible everywhere, and stays stopped
// across a restart of the host.
func TestFaults_PoisonRecords(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 2)
	cfg := hostConfig(t, e)
	h := runHost(t, e, cfg)
	if code, body := h.post(t, "/v1/plugins/panics/1", "application/wasm", testwasm.Build(t, "internal/testwasm/panics")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := func(name, topic string, maxErrors int) []byte {
		return fmt.Appendf(nil, `{"name":%q,"plugin":"panics@1","topic":%q,"max_plugin_errors":%d,
			"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]}`, name, topic, maxErrors)
	}
	if code, body := h.post(t, "/v1/deployments", "application/json", spec("polls", topic, 100)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	want := map[int64]int64{}
	poison := map[string]bool{}
	produce := func(n int) {
		t0 := time.Now().Add(-30 * time.Second)
		var recs []*kgo.Record
		for i := range n {
			poll := int64(i%30 + 1)
			recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: fmt.Appendf(nil, `{"poll_id":%d}`, poll), Timestamp: t0.Add(time.Duration(i) * time.Millisecond)})
		}
		res := cl.ProduceSync(context.Background(), recs...)
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if strings.HasSuffix(string(r.Record.Value), ":13}") {
				poison[fmt.Sprintf("%d/%d", r.Record.Partition, r.Record.Offset)] = true
			} else {
				var v struct {
					PollID int64 `json:"poll_id"`
				}
				json.Unmarshal(r.Record.Value, &v)
				want[v.PollID]++
			}
		}
	}
	counted := func() error {
		rows, err := h.ch.Query(context.Background(), "SELECT poll_id, votes FROM "+h.db+".polls WHERE window_name = 'total'")
		if err != nil {
			return err
		}
		defer rows.Close()
		got := map[int64]int64{}
		for rows.Next() {
			var p, n int64
			if err := rows.Scan(&p, &n); err != nil {
				return err
			}
			got[p] = n
		}
		for p, n := range want {
			if got[p] != n {
				return fmt.Errorf("poll %d: %d votes, want %d", p, got[p], n)
			}
		}
		if len(got) != len(want) {
			return fmt.Errorf("%d polls, want %d", len(got), len(want))
		}
		return nil
	}
	produce(3000)
	eventually(t, 2*time.Minute, "every other record counted", counted)
	// The partitions still run: more votes are counted too.
	produce(600)
	eventually(t, time.Minute, "records after the poison counted", counted)
	dl := consumeAll(t, e, topic+".dead-letters", len(poison))
	for _, d := range dl {
		src := header(d, "wagg.partition") + "/" + header(d, "wagg.offset")
		if !poison[src] || header(d, "wagg.reason") != "plugin_error" || !strings.Contains(header(d, "wagg.error"), "poll 13 is cursed") {
			t.Fatalf("dead letter from %s: %s %q", src, header(d, "wagg.reason"), header(d, "wagg.error"))
		}
	}

	// Every record poisoned: the deployment fails after max_plugin_errors.
	bad, badCl := newTopic(t, e, 1)
	var recs []*kgo.Record
	for range 200 {
		recs = append(recs, &kgo.Record{Value: []byte(`{"poll_id":13}`), Timestamp: time.Now()})
	}
	if err := badCl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if code, body := h.post(t, "/v1/deployments", "application/json", spec("cursed", bad, 5)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	failed := func(h *host) func() error {
		return func() error {
			var ds []api.Deployment
			if err := getJSON(h.url+"/v1/deployments", &ds); err != nil {
				return err
			}
			for _, d := range ds {
				if d.Name == "cursed" && d.Status == api.StatusFailed && strings.Contains(d.Error, "poll 13 is cursed") {
					return nil
				}
			}
			return fmt.Errorf("deployments: %+v", ds)
		}
	}
	eventually(t, time.Minute, "the cursed deployment failed", failed(h))
	var hl api.Health
	if err := getJSON(h.url+"/healthz", &hl); err != nil || hl.Status != "degraded" || !strings.Contains(strings.Join(hl.Reasons, " "), "cursed") {
		t.Fatalf("/healthz: %+v %v", hl, err)
	}
	if v, err := metric(h.url, "wagg_deployment_failed", `deployment="cursed"`); err != nil || v != 1 {
		t.Fatalf("wagg_deployment_failed: %v %v", v, err)
	}
	// Every dead letter counted is written, though the deployment stopped
	// without a checkpoint right after them.
	dead, err := metric(h.url, "wagg_dead_letters_total", `deployment="cursed"`, `reason="plugin_error"`)
	if err != nil || dead < 5 {
		t.Fatalf("%v dead letters counted (%v), want at least 5", dead, err)
	}
	if dead > 6 {
		t.Fatalf("%v dead letters from a deployment that should have stopped after 5", dead)
	}
	eventually(t, 30*time.Second, "the dead letters counted written", func() error {
		if dl := deadLetters(t, e.brokers, bad+".dead-letters"); len(dl) != int(dead) {
			return fmt.Errorf("%d dead letters written, %v counted", len(dl), dead)
		}
		return nil
	})
	h.stop()
	again := runHost(t, e, cfg)
	eventually(t, time.Minute, "still failed after a restart", failed(again))
}

// freeAddr is a loopback address no one listens on (for a child process
// to listen on).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveArgs picks a free address for a `wagg serve` of cfg on e, and
// returns its URL and the arguments to start it with.
func serveArgs(t testing.TB, e env, cfg config.Config) (url string, args []string) {
	t.Helper()
	addr := freeAddr(t)
	return "http://" + addr, []string{"-listen", addr, "-data-dir", cfg.DataDir, "-kafka", strings.Join(e.brokers, ","),
		"-clickhouse", e.chAddr, "-database", cfg.ClickHouse.Database}
}

// stopAtCleanup stops whichever process *p is when the test ends, even
// when it fails: gracefully, or with SIGKILL after 30 s.
func stopAtCleanup(t testing.TB, p **serveProc) {
	t.Cleanup(func() {
		(*p).cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-(*p).done:
		case <-time.After(30 * time.Second):
			(*p).kill()
		}
	})
}

// answers is a check that a host at url serves: /healthz 200, not the
// 503 of a host still starting. An https url is not verified: this only
// sees that the host serves (TestTLS_HostServesHTTPSWithTheConfiguredCertificate
// checks the certificate).
func answers(url string) func() error {
	client := http.DefaultClient
	if strings.HasPrefix(url, "https://") {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	return func() error {
		resp, err := client.Get(url + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", resp.Status)
		}
		return nil
	}
}

// serveProc is `wagg serve` as a child process.
type serveProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

func buildWagg(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wagg")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/wagg")
	cmd.Dir = testwasm.Root(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/wagg: %v\n%s", err, out)
	}
	return bin
}

func startServe(t testing.TB, bin string, args []string, extraEnv []string, logf io.Writer) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *serveProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// crashTest runs `wagg serve` on a backlog of votes (out of order, with
// malformed records, more arriving live) and kills it with SIGKILL at
// random points of the catch-up until kills of them fell within it, then
// lets it finish. It
// returns the host's view of the results and the oracle.
func crashTest(t *testing.T, backlog, kills int, extraEnv []string) (*host, expected) {
	e := services(t)
	const partitions = 6
	topic, cl := newTopic(t, e, partitions)
	cfg := hostConfig(t, e)
	bin := buildWagg(t)
	url, args := serveArgs(t, e, cfg)
	logf := serveLog(t, filepath.Join(cfg.DataDir, "serve.log"), 8000)
	defer logf.Close()

	produceBacklog(t, cl, backlog)

	// The first run deploys; every later one finds the deployment in the catalog.
	p := startServe(t, bin, args, extraEnv, logf)
	stopAtCleanup(t, &p)
	eventually(t, time.Minute, "wagg serve answers", answers(url))
	h := &host{url: url, db: cfg.ClickHouse.Database}
	var err error
	h.ch, err = clickhouse.Open(&clickhouse.Options{Addr: []string{e.chAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.ch.Close() })
	h.deployVotes(t, "votes", topic, `,"lateness":"5s","checkpoint_every":"300ms","max_batch":512`)
	live := startProducer(cl, 2000, 2*time.Second, 1000)
	progress := func() error {
		v, err := metric(url, "wagg_records_total", `outcome="processed"`)
		if err == nil && v == 0 {
			err = errors.New("nothing processed yet")
		}
		return err
	}
	// How far the checkpoints are at each kill: the kills must fall
	// within the catch-up, not after it.
	done := func() int64 {
		var n int64
		h.ch.QueryRow(context.Background(), "SELECT toInt64(sum(next_offset)) FROM "+h.db+"._wagg_checkpoints FINAL WHERE deployment = 'votes'").Scan(&n)
		return n
	}
	// The kill points: a random offset in each of kills equal stretches
	// of the first 85% of the backlog, each reached by a checkpoint; the
	// kill follows within a random fifth of a second.
	targets := make([]int64, kills)
	stretch := int64(backlog) * 85 / 100 / int64(kills)
	for i := range targets {
		targets[i] = int64(i)*stretch + 1 + rand.Int64N(stretch)
	}
	var times, at []string
	inCatchUp := 0
	for i, target := range targets {
		eventually(t, 2*time.Minute, fmt.Sprintf("checkpoints reach offset %d", target), func() error {
			if n := done(); n < target {
				return fmt.Errorf("at %d", n)
			}
			return nil
		})
		<-time.After(time.Duration(rand.IntN(200)) * time.Millisecond)
		p.kill()
		n := done()
		if n < int64(backlog) {
			inCatchUp++
		}
		at = append(at, strconv.FormatInt(n, 10))
		start := time.Now()
		p = startServe(t, bin, args, extraEnv, logf)
		eventually(t, time.Minute, fmt.Sprintf("progress after kill %d", i+1), progress)
		times = append(times, time.Since(start).Round(10*time.Millisecond).String())
	}
	sent, _ := live.finish()
	report(t, "%d kill -9s (%d within the catch-up) over a backlog of %d votes (+%d live); restart -> progress: %s; checkpointed offsets at each kill: %s",
		len(at), inCatchUp, backlog, sent, strings.Join(times, " "), strings.Join(at, " "))
	return h, readTopic(t, e.brokers, topic)
}

// produceBacklog writes n votes whose event time runs 1 ms per vote from
// n+60 s ago, jittered by up to ±2 s (a lateness of 5 s makes none late),
// and one malformed record per 1000.
func produceBacklog(t testing.TB, cl *kgo.Client, n int) {
	t.Helper()
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 1000})
	t0 := time.Now().Add(-time.Duration(n+60_000) * time.Millisecond)
	recs := make([]*kgo.Record, 0, 10_000)
	flush := func() {
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		recs = recs[:0]
	}
	for i := range n {
		ts := t0.Add(time.Duration(i)*time.Millisecond + time.Duration(rand.Int64N(4000)-2000)*time.Millisecond)
		v := g.Next(ts.UnixMilli())
		recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: ts})
		if i%1000 == 999 {
			recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: []byte(`{"poll_id":`), Timestamp: ts})
		}
		if len(recs) >= 10_000 {
			flush()
		}
	}
	flush()
}

// kill -9 of `wagg serve` at least 10 times at random points of a
// catch-up of 500k votes: exact, and every malformed record dead-lettered.
func TestFaults_KillNineDuringCatchUp(t *testing.T) {
	h, x := crashTest(t, 500_000, 10, nil)
	if x.votes < 500_000 {
		t.Fatalf("only %d votes in the topic", x.votes)
	}
	eventually(t, 3*time.Minute, "exact totals and windows after the kills", func() error { return h.check(context.Background(), x) })
	checkMalformedDeadLettered(t, deadLettersOf(t, services(t), h), x, false)
}

// checkMalformedDeadLettered fails t unless every malformed record of x
// has a dead letter in dl, and, with onlyMalformed, unless every dead
// letter in dl is one of a malformed record.
func checkMalformedDeadLettered(t *testing.T, dl []*kgo.Record, x expected, onlyMalformed bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range dl {
		if r := header(d, "wagg.reason"); onlyMalformed && r != "malformed" {
			t.Fatalf("dead letter %s: %s", r, header(d, "wagg.error"))
		}
		seen[header(d, "wagg.partition")+"/"+header(d, "wagg.offset")] = true
	}
	for m := range x.malformed {
		if !seen[m] {
			t.Fatalf("malformed record %s not dead-lettered", m)
		}
	}
}

// deadLettersOf reads the dead-letter topic of the host's votes deployment.
func deadLettersOf(t *testing.T, e env, h *host) []*kgo.Record {
	t.Helper()
	var ds []api.Deployment
	if err := getJSON(h.url+"/v1/deployments", &ds); err != nil || len(ds) != 1 {
		t.Fatalf("deployments: %v %v", ds, err)
	}
	return deadLetters(t, e.brokers, ds[0].DeadLetterTopic)
}

// The negative control: the same crash test with the checkpoint's offset
// fence switched off (restored partitions re-read records their snapshot
// already holds) must see double counting, or the crash test proves
// nothing.
func TestFaults_KillNineNegativeControlDetectsDoubleCounting(t *testing.T) {
	h, x := crashTest(t, 100_000, 3, []string{"WAGG_UNSAFE_REPLAY_OVERLAP=2000"})
	var got int64
	eventually(t, 3*time.Minute, "every vote read", func() error {
		if err := h.ch.QueryRow(context.Background(), "SELECT toInt64(sum(votes)) FROM "+h.db+".votes WHERE window_name = 'total'").Scan(&got); err != nil {
			return err
		}
		if got < x.votes {
			return fmt.Errorf("%d of %d votes", got, x.votes)
		}
		return nil
	})
	if err := h.check(context.Background(), x); err == nil || got <= x.votes {
		t.Fatalf("double counting not detected: %d votes for %d in the topic (%v)", got, x.votes, err)
	}
	report(t, "detected: %d votes counted for %d in the topic", got, x.votes)
}

// A host started while ClickHouse is down waits for it, however long,
// instead of exiting, so that a host and a ClickHouse restarted together
// come up together; meanwhile its /healthz says what it waits for.
func TestFaults_HostStartsWhileClickHouseIsDown(t *testing.T) {
	e := services(t)
	ch := startPrivate(t, "clickhouse", 19000)
	pe := env{brokers: e.brokers, chAddr: ch.addr()}
	cfg := hostConfig(t, pe)
	ch.run("down")
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- server.Serve(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), ln) }()
	waits := func() error {
		select {
		case err := <-served:
			t.Fatalf("the host stopped waiting for ClickHouse: %v", err)
		default:
		}
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var hl api.Health
		if err := json.NewDecoder(resp.Body).Decode(&hl); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusServiceUnavailable || hl.Status != api.StatusStarting ||
			!strings.Contains(strings.Join(hl.Reasons, " "), "waiting for clickhouse "+ch.addr()) {
			return fmt.Errorf("/healthz: %s %+v", resp.Status, hl)
		}
		return nil
	}
	eventually(t, 30*time.Second, "/healthz saying the host waits for ClickHouse", waits)
	// ClickHouse stays away longer than the minute a host used to wait
	// before it gave up and exited, and the host answers all along.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for away := time.Now(); time.Since(away) < 70*time.Second; <-tick.C {
		if err := waits(); err != nil {
			t.Fatal(err)
		}
	}
	ch.run("up")
	eventually(t, time.Minute, "the host serving once ClickHouse is back", answers(url))
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// logWatch closes seen when a log line contains want.
type logWatch struct {
	want string
	once sync.Once
	seen chan struct{}
}

func (w *logWatch) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// serveLog creates the log file of wagg serve processes at path; when the
// test fails, its last tail bytes go to the test's log.
func serveLog(t testing.TB, path string, tail int) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(path)
			if len(b) > tail {
				b = b[len(b)-tail:]
			}
			t.Logf("wagg serve log (tail):\n%s", b)
		}
	})
	return f
}

// A transactional producer that commits some transactions and aborts
// others, with the votes of both interleaved in the partitions: only the
// committed votes count, and neither the aborted records nor the
// transaction markers are dead-lettered.
func TestFaults_AbortedTransactionsCountNothing(t *testing.T) {
	e := services(t)
	topic, _ := newTopic(t, e, 2)
	h := startHost(t, e)
	h.deployVotes(t, "votes", topic, `,"lateness":"1m","checkpoint_every":"300ms"`)
	tx, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(topic+"-tx"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 40})
	t0 := time.Now().Add(-30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 12 {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for j := range 500 {
			v := g.Next(t0.Add(time.Duration(i*500+j) * time.Millisecond).UnixMilli())
			tx.Produce(ctx, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)}, nil)
		}
		if err := tx.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		commit := kgo.TryCommit
		if i%3 == 1 {
			commit = kgo.TryAbort
		}
		if err := tx.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	x := readTopic(t, e.brokers, topic)
	if x.votes != 8*500 {
		t.Fatalf("a read-committed consumer sees %d votes, want the 4000 committed", x.votes)
	}
	eventually(t, time.Minute, "the committed votes exact", func() error { return h.check(context.Background(), x) })
	// Once the checkpoints cover every offset, markers included, any dead
	// letter is written (one is, before the checkpoint past its record).
	ends, err := kadm.NewClient(tx).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var end int64
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	eventually(t, time.Minute, "checkpoints at the end of the topic", func() error {
		var n int64
		if err := h.ch.QueryRow(ctx, "SELECT toInt64(sum(next_offset)) FROM "+h.db+"._wagg_checkpoints FINAL WHERE deployment = 'votes'").Scan(&n); err != nil {
			return err
		}
		if n != end {
			return fmt.Errorf("checkpoints at %d of %d", n, end)
		}
		return nil
	})
	if dl := deadLetters(t, e.brokers, topic+".dead-letters"); len(dl) > 0 {
		t.Fatalf("%d dead letters, the first %s: %s", len(dl), header(dl[0], "wagg.reason"), header(dl[0], "wagg.error"))
	}
}

// The input topic deleted and created again under a running deployment:
// Kafka's offsets start over below what the deployment has counted, and
// the new records would be skipped as counted already (or, counted, land
// in rows that lose to the old ones by version). The deployment fails
// instead, saying what happened and how to count the topic afresh.
func TestFaults_SourceTopicCreatedAgainFailsTheDeployment(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 1)
	h := startHost(t, e)
	h.deployVotes(t, "votes", topic, `,"lateness":"1m","checkpoint_every":"300ms"`)
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 20})
	produce := func(cl *kgo.Client, n int) {
		var recs []*kgo.Record
		for range n {
			v := g.Next(time.Now().UnixMilli())
			recs = append(recs, &kgo.Record{Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(cl, 2000)
	x := readTopic(t, e.brokers, topic)
	eventually(t, time.Minute, "the first votes counted", func() error { return h.check(context.Background(), x) })

	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := adm.DeleteTopics(ctx, topic); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the topic created again", func() error {
		resp, err := adm.CreateTopic(ctx, 1, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		return err
	})
	// A client of its own: the first one knows the old topic's ID.
	again, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	produce(again, 500)
	eventually(t, 2*time.Minute, "the deployment failed naming the source", func() error {
		var ds []api.Deployment
		if err := getJSON(h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Status != api.StatusFailed || !strings.Contains(ds[0].Error, "created again") || !strings.Contains(ds[0].Error, "-start earliest") {
			return fmt.Errorf("deployments: %+v", ds)
		}
		return nil
	})
	// Nothing of the new topic went into the old counts.
	if err := h.check(context.Background(), x); err != nil {
		t.Fatal(err)
	}
}
