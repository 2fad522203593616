package sink

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/wagg/wagg/abi"
)

// Table is the result table of one deployment.
type Table struct {
	conn    driver.Conn
	db      string
	name    string // the deployment's name: the view analysts query
	raw     string // the per-partition table, quoted with its database
	schema  *abi.Schema
	windows []abi.Window
	insert  string
}

// Quote quotes an identifier for ClickHouse.
func Quote(id string) string { return "`" + strings.ReplaceAll(id, "`", "") + "`" }

// RawTable is the name of the per-partition table behind a deployment's view.
func RawTable(deployment string) string { return deployment + "__partitions" }

// Ensure creates the table of a deployment's generation (storage, the
// deployment's name for its first one) and the view named view over it,
// when missing, and returns the Table to write to. A view of that name
// over another generation stays as it is: SwitchView moves it.
func Ensure(ctx context.Context, conn driver.Conn, db, view, storage string, s *abi.Schema, windows []abi.Window) (*Table, error) {
	st := statementsFor(db, view, storage, s)
	if err := conn.Exec(ctx, st.table); err != nil {
		return nil, fmt.Errorf("sink: create table %s: %w", st.raw, err)
	}
	if err := conn.Exec(ctx, st.view); err != nil {
		return nil, fmt.Errorf("sink: create view %s.%s: %w", db, view, err)
	}
	return &Table{conn: conn, db: db, name: view, raw: st.raw, schema: s, windows: windows, insert: st.insert}, nil
}

// statements is the SQL of one deployment's generation.
type statements struct {
	raw    string // the per-partition table, quoted with its database
	table  string // creates raw
	view   string // creates the view
	insert string // the INSERT of Write, with its column list
}

// statementsFor builds the SQL of a generation's table and view from the
// plugin's schema. A row of the table is one partition's value of one
// group in one pane; ReplacingMergeTree keeps, per sort key (the pane,
// the group and the partition), the row of the highest version, the
// source offset it is current to, so a replay writing the same rows again
// changes nothing. The view merges the partitions by each metric's kind.
func statementsFor(db, view, storage string, s *abi.Schema) statements {
	st := statements{raw: Quote(db) + "." + Quote(RawTable(storage))}
	var cols, keys, insertCols []string
	add := func(name, typ string) {
		cols = append(cols, Quote(name)+" "+typ)
		insertCols = append(insertCols, Quote(name))
	}
	add("window_name", "String")
	add("window_start", "DateTime")
	add("window_end", "DateTime")
	for _, k := range s.Keys {
		add(k.Name, chType(k.Type))
		keys = append(keys, Quote(k.Name))
	}
	add("source_partition", "UInt32")
	for _, m := range s.Metrics {
		add(m.Name, metricType(m))
	}
	add("is_final", "UInt8")
	add("version", "UInt64")
	order := append([]string{"`window_name`", "`window_start`"}, keys...)
	order = append(order, "`source_partition`")
	st.table = fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s, `inserted_at` DateTime DEFAULT now()) ENGINE = ReplacingMergeTree(`version`) ORDER BY (%s)",
		st.raw, strings.Join(cols, ", "), strings.Join(order, ", "))
	group := append([]string{"`window_name`", "`window_start`", "`window_end`"}, keys...)
	sel := append([]string(nil), group...)
	from := []string{"*"}
	for _, m := range s.Metrics {
		fn := "sum"
		switch m.Kind {
		case abi.Min:
			fn = "min"
		case abi.Max:
			fn = "max"
		case abi.Distinct:
			// The estimate takes the metric's name, so the view reads the
			// sketches under another one.
			sketches := "wagg:" + m.Name
			from = append(from, Quote(m.Name)+" AS "+Quote(sketches))
			sel = append(sel, DistinctSQL(sketches)+" AS "+Quote(m.Name))
			continue
		}
		sel = append(sel, fmt.Sprintf("%s(%s) AS %s", fn, Quote(m.Name), Quote(m.Name)))
	}
	sel = append(sel, "min(`is_final`) AS `is_final`")
	src := st.raw + " FINAL"
	if len(from) > 1 {
		src = fmt.Sprintf("(SELECT %s FROM %s FINAL)", strings.Join(from, ", "), st.raw)
	}
	st.view = fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s.%s AS SELECT %s FROM %s GROUP BY %s",
		Quote(db), Quote(view), strings.Join(sel, ", "), src, strings.Join(group, ", "))
	st.insert = fmt.Sprintf("INSERT INTO %s (%s)", st.raw, strings.Join(insertCols, ", "))
	return st
}

