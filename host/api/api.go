// Package api is wagg's HTTP API: plugin upload and listing, deployments,
// health, and the mounting of the live WebSocket, the metrics and the
// dashboard page. Every error is JSON with a stable code from the catalog
// below. Every endpoint checks the scope of the bearer token (docs/security.md
// has the table); state-changing requests are refused cross-site. It holds no
// state: the Backend does the work.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/wagg/wagg/host/auth"
	"github.com/wagg/wagg/plugins"
)

// Backend is what the API drives (server.Server).
type Backend interface {
	PushPlugin(ctx context.Context, name, version string, wasm []byte) (plugins.Manifest, error)
	Plugins() ([]plugins.Manifest, error)
	// DeletePlugin returns plugins.ErrConflict for a plugin a deployment
	// uses and plugins.ErrNotFound for one that is not stored.
	DeletePlugin(ctx context.Context, name, version string) error
	MaxUpload() int
	Deploy(ctx context.Context, d plugins.Deployment) (Deployment, error)
	Undeploy(ctx context.Context, name string) error
	Deployments() []Deployment
	// Stats and DeadLetters return plugins.ErrNotFound for a name that is
	// not deployed.
	Stats(ctx context.Context, name string) (Stats, error)
	DeadLetters(ctx context.Context, name string, n int) ([]DeadLetter, error)
	Health(ctx context.Context) Health
	Query(ctx context.Context, sql string) (QueryResult, error)
}

// QueryResult is the answer of POST /v1/query.
type QueryResult struct {
	Columns   []QueryColumn `json:"columns"`
	Rows      [][]any       `json:"rows"`
	Truncated bool          `json:"truncated"` // more rows than MaxQueryRows: only the first are here
	ElapsedMs int64         `json:"elapsed_ms"`
}

// QueryColumn names a result column and its ClickHouse type.
type QueryColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// MaxQueryRows is the most rows POST /v1/query returns.
const MaxQueryRows = 10_000

// ErrInvalidQuery wraps ClickHouse's refusal of a query (syntax, unknown
// table, a write in read-only mode, a limit): 400 with its message.
var ErrInvalidQuery = errors.New("invalid query")

// Health is the answer of /healthz. A degraded host still serves (the API,
// live deltas of what it read); the reasons say what does not work.
type Health struct {
	Status  string   `json:"status"` // ok, degraded or starting (StatusStarting)
	Reasons []string `json:"reasons,omitempty"`
}

// Statuses of a deployment.
const (
	StatusRunning = "running"
	StatusFailed  = "failed" // stopped by itself: Error says why; deploy it again to restart it
)

// Deployment is a running deployment as the API shows it.
type Deployment struct {
	plugins.Deployment
	Started time.Time `json:"started"`
	Table   string    `json:"table"` // the ClickHouse view to query
	Status  string    `json:"status"`
	Error   string    `json:"error,omitempty"`    // the last error of a failed deployment
	Failed  time.Time `json:"failed_at,omitzero"` // when it failed
	// Backfill is a fresh start catching up in a new generation beside
	// the running one (wagg deploy -start); it takes over once caught up.
	Backfill string `json:"backfill,omitempty"`
	// NotStarted says which partitions this host was given and could not
	// start, and why (its memory budget is spent, say): it retries at each
	// rebalance, and /healthz is degraded meanwhile.
	NotStarted string `json:"not_started,omitempty"`
	// Stalled says which partitions this host runs have not stored their
	// results in ClickHouse for a while (30 s), and why: ClickHouse
	// refusing writes, or dead letters Kafka does not take. Their records
	// wait in Kafka, and /healthz is degraded meanwhile.
	Stalled string `json:"stalled,omitempty"`
}

// Handlers are the parts served by other packages.
type Handlers struct {
	Live    http.Handler // WebSocket, at /v1/live
	LiveSSE http.Handler // Server-Sent Events, at /v1/live/sse
	Metrics http.Handler // Prometheus, at /metrics
	Web     http.Handler // the dashboard, at /
	// Auth verifies bearer tokens. Nil is open mode: every request is
	// allowed without a token, which config validation permits on a
	// loopback address only; requests naming another host are then refused
	// (a DNS-rebinding page cannot reach the API).
	Auth *auth.Verifier
}

