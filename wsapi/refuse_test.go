package wsapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRefusedOriginNamesTheSetting: a browser whose Origin is refused gets
// 403 with a body naming frontend.allowed_origins and the origin.
func TestRefusedOriginNamesTheSetting(t *testing.T) {
	_, url := newTestServer(t, Config{})
	tests := []struct {
		origin     string
		wantStatus int
		wantBody   []string
	}{
		{"http://evil.example:8000", 403, []string{"frontend.allowed_origins", `"http://evil.example:8000"`}},
		{"", 400, []string{"Bad Request"}}, // not a WebSocket request at all
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", "http"+strings.TrimPrefix(url, "ws"), nil)
		if tt.wantStatus == 403 {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			req.Header.Set("Origin", tt.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("origin %q: got %d %s, want %d", tt.origin, resp.StatusCode, body, tt.wantStatus)
		}
		for _, w := range tt.wantBody {
			if !strings.Contains(string(body), w) {
				t.Errorf("origin %q: body %q lacks %q", tt.origin, body, w)
			}
		}
	}
}
