package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/snorkytest"
)

// serverFlags selects the server under test: spawned by the runner (the
// default) or already running (--server-pid with its URLs).
type serverFlags struct {
	bin          string
	pid          int
	wsURL        string
	backendURL   string
	readyURL     string
	key          string
	sendQueue    int
	readyTimeout time.Duration
	keepDir      bool
	metricsURL   string

	// extraConfig is YAML appended to the spawned server's configuration
	// by the scenario (models, dealers, database); not a flag.
	extraConfig string
}

func (f *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.bin, "server-bin", "", "snorky binary to spawn (default: go build ./cmd/snorky, else snorky on PATH)")
	fs.IntVar(&f.pid, "server-pid", 0, "measure an already running server with this PID instead of spawning one (needs --ws, --backend, --key)")
	fs.StringVar(&f.wsURL, "ws", "", "frontend WebSocket URL of a running server, e.g. ws://127.0.0.1:5001/ws")
	fs.StringVar(&f.backendURL, "backend", "", "backend URL of a running server, e.g. http://127.0.0.1:5002/backend")
	fs.StringVar(&f.readyURL, "ready", "", "readiness URL to poll (default: /readyz on the backend listener)")
	fs.StringVar(&f.key, "key", "", "backend API key of a running server")
	fs.IntVar(&f.sendQueue, "send-queue-bytes", 1<<20, "frontend.send_queue_bytes of the spawned server")
	fs.DurationVar(&f.readyTimeout, "ready-timeout", 60*time.Second, "how long to wait for the server to become ready")
	fs.BoolVar(&f.keepDir, "keep", false, "keep the spawned server's temporary directory (config, log)")
	fs.StringVar(&f.metricsURL, "metrics", "", "Prometheus metrics URL of a running server (default: /metrics on the backend listener)")
}

// server is the server under test.
type server struct {
	PID        int
	WSURL      string
	BackendURL string
	MetricsURL string
	Key        string

	proc *snorkytest.Process // a spawned server
	dir  string              // temporary directory of a spawned server
	log  string              // its log file
	keep bool
}

// startServer spawns and waits for the server, or attaches to a running one.
func startServer(ctx context.Context, f serverFlags, logf func(string, ...any)) (*server, error) {
	if f.pid != 0 {
		if f.wsURL == "" || f.backendURL == "" || f.key == "" {
			return nil, errors.New("--server-pid needs --ws, --backend and --key")
		}
		if _, err := readProc(f.pid); err != nil {
			return nil, fmt.Errorf("--server-pid %d: %w", f.pid, err)
		}
		s := &server{PID: f.pid, WSURL: f.wsURL, BackendURL: f.backendURL, MetricsURL: f.metricsURL, Key: f.key}
		if s.MetricsURL == "" {
			s.MetricsURL = siblingURL(f.backendURL, "/metrics")
		}
		return s, snorkytest.WaitReady(ctx, readyURL(f), f.readyTimeout, nil)
	}

	dir, err := os.MkdirTemp("", "snorky-bench-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, log: filepath.Join(dir, "server.log"), keep: f.keepDir, Key: "bench-backend-key-0123456789abcdef"}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()

	bin := f.bin
	if bin == "" {
		if bin, err = findServer(ctx, dir, logf); err != nil {
			return nil, err
		}
	}
	front, err := snorkytest.FreeAddr()
	if err != nil {
		return nil, err
	}
	back, err := snorkytest.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "snorky.yaml")
	cfg := serverConfig(front, back, s.Key, f.sendQueue) + f.extraConfig
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor

	s.proc, err = snorkytest.Start(snorkytest.Options{
		Bin: bin, Config: cfgPath, FrontendAddr: front, BackendAddr: back,
		// Its configuration is exactly the file the runner wrote (and the
		// server refuses SNORKY_ variables that name no key, like
		// SNORKY_BENCH_E2E).
		Env:    snorkytest.WithoutSnorkyEnv(os.Environ()),
		Output: logFile,
		// The server dies with the runner even if the runner is killed.
		DeathSignal: syscall.SIGTERM,
	})
	if err != nil {
		return nil, err
	}
	s.PID = s.proc.PID()
	s.WSURL, s.BackendURL, s.MetricsURL = s.proc.FrontendURL(), s.proc.BackendURL(), s.proc.MetricsURL()
	logf("server: pid %d, %s, %s, log %s", s.PID, s.WSURL, s.BackendURL, s.log)
	ready := f.readyURL
	if ready == "" {
		ready = s.proc.ReadyURL()
	}
	if err := snorkytest.WaitReady(ctx, ready, f.readyTimeout, s.proc.Done()); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, s.logTail())
	}
	ok = true
	return s, nil
}

