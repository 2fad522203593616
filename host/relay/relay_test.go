package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/checkpoint"
	"github.com/wagg/wagg/host/hub"
	"github.com/wagg/wagg/host/relay"
	"github.com/wagg/wagg/host/sink"
)

// These tests drive the relays of two hosts by hand, as partition workers
// would (rows emitted at increasing source offsets, checkpoints saved
// through the relay), against the real Kafka and ClickHouse, and follow
// each host's hub as a dashboard does.

var (
	schema  = &abi.Schema{ABI: abi.Version, Keys: []abi.Column{{Name: "k", Type: abi.String}}, Metrics: []abi.Metric{{Name: "n", Kind: abi.Count, Type: abi.Int64}}}
	windows = []abi.Window{{Name: "total", Kind: abi.Global}}
)

const (
	agg         = "agg"
	generation  = "agg"
	sourceTopic = "src"
)

// cluster is the services two hosts share: a database and a relay topic.
type cluster struct {
	brokers []string
	adm     *kadm.Client
	topic   string
	table   *sink.Table
	cps     *checkpoint.Store
}

func newCluster(t *testing.T) *cluster {
	b, c := os.Getenv("WAGG_TEST_KAFKA"), os.Getenv("WAGG_TEST_CLICKHOUSE")
	if b == "" || c == "" {
		t.Skip("integration test: needs the Kafka and ClickHouse that `make test` starts (WAGG_TEST_KAFKA, WAGG_TEST_CLICKHOUSE)")
	}
	ctx := context.Background()
	db := fmt.Sprintf("wagg_relay_%d_%d", time.Now().Unix(), rand.IntN(1e6))
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{c}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(b, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	cu := &cluster{brokers: strings.Split(b, ","), adm: kadm.NewClient(cl), topic: relay.Topic(db, agg)}
	t.Cleanup(func() {
		cu.adm.DeleteTopics(context.Background(), cu.topic)
		cl.Close()
		ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		ch.Close()
	})
	if cu.table, err = sink.Ensure(ctx, ch, db, agg, generation, schema, windows); err != nil {
		t.Fatal(err)
	}
	if cu.cps, err = checkpoint.Open(ctx, ch, db); err != nil {
		t.Fatal(err)
	}
	return cu
}

// node is one host: its hub, served, and its relay.
type node struct {
	hub *hub.Hub
	url string
	rel *relay.Relay
}

func (cu *cluster) start(t *testing.T, name string) *node {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testLog{t, name}, nil))
	h := hub.New(&hub.Options{Logger: log})
	h.Register(agg, schema, windows)
	srv := httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	rel, err := relay.New(ctx, relay.Options{
		Brokers: cu.brokers, Admin: cu.adm, Topic: cu.topic, Partitions: 2,
		Deployment: agg, Generation: generation, SourceTopic: sourceTopic, Schema: schema, Windows: windows,
		Hub: h, Table: cu.table, Checkpoints: cu.cps, CheckpointEvery: 100 * time.Millisecond, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); rel.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		rel.Close()
		srv.Close()
		h.Close()
	})
	return &node{hub: h, url: "ws" + strings.TrimPrefix(srv.URL, "http"), rel: rel}
}

type testLog struct {
	t    *testing.T
	name string
}

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// partition is a source partition processed on a node: one count per key,
// every key of it prefixed with its name, so that a dashboard's rows show
// each partition apart.
type partition struct {
	p       int32
	on      *node
	next    int64 // the next source offset
	state   map[string]int64
	pending map[string]int64 // emitted since the last checkpoint
	mu      sync.Mutex
	history []map[string]int64 // its state after each offset
}

func newPartition(p int32, on *node) *partition {
	return &partition{p: p, on: on, state: map[string]int64{}, pending: map[string]int64{}, history: []map[string]int64{{}}}
}

func (s *partition) key(k string) string { return fmt.Sprintf("p%d-%s", s.p, k) }

// add counts one record of each key and emits the changed rows.
func (s *partition) add(t *testing.T, keys ...string) {
	t.Helper()
	changed := map[string]bool{}
	for _, k := range keys {
		k = s.key(k)
		s.state[k]++
		s.next++
		s.pending[k] = s.state[k]
		changed[k] = true
		s.mu.Lock()
		s.history = append(s.history, maps.Clone(s.state))
		s.mu.Unlock()
	}
	var rows []abi.Row
	for k := range changed {
		rows = append(rows, row(k, s.state[k]))
	}
	if err := s.on.rel.PublishAt(agg, s.p, s.next, rows); err != nil {
		t.Fatal(err)
	}
}

