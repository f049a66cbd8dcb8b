package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
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
	if cfg.Cluster != nil {
		if problems := cluster.Check(ctx, cfg.Cluster); len(problems) > 0 {
			return printProblems(out, problems)
		}
		fmt.Fprintf(out, "ok: NATS at %s answers, with JetStream\n", cfg.Cluster.NATS.URL)
	}
	if cfg.Database == nil {
		fmt.Fprintln(out, "ok: no database configured; DataSync is fed by publishDeltas only")
		return nil
	}
	cc, err := cfg.CDCConfig()
	if err != nil {
		return err
	}
	problems := config.RenameProblems(cfg, cdc.Check(ctx, cc, cfg.TableUses()...))
	if len(problems) == 0 {
		for _, w := range cdc.Warnings(ctx, cc) {
			fmt.Fprintln(out, "warning:", w)
		}
	}
	if len(problems) == 0 {
		fmt.Fprintf(out, "ok: wal_level, privileges, slot %q, publication %q and %d tables are ready\n", cc.Slot, cc.Publication, len(cc.Tables))
		return nil
	}
	return printProblems(out, problems)
}

// printProblems prints what `snorky check` found, each with its fix, and
// returns the error that makes the command fail.
func printProblems(out io.Writer, problems []cdc.Problem) error {
	for _, p := range problems {
		fmt.Fprintf(out, "problem: %s: %s\n  fix: %s\n", p.Key, p.What, p.Fix)
	}
	return fmt.Errorf("%d problem(s) found", len(problems))
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
