package catalog

import (
	"encoding/json"
	"fmt"
	"strings"
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

func backfill(replaces int64, plugin string) []byte {
	b, _ := json.Marshal(map[string]any{"replaces": replaces, "from": "earliest", "offsets": map[int32]int64{0: 0, 1: 0},
		"spec": json.RawMessage(strings.Replace(spec, "votes@1", plugin, 1))})
	return b
}

func stage(backfill int64) []byte { return []byte(fmt.Sprintf(`{"backfill":%d}`, backfill)) }

func TestState_ABackfillMovesThroughItsStagesAndStaleRecordsChangeNothing(t *testing.T) {
	s := newState()
	must := func(off int64, key string, v []byte) {
		t.Helper()
		if _, err := s.apply(off, key, v, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	get := func() Entry {
		t.Helper()
		e := s.entries()
		if len(e) != 1 {
			t.Fatalf("entries %+v", e)
		}
		return e[0]
	}
	must(3, "deployment/votes", []byte(spec))
	must(5, "backfill/votes", backfill(3, "votes@2"))
	e := get()
	if e.Backfill == nil || e.Backfill.Spec.Generation != 5 || e.Backfill.Stage != StageCatchingUp || e.Backfill.Offsets[1] != 0 ||
		e.Current().Plugin != "votes@1" || e.Current().Generation != 0 {
		t.Fatalf("a backfill recorded: %+v %+v", e, e.Backfill)
	}
	must(6, "stopping/votes", stage(4)) // about another backfill
	if get().Backfill.Stage != StageCatchingUp {
		t.Fatal("a stage record of another backfill applies")
	}
	must(7, "stopping/votes", stage(5))
	must(8, "stopping/votes", stage(5)) // a second host, racing
	if e := get(); e.Backfill.Stage != StageStopping || e.Current().Generation != 0 {
		t.Fatalf("stopping: %+v", e.Backfill)
	}
	must(9, "switched/votes", stage(5))
	if e := get(); e.Backfill.Stage != StageSwitched || e.Current().Generation != 5 || e.Current().Plugin != "votes@2" {
		t.Fatalf("switched: %+v, current %+v", e.Backfill, e.Current())
	}
	must(10, "stopping/votes", stage(5)) // a host that lagged
	if get().Backfill.Stage != StageSwitched {
		t.Fatal("a late stopping record took the switch back")
	}
	// A failure of the generation switched from (it failed, which is why
	// it was started fresh) does not stop the one switched to.
	must(10, "failed/votes", []byte(`{"revision":3,"generation":0,"error":"plugin trapped"}`))
	if e := get(); e.Failure != nil {
		t.Fatalf("the old generation's failure stops the new one: %+v", e.Failure)
	}
	must(10, "failed/votes", []byte(`{"revision":3,"generation":5,"error":"plugin trapped"}`))
	if e := get(); e.Failure == nil {
		t.Fatal("the new generation's failure does not apply")
	}
	must(10, "failed/votes", nil)
	// A deploy written by a host that had not seen the switch goes on
	// with the generation switched to; it gives up nothing more.
	must(11, "deployment/votes", []byte(spec))
	if e := get(); e.Backfill != nil || e.Current().Generation != 5 {
		t.Fatalf("a deploy after the switch: %+v gen %d", e.Backfill, e.Current().Generation)
	}
	// A backfill of an older revision (a deploy came between) and one
	// given up do not apply.
	must(12, "backfill/votes", backfill(3, "votes@2"))
	if get().Backfill != nil {
		t.Fatal("a backfill of an older revision applies")
	}
	must(13, "backfill/votes", backfill(11, "votes@2"))
	if get().Backfill == nil {
		t.Fatal("a backfill of the current revision does not apply")
	}
	must(14, "givenup/votes", stage(13))
	if e := get(); e.Backfill != nil || e.Current().Generation != 5 {
		t.Fatalf("a backfill given up: %+v", e)
	}
	must(15, "deployment/votes", nil)
	if len(s.entries()) != 0 {
		t.Fatal("undeployed")
	}
}

func TestState_AFreshStartOfANewNameCarriesItsStartOffsets(t *testing.T) {
	s := newState()
	v := strings.TrimSuffix(spec, "}") + `,"start_offsets":{"0":15,"1":7}}`
	if _, err := s.apply(1, "deployment/votes", []byte(v), time.Time{}); err != nil {
		t.Fatal(err)
	}
	e := s.entries()
	if len(e) != 1 || e[0].Spec.Topic != "votes" || len(e[0].Start) != 2 || e[0].Start[0] != 15 || e[0].Start[1] != 7 {
		t.Fatalf("entries %+v", e)
	}
	if _, err := s.apply(2, "deployment/votes", []byte(spec), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if e := s.entries(); e[0].Start != nil {
		t.Fatalf("a later deploy keeps the start offsets: %+v", e[0])
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
		{"backfill/votes", "{"},
		{"backfill/votes", `{"replaces":1,"from":"yesterday","spec":` + spec + `}`},
		{"backfill/other", `{"replaces":1,"from":"earliest","spec":` + spec + `}`},
		{"backfill/votes", `{"replaces":1,"from":"earliest","spec":{"name":"votes"}}`},
		{"switched/votes", "x"},
		{"deployment/votes", strings.TrimSuffix(spec, "}") + `,"start_offsets":{"x":1}}`},
		{"deployment/votes", strings.TrimSuffix(spec, "}") + `,"start_offsetz":{}}`},
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
	f.Add("backfill/votes", backfill(0, "votes@2"))
	f.Add("switched/votes", stage(1))
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
