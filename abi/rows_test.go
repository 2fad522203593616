package abi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

var rowSchema = &abi.Schema{
	ABI:   abi.Version,
	Input: []abi.Field{{Name: "x", Type: abi.Int64}},
	Keys: []abi.Column{
		{Name: "poll_id", Type: abi.Int64}, {Name: "ratio", Type: abi.Float64}, {Name: "option", Type: abi.String},
	},
	Metrics: []abi.Metric{
		{Name: "n", Kind: abi.Count, Type: abi.Int64},
		{Name: "total", Kind: abi.Sum, Type: abi.Int64},
		{Name: "ftotal", Kind: abi.Sum, Type: abi.Float64},
		{Name: "lo", Kind: abi.Min, Type: abi.Int64},
		{Name: "hi", Kind: abi.Max, Type: abi.Int64},
		{Name: "flo", Kind: abi.Min, Type: abi.Float64},
		{Name: "fhi", Kind: abi.Max, Type: abi.Float64},
	},
}

func key(poll int64, ratio float64, option string) string {
	b := abi.AppendKeyInt64(nil, poll)
	b = abi.AppendKeyFloat64(b, ratio)
	return string(abi.AppendKeyString(b, []byte(option)))
}

func f64(v float64) uint64 { return math.Float64bits(v) }

func TestRows_RoundTrip(t *testing.T) {
	long := strings.Repeat("o", abi.MaxKeyBytes-8-8-4) // the longest key there may be
	want := []abi.Row{
		{Window: 0, Final: false, Start: 1_700_000_000_000, Key: key(1, 0.5, "yes"), Metrics: []uint64{3, 10, f64(1.5), 1, 9, f64(-2), f64(2)}},
		{Window: 1, Final: true, Start: -60_000, Key: key(-1, math.Inf(-1), ""), Metrics: []uint64{1, 0, 0, 0, 0, 0, 0}},
		{Window: 2, Final: true, Start: 0, Key: key(math.MaxInt64, 0, long), Metrics: []uint64{math.MaxUint64, 1, 2, 3, 4, 5, 6}},
	}
	var w abi.RowsWriter
	for round := range 2 { // the second round checks Reset reuses the writer
		w.Reset()
		for _, r := range want {
			w.Append(r.Window, r.Final, r.Start, []byte(r.Key), r.Metrics)
		}
		if w.Len() != len(want) {
			t.Fatalf("Len = %d", w.Len())
		}
		buf := w.Bytes()
		got, err := abi.DecodeRows(buf, rowSchema, 3, nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: decoded %+v, want %+v", round, got, want)
		}
		buf[len(buf)-1] ^= 0xff
		if got[2].Metrics[6] != 6 {
			t.Fatal("decoded rows alias the buffer")
		}
	}
}

