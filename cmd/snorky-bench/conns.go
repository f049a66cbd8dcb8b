package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
)

// connsConfig is the idle-connections scenario: hold N WebSocket connections
// open and measure the server's memory per connection.
type connsConfig struct {
	N         int           // connections to open
	PerWorker int           // connections per worker process (each has 20,000 descriptors)
	DialConc  int           // concurrent dials per worker
	PerAddr   int           // connections per loopback source address
	Settle    time.Duration // wait after the last connection before sampling RSS
	Subscribe bool          // also subscribe each connection to its own channel
	Service   string        // frontend PubSub service name (with Subscribe)
}

func (c *connsConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.N, "n", 19000, "idle WebSocket connections to open")
	fs.IntVar(&c.PerWorker, "per-worker", 6500, "connections held per worker process (at most 9000)")
	fs.IntVar(&c.DialConc, "dial-concurrency", 32, "concurrent connection attempts per worker")
	fs.IntVar(&c.PerAddr, "per-source-addr", 5000, "client connections per loopback source address")
	fs.DurationVar(&c.Settle, "settle", 3*time.Second, "wait after the last connection before sampling the server")
	fs.BoolVar(&c.Subscribe, "subscribe", false, "subscribe every connection to a channel of its own (measures a subscription too)")
	fs.StringVar(&c.Service, "service", "pubsub", "frontend PubSub service name")
}

// Validate checks the scenario's bounds.
func (c *connsConfig) Validate() error {
	switch {
	case c.N < 1 || c.N > 100000:
		return fmt.Errorf("--n: got %d, want 1..100000", c.N)
	case c.PerWorker < 1 || c.PerWorker > 9000:
		return fmt.Errorf("--per-worker: got %d, want 1..9000", c.PerWorker)
	case c.DialConc < 1 || c.PerAddr < 1:
		return errors.New("--dial-concurrency and --per-source-addr must be positive")
	case c.Settle < 0 || c.Settle > 10*time.Minute:
		return fmt.Errorf("--settle: got %v, want 0..10m", c.Settle)
	}
	return nil
}

// connsResult is the scenario's summary.
type connsResult struct {
	Scenario        string  `json:"scenario"`
	Requested       int     `json:"requested"`
	Established     int     `json:"established"`
	Failed          int     `json:"failed"`
	FirstError      string  `json:"first_error,omitempty"`
	DroppedDuring   int     `json:"dropped_during_hold"`
	Workers         int     `json:"workers"`
	ConnectS        float64 `json:"connect_s"`
	Subscribed      bool    `json:"subscribed"`
	ServerRSSBefore int64   `json:"server_rss_before_kib"`
	ServerRSSAfter  int64   `json:"server_rss_after_kib"`
	ServerHWM       int64   `json:"server_rss_peak_kib"`
	KiBPerConn      float64 `json:"server_kib_per_conn"`
	ServerFDs       int     `json:"server_fds,omitempty"`
	ServerThreads   int64   `json:"server_threads"`
	ServerCPUS      float64 `json:"server_cpu_connect_s"`
	// ServerIdleCores is the server's CPU while the connections sat idle
	// (the settle), in cores: pings, pongs, timers, the collector.
	ServerIdleCores float64        `json:"server_idle_cores"`
	IdleS           float64        `json:"idle_s"`
	CloseCodes      map[string]int `json:"close_codes,omitempty"`
}

// workerEnv marks a re-executed snorky-bench as a connection-holding worker.
const workerEnv = "SNORKY_BENCH_WORKER"

// workerReport is one line a worker writes to its stdout (JSON).
type workerReport struct {
	Phase      string         `json:"phase"` // "progress", "established", "exit"
	OK         int            `json:"ok"`
	Failed     int            `json:"failed"`
	FirstError string         `json:"first_error,omitempty"`
	Dropped    int            `json:"dropped,omitempty"`
	CloseCodes map[string]int `json:"close_codes,omitempty"`
}

