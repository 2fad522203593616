package source

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestDeadLetter_KeepsTheRecordAndSaysWhereItCameFrom(t *testing.T) {
	rec := &kgo.Record{Topic: "votes", Partition: 3, Offset: 42, Key: []byte("k"), Value: []byte("{bad"), Timestamp: time.UnixMilli(7)}
	dl := DeadLetter("votes.dead-letters", "tally", rec, "malformed", strings.Repeat("x", 2*MaxDeadLetterMessage))
	if dl.Topic != "votes.dead-letters" || string(dl.Key) != "k" || string(dl.Value) != "{bad" || !dl.Timestamp.Equal(rec.Timestamp) {
		t.Fatalf("dead letter %+v does not carry the record", dl)
	}
	want := map[string]string{
		"wagg.reason": "malformed", "wagg.deployment": "tally", "wagg.topic": "votes",
		"wagg.partition": "3", "wagg.offset": "42", "wagg.error": strings.Repeat("x", MaxDeadLetterMessage),
	}
	got := map[string]string{}
	for _, h := range dl.Headers {
		got[h.Key] = string(h.Value)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %.40q, want %.40q", k, got[k], v)
		}
	}
}

func TestGroup_CommitsOnlyTheLatestCheckpointOfEachPartitionOnce(t *testing.T) {
	g := &Group{o: Options{Topic: "votes"}, commits: map[int32]int64{}}
	if g.pending() != nil {
		t.Fatal("offsets to commit before any checkpoint")
	}
	g.Checkpointed(0, 10)
	g.Checkpointed(0, 20)
	g.Checkpointed(5, 7)
	offs := g.pending()
	if len(offs["votes"]) != 2 || offs["votes"][0].Offset != 20 || offs["votes"][5].Offset != 7 {
		t.Fatalf("pending %v, want partition 0 at 20 and 5 at 7", offs)
	}
	if g.pending() != nil {
		t.Fatal("the same offsets are committed twice")
	}
}