// The rows of one call share their keys' and metrics' memory: writing
// through one row, or reusing the buffer, must not reach another row.
func TestDecodeRows_RowsAreIndependent(t *testing.T) {
	var w abi.RowsWriter
	for i := range 3 {
		w.Append(0, false, 0, []byte(key(int64(i), 0, strings.Repeat("x", i))), []uint64{uint64(i), 0, 0, 0, 0, 0, 0})
	}
	buf := w.Bytes()
	rows, err := abi.DecodeRows(buf, rowSchema, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	rows[0].Metrics = append(rows[0].Metrics, 99)
	rows[1].Metrics[1] = 7
	clear(buf)
	for i, r := range rows {
		if want := key(int64(i), 0, strings.Repeat("x", i)); r.Key != want {
			t.Errorf("row %d: key %q, want %q", i, r.Key, want)
		}
		if r.Metrics[0] != uint64(i) {
			t.Errorf("row %d: metrics %v: another row's write reached it", i, r.Metrics)
		}
	}
	if rows[2].Metrics[1] != 0 || rows[0].Metrics[1] != 0 {
		t.Error("a write to row 1's metrics reached another row")
	}
}

func TestRowsWriter_ZeroValueAndEmpty(t *testing.T) {
	var w abi.RowsWriter
	buf := w.Bytes()
	if len(buf) != 16 {
		t.Fatalf("empty rows are %d bytes, want the 16-byte header", len(buf))
	}
	rows, err := abi.DecodeRows(buf, rowSchema, 1, nil)
	if err != nil || len(rows) != 0 {
		t.Fatalf("DecodeRows(empty) = %v, %v", rows, err)
	}
	var z abi.RowsWriter // Append without Reset
	z.Append(0, false, 0, []byte(key(1, 1, "a")), make([]uint64, 7))
	if rows, err := abi.DecodeRows(z.Bytes(), rowSchema, 1, nil); err != nil || len(rows) != 1 {
		t.Fatalf("zero-value writer: %v, %v", rows, err)
	}
}

func TestDecodeRows_RefusesMalformed(t *testing.T) {
	var w abi.RowsWriter
	w.Reset()
	w.Append(1, true, 5, []byte(key(1, 2, "abc")), []uint64{1, 2, 3, 4, 5, 6, 7})
	good := bytes.Clone(w.Bytes())
	le := binary.LittleEndian
	const row = 16                  // first row
	const strLen = row + 10 + 8 + 8 // the option key's length
	for _, c := range []struct {
		name    string
		mutate  func([]byte) []byte
		windows int
		want    string
	}{
		{"short", func(b []byte) []byte { return b[:15] }, 2, "shorter than the header"},
		{"magic", func(b []byte) []byte { b[3] = 0; return b }, 2, "bad magic"},
		{"length", func(b []byte) []byte { le.PutUint64(b[8:], 1); return b }, 2, "header says"},
		{"huge count", func(b []byte) []byte { le.PutUint32(b[4:], math.MaxUint32); return b }, 2, "cannot fit"},
		{"window", nil, 1, "names window 1 of 1"},
		{"flags", func(b []byte) []byte { b[row+1] = 3; return b }, 2, "unknown flags"},
		{"string key past the end", func(b []byte) []byte { le.PutUint32(b[strLen:], 1<<31); return b }, 2, "key option truncated"},
		{"string key eats the metrics", func(b []byte) []byte { le.PutUint32(b[strLen:], 3+8*7); return b }, 2, "metrics truncated"},
		{"two rows claimed", func(b []byte) []byte {
			b = append(b, make([]byte, 10+8*7)...)
			le.PutUint32(b[4:], 2)
			le.PutUint64(b[8:], uint64(len(b)))
			return b
		}, 2, "row 1 metrics truncated"},
		{"trailing", func(b []byte) []byte { b = append(b, 0); le.PutUint64(b[8:], uint64(len(b))); return b }, 2, "trailing"},
		{"key past MaxKeyBytes", func([]byte) []byte {
			var w abi.RowsWriter
			w.Reset()
			w.Append(1, true, 5, []byte(key(1, 2, strings.Repeat("o", abi.MaxKeyBytes-8-8-4+1))), make([]uint64, 7))
			return w.Bytes()
		}, 2, "a key of 65537 bytes, at most 65536"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(good)
			if c.mutate != nil {
				b = c.mutate(b)
			}
			dst := []abi.Row{{Key: "kept"}}
			got, err := abi.DecodeRows(b, rowSchema, c.windows, dst)
			if !errors.Is(err, abi.ErrRows) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("DecodeRows: %v, want ErrRows containing %q", err, c.want)
			}
			if len(got) != 1 || got[0].Key != "kept" {
				t.Fatalf("on error DecodeRows returned %d rows, want dst unchanged", len(got))
			}
		})
	}
}

