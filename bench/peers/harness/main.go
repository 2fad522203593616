// Command harness runs wagg and the Kafka Streams peer side by side on the
// same broker and the same votes, and prints the comparison table that
// BENCHMARKS.md reports. `make bench-peers` builds everything and runs it.
//
// For each round: a fresh 12-partition topic gets N votes; then wagg (the
// votes aggregator, a fresh deployment and consumer group) and the peer (a
// fresh application id, at_least_once and exactly_once_v2) each catch up on
// that backlog, and the events/s and CPU seconds per million events are
// recorded. Then the produce-to-readable latency at a fixed rate: for wagg
// until the WebSocket delta shows the vote counted, for the peer until its
// output topic does. Medians over the rounds; ratios from the same rounds.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/source"
	"github.com/wagg/wagg/internal/gen"
)

var (
	brokers  = flag.String("kafka", "127.0.0.1:9092", "Kafka broker")
	chAddr   = flag.String("clickhouse", "127.0.0.1:9000", "ClickHouse native address")
	events   = flag.Int("events", 2_000_000, "votes in each backlog")
	rounds   = flag.Int("rounds", 3, "rounds (medians are reported)")
	rate     = flag.Int("rate", 50_000, "votes/s for the latency runs")
	seconds  = flag.Int("seconds", 60, "length of each latency run")
	warmup   = flag.Int("warmup", 20, "seconds at the start of each latency run not recorded (JIT, group join)")
	wagg     = flag.String("wagg", "bin/wagg", "wagg binary")
	plugin   = flag.String("plugin", "bin/votes.wasm", "votes plugin")
	peerJar  = flag.String("peer", "bench/peers/kstreams/target/wagg-kstreams-peer.jar", "Kafka Streams peer jar")
	skipPeer = flag.Bool("skip-peer", false, "measure wagg only")
	out      = flag.String("out", "bin/bench-peers.md", "where to write the table")
	profile  = flag.String("profile", "bin/wagg-catchup.pprof", "CPU profile of wagg during its first catch-up (empty: none)")
)

// result is one measurement of one system.
type result struct {
	eventsPerSec, cpuPerMillion float64
	p50, p99                    float64 // ms
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(*brokers), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	systems := []string{"wagg"}
	if !*skipPeer {
		systems = append(systems, "kstreams at_least_once", "kstreams exactly_once_v2")
	}
	results := map[string][]result{}
	for r := range *rounds {
		topic := fmt.Sprintf("bench-votes-%d-%d", time.Now().Unix(), r)
		createTopic(ctx, cl, topic)
		log.Printf("round %d: producing %d votes to %s", r+1, *events, topic)
		produceBacklog(ctx, cl, topic, *events)
		for _, s := range systems {
			var res result
			if s == "wagg" {
				res = waggCatchUp(ctx, topic, r)
				res.p50, res.p99 = waggLatency(ctx, cl, r)
			} else {
				guarantee := strings.Fields(s)[1]
				res = peerCatchUp(topic, guarantee)
				res.p50, res.p99 = peerLatency(guarantee)
			}
			log.Printf("round %d %s: %.0f events/s, %.2f cpu-s/M events, latency p50 %.0f ms p99 %.0f ms", r+1, s, res.eventsPerSec, res.cpuPerMillion, res.p50, res.p99)
			results[s] = append(results[s], res)
		}
		deleteTopic(ctx, cl, topic)
	}
	table := report(systems, results)
	fmt.Print(table)
	if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
		log.Fatal(err)
	}
}

func createTopic(ctx context.Context, cl *kgo.Client, topic string) {
	if err := source.EnsureTopic(ctx, kadm.NewClient(cl), topic, 12, nil); err != nil {
		log.Fatal(err)
	}
}

func deleteTopic(ctx context.Context, cl *kgo.Client, topic string) {
	kadm.NewClient(cl).DeleteTopics(ctx, topic, topic+".dead-letters")
}

