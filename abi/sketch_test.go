package abi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"testing"

	"github.com/wagg/wagg/abi"
)

var distinctSchema = &abi.Schema{
	ABI:   abi.Version,
	Input: []abi.Field{{Name: "user", Type: abi.String}},
	Keys:  []abi.Column{{Name: "poll", Type: abi.String}},
	Metrics: []abi.Metric{
		{Name: "votes", Kind: abi.Count, Type: abi.Int64},
		{Name: "voters", Kind: abi.Distinct, Type: abi.Int64},
		{Name: "options", Kind: abi.Distinct, Type: abi.Int64},
	},
}

// sketchOf is the sketch of the int64 values from, from+1, ... from+n-1.
func sketchOf(from, n int) *abi.Sketch {
	s := &abi.Sketch{}
	for v := from; v < from+n; v++ {
		s.AddInt64(int64(v))
	}
	return s
}

// sketchError is the relative standard error the docs promise.
var sketchError = 1.04 / math.Sqrt(abi.SketchRegisters)

// TestSketch_HashIsFNV1aThenFmix64 checks the hash against the standard
// library's FNV-1a and MurmurHash3's finalizer written out again here.
func TestSketch_HashIsFNV1aThenFmix64(t *testing.T) {
	fmix := func(h uint64) uint64 {
		h = (h ^ h>>33) * 0xff51afd7ed558ccd
		h = (h ^ h>>33) * 0xc4ceb9fe1a85ec53
		return h ^ h>>33
	}
	for _, s := range []string{"", "a", "user-42", strings.Repeat("é", 100)} {
		f := fnv.New64a()
		f.Write([]byte(s))
		if got, want := abi.HashString([]byte(s)), fmix(f.Sum64()); got != want {
			t.Errorf("HashString(%q) = %#x, want %#x", s, got, want)
		}
	}
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 40} {
		f := fnv.New64a()
		f.Write(binary.LittleEndian.AppendUint64(nil, uint64(v)))
		if got, want := abi.HashInt64(v), fmix(f.Sum64()); got != want {
			t.Errorf("HashInt64(%d) = %#x, want %#x", v, got, want)
		}
	}
}

func TestSketch_RegisterAndRank(t *testing.T) {
	for _, c := range []struct {
		h     uint64
		index uint32
		rank  uint8
	}{
		{0, 0, abi.SketchMaxRank},
		{math.MaxUint64, abi.SketchRegisters - 1, 1},
		{0xabc0_0000_0000_0000 | 1<<51, 0xabc, 1},
		{0xabc0_0000_0000_0000 | 1<<50, 0xabc, 2},
		{0x0010_0000_0000_0001, 1, 52},
	} {
		i, r := abi.SketchRegister(c.h)
		if i != c.index || r != c.rank {
			t.Errorf("SketchRegister(%#x) = %d, %d; want %d, %d", c.h, i, r, c.index, c.rank)
		}
	}
	for range 1000 {
		h := abi.HashInt64(int64(bits.Reverse64(uint64(len(t.Name())))))
		if _, r := abi.SketchRegister(h); r < 1 || r > abi.SketchMaxRank {
			t.Fatalf("rank %d out of range", r)
		}
	}
}

// TestSketch_EstimateWithinError checks the estimate against the exact
// count over cardinalities through both encodings and both estimators, for
// strings and ints: within 3 standard errors, and exact for a handful.
func TestSketch_EstimateWithinError(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 100, 500, 1000, 3000, 10_000, 20_000, 100_000, 1_000_000} {
		ints, strs := &abi.Sketch{}, &abi.Sketch{}
		for v := range n {
			ints.AddInt64(int64(v) * 7919)
			strs.AddString([]byte("user-" + strconv.Itoa(v)))
			if v%3 == 0 { // repeats change nothing
				ints.AddInt64(int64(v) * 7919)
				strs.AddString([]byte("user-" + strconv.Itoa(v)))
			}
		}
		for name, s := range map[string]*abi.Sketch{"ints": ints, "strings": strs} {
			got := s.Estimate()
			if n <= 10 && got != int64(n) {
				t.Errorf("%s: %d values estimated %d, want exact", name, n, got)
			}
			if diff := math.Abs(float64(got - int64(n))); diff > 3*sketchError*float64(n) {
				t.Errorf("%s: %d values estimated %d, off by %.2f%%, more than 3 standard errors (%.2f%%)",
					name, n, got, 100*diff/float64(n), 300*sketchError)
			}
		}
	}
}