// Error codes of the API (the "code" of an error body).
const (
	CodeBadRequest    = "bad_request"    // malformed request
	CodeInvalidPlugin = "invalid_plugin" // the upload is not a valid plugin: the message says what to fix
	CodeInvalidSpec   = "invalid_spec"   // the deployment spec is wrong: the message names the field
	CodeTooLarge      = "too_large"      // the body exceeds the limit
	CodeConflict      = "conflict"       // name@version exists with other bytes, or a deploy would close a dead-letter loop with the deployment the message names
	CodeNotFound      = "not_found"      // no such plugin or deployment
	CodeFull          = "storage_full"   // 507: the host's plugin storage limits are reached: delete unused versions
	CodeLimit         = "limit_reached"  // 409: the cluster has as many deployments as sandbox.max_deployments allows: undeploy one first
	CodeUnavailable   = "unavailable"    // Kafka or ClickHouse does not answer
	CodeInvalidQuery  = "invalid_query"  // ClickHouse refused the SQL: the message is its own
	CodeInternal      = "internal"       // a bug or an unexpected failure
	// Access: docs/security.md.
	CodeUnauthorized     = "unauthorized"           // 401: no bearer token, or one that does not verify (signature, issuer, audience, nbf)
	CodeTokenExpired     = "token_expired"          // 401: the token expired: get a new one
	CodeForbidden        = "forbidden"              // 403: the token lacks the scope the message names
	CodeCrossOrigin      = "cross_origin"           // 403: a state-changing request from another site, or (open mode) for a non-loopback host name
	CodeUnsupportedMedia = "unsupported_media_type" // 415: a POST body with a form or text/plain content type (what a cross-site form can send)
	CodeRateLimited      = "rate_limited"           // 429: more than RequestsPerSecond from one client: wait Retry-After seconds
	CodeBusy             = "busy"                   // 429: the host runs as many SQL queries as it takes at once: retry after Retry-After seconds
)

// ErrUnavailable wraps a backend error caused by Kafka or ClickHouse not
// answering: the request may succeed later (503).
var ErrUnavailable = errors.New("unavailable")

// ErrLimit wraps a refusal because the cluster has as many of a thing as
// its configuration allows (409 limit_reached): the message names the
// setting.
var ErrLimit = errors.New("limit reached")

// ErrBusy wraps a refusal because the host already does as much of that
// work at once as it takes (429, Retry-After 1).
var ErrBusy = errors.New("busy")

// maxSpecSize bounds a deployment spec body.
const maxSpecSize = 1 << 20

