package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wagg/wagg/host/auth"
	"github.com/wagg/wagg/plugins"
)

const (
	secret   = "0123456789abcdef0123456789abcdef"
	issuer   = "wagg-test"
	audience = "wagg"
)

// fakeBackend answers every call with success.
type fakeBackend struct{}

func (fakeBackend) PushPlugin(_ context.Context, name, version string, _ []byte) (plugins.Manifest, error) {
	return plugins.Manifest{Name: name, Version: version}, nil
}
func (fakeBackend) Plugins() ([]plugins.Manifest, error) { return []plugins.Manifest{}, nil }
func (fakeBackend) MaxUpload() int                       { return 1 << 20 }
func (fakeBackend) Deploy(_ context.Context, d plugins.Deployment) (Deployment, error) {
	return Deployment{Deployment: d}, nil
}
func (fakeBackend) Undeploy(context.Context, string) error             { return nil }
func (fakeBackend) DeletePlugin(context.Context, string, string) error { return nil }
func (fakeBackend) Deployments() []Deployment                          { return []Deployment{} }
func (fakeBackend) Stats(_ context.Context, name string) (Stats, error) {
	return Stats{Name: name}, nil
}
func (fakeBackend) DeadLetters(context.Context, string, int) ([]DeadLetter, error) {
	return []DeadLetter{}, nil
}
func (fakeBackend) Query(context.Context, string) (QueryResult, error) {
	return QueryResult{Columns: []QueryColumn{}, Rows: [][]any{}}, nil
}
func (fakeBackend) Health(context.Context) Health {
	return Health{Status: "degraded", Reasons: []string{"clickhouse: not answering: dial 10.0.0.9:9000"}}
}

func ok(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })
}

func newServer(t *testing.T, withAuth bool) *httptest.Server {
	t.Helper()
	v := verifier(t, withAuth)
	srv := httptest.NewServer(New(fakeBackend{}, Handlers{Live: ok("live"), LiveSSE: ok("sse"), Metrics: ok("metrics"), Web: ok("page"), Auth: v}))
	t.Cleanup(srv.Close)
	return srv
}

