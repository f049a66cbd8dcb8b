// Package pglocal starts a throwaway PostgreSQL server from the locally
// installed binaries, for tests, `snorky demo` and benchmarks.
//
// A Server lives in a fresh temporary directory (data directory, Unix socket
// and log), listens on a free port of 127.0.0.1 with trust authentication,
// and runs with wal_level=logical unless told otherwise. When the calling
// process is root the directory is handed to the "postgres" user and every
// PostgreSQL binary runs as that user.
//
// The postmaster is a direct child of the calling process with a parent-death
// signal (SIGQUIT, PostgreSQL's immediate shutdown), so it never outlives the
// process that started it, even when that process is killed. Directories left
// behind by such a process are removed by the next Start.
package pglocal

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Options configure Start. The zero value is a fast, logical-replication
// capable server.
type Options struct {
	// BinDir holds initdb and postgres. Empty: found on PATH or, failing
	// that, the highest version under /usr/lib/postgresql/*/bin.
	BinDir string
	// WALLevel is the wal_level setting. Empty: "logical".
	WALLevel string
	// Fsync turns fsync on (crash tests that kill the server need it).
	// Default off, for speed.
	Fsync bool
	// Settings are extra postgresql.conf settings (name → value as written
	// in postgresql.conf, unquoted: Start quotes it), e.g.
	// {"DateStyle": "SQL, DMY"}. They override the defaults of Start.
	Settings map[string]string
	// InitdbArgs are extra initdb arguments, e.g. "--wal-segsize=1".
	InitdbArgs []string
	// Stopped leaves the server initialised but not running; call Up.
	Stopped bool
	// StartTimeout bounds one start of the postmaster. Zero: 60s.
	StartTimeout time.Duration
	// Log receives progress messages. Nil: discarded.
	Log *slog.Logger
}

// ShutdownMode is how the postmaster is asked to stop (pg_ctl -m).
type ShutdownMode int

// The shutdown modes of pg_ctl.
const (
	// Fast disconnects clients and shuts down cleanly (SIGINT).
	Fast ShutdownMode = iota
	// Smart waits for clients to disconnect (SIGTERM).
	Smart
	// Immediate aborts without a shutdown checkpoint, as a crash would;
	// the next start runs recovery (SIGQUIT).
	Immediate
)

func (m ShutdownMode) signal() syscall.Signal {
	switch m {
	case Smart:
		return syscall.SIGTERM
	case Immediate:
		return syscall.SIGQUIT
	}
	return syscall.SIGINT
}

func (m ShutdownMode) String() string {
	switch m {
	case Smart:
		return "smart"
	case Immediate:
		return "immediate"
	}
	return "fast"
}

const dirPrefix = "snorky-pglocal-"

