package wsapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestClientHandler(t *testing.T) {
	mux := http.NewServeMux()
	MountClient(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	get := func(t *testing.T, method, path string, header http.Header) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	for _, tt := range []struct {
		path, file, contains string
	}{
		{"/snorky.js", "client/snorky.js", "root.Snorky = Snorky"},
		{"/snorky.mjs", "client/snorky.mjs", "export default Snorky"},
		{"/snorky.d.ts", "client/snorky.d.ts", "export class Snorky"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			want, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			resp, body := get(t, "GET", tt.path, http.Header{"Origin": {"http://app.example"}})
			if resp.StatusCode != 200 || body != string(want) {
				t.Fatalf("got %d and %d bytes, want 200 and the %d bytes of %s", resp.StatusCode, len(body), len(want), tt.file)
			}
			if !strings.Contains(body, tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
			for k, v := range map[string]string{
				"Access-Control-Allow-Origin": "*",
				"Cache-Control":               "public, max-age=300, must-revalidate",
				"X-Content-Type-Options":      "nosniff",
			} {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
			if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "charset=utf-8") {
				t.Errorf("Content-Type: got %q, want one with charset=utf-8", ct)
			}
			etag := resp.Header.Get("ETag")
			if len(etag) < 10 || etag[0] != '"' {
				t.Fatalf("ETag: got %q, want a quoted hash", etag)
			}
			resp, body = get(t, "GET", tt.path, http.Header{"If-None-Match": {`"other", ` + etag}})
			if resp.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("If-None-Match: got %d with %d bytes, want 304 and no body", resp.StatusCode, len(body))
			}
			resp, _ = get(t, "GET", tt.path, http.Header{"If-None-Match": {`"stale"`}})
			if resp.StatusCode != 200 {
				t.Errorf("stale If-None-Match: got %d, want 200", resp.StatusCode)
			}
		})
	}
	t.Run("preflight", func(t *testing.T) {
		resp, _ := get(t, "OPTIONS", "/snorky.mjs", http.Header{"Origin": {"http://app.example"}, "Access-Control-Request-Method": {"GET"}})
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("got %d, ACAO %q; want 204 and *", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
	})
	t.Run("POST", func(t *testing.T) {
		resp, _ := get(t, "POST", "/snorky.js", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("got %d, want 405", resp.StatusCode)
		}
	})
}

// TestClientETagFollowsContent: two different files never share an ETag.
func TestClientETagFollowsContent(t *testing.T) {
	a, b := loadClientFile("snorky.js", ""), loadClientFile("snorky.mjs", "")
	if a.etag == b.etag {
		t.Fatalf("snorky.js and snorky.mjs share the ETag %s", a.etag)
	}
}
