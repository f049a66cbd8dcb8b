package client

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/wsapi/client/nodetest"
)

// snorkyBin is the server binary, built once by TestMain when a test needs it.
var snorkyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snorky-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	snorkyBin = filepath.Join(dir, "snorky")
	code := pgtest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// needModules skips unless the npm packages are installed.
func needModules(t *testing.T, names ...string) {
	t.Helper()
	nodetest.Modules(t, ".", "wsapi/client", names...)
}

// buildServer builds cmd/snorky once.
func buildServer(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(snorkyBin); err == nil {
		return snorkyBin
	}
	goTool, err := exec.LookPath("go")
	if err != nil && os.Getenv("GOROOT") != "" {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	out, err := exec.Command(goTool, "build", "-o", snorkyBin, "github.com/snorkyhq/snorky/cmd/snorky").CombinedOutput()
	if err != nil {
		t.Fatalf("building snorky: %v\n%s", err, out)
	}
	return snorkyBin
}

// serverEnv builds the server and makes a database for the tests.
func serverEnv(t *testing.T) []string {
	t.Helper()
	bin := buildServer(t)
	db := pgtest.NewDatabase(t)
	psql := nodetest.Psql(t)
	return []string{"CLIENT_TEST_SNORKY=" + bin, "CLIENT_TEST_DATABASE_URL=" + db, "CLIENT_TEST_PSQL=" + psql}
}

// runNode runs node --test on files (relative to this directory), one at
// a time, and fails unless some passed and none failed; skipped tests are
// logged.
func runNode(t *testing.T, timeout time.Duration, env []string, files ...string) {
	t.Helper()
	nodetest.Run(t, nodetest.Options{Timeout: timeout, Env: append(os.Environ(), env...), Serial: true, AllowSkips: true}, files...)
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	return files
}

// TestNodeUnit runs the client's unit tests (RPC, signals, collections,
// the delta processor, reconnection, DataSync, the types, the build).
func TestNodeUnit(t *testing.T) {
	nodetest.Node(t)
	runNode(t, 2*time.Minute, nil, glob(t, "test/*.test.mjs")...)
}

// TestNodeIntegration runs the client in Node against the real server.
func TestNodeIntegration(t *testing.T) {
	nodetest.Node(t)
	needModules(t, "ws")
	runNode(t, 5*time.Minute, serverEnv(t), glob(t, "test/integration/*.test.mjs")...)
}

// TestBrowser runs the browser tests in Debian's Chromium.
func TestBrowser(t *testing.T) {
	nodetest.Node(t)
	chromium := nodetest.Chromium(t)
	needModules(t, "playwright-core", "sockjs-client")
	runNode(t, 6*time.Minute, append(serverEnv(t), "CHROMIUM="+chromium), glob(t, "test/browser/*.test.mjs")...)
}
