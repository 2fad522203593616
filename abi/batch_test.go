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
	"unsafe"

	"github.com/wagg/wagg/abi"
)

// strs builds a string column.
func strs(vals ...string) abi.BatchColumn {
	c := abi.BatchColumn{Offsets: []uint32{0}, Data: []byte{}}
	for _, v := range vals {
		c.Data = append(c.Data, v...)
		c.Offsets = append(c.Offsets, uint32(len(c.Data)))
	}
	return c
}

func ptr[T any](v T) *T { return &v }

var allTypes = &abi.Schema{ABI: abi.Version, Input: []abi.Field{
	{Name: "i", Type: abi.Int64}, {Name: "f", Type: abi.Float64}, {Name: "s", Type: abi.String},
}}

func types(s *abi.Schema) []abi.Type {
	var ts []abi.Type
	for _, f := range s.Input {
		ts = append(ts, f.Type)
	}
	return ts
}

func withRaw(s *abi.Schema) *abi.Schema {
	c := *s
	c.Raw = true
	return &c
}

// normal copies b with the slices of each column's type non-nil and the
// others nil, so that batches compare equal however they were built.
func normal(s *abi.Schema, b *abi.Batch) abi.Batch {
	c := abi.Batch{Times: append([]int64{}, b.Times...)}
	strCol := func(col abi.BatchColumn) abi.BatchColumn {
		return abi.BatchColumn{Offsets: append([]uint32{}, col.Offsets...), Data: append([]byte{}, col.Data...)}
	}
	for i, f := range s.Input {
		col := b.Columns[i]
		switch f.Type {
		case abi.Int64:
			c.Columns = append(c.Columns, abi.BatchColumn{Ints: append([]int64{}, col.Ints...)})
		case abi.Float64:
			c.Columns = append(c.Columns, abi.BatchColumn{Floats: append([]float64{}, col.Floats...)})
		default:
			c.Columns = append(c.Columns, strCol(col))
		}
	}
	if b.Raw != nil {
		c.Raw = ptr(strCol(*b.Raw))
	}
	return c
}

func TestBatch_RoundTrip(t *testing.T) {
	big := strings.Repeat("x", 1<<20+3)
	for _, c := range []struct {
		name   string
		schema *abi.Schema
		batch  abi.Batch
	}{
		{"all types", allTypes, abi.Batch{
			Times: []int64{-5, 0, 1_700_000_000_123},
			Columns: []abi.BatchColumn{
				{Ints: []int64{math.MinInt64, 0, math.MaxInt64}},
				{Floats: []float64{-0.5, math.Inf(1), 1e300}},
				strs("a", "", "héllo"),
			},
		}},
		{"all types with raw", withRaw(allTypes), abi.Batch{
			Times: []int64{1, 2},
			Columns: []abi.BatchColumn{
				{Ints: []int64{7, 8}}, {Floats: []float64{0.25, 0.125}}, strs("x", "yz"),
			},
			Raw: ptr(strs(`{"i":7}`, `{"i":8,"f":0.125}`)),
		}},
		{"empty", allTypes, abi.Batch{
			Times:   []int64{},
			Columns: []abi.BatchColumn{{Ints: []int64{}}, {Floats: []float64{}}, strs()},
		}},
		{"empty with raw", withRaw(allTypes), abi.Batch{
			Times:   []int64{},
			Columns: []abi.BatchColumn{{Ints: []int64{}}, {Floats: []float64{}}, strs()},
			Raw:     ptr(strs()),
		}},
		{"raw only", &abi.Schema{ABI: abi.Version, Raw: true}, abi.Batch{
			Times: []int64{3}, Columns: []abi.BatchColumn{}, Raw: ptr(strs("{}")),
		}},
		{"large strings", withRaw(allTypes), abi.Batch{
			Times:   []int64{1, 2, 3},
			Columns: []abi.BatchColumn{{Ints: []int64{1, 2, 3}}, {Floats: []float64{1, 2, 3}}, strs(big, "", big[:7])},
			Raw:     ptr(strs("", big, "z")),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			enc := abi.NewBatchEncoder(c.schema)
			buf, err := enc.Encode(&c.batch)
			if err != nil {
				t.Fatal(err)
			}
			if len(buf)%8 != 0 {
				t.Errorf("batch of %d bytes is not a multiple of 8", len(buf))
			}
			var got abi.Batch
			if err := abi.DecodeBatch(buf, types(c.schema), c.schema.Raw, &got); err != nil {
				t.Fatal(err)
			}
			if got.Len() != c.batch.Len() {
				t.Fatalf("Len = %d, want %d", got.Len(), c.batch.Len())
			}
			if g, w := normal(c.schema, &got), normal(c.schema, &c.batch); !reflect.DeepEqual(g, w) {
				t.Fatalf("decoded %+v, want %+v", g, w)
			}
			again, err := abi.NewBatchEncoder(c.schema).Encode(&got)
			if err != nil || !bytes.Equal(again, buf) {
				t.Fatalf("re-encoding differs (err %v)", err)
			}
		})
	}
}

