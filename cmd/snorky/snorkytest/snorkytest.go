// Package snorkytest runs the snorky binary as a subprocess, for the tests
// and benchmarks that need a real `snorky serve` (the end-to-end suite, the
// backend helpers' handoff checks, snorky-bench): it builds the binary,
// starts it with a configuration file, waits until it is ready, keeps its
// log and stops, signals or kills it.
//
// It does not import the testing package, so that a command (snorky-bench)
// may use it; test helpers wrap its errors in t.Fatal themselves.
package snorkytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal"
)

// Package is the import path of the server command.
const Package = "github.com/snorkyhq/snorky/cmd/snorky"

// Build builds the server command into the file out, with the race
// detector when race is set.
func Build(ctx context.Context, out string, race bool) error {
	goTool, err := exec.LookPath("go")
	if err != nil && os.Getenv("GOROOT") != "" {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	b, err := exec.CommandContext(ctx, goTool, append(args, Package)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("building snorky: %v: %s", err, bytes.TrimSpace(b))
	}
	return nil
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago and
// that no earlier call in this process returned (see pglocal.FreePort).
func FreeAddr() (string, error) {
	p, err := pglocal.FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// Options configure Start.
type Options struct {
	// Bin is the server binary (see Build).
	Bin string
	// Config is the path of the configuration file.
	Config string
	// FrontendAddr and BackendAddr are the host:port the configuration
	// listens on; FrontendPath and BackendPath its paths (default /ws and
	// /backend). They only make the URLs.
	FrontendAddr, BackendAddr string
	FrontendPath, BackendPath string
	// Env is the server's environment (nil: this process's).
	Env []string
	// Output receives the server's standard output and error. Nil: they
	// are kept in memory and Log returns them.
	Output io.Writer
	// DeathSignal, when not 0, is sent to the server if this process dies
	// (Linux's parent-death signal), so that it never outlives its runner.
	DeathSignal syscall.Signal
}

// Process is one running `snorky serve`.
type Process struct {
	opts Options
	cmd  *exec.Cmd
	log  *Buffer // nil with Options.Output
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// Start starts `snorky serve --config` with opts. It does not wait for the
// server to be ready (WaitReady).
func Start(opts Options) (*Process, error) {
	if opts.FrontendPath == "" {
		opts.FrontendPath = "/ws"
	}
	if opts.BackendPath == "" {
		opts.BackendPath = "/backend"
	}
	p := &Process{opts: opts, done: make(chan struct{})}
	p.cmd = exec.Command(opts.Bin, "serve", "--config", opts.Config)
	out := opts.Output
	if out == nil {
		p.log = &Buffer{}
		out = p.log
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.Env = opts.Env
	if opts.DeathSignal != 0 {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: opts.DeathSignal}
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", opts.Bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Restart starts a new server with the options of p, which must have
// exited.
func (p *Process) Restart() (*Process, error) {
	if !p.Exited() {
		return nil, errors.New("restart of a running server")
	}
	return Start(p.opts)
}

// PID is the server's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Cmd is the command, for what the methods here do not cover.
func (p *Process) Cmd() *exec.Cmd { return p.cmd }

// Options are the options the server was started with.
func (p *Process) Options() Options { return p.opts }

// Log returns what the server has written so far ("" with
// Options.Output).
func (p *Process) Log() string {
	if p.log == nil {
		return ""
	}
	return p.log.String()
}

// Done is closed when the server has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the server exited (nil for a clean exit); valid once Done is
// closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Exited reports whether the server has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the server.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// ErrKilled is Stop's error for a server that did not exit in time.
var ErrKilled = errors.New("snorky did not stop in time after SIGTERM; killed")

// Stop sends SIGTERM (and SIGCONT, in case the server was paused) and waits
// for the exit; after timeout it kills the server and returns ErrKilled.
// It does nothing to a server that has exited.
func (p *Process) Stop(timeout time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return ErrKilled
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing snorky: %w", err)
	}
	<-p.done
	return nil
}

// FrontendURL is the WebSocket endpoint, e.g. ws://127.0.0.1:5001/ws.
func (p *Process) FrontendURL() string { return "ws://" + p.opts.FrontendAddr + p.opts.FrontendPath }

// BackendURL is the backend endpoint, e.g. http://127.0.0.1:5002/backend.
func (p *Process) BackendURL() string { return "http://" + p.opts.BackendAddr + p.opts.BackendPath }

// ReadyURL is the backend listener's readiness endpoint.
func (p *Process) ReadyURL() string { return "http://" + p.opts.BackendAddr + "/readyz" }

// MetricsURL is the backend listener's Prometheus endpoint.
func (p *Process) MetricsURL() string { return "http://" + p.opts.BackendAddr + "/metrics" }

// ReadyStatus returns the HTTP status of GET /readyz (0 when unreachable).
func (p *Process) ReadyStatus() int { return Status(p.ReadyURL()) }

// WaitReady waits until /readyz answers 200; it fails early if the server
// exits.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration) error {
	err := WaitReady(ctx, p.ReadyURL(), timeout, p.done)
	if err != nil && p.Exited() {
		return fmt.Errorf("snorky exited before it was ready: %v", p.err)
	}
	return err
}

// Status returns the HTTP status of GET url (0 when unreachable).
func Status(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// WaitReady polls url until it answers 200, timeout passes, ctx is done or
// exited (when not nil) is closed.
func WaitReady(ctx context.Context, url string, timeout time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server not ready at %s after %v: %s", url, timeout, last)
		case <-exited:
			return errors.New("server exited before it was ready")
		case <-tick.C:
		}
	}
}

// Tail returns the last n bytes of s, marked with … when cut.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Buffer is a bytes.Buffer safe for concurrent writes and reads: a
// subprocess's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WithoutSnorkyEnv returns environ without SNORKY_ variables, so that a
// server's configuration is exactly its file.
func WithoutSnorkyEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "SNORKY_") {
			out = append(out, kv)
		}
	}
	return out
}
