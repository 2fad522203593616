// Command panics is a deliberately broken plugin: it counts votes like the
// votes example but panics on poll 13. Tests use it to check how the host
// handles a guest that traps.
package main

import "github.com/wagg/wagg/sdk/go/wagg"

var (
	poll  = wagg.Int64("poll_id")
	votes = wagg.Count("votes")
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes),
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls := b.Int64s(poll)
		for i := range b.Len() {
			if polls[i] == 13 {
				panic("poll 13 is cursed")
			}
			g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1)
		}
		return nil
	})
}

func main() {}
