package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wagg/wagg/plugins"
)

// recorder is a Backend that records what the handlers asked of it and
// answers with err when set. It stands in for the deployment manager and
// the registry, which the integration tests (host/server) run for real.
type recorder struct {
	mu        sync.Mutex
	err       error
	maxUpload int
	calls     []string
	name      string
	version   string
	wasm      []byte
	deployed  plugins.Deployment
	n         int
	sql       string
	result    *QueryResult // what Query answers, when set
}

func (r *recorder) call(format string, a ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, a...))
	return r.err
}

func (r *recorder) called() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recorder) PushPlugin(_ context.Context, name, version string, wasm []byte) (plugins.Manifest, error) {
	r.name, r.version, r.wasm = name, version, bytes.Clone(wasm)
	return plugins.Manifest{Name: name, Version: version, Size: len(wasm)}, r.call("PushPlugin %s %s", name, version)
}
func (r *recorder) Plugins() ([]plugins.Manifest, error) {
	return []plugins.Manifest{{Name: "votes", Version: "1"}}, r.call("Plugins")
}
func (r *recorder) MaxUpload() int {
	if r.maxUpload == 0 {
		return 1 << 20
	}
	return r.maxUpload
}
func (r *recorder) Deploy(_ context.Context, d plugins.Deployment) (Deployment, error) {
	r.deployed = d
	return Deployment{Deployment: d, Status: StatusRunning, Table: d.Name}, r.call("Deploy %s", d.Name)
}
func (r *recorder) Undeploy(_ context.Context, name string) error { return r.call("Undeploy %s", name) }
func (r *recorder) DeletePlugin(_ context.Context, name, version string) error {
	return r.call("DeletePlugin %s %s", name, version)
}
func (r *recorder) Deployments() []Deployment {
	r.call("Deployments")
	return []Deployment{{Deployment: plugins.Deployment{Name: "votes"}, Status: StatusFailed, Error: "stopped"}}
}
func (r *recorder) Stats(_ context.Context, name string) (Stats, error) {
	return Stats{Name: name}, r.call("Stats %s", name)
}
func (r *recorder) DeadLetters(_ context.Context, name string, n int) ([]DeadLetter, error) {
	r.n = n
	return []DeadLetter{}, r.call("DeadLetters %s %d", name, n)
}
func (r *recorder) Health(context.Context) Health { return Health{Status: "ok"} }
func (r *recorder) Query(_ context.Context, sql string) (QueryResult, error) {
	r.sql = sql
	if r.result != nil {
		return *r.result, r.call("Query")
	}
	return QueryResult{Columns: []QueryColumn{{Name: "1", Type: "UInt8"}}, Rows: [][]any{{1}}}, r.call("Query")
}

