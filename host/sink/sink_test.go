package sink

import (
	"errors"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wagg/wagg/abi"
)

// These tests cover the SQL and the rows the sink builds from a plugin's
// schema, without ClickHouse; the integration tests (host/server) run them
// against the real server.

var testSchema = &abi.Schema{
	Keys: []abi.Column{{Name: "poll_id", Type: abi.Int64}, {Name: "option", Type: abi.String}, {Name: "score", Type: abi.Float64}},
	Metrics: []abi.Metric{
		{Name: "votes", Kind: abi.Count, Type: abi.Int64},
		{Name: "low", Kind: abi.Min, Type: abi.Float64},
		{Name: "high", Kind: abi.Max, Type: abi.Int64},
		{Name: "total", Kind: abi.Sum, Type: abi.Float64},
	},
}

var testWindows = []abi.Window{
	{Name: "second", Kind: abi.Tumbling, SizeMs: 1000},
	{Name: "hop", Kind: abi.Hopping, SizeMs: 10_000, SlideMs: 5000},
	{Name: "total", Kind: abi.Global},
}

func testTable() (*Table, statements) {
	st := statementsFor("db", "votes", "votes__g2", testSchema)
	return &Table{db: "db", name: "votes", raw: st.raw, schema: testSchema, windows: testWindows, insert: st.insert}, st
}

func key(poll int64, option string, score float64) string {
	k := abi.AppendKeyInt64(nil, poll)
	k = abi.AppendKeyString(k, []byte(option))
	return string(abi.AppendKeyFloat64(k, score))
}

func metrics(votes int64, low float64, high int64, total float64) []uint64 {
	return []uint64{uint64(votes), math.Float64bits(low), uint64(high), math.Float64bits(total)}
}

// column is one column of the CREATE TABLE.
type column struct{ name, typ string }

var columnRE = regexp.MustCompile("`([^`]+)` (\\w+)")

// tableColumns reads the columns a CREATE TABLE declares, and its sort key.
func tableColumns(t *testing.T, ddl string) (cols []column, order []string) {
	t.Helper()
	open := strings.Index(ddl, "(")
	end := strings.Index(ddl, ") ENGINE")
	order = listOf(t, ddl, "ORDER BY (")
	if open < 0 || end < 0 {
		t.Fatalf("not a CREATE TABLE: %s", ddl)
	}
	for _, m := range columnRE.FindAllStringSubmatch(ddl[open+1:end], -1) {
		cols = append(cols, column{m[1], m[2]})
	}
	return cols, order
}

// listOf reads the comma-separated names after prefix up to the next ")".
func listOf(t *testing.T, s, prefix string) []string {
	t.Helper()
	i := strings.Index(s, prefix)
	if i < 0 {
		t.Fatalf("no %q in %s", prefix, s)
	}
	rest := s[i+len(prefix):]
	if j := strings.Index(rest, ")"); j >= 0 {
		rest = rest[:j]
	}
	var out []string
	for _, n := range strings.Split(rest, ", ") {
		out = append(out, strings.Trim(n, "`"))
	}
	return out
}

func TestSink_InsertWritesEveryColumnOfTheTableWithItsType(t *testing.T) {
	tab, st := testTable()
	cols, _ := tableColumns(t, st.table)
	if cols[len(cols)-1].name != "inserted_at" {
		t.Fatalf("the table's last column is %v, want inserted_at (set by ClickHouse)", cols[len(cols)-1])
	}
	cols = cols[:len(cols)-1]
	insertCols := listOf(t, st.insert, st.raw+" (")
	var names []string
	for _, c := range cols {
		names = append(names, c.name)
	}
	if !slices.Equal(insertCols, names) {
		t.Fatalf("INSERT columns %v, table columns %v", insertCols, names)
	}
	goType := map[string]reflect.Type{
		"String": reflect.TypeFor[string](), "DateTime": reflect.TypeFor[time.Time](), "Int64": reflect.TypeFor[int64](),
		"Float64": reflect.TypeFor[float64](), "UInt32": reflect.TypeFor[uint32](), "UInt8": reflect.TypeFor[uint8](), "UInt64": reflect.TypeFor[uint64](),
	}
	for wi := range testWindows {
		r := abi.Row{Window: uint8(wi), Start: 1_700_000_000_000, Key: key(7, "a", 0.5), Metrics: metrics(3, -1.5, 9, 2.25), Final: true}
		vals, err := tab.values(nil, 4, 1234, &r)
		if err != nil {
			t.Fatal(err)
		}
		if len(vals) != len(cols) {
			t.Fatalf("window %s: %d values for %d columns", testWindows[wi].Name, len(vals), len(cols))
		}
		for i, c := range cols {
			if got := reflect.TypeOf(vals[i]); got != goType[c.typ] {
				t.Errorf("window %s: column %s %s gets a %v", testWindows[wi].Name, c.name, c.typ, got)
			}
		}
	}
}

