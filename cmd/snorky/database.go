package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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
		StatusInterval: d.StatusInterval, HeartbeatInterval: d.HeartbeatInterval, MaxTxBytes: int(d.MaxTxBytes)}
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

// runDatabase runs the reader until ctx is done. Every session first
// prepares the database (prepareSession), retried with the reader's backoff
// while PostgreSQL is unreachable. It returns only permanent errors.
func (s *server) runDatabase(ctx context.Context) error {
	s.reader.OnSession(s.prepareSession)
	err := s.reader.Run(ctx)
	var said permanentError
	if errors.As(err, &said) {
		return said // the problems, in check's words
	}
	if errors.Is(err, cdc.ErrPrerequisite) {
		// Say what to do, as `snorky check` does.
		cc, _ := s.cfg.cdcConfig()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if problems := cdc.Check(cctx, cc, s.cfg.tableUses()...); len(problems) > 0 {
			var b strings.Builder
			for _, p := range renameProblems(s.cfg, problems) {
				fmt.Fprintf(&b, "\n  problem: %s: %s\n  fix: %s", p.Key, p.What, p.Fix)
			}
			return renamedError{msg: tableKeys(s.cfg).Replace(err.Error()) + b.String(), err: err}
		}
	}
	return err
}

// prepareSession runs at the start of each of the reader's sessions, on its
// connection: it checks the columns the models and dealers use and applies
// the migrations (database.migrate).
func (s *server) prepareSession(ctx context.Context, conn *pgx.Conn) error {
	if problems := cdc.CheckUses(ctx, conn, s.cfg.tableUses()); len(problems) > 0 {
		return fmt.Errorf("%w: %w", cdc.ErrPrerequisite, problemsError(problems))
	}
	if !s.cfg.Database.Migrate {
		return nil
	}
	applied, err := migrations.Up(ctx, conn)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		s.log.Info("applied migrations", "versions", applied)
	}
	return nil
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
	problems := renameProblems(cfg, cdc.Check(ctx, cc, cfg.tableUses()...))
	if len(problems) == 0 {
		for _, w := range cdc.Warnings(ctx, cc) {
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

// tableUses lists what the models and dealers need of their tables' columns
// (cdc.CheckUses): each model's key (or, without one, a primary key) and
// columns, and each simple dealer's key column.
func (c *Config) tableUses() []cdc.Use {
	var uses []cdc.Use
	for _, name := range slices.Sorted(maps.Keys(c.Models)) {
		m := c.Models[name]
		if m.Table == "" {
			continue
		}
		uses = append(uses,
			cdc.Use{Key: "models." + name + ".key", Table: m.Table, Columns: m.Key, NeedsPrimaryKey: len(m.Key) == 0},
			cdc.Use{Key: "models." + name + ".columns", Table: m.Table, Columns: m.Columns})
	}
	for _, name := range slices.Sorted(maps.Keys(c.Dealers)) {
		d := c.Dealers[name]
		m, ok := c.Models[d.Model]
		if !ok || m.Table == "" || d.Key == "" {
			continue
		}
		col, _, _ := strings.Cut(d.Key, ".")
		uses = append(uses, cdc.Use{Key: "dealers." + name + ".key", Table: m.Table, Columns: []string{col}})
	}
	return uses
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