func row(k string, n int64) abi.Row {
	return abi.Row{Window: 0, Key: string(abi.AppendKeyString(nil, []byte(k))), Metrics: []uint64{uint64(n)}}
}

// checkpoint takes what a worker's checkpoint takes: the rows emitted
// since the last one and the next offset.
func (s *partition) checkpoint() (int64, []abi.Row) {
	var rows []abi.Row
	for k, n := range s.pending {
		rows = append(rows, row(k, n))
	}
	clear(s.pending)
	return s.next, rows
}

// save writes a checkpoint taken earlier, as the worker's writer does:
// rows, then the checkpoint, through the relay of the node it runs on.
func (s *partition) save(t *testing.T, cu *cluster, next int64, rows []abi.Row) {
	t.Helper()
	ctx := context.Background()
	if err := cu.table.Write(ctx, s.p, next, rows); err != nil {
		t.Fatal(err)
	}
	cp := checkpoint.Checkpoint{Deployment: generation, Topic: sourceTopic, Partition: s.p, NextOffset: next}
	if err := s.on.rel.Checkpoints().Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
}

// isPrefix reports whether got is the partition's state after some offset.
func (s *partition) isPrefix(got map[string]int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.history) - 1; i >= 0; i-- {
		if maps.Equal(s.history[i], got) {
			return true
		}
	}
	return false
}

// dashboard follows a node's hub and checks every state it shows: for each
// partition, its exact state after some prefix of its records.
type dashboard struct {
	mu   sync.Mutex
	view hub.View
	bad  error
}

func watch(t *testing.T, n *node, parts ...*partition) *dashboard {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := hub.Dial(ctx, n.url, hub.Subscribe{Aggregator: agg})
	if err != nil {
		t.Fatal(err)
	}
	d := &dashboard{}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	go func() {
		defer close(done)
		for {
			fr, err := c.Next(ctx)
			if err != nil {
				return
			}
			d.mu.Lock()
			if err := d.view.Apply(fr); err != nil && d.bad == nil {
				d.bad = err
			}
			for _, s := range parts {
				if got := d.of(s); d.bad == nil && !s.isPrefix(got) {
					d.bad = fmt.Errorf("seq %d shows partition %d as %v: not its state after any offset", fr.Seq, s.p, got)
				}
			}
			d.mu.Unlock()
		}
	}()
	return d
}

// of is what the dashboard shows of a partition; d.mu held.
func (d *dashboard) of(s *partition) map[string]int64 {
	out := map[string]int64{}
	for _, r := range d.view.Rows() {
		k, _ := r.Key["k"].(string)
		if !strings.HasPrefix(k, s.key("")) {
			continue
		}
		n, _ := r.Values["n"].Int64()
		out[k] = n
	}
	return out
}

// shows waits until the dashboard shows want for s.
func (d *dashboard) shows(t *testing.T, what string, s *partition, want map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		d.mu.Lock()
		got, bad := d.of(s), d.bad
		d.mu.Unlock()
		if bad != nil {
			t.Fatal(bad)
		}
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: partition %d shows %v, want %v", what, s.p, got, want)
		}
		<-tick.C
	}
}

func keys(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("k%d", i))
	}
	return out
}

