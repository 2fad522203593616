// Command uniquevoters counts the unique voters (user_id) of each poll in a
// 5-minute window that slides by a minute (deploy.yaml), beside its votes.
// The voters are a distinct count: a HyperLogLog sketch per poll and
// partition that the host merges across partitions, so the topic need not
// be keyed by poll (abi/ABI.md, "Distinct counts").
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o uniquevoters.wasm .
package main

import "github.com/wagg/wagg/sdk/go/wagg"

var (
	poll   = wagg.Int64("poll_id")
	user   = wagg.String("user_id")
	votes  = wagg.Count("votes")
	voters = wagg.Distinct("voters")
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll, user),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id")),
		Metrics: wagg.Metrics(votes, voters),
	}, count)
}

func count(b *wagg.Batch, g *wagg.Groups) error {
	polls, users := b.Int64s(poll), b.Strings(user)
	for i := range b.Len() {
		g.At(b.Time(i)).Int64(polls[i]).Add(votes, 1).AddDistinctString(voters, users.At(i))
	}
	return nil
}

func main() {}
