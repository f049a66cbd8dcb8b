package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
	"github.com/snorkyhq/snorky/examples/todomvc"
)

// demoConfig is the embedded default configuration of `snorky demo`: the
// server on loopback (free ports: "127.0.0.1:0"), streaming the tasks table
// of the throwaway database. The %q verbs are the frontend address, the
// origins, the backend address, the backend key, the token secret and the
// database URL (Go's quoting is valid YAML for them). `snorky demo
// --nodes` appends a cluster section.
const demoConfig = `# snorky demo: generated at start, removed on exit.
frontend:
  listen: %q
  path: /ws
  allowed_origins: [%q, %q]
backend:
  listen: %q
  path: /backend
  api_key: %q
tokens:
  secret: %q
database:
  url: %q
  migrate: true
models:
  Task: {table: public.tasks}
dealers:
  AllTasks: {model: Task, kind: broadcast}
log: {level: %s}
shutdown: {timeout: 5s}
`

// demoOptions configure runDemo.
type demoOptions struct {
	// Addr is where the TodoMVC page listens, e.g. "127.0.0.1:8080".
	Addr string
	// ProxyWebSocket serves the WebSocket through the page's own address
	// (at /ws), so that one port reaches everything: for --host, when the
	// demo runs in a container or on another machine.
	ProxyWebSocket bool
	// LogLevel is the server's log level (debug|info|warn|error).
	LogLevel string
	// Ready, when not nil, is called once everything serves (tests).
	Ready func(demoInfo)
	// Nodes above 1 runs that many `snorky serve` processes joined
	// through an embedded NATS server (README "Scaling out").
	Nodes int
	// FixedPorts puts the nodes on the ports after the page's (8081…
	// for the WebSockets, 8181… for the backends); otherwise free ports.
	FixedPorts bool
	// ServeBin is the snorky binary the nodes run; default this one.
	ServeBin string

	pgDir string
}

// demoInfo describes a running demo.
type demoInfo struct {
	PageURL     string         // the TodoMVC page
	DatabaseURL string         // the throwaway database holding the tasks table
	BinDir      string         // the PostgreSQL binaries in use (psql is there)
	PGDir       string         // PostgreSQL's temporary directory, removed on exit
	Server      *snorky.Server // the Snorky server (nil with Nodes)
	Nodes       []demoNodeInfo // the nodes' processes (with Nodes)
}

// demoNodeInfo describes one node of `snorky demo --nodes N`.
type demoNodeInfo struct {
	PID               int
	Frontend, Backend string // host:port
}

// demo runs `snorky demo [--port N]`.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 8080, "port of the TodoMVC page (0: a free port)")
	host := fs.String("host", "127.0.0.1", "address the page listens on; e.g. 0.0.0.0 in a container or on a remote machine (the WebSocket is then served through the page's port too)")
	level := fs.String("log-level", "warn", "the server's log level: debug, info, warn or error")
	nodes := fs.Int("nodes", 1, "run this many snorky nodes joined through an embedded NATS server (a cluster; README \"Scaling out\")")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 || *port < 0 || *port > 65535 || *nodes < 1 || *nodes > 16 {
		fs.Usage()
		return errUsage
	}
	return runDemo(ctx, demoOptions{Addr: net.JoinHostPort(*host, strconv.Itoa(*port)), ProxyWebSocket: !isLoopback(*host), LogLevel: *level,
		Nodes: *nodes, FixedPorts: *port != 0}, stdout, stderr)
}

