package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// A batch is the host's columnar encoding of decoded records, written into
// the guest's input buffer before wagg_process. Little-endian throughout;
// every section starts on an 8-byte boundary of the batch.
//
//	header (32 bytes)
//	  0  u32  BatchMagic
//	  4  u32  n, the number of records
//	  8  u32  f, the number of input fields (as declared, in order)
//	 12  u32  flags: bit 0 set when the raw section is present, others zero
//	 16  u64  total length of the batch in bytes
//	 24  u64  reserved, zero
//	timestamps  n x i64, event time in Unix milliseconds
//	per field, in schema order:
//	  int64, float64: n x 8 bytes
//	  string: (n+1) x u32 offsets into the column's data, padded to 8,
//	          then the data, padded to 8
//	raw (flag bit 0): one more string column with each record's value
//
// Offsets start at 0 and never decrease; padding is zero bytes. A decoder
// refuses anything else, so a batch that decodes has exactly one encoding.
const (
	BatchMagic  = 0x31424757 // "WGB1"
	batchHeader = 32
	flagRaw     = 1
)

// MaxBatchRecords bounds n so that offsets and lengths stay within u32.
const MaxBatchRecords = 1 << 20

// BatchColumn is one decoded input column of a batch. Exactly one of the slices is
// set, by the field's type.
type BatchColumn struct {
	Ints    []int64
	Floats  []float64
	Offsets []uint32 // string columns: n+1 offsets into Data
	Data    []byte
}

// Str returns record i of a string column without copying.
func (c *BatchColumn) Str(i int) []byte { return c.Data[c.Offsets[i]:c.Offsets[i+1]] }

// Batch is a decoded batch. Columns follow the schema's Input order; Raw is
// set when the schema asked for raw values.
type Batch struct {
	Times   []int64
	Columns []BatchColumn
	Raw     *BatchColumn
	// aliased: DecodeBatch left numeric columns that alias its input, which
	// the next decode must not reuse as memory of its own.
	aliased bool
}

// Len is the number of records.
func (b *Batch) Len() int { return len(b.Times) }

// BatchEncoder builds batches for one schema, reusing its buffer.
type BatchEncoder struct {
	types []Type
	raw   bool
	buf   []byte
}

// NewBatchEncoder returns an encoder for the schema's input.
func NewBatchEncoder(s *Schema) *BatchEncoder {
	e := &BatchEncoder{raw: s.Raw}
	for _, f := range s.Input {
		e.types = append(e.types, f.Type)
	}
	return e
}

// Encode lays out b and returns the bytes, valid until the next call.
func (e *BatchEncoder) Encode(b *Batch) ([]byte, error) {
	n := len(b.Times)
	if n > MaxBatchRecords {
		return nil, fmt.Errorf("abi: batch of %d records, at most %d", n, MaxBatchRecords)
	}
	if len(b.Columns) != len(e.types) || (b.Raw != nil) != e.raw {
		return nil, errors.New("abi: batch columns do not match the schema")
	}
	buf := e.buf[:0]
	buf = binary.LittleEndian.AppendUint32(buf, BatchMagic)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(e.types)))
	var flags uint32
	if e.raw {
		flags |= flagRaw
	}
	buf = binary.LittleEndian.AppendUint32(buf, flags)
	buf = append(buf, make([]byte, 16)...) // length and reserved, set below
	for _, t := range b.Times {
		buf = binary.LittleEndian.AppendUint64(buf, uint64(t))
	}
	for i, t := range e.types {
		c := &b.Columns[i]
		var err error
		switch t {
		case Int64:
			if len(c.Ints) != n {
				return nil, fmt.Errorf("abi: column %d has %d values, want %d", i, len(c.Ints), n)
			}
			for _, v := range c.Ints {
				buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
			}
		case Float64:
			if len(c.Floats) != n {
				return nil, fmt.Errorf("abi: column %d has %d values, want %d", i, len(c.Floats), n)
			}
			for _, v := range c.Floats {
				buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
			}
		case String:
			if buf, err = appendStrings(buf, c, n); err != nil {
				return nil, fmt.Errorf("abi: column %d: %w", i, err)
			}
		default:
			return nil, fmt.Errorf("abi: column %d has unknown type %q", i, t)
		}
	}
	if e.raw {
		var err error
		if buf, err = appendStrings(buf, b.Raw, n); err != nil {
			return nil, fmt.Errorf("abi: raw column: %w", err)
		}
	}
	if uint64(len(buf)) > math.MaxUint32 {
		return nil, errors.New("abi: batch larger than 4 GiB")
	}
	binary.LittleEndian.PutUint64(buf[16:], uint64(len(buf)))
	e.buf = buf
	return buf, nil
}

func appendStrings(buf []byte, c *BatchColumn, n int) ([]byte, error) {
	if len(c.Offsets) != n+1 || c.Offsets[0] != 0 || uint64(c.Offsets[n]) != uint64(len(c.Data)) {
		return nil, errors.New("offsets do not describe the data")
	}
	prev := uint32(0)
	for _, o := range c.Offsets {
		if o < prev {
			return nil, errors.New("offsets go backwards")
		}
		prev = o
		buf = binary.LittleEndian.AppendUint32(buf, o)
	}
	buf = pad8(buf)
	buf = append(buf, c.Data...)
	return pad8(buf), nil
}

