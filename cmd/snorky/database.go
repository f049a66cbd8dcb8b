package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/migrations"
)

// cdcConfig turns the database section and the models into the reader's
// configuration. Table names are normalised to pgoutput's "schema.table".
func (c *Config) cdcConfig() (cdc.Config, error) {
	d := c.Database
	out := cdc.Config{URL: d.URL, Slot: d.Slot, Publication: d.Publication, TimeZone: d.TimeZone,
		StatusInterval: d.StatusInterval, HeartbeatInterval: d.HeartbeatInterval, MaxTxBytes: int(d.MaxTxBytes),
		ReceiveTimeout: d.DeadLinkTimeout}
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if m.Table == "" {
			continue
		}
		ri := m.ReplicaIdentity
		if ri == "" {
			ri = d.ReplicaIdentity
		}
		out.Tables = append(out.Tables, cdc.TableConfig{Name: m.Table, ReplicaIdentity: ri})
	}
	if err := out.Validate(); err != nil {
		return out, renamedError{msg: tableKeys(c).Replace(err.Error()), err: err}
	}
	return out, nil
}

// normalTable returns a model's table as pgoutput names it ("schema.table").
func normalTable(key, table string) (string, error) {
	if table == "" {
		return "", nil
	}
	schema, name, err := cdc.SplitTableName(table)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return schema + "." + name, nil
}

// validateDatabase checks the rules that need both the models and the
// database section (reliability.md R5).
func (c *Config) validateDatabase() error {
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if m.Table != "" && c.Database == nil {
			return fmt.Errorf("models.%s.table: a model with a table needs the database section (database.url)", name)
		}
		switch m.ReplicaIdentity {
		case "", cdc.IdentityFull, cdc.IdentityDefault:
		default:
			return fmt.Errorf("models.%s.replica_identity: %q is not full or default", name, m.ReplicaIdentity)
		}
	}
	if c.Database == nil {
		return nil
	}
	switch c.Database.ReplicaIdentity {
	case cdc.IdentityFull, cdc.IdentityDefault:
	default:
		return fmt.Errorf("database.replica_identity: %q is not full or default", c.Database.ReplicaIdentity)
	}
	if c.Database.History.MaxAge <= 0 || c.Database.History.MaxBytes <= 0 {
		return errors.New("database.history: max_age and max_bytes must be positive")
	}
	// Under REPLICA IDENTITY DEFAULT the old row of an update or delete
	// holds only the key: a dealer that routes on anything else cannot
	// tell who saw the row.
	for _, name := range slices.Sorted(maps.Keys(c.Dealers)) {
		dl := c.Dealers[name]
		m, ok := c.Models[dl.Model]
		if !ok || m.Table == "" {
			continue
		}
		ri := m.ReplicaIdentity
		if ri == "" {
			ri = c.Database.ReplicaIdentity
		}
		if ri != cdc.IdentityDefault {
			continue
		}
		switch dealers.Kind(dl.Kind) {
		case dealers.KindFilter:
			return fmt.Errorf("dealers.%s: a filter dealer needs every column of the old row, but model %s uses replica_identity: default (old rows carry only the key); set models.%s.replica_identity: full", name, dl.Model, dl.Model)
		case dealers.KindSimple:
			col, _, _ := strings.Cut(dl.Key, ".")
			if len(m.Key) == 0 || !slices.Contains(m.Key, col) {
				return fmt.Errorf("dealers.%s.key: %q is not a key column of model %s, and under replica_identity: default old rows carry only the key; set models.%s.replica_identity: full (or models.%s.key if %q is the key)", name, dl.Key, dl.Model, dl.Model, dl.Model, col)
			}
		}
	}
	return nil
}

// runDatabase applies migrations when configured and records the snapshot
// horizon (both retried with backoff while PostgreSQL is unreachable), then
// runs the reader until ctx is done. It returns only permanent errors.
func (s *server) runDatabase(ctx context.Context) error {
	delay := 250 * time.Millisecond
	for {
		err := s.prepareDatabase(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if p, ok := cdc.ConnectProblem(err, s.cfg.Database.URL); ok {
			return problemsError([]cdc.Problem{p})
		}
		if errPermanent(err) {
			return err
		}
		s.log.Warn("preparing the database failed; retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay/2 + rand.N(delay/2+1)):
		}
		delay = min(delay*2, 30*time.Second)
	}
	err := s.reader.Run(ctx)
	if errors.Is(err, cdc.ErrPrerequisite) {
		// Say what to do, as `snorky check` does.
		cc, _ := s.cfg.cdcConfig()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if problems := cdc.Check(cctx, cc); len(problems) > 0 {
			var b strings.Builder
			for _, p := range renameProblems(s.cfg, problems) {
				fmt.Fprintf(&b, "\n  problem: %s: %s\n  fix: %s", p.Key, p.What, p.Fix)
			}
			return renamedError{msg: tableKeys(s.cfg).Replace(err.Error()) + b.String(), err: err}
		}
	}
	return err
}

// prepareDatabase applies the migrations (database.migrate) and gives the
// DataSync engine its snapshot horizon: pg_current_snapshot() taken before
// the reader starts, so every transaction it did not see will be streamed.
func (s *server) prepareDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if problems := keyProblems(ctx, conn, s.cfg); len(problems) > 0 {
		return problemsError(problems)
	}
	if s.cfg.Database.Migrate {
		applied, err := migrations.Up(ctx, conn)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			s.log.Info("applied migrations", "versions", applied)
		}
	}
	var horizon string
	if err := conn.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&horizon); err != nil {
		return fmt.Errorf("reading the snapshot horizon: %w", err)
	}
	return s.datasync.SetHorizon(horizon)
}

// check runs `snorky check`: every prerequisite, each problem with its fix.
func check(ctx context.Context, path string, environ []string, out io.Writer) error {
	cfg, warnings, err := loadConfig(path, environ)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(out, "warning:", w)
	}
	if err := validateConfig(cfg); err != nil {
		return err
	}
	for _, w := range cfg.exposureWarnings() { // hardening.go
		fmt.Fprintln(out, "warning:", w)
	}
	if cfg.Database == nil {
		fmt.Fprintln(out, "ok: no database configured; DataSync is fed by publishDeltas only")
		return nil
	}
	cc, err := cfg.cdcConfig()
	if err != nil {
		return err
	}
	problems := renameProblems(cfg, cdc.Check(ctx, cc))
	if len(problems) == 0 {
		problems = checkColumns(ctx, cfg)
	}
	if len(problems) == 0 {
		if conn, err := pgx.Connect(ctx, cfg.Database.URL); err == nil {
			problems = keyProblems(ctx, conn, cfg)
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
func checkColumns(ctx context.Context, cfg *Config) []cdc.Problem {
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
	cfg, _, err := loadConfig(path, environ)
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
