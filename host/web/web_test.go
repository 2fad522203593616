package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wagg/wagg/internal/testwasm"
)

func TestHandler_ServesThePageAndItsScripts(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/", "text/html", `id="status"`},
		{"/app.js", "text/javascript", "worker.js"},
		{"/app.css", "text/css", ".uplot"},
		{"/worker.js", "text/javascript", "/v1/live"},
		{"/wagg.js", "text/javascript", "export class Live"},
		{"/wagg.d.ts", "", "export class Series"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("content type %q, want %s", ct, tc.contentType)
			}
			if !strings.Contains(string(b), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			// Only the client for other dashboards is for every origin.
			cors := res.Header.Get("Access-Control-Allow-Origin")
			if public := strings.HasPrefix(tc.path, "/wagg."); public != (cors == "*") {
				t.Errorf("Access-Control-Allow-Origin %q", cors)
			}
			// No CDN, no external fetch: everything comes from this origin.
			for _, ext := range []string{"http://", "https://", "//cdn"} {
				if strings.Contains(string(b), ext) {
					t.Errorf("body refers to %s", ext)
				}
			}
		})
	}
}

// TestBundle_IsWhatTheSourcesBuild fails when host/web/assets holds a
// bundle other than what host/web/src builds: run make web and commit it.
// It needs node and the page's npm packages (make test installs them).
func TestBundle_IsWhatTheSourcesBuild(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testwasm.Missing(t, "no node: make test installs what this test needs")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "esbuild")); err != nil {
		testwasm.Missing(t, "no host/web/node_modules (make browser-deps installs it)")
	}
	out, err := exec.Command(node, "build.mjs", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("the committed bundle is stale: %v\n%s", err, out)
	}
}

// TestWaggJS_InNode runs wagg.js's unit tests (test/wagg.test.mjs: Live's
// continuity and resume, Series' seam) in Node with a scripted server.
func TestWaggJS_InNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		testwasm.Missing(t, "no node: make test installs what this test needs")
	}
	out, err := exec.Command(node, "--test", "test/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "# pass 2\n") || !strings.Contains(string(out), "# fail 0\n") {
		t.Fatalf("wagg.js unit tests: %v\n%s", err, out)
	}
}
