package sandbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/examples/votes/gen"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/testwasm"
)

// BenchmarkDeadline is the cost of per-call deadlines on the votes plugin:
// the same batches through a runtime with deadlines (the default: every
// loop header of the guest checks whether its call was stopped) and one
// without (the deadline is long here: the box may be loaded, and this
// measures the checks, not the timer). Each iteration folds one batch; a flush every 64 batches, as in
// examples/votes. Compare deadline=on with deadline=off (BENCHMARKS.md).
func BenchmarkDeadline(b *testing.B) {
	ctx := context.Background()
	wasm := testwasm.Build(b, "examples/votes")
	windows := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	for _, n := range []int{1024, 4096} {
		for _, mode := range []struct {
			name    string
			timeout time.Duration
		}{{"off", -1}, {"on", 10 * time.Second}} {
			b.Run(fmt.Sprintf("batch=%d/deadline=%s", n, mode.name), func(b *testing.B) {
				rt, err := sandbox.New(ctx, &sandbox.Options{CallTimeout: mode.timeout, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
				if err != nil {
					b.Fatal(err)
				}
				defer rt.Close(ctx)
				m, err := rt.Compile(ctx, wasm)
				if err != nil {
					b.Fatal(err)
				}
				inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
				if err != nil {
					b.Fatal(err)
				}
				defer inst.Close(ctx)
				bufs := votesBatches(b, m, n, 64)
				var rows []abi.Row
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := inst.Process(ctx, bufs[i%len(bufs)]); err != nil {
						b.Fatal(err)
					}
					if i%64 == 63 {
						if rows, err = inst.Flush(ctx, 0, rows[:0]); err != nil {
							b.Fatal(err)
						}
					}
				}
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N*n)
				b.ReportMetric(ns, "ns/event")
				b.ReportMetric(1e9/ns, "events/s")
			})
		}
	}
}

// votesBatches encodes count batches of n votes (the reference workload:
// Zipf over 10k polls x 8 options, 100k votes per second of event time).
func votesBatches(tb testing.TB, m *sandbox.Module, n, count int) [][]byte {
	g := gen.New(gen.Options{Seed: 42})
	enc := abi.NewBatchEncoder(&m.Schema)
	out := make([][]byte, count)
	const t0 = 1_764_000_000_000
	i := 0
	for c := range out {
		b := &abi.Batch{Columns: make([]abi.BatchColumn, 2)}
		b.Columns[1].Offsets = []uint32{0}
		for range n {
			v := g.Next(t0 + int64(i)/100)
			i++
			b.Times = append(b.Times, v.TS)
			b.Columns[0].Ints = append(b.Columns[0].Ints, v.PollID)
			b.Columns[1].Data = append(b.Columns[1].Data, v.Option...)
			b.Columns[1].Offsets = append(b.Columns[1].Offsets, uint32(len(b.Columns[1].Data)))
		}
		buf, err := enc.Encode(b)
		if err != nil {
			tb.Fatal(err)
		}
		out[c] = append([]byte(nil), buf...)
	}
	return out
}
