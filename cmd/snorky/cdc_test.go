package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// cdcEnv is a fresh database with a tasks table and a server streaming it.
type cdcEnv struct {
	s    *server
	db   *pgx.Conn
	url  string
	slot string
}

func startCDC(t testing.TB, extra string) *cdcEnv {
	t.Helper()
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	if _, err := db.Exec(ctx, `CREATE TABLE tasks (id bigint PRIMARY KEY, title text, owner int, done bool DEFAULT false, secret text);
		CREATE TABLE notes (id int PRIMARY KEY, body text)`); err != nil {
		t.Fatal(err)
	}
	slot := fmt.Sprintf("t_%d", time.Now().UnixNano()%1e9)
	s := startServer(t, fmt.Sprintf(`database: {url: %q, slot: %s, publication: %s, migrate: true}
models:
  Task: {table: tasks, columns: [id, title, owner, done]}
  Note: {table: public.notes}
dealers:
  AllTasks: {model: Task, kind: broadcast}
  TasksByOwner: {model: Task, kind: simple, key: owner}
  TaskFilter: {model: Task, kind: filter}
  AllNotes: {model: Note, kind: broadcast}
`, url, slot, slot)+extra)
	eventually(t, "replication streaming", func() bool { return s.reader.Ready() })
	return &cdcEnv{s: s, db: db, url: url, slot: slot}
}

func (e *cdcEnv) exec(t testing.TB, sql string) {
	t.Helper()
	if _, err := e.db.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestCDCDeltasOverWebSocket(t *testing.T) {
	e := startCDC(t, "")
	all := dial(t, e.s, nil)
	all.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, e.s, `[{"dealer":"AllTasks","query":null}]`)})
	owner7 := dial(t, e.s, nil)
	owner7.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, e.s, `[{"dealer":"TasksByOwner","query":7}]`)})

	e.exec(t, `INSERT INTO tasks (id, title, owner, secret) VALUES (1, 'a', 7, 'hash')`)
	e.exec(t, `BEGIN; INSERT INTO tasks (id, title, owner) VALUES (2, 'b', 8); UPDATE tasks SET title = 'a2' WHERE id = 1; COMMIT`)
	e.exec(t, `BEGIN; INSERT INTO tasks (id, title, owner) VALUES (3, 'never', 7); ROLLBACK`)
	e.exec(t, `UPDATE tasks SET owner = 7 WHERE id = 2`)
	e.exec(t, `UPDATE tasks SET owner = 9 WHERE id = 1`)
	e.exec(t, `DELETE FROM tasks WHERE id = 2`)
	e.exec(t, `TRUNCATE tasks`)

	summary := func(c *wsClient, n int) []string {
		var out []string
		for range n {
			d := c.delta()
			s := fmt.Sprint(d["type"])
			if data, ok := d["data"].(map[string]any); ok {
				s += fmt.Sprint(" ", data["id"], data["title"], data["owner"])
				if _, leaked := data["secret"]; leaked {
					t.Errorf("column secret reached a client: %v", d)
				}
			}
			if data, ok := d["newData"].(map[string]any); ok {
				s += fmt.Sprint(" ", data["id"], data["title"], data["owner"])
			}
			if d["lsn"] == nil || d["xid"] == nil || !offsetRE.MatchString(fmt.Sprint(d["offset"])) {
				t.Errorf("delta %v lacks lsn, xid or offset", d)
			}
			out = append(out, s)
		}
		return out
	}
	got := strings.Join(summary(all, 7), "; ")
	want := "insert 1a7; insert 2b8; update 1a27; update 2b7; update 1a29; delete 2b7; truncate"
	if got != want {
		t.Fatalf("broadcast subscriber:\n got %s\nwant %s", got, want)
	}
	got = strings.Join(summary(owner7, 6), "; ")
	want = "insert 1a7; update 1a27; insert 2b7; delete 1a27; delete 2b7; truncate"
	if got != want {
		t.Fatalf("owner 7:\n got %s\nwant %s", got, want)
	}
	// Nothing more for owner 7: its next delta is the next commit's.
	e.exec(t, `INSERT INTO tasks (id, title, owner) VALUES (100, 'end', 7)`)
	if d := owner7.delta(); d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["id"]) != "100" {
		t.Fatalf("owner 7: got %v, want the insert of 100 and nothing before it", d)
	}
}

// TestServeStartsWhileDatabaseDown: serve starts, /readyz answers 503 with
// the reason, and once PostgreSQL is up the server becomes ready by itself.
func TestServeStartsWhileDatabaseDown(t *testing.T) {
	pg := pgtest.StartTB(t, pglocal.Options{})
	url := pg.URL("postgres")
	db, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(context.Background(), `CREATE TABLE tasks (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	db.Close(context.Background())
	if err := pg.Down(pglocal.Fast); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, fmt.Sprintf(`database: {url: %q, slot: down_test, publication: down_test}
models: {Task: {table: tasks}}
dealers: {All: {model: Task, kind: broadcast}}
`, url))
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + s.backLn.Addr().String() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "database") {
		t.Fatalf("readyz with PostgreSQL down: got %d %s, want 503 naming the database", code, body)
	}
	// The PubSub service works meanwhile.
	c := dial(t, s, nil)
	c.ok("pubsub", "publish", map[string]any{"channel": "x", "message": 1})

	if err := pg.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready once PostgreSQL is up", func() bool { code, _ := readyz(); return code == 200 })
}

// TestCheckWarnsAboutForgery: with the snorky schema installed and
// pg_logical_emit_message executable by PUBLIC (PostgreSQL's default),
// `snorky check` says how to close the hole; after the REVOKE it does not.
func TestCheckWarnsAboutForgery(t *testing.T) {
	e := startCDC(t, "")
	path := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, path, mergeYAML(baseConfig, fmt.Sprintf(`database: {url: %q, slot: %s, publication: %s}
models: {Task: {table: tasks}}
dealers: {All: {model: Task, kind: broadcast}}
`, e.url, e.slot, e.slot)))
	var out strings.Builder
	if err := check(context.Background(), path, nil, &out); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message") {
		t.Fatalf("check output lacks the forgery warning:\n%s", out.String())
	}
	e.exec(t, `REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text), pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC`)
	out.Reset()
	if err := check(context.Background(), path, nil, &out); err != nil || strings.Contains(out.String(), "warning") {
		t.Fatalf("after the REVOKE: %v\n%s", err, out.String())
	}
}