// New returns the HTTP handler.
func New(b Backend, h Handlers) http.Handler {
	mux := http.NewServeMux()
	a := &handler{b: b, v: h.Auth, limit: newLimiter(), uploads: make(chan struct{}, maxUploads)}
	// /healthz answers everyone, so that load balancers need no token; the
	// reasons (which name addresses and errors) only with admin.
	mux.HandleFunc("GET /healthz", a.health)
	mux.Handle("GET /metrics", a.need(h.Metrics, auth.ScopeAdmin))
	// Go profiles, for finding what limits a host (BENCHMARKS.md uses them).
	mux.Handle("GET /debug/pprof/", a.need(http.HandlerFunc(pprof.Index), auth.ScopeAdmin))
	mux.Handle("GET /debug/pprof/profile", a.need(http.HandlerFunc(pprof.Profile), auth.ScopeAdmin))
	// The hub checks live:<aggregator> per subscription: browsers cannot
	// set headers on a WebSocket, so the token may come in the subscribe
	// frame (docs/protocol.md).
	mux.Handle("GET /v1/live", h.Live)
	mux.Handle("GET /v1/live/sse", h.LiveSSE)
	mux.Handle("POST /v1/plugins/{name}/{version}", a.need(http.HandlerFunc(a.pushPlugin), auth.ScopePluginsWrite))
	mux.Handle("DELETE /v1/plugins/{name}/{version}", a.need(http.HandlerFunc(a.deletePlugin), auth.ScopePluginsWrite))
	mux.Handle("GET /v1/plugins", a.need(http.HandlerFunc(a.listPlugins), auth.ScopeDeploymentsRead, auth.ScopePluginsWrite))
	mux.Handle("POST /v1/deployments", a.need(http.HandlerFunc(a.deploy), auth.ScopeDeploymentsWrite))
	mux.Handle("GET /v1/deployments", a.need(http.HandlerFunc(a.listDeployments), auth.ScopeDeploymentsRead))
	mux.Handle("DELETE /v1/deployments/{name}", a.need(http.HandlerFunc(a.undeploy), auth.ScopeDeploymentsWrite))
	mux.Handle("GET /v1/deployments/{name}/stats", a.need(http.HandlerFunc(a.stats), auth.ScopeDeploymentsRead))
	// Dead letters hold the records' values: the same scope as reading the
	// deployments, which operators hold.
	mux.Handle("GET /v1/deployments/{name}/dead-letters", a.need(http.HandlerFunc(a.deadLetters), auth.ScopeDeploymentsRead))
	mux.Handle("POST /v1/query", a.need(http.HandlerFunc(a.query), auth.ScopeSQLRead))
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	// The page's files hold no data: they are public; what the page shows
	// comes from the API and the hub, which check its token.
	mux.Handle("/", h.Web)
	return a.guard(mux)
}

type handler struct {
	b     Backend
	v     *auth.Verifier
	limit *limiter
	// uploads bounds the plugin bodies read at once: each may be
	// sandbox.max_upload_size bytes, and 50 of 32 MB in parallel took a
	// host from 0.9 to 5 GB.
	uploads chan struct{}
}

// readBody reads a request's body, at most limit bytes, then lifts the
// read deadline the guard set for it: what the handler does next may take
// longer, and a deadline passing under it would cancel its context.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil {
		http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	return body, err
}

// BodyTimeout bounds the reading of a request's body, and the writing of
// a query's answer: a plugin of 32 MiB needs a client that sends at least
// about 600 KB a second. (A variable for the tests.)
var BodyTimeout = time.Minute

// maxUploads is how many plugin uploads a host reads at once; more wait.
const maxUploads = 4

// guard refuses what no endpoint should see: in open mode a request for a
// host name that is not loopback (DNS rebinding), and a state-changing
// request from another site (Sec-Fetch-Site, then Origin against Host).
func (a *handler) guard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, CodeCrossOrigin, "cross-origin "+r.Method+" refused: state-changing requests must come from the same origin or a client that is not a browser")
	}))
	checked := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			// A body sent a byte at a time would hold the connection, and
			// its handler, for ever: even a refused request's body is read
			// (drained) before the connection serves another. readBody
			// lifts the deadline once the body is in.
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(BodyTimeout))
		}
		if a.v == nil && !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, CodeCrossOrigin, fmt.Sprintf("host %q: without auth keys wagg answers only to loopback names (127.0.0.1, [::1], localhost)", r.Host))
			return
		}
		checked.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a Host header names this machine's loopback.
