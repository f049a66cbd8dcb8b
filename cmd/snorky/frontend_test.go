package main

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestFrontendExtras: the frontend listener serves the JavaScript client,
// the SockJS endpoints under frontend.sockjs_path and the files of
// frontend.static_dir, and the WebSocket endpoint still works beside them.
func TestFrontendExtras(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "index.html"), "<h1>app</h1>")
	s := startServer(t, "frontend: {listen: \"127.0.0.1:0\", path: /ws, sockjs_path: /sockjs, static_dir: "+quote(dir)+"}\n")
	base := "http://" + s.frontLn.Addr().String()
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, tt := range []struct{ path, want string }{
		{"/snorky.js", "root.Snorky = Snorky"},
		{"/snorky.mjs", "export default Snorky"},
		{"/sockjs/info", `"websocket":true`},
		{"/", "<h1>app</h1>"},
		{"/index.html", ""},
	} {
		t.Run(tt.path, func(t *testing.T) {
			code, body, _ := get(tt.path)
			if tt.path == "/index.html" {
				// http.FileServer redirects /index.html to /.
				if code != http.StatusOK && code != http.StatusMovedPermanently {
					t.Fatalf("got %d, want 200 or 301", code)
				}
				return
			}
			if code != 200 || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %.80q, want 200 with %q", code, body, tt.want)
			}
		})
	}
	c := dial(t, s, nil)
	c.ok("pubsub", "subscribe", map[string]any{"channel": "x"})
}
