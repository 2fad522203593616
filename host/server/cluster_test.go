package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
)

// clusterHost is one `wagg serve` process of a cluster: its own data
// directory and port, the cluster's Kafka and database.
// clusterRig is where a test of wagg serve processes on the one Kafka and
// ClickHouse starts: a topic of its own, the cluster's database, the
// binary, the processes' log (its tail shown when the test fails) and a
// ClickHouse connection to check with.
type clusterRig struct {
	e       env
	topic   string
	cl      *kgo.Client
	db      string
	bin     string
	logPath string
	logf    *os.File
	ch      driver.Conn
}

func newClusterRig(t *testing.T, partitions int) *clusterRig {
	t.Helper()
	r := &clusterRig{e: services(t)}
	r.topic, r.cl = newTopic(t, r.e, partitions)
	r.db = hostConfig(t, r.e).ClickHouse.Database
	r.bin = buildWagg(t)
	r.logPath = filepath.Join(t.TempDir(), "serve.log")
	r.logf = serveLog(t, r.logPath, 12000)
	t.Cleanup(func() { r.logf.Close() })
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{r.e.chAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	r.ch = ch
	return r
}

type clusterHost struct {
	bin  string
	name string
	url  string
	args []string
	p    *serveProc
}

func startClusterHost(t testing.TB, bin, name string, e env, db string, logf io.Writer) *clusterHost {
	t.Helper()
	addr := freeAddr(t)
	dir := filepath.Join(t.TempDir(), name)
	// Four hosts and the test share two cores: a call deadline of 1 s
	// would fail healthy calls that merely waited for a core.
	conf := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(conf, []byte("sandbox:\n  call_timeout: 20s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &clusterHost{bin: bin, name: name, url: "http://" + addr, args: []string{"-config", conf, "-listen", addr, "-data-dir", dir,
		"-kafka", strings.Join(e.brokers, ","), "-clickhouse", e.chAddr, "-database", db}}
	h.start(t, logf)
	stopAtCleanup(t, &h.p)
	return h
}

func (h *clusterHost) start(t testing.TB, logf io.Writer) {
	t.Helper()
	h.p = startServe(t, h.bin, h.args, nil, logf)
	eventually(t, time.Minute, h.name+" answers", answers(h.url))
}

// dashboardsShow waits until every follower, by name, shows want.
func dashboardsShow(t *testing.T, followers map[string]*follower, want gen.Counts) {
	t.Helper()
	for name, f := range followers {
		eventually(t, time.Minute, "the dashboard on "+name+" shows the exact totals", func() error {
			got, err := f.totals()
			if err != nil {
				return err
			}
			return diff(got, want)
		})
	}
}

// follower is a dashboard: it follows the running totals of the votes
// deployment on the first of its hosts that answers, and when that host
// goes away resumes on the next (which answers with a snapshot: another
// host, another epoch), checking every frame as View does.
type follower struct {
	mu    sync.Mutex
	view  hub.View
	on    string // the host followed now
	moves int
	bad   error            // a frame the view refused, or a total that went back
	last  map[string]int64 // the totals shown since the last snapshot
}

func follow(t *testing.T, hosts ...*clusterHost) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			h := hosts[min(i, len(hosts)-1)]
			f.mu.Lock()
			sub := hub.Subscribe{Aggregator: "votes", Windows: []string{"total"}, Resume: f.view.Resume()}
			f.mu.Unlock()
			c, err := hub.Dial(ctx, strings.Replace(h.url, "http", "ws", 1)+"/v1/live", sub)
			if err != nil {
				i-- // not up: the same host again
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			f.mu.Lock()
			if f.on != "" && f.on != h.name {
				f.moves++
			}
			f.on = h.name
			f.mu.Unlock()
			for {
				fr, err := c.Next(ctx)
				if err != nil {
					break
				}
				f.mu.Lock()
				if err := f.view.Apply(fr); err != nil && f.bad == nil {
					f.bad = fmt.Errorf("%s: %s frame seq %d: %w", h.name, fr.Type, fr.Seq, err)
				}
				f.goesOn(h.name, fr)
				f.mu.Unlock()
			}
			c.Close()
		}
	}()
	return f
}

