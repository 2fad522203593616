package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// healthProbe polls /healthz until stopped and keeps the slowest answer.
type healthProbe struct {
	polls, bad atomic.Int64
	mu         sync.Mutex
	slowest    time.Duration
	slow       []string // answers over half a second, when
	stop, done chan struct{}
}

// stopTheWorld is the histogram of how long the Go runtime waited for every
// goroutine to stop, for garbage collection and otherwise: a goroutine in
// compiled guest code that does not reach a safe point holds it up.
func stopTheWorld() []metrics.Sample {
	s := []metrics.Sample{{Name: "/sched/pauses/stopping/gc:seconds"}, {Name: "/sched/pauses/stopping/other:seconds"}}
	metrics.Read(s)
	return s
}

// longestSince is the upper bound of the highest bucket that gained counts
// since before.
func longestSince(before []metrics.Sample) time.Duration {
	after := stopTheWorld()
	var longest float64
	for i := range after {
		a, b := after[i].Value.Float64Histogram(), before[i].Value.Float64Histogram()
		for j := len(a.Counts) - 1; j >= 0; j-- {
			if a.Counts[j] > b.Counts[j] {
				longest = max(longest, a.Buckets[j+1])
				break
			}
		}
	}
	return time.Duration(longest * float64(time.Second))
}

