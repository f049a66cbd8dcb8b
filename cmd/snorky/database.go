package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
	"github.com/snorkyhq/snorky/migrations"
)

// check runs `snorky check`: every prerequisite, each problem with its fix.
func check(ctx context.Context, path string, environ []string, out io.Writer) error {
	cfg, warnings, err := config.Load(path, environ)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(out, "warning:", w)
	}
	if err := validateConfig(cfg); err != nil {
		return err
	}
	for _, w := range cfg.ExposureWarnings() { // hardening.go
		fmt.Fprintln(out, "warning:", w)
	}
	if cfg.Database == nil {
		fmt.Fprintln(out, "ok: no database configured; DataSync is fed by publishDeltas only")
		return nil
	}
	cc, err := cfg.CDCConfig()
	if err != nil {
		return err
	}
	problems := config.RenameProblems(cfg, cdc.Check(ctx, cc))
	if len(problems) == 0 {
		problems = checkColumns(ctx, cfg)
	}
	if len(problems) == 0 {
		if conn, err := pgx.Connect(ctx, cfg.Database.URL); err == nil {
			problems = snorky.KeyProblems(ctx, conn, cfg)
			conn.Close(context.WithoutCancel(ctx))
		}
	}
	if len(problems) == 0 {
		if w := checkForgery(ctx, cfg.Database.URL); w != "" {
			fmt.Fprintln(out, "warning:", w)
		}
	}
	if len(problems) == 0 {
		fmt.Fprintf(out, "ok: wal_level, privileges, slot %q, publication %q and %d tables are ready\n", cc.Slot, cc.Publication, len(cc.Tables))
		return nil
	}
	for _, p := range problems {
		fmt.Fprintf(out, "problem: %s: %s\n  fix: %s\n", p.Key, p.What, p.Fix)
	}
	return fmt.Errorf("%d problem(s) found", len(problems))
}

// checkColumns verifies that every column the configuration names exists:
// each model's key and columns, and each simple dealer's key column.
func checkColumns(ctx context.Context, cfg *config.Config) []cdc.Problem {
	conn, err := pgx.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return []cdc.Problem{{Key: "database.url", What: err.Error(), Fix: "check database.url and that PostgreSQL is running"}}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var problems []cdc.Problem
	cols := map[string]map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Models)) {
		m := cfg.Models[name]
		if m.Table == "" {
			continue
		}
		schema, table, _ := cdc.SplitTableName(m.Table)
		rows, err := conn.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND attnum > 0 AND NOT attisdropped`, schema, table)
		if err != nil {
			problems = append(problems, cdc.Problem{Key: "models." + name + ".table", What: err.Error(), Fix: "create the table or correct the name"})
			continue
		}
		names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		set := map[string]bool{}
		for _, n := range names {
			set[n] = true
		}
		cols[name] = set
		for _, list := range []struct {
			key  string
			cols []string
		}{{"models." + name + ".key", m.Key}, {"models." + name + ".columns", m.Columns}} {
			for _, c := range list.cols {
				if !set[c] {
					problems = append(problems, cdc.Problem{Key: list.key, What: fmt.Sprintf("column %q does not exist in %s", c, m.Table), Fix: "use one of: " + strings.Join(names, ", ")})
				}
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Dealers)) {
		d := cfg.Dealers[name]
		set, ok := cols[d.Model]
		if !ok || d.Key == "" {
			continue
		}
		col, _, _ := strings.Cut(d.Key, ".")
		if !set[col] {
			problems = append(problems, cdc.Problem{Key: "dealers." + name + ".key", What: fmt.Sprintf("column %q does not exist in the table of model %s", col, d.Model), Fix: "name an existing column"})
		}
	}
	return problems
}

// migrateCommand runs `snorky migrate`.
func migrateCommand(ctx context.Context, path string, environ []string, down int, out io.Writer) error {
	cfg, _, err := config.Load(path, environ)
	if err != nil {
		return err
	}
	if cfg.Database == nil || cfg.Database.URL == "" {
		return errors.New("database.url: required to migrate")
	}
	conn, err := pgx.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("database.url: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var done []int
	if down > 0 {
		done, err = migrations.Down(ctx, conn, down)
	} else {
		done, err = migrations.Up(ctx, conn)
	}
	if err != nil {
		return err
	}
	verb := "applied"
	if down > 0 {
		verb = "reverted"
	}
	if len(done) == 0 {
		fmt.Fprintf(out, "nothing to do\n")
		return nil
	}
	fmt.Fprintf(out, "%s migrations %v\n", verb, done)
	return nil
}

// checkForgery warns when the snorky schema is installed and every role may
// call pg_logical_emit_message: then any role that can connect can forge
// what snorky.publish sends (PostgreSQL 15 grants it to PUBLIC).
func checkForgery(ctx context.Context, url string) string {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return ""
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var installed, public bool
	err = conn.QueryRow(ctx, `SELECT to_regprocedure('snorky.publish(jsonb,jsonb)') IS NOT NULL,
		has_function_privilege('public', 'pg_logical_emit_message(boolean,text,text)', 'EXECUTE')`).Scan(&installed, &public)
	if err != nil || !installed || !public {
		return ""
	}
	return "every role may call pg_logical_emit_message, so any role that can connect can forge a message of snorky.publish; " +
		"as a superuser run: REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text), pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC; " +
		"and GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO the server's role (see README, Publishing from SQL)"
}
