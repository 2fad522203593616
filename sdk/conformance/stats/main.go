// Command stats is the conformance aggregator that exercises every key and
// metric type: requests per (region, status, tier) with int64 and float64
// sums, minimums and maximums, an average and a distinct count of sizes. Its twins in C (c/stats.c), Rust (rust/) and
// AssemblyScript (assemblyscript/)
// must emit the same rows and snapshots (sdk/conformance).
package main

import (
	"errors"

	"github.com/wagg/wagg/sdk/go/wagg"
)

var (
	region   = wagg.String("region")
	status   = wagg.Int64("status")
	tier     = wagg.Float64("tier")
	ms       = wagg.Float64("ms")
	size     = wagg.Int64("bytes")
	requests = wagg.Count("requests")
	bytes    = wagg.Sum("bytes")
	smallest = wagg.Min("smallest")
	largest  = wagg.Max("largest")
	total    = wagg.SumFloat("ms_total")
	fastest  = wagg.Min("fastest").Float()
	slowest  = wagg.Max("slowest").Float()
	latency  = wagg.Average("latency")
	// distinctSizes counts the distinct request sizes (int64 values).
	distinctSizes = wagg.Distinct("sizes")
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(region, status, tier, ms, size),
		Keys:    wagg.Keys(wagg.StringKey("region"), wagg.Int64Key("status"), wagg.Float64Key("tier")),
		Metrics: wagg.Metrics(requests, bytes, smallest, largest, total, fastest, slowest, latency, distinctSizes),
	}, fold)
}

var errNegative = errors.New("stats: a negative status")

func fold(b *wagg.Batch, g *wagg.Groups) error {
	regions, statuses, tiers, mss, sizes := b.Strings(region), b.Int64s(status), b.Float64s(tier), b.Float64s(ms), b.Int64s(size)
	for i := range b.Len() {
		if statuses[i] < 0 {
			return errNegative
		}
		k := g.At(b.Time(i)).String(regions.At(i)).Int64(statuses[i]).Float64(tiers[i])
		k.Add(requests, 1).Add(bytes, sizes[i]).Add(smallest, sizes[i]).Add(largest, sizes[i])
		k.AddDistinct(distinctSizes, sizes[i])
		// Only successful requests count towards the latencies, so that
		// some groups keep the min and max identities (+Inf and -Inf).
		if statuses[i] < 400 {
			k.AddFloat(total, mss[i]).AddFloat(fastest, mss[i]).AddFloat(slowest, mss[i]).AddFloat(latency, mss[i])
		}
	}
	return nil
}

func main() {}
