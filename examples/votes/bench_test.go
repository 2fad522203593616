package main

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/decode"
	"github.com/wagg/wagg/host/sandbox"
	"github.com/wagg/wagg/sdk/go/wagg"
)

// The Wasm stage of the votes aggregator against the same aggregation in
// native Go (the SDK compiled for the host), per batch size. Each iteration
// folds one batch; a flush every 64 batches keeps the dirty sets realistic.
// Reproduce: make bench (BENCHMARKS.md).

var batchSizes = []int{256, 1024, 4096, 16384}

// callTimeout is the sandbox's per-call CPU deadline in the Wasm benchmarks:
// counting their instructions under valgrind (BENCHMARKS.md) needs more
// than the default second, which the Go guest's start alone uses there.
var callTimeout = flag.Duration("calltimeout", 0, "the sandbox's per-call CPU deadline in the Wasm benchmarks (0: the default)")

// batchesDir keeps the batch files BenchmarkVotesSDKs hands the native
// builds (DIR/batches.SIZE), for running those builds under valgrind.
var batchesDir = flag.String("batchesdir", "", "keep BenchmarkVotesSDKs' batch files in this directory")

func BenchmarkVotesDecoded(b *testing.B) {
	all, _, _ := makeVotes(1<<18, 100000)
	schema, _ := wagg.Describe()
	for _, n := range batchSizes {
		batches := split(all, n)
		b.Run(fmt.Sprintf("native/batch=%d", n), func(b *testing.B) {
			l, _ := wagg.NewLocal(windows...)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := l.Process(batches[i%len(batches)]); err != nil {
					b.Fatal(err)
				}
				if i%64 == 63 {
					l.Flush(0)
				}
			}
			report(b, n)
		})
		b.Run(fmt.Sprintf("wasm/batch=%d", n), func(b *testing.B) {
			inst, done := instance(b)
			defer done()
			enc := abi.NewBatchEncoder(&schema)
			bufs := make([][]byte, len(batches))
			for i, bt := range batches {
				buf, _ := enc.Encode(bt)
				bufs[i] = append([]byte(nil), buf...)
			}
			foldWasm(b, inst, bufs, n)
		})
	}
}

// BenchmarkVotesJSON includes decoding: the host decoder turns each
// record's JSON into the declared columns (where the design puts decoding),
// then the batch goes through the plugin, or natively through the SDK.
func BenchmarkVotesJSON(b *testing.B) {
	_, raw, _ := makeVotes(1<<18, 100000)
	schema, _ := wagg.Describe()
	for _, n := range batchSizes {
		run := func(b *testing.B, fold func(*abi.Batch) error) {
			dec := decode.New(&schema)
			b.ResetTimer()
			next := 0
			for i := 0; i < b.N; i++ {
				dec.Reset()
				for range n {
					if err := dec.Add(raw[next], t0+int64(next)/100); err != nil {
						b.Fatal(err)
					}
					next = (next + 1) % len(raw)
				}
				if err := fold(dec.Batch()); err != nil {
					b.Fatal(err)
				}
			}
			report(b, n)
		}
		b.Run(fmt.Sprintf("native/batch=%d", n), func(b *testing.B) {
			l, _ := wagg.NewLocal(windows...)
			i := 0
			run(b, func(bt *abi.Batch) error {
				if i++; i%64 == 0 {
					l.Flush(0)
				}
				return l.Process(bt)
			})
		})
		b.Run(fmt.Sprintf("wasm/batch=%d", n), func(b *testing.B) {
			ctx := context.Background()
			inst, done := instance(b)
			defer done()
			enc := abi.NewBatchEncoder(&schema)
			var rows []abi.Row
			i := 0
			run(b, func(bt *abi.Batch) error {
				buf, err := enc.Encode(bt)
				if err != nil {
					return err
				}
				if i++; i%64 == 0 {
					rows, _ = inst.Flush(ctx, 0, rows[:0])
				}
				return inst.Process(ctx, buf)
			})
		})
	}
}

func split(all *abi.Batch, n int) []*abi.Batch {
	var out []*abi.Batch
	for lo := 0; lo+n <= len(all.Times); lo += n {
		b := &abi.Batch{Times: all.Times[lo : lo+n], Columns: make([]abi.BatchColumn, 2)}
		b.Columns[0].Ints = all.Columns[0].Ints[lo : lo+n]
		s := &all.Columns[1]
		base := s.Offsets[lo]
		for _, o := range s.Offsets[lo : lo+n+1] {
			b.Columns[1].Offsets = append(b.Columns[1].Offsets, o-base)
		}
		b.Columns[1].Data = s.Data[base:s.Offsets[lo+n]]
		out = append(out, b)
	}
	return out
}

// foldWasm folds the encoded batches of n records into a plugin, flushing
// every 64, and reports the time per event and the flushes' share of it
// (the host's decoding of the rows included).
func foldWasm(b *testing.B, inst *sandbox.Instance, bufs [][]byte, n int) {
	ctx := context.Background()
	var rows []abi.Row
	var flushing time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := inst.Process(ctx, bufs[i%len(bufs)]); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			start := time.Now()
			rows, _ = inst.Flush(ctx, 0, rows[:0])
			flushing += time.Since(start)
		}
	}
	b.ReportMetric(float64(flushing.Nanoseconds())/float64(b.N*n), "flush-ns/event")
	report(b, n)
}

func report(b *testing.B, perOp int) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N*perOp)
	b.ReportMetric(ns, "ns/event")
	b.ReportMetric(1e9/ns, "events/s")
}
