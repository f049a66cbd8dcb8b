package django_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/backendapi/handofftest"
)

func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }

// python is Debian's Python, which has Django, DRF and psycopg2 from apt
// (the first python3 on PATH may be another one).
const python = "/usr/bin/python3"

// needPython skips the test unless Debian's Python with Django, Django REST
// Framework and psycopg2 is installed.
func needPython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s not found; install it with: apt-get install python3 python3-django python3-djangorestframework python3-psycopg2", python)
	}
	out, err := exec.Command(python, "-c", "import django, rest_framework, psycopg2").CombinedOutput()
	if err != nil {
		t.Skipf("Django, DRF or psycopg2 missing from %s (%s); install them with: apt-get install python3-django python3-djangorestframework python3-psycopg2", python, strings.TrimSpace(string(out)))
	}
}

func here(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// pythonEnv is the environment of the example's Python processes.
func pythonEnv(t *testing.T, dbURL string, srv *handofftest.Server) []string {
	dir := here(t)
	kv := []string{
		"PYTHONPATH=" + filepath.Join(dir, "snorky_django", "src") + string(os.PathListSeparator) + dir,
		"PYTHONDONTWRITEBYTECODE=1",
		"DJANGO_SETTINGS_MODULE=todo.test_settings",
		"DATABASE_URL=" + dbURL,
	}
	if srv != nil {
		kv = append(kv, "SNORKY_BACKEND_URL="+srv.BackendURL, "SNORKY_API_KEY="+handofftest.APIKey, "SNORKY_WEBSOCKET_URL="+srv.WebSocketURL)
	}
	return handofftest.Env(kv...)
}

// migrate runs the example's migrations (the tasks table).
func migrate(t testing.TB, dbURL string) {
	t.Helper()
	cmd := exec.Command(python, "manage.py", "migrate", "--no-input", "-v", "0")
	cmd.Env = pythonEnv(t.(*testing.T), dbURL, nil)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("manage.py migrate: %v\n%s", err, out)
	}
}

// app is the example running on Django's development server.
type app struct {
	url string
	srv *handofftest.Server
}

// startApp starts snorky (models Task and Item) and the example.
func startApp(t *testing.T, pageAddr string) *app {
	t.Helper()
	needPython(t)
	if pageAddr == "" {
		pageAddr = handofftest.FreeAddr(t)
	}
	srv := handofftest.StartServer(t, handofftest.Options{
		Schema:   handofftest.ItemsSchema,
		Prepare:  migrate,
		Frontend: fmt.Sprintf("allowed_origins: [%q]", "http://"+pageAddr),
		Body: `models:
  Task: {table: tasks}
  Item: {table: items}
dealers:
  AllTasks: {model: Task, kind: broadcast}
  AllItems: {model: Item, kind: broadcast}
`,
	})
	cmd := exec.Command(python, "manage.py", "runserver", "--noreload", pageAddr)
	cmd.Dir = here(t)
	cmd.Env = pythonEnv(t, srv.DatabaseURL, srv)
	p := handofftest.StartProcess(t, cmd)
	a := &app{url: "http://" + pageAddr, srv: srv}
	p.WaitHTTP(t, a.url+"/config.js", 60*time.Second)
	return a
}

