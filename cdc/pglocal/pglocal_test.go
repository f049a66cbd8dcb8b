package pglocal_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func query(t *testing.T, url, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestSharedLogical(t *testing.T) {
	url := pgtest.NewDatabase(t)
	if got := query(t, url, "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level: got %q, want logical", got)
	}
	if got := query(t, url, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user: got %q, want postgres", got)
	}
}

func TestNewDatabaseCleanup(t *testing.T) {
	admin := pgtest.AdminURL(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		name = query(t, url, "SELECT current_database()")
		query(t, url, "SELECT slot_name::text FROM pg_create_logical_replication_slot('leak_me', 'pgoutput')")
	})
	if got := query(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = '"+name+"'"); got != "0" {
		t.Errorf("databases named %s after cleanup: got %s, want 0", name, got)
	}
	if got := query(t, admin, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'leak_me'"); got != "0" {
		t.Errorf("slots after cleanup: got %s, want 0", got)
	}
}

func TestOptionsAndLifecycle(t *testing.T) {
	s := pgtest.StartTB(t, pglocal.Options{
		WALLevel: "replica",
		Settings: map[string]string{"DateStyle": "SQL, DMY", "TimeZone": "America/New_York"},
	})
	url := s.URL("postgres")
	tests := []struct{ sql, want string }{
		{"SHOW wal_level", "replica"},
		{"SHOW DateStyle", "SQL, DMY"},
		{"SHOW TimeZone", "America/New_York"},
		{"SHOW fsync", "off"},
	}
	for _, tc := range tests {
		if got := query(t, url, tc.sql); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.sql, got, tc.want)
		}
	}

	ctx := context.Background()
	for _, mode := range []pglocal.ShutdownMode{pglocal.Fast, pglocal.Immediate} {
		if err := s.Restart(ctx, mode); err != nil {
			t.Fatalf("restart -m %s: %v", mode, err)
		}
		if got := query(t, url, "SELECT 'up'"); got != "up" {
			t.Errorf("after restart -m %s: got %q, want up", mode, got)
		}
	}
	if err := s.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if s.Running() {
		t.Errorf("Running after Kill: got true, want false")
	}
	if err := s.Up(ctx); err != nil {
		t.Fatalf("start after kill: %v", err)
	}
	if got := query(t, url, "SELECT 'up'"); got != "up" {
		t.Errorf("after kill and start: got %q, want up", got)
	}

	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory after Stop: got err %v, want not exist", err)
	}
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Errorf("connect after Stop: got success, want an error")
	}
}

func TestStartedStopped(t *testing.T) {
	s := pgtest.StartTB(t, pglocal.Options{Stopped: true})
	if s.Running() {
		t.Fatalf("Running: got true, want false")
	}
	if err := s.Up(context.Background()); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if got := query(t, s.URL("postgres"), "SHOW wal_level"); got != "logical" {
		t.Errorf("wal_level: got %q, want logical", got)
	}
}