// A replay writes a partition's rows again at the offset it had then, and a
// later checkpoint writes them at a later offset: ReplacingMergeTree keeps
// one row per sort key, the one of the highest version. So the sort key
// must be the same for the same group, pane and partition whatever the
// values, and differ when any of those differs.
func TestSink_ARowWrittenAgainReplacesItsEarlierCopy(t *testing.T) {
	tab, st := testTable()
	cols, order := tableColumns(t, st.table)
	idx := map[string]int{}
	for i, c := range cols {
		idx[c.name] = i
	}
	if !strings.Contains(st.table, "ReplacingMergeTree(`version`)") {
		t.Fatalf("the table does not replace rows by version: %s", st.table)
	}
	for _, col := range []string{"version", "is_final", "window_end", "votes", "low", "high", "total", "inserted_at"} {
		if slices.Contains(order, col) {
			t.Errorf("the sort key %v holds %s: a new value of a row would not replace the old one", order, col)
		}
	}
	sortKey := func(p int32, version int64, r abi.Row) []any {
		t.Helper()
		vals, err := tab.values(nil, p, version, &r)
		if err != nil {
			t.Fatal(err)
		}
		var k []any
		for _, c := range order {
			k = append(k, vals[idx[c]])
		}
		return k
	}
	versionOf := func(p int32, version int64, r abi.Row) uint64 {
		vals, _ := tab.values(nil, p, version, &r)
		return vals[idx["version"]].(uint64)
	}
	early := abi.Row{Window: 0, Start: 1_700_000_000_000, Key: key(7, "a", 0.5), Metrics: metrics(3, 1, 3, 3)}
	later := early
	later.Metrics, later.Final = metrics(5, 0.5, 8, 6), true
	if !reflect.DeepEqual(sortKey(2, 100, early), sortKey(2, 250, later)) {
		t.Fatalf("the same group, pane and partition at two offsets have two sort keys: %v, %v", sortKey(2, 100, early), sortKey(2, 250, later))
	}
	if versionOf(2, 250, later) <= versionOf(2, 100, early) {
		t.Fatal("the row of the later offset does not have the higher version")
	}
	if !reflect.DeepEqual(sortKey(2, 100, early), sortKey(2, 100, early)) {
		t.Fatal("a replay of the same row at the same offset has another sort key")
	}
	others := []struct {
		name string
		p    int32
		r    func(abi.Row) abi.Row
	}{
		{"another partition", 3, func(r abi.Row) abi.Row { return r }},
		{"another pane", 2, func(r abi.Row) abi.Row { r.Start += 1000; return r }},
		{"another window", 2, func(r abi.Row) abi.Row { r.Window = 1; return r }},
		{"another integer key", 2, func(r abi.Row) abi.Row { r.Key = key(8, "a", 0.5); return r }},
		{"another string key", 2, func(r abi.Row) abi.Row { r.Key = key(7, "b", 0.5); return r }},
		{"another float key", 2, func(r abi.Row) abi.Row { r.Key = key(7, "a", 0.25); return r }},
	}
	for _, o := range others {
		if reflect.DeepEqual(sortKey(2, 100, early), sortKey(o.p, 100, o.r(early))) {
			t.Errorf("%s has the same sort key: one would replace the other", o.name)
		}
	}
}

func TestSink_ViewMergesThePartitionsByMetricKind(t *testing.T) {
	_, st := testTable()
	if !strings.HasPrefix(st.view, "CREATE VIEW IF NOT EXISTS `db`.`votes` AS SELECT ") {
		t.Fatalf("the view is not named by the deployment: %s", st.view)
	}
	if !strings.Contains(st.view, "FROM "+st.raw+" FINAL ") {
		t.Fatalf("the view does not read the generation's table with FINAL: %s", st.view)
	}
	for _, want := range []string{"sum(`votes`) AS `votes`", "min(`low`) AS `low`", "max(`high`) AS `high`", "sum(`total`) AS `total`", "min(`is_final`) AS `is_final`"} {
		if !strings.Contains(st.view, want) {
			t.Errorf("the view lacks %s: %s", want, st.view)
		}
	}
	group := listOf(t, st.view, "GROUP BY ")
	if want := []string{"window_name", "window_start", "window_end", "poll_id", "option", "score"}; !slices.Equal(group, want) {
		t.Errorf("the view groups by %v, want %v (not by partition: it merges them)", group, want)
	}
}

