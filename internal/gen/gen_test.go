package gen

import (
	"encoding/json"
	"testing"
)

func TestVote_AppendJSONIsValidJSON(t *testing.T) {
	g := New(Options{Seed: 1})
	for i := range 1000 {
		v := g.Next(int64(1_764_000_000_000 + i))
		var back Vote
		if err := json.Unmarshal(v.AppendJSON(nil), &back); err != nil {
			t.Fatalf("vote %d: %v", i, err)
		}
		if back != v {
			t.Fatalf("round trip: got %+v, want %+v", back, v)
		}
	}
}

func TestGenerator_SameSeedSameVotes(t *testing.T) {
	a, b := New(Options{Seed: 7}), New(Options{Seed: 7})
	for range 100 {
		if va, vb := a.Next(1), b.Next(1); va != vb {
			t.Fatalf("%+v != %+v", va, vb)
		}
	}
}

func TestGenerator_ZipfSkewsPolls(t *testing.T) {
	g := New(Options{Seed: 3, Polls: 1000})
	c := Counts{}
	perPoll := map[int64]int{}
	for range 100000 {
		v := g.Next(0)
		c.Add(v)
		perPoll[v.PollID]++
		if v.PollID < 1 || v.PollID > 1000 {
			t.Fatalf("poll %d out of range", v.PollID)
		}
	}
	if perPoll[1] < 10*perPoll[500] {
		t.Errorf("poll 1 has %d votes, poll 500 %d: want a Zipf skew", perPoll[1], perPoll[500])
	}
	if len(perPoll) < 300 {
		t.Errorf("only %d distinct polls: want a long tail", len(perPoll))
	}
}
