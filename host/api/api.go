// Package api is wagg's HTTP API: plugin upload and listing, deployments,
// health, and the mounting of the live WebSocket, the metrics and the
// dashboard page. Every error is JSON with a stable code from the catalog
// below. It holds no state: the Backend does the work.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/wagg/wagg/plugins"
)

// Backend is what the API drives (server.Server).
type Backend interface {
	PushPlugin(ctx context.Context, name, version string, wasm []byte) (plugins.Manifest, error)
	Plugins() ([]plugins.Manifest, error)
	MaxUpload() int
	Deploy(ctx context.Context, d plugins.Deployment) (Deployment, error)
	Undeploy(ctx context.Context, name string) error
	Deployments() []Deployment
	Health(ctx context.Context) Health
}

// Health is the answer of /healthz. A degraded host still serves (the API,
// live deltas of what it read); the reasons say what does not work.
type Health struct {
	Status  string   `json:"status"` // ok or degraded
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
}

// Handlers are the parts served by other packages.
type Handlers struct {
	Live    http.Handler // WebSocket, at /v1/live
	Metrics http.Handler // Prometheus, at /metrics
	Web     http.Handler // the dashboard, at /
}

// Error codes of the API (the "code" of an error body).
const (
	CodeBadRequest    = "bad_request"    // malformed request
	CodeInvalidPlugin = "invalid_plugin" // the upload is not a valid plugin: the message says what to fix
	CodeInvalidSpec   = "invalid_spec"   // the deployment spec is wrong: the message names the field
	CodeTooLarge      = "too_large"      // the body exceeds the limit
	CodeConflict      = "conflict"       // name@version exists with other bytes
	CodeNotFound      = "not_found"      // no such plugin or deployment
	CodeUnavailable   = "unavailable"    // Kafka or ClickHouse does not answer
	CodeInternal      = "internal"       // a bug or an unexpected failure
)

// maxSpecSize bounds a deployment spec body.
const maxSpecSize = 1 << 20

// New returns the HTTP handler.
func New(b Backend, h Handlers) http.Handler {
	mux := http.NewServeMux()
	a := &handler{b: b}
	mux.HandleFunc("GET /healthz", a.health)
	mux.Handle("GET /metrics", h.Metrics)
	// Go profiles, for finding what limits a host (BENCHMARKS.md uses them).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.Handle("GET /v1/live", h.Live)
	mux.HandleFunc("POST /v1/plugins/{name}/{version}", a.pushPlugin)
	mux.HandleFunc("GET /v1/plugins", a.listPlugins)
	mux.HandleFunc("POST /v1/deployments", a.deploy)
	mux.HandleFunc("GET /v1/deployments", a.listDeployments)
	mux.HandleFunc("DELETE /v1/deployments/{name}", a.undeploy)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	mux.Handle("/", h.Web)
	return mux
}

type handler struct{ b Backend }

func (a *handler) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.b.Health(r.Context()))
}

func (a *handler) pushPlugin(w http.ResponseWriter, r *http.Request) {
	limit := a.b.MaxUpload()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
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

func (a *handler) listPlugins(w http.ResponseWriter, _ *http.Request) {
	ms, err := a.b.Plugins()
	if err != nil {
		writeErr(w, err, CodeInternal)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (a *handler) deploy(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSpecSize))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("deployment spec larger than %d bytes", maxSpecSize))
		return
	}
	d, err := plugins.ParseDeployment(body)
	if err != nil {
		writeErr(w, err, CodeInvalidSpec)
		return
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
