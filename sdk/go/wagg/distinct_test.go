package wagg

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

// A distinct count per poll, of string users and of int64 user numbers,
// beside a count.
var (
	dPoll    = Int64("poll_id")
	dUser    = String("user_id")
	dVotes   = Count("votes")
	dVoters  = Distinct("voters")
	dNumbers = Distinct("numbers")
	dSpec    = Spec{
		Input:   Fields(dPoll, dUser),
		Keys:    Keys(Int64Key("poll_id")),
		Metrics: Metrics(dVotes, dVoters, dNumbers),
	}
	fiveMinutes = abi.Window{Name: "five", Kind: abi.Hopping, SizeMs: 300_000, SlideMs: 60_000}
)

func distinctFold(b *Batch, g *Groups) error {
	polls, users := b.Int64s(dPoll), b.Strings(dUser)
	for i := range b.Len() {
		u := users.At(i)
		n := int64(0)
		fmt.Sscanf(string(u), "u%d", &n)
		g.At(b.Time(i)).Int64(polls[i]).Add(dVotes, 1).AddDistinctString(dVoters, u).AddDistinct(dNumbers, n)
	}
	return nil
}

// localSpec runs fn over s the way Register and NewLocal would.
func localSpec(t testing.TB, s Spec, fn Func, windows ...abi.Window) *Local {
	t.Helper()
	schema, err := s.schema()
	if err != nil {
		t.Fatal(err)
	}
	e := &engine{schema: &schema, fn: fn, groups: newGroups(windows, &schema, 0)}
	for _, f := range schema.Input {
		e.types = append(e.types, f.Type)
	}
	return &Local{e: e}
}

type userVote struct {
	ts   int64
	poll int64
	user int
}

func userBatch(vs []userVote) *abi.Batch {
	b := &abi.Batch{Columns: make([]abi.BatchColumn, 2)}
	b.Columns[1].Offsets = []uint32{0}
	for _, v := range vs {
		b.Times = append(b.Times, v.ts)
		b.Columns[0].Ints = append(b.Columns[0].Ints, v.poll)
		b.Columns[1].Data = fmt.Appendf(b.Columns[1].Data, "u%d", v.user)
		b.Columns[1].Offsets = append(b.Columns[1].Offsets, uint32(len(b.Columns[1].Data)))
	}
	return b
}

// TestDistinct_CountsUniqueUsersPerHoppingWindow checks each final row of a
// 5-minute window sliding by a minute against the exact count of its
// users, and its sketch against one built straight from those users.
func TestDistinct_CountsUniqueUsersPerHoppingWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	l := localSpec(t, dSpec, distinctFold, fiveMinutes)
	type pk struct{ start, poll int64 }
	exact := map[pk]map[int]bool{}
	votes := map[pk]int{}
	var vs []userVote
	for range 20_000 {
		v := userVote{ts: r.Int64N(10 * 60_000), poll: r.Int64N(3), user: r.IntN(5000)}
		if v.poll == 2 {
			v.user %= 40 // a small poll: the sparse form
		}
		vs = append(vs, v)
		for _, s := range fiveMinutes.Starts(v.ts, nil) {
			k := pk{s, v.poll}
			if exact[k] == nil {
				exact[k] = map[int]bool{}
			}
			exact[k][v.user] = true
			votes[k]++
		}
	}
	for i := 0; i < len(vs); i += 3000 {
		if err := l.Process(userBatch(vs[i:min(i+3000, len(vs))])); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := l.Flush(math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(exact) {
		t.Fatalf("%d rows, want %d panes x polls", len(rows), len(exact))
	}
	for _, row := range rows {
		k := pk{start: row.Start}
		vals, _ := l.e.schema.KeyValues(row.Key)
		k.poll = vals[0].(int64)
		users := exact[k]
		want := &abi.Sketch{}
		wantNumbers := &abi.Sketch{}
		for u := range users {
			want.AddString(fmt.Appendf(nil, "u%d", u))
			wantNumbers.AddInt64(int64(u))
		}
		if !row.Final || int(row.Metrics[0]) != votes[k] {
			t.Errorf("%v: final %v votes %d, want final and %d", k, row.Final, row.Metrics[0], votes[k])
		}
		if !row.Sketches[1].Equal(want) || !row.Sketches[2].Equal(wantNumbers) {
			t.Errorf("%v: the sketches differ from those of the pane's users", k)
		}
		n := float64(len(users))
		for j := 1; j <= 2; j++ {
			if got := float64(int64(row.Metrics[j])); math.Abs(got-n) > 3*1.04/64*n {
				t.Errorf("%v: metric %d estimates %v of %v users, beyond 3 standard errors", k, j, got, n)
			}
		}
	}
}

func TestDistinct_SnapshotRestoresTheSketches(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var vs []userVote
	for range 6000 {
		vs = append(vs, userVote{ts: r.Int64N(4 * 60_000), poll: r.Int64N(4), user: r.IntN(3000) * int(r.Int64N(2))})
	}
	a := localSpec(t, dSpec, distinctFold, fiveMinutes)
	if err := a.Process(userBatch(vs[:3000])); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Flush(60_000); err != nil {
		t.Fatal(err)
	}
	snap := a.Snapshot()
	b := localSpec(t, dSpec, distinctFold, fiveMinutes)
	if err := b.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Snapshot(), snap) {
		t.Fatal("a restored snapshot differs from the one restored")
	}
	for _, l := range []*Local{a, b} {
		if err := l.Process(userBatch(vs[3000:])); err != nil {
			t.Fatal(err)
		}
	}
	ra, _ := a.Flush(math.MaxInt64)
	rb, _ := b.Flush(math.MaxInt64)
	if len(ra) != len(rb) || len(ra) == 0 {
		t.Fatalf("%d rows after the restore, %d without", len(rb), len(ra))
	}
	for i := range ra {
		if ra[i].Key != rb[i].Key || ra[i].Start != rb[i].Start || !ra[i].Sketches[1].Equal(rb[i].Sketches[1]) || ra[i].Metrics[1] != rb[i].Metrics[1] {
			t.Fatalf("row %d differs after a restore", i)
		}
	}
	if err := b.Restore(snap[:len(snap)-1]); err == nil || !strings.Contains(err.Error(), "malformed snapshot") {
		t.Fatalf("Restore(truncated) = %v", err)
	}
}

