package todomvc

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/snorkytest"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/wsapi/client/nodetest"
)

// TestPageSurvivesRestart runs e2e/restart.test.mjs in Debian's Chromium:
// the page, on the JavaScript client served by the server, reconnects by
// itself after the Snorky server is killed and started again, without a
// reload, and shows what changed meanwhile. The script runs the server
// (built from cmd/snorky) with the configuration written here.
func TestPageSurvivesRestart(t *testing.T) {
	chromium := nodetest.Chromium(t)
	nodetest.Node(t)
	e2e, _ := filepath.Abs("e2e")
	nodetest.Modules(t, e2e, "examples/todomvc/e2e", "playwright-core")
	psql := nodetest.Psql(t)
	bin := filepath.Join(t.TempDir(), "snorky")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/snorkyhq/snorky/cmd/snorky").CombinedOutput(); err != nil {
		t.Fatalf("building snorky: %v\n%s", err, out)
	}

	dbURL := pgtest.NewDatabase(t)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, Schema); err != nil {
		t.Fatal(err)
	}
	db.Close(ctx)

	front, back := freeAddr(t), freeAddr(t)
	const key = "restart-test-backend-key-0123456789abcdef"
	h, err := New(Config{DatabaseURL: dbURL, BackendURL: "http://" + back + "/backend", APIKey: key, WebSocketURL: "ws://" + front + "/ws"})
	if err != nil {
		t.Fatal(err)
	}
	page := httptest.NewServer(h)
	t.Cleanup(func() {
		page.Close()
		h.Close(context.Background())
	})
	cfg := filepath.Join(t.TempDir(), "snorky.yaml")
	slot := fmt.Sprintf("todomvc_restart_%d", time.Now().UnixNano()%1e9)
	yaml := fmt.Sprintf(`frontend: {listen: %q, path: /ws, allowed_origins: [%q]}
backend: {listen: %q, path: /backend, api_key: %q}
tokens: {secret: "restart-test-secret-0123456789abcdef"}
database: {url: %q, slot: %s, publication: %s}
models: {Task: {table: public.tasks}}
dealers: {AllTasks: {model: Task, kind: broadcast}}
log: {level: warn}
shutdown: {timeout: 5s}
`, front, page.URL, back, key, dbURL, slot, slot)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	nodetest.Run(t, nodetest.Options{Dir: e2e, AllowSkips: true, Env: append(os.Environ(),
		"TODOMVC_URL="+page.URL,
		"TODOMVC_DATABASE_URL="+dbURL,
		"TODOMVC_PSQL="+psql,
		"TODOMVC_SNORKY="+bin,
		"TODOMVC_SNORKY_CONFIG="+cfg,
		"TODOMVC_SNORKY_READY=http://"+back+"/readyz",
		"CHROMIUM="+chromium,
	)}, filepath.Join(e2e, "restart.test.mjs"))
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := snorkytest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
