// Command spins is a deliberately broken plugin: it counts votes like the
// votes example but loops for ever on poll 13. Tests use it to check that a
// guest stuck in a loop is interrupted and stops nothing else.
package main

import "github.com/wagg/wagg/sdk/go/wagg"

var (
	poll  = wagg.Int64("poll_id")
	votes = wagg.Count("votes")
)

// spun keeps the loop's work observable, so no compiler can drop it.
var spun uint64

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes),
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls := b.Int64s(poll)
		for i := range b.Len() {
			for polls[i] == 13 {
				spun++
			}
			g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1)
		}
		return nil
	})
}

func main() {}
