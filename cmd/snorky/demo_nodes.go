package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
	"github.com/snorkyhq/snorky/examples/todomvc"
)

// demoClusterConfig is the cluster section appended to demoConfig for each
// node of `snorky demo --nodes N`; the %q verb is the NATS URL.
const demoClusterConfig = `cluster:
  name: demo
  nats: {url: %q}
  presence_ttl: 5s
`

// demoNode is one `snorky serve` process of the demo's cluster.
type demoNode struct {
	n           int
	cmd         *exec.Cmd
	front, back string // host:port
	done        chan struct{}
	ready       atomic.Bool // /readyz answers 200
}

func (n *demoNode) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// role is the node's role in the cluster ("owner" or "standby"), from
// /readyz.
func (n *demoNode) role() string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + n.back + "/readyz")
	if err != nil {
		return "down"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch {
	case strings.Contains(string(b), `"role":"owner"`):
		return "owner"
	case strings.Contains(string(b), `"role":"standby"`):
		return "standby"
	}
	return "starting"
}

// demoPorts returns the n consecutive ports after base (0: free ports).
func demoPorts(base, n int) []string {
	addrs := make([]string, n)
	for i := range addrs {
		port := 0
		if base > 0 {
			port = base + i
		}
		if port == 0 {
			// Never one port twice, though none is held until its node binds it.
			port, _ = pglocal.FreePort()
		}
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	return addrs
}

// runDemoNodes is runDemo with opts.Nodes `snorky serve` processes joined
// through an embedded NATS server: the page's /ws (and the client files)
// and the app's backend calls go round-robin to the nodes that are ready,
// so that a browser whose node dies reconnects to another and resumes.
func runDemoNodes(ctx context.Context, opts demoOptions, pageLn net.Listener, pageURL, openURL, dbURL, dir string, stdout, stderr io.Writer) error {
	bin := opts.ServeBin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the snorky binary to start the nodes: %w", err)
		}
		bin = exe
	}
	fmt.Fprintln(stdout, "Starting an embedded NATS server with JetStream…")
	nats, err := natslocal.Start(filepath.Join(dir, "nats"), 1)
	if err != nil {
		return fmt.Errorf("starting NATS: %w", err)
	}
	defer nats.Shutdown()

	pagePort := pageLn.Addr().(*net.TCPAddr).Port
	base := 0
	if opts.FixedPorts {
		base = pagePort + 1
	}
	fronts, backs := demoPorts(base, opts.Nodes), demoPorts(base+100*boolInt(base > 0), opts.Nodes)
	apiKey, secret := randomHex(16), randomHex(32)
	nodes := make([]*demoNode, opts.Nodes)
	defer func() {
		for _, n := range nodes {
			if n != nil && !n.exited() {
				n.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, n := range nodes {
			if n == nil {
				continue
			}
			select {
			case <-n.done:
			case <-time.After(10 * time.Second):
				n.cmd.Process.Kill()
				<-n.done
			}
		}
	}()
	for i := range nodes {
		cfgPath := filepath.Join(dir, fmt.Sprintf("node%d.yaml", i+1))
		text := fmt.Sprintf(demoConfig, fronts[i], pageURL, fmt.Sprintf("http://localhost:%d", pagePort), backs[i],
			apiKey, secret, dbURL, opts.LogLevel) + fmt.Sprintf(demoClusterConfig, nats.URL(0))
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			return err
		}
		n := &demoNode{n: i + 1, front: fronts[i], back: backs[i], done: make(chan struct{})}
		n.cmd = exec.Command(bin, "serve", "--config", cfgPath)
		// The nodes take nothing from the environment: the keys are the
		// demo's own.
		n.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		// A pipe of our own, read to its end before the node counts as
		// exited, so that its last lines (why it stopped) are printed.
		out, w, err := os.Pipe()
		if err != nil {
			return err
		}
		n.cmd.Stdout, n.cmd.Stderr = w, w
		err = n.cmd.Start()
		w.Close()
		if err != nil {
			out.Close()
			return fmt.Errorf("starting node %d (%s serve): %w", n.n, bin, err)
		}
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			prefixLines(out, fmt.Sprintf("node %d: ", n.n), stderr)
			out.Close()
		}()
		go func() {
			n.cmd.Wait()
			<-copied
			close(n.done)
		}()
		nodes[i] = n
	}
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go watchNodes(hctx, nodes)
	deadline := time.Now().Add(2 * time.Minute)
	for !allReady(nodes) {
		for _, n := range nodes {
			if n.exited() {
				return fmt.Errorf("node %d stopped while starting (its log is above; a port of %s or %s may be busy: try another --port)", n.n, n.front, n.back)
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the nodes were not ready within 2 minutes (their logs are above)")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}

	// One node owns the slot: changes flow.
	for owner := false; !owner; {
		for _, n := range nodes {
			owner = owner || n.role() == "owner"
		}
		if time.Now().After(deadline) {
			return errors.New("no node took the replication slot within 2 minutes (their logs are above)")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}

	// The app's backend calls go to any ready node.
	backLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	backSrv := &http.Server{Handler: balance(nodes, func(n *demoNode) string { return n.back }, false), ReadHeaderTimeout: 10 * time.Second}
	go backSrv.Serve(backLn)
	defer backSrv.Close()
	app, err := todomvc.New(todomvc.Config{
		DatabaseURL:   dbURL,
		BackendURL:    "http://" + backLn.Addr().String() + "/backend",
		APIKey:        apiKey,
		WebSocketPath: "/ws",
		Log:           slog.New(slog.NewTextHandler(stderr, nil)),
	})
	if err != nil {
		return err
	}
	defer app.Close(context.Background())
	front := balance(nodes, func(n *demoNode) string { return n.front }, true)
	mux := http.NewServeMux()
	for _, p := range []string{"/ws", "/snorky.js", "/snorky.mjs"} {
		mux.Handle(p, front)
	}
	mux.Handle("/", app)
	page := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	pageErr := make(chan error, 1)
	go func() {
		err := page.Serve(pageLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		pageErr <- err
	}()

	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "    node %d: pid %-7d ws://%s/ws  backend http://%s/backend  (%s)\n", n.n, n.cmd.Process.Pid, n.front, n.back, n.role())
	}
	fmt.Fprintf(stdout, `
Snorky demo: TodoMVC on a cluster of %d nodes, synchronised through PostgreSQL's WAL
and an embedded NATS server (JetStream).

  Open %s in two windows: every change appears in both.
  The page's WebSocket goes to the nodes in turn:
%s
  Kill a node (kill -9 PID): its browsers reconnect to another node and resume,
  and if it owned the replication slot another node takes it over.

  Change the table with SQL and watch the windows follow:
    psql %q -c "INSERT INTO tasks (title) VALUES ('from psql')"

  Press Ctrl+C to stop (the database is deleted).
`, len(nodes), openURL, b.String(), dbURL)
	if opts.Ready != nil {
		info := demoInfo{PageURL: pageURL, DatabaseURL: dbURL, PGDir: opts.pgDir}
		for _, n := range nodes {
			info.Nodes = append(info.Nodes, demoNodeInfo{PID: n.cmd.Process.Pid, Frontend: n.front, Backend: n.back})
		}
		opts.Ready(info)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-pageErr:
	}
	fmt.Fprintln(stdout, "Stopping…")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	page.Shutdown(sctx)
	return runErr
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func allReady(nodes []*demoNode) bool {
	for _, n := range nodes {
		if !n.ready.Load() {
			return false
		}
	}
	return true
}

// watchNodes keeps each node's ready flag current until ctx is done.
func watchNodes(ctx context.Context, nodes []*demoNode) {
	c := http.Client{Timeout: time.Second}
	for {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := false
				if !n.exited() {
					if resp, err := c.Get("http://" + n.back + "/readyz"); err == nil {
						ok = resp.StatusCode == http.StatusOK
						resp.Body.Close()
					}
				}
				n.ready.Store(ok)
			}()
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// balance proxies each request to the next ready node (addr gives the
// node's address); keepHost keeps the browser's Host, so that the nodes'
// Origin check sees the page's.
func balance(nodes []*demoNode, addr func(*demoNode) string, keepHost bool) http.Handler {
	var next atomic.Uint32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var target *demoNode
		for range nodes {
			n := nodes[int(next.Add(1))%len(nodes)]
			if n.ready.Load() && !n.exited() {
				target = n
				break
			}
		}
		if target == nil {
			http.Error(w, "no snorky node is ready", http.StatusBadGateway)
			return
		}
		u := &url.URL{Scheme: "http", Host: addr(target)}
		proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			if keepHost {
				pr.Out.Host = pr.In.Host
			}
		}}
		proxy.ServeHTTP(w, r)
	})
}

// prefixLines copies r's lines to w, each after prefix.
func prefixLines(r io.Reader, prefix string, w io.Writer) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		fmt.Fprintf(w, "%s%s\n", prefix, s.Text())
	}
}
