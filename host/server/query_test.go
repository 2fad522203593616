package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/internal/gen"
)

// POST /v1/query answers read-only SQL over a deployment's history, with
// column types, bounded results and ClickHouse's own refusals.
func TestQuery_ReadOnlySQLOverTheHistory(t *testing.T) {
	e := services(t)
	topic, cl := newTopic(t, e, 2)
	h := startHost(t, e)
	g := gen.New(gen.Options{Seed: rand.Uint64(), Polls: 20})
	var recs []*kgo.Record
	t0 := time.Now().Add(-time.Minute)
	for i := range 1000 {
		v := g.Next(t0.Add(time.Duration(i) * time.Millisecond).UnixMilli())
		recs = append(recs, &kgo.Record{Key: []byte(v.UserID), Value: v.AppendJSON(nil), Timestamp: time.UnixMilli(v.TS)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	h.deployVotes(t, "votes", topic, "")
	query := func(sql string) (int, api.QueryResult, api.ErrorBody) {
		body, _ := json.Marshal(map[string]string{"sql": sql})
		code, b := h.post(t, "/v1/query", "application/json", body)
		var res api.QueryResult
		var eb api.ErrorBody
		json.Unmarshal(b, &res)
		json.Unmarshal(b, &eb)
		return code, res, eb
	}
	sum := fmt.Sprintf("SELECT toInt64(sum(votes)) AS votes FROM %s.votes WHERE window_name = 'total'", h.db)
	eventually(t, time.Minute, "the votes are queryable", func() error {
		code, res, eb := query(sum)
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, eb.Error.Message)
		}
		if len(res.Rows) != 1 || res.Columns[0].Name != "votes" || res.Columns[0].Type != "Int64" {
			return fmt.Errorf("result %+v", res)
		}
		if n, _ := res.Rows[0][0].(float64); n != 1000 {
			return fmt.Errorf("%v votes, want 1000", res.Rows[0][0])
		}
		return nil
	})
	code, res, _ := query("SELECT number FROM system.numbers LIMIT 20000")
	if code != http.StatusOK || !res.Truncated || len(res.Rows) != api.MaxQueryRows {
		t.Fatalf("a large result: %d, %d rows, truncated %v", code, len(res.Rows), res.Truncated)
	}
	// Values JSON lacks, and arrays of bytes, wherever they are.
	code, res, eb := query("SELECT [1, 2, 3] AS a, [nan] AS b, toNullable(nan) AS c, (inf, 1) AS d")
	if got, _ := json.Marshal(res.Rows); code != http.StatusOK || string(got) != `[[[1,2,3],["NaN"],"NaN",["+Inf",1]]]` {
		t.Fatalf("values: %d %s %s", code, got, eb.Error.Message)
	}
	for _, bad := range []struct{ sql, msg string }{
		{"DROP TABLE " + h.db + ".votes", `not "DROP"`},
		{"INSERT INTO " + h.db + ".votes__partitions (window_name) VALUES ('x')", `not "INSERT"`},
		{"KILL QUERY WHERE 1", `not "KILL"`},
		{"SELECT 1 SETTINGS readonly = 0", "readonly"},
		{"SELECT 1 +", "Syntax error"},
		{"SELECT uniqState(1)", "unsupported column type"},
		// past max_execution_time, which 18.16 does not enforce on this
		{"SELECT count() FROM system.numbers", ""},
		// 1,000 brackets crash ClickHouse 18.16's parser: refused first
		{"SELECT " + strings.Repeat("(", 1000) + "1" + strings.Repeat(")", 1000), "1000 deep"},
	} {
		code, _, eb := query(bad.sql)
		if code != http.StatusBadRequest || eb.Error.Code != api.CodeInvalidQuery || !strings.Contains(eb.Error.Message, bad.msg) {
			t.Fatalf("%s: %d %q %q", bad.sql, code, eb.Error.Code, eb.Error.Message)
		}
	}
	if code, _, eb := query(sum); code != http.StatusOK {
		t.Fatalf("the table is gone, or ClickHouse: %d %s", code, eb.Error.Message)
	}
}

// SQL queries run at most two at a time on a host, on connections of their
// own: a third is refused at once (429 busy, Retry-After), and the host's
// writes and health probes never wait behind queries for a connection.
func TestQuery_AtMostTwoAtATimeOnTheirOwnConnections(t *testing.T) {
	e := services(t)
	h := startHost(t, e)
	post := func(sql string) (*http.Response, error) {
		body, _ := json.Marshal(map[string]string{"sql": sql})
		return http.Post(h.url+"/v1/query", "application/json", strings.NewReader(string(body)))
	}
	// two slow queries, named so that ClickHouse's process list shows them
	sleep := fmt.Sprintf("SELECT sleep(3) AS slow_%s", h.db)
	slow := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := post(sleep)
			if err != nil {
				slow <- 0
				return
			}
			resp.Body.Close()
			slow <- resp.StatusCode
		}()
	}
	eventually(t, 10*time.Second, "both slow queries running in ClickHouse", func() error {
		var n uint64
		err := h.ch.QueryRow(context.Background(), "SELECT count() FROM system.processes WHERE query = ?", sleep).Scan(&n)
		if err == nil && n != 2 {
			err = fmt.Errorf("%d running", n)
		}
		return err
	})
	resp, err := post("SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || eb.Error.Code != api.CodeBusy || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a third query while two run: %d %+v, want 429 busy with Retry-After", resp.StatusCode, eb)
	}
	var health api.Health
	if err := getJSON(h.url+"/healthz", &health); err != nil || health.Status != "ok" {
		t.Fatalf("health while two queries run: %+v %v", health, err)
	}
	for range 2 {
		if code := <-slow; code != http.StatusOK {
			t.Fatalf("a slow query answered %d", code)
		}
	}
	if resp, err = post("SELECT 1"); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a query after the two: %d", resp.StatusCode)
	}
}
