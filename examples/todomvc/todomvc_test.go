package todomvc

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// fakeBackend is a Snorky backend that records authorizeSubscription calls
// and answers them with reply.
type fakeBackend struct {
	mu    sync.Mutex
	calls []map[string]any // the params of each call
	keys  []string         // the X-Backend-Key of each call
	reply func(params map[string]any) string
}

func (f *fakeBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var env struct {
		Service string `json:"service"`
		Message struct {
			Command string         `json:"command"`
			Params  map[string]any `json:"params"`
		} `json:"message"`
	}
	if err := json.NewDecoder(r.Body).Decode(&env); err != nil || env.Service != "datasync_backend" || env.Message.Command != "authorizeSubscription" {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, env.Message.Params)
	f.keys = append(f.keys, r.Header.Get("X-Backend-Key"))
	reply := f.reply
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	io.WriteString(w, reply(env.Message.Params))
}

func (f *fakeBackend) recorded() ([]map[string]any, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.calls...), append([]string(nil), f.keys...)
}

func okToken(map[string]any) string {
	return `{"service":"datasync_backend","message":{"type":"response","data":"tok-123"}}`
}

type env struct {
	db      *pgx.Conn
	backend *fakeBackend
	srv     *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	if _, err := db.Exec(ctx, Schema); err != nil {
		t.Fatal(err)
	}
	fb := &fakeBackend{reply: okToken}
	backend := httptest.NewServer(fb)
	t.Cleanup(backend.Close)
	h, err := New(Config{DatabaseURL: url, BackendURL: backend.URL + "/backend", APIKey: "k3y", WebSocketURL: "ws://127.0.0.1:5001/ws"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		if err := h.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &env{db: db, backend: fb, srv: srv}
}

// do sends a request and returns the status, the body and the response.
func (e *env) do(t *testing.T, method, path, body string, header http.Header) (int, string, *http.Response) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

// summary summarises a JSON list of tasks as "id:title:completed" items.
func summary(t *testing.T, body string) string {
	t.Helper()
	var rows []map[string]any
	if err := json.Unmarshal([]byte(body), &rows); err != nil {
		t.Fatalf("list %q: %v", body, err)
	}
	var out []string
	for _, r := range rows {
		for _, k := range []string{"id", "title", "completed", "created_at"} {
			if _, ok := r[k]; !ok {
				t.Errorf("row %v lacks %s", r, k)
			}
		}
		out = append(out, strings.Join([]string{jsonText(r["id"]), jsonText(r["title"]), jsonText(r["completed"])}, ":"))
	}
	return strings.Join(out, " ")
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

func TestRESTAPI(t *testing.T) {
	e := newEnv(t)
	steps := []struct {
		name       string
		method     string
		path, body string
		wantStatus int
		wantBody   string // a substring
		wantList   string // the list afterwards, when not empty
	}{
		{"empty list", "GET", "/api/tasks", "", 200, "[]", ""},
		{"create", "POST", "/api/tasks", `{"title":"  Buy milk "}`, 201, `"title": "Buy milk"`, "1:Buy milk:false"},
		{"create completed", "POST", "/api/tasks", `{"title":"Walk","completed":true}`, 201, `"completed": true`, "1:Buy milk:false 2:Walk:true"},
		{"create without title", "POST", "/api/tasks", `{"completed":true}`, 400, "title is required", ""},
		{"create with blank title", "POST", "/api/tasks", `{"title":"   "}`, 400, "must not be empty", ""},
		{"create with unknown field", "POST", "/api/tasks", `{"title":"x","owner":1}`, 400, "unknown field", ""},
		{"create with a long title", "POST", "/api/tasks", `{"title":"` + strings.Repeat("a", MaxTitleBytes+1) + `"}`, 400, "longer than", ""},
		{"create from garbage", "POST", "/api/tasks", `[1]`, 400, "not a task", ""},
		{"rename", "PATCH", "/api/tasks/1", `{"title":"Buy oat milk"}`, 200, `"title": "Buy oat milk"`, "1:Buy oat milk:false 2:Walk:true"},
		{"complete", "PATCH", "/api/tasks/1", `{"completed":true}`, 200, `"completed": true`, "1:Buy oat milk:true 2:Walk:true"},
		{"reopen all", "PATCH", "/api/tasks", `{"completed":false}`, 200, `{"updated":2}`, "1:Buy oat milk:false 2:Walk:false"},
		{"toggle all needs completed", "PATCH", "/api/tasks", `{"title":"x"}`, 400, "completed", ""},
		{"patch a missing task", "PATCH", "/api/tasks/99", `{"completed":true}`, 404, "no such task", ""},
		{"patch a bad id", "PATCH", "/api/tasks/abc", `{"completed":true}`, 404, "no such task", ""},
		{"complete one again", "PATCH", "/api/tasks/2", `{"completed":true}`, 200, `"id": 2`, ""},
		{"clear needs the parameter", "DELETE", "/api/tasks", "", 400, "completed=true", ""},
		{"clear completed", "DELETE", "/api/tasks?completed=true", "", 200, `{"deleted":1}`, "1:Buy oat milk:false"},
		{"delete", "DELETE", "/api/tasks/1", "", 204, "", ""},
		{"delete again", "DELETE", "/api/tasks/1", "", 404, "no such task", ""},
		{"wrong method", "PUT", "/api/tasks/1", `{}`, 405, "", ""},
		{"list after all", "GET", "/api/tasks", "", 200, "[]", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			status, body, _ := e.do(t, s.method, s.path, s.body, nil)
			if status != s.wantStatus || !strings.Contains(body, s.wantBody) {
				t.Fatalf("%s %s: got %d %s, want %d with %q", s.method, s.path, status, body, s.wantStatus, s.wantBody)
			}
			if s.wantList != "" {
				_, list, _ := e.do(t, "GET", "/api/tasks", "", nil)
				if got := summary(t, list); got != s.wantList {
					t.Fatalf("list: got %s, want %s", got, s.wantList)
				}
			}
		})
	}
	if calls, _ := e.backend.recorded(); len(calls) != 0 {
		t.Errorf("got %d backend calls without X-Snorky, want 0: %v", len(calls), calls)
	}
}

var snapshotRE = regexp.MustCompile(`^[0-9]+:[0-9]+:[0-9,]*$`)

func TestSubscribeHeader(t *testing.T) {
	e := newEnv(t)
	if _, err := e.db.Exec(context.Background(), `INSERT INTO tasks (title) VALUES ('a'), ('b')`); err != nil {
		t.Fatal(err)
	}
	for _, value := range []string{"Subscribe", "subscribe", " SUBSCRIBE "} {
		t.Run(value, func(t *testing.T) {
			before, _ := e.backend.recorded()
			status, body, resp := e.do(t, "GET", "/api/tasks", "", http.Header{"X-Snorky": {value}})
			if status != 200 {
				t.Fatalf("got %d %s, want 200", status, body)
			}
			if got := resp.Header.Get("X-Subscription-Token"); got != "tok-123" {
				t.Errorf("X-Subscription-Token: got %q, want tok-123", got)
			}
			if got := summary(t, body); got != "1:a:false 2:b:false" {
				t.Errorf("list: got %s, want 1:a:false 2:b:false", got)
			}
			calls, keys := e.backend.recorded()
			if len(calls) != len(before)+1 {
				t.Fatalf("got %d backend calls, want %d", len(calls), len(before)+1)
			}
			p := calls[len(calls)-1]
			items, _ := json.Marshal(p["items"])
			if string(items) != `[{"dealer":"AllTasks","query":null}]` {
				t.Errorf("items: got %s, want [{dealer AllTasks, query null}]", items)
			}
			if s, _ := p["snapshot"].(string); !snapshotRE.MatchString(s) {
				t.Errorf("snapshot: got %v, want xmin:xmax:xip-list", p["snapshot"])
			}
			if keys[len(keys)-1] != "k3y" {
				t.Errorf("X-Backend-Key: got %q, want k3y", keys[len(keys)-1])
			}
		})
	}
	t.Run("no header", func(t *testing.T) {
		_, _, resp := e.do(t, "GET", "/api/tasks", "", http.Header{"X-Snorky": {"nope"}})
		if got := resp.Header.Get("X-Subscription-Token"); got != "" {
			t.Errorf("X-Subscription-Token: got %q, want none", got)
		}
	})
}

func TestSubscribeBackendReplies(t *testing.T) {
	tests := []struct {
		name       string
		reply      func(map[string]any) string
		wantStatus int
		wantToken  string
		wantCalls  int
	}{
		{
			name: "snapshot too old: authorise first instead",
			reply: func(p map[string]any) string {
				if _, ok := p["snapshot"]; ok {
					return `{"service":"datasync_backend","message":{"type":"error","callId":null,"message":"Snapshot too old"}}`
				}
				return `{"service":"datasync_backend","message":{"type":"response","data":"plain"}}`
			},
			wantStatus: 200, wantToken: "plain", wantCalls: 2,
		},
		{
			name: "an error reply",
			reply: func(map[string]any) string {
				return `{"service":"datasync_backend","message":{"type":"error","callId":null,"message":"No such dealer"}}`
			},
			wantStatus: 502, wantCalls: 1,
		},
		{
			name: "not a token",
			reply: func(map[string]any) string {
				return `{"service":"datasync_backend","message":{"type":"response","data":5}}`
			},
			wantStatus: 502, wantCalls: 1,
		},
		{
			name:       "not JSON",
			reply:      func(map[string]any) string { return `<html>` },
			wantStatus: 502, wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.backend.reply = tt.reply
			status, body, resp := e.do(t, "GET", "/api/tasks", "", http.Header{"X-Snorky": {"Subscribe"}})
			if status != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", status, body, tt.wantStatus)
			}
			if got := resp.Header.Get("X-Subscription-Token"); got != tt.wantToken {
				t.Errorf("X-Subscription-Token: got %q, want %q", got, tt.wantToken)
			}
			if calls, _ := e.backend.recorded(); len(calls) != tt.wantCalls {
				t.Errorf("got %d backend calls, want %d", len(calls), tt.wantCalls)
			}
		})
	}
}

