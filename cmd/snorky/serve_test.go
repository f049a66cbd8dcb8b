package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"testing"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
)

// The soft memory limit holds the window (or the largest transaction) and
// grows with the open WebSockets, so that many idle connections do not keep
// the collector running.
func TestMemoryLimit(t *testing.T) {
	db := &config.Config{Database: &config.DatabaseConfig{}}
	db.Database.History.MaxBytes = 32 << 20
	db.Database.MaxTxBytes = 64 << 20
	if got, want := memoryLimit(db, 0), int64(40<<20+64<<20); got != want {
		t.Errorf("with a database: got %d, want %d (40 MiB + the larger of window and transaction)", got, want)
	}
	if got, want := memoryLimit(&config.Config{}, 10000), int64(40<<20+64<<20+10000*perConnMemory); got != want {
		t.Errorf("without a database, 10,000 connections: got %d, want %d", got, want)
	}

	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	var conns atomic.Int64
	conns.Store(1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		followConnections(ctx, db, func() int { return int(conns.Load()) }, slog.New(slog.DiscardHandler))
	}()
	eventually(t, "the limit for 1,000 connections", func() bool { return debug.SetMemoryLimit(-1) == memoryLimit(db, 1000) })
	conns.Store(20)
	eventually(t, "the limit for 20 connections", func() bool { return debug.SetMemoryLimit(-1) == memoryLimit(db, 20) })
	cancel()
	<-done // before the cleanup restores the limit
}