// runConns spreads the connections over worker processes (re-executions of
// this binary), waits until all are established, and samples the server.
func runConns(ctx context.Context, cfg connsConfig, srv *server, logf func(string, ...any)) (*connsResult, error) {
	before, err := srv.Sample()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	nWorkers := (cfg.N + cfg.PerWorker - 1) / cfg.PerWorker
	res := &connsResult{Scenario: "conns", Requested: cfg.N, Workers: nWorkers, Subscribed: cfg.Subscribe, ServerRSSBefore: before.RSSKiB}
	logf("conns: server RSS before %d KiB; opening %d connections from %d worker processes", before.RSSKiB, cfg.N, nWorkers)

	type worker struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan workerReport
		done  chan struct{}
	}
	workers := make([]*worker, nWorkers)
	defer func() {
		// Tell every worker to close its connections, then wait; kill after 20 s.
		for _, w := range workers {
			if w != nil {
				w.stdin.Close()
				go func() {
					for range w.lines { // unblock the line reader on early returns
					}
				}()
			}
		}
		for _, w := range workers {
			if w == nil {
				continue
			}
			select {
			case <-w.done:
			case <-time.After(20 * time.Second):
				_ = w.cmd.Process.Kill()
				<-w.done
			}
		}
	}()
	start := time.Now()
	for i := range workers {
		n := min(cfg.PerWorker, cfg.N-i*cfg.PerWorker)
		cmd := exec.Command(self,
			"-ws", srv.WSURL, "-n", strconv.Itoa(n), "-worker", strconv.Itoa(i+1),
			"-dial-concurrency", strconv.Itoa(cfg.DialConc), "-per-source-addr", strconv.Itoa(cfg.PerAddr),
			"-subscribe="+strconv.FormatBool(cfg.Subscribe), "-service", cfg.Service)
		cmd.Env = append(os.Environ(), workerEnv+"=conns")
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting worker %d: %w", i+1, err)
		}
		w := &worker{cmd: cmd, stdin: stdin, lines: make(chan workerReport, 16), done: make(chan struct{})}
		workers[i] = w
		go func() {
			defer close(w.done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var rep workerReport
				if json.Unmarshal(sc.Bytes(), &rep) == nil {
					w.lines <- rep
				}
			}
			close(w.lines)
			_ = cmd.Wait()
		}()
	}

	// Wait for every worker's "established" report.
	got := make([]workerReport, nWorkers)
	for i, w := range workers {
		for rep := range w.lines {
			if rep.Phase == "progress" {
				logf("conns: worker %d: %d established, %d failed", i+1, rep.OK, rep.Failed)
				continue
			}
			got[i] = rep
			break
		}
		if got[i].Phase != "established" {
			return nil, fmt.Errorf("worker %d ended before reporting its connections", i+1)
		}
	}
	res.ConnectS = time.Since(start).Seconds()
	for _, rep := range got {
		res.Established += rep.OK
		res.Failed += rep.Failed
		if res.FirstError == "" {
			res.FirstError = rep.FirstError
		}
	}
	logf("conns: %d established, %d failed in %.1fs; settling %v", res.Established, res.Failed, res.ConnectS, cfg.Settle)
	settled, err := srv.Sample()
	if err != nil {
		return nil, err
	}
	idleFrom := time.Now()
	select {
	case <-time.After(cfg.Settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after, err := srv.Sample()
	if err != nil {
		return nil, fmt.Errorf("sampling the server with the connections open: %w", err)
	}
	res.ServerRSSAfter, res.ServerHWM, res.ServerThreads = after.RSSKiB, after.HWMKiB, after.Threads
	res.ServerCPUS = (settled.CPU - before.CPU).Seconds()
	if res.IdleS = time.Since(idleFrom).Seconds(); res.IdleS > 0 {
		res.ServerIdleCores = (after.CPU - settled.CPU).Seconds() / res.IdleS
	}
	if res.Established > 0 {
		res.KiBPerConn = float64(after.RSSKiB-before.RSSKiB) / float64(res.Established)
	}
	if n, err := countFDs(srv.PID); err == nil {
		res.ServerFDs = n
	}

	// Close: the workers report connections the server dropped while held.
	for _, w := range workers {
		w.stdin.Close()
	}
	codes := map[string]int{}
	for _, w := range workers {
		for rep := range w.lines {
			if rep.Phase == "exit" {
				res.DroppedDuring += rep.Dropped
				for k, v := range rep.CloseCodes {
					codes[k] += v
				}
			}
		}
	}
	if len(codes) > 0 {
		res.CloseCodes = codes
	}
	return res, nil
}

// runConnsWorker is the worker process: open n connections, report, hold them
// until stdin closes, report how many the server dropped meanwhile, exit.
func runConnsWorker(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("conns-worker", flag.ContinueOnError)
	wsURL := fs.String("ws", "", "")
	n := fs.Int("n", 0, "")
	id := fs.Int("worker", 1, "")
	conc := fs.Int("dial-concurrency", 32, "")
	perAddr := fs.Int("per-source-addr", 5000, "")
	subscribe := fs.Bool("subscribe", false, "")
	service := fs.String("service", "pubsub", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	d := &wsDialer{url: *wsURL, src: newSourceAddrs(*id, *perAddr), readBuf: 512, writeBuf: 512, timeout: 15 * time.Second}

	var (
		mu       sync.Mutex
		conns    []*websocket.Conn
		failed   int
		firstErr string
		readers  sync.WaitGroup
		dropped  atomic.Int64
		codes    = map[string]int{}
		closing  atomic.Bool
		progress atomic.Int64
	)
	g := new(errgroup.Group)
	g.SetLimit(*conc)
	for i := range *n {
		g.Go(func() error {
			c, err := d.dial(ctx, i)
			if err == nil && *subscribe {
				ch := fmt.Sprintf("w%d-%d", *id, i)
				if _, err = call(c, 15*time.Second, *service, "subscribe", map[string]any{"channel": ch}, 1); err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == "" {
					firstErr = err.Error()
				}
				return nil
			}
			conns = append(conns, c)
			readers.Add(1)
			go func() {
				defer readers.Done()
				// Reading answers the server's pings; an idle client gets nothing else.
				for {
					if _, _, err := c.NextReader(); err != nil {
						if !closing.Load() {
							dropped.Add(1)
							mu.Lock()
							codes[strconv.Itoa(closeCode(err))]++
							mu.Unlock()
						}
						return
					}
				}
			}()
			if k := progress.Add(1); k%2000 == 0 {
				_ = enc.Encode(workerReport{Phase: "progress", OK: int(k), Failed: failed})
			}
			return nil
		})
	}
	_ = g.Wait()
	mu.Lock()
	err := enc.Encode(workerReport{Phase: "established", OK: len(conns), Failed: failed, FirstError: firstErr})
	mu.Unlock()
	if err != nil {
		return err
	}

	// Hold until the parent closes stdin (or the worker is told to stop).
	held := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(held)
	}()
	select {
	case <-held:
	case <-ctx.Done():
	}
	closing.Store(true)
	mu.Lock()
	rep := workerReport{Phase: "exit", OK: len(conns), Dropped: int(dropped.Load())}
	if len(codes) > 0 {
		rep.CloseCodes = codes
	}
	mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	return enc.Encode(rep)
}
