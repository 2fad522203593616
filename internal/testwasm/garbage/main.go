// Command garbage counts votes per poll with the record-at-a-time API, and a
// batch whose first poll_id is -1 also allocates 64 MiB, a MiB at a time, each dropped by the next:
// the allocation starts a collection that nothing after it drives on, so
// tests see whether the SDK lets a guest's collections finish.
package main

import "github.com/wagg/wagg/sdk/go/wagg"

var (
	poll  = wagg.Int64("poll_id")
	votes = wagg.Count("votes")
	sink  []byte
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes),
	}, func(b *wagg.Batch, g *wagg.Groups) error {
		polls := b.Int64s(poll)
		if len(polls) > 0 && polls[0] == -1 {
			for range 64 {
				sink = make([]byte, 1<<20)
			}
			sink = nil
		}
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1)
		}
		return nil
	})
}

func main() {}
