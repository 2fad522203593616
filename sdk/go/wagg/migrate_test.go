package wagg

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

// These tests register two builds of one aggregator in turn, as a
// deployment that is upgraded sees them: version 1 counts votes, seconds and
// the peak of a latency per poll; version 2 keeps the votes and the average,
// counts milliseconds instead of seconds, drops the peak, adds a low, and no
// longer counts poll 13. Register is global: each test puts back the
// package's test aggregator (example_test.go) when it ends.

var (
	mvPoll = Int64("poll_id")
	mvSecs = Int64("secs")
	mvLat  = Float64("lat")

	v1Votes = Count("votes")
	v1Secs  = Sum("secs")
	v1Lat   = Average("lat")
	v1Peak  = Max("peak")

	v2Votes  = Count("votes")
	v2Millis = Sum("millis")
	v2Lat    = Average("lat")
	v2Low    = Min("low")
)

func v1Spec() Spec {
	return Spec{
		Input:   Fields(mvPoll, mvSecs, mvLat),
		Keys:    Keys(Int64Key("poll_id")),
		Metrics: Metrics(v1Votes, v1Secs, v1Lat, v1Peak),
	}
}

func v1Func(b *Batch, g *Groups) error {
	polls, secs, lats := b.Int64s(mvPoll), b.Int64s(mvSecs), b.Float64s(mvLat)
	for i := range b.Len() {
		g.At(b.Time(i)).Int64(polls[i]).Add(v1Votes, 1).Add(v1Secs, secs[i]).AddFloat(v1Lat, lats[i]).Add(v1Peak, secs[i])
	}
	return nil
}

func v2Spec(migrate MigrateFunc) Spec {
	return Spec{
		Input:   Fields(mvPoll, mvSecs, mvLat),
		Keys:    Keys(Int64Key("poll_id")),
		Metrics: Metrics(v2Votes, v2Millis, v2Lat, v2Low),
		State:   abi.State{Version: 2, Migrates: []int{1}},
		Migrate: migrate,
	}
}

func v2Func(b *Batch, g *Groups) error {
	polls, secs, lats := b.Int64s(mvPoll), b.Int64s(mvSecs), b.Float64s(mvLat)
	for i := range b.Len() {
		if polls[i] == 13 {
			continue
		}
		g.At(b.Time(i)).Int64(polls[i]).Add(v2Votes, 1).Add(v2Millis, 1000*secs[i]).AddFloat(v2Lat, lats[i]).Add(v2Low, secs[i])
	}
	return nil
}

// v1ToV2 converts seconds to milliseconds and drops poll 13; votes and lat
// carry over by name, low starts empty.
func v1ToV2(old *OldGroup, g *NewGroup) bool {
	if old.Key()[0].(int64) == 13 {
		return false
	}
	secs, _ := old.Int64("secs")
	g.Set(v2Millis, 1000*secs)
	return true
}

// register installs spec for the rest of the test.
func register(t testing.TB, s Spec, fn Func) {
	t.Helper()
	saved := registered
	t.Cleanup(func() { registered = saved })
	Register(s, fn)
}

type mvRecord struct {
	ts, poll, secs int64
	lat            float64
}

func mvBatch(rs ...mvRecord) *abi.Batch {
	b := &abi.Batch{Times: []int64{}, Columns: []abi.BatchColumn{{Ints: []int64{}}, {Ints: []int64{}}, {Floats: []float64{}}}}
	for _, r := range rs {
		b.Times = append(b.Times, r.ts)
		b.Columns[0].Ints = append(b.Columns[0].Ints, r.poll)
		b.Columns[1].Ints = append(b.Columns[1].Ints, r.secs)
		b.Columns[2].Floats = append(b.Columns[2].Floats, r.lat)
	}
	return b
}

