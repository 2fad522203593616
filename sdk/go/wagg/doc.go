// Package wagg is the Go SDK for writing wagg aggregators: WebAssembly
// plugins that the wagg host runs once per Kafka partition.
//
// An aggregator declares the typed input fields it reads (the host decodes
// them from each record's JSON), its group key columns and its metrics, and
// registers a function that folds a batch of records into groups:
//
//	var (
//		poll  = wagg.Int64("poll_id")
//		votes = wagg.Count("votes")
//	)
//
//	func init() {
//		wagg.Register(wagg.Spec{
//			Input:   wagg.Fields(poll),
//			Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
//			Metrics: wagg.Metrics(votes),
//		}, func(b *wagg.Batch, g *wagg.Groups) error {
//			polls := b.Int64s(poll)
//			for i := range b.Len() {
//				g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1)
//			}
//			return nil
//		})
//	}
//
// Metrics are counts, sums, minimums and maximums, averages (Average) and
// distinct counts (Distinct, a HyperLogLog sketch per group that the host
// merges across partitions). The SDK keeps the state per window and group,
// emits the changed groups at each flush, marks closed windows final, and
// snapshots and restores the state, so the aggregator holds no state of its
// own and replays exactly.
//
// Build a plugin with the standard toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o votes.wasm .
//
// On the host the same code runs natively through Local, which is how
// aggregators are unit-tested and benchmarked. The package is not a place
// for I/O: a guest has no clock, network or files.
package wagg