// goesOn checks that no delta takes a total back: votes only add up, and
// within one connection a host shows each partition's values after ever
// longer prefixes of its records. (A snapshot, from another host, may be
// behind what the last one showed.) f.mu held.
func (f *follower) goesOn(host string, fr hub.Frame) {
	if fr.Type == hub.TypeSnapshot || f.last == nil {
		f.last = map[string]int64{}
	}
	for _, r := range fr.Rows {
		k := fmt.Sprint(r.Key["poll_id"], "/", r.Key["option"])
		n, err := r.Values["votes"].Int64()
		if err != nil {
			continue
		}
		if fr.Type == hub.TypeDelta && n < f.last[k] && f.bad == nil {
			f.bad = fmt.Errorf("%s: delta seq %d takes %s from %d back to %d", host, fr.Seq, k, f.last[k], n)
		}
		f.last[k] = n
	}
}

// totals is what the follower shows.
func (f *follower) totals() (gen.Counts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bad != nil {
		return nil, f.bad
	}
	out := gen.Counts{}
	for _, r := range f.view.Rows() {
		id, err := r.Key["poll_id"].(json.Number).Int64()
		if err != nil {
			return nil, err
		}
		n, err := r.Values["votes"].Int64()
		if err != nil {
			return nil, err
		}
		out[gen.Key{PollID: id, Option: r.Key["option"].(string)}] = n
	}
	return out, nil
}

func deployments(h *clusterHost) ([]api.Deployment, error) {
	var ds []api.Deployment
	return ds, getJSON(h.url+"/v1/deployments", &ds)
}

