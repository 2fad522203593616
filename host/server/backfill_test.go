package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/deploy"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/plugins"
)

// A deploy with ?start=earliest of a plugin that cannot take the state over
// backfills into a new generation beside the running one; the view and the
// live subscribers move over only once it has caught up, so that the view
// shows the same total at every read while it does, and the counts go on.
func TestBackfill_FreshStartTakesOverOnceCaughtUp(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics", "2": "internal/testwasm/statev2"})
	h, ctx, deploy, produce, total, counted := r.h, context.Background(), r.deploy, r.produce, r.total, r.counted
	if code, body := deploy("counts@1", ""); code != http.StatusCreated {
		t.Fatalf("deploy counts@1: %d %s", code, body)
	}
	produce(3000)
	eventually(t, time.Minute, "counts@1 counted", counted)
	if code, _ := deploy("counts@2", ""); code != http.StatusConflict {
		t.Fatalf("deploy counts@2 in place: %d, want the upgrade refused", code)
	}
	if code, body := deploy("counts@2", "?start=nonsense"); code != http.StatusBadRequest || !strings.Contains(string(body), "earliest") {
		t.Fatalf("a bad start: %d %s", code, body)
	}

	// Every read of the view while the new generation catches up and takes
	// over shows the whole count: no gap, no double.
	var reads []string
	var mu sync.Mutex
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := total()
			if err != nil || n != int64(r.produced) {
				mu.Lock()
				reads = append(reads, fmt.Sprintf("%d %v", n, err))
				mu.Unlock()
			}
		}
	}()
	code, body := deploy("counts@2", "?start=earliest")
	var st api.Deployment
	json.Unmarshal(body, &st)
	var gen int
	if _, err := fmt.Sscanf(st.Backfill, "generation %d from earliest", &gen); code != http.StatusCreated || st.Plugin != "counts@1" || err != nil || gen <= 0 {
		t.Fatalf("deploy counts@2 -start earliest: %d %s, want counts@1 running and a backfill of a new generation", code, body)
	}
	eventually(t, 2*time.Minute, "the new generation took over", func() error {
		var ds []api.Deployment
		if err := getJSON(h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Plugin != "counts@2" || ds[0].Generation != gen || ds[0].Backfill != "" || ds[0].Status != api.StatusRunning {
			return fmt.Errorf("deployments: %+v", ds)
		}
		return nil
	})
	eventually(t, time.Minute, "the new generation checkpointed after taking over", func() error {
		var n uint64
		err := h.ch.QueryRow(ctx, "SELECT count() FROM "+h.db+"._wagg_checkpoints FINAL WHERE deployment = ? AND state_version = 2", fmt.Sprintf("polls__g%d", gen)).Scan(&n)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d partitions of generation %d checkpointed", n, gen)
		}
		return err
	})
	close(stop)
	<-polled
	if len(reads) > 0 {
		t.Errorf("%d reads of the view during the switch did not show %d: %v", len(reads), r.produced, reads[:min(len(reads), 10)])
	}

	// The counts go on in the new generation, in the view and live.
	produce(1000)
	eventually(t, time.Minute, "the new generation counts on", counted)
	// The stats follow it: its consumer group's owners, its counters (it
	// folded every record, the old one only the first 3000).
	eventually(t, time.Minute, "the stats of the new generation", func() error {
		var st api.Stats
		if err := getJSON(h.url+"/v1/deployments/polls/stats", &st); err != nil {
			return err
		}
		if len(st.Partitions) != 2 || st.Records["processed"] < float64(r.produced) {
			return fmt.Errorf("stats %+v, want 2 partitions and %d records processed", st, r.produced)
		}
		for _, p := range st.Partitions {
			if p.Owner != st.Host || p.Lag != 0 {
				return fmt.Errorf("partition %+v (host %s)", p, st.Host)
			}
		}
		return nil
	})
	live, err := hub.Dial(ctx, strings.Replace(h.url, "http", "ws", 1)+"/v1/live", hub.Subscribe{Aggregator: "polls"})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	view := &hub.View{}
	eventually(t, time.Minute, "the live view follows the new generation", func() error {
		fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		for {
			f, err := live.Next(fctx)
			if err != nil {
				break
			}
			if err := view.Apply(f); err != nil {
				t.Fatal(err)
			}
		}
		var n int64
		for _, r := range view.Rows() {
			v, _ := r.Values["votes"].Int64()
			n += v
		}
		if n != int64(r.produced) {
			return fmt.Errorf("live total %d, want %d", n, r.produced)
		}
		return nil
	})
	var old int64
	if err := h.ch.QueryRow(ctx, "SELECT toInt64(sum(votes)) FROM "+h.db+".polls__view WHERE window_name = 'total'").Scan(&old); err != nil || old < 3000 {
		t.Errorf("the old generation's view polls__view: %d %v, want it kept with its 3000", old, err)
	}

	// Deleted and deployed again, it goes on with the generation its view
	// shows.
	req, _ := http.NewRequest(http.MethodDelete, h.url+"/v1/deployments/polls", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	if code, body := deploy("counts@2", ""); code != http.StatusCreated || !strings.Contains(string(body), fmt.Sprintf(`"generation": %d,`, gen)) {
		t.Fatalf("deploy again: %d %s, want generation %d", code, body, gen)
	}
	produce(200)
	eventually(t, time.Minute, "counted on after a delete and a deploy", counted)
}

