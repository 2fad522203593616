package wagg_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
	"github.com/wagg/wagg/sdk/go/wagg"
)

var (
	second = abi.Window{Name: "second", Kind: abi.Tumbling, SizeMs: 1000}
	hop3s  = abi.Window{Name: "hop", Kind: abi.Hopping, SizeMs: 3000, SlideMs: 1000}
	total  = abi.Window{Name: "total", Kind: abi.Global}
)

type vote struct {
	ts     int64
	poll   int64
	option string
}

func batchOf(vs ...vote) *abi.Batch {
	b := &abi.Batch{Times: []int64{}, Columns: []abi.BatchColumn{
		{Ints: []int64{}}, {Offsets: []uint32{0}, Data: []byte{}},
	}}
	for _, v := range vs {
		b.Times = append(b.Times, v.ts)
		b.Columns[0].Ints = append(b.Columns[0].Ints, v.poll)
		c := &b.Columns[1]
		c.Data = append(c.Data, v.option...)
		c.Offsets = append(c.Offsets, uint32(len(c.Data)))
	}
	return b
}

func newLocal(t testing.TB, windows ...abi.Window) *wagg.Local {
	t.Helper()
	l, err := wagg.NewLocal(windows...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func process(t testing.TB, l *wagg.Local, vs ...vote) {
	t.Helper()
	if err := l.Process(batchOf(vs...)); err != nil {
		t.Fatal(err)
	}
}

// show renders rows as "window start poll option=votes [final]", in the
// order Flush returned them.
func show(t testing.TB, windows []abi.Window, rows []abi.Row) []string {
	t.Helper()
	schema, err := wagg.Describe()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, r := range rows {
		k, err := schema.KeyValues(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%s %d %d %s=%d", windows[r.Window].Name, r.Start, k[0], k[1], r.Metrics[0])
		if r.Final {
			s += " final"
		}
		out = append(out, s)
	}
	return out
}

func flush(t testing.TB, l *wagg.Local, windows []abi.Window, wm int64) []string {
	t.Helper()
	rows, err := l.Flush(wm)
	if err != nil {
		t.Fatal(err)
	}
	return show(t, windows, rows)
}

func expect(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestDescribe_ReturnsTheRegisteredSchema(t *testing.T) {
	s, err := wagg.Describe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	want := abi.Schema{
		ABI:     abi.Version,
		Input:   []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Keys:    []abi.Column{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Metrics: []abi.Metric{{Name: "votes", Kind: abi.Count, Type: abi.Int64}},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("Describe = %+v, want %+v", s, want)
	}
}

func TestNewLocal_RefusesBadWindows(t *testing.T) {
	for _, c := range []struct {
		windows []abi.Window
		want    string
	}{
		{nil, "0 windows, want 1 to 255"},
		{make([]abi.Window, 256), "256 windows"},
		{[]abi.Window{{Name: "t", Kind: abi.Tumbling, SizeMs: 1500}}, "t.size"},
	} {
		if _, err := wagg.NewLocal(c.windows...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewLocal(%d windows): %v, want %q", len(c.windows), err, c.want)
		}
	}
}

func TestLocal_CountsPerKeyPerTumblingWindowAndGlobal(t *testing.T) {
	ws := []abi.Window{second, total}
	l := newLocal(t, ws...)
	process(t, l,
		vote{100, 1, "a"}, vote{900, 1, "a"}, vote{999, 1, "b"}, vote{1000, 1, "a"},
		vote{1500, 2, "a"}, vote{-1, 1, "a"},
	)
	expect(t, "first flush", flush(t, l, ws, 0), []string{
		"second -1000 1 a=1 final",
		"second 0 1 a=2",
		"second 0 1 b=1",
		"second 1000 1 a=1",
		"second 1000 2 a=1",
		"total 0 1 a=4",
		"total 0 1 b=1",
		"total 0 2 a=1",
	})
}

func TestLocal_FlushEmitsOnlyChangedGroups(t *testing.T) {
	ws := []abi.Window{second, total}
	l := newLocal(t, ws...)
	process(t, l, vote{100, 1, "a"}, vote{200, 1, "b"}, vote{300, 2, "a"})
	flush(t, l, ws, 0)
	expect(t, "nothing changed", flush(t, l, ws, 0), []string{})
	process(t, l, vote{400, 1, "b"})
	expect(t, "one group changed", flush(t, l, ws, 0), []string{
		"second 0 1 b=2",
		"total 0 1 b=2",
	})
}

func TestLocal_ClosedWindowsComeOutOnceFinalThenAreForgotten(t *testing.T) {
	ws := []abi.Window{second, total}
	l := newLocal(t, ws...)
	process(t, l, vote{100, 1, "a"}, vote{1100, 1, "a"})
	flush(t, l, ws, 0)
	before := len(l.Snapshot())
	// No change since the last flush, but the watermark closes [0, 1000):
	// every group of that window comes out final, changed or not.
	expect(t, "closing flush", flush(t, l, ws, 1000), []string{"second 0 1 a=1 final"})
	expect(t, "after close", flush(t, l, ws, 1000), []string{})
	expect(t, "later watermark", flush(t, l, ws, 1999), []string{})
	if after := len(l.Snapshot()); after >= before {
		t.Fatalf("snapshot grew from %d to %d bytes: the closed window is still held", before, after)
	}
	expect(t, "second close", flush(t, l, ws, math.MaxInt64), []string{"second 1000 1 a=1 final"})
	// The global window never closes.
	process(t, l, vote{5000, 1, "a"})
	expect(t, "global stays open", flush(t, l, ws, math.MaxInt64), []string{
		"second 5000 1 a=1 final",
		"total 0 1 a=3",
	})
}

func TestLocal_HoppingWindowsCountARecordInSizeOverSlideWindows(t *testing.T) {
	ws := []abi.Window{hop3s}
	l := newLocal(t, ws...)
	process(t, l, vote{2500, 1, "a"}, vote{3000, 1, "a"})
	expect(t, "hopping", flush(t, l, ws, 0), []string{
		"hop 0 1 a=1",    // [0, 3000) holds 2500
		"hop 1000 1 a=2", // [1000, 4000) holds both
		"hop 2000 1 a=2", // [2000, 5000) holds both
		"hop 3000 1 a=1", // [3000, 6000) holds 3000
	})
	expect(t, "close the first two", flush(t, l, ws, 4000), []string{
		"hop 0 1 a=1 final",
		"hop 1000 1 a=2 final",
	})
}

func randomVotes(r *rand.Rand, n int, from int64) []vote {
	vs := make([]vote, n)
	for i := range vs {
		vs[i] = vote{from + r.Int64N(5000), r.Int64N(5), string(rune('a' + r.IntN(4)))}
	}
	return vs
}

func TestLocal_SnapshotRestoreContinuesIdentically(t *testing.T) {
	ws := []abi.Window{second, hop3s, total}
	r := rand.New(rand.NewPCG(7, 8))
	a := newLocal(t, ws...)
	process(t, a, randomVotes(r, 500, 0)...)
	flush(t, a, ws, 1500)
	process(t, a, randomVotes(r, 300, 1500)...) // some groups dirty at snapshot time
	snap := a.Snapshot()

	b := newLocal(t, ws...)
	if err := b.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := b.Snapshot(); !bytes.Equal(got, snap) {
		t.Fatal("the restored state snapshots differently")
	}
	// The first flush after a restore emits every group: a superset of what
	// the original emits, with the same values.
	ra, rb := flush(t, a, ws, 1500), flush(t, b, ws, 1500)
	for _, row := range ra {
		if !slices.Contains(rb, row) {
			t.Fatalf("restored flush lacks %q", row)
		}
	}
	if len(rb) <= len(ra) {
		t.Fatalf("restored flush emitted %d rows, the original %d: want every group", len(rb), len(ra))
	}
	for step, wm := range []int64{2000, 2000, 4500, 7000, math.MaxInt64} {
		more := randomVotes(r, 200, wm)
		process(t, a, more...)
		process(t, b, more...)
		ra, err := a.Flush(wm)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := b.Flush(wm)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("step %d: the restored Local flushes\n%q\nthe original\n%q", step, show(t, ws, rb), show(t, ws, ra))
		}
		if len(ra) == 0 {
			t.Fatalf("step %d: no rows; the test is too weak", step)
		}
	}
}

func TestLocal_SnapshotIsDeterministic(t *testing.T) {
	ws := []abi.Window{second, hop3s, total}
	vs := randomVotes(rand.New(rand.NewPCG(1, 1)), 1000, 0)
	var snaps [][]byte
	for range 3 {
		l := newLocal(t, ws...)
		process(t, l, vs[:500]...)
		flush(t, l, ws, 1000)
		process(t, l, vs[500:]...)
		snaps = append(snaps, l.Snapshot())
	}
	if !bytes.Equal(snaps[0], snaps[1]) || !bytes.Equal(snaps[0], snaps[2]) {
		t.Fatal("the same batches give different snapshots")
	}
}

func validSnapshot(t testing.TB, ws []abi.Window) []byte {
	l := newLocal(t, ws...)
	process(t, l, vote{100, 1, "a"}, vote{1100, 2, "bb"}, vote{-2500, 3, ""})
	flush(t, l, ws, 0)
	process(t, l, vote{200, 1, "a"})
	return l.Snapshot()
}

func emptySnapshot(t testing.TB, ws []abi.Window) []byte { return newLocal(t, ws...).Snapshot() }

func TestLocal_RestoreRejectsTruncatedAndGarbage(t *testing.T) {
	ws := []abi.Window{second, hop3s, total}
	good := validSnapshot(t, ws)
	empty := emptySnapshot(t, ws)
	check := func(name string, b []byte) {
		t.Helper()
		l := newLocal(t, ws...)
		process(t, l, vote{100, 9, "z"})
		err := l.Restore(b)
		if err == nil {
			t.Fatalf("%s: Restore accepted it", name)
		}
		if !strings.Contains(err.Error(), "malformed snapshot") {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(l.Snapshot(), empty) {
			t.Fatalf("%s: a failed Restore left state behind", name)
		}
	}
	for n := range len(good) {
		check(fmt.Sprintf("truncated to %d", n), good[:n])
	}
	check("trailing byte", append(bytes.Clone(good), 0))
	check("garbage", []byte("not a snapshot at all"))
	check("other windows", validSnapshot(t, []abi.Window{second, total}))
	for _, c := range []struct {
		name string
		off  int
		val  byte
	}{
		{"magic", 0, 'X'},
		{"window count", 4, 4},
		{"pane count", 8, 9},
	} {
		b := bytes.Clone(good)
		b[c.off] = c.val
		check(c.name, b)
	}
	// Flipping any single bit never panics; most flips are refused.
	for i := range len(good) * 8 {
		b := bytes.Clone(good)
		b[i/8] ^= 1 << (i % 8)
		l := newLocal(t, ws...)
		if l.Restore(b) == nil && !bytes.Equal(l.Snapshot(), b) {
			t.Fatalf("bit %d: accepted, but snapshots differently", i)
		}
	}
}

// FuzzRestore checks that Restore never panics, that a snapshot it accepts
// is exactly what Snapshot then returns (snapshots are canonical), and that
// a refused one leaves the state empty.
func FuzzRestore(f *testing.F) {
	ws := []abi.Window{second, hop3s, total}
	f.Add(validSnapshot(f, ws))
	f.Add(emptySnapshot(f, ws))
	f.Fuzz(func(t *testing.T, data []byte) {
		l := newLocal(t, ws...)
		if err := l.Restore(data); err != nil {
			if !bytes.Equal(l.Snapshot(), emptySnapshot(t, ws)) {
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

func TestLocal_ProcessEncodedEqualsProcess(t *testing.T) {
	ws := []abi.Window{second, hop3s, total}
	schema, _ := wagg.Describe()
	enc := abi.NewBatchEncoder(&schema)
	r := rand.New(rand.NewPCG(3, 4))
	a, b := newLocal(t, ws...), newLocal(t, ws...)
	for step := range 5 {
		batch := batchOf(randomVotes(r, 300, int64(step)*1000)...)
		if step == 3 {
			batch = batchOf() // an empty batch too
		}
		if err := a.Process(batch); err != nil {
			t.Fatal(err)
		}
		buf, err := enc.Encode(batch)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ProcessEncoded(buf); err != nil {
			t.Fatal(err)
		}
		wm := int64(step) * 1000
		ra, _ := a.Flush(wm)
		rb, _ := b.Flush(wm)
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("step %d: ProcessEncoded flushes\n%q\nProcess\n%q", step, show(t, ws, rb), show(t, ws, ra))
		}
	}
	if !bytes.Equal(a.Snapshot(), b.Snapshot()) {
		t.Fatal("states differ")
	}
}

func TestLocal_ProcessDoesNotTouchTheCallersBatch(t *testing.T) {
	l := newLocal(t, second)
	mine := batchOf(vote{1, 1, "a"}, vote{2, 2, "b"})
	keep := batchOf(vote{1, 1, "a"}, vote{2, 2, "b"})
	if err := l.Process(mine); err != nil {
		t.Fatal(err)
	}
	schema, _ := wagg.Describe()
	buf, _ := abi.NewBatchEncoder(&schema).Encode(batchOf(vote{7, 7, "zzz"}, vote{8, 8, "y"}))
	if err := l.ProcessEncoded(buf); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mine, keep) {
		t.Fatalf("the caller's batch changed: %+v", mine)
	}
}

func TestLocal_ProcessRefusesBatchesOfAnotherShape(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*abi.Batch)
		want   string
	}{
		{"missing column", func(b *abi.Batch) { b.Columns = b.Columns[:1] }, "1 columns, declared 2 input fields"},
		{"raw not declared", func(b *abi.Batch) { b.Raw = &abi.BatchColumn{Offsets: []uint32{0, 0, 0}} }, "Raw set true"},
		{"short ints", func(b *abi.Batch) { b.Columns[0].Ints = b.Columns[0].Ints[:1] }, `column 0 "poll_id" (int64) does not hold 2 values`},
		{"ints in a string column", func(b *abi.Batch) { b.Columns[1] = abi.BatchColumn{Ints: []int64{1, 2}} }, `column 1 "option" (string)`},
		{"offsets past the data", func(b *abi.Batch) { b.Columns[1].Offsets[2] = 99 }, `column 1 "option" (string)`},
		{"offsets backwards", func(b *abi.Batch) { b.Columns[1].Offsets[1] = 2; b.Columns[1].Offsets[2] = 1 }, `column 1 "option" (string)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := batchOf(vote{1, 1, "a"}, vote{2, 2, "bc"})
			c.mutate(b)
			err := newLocal(t, second).Process(b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Process: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestLocal_ProcessEncodedRefusesOtherSchemasAndGarbage(t *testing.T) {
	l := newLocal(t, second)
	other := &abi.Schema{ABI: abi.Version, Input: []abi.Field{{Name: "poll_id", Type: abi.Int64}}}
	buf, err := abi.NewBatchEncoder(other).Encode(&abi.Batch{Times: []int64{1}, Columns: []abi.BatchColumn{{Ints: []int64{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.ProcessEncoded(buf); err == nil || !strings.Contains(err.Error(), "batch does not match the declared input: 1 fields") {
		t.Fatalf("other schema: %v", err)
	}
	if err := l.ProcessEncoded([]byte("garbage")); !errors.Is(err, abi.ErrBatch) {
		t.Fatalf("garbage: %v, want abi.ErrBatch", err)
	}
}