// Three `wagg serve` processes on one Kafka and one ClickHouse database: a
// plugin pushed to one and deployed on another runs on all three; over a
// backlog of 500k votes (out of order, malformed records among them) and
// live votes, one host is killed with SIGKILL and restarted three times
// and a fourth host joins midway. ClickHouse's totals and windows are exact;
// a dashboard on each host ends showing the exact totals, the one whose
// host was killed after moving to another host.
func TestCluster_ThreeHostsKillsAndAJoinStayExactInClickHouseAndLive(t *testing.T) {
	const partitions = 12
	r := newClusterRig(t, partitions)
	e, topic, cl, db, bin, logf, ch := r.e, r.topic, r.cl, r.db, r.bin, r.logf, r.ch
	checker := &host{db: db, ch: ch}

	produceBacklog(t, cl, 500_000)
	a := startClusterHost(t, bin, "a", e, db, logf)
	b := startClusterHost(t, bin, "b", e, db, logf)
	c := startClusterHost(t, bin, "c", e, db, logf)

	// Pushed to a, deployed on b: in every host's catalog, running on each.
	ha, hb := &host{url: a.url}, &host{url: b.url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push to a: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,"lateness":"5s","checkpoint_every":"300ms","max_batch":512,
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]}`, topic)
	if code, body := hb.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy on b: %d %s", code, body)
	}
	for _, h := range []*clusterHost{a, b, c} {
		eventually(t, time.Minute, "votes runs on "+h.name, func() error {
			ds, err := deployments(h)
			if err != nil {
				return err
			}
			if len(ds) != 1 || ds[0].Status != api.StatusRunning {
				return fmt.Errorf("deployments %+v", ds)
			}
			if n, err := metric(h.url, "wagg_partitions_owned"); err != nil || n == 0 {
				return fmt.Errorf("owns %v partitions (%v)", n, err)
			}
			return nil
		})
	}

	onA, onB := follow(t, a), follow(t, b)
	movesFromC := follow(t, c, a)
	live := startProducer(cl, 2000, 2*time.Second, 1000)
	done := func() int64 {
		var n int64
		ch.QueryRow(context.Background(), "SELECT toInt64(sum(next_offset)) FROM "+db+"._wagg_checkpoints FINAL WHERE deployment = 'votes'").Scan(&n)
		return n
	}
	var d *clusterHost
	var at []string
	const kills = 3
	for i := range kills {
		target := int64(i+1) * 500_000 * 8 / 10 / kills
		eventually(t, 3*time.Minute, fmt.Sprintf("checkpoints reach offset %d", target), func() error {
			if n := done(); n < target {
				return fmt.Errorf("at %d", n)
			}
			return nil
		})
		<-time.After(time.Duration(rand.IntN(200)) * time.Millisecond)
		c.p.kill()
		at = append(at, strconv.FormatInt(done(), 10))
		if i == 1 {
			d = startClusterHost(t, bin, "d", e, db, logf) // joins while c is away
		}
		c.start(t, logf)
	}
	onC, onD := follow(t, c), follow(t, d)
	sent, _ := live.finish()
	x := readTopic(t, e.brokers, topic)
	if x.votes < 500_000 {
		t.Fatalf("only %d votes in the topic", x.votes)
	}
	eventually(t, 3*time.Minute, "exact totals and windows in ClickHouse", func() error { return checker.check(context.Background(), x) })
	dashboardsShow(t, map[string]*follower{"a": onA, "b": onB, "c, moved to a": movesFromC, "c after its restarts": onC, "d": onD}, x.totals)
	if movesFromC.moves == 0 {
		t.Fatal("the dashboard on c never moved to another host")
	}
	for _, h := range []*clusterHost{a, b, c, d} {
		if n, err := metric(h.url, "wagg_partitions_owned"); err != nil || n == 0 {
			t.Errorf("%s owns %v partitions at the end (%v)", h.name, n, err)
		}
	}
	report(t, "cluster: 3 hosts + 1 joining, %d kill -9s of one (checkpointed offsets at each: %s) over a backlog of 500000 votes (+%d live): exact in ClickHouse and on 5 dashboards",
		len(at), strings.Join(at, " "), sent)
}

// A host frozen (SIGSTOP: a VM paused, a swap storm) past its session
// timeout, while it catches up or soon after: the other host takes its partitions; thawed,
// it finds them gone only at its next heartbeat, and meanwhile its workers
// go on where they were and may write rows and checkpoints behind the new
// owner (a zombie). Exact in ClickHouse and on both dashboards.
func TestCluster_AHostFrozenPastItsSessionComesBackAsAZombie(t *testing.T) {
	const partitions = 4
	r := newClusterRig(t, partitions)
	e, topic, cl, db, bin, logf, ch := r.e, r.topic, r.cl, r.db, r.bin, r.logf, r.ch
	checker := &host{db: db, ch: ch}

	produceBacklog(t, cl, 400_000)
	a := startClusterHost(t, bin, "a", e, db, logf)
	b := startClusterHost(t, bin, "b", e, db, logf)
	ha := &host{url: a.url}
	if code, body := ha.post(t, "/v1/plugins/votes/1", "application/wasm", testwasm.Build(t, "examples/votes")); code != http.StatusCreated {
		t.Fatalf("push: %d %s", code, body)
	}
	spec := fmt.Sprintf(`{"name":"votes","plugin":"votes@1","topic":%q,"lateness":"5s","checkpoint_every":"300ms","max_batch":512,
		"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}]}`, topic)
	if code, body := ha.post(t, "/v1/deployments", "application/json", []byte(spec)); code != http.StatusCreated {
		t.Fatalf("deploy: %d %s", code, body)
	}
	owns := func(h *clusterHost, want func(float64) bool) func() error {
		return func() error {
			if n, err := metric(h.url, "wagg_partitions_owned"); err != nil || !want(n) {
				return fmt.Errorf("%s owns %v partitions (%v)", h.name, n, err)
			}
			return nil
		}
	}
	some := func(n float64) bool { return n > 0 }
	eventually(t, time.Minute, "a runs partitions", owns(a, some))
	eventually(t, time.Minute, "b runs partitions", owns(b, some))
	live := startProducer(cl, 2000, 2*time.Second, 1000)

	a.p.cmd.Process.Signal(syscall.SIGSTOP)
	frozen := time.Now()
	var at int64
	ch.QueryRow(context.Background(), "SELECT toInt64(sum(next_offset)) FROM "+db+"._wagg_checkpoints FINAL WHERE deployment = 'votes'").Scan(&at)
	eventually(t, time.Minute, "b takes every partition while a is frozen", owns(b, func(n float64) bool { return n == partitions }))
	<-time.After(time.Until(frozen.Add(20 * time.Second)))
	a.p.cmd.Process.Signal(syscall.SIGCONT)
	eventually(t, 2*time.Minute, "a runs partitions again", owns(a, some))
	onA, onB := follow(t, a), follow(t, b)

	sent, _ := live.finish()
	x := readTopic(t, e.brokers, topic)
	eventually(t, 3*time.Minute, "exact totals and windows in ClickHouse", func() error { return checker.check(context.Background(), x) })
	dashboardsShow(t, map[string]*follower{"a": onA, "b": onB}, x.totals)
	report(t, "a host frozen for %s with the checkpoints at offset %d of a backlog of 400000 votes (+%d live), thawed as a zombie: exact in ClickHouse and on both dashboards",
		20*time.Second, at, sent)
}