func produceBacklog(ctx context.Context, cl *kgo.Client, topic string, n int) {
	g := gen.New(gen.Options{Seed: rand.Uint64()})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	now := time.Now().UnixMilli()
	for i := range n {
		v := g.Next(now - int64(n-i)/100) // event time spread like 100k votes/s, ending now
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	if firstErr != nil {
		log.Fatalf("produce: %v", firstErr)
	}
}

// waggProc is a running `wagg serve`.
type waggProc struct {
	cmd  *exec.Cmd
	url  string
	logf *os.File
}

func startWagg(name string) *waggProc {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir, _ := os.MkdirTemp("", "wagg-bench-")
	logf, _ := os.Create(filepath.Join(dir, "serve.log"))
	cmd := exec.Command(*wagg, "serve", "-listen", addr, "-data-dir", dir, "-kafka", *brokers,
		"-clickhouse", *chAddr, "-database", "wagg_bench_"+name, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	w := &waggProc{cmd: cmd, url: "http://" + addr, logf: logf}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(w.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK { // 503 while it starts
				break
			}
		}
		if time.Now().After(deadline) {
			log.Fatalf("wagg serve did not come up; see %s", logf.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.post("/v1/plugins/votes/1", mustRead(*plugin))
	return w
}

func (w *waggProc) post(path string, body []byte) {
	resp, err := http.Post(w.url+path, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		log.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

func (w *waggProc) deploy(name, topic string) {
	spec := fmt.Sprintf(`{"name":%q,"plugin":"votes@1","topic":%q,"windows":[{"name":"second","kind":"tumbling","size":"1s"},{"name":"total","kind":"global"}],"lateness":"5s"}`, name, topic)
	w.post("/v1/deployments", []byte(spec))
}

var recordsRE = regexp.MustCompile(`(?m)^wagg_records_total\{[^}]*\} (\S+)$`)

// records is the number of records the host has handled (counted or dead-lettered).
func (w *waggProc) records() float64 {
	resp, err := http.Get(w.url + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n float64
	for _, m := range recordsRE.FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		n += v
	}
	return n
}

// profile saves a 5-second CPU profile of the host.
func (w *waggProc) profile(path string) {
	resp, err := http.Get(w.url + "/debug/pprof/profile?seconds=5")
	if err != nil {
		log.Printf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		log.Printf("profile: %v", err)
	}
}

func (w *waggProc) stop() {
	w.cmd.Process.Signal(os.Interrupt)
	w.cmd.Wait()
	w.logf.Close()
}

func waggCatchUp(_ context.Context, topic string, round int) result {
	w := startWagg(fmt.Sprintf("%d_%d", time.Now().Unix(), round))
	defer w.stop()
	cpu0 := cpuSeconds(w.cmd.Process.Pid)
	start := time.Now()
	w.deploy("votes", topic)
	if *profile != "" && round == 0 {
		go w.profile(*profile)
	}
	for w.records() < float64(*events) {
		if time.Since(start) > 30*time.Minute {
			log.Fatal("wagg did not catch up in 30 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(start).Seconds()
	cpu := cpuSeconds(w.cmd.Process.Pid) - cpu0
	return result{eventsPerSec: float64(*events) / d, cpuPerMillion: cpu / (float64(*events) / 1e6)}
}

// waggLatency produces at a fixed rate to a fresh topic and times each vote
// from send to the WebSocket delta that shows it counted in its running
// total: when a key's total reaches c, the c-th vote sent for that key (and
// any before it not yet charged) is charged now - send time.
func waggLatency(ctx context.Context, cl *kgo.Client, round int) (p50, p99 float64) {
	topic := fmt.Sprintf("bench-latency-%d-%d", time.Now().Unix(), round)
	createTopic(ctx, cl, topic)
	defer deleteTopic(ctx, cl, topic)
	w := startWagg(fmt.Sprintf("lat_%d_%d", time.Now().Unix(), round))
	defer w.stop()
	w.deploy("votes", topic)
	conn, err := hub.Dial(ctx, strings.Replace(w.url, "http", "ws", 1)+"/v1/live", hub.Subscribe{Aggregator: "votes", Windows: []string{"total"}})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	lat := newLatencies()
	go func() {
		for {
			f, err := conn.Next(ctx)
			if err != nil {
				return
			}
			now := time.Now()
			for _, r := range f.Rows {
				id, _ := r.Key["poll_id"].(json.Number).Int64()
				c, _ := r.Values["votes"].Int64()
				lat.counted(gen.Key{PollID: id, Option: r.Key["option"].(string)}, c, now)
			}
		}
	}()
	produceAtRate(ctx, cl, topic, lat)
	return lat.percentiles()
}

// latencies matches sends to the counts that include them.
type latencies struct {
	mu      sync.Mutex
	sent    map[gen.Key][]time.Time
	charged map[gen.Key]int
	warm    time.Time
	samples []float64
}

func newLatencies() *latencies {
	return &latencies{sent: map[gen.Key][]time.Time{}, charged: map[gen.Key]int{}}
}

func (l *latencies) send(k gen.Key, t time.Time) {
	l.mu.Lock()
	l.sent[k] = append(l.sent[k], t)
	l.mu.Unlock()
}

func (l *latencies) counted(k gen.Key, c int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sent[k]
	for i := l.charged[k]; i < int(c) && i < len(s); i++ {
		if s[i].After(l.warm) {
			l.samples = append(l.samples, float64(now.Sub(s[i]).Microseconds())/1000)
		}
		l.charged[k] = i + 1
	}
}

func (l *latencies) percentiles() (p50, p99 float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) == 0 {
		return 0, 0
	}
	sort.Float64s(l.samples)
	at := func(q float64) float64 { return l.samples[int(q*float64(len(l.samples)-1))] }
	return at(0.5), at(0.99)
}

func produceAtRate(ctx context.Context, cl *kgo.Client, topic string, lat *latencies) {
	g := gen.New(gen.Options{Seed: rand.Uint64()})
	start := time.Now()
	lat.warm = start.Add(time.Duration(*warmup) * time.Second)
	n := *rate * *seconds
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(*rate))); d > 0 {
			time.Sleep(d)
		}
		now := time.Now()
		v := g.Next(now.UnixMilli())
		lat.send(gen.Key{PollID: v.PollID, Option: v.Option}, now)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: now}, nil)
	}
	cl.Flush(ctx)
	time.Sleep(3 * time.Second) // let the last deltas arrive before reading the percentiles
}

var resultRE = regexp.MustCompile(`(\w+)=(\S+)`)

func runPeer(args ...string) map[string]string {
	cmd := exec.Command("java", append([]string{"-XX:ActiveProcessorCount=2", "-Xms1g", "-Xmx1g", "-jar", *peerJar}, args...)...)
	cmd.Env = append(os.Environ(), "WAGG_KAFKA_BOOTSTRAP="+*brokers)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "RESULT") {
			for _, m := range resultRE.FindAllStringSubmatch(line, -1) {
				fields[m[1]] = m[2]
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		log.Fatalf("peer %v: %v", args, err)
	}
	return fields
}

func peerCatchUp(topic, guarantee string) result {
	f := runPeer("bench", "--input", topic, "--guarantee", guarantee, "--events", strconv.Itoa(*events))
	eps, _ := strconv.ParseFloat(f["events_per_sec"], 64)
	cpu, _ := strconv.ParseFloat(f["cpu_seconds_per_million"], 64)
	return result{eventsPerSec: eps, cpuPerMillion: cpu}
}

func peerLatency(guarantee string) (p50, p99 float64) {
	f := runPeer("latency", "--rate", strconv.Itoa(*rate), "--seconds", strconv.Itoa(*seconds), "--warmup-s", strconv.Itoa(*warmup), "--guarantee", guarantee)
	if f["kept_up"] == "false" {
		log.Printf("kstreams %s did not keep up with %d votes/s: its latency grows with the run", guarantee, *rate)
	}
	p50, _ = strconv.ParseFloat(f["p50_ms"], 64)
	p99, _ = strconv.ParseFloat(f["p99_ms"], 64)
	return p50, p99
}

func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks (USER_HZ = 100 on Linux)
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func mustRead(p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

func report(systems []string, rs map[string][]result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "events per backlog: %d, rounds: %d, latency rate: %d/s for %d s (first %d s not recorded), 12 partitions, one broker, %s\n\n",
		*events, *rounds, *rate, *seconds, *warmup, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintln(&b, "| system | catch-up events/s | CPU s per M events | p50 ms | p99 ms | events/s ratio wagg/peer | CPU ratio peer/wagg |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|")
	w := rs["wagg"]
	for _, s := range systems {
		r := rs[s]
		eps := median(r, func(x result) float64 { return x.eventsPerSec })
		cpu := median(r, func(x result) float64 { return x.cpuPerMillion })
		ratio, cpuRatio := "", ""
		if s != "wagg" {
			var q, c []float64
			for i := range r {
				q = append(q, w[i].eventsPerSec/r[i].eventsPerSec)
				c = append(c, r[i].cpuPerMillion/w[i].cpuPerMillion)
			}
			slices.Sort(q)
			slices.Sort(c)
			ratio, cpuRatio = fmt.Sprintf("%.2fx", q[len(q)/2]), fmt.Sprintf("%.2fx", c[len(c)/2])
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.0f | %.0f | %s | %s |\n", s, eps, cpu,
			median(r, func(x result) float64 { return x.p50 }), median(r, func(x result) float64 { return x.p99 }), ratio, cpuRatio)
	}
	return b.String()
}
