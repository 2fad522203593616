package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// A distinct metric's value is a HyperLogLog sketch of precision
// SketchPrecision: SketchRegisters registers, each the highest rank seen
// among the values hashed to it. Registers merge by max, so the sketches of
// one group from several partitions merge into the sketch of their union.
//
// Every SDK computes the same registers for the same values (ABI.md,
// "Distinct counts"):
//
//	h     = fmix64(fnv1a64(bytes))      a string's bytes; an int64's 8 little-endian bytes
//	index = h >> 52                     the top 12 bits
//	rank  = clz64(h<<12 | 1<<11) + 1    1 to 53
//
// fnv1a64 is FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
// 0x100000001b3); fmix64 is MurmurHash3's finalizer.
const (
	SketchPrecision = 12
	SketchRegisters = 1 << SketchPrecision
	SketchMaxRank   = 64 - SketchPrecision + 1
	// SketchSparseMax is the most registers set that a sketch encodes
	// sparse (4 bytes each, below the 4096 of the dense form).
	SketchSparseMax = SketchRegisters/4 - 1
	// SketchMaxBytes is the largest encoding of a sketch's registers.
	SketchMaxBytes = SketchRegisters
)

// SketchAlphaMM is HyperLogLog's alpha(m) * m * m for m = SketchRegisters,
// the numerator of the raw estimate (the same constant in the ClickHouse
// view, so that both give the same count).
var SketchAlphaMM = 0.7213 / (1 + 1.079/float64(SketchRegisters)) * SketchRegisters * SketchRegisters

// Sketch is a HyperLogLog sketch: sparse (the set registers as entries
// index<<6 | rank, in increasing index) while at most SketchSparseMax
// registers are set, dense (one byte per register) beyond. The zero value
// is the empty sketch.
type Sketch struct {
	entries []uint32
	regs    []uint8
}

// HashString and HashInt64 are the hashes a distinct metric's values go
// through before they reach the registers.
func HashString(b []byte) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, c := range b {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return fmix64(h)
}

// HashInt64 hashes an int64 as its 8 little-endian bytes.
func HashInt64(v int64) uint64 {
	h := uint64(0xcbf29ce484222325)
	u := uint64(v)
	for range 8 {
		h ^= u & 0xff
		h *= 0x100000001b3
		u >>= 8
	}
	return fmix64(h)
}

func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// SketchRegister returns the register a hash goes to and the rank it offers.
func SketchRegister(h uint64) (index uint32, rank uint8) {
	return uint32(h >> (64 - SketchPrecision)), uint8(bits.LeadingZeros64(h<<SketchPrecision|1<<(SketchPrecision-1)) + 1)
}

// AddString folds a string value in; it reports whether a register grew.
func (s *Sketch) AddString(b []byte) bool { return s.AddHash(HashString(b)) }

// AddInt64 folds an int64 value in; it reports whether a register grew.
func (s *Sketch) AddInt64(v int64) bool { return s.AddHash(HashInt64(v)) }

// AddHash folds in a value already hashed with HashString or HashInt64.
func (s *Sketch) AddHash(h uint64) bool {
	i, r := SketchRegister(h)
	return s.set(i, r)
}

func (s *Sketch) set(i uint32, r uint8) bool {
	if s.regs != nil {
		if s.regs[i] >= r {
			return false
		}
		s.regs[i] = r
		return true
	}
	e := i<<6 | uint32(r)
	at, found := slices.BinarySearchFunc(s.entries, i, func(x, i uint32) int { return int(x>>6) - int(i) })
	if found {
		if s.entries[at] >= e {
			return false
		}
		s.entries[at] = e
		return true
	}
	s.entries = slices.Insert(s.entries, at, e)
	if len(s.entries) > SketchSparseMax {
		s.densify()
	}
	return true
}

func (s *Sketch) densify() {
	s.regs = make([]uint8, SketchRegisters)
	for _, e := range s.entries {
		s.regs[e>>6] = uint8(e & 63)
	}
	s.entries = nil
}

// Merge folds o into s: each register takes the larger of the two.
func (s *Sketch) Merge(o *Sketch) {
	if o.regs != nil {
		if s.regs == nil {
			s.densify()
		}
		for i, r := range o.regs {
			s.regs[i] = max(s.regs[i], r)
		}
		return
	}
	if s.regs != nil || len(s.entries)+len(o.entries) > 2*SketchSparseMax {
		for _, e := range o.entries {
			s.set(e>>6, uint8(e&63))
		}
		return
	}
	out := make([]uint32, 0, len(s.entries)+len(o.entries))
	a, b := s.entries, o.entries
	for len(a) > 0 && len(b) > 0 {
		switch ia, ib := a[0]>>6, b[0]>>6; {
		case ia < ib:
			out, a = append(out, a[0]), a[1:]
		case ia > ib:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, max(a[0], b[0])), a[1:], b[1:]
		}
	}
	out = append(append(out, a...), b...)
	s.entries = out
	if len(s.entries) > SketchSparseMax {
		s.densify()
	}
}

// Size is the bytes its registers take in memory: 4 per entry while
// sparse, SketchRegisters once dense.
func (s *Sketch) Size() int { return 4*len(s.entries) + len(s.regs) }