func TestPage(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		path, want, wantType string
	}{
		{"/", "<h1>todos</h1>", "text/html"},
		{"/app.js", "acquireSubscription", "javascript"},
		{"/style.css", ".todo-list", "text/css"},
		{"/config.js", `window.SNORKY_TODOMVC = {"url":"ws://127.0.0.1:5001/ws"};`, "javascript"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, body, resp := e.do(t, "GET", tt.path, "", nil)
			if status != 200 || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %.200q, want 200 with %q", status, body, tt.want)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tt.wantType) {
				t.Errorf("Content-Type: got %q, want %s", ct, tt.wantType)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{DatabaseURL: "postgres://u@127.0.0.1/db", BackendURL: "http://127.0.0.1:5002/backend", APIKey: "k", WebSocketURL: "ws://127.0.0.1:5001/ws"}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" for valid
	}{
		{"valid", func(*Config) {}, ""},
		{"wss", func(c *Config) { c.WebSocketURL = "wss://example.org/ws" }, ""},
		{"no database", func(c *Config) { c.DatabaseURL = "" }, "DatabaseURL"},
		{"bad database", func(c *Config) { c.DatabaseURL = "postgres://%zz" }, "DatabaseURL"},
		{"no backend", func(c *Config) { c.BackendURL = "" }, "BackendURL"},
		{"no key", func(c *Config) { c.APIKey = "" }, "APIKey"},
		{"no websocket", func(c *Config) { c.WebSocketURL = "" }, "WebSocketURL"},
		{"websocket path", func(c *Config) { c.WebSocketURL, c.WebSocketPath = "", "/ws" }, ""},
		{"websocket path and URL", func(c *Config) { c.WebSocketPath = "/ws" }, "not both"},
		{"relative websocket path", func(c *Config) { c.WebSocketURL, c.WebSocketPath = "", "ws" }, "start with /"},
		{"http websocket", func(c *Config) { c.WebSocketURL = "http://127.0.0.1:5001/ws" }, "WebSocketURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