func loopbackHost(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// token verifies the request's bearer token. In open mode it returns nil,
// nil: everything is allowed.
func (a *handler) token(r *http.Request) (*auth.Token, error) {
	if a.v == nil {
		return nil, nil
	}
	return a.v.Verify(auth.FromHeader(r.Header.Get("Authorization")))
}

// need lets a request through when its token has one of the scopes, and
// refuses POST bodies of the content types a cross-site form can send.
func (a *handler) need(next http.Handler, scopes ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := "" // open mode: one machine, no per-client limit
		caller := auth.Caller{Remote: r.RemoteAddr, Open: a.v == nil}
		if a.v != nil {
			tok, err := a.token(r)
			if err != nil {
				writeAuthError(w, err)
				return
			}
			caller.Subject = tok.Subject
			client = "sub:" + tok.Subject
			if tok.Subject == "" {
				client = "tok:" + auth.FromHeader(r.Header.Get("Authorization"))
			}
			ok := false
			for _, s := range scopes {
				ok = ok || tok.Allows(s)
			}
			if !ok {
				writeError(w, http.StatusForbidden, CodeForbidden, fmt.Sprintf("%s %s needs scope %s", r.Method, r.URL.Path, strings.Join(scopes, " or ")))
				return
			}
		}
		if client != "" && !a.limit.allow(client) {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, CodeRateLimited, fmt.Sprintf("more than %d requests per second (burst %d) from this client", RequestsPerSecond, RequestBurst))
			return
		}
		r = r.WithContext(auth.WithCaller(r.Context(), caller))
		if r.Method == http.MethodPost {
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			switch mt {
			case "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
				writeError(w, http.StatusUnsupportedMediaType, CodeUnsupportedMedia,
					fmt.Sprintf("content type %q refused: send application/wasm for a plugin, application/json or application/yaml for a spec", r.Header.Get("Content-Type")))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeAuthError(w http.ResponseWriter, err error) {
	code, why := CodeUnauthorized, "invalid_token"
	switch {
	case errors.Is(err, auth.ErrNoToken):
		why = ""
	case errors.Is(err, auth.ErrExpired):
		code = CodeTokenExpired
	}
	v := `Bearer realm="wagg"`
	if why != "" {
		v += `, error="` + why + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	msg := err.Error()
	if errors.Is(err, auth.ErrNoToken) {
		msg = "no token: send Authorization: Bearer <token> (wagg token mints one; wagg commands take -token or WAGG_TOKEN)"
	}
	writeError(w, http.StatusUnauthorized, code, msg)
}

func (a *handler) health(w http.ResponseWriter, r *http.Request) {
	a.writeHealth(w, r, http.StatusOK, a.b.Health(r.Context()))
}

// writeHealth answers /healthz with h: its reasons name addresses and
// errors, so only an admin's token sees them when auth is on.
func (a *handler) writeHealth(w http.ResponseWriter, r *http.Request, status int, h Health) {
	if a.v != nil {
		if tok, err := a.token(r); err != nil || !tok.Allows(auth.ScopeAdmin) {
			h.Reasons = nil
		}
	}
	writeJSON(w, status, h)
}

func (a *handler) pushPlugin(w http.ResponseWriter, r *http.Request) {
	select {
	case a.uploads <- struct{}{}:
		defer func() { <-a.uploads }()
	case <-r.Context().Done():
		return
	}
	limit := a.b.MaxUpload()
	body, err := readBody(w, r, int64(limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("plugin larger than the limit of %d bytes", limit))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "reading the body: "+err.Error())
		return
	}
	m, err := a.b.PushPlugin(r.Context(), r.PathValue("name"), r.PathValue("version"), body)
	if err != nil {
		writeErr(w, err, CodeInvalidPlugin)
		return
	}
	writeJSON(w, http.StatusCreated, m)
}

func (a *handler) deletePlugin(w http.ResponseWriter, r *http.Request) {
	if err := a.b.DeletePlugin(r.Context(), r.PathValue("name"), r.PathValue("version")); err != nil {
		writeErr(w, err, CodeInvalidPlugin)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *handler) listPlugins(w http.ResponseWriter, _ *http.Request) {
	ms, err := a.b.Plugins()
	if err != nil {
		writeErr(w, err, CodeInternal)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (a *handler) deploy(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxSpecSize)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("deployment spec larger than %d bytes", maxSpecSize))
		return
	}
	d, err := plugins.ParseDeployment(body)
	if err != nil {
		writeErr(w, err, CodeInvalidSpec)
		return
	}
	if d.Start = r.URL.Query().Get("start"); d.Start != "" {
		if _, err := plugins.ParseStart(d.Start); err != nil {
			writeErr(w, err, CodeInvalidSpec)
			return
		}
	}
	st, err := a.b.Deploy(r.Context(), d)
	if err != nil {
		writeErr(w, err, CodeInvalidSpec)
		return
	}
	writeJSON(w, http.StatusCreated, st)
}

func (a *handler) listDeployments(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.b.Deployments())
}

// maxQuerySize bounds the body of POST /v1/query.
const maxQuerySize = 64 << 10

func (a *handler) query(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxQuerySize)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("query larger than %d bytes", maxQuerySize))
		return
	}
	var q struct {
		SQL string `json:"sql"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil || strings.TrimSpace(q.SQL) == "" {
		writeError(w, http.StatusBadRequest, CodeBadRequest, `want a JSON body {"sql": "SELECT ..."}`)
		return
	}
	res, err := a.b.Query(r.Context(), q.SQL)
	if err != nil {
		writeErr(w, err, CodeInvalidQuery)
		return
	}
	// The answer is bounded in bytes, not only its rows, and so is the
	// time a client may take to read it: a result's JSON can be six times
	// ClickHouse's bytes (a NUL byte is \u0000), and eight clients that
	// never read held 10 GB.
	b, err := json.Marshal(res)
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, err.Error())
		return
	}
	if len(b) > MaxQueryResponse {
		writeError(w, http.StatusBadRequest, CodeInvalidQuery, fmt.Sprintf("the result is %d bytes of JSON, more than the %d a query may return: select fewer rows or columns", len(b), MaxQueryResponse))
		return
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(BodyTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// MaxQueryResponse bounds the JSON of one POST /v1/query answer.
const MaxQueryResponse = 64 << 20

func (a *handler) undeploy(w http.ResponseWriter, r *http.Request) {
	if err := a.b.Undeploy(r.Context(), r.PathValue("name")); err != nil {
		writeErr(w, err, CodeInvalidSpec)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ErrorBody is the JSON of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeErr maps the registry's and backend's errors to statuses. invalid is
// the code for ErrInvalid in this context (a plugin or a spec).
func writeErr(w http.ResponseWriter, err error, invalid string) {
	switch {
	case errors.Is(err, plugins.ErrInvalid):
		status := http.StatusBadRequest
		if invalid == CodeInvalidPlugin {
			status = http.StatusUnprocessableEntity
		}
		writeError(w, status, invalid, err.Error())
	case errors.Is(err, plugins.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, err.Error())
	case errors.Is(err, plugins.ErrConflict):
		writeError(w, http.StatusConflict, CodeConflict, err.Error())
	case errors.Is(err, plugins.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, plugins.ErrFull):
		writeError(w, http.StatusInsufficientStorage, CodeFull, err.Error())
	case errors.Is(err, ErrLimit):
		writeError(w, http.StatusConflict, CodeLimit, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, CodeBusy, err.Error())
	case errors.Is(err, ErrInvalidQuery):
		writeError(w, http.StatusBadRequest, CodeInvalidQuery, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, CodeInternal, err.Error())
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// StatusStarting is the /healthz status of a host that does not serve
// yet: it waits for ClickHouse or Kafka, or starts its deployments.
const StatusStarting = "starting"

// Starting is what a host answers before it serves: /healthz 503 with
// status "starting" and, as reasons (admin only when auth is on), what it
// waits for (waiting); every other request 503 unavailable with
// Retry-After 1. A host restarted while ClickHouse is down answers its
// health checks at once instead of refusing connections until it is back,
// and a load balancer sends it nothing until it serves.
func Starting(v *auth.Verifier, waiting func() string) http.Handler {
	a := &handler{v: v}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Method != http.MethodGet {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "the host is starting: GET /healthz says what it waits for")
			return
		}
		w.Header().Set("Retry-After", "1")
		a.writeHealth(w, r, http.StatusServiceUnavailable, Health{Status: StatusStarting, Reasons: []string{waiting()}})
	})
}