func serveRecorder(t *testing.T, r *recorder) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(r, Handlers{Live: ok("live"), LiveSSE: ok("sse"), Metrics: ok("metrics"), Web: ok("page")}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAPI_BackendErrorsBecomeTheirStatusAndCode(t *testing.T) {
	errs := []struct {
		name string
		err  error
		// status and code by endpoint kind: an upload, a spec, others
		status map[string]int
		code   map[string]string
	}{
		{"invalid", fmt.Errorf("%w: dry run: unreachable", plugins.ErrInvalid),
			map[string]int{"push": 422, "spec": 400, "other": 400}, map[string]string{"push": CodeInvalidPlugin, "spec": CodeInvalidSpec, "other": CodeBadRequest}},
		{"too large", fmt.Errorf("%w: 40 MiB", plugins.ErrTooLarge),
			map[string]int{"push": 413, "spec": 413, "other": 413}, map[string]string{"push": CodeTooLarge, "spec": CodeTooLarge, "other": CodeTooLarge}},
		{"dead-letter loop", &plugins.LoopError{Deployment: "v", Other: "w", Topic: "t"},
			map[string]int{"push": 409, "spec": 409, "other": 409}, map[string]string{"push": CodeConflict, "spec": CodeConflict, "other": CodeConflict}},
		{"not found", fmt.Errorf("%w: deployment v", plugins.ErrNotFound),
			map[string]int{"push": 404, "spec": 404, "other": 404}, map[string]string{"push": CodeNotFound, "spec": CodeNotFound, "other": CodeNotFound}},
		{"unavailable", fmt.Errorf("clickhouse: %w: dial tcp: refused", ErrUnavailable),
			map[string]int{"push": 503, "spec": 503, "other": 503}, map[string]string{"push": CodeUnavailable, "spec": CodeUnavailable, "other": CodeUnavailable}},
		{"a bug", errors.New("index out of range"),
			map[string]int{"push": 500, "spec": 500, "other": 500}, map[string]string{"push": CodeInternal, "spec": CodeInternal, "other": CodeInternal}},
	}
	calls := []struct {
		kind                      string
		method, path, ctype, body string
	}{
		{"push", "POST", "/v1/plugins/votes/1", "application/wasm", "\x00asm"},
		{"push", "DELETE", "/v1/plugins/votes/1", "", ""},
		{"spec", "POST", "/v1/deployments", "application/json", spec},
		{"spec", "DELETE", "/v1/deployments/v", "", ""},
		{"other", "GET", "/v1/deployments/v/stats", "", ""},
		{"other", "GET", "/v1/deployments/v/dead-letters", "", ""},
	}
	for _, e := range errs {
		for _, c := range calls {
			t.Run(e.name+"/"+c.method+" "+c.path, func(t *testing.T) {
				srv := serveRecorder(t, &recorder{err: e.err})
				status, body, raw := do(t, srv, c.method, c.path, c.ctype, c.body, nil)
				if status != e.status[c.kind] || body.Error.Code != e.code[c.kind] {
					t.Fatalf("got %d %q, want %d %q: %s", status, body.Error.Code, e.status[c.kind], e.code[c.kind], raw)
				}
				if body.Error.Message != e.err.Error() {
					t.Fatalf("message %q, want the backend's %q", body.Error.Message, e.err.Error())
				}
			})
		}
	}
	// A query ClickHouse refuses is the caller's to fix.
	srv := serveRecorder(t, &recorder{err: fmt.Errorf("%w: Code: 62, Syntax error", ErrInvalidQuery)})
	if status, body, raw := do(t, srv, "POST", "/v1/query", "application/json", `{"sql":"SELEC 1"}`, nil); status != 400 || body.Error.Code != CodeInvalidQuery || !strings.Contains(body.Error.Message, "Syntax error") {
		t.Fatalf("refused query: %d %s", status, raw)
	}
}

func TestAPI_PushHandsTheBackendThePathAndTheExactBytes(t *testing.T) {
	r := &recorder{}
	srv := serveRecorder(t, r)
	wasm := "\x00asm\x01\x00\x00\x00\xff\x00\r\n"
	status, _, raw := do(t, srv, "POST", "/v1/plugins/votes/1.2.0-rc1", "application/wasm", wasm, nil)
	if status != http.StatusCreated {
		t.Fatalf("%d %s", status, raw)
	}
	if r.name != "votes" || r.version != "1.2.0-rc1" || string(r.wasm) != wasm {
		t.Fatalf("backend got %q %q %q", r.name, r.version, r.wasm)
	}
	var m plugins.Manifest
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m.Ref() != "votes@1.2.0-rc1" || m.Size != len(wasm) {
		t.Fatalf("answer %s (%v)", raw, err)
	}
}

func TestAPI_UploadPastTheLimitIsRefusedBeforeTheBackend(t *testing.T) {
	r := &recorder{maxUpload: 64}
	srv := serveRecorder(t, r)
	for _, c := range []struct {
		size   int
		status int
	}{{64, 201}, {65, 413}, {1 << 20, 413}} {
		r.calls = nil
		status, body, raw := do(t, srv, "POST", "/v1/plugins/votes/1", "application/wasm", strings.Repeat("x", c.size), nil)
		if status != c.status {
			t.Fatalf("%d bytes: %d %s, want %d", c.size, status, raw, c.status)
		}
		if c.status == 413 {
			if body.Error.Code != CodeTooLarge || !strings.Contains(body.Error.Message, "64 bytes") {
				t.Fatalf("%d bytes: %s, want too_large naming the limit", c.size, raw)
			}
			if calls := r.called(); len(calls) != 0 {
				t.Fatalf("%d bytes reached the backend: %v", c.size, calls)
			}
		}
	}
}

func TestAPI_DeploySpecsAreParsedAndCheckedBeforeTheBackend(t *testing.T) {
	cases := []struct {
		name, query, body string
		status            int
		code, mentions    string
	}{
		{"not a spec", "", `{"name":`, 400, CodeInvalidSpec, "deployment"},
		{"unknown field", "", strings.Replace(spec, `"name"`, `"nmae"`, 1), 400, CodeInvalidSpec, "nmae"},
		{"wrong field", "", strings.Replace(spec, `"topic":"votes"`, `"topic":"a/b"`, 1), 400, CodeInvalidSpec, "topic"},
		{"no windows", "", `{"name":"v","plugin":"votes@1","topic":"votes","windows":[]}`, 400, CodeInvalidSpec, "windows"},
		{"bad start", "?start=yesterday", spec, 400, CodeInvalidSpec, "start"},
		{"larger than a spec may be", "", `{"name":"v","params":{"x":"` + strings.Repeat("a", maxSpecSize) + `"}}`, 413, CodeTooLarge, "deployment spec"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &recorder{}
			srv := serveRecorder(t, r)
			status, body, raw := do(t, srv, "POST", "/v1/deployments"+c.query, "application/json", c.body, nil)
			if status != c.status || body.Error.Code != c.code || !strings.Contains(body.Error.Message, c.mentions) {
				t.Fatalf("got %d %s, want %d %s mentioning %q", status, raw, c.status, c.code, c.mentions)
			}
			if calls := r.called(); len(calls) != 0 {
				t.Fatalf("a refused spec reached the backend: %v", calls)
			}
		})
	}
	// A good one reaches it parsed, with its defaults and the start asked for.
	r := &recorder{}
	srv := serveRecorder(t, r)
	yaml := "name: v\nplugin: votes@1\ntopic: votes\nwindows:\n  - {name: total, kind: global}\n"
	status, _, raw := do(t, srv, "POST", "/v1/deployments?start=1500", "application/yaml", yaml, nil)
	if status != http.StatusCreated {
		t.Fatalf("%d %s", status, raw)
	}
	d := r.deployed
	if d.Name != "v" || d.Start != "1500" || d.DeadLetterTopic != "votes.dead-letters" || d.MaxBatch != plugins.DefaultMaxBatch {
		t.Fatalf("backend got %+v", d)
	}
}