// do sends a request to the example and returns the status, the body and
// the response headers.
func (a *app) do(t *testing.T, method, path, body string, header map[string]string) (int, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func sqlExec(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// describe summarises a delta as "type title completed".
func describe(d handofftest.Delta) string {
	row := d.Data
	if d.Type == "update" {
		row = d.NewData
	}
	return fmt.Sprintf("%s %s %v %v", d.Model, d.Type, row["title"], row["completed"])
}

// TestSubscribe is the list view's contract (spec §6) in the example: GET
// with X-Snorky: Subscribe answers X-Subscription-Token, and a client that
// acquires it receives the changes made with SQL and through the API.
func TestSubscribe(t *testing.T) {
	a := startApp(t, "")
	sqlExec(t, a.srv.DatabaseURL, `INSERT INTO tasks (title) VALUES ('before')`)

	status, body, h := a.do(t, "GET", "/api/tasks", "", nil)
	if status != 200 || !strings.Contains(body, `"title":"before"`) || h.Get("X-Subscription-Token") != "" {
		t.Fatalf("GET without the header: got %d %s token %q, want 200 with the task and no token", status, body, h.Get("X-Subscription-Token"))
	}
	status, body, h = a.do(t, "GET", "/api/tasks", "", map[string]string{"X-Snorky": "subscribe"})
	token := h.Get("X-Subscription-Token")
	if status != 200 || token == "" || !strings.Contains(body, `"title":"before"`) {
		t.Fatalf("GET with X-Snorky: got %d %s token %q, want 200, the task and a token", status, body, token)
	}
	c := handofftest.Dial(t, a.srv.WebSocketURL)
	if ds := c.Acquire(token); len(ds) != 0 {
		t.Fatalf("got %d deltas at acquire, want none", len(ds))
	}

	steps := []struct {
		name string
		do   func() string // returns the id involved, for later steps
		want string
	}{
		{"insert with SQL", func() string {
			sqlExec(t, a.srv.DatabaseURL, `INSERT INTO tasks (title) VALUES ('from SQL')`)
			return ""
		}, "Task insert from SQL false"},
		{"create through the API", func() string {
			status, body, _ := a.do(t, "POST", "/api/tasks", `{"title":"  from the API "}`, nil)
			if status != 201 {
				t.Fatalf("POST: got %d %s, want 201", status, body)
			}
			return body
		}, "Task insert from the API false"},
		{"update through the API", func() string {
			status, body, _ := a.do(t, "PATCH", "/api/tasks/1", `{"completed":true}`, nil)
			if status != 200 {
				t.Fatalf("PATCH: got %d %s, want 200", status, body)
			}
			return ""
		}, "Task update before true"},
		{"delete through the API", func() string {
			if status, body, _ := a.do(t, "DELETE", "/api/tasks?completed=true", "", nil); status != 200 || body != `{"deleted":1}` {
				t.Fatalf("DELETE: got %d %s, want 200 {\"deleted\":1}", status, body)
			}
			return ""
		}, "Task delete before true"},
		{"toggle all through the API", func() string {
			if status, body, _ := a.do(t, "PATCH", "/api/tasks", `{"completed":true}`, nil); status != 200 || body != `{"updated":2}` {
				t.Fatalf("PATCH all: got %d %s, want 200 {\"updated\":2}", status, body)
			}
			return ""
		}, "Task update from SQL true"},
	}
	for _, s := range steps {
		s.do()
		if got := describe(c.Next()); got != s.want {
			t.Fatalf("%s: got delta %q, want %q", s.name, got, s.want)
		}
	}
	if got := describe(c.Next()); got != "Task update from the API true" {
		t.Fatalf("toggle all, second row: got delta %q, want %q", got, "Task update from the API true")
	}

	bad := []struct{ method, path, body, want string }{
		{"POST", "/api/tasks", `{"title":"   "}`, "blank"},
		{"PATCH", "/api/tasks", `{"title":"x"}`, "completed"},
		{"DELETE", "/api/tasks", "", "completed=true"},
		{"PATCH", "/api/tasks/999", `{"completed":true}`, "Not found"},
	}
	for _, b := range bad {
		if status, body, _ := a.do(t, b.method, b.path, b.body, nil); status/100 != 4 || !strings.Contains(body, b.want) {
			t.Errorf("%s %s %s: got %d %s, want 4xx with %q", b.method, b.path, b.body, status, body, b.want)
		}
	}
}

// TestHandoff is D8 through the Django helpers: a view written for the
// original Snorky's helpers (itemsapp/views.py: the original import path,
// ListSubscribeAPIView with a dealer) hands out 1,000 tokens while a writer
// commits about 500 changes per second; every collection built from the
// list plus the deltas equals the table: 0 lost, 0 doubled.
func TestHandoff(t *testing.T) {
	a := startApp(t, "")
	w := handofftest.StartWriter(t, a.srv.DatabaseURL, 500, 60)
	res := handofftest.Check(t, a.srv, w, 1000, 8, handofftest.ListOverHTTP(a.url+"/api/items"))
	w.Stop(t)
	handofftest.VerifyTable(t, a.srv.DatabaseURL, w)
	t.Log(res)
	if res.Handoffs != 1000 || res.Lost != 0 || res.Doubled != 0 {
		t.Errorf("got %v, want 1000 handoffs, 0 lost, 0 doubled", res)
	}
}
