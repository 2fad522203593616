package sandbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/internal/gen"
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

// BenchmarkMemory measures the resident memory of idle votes partitions:
// 24 instances, each initialized and fed one batch of 1024 votes, then the
// RSS after 100 restarts (close an instance, start a new one, feed it).
// Run with -benchtime 1x (BENCHMARKS.md).
func BenchmarkMemory(b *testing.B) {
	ctx := context.Background()
	wasm := testwasm.Build(b, "examples/votes")
	windows := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	for i := 0; i < b.N; i++ {
		rt, err := sandbox.New(ctx, &sandbox.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		m, err := rt.Compile(ctx, wasm)
		if err != nil {
			b.Fatal(err)
		}
		bufs := votesBatches(b, m, 1024, 4)
		start := func() *sandbox.Instance {
			inst, err := m.Instantiate(ctx, abi.Config{Windows: windows})
			if err != nil {
				b.Fatal(err)
			}
			if err := inst.Process(ctx, bufs[0]); err != nil {
				b.Fatal(err)
			}
			if _, err := inst.Flush(ctx, 0, nil); err != nil {
				b.Fatal(err)
			}
			return inst
		}
		// One instance first, so the compiled code and the runtime's own
		// memory are not counted per partition.
		first := start()
		base := rss(b)
		const partitions = 24
		insts := make([]*sandbox.Instance, partitions)
		for p := range insts {
			insts[p] = start()
		}
		before := rss(b)
		for r := 0; r < 100; r++ {
			p := r % partitions
			insts[p].Close(ctx)
			insts[p] = start()
		}
		after := rss(b)
		b.ReportMetric(float64(before-base)/partitions/(1<<20), "MiB-RSS/partition")
		b.ReportMetric(float64(before)/(1<<20), "MiB-RSS-before")
		b.ReportMetric(float64(after)/(1<<20), "MiB-RSS-after-100-restarts")
		b.ReportMetric(float64(rt.Reserved())/(1<<20), "MiB-reserved")
		for _, inst := range insts {
			inst.Close(ctx)
		}
		first.Close(ctx)
		rt.Close(ctx)
	}
}

// rss is the process's resident set, after a collection that returns
// what it can to the system.
func rss(tb testing.TB) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}