func TestSchema_KeyValues(t *testing.T) {
	vals, err := rowSchema.KeyValues(key(-7, 0.25, "héllo"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []any{int64(-7), 0.25, "héllo"}; !reflect.DeepEqual(vals, want) {
		t.Fatalf("KeyValues = %#v, want %#v", vals, want)
	}
	noKeys := &abi.Schema{}
	if vals, err := noKeys.KeyValues(""); err != nil || len(vals) != 0 {
		t.Fatalf("no key columns: %v, %v", vals, err)
	}
	k := key(1, 2, "abc")
	for _, c := range []struct {
		name, key, want string
	}{
		{"empty", "", "key poll_id truncated"},
		{"short float", k[:12], "key ratio truncated"},
		{"no string length", k[:18], "key option truncated"},
		{"short string", k[:len(k)-1], "key option truncated"},
		{"trailing", k + "x", "1 trailing key bytes"},
		{"huge length", k[:16] + "\xff\xff\xff\xff", "key option truncated"},
	} {
		if _, err := rowSchema.KeyValues(c.key); !errors.Is(err, abi.ErrRows) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: KeyValues: %v, want %q", c.name, err, c.want)
		}
	}
}

func TestSchema_MetricValue(t *testing.T) {
	if v := rowSchema.MetricValue(1, uint64(1<<64-3)); v != int64(-3) {
		t.Errorf("int metric = %#v", v)
	}
	if v := rowSchema.MetricValue(2, f64(-1.25)); v != -1.25 {
		t.Errorf("float metric = %#v", v)
	}
}

func TestSchema_MergeByKind(t *testing.T) {
	i := func(v int64) uint64 { return uint64(v) }
	for _, c := range []struct {
		metric int
		a, b   uint64
		want   uint64
	}{
		{0, i(3), i(4), i(7)},                           // count: sum
		{1, i(-3), i(10), i(7)},                         // sum int
		{2, f64(0.5), f64(0.25), f64(0.75)},             // sum float
		{3, i(-3), i(2), i(-3)},                         // min int
		{3, i(math.MaxInt64), i(5), i(5)},               // min from its identity
		{4, i(-3), i(2), i(2)},                          // max int
		{4, i(math.MinInt64), i(-5), i(-5)},             // max from its identity
		{5, f64(-0.5), f64(3), f64(-0.5)},               // min float
		{5, f64(math.Inf(1)), f64(2.5), f64(2.5)},       // min float from its identity
		{5, f64(-1e300), f64(1e300), f64(-1e300)},       // min float, not int compare of bits
		{6, f64(-0.5), f64(-3), f64(-0.5)},              // max float with negatives (bit order would differ)
		{6, f64(math.Inf(-1)), f64(-2.5), f64(-2.5)},    // max float from its identity
		{6, f64(1), f64(math.Inf(1)), f64(math.Inf(1))}, // max float to infinity
	} {
		m := rowSchema.Metrics[c.metric]
		if got := rowSchema.Merge(c.metric, c.a, c.b); got != c.want {
			t.Errorf("Merge %s %s(%v, %v) = %v, want %v", m.Kind, m.Type,
				rowSchema.MetricValue(c.metric, c.a), rowSchema.MetricValue(c.metric, c.b),
				rowSchema.MetricValue(c.metric, got), rowSchema.MetricValue(c.metric, c.want))
		}
		if got := rowSchema.Merge(c.metric, c.b, c.a); got != c.want {
			t.Errorf("Merge %s %s is not commutative", m.Kind, m.Type)
		}
	}
}

// FuzzDecodeRows checks that any bytes decode without panicking, by a
// schema of every fixed-size kind and by one with distinct counts, that
// decoded keys decode by the schema, and that rows that decode re-encode
// through RowsWriter to exactly the same bytes, with the estimate of each
// sketch in its metric.
func FuzzDecodeRows(f *testing.F) {
	var w abi.RowsWriter
	w.Reset()
	f.Add(bytes.Clone(w.Bytes()))
	w.Append(0, false, 1000, []byte(key(1, 0.5, "yes")), []uint64{1, 2, 3, 4, 5, 6, 7})
	w.Append(1, true, -1000, []byte(key(-1, 0, "")), []uint64{7, 6, 5, 4, 3, 2, 1})
	f.Add(bytes.Clone(w.Bytes()))
	for _, n := range []int{0, 3, abi.SketchSparseMax + 100} {
		w.Reset()
		sk := sketchOf(0, n)
		w.AppendSketches(1, true, 60_000, []byte("\x02\x00\x00\x00ab"), []uint64{9, 0, 0}, []*abi.Sketch{nil, sk, sketchOf(n, 2)})
		f.Add(bytes.Clone(w.Bytes()))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range []*abi.Schema{rowSchema, distinctSchema} {
			rows, err := abi.DecodeRows(data, s, 2, nil)
			if err != nil {
				if !errors.Is(err, abi.ErrRows) || rows != nil {
					t.Fatalf("error %v (rows %v): want ErrRows and no rows", err, rows)
				}
				continue
			}
			var w abi.RowsWriter
			w.Reset()
			for _, r := range rows {
				if _, err := s.KeyValues(r.Key); err != nil {
					t.Fatalf("a decoded key does not decode: %v", err)
				}
				for j, sk := range r.Sketches {
					if sk != nil && int64(r.Metrics[j]) != sk.Estimate() {
						t.Fatalf("metric %d holds %d, its sketch estimates %d", j, int64(r.Metrics[j]), sk.Estimate())
					}
				}
				w.AppendSketches(r.Window, r.Final, r.Start, []byte(r.Key), r.Metrics, r.Sketches)
			}
			if !bytes.Equal(w.Bytes(), data) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", w.Bytes(), data)
			}
		}
	})
}

