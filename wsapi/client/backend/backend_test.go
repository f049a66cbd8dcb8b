// Package backend_test runs the tests of the Node backend helper
// (index.mjs) with Node: its unit tests (test/backend.test.mjs) and the
// 1,000-handoff test against a real server (test/handoff-app.mjs).
package backend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/backendapi/handofftest"
	"github.com/snorkyhq/snorky/cdc/pglocal"
)

func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }

// needNode returns node, skipping the test without it or without pg
// (npm ci --prefix wsapi/client/backend/test).
func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found; install it with: apt-get install nodejs npm")
	}
	if _, err := os.Stat(filepath.Join("test", "node_modules", "pg")); err != nil {
		t.Skip("node-postgres not installed; install it with: npm ci --prefix wsapi/client/backend/test")
	}
	return node
}

func TestNodeUnit(t *testing.T) {
	node := needNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", "test/backend.test.mjs")
	cmd.Env = handofftest.Env("DATABASE_URL=" + pglocal.NewDatabase(t))
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("node --test: %v", err)
	}
	if !strings.Contains(string(out), "# fail 0") || !strings.Contains(string(out), "# skipped 0") || strings.Contains(string(out), "# pass 0") {
		t.Fatal("node --test did not run every test (see its output above)")
	}
}

// TestHandoff is D8 through the Node helper: an application built on
// subscribeQuery (test/handoff-app.mjs) hands out 1,000 tokens while a
// writer commits about 500 changes per second; every collection built from
// the list plus the deltas equals the table: 0 lost, 0 doubled.
func TestHandoff(t *testing.T) {
	node := needNode(t)
	srv := handofftest.StartServer(t, handofftest.Options{})
	addr := handofftest.FreeAddr(t)
	cmd := exec.Command(node, "test/handoff-app.mjs")
	cmd.Env = handofftest.Env("DATABASE_URL="+srv.DatabaseURL, "SNORKY_BACKEND_URL="+srv.BackendURL,
		"SNORKY_API_KEY="+handofftest.APIKey, "ADDR="+addr)
	app := handofftest.StartProcess(t, cmd)
	app.WaitHTTP(t, "http://"+addr+"/", 30*time.Second)

	w := handofftest.StartWriter(t, srv.DatabaseURL, 500, 200)
	client := &http.Client{Timeout: 30 * time.Second}
	res := handofftest.Check(t, srv, w, 1000, 4, func(ctx context.Context) ([]handofftest.Row, string, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/items", nil)
		req.Header.Set("X-Snorky", "Subscribe")
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return nil, "", fmt.Errorf("GET /api/items: %d %.300s", resp.StatusCode, body)
		}
		var rows []handofftest.Row
		if err := json.Unmarshal(body, &rows); err != nil {
			return nil, "", fmt.Errorf("GET /api/items: %w", err)
		}
		return rows, resp.Header.Get("X-Subscription-Token"), nil
	})
	w.Stop(t)
	handofftest.VerifyTable(t, srv.DatabaseURL, w)
	t.Log(res)
	if res.Handoffs != 1000 || res.Lost != 0 || res.Doubled != 0 {
		t.Errorf("got %v, want 1000 handoffs, 0 lost, 0 doubled", res)
	}
}
