package checkpoint

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// These tests cover what decides which checkpoint wins: the versions saves
// are written with and the row a save writes, without ClickHouse, and a
// takeover from a host whose clock runs ahead, with it. The integration
// tests (host/server) save and load against the real server too.

func TestCheckpoint_LaterSaveGetsAHigherVersionWhateverTheClock(t *testing.T) {
	base := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		clock []time.Duration // the wall clock at each save, from base
	}{
		{"clock moves on", []time.Duration{0, time.Millisecond, time.Second}},
		{"clock stands still", []time.Duration{0, 0, 0, 0}},
		{"clock steps back", []time.Duration{time.Hour, 0, -time.Hour, time.Minute}},
		{"clock jumps ahead then back", []time.Duration{0, 24 * time.Hour, time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			i := 0
			clk := versionClock{now: func() time.Time { return base.Add(c.clock[i]) }}
			var last uint64
			for i = range c.clock {
				v := clk.next()
				if i > 0 && v <= last {
					t.Fatalf("save %d got version %d, not above the previous save's %d: the earlier checkpoint would win", i, v, last)
				}
				if at := uint64(base.Add(c.clock[i]).UnixNano()); v < at {
					t.Fatalf("save %d got version %d, below the wall clock %d", i, v, at)
				}
				last = v
			}
		})
	}
}

func TestCheckpoint_ConcurrentSavesNeverShareAVersion(t *testing.T) {
	frozen := time.Unix(1_800_000_000, 0)
	clk := versionClock{now: func() time.Time { return frozen }}
	const goroutines, each = 8, 1000
	got := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				got[g] = append(got[g], clk.next())
			}
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for g, vs := range got {
		for i, v := range vs {
			if seen[v] {
				t.Fatalf("version %d given twice: two saves of one partition would tie", v)
			}
			seen[v] = true
			if i > 0 && v <= vs[i-1] {
				t.Fatalf("goroutine %d: version %d after %d", g, v, vs[i-1])
			}
		}
	}
}

func TestCheckpoint_SaveWritesEveryFieldInItsColumn(t *testing.T) {
	snap := []byte{0, 1, 0xff, 0xfe, '\'', '`', '\\', 0} // a binary snapshot: NULs, invalid UTF-8, quotes
	cases := []struct {
		name    string
		cp      Checkpoint
		version uint64
		want    map[string]any
	}{
		{
			"a plugin that declares its state version",
			Checkpoint{Deployment: "votes", Topic: "in", Partition: 11, NextOffset: 1 << 40, Watermark: -5, Snapshot: snap, Plugin: "abc", StateVersion: 3,
				RelayTopic: "id:2", RelayOffset: 99},
			42,
			map[string]any{"deployment": "votes", "topic": "in", "source_partition": uint32(11), "next_offset": int64(1 << 40),
				"watermark": int64(-5), "snapshot": string(snap), "plugin_sha256": "abc", "version": uint64(42), "state_version": uint32(3),
				"relay_topic": "id:2", "relay_offset": int64(99)},
		},
		{
			"a plugin from before state versions",
			Checkpoint{Deployment: "d", Topic: "t", Partition: 0, NextOffset: 0, StateVersion: 0, RelayOffset: -1},
			7,
			map[string]any{"deployment": "d", "topic": "t", "source_partition": uint32(0), "next_offset": int64(0),
				"watermark": int64(0), "snapshot": "", "plugin_sha256": "", "version": uint64(7), "state_version": uint32(1),
				"relay_topic": "", "relay_offset": int64(-1)},
		},
	}
	cols := strings.Split(saveColumns, ", ")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vals := c.cp.values(c.version)
			if len(vals) != len(cols) {
				t.Fatalf("%d values for %d columns", len(vals), len(cols))
			}
			for i, col := range cols {
				if vals[i] != c.want[col] {
					t.Errorf("column %s: %#v, want %#v", col, vals[i], c.want[col])
				}
			}
		})
	}
}

// The table keeps, per (deployment, topic, partition), the row of the
// highest version: that is what makes the latest save the one Load reads.
func TestCheckpoint_TableKeepsTheHighestVersionPerPartition(t *testing.T) {
	ddl := tableDDL("`db`." + Table)
	if !strings.Contains(ddl, "ReplacingMergeTree(version)") {
		t.Errorf("the table does not replace rows by version: %s", ddl)
	}
	if !strings.Contains(ddl, "ORDER BY (deployment, topic, source_partition)") {
		t.Errorf("the table's key is not (deployment, topic, source_partition): %s", ddl)
	}
	declared := map[string]bool{}
	for _, m := range regexp.MustCompile(`(\w+) (String|UInt32|UInt64|Int64|DateTime)`).FindAllStringSubmatch(ddl, -1) {
		declared[m[1]] = true
	}
	for _, col := range strings.Split(saveColumns, ", ") {
		if !declared[col] {
			t.Errorf("Save writes column %s, which the table does not declare", col)
		}
	}
}

