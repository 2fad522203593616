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
