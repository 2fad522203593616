package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/wagg/wagg/host/api"
)

// querySettings make POST /v1/query read-only and bounded: ClickHouse
// refuses writes, DDL, SET and SETTINGS clauses, and stops a query past
// these limits with an error. (Numbers only: ClickHouse 18.16 takes no
// string settings over the native protocol, so results past
// api.MaxQueryRows are cut by the host, not by result_overflow_mode.)
var querySettings = clickhouse.Settings{
	"readonly":           1,
	"max_execution_time": int(maxExecution / time.Second),
	"max_memory_usage":   1 << 30,
	"max_result_bytes":   64 << 20,
}

// maxQueries is how many POST /v1/query run at once on a host, each on a
// connection of its own pool: with the pool the host writes through, 20
// slow queries took every connection, and the host's saves and health
// probes waited for one ("acquire conn timeout") until the queries ended.
const maxQueries = 2

// openQueries opens the connection pool of POST /v1/query.
func openQueries(o clickhouse.Options) (driver.Conn, chan struct{}, error) {
	o.MaxOpenConns, o.MaxIdleConns = maxQueries, maxQueries
	conn, err := clickhouse.Open(&o)
	return conn, make(chan struct{}, maxQueries), err
}

// Query runs read-only SQL on ClickHouse and returns at most
// api.MaxQueryRows rows. ClickHouse's refusals wrap api.ErrInvalidQuery;
// a ClickHouse that does not answer, api.ErrUnavailable; a query past the
// maxQueries running, api.ErrBusy.
func (s *Server) Query(ctx context.Context, sql string) (api.QueryResult, error) {
	select {
	case s.querying <- struct{}{}:
		defer func() { <-s.querying }()
	default:
		return api.QueryResult{}, fmt.Errorf("%w: %d queries run on this host already, the most it runs at once", api.ErrBusy, maxQueries)
	}
	if err := checkSQL(sql); err != nil {
		return api.QueryResult{}, err
	}
	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	failed := func(err error) error {
		// past max_execution_time, the driver's read deadline can end the
		// query before qctx does: the query's time ran out either way
		expired := errors.Is(qctx.Err(), context.DeadlineExceeded) || time.Since(start) >= maxExecution
		return queryError(err, expired && ctx.Err() == nil)
	}
	rows, err := s.queries.Query(clickhouse.Context(qctx, clickhouse.WithSettings(querySettings)), sql)
	if err != nil {
		return api.QueryResult{}, failed(err)
	}
	defer rows.Close()
	res := api.QueryResult{Columns: []api.QueryColumn{}, Rows: [][]any{}}
	types := rows.ColumnTypes()
	dst := make([]any, len(types))
	for i, ct := range types {
		res.Columns = append(res.Columns, api.QueryColumn{Name: ct.Name(), Type: ct.DatabaseTypeName()})
		dst[i] = reflect.New(ct.ScanType()).Interface()
	}
	for rows.Next() {
		if len(res.Rows) == api.MaxQueryRows {
			res.Truncated = true
			break
		}
		if err := rows.Scan(dst...); err != nil {
			return api.QueryResult{}, failed(err)
		}
		row := make([]any, len(dst))
		for i, d := range dst {
			row[i] = jsonValue(reflect.ValueOf(d).Elem().Interface())
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return api.QueryResult{}, failed(err)
	}
	res.ElapsedMs = time.Since(start).Milliseconds()
	return res, nil
}

// ClickHouse 18.16's parser recurses on each level of brackets and of CASE
// with no limit of its own (its max_ast_depth is checked after parsing):
// 1,000 nested brackets, or 1,500 nested CASE, crash the server, whoever
// sent them. A query may nest brackets maxSQLBrackets deep and hold
// maxSQLCases CASE in all: an END cannot be trusted to close one (a column
// may be named end), and 128 brackets around 400 nested CASE parse safely.
// Hand-written and generated dashboard queries stay far below both.
const (
	maxSQLBrackets = 128
	maxSQLCases    = 256
)

// sqlStatements are the statements POST /v1/query runs. readonly=1 refuses
// writes, DDL and SET, but not KILL QUERY, which would let a reader stop
// anyone's query on the server, the host's own inserts included.
var sqlStatements = []string{"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}

// sqlCrashers are functions that crash ClickHouse 18.16 on input a reader
// chooses (visitParamExtractRaw on truncated JSON: a segmentation fault).
var sqlCrashers = []string{"visitParamExtractRaw"}

// checkSQL refuses, before it reaches ClickHouse, a query that is not one
// of sqlStatements, that nests brackets deeper than maxSQLBrackets, holds
// more than maxSQLCases CASE or names one of sqlCrashers. It reads the
// query as ClickHouse's lexer does where that matters: string literals,
// quoted identifiers and comments hide brackets and words. Where the two
// might differ it errs on the side of counting: a comment ends at its
// first "*/", and an unclosed literal or comment runs to the end.
func checkSQL(sql string) error {
	first := ""
	brackets, deepest, cases := 0, 0, 0
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			i = skipQuoted(sql, i+1, c)
			if first == "" {
				first = "a literal"
			}
			continue
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			if j := strings.IndexByte(sql[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(sql)
			}
			continue
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			if j := strings.Index(sql[i+2:], "*/"); j >= 0 {
				i += j + 4
			} else {
				i = len(sql)
			}
			continue
		case c == '(' || c == '[' || c == '{':
			brackets++
			deepest = max(deepest, brackets)
		case c == ')' || c == ']' || c == '}':
			brackets = max(brackets-1, 0) // a stray closer must not hide openers
		case isWordByte(c):
			j := i
			for j < len(sql) && isWordByte(sql[j]) {
				j++
			}
			word := sql[i:j]
			if first == "" {
				first = word
			}
			if strings.EqualFold(word, "CASE") {
				cases++
			}
			for _, f := range sqlCrashers {
				if strings.EqualFold(word, f) {
					return fmt.Errorf("%w: %s crashes ClickHouse 18.16 on malformed JSON: use visitParamExtractString or JSON functions", api.ErrInvalidQuery, f)
				}
			}
			i = j
			continue
		case c > ' ' && first == "":
			first = string(c)
		}
		i++
	}
	if deepest > maxSQLBrackets {
		return fmt.Errorf("%w: brackets nest %d deep, more than the %d a query may", api.ErrInvalidQuery, deepest, maxSQLBrackets)
	}
	if cases > maxSQLCases {
		return fmt.Errorf("%w: %d CASE, more than the %d a query may hold", api.ErrInvalidQuery, cases, maxSQLCases)
	}
	for _, s := range sqlStatements {
		if strings.EqualFold(first, s) {
			return nil
		}
	}
	if first == "" {
		return fmt.Errorf("%w: the query is empty", api.ErrInvalidQuery)
	}
	return fmt.Errorf("%w: a query starts with one of %s, not %q", api.ErrInvalidQuery, strings.Join(sqlStatements, ", "), first)
}

// skipQuoted returns the index past the quote that closes a literal or
// identifier opened by q before i; a backslash escapes the next byte and a
// doubled quote stands for itself.
func skipQuoted(sql string, i int, q byte) int {
	for i < len(sql) {
		switch sql[i] {
		case '\\':
			i += 2
			continue
		case q:
			if i+1 < len(sql) && sql[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return len(sql)
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// maxExecution is ClickHouse's max_execution_time for a query, and
// queryTimeout when the host stops it: that and a margin for the answer to
// come back.
const (
	maxExecution = 10 * time.Second
	queryTimeout = maxExecution + time.Second
)

// queryError tells ClickHouse's refusal of the query, or the host's
// deadline (expired), from ClickHouse not answering. ClickHouse 18.16 lets
// some queries (count() of system.numbers) run past max_execution_time:
// the host stops them at its own deadline, as ClickHouse would have.
func queryError(err error, expired bool) error {
	if expired {
		return fmt.Errorf("%w: the query ran past %s", api.ErrInvalidQuery, queryTimeout)
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return fmt.Errorf("%w: clickhouse: %s", api.ErrInvalidQuery, ex.Message)
	}
	var unsupported *column.UnsupportedColumnTypeError
	if errors.As(err, &unsupported) {
		return fmt.Errorf("%w: %s: select a readable type instead (an aggregate state through finalizeAggregation or a -Merge function)", api.ErrInvalidQuery, unsupported.Error())
	}
	return fmt.Errorf("%w: clickhouse: %w", api.ErrUnavailable, err)
}

// jsonValue makes a scanned value encodable as JSON the way a reader
// expects it: NaN and infinities, which JSON lacks, as strings ("NaN",
// "+Inf"), wherever they are (in a Nullable, an Array or a Tuple), and an
// Array(UInt8) as numbers rather than the base64 encoding/json gives a
// []byte.
func jsonValue(v any) any {
	switch f := v.(type) {
	case float64:
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Sprint(f)
		}
		return v
	case float32:
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Sprint(f)
		}
		return v
	case nil, string, bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, int, uint:
		return v
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return jsonValue(rv.Elem().Interface())
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = jsonValue(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			out[fmt.Sprint(it.Key().Interface())] = jsonValue(it.Value().Interface())
		}
		return out
	}
	return v
}
