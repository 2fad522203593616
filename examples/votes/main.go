// Command votes is the poll-votes aggregator: votes per (poll_id, option),
// counted in every window its deployment declares (deploy.yaml: 1-second
// tumbling windows and running totals).
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o votes.wasm .
package main

import "github.com/wagg/wagg/sdk/go/wagg"

var (
	poll   = wagg.Int64("poll_id")
	option = wagg.String("option")
	votes  = wagg.Count("votes")
)

func init() {
	wagg.Register(wagg.Spec{
		Input:   wagg.Fields(poll, option),
		Keys:    wagg.Keys(wagg.Int64Key("poll_id"), wagg.StringKey("option")),
		Metrics: wagg.Metrics(votes),
	}, count)
}

func count(b *wagg.Batch, g *wagg.Groups) error {
	g.Columns(b).Int64(b.Int64s(poll)).String(b.Strings(option)).Count(votes)
	return nil
}

func main() {}
