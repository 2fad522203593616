package decode

import (
	"errors"
	"fmt"
	"math"

	"github.com/wagg/wagg/abi"
)

// MaxDepth bounds how deeply objects and arrays may nest in a value, the
// top-level object included. The skipper keeps one bit per level in a
// uint64, so it needs no stack at all; 64 is far beyond what event payloads
// use and far below what could hurt.
const MaxDepth = 64

// ErrFull is wrapped by the error Add returns when the batch cannot take
// another record, whatever the record holds: it already has
// abi.MaxBatchRecords records, or its values would pass the 4 GiB that the
// batch's u32 string offsets address. The caller flushes and adds the record
// again, rather than dead-lettering a record that did nothing wrong.
var ErrFull = errors.New("decode: batch full")

type kind uint8

const (
	kindInt kind = iota
	kindFloat
	kindString
)

// field is one declared field: what the scanner needs first, then what
// errors need.
type field struct {
	kind     kind
	optional bool
	seen     uint64 // the gen of the last record that set the field
	next     int    // the next field read from the same key, or -1
	col      *abi.BatchColumn
	path     string
	label    string // how errors name the field
}

// Decoder decodes records for one schema into a batch that it reuses, so
// that steady-state decoding allocates nothing. It is not safe for
// concurrent use; the host runs one per partition.
//
// Add appends each field's value to its column as soon as it is read, and a
// record that then fails is cut off again (rollback): staging the values
// elsewhere would cost a second pass over the fields for every good record
// to spare a few truncations for the rare bad one.
type Decoder struct {
	fields []field
	keys   keyTable       // key -> the first field read from it
	byKey  map[string]int // the same, when keys defeat keyTable
	gen    uint64         // counts Add calls; see field.seen
	found  int            // fields set by the current record
	size   int            // bytes of the values in the batch
	keyBuf []byte         // an unescaped key, when a key has escapes
	preds  [16]keyPred    // the keys of the first members of the last record
	batch  abi.Batch
	raw    abi.BatchColumn
}

// New returns a decoder for s's input. The schema must have passed
// s.Validate; New panics on a field type it does not know, because that is
// a bug in the caller, not bad input.
func New(s *abi.Schema) *Decoder {
	d := &Decoder{
		fields: make([]field, len(s.Input)),
	}
	d.batch.Columns = make([]abi.BatchColumn, len(s.Input))
	byPath := map[string]int{}
	var paths []string
	var firsts []int
	for i, f := range s.Input {
		p := f.JSONPath()
		df := field{path: p, optional: f.Optional, next: -1, label: fmt.Sprintf("field %q", f.Name)}
		if p != f.Name {
			df.label = fmt.Sprintf("field %q (key %q)", f.Name, p)
		}
		switch f.Type {
		case abi.Int64:
			df.kind = kindInt
		case abi.Float64:
			df.kind = kindFloat
		case abi.String:
			df.kind = kindString
			d.batch.Columns[i].Offsets = []uint32{0}
		default:
			panic(fmt.Sprintf("decode: input[%d] %q has type %q; validate the schema first", i, f.Name, f.Type))
		}
		df.col = &d.batch.Columns[i]
		d.fields[i] = df
		if j, ok := byPath[p]; ok {
			for d.fields[j].next >= 0 {
				j = d.fields[j].next
			}
			d.fields[j].next = i
			continue
		}
		byPath[p] = i
		paths = append(paths, p)
		firsts = append(firsts, i)
	}
	if !d.keys.build(paths, firsts) {
		d.byKey = byPath
	}
	for k := range d.preds {
		d.preds[k] = never
	}
	if s.Raw {
		d.raw.Offsets = []uint32{0}
		d.batch.Raw = &d.raw
	}
	d.Reset()
	return d
}

// Reset empties the batch for the next one. It keeps the columns' memory,
// which after the first few batches is as large as a batch needs, so that
// decoding then allocates nothing.
func (d *Decoder) Reset() {
	b := &d.batch
	b.Times = b.Times[:0]
	d.size = 0
	for i := range b.Columns {
		c := &b.Columns[i]
		switch d.fields[i].kind {
		case kindInt:
			c.Ints = c.Ints[:0]
			if c.Ints == nil {
				c.Ints = []int64{} // an empty column is still the int column
			}
		case kindFloat:
			c.Floats = c.Floats[:0]
			if c.Floats == nil {
				c.Floats = []float64{}
			}
		case kindString:
			c.Offsets = c.Offsets[:1]
			c.Data = c.Data[:0]
		}
	}
	if b.Raw != nil {
		d.raw.Offsets = d.raw.Offsets[:1]
		d.raw.Data = d.raw.Data[:0]
	}
}

// Len is the number of records in the batch, which the caller weighs
// against its batch size to decide when to hand the batch to the guest.
func (d *Decoder) Len() int { return len(d.batch.Times) }