func pad8(b []byte) []byte {
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

// ErrBatch is wrapped by every batch decoding error.
var ErrBatch = errors.New("abi: malformed batch")

// DecodeBatch decodes buf for the given input types into dst, reusing its
// slices. String data aliases buf, and so do the times and numeric columns
// on a little-endian machine when buf has them 8-aligned (a guest's input
// buffer does): otherwise they are copied out. It checks every length and
// offset, so any byte string is safe to pass.
func DecodeBatch(buf []byte, types []Type, raw bool, dst *Batch) error {
	if len(buf) < batchHeader {
		return fmt.Errorf("%w: %d bytes, shorter than the header", ErrBatch, len(buf))
	}
	le := binary.LittleEndian
	if le.Uint32(buf) != BatchMagic {
		return fmt.Errorf("%w: bad magic", ErrBatch)
	}
	n := int(le.Uint32(buf[4:]))
	if n > MaxBatchRecords {
		return fmt.Errorf("%w: %d records", ErrBatch, n)
	}
	if int(le.Uint32(buf[8:])) != len(types) {
		return fmt.Errorf("%w: %d fields, the schema declares %d", ErrBatch, le.Uint32(buf[8:]), len(types))
	}
	flags := le.Uint32(buf[12:])
	if flags&^flagRaw != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrBatch, flags)
	}
	if (flags&flagRaw != 0) != raw {
		return fmt.Errorf("%w: raw flag does not match the schema", ErrBatch)
	}
	if total := le.Uint64(buf[16:]); total != uint64(len(buf)) {
		return fmt.Errorf("%w: header says %d bytes, got %d", ErrBatch, total, len(buf))
	}
	if le.Uint64(buf[24:]) != 0 {
		return fmt.Errorf("%w: reserved header bytes are not zero", ErrBatch)
	}
	if dst.aliased { // those slices are buf's of the last call: not ours to fill
		dst.Times = nil
		for i := range dst.Columns {
			dst.Columns[i].Ints, dst.Columns[i].Floats = nil, nil
		}
	}
	r := reader{buf: buf, off: batchHeader}
	dst.Times = r.int64s(dst.Times[:0], n)
	defer func() { dst.aliased = r.aliased }()
	if cap(dst.Columns) < len(types) {
		dst.Columns = make([]BatchColumn, len(types))
	}
	dst.Columns = dst.Columns[:len(types)]
	for i, t := range types {
		c := &dst.Columns[i]
		*c = BatchColumn{Ints: c.Ints[:0], Floats: c.Floats[:0], Offsets: c.Offsets[:0]}
		switch t {
		case Int64:
			c.Ints = r.int64s(c.Ints, n)
		case Float64:
			c.Floats = r.float64s(c.Floats, n)
		case String:
			r.strings(c, n)
		default:
			return fmt.Errorf("%w: unknown type %q", ErrBatch, t)
		}
	}
	if raw {
		if dst.Raw == nil {
			dst.Raw = &BatchColumn{}
		}
		dst.Raw.Offsets, dst.Raw.Data = dst.Raw.Offsets[:0], nil
		r.strings(dst.Raw, n)
	} else {
		dst.Raw = nil
	}
	if r.err != nil {
		return r.err
	}
	if r.off != len(buf) {
		return fmt.Errorf("%w: %d trailing bytes", ErrBatch, len(buf)-r.off)
	}
	return nil
}

type reader struct {
	buf     []byte
	off     int
	err     error
	aliased bool // a column returned aliases buf
}

func (r *reader) take(k int) []byte {
	if r.err != nil {
		return nil
	}
	if k < 0 || k > len(r.buf)-r.off {
		r.err = fmt.Errorf("%w: section of %d bytes at %d overruns the batch", ErrBatch, k, r.off)
		return nil
	}
	b := r.buf[r.off : r.off+k]
	r.off += k
	return b
}

// int64s and float64s return a column as a view of the input where the
// machine and alignment allow (numeric columns are little-endian), else
// fill dst in place: in Wasm an append per value is a capacity check and a
// store of the length per value.
func (r *reader) int64s(dst []int64, n int) []int64 {
	b := r.take(8 * n)
	if v := view[int64](b); v != nil {
		r.aliased = true
		return v
	}
	dst = grow(dst, len(b)/8)
	for i := range dst {
		dst[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return dst
}

func (r *reader) float64s(dst []float64, n int) []float64 {
	b := r.take(8 * n)
	if v := view[float64](b); v != nil {
		r.aliased = true
		return v
	}
	dst = grow(dst, len(b)/8)
	for i := range dst {
		dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return dst
}

// littleEndian: the machine's numbers have the batch layout's byte order.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// view is b as 8-byte numbers, or nil when b is empty, not 8-aligned or
// the machine is big-endian.
func view[T int64 | float64](b []byte) []T {
	if !littleEndian || len(b) < 8 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 != 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

// grow returns s with length n, reusing its memory when it has room.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// padding takes k bytes of padding, which must be zero.
func (r *reader) padding(k int) {
	for _, b := range r.take(k) {
		if b != 0 {
			r.err = fmt.Errorf("%w: padding at %d is not zero", ErrBatch, r.off-k)
			return
		}
	}
}

func (r *reader) strings(c *BatchColumn, n int) {
	ob := r.take(4 * (n + 1))
	r.padding(pad(4 * (n + 1)))
	if r.err != nil {
		return
	}
	offs := grow(c.Offsets, len(ob)/4)
	prev, back := uint32(0), false
	for i := range offs {
		o := binary.LittleEndian.Uint32(ob[4*i:])
		back = back || o < prev
		prev, offs[i] = o, o
	}
	c.Offsets = offs
	if back || len(offs) > 0 && offs[0] != 0 {
		r.err = fmt.Errorf("%w: string offsets go backwards", ErrBatch)
		return
	}
	c.Data = r.take(int(prev))
	r.padding(pad(int(prev)))
}

func pad(k int) int { return (8 - k%8) % 8 }
