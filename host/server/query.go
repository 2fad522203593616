package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
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
	"max_execution_time": 10, // seconds
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
	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	failed := func(err error) error {
		return queryError(err, errors.Is(qctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil)
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

// queryTimeout is when the host stops a query, ClickHouse's
// max_execution_time and a margin for the answer to come back.
const queryTimeout = 11 * time.Second

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
	return fmt.Errorf("%w: clickhouse: %w", api.ErrUnavailable, err)
}

// jsonValue makes a scanned value encodable: JSON has no NaN or infinity.
func jsonValue(v any) any {
	switch f := v.(type) {
	case float64:
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Sprint(f)
		}
	case float32:
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Sprint(f)
		}
	}
	return v
}
