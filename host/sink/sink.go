package sink

import (
	"context"
	"fmt"
	"slices"
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
	t := &Table{conn: conn, db: db, name: view, schema: s, windows: windows}
	raw := Quote(db) + "." + Quote(RawTable(storage))
	t.raw = raw
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
		add(m.Name, chType(m.Type))
	}
	add("is_final", "UInt8")
	add("version", "UInt64")
	order := append([]string{"`window_name`", "`window_start`"}, keys...)
	order = append(order, "`source_partition`")
	ddl := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s, `inserted_at` DateTime DEFAULT now()) ENGINE = ReplacingMergeTree(`version`) ORDER BY (%s)",
		raw, strings.Join(cols, ", "), strings.Join(order, ", "))
	if err := conn.Exec(ctx, ddl); err != nil {
		return nil, fmt.Errorf("sink: create table %s: %w", raw, err)
	}
	group := append([]string{"`window_name`", "`window_start`", "`window_end`"}, keys...)
	sel := append([]string(nil), group...)
	for _, m := range s.Metrics {
		fn := "sum"
		switch m.Kind {
		case abi.Min:
			fn = "min"
		case abi.Max:
			fn = "max"
		}
		sel = append(sel, fmt.Sprintf("%s(%s) AS %s", fn, Quote(m.Name), Quote(m.Name)))
	}
	sel = append(sel, "min(`is_final`) AS `is_final`")
	ddl = fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s.%s AS SELECT %s FROM %s FINAL GROUP BY %s",
		Quote(db), Quote(view), strings.Join(sel, ", "), raw, strings.Join(group, ", "))
	if err := conn.Exec(ctx, ddl); err != nil {
		return nil, fmt.Errorf("sink: create view %s.%s: %w", db, view, err)
	}
	t.insert = fmt.Sprintf("INSERT INTO %s (%s)", raw, strings.Join(insertCols, ", "))
	return t, nil
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
		want[m.Name] = chType(m.Type)
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
		w := t.windows[r.Window]
		start, end := time.Unix(0, 0).UTC(), time.Unix(0, 0).UTC()
		if w.Kind != abi.Global {
			start, end = time.UnixMilli(r.Start).UTC(), time.UnixMilli(w.End(r.Start)).UTC()
		}
		keys, err := t.schema.KeyValues(r.Key)
		if err != nil {
			return err
		}
		vals = append(vals[:0], w.Name, start, end)
		vals = append(vals, keys...)
		vals = append(vals, uint32(partition))
		for j, m := range r.Metrics {
			vals = append(vals, t.schema.MetricValue(j, m))
		}
		final := uint8(0)
		if r.Final {
			final = 1
		}
		vals = append(vals, final, uint64(version))
		if err := b.Append(vals...); err != nil {
			return fmt.Errorf("sink: append to %s: %w", t.name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("sink: insert into %s: %w", t.name, err)
	}
	return nil
}
