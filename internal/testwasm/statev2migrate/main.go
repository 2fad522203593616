// Command statev2migrate counts votes per poll in tenths of a vote (each
// vote adds 10), declares state version 2 and migrates version 1, whose
// whole votes (internal/testwasm/polls, panics) it multiplies by 10 as it
// restores them: tests use it as an upgrade whose restored state is
// converted, and in which a vote lost or counted twice across the switch
// shows in the totals. Poll 0, a test poll, it no longer counts: it drops
// version 1's groups of it. Its C, Rust and AssemblyScript twins are beside
// it (sdk/conformance, vectors/migrate.json).
package main

import (
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/sdk/go/wagg"
)

var (
	poll  = wagg.Int64("poll_id")
	votes = wagg.Count("votes")
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes),
		State:   abi.State{Version: 2, Migrates: []int{1}},
		Migrate: func(old *wagg.OldGroup, g *wagg.NewGroup) bool {
			if old.Key()[0].(int64) == 0 {
				return false
			}
			n, _ := old.Int64("votes")
			g.Set(votes, 10*n)
			return true
		},
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls := b.Int64s(poll)
		for i := range b.Len() {
			if polls[i] != 0 {
				g.At(b.Time(i)).Int64(polls[i]).Add(votes, 10)
			}
		}
		return nil
	})
}

func main() {}