func TestBatch_StrAliasesTheBuffer(t *testing.T) {
	s := &abi.Schema{ABI: abi.Version, Input: []abi.Field{{Name: "s", Type: abi.String}}}
	buf, err := abi.NewBatchEncoder(s).Encode(&abi.Batch{Times: []int64{1, 2}, Columns: []abi.BatchColumn{strs("ab", "cde")}})
	if err != nil {
		t.Fatal(err)
	}
	var b abi.Batch
	if err := abi.DecodeBatch(buf, types(s), false, &b); err != nil {
		t.Fatal(err)
	}
	if got := string(b.Columns[0].Str(1)); got != "cde" {
		t.Fatalf("Str(1) = %q", got)
	}
	i := bytes.Index(buf, []byte("abcde"))
	buf[i] = 'X'
	if got := string(b.Columns[0].Str(0)); got != "Xb" {
		t.Fatalf("Str(0) = %q after changing the buffer, want an alias", got)
	}
}

// Numeric columns alias an 8-aligned input (on a little-endian machine),
// and a later decode of an unaligned input, which copies, must not write
// into the memory of the earlier one.
func TestDecodeBatch_NumbersAliasAnAlignedInput(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("big-endian: numeric columns are always copied")
	}
	s := &abi.Schema{ABI: abi.Version, Input: []abi.Field{{Name: "i", Type: abi.Int64}, {Name: "f", Type: abi.Float64}}}
	enc := abi.NewBatchEncoder(s)
	encode := func(b *abi.Batch, shift int) []byte {
		buf, err := enc.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		mem := make([]uint64, len(buf)/8+2) // 8-aligned
		out := unsafe.Slice((*byte)(unsafe.Pointer(&mem[0])), 8*len(mem))[shift : shift+len(buf)]
		copy(out, buf)
		return out
	}
	first := encode(&abi.Batch{Times: []int64{1, 2}, Columns: []abi.BatchColumn{{Ints: []int64{10, 20}}, {Floats: []float64{0.5, 1.5}}}}, 0)
	keep := append([]byte(nil), first...)
	var dst abi.Batch
	if err := abi.DecodeBatch(first, types(s), false, &dst); err != nil {
		t.Fatal(err)
	}
	if &dst.Times[0] != (*int64)(unsafe.Pointer(&first[32])) || dst.Columns[0].Ints[1] != 20 || dst.Columns[1].Floats[0] != 0.5 {
		t.Fatalf("aligned input: times %v at %p, ints %v, floats %v: want views of the input", dst.Times, &dst.Times[0], dst.Columns[0].Ints, dst.Columns[1].Floats)
	}
	second := encode(&abi.Batch{Times: []int64{7, 8}, Columns: []abi.BatchColumn{{Ints: []int64{70, 80}}, {Floats: []float64{7.5, 8.5}}}}, 1)
	if err := abi.DecodeBatch(second, types(s), false, &dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, keep) {
		t.Fatal("decoding an unaligned input wrote into the earlier input")
	}
	if fmt.Sprint(dst.Times, dst.Columns[0].Ints, dst.Columns[1].Floats) != "[7 8] [70 80] [7.5 8.5]" {
		t.Fatalf("unaligned input decoded as %v %v %v", dst.Times, dst.Columns[0].Ints, dst.Columns[1].Floats)
	}
}

