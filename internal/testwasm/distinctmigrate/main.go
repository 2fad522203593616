// Command distinctmigrate counts votes, unique voters and unique choices
// per poll, declares state version 2 and migrates version 1 (votes per
// poll as ballots, and the distinct counts voters and regions): its voters
// sketch, of the same name, kind and type, carries over as it was; regions
// is gone and choices starts empty; votes are version 1's ballots; poll 0's
// groups are dropped. A migration that could read a distinct metric as a
// value would set votes to -1. Its C, Rust and AssemblyScript twins are
// beside it (sdk/conformance, vectors/migrate-distinct.json).
package main

import (
	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/sdk/go/wagg"
)

var (
	poll    = wagg.Int64("poll_id")
	user    = wagg.String("user_id")
	choice  = wagg.Int64("choice")
	votes   = wagg.Count("votes")
	voters  = wagg.Distinct("voters")
	choices = wagg.Distinct("choices")
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll, user, choice),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes, voters, choices),
		State:   abi.State{Version: 2, Migrates: []int{1}},
		Migrate: func(old *wagg.OldGroup, g *wagg.NewGroup) bool {
			if old.Key()[0].(int64) == 0 {
				return false
			}
			if _, ok := old.Int64("voters"); ok {
				g.Set(votes, -1)
				return true
			}
			n, _ := old.Int64("ballots")
			g.Set(votes, n)
			return true
		},
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls, users, cs := b.Int64s(poll), b.Strings(user), b.Int64s(choice)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1).AddDistinctString(voters, users.At(i)).AddDistinct(choices, cs[i])
		}
		return nil
	})
}

func main() {}