// mvRecords are n records over polls 11 to 14 and two seconds from ts.
func mvRecords(n int, ts int64) []mvRecord {
	var out []mvRecord
	for i := range n {
		out = append(out, mvRecord{ts: ts + int64(i/4%2)*1000, poll: int64(11 + i%4), secs: int64(i%7 + 1), lat: float64(i%5) + 0.5})
	}
	return out
}

// mvWant is what version 2 shows per "window start poll" after the records
// of version 1 (old) and version 2 (new): its metrics as printed by mvShow.
func mvWant(ws []abi.Window, old, new []mvRecord) map[string]string {
	type acc struct {
		votes, millis, lcount int64
		lsum                  float64
		low                   int64
	}
	m := map[string]*acc{}
	add := func(r mvRecord, v2 bool) {
		if r.poll == 13 {
			return
		}
		for _, win := range ws {
			for _, s := range win.Starts(r.ts, nil) {
				k := fmt.Sprintf("%s %d %d", win.Name, s, r.poll)
				a := m[k]
				if a == nil {
					a = &acc{low: math.MaxInt64}
					m[k] = a
				}
				a.votes++
				a.millis += 1000 * r.secs
				a.lsum += r.lat
				a.lcount++
				if v2 {
					a.low = min(a.low, r.secs)
				}
			}
		}
	}
	for _, r := range old {
		add(r, false)
	}
	for _, r := range new {
		add(r, true)
	}
	out := map[string]string{}
	for k, a := range m {
		out[k] = fmt.Sprintf("votes=%d millis=%d lat=%g/%d low=%d", a.votes, a.millis, a.lsum, a.lcount, a.low)
	}
	return out
}

// mvShow is the open rows of a version 2 flush by "window start poll".
func mvShow(t *testing.T, l *Local, ws []abi.Window, wm int64) map[string]string {
	t.Helper()
	rows, err := l.Flush(wm)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows {
		k, err := registered.schema.KeyValues(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		v := r.Metrics
		out[fmt.Sprintf("%s %d %d", ws[r.Window].Name, r.Start, k[0])] = fmt.Sprintf("votes=%d millis=%d lat=%g/%d low=%d",
			int64(v[0]), int64(v[1]), math.Float64frombits(v[2]), int64(v[3]), int64(v[4]))
	}
	return out
}

// v1Snapshot is the state version 1 leaves after records, and its schema.
func v1Snapshot(t testing.TB, ws []abi.Window, records []mvRecord) ([]byte, abi.Schema) {
	t.Helper()
	register(t, v1Spec(), v1Func)
	l, err := NewLocal(ws...)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Process(mvBatch(records...)); err != nil {
		t.Fatal(err)
	}
	s, _ := Describe()
	return l.Snapshot(), s
}

func TestMigrate_ConvertsAnOlderStateAndCountsOnFromIt(t *testing.T) {
	ws := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	old := mvRecords(40, 5000)
	snap, v1 := v1Snapshot(t, ws, old)

	var seen []string
	register(t, v2Spec(func(o *OldGroup, g *NewGroup) bool {
		seen = append(seen, fmt.Sprintf("v%d %s %d %v %d", o.Version(), o.Window().Name, o.Start(), o.Key(), len(o.Metrics())))
		return v1ToV2(o, g)
	}), v2Func)
	l, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(snap); err != nil {
		t.Fatal(err)
	}
	// Every group of version 1 went through Migrate once, with what
	// version 1 wrote: 4 polls in 2 seconds, and 4 in the total, each with
	// version 1's 5 metric columns.
	if len(seen) != 12 || seen[0] != "v1 second 5000 [11] 5" || seen[8] != "v1 total 0 [11] 5" {
		t.Fatalf("Migrate saw %q", seen)
	}
	if got, want := mvShow(t, l, ws, 0), mvWant(ws, old, nil); !reflect.DeepEqual(got, want) {
		t.Fatalf("migrated state:\n%v\nwant\n%v", got, want)
	}
	// Version 2 counts on from the migrated state as if it had counted
	// everything itself (in its own units).
	more := mvRecords(25, 5000)
	if err := l.Process(mvBatch(more...)); err != nil {
		t.Fatal(err)
	}
	want := mvWant(ws, old, more)
	if got := mvShow(t, l, ws, 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("after more records:\n%v\nwant\n%v", got, want)
	}
	// The migrated state is version 2's own: its snapshot restores as it is,
	// and the same snapshot migrates the same way again (the host restores
	// it again after a fault).
	mid := l.Snapshot()
	again, err := NewLocal(ws...)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Restore(mid); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Snapshot(), mid) {
		t.Fatal("version 2's snapshot of the migrated state does not restore as it is")
	}
	a, _ := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
	b, _ := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
	if a.Restore(snap) != nil || b.Restore(snap) != nil || !bytes.Equal(a.Snapshot(), b.Snapshot()) {
		t.Fatal("one snapshot migrates differently twice")
	}
}

