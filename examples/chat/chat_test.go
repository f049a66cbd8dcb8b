package chat_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/backendapi/handofftest"
	"github.com/snorkyhq/snorky/examples/chat"
	"github.com/snorkyhq/snorky/wsapi/client/nodetest"
)

func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }

// fakeBackend answers authorizeIdentity with a token naming the identity,
// or with reply when set.
func fakeBackend(t *testing.T, reply string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			Message struct {
				Command string         `json:"command"`
				Params  map[string]any `json:"params"`
			} `json:"message"`
		}
		json.NewDecoder(r.Body).Decode(&env)
		if reply != "" {
			io.WriteString(w, reply)
			return
		}
		fmt.Fprintf(w, `{"service":"identity_backend","message":{"type":"response","data":"tok-%v-%v"}}`, env.Message.Params["identity"], env.Message.Params["ttl"])
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/backend"
}

func TestIdentityEndpoint(t *testing.T) {
	tests := []struct {
		name, reply, body string
		wantStatus        int
		want              string
	}{
		{"a name", "", `{"name":"alice"}`, 200, `"url":"ws://127.0.0.1:5001/ws?token=tok-alice-3600"`},
		{"an empty name", "", `{"name":""}`, 400, "name: 1 to 32"},
		{"a long name", "", `{"name":"` + strings.Repeat("a", 33) + `"}`, 400, "name: 1 to 32"},
		{"markup", "", `{"name":"<b>"}`, 400, "name: 1 to 32"},
		{"not JSON", "", `alice`, 400, "name: 1 to 32"},
		{"refused", `{"service":"identity_backend","message":{"type":"error","callId":null,"message":"Invalid params"}}`, `{"name":"bob"}`, 500, "Invalid params"},
		{"backend down", `<html>`, `{"name":"bob"}`, 502, "malformed reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := chat.New(chat.Config{BackendURL: fakeBackend(t, tt.reply), APIKey: "k", WebSocketURL: "ws://127.0.0.1:5001/ws"})
			if err != nil {
				t.Fatal(err)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("POST", "/api/identity", strings.NewReader(tt.body)))
			if w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("got %d %s, want %d with %s", w.Code, w.Body.String(), tt.wantStatus, tt.want)
			}
		})
	}
	if _, err := chat.New(chat.Config{BackendURL: "http://x/backend", APIKey: "k", WebSocketURL: "http://x/ws"}); err == nil {
		t.Error("New accepted an http:// WebSocketURL")
	}
}

// TestChatInBrowser runs e2e/chat.test.mjs in headless Chromium against a
// real server: two identities see each other's presence, messages and
// cursors. It needs /usr/bin/chromium, node and playwright-core (npm ci
// --prefix examples/chat/e2e). SNORKY_TEST_SCREENSHOT names a file for a
// screenshot, relative to the repository root.
func TestChatInBrowser(t *testing.T) {
	e2e, err := filepath.Abs("e2e")
	if err != nil {
		t.Fatal(err)
	}
	chromium := nodetest.Chromium(t)
	nodetest.Node(t)
	nodetest.Modules(t, e2e, "examples/chat/e2e", "playwright-core")
	pageAddr := handofftest.FreeAddr(t)
	srv := handofftest.StartServer(t, handofftest.Options{Frontend: fmt.Sprintf("allowed_origins: [%q]", "http://"+pageAddr)})
	h, err := chat.New(chat.Config{BackendURL: srv.BackendURL, APIKey: handofftest.APIKey, WebSocketURL: srv.WebSocketURL})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pageAddr)
	if err != nil {
		t.Fatal(err)
	}
	page := &http.Server{Handler: h}
	go page.Serve(ln)
	defer page.Close()

	shot := os.Getenv("SNORKY_TEST_SCREENSHOT")
	if shot != "" && !filepath.IsAbs(shot) {
		if shot, err = filepath.Abs(filepath.Join("..", "..", shot)); err != nil {
			t.Fatal(err)
		}
	}
	nodetest.Run(t, nodetest.Options{Dir: e2e, Timeout: 3 * time.Minute,
		Env: handofftest.Env("CHAT_URL="+(&url.URL{Scheme: "http", Host: pageAddr}).String(), "CHROMIUM="+chromium, "CHAT_SCREENSHOT="+shot)},
		filepath.Join(e2e, "chat.test.mjs"))
}