func TestSink_RowValuesPlaceThePaneInTime(t *testing.T) {
	tab, _ := testTable()
	epoch := time.Unix(0, 0).UTC()
	cases := []struct {
		name       string
		r          abi.Row
		start, end time.Time
	}{
		{"tumbling", abi.Row{Window: 0, Start: 1_700_000_001_000}, time.UnixMilli(1_700_000_001_000).UTC(), time.UnixMilli(1_700_000_002_000).UTC()},
		{"hopping", abi.Row{Window: 1, Start: 1_700_000_005_000}, time.UnixMilli(1_700_000_005_000).UTC(), time.UnixMilli(1_700_000_015_000).UTC()},
		{"global, whatever start the plugin sent", abi.Row{Window: 2, Start: 1_700_000_005_000}, epoch, epoch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.r.Key, c.r.Metrics = key(1, "x", 1), metrics(1, 1, 1, 1)
			vals, err := tab.values(nil, 0, 1, &c.r)
			if err != nil {
				t.Fatal(err)
			}
			if vals[0] != testWindows[c.r.Window].Name || !vals[1].(time.Time).Equal(c.start) || !vals[2].(time.Time).Equal(c.end) {
				t.Fatalf("window, start, end = %v %v %v; want %s %v %v", vals[0], vals[1], vals[2], testWindows[c.r.Window].Name, c.start, c.end)
			}
		})
	}
}

func TestSink_ARowWhoseKeyDoesNotDecodeIsRefused(t *testing.T) {
	tab, _ := testTable()
	for _, k := range []string{"", key(1, "x", 1)[:12], key(1, "x", 1) + "?"} {
		r := abi.Row{Window: 0, Key: k, Metrics: metrics(1, 1, 1, 1)}
		if _, err := tab.values(nil, 0, 1, &r); err == nil {
			t.Errorf("key %x: no error", k)
		}
	}
}

// What Write writes, read back by Latest as ClickHouse returns it (window
// starts in seconds), is the row the partition emitted.
func TestSink_LatestReadsBackTheRowsWriteWrote(t *testing.T) {
	tab, _ := testTable()
	rows := []struct {
		p       int32
		version int64
		r       abi.Row
	}{
		{0, 10, abi.Row{Window: 0, Start: 1_700_000_001_000, Key: key(-3, "ünï'`", -0.0), Metrics: metrics(1<<40, math.Inf(-1), -7, 1e-300)}},
		{11, 1 << 50, abi.Row{Window: 1, Start: 1_700_000_005_000, Key: key(math.MaxInt64, "", math.MaxFloat64), Metrics: metrics(0, 0.1, math.MinInt64, -2.5), Final: true}},
		{5, 7, abi.Row{Window: 2, Key: key(0, "total", 3), Metrics: metrics(12, 1, 2, 3)}},
	}
	inserted := time.Unix(1_800_000_000, 0)
	for _, c := range rows {
		vals, err := tab.values(nil, c.p, c.version, &c.r)
		if err != nil {
			t.Fatal(err)
		}
		sc := tab.newScanned()
		scan(t, sc.dest(), fromInsert(vals, inserted))
		got, ok, err := sc.stored()
		if err != nil || !ok {
			t.Fatalf("row of window %d not read back", c.r.Window)
		}
		want := Stored{Partition: c.p, Version: c.version, InsertedAt: inserted, Row: c.r}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read back %+v, wrote %+v", got, want)
		}
	}
	// Panes start on whole seconds in ClickHouse: a start in between comes
	// back at its second.
	r := abi.Row{Window: 0, Start: 1_700_000_001_750, Key: key(1, "x", 1), Metrics: metrics(1, 1, 1, 1)}
	vals, _ := tab.values(nil, 0, 1, &r)
	sc := tab.newScanned()
	scan(t, sc.dest(), fromInsert(vals, inserted))
	if got, _, _ := sc.stored(); got.Row.Start != 1_700_000_001_000 {
		t.Errorf("start %d read back as %d, want the second it is in", r.Start, got.Row.Start)
	}
}

func TestSink_LatestSkipsRowsOfWindowsTheSpecNoLongerHas(t *testing.T) {
	tab, _ := testTable()
	r := abi.Row{Window: 0, Start: 1_700_000_001_000, Key: key(1, "x", 1), Metrics: metrics(1, 1, 1, 1)}
	vals, _ := tab.values(nil, 0, 1, &r)
	vals[0] = "minute" // a window of an earlier spec
	sc := tab.newScanned()
	scan(t, sc.dest(), fromInsert(vals, time.Unix(0, 0)))
	if got, ok, _ := sc.stored(); ok {
		t.Fatalf("a row of window minute read back as %+v", got)
	}
}

// fromInsert is what latestQuery returns for a row written with vals: the
// start as Unix seconds, no end, and the insertion time.
func fromInsert(vals []any, inserted time.Time) []any {
	out := []any{vals[0], vals[1].(time.Time).Unix()}
	out = append(out, vals[3:]...) // keys, partition, metrics, is_final, version
	return append(out, inserted.Unix())
}

