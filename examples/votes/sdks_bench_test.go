package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/host/decode"
	"github.com/wagg/wagg/internal/testwasm"
	"github.com/wagg/wagg/sdk/go/wagg"
)

// BenchmarkVotesSDKs is BenchmarkVotesDecoded for the C, Rust and
// AssemblyScript builds of the same aggregator (examples/votes/c, rust,
// assemblyscript): "wasm" through
// host/sandbox, "native" the same sources and SDK compiled for the host
// (c/bench.c, rust/src/bin/bench.rs) folding the same encoded batches, with
// the same flush every 64 batches, and "wasm-json" the plugin behind the
// host's JSON decoder, as BenchmarkVotesJSON. Reproduce: make bench
// (BENCHMARKS.md).
func BenchmarkVotesSDKs(b *testing.B) {
	all, raw, _ := makeVotes(1<<18, 100000)
	schema, _ := wagg.Describe()
	sdks := []struct {
		name   string
		wasm   func(testing.TB) []byte
		native func(testing.TB) string
	}{
		{"c", func(tb testing.TB) []byte { return testwasm.BuildC(tb, "examples/votes/c/votes.c") },
			func(tb testing.TB) string {
				return testwasm.BuildNativeC(tb, "examples/votes/c/bench.c", "examples/votes/c/votes.c")
			}},
		{"rust", func(tb testing.TB) []byte { return testwasm.BuildRust(tb, "examples/votes/rust") },
			func(tb testing.TB) string { return testwasm.BuildNativeRust(tb, "examples/votes/rust", "bench") }},
		// AssemblyScript compiles only to Wasm: no native row.
		{"as", func(tb testing.TB) []byte { return testwasm.BuildAS(tb, "examples/votes/assemblyscript/votes.ts") }, nil},
	}
	for _, n := range batchSizes {
		enc := abi.NewBatchEncoder(&schema)
		var bufs [][]byte
		var file []byte
		for _, bt := range split(all, n) {
			buf, _ := enc.Encode(bt)
			bufs = append(bufs, append([]byte(nil), buf...))
			file = binary.LittleEndian.AppendUint32(file, uint32(len(buf)))
			file = append(file, buf...)
		}
		path := filepath.Join(b.TempDir(), "batches")
		if *batchesDir != "" {
			path = filepath.Join(*batchesDir, fmt.Sprintf("batches.%d", n))
		}
		if err := os.WriteFile(path, file, 0o644); err != nil {
			b.Fatal(err)
		}
		for _, sdk := range sdks {
			b.Run(fmt.Sprintf("%s/native/batch=%d", sdk.name, n), func(b *testing.B) {
				if sdk.native == nil {
					b.Skip("compiles only to Wasm")
				}
				bin := sdk.native(b)
				b.ResetTimer()
				out, err := exec.Command(bin, path, strconv.Itoa(b.N)).Output()
				if err != nil {
					b.Fatalf("%s: %v", bin, err)
				}
				ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
				if err != nil {
					b.Fatal(err)
				}
				perEvent := ns / float64(b.N*n)
				b.ReportMetric(perEvent, "ns/event")
				b.ReportMetric(1e9/perEvent, "events/s")
			})
			b.Run(fmt.Sprintf("%s/wasm/batch=%d", sdk.name, n), func(b *testing.B) {
				inst, done := instance(b, sdk.wasm(b))
				defer done()
				foldWasm(b, inst, bufs, n)
			})
			// with the host's JSON decoding first, as in the pipeline
			// (BenchmarkVotesJSON for the Go guest)
			b.Run(fmt.Sprintf("%s/wasm-json/batch=%d", sdk.name, n), func(b *testing.B) {
				ctx := context.Background()
				inst, done := instance(b, sdk.wasm(b))
				defer done()
				dec := decode.New(&schema)
				var rows []abi.Row
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
					buf, err := enc.Encode(dec.Batch())
					if err != nil {
						b.Fatal(err)
					}
					if err := inst.Process(ctx, buf); err != nil {
						b.Fatal(err)
					}
					if i%64 == 63 {
						rows, _ = inst.Flush(ctx, 0, rows[:0])
					}
				}
				report(b, n)
			})
		}
	}
}
