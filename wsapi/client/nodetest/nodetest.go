// Package nodetest runs JavaScript test suites from Go tests: `node --test`
// files (the client's, the Node backend helper's and the examples' browser
// tests in Debian's Chromium), with one way to find what they need (node,
// Chromium, npm packages, psql) or skip with the command that installs it,
// and one reading of their TAP summary. It is imported only by tests.
package nodetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal"
)

// ChromiumPath is Debian's Chromium, which the browser tests drive through
// playwright-core (no downloaded browser).
const ChromiumPath = "/usr/bin/chromium"

// Chromium returns ChromiumPath, or skips the test without it.
func Chromium(tb testing.TB) string {
	tb.Helper()
	if _, err := os.Stat(ChromiumPath); err != nil {
		tb.Skipf("%s not found; install it with: apt-get install chromium", ChromiumPath)
	}
	return ChromiumPath
}

// Node returns the node binary, or skips the test without it.
func Node(tb testing.TB) string {
	tb.Helper()
	n, err := exec.LookPath("node")
	if err != nil {
		tb.Skip("node not found; install it with: apt-get install nodejs npm")
	}
	return n
}

// Modules skips the test unless each npm package is installed in
// dir/node_modules; prefix is dir as written from the repository root, for
// the hint `npm ci --prefix <prefix>`.
func Modules(tb testing.TB, dir, prefix string, names ...string) {
	tb.Helper()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", n)); err != nil {
			tb.Skipf("%s not installed; install it with: npm ci --prefix %s", n, prefix)
		}
	}
}

// Psql returns psql from the PostgreSQL that pglocal uses, else the one on
// PATH, or skips the test without either.
func Psql(tb testing.TB) string {
	tb.Helper()
	if dir, err := pglocal.FindBinDir(); err == nil {
		if p := filepath.Join(dir, "psql"); fileExists(p) {
			return p
		}
	}
	p, err := exec.LookPath("psql")
	if err != nil {
		tb.Skip("psql not found; install it with: apt-get install postgresql-client")
	}
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Options says how to run a suite.
type Options struct {
	// Dir is the working directory; "" is the test's.
	Dir string
	// Env is the whole environment; nil is os.Environ().
	Env []string
	// Timeout bounds the run; 0 is 4 minutes.
	Timeout time.Duration
	// Serial runs the files one at a time (--test-concurrency=1).
	Serial bool
	// AllowSkips accepts skipped tests (they are in the log); by default a
	// skipped test fails the run, so a suite cannot pass by running nothing.
	AllowSkips bool
}

var (
	passRE = regexp.MustCompile(`(?m)^# pass (\d+)$`)
	failRE = regexp.MustCompile(`(?m)^# fail (\d+)$`)
	skipRE = regexp.MustCompile(`(?m)^# skipped (\d+)$`)
)

// Run runs `node --test --test-reporter=tap` on files and returns its
// output, which it logs. It fails the test unless node exits 0 and the
// summary counts at least one pass, no failure and (unless AllowSkips) no
// skip.
func Run(tb testing.TB, o Options, files ...string) string {
	tb.Helper()
	node := Node(tb)
	if o.Timeout == 0 {
		o.Timeout = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	args := []string{"--test", "--test-reporter=tap"}
	if o.Serial {
		args = append(args, "--test-concurrency=1")
	}
	cmd := exec.CommandContext(ctx, node, append(args, files...)...)
	cmd.Dir = o.Dir
	cmd.Env = o.Env
	out, err := cmd.CombinedOutput()
	tb.Logf("node --test %s:\n%s", strings.Join(files, " "), out)
	if err != nil {
		tb.Fatalf("node --test: %v", err)
	}
	if msg := checkSummary(string(out), o.AllowSkips); msg != "" {
		tb.Fatalf("node --test: %s (see its output above)", msg)
	}
	return string(out)
}

// checkSummary reads the TAP summary; "" means it passed.
func checkSummary(out string, allowSkips bool) string {
	count := func(re *regexp.Regexp) string {
		if m := re.FindStringSubmatch(out); m != nil {
			return m[1]
		}
		return ""
	}
	pass, fail, skip := count(passRE), count(failRE), count(skipRE)
	switch {
	case pass == "" || fail == "":
		return "no TAP summary"
	case pass == "0":
		return "no test passed"
	case fail != "0":
		return fail + " tests failed"
	case !allowSkips && skip != "" && skip != "0":
		return skip + " tests skipped"
	}
	return ""
}