// TestSketch_MergeIsTheUnion checks that merging the sketches of parts of
// a set, in any order and overlapping, gives the sketch of the whole, sparse
// or dense.
func TestSketch_MergeIsTheUnion(t *testing.T) {
	for _, n := range []int{0, 5, 400, abi.SketchSparseMax, abi.SketchSparseMax + 1, 3000, 50_000} {
		whole := sketchOf(0, n)
		parts := make([]*abi.Sketch, 12)
		for i := range parts {
			parts[i] = &abi.Sketch{}
		}
		for v := range n {
			parts[v%12].AddInt64(int64(v))
			parts[(v*7)%12].AddInt64(int64(v)) // overlaps
		}
		fwd, back := &abi.Sketch{}, &abi.Sketch{}
		for i := range parts {
			fwd.Merge(parts[i])
			back.Merge(parts[len(parts)-1-i])
		}
		if !fwd.Equal(whole) || !back.Equal(whole) {
			t.Errorf("n=%d: merged parts differ from the sketch of the whole", n)
		}
		self := whole.Clone()
		self.Merge(whole)
		if !self.Equal(whole) {
			t.Errorf("n=%d: merging a sketch into itself changed it", n)
		}
	}
}

func TestSketch_EncodingRoundTripsAndIsCanonical(t *testing.T) {
	for _, n := range []int{0, 1, 100, 700, 800, 1000, 2000, 200_000} {
		s := sketchOf(n, n)
		b := s.AppendEncoded([]byte{0xee})
		got, k, err := abi.DecodeSketch(b[1:])
		if err != nil || k != len(b)-1 || !got.Equal(s) {
			t.Fatalf("n=%d: DecodeSketch = %v, %d, %v", n, got, k, err)
		}
		entries := s.Entries(nil)
		set := len(entries)
		dense := set > abi.SketchSparseMax
		if size := len(b) - 5; dense && size != abi.SketchRegisters || !dense && size != 4*set {
			t.Errorf("n=%d: %d registers set encode in %d bytes", n, set, size)
		}
		fromEntries, err := abi.SketchFromEntries(entries)
		if err != nil || !fromEntries.Equal(s) || !bytes.Equal(fromEntries.AppendEncoded(nil), b[1:]) {
			t.Errorf("n=%d: SketchFromEntries(Entries) = %v, %v", n, fromEntries, err)
		}
	}
}

func TestDecodeSketch_RefusesMalformed(t *testing.T) {
	le := binary.LittleEndian
	sparse := func(entries ...uint32) []byte {
		b := le.AppendUint32(nil, uint32(4*len(entries)))
		for _, e := range entries {
			b = le.AppendUint32(b, e)
		}
		return b
	}
	dense := func(set int) []byte {
		b := le.AppendUint32(nil, abi.SketchRegisters)
		regs := make([]byte, abi.SketchRegisters)
		for i := range set {
			regs[i] = 1
		}
		return append(b, regs...)
	}
	tooHigh := dense(2000)
	tooHigh[4+9] = abi.SketchMaxRank + 1
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"no length", []byte{1, 0}, "truncated length"},
		{"past the end", le.AppendUint32(nil, 8), "8 bytes"},
		{"too long", append(le.AppendUint32(nil, abi.SketchRegisters+4), make([]byte, abi.SketchRegisters+4)...), "4100 bytes"},
		{"ragged", append(le.AppendUint32(nil, 6), make([]byte, 6)...), "6 bytes of sparse"},
		{"rank zero", sparse(5 << 6), "rank 0"},
		{"rank too high", sparse(5<<6 | abi.SketchMaxRank + 1), "rank 54"},
		{"out of order", sparse(5<<6|1, 4<<6|1), "entry 1 out of order"},
		{"twice", sparse(5<<6|1, 5<<6|2), "entry 1 out of order"},
		{"dense but few", dense(abi.SketchSparseMax), "dense with 1023 registers set"},
		{"dense rank too high", tooHigh, "register 9 has rank 54"},
	} {
		if _, _, err := abi.DecodeSketch(c.b); !errors.Is(err, abi.ErrSketch) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: DecodeSketch: %v, want ErrSketch containing %q", c.name, err, c.want)
		}
	}
	if _, err := abi.SketchFromEntries([]uint32{abi.SketchRegisters<<6 | 1}); !errors.Is(err, abi.ErrSketch) {
		t.Errorf("SketchFromEntries(register 4096): %v, want ErrSketch", err)
	}
}

