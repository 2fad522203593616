package wagg

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/wagg/wagg/abi"
)

// MigrateFunc converts one group of a snapshot written by an older build of
// the aggregator, of a state version listed in State.Migrates, into the
// current version as the snapshot is restored. old is the group as that
// build left it; g holds the group's new metric values, which start as the
// old values of the metrics of the same name, kind and type, and as nothing
// counted yet (zero, or the identity of a min or max) for the others. Set
// what must change on g, and return false to drop the group instead.
//
// A Distinct metric is a sketch, not a value: the hook neither reads nor
// sets it. One of the same name, kind and type in the old build carries its
// sketch over as it was; any other starts empty.
//
// The group keeps its window, start and key: a migration converts values,
// it does not move groups. It must be deterministic, like the Func: the
// host may restore the same snapshot again after a fault and must get the
// same state. An error set on g (misuse), or a panic, fails the restore.
//
// A deployment's rows in ClickHouse and on dashboards have the columns of
// its table: an upgrade that restores state keeps the metric names and
// types of the output (abi/ABI.md, "State versions"); a migration converts
// what they hold.
type MigrateFunc func(old *OldGroup, g *NewGroup) (keep bool)

// OldGroup is a group of a snapshot of an older state version, read through
// the schema of the build that wrote it. It is reused for the next group:
// do not keep it.
type OldGroup struct {
	from   *migration
	window abi.Window
	start  int64
	key    []any
	vals   []uint64
}

// Version is the state version of the build that wrote the group.
func (o *OldGroup) Version() int { return o.from.schema.StateVersion() }

// Window is the deployment's window the group belongs to.
func (o *OldGroup) Window() abi.Window { return o.window }

// Start is the start of the group's window instance, Unix ms (0 for a
// global window).
func (o *OldGroup) Start() int64 { return o.start }

// Key is the group's key, one int64, float64 or string value per key column.
func (o *OldGroup) Key() []any { return o.key }

// Metrics are the metrics of the build that wrote the group, in its order
// (an Average is its two columns, name_sum and name_count).
func (o *OldGroup) Metrics() []abi.Metric { return o.from.schema.Metrics }

// Int64 is the value of the old int64 metric called name; false when the
// old build had no int64 metric of that name, or it was a Distinct one.
func (o *OldGroup) Int64(name string) (int64, bool) {
	j, ok := o.from.byName[name]
	if !ok || o.from.schema.Metrics[j].Type != abi.Int64 || o.from.schema.Metrics[j].Kind == abi.Distinct {
		return 0, false
	}
	return int64(o.vals[j]), true
}

// Float64 is the value of the old float64 metric called name; false when
// the old build had no float64 metric of that name.
func (o *OldGroup) Float64(name string) (float64, bool) {
	j, ok := o.from.byName[name]
	if !ok || o.from.schema.Metrics[j].Type != abi.Float64 {
		return 0, false
	}
	return math.Float64frombits(o.vals[j]), true
}

// NewGroup holds the current metric values of a group being migrated.
type NewGroup struct {
	metrics []abi.Metric
	vals    []uint64
	err     error
}

func (n *NewGroup) fail(err error) {
	if n.err == nil {
		n.err = err
	}
}

// metric checks that m is one of the registered spec's metrics, of the
// shape the setter use sets.
func (n *NewGroup) metric(m *Metric, float, avg bool, use string) bool {
	if m == nil || m.idx < 0 || m.idx >= len(n.metrics) || n.metrics[m.idx] != m.def {
		name := "<nil>"
		if m != nil {
			name = m.def.Name
		}
		n.fail(fmt.Errorf("metric %s is not one of the registered spec's Metrics", name))
		return false
	}
	if m.def.Kind == abi.Distinct {
		n.fail(fmt.Errorf("metric %s is a distinct count, which a migration carries over or starts empty; NewGroup.%s does not set it", m.def.Name, use))
		return false
	}
	if m.float != float || m.avg != avg {
		what := string(m.def.Type)
		if m.avg {
			what = "an Average"
		}
		n.fail(fmt.Errorf("metric %s is %s, NewGroup.%s does not set it", m.def.Name, what, use))
		return false
	}
	return true
}

// Set sets an int64 metric (a Count, Sum, Min or Max).
func (n *NewGroup) Set(m *Metric, v int64) {
	if n.metric(m, false, false, "Set") {
		n.vals[m.idx] = uint64(v)
	}
}

// SetFloat sets a float64 metric (a SumFloat, or a Min or Max made Float).
func (n *NewGroup) SetFloat(m *Metric, v float64) {
	if n.metric(m, true, false, "SetFloat") {
		n.vals[m.idx] = math.Float64bits(v)
	}
}

// SetAverage sets an Average to the sum and the count of the values it
// averages.
func (n *NewGroup) SetAverage(m *Metric, sum float64, count int64) {
	if n.metric(m, true, true, "SetAverage") {
		n.vals[m.idx], n.vals[m.idx+1] = math.Float64bits(sum), uint64(count)
	}
}

// migration is how the engine converts the snapshot of another state
// version: the writer's schema (abi.Config.MigrateFrom) and, per current
// metric, the old metric it starts from (-1: none).
type migration struct {
	schema *abi.Schema
	byName map[string]int
	carry  []int
	fn     MigrateFunc
	old    OldGroup
	new    NewGroup
}

// errMigrate marks a restore that the aggregator's Migrate failed.
var errMigrate = errors.New("wagg: Migrate failed")

// newMigration checks that the registered aggregator can migrate the state
// of the build whose schema is from.
func newMigration(from *abi.Schema, to *abi.Schema, fn MigrateFunc) (*migration, error) {
	if err := from.Validate(); err != nil {
		return nil, fmt.Errorf("wagg: config migrate_from: %w", err)
	}
	v := from.StateVersion()
	if !to.MigratesState(v) || fn == nil {
		return nil, fmt.Errorf("wagg: config migrate_from: state version %d, which this build (state version %d) does not migrate", v, to.StateVersion())
	}
	if !slices.EqualFunc(from.Keys, to.Keys, func(a, b abi.Column) bool { return a.Type == b.Type }) {
		return nil, fmt.Errorf("wagg: config migrate_from: state version %d has key columns %v, this build %v: a migration keeps the key's column types", v, from.Keys, to.Keys)
	}
	m := &migration{schema: from, byName: map[string]int{}, fn: fn}
	for j, om := range from.Metrics {
		m.byName[om.Name] = j
	}
	for _, nm := range to.Metrics {
		j, ok := m.byName[nm.Name]
		if !ok || from.Metrics[j] != nm {
			j = -1
		}
		m.carry = append(m.carry, j)
	}
	m.old.from = m
	m.new.metrics = to.Metrics
	m.new.vals = make([]uint64, len(to.Metrics))
	return m, nil
}

// convert runs the aggregator's Migrate on one old group: the new values,
// and whether the group stays.
func (m *migration) convert(win abi.Window, start int64, key []any, old []uint64, idents []uint64) (vals []uint64, keep bool, err error) {
	m.old.window, m.old.start, m.old.key, m.old.vals = win, start, key, old
	n := &m.new
	n.err = nil
	for j, from := range m.carry {
		if from >= 0 {
			n.vals[j] = old[from]
		} else {
			n.vals[j] = idents[j]
		}
	}
	defer func() {
		if r := recover(); r != nil {
			vals, keep, err = nil, false, fmt.Errorf("panicked: %v", r)
		}
	}()
	keep = m.fn(&m.old, n)
	if n.err != nil {
		return nil, false, n.err
	}
	return n.vals, keep, nil
}