// Clone returns a copy of s that shares no memory with it.
func (s *Sketch) Clone() *Sketch {
	return &Sketch{entries: slices.Clone(s.entries), regs: slices.Clone(s.regs)}
}

// Equal reports whether two sketches hold the same registers.
func (s *Sketch) Equal(o *Sketch) bool {
	return slices.Equal(s.entries, o.entries) && slices.Equal(s.regs, o.regs)
}

// Entries appends the set registers as index<<6 | rank, in increasing
// index: the form the ClickHouse table stores (docs/clickhouse.md).
func (s *Sketch) Entries(dst []uint32) []uint32 {
	if s.regs == nil {
		return append(dst, s.entries...)
	}
	for i, r := range s.regs {
		if r != 0 {
			dst = append(dst, uint32(i)<<6|uint32(r))
		}
	}
	return dst
}

// Estimate is the distinct count the sketch estimates: HyperLogLog's
// harmonic mean of the registers, or linear counting while that is below
// 2.5 registers per value and a register is still empty, rounded half up.
// Its relative standard error is about 1.04/sqrt(4096), 1.6% (ABI.md).
func (s *Sketch) Estimate() int64 {
	const m = float64(SketchRegisters)
	var sum float64
	set := 0
	add := func(r uint8) {
		if r != 0 {
			sum += math.Ldexp(1, -int(r))
			set++
		}
	}
	if s.regs != nil {
		for _, r := range s.regs {
			add(r)
		}
	} else {
		for _, e := range s.entries {
			add(uint8(e & 63))
		}
	}
	zeros := SketchRegisters - set
	sum += float64(zeros)
	e := SketchAlphaMM / sum
	if e <= 2.5*m && zeros > 0 {
		e = m * math.Log(m/float64(zeros))
	}
	return int64(math.Floor(e + 0.5))
}

// AppendEncoded appends the sketch as a row carries it: u32 length, then
// the sparse entries (4 bytes each) or the dense registers (SketchRegisters
// bytes, one per register).
func (s *Sketch) AppendEncoded(b []byte) []byte {
	if s.regs != nil {
		b = binary.LittleEndian.AppendUint32(b, SketchRegisters)
		return append(b, s.regs...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(4*len(s.entries)))
	for _, e := range s.entries {
		b = binary.LittleEndian.AppendUint32(b, e)
	}
	return b
}

// ErrSketch is wrapped by every sketch decoding error.
var ErrSketch = errors.New("abi: malformed sketch")

// DecodeSketch decodes the sketch at the start of b (as AppendEncoded wrote
// it) and returns it with the bytes it took. A sketch has one encoding: it
// refuses entries out of order, ranks beyond SketchMaxRank, a dense form
// with few registers set and a sparse one with many.
func DecodeSketch(b []byte) (*Sketch, int, error) {
	if len(b) < 4 {
		return nil, 0, fmt.Errorf("%w: truncated length", ErrSketch)
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > SketchMaxBytes || len(b)-4 < n {
		return nil, 0, fmt.Errorf("%w: %d bytes", ErrSketch, n)
	}
	body := b[4 : 4+n]
	s := &Sketch{}
	if n == SketchRegisters {
		set := 0
		for i, r := range body {
			if r > SketchMaxRank {
				return nil, 0, fmt.Errorf("%w: register %d has rank %d", ErrSketch, i, r)
			}
			if r != 0 {
				set++
			}
		}
		if set <= SketchSparseMax {
			return nil, 0, fmt.Errorf("%w: dense with %d registers set, at most %d are sparse", ErrSketch, set, SketchSparseMax)
		}
		s.regs = slices.Clone(body)
		return s, 4 + n, nil
	}
	if n%4 != 0 {
		return nil, 0, fmt.Errorf("%w: %d bytes of sparse entries", ErrSketch, n)
	}
	if n > 0 {
		s.entries = make([]uint32, n/4)
	}
	for k := range s.entries {
		s.entries[k] = binary.LittleEndian.Uint32(body[4*k:])
	}
	if err := checkEntries(s.entries); err != nil {
		return nil, 0, err
	}
	return s, 4 + n, nil
}

// SketchFromEntries builds a sketch from its set registers, as Entries
// lists them (and the ClickHouse table stores them).
func SketchFromEntries(entries []uint32) (*Sketch, error) {
	if len(entries) > SketchRegisters {
		return nil, fmt.Errorf("%w: %d entries", ErrSketch, len(entries))
	}
	if err := checkEntries(entries); err != nil {
		return nil, err
	}
	s := &Sketch{entries: slices.Clone(entries)}
	if len(s.entries) > SketchSparseMax {
		s.densify()
	}
	return s, nil
}

func checkEntries(entries []uint32) error {
	for k, e := range entries {
		if r := e & 63; r == 0 || r > SketchMaxRank {
			return fmt.Errorf("%w: entry %d has rank %d", ErrSketch, k, r)
		}
		if e>>6 >= SketchRegisters {
			return fmt.Errorf("%w: entry %d names register %d", ErrSketch, k, e>>6)
		}
		if k > 0 && e>>6 <= entries[k-1]>>6 {
			return fmt.Errorf("%w: entry %d out of order", ErrSketch, k)
		}
	}
	return nil
}