func readyURL(f serverFlags) string {
	if f.readyURL != "" {
		return f.readyURL
	}
	return siblingURL(f.backendURL, "/readyz")
}

// siblingURL replaces the path of u (the backend URL) with path.
func siblingURL(u, path string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
			return u[:i+3+j] + path
		}
	}
	return strings.TrimRight(u, "/") + path
}

// serverConfig is the YAML the spawned server runs with: loopback only, every
// origin, no rate limit.
func serverConfig(front, back string, key string, sendQueue int) string {
	return fmt.Sprintf(`# written by snorky-bench
frontend:
  listen: %q
  path: /ws
  allowed_origins: ["*"]
  send_queue_bytes: %d
backend:
  listen: %q
  path: /backend
  api_key: %q
tokens:
  secret: "0123456789abcdef0123456789abcdef"
limits:
  commands_per_second: 0
  pending_bytes: %d
  idle_timeout: 0        # idle connections are what the conns scenario measures
  max_connections: 0
  connections_per_ip: 0
`, front, sendQueue, back, key, sendQueue/2)
}

// findServer builds cmd/snorky of the enclosing module into dir, or falls
// back to snorky on PATH.
func findServer(ctx context.Context, dir string, logf func(string, ...any)) (string, error) {
	bin := filepath.Join(dir, "snorky")
	buildErr := snorkytest.Build(ctx, bin, false)
	if buildErr == nil {
		logf("server: built %s", bin)
		return bin, nil
	}
	if p, err := exec.LookPath("snorky"); err == nil {
		logf("server: go build failed (%v); using %s", buildErr, p)
		return p, nil
	}
	return "", fmt.Errorf("no server binary: %v; and no snorky on PATH (use --server-bin)", buildErr)
}

// Pause stops the server process (SIGSTOP) so that work queues up for it;
// Resume continues it (SIGCONT).
func (s *server) Pause() error  { return syscall.Kill(s.PID, syscall.SIGSTOP) }
func (s *server) Resume() error { return syscall.Kill(s.PID, syscall.SIGCONT) }

// Sample reads the server's CPU time and RSS.
func (s *server) Sample() (procSample, error) { return readProc(s.PID) }

// Exited reports whether a spawned server has exited.
func (s *server) Exited() bool {
	return s.proc != nil && s.proc.Exited()
}

// Stop ends a spawned server (SIGTERM, then SIGKILL after 15 s) and removes
// its directory; it does nothing to a server it did not spawn. The returned
// error says how the server exited when it did not exit cleanly.
func (s *server) Stop() error {
	if s.dir == "" {
		return nil
	}
	var err error
	if s.proc != nil {
		// SIGCONT too, in case a scenario paused it.
		if err = s.proc.Stop(15 * time.Second); err == nil {
			if perr := s.proc.Err(); perr != nil {
				err = fmt.Errorf("server exited: %v\n%s", perr, s.logTail())
			}
		}
	}
	if !s.keep {
		os.RemoveAll(s.dir)
	}
	s.dir = ""
	return err
}

// logTail returns the last lines of a spawned server's log.
func (s *server) logTail() string {
	if s.log == "" {
		return ""
	}
	b, err := os.ReadFile(s.log)
	if err != nil {
		return ""
	}
	const maxTail = 2000
	if len(b) > maxTail {
		b = b[len(b)-maxTail:]
	}
	return "server log (tail):\n" + string(b)
}