// Batch returns the records added since Reset. It shares the decoder's
// memory, so it is valid until the next Add or Reset.
func (d *Decoder) Batch() *abi.Batch { return &d.batch }

// Add decodes value, a record's JSON value, with ts as its event time. On
// error the batch is unchanged and the error says which field is wrong and
// how, in words meant for the dead-letter topic. Add copies what it keeps,
// so the caller may reuse value's memory (a Kafka fetch buffer) at once.
func (d *Decoder) Add(value []byte, ts int64) error {
	// Unescaping never lengthens a string, so no column holds more bytes
	// than the values added: bounding their sum keeps u32 offsets valid.
	if len(d.batch.Times) >= abi.MaxBatchRecords || uint64(d.size)+uint64(len(value)) > math.MaxUint32 {
		return fmt.Errorf("%w: %d records of %d bytes", ErrFull, len(d.batch.Times), d.size)
	}
	d.gen++
	d.found = 0
	if err := d.parse(value); err != nil {
		d.rollback()
		return err
	}
	if n := d.stringBytes(); n > MaxStringBytes {
		d.rollback()
		return fmt.Errorf("string fields of %d bytes together, at most %d (a group's key is at most %d bytes)", n, MaxStringBytes, abi.MaxKeyBytes)
	}
	d.size += len(value)
	d.batch.Times = append(d.batch.Times, ts)
	if d.batch.Raw != nil {
		d.raw.Data = append(d.raw.Data, value...)
		d.raw.Offsets = append(d.raw.Offsets, uint32(len(d.raw.Data)))
	}
	return nil
}

// MaxStringBytes bounds the declared string fields of one record together:
// they make group keys, and a row's key past abi.MaxKeyBytes fails the
// deployment's flush, where a record past this is dead-lettered alone.
const MaxStringBytes = abi.MaxKeyBytes - 256

// stringBytes is what the record just parsed added to the string columns.
func (d *Decoder) stringBytes() int {
	n, sum := len(d.batch.Times), 0
	for i := range d.fields {
		if d.fields[i].kind == kindString {
			o := d.fields[i].col.Offsets
			sum += int(o[n+1] - o[n])
		}
	}
	return sum
}

// rollback cuts every column back to the records before the failed one.
func (d *Decoder) rollback() {
	n := len(d.batch.Times)
	for i := range d.fields {
		c := d.fields[i].col
		switch d.fields[i].kind {
		case kindInt:
			c.Ints = c.Ints[:n]
		case kindFloat:
			c.Floats = c.Floats[:n]
		default:
			c.Offsets = c.Offsets[:n+1]
			c.Data = c.Data[:c.Offsets[n]]
		}
	}
}

// parse scans the whole value, appending the declared fields' values to
// their columns.
func (d *Decoder) parse(v []byte) error {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '{' {
		return errNotObject
	}
	i = skipSpace(v, i+1)
	if i < len(v) && v[i] == '}' {
		i++
	} else {
		for k := 0; ; k++ {
			if i >= len(v) || v[i] != '"' {
				return syntaxError(v, i, "a key")
			}
			var j int
			if p := &d.preds[k%len(d.preds)]; k < len(d.preds) && i+16 <= len(v) &&
				load8(v, i)&p.mask[0] == p.text[0] && load8(v, i+8)&p.mask[1] == p.text[1] {
				i += int(p.n) // the same key as in the last record
				j = int(p.field)
			} else {
				var err error
				if i, j, err = d.readKey(v, i, k); err != nil {
					return err
				}
			}
			i = skipSpace(v, i)
			var err error
			if j < 0 {
				i, err = skipValue(v, i, 1)
			} else {
				f := &d.fields[j]
				var end int
				end, err = d.readField(f, v, i)
				for f.next >= 0 && err == nil { // more fields read from this key
					f = &d.fields[f.next]
					end, err = d.readField(f, v, i)
				}
				i = end
			}
			if err != nil {
				return err
			}
			if i+1 < len(v) && v[i] == ',' && v[i+1] == '"' {
				i++ // the compact form again
				continue
			}
			i = skipSpace(v, i)
			if i < len(v) && v[i] == ',' {
				i = skipSpace(v, i+1)
				continue
			}
			if i < len(v) && v[i] == '}' {
				i++
				break
			}
			return syntaxError(v, i, "',' or '}' after an object member")
		}
	}
	if i = skipSpace(v, i); i < len(v) {
		return fmt.Errorf("invalid JSON at byte %d: %s after the object", i, describeByte(v, i))
	}
	if d.found == len(d.fields) {
		return nil
	}
	for j := range d.fields {
		if f := &d.fields[j]; f.seen != d.gen {
			if !f.optional {
				return fmt.Errorf("%s: missing", f.label)
			}
			f.appendZero()
		}
	}
	return nil
}