func TestDecodeBatch_ReusesDst(t *testing.T) {
	s := withRaw(allTypes)
	enc := abi.NewBatchEncoder(s)
	var dst abi.Batch
	for _, n := range []int{3, 1, 0, 2} {
		b := abi.Batch{Columns: []abi.BatchColumn{{Ints: []int64{}}, {Floats: []float64{}}, strs()}}
		var ss, raws []string
		for i := range n {
			b.Times = append(b.Times, int64(i))
			b.Columns[0].Ints = append(b.Columns[0].Ints, int64(10*n+i))
			b.Columns[1].Floats = append(b.Columns[1].Floats, float64(i)/2)
			ss = append(ss, fmt.Sprint("s", n, i))
			raws = append(raws, fmt.Sprint("r", n, i))
		}
		b.Columns[2] = strs(ss...)
		b.Raw = ptr(strs(raws...))
		buf, err := enc.Encode(&b)
		if err != nil {
			t.Fatal(err)
		}
		if err := abi.DecodeBatch(buf, types(s), true, &dst); err != nil {
			t.Fatal(err)
		}
		if g, w := normal(s, &dst), normal(s, &b); !reflect.DeepEqual(g, w) {
			t.Fatalf("n=%d: decoded %+v, want %+v", n, g, w)
		}
	}
}