func TestAPI_QueryBodiesAreChecked(t *testing.T) {
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"not JSON", `SELECT 1`, 400, CodeBadRequest},
		{"an unknown field", `{"sql":"SELECT 1","format":"csv"}`, 400, CodeBadRequest},
		{"no SQL", `{}`, 400, CodeBadRequest},
		{"blank SQL", `{"sql":" \n\t"}`, 400, CodeBadRequest},
		{"SQL of the wrong type", `{"sql":1}`, 400, CodeBadRequest},
		{"larger than a query may be", `{"sql":"SELECT '` + strings.Repeat("a", maxQuerySize) + `'"}`, 413, CodeTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &recorder{}
			srv := serveRecorder(t, r)
			status, body, raw := do(t, srv, "POST", "/v1/query", "application/json", c.body, nil)
			if status != c.status || body.Error.Code != c.code {
				t.Fatalf("got %d %s, want %d %s", status, raw, c.status, c.code)
			}
			if calls := r.called(); len(calls) != 0 {
				t.Fatalf("a refused query reached the backend: %v", calls)
			}
		})
	}
	r := &recorder{}
	srv := serveRecorder(t, r)
	status, _, raw := do(t, srv, "POST", "/v1/query", "application/json", `{"sql":"SELECT count() FROM votes"}`, nil)
	var res QueryResult
	if status != 200 || json.Unmarshal([]byte(raw), &res) != nil || len(res.Rows) != 1 || r.sql != "SELECT count() FROM votes" {
		t.Fatalf("%d %s; backend got %q", status, raw, r.sql)
	}
}