// Server is a throwaway PostgreSQL server. Its methods are safe for
// concurrent use.
type Server struct {
	binDir  string
	dir     string
	dataDir string
	port    int
	cred    *syscall.Credential
	log     *slog.Logger
	timeout time.Duration

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// Start initialises a new cluster in a temporary directory and, unless
// opts.Stopped, starts it and waits until it accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	sweepStale()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pglocal: creating directory: %w", err)
	}
	s := &Server{
		binDir:  binDir,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		cred:    cred,
		log:     log,
		timeout: opts.StartTimeout,
		stopped: true,
	}
	if s.timeout <= 0 {
		s.timeout = 60 * time.Second
	}
	fail := func(err error) (*Server, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(fmt.Errorf("pglocal: %w", err))
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("pglocal: handing %s to postgres: %w", dir, err))
		}
	}
	if s.port, err = FreePort(); err != nil {
		return fail(err)
	}
	args := append([]string{"-D", s.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"}, opts.InitdbArgs...)
	init := s.command(ctx, "initdb", args...)
	if out, err := init.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pglocal: initdb: %w\n%s", err, out))
	}
	if err := s.writeConf(opts); err != nil {
		return fail(err)
	}
	log.Debug("pglocal: initialised", "dir", dir, "port", s.port, "bin", binDir)
	if !opts.Stopped {
		if err := s.Up(ctx); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// settings returns the postgresql.conf lines of the server.
func (s *Server) writeConf(opts Options) error {
	set := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(s.port),
		"unix_socket_directories": s.dir,
		"wal_level":               "logical",
		"max_replication_slots":   "64",
		"max_wal_senders":         "64",
		"max_connections":         "200",
		"fsync":                   "off",
		"full_page_writes":        "off",
		"shared_buffers":          "32MB",
		"logging_collector":       "off",
		"log_min_messages":        "warning",
		"TimeZone":                "UTC",
	}
	if opts.WALLevel != "" {
		set["wal_level"] = opts.WALLevel
	}
	if opts.Fsync {
		set["fsync"] = "on"
		set["full_page_writes"] = "on"
	}
	for k, v := range opts.Settings {
		set[k] = v
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("\n# pglocal\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(set[k], "'", "''"))
	}
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("pglocal: writing postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pglocal: writing postgresql.conf: %w", err)
	}
	// Loopback trust for TCP too (initdb -A trust covers host lines, but be
	// explicit for replication connections).
	hba := "local all all trust\nlocal replication all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(s.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("pglocal: writing pg_hba.conf: %w", err)
	}
	if s.cred != nil {
		_ = os.Chown(filepath.Join(s.dataDir, "pg_hba.conf"), int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

// command prepares a PostgreSQL binary to run as the postgres user when we
// are root.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// Up starts the postmaster of a stopped server and waits until it accepts
// connections. It is a no-op on a running server.
func (s *Server) Up(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		return nil
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	// Not CommandContext: the server must outlive ctx.
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), "-D", s.dataDir)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=")
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		Pdeathsig:  syscall.SIGQUIT,
		Setpgid:    true,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pglocal: starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited, s.stopped = cmd, exited, false

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	for {
		if err := s.ping(ctx); err == nil {
			s.log.Debug("pglocal: accepting connections", "port", s.port)
			return nil
		}
		select {
		case <-exited:
			s.stopped = true
			return fmt.Errorf("pglocal: postgres exited during start-up:\n%s", s.logTail())
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			<-exited
			s.stopped = true
			return fmt.Errorf("pglocal: postgres did not accept connections: %w\n%s", ctx.Err(), s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(pctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	return conn.Close(pctx)
}

// Down stops the postmaster with the given mode and waits for it to exit. The
// data directory is kept: Up starts the server again. It is a no-op on a
// stopped server.
func (s *Server) Down(mode ShutdownMode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downLocked(mode.signal())
}

// Kill stops the postmaster and its backends with SIGKILL, as a machine
// crash would; the next Up runs crash recovery.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downLocked(syscall.SIGKILL)
}

func (s *Server) downLocked(sig syscall.Signal) error {
	if s.stopped {
		return nil
	}
	var children []int
	if sig == syscall.SIGKILL {
		children = childrenOf(s.cmd.Process.Pid)
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pglocal: signalling postgres: %w", err)
	}
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.stopped = true
	if sig == syscall.SIGKILL {
		// The whole machine "crashed": kill the orphaned backends too and
		// wait for them, so the next start does not find the shared memory
		// still attached.
		for _, pid := range children {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, pid := range children {
			for running(pid) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return nil
}

// Restart stops the postmaster with mode and starts it again (pg_ctl restart -m mode).
func (s *Server) Restart(ctx context.Context, mode ShutdownMode) error {
	if err := s.Down(mode); err != nil {
		return err
	}
	return s.Up(ctx)
}

// Running reports whether the postmaster is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.stopped
}

// Stop shuts the server down (fast) and removes its directory. It is safe to
// call more than once.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.downLocked(syscall.SIGINT)
	if s.dir != "" {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = fmt.Errorf("pglocal: removing %s: %w", s.dir, rerr)
		}
		s.dir = ""
	}
	return err
}

// URL is a connection URL for database dbname as the superuser postgres
// over TCP on 127.0.0.1.
func (s *Server) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port is the TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Dir is the temporary directory: the data directory "data", the Unix socket
// and "postgres.log".
func (s *Server) Dir() string { return s.dir }

// DataDir is the data directory.
func (s *Server) DataDir() string { return s.dataDir }

// BinDir is the directory of the PostgreSQL binaries in use.
func (s *Server) BinDir() string { return s.binDir }

// LogTail returns the last lines of the server log, for test failures.
func (s *Server) LogTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logTail()
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// FindBinDir finds the directory holding the PostgreSQL server binaries:
// the directory of "postgres" on PATH, or else the highest version under
// /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("postgres"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestVer := "", -1.0
	for _, m := range matches {
		ver, err := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(m))), 64)
		if err != nil {
			continue
		}
		if ver > bestVer {
			best, bestVer = filepath.Dir(m), ver
		}
	}
	if best == "" {
		return "", errors.New("pglocal: PostgreSQL server binaries not found on PATH or under /usr/lib/postgresql/*/bin (install postgresql)")
	}
	return best, nil
}

// credential returns the postgres user's credential when we are root (the
// server refuses to run as root), else nil.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pglocal: running as root needs a postgres user: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pglocal: bad uid/gid of postgres: %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// sweepStale removes directories left by processes that no longer exist
// (their postmasters died with them through the parent-death signal).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if pm := postmasterPID(filepath.Join(d, "data", "postmaster.pid")); pm > 0 && alive(pm) {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func postmasterPID(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 64)).ReadString('\n')
	if err != nil && line == "" {
		return 0
	}
	pid, _ := strconv.Atoi(string(bytes.TrimSpace([]byte(line))))
	return pid
}

// childrenOf lists the processes whose parent is pid (Linux /proc).
func childrenOf(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(st))); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
