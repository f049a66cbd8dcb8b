package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgCluster is a throwaway PostgreSQL cluster for the cdc scenario: initdb
// into a temporary directory, a postmaster on a free loopback port with
// logical decoding enabled and fsync off, removed on Stop. Every PostgreSQL
// program runs as the postgres user when the runner is root (PostgreSQL
// refuses to run as root): the runner sets the child's credentials itself,
// as runuser would, so that the parent-death signal still reaches the
// postmaster if the runner is killed.
type pgCluster struct {
	URL  string // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
	Port int
	bin  string
	dir  string
	data string
	cred *syscall.Credential

	cmd    *exec.Cmd
	exited chan struct{}
}

// findPGBin returns dir if set, else the bin directory of the newest
// PostgreSQL under /usr/lib/postgresql, else the directory of postgres on
// PATH.
func findPGBin(dir string) (string, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
			return "", fmt.Errorf("--pg-bin: %w", err)
		}
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(matches, func(i, j int) bool { return pgVersionOf(matches[i]) > pgVersionOf(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL binaries in /usr/lib/postgresql/*/bin or on PATH (use --pg-bin or --database-url)")
}

// pgVersionOf returns the major version in a path like
// /usr/lib/postgresql/15/bin/postgres, or 0.
func pgVersionOf(path string) int {
	for _, part := range strings.Split(path, string(filepath.Separator)) {
		if v, err := strconv.Atoi(part); err == nil {
			return v
		}
	}
	return 0
}

// startPGCluster creates and starts the cluster and waits until it accepts
// connections.
func startPGCluster(ctx context.Context, binDir string, logf func(string, ...any)) (*pgCluster, error) {
	bin, err := findPGBin(binDir)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "snorky-bench-pg-")
	if err != nil {
		return nil, err
	}
	c := &pgCluster{bin: bin, dir: dir, data: filepath.Join(dir, "data")}
	ok := false
	defer func() {
		if !ok {
			c.Stop(logf)
		}
	}()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(dir, "postgres.log")
	if out, err := c.command(ctx, "initdb", "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, tail(out, 1500))
	}
	if c.Port, err = freePort(); err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	if c.cred != nil {
		_ = logFile.Chown(int(c.cred.Uid), int(c.cred.Gid))
	}
	c.cmd = c.command(context.Background(), "postgres", "-D", c.data, "-p", strconv.Itoa(c.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "wal_level=logical",
		"-c", "max_replication_slots=10",
		"-c", "max_wal_senders=10",
		"-c", "fsync=off",
		"-c", "max_wal_size=4GB",
		"-c", "shared_buffers=256MB")
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	// Immediate shutdown if the runner dies.
	c.cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	c.exited = make(chan struct{})
	go func() {
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	logf("postgres: pid %d, %s, data %s", c.cmd.Process.Pid, c.URL, c.data)

	deadline := time.Now().Add(60 * time.Second)
	for {
		err := c.command(ctx, "pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port)).Run()
		if err == nil {
			break
		}
		select {
		case <-c.exited:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited during start-up: %s", tail(b, 1500))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.New("postgres not ready after 60s")
		}
	}
	ok = true
	return c, nil
}

// command prepares a PostgreSQL program of the cluster's bin directory,
// run as the postgres user when the runner is root.
func (c *pgCluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// Stop shuts the postmaster down (pg_ctl -m fast, SIGQUIT after 30 s) and
// removes the directory.
func (c *pgCluster) Stop(logf func(string, ...any)) {
	if c.cmd != nil && c.exited != nil {
		select {
		case <-c.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if out, err := c.command(ctx, "pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
				logf("warning: pg_ctl stop: %v: %s", err, tail(out, 500))
			}
			cancel()
			select {
			case <-c.exited:
			case <-time.After(30 * time.Second):
				_ = c.cmd.Process.Signal(syscall.SIGQUIT)
				<-c.exited
			}
		}
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
		c.dir = ""
	}
}

// tail returns the last n bytes of b as a string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
