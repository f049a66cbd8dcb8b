package main

import (
	"context"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
)

// runServe loads the configuration and runs the server until ctx is done.
// ready, when not nil, receives the server once it listens (demo, tests).
func runServe(ctx context.Context, path string, environ []string, logOut io.Writer, ready func(*snorky.Server)) error {
	cfg, warnings, err := config.Load(path, environ)
	if err != nil {
		return err
	}
	log := snorky.NewLogger(cfg.Log, logOut)
	for _, w := range warnings {
		log.Warn(w)
	}
	for _, w := range cfg.ExposureWarnings() {
		log.Warn(w)
	}
	limitMemory := ownProcess && !hasEnv(environ, "GOMEMLIMIT")
	if limitMemory {
		debug.SetMemoryLimit(memoryLimit(cfg, 0))
	}
	s, err := snorky.New(cfg, log)
	if err != nil {
		return err
	}
	s.Version = versionString()
	if err := s.Listen(); err != nil {
		s.Close()
		return err
	}
	if ready != nil {
		ready(s)
	}
	if limitMemory {
		lctx, stop := context.WithCancel(ctx)
		defer stop()
		go followConnections(lctx, cfg, s.WebSockets().Len, log)
	}
	return s.Run(ctx)
}

// memoryLimit is the soft memory limit Go's garbage collector gets (unless
// GOMEMLIMIT is set): the larger of the replay window and the largest
// transaction (a large transaction is held in the window, so the two
// overlap), plus 40 MiB for the server itself, plus perConnMemory for each
// open WebSocket, so that with the binary and the memory outside Go's heap
// the process stays within 64 MiB of them. Without it, a 50 MB transaction
// can briefly take the heap to twice its live size before a collection. The
// limit is soft: past it the collector works harder, it never fails an
// allocation; the allowance per connection keeps it above what many idle
// connections hold, where a fixed limit made the collector run without
// pause (10,000 connections: 4 to 5 times the CPU per delivery).
func memoryLimit(cfg *config.Config, conns int) int64 {
	limit := int64(40 << 20)
	if d := cfg.Database; d != nil {
		limit += max(int64(d.History.MaxBytes), int64(d.MaxTxBytes))
	} else {
		limit += 64 << 20
	}
	return limit + int64(conns)*perConnMemory
}

// perConnMemory is the soft memory limit's allowance for one open
// WebSocket: its two goroutines' stacks, its buffers and its queue.
const perConnMemory = 64 << 10

// followConnections keeps the soft memory limit in step with the number of
// open WebSockets until ctx is done.
func followConnections(ctx context.Context, cfg *config.Config, conns func() int, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if limit := memoryLimit(cfg, conns()); limit != last {
			debug.SetMemoryLimit(limit)
			if last < 0 {
				log.Debug("memory limit follows the open WebSockets", "bytes", limit)
			}
			last = limit
		}
	}
}

func hasEnv(environ []string, name string) bool {
	for _, kv := range environ {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}
