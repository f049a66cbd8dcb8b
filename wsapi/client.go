package wsapi

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// The JavaScript client, built from client/src/snorky.js by client/build.mjs
// and committed, so that serving it needs no npm step.
//
//go:embed client/snorky.js client/snorky.mjs client/snorky.d.ts
var clientFiles embed.FS

// clientFile is one served file of the JavaScript client.
type clientFile struct {
	body        []byte
	etag        string
	contentType string
}

var clientStart = time.Now()

func loadClientFile(name, contentType string) clientFile {
	b, err := clientFiles.ReadFile("client/" + name)
	if err != nil {
		panic("wsapi: embedded client file missing: " + name) // a build error, not a runtime one
	}
	sum := sha256.Sum256(b)
	return clientFile{body: b, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, contentType: contentType}
}

// ClientHandler serves the JavaScript client: /snorky.js (a classic script
// that defines the global Snorky), /snorky.mjs (an ES module) and
// /snorky.d.ts, each with an ETag (a hash of the content), a short public
// cache lifetime that is revalidated, and CORS headers for every origin: the
// file is public, and applications load it from their own pages.
func ClientHandler() http.Handler {
	files := map[string]clientFile{
		"/snorky.js":   loadClientFile("snorky.js", "text/javascript; charset=utf-8"),
		"/snorky.mjs":  loadClientFile("snorky.mjs", "text/javascript; charset=utf-8"),
		"/snorky.d.ts": loadClientFile("snorky.d.ts", "application/typescript; charset=utf-8"),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		h.Set("Vary", "Accept-Encoding")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodOptions:
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			h.Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		default:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.Set("Content-Type", f.contentType)
		h.Set("ETag", f.etag)
		h.Set("Cache-Control", "public, max-age=300, must-revalidate")
		h.Set("X-Content-Type-Options", "nosniff")
		if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		http.ServeContent(w, r, "", clientStart, bytes.NewReader(f.body))
	})
}

// etagMatches reports whether an If-None-Match header names etag.
func etagMatches(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		if part == "*" || strings.TrimPrefix(part, "W/") == etag {
			return true
		}
	}
	return false
}

// MountClient registers ClientHandler on mux at /snorky.js, /snorky.mjs and
// /snorky.d.ts.
func MountClient(mux *http.ServeMux) {
	h := ClientHandler()
	for _, p := range []string{"/snorky.js", "/snorky.mjs", "/snorky.d.ts"} {
		mux.Handle(p, h)
	}
}
