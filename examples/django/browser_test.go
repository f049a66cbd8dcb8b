package django_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/snorkyhq/snorky/wsapi/client/nodetest"
)

// TestTodoMVCPage runs the TodoMVC example's browser test
// (examples/todomvc/e2e, headless Chromium) against this Django example
// instead of the Go backend: the page works against it unchanged. It needs
// /usr/bin/chromium, node, playwright-core (npm ci --prefix
// examples/todomvc/e2e) and psql.
func TestTodoMVCPage(t *testing.T) {
	e2e, err := filepath.Abs(filepath.Join("..", "todomvc", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	chromium := nodetest.Chromium(t)
	nodetest.Node(t)
	nodetest.Modules(t, e2e, "examples/todomvc/e2e", "playwright-core")
	psql := nodetest.Psql(t)
	a := startApp(t, "")

	nodetest.Run(t, nodetest.Options{Dir: e2e, Env: append(os.Environ(),
		"TODOMVC_URL="+a.url,
		"TODOMVC_DATABASE_URL="+a.srv.DatabaseURL,
		"TODOMVC_PSQL="+psql,
		"CHROMIUM="+chromium,
	)}, filepath.Join(e2e, "todomvc.test.mjs"))
}
