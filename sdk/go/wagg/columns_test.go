package wagg

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

// Columns must fold in exactly what At does record by record: the same
// rows at every flush, the same snapshots, for every window kind and metric.
var (
	cPoll   = Int64("poll_id")
	cName   = String("name")
	cValue  = Float64("value")
	cUser   = Int64("user")
	cCount  = Count("n")
	cSum    = Sum("total")
	cMin    = Min("lo")
	cMax    = Max("hi")
	cSumF   = SumFloat("ftotal")
	cMinF   = Min("flo").Float()
	cMaxF   = Max("fhi").Float()
	cAvg    = Average("avg")
	cUsers  = Distinct("users")
	cNames  = Distinct("names")
	cMinCnt = Min("lo_count")
	cInput  = Fields(cPoll, cName, cValue, cUser)
	cMetric = Metrics(cCount, cSum, cMin, cMax, cSumF, cMinF, cMaxF, cAvg, cUsers, cNames, cMinCnt)
)

// keyLayout is a spec's key columns: p poll_id, n name, v value.
type keyLayout string

func (l keyLayout) spec() Spec {
	var keys []abi.Column
	for _, c := range l {
		switch c {
		case 'p':
			keys = append(keys, Int64Key("poll_id"))
		case 'n':
			keys = append(keys, StringKey("name"+fmt.Sprint(len(keys))))
		case 'v':
			keys = append(keys, Float64Key("value"))
		}
	}
	return Spec{Input: cInput, Keys: keys, Metrics: cMetric}
}

func (l keyLayout) perRecord(b *Batch, g *Groups) error {
	polls, names, values, users := b.Int64s(cPoll), b.Strings(cName), b.Float64s(cValue), b.Int64s(cUser)
	for i := range b.Len() {
		k := g.At(b.Time(i))
		for _, c := range l {
			switch c {
			case 'p':
				k.Int64(polls[i])
			case 'n':
				k.String(names.At(i))
			case 'v':
				k.Float64(values[i])
			}
		}
		k.Add(cCount, 1).Add(cSum, users[i]).Add(cMin, users[i]).Add(cMax, users[i]).
			AddFloat(cSumF, values[i]).AddFloat(cMinF, values[i]).AddFloat(cMaxF, values[i]).AddFloat(cAvg, values[i]).
			AddDistinct(cUsers, users[i]).AddDistinctString(cNames, names.At(i)).Add(cMinCnt, 1)
	}
	return nil
}

func (l keyLayout) columns(b *Batch, g *Groups) error {
	users, values := b.Int64s(cUser), b.Float64s(cValue)
	c := g.Columns(b)
	for _, k := range l {
		switch k {
		case 'p':
			c.Int64(b.Int64s(cPoll))
		case 'n':
			c.String(b.Strings(cName))
		case 'v':
			c.Float64(values)
		}
	}
	c.Count(cCount).Add(cSum, users).Add(cMin, users).Add(cMax, users).
		AddFloat(cSumF, values).AddFloat(cMinF, values).AddFloat(cMaxF, values).AddFloat(cAvg, values).
		AddDistinct(cUsers, users).AddDistinctString(cNames, b.Strings(cName)).Count(cMinCnt)
	return nil
}

// randomBatch is n records from t on: few polls and names (keys repeat
// within and across batches), names of 0 to 30 bytes, some times far out.
func randomBatch(r *rand.Rand, t int64, n int) *abi.Batch {
	b := &abi.Batch{Columns: make([]abi.BatchColumn, 4)}
	b.Columns[1].Offsets = []uint32{0}
	for range n {
		t += r.Int64N(300)
		ts := t
		if r.IntN(50) == 0 {
			ts = []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64, -1, 0}[r.IntN(5)]
		}
		b.Times = append(b.Times, ts)
		b.Columns[0].Ints = append(b.Columns[0].Ints, r.Int64N(5)-2)
		name := strings.Repeat(string(rune('a'+r.IntN(3))), []int{0, 1, 3, 7, 8, 9, 16, 17, 30}[r.IntN(9)])
		b.Columns[1].Data = append(b.Columns[1].Data, name...)
		b.Columns[1].Offsets = append(b.Columns[1].Offsets, uint32(len(b.Columns[1].Data)))
		b.Columns[2].Floats = append(b.Columns[2].Floats, []float64{0.5, -1, 2, math.Inf(1)}[r.IntN(4)])
		b.Columns[3].Ints = append(b.Columns[3].Ints, r.Int64N(1000)-500)
	}
	return b
}