// A fresh start from a time counts the records from then on only, and
// takes over even where a partition has none of them.
func TestBackfill_FromATimeCountsOnlyLaterRecords(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics"})
	if code, body := r.deploy("counts@1", ""); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	r.produceAt(1000, time.Now().Add(-time.Hour))
	eventually(t, time.Minute, "the first generation counted", r.counted)
	since := time.Now().Add(-time.Minute)
	r.produceAt(1, time.Now()) // one partition gets a record after since, the other none
	r.produced = 1
	if code, body := r.deploy("counts@1", "?start="+since.UTC().Format(time.RFC3339)); code != http.StatusCreated {
		t.Fatalf("deploy -start %s: %d %s", since.Format(time.RFC3339), code, body)
	}
	eventually(t, time.Minute, "the new generation took over", func() error {
		var ds []api.Deployment
		if err := getJSON(r.h.url+"/v1/deployments", &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Generation == 0 || ds[0].Backfill != "" {
			return fmt.Errorf("deployments: %+v", ds)
		}
		return nil
	})
	eventually(t, time.Minute, "the view counts the record after the start only", r.counted)
}

// votesBackfillSpec is the votes deployment the cluster backfill tests
// start fresh.
func votesBackfillSpec(topic string) []byte {
	return fmt.Appendf(nil, `{"name":"votes","plugin":"votes@1","topic":%q,"lateness":"5s","checkpoint_every":"300ms","max_batch":512,
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]}`, topic)
}

// backfillGeneration is the generation of the backfill a deploy with
// ?start=earliest answered with.
func backfillGeneration(t *testing.T, code int, body []byte) int {
	t.Helper()
	var st api.Deployment
	json.Unmarshal(body, &st)
	var g int
	if _, err := fmt.Sscanf(st.Backfill, "generation %d from earliest", &g); code != http.StatusCreated || err != nil || g <= 0 || st.Generation != 0 {
		t.Fatalf("deploy -start earliest: %d %s, want generation 0 running and a backfill of a new generation", code, body)
	}
	return g
}

// switchedTo waits until each host runs generation g as the deployment,
// without a backfill, and checks that the view shows it: g's own view took
// the deployment's name, generation 0's kept its hidden one.
func switchedTo(t *testing.T, ch driver.Conn, db string, g int, hosts ...*clusterHost) {
	t.Helper()
	for _, h := range hosts {
		eventually(t, 3*time.Minute, fmt.Sprintf("%s runs generation %d as the deployment", h.name, g), func() error {
			ds, err := deployments(h)
			if err != nil {
				return err
			}
			if len(ds) != 1 || ds[0].Generation != g || ds[0].Backfill != "" || ds[0].Status != api.StatusRunning {
				return fmt.Errorf("deployments %+v", ds)
			}
			return nil
		})
	}
	var views []string
	rows, err := ch.Query(context.Background(), "SELECT name FROM system.tables WHERE database = ? AND name LIKE 'votes%view' ORDER BY name", db)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		rows.Scan(&n)
		views = append(views, n)
	}
	if len(views) != 1 || views[0] != "votes__view" {
		t.Fatalf("views %v, want only votes__view (generation 0) beside votes", views)
	}
}

