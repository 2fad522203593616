package wagg

import (
	"errors"
	"math"

	"github.com/wagg/wagg/abi"
)

// Field is a typed input field. Create it with Int64, Float64 or String and
// list it in Spec.Input.
type Field struct {
	def abi.Field
	idx int
}

// Int64 declares an integer input field read from the JSON key name.
func Int64(name string) *Field { return &Field{def: abi.Field{Name: name, Type: abi.Int64}, idx: -1} }

// Float64 declares a number input field read from the JSON key name.
func Float64(name string) *Field {
	return &Field{def: abi.Field{Name: name, Type: abi.Float64}, idx: -1}
}

// String declares a string input field read from the JSON key name.
func String(name string) *Field { return &Field{def: abi.Field{Name: name, Type: abi.String}, idx: -1} }

// From reads the field from another top-level JSON key.
func (f *Field) From(key string) *Field { f.def.Path = key; return f }

// Optional makes a missing field read as its zero value instead of sending
// the record to the dead-letter topic.
func (f *Field) Optional() *Field { f.def.Optional = true; return f }

// Metric is an output value. Create it with Count, Sum, SumFloat, Average,
// Min, Max or Distinct.
type Metric struct {
	def abi.Metric
	idx int
	// Mirrors of def.Kind and def.Type, so that the per-record path
	// compares small integers, not strings (string compares are slow in Wasm).
	op    op
	float bool
	// avg: an Average, whose sum (def) is followed by its count.
	avg   bool
	count abi.Metric
}

// op is how a metric folds a value in.
type op uint8

const (
	opAdd op = iota
	opMin
	opMax
	opDistinct
)

// Count declares an int64 counter.
func Count(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name, Kind: abi.Count, Type: abi.Int64}, idx: -1, op: opAdd}
}

// Sum declares a sum of int64 values (use SumFloat for float64).
func Sum(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name, Kind: abi.Sum, Type: abi.Int64}, idx: -1, op: opAdd}
}

// SumFloat declares a sum of float64 values.
func SumFloat(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name, Kind: abi.Sum, Type: abi.Float64}, idx: -1, op: opAdd, float: true}
}

// Average declares the average of float64 values, carried as two columns
// that the host merges exactly across partitions: name_sum (a float64 sum)
// and name_count (a count); the average is their quotient, in the live view
// and in ClickHouse (sum(name_sum) / sum(name_count)). AddFloat folds a value
// into both.
func Average(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name + "_sum", Kind: abi.Sum, Type: abi.Float64}, idx: -1, op: opAdd, float: true,
		avg: true, count: abi.Metric{Name: name + "_count", Kind: abi.Count, Type: abi.Int64}}
}

// Min declares the minimum of int64 values (Float makes it float64).
func Min(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name, Kind: abi.Min, Type: abi.Int64}, idx: -1, op: opMin}
}

// Max declares the maximum of int64 values (Float makes it float64).
func Max(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name, Kind: abi.Max, Type: abi.Int64}, idx: -1, op: opMax}
}

// Distinct declares a count of distinct values (unique users, say),
// estimated from a HyperLogLog sketch that the host merges across
// partitions: exact or nearly so for small counts, within 1.6% (one
// standard error) for large ones (abi/ABI.md, "Distinct counts"). Feed it
// with AddDistinct (int64 values) or AddDistinctString, one of the two.
func Distinct(name string) *Metric {
	return &Metric{def: abi.Metric{Name: name, Kind: abi.Distinct, Type: abi.Int64}, idx: -1, op: opDistinct}
}

// Float makes a Min or Max metric hold float64 values.
func (m *Metric) Float() *Metric { m.def.Type, m.float = abi.Float64, true; return m }

// identity is the value a metric starts from before its first update.
func identity(m abi.Metric) uint64 {
	switch {
	case m.Kind == abi.Min && m.Type == abi.Float64:
		return math.Float64bits(math.Inf(1))
	case m.Kind == abi.Max && m.Type == abi.Float64:
		return math.Float64bits(math.Inf(-1))
	case m.Kind == abi.Min:
		return math.MaxInt64
	case m.Kind == abi.Max:
		return 1 << 63 // math.MinInt64
	case m.Type == abi.Float64:
		return math.Float64bits(0)
	}
	return 0
}

// Fields lists input fields, in the order the batch carries them.
func Fields(f ...*Field) []*Field { return f }

// Metrics lists output metrics, in column order.
func Metrics(m ...*Metric) []*Metric { return m }

// Keys lists the group key columns, in the order Key's methods fill them.
func Keys(c ...abi.Column) []abi.Column { return c }

// Int64Key, Float64Key and StringKey declare group key columns.
func Int64Key(name string) abi.Column { return abi.Column{Name: name, Type: abi.Int64} }

// Float64Key declares a float64 group key column.
func Float64Key(name string) abi.Column { return abi.Column{Name: name, Type: abi.Float64} }

// StringKey declares a string group key column.
func StringKey(name string) abi.Column { return abi.Column{Name: name, Type: abi.String} }

// Spec is what an aggregator declares.
type Spec struct {
	Input   []*Field
	Raw     bool // also receive each record's raw value (Batch.Raw)
	Keys    []abi.Column
	Metrics []*Metric
	// State versions what the aggregator's groups mean (zero: version 1).
	// Bump Version when a new build would count on differently from the
	// groups an older one left (other keys, other units, another rule), list
	// in Accepts the older versions whose groups it carries on as they are,
	// and in Migrates those whose groups Migrate converts. The host restores
	// a deployment's checkpoints into a new build only when it accepts or
	// migrates their version; otherwise the deploy is refused and the old
	// build keeps running.
	State abi.State
	// Migrate converts each group of a snapshot of a version listed in
	// State.Migrates as it is restored; required with State.Migrates and
	// only with it. See MigrateFunc.
	Migrate MigrateFunc
}

// Func folds a batch into groups. It must be deterministic: the same batches
// in the same order must give the same groups, so a replay emits the same
// rows. An error fails the whole batch.
type Func func(b *Batch, g *Groups) error

var registered struct {
	spec   Spec
	schema abi.Schema
	fn     Func
}

// Register installs the aggregator. Call it once, from an init function.
// It panics on a spec the host would refuse, so the mistake shows at once.
func Register(s Spec, fn Func) {
	if fn == nil {
		panic("wagg: Register with a nil Func")
	}
	if (len(s.State.Migrates) > 0) != (s.Migrate != nil) {
		panic("wagg: Spec.Migrate and Spec.State.Migrates go together: a function for the versions it converts")
	}
	schema, err := s.schema()
	if err != nil {
		panic("wagg: " + err.Error())
	}
	registered.spec, registered.schema, registered.fn = s, schema, fn
}

// schema is the schema s declares; it numbers s's fields and metrics.
func (s Spec) schema() (abi.Schema, error) {
	schema := abi.Schema{ABI: abi.Version, Raw: s.Raw, Keys: s.Keys}
	if s.State.Version != 0 || len(s.State.Accepts) > 0 || len(s.State.Migrates) > 0 {
		st := s.State
		schema.State = &st
	}
	for i, f := range s.Input {
		f.idx = i
		schema.Input = append(schema.Input, f.def)
	}
	for _, m := range s.Metrics {
		m.idx = len(schema.Metrics)
		schema.Metrics = append(schema.Metrics, m.def)
		if m.avg {
			schema.Metrics = append(schema.Metrics, m.count)
		}
	}
	return schema, schema.Validate()
}

var errNotRegistered = errors.New("wagg: no aggregator registered (call wagg.Register from init)")