// What Save writes, Load reads back as it was, the types of its columns
// included (a mismatch is an error of the driver at run time).
func TestCheckpoint_LoadReadsBackWhatSaveWrote(t *testing.T) {
	cases := []struct {
		name string
		cp   Checkpoint
		want Checkpoint // when it differs from cp
	}{
		{"a binary snapshot", Checkpoint{Deployment: "votes", Topic: "in", Partition: 3, NextOffset: 1 << 50, Watermark: 1_764_000_000_000,
			Snapshot: []byte{0, 0xff, '\n', 0}, Plugin: "ab12", StateVersion: 2}, Checkpoint{}},
		{"a watermark that has seen nothing", Checkpoint{Deployment: "d", Topic: "t", Partition: 0, NextOffset: 0, Watermark: math.MinInt64,
			Plugin: "p", StateVersion: 1}, Checkpoint{}},
		{"a plugin from before state versions", Checkpoint{Deployment: "d", Topic: "t", Partition: 1 << 20, Snapshot: []byte("s"), StateVersion: 0},
			Checkpoint{Deployment: "d", Topic: "t", Partition: 1 << 20, Snapshot: []byte("s"), StateVersion: 1}},
	}
	saved := strings.Split(saveColumns, ", ")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.cp
			if c.want.Deployment != "" {
				want = c.want
			}
			byName := map[string]any{}
			for i, v := range c.cp.values(99) {
				byName[saved[i]] = v
			}
			var l loaded
			dest := l.dest()
			for i, col := range strings.Split(loadColumns, ", ") {
				v, ok := byName[col]
				if !ok {
					t.Fatalf("Load reads column %s, which Save does not write", col)
				}
				d := reflect.ValueOf(dest[i]).Elem()
				if d.Type() != reflect.TypeOf(v) {
					t.Fatalf("column %s: Save writes a %T, Load scans a %v", col, v, d.Type())
				}
				d.Set(reflect.ValueOf(v))
			}
			got := l.checkpoint(c.cp.Deployment, c.cp.Topic, c.cp.Partition)
			if !bytes.Equal(got.Snapshot, want.Snapshot) {
				t.Fatalf("snapshot %x, want %x", got.Snapshot, want.Snapshot)
			}
			got.Snapshot, want.Snapshot = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("read back %+v, want %+v", got, want)
			}
		})
	}
}

// A host taking a partition over from one whose clock runs an hour ahead
// saves checkpoints that win over the one it loaded: Load then reads the
// latest save, not the other host's older one (a restart would replay
// everything since it), in the real ClickHouse.
func TestCheckpoint_SavesAfterALoadWinOverAClockAhead(t *testing.T) {
	ctx, conn, db := database(t, "clock")
	ahead, err := Open(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	ahead.clock.now = func() time.Time { return time.Now().Add(time.Hour) }
	behind, err := Open(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	cp := Checkpoint{Deployment: "votes", Topic: "in", Partition: 2, NextOffset: 10, Plugin: "p", StateVersion: 1}
	if err := ahead.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
	got, err := behind.Load(ctx, cp.Deployment, cp.Topic, cp.Partition)
	if err != nil || got.NextOffset != 10 {
		t.Fatalf("load of the first save: %+v, %v", got, err)
	}
	for _, next := range []int64{20, 30} {
		cp.NextOffset = next
		if err := behind.Save(ctx, cp); err != nil {
			t.Fatal(err)
		}
		got, err := behind.Load(ctx, cp.Deployment, cp.Topic, cp.Partition)
		if err != nil || got.NextOffset != next {
			t.Fatalf("after saving offset %d, Load reads %+v (%v)", next, got, err)
		}
	}
}

func TestCheckpoint_ObservedVersionsAreExceeded(t *testing.T) {
	base := time.Unix(1_764_000_000, 0)
	clk := versionClock{now: func() time.Time { return base }}
	first := clk.next()
	ahead := uint64(base.Add(time.Hour).UnixNano())
	clk.observe(ahead)
	clk.observe(first) // an older one changes nothing
	if v := clk.next(); v <= ahead {
		t.Fatalf("next after observing %d: %d", ahead, v)
	}
}

// database connects to the ClickHouse `make test` starts and makes a
// database of the test's own, dropped at its end.
func database(t *testing.T, name string) (context.Context, clickhouse.Conn, string) {
	t.Helper()
	addr := os.Getenv("WAGG_TEST_CLICKHOUSE")
	if addr == "" {
		t.Skip("integration test: needs the ClickHouse that `make test` starts (WAGG_TEST_CLICKHOUSE)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	db := fmt.Sprintf("wagg_test_checkpoint_%s_%d", name, time.Now().UnixNano())
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP DATABASE "+db) })
	return ctx, conn, db
}

// Loading one partition's checkpoint reads that row, not its neighbours'
// snapshots: one deployment's large snapshots must not slow every other
// deployment's restores. ClickHouse's max_bytes_to_read stops a query
// that reads more.
func TestCheckpoint_LoadReadsOnlyItsOwnSnapshot(t *testing.T) {
	ctx, conn, db := database(t, "neighbours")
	s, err := Open(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{7}, 16<<20)
	for p := range int32(8) {
		if err := s.Save(ctx, Checkpoint{Deployment: "big", Topic: "in", Partition: p, Snapshot: big, Plugin: "p", StateVersion: 1}); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(ctx, Checkpoint{Deployment: "small", Topic: "in", Partition: p, NextOffset: int64(p), Snapshot: []byte("s"), Plugin: "p", StateVersion: 1}); err != nil {
			t.Fatal(err)
		}
	}
	limited := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_bytes_to_read": 4 << 20}))
	load := func(when string) {
		for _, p := range []int32{0, 5} {
			got, err := s.Load(limited, "small", "in", p)
			if err != nil || got.NextOffset != int64(p) || string(got.Snapshot) != "s" {
				t.Fatalf("%s: partition %d's small checkpoint among 128 MiB of others' snapshots: %+v, %v", when, p, got, err)
			}
		}
	}
	load("a part per save")
	if err := conn.Exec(ctx, "OPTIMIZE TABLE "+s.table+" FINAL"); err != nil {
		t.Fatal(err)
	}
	load("merged")
}