// A backfill outlives a kill -9 of the only host: restarted, the host
// finds it in the catalog, resumes the new generation from its
// checkpoints and switches over; ClickHouse is exact against the topic.
func TestBackfill_HostKilledMidwayResumesItAndSwitchesOver(t *testing.T) {
	r := newClusterRig(t, 6)
	e, topic, cl, db, bin, logf, ch := r.e, r.topic, r.cl, r.db, r.bin, r.logf, r.ch
	logPath := r.logPath
	checker := &host{db: db, ch: ch}
	ctx := context.Background()

	produceBacklog(t, cl, 300_000)
	x := readTopic(t, e.brokers, topic)
	a := startClusterHost(t, bin, "a", e, db, logf)
	ha := &host{url: a.url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	if code, body := ha.post(t, "/v1/deployments", "application/json", votesBackfillSpec(topic)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	eventually(t, 3*time.Minute, "generation 0 exact in ClickHouse", func() error { return checker.check(ctx, x) })

	code, body := ha.post(t, "/v1/deployments?start=earliest", "application/json", votesBackfillSpec(topic))
	g := backfillGeneration(t, code, body)
	storage := fmt.Sprintf("votes__g%d", g)
	progress := func() (int64, error) {
		var n int64
		err := ch.QueryRow(ctx, "SELECT toInt64(sum(next_offset)) FROM "+db+"._wagg_checkpoints FINAL WHERE deployment = ?", storage).Scan(&n)
		return n, err
	}
	eventually(t, 2*time.Minute, "the backfill checkpointed", func() error {
		if n, err := progress(); err != nil || n == 0 {
			return fmt.Errorf("checkpointed to %d (%v)", n, err)
		}
		return nil
	})
	a.p.kill()
	at, err := progress()
	if err != nil {
		t.Fatal(err)
	}
	var hidden uint64
	if err := ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, storage+"__view").Scan(&hidden); err != nil || hidden != 1 {
		t.Fatalf("killed after the switch (hidden view %d, %v): the test must kill it midway", hidden, err)
	}
	killedAt := fileSize(t, logPath)
	a.start(t, logf)
	switchedTo(t, ch, db, g, a)
	eventually(t, time.Minute, "exact in ClickHouse after the switch", func() error { return checker.check(ctx, x) })
	// Resumed, not started over: the restarted host restored the new
	// generation's partitions from the checkpoints written before the kill.
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	restored := 0
	for _, line := range strings.Split(string(b[killedAt:]), "\n") {
		if strings.Contains(line, `msg="partition restored"`) && strings.Contains(line, "deployment="+storage+" ") {
			restored++
		}
	}
	if restored == 0 {
		t.Fatalf("no partition of %s restored after the restart", storage)
	}
	report(t, "backfill: the only host killed with SIGKILL when generation %d had checkpointed %d of %d offsets; restarted, it restored %d partitions of it and switched over; exact in ClickHouse (%d votes)",
		g, at, x.votes+int64(len(x.malformed)), restored, x.votes)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// snapshots follows the running totals of votes on a host, subscribing
// afresh whenever the host closes the subscription (a switch-over starts a
// new epoch), and records the total of every snapshot and its epoch.
type snapshots struct {
	mu     sync.Mutex
	totals []int64
	epochs map[string]bool
}

func watchSnapshots(t *testing.T, h *clusterHost) *snapshots {
	ctx, cancel := context.WithCancel(context.Background())
	s := &snapshots{epochs: map[string]bool{}}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			c, err := hub.Dial(ctx, strings.Replace(h.url, "http", "ws", 1)+"/v1/live", hub.Subscribe{Aggregator: "votes", Windows: []string{"total"}})
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			for {
				f, err := c.Next(ctx)
				if err != nil || f.Type != hub.TypeSnapshot {
					break // the snapshot is all this records
				}
				v := &hub.View{}
				v.Apply(f)
				var n int64
				for _, r := range v.Rows() {
					x, _ := r.Values["votes"].Int64()
					n += x
				}
				s.mu.Lock()
				s.totals = append(s.totals, n)
				s.epochs[f.Epoch] = true
				s.mu.Unlock()
				for { // wait for the close a new epoch brings
					if _, err := c.Next(ctx); err != nil {
						break
					}
				}
				break
			}
			c.Close()
		}
	}()
	return s
}

func (s *snapshots) seen() ([]int64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.totals...), len(s.epochs)
}

