package main

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/sdk/go/wagg"
)

var fiveMinutes = abi.Window{Name: "five_minutes", Kind: abi.Hopping, SizeMs: 300_000, SlideMs: 60_000}

const t0 = 1_764_000_000_000

// pane is one poll in one window instance.
type pane struct{ start, poll int64 }

// TestUniqueVoters_WithinTheSketchError runs the Wasm build on four
// partitions whose votes come from the same users, merges each pane's rows
// as the host does, and checks votes exactly and voters within 3 standard
// errors of the exact count of users (exact for small polls).
func TestUniqueVoters_WithinTheSketchError(t *testing.T) {
	ctx := context.Background()
	rt, err := sandbox.New(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	m, err := rt.Compile(ctx, testwasm.Build(t, "examples/uniquevoters"))
	if err != nil {
		t.Fatal(err)
	}
	const parts = 4
	batches := make([]*abi.Batch, parts)
	for i := range batches {
		batches[i] = &abi.Batch{Columns: make([]abi.BatchColumn, 2)}
		batches[i].Columns[1].Offsets = []uint32{0}
	}
	users := map[pane]map[string]bool{}
	votes := map[pane]int64{}
	g := gen.New(gen.Options{Seed: 9, Polls: 20, Users: 20_000})
	for i := range 60_000 {
		v := g.Next(t0 + int64(i)*10) // ten minutes
		b := batches[i%parts]         // a voter's votes land on any partition
		b.Times = append(b.Times, v.TS)
		b.Columns[0].Ints = append(b.Columns[0].Ints, v.PollID)
		b.Columns[1].Data = append(b.Columns[1].Data, v.UserID...)
		b.Columns[1].Offsets = append(b.Columns[1].Offsets, uint32(len(b.Columns[1].Data)))
		for _, s := range fiveMinutes.Starts(v.TS, nil) {
			p := pane{s, v.PollID}
			if users[p] == nil {
				users[p] = map[string]bool{}
			}
			users[p][v.UserID] = true
			votes[p]++
		}
	}
	merged := map[pane]*abi.Sketch{}
	counted := map[pane]int64{}
	enc := abi.NewBatchEncoder(&m.Schema)
	for _, b := range batches {
		inst, err := m.Instantiate(ctx, abi.Config{Windows: []abi.Window{fiveMinutes}})
		if err != nil {
			t.Fatal(err)
		}
		buf, err := enc.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.Process(ctx, buf); err != nil {
			t.Fatal(err)
		}
		rows, err := inst.Flush(ctx, math.MaxInt64, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			k, _ := m.Schema.KeyValues(r.Key)
			p := pane{r.Start, k[0].(int64)}
			if merged[p] == nil {
				merged[p] = &abi.Sketch{}
			}
			merged[p].Merge(r.Sketches[1])
			counted[p] += int64(r.Metrics[0])
		}
		inst.Close(ctx)
	}
	if len(merged) != len(users) {
		t.Fatalf("%d panes have rows, %d have votes", len(merged), len(users))
	}
	for p, us := range users {
		exact := float64(len(us))
		got := float64(merged[p].Estimate())
		if counted[p] != votes[p] {
			t.Errorf("%+v: %d votes, want %d", p, counted[p], votes[p])
		}
		if math.Abs(got-exact) > 3*1.04/64*exact {
			t.Errorf("%+v: %v unique voters estimated, %v exactly: beyond 3 standard errors", p, got, exact)
		}
	}
}

// Example runs the aggregator natively: three votes of two users on poll 7.
func Example() {
	l, err := wagg.NewLocal(fiveMinutes)
	if err != nil {
		panic(err)
	}
	err = l.Process(&abi.Batch{
		Times: []int64{t0, t0 + 1000, t0 + 2000},
		Columns: []abi.BatchColumn{
			{Ints: []int64{7, 7, 7}},
			{Offsets: []uint32{0, 3, 6, 9}, Data: []byte("u-1u-2u-1")},
		},
	})
	if err != nil {
		panic(err)
	}
	rows, _ := l.Flush(t0)
	r := rows[0]
	fmt.Println("votes", int64(r.Metrics[0]), "voters", int64(r.Metrics[1]))
	// Output: votes 3 voters 2
}