func probeHealth(url string) *healthProbe {
	p := &healthProbe{stop: make(chan struct{}), done: make(chan struct{})}
	cl := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			resp, err := cl.Get(url + "/healthz")
			took := time.Since(start)
			if err == nil {
				resp.Body.Close()
			}
			p.polls.Add(1)
			if err != nil || resp.StatusCode != http.StatusOK {
				p.bad.Add(1)
			}
			p.mu.Lock()
			p.slowest = max(p.slowest, took)
			if took > 500*time.Millisecond {
				p.slow = append(p.slow, fmt.Sprintf("%s took %v", start.Format("15:04:05.000"), took))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *healthProbe) finish() time.Duration {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slowest
}

// A guest that loops for ever on one record value, one that loops in every
// flush and uploads whose start function loops, all at once next to a
// healthy votes deployment fed at a steady rate: /healthz answers within a
// second every time, the healthy deployment keeps >= 90% of its offered
// rate, the poison records are dead-lettered (plugin_error), the flushing
// one fails, the uploads are refused, and both broken deployments can be
// deleted, specs and all, while they are stuck.
func TestContainment_LoopingGuestsNextToAHealthyDeployment(t *testing.T) {
	e := services(t)
	const rate = 1500 // votes/s offered to the healthy deployment
	cfg := hostConfig(t, e)
	h := runHost(t, e, cfg)
	ctx := context.Background()

	votesTopic, votesCl := newTopic(t, e, 4)
	h.deployVotes(t, "votes", votesTopic, `,"checkpoint_every":"500ms"`)
	offered := startProducer(votesCl, rate, 0, 0)
	defer offered.finish()
	processed := func() float64 {
		v, _ := metric(h.url, "wagg_records_total", `deployment="votes"`, `"processed"`)
		return v
	}
	eventually(t, time.Minute, "the healthy deployment processes", func() error {
		if n := processed(); n < rate {
			return fmt.Errorf("%v records processed", n)
		}
		return nil
	})

	// The broken plugins: spins loops on poll 13 in wagg_process; stuck
	// loops in wagg_flush once a watermark of today reaches it (the upload's
	// dry run flushes at a watermark of 2023).
	if code, body := h.post(t, "/v1/plugins/spins/1", "application/wasm", testwasm.Build(t, "internal/testwasm/spins")); code != http.StatusCreated {
		t.Fatalf("push spins: %d %s", code, body)
	}
	stuckWasm := testwasm.Guest{Bodies: map[string][]byte{
		abi.FlushExport: append(testwasm.LoopPastWatermark(1_750_000_000_000), testwasm.Packed(testwasm.RowsPtr, 16)...),
	}}.Bytes()
	if code, body := h.post(t, "/v1/plugins/stuck/1", "application/wasm", stuckWasm); code != http.StatusCreated {
		t.Fatalf("push stuck: %d %s", code, body)
	}
	spinTopic, spinCl := newTopic(t, e, 2)
	stuckTopic, stuckCl := newTopic(t, e, 1)
	for _, d := range []struct{ name, plugin, topic string }{{"spin", "spins@1", spinTopic}, {"stuck", "stuck@1", stuckTopic}} {
		spec := fmt.Sprintf(`{"name":%q,"plugin":%q,"topic":%q,"max_plugin_errors":1000,"windows":[{"name":"total","kind":"global"}]}`, d.name, d.plugin, d.topic)
		if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
			t.Fatalf("deploy %s: %d %s", d.name, code, body)
		}
	}
	vote := func(poll int) *kgo.Record {
		return &kgo.Record{Key: []byte(strconv.Itoa(rand.IntN(1 << 20))), Value: fmt.Appendf(nil, `{"poll_id":%d}`, poll), Timestamp: time.Now()}
	}
	if err := stuckCl.ProduceSync(ctx, vote(1), vote(2)).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Load on the broken ones while the window runs: poison among good
	// votes for spin, uploads whose _initialize loops.
	var wg sync.WaitGroup
	quit := make(chan struct{})
	var poisonMu sync.Mutex
	poison := map[string]bool{}
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			recs := []*kgo.Record{vote(13)}
			for i := range 10 {
				recs = append(recs, vote(i+1))
			}
			res := spinCl.ProduceSync(ctx, recs...)
			poisonMu.Lock()
			for _, r := range res {
				if r.Err == nil && strings.HasSuffix(string(r.Record.Value), ":13}") {
					poison[fmt.Sprintf("%d/%d", r.Record.Partition, r.Record.Offset)] = true
				}
			}
			poisonMu.Unlock()
		}
	})
	var refused atomic.Int64
	var uploadErr atomic.Value
	wg.Go(func() {
		initLoop := testwasm.Guest{Bodies: map[string][]byte{abi.InitializeExport: testwasm.Loop()}}.Bytes()
		for i := 0; ; i++ {
			select {
			case <-quit:
				return
			default:
			}
			resp, err := http.Post(fmt.Sprintf("%s/v1/plugins/initloop/%d", h.url, i), "application/wasm", strings.NewReader(string(initLoop)))
			if err != nil {
				uploadErr.Store(err.Error())
				return
			}
			var eb api.ErrorBody
			json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			if resp.StatusCode/100 != 4 || !strings.Contains(eb.Error.Message, "deadline") {
				uploadErr.Store(fmt.Sprintf("upload of a looping _initialize: %d %+v, want 4xx naming the deadline", resp.StatusCode, eb))
				return
			}
			refused.Add(1)
		}
	})
	stopLoad := sync.OnceFunc(func() {
		close(quit)
		wg.Wait()
	})
	defer stopLoad()

	// The window: from here until every broken thing has shown its
	// containment, and at least 15 s of offered votes.
	health := probeHealth(h.url)
	stw := stopTheWorld()
	sent0, done0 := offered.count(), processed()
	status := func(name string) api.Deployment {
		var ds []api.Deployment
		getJSON(h.url+"/v1/deployments", &ds)
		for _, d := range ds {
			if d.Name == name {
				return d
			}
		}
		return api.Deployment{}
	}
	eventually(t, 3*time.Minute, "every broken guest contained", func() error {
		if s, ok := uploadErr.Load().(string); ok {
			t.Fatal(s)
		}
		dl, _ := metric(h.url, "wagg_dead_letters_total", `deployment="spin"`, `reason="plugin_error"`)
		switch {
		case dl < 5:
			return fmt.Errorf("spin dead-lettered %v poison records, want 5", dl)
		case status("stuck").Status != api.StatusFailed:
			return fmt.Errorf("stuck is %+v, want failed", status("stuck"))
		case refused.Load() < 3:
			return fmt.Errorf("%d looping uploads refused, want 3", refused.Load())
		case offered.count()-sent0 < 15*rate:
			return fmt.Errorf("%d votes offered in the window, want %d", offered.count()-sent0, 15*rate)
		}
		return nil
	})
	sent1, done1 := offered.count(), processed()
	slowest := health.finish()
	ratio := (done1 - done0) / float64(sent1-sent0)
	t.Logf("window: %d votes offered, %.0f processed (%.1f%%); /healthz polled %d times, slowest %v (over 0.5s: %v); longest wait to stop the world %v; %d looping uploads refused",
		sent1-sent0, done1-done0, 100*ratio, health.polls.Load(), slowest, health.slow, longestSince(stw), refused.Load())
	if health.bad.Load() > 0 || slowest >= time.Second {
		t.Errorf("/healthz: %d of %d polls failed, slowest took %v, want every answer within 1s", health.bad.Load(), health.polls.Load(), slowest)
	}
	if ratio < 0.9 {
		t.Errorf("the healthy deployment processed %.1f%% of its offered rate while the guests looped, want >= 90%%", 100*ratio)
	}
	if d := status("stuck"); !strings.Contains(d.Error, "flush") {
		t.Errorf("stuck failed with %q, want the flush named", d.Error)
	}
	stopLoad()

	// The poison records went to the dead-letter topic as plugin errors.
	for _, d := range consumeAll(t, e, spinTopic+".dead-letters", 5) {
		src := header(d, "wagg.partition") + "/" + header(d, "wagg.offset")
		poisonMu.Lock()
		ok := poison[src]
		poisonMu.Unlock()
		if !ok || header(d, "wagg.reason") != "plugin_error" || string(d.Value) != `{"poll_id":13}` {
			t.Errorf("dead letter from %s: %s %q %s", src, header(d, "wagg.reason"), header(d, "wagg.error"), d.Value)
		}
	}

	// Both are deleted while spin still has poison to loop on.
	for _, name := range []string{"spin", "stuck"} {
		req, _ := http.NewRequest(http.MethodDelete, h.url+"/v1/deployments/"+name, nil)
		start := time.Now()
		resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
		if err != nil {
			t.Fatalf("DELETE %s: %v", name, err)
		}
		resp.Body.Close()
		t.Logf("DELETE %s: %d in %v", name, resp.StatusCode, time.Since(start))
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE %s: %d", name, resp.StatusCode)
		}
		if d := status(name); d.Name != "" {
			t.Errorf("%s still listed after DELETE: %+v", name, d)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "deployments", name+".json")); !os.IsNotExist(err) {
			t.Errorf("%s: spec still on disk after DELETE (%v)", name, err)
		}
	}

	// The healthy deployment counted every vote offered.
	sent, errs := offered.finish()
	if errs > 0 {
		t.Logf("%d votes not produced (not in the topic)", errs)
	}
	eventually(t, 2*time.Minute, "every offered vote counted in ClickHouse", func() error {
		var n int64
		if err := h.ch.QueryRow(ctx, "SELECT toInt64(sum(votes)) FROM "+h.db+".votes WHERE window_name = 'total'").Scan(&n); err != nil {
			return err
		}
		if n != sent {
			return fmt.Errorf("%d votes counted, want %d", n, sent)
		}
		return nil
	})
}

