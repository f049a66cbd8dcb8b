// Package backend_test runs the tests of the Node backend helper
// (index.mjs) with Node: its unit tests (test/backend.test.mjs) and the
// 1,000-handoff test against a real server (test/handoff-app.mjs).
package backend_test

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/backendapi/handofftest"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/wsapi/client/nodetest"
)

func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }

// needNode returns node, skipping the test without it or without pg
// (npm ci --prefix wsapi/client/backend/test).
func needNode(t *testing.T) string {
	t.Helper()
	node := nodetest.Node(t)
	nodetest.Modules(t, "test", "wsapi/client/backend/test", "pg")
	return node
}

func TestNodeUnit(t *testing.T) {
	needNode(t)
	nodetest.Run(t, nodetest.Options{Timeout: 2 * time.Minute, Env: handofftest.Env("DATABASE_URL=" + pgtest.NewDatabase(t))}, "test/backend.test.mjs")
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
	res := handofftest.Check(t, srv, w, 1000, 4, handofftest.ListOverHTTP("http://"+addr+"/api/items"))
	w.Stop(t)
	handofftest.VerifyTable(t, srv.DatabaseURL, w)
	t.Log(res)
	if res.Handoffs != 1000 || res.Lost != 0 || res.Doubled != 0 {
		t.Errorf("got %v, want 1000 handoffs, 0 lost, 0 doubled", res)
	}
}
