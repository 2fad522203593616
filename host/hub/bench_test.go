package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
)

// BenchmarkPublish measures merging and encoding: 12 partitions publishing
// 100 changed groups each, over 10k polls x 8 options, with no subscriber.
func BenchmarkPublish(b *testing.B) {
	h := New(&Options{Logger: quietLogger()})
	defer h.Close()
	h.Register("votes", testSchema, testWindows)
	batches := make([][]abi.Row, 64)
	for i := range batches {
		rows := make([]abi.Row, 100)
		for j := range rows {
			n := int64(i*100 + j)
			rows[j] = row(total, 0, n%10_000, fmt.Sprintf("opt%d", n%8), n, 0, n, 0)
		}
		batches[i] = rows
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		rows := batches[i%len(batches)]
		for j := range rows {
			rows[j].Metrics[0]++ // a new value every time
		}
		h.Publish("votes", int32(i%12), rows)
	}
	b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkFanout measures deltas delivered to n unfiltered subscribers over
// loopback WebSockets, each delta one changed row.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h, url := serve(b, nil)
			h.Register("votes", testSchema, testWindows)
			var wg sync.WaitGroup
			conns := make([]*Conn, n)
			for i := range conns {
				conns[i] = dial(b, url, Subscribe{Aggregator: "votes"})
				if _, err := conns[i].Next(testCtx(b)); err != nil {
					b.Fatal(err)
				}
			}
			want := uint64(b.N)
			b.ResetTimer()
			start := time.Now()
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						_, data, err := c.c.Read(context.Background())
						if err != nil {
							return
						}
						var f struct{ Seq uint64 }
						if json.Unmarshal(data, &f) == nil && f.Seq >= want {
							return
						}
					}
				}()
			}
			for i := range b.N {
				h.Publish("votes", 0, []abi.Row{row(total, 0, int64(i%100), "a", int64(i), 0, 0, 0)})
			}
			wg.Wait()
			b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "deliveries/s")
		})
	}
}