// The live view of a deployment is bounded in all its panes together
// (live.max_state_bytes), not only per pane: votes whose panes stay open a
// long time (a lateness of an hour) pass a small bound within seconds, and
// the deployment fails, saying which setting, instead of growing the host.
func TestContainment_LiveGroupsPastTheDeploymentBoundFailTheDeployment(t *testing.T) {
	e := services(t)
	cfg := hostConfig(t, e)
	cfg.Live.MaxStateBytes = 1 << 20 // about 1700 groups of votes
	h := runHost(t, e, cfg)
	// One partition, whose plugin keeps each pane within the per-pane
	// bound it is told (a million): only the bound of all panes stops it.
	topic, cl := newTopic(t, e, 1)
	h.deployVotes(t, "votes", topic, `,"lateness":"1h"`)
	p := startProducer(cl, 2000, 0, 0)
	defer p.finish()
	eventually(t, time.Minute, "the deployment failed on the bound", func() error {
		var ds []api.Deployment
		if err := getJSON(h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Status != api.StatusFailed || !strings.Contains(ds[0].Error, "live.max_state_bytes") {
			return fmt.Errorf("deployments %+v", ds)
		}
		return nil
	})
}

// A host whose memory budget holds two of a deployment's four partitions
// says so, in /healthz and in the deployment's not_started, naming the
// setting, instead of answering ok while none of them runs (a partition
// that does not start fails the group session, so the others stop too).
func TestContainment_PartitionsPastTheMemoryBudgetAreReported(t *testing.T) {
	e := services(t)
	cfg := hostConfig(t, e)
	// Room for four instances (each reserves its memory cap and a little more).
	cfg.Sandbox.MemoryBudget = 9 * uint64(cfg.Sandbox.MemoryPages) << 16 / 2
	h := runHost(t, e, cfg)
	hogTopic, _ := newTopic(t, e, 2)
	h.deployVotes(t, "hog", hogTopic, "")
	eventually(t, time.Minute, "hog's two partitions started", func() error {
		if n, err := metric(h.url, "wagg_partitions_owned", `deployment="hog"`); err != nil || n != 2 {
			return fmt.Errorf("hog owns %v partitions (%v)", n, err)
		}
		return nil
	})

	// votes gets four partitions and room for two.
	topic, _ := newTopic(t, e, 4)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := gen.Counts{}
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 50})
	t0 := time.Now().Add(-time.Minute).UnixMilli()
	var recs []*kgo.Record
	for i := range 4000 {
		v := g.Next(t0 + int64(i))
		want.Add(v)
		recs = append(recs, &kgo.Record{Partition: int32(i % 4), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	h.deployVotes(t, "votes", topic, `,"checkpoint_every":"300ms"`)
	eventually(t, time.Minute, "the partitions that did not start reported, the two that fit counting", func() error {
		var health api.Health
		if err := getJSON(h.url+"/healthz", &health); err != nil {
			return err
		}
		var ds []api.Deployment
		if err := getJSON(h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		var notStarted string
		for _, d := range ds {
			if d.Name == "votes" {
				notStarted = d.NotStarted
			}
		}
		if health.Status != "degraded" || !strings.Contains(strings.Join(health.Reasons, "; "), "sandbox.memory_budget") ||
			!strings.Contains(notStarted, "not started on this host") {
			return fmt.Errorf("health %+v, deployments %+v", health, ds)
		}
		// Two partitions' votes, a thousand each, and no more: a partition
		// that does not start must not keep the others from running.
		var counted int64
		if err := h.ch.QueryRow(context.Background(), "SELECT sum(votes) FROM "+h.db+".votes WHERE window_name = 'total'").Scan(&counted); err != nil {
			return err
		}
		if counted != 2000 {
			return fmt.Errorf("%d votes counted, want the 2000 of the two partitions that fit", counted)
		}
		return nil
	})

	// Room again: the other two start without a rebalance, from the start.
	if code, eb := h.delete(t, "/v1/deployments/hog"); code != http.StatusNoContent {
		t.Fatalf("undeploy hog: %d %+v", code, eb)
	}
	eventually(t, time.Minute, "every vote counted once the budget has room", func() error {
		got, err := h.totals(context.Background())
		if err != nil {
			return err
		}
		if err := diff(got, want); err != nil {
			return err
		}
		var ds []api.Deployment
		if err := getJSON(h.url+"/v1/deployments", &ds); err != nil || len(ds) != 1 || ds[0].NotStarted != "" {
			return fmt.Errorf("deployments %+v (%v), want votes with every partition started", ds, err)
		}
		return nil
	})
}

// A deployment token can make deployments, and each brings a Kafka client,
// topics, tables and instances to every host: new names stop at
// sandbox.max_deployments, while deploys onto a name that exists go on.
func TestContainment_NewDeploymentsStopAtTheClusterLimit(t *testing.T) {
	e := services(t)
	cfg := hostConfig(t, e)
	cfg.Sandbox.MaxDeployments = 2
	h := runHost(t, e, cfg)
	topic, _ := newTopic(t, e, 1)
	h.deployVotes(t, "first", topic, "")
	h.deployVotes(t, "second", topic, "")

	spec := fmt.Sprintf(`{"name":"third","plugin":"votes@1","topic":%q,"windows":[{"name":"total","kind":"global"}]}`, topic)
	code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec))
	var eb api.ErrorBody
	json.Unmarshal(body, &eb)
	if code != http.StatusConflict || eb.Error.Code != api.CodeLimit || !strings.Contains(eb.Error.Message, "sandbox.max_deployments") {
		t.Fatalf("a third deployment: %d %s, want 409 limit_reached naming sandbox.max_deployments", code, body)
	}
	var list []api.Deployment
	if err := getJSON(h.url+"/v1/deployments", &list); err != nil || len(list) != 2 {
		t.Fatalf("after the refused deploy the host lists %+v (%v), want first and second", list, err)
	}
	h.deployVotes(t, "first", topic, `,"checkpoint_every":"2s"`)
	if code, eb := h.delete(t, "/v1/deployments/second"); code != http.StatusNoContent {
		t.Fatalf("undeploy second: %d %+v", code, eb)
	}
	if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("a third deployment once one is gone: %d %s", code, body)
	}
}