// appendZero appends the value of a missing or null optional field.
func (f *field) appendZero() {
	c := f.col
	switch f.kind {
	case kindInt:
		c.Ints = append(c.Ints, 0)
	case kindFloat:
		c.Floats = append(c.Floats, 0)
	default:
		c.Offsets = append(c.Offsets, uint32(len(c.Data)))
	}
}

// readKey reads the key and colon of the k-th member, starting at the
// opening quote v[i], and returns the index after the colon and the first
// field read from the key, or -1. It remembers short keys as the prediction
// for the k-th member of the next record.
func (d *Decoder) readKey(v []byte, i, k int) (int, int, error) {
	quote := i
	i++
	start := i
	i = scanPlainFast(v, i)
	var key, room []byte // room: the key and whatever follows it in v
	plain := false
	if i < len(v) && v[i] == '"' {
		key, room = v[start:i], v[start:]
		i++
		plain = true
	} else {
		var err error
		if key, i, err = d.slowKey(v, start); err != nil {
			return 0, 0, err
		}
		room = key
	}
	j := d.lookup(key, room)
	if i < len(v) && v[i] == ':' { // the compact form producers write
		i++
		if k < len(d.preds) {
			d.preds[k].set(v, quote, i, j, plain)
		}
		return i, j, nil
	}
	i = skipSpace(v, i)
	if i >= len(v) || v[i] != ':' {
		return 0, 0, syntaxError(v, i, "':' after a key")
	}
	return i + 1, j, nil
}

// slowKey reads a key that has escapes or non-ASCII bytes, starting just
// after its opening quote. A key with escapes is unescaped into d.keyBuf.
func (d *Decoder) slowKey(v []byte, start int) ([]byte, int, error) {
	end, escaped, err := skipString(v, start)
	if err != nil {
		return nil, 0, err
	}
	if !escaped {
		return v[start : end-1], end, nil
	}
	d.keyBuf, _, err = appendString(d.keyBuf[:0], v, start)
	return d.keyBuf, end, err
}

// readField reads the value at v[i] into f's column.
func (d *Decoder) readField(f *field, v []byte, i int) (int, error) {
	if f.seen == d.gen {
		return 0, fmt.Errorf("%s: duplicate key", f.label)
	}
	f.seen = d.gen
	d.found++
	if i >= len(v) {
		return 0, syntaxError(v, i, "a value")
	}
	c := v[i]
	if c == 'n' {
		end, err := skipValue(v, i, 1)
		if err != nil {
			return 0, err
		}
		if !f.optional {
			return 0, f.typeError(v, i)
		}
		f.appendZero()
		return end, nil
	}
	col := f.col
	switch f.kind {
	case kindInt:
		if c != '-' && (c < '0' || c > '9') {
			return 0, f.typeError(v, i)
		}
		n, end, st, err := parseInt(v, i)
		switch {
		case err != nil:
			return 0, err
		case st == intOK:
			col.Ints = append(col.Ints, n)
			return end, nil
		case st == intRange:
			return 0, fmt.Errorf("%s: want an integer in int64 range, got %s", f.label, token(v, i, end))
		}
		return 0, fmt.Errorf("%s: want an integer, got %s", f.label, token(v, i, end))
	case kindFloat:
		if c != '-' && (c < '0' || c > '9') {
			return 0, f.typeError(v, i)
		}
		x, end, err := parseFloat(v, i)
		if err != nil {
			if err == errRange {
				return 0, fmt.Errorf("%s: want a number in float64 range, got %s", f.label, token(v, i, end))
			}
			return 0, err
		}
		col.Floats = append(col.Floats, x)
		return end, nil
	default:
		if c != '"' {
			return 0, f.typeError(v, i)
		}
		i++
		start := i
		i = scanPlainFast(v, i)
		var err error
		if i < len(v) && v[i] == '"' {
			col.Data = appendShort(col.Data, v, start, i)
			i++
		} else if col.Data, i, err = appendString(col.Data, v, start); err != nil {
			return 0, err
		}
		col.Offsets = append(col.Offsets, uint32(len(col.Data)))
		return i, nil
	}
}

// typeError describes the value at v[i], which does not fit f. A value that
// is not even well-formed gets the syntax error instead.
func (f *field) typeError(v []byte, i int) error {
	want := "an integer"
	switch f.kind {
	case kindFloat:
		want = "a number"
	case kindString:
		want = "a string"
	}
	var got string
	switch v[i] {
	case '{':
		got = "an object"
	case '[':
		got = "an array"
	default:
		end, err := skipValue(v, i, 1)
		if err != nil {
			return err
		}
		got = token(v, i, end)
	}
	return fmt.Errorf("%s: want %s, got %s", f.label, want, got)
}
