package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler_ServesThePageAndItsScripts(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/", "text/html", `id="status"`},
		{"/app.js", "text/javascript", "from './wagg.js'"},
		{"/wagg.js", "text/javascript", "export class Live"},
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
			// No CDN, no external fetch: everything comes from this origin.
			for _, ext := range []string{"http://", "https://", "//cdn"} {
				if strings.Contains(string(b), ext) {
					t.Errorf("body refers to %s", ext)
				}
			}
		})
	}
}
