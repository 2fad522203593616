package sink_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sink"
)

// TestTable_DistinctViewMergesPartitions writes sketches of overlapping
// user sets from three partitions into the real ClickHouse and checks that
// the view's estimate equals the estimate of the sketches merged in Go (the
// live view's), and that Latest reads back each partition's sketch.
func TestTable_DistinctViewMergesPartitions(t *testing.T) {
	addr := os.Getenv("WAGG_TEST_CLICKHOUSE")
	if addr == "" {
		t.Skip("integration test: needs the ClickHouse that `make test` starts (WAGG_TEST_CLICKHOUSE)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	db := fmt.Sprintf("wagg_test_sink_distinct_%d", time.Now().UnixNano())
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP DATABASE "+db)

	schema := &abi.Schema{
		ABI:   abi.Version,
		Input: []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "user_id", Type: abi.String}},
		Keys:  []abi.Column{{Name: "poll_id", Type: abi.Int64}},
		Metrics: []abi.Metric{
			{Name: "votes", Kind: abi.Count, Type: abi.Int64},
			{Name: "voters", Kind: abi.Distinct, Type: abi.Int64},
		},
	}
	windows := []abi.Window{{Name: "five", Kind: abi.Hopping, SizeMs: 300_000, SlideMs: 60_000}}
	table, err := sink.Ensure(ctx, conn, db, "voters", "voters", schema, windows)
	if err != nil {
		t.Fatal(err)
	}
	// Poll p has users spread over the partitions, overlapping: from a few
	// (sparse sketches) to many (dense ones).
	r := rand.New(rand.NewPCG(7, 8))
	polls := []int{0, 1, 30, 900, 5000, 60_000}
	merged := map[int64]*abi.Sketch{}
	const start = 1_700_000_040_000
	for part := range int32(3) {
		var rows []abi.Row
		for p, users := range polls {
			sk := &abi.Sketch{}
			votes := 0
			for range users / 2 {
				sk.AddString(fmt.Appendf(nil, "user-%d", r.IntN(users)))
				votes++
			}
			if merged[int64(p)] == nil {
				merged[int64(p)] = &abi.Sketch{}
			}
			merged[int64(p)].Merge(sk)
			rows = append(rows, abi.Row{Window: 0, Final: true, Start: start, Key: string(abi.AppendKeyInt64(nil, int64(p))),
				Metrics: []uint64{uint64(votes), uint64(sk.Estimate())}, Sketches: []*abi.Sketch{nil, sk}})
		}
		// An older version of the same rows first: FINAL must keep the newer.
		stale := abi.Row{Window: 0, Start: start, Key: rows[3].Key, Metrics: []uint64{1, 1}, Sketches: []*abi.Sketch{nil, sketchOfUser("stale")}}
		if err := table.Write(ctx, part, 10, []abi.Row{stale}); err != nil {
			t.Fatal(err)
		}
		if err := table.Write(ctx, part, 20, rows); err != nil {
			t.Fatal(err)
		}
	}
	q := fmt.Sprintf("SELECT poll_id, voters FROM %s.voters WHERE window_name = 'five' ORDER BY poll_id", db)
	got, err := conn.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for got.Next() {
		var poll, voters int64
		if err := got.Scan(&poll, &voters); err != nil {
			t.Fatal(err)
		}
		if want := merged[poll].Estimate(); voters != want {
			t.Errorf("poll %d: the view estimates %d, the merged sketches %d", poll, voters, want)
		}
		n++
	}
	if err := got.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(polls) {
		t.Fatalf("the view has %d rows, want %d", n, len(polls))
	}
	stored, err := table.Latest(ctx, time.UnixMilli(start))
	if err != nil {
		t.Fatal(err)
	}
	back := map[int64]*abi.Sketch{}
	for _, s := range stored {
		vals, _ := schema.KeyValues(s.Row.Key)
		p := vals[0].(int64)
		if back[p] == nil {
			back[p] = &abi.Sketch{}
		}
		back[p].Merge(s.Row.Sketches[1])
		if int64(s.Row.Metrics[1]) != s.Row.Sketches[1].Estimate() {
			t.Errorf("Latest: poll %d partition %d: metric %d, sketch estimates %d", p, s.Partition, s.Row.Metrics[1], s.Row.Sketches[1].Estimate())
		}
	}
	for p, sk := range merged {
		if back[p] == nil || !back[p].Equal(sk) {
			t.Errorf("Latest: poll %d: the sketches read back differ from those written", p)
		}
	}
}

func sketchOfUser(u string) *abi.Sketch {
	s := &abi.Sketch{}
	s.AddString([]byte(u))
	return s
}