// verifier is the test key's verifier, or nil (open mode).
func verifier(t *testing.T, withAuth bool) *auth.Verifier {
	t.Helper()
	if !withAuth {
		return nil
	}
	p := filepath.Join(t.TempDir(), "k1.key")
	os.WriteFile(p, []byte(secret), 0o600)
	v, err := auth.New(auth.Options{HMACKeyFiles: []string{p}, Issuer: issuer, Audience: audience, Leeway: -1})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func token(t *testing.T, key, iss, aud string, exp time.Duration, scopes ...string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "t", "iss": iss, "aud": aud, "exp": time.Now().Add(exp).Unix(), "scope": strings.Join(scopes, " "),
	}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type endpoint struct {
	method, path, ctype, body string
	scope                     string // the scope that lets it through
	okStatus                  int
}

var spec = `{"name":"v","plugin":"votes@1","topic":"votes","windows":[{"name":"total","kind":"global"}]}`

// endpoints is every endpoint that needs a scope (docs/security.md).
var endpoints = []endpoint{
	{"POST", "/v1/plugins/votes/1", "application/wasm", "\x00asm", auth.ScopePluginsWrite, 201},
	{"GET", "/v1/plugins", "", "", auth.ScopeDeploymentsRead, 200},
	{"DELETE", "/v1/plugins/votes/1", "", "", auth.ScopePluginsWrite, 204},
	{"POST", "/v1/deployments", "application/json", spec, auth.ScopeDeploymentsWrite, 201},
	{"GET", "/v1/deployments", "", "", auth.ScopeDeploymentsRead, 200},
	{"DELETE", "/v1/deployments/v", "", "", auth.ScopeDeploymentsWrite, 204},
	{"GET", "/v1/deployments/v/stats", "", "", auth.ScopeDeploymentsRead, 200},
	{"GET", "/v1/deployments/v/dead-letters?n=10", "", "", auth.ScopeDeploymentsRead, 200},
	{"POST", "/v1/query", "application/json", `{"sql":"SELECT 1"}`, auth.ScopeSQLRead, 200},
	{"GET", "/metrics", "", "", auth.ScopeAdmin, 200},
	{"GET", "/debug/pprof/", "", "", auth.ScopeAdmin, 200},
}

func do(t *testing.T, srv *httptest.Server, method, path, ctype, body string, hdr map[string]string) (int, ErrorBody, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e ErrorBody
	json.Unmarshal(b, &e)
	return resp.StatusCode, e, string(b)
}

func TestAPI_EveryEndpointChecksItsScope(t *testing.T) {
	srv := newServer(t, true)
	for _, ep := range endpoints {
		other := auth.ScopeSQLRead
		if ep.scope == other {
			other = auth.ScopeDeploymentsRead
		}
		cases := []struct {
			name   string
			auth   string
			status int
			code   string
		}{
			{"no token", "", 401, CodeUnauthorized},
			{"not bearer", "Basic dTpw", 401, CodeUnauthorized},
			{"expired", "Bearer " + token(t, secret, issuer, audience, -time.Minute, ep.scope), 401, CodeTokenExpired},
			{"bad signature", "Bearer " + token(t, secret+"x", issuer, audience, time.Hour, ep.scope), 401, CodeUnauthorized},
			{"wrong issuer", "Bearer " + token(t, secret, "evil", audience, time.Hour, ep.scope), 401, CodeUnauthorized},
			{"wrong audience", "Bearer " + token(t, secret, issuer, "other", time.Hour, ep.scope), 401, CodeUnauthorized},
			{"missing scope", "Bearer " + token(t, secret, issuer, audience, time.Hour, other, "live:*"), 403, CodeForbidden},
			{"right scope", "Bearer " + token(t, secret, issuer, audience, time.Hour, ep.scope), ep.okStatus, ""},
			{"admin", "Bearer " + token(t, secret, issuer, audience, time.Hour, auth.ScopeAdmin), ep.okStatus, ""},
		}
		for _, c := range cases {
			t.Run(ep.method+" "+ep.path+"/"+c.name, func(t *testing.T) {
				hdr := map[string]string{}
				if c.auth != "" {
					hdr["Authorization"] = c.auth
				}
				status, e, body := do(t, srv, ep.method, ep.path, ep.ctype, ep.body, hdr)
				if status != c.status || e.Error.Code != c.code {
					t.Fatalf("got %d %q, want %d %q: %s", status, e.Error.Code, c.status, c.code, body)
				}
				if status == 401 && !strings.HasPrefix(body, "{") {
					t.Fatalf("401 without a JSON body: %s", body)
				}
			})
		}
	}
}

func TestAPI_ImpliedScopes(t *testing.T) {
	srv := newServer(t, true)
	for _, c := range []struct {
		scope, method, path string
		status              int
	}{
		{auth.ScopeDeploymentsWrite, "GET", "/v1/deployments", 200},
		{auth.ScopePluginsWrite, "GET", "/v1/plugins", 200},
		{auth.ScopeDeploymentsRead, "POST", "/v1/deployments", 403},
		{auth.ScopePluginsWrite, "POST", "/v1/deployments", 403},
		{"live:votes", "GET", "/v1/deployments", 403},
	} {
		status, _, body := do(t, srv, c.method, c.path, "application/json", spec, map[string]string{"Authorization": "Bearer " + token(t, secret, issuer, audience, time.Hour, c.scope)})
		if status != c.status {
			t.Errorf("%s on %s %s: %d, want %d: %s", c.scope, c.method, c.path, status, c.status, body)
		}
	}
}

func TestAPI_PublicEndpoints(t *testing.T) {
	srv := newServer(t, true)
	// /healthz: status for everyone, reasons with admin only.
	status, _, body := do(t, srv, "GET", "/healthz", "", "", nil)
	var h Health
	json.Unmarshal([]byte(body), &h)
	if status != 200 || h.Status != "degraded" || len(h.Reasons) != 0 {
		t.Errorf("anonymous /healthz: %d %s", status, body)
	}
	_, _, body = do(t, srv, "GET", "/healthz", "", "", map[string]string{"Authorization": "Bearer " + token(t, secret, issuer, audience, time.Hour, auth.ScopeAdmin)})
	json.Unmarshal([]byte(body), &h)
	if len(h.Reasons) != 1 {
		t.Errorf("admin /healthz has no reasons: %s", body)
	}
	// The page's files, the live handshake and the SSE stream (the hub
	// checks their tokens).
	for p, want := range map[string]string{"/": "page", "/v1/live": "live", "/v1/live/sse?aggregator=votes": "sse"} {
		if status, _, body := do(t, srv, "GET", p, "", "", nil); status != 200 || body != want {
			t.Errorf("%s: %d %s, want %s", p, status, body, want)
		}
	}
}

func TestAPI_CrossSiteRequestsRefused(t *testing.T) {
	for _, withAuth := range []bool{false, true} {
		srv := newServer(t, withAuth)
		bearer := ""
		if withAuth {
			bearer = "Bearer " + token(t, secret, issuer, audience, time.Hour, auth.ScopeAdmin)
		}
		for _, c := range []struct {
			name                      string
			method, path, ctype, body string
			hdr                       map[string]string
			status                    int
			code                      string
		}{
			// What a page on another site can send without a preflight.
			{"text/plain deploy", "POST", "/v1/deployments", "text/plain", spec, nil, 415, CodeUnsupportedMedia},
			{"form deploy", "POST", "/v1/deployments", "application/x-www-form-urlencoded", spec, nil, 415, CodeUnsupportedMedia},
			{"multipart push", "POST", "/v1/plugins/x/1", "multipart/form-data; boundary=x", "--x--", nil, 415, CodeUnsupportedMedia},
			{"no content type", "POST", "/v1/plugins/x/1", "", "\x00asm", nil, 415, CodeUnsupportedMedia},
			{"Sec-Fetch-Site cross-site", "POST", "/v1/deployments", "application/json", spec, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, CodeCrossOrigin},
			{"foreign Origin", "DELETE", "/v1/deployments/v", "", "", map[string]string{"Origin": "https://evil.example"}, 403, CodeCrossOrigin},
			{"foreign Origin push", "POST", "/v1/plugins/x/1", "application/wasm", "\x00asm", map[string]string{"Origin": "https://evil.example"}, 403, CodeCrossOrigin},
			{"same origin", "POST", "/v1/deployments", "application/json", spec, map[string]string{"Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}, 201, ""},
		} {
			hdr := map[string]string{}
			for k, v := range c.hdr {
				hdr[k] = v
			}
			if bearer != "" {
				hdr["Authorization"] = bearer
			}
			status, e, body := do(t, srv, c.method, c.path, c.ctype, c.body, hdr)
			if status != c.status || e.Error.Code != c.code {
				t.Errorf("auth=%v %s: got %d %q, want %d %q: %s", withAuth, c.name, status, e.Error.Code, c.status, c.code, body)
			}
		}
	}
}

func TestAPI_OpenModeAnswersLoopbackNamesOnly(t *testing.T) {
	srv := newServer(t, false)
	for _, c := range []struct {
		host   string
		status int
	}{
		{"", 200}, // the test server's own 127.0.0.1:port
		{"localhost:8080", 200},
		{"[::1]:8080", 200},
		{"evil.example:8080", 403}, // a DNS-rebinding page
		{"10.1.2.3:8080", 403},
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/deployments", nil)
		if c.host != "" {
			req.Host = c.host
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || (c.status == 403 && !bytes.Contains(b, []byte(CodeCrossOrigin))) {
			t.Errorf("Host %q: %d %s, want %d", c.host, resp.StatusCode, b, c.status)
		}
	}
	// Open mode needs no token.
	for _, ep := range endpoints {
		if status, _, body := do(t, srv, ep.method, ep.path, ep.ctype, ep.body, nil); status != ep.okStatus {
			t.Errorf("open mode %s %s: %d %s", ep.method, ep.path, status, body)
		}
	}
}

func TestAPI_RequestsPerClientAreLimited(t *testing.T) {
	srv := newServer(t, true)
	ann := map[string]string{"Authorization": "Bearer " + token(t, secret, issuer, audience, time.Hour, auth.ScopeDeploymentsRead)}
	limited := 0
	for range RequestBurst + 20 {
		status, e, _ := do(t, srv, "GET", "/v1/deployments", "", "", ann)
		if status == http.StatusTooManyRequests {
			if e.Error.Code != CodeRateLimited {
				t.Fatalf("429 with code %q", e.Error.Code)
			}
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("a client far over its burst was never limited")
	}
	// Another client (another subject) is not slowed down by the first.
	bob, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "bob", "iss": issuer, "aud": audience, "exp": time.Now().Add(time.Hour).Unix(), "scope": auth.ScopeDeploymentsRead,
	}).SignedString([]byte(secret))
	if status, _, body := do(t, srv, "GET", "/v1/deployments", "", "", map[string]string{"Authorization": "Bearer " + bob}); status != 200 {
		t.Fatalf("another client: %d %s", status, body)
	}
}

func TestAPI_DeadLettersCountIsBounded(t *testing.T) {
	srv := newServer(t, false)
	for _, c := range []struct {
		n      string
		status int
	}{{"", 200}, {"?n=1", 200}, {"?n=500", 200}, {"?n=0", 400}, {"?n=501", 400}, {"?n=x", 400}, {"?n=-3", 400}} {
		if status, e, body := do(t, srv, "GET", "/v1/deployments/v/dead-letters"+c.n, "", "", nil); status != c.status || status == 400 && e.Error.Code != CodeBadRequest {
			t.Errorf("n %q: %d %s, want %d", c.n, status, body, c.status)
		}
	}
}

// A starting host answers /healthz at once, saying what it waits for to
// admins, and refuses everything else with 503 until it serves.
func TestAPI_StartingHostAnswersItsHealthChecks(t *testing.T) {
	for _, withAuth := range []bool{false, true} {
		srv := httptest.NewServer(Starting(verifier(t, withAuth), func() string { return "waiting for clickhouse 127.0.0.1:9000" }))
		t.Cleanup(srv.Close)
		admin := map[string]string{"Authorization": "Bearer " + token(t, secret, issuer, audience, time.Hour, auth.ScopeAdmin)}
		for _, hdr := range []map[string]string{nil, admin} {
			status, _, body := do(t, srv, "GET", "/healthz", "", "", hdr)
			var h Health
			if err := json.Unmarshal([]byte(body), &h); err != nil || status != 503 || h.Status != StatusStarting {
				t.Fatalf("auth %v: /healthz: %d %s", withAuth, status, body)
			}
			if showReasons := !withAuth || hdr != nil; showReasons != (len(h.Reasons) == 1 && strings.Contains(h.Reasons[0], "clickhouse")) {
				t.Errorf("auth %v, token %v: reasons %q", withAuth, hdr != nil, h.Reasons)
			}
		}
		for _, e := range endpoints {
			status, eb, body := do(t, srv, e.method, e.path, e.ctype, e.body, admin)
			if status != 503 || eb.Error.Code != CodeUnavailable {
				t.Errorf("%s %s while starting: %d %s", e.method, e.path, status, body)
			}
		}
	}
}
