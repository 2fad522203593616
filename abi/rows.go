package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Rows are what a guest returns from wagg_flush: the absolute value of every
// group that changed since the last flush, and of every group of a window
// that the watermark closed (with the final flag). Little-endian, packed:
//
//	header (16 bytes)
//	  0  u32  RowsMagic
//	  4  u32  number of rows
//	  8  u64  total length in bytes
//	row
//	  u8   window index, into the deployment's windows (Config.Windows)
//	  u8   flags: bit 0 final
//	  i64  window start, Unix milliseconds (0 for a global window)
//	  key  per key column, in schema order: int64 and float64 as 8 bytes,
//	       string as u32 length then the bytes
//	  per metric, in schema order: 8 bytes (int64, or float64 bits); a
//	       distinct metric: its sketch (Sketch.AppendEncoded), u32 length
//	       then at most SketchMaxBytes bytes
const (
	RowsMagic  = 0x31524757 // "WGR1"
	rowsHeader = 16
	// RowFinal is a row's flag byte when its window has closed.
	RowFinal = 1
)

// Row is one output row. Key is the key columns in their encoded form, which
// makes it usable as a map key; Schema.KeyValues decodes it. Metrics hold each
// metric's 8 bytes: an int64, or a float64's bits. A distinct metric j has
// its sketch in Sketches[j] and, once decoded, its estimate in Metrics[j];
// Sketches is nil when the schema has no distinct metric, and its other
// entries are nil.
type Row struct {
	Window   uint8
	Final    bool
	Start    int64
	Key      string
	Metrics  []uint64
	Sketches []*Sketch
}

// Bytes is what the row's key, values and sketches take.
func (r *Row) Bytes() int { return len(r.Key) + 8*len(r.Metrics) + SketchesSize(r.Sketches) }

// SketchesSize is what sketches take (Sketch.Size of each; nil is none).
func SketchesSize(sks []*Sketch) int {
	n := 0
	for _, sk := range sks {
		if sk != nil {
			n += sk.Size()
		}
	}
	return n
}

// AppendKeyInt64 and friends build an encoded key.
func AppendKeyInt64(b []byte, v int64) []byte { return binary.LittleEndian.AppendUint64(b, uint64(v)) }