func TestMigrate_DropsGroupsAndEmptyPanes(t *testing.T) {
	ws := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}}
	snap, v1 := v1Snapshot(t, ws, []mvRecord{{ts: 1000, poll: 13, secs: 1}, {ts: 2000, poll: 13, secs: 2}, {ts: 2000, poll: 12, secs: 3}})
	register(t, v2Spec(v1ToV2), v2Func)
	l, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(snap); err != nil {
		t.Fatal(err)
	}
	got := mvShow(t, l, ws, 0)
	if want := map[string]string{"second 2000 12": "votes=1 millis=3000 lat=0/1 low=9223372036854775807"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after dropping poll 13: %v, want %v", got, want)
	}
	// The pane at 1000 held only poll 13: it is gone, not kept empty.
	if n := len(l.e.groups.panes[0]); n != 1 {
		t.Fatalf("%d panes after the migration, want 1", n)
	}
}

func TestMigrate_RefusesWhatItCannotConvert(t *testing.T) {
	ws := []abi.Window{{Name: "total", Kind: abi.Global}}
	snap, v1 := v1Snapshot(t, ws, mvRecords(8, 0))

	t.Run("a version it does not migrate", func(t *testing.T) {
		s := v2Spec(v1ToV2)
		s.State = abi.State{Version: 3, Migrates: []int{2}}
		register(t, s, v2Func)
		_, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
		if err == nil || !strings.Contains(err.Error(), "state version 1, which this build (state version 3) does not migrate") {
			t.Fatalf("migrating an unlisted version: %v", err)
		}
	})
	t.Run("other key types", func(t *testing.T) {
		register(t, v2Spec(v1ToV2), v2Func)
		other := v1
		other.Keys = Keys(StringKey("poll_id"))
		_, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &other})
		if err == nil || !strings.Contains(err.Error(), "a migration keeps the key's column types") {
			t.Fatalf("migrating to other key types: %v", err)
		}
	})
	for _, c := range []struct {
		name    string
		migrate MigrateFunc
		want    string
	}{
		{"misuse", func(o *OldGroup, g *NewGroup) bool { g.SetFloat(v2Millis, 1); return true }, "metric millis is int64, NewGroup.SetFloat does not set it"},
		{"an Average set as a float", func(o *OldGroup, g *NewGroup) bool { g.SetFloat(v2Lat, 1); return true }, "metric lat_sum is an Average, NewGroup.SetFloat does not set it"},
		{"another build's metric", func(o *OldGroup, g *NewGroup) bool { g.Set(v1Peak, 1); return true }, "metric peak is not one of the registered spec's Metrics"},
		{"a panic", func(o *OldGroup, g *NewGroup) bool { panic("no") }, "panicked: no"},
	} {
		t.Run(c.name, func(t *testing.T) {
			register(t, v2Spec(c.migrate), v2Func)
			l, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
			if err != nil {
				t.Fatal(err)
			}
			err = l.Restore(snap)
			if !errors.Is(err, errMigrate) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("restore: %v, want %q", err, c.want)
			}
			if rows, _ := l.Flush(math.MaxInt64); len(rows) != 0 {
				t.Fatalf("a failed migration left %d groups", len(rows))
			}
		})
	}
}

