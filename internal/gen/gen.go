// Package gen generates realistic poll votes (the input of the votes example): polls
// drawn from a Zipf distribution (a few hot polls, a long tail), several
// options per poll with uneven popularity, users spread evenly. It is the
// input of `wagg produce`, of the integration tests and of the benchmarks.
package gen

import (
	"math/rand/v2"
	"strconv"
)

// Vote is one vote as it travels through Kafka, JSON-encoded by AppendJSON.
type Vote struct {
	PollID int64  `json:"poll_id"`
	Option string `json:"option"`
	UserID string `json:"user_id"`
	TS     int64  `json:"ts"` // Unix milliseconds, also the Kafka record timestamp
}

// Options configure a Generator. Zero values take the defaults of the
// reference workload.
type Options struct {
	Seed    uint64
	Polls   int // default 10000
	Choices int // options per poll, default 8
	Users   int // default 1000000
}

// Generator yields votes. Not safe for concurrent use.
type Generator struct {
	rng     *rand.Rand
	zipf    *rand.Zipf
	choices int
	users   int
	names   []string
}

// New returns a deterministic generator for o.Seed.
func New(o Options) *Generator {
	if o.Polls <= 0 {
		o.Polls = 10000
	}
	if o.Choices <= 0 {
		o.Choices = 8
	}
	if o.Users <= 0 {
		o.Users = 1000000
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	g := &Generator{
		rng:     rng,
		zipf:    rand.NewZipf(rng, 1.1, 1, uint64(o.Polls-1)),
		choices: o.Choices,
		users:   o.Users,
	}
	for i := range o.Choices {
		g.names = append(g.names, "option-"+strconv.Itoa(i+1))
	}
	return g
}

// Next returns a vote cast at ts.
func (g *Generator) Next(ts int64) Vote {
	poll := int64(g.zipf.Uint64()) + 1
	// Earlier options are more popular: take the smaller of two draws.
	choice := min(g.rng.IntN(g.choices), g.rng.IntN(g.choices))
	return Vote{
		PollID: poll,
		Option: g.names[choice],
		UserID: "u-" + strconv.Itoa(g.rng.IntN(g.users)),
		TS:     ts,
	}
}

// AppendJSON appends the vote's JSON encoding, the bytes `wagg produce`
// writes as the record value.
func (v Vote) AppendJSON(b []byte) []byte {
	b = append(b, `{"poll_id":`...)
	b = strconv.AppendInt(b, v.PollID, 10)
	b = append(b, `,"option":`...)
	b = strconv.AppendQuote(b, v.Option)
	b = append(b, `,"user_id":`...)
	b = strconv.AppendQuote(b, v.UserID)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, v.TS, 10)
	return append(b, '}')
}

// Key identifies a (poll, option) pair in expected counts.
type Key struct {
	PollID int64
	Option string
}

// Counts tallies votes per (poll, option): the oracle that tests compare
// wagg's results with.
type Counts map[Key]int64

// Add counts v.
func (c Counts) Add(v Vote) { c[Key{v.PollID, v.Option}]++ }
