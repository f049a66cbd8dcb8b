// Package handofftest checks an application's subscription handoff (spec
// §3.7, D8) end to end, for the tests of the backend helpers (Go, Django,
// Node): a real `snorky serve` on a throwaway PostgreSQL, a writer that
// commits single-row changes at a steady rate, and a checker that performs
// handoffs through the application (its list view and token) and verifies
// that the list plus the deltas equals the table: no change lost, none
// applied twice.
//
// It is a test helper: every function takes a testing.TB and fails it.
package handofftest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/cmd/snorky/snorkytest"
)

// Credentials of the servers started here.
const (
	APIKey      = "handoff-backend-key-0123456789abcdef"
	TokenSecret = "handoff-token-secret-0123456789abcdef"
)

var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Main runs the tests of a package, then stops the shared PostgreSQL and
// removes the server binary built for them. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }
func Main(m *testing.M) int {
	code := pgtest.Main(m)
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	return code
}

// Binary returns the path of the snorky server binary, built once per test
// binary (without the race detector: the server is not under test here).
func Binary(tb testing.TB) string {
	tb.Helper()
	bin.once.Do(func() {
		if bin.dir, bin.err = os.MkdirTemp("", "snorky-handoff-"); bin.err != nil {
			return
		}
		bin.path = filepath.Join(bin.dir, "snorky")
		bin.err = snorkytest.Build(context.Background(), bin.path, false)
	})
	if bin.err != nil {
		tb.Fatal(bin.err)
	}
	return bin.path
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := snorkytest.FreeAddr()
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// Options configure StartServer.
type Options struct {
	// Schema is SQL run in the new database before the server starts.
	// Default: the items table of the handoff check (ItemsSchema).
	Schema string
	// Body is YAML appended to the configuration: models, dealers and any
	// other section not written by StartServer. Default: model Item on
	// items, broadcast dealer AllItems.
	Body string
	// Prepare runs after Schema, before the server starts (e.g. the
	// application's migrations).
	Prepare func(tb testing.TB, databaseURL string)
	// Frontend is YAML inside the frontend section, e.g.
	// `allowed_origins: ["http://127.0.0.1:8000"]`.
	Frontend string
}

// ItemsSchema is the table the handoff check writes.
const ItemsSchema = `CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`

const itemsBody = `models:
  Item: {table: items}
dealers:
  AllItems: {model: Item, kind: broadcast}
`

// Server is a running `snorky serve` on a fresh database.
type Server struct {
	// DatabaseURL is the fresh database's URL.
	DatabaseURL string
	// BackendURL is the backend endpoint (…/backend); WebSocketURL the
	// frontend one (ws://…/ws).
	BackendURL, WebSocketURL string
	// FrontendAddr and BackendAddr are the listeners' host:port.
	FrontendAddr, BackendAddr string

	proc *snorkytest.Process
}

// StartServer creates a database on the test PostgreSQL, runs the schema,
// starts `snorky serve` on free ports and waits until it is ready. Cleanup
// stops it.
func StartServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Schema == "" {
		opts.Schema = ItemsSchema
	}
	if opts.Body == "" {
		opts.Body = itemsBody
	}
	path := Binary(tb)
	url := pgtest.NewDatabase(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = db.Exec(ctx, opts.Schema)
	db.Close(ctx)
	if err != nil {
		tb.Fatalf("schema: %v", err)
	}
	if opts.Prepare != nil {
		opts.Prepare(tb, url)
	}
	s := &Server{DatabaseURL: url, FrontendAddr: FreeAddr(tb), BackendAddr: FreeAddr(tb)}
	s.BackendURL = "http://" + s.BackendAddr + "/backend"
	s.WebSocketURL = "ws://" + s.FrontendAddr + "/ws"
	slot := "handoff_" + randomHex()
	cfg := fmt.Sprintf(`frontend: {listen: %q, path: /ws, send_queue_bytes: 16MiB%s}
backend: {listen: %q, path: /backend, api_key: %q}
tokens: {secret: %q}
limits: {commands_per_second: 0, pending_bytes: 8MiB}
log: {level: info}
database: {url: %q, slot: %s, publication: %s}
%s`, s.FrontendAddr, prefixComma(opts.Frontend), s.BackendAddr, APIKey, TokenSecret, url, slot, slot, opts.Body)
	cfgPath := filepath.Join(tb.TempDir(), "snorky.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	s.proc, err = snorkytest.Start(snorkytest.Options{Bin: path, Config: cfgPath, FrontendAddr: s.FrontendAddr, BackendAddr: s.BackendAddr})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.proc.Stop(20 * time.Second); err != nil {
			tb.Error(err)
		}
		if tb.Failed() {
			tb.Logf("snorky log:\n%s", tail(s.proc.Log(), 6000))
		}
	})
	if err := s.proc.WaitReady(context.Background(), 60*time.Second); err != nil {
		tb.Fatalf("%v:\n%s", err, tail(s.proc.Log(), 4000))
	}
	return s
}

func prefixComma(s string) string {
	if s == "" {
		return ""
	}
	return ", " + s
}

// Log returns what the server has logged so far.
func (s *Server) Log() string { return s.proc.Log() }

func randomHex() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func tail(s string, n int) string { return snorkytest.Tail(s, n) }

// Process is a helper subprocess (an application under test: Django, Node)
// whose output is kept for the failure log.
type Process struct {
	cmd  *exec.Cmd
	out  *snorkytest.Buffer
	done chan struct{}
}

// StartProcess starts cmd, stops it (SIGTERM, then SIGKILL) in cleanup and
// logs its output if the test failed.
func StartProcess(tb testing.TB, cmd *exec.Cmd) *Process {
	tb.Helper()
	p := &Process{cmd: cmd, out: &snorkytest.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", cmd.Path, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if tb.Failed() {
			tb.Logf("%s output:\n%s", filepath.Base(cmd.Path), tail(p.out.String(), 6000))
		}
	})
	return p
}

// Output returns what the process has written so far.
func (p *Process) Output() string { return p.out.String() }

// WaitHTTP waits until GET url answers (any status), failing early if the
// process exits.
func (p *Process) WaitHTTP(tb testing.TB, url string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	c := http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-p.done:
			tb.Fatalf("%s exited before it answered:\n%s", filepath.Base(p.cmd.Path), tail(p.out.String(), 4000))
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not answer %s within %v: %v\n%s", filepath.Base(p.cmd.Path), url, timeout, err, tail(p.out.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Env returns os.Environ() with the given variables set (KEY=value).
func Env(kv ...string) []string {
	env := os.Environ()
	for _, e := range kv {
		k, _, _ := strings.Cut(e, "=")
		for i := len(env) - 1; i >= 0; i-- {
			if strings.HasPrefix(env[i], k+"=") {
				env = append(env[:i], env[i+1:]...)
			}
		}
		env = append(env, e)
	}
	return env
}

// backendCall calls authorizeSubscription on srv (for the package's own
// test; the helpers under test make their own calls).
func backendCall(ctx context.Context, srv *Server, params map[string]any) (string, error) {
	body, _ := json.Marshal(map[string]any{"service": "datasync_backend", "message": map[string]any{"command": "authorizeSubscription", "params": params}})
	req, err := http.NewRequestWithContext(ctx, "POST", srv.BackendURL, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Backend-Key", APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var env struct {
		Message struct {
			Type    string `json:"type"`
			Data    string `json:"data"`
			Message string `json:"message"`
		} `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return "", err
	}
	if env.Message.Type != "response" {
		return "", fmt.Errorf("authorizeSubscription: %s", env.Message.Message)
	}
	return env.Message.Data, nil
}
