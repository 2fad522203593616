package wagg_test

import (
	"fmt"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/sdk/go/wagg"
)

// The aggregator of this package's tests: votes per poll and option.
// Register is global, so this is the only registration.
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
	polls, options := b.Int64s(poll), b.Strings(option)
	for i := range b.Len() {
		g.At(b.Time(i)).Int64(polls[i]).String(options.At(i)).Add(votes, 1)
	}
	return nil
}

func Example() {
	windows := []abi.Window{
		{Name: "second", Kind: abi.Tumbling, SizeMs: 1000},
		{Name: "total", Kind: abi.Global},
	}
	l, err := wagg.NewLocal(windows...)
	if err != nil {
		panic(err)
	}
	// Three votes on poll 7: two in second [0, 1000), one in [1000, 2000).
	err = l.Process(&abi.Batch{
		Times: []int64{100, 200, 1100},
		Columns: []abi.BatchColumn{
			{Ints: []int64{7, 7, 7}},
			{Offsets: []uint32{0, 3, 5, 8}, Data: []byte("yesnoyes")},
		},
	})
	if err != nil {
		panic(err)
	}
	// The watermark 1000 closes the first second: its rows are final.
	rows, err := l.Flush(1000)
	if err != nil {
		panic(err)
	}
	schema, _ := wagg.Describe()
	for _, r := range rows {
		key, _ := schema.KeyValues(r.Key)
		fmt.Println(windows[r.Window].Name, r.Start, key, "votes", r.Metrics[0], "final", r.Final)
	}
	// Output:
	// second 0 [7 yes] votes 1 final true
	// second 0 [7 no] votes 1 final true
	// second 1000 [7 yes] votes 1 final false
	// total 0 [7 yes] votes 2 final false
	// total 0 [7 no] votes 1 final false
}
