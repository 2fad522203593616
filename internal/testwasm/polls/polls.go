// Package polls is the aggregator of the test plugins that count votes per
// poll_id, as internal/testwasm/panics does without its curse; each main
// package registers it with the state version it declares.
package polls

import (
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/sdk/go/wagg"
)

var (
	poll  = wagg.Int64("poll_id")
	votes = wagg.Count("votes")
)

// Register installs the aggregator declaring state.
func Register(state abi.State) {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes),
		State:   state,
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls := b.Int64s(poll)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1)
		}
		return nil
	})
}
