package pgtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// NewDatabase gives each test a database of its own on the shared server,
// with wal_level logical, dropped when the test ends.
func TestNewDatabase(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("inner", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var level string
		if err := conn.QueryRow(ctx, `SELECT current_database(), current_setting('wal_level')`).Scan(&name, &level); err != nil {
			t.Fatal(err)
		}
		if level != "logical" {
			t.Errorf("wal_level: got %q, want logical", level)
		}
	})
	if name == "" {
		t.Fatal("the inner test did not reach its database")
	}
	conn, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", name)
	}
}