// Tables lists the tables and views of db whose names start with prefix
// (and perhaps a few more: _ in prefix matches any character).
func Tables(ctx context.Context, conn driver.Conn, db, prefix string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND name LIKE ?", db, prefix+"%")
	if err != nil {
		return nil, fmt.Errorf("sink: tables of %s: %w", db, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("sink: tables of %s: %w", db, err)
		}
		out[n] = true
	}
	return out, rows.Err()
}

// SwitchView makes view show the generation whose own view is next (as
// Ensure made it), in one RENAME, so that no query finds no view: view
// becomes old, next becomes view.
func SwitchView(ctx context.Context, conn driver.Conn, db, view, next, old string) error {
	q := func(n string) string { return Quote(db) + "." + Quote(n) }
	if err := conn.Exec(ctx, fmt.Sprintf("RENAME TABLE %s TO %s, %s TO %s", q(view), q(old), q(next), q(view))); err != nil {
		return fmt.Errorf("sink: switch view %s.%s to %s: %w", db, view, next, err)
	}
	return nil
}

// hostColumns are the columns of a raw table that no plugin declares.
var hostColumns = map[string]bool{
	"window_name": true, "window_start": true, "window_end": true, "source_partition": true,
	"is_final": true, "version": true, "inserted_at": true,
}

// Mismatch says how the existing table of a deployment's generation
// (storage) differs from the one the schema s would make: "" when it is the
// same or there is none yet. Ensure keeps a table that exists, so a plugin
// whose key or metric columns differ could not write to it.
func Mismatch(ctx context.Context, conn driver.Conn, db, storage string, s *abi.Schema) (string, error) {
	rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = ? AND table = ?", db, RawTable(storage))
	if err != nil {
		return "", fmt.Errorf("sink: columns of %s: %w", RawTable(storage), err)
	}
	defer rows.Close()
	have := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return "", fmt.Errorf("sink: columns of %s: %w", RawTable(storage), err)
		}
		if !hostColumns[name] {
			have[name] = typ
		}
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("sink: columns of %s: %w", RawTable(storage), err)
	}
	if len(have) == 0 {
		return "", nil
	}
	want := map[string]string{}
	for _, k := range s.Keys {
		want[k.Name] = chType(k.Type)
	}
	for _, m := range s.Metrics {
		want[m.Name] = metricType(m)
	}
	var diffs []string
	for name, typ := range want {
		switch got, ok := have[name]; {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("the table has no column %s", name))
		case got != typ:
			diffs = append(diffs, fmt.Sprintf("column %s is %s in the table, %s in the plugin", name, got, typ))
		}
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, fmt.Sprintf("the plugin does not write column %s", name))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "; "), nil
}