// A backfill requested on one of two hosts runs on both (each processes
// partitions of the new generation) and switches over once, for both: the
// view shows the whole count at every read meanwhile, and afterwards the
// counts go on, exact in ClickHouse and for a live subscriber on each host.
func TestBackfill_TwoHostsShareItAndSwitchOnce(t *testing.T) {
	r := newClusterRig(t, 12)
	e, topic, cl, db, bin, logf, ch := r.e, r.topic, r.cl, r.db, r.bin, r.logf, r.ch
	checker := &host{db: db, ch: ch}
	ctx := context.Background()

	produceBacklog(t, cl, 400_000)
	x := readTopic(t, e.brokers, topic)
	a := startClusterHost(t, bin, "a", e, db, logf)
	b := startClusterHost(t, bin, "b", e, db, logf)
	ha, hb := &host{url: a.url}, &host{url: b.url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	if code, body := ha.post(t, "/v1/deployments", "application/json", votesBackfillSpec(topic)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	eventually(t, 3*time.Minute, "generation 0 exact in ClickHouse", func() error { return checker.check(ctx, x) })
	onA, onB := follow(t, a), follow(t, b)
	for name, f := range map[string]*follower{"a": onA, "b": onB} {
		eventually(t, time.Minute, "the dashboard on "+name+" shows the backlog", func() error {
			got, err := f.totals()
			if err != nil {
				return err
			}
			return diff(got, x.totals)
		})
	}

	snapA, snapB := watchSnapshots(t, a), watchSnapshots(t, b)
	// Every read of the view while the backfill runs and switches over
	// shows the whole count.
	var bad []string
	stop, polled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var n int64
			err := ch.QueryRow(ctx, "SELECT toInt64(sum(votes)) FROM "+db+".votes WHERE window_name = 'total'").Scan(&n)
			if err != nil || n != x.votes {
				bad = append(bad, fmt.Sprintf("%d %v", n, err))
			}
		}
	}()
	code, body := hb.post(t, "/v1/deployments?start=earliest", "application/json", votesBackfillSpec(topic))
	g := backfillGeneration(t, code, body)
	storage := fmt.Sprintf("votes__g%d", g)
	switchedTo(t, ch, db, g, a, b)
	close(stop)
	<-polled
	if len(bad) > 0 {
		t.Errorf("%d reads of the view during the backfill did not show %d: %v", len(bad), x.votes, bad[:min(len(bad), 10)])
	}
	// Each host's dashboards came back to a whole snapshot of the new
	// generation's epoch: no gap.
	for name, s := range map[string]*snapshots{"a": snapA, "b": snapB} {
		eventually(t, time.Minute, "a snapshot of the new epoch on "+name, func() error {
			totals, epochs := s.seen()
			if epochs < 2 {
				return fmt.Errorf("%d epochs seen", epochs)
			}
			for _, n := range totals {
				if n != x.votes {
					t.Fatalf("a snapshot on %s showed %d votes, want %d (snapshots %v)", name, n, x.votes, totals)
				}
			}
			return nil
		})
	}
	// Both hosts ran a share of the backfill: no record has arrived since
	// the backlog, so what the new generation handled on each host it
	// handled before the switch.
	shares := map[string]float64{}
	for _, h := range []*clusterHost{a, b} {
		n, err := metric(h.url, "wagg_records_total", `deployment="`+storage+`"`)
		if err != nil || n == 0 {
			t.Fatalf("%s handled %v records of generation %d (%v): the backfill did not run there", h.name, n, g, err)
		}
		shares[h.name] = n
	}

	// The counts go on in the new generation, in ClickHouse and live on
	// both hosts.
	live := startProducer(cl, 1000, 2*time.Second, 500)
	eventually(t, time.Minute, "live votes produced", func() error {
		if n := live.count(); n < 3000 {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	live.finish()
	x = readTopic(t, e.brokers, topic)
	eventually(t, 3*time.Minute, "exact in ClickHouse after the switch", func() error { return checker.check(ctx, x) })
	dashboardsShow(t, map[string]*follower{"a": onA, "b": onB}, x.totals)
	report(t, "backfill on 2 hosts: generation %d requested on b, records handled a %.0f, b %.0f; switched once; exact in ClickHouse and on both dashboards (%d votes)",
		g, shares["a"], shares["b"], x.votes)
}

// A backfill under way is given up on every host by a deploy of the name
// on another host (the old generation runs on, exact) and by a delete
// (nothing runs any more): no host keeps a member in the new generation's
// consumer group.
func TestBackfill_DeployingAgainOrDeletingGivesItUpEverywhere(t *testing.T) {
	r := newClusterRig(t, 6)
	e, topic, cl, db, bin, logf, ch := r.e, r.topic, r.cl, r.db, r.bin, r.logf, r.ch
	adm := kadm.NewClient(cl)
	checker := &host{db: db, ch: ch}
	ctx := context.Background()

	produceBacklog(t, cl, 300_000)
	x := readTopic(t, e.brokers, topic)
	a := startClusterHost(t, bin, "a", e, db, logf)
	b := startClusterHost(t, bin, "b", e, db, logf)
	ha, hb := &host{url: a.url}, &host{url: b.url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	if code, body := ha.post(t, "/v1/deployments", "application/json", votesBackfillSpec(topic)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	eventually(t, 3*time.Minute, "generation 0 exact in ClickHouse", func() error { return checker.check(ctx, x) })

	// started on b, then deployed again on a while it catches up
	code, body := hb.post(t, "/v1/deployments?start=earliest", "application/json", votesBackfillSpec(topic))
	g := backfillGeneration(t, code, body)
	group := deploy.ConsumerGroup(db, plugins.GenerationName("votes", g))
	members := func(group string) (int, error) {
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return 0, err
		}
		return len(gs[group].Members), gs[group].Err
	}
	eventually(t, time.Minute, "both hosts run the backfill", func() error {
		if n, err := members(group); err != nil || n != 2 {
			return fmt.Errorf("%d members in %s (%v)", n, group, err)
		}
		return nil
	})
	if code, body := ha.post(t, "/v1/deployments", "application/json", votesBackfillSpec(topic)); code != http.StatusCreated {
		t.Fatalf("deploy again: %d %s", code, body)
	}
	for _, h := range []*clusterHost{a, b} {
		eventually(t, time.Minute, h.name+" gave the backfill up and runs generation 0", func() error {
			ds, err := deployments(h)
			if err != nil {
				return err
			}
			if len(ds) != 1 || ds[0].Generation != 0 || ds[0].Backfill != "" || ds[0].Status != api.StatusRunning {
				return fmt.Errorf("deployments %+v", ds)
			}
			return nil
		})
	}
	eventually(t, time.Minute, "no host in "+group, func() error {
		if n, err := members(group); err != nil || n != 0 {
			return fmt.Errorf("%d members (%v)", n, err)
		}
		return nil
	})
	if err := checker.check(ctx, x); err != nil {
		t.Fatalf("the view after the backfill was given up: %v", err)
	}

	// started on a, then deleted on b
	code, body = ha.post(t, "/v1/deployments?start=earliest", "application/json", votesBackfillSpec(topic))
	g2 := backfillGeneration(t, code, body)
	if g2 <= g {
		t.Fatalf("generation %d after %d", g2, g)
	}
	group2 := deploy.ConsumerGroup(db, plugins.GenerationName("votes", g2))
	req, _ := http.NewRequest(http.MethodDelete, b.url+"/v1/deployments/votes", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	for _, h := range []*clusterHost{a, b} {
		eventually(t, time.Minute, h.name+" runs nothing", func() error {
			if ds, err := deployments(h); err != nil || len(ds) != 0 {
				return fmt.Errorf("deployments %+v (%v)", ds, err)
			}
			return nil
		})
	}
	for _, gr := range []string{deploy.ConsumerGroup(db, "votes"), group2} {
		eventually(t, time.Minute, "no host in "+gr, func() error {
			if n, err := members(gr); err != nil || n != 0 {
				return fmt.Errorf("%d members (%v)", n, err)
			}
			return nil
		})
	}
	if err := checker.check(ctx, x); err != nil {
		t.Fatalf("the view after the delete: %v", err)
	}
}

// A host killed with SIGKILL just as it records that a backfill caught up
// (the old generation stops everywhere, the switch is next) finishes the
// switch-over when it restarts: it finds the stage in the catalog and
// goes on from there; ClickHouse is exact.
func TestBackfill_HostKilledAsItSwitchesOverFinishesTheSwitch(t *testing.T) {
	r := newClusterRig(t, 6)
	e, topic, cl, db, bin, logf, ch := r.e, r.topic, r.cl, r.db, r.bin, r.logf, r.ch
	checker := &host{db: db, ch: ch}
	ctx := context.Background()

	produceBacklog(t, cl, 100_000)
	x := readTopic(t, e.brokers, topic)
	caught := &logWatch{want: "the old generation stops on every host", seen: make(chan struct{})}
	a := startClusterHost(t, bin, "a", e, db, io.MultiWriter(logf, caught))
	ha := &host{url: a.url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	if code, body := ha.post(t, "/v1/deployments", "application/json", votesBackfillSpec(topic)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	eventually(t, 3*time.Minute, "generation 0 exact in ClickHouse", func() error { return checker.check(ctx, x) })
	code, body := ha.post(t, "/v1/deployments?start=earliest", "application/json", votesBackfillSpec(topic))
	g := backfillGeneration(t, code, body)
	select {
	case <-caught.seen:
	case <-time.After(3 * time.Minute):
		t.Fatal("the backfill never caught up")
	}
	a.p.kill()
	var hidden uint64
	if err := ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, fmt.Sprintf("votes__g%d__view", g)).Scan(&hidden); err != nil {
		t.Fatal(err)
	}
	a.start(t, logf)
	switchedTo(t, ch, db, g, a)
	eventually(t, time.Minute, "exact in ClickHouse after the switch", func() error { return checker.check(ctx, x) })
	report(t, "backfill: the only host killed with SIGKILL as it recorded that generation %d caught up (view switched before the kill: %v); restarted, it finished the switch; exact in ClickHouse (%d votes)",
		g, hidden == 0, x.votes)
}

// A failed deployment started fresh with a fixed plugin: the failed
// generation stays stopped (and visible) while the new one catches up, then
// the new one takes over and runs.
func TestBackfill_AFailedDeploymentStartedFreshTakesOver(t *testing.T) {
	r := newPollsRig(t, services(t), map[string]string{"1": "internal/testwasm/panics", "2": "internal/testwasm/statev2"})
	deploy := func(plugin, query string) (int, []byte) {
		spec := fmt.Sprintf(`{"name":"polls","plugin":%q,"topic":%q,"checkpoint_every":"300ms","max_plugin_errors":1,"windows":[{"name":"total","kind":"global"}]}`, plugin, r.topic)
		return r.h.post(t, "/v1/deployments"+query, "application/json", []byte(spec))
	}
	status := func() (api.Deployment, error) {
		var ds []api.Deployment
		if err := getJSON(r.h.url+"/v1/deployments", &ds); err != nil {
			return api.Deployment{}, err
		}
		if len(ds) != 1 {
			return api.Deployment{}, fmt.Errorf("deployments %+v", ds)
		}
		return ds[0], nil
	}
	if code, body := deploy("counts@1", ""); code != http.StatusCreated {
		t.Fatalf("deploy counts@1: %d %s", code, body)
	}
	r.produce(500)
	var cursed []*kgo.Record
	for range 3 {
		cursed = append(cursed, &kgo.Record{Value: []byte(`{"poll_id":13}`)})
	}
	if err := r.cl.ProduceSync(context.Background(), cursed...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	r.produced += len(cursed)
	eventually(t, time.Minute, "counts@1 failed on poll 13", func() error {
		if st, err := status(); err != nil || st.Status != api.StatusFailed {
			return fmt.Errorf("%+v %v", st, err)
		}
		return nil
	})
	code, body := deploy("counts@2", "?start=earliest")
	var st api.Deployment
	json.Unmarshal(body, &st)
	var g int
	if _, err := fmt.Sscanf(st.Backfill, "generation %d from earliest", &g); code != http.StatusCreated || err != nil || st.Status != api.StatusFailed {
		t.Fatalf("deploy counts@2 -start earliest: %d %s, want the failed one shown with a backfill", code, body)
	}
	eventually(t, 2*time.Minute, "the new generation took over", func() error {
		st, err := status()
		if err == nil && (st.Plugin != "counts@2" || st.Generation != g || st.Status != api.StatusRunning || st.Backfill != "") {
			err = fmt.Errorf("%+v", st)
		}
		return err
	})
	eventually(t, time.Minute, "every vote counted, poll 13's too", r.counted)
}