// scan sets each destination to its value, as rows.Scan does; the types
// must match exactly.
func scan(t *testing.T, dest, vals []any) {
	t.Helper()
	if len(dest) != len(vals) {
		t.Fatalf("%d destinations for %d columns", len(dest), len(vals))
	}
	for i, v := range vals {
		d := reflect.ValueOf(dest[i]).Elem()
		if d.Type() != reflect.TypeOf(v) {
			t.Fatalf("column %d: a %v scanned into a %v", i, reflect.TypeOf(v), d.Type())
		}
		d.Set(reflect.ValueOf(v))
	}
}

func TestSink_LatestQueryReadsGlobalWindowsWhateverTheirAge(t *testing.T) {
	since := time.Unix(1_700_000_000, 0)
	cases := []struct {
		name    string
		windows []abi.Window
		where   string
	}{
		{"with a global window", testWindows, " WHERE `window_name` IN ('total') OR `window_start` >= toDateTime(1700000000)"},
		{"a quote in a global window's name", []abi.Window{{Name: "it's", Kind: abi.Global}}, " WHERE `window_name` IN ('its') OR `window_start` >= toDateTime(1700000000)"},
		{"no global window", testWindows[:2], " WHERE `window_start` >= toDateTime(1700000000)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tab, _ := testTable()
			tab.windows = c.windows
			q := tab.latestQuery(since)
			if !strings.HasSuffix(q, " FROM `db`.`votes__g2__partitions` FINAL"+c.where) {
				t.Fatalf("query %s\nwant it to end with FINAL%s", q, c.where)
			}
		})
	}
}

func TestSink_QuotedIdentifiersCannotBeLeft(t *testing.T) {
	for in, want := range map[string]string{"votes": "`votes`", "a`b": "`ab`", "`; DROP TABLE x; --": "`; DROP TABLE x; --`", "": "``"} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

// A distinct metric: its column holds the sketch's set registers, the view
// reads them under another name and gives the estimate under the metric's,
// and Latest reads back the sketch Write wrote (and refuses one that is not
// a sketch).
func TestSink_DistinctMetricsKeepTheirSketches(t *testing.T) {
	s := &abi.Schema{
		Keys: []abi.Column{{Name: "poll_id", Type: abi.Int64}},
		Metrics: []abi.Metric{
			{Name: "votes", Kind: abi.Count, Type: abi.Int64},
			{Name: "voters", Kind: abi.Distinct, Type: abi.Int64},
		},
	}
	st := statementsFor("db", "voters", "voters", s)
	cols, _ := tableColumns(t, st.table)
	if !slices.Contains(cols, column{"voters", "Array"}) || !strings.Contains(st.table, "`voters` Array(UInt32)") {
		t.Errorf("the sketch column is not Array(UInt32): %s", st.table)
	}
	for _, want := range []string{
		"FROM (SELECT *, `voters` AS `wagg:voters` FROM " + st.raw + " FINAL) GROUP BY ",
		DistinctSQL("wagg:voters") + " AS `voters`",
		"sum(`votes`) AS `votes`",
	} {
		if !strings.Contains(st.view, want) {
			t.Errorf("the view lacks %s: %s", want, st.view)
		}
	}
	tab := &Table{db: "db", name: "voters", raw: st.raw, schema: s, windows: testWindows, insert: st.insert}
	for _, users := range []int{0, 3, 5000} {
		sk := &abi.Sketch{}
		for u := range users {
			sk.AddInt64(int64(u))
		}
		r := abi.Row{Window: 2, Key: string(abi.AppendKeyInt64(nil, 7)), Metrics: []uint64{9, uint64(sk.Estimate())}, Sketches: []*abi.Sketch{nil, sk}}
		vals, err := tab.values(nil, 1, 5, &r)
		if err != nil {
			t.Fatal(err)
		}
		if got := vals[6].([]uint32); !slices.Equal(got, sk.Entries(nil)) {
			t.Fatalf("%d users: the column holds %d entries, the sketch %d", users, len(got), len(sk.Entries(nil)))
		}
		sc := tab.newScanned()
		scan(t, sc.dest(), fromInsert(vals, time.Unix(0, 0)))
		got, ok, err := sc.stored()
		if err != nil || !ok || !got.Row.Sketches[1].Equal(sk) || got.Row.Metrics[1] != r.Metrics[1] {
			t.Fatalf("%d users: read back %+v, %v, %v", users, got.Row, ok, err)
		}
		sc.mEntries[1] = []uint32{5<<6 | 1, 4<<6 | 1} // out of order
		if _, _, err := sc.stored(); !errors.Is(err, abi.ErrSketch) {
			t.Fatalf("entries out of order read back: %v", err)
		}
	}
}
