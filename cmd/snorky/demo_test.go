package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/wsapi/client/nodetest"
)

// startDemo runs the demo on free ports until the test ends, and fails the
// test if it does not stop cleanly.
func startDemo(t *testing.T) demoInfo {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan demoInfo, 1)
	errc := make(chan error, 1)
	logw := &testLogWriter{t: t}
	go func() {
		errc <- runDemo(ctx, demoOptions{Addr: "127.0.0.1:0", Ready: func(i demoInfo) { readyc <- i }}, logw, logw)
	}()
	select {
	case info := <-readyc:
		t.Cleanup(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("demo: %v", err)
			}
			if _, err := os.Stat(info.PGDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the PostgreSQL directory %s is still there after the demo stopped (%v)", info.PGDir, err)
			}
		})
		return info
	case err := <-errc:
		cancel()
		t.Fatalf("demo: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("the demo did not start within 2 minutes")
	}
	return demoInfo{}
}

func httpDo(t *testing.T, method, url, body string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestDemo checks the demo's wiring without a browser: the page, a
// subscription through the REST API's token header, and deltas from writes
// through the API and from SQL.
func TestDemo(t *testing.T) {
	info := startDemo(t)
	defer http2Idle()

	resp, body := httpDo(t, "GET", info.PageURL+"/", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "<h1>todos</h1>") {
		t.Fatalf("GET /: got %d %.100q, want the page", resp.StatusCode, body)
	}
	resp, body = httpDo(t, "GET", info.PageURL+"/config.js", "", nil)
	if want := `"url":"` + info.Server.FrontendURL() + `"`; resp.StatusCode != 200 || !strings.Contains(body, want) {
		t.Fatalf("GET /config.js: got %q, want it to contain %s", body, want)
	}

	resp, body = httpDo(t, "GET", info.PageURL+"/api/tasks", "", http.Header{"X-Snorky": {"Subscribe"}})
	token := resp.Header.Get("X-Subscription-Token")
	if resp.StatusCode != 200 || body != "[]" || token == "" {
		t.Fatalf("GET /api/tasks: got %d %q with token %q, want 200 [] and a token", resp.StatusCode, body, token)
	}
	// The page's origin is allowed.
	c := dial(t, testServer(info.Server), http.Header{"Origin": {info.PageURL}})
	c.ok("datasync", "acquireSubscription", map[string]any{"token": token})

	resp, body = httpDo(t, "POST", info.PageURL+"/api/tasks", `{"title":"from the API"}`, nil)
	if resp.StatusCode != 201 {
		t.Fatalf("POST /api/tasks: got %d %s, want 201", resp.StatusCode, body)
	}
	db, err := pgx.Connect(context.Background(), info.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(context.Background(), `INSERT INTO tasks (title, completed) VALUES ('from SQL', true)`); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		title     string
		completed bool
	}{{"from the API", false}, {"from SQL", true}} {
		d := c.delta()
		data, _ := d["data"].(map[string]any)
		if d["type"] != "insert" || d["model"] != "Task" || data["title"] != want.title || data["completed"] != want.completed || data["created_at"] == nil {
			t.Fatalf("got delta %v, want an insert of Task %q (completed %v)", d, want.title, want.completed)
		}
	}

	// Another origin is refused.
	_, hresp, err := websocket.DefaultDialer.Dial(info.Server.FrontendURL(), http.Header{"Origin": {"http://evil.example"}})
	if err == nil || hresp == nil || hresp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial from another origin: got %v, want HTTP 403", err)
	}
}

func TestDemoArguments(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name string
		args []string
		want string // substring of the error; "usage" for errUsage
	}{
		{"port not a number", []string{"demo", "--port", "x"}, "usage"},
		{"port out of range", []string{"demo", "--port", "70000"}, "usage"},
		{"stray argument", []string{"demo", "now"}, "usage"},
		{"bad log level", []string{"demo", "--port", "0", "--log-level", "loud"}, "--log-level"},
		{"busy port", []string{"demo", "--port", strconv.Itoa(busyPort)}, "--port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			switch {
			case tt.want == "usage" && !errors.Is(err, errUsage):
				t.Fatalf("got %v, want the usage error", err)
			case tt.want != "usage" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error about %s", err, tt.want)
			}
		})
	}
}

// TestDemoInBrowser runs examples/todomvc/e2e in Debian's Chromium against
// the demo: two pages stay in sync through the server. It needs
// /usr/bin/chromium (apt-get install chromium), node, and playwright-core
// (npm ci --prefix examples/todomvc/e2e). SNORKY_TEST_SCREENSHOT names the
// file for the screenshot, relative to the repository root (default: a
// temporary file).
func TestDemoInBrowser(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	e2e := filepath.Join(root, "examples", "todomvc", "e2e")
	chromium := nodetest.Chromium(t)
	nodetest.Node(t)
	nodetest.Modules(t, e2e, "examples/todomvc/e2e", "playwright-core")
	info := startDemo(t)
	psql := filepath.Join(info.BinDir, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = nodetest.Psql(t)
	}
	shot := os.Getenv("SNORKY_TEST_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "todomvc.png")
	} else if !filepath.IsAbs(shot) {
		shot = filepath.Join(root, shot)
	}

	nodetest.Run(t, nodetest.Options{Dir: e2e, Env: append(os.Environ(),
		"TODOMVC_URL="+info.PageURL,
		"TODOMVC_DATABASE_URL="+info.DatabaseURL,
		"TODOMVC_PSQL="+psql,
		"TODOMVC_SCREENSHOT="+shot,
		"CHROMIUM="+chromium,
	)}, filepath.Join(e2e, "todomvc.test.mjs"))
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	}
}
