package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// collector is a Sink that records what it takes; while gate is non-nil
// and open, Apply blocks until a value is sent on it.
type collector struct {
	mu   sync.Mutex
	txns []*Txn
	gate chan struct{}
}

func (c *collector) Apply(txn *Txn) error {
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.txns = append(c.txns, txn)
	return nil
}

func (c *collector) snapshot() []*Txn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Txn(nil), c.txns...)
}

func (c *collector) changes() []Change {
	var out []Change
	for _, t := range c.snapshot() {
		out = append(out, t.Changes...)
	}
	return out
}

// eventually polls cond until it holds or the bound passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func execSQL(t *testing.T, url string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func queryString(t *testing.T, url, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func randomSlot() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t_" + hex.EncodeToString(b[:])
}

func testConfig(url string, tables ...string) Config {
	cfg := Config{URL: url, Slot: randomSlot(), Publication: "snorky_test", StatusInterval: 100 * time.Millisecond, ReceiveTimeout: 10 * time.Second, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	for _, tb := range tables {
		cfg.Tables = append(cfg.Tables, TableConfig{Name: tb})
	}
	return cfg
}

// startReader runs a reader until the test ends and waits until it streams.
func startReader(t *testing.T, cfg Config, sink Sink) *Reader {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := NewReader(cfg, sink, log, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	eventually(t, 30*time.Second, "reader ready", func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return r.Ready()
	})
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// rowJSON returns the columns as a JSON object text.
func rowJSON(cols []Column) string {
	b := []byte{'{'}
	for i, c := range cols {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, []byte(c.Name))
		b = append(b, ':')
		b = append(b, c.Value...)
	}
	return string(append(b, '}'))
}