// FuzzKeyValues checks that any key decodes without panicking, and that a
// key that decodes is rebuilt byte for byte from its values.
func FuzzKeyValues(f *testing.F) {
	f.Add(key(1, 0.5, "yes"))
	f.Add(key(-1, math.NaN(), ""))
	f.Add("")
	f.Fuzz(func(t *testing.T, k string) {
		vals, err := rowSchema.KeyValues(k)
		if err != nil {
			if !errors.Is(err, abi.ErrRows) {
				t.Fatalf("error %v does not wrap ErrRows", err)
			}
			return
		}
		var b []byte
		for _, v := range vals {
			switch v := v.(type) {
			case int64:
				b = abi.AppendKeyInt64(b, v)
			case float64:
				b = abi.AppendKeyFloat64(b, v)
			case string:
				b = abi.AppendKeyString(b, []byte(v))
			default:
				t.Fatalf("value of type %T", v)
			}
		}
		if string(b) != k {
			t.Fatalf("rebuilt key %x, want %x", b, k)
		}
	})
}

func ExampleRowsWriter() {
	schema := &abi.Schema{
		ABI:     abi.Version,
		Input:   []abi.Field{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Keys:    []abi.Column{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Metrics: []abi.Metric{{Name: "votes", Kind: abi.Count, Type: abi.Int64}},
	}
	// The guest side: one row per changed group.
	var w abi.RowsWriter
	w.Reset()
	k := abi.AppendKeyString(abi.AppendKeyInt64(nil, 42), []byte("yes"))
	w.Append(0, true, 1_700_000_000_000, k, []uint64{3})
	k = abi.AppendKeyString(abi.AppendKeyInt64(nil, 42), []byte("no"))
	w.Append(1, false, 0, k, []uint64{7})

	// The host side: decode, check against the schema, read the values.
	rows, err := abi.DecodeRows(w.Bytes(), schema, 2, nil)
	if err != nil {
		panic(err)
	}
	for _, r := range rows {
		key, _ := schema.KeyValues(r.Key)
		fmt.Println(r.Window, r.Final, r.Start, key, schema.MetricValue(0, r.Metrics[0]))
	}
	// Output:
	// 0 true 1700000000000 [42 yes] 3
	// 1 false 0 [42 no] 7
}

// BenchmarkDecodeRows decodes a flush of the votes aggregator's rows (an
// int64 and a short string key, one count): the host does this for every
// guest flush.
func BenchmarkDecodeRows(b *testing.B) {
	s := &abi.Schema{
		ABI:     abi.Version,
		Input:   []abi.Field{{Name: "poll_id", Type: abi.Int64}},
		Keys:    []abi.Column{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}},
		Metrics: []abi.Metric{{Name: "votes", Kind: abi.Count, Type: abi.Int64}},
	}
	var w abi.RowsWriter
	const n = 10000
	for i := range n {
		k := abi.AppendKeyString(abi.AppendKeyInt64(nil, int64(i)), []byte(fmt.Sprintf("option-%d", i%8+1)))
		w.Append(uint8(i%2), false, 1_700_000_000_000, k, []uint64{uint64(i)})
	}
	buf := w.Bytes()
	var rows []abi.Row
	b.ResetTimer()
	for range b.N {
		var err error
		if rows, err = abi.DecodeRows(buf, s, 2, rows[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
}
