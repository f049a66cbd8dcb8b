// Package migrations owns the snorky schema in the user's database: numbered
// SQL files (NNNN_name.up.sql / NNNN_name.down.sql), embedded in the binary
// and applied by one function shared by `snorky migrate`, `snorky serve`
// (database.migrate: true) and the tests.
//
// What was applied is recorded in snorky.schema_migrations. A run holds a
// session advisory lock, so two servers starting together apply each
// migration once; each migration runs in its own transaction.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
)

//go:embed *.sql
var files embed.FS

// lockKey is the advisory lock that serialises migration runs ("snorky" in
// ASCII).
const lockKey int64 = 0x736e6f726b79

// Migration is one numbered step.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

var fileRE = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$`)

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, err
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations: %s is not named NNNN_name.up.sql or NNNN_name.down.sql", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		body, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		mig := byVersion[v]
		if mig == nil {
			mig = &Migration{Version: v, Name: m[2]}
			byVersion[v] = mig
		}
		if m[3] == "up" {
			mig.Up = string(body)
		} else {
			mig.Down = string(body)
		}
	}
	var out []Migration
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("migrations: %04d_%s needs both an up and a down file", m.Version, m.Name)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Applied returns the versions recorded as applied.
func Applied(ctx context.Context, conn *pgx.Conn) ([]int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('snorky.schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `SELECT version FROM snorky.schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// Up applies every migration not yet applied, in order. It returns the
// versions it applied.
func Up(ctx context.Context, conn *pgx.Conn) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var done []int
	err = locked(ctx, conn, func() error {
		if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS snorky;
			CREATE TABLE IF NOT EXISTS snorky.schema_migrations (
				version    integer PRIMARY KEY,
				name       text NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("creating snorky.schema_migrations: %w", explain(err))
		}
		applied, err := Applied(ctx, conn)
		if err != nil {
			return err
		}
		have := map[int]bool{}
		for _, v := range applied {
			have[v] = true
		}
		for _, m := range all {
			if have[m.Version] {
				continue
			}
			if err := inTx(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, m.Up); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO snorky.schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
				return err
			}); err != nil {
				return fmt.Errorf("applying migration %04d_%s: %w", m.Version, m.Name, explain(err))
			}
			done = append(done, m.Version)
		}
		return nil
	})
	return done, err
}

// Down reverts the n most recently applied migrations, newest first. It
// returns the versions it reverted.
func Down(ctx context.Context, conn *pgx.Conn, n int) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	byVersion := map[int]Migration{}
	for _, m := range all {
		byVersion[m.Version] = m
	}
	var done []int
	err = locked(ctx, conn, func() error {
		applied, err := Applied(ctx, conn)
		if err != nil {
			return err
		}
		for i := len(applied) - 1; i >= 0 && len(done) < n; i-- {
			m, ok := byVersion[applied[i]]
			if !ok {
				return fmt.Errorf("migration %04d is applied but unknown to this binary; revert it with the binary that applied it", applied[i])
			}
			if err := inTx(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, m.Down); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `DELETE FROM snorky.schema_migrations WHERE version = $1`, m.Version)
				return err
			}); err != nil {
				return fmt.Errorf("reverting migration %04d_%s: %w", m.Version, m.Name, explain(err))
			}
			done = append(done, m.Version)
		}
		return nil
	})
	return done, err
}

func locked(ctx context.Context, conn *pgx.Conn, f func() error) error {
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey)
	return f()
}

func inTx(ctx context.Context, conn *pgx.Conn, f func(pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	return tx.Commit(ctx)
}