// AppendKeyFloat64 appends a float64 key column.
func AppendKeyFloat64(b []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

// AppendKeyString appends a string key column.
func AppendKeyString(b []byte, s []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// RowsWriter appends rows to a buffer. The zero value is ready; Reset starts
// a new set of rows on the same memory.
type RowsWriter struct {
	buf []byte
	n   uint32
}

// Reset empties w, keeping its memory.
func (w *RowsWriter) Reset() {
	w.buf = append(w.buf[:0], make([]byte, rowsHeader)...)
	w.n = 0
}

// Append adds a row whose key is already encoded, and which has no
// distinct metric.
func (w *RowsWriter) Append(window uint8, final bool, start int64, key []byte, metrics []uint64) {
	w.AppendSketches(window, final, start, key, metrics, nil)
}

// AppendSketches adds a row whose key is already encoded: metric j is
// sketches[j] when that is not nil (a distinct metric), else metrics[j].
func (w *RowsWriter) AppendSketches(window uint8, final bool, start int64, key []byte, metrics []uint64, sketches []*Sketch) {
	if len(w.buf) < rowsHeader {
		w.Reset()
	}
	var flags byte
	if final {
		flags = RowFinal
	}
	if sketches == nil {
		// A row of a fixed size, written in place after one growth: the
		// Go guest's flushes write tens of thousands of rows, and in Wasm
		// each append is a call and each byte a store.
		n, size := len(w.buf), 10+len(key)+8*len(metrics)
		w.buf = slices.Grow(w.buf, size)[:n+size]
		b := w.buf[n:]
		b[0], b[1] = window, flags
		binary.LittleEndian.PutUint64(b[2:], uint64(start))
		copy(b[10:], key)
		b = b[10+len(key):]
		for j, m := range metrics {
			binary.LittleEndian.PutUint64(b[8*j:], m)
		}
		w.n++
		return
	}
	w.buf = append(w.buf, window, flags)
	w.buf = binary.LittleEndian.AppendUint64(w.buf, uint64(start))
	w.buf = append(w.buf, key...)
	for j, m := range metrics {
		if j < len(sketches) && sketches[j] != nil {
			w.buf = sketches[j].AppendEncoded(w.buf)
			continue
		}
		w.buf = binary.LittleEndian.AppendUint64(w.buf, m)
	}
	w.n++
}

// Reserve adds rows rows of size bytes in all, which the caller writes
// into the returned slice in the rows layout (ABI.md): for a writer of many
// rows at once, which in Wasm would pay a call per row to Append.
func (w *RowsWriter) Reserve(size, rows int) []byte {
	if len(w.buf) < rowsHeader {
		w.Reset()
	}
	n := len(w.buf)
	w.buf = slices.Grow(w.buf, size)[:n+size]
	w.n += uint32(rows)
	return w.buf[n:]
}

// Len is the number of rows appended since Reset.
func (w *RowsWriter) Len() int { return int(w.n) }

// Bytes finishes the header and returns the encoding, valid until the next
// Append or Reset.
func (w *RowsWriter) Bytes() []byte {
	if len(w.buf) < rowsHeader {
		w.Reset()
	}
	binary.LittleEndian.PutUint32(w.buf, RowsMagic)
	binary.LittleEndian.PutUint32(w.buf[4:], w.n)
	binary.LittleEndian.PutUint64(w.buf[8:], uint64(len(w.buf)))
	return w.buf
}

// ErrRows is wrapped by every rows decoding error.
var ErrRows = errors.New("abi: malformed rows")

// DecodeRows decodes rows written for schema s by a guest whose deployment
// has windows windows. The input comes from untrusted code: every length is
// checked and the result never aliases buf. It appends to dst; on error it
// returns dst as it was.
//
// Without distinct metrics the rows of one call share two allocations, one
// for their keys and one for their metrics, instead of two per row: a flush
// returns tens of thousands of rows. A row's Key and Metrics therefore keep
// the whole call's memory alive; a holder of a key beyond the next
// checkpoint clones it (the hub does).
func DecodeRows(buf []byte, s *Schema, windows int, dst []Row) ([]Row, error) {
	rows, err := decodeRows(buf, s, windows, dst)
	if err != nil {
		clear(rows[len(dst):])
		return dst, err
	}
	return rows, nil
}

func decodeRows(buf []byte, s *Schema, windows int, dst []Row) ([]Row, error) {
	if len(buf) < rowsHeader {
		return dst, fmt.Errorf("%w: %d bytes, shorter than the header", ErrRows, len(buf))
	}
	le := binary.LittleEndian
	if le.Uint32(buf) != RowsMagic {
		return dst, fmt.Errorf("%w: bad magic", ErrRows)
	}
	if total := le.Uint64(buf[8:]); total != uint64(len(buf)) {
		return dst, fmt.Errorf("%w: header says %d bytes, got %d", ErrRows, total, len(buf))
	}
	n := int(le.Uint32(buf[4:]))
	minRow, fixed := 10, true
	for _, m := range s.Metrics {
		if m.Kind == Distinct {
			minRow += 4
			fixed = false
		} else {
			minRow += 8
		}
	}
	if n > (len(buf)-rowsHeader)/minRow {
		return dst, fmt.Errorf("%w: %d rows cannot fit in %d bytes", ErrRows, n, len(buf))
	}
	// Without sketches every row is its header, its key and 8 bytes per
	// metric, so the bytes left after the fixed parts are the keys' exact
	// total and the arenas never grow.
	var keys strings.Builder
	var metrics []uint64
	if fixed {
		keys.Grow(len(buf) - rowsHeader - n*minRow)
		metrics = make([]uint64, n*len(s.Metrics))
	}
	// The rows are written in place: a Row holds pointers, and appending one
	// copies it under the collector's write barrier.
	base := len(dst)
	dst = slices.Grow(dst, n)[:base+n]
	off := rowsHeader
	for i := range n {
		if len(buf)-off < 10 {
			return dst, fmt.Errorf("%w: row %d truncated", ErrRows, i)
		}
		window, flags := buf[off], buf[off+1]
		if int(window) >= windows {
			return dst, fmt.Errorf("%w: row %d names window %d of %d", ErrRows, i, window, windows)
		}
		if flags&^RowFinal != 0 {
			return dst, fmt.Errorf("%w: row %d has unknown flags %#x", ErrRows, i, flags)
		}
		r := &dst[base+i]
		r.Window, r.Final, r.Start = window, flags&RowFinal != 0, int64(le.Uint64(buf[off+2:]))
		off += 10
		keyStart := off
		for _, c := range s.Keys {
			k := 8
			if c.Type == String {
				if len(buf)-off < 4 {
					return dst, fmt.Errorf("%w: row %d key %s truncated", ErrRows, i, c.Name)
				}
				k = 4 + int(le.Uint32(buf[off:]))
			}
			if k < 0 || len(buf)-off < k {
				return dst, fmt.Errorf("%w: row %d key %s truncated", ErrRows, i, c.Name)
			}
			off += k
		}
		if off-keyStart > MaxKeyBytes {
			return dst, fmt.Errorf("%w: row %d has a key of %d bytes, at most %d", ErrRows, i, off-keyStart, MaxKeyBytes)
		}
		if fixed {
			nm := len(s.Metrics)
			if len(buf)-off < 8*nm {
				return dst, fmt.Errorf("%w: row %d metrics truncated", ErrRows, i)
			}
			from := keys.Len()
			keys.Write(buf[keyStart:off])
			r.Key = keys.String()[from:]
			m := metrics[:nm:nm]
			metrics = metrics[nm:]
			for j := range m {
				m[j] = le.Uint64(buf[off+8*j:])
			}
			r.Metrics, r.Sketches = m, nil
			off += 8 * nm
			continue
		}
		r.Key = string(buf[keyStart:off])
		r.Metrics = make([]uint64, len(s.Metrics))
		r.Sketches = make([]*Sketch, len(s.Metrics))
		for j, m := range s.Metrics {
			if m.Kind == Distinct {
				sk, k, err := DecodeSketch(buf[off:])
				if err != nil {
					return dst, fmt.Errorf("%w: row %d metric %s: %w", ErrRows, i, m.Name, err)
				}
				r.Sketches[j], r.Metrics[j] = sk, uint64(sk.Estimate())
				off += k
				continue
			}
			if len(buf)-off < 8 {
				return dst, fmt.Errorf("%w: row %d metrics truncated", ErrRows, i)
			}
			r.Metrics[j] = le.Uint64(buf[off:])
			off += 8
		}
	}
	if off != len(buf) {
		return dst, fmt.Errorf("%w: %d trailing bytes", ErrRows, len(buf)-off)
	}
	return dst, nil
}

// KeyValues decodes an encoded key into int64, float64 and string values, in
// key column order.
func (s *Schema) KeyValues(key string) ([]any, error) {
	vals := make([]any, 0, len(s.Keys))
	off := 0
	le := binary.LittleEndian
	for _, c := range s.Keys {
		if c.Type == String {
			if len(key)-off < 4 {
				return nil, fmt.Errorf("%w: key %s truncated", ErrRows, c.Name)
			}
			k := int(le.Uint32([]byte(key[off : off+4])))
			off += 4
			if k < 0 || len(key)-off < k {
				return nil, fmt.Errorf("%w: key %s truncated", ErrRows, c.Name)
			}
			vals = append(vals, key[off:off+k])
			off += k
			continue
		}
		if len(key)-off < 8 {
			return nil, fmt.Errorf("%w: key %s truncated", ErrRows, c.Name)
		}
		u := le.Uint64([]byte(key[off : off+8]))
		off += 8
		if c.Type == Float64 {
			vals = append(vals, math.Float64frombits(u))
		} else {
			vals = append(vals, int64(u))
		}
	}
	if off != len(key) {
		return nil, fmt.Errorf("%w: %d trailing key bytes", ErrRows, len(key)-off)
	}
	return vals, nil
}

// MetricValue returns metric j of a row as an int64 or a float64.
func (s *Schema) MetricValue(j int, bits uint64) any {
	if s.Metrics[j].Type == Float64 {
		return math.Float64frombits(bits)
	}
	return int64(bits)
}

// HasDistinct reports whether a metric of s is a distinct count, whose rows
// carry sketches.
func (s *Schema) HasDistinct() bool {
	for _, m := range s.Metrics {
		if m.Kind == Distinct {
			return true
		}
	}
	return false
}

// Merge combines per-partition values of metric j into dst, by its kind. A
// distinct metric does not merge by value: merge its sketches (Sketch.Merge)
// and take the estimate.
func (s *Schema) Merge(j int, dst, v uint64) uint64 {
	m := s.Metrics[j]
	if m.Type == Float64 {
		a, b := math.Float64frombits(dst), math.Float64frombits(v)
		switch m.Kind {
		case Min:
			return math.Float64bits(math.Min(a, b))
		case Max:
			return math.Float64bits(math.Max(a, b))
		}
		return math.Float64bits(a + b)
	}
	a, b := int64(dst), int64(v)
	switch m.Kind {
	case Min:
		return uint64(min(a, b))
	case Max:
		return uint64(max(a, b))
	}
	return uint64(a + b)
}