// A plugin whose every snapshot is 4 MiB, deployed to checkpoint every
// 100 ms, while records keep every checkpoint due: the host writes its
// checkpoints no faster than sandbox.snapshot_rate allows, a second apart
// here.
func TestContainment_CheckpointsGoNoFasterThanTheSnapshotRate(t *testing.T) {
	e := services(t)
	cfg := hostConfig(t, e)
	cfg.Sandbox.SnapshotRate = 4 << 20
	h := runHost(t, e, cfg)
	topic, cl := newTopic(t, e, 1)
	if code, body := h.post(t, "/v1/plugins/bigstate/1", "application/wasm", testwasm.BuildRawC(t, "internal/testwasm/bigstate/bigstate.c")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"bigstate","plugin":"bigstate@1","topic":%q,"windows":[{"name":"total","kind":"global"}],"checkpoint_every":"100ms"}`, topic)
	if code, body := h.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	checkpointsPast := func(n float64) func() error {
		return func() error {
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte(`{"poll_id":1}`)}).FirstErr(); err != nil {
				return err
			}
			got, err := metric(h.url, "wagg_checkpoints_total", `deployment="bigstate"`, `result="ok"`)
			if err == nil && got <= n {
				err = fmt.Errorf("%v checkpoints", got)
			}
			return err
		}
	}
	eventually(t, time.Minute, "a first checkpoint", checkpointsPast(0))
	first, _ := metric(h.url, "wagg_checkpoints_total", `deployment="bigstate"`, `result="ok"`)
	start := time.Now()
	eventually(t, time.Minute, "three checkpoints more", checkpointsPast(first+2))
	// The first of the three follows one taken before start, so at least
	// two full seconds pass.
	if took := time.Since(start); took < 1800*time.Millisecond {
		t.Fatalf("three checkpoints of 4 MiB snapshots in %v, want them a second apart at 4 MiB/s", took)
	}
}
