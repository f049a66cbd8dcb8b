package client

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal"
)

const chromium = "/usr/bin/chromium"

// snorkyBin is the server binary, built once by TestMain when a test needs it.
var snorkyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snorky-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	snorkyBin = filepath.Join(dir, "snorky")
	code := pglocal.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// node returns the node binary, or skips.
func node(t *testing.T) string {
	t.Helper()
	n, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found; install it with: apt-get install nodejs npm")
	}
	return n
}

// needModules skips unless the npm packages are installed.
func needModules(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join("node_modules", n)); err != nil {
			t.Skipf("%s not installed; install the dev packages with: npm ci --prefix wsapi/client", n)
		}
	}
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
	db := pglocal.NewDatabase(t)
	psql := "psql"
	if dir, err := pglocal.FindBinDir(); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "psql")); err == nil {
			psql = filepath.Join(dir, "psql")
		}
	}
	if _, err := exec.LookPath(psql); err != nil {
		t.Skip("psql not found; install it with: apt-get install postgresql-client")
	}
	return []string{"CLIENT_TEST_SNORKY=" + bin, "CLIENT_TEST_DATABASE_URL=" + db, "CLIENT_TEST_PSQL=" + psql}
}

var (
	passRE = regexp.MustCompile(`(?m)^# pass (\d+)$`)
	failRE = regexp.MustCompile(`(?m)^# fail (\d+)$`)
)

// runNode runs node --test on files (relative to this directory) and
// fails unless every test ran and passed; skipped tests are logged.
func runNode(t *testing.T, timeout time.Duration, env []string, files ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"--test", "--test-reporter=tap", "--test-concurrency=1"}, files...)
	cmd := exec.CommandContext(ctx, node(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test %s:\n%s", strings.Join(files, " "), out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
	pass := passRE.FindStringSubmatch(string(out))
	fail := failRE.FindStringSubmatch(string(out))
	if pass == nil || pass[1] == "0" || fail == nil || fail[1] != "0" {
		t.Fatal("node --test did not pass any test, or some failed (see its output above)")
	}
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
	node(t)
	runNode(t, 2*time.Minute, nil, glob(t, "test/*.test.mjs")...)
}

// TestNodeIntegration runs the client in Node against the real server.
func TestNodeIntegration(t *testing.T) {
	node(t)
	needModules(t, "ws")
	runNode(t, 5*time.Minute, serverEnv(t), glob(t, "test/integration/*.test.mjs")...)
}

// TestBrowser runs the browser tests in Debian's Chromium.
func TestBrowser(t *testing.T) {
	node(t)
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("%s not found; install it with: apt-get install chromium", chromium)
	}
	needModules(t, "playwright-core", "sockjs-client")
	runNode(t, 6*time.Minute, append(serverEnv(t), "CHROMIUM="+chromium), glob(t, "test/browser/*.test.mjs")...)
}