func TestColumns_FoldsWhatAtFolds(t *testing.T) {
	sec := abi.Window{Name: "sec", Kind: abi.Tumbling, SizeMs: 1000}
	five := abi.Window{Name: "five", Kind: abi.Tumbling, SizeMs: 5000}
	hop := abi.Window{Name: "hop", Kind: abi.Hopping, SizeMs: 3000, SlideMs: 1000}
	all := abi.Window{Name: "all", Kind: abi.Global}
	windows := [][]abi.Window{
		{sec, all},
		{all},
		{sec},
		{all, sec},
		{sec, five, all, hop},
		{hop, all},
		{hop, sec, all, five},
	}
	for _, l := range []keyLayout{"pnv", "p", "pv", "n", "npn", "nn"} {
		for _, ws := range windows {
			var names []string
			for _, w := range ws {
				names = append(names, w.Name)
			}
			t.Run(string(l)+"/"+strings.Join(names, ","), func(t *testing.T) {
				r := rand.New(rand.NewPCG(1, uint64(len(ws))))
				rec := localSpec(t, l.spec(), l.perRecord, ws...)
				col := localSpec(t, l.spec(), l.columns, ws...)
				ts := int64(1_700_000_000_000)
				for round := range 40 {
					b := randomBatch(r, ts, r.IntN(300))
					if len(b.Times) > 0 {
						ts = b.Times[len(b.Times)-1]
					}
					if err := rec.Process(b); err != nil {
						t.Fatal(err)
					}
					if err := col.Process(b); err != nil {
						t.Fatal(err)
					}
					if round%3 == 2 {
						wm := ts - 2000
						want, err := rec.Flush(wm)
						if err != nil {
							t.Fatal(err)
						}
						got, err := col.Flush(wm)
						if err != nil {
							t.Fatal(err)
						}
						if g, w := showRows(got), showRows(want); len(want) == 0 || g != w {
							t.Fatalf("round %d: Columns flushed %d rows, per record %d:\n%s\nwant\n%s", round, len(got), len(want), g, w)
						}
					}
					if a, b := col.Snapshot(), rec.Snapshot(); !bytes.Equal(a, b) {
						t.Fatalf("round %d: snapshots differ (%d and %d bytes)", round, len(a), len(b))
					}
					if round == 20 { // the links are gone after a restore
						for _, l := range []*Local{col, rec} {
							if err := l.Restore(l.Snapshot()); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
			})
		}
	}
}

// showRows prints rows with their sketches' bytes.
func showRows(rows []abi.Row) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%d %v %d %q %v", r.Window, r.Final, r.Start, r.Key, r.Metrics)
		for _, s := range r.Sketches {
			if s != nil {
				fmt.Fprintf(&b, " %x", s.AppendEncoded(nil))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestColumns_MisuseIsAnErrorFromProcess(t *testing.T) {
	for _, c := range []struct {
		name string
		fold func(b *Batch, g *Groups)
		want string
	}{
		{"wrong type", func(b *Batch, g *Groups) {
			g.Columns(b).String(b.Strings(inName)).Int64(b.Int64s(inPoll)).Count(mCount)
		}, `key column 0 "poll_id" is declared int64, but Columns.String filled it`},
		{"too few columns", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).Count(mCount)
		}, `metric update before key column 1 "name" was filled`},
		{"too many columns", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Int64(b.Int64s(inPoll)).Count(mCount)
		}, "fills key column 2, but the spec declares 2"},
		{"column after a metric", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Count(mCount).Int64(b.Int64s(inPoll))
		}, "after a metric update"},
		{"short column", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)[:2]).String(b.Strings(inName)).Count(mCount)
		}, "got 2 values for 3 records"},
		{"short values", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Add(mSum, []int64{1})
		}, "Columns.Add of metric total got 1 values for 3 records"},
		{"float metric", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Add(mSumF, []int64{1, 2, 3})
		}, "use Columns.AddFloat"},
		{"int metric", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).AddFloat(mSum, b.Float64s(inValue))
		}, "use Columns.Add"},
		{"unregistered metric", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Count(Count("stray"))
		}, "metric stray is not one of the registered spec's Metrics"},
		{"zero Strings", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(Strings{}).Count(mCount)
		}, "Columns.String for key column 1 needs a string column of the batch"},
		{"Strings of a number field", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inPoll)).Count(mCount)
		}, "needs a string column"},
		{"distinct of zero Strings", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).AddDistinctString(mCount, Strings{})
		}, "AddDistinctString needs a string column"},
		{"nil metric", func(b *Batch, g *Groups) {
			g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Count(nil)
		}, "metric <nil> is not one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := localWith(t, func(b *Batch, g *Groups) error { c.fold(b, g); return nil }, tumbling)
			err := l.Process(batch3())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestColumns_StopsAtTheGroupLimit(t *testing.T) {
	l := localWith(t, func(b *Batch, g *Groups) error {
		g.Columns(b).Int64(b.Int64s(inPoll)).String(b.Strings(inName)).Count(mCount)
		return nil
	}, tumbling)
	l.e.groups = newGroups(l.e.groups.windows, l.e.schema, 1)
	if err := l.Process(batch3()); !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("got %v, want ErrTooManyGroups", err)
	}
}

func TestColumns_EmptyBatch(t *testing.T) {
	l := localSpec(t, keyLayout("pnv").spec(), keyLayout("pnv").columns, abi.Window{Name: "all", Kind: abi.Global})
	empty := &abi.Batch{Times: []int64{}, Columns: []abi.BatchColumn{{Ints: []int64{}}, {Offsets: []uint32{0}}, {Floats: []float64{}}, {Ints: []int64{}}}}
	if err := l.Process(empty); err != nil {
		t.Fatal(err)
	}
	if rows, err := l.Flush(0); err != nil || len(rows) != 0 {
		t.Fatalf("an empty batch flushed %d rows, %v", len(rows), err)
	}
}