// runDemo starts a throwaway PostgreSQL with the tasks table, the Snorky
// server streaming it, and the TodoMVC example, and runs them until ctx is
// done. Everything it started is stopped and removed when it returns.
func runDemo(ctx context.Context, opts demoOptions, stdout, stderr io.Writer) (err error) {
	switch opts.LogLevel {
	case "":
		opts.LogLevel = "warn"
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level: %q is not debug, info, warn or error", opts.LogLevel)
	}
	// The page's port first: a busy port fails before anything starts.
	pageLn, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("demo page: %w (choose another port with --port)", err)
	}
	defer pageLn.Close()
	pagePort := pageLn.Addr().(*net.TCPAddr).Port
	pageHost := pageLn.Addr().(*net.TCPAddr).IP
	pageURL := fmt.Sprintf("http://127.0.0.1:%d", pagePort)
	openURL := pageURL
	if !pageHost.IsUnspecified() && !pageHost.IsLoopback() {
		pageURL = "http://" + net.JoinHostPort(pageHost.String(), strconv.Itoa(pagePort))
		openURL = pageURL
	} else if pageHost.IsUnspecified() {
		openURL = fmt.Sprintf("http://localhost:%d (from another machine: http://THIS-MACHINE:%d)", pagePort, pagePort)
	}

	fmt.Fprintln(stdout, "Starting a throwaway PostgreSQL…")
	pg, err := pglocal.Start(ctx, pglocal.Options{})
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	defer func() {
		if serr := pg.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	dbURL, err := createDemoDatabase(ctx, pg)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "snorky-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if opts.Nodes > 1 {
		opts.pgDir = pg.Dir()
		return runDemoNodes(ctx, opts, pageLn, pageURL, openURL, dbURL, dir, stdout, stderr)
	}
	apiKey, secret := randomHex(16), randomHex(32)
	cfgPath := filepath.Join(dir, "snorky.yaml")
	cfgText := fmt.Sprintf(demoConfig, "127.0.0.1:0", pageURL, fmt.Sprintf("http://localhost:%d", pagePort), "127.0.0.1:0", apiKey, secret, dbURL, opts.LogLevel)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}

	// The server, in-process, with the embedded configuration and no
	// environment overrides (they could disagree with the page's key).
	srvCtx, stopSrv := context.WithCancel(context.Background())
	defer stopSrv()
	readyc := make(chan *snorky.Server, 1)
	srvDone := make(chan struct{})
	var srvResult error // set before srvDone closes
	go func() {
		defer close(srvDone)
		srvResult = runServe(srvCtx, cfgPath, nil, stderr, func(s *snorky.Server) { readyc <- s })
	}()
	// stopServer stops the server (shutting down in its order) and
	// returns its error; it may be called more than once.
	stopServer := func() error {
		stopSrv()
		<-srvDone
		return srvResult
	}
	defer stopServer()
	var s *snorky.Server
	select {
	case s = <-readyc:
	case <-srvDone:
		return fmt.Errorf("starting the server: %w", srvResult)
	case <-ctx.Done():
		return stopServer()
	}
	if err := waitStreaming(ctx, s, srvDone); err != nil {
		if serr := stopServer(); serr != nil {
			return fmt.Errorf("%w: %v", err, serr)
		}
		return err
	}

	appCfg := todomvc.Config{
		DatabaseURL:  dbURL,
		BackendURL:   s.BackendURL(),
		APIKey:       apiKey,
		WebSocketURL: s.FrontendURL(),
		Log:          slog.New(slog.NewTextHandler(stderr, nil)),
	}
	if opts.ProxyWebSocket {
		appCfg.WebSocketURL, appCfg.WebSocketPath = "", s.Config().Frontend.Path
	}
	app, err := todomvc.New(appCfg)
	if err != nil {
		return err
	}
	defer app.Close(context.Background())
	var handler http.Handler = app
	if opts.ProxyWebSocket {
		handler = proxyWebSocket(app, s)
	}
	page := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	pageErr := make(chan error, 1)
	go func() {
		err := page.Serve(pageLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else if err != nil {
			err = fmt.Errorf("demo page: %w", err)
		}
		pageErr <- err
	}()

	fmt.Fprintf(stdout, `
Snorky demo: TodoMVC, synchronised through PostgreSQL's WAL.

  Open %s in two windows: every change appears in both.

  Change the table with SQL and watch the windows follow:
    psql %q -c "INSERT INTO tasks (title) VALUES ('from psql')"

  WebSocket %s, backend %s
  Press Ctrl+C to stop (the database is deleted).
`, openURL, dbURL, s.FrontendURL(), s.BackendURL())
	if opts.Ready != nil {
		opts.Ready(demoInfo{PageURL: pageURL, DatabaseURL: dbURL, BinDir: pg.BinDir(), PGDir: pg.Dir(), Server: s})
	}

	var runErr error
	select {
	case <-ctx.Done():
	case <-srvDone:
		if runErr = srvResult; runErr == nil {
			runErr = errors.New("the server stopped")
		}
	case runErr = <-pageErr:
	}
	fmt.Fprintln(stdout, "Stopping…")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	page.Shutdown(sctx)
	if err := stopServer(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// createDemoDatabase creates the database "todomvc" with the tasks table
// and returns its URL.
func createDemoDatabase(ctx context.Context, pg *pglocal.Server) (string, error) {
	admin, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE todomvc"); err != nil {
		return "", fmt.Errorf("creating the database: %w", err)
	}
	url := pg.URL("todomvc")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, todomvc.Schema); err != nil {
		return "", fmt.Errorf("creating the tasks table: %w", err)
	}
	return url, nil
}

// waitStreaming waits until the server streams from PostgreSQL, so that
// the first page load can subscribe.
func waitStreaming(ctx context.Context, s *snorky.Server, srvDone <-chan struct{}) error {
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !s.Reader().Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-srvDone:
			return errors.New("the server stopped before streaming from PostgreSQL")
		case <-deadline.C:
			return errors.New("the server did not start streaming from PostgreSQL within a minute")
		case <-tick.C:
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// isLoopback reports whether host names this machine's loopback.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// proxyWebSocket serves the server's WebSocket path through the page's
// handler, keeping the browser's Host so that the default Origin check
// (Origin equal to Host) accepts the page wherever it is reached from.
func proxyWebSocket(page http.Handler, s *snorky.Server) http.Handler {
	target := &url.URL{Scheme: "http", Host: s.FrontendAddr().String()}
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host
	}}
	mux := http.NewServeMux()
	mux.Handle(s.Config().Frontend.Path, proxy)
	mux.Handle("/", page)
	return mux
}
