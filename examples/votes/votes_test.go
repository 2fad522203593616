package main

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/gen"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/sdk/go/wagg"
)

var windows = []abi.Window{
	{Name: "second", Kind: abi.Tumbling, SizeMs: 1000},
	{Name: "total", Kind: abi.Global},
}

const t0 = 1_764_000_000_000

// votes returns n decoded votes over about n/rate seconds, and their JSON.
func makeVotes(n int, perSecond int) (*abi.Batch, [][]byte, gen.Counts) {
	g := gen.New(gen.Options{Seed: 42})
	b := &abi.Batch{Columns: make([]abi.BatchColumn, 2)}
	b.Columns[1].Offsets = []uint32{0}
	raw := make([][]byte, 0, n)
	counts := gen.Counts{}
	for i := range n {
		v := g.Next(t0 + int64(i)*1000/int64(perSecond))
		counts.Add(v)
		b.Times = append(b.Times, v.TS)
		b.Columns[0].Ints = append(b.Columns[0].Ints, v.PollID)
		b.Columns[1].Data = append(b.Columns[1].Data, v.Option...)
		b.Columns[1].Offsets = append(b.Columns[1].Offsets, uint32(len(b.Columns[1].Data)))
		raw = append(raw, v.AppendJSON(nil))
	}
	return b, raw, counts
}

// instance instantiates a build of the votes aggregator for the votes
// windows, metered as an upload is; plugin defaults to the Go build.
func instance(tb testing.TB, plugin ...[]byte) (*sandbox.Instance, func()) {
	ctx := context.Background()
	rt, err := sandbox.New(ctx, &sandbox.Options{CallTimeout: *callTimeout})
	if err != nil {
		tb.Fatal(err)
	}
	wasm := testwasm.Build(tb, "examples/votes")
	if len(plugin) > 0 {
		wasm = plugin[0]
	}
	m, err := rt.Compile(ctx, wasm)
	if err != nil {
		rt.Close(ctx)
		tb.Fatal(err)
	}
	inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
	if err != nil {
		rt.Close(ctx)
		tb.Fatal(err)
	}
	return inst, func() { rt.Close(ctx) }
}

func sortRows(rows []abi.Row) {
	slices.SortFunc(rows, func(a, b abi.Row) int {
		if c := int(a.Window) - int(b.Window); c != 0 {
			return c
		}
		if a.Start != b.Start {
			return int(a.Start - b.Start)
		}
		if a.Key < b.Key {
			return -1
		}
		if a.Key > b.Key {
			return 1
		}
		return 0
	})
}

func TestVotes_WasmRowsEqualNativeRowsAndOracle(t *testing.T) {
	ctx := context.Background()
	inst, done := instance(t)
	defer done()
	local, err := wagg.NewLocal(windows...)
	if err != nil {
		t.Fatal(err)
	}
	b, _, counts := makeVotes(20000, 5000)
	schema, _ := wagg.Describe()
	enc := abi.NewBatchEncoder(&schema)
	buf, err := enc.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Process(ctx, buf); err != nil {
		t.Fatal(err)
	}
	if err := local.Process(b); err != nil {
		t.Fatal(err)
	}
	watermark := b.Times[len(b.Times)-1] - 1000
	got, err := inst.Flush(ctx, watermark, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := local.Flush(watermark)
	if err != nil {
		t.Fatal(err)
	}
	sortRows(got)
	sortRows(want)
	if len(got) != len(want) {
		t.Fatalf("wasm emitted %d rows, native %d", len(got), len(want))
	}
	for i := range got {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Fatalf("row %d: wasm %v, native %v", i, got[i], want[i])
		}
	}
	totals := gen.Counts{}
	var finals, windowSum int64
	for _, r := range got {
		kv, err := schema.KeyValues(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		k := gen.Key{PollID: kv[0].(int64), Option: kv[1].(string)}
		switch windows[r.Window].Kind {
		case abi.Global:
			totals[k] += int64(r.Metrics[0])
		default:
			windowSum += int64(r.Metrics[0])
			if r.Final {
				finals++
				if !windows[r.Window].Closed(r.Start, watermark) {
					t.Errorf("row of window %d marked final before the watermark %d", r.Start, watermark)
				}
			}
		}
	}
	if len(totals) != len(counts) {
		t.Fatalf("%d totals, want %d", len(totals), len(counts))
	}
	for k, n := range counts {
		if totals[k] != n {
			t.Fatalf("total of %v = %d, want %d", k, totals[k], n)
		}
	}
	if windowSum != int64(len(b.Times)) || finals == 0 {
		t.Fatalf("window rows sum to %d (want %d), %d final", windowSum, len(b.Times), finals)
	}
}

func TestVotes_SnapshotRestoreContinuesExactly(t *testing.T) {
	ctx := context.Background()
	a, done := instance(t)
	defer done()
	b2, done2 := instance(t)
	defer done2()
	schema, _ := wagg.Describe()
	batch, _, _ := makeVotes(5000, 1000)
	buf, _ := abi.NewBatchEncoder(&schema).Encode(batch)
	if err := a.Process(ctx, buf); err != nil {
		t.Fatal(err)
	}
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	ra, _ := a.Flush(ctx, t0+3000, nil)
	rb, _ := b2.Flush(ctx, t0+3000, nil)
	sortRows(ra)
	sortRows(rb)
	if fmt.Sprint(ra) != fmt.Sprint(rb) || len(ra) == 0 {
		t.Fatalf("restored instance flushed %d rows, original %d, or they differ", len(rb), len(ra))
	}
}
