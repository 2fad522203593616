package source

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestDeadLetter_KeepsTheRecordAndSaysWhereItCameFrom(t *testing.T) {
	rec := &kgo.Record{Topic: "votes", Partition: 3, Offset: 42, Key: []byte("k"), Value: []byte("{bad"), Timestamp: time.UnixMilli(7),
		Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t1")}, {Key: "wagg.reason", Value: []byte("spoofed")}}}
	dl := DeadLetter("votes.dead-letters", "tally", rec, "malformed", strings.Repeat("x", 2*MaxDeadLetterMessage))
	if dl.Topic != "votes.dead-letters" || string(dl.Key) != "k" || string(dl.Value) != "{bad" || !dl.Timestamp.Equal(rec.Timestamp) {
		t.Fatalf("dead letter %+v does not carry the record", dl)
	}
	want := map[string]string{
		"trace":       "t1", // the record's own, but those named like wagg's
		"wagg.reason": "malformed", "wagg.deployment": "tally", "wagg.topic": "votes",
		"wagg.partition": "3", "wagg.offset": "42", "wagg.error": strings.Repeat("x", MaxDeadLetterMessage),
	}
	got := map[string]string{}
	for _, h := range dl.Headers {
		if _, twice := got[h.Key]; twice {
			t.Errorf("header %s twice", h.Key)
		}
		got[h.Key] = string(h.Value)
	}
	if len(got) != len(want) {
		t.Errorf("headers %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %.40q, want %.40q", k, got[k], v)
		}
	}
	// Kafka refusing it whole: what is left says why and where the record is.
	s := Stripped(dl, kerr.MessageTooLarge)
	if s.Key != nil || s.Value != nil || s.Timestamp.Equal(rec.Timestamp) || len(s.Headers) != len(want) ||
		!strings.Contains(string(s.Headers[len(s.Headers)-1].Value), "value (4 bytes)") {
		t.Fatalf("stripped dead letter %+v", s)
	}
	for _, h := range s.Headers {
		if !strings.HasPrefix(h.Key, "wagg.") {
			t.Fatalf("stripped dead letter keeps header %s", h.Key)
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