func TestDistinct_MisuseIsAnError(t *testing.T) {
	for _, c := range []struct {
		name string
		fold func(k *Key)
		want string
	}{
		{"Add on a distinct", func(k *Key) { k.Add(dVoters, 1) }, "metric voters is a distinct count, use AddDistinct"},
		{"AddFloat on a distinct", func(k *Key) { k.AddFloat(dVoters, 1) }, "metric voters is a distinct count, use AddDistinct"},
		{"AddDistinct on a count", func(k *Key) { k.AddDistinct(dVotes, 1) }, "metric votes is a count, use Add or AddFloat"},
		{"AddDistinctString on a count", func(k *Key) { k.AddDistinctString(dVotes, nil) }, "metric votes is a count"},
		{"a metric of another spec", func(k *Key) { k.AddDistinct(Distinct("x"), 1) }, "metric x is not one of"},
	} {
		l := localSpec(t, dSpec, func(b *Batch, g *Groups) error {
			c.fold(g.At(0).Int64(1))
			return nil
		}, fiveMinutes)
		if err := l.Process(userBatch([]userVote{{1, 1, 1}})); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Process = %v, want %q", c.name, err, c.want)
		}
	}
}

// FuzzRestoreDistinct checks Restore of snapshots with sketches: never a
// panic, an accepted snapshot is what Snapshot then returns, a refused one
// leaves the state empty.
func FuzzRestoreDistinct(f *testing.F) {
	for _, users := range []int{3, 5000} {
		l := localSpec(f, dSpec, distinctFold, fiveMinutes)
		var vs []userVote
		for u := range users {
			vs = append(vs, userVote{int64(u * 7), int64(u % 2), u})
		}
		if err := l.Process(userBatch(vs)); err != nil {
			f.Fatal(err)
		}
		f.Add(l.Snapshot())
	}
	empty := localSpec(f, dSpec, distinctFold, fiveMinutes).Snapshot()
	f.Fuzz(func(t *testing.T, data []byte) {
		l := localSpec(t, dSpec, distinctFold, fiveMinutes)
		if err := l.Restore(data); err != nil {
			if !bytes.Equal(l.Snapshot(), empty) {
				t.Fatal("a failed Restore left state behind")
			}
			return
		}
		if !bytes.Equal(l.Snapshot(), data) {
			t.Fatal("accepted a snapshot that Snapshot does not reproduce")
		}
		if _, err := l.Flush(math.MaxInt64); err != nil {
			t.Fatal(err)
		}
	})
}
