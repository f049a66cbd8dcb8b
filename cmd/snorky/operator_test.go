package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
)

// operatorMistake is one configuration mistake of a newcomer and the
// message (with its fix) that check and serve must both print.
type operatorMistake struct {
	name string
	// setup prepares the database (URL of a fresh one) and returns the
	// YAML appended to the test's base configuration.
	setup func(t *testing.T, db string) string
	want  []string // substrings of the message
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func withUser(t *testing.T, db, user, password string) string {
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	if password == "" {
		u.User = url.User(user)
	} else {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

func withDatabase(t *testing.T, db, name string) string {
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func sqlOn(t *testing.T, db string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// dropRoleAtEnd drops role in cleanup (after the test's database).
func dropRoleAtEnd(t *testing.T, admin, role string) {
	t.Cleanup(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize())
	})
}

// operatorConfig is a server configuration on free ports with slot and
// publication names of the test's own, plus extra.
func operatorConfig(t *testing.T, dbURL, extra string) string {
	slot := "op_" + randomSuffix()
	db := ""
	if dbURL != "" {
		db = fmt.Sprintf("database: {url: %q, slot: %s, publication: %s}\n", dbURL, slot, slot)
	}
	cfg := mergeYAML(strings.Replace(baseConfig, "log: {level: warn}", "log: {level: error}", 1), db+extra)
	path := filepath.Join(t.TempDir(), "snorky.yaml")
	writeFile(t, path, cfg)
	return path
}

const todoModel = `models:
  Todo: {table: todos}
dealers:
  AllTodos: {model: Todo, kind: broadcast}
`

func TestOperatorMistakes(t *testing.T) {
	mistakes := []operatorMistake{
		{
			name: "misspelt dealer kind",
			setup: func(t *testing.T, db string) string {
				sqlOn(t, db, `CREATE TABLE todos (id int PRIMARY KEY)`)
				return strings.Replace(todoModel, "broadcast", "broadcst", 1)
			},
			want: []string{"dealers.AllTodos.kind", `"broadcst"`, "broadcast, simple or filter"},
		},
		{
			name: "dealer of an unknown model",
			setup: func(t *testing.T, db string) string {
				sqlOn(t, db, `CREATE TABLE todos (id int PRIMARY KEY)`)
				return strings.Replace(todoModel, "model: Todo,", "model: Todos,", 1)
			},
			want: []string{"dealers.AllTodos.model", `"Todos"`, "Todo"},
		},
		{
			name: "missing API key",
			setup: func(t *testing.T, db string) string {
				sqlOn(t, db, `CREATE TABLE todos (id int PRIMARY KEY)`)
				return "backend: {listen: \"127.0.0.1:0\", api_key: \"\"}\n" + todoModel
			},
			want: []string{"backend.api_key", "SNORKY_BACKEND__API_KEY"},
		},
		{
			name: "keyless table",
			setup: func(t *testing.T, db string) string {
				sqlOn(t, db, `CREATE TABLE todos (title text)`)
				return todoModel
			},
			want: []string{"models.Todo", "primary key", "ALTER TABLE", "models.Todo.key"},
		},
		{
			name: "two models on one table",
			setup: func(t *testing.T, db string) string {
				sqlOn(t, db, `CREATE TABLE todos (id int PRIMARY KEY)`)
				return "models:\n  Todo: {table: todos}\n  Chore: {table: public.todos}\ndealers:\n  AllTodos: {model: Todo, kind: broadcast}\n"
			},
			want: []string{"models.Todo.table", "model Chore"},
		},
		{
			name: "missing table, named by its model",
			setup: func(t *testing.T, db string) string {
				return todoModel
			},
			want: []string{"models.Todo.table", "todos does not exist"},
		},
		{
			name: "database does not exist",
			setup: func(t *testing.T, db string) string {
				return "database: {url: " + fmt.Sprintf("%q", withDatabase(t, db, "no_such_db_"+randomSuffix())) + "}\n" + todoModel
			},
			want: []string{"database.url", "does not exist", "CREATE DATABASE"},
		},
		{
			name: "role without REPLICATION",
			setup: func(t *testing.T, db string) string {
				role := "norepl_" + randomSuffix()
				sqlOn(t, db, `CREATE TABLE todos (id int PRIMARY KEY)`, "CREATE ROLE "+role+" LOGIN", "ALTER TABLE todos OWNER TO "+role)
				dropRoleAtEnd(t, pgtest.AdminURL(t), role)
				return "database: {url: " + fmt.Sprintf("%q", withUser(t, db, role, "")) + "}\n" + todoModel
			},
			want: []string{"REPLICATION", `ALTER ROLE "norepl_`},
		},
	}
	for _, m := range mistakes {
		t.Run(m.name, func(t *testing.T) {
			db := pgtest.NewDatabase(t)
			extra := m.setup(t, db)
			dbURL := db
			if strings.Contains(extra, "database:") {
				dbURL = "" // the mistake brings its own database section
			}
			path := operatorConfig(t, dbURL, extra)
			out := checkAndServeFail(t, path, m.want)
			if strings.Contains(out, "database.tables") {
				t.Errorf("the messages name database.tables, not the model's key:\n%s", out)
			}
		})
	}
}

// checkAndServeFail runs `check` and `serve` on path: both must fail with
// every substring of want, serve within 10 s. It returns both messages.
func checkAndServeFail(t *testing.T, path string, want []string) string {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), []string{"check", "--config", path}, &out, &out)
	msg := out.String()
	if err != nil {
		msg += err.Error()
	}
	if err == nil {
		t.Errorf("check: got success, want a failure:\n%s", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("check: output lacks %q:\n%s", w, msg)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var log syncBuf
	err = run(ctx, []string{"serve", "--config", path}, &log, &log)
	if ctx.Err() != nil {
		t.Fatalf("serve: still running after 10s, want it to exit with %q; log:\n%s", want, log.String())
	}
	if err == nil {
		t.Fatalf("serve: exited without an error, want %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("serve: error lacks %q: %v", w, err)
		}
	}
	return msg + "\n" + err.Error()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOperatorPasswordAndLateStart: a wrong password fails check and serve
// with the fix, while a PostgreSQL that is merely down (started late) is
// waited for: serve retries, then becomes ready.
func TestOperatorPasswordAndLateStart(t *testing.T) {
	pg := pgtest.StartTB(t, pglocal.Options{Stopped: true})
	hba := filepath.Join(pg.DataDir(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	pw := "host all pwuser 127.0.0.1/32 scram-sha-256\nhost replication pwuser 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hba, append([]byte(pw), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := pg.Up(ctx); err != nil {
		t.Fatal(err)
	}
	sqlOn(t, pg.URL("postgres"), `CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'right'`, `CREATE DATABASE app OWNER pwuser`)
	sqlOn(t, pg.URL("app"), `CREATE TABLE todos (id int PRIMARY KEY)`, `ALTER TABLE todos OWNER TO pwuser`)
	app := pg.URL("app")

	t.Run("wrong password", func(t *testing.T) {
		path := operatorConfig(t, withUser(t, app, "pwuser", "wrong"), todoModel)
		checkAndServeFail(t, path, []string{"database.url", "password authentication failed", `ALTER ROLE "pwuser" PASSWORD`})
	})

	t.Run("started late", func(t *testing.T) {
		if err := pg.Down(pglocal.Fast); err != nil {
			t.Fatal(err)
		}
		path := operatorConfig(t, withUser(t, app, "pwuser", "right"), todoModel)
		writeFile(t, path, strings.Replace(readFile(t, path), "log: {level: error}", "log: {level: warn}", 1))
		sctx, cancel := context.WithCancel(ctx)
		var log syncBuf
		readyc := make(chan *server, 1)
		errc := make(chan error, 1)
		go func() { errc <- serve(sctx, path, nil, &log, func(s *server) { readyc <- s }) }()
		var s *server
		select {
		case s = <-readyc:
		case err := <-errc:
			cancel()
			t.Fatalf("serve exited while PostgreSQL was down: %v\n%s", err, log.String())
		}
		eventually(t, "a logged retry while PostgreSQL is down", func() bool {
			return strings.Contains(log.String(), "retrying")
		})
		if err := pg.Up(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		eventually(t, "readiness after PostgreSQL started", func() bool {
			return s.reader.Ready()
		})
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestYAMLSyntaxErrorLine: a syntax error names the line it is on.
func TestYAMLSyntaxErrorLine(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"misindented key", "backend:\n  api_key: k\n tokens: x\nlog: {level: info}\n", "line 3: did not find expected key"},
		{"unterminated quote", "backend:\n  api_key: k\ntokens:\n  secret: \"abc\nlog: {level: info}\n", "line 4: found unexpected end of stream"},
		{"tab indentation", "backend:\n\tapi_key: k\n", "line 2: found character that cannot start any token"},
		{"unclosed flow", "models:\n  Todo: {table: todos\ndealers: {}\n", "line 2: did not find expected ',' or '}': Todo: {table: todos"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snorky.yaml")
			writeFile(t, path, tt.yaml)
			_, _, err := config.Load(path, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestDemoHost: `snorky demo --host 0.0.0.0` serves everything through the
// page's port: the page's config points at its own host, and a WebSocket
// from the page's origin through that port receives the deltas.
func TestDemoHost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan demoInfo, 1)
	errc := make(chan error, 1)
	logw := &testLogWriter{t: t}
	go func() {
		errc <- runDemo(ctx, demoOptions{Addr: "0.0.0.0:0", ProxyWebSocket: true, Ready: func(i demoInfo) { readyc <- i }}, logw, logw)
	}()
	var info demoInfo
	select {
	case info = <-readyc:
	case err := <-errc:
		cancel()
		t.Fatalf("demo: %v", err)
	}
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	_, body := httpDo(t, "GET", info.PageURL+"/config.js", "", nil)
	if !strings.Contains(body, `location.host + "/ws"`) {
		t.Fatalf("GET /config.js: got %q, want the page's own host", body)
	}
	resp, _ := httpDo(t, "GET", info.PageURL+"/api/tasks", "", http.Header{"X-Snorky": {"Subscribe"}})
	token := resp.Header.Get("X-Subscription-Token")
	if token == "" {
		t.Fatal("no X-Subscription-Token")
	}
	wsURL := "ws" + strings.TrimPrefix(info.PageURL, "http") + "/ws"
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, http.Header{"Origin": {info.PageURL}})
	if err != nil {
		t.Fatalf("dialing %s through the page's port: %v", wsURL, err)
	}
	defer ws.Close()
	ws.WriteJSON(map[string]any{"service": "datasync", "message": map[string]any{"command": "acquireSubscription", "params": map[string]any{"token": token}, "callId": 1}})
	if _, body := httpDo(t, "POST", info.PageURL+"/api/tasks", `{"title":"through the proxy"}`, nil); !strings.Contains(body, "through the proxy") {
		t.Fatalf("POST: %s", body)
	}
	for {
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the delta: %v", err)
		}
		if strings.Contains(string(m), `"type":"delta"`) && strings.Contains(string(m), "through the proxy") {
			break
		}
	}
}
