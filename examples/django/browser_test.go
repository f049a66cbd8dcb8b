package django_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTodoMVCPage runs the TodoMVC example's browser test
// (examples/todomvc/e2e, headless Chromium) against this Django example
// instead of the Go backend: the page works against it unchanged. It needs
// /usr/bin/chromium, node, playwright-core (npm ci --prefix
// examples/todomvc/e2e) and psql.
func TestTodoMVCPage(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	e2e, err := filepath.Abs(filepath.Join("..", "todomvc", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s not found; install it with: apt-get install chromium", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found; install it with: apt-get install nodejs npm")
	}
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "playwright-core")); err != nil {
		t.Skip("playwright-core not installed; install it with: npm ci --prefix examples/todomvc/e2e")
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not found; install it with: apt-get install postgresql-client")
	}
	a := startApp(t, "")

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", filepath.Join(e2e, "todomvc.test.mjs"))
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"TODOMVC_URL="+a.url,
		"TODOMVC_DATABASE_URL="+a.srv.DatabaseURL,
		"TODOMVC_PSQL="+psql,
		"CHROMIUM="+chromium,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
	if !strings.Contains(string(out), "# fail 0") || !strings.Contains(string(out), "# skipped 0") || strings.Contains(string(out), "# pass 0") {
		t.Fatal("node --test did not run every test (see its output above)")
	}
}
