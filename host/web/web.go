package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Handler serves the dashboard at / (index.html and the bundle that
// host/web/build.mjs makes from src/: app.js, app.css, worker.js) and the
// client for other dashboards (wagg.js, wagg.d.ts). Mount it
// at the root, or under a prefix with http.StripPrefix: the page loads its
// scripts by relative URLs and calls the API at absolute ones.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The page talks to its own origin only.
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'")
		h.Set("X-Content-Type-Options", "nosniff")
		// The page may hold a token (from #token=): never leak its URL.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		switch r.URL.Path {
		case "/wagg.js", "/wagg.d.ts":
			// The client for other dashboards: public, no credentials, so any
			// origin may import it.
			h.Set("Access-Control-Allow-Origin", "*")
		}
		if strings.HasSuffix(r.URL.Path, ".d.ts") {
			h.Set("Content-Type", "text/plain; charset=utf-8") // not an MPEG transport stream
		}
		files.ServeHTTP(w, r)
	})
}