func TestBatchEncoder_RefusesMismatches(t *testing.T) {
	good := func() abi.Batch {
		return abi.Batch{Times: []int64{1, 2}, Columns: []abi.BatchColumn{{Ints: []int64{1, 2}}, {Floats: []float64{1, 2}}, strs("a", "b")}}
	}
	for _, c := range []struct {
		name   string
		schema *abi.Schema
		mutate func(*abi.Batch)
		want   string
	}{
		{"missing column", allTypes, func(b *abi.Batch) { b.Columns = b.Columns[:2] }, "do not match the schema"},
		{"raw not declared", allTypes, func(b *abi.Batch) { b.Raw = ptr(strs("a", "b")) }, "do not match the schema"},
		{"raw missing", withRaw(allTypes), func(b *abi.Batch) {}, "do not match the schema"},
		{"short ints", allTypes, func(b *abi.Batch) { b.Columns[0].Ints = b.Columns[0].Ints[:1] }, "column 0 has 1 values, want 2"},
		{"short floats", allTypes, func(b *abi.Batch) { b.Columns[1].Floats = nil }, "column 1 has 0 values, want 2"},
		{"short offsets", allTypes, func(b *abi.Batch) { b.Columns[2].Offsets = b.Columns[2].Offsets[:2] }, "column 2: offsets do not describe"},
		{"offsets past the data", allTypes, func(b *abi.Batch) { b.Columns[2].Offsets[2] = 9 }, "column 2: offsets do not describe"},
		{"first offset not zero", allTypes, func(b *abi.Batch) { b.Columns[2].Offsets[0] = 1 }, "column 2: offsets do not describe"},
		{"offsets backwards", allTypes, func(b *abi.Batch) { b.Columns[2].Offsets[1] = 3 }, "column 2: offsets go backwards"},
		{"bad raw", withRaw(allTypes), func(b *abi.Batch) { b.Raw = ptr(strs("a")) }, "raw column: offsets"},
		{"unknown type", &abi.Schema{Input: []abi.Field{{Name: "x", Type: "int32"}}}, func(b *abi.Batch) { b.Columns = b.Columns[:1] }, `unknown type "int32"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := good()
			c.mutate(&b)
			_, err := abi.NewBatchEncoder(c.schema).Encode(&b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Encode: %v, want an error containing %q", err, c.want)
			}
		})
	}
	if _, err := abi.NewBatchEncoder(allTypes).Encode(&abi.Batch{Times: make([]int64, abi.MaxBatchRecords+1)}); err == nil {
		t.Fatal("Encode accepted more than MaxBatchRecords records")
	}
}

func TestDecodeBatch_RefusesMalformed(t *testing.T) {
	s := withRaw(allTypes)
	good, err := abi.NewBatchEncoder(s).Encode(&abi.Batch{
		Times:   []int64{1, 2},
		Columns: []abi.BatchColumn{{Ints: []int64{1, 2}}, {Floats: []float64{1, 2}}, strs("a", "bcd")},
		Raw:     ptr(strs("{}", "{ }")),
	})
	if err != nil {
		t.Fatal(err)
	}
	good = bytes.Clone(good)
	le := binary.LittleEndian
	// Layout of good: header 32, times 16, ints 16, floats 16,
	// strings offsets 12+4 pad, data 4+4 pad, raw offsets 12+4, data 5+3.
	const strOff, strData, rawData = 80, 96, 120
	for _, c := range []struct {
		name   string
		mutate func([]byte) []byte
		types  []abi.Type
		raw    bool
		want   string
	}{
		{"short", func(b []byte) []byte { return b[:31] }, nil, true, "shorter than the header"},
		{"magic", func(b []byte) []byte { b[0]++; return b }, nil, true, "bad magic"},
		{"too many records", func(b []byte) []byte { le.PutUint32(b[4:], abi.MaxBatchRecords+1); return b }, nil, true, "records"},
		{"field count", nil, types(allTypes)[:2], true, "3 fields, the schema declares 2"},
		{"raw flag", nil, nil, false, "raw flag"},
		{"unknown flag", func(b []byte) []byte { b[12] |= 2; return b }, nil, true, "unknown flags"},
		{"length", func(b []byte) []byte { return append(b, make([]byte, 8)...) }, nil, true, "header says"},
		{"reserved", func(b []byte) []byte { b[24] = 1; return b }, nil, true, "reserved"},
		{"truncated", func(b []byte) []byte { b = b[:len(b)-8]; le.PutUint64(b[16:], uint64(len(b))); return b }, nil, true, "overruns"},
		{"trailing", func(b []byte) []byte {
			b = append(b, make([]byte, 8)...)
			le.PutUint64(b[16:], uint64(len(b)))
			return b
		}, nil, true, "trailing"},
		{"first offset", func(b []byte) []byte { le.PutUint32(b[strOff:], 1); return b }, nil, true, "backwards"},
		{"offsets backwards", func(b []byte) []byte { le.PutUint32(b[strOff+4:], 2); le.PutUint32(b[strOff+8:], 1); return b }, nil, true, "backwards"},
		{"offset past the end", func(b []byte) []byte { le.PutUint32(b[strOff+8:], 1<<30); return b }, nil, true, "overruns"},
		{"offset padding", func(b []byte) []byte { b[strOff+12] = 1; return b }, nil, true, "padding"},
		{"data padding", func(b []byte) []byte { b[strData+4] = ' '; return b }, nil, true, "padding"},
		{"raw padding", func(b []byte) []byte { b[rawData+5] = ' '; return b }, nil, true, "padding"},
		{"unknown type", nil, []abi.Type{abi.Int64, "int32", abi.String}, true, "unknown type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(good)
			if c.mutate != nil {
				b = c.mutate(b)
			}
			ts := c.types
			if ts == nil {
				ts = types(allTypes)
			}
			var dst abi.Batch
			err := abi.DecodeBatch(b, ts, c.raw, &dst)
			if !errors.Is(err, abi.ErrBatch) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("DecodeBatch: %v, want ErrBatch containing %q", err, c.want)
			}
		})
	}
	// The test's offsets are right: the unmodified batch decodes.
	var dst abi.Batch
	if err := abi.DecodeBatch(good, types(allTypes), true, &dst); err != nil || string(dst.Raw.Str(1)) != "{ }" || string(dst.Columns[2].Str(1)) != "bcd" {
		t.Fatalf("good batch: %v", err)
	}
}

// fuzzShapes are the input declarations FuzzDecodeBatch decodes against.
var fuzzShapes = []*abi.Schema{
	allTypes,
	withRaw(allTypes),
	{ABI: abi.Version, Raw: true},
	{ABI: abi.Version, Input: []abi.Field{{Name: "a", Type: abi.String}, {Name: "b", Type: abi.String}}},
	{ABI: abi.Version, Input: []abi.Field{{Name: "a", Type: abi.Int64}}},
}

// FuzzDecodeBatch checks that any bytes decode without panicking, and that
// a batch that decodes re-encodes to exactly the same bytes: the encoding is
// canonical (zero padding, zero reserved bits, monotonic offsets).
func FuzzDecodeBatch(f *testing.F) {
	for i, s := range fuzzShapes {
		n := 3
		b := abi.Batch{Times: make([]int64, n)}
		for _, fd := range s.Input {
			switch fd.Type {
			case abi.Int64:
				b.Columns = append(b.Columns, abi.BatchColumn{Ints: []int64{1, -2, 3}})
			case abi.Float64:
				b.Columns = append(b.Columns, abi.BatchColumn{Floats: []float64{0.5, math.NaN(), -1}})
			case abi.String:
				b.Columns = append(b.Columns, strs("poll", "", "option-a"))
			}
		}
		if s.Raw {
			b.Raw = ptr(strs(`{"a":1}`, "", "{}"))
		}
		buf, err := abi.NewBatchEncoder(s).Encode(&b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), bytes.Clone(buf))
	}
	f.Fuzz(func(t *testing.T, shape uint8, data []byte) {
		s := fuzzShapes[int(shape)%len(fuzzShapes)]
		var b abi.Batch
		if err := abi.DecodeBatch(data, types(s), s.Raw, &b); err != nil {
			if !errors.Is(err, abi.ErrBatch) {
				t.Fatalf("error %v does not wrap ErrBatch", err)
			}
			return
		}
		for i := range b.Columns {
			if b.Columns[i].Offsets != nil {
				for r := range b.Len() {
					_ = b.Columns[i].Str(r)
				}
			}
		}
		again, err := abi.NewBatchEncoder(s).Encode(&b)
		if err != nil {
			t.Fatalf("decoded batch does not re-encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, data)
		}
	})
}

func ExampleBatchEncoder() {
	schema := &abi.Schema{ABI: abi.Version, Input: []abi.Field{
		{Name: "poll_id", Type: abi.Int64},
		{Name: "option", Type: abi.String},
	}}
	enc := abi.NewBatchEncoder(schema)
	buf, err := enc.Encode(&abi.Batch{
		Times: []int64{1_700_000_000_000, 1_700_000_000_500},
		Columns: []abi.BatchColumn{
			{Ints: []int64{42, 42}},
			{Offsets: []uint32{0, 3, 5}, Data: []byte("yesno")},
		},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(len(buf), "bytes")

	var b abi.Batch
	if err := abi.DecodeBatch(buf, []abi.Type{abi.Int64, abi.String}, false, &b); err != nil {
		panic(err)
	}
	for i := range b.Len() {
		fmt.Println(b.Times[i], b.Columns[0].Ints[i], string(b.Columns[1].Str(i)))
	}
	// Output:
	// 88 bytes
	// 1700000000000 42 yes
	// 1700000000500 42 no
}
