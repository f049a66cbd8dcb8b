package cdc

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	neturl "net/url"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestCheckUses(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url,
		`CREATE TABLE keyed (id int PRIMARY KEY, title text)`,
		`CREATE TABLE keyless (id int, v text)`,
		`CREATE TABLE bare (v text)`,
	)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	tests := []struct {
		name string
		uses []Use
		want []string // substrings, each in some problem; none: no problems
	}{
		{"columns exist", []Use{{Key: "models.a.columns", Table: "keyed", Columns: []string{"id", "title"}}, {Key: "models.a.key", Table: "public.keyed", NeedsPrimaryKey: true}}, nil},
		{"missing column", []Use{{Key: "models.a.columns", Table: "keyed", Columns: []string{"titel"}}},
			[]string{`models.a.columns: column "titel" does not exist in keyed`, "use one of: id, title"}},
		{"no primary key, id column", []Use{{Key: "models.b.key", Table: "keyless", NeedsPrimaryKey: true}},
			[]string{"models.b.key: table public.keyless has no primary key", `ALTER TABLE "public"."keyless" ADD PRIMARY KEY (id)`, "set models.b.key: [id]"}},
		{"no primary key, no id", []Use{{Key: "models.c.key", Table: "bare", NeedsPrimaryKey: true}},
			[]string{"ADD PRIMARY KEY (COLUMN)"}},
		{"key configured", []Use{{Key: "models.b.key", Table: "keyless", Columns: []string{"id"}}}, nil},
		{"absent table left to the table checks", []Use{{Key: "models.d.columns", Table: "nowhere", Columns: []string{"x"}, NeedsPrimaryKey: true}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := CheckUses(ctx, conn, tc.uses)
			text := problemsText(ps)
			if len(tc.want) == 0 && len(ps) > 0 {
				t.Fatalf("got problems:\n%s\nwant none", text)
			}
			if len(tc.want) > 0 && len(ps) == 0 {
				t.Fatalf("got no problems, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("got problems:\n%s\nwant one containing %q", text, w)
				}
			}
		})
	}

	// Check reports the uses' problems with everything else.
	cfg := Config{URL: url, Slot: randomSlot(), Tables: []TableConfig{{Name: "keyed"}}}
	text := problemsText(Check(ctx, cfg, Use{Key: "dealers.x.key", Table: "keyed", Columns: []string{"owner"}}))
	if !strings.Contains(text, `dealers.x.key: column "owner" does not exist`) {
		t.Errorf("Check: got problems:\n%s\nwant the dealer's missing column", text)
	}
}

func TestWarningsForgery(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	if w := Warnings(ctx, Config{URL: url}); len(w) != 0 {
		t.Fatalf("without the snorky schema: got %q, want no warning", w)
	}
	execSQL(t, url,
		`CREATE SCHEMA snorky`,
		`CREATE FUNCTION snorky.publish(a jsonb, b jsonb) RETURNS void LANGUAGE sql AS 'SELECT'`)
	w := Warnings(ctx, Config{URL: url})
	if len(w) != 1 || !strings.Contains(w[0], "REVOKE EXECUTE ON FUNCTION pg_logical_emit_message") {
		t.Fatalf("with snorky.publish and PUBLIC EXECUTE: got %q, want the forgery warning with its fix", w)
	}
}

// The session hook runs on every session; an error that is not a
// prerequisite is retried with backoff, and a prerequisite stops Run.
func TestOnSession(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE tasks (id int PRIMARY KEY)`)

	t.Run("retried then streaming", func(t *testing.T) {
		var calls atomic.Int32
		r := NewReader(testConfig(url, "tasks"), &collector{}, slog.New(slog.DiscardHandler), nil)
		r.OnSession(func(ctx context.Context, conn *pgx.Conn) error {
			if calls.Add(1) < 3 {
				return errors.New("not yet")
			}
			var one int
			return conn.QueryRow(ctx, `SELECT 1`).Scan(&one)
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		eventually(t, 30*time.Second, "reader ready after two refused sessions", r.Ready)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if n := calls.Load(); n != 3 {
			t.Errorf("hook ran %d times, want 3", n)
		}
	})

	t.Run("prerequisite stops", func(t *testing.T) {
		r := NewReader(testConfig(url, "tasks"), &collector{}, slog.New(slog.DiscardHandler), nil)
		r.OnSession(func(context.Context, *pgx.Conn) error {
			return prerequisite("models.x.key: no key")
		})
		done := make(chan error, 1)
		go func() { done <- r.Run(context.Background()) }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), "models.x.key: no key") {
				t.Fatalf("Run: got %v, want the hook's ErrPrerequisite", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("Run did not stop on the hook's prerequisite error")
		}
	})
}

// A database that does not exist cannot appear by retrying: Run stops with
// the fix.
func TestRunMissingDatabase(t *testing.T) {
	cfg := testConfig(withDatabase(t, pgtest.AdminURL(t), "no_such_database_snorky"), "tasks")
	done := make(chan error, 1)
	go func() { done <- NewReader(cfg, &collector{}, nil, nil).Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), "CREATE DATABASE") {
			t.Fatalf("Run: got %v, want ErrPrerequisite with CREATE DATABASE", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run kept retrying a database that does not exist")
	}
}

// withDatabase returns raw with its database replaced by name.
func withDatabase(t *testing.T, raw, name string) string {
	t.Helper()
	u, err := neturl.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