func TestAPI_ReadsPassTheirArgumentsAndAnswersThrough(t *testing.T) {
	r := &recorder{}
	srv := serveRecorder(t, r)
	for _, c := range []struct {
		path, call string
		status     int
		answer     string
	}{
		{"/v1/deployments/votes/dead-letters", "DeadLetters votes 50", 200, "[]"},
		{"/v1/deployments/votes/dead-letters?n=7", "DeadLetters votes 7", 200, "[]"},
		{"/v1/deployments/votes/stats", "Stats votes", 200, `"name": "votes"`},
		{"/v1/deployments", "Deployments", 200, `"error": "stopped"`},
		{"/v1/plugins", "Plugins", 200, `"version": "1"`},
	} {
		r.calls = nil
		status, _, raw := do(t, srv, "GET", c.path, "", "", nil)
		calls := r.called()
		if status != c.status || len(calls) != 1 || calls[0] != c.call || !strings.Contains(raw, c.answer) {
			t.Errorf("GET %s: %d %s after %v; want %d with %s after %q", c.path, status, raw, calls, c.status, c.answer, c.call)
		}
		if got := httptestContentType(t, srv, c.path); got != "application/json" {
			t.Errorf("GET %s: Content-Type %q", c.path, got)
		}
	}
	// DELETE answers 204 with no body.
	status, _, raw := do(t, srv, "DELETE", "/v1/deployments/votes", "", "", nil)
	if status != http.StatusNoContent || raw != "" {
		t.Errorf("DELETE: %d %q", status, raw)
	}
}

func TestAPI_UnknownEndpointsAnswerAJSONError(t *testing.T) {
	srv := serveRecorder(t, &recorder{})
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/nothing"},
		{"GET", "/v1/deployments/votes/nothing"},
		{"PUT", "/v1/deployments/votes"},
		{"GET", "/v1/plugins/votes/1"},
	} {
		status, body, raw := do(t, srv, c.method, c.path, "", "", nil)
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d %s", c.method, c.path, status, raw)
			continue
		}
		if body.Error.Code == "" || !json.Valid([]byte(raw)) {
			t.Errorf("%s %s: %d without a JSON error: %q", c.method, c.path, status, raw)
		}
	}
}

func httptestContentType(t *testing.T, srv *httptest.Server, path string) string {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("Content-Type")
}

// A body sent a byte at a time held its connection for ever, even for a
// request the host refuses; a query's answer is bounded in bytes, since
// its JSON can be six times what ClickHouse returned (\u0000 for a NUL).
func TestAPI_SlowBodiesAndLargeAnswersAreBounded(t *testing.T) {
	defer func(d time.Duration) { BodyTimeout = d }(BodyTimeout)
	BodyTimeout = 300 * time.Millisecond
	r := &recorder{result: &QueryResult{Columns: []QueryColumn{{Name: "s", Type: "String"}}, Rows: [][]any{{strings.Repeat("\x00", MaxQueryResponse/6+1)}}}}
	srv := serveRecorder(t, r)
	for _, path := range []string{"/v1/query", "/v1/plugins/votes/1", "/v1/no-such-endpoint"} {
		c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", path)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(c) // until the host closes the connection
		c.Close()
		if err != nil {
			t.Errorf("POST %s with 1 of 100 body bytes: the connection stayed open (%v)", path, err)
		}
	}
	resp, err := http.Post(srv.URL+"/v1/query", "application/json", strings.NewReader(`{"sql":"SELECT s FROM t"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	if resp.StatusCode != http.StatusBadRequest || eb.Error.Code != CodeInvalidQuery || !strings.Contains(eb.Error.Message, "bytes of JSON") {
		t.Fatalf("a result of %d bytes of JSON: %d %+v, want 400 invalid_query", MaxQueryResponse+6, resp.StatusCode, eb)
	}
}
