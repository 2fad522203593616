package plugins

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const goodSpec = `
name: votes
plugin: votes@1
topic: votes
windows:
  - {name: second, kind: tumbling, size: 1s}
  - {name: total, kind: global}
`

func TestParseDeployment_AppliesTheDefaults(t *testing.T) {
	d, err := ParseDeployment([]byte(goodSpec))
	if err != nil {
		t.Fatal(err)
	}
	if d.DeadLetterTopic != "votes.dead-letters" || time.Duration(d.Lateness) != DefaultLateness ||
		time.Duration(d.MaxFuture) != DefaultMaxFuture || d.MaxPluginErrors != DefaultMaxPluginErrors || d.MaxBatch != DefaultMaxBatch {
		t.Fatalf("defaults not applied: %+v", d)
	}
}

func TestParseDeployment_NamesTheWrongField(t *testing.T) {
	cases := []struct{ extra, field string }{
		{"lateness: 48h", "lateness"},
		{"max_future: 10ms", "max_future"},
		{"max_future: -1s", "max_future"},
		{"max_plugin_errors: -3", "max_plugin_errors"},
		{"max_batch: 100000000", "max_batch"},
		{"checkpoint_every: 1ms", "checkpoint_every"},
		{"dead_letter_topic: votes", "dead_letter_topic"},
		{"idle_after: soon", "soon"},
		{"maxfuture: 1m", "maxfuture"},
	}
	for _, c := range cases {
		t.Run(c.extra, func(t *testing.T) {
			_, err := ParseDeployment([]byte(goodSpec + c.extra + "\n"))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want ErrInvalid naming %s", err, c.field)
			}
		})
	}
}

func TestDeployments_AFailureIsKeptUntilDeployedAgainOrDeleted(t *testing.T) {
	s, err := OpenDeployments(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDeployment([]byte(goodSpec))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(d); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Failed("votes"); ok {
		t.Fatal("a new deployment is failed")
	}
	at := time.Now().UTC().Truncate(time.Second)
	if err := s.SetFailed("votes", Failure{Error: "plugin trapped", At: at}); err != nil {
		t.Fatal(err)
	}
	if f, ok := s.Failed("votes"); !ok || f.Error != "plugin trapped" || !f.At.Equal(at) {
		t.Fatalf("failure: %+v %v", f, ok)
	}
	if ds, err := s.List(); err != nil || len(ds) != 1 {
		t.Fatalf("a failure file is listed as a deployment: %v %v", ds, err)
	}
	if err := s.ClearFailed("votes"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Failed("votes"); ok {
		t.Fatal("failure not cleared")
	}
	s.SetFailed("votes", Failure{Error: "again"})
	if err := s.Delete("votes"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Failed("votes"); ok {
		t.Fatal("a deleted deployment keeps its failure")
	}
}
