package wagg

import "github.com/wagg/wagg/abi"

// Batch is a batch of records, decoded by the host into the typed columns
// the aggregator declared. Slices returned by its methods are valid only
// during the call of the aggregator's Func.
type Batch struct {
	b abi.Batch
}

// Len is the number of records.
func (b *Batch) Len() int { return len(b.b.Times) }

// Time is record i's event time in Unix milliseconds.
func (b *Batch) Time(i int) int64 { return b.b.Times[i] }

// Times are all event times.
func (b *Batch) Times() []int64 { return b.b.Times }

// Int64s is the column of an Int64 field.
func (b *Batch) Int64s(f *Field) []int64 { return b.b.Columns[f.idx].Ints }

// Float64s is the column of a Float64 field.
func (b *Batch) Float64s(f *Field) []float64 { return b.b.Columns[f.idx].Floats }

// Strings is the column of a String field.
func (b *Batch) Strings(f *Field) Strings { return Strings{&b.b.Columns[f.idx]} }

// Raw is record i's value as it was in Kafka; only with Spec.Raw.
func (b *Batch) Raw(i int) []byte { return b.b.Raw.Str(i) }

// Strings is a string column. At returns bytes that alias the batch: copy
// them to keep them.
type Strings struct{ c *abi.BatchColumn }

// At returns record i's value.
func (s Strings) At(i int) []byte { return s.c.Data[s.c.Offsets[i]:s.c.Offsets[i+1]] }
