package catalog

import (
	"encoding/json"
	"testing"
	"time"
)

const spec = `{"name":"votes","plugin":"votes@1","topic":"votes","windows":[{"name":"total","kind":"global"}]}`

func failure(gen int64) []byte {
	b, _ := json.Marshal(Failure{Revision: gen, Error: "plugin trapped", At: time.Unix(1, 0).UTC()})
	return b
}

func TestState_AFailureHoldsUntilDeployedAgainOrDeleted(t *testing.T) {
	s := newState()
	must := func(off int64, key string, v []byte) {
		t.Helper()
		if _, err := s.apply(off, key, v, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	must(3, "deployment/votes", []byte(spec))
	if e := s.entries(); len(e) != 1 || e[0].Revision != 3 || e[0].Failure != nil || e[0].Spec.Topic != "votes" {
		t.Fatalf("entries %+v", e)
	}
	must(4, "failed/votes", failure(3))
	if e := s.entries(); e[0].Failure == nil || e[0].Failure.Error != "plugin trapped" {
		t.Fatalf("failure not applied: %+v", e)
	}
	must(5, "deployment/votes", []byte(spec))
	if e := s.entries(); e[0].Revision != 5 || e[0].Failure != nil {
		t.Fatalf("deploying again keeps the failure: %+v", e)
	}
	// A failure of an older revision (a host that failed late) does not
	// stop the new one.
	must(6, "failed/votes", failure(3))
	if e := s.entries(); e[0].Failure != nil {
		t.Fatalf("a stale failure applies: %+v", e)
	}
	must(7, "failed/votes", nil)
	must(8, "deployment/votes", nil)
	if e := s.entries(); len(e) != 0 {
		t.Fatalf("tombstone kept the deployment: %+v", e)
	}
}

func TestState_PluginRecordsAreHandedOverInOrder(t *testing.T) {
	s := newState()
	p, err := s.apply(0, pluginKey("votes", "1", "abc"), []byte("\x00asm"), time.Unix(9, 0))
	if err != nil || p == nil || p.Name != "votes" || p.Version != "1" || p.SHA256 != "abc" || string(p.Wasm) != "\x00asm" {
		t.Fatalf("plugin %+v, %v", p, err)
	}
}

func TestState_RefusesRecordsItCannotRead(t *testing.T) {
	for _, c := range []struct {
		key   string
		value string
	}{
		{"plugin/votes", "x"},
		{"plugin/votes@1", "x"},
		{"deployment/votes", "{not json"},
		{"deployment/other", spec},
		{"failed/votes", "{"},
		{"something/else", "x"},
	} {
		s := newState()
		if _, err := s.apply(1, c.key, []byte(c.value), time.Time{}); err == nil {
			t.Errorf("%s = %q: applied", c.key, c.value)
		}
		if len(s.entries()) != 0 {
			t.Errorf("%s = %q: changed the state", c.key, c.value)
		}
	}
}

func FuzzStateApply(f *testing.F) {
	f.Add("deployment/votes", []byte(spec))
	f.Add("failed/votes", failure(1))
	f.Add("plugin/votes@1/abc", []byte("\x00asm"))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		s := newState()
		s.apply(0, "deployment/votes", []byte(spec), time.Time{})
		s.apply(1, key, value, time.Time{})
		for _, e := range s.entries() {
			if e.Spec.Name == "" {
				t.Fatalf("entry without a name: %+v", e)
			}
		}
	})
}