// listedPast waits until the relay on n has listed the end of relay
// partition k past every record in it now, so that a position taken from
// that listing would lie after them. It asks through a probe checkpoint
// of another deployment for source partition k+2, which publishes nothing
// (the relay has 2 partitions): such a checkpoint's position is the latest
// listing.
func (cu *cluster) listedPast(t *testing.T, n *node, k int32) {
	t.Helper()
	ctx := context.Background()
	ends, err := cu.adm.ListEndOffsets(ctx, cu.topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(cu.topic, k)
	probe := checkpoint.Checkpoint{Deployment: "probe", Topic: sourceTopic, Partition: k + 2}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; <-tick.C {
		if err := n.rel.Checkpoints().Save(ctx, probe); err != nil {
			t.Fatal(err)
		}
		cps, err := cu.cps.Progress(ctx, probe.Deployment, probe.Topic)
		if err != nil {
			t.Fatal(err)
		}
		at := int64(-1)
		for _, cp := range cps {
			if cp.Partition == probe.Partition {
				at = cp.RelayOffset
			}
		}
		if at >= end.Offset {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay partition %d listed at %d, its records end at %d", k, at, end.Offset)
		}
	}
}

// A checkpoint whose save reached ClickHouse long after it was taken
// (ClickHouse was slow or down meanwhile) while its partition went on
// emitting, and a host that joins right then: it loads that checkpoint,
// and must apply every row emitted after it was taken. The save waits
// until the relay has listed its end past those rows: a position taken
// at the save (or a time window before it, the old rule: 2 checkpoint
// intervals + 30 s before the insert) would read the relay from after
// them, and show those keys as absent for good.
func TestRelay_HostJoiningAfterALateCheckpointSaveMissesNoRow(t *testing.T) {
	cu := newCluster(t)
	a := cu.start(t, "a")
	p0, p3 := newPartition(0, a), newPartition(3, a) // relay partitions 0 and 1 of 2
	onA := watch(t, a, p0, p3)
	for _, k := range keys(0, 10) {
		p0.add(t, k)
		p3.add(t, k)
	}
	next0, rows0 := p0.checkpoint()
	next3, rows3 := p3.checkpoint()
	p3.save(t, cu, next3, rows3) // p3's save is on time
	for _, k := range keys(10, 20) {
		p0.add(t, k) // after the checkpoint, before its save
		p3.add(t, k)
	}
	onA.shows(t, "a, its own partitions", p0, p0.state)
	cu.listedPast(t, a, 0) // the save is late: the relay has moved on
	p0.save(t, cu, next0, rows0)

	b := cu.start(t, "b")
	onB := watch(t, b, p0, p3)
	for _, k := range keys(20, 25) {
		p0.add(t, k)
		p3.add(t, k)
	}
	onB.shows(t, "b, joined after the late save", p0, p0.state)
	onB.shows(t, "b, joined after the late save", p3, p3.state)

	// A partition the source gained (relay partition 5 mod 2 = 1) is
	// followed from its first checkpoint on.
	p5 := newPartition(5, a)
	for _, k := range keys(0, 5) {
		p5.add(t, k)
	}
	next5, rows5 := p5.checkpoint()
	p5.save(t, cu, next5, rows5)
	for _, k := range keys(5, 8) {
		p5.add(t, k)
	}
	onB.shows(t, "b, a partition added to the source", p5, p5.state)
	onA.shows(t, "a", p3, p3.state)
}

// The relay's records after a checkpoint expired before a host joined
// (retention, here by deleting them): that host shows the partition at
// its checkpoint, not the checkpoint with later rows on top of a hole,
// until the next checkpoint, from which it follows again.
func TestRelay_ExpiredRecordsShowTheCheckpointUntilTheNextOne(t *testing.T) {
	cu := newCluster(t)
	a := cu.start(t, "a")
	p0 := newPartition(0, a)
	for _, k := range keys(0, 5) {
		p0.add(t, k)
	}
	next, rows := p0.checkpoint()
	p0.save(t, cu, next, rows)
	at := maps.Clone(p0.state)
	for _, k := range keys(5, 10) {
		p0.add(t, k)
	}
	ctx := context.Background()
	var ends kadm.ListedOffsets
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var err error
		if ends, err = cu.adm.ListEndOffsets(ctx, cu.topic); err != nil {
			t.Fatal(err)
		}
		if o, _ := ends.Lookup(cu.topic, 0); o.Offset >= 10 {
			break // the ten records are in the topic
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay partition 0 ends at %v, want the 10 records", ends)
		}
		<-tick.C
	}
	var del kadm.Offsets
	ends.Each(func(o kadm.ListedOffset) { del.AddOffset(o.Topic, o.Partition, o.Offset, -1) })
	if res, err := cu.adm.DeleteRecords(ctx, del); err != nil || res.Error() != nil {
		t.Fatalf("deleting the relay's records: %v %v", err, res.Error())
	}

	b := cu.start(t, "b")
	onB := watch(t, b, p0)
	onB.shows(t, "b, the records after the checkpoint gone", p0, at)
	p0.add(t, "k10") // on a hole: not to be applied on the checkpoint
	// The partition goes on, checkpointing as a worker does; b follows
	// again from a checkpoint whose position the relay holds.
	deadline := time.Now().Add(30 * time.Second)
	cadence := time.NewTicker(200 * time.Millisecond) // the checkpoint cadence
	defer cadence.Stop()
	for i := 11; ; i++ {
		next, rows = p0.checkpoint()
		p0.add(t, fmt.Sprintf("k%d", i))
		p0.save(t, cu, next, rows)
		onB.mu.Lock()
		got, bad := onB.of(p0), onB.bad
		onB.mu.Unlock()
		if bad != nil {
			t.Fatal(bad)
		}
		if maps.Equal(got, p0.state) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b shows %v, want %v", got, p0.state)
		}
		<-cadence.C
	}
	p0.add(t, "k99")
	onB.shows(t, "b, from the next checkpoint on", p0, p0.state)
}