func TestMigrate_OldValuesAreReadByNameAndType(t *testing.T) {
	ws := []abi.Window{{Name: "total", Kind: abi.Global}}
	snap, v1 := v1Snapshot(t, ws, []mvRecord{{poll: 1, secs: 4, lat: 1.5}, {poll: 1, secs: 6, lat: 2}})
	var got []any
	register(t, v2Spec(func(o *OldGroup, g *NewGroup) bool {
		secs, ok1 := o.Int64("secs")
		sum, ok2 := o.Float64("lat_sum")
		n, ok3 := o.Int64("lat_count")
		_, ok4 := o.Float64("secs")  // an int64
		_, ok5 := o.Int64("millis")  // not in version 1
		_, ok6 := o.Int64("lat_sum") // a float64
		got = []any{secs, ok1, sum, ok2, n, ok3, ok4, ok5, ok6}
		g.SetAverage(v2Lat, 2*sum, 2*n)
		return true
	}), v2Func)
	l, _ := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
	if err := l.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if want := []any{int64(10), true, 3.5, true, int64(2), true, false, false, false}; !reflect.DeepEqual(got, want) {
		t.Fatalf("old values %v, want %v", got, want)
	}
	// millis was not set: a metric new in version 2 starts from nothing.
	if got, want := mvShow(t, l, ws, 0), map[string]string{"total 0 1": "votes=2 millis=0 lat=7/4 low=9223372036854775807"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}

func TestRegister_MigrateAndStateMigratesGoTogether(t *testing.T) {
	for _, s := range []Spec{v2Spec(nil), func() Spec { s := v2Spec(v1ToV2); s.State.Migrates = nil; return s }()} {
		func() {
			saved := registered
			defer func() {
				registered = saved
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Spec.Migrate and Spec.State.Migrates go together") {
					t.Errorf("Register(Migrate set %v, Migrates %v): panic %v", s.Migrate != nil, s.State.Migrates, r)
				}
			}()
			Register(s, v2Func)
		}()
	}
}

// A snapshot to migrate is as untrusted as any: read through an older
// build's schema and converted, it either restores or is refused leaving
// nothing behind, and what it restores is the new build's own state.
func FuzzMigrateRestore(f *testing.F) {
	ws := []abi.Window{{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}, {Name: "total", Kind: abi.Global}}
	snap, v1 := v1Snapshot(f, ws, mvRecords(20, 3000))
	empty, _ := v1Snapshot(f, ws, nil)
	f.Add(snap)
	f.Add(empty)
	register(f, v2Spec(v1ToV2), v2Func)
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: ws, MigrateFrom: &v1})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Restore(data); err != nil {
			if rows, _ := l.Flush(math.MaxInt64); len(rows) != 0 {
				t.Fatal("a failed Restore left state behind")
			}
			return
		}
		own, _ := NewLocal(ws...)
		if err := own.Restore(l.Snapshot()); err != nil {
			t.Fatalf("the migrated state does not restore as version 2's own: %v", err)
		}
	})
}