// DistinctSQL is the aggregate expression that merges the sketches in the
// column col over the rows of a group (the union of their registers, each
// the highest rank any row holds) and computes the estimate as
// abi.Sketch.Estimate does, as an Int64. Rows hold the set registers as
// index<<6 | rank: sorted in decreasing order, the first entry of each
// index has its highest rank. It works on ClickHouse 18.16. Its aliases are
// quoted names with a colon, which no column of the plugin's has; col may
// not be the alias the result is given (ClickHouse calls that cyclic).
func DistinctSQL(col string) string {
	const m = abi.SketchRegisters
	name := func(part string) string { return Quote("wagg:" + col + ":" + part) }
	s, r, z, e := name("sorted"), name("registers"), name("empty"), name("raw")
	regs := fmt.Sprintf("arrayFilter((x, o) -> o = 1, (arrayReverseSort(groupArrayArray(%s)) AS %s), arrayEnumerateUniq(arrayMap(x -> intDiv(x, 64), %s)))", Quote(col), s, s)
	zeros := fmt.Sprintf("((%d - length((%s) AS %s)) AS %s)", m, regs, r, z)
	sum := fmt.Sprintf("(arraySum(arrayMap(x -> 1 / toFloat64(bitShiftLeft(toUInt64(1), x %% 64)), %s)) + %s)", r, zeros)
	raw := fmt.Sprintf("((%s / %s) AS %s)", strconv.FormatFloat(abi.SketchAlphaMM, 'g', -1, 64), sum, e)
	return fmt.Sprintf("toInt64(floor(if(%s <= %d AND %s > 0, %d * log(%d / %s), %s) + 0.5))", raw, 5*m/2, z, m, m, z, e)
}

// metricType is the column type of a metric in the raw table: a distinct
// metric's column holds the sketch's set registers (abi.Sketch.Entries).
func metricType(m abi.Metric) string {
	if m.Kind == abi.Distinct {
		return "Array(UInt32)"
	}
	return chType(m.Type)
}

func chType(t abi.Type) string {
	switch t {
	case abi.Int64:
		return "Int64"
	case abi.Float64:
		return "Float64"
	}
	return "String"
}

// Write inserts rows of one partition, all current as of the Kafka offset
// version (the next offset to read). Rewriting the same rows with the same
// version, as a replay after a crash does, changes nothing that FINAL or the
// view returns.
func (t *Table) Write(ctx context.Context, partition int32, version int64, rows []abi.Row) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := t.conn.PrepareBatch(ctx, t.insert)
	if err != nil {
		return fmt.Errorf("sink: prepare insert into %s: %w", t.name, err)
	}
	defer b.Abort()
	vals := make([]any, 0, 6+len(t.schema.Keys)+len(t.schema.Metrics))
	for _, r := range rows {
		vals, err = t.values(vals[:0], partition, version, &r)
		if err != nil {
			return err
		}
		if err := b.Append(vals...); err != nil {
			return fmt.Errorf("sink: append to %s: %w", t.name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("sink: insert into %s: %w", t.name, err)
	}
	return nil
}

// values appends the values of the INSERT's columns for one row of
// partition, current as of version, to vals. A global window's row has no
// pane: its start and end are the epoch.
func (t *Table) values(vals []any, partition int32, version int64, r *abi.Row) ([]any, error) {
	w := t.windows[r.Window]
	start, end := time.Unix(0, 0).UTC(), time.Unix(0, 0).UTC()
	if w.Kind != abi.Global {
		start, end = time.UnixMilli(r.Start).UTC(), time.UnixMilli(w.End(r.Start)).UTC()
	}
	keys, err := t.schema.KeyValues(r.Key)
	if err != nil {
		return vals, fmt.Errorf("sink: a row of %s: %w", t.name, err)
	}
	vals = append(vals, w.Name, start, end)
	vals = append(vals, keys...)
	vals = append(vals, uint32(partition))
	for j, m := range r.Metrics {
		if t.schema.Metrics[j].Kind == abi.Distinct {
			var entries []uint32
			if r.Sketches != nil && r.Sketches[j] != nil {
				entries = r.Sketches[j].Entries(nil)
			}
			vals = append(vals, entries)
			continue
		}
		vals = append(vals, t.schema.MetricValue(j, m))
	}
	final := uint8(0)
	if r.Final {
		final = 1
	}
	return append(vals, final, uint64(version)), nil
}
