package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wagg/wagg/host/api"
	"github.com/wagg/wagg/plugins"
)

// loopBackend refuses every deploy as the host does when it would close a
// dead-letter loop with the stored deployment "upstream".
type loopBackend struct{ api.Backend }

func (loopBackend) Deploy(_ context.Context, d plugins.Deployment) (api.Deployment, error) {
	return api.Deployment{}, plugins.CheckDeadLetterLoop(d, []plugins.Deployment{
		{Name: "upstream", Topic: "clicks", DeadLetterTopic: "clicks.dead-letters"},
	})
}

func TestDeploy_ShowsTheDeadLetterLoopTheHostRefused(t *testing.T) {
	none := http.NotFoundHandler()
	srv := httptest.NewServer(api.New(loopBackend{}, api.Handlers{Live: none, LiveSSE: none, Metrics: none, Web: none}))
	defer srv.Close()
	spec := filepath.Join(t.TempDir(), "d.yaml")
	os.WriteFile(spec, []byte("name: retry\nplugin: votes@1\ntopic: clicks.dead-letters\nwindows: [{name: total, kind: global}]\n"), 0o644)
	err := deploy(context.Background(), []string{"-server", srv.URL, "-f", spec})
	if err == nil {
		t.Fatal("deploy succeeded, want the host's refusal")
	}
	for _, want := range []string{"dead-letter loop", "deployment retry", "deployment upstream", `"clicks.dead-letters"`, "409 conflict"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not show %s", err, want)
		}
	}
}

// startBackend records the start a deploy asked for.
type startBackend struct {
	api.Backend
	got *string
}

func (b startBackend) Deploy(_ context.Context, d plugins.Deployment) (api.Deployment, error) {
	*b.got = d.Start
	return api.Deployment{Deployment: d}, nil
}

func TestDeploy_StartAsksTheHostForAFreshStart(t *testing.T) {
	var got string
	none := http.NotFoundHandler()
	srv := httptest.NewServer(api.New(startBackend{got: &got}, api.Handlers{Live: none, LiveSSE: none, Metrics: none, Web: none}))
	defer srv.Close()
	spec := filepath.Join(t.TempDir(), "d.yaml")
	os.WriteFile(spec, []byte("name: polls\nplugin: votes@2\ntopic: clicks\nwindows: [{name: total, kind: global}]\n"), 0o644)
	for _, start := range []string{"earliest", "1500", "2026-12-02T10:00:00+01:00"} {
		if err := deploy(context.Background(), []string{"-server", srv.URL, "-f", spec, "-start", start}); err != nil || got != start {
			t.Fatalf("-start %s: %v, the host got %q", start, err, got)
		}
	}
	err := deploy(context.Background(), []string{"-server", srv.URL, "-f", spec, "-start", "yesterday"})
	if err == nil || !strings.Contains(err.Error(), "want earliest, an offset") {
		t.Fatalf("-start yesterday: %v, want the host's refusal", err)
	}
}
