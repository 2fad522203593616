// Command statev2compat is internal/testwasm/statev2 declaring that it
// accepts state version 1 as it is: tests use it as an upgrade the host
// restores the checkpoints of version 1 into.
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
		State:   abi.State{Version: 2, Accepts: []int{1}},
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls := b.Int64s(poll)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1)
		}
		return nil
	})
}

func main() {}
