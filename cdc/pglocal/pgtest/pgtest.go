// Package pgtest gives tests a throwaway PostgreSQL (cdc/pglocal): one
// server shared by a test binary, a fresh database per test, or a server of
// their own. Only tests import it, so the server binary does not link the
// testing package.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that points the tests at an
// existing PostgreSQL server (a URL whose user may create databases and
// replication slots) instead of a throwaway one.
const EnvURL = "SNORKY_TEST_DATABASE_URL"

var shared struct {
	mu     sync.Mutex
	server *pglocal.Server
	err    error
}

// Main runs the tests of a package and then stops the shared server (if one
// was started). Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Without it the shared server still dies with the test binary (parent-death
// signal) and its directory is swept by the next Start.
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// StopShared stops the shared server, if any.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server != nil {
		_ = shared.server.Stop()
		shared.server = nil
	}
}

// Shared returns the server shared by all tests of the test binary,
// starting it on first use (default pglocal.Options). It ignores EnvURL: use it only
// for tests that need the *pglocal.Server itself; others should use AdminURL or
// NewDatabase.
func Shared(tb testing.TB) *pglocal.Server {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.server == nil && shared.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.server, shared.err = pglocal.Start(ctx, pglocal.Options{})
	}
	if shared.err != nil {
		tb.Fatalf("starting the shared PostgreSQL: %v", shared.err)
	}
	return shared.server
}

// StartTB starts a server of the test's own (for tests that restart, stop
// or reconfigure it) and stops it in tb.Cleanup.
func StartTB(tb testing.TB, opts pglocal.Options) *pglocal.Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := pglocal.Start(ctx, opts)
	if err != nil {
		tb.Fatalf("starting PostgreSQL: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stopping PostgreSQL: %v", err)
		}
	})
	return s
}

// AdminURL is the URL of a database on the test server with which to create
// databases: EnvURL when set, else the shared server's "postgres" database.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return Shared(tb).URL("postgres")
}

// NewDatabase creates a fresh database on the test server (see AdminURL) and
// returns its URL. tb.Cleanup drops the database and every replication slot
// in it.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return NewDatabaseAt(tb, AdminURL(tb))
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabaseAt is NewDatabase on the server of adminURL.
func NewDatabaseAt(tb testing.TB, adminURL string) string {
	tb.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	base := unsafeChars.ReplaceAllString(strings.ToLower(tb.Name()), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := "t_" + base + "_" + hex.EncodeToString(rnd[:])

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("connecting to the test server: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("creating database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := DropDatabase(context.Background(), adminURL, name); err != nil {
			tb.Errorf("dropping test database: %v", err)
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		tb.Fatalf("parsing %s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// DropDatabase drops database name on the server of adminURL, first dropping
// its replication slots (a leaked slot pins WAL) and ending its sessions.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(ctx)
	// A walsender may take a moment to release its slot after terminate.
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, `
			SELECT pg_terminate_backend(active_pid, 5000)
			FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			_, err = conn.Exec(ctx, `
				SELECT pg_drop_replication_slot(slot_name)
				FROM pg_replication_slots WHERE database = $1`, name)
		}
		if err == nil || attempt >= 50 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("dropping slots of %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %s: %w", name, err)
	}
	return nil
}
