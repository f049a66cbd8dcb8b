package main

import (
	"context"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

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
	if ownProcess {
		setMemoryLimit(cfg, environ, log)
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
	return s.Run(ctx)
}

// setMemoryLimit gives Go's garbage collector a soft memory limit (unless
// GOMEMLIMIT is set): the larger of the replay window and the largest
// transaction (a large transaction is held in the window, so the two
// overlap), plus 40 MiB for the server itself, so that with the binary and
// the memory outside Go's heap the process stays within 64 MiB of them.
// Without it, a 50 MB transaction can briefly take the heap to twice its
// live size before a collection. The limit is soft: past it the collector
// works harder, it never fails an allocation.
func setMemoryLimit(cfg *config.Config, environ []string, log *slog.Logger) {
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOMEMLIMIT=") {
			return
		}
	}
	limit := int64(40 << 20)
	if d := cfg.Database; d != nil {
		limit += max(int64(d.History.MaxBytes), int64(d.MaxTxBytes))
	} else {
		limit += 64 << 20
	}
	debug.SetMemoryLimit(limit)
	log.Debug("memory limit set", "bytes", limit)
}
