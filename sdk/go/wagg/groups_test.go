package wagg

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

// These tests drive the Key builder through Local.Process with aggregators
// of their own. They build the engine by hand instead of calling Register,
// which is global and holds the package's one test aggregator
// (example_test.go).

var (
	inPoll  = Int64("poll_id")
	inName  = String("name")
	inValue = Float64("value")
	mCount  = Count("n")
	mSum    = Sum("total")
	mSumF   = SumFloat("ftotal")
	mMin    = Min("lo")
	mMax    = Max("hi")
	mMinF   = Min("flo").Float()
	mMaxF   = Max("fhi").Float()
	spec    = Spec{
		Input:   Fields(inPoll, inName, inValue),
		Keys:    Keys(Int64Key("poll_id"), StringKey("name")),
		Metrics: Metrics(mCount, mSum, mSumF, mMin, mMax, mMinF, mMaxF),
	}
)

// localWith runs fn over spec the way Register and NewLocal would.
func localWith(t *testing.T, fn Func, windows ...abi.Window) *Local {
	t.Helper()
	return localSpec(t, spec, fn, windows...)
}

var tumbling = abi.Window{Name: "w", Kind: abi.Tumbling, SizeMs: 1000}

// batch3 is three records of poll 1, names a, a, b, values 2.5, -1, 4.
func batch3() *abi.Batch {
	return &abi.Batch{
		Times: []int64{10, 20, 30},
		Columns: []abi.BatchColumn{
			{Ints: []int64{1, 1, 1}},
			{Offsets: []uint32{0, 1, 2, 3}, Data: []byte("aab")},
			{Floats: []float64{2.5, -1, 4}},
		},
	}
}

func TestKey_MisuseIsAnErrorFromProcess(t *testing.T) {
	for _, c := range []struct {
		name string
		fold func(b *Batch, g *Groups, i int)
		want string
	}{
		{"wrong type", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).String(b.Strings(inName).At(i)).Int64(1).Add(mCount, 1)
		}, `key column 0 "poll_id" is declared int64, but Key.String filled it`},
		{"float for int", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Float64(1).String(nil).Add(mCount, 1)
		}, `key column 0 "poll_id" is declared int64, but Key.Float64 filled it`},
		{"too few columns", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).Add(mCount, 1)
		}, `Add before key column 1 "name" was filled (1 of 2 key columns filled)`},
		{"no columns", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Add(mCount, 1)
		}, `Add before key column 0 "poll_id" was filled (0 of 2`},
		{"too many columns", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).String(nil).Int64(2).Add(mCount, 1)
		}, "Key.Int64 fills key column 2, but the spec declares 2 key columns"},
		{"column after Add", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).String(nil).Add(mCount, 1).String(nil)
		}, "Key.String after Add: fill every key column first"},
		{"float metric with Add", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).String(nil).Add(mSumF, 1)
		}, "metric ftotal is float64, use AddFloat"},
		{"int metric with AddFloat", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).String(nil).AddFloat(mMax, 1)
		}, "metric hi is int64, use Add"},
		{"metric of another spec", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).String(nil).Add(Count("n"), 1)
		}, "metric n is not one of the registered spec's Metrics"},
		{"nil metric", func(b *Batch, g *Groups, i int) {
			g.At(b.Time(i)).Int64(1).String(nil).Add(nil, 1)
		}, "metric <nil> is not one of"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Misuse on the first record only: later good records must not
			// hide the error.
			l := localWith(t, func(b *Batch, g *Groups) error {
				for i := range b.Len() {
					if i == 0 {
						c.fold(b, g, i)
						continue
					}
					g.At(b.Time(i)).Int64(1).String([]byte("ok")).Add(mCount, 1)
				}
				return nil
			}, tumbling)
			err := l.Process(batch3())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Process: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestKey_ErrorsAreClearedBetweenBatches(t *testing.T) {
	bad := true
	l := localWith(t, func(b *Batch, g *Groups) error {
		for i := range b.Len() {
			k := g.At(b.Time(i)).Int64(1)
			if !bad {
				k.String(nil)
			}
			k.Add(mCount, 1)
		}
		return nil
	}, tumbling)
	if err := l.Process(batch3()); err == nil {
		t.Fatal("misuse not reported")
	}
	bad = false
	if err := l.Process(batch3()); err != nil {
		t.Fatalf("a good batch after a bad one: %v", err)
	}
}

func TestProcess_ReturnsTheAggregatorsError(t *testing.T) {
	boom := errors.New("boom")
	l := localWith(t, func(*Batch, *Groups) error { return boom }, tumbling)
	if err := l.Process(batch3()); err != boom {
		t.Fatalf("Process: %v, want the aggregator's error as is", err)
	}
}

func TestKey_MetricsFoldByKind(t *testing.T) {
	l := localWith(t, func(b *Batch, g *Groups) error {
		polls, names, vals := b.Int64s(inPoll), b.Strings(inName), b.Float64s(inValue)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(polls[i]).String(names.At(i)).
				Add(mCount, 1).Add(mSum, int64(vals[i]*2)).AddFloat(mSumF, vals[i]).
				Add(mMin, int64(vals[i]*2)).Add(mMax, int64(vals[i]*2)).
				AddFloat(mMinF, vals[i]).AddFloat(mMaxF, vals[i])
		}
		return nil
	}, tumbling, abi.Window{Name: "all", Kind: abi.Global})
	if err := l.Process(batch3()); err != nil {
		t.Fatal(err)
	}
	rows, err := l.Flush(0)
	if err != nil {
		t.Fatal(err)
	}
	s := l.e.schema
	got := map[string][]any{}
	for _, r := range rows {
		k, _ := s.KeyValues(r.Key)
		var vals []any
		for j, m := range r.Metrics {
			vals = append(vals, s.MetricValue(j, m))
		}
		got[fmt.Sprint(r.Window, k[1])] = vals
	}
	// name a: values 2.5 and -1 (ints 5 and -2); name b: 4 (int 8).
	wantA := []any{int64(2), int64(3), 1.5, int64(-2), int64(5), -1.0, 2.5}
	wantB := []any{int64(1), int64(8), 4.0, int64(8), int64(8), 4.0, 4.0}
	for _, w := range []string{"0", "1"} {
		if !equal(got[w+"a"], wantA) || !equal(got[w+"b"], wantB) {
			t.Fatalf("window %s: a %v b %v, want %v and %v", w, got[w+"a"], got[w+"b"], wantA, wantB)
		}
	}
}