// A migration walks an old snapshot's sketches; the hook sees none of them
// as a value and sets none; a distinct metric of the same name, kind and
// type carries its sketch over as it was, another starts empty.
func TestMigrate_DistinctSketchesCarryOverOrStartEmpty(t *testing.T) {
	var vs []userVote
	for u := range 3000 {
		vs = append(vs, userVote{int64(u * 50), int64(u % 3), u % 1200})
	}
	register(t, dSpec, distinctFold)
	old, err := NewLocal(fiveMinutes)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Process(userBatch(vs)); err != nil {
		t.Fatal(err)
	}
	snap := old.Snapshot()
	v1, _ := Describe()
	oldRows, err := old.Flush(0)
	if err != nil || len(oldRows) == 0 {
		t.Fatalf("version 1 flushed %d rows, %v", len(oldRows), err)
	}

	tally, voters, fresh := Count("tally"), Distinct("voters"), Distinct("fresh")
	v2 := func(migrate MigrateFunc) Spec {
		return Spec{Input: Fields(dPoll, dUser), Keys: Keys(Int64Key("poll_id")), Metrics: Metrics(tally, voters, fresh),
			State: abi.State{Version: 2, Migrates: []int{1}}, Migrate: migrate}
	}
	fold := func(b *Batch, g *Groups) error {
		polls, users := b.Int64s(dPoll), b.Strings(dUser)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(polls[i]).Add(tally, 1).AddDistinctString(voters, users.At(i)).AddDistinct(fresh, polls[i])
		}
		return nil
	}
	sawSketch := false
	register(t, v2(func(o *OldGroup, g *NewGroup) bool {
		if _, ok := o.Int64("voters"); ok {
			sawSketch = true
		}
		n, _ := o.Int64("votes")
		g.Set(tally, n)
		return true
	}), fold)
	l, err := NewLocalConfig(abi.Config{ABI: abi.Version, Windows: []abi.Window{fiveMinutes}, MigrateFrom: &v1})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if sawSketch {
		t.Error("OldGroup.Int64 read the old distinct metric voters as a value")
	}
	rows, err := l.Flush(0)
	if err != nil || len(rows) != len(oldRows) {
		t.Fatalf("migrated %d rows of %d, %v", len(rows), len(oldRows), err)
	}
	byPane := func(r abi.Row) string { return fmt.Sprintf("%d %d %q", r.Window, r.Start, r.Key) }
	want := map[string]abi.Row{}
	for _, r := range oldRows {
		want[byPane(r)] = r
	}
	for _, r := range rows {
		o, ok := want[byPane(r)]
		if !ok {
			t.Fatalf("row %s was not in version 1", byPane(r))
		}
		if r.Metrics[0] != o.Metrics[0] || r.Metrics[1] != o.Metrics[1] ||
			!bytes.Equal(r.Sketches[1].AppendEncoded(nil), o.Sketches[1].AppendEncoded(nil)) {
			t.Errorf("%s: tally %d voters %d, version 1 had votes %d voters %d (or other registers)", byPane(r), r.Metrics[0], r.Metrics[1], o.Metrics[0], o.Metrics[1])
		}
		if r.Metrics[2] != 0 || len(r.Sketches[2].AppendEncoded(nil)) != 4 {
			t.Errorf("%s: the new distinct metric fresh starts at %d, not empty", byPane(r), r.Metrics[2])
		}
	}
	// Counting on: the voters are all in the carried sketches already.
	if err := l.Process(userBatch(vs)); err != nil {
		t.Fatal(err)
	}
	again, _ := l.Flush(0)
	for _, r := range again {
		if o := want[byPane(r)]; r.Metrics[1] != o.Metrics[1] || r.Metrics[0] != 2*o.Metrics[0] || r.Metrics[2] != 1 {
			t.Errorf("%s after the same votes again: tally %d voters %d fresh %d, want %d %d 1", byPane(r), r.Metrics[0], r.Metrics[1], r.Metrics[2], 2*o.Metrics[0], o.Metrics[1])
		}
	}

	register(t, v2(func(o *OldGroup, g *NewGroup) bool {
		g.Set(voters, 1)
		return true
	}), fold)
	l, err = NewLocalConfig(abi.Config{ABI: abi.Version, Windows: []abi.Window{fiveMinutes}, MigrateFrom: &v1})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Restore(snap); !errors.Is(err, errMigrate) || !strings.Contains(err.Error(), "distinct") {
		t.Fatalf("setting a distinct metric: %v, want a failed migration naming it", err)
	}
	if rows, _ := l.Flush(0); len(rows) != 0 {
		t.Fatal("a failed migration left state behind")
	}
}