func TestRows_DistinctRoundTrip(t *testing.T) {
	var w abi.RowsWriter
	w.Reset()
	small, big := sketchOf(0, 42), sketchOf(100, 9000)
	w.AppendSketches(0, false, 0, abi.AppendKeyString(nil, []byte("p1")), []uint64{3, 0, 0}, []*abi.Sketch{nil, small, big})
	w.AppendSketches(1, true, 60_000, abi.AppendKeyString(nil, []byte("p2")), []uint64{0, 0, 0}, []*abi.Sketch{nil, &abi.Sketch{}, small})
	rows, err := abi.DecodeRows(w.Bytes(), distinctSchema, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Metrics[0] != 3 || rows[0].Sketches[0] != nil ||
		!rows[0].Sketches[1].Equal(small) || !rows[0].Sketches[2].Equal(big) || !rows[1].Sketches[1].Equal(&abi.Sketch{}) {
		t.Fatalf("decoded %+v", rows)
	}
	if got := int64(rows[0].Metrics[1]); got != small.Estimate() || got < 41 || got > 43 {
		t.Errorf("voters = %d, want the estimate %d of 42 values", got, small.Estimate())
	}
	buf := bytes.Clone(w.Bytes())
	buf = buf[:len(buf)-1]
	binary.LittleEndian.PutUint64(buf[8:], uint64(len(buf)))
	if _, err := abi.DecodeRows(buf, distinctSchema, 2, nil); !errors.Is(err, abi.ErrRows) || !errors.Is(err, abi.ErrSketch) {
		t.Errorf("truncated sketch: %v, want ErrRows and ErrSketch", err)
	}
}

func ExampleSketch() {
	// Two partitions see overlapping voters of one poll.
	var a, b abi.Sketch
	for u := range 600 {
		a.AddString(fmt.Appendf(nil, "user-%d", u))
	}
	for u := 400; u < 1000; u++ {
		b.AddString(fmt.Appendf(nil, "user-%d", u))
	}
	a.Merge(&b)
	fmt.Println(a.Estimate() > 950 && a.Estimate() < 1050)
	// Output: true
}

// BenchmarkSketch_Precision measures what the precision costs and buys:
// the root-mean-square relative error of a HyperLogLog with the ABI's hash
// and estimator at precisions 10 to 14 (50 sets each of 100 to 100k values),
// and the bytes of its dense registers. It chose SketchPrecision (RATIONALE.md).
func BenchmarkSketch_Precision(b *testing.B) {
	for p := 10; p <= 14; p++ {
		b.Run(fmt.Sprintf("p=%d", p), func(b *testing.B) {
			m := 1 << p
			var sq float64
			var sets int
			for range b.N {
				sq, sets = 0, 0
				for _, n := range []int{100, 1000, 10_000, 100_000} {
					for trial := range 50 {
						regs := make([]uint8, m)
						for v := range n {
							h := abi.HashInt64(int64(trial)<<40 | int64(v))
							i := h >> (64 - p)
							r := uint8(bits.LeadingZeros64(h<<p|1<<(p-1)) + 1)
							regs[i] = max(regs[i], r)
						}
						sum, zeros := 0.0, 0
						for _, r := range regs {
							sum += math.Ldexp(1, -int(r))
							if r == 0 {
								zeros++
							}
						}
						fm := float64(m)
						e := 0.7213 / (1 + 1.079/fm) * fm * fm / sum
						if e <= 2.5*fm && zeros > 0 {
							e = fm * math.Log(fm/float64(zeros))
						}
						rel := (math.Floor(e+0.5) - float64(n)) / float64(n)
						sq += rel * rel
						sets++
					}
				}
			}
			b.ReportMetric(100*math.Sqrt(sq/float64(sets)), "rms_error_%")
			b.ReportMetric(100*1.04/math.Sqrt(float64(m)), "theory_error_%")
			b.ReportMetric(float64(m), "dense_bytes")
		})
	}
}
