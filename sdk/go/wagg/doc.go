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
// Groups.Columns does the same a batch at a time, and is the faster form
// (in Wasm, about half the time per record): whole columns fill the keys,
// and one call folds a column, or a count, into a metric for every record.
// It folds exactly what At does record by record; At is for records that
// need logic of their own (a filter, a key derived from several fields):
//
//	g.Columns(b).Int64(b.Int64s(poll)).Count(votes)
//
// Metrics are counts, sums, minimums and maximums, averages (Average) and
// distinct counts (Distinct, a HyperLogLog sketch per group that the host
// merges across partitions). The SDK keeps the state per window and group,
// emits the changed groups at each flush, marks closed windows final, and
// snapshots and restores the state, so the aggregator holds no state of its
// own and replays exactly.
//
// A new build of an aggregator takes over a running deployment's state.
// When it would count on differently from what an older build left (other
// keys, units or rules), it declares a new state version in Spec.State and
// either accepts the older version as it is or migrates it: Spec.Migrate
// converts each restored group, reading the old metrics by name (a
// Distinct metric's sketch is not read or set: it carries over to the
// metric of the same name, kind and type, or starts empty):
//
//	wagg.Register(wagg.Spec{
//		...
//		State: abi.State{Version: 2, Migrates: []int{1}},
//		Migrate: func(old *wagg.OldGroup, g *wagg.NewGroup) bool {
//			secs, _ := old.Int64("secs")
//			g.Set(millis, 1000*secs)
//			return true
//		},
//	}, fold)
//
// Test a migration natively as the host runs it: keep a snapshot the older
// build took (its Local's Snapshot) and that build's schema (its Describe)
// as test data, and Restore the snapshot into a NewLocalConfig whose
// abi.Config.MigrateFrom is that schema.
//
// Build a plugin with the standard toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o votes.wasm .
//
// On the host the same code runs natively through Local, which is how
// aggregators are unit-tested and benchmarked. The package is not a place
// for I/O: a guest has no clock, network or files.
package wagg