func equal(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestIdentity_IsNeutral(t *testing.T) {
	for _, m := range spec.Metrics {
		id := identity(m.def)
		s := &abi.Schema{Metrics: []abi.Metric{m.def}}
		var v uint64 = 42
		if m.def.Type == abi.Float64 {
			v = math.Float64bits(-7.5)
		}
		if m.def.Kind != abi.Count && s.Merge(0, id, v) != v {
			t.Errorf("%s %s: identity %#x is not neutral", m.def.Kind, m.def.Type, id)
		}
	}
}

func TestFlush_OrdersRowsByWindowStartThenFirstArrival(t *testing.T) {
	l := localWith(t, func(b *Batch, g *Groups) error {
		names := b.Strings(inName)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(b.Int64s(inPoll)[i]).String(names.At(i)).Add(mCount, 1)
		}
		return nil
	}, tumbling)
	b := &abi.Batch{
		Times:   []int64{2500, 10, 1500, 20, 30},
		Columns: []abi.BatchColumn{{Ints: []int64{3, 2, 1, 1, 2}}, {Offsets: []uint32{0, 1, 2, 3, 4, 5}, Data: []byte("xyzab")}, {Floats: make([]float64, 5)}},
	}
	if err := l.Process(b); err != nil {
		t.Fatal(err)
	}
	rows, _ := l.Flush(0)
	var got []int64
	for _, r := range rows {
		k, _ := l.e.schema.KeyValues(r.Key)
		got = append(got, r.Start, k[0].(int64))
	}
	want := []int64{0, 2, 0, 1, 0, 2, 1000, 1, 2000, 3} // pane 0: (2,y), (1,a), (2,b) as they arrived
	for i := range want {
		if len(got) != len(want) || got[i] != want[i] {
			t.Fatalf("rows (start, poll) = %v, want %v", got, want)
		}
	}
}

func TestGroups_RefuseMoreGroupsPerPaneThanTheHostKeeps(t *testing.T) {
	fn := func(b *Batch, g *Groups) error {
		names := b.Strings(inName)
		for i := range b.Len() {
			g.At(b.Time(i)).Int64(b.Int64s(inPoll)[i]).String(names.At(i)).Add(mCount, 1)
		}
		return nil
	}
	l := localWith(t, fn, tumbling, abi.Window{Name: "total", Kind: abi.Global})
	l.e.groups.maxGroups = 2
	one := func(name string, ts int64) *abi.Batch {
		return &abi.Batch{Times: []int64{ts}, Columns: []abi.BatchColumn{
			{Ints: []int64{1}}, {Offsets: []uint32{0, uint32(len(name))}, Data: []byte(name)}, {Floats: []float64{0}},
		}}
	}
	if err := l.Process(batch3()); err != nil { // groups a and b
		t.Fatal(err)
	}
	check := func(err error) {
		t.Helper()
		if !errors.Is(err, ErrTooManyGroups) || !strings.Contains(err.Error(), `window "w"`) || !strings.Contains(err.Error(), "max_groups_per_pane") {
			t.Fatalf("got %v, want ErrTooManyGroups naming the window and the limit", err)
		}
	}
	check(l.Process(one("c", 40)))
	// Restored, the limit holds still, groups that exist go on counting, and
	// a record for a new tumbling pane still meets the full global one.
	if err := l.Restore(l.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if err := l.Process(one("a", 50)); err != nil {
		t.Fatalf("an existing group: %v", err)
	}
	check(l.Process(one("c", 60)))
	if err := l.Process(one("c", 1500)); err == nil || !strings.Contains(err.Error(), `window "total"`) {
		t.Fatalf("a new tumbling pane, but the global pane is full: got %v", err)
	}
}

// sameKey compares keys of up to 24 bytes as overlapping words: a
// difference at any byte of any length must show.
func TestSameKey_SeesEveryByte(t *testing.T) {
	for n := range 33 {
		a := make([]byte, n)
		for i := range a {
			a[i] = byte(i*7 + 1)
		}
		if !sameKey(a, bytes.Clone(a)) {
			t.Fatalf("length %d: equal keys differ", n)
		}
		for i := range n {
			b := bytes.Clone(a)
			b[i] ^= 0x40
			if sameKey(a, b) {
				t.Fatalf("length %d: a difference at byte %d is missed", n, i)
			}
		}
	}
}
