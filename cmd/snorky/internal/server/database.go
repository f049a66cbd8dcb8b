package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	"github.com/snorkyhq/snorky/migrations"
)

// runDatabase applies migrations when configured and records the snapshot
// horizon (both retried with backoff while PostgreSQL is unreachable), then
// runs the reader until ctx is done. It returns only permanent errors.
func (s *Server) runDatabase(ctx context.Context) error {
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
		cc, _ := s.cfg.CDCConfig()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if problems := cdc.Check(cctx, cc); len(problems) > 0 {
			var b strings.Builder
			for _, p := range config.RenameProblems(s.cfg, problems) {
				fmt.Fprintf(&b, "\n  problem: %s: %s\n  fix: %s", p.Key, p.What, p.Fix)
			}
			return config.RenamedError{Msg: config.TableKeys(s.cfg).Replace(err.Error()) + b.String(), Err: err}
		}
	}
	return err
}

// prepareDatabase applies the migrations (database.migrate) and gives the
// DataSync engine its snapshot horizon: pg_current_snapshot() taken before
// the reader starts, so every transaction it did not see will be streamed.
func (s *Server) prepareDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.cfg.Database.URL)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if problems := KeyProblems(ctx, conn, s.cfg); len(problems) > 0 {
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

// KeyProblems finds the model tables without a primary key whose model
// sets no key: their rows cannot be identified (an update or delete of the
// client's copy needs the key).
func KeyProblems(ctx context.Context, conn *pgx.Conn, cfg *config.Config) []cdc.Problem {
	var problems []cdc.Problem
	for _, name := range slices.Sorted(maps.Keys(cfg.Models)) {
		m := cfg.Models[name]
		if m.Table == "" || len(m.Key) > 0 {
			continue
		}
		schema, table, err := cdc.SplitTableName(m.Table)
		if err != nil {
			continue // reported by the configuration checks
		}
		var hasPK, hasID bool
		err = conn.QueryRow(ctx, `SELECT
			EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p'),
			EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = c.oid AND attname = 'id' AND NOT attisdropped)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
			schema, table).Scan(&hasPK, &hasID)
		if err != nil {
			continue // a missing table is reported by the reader's checks
		}
		if hasPK {
			continue
		}
		col := "COLUMN"
		if hasID {
			col = "id"
		}
		qualified := pgx.Identifier{schema, table}.Sanitize()
		problems = append(problems, cdc.Problem{
			Key:  "models." + name + ".table",
			What: fmt.Sprintf("table %s.%s has no primary key and models.%s.key is not set: deltas need a key that identifies a row", schema, table, name),
			Fix:  fmt.Sprintf("add one: ALTER TABLE %s ADD PRIMARY KEY (%s); or set models.%s.key: [%s] to columns that identify a row", qualified, col, name, col),
		})
	}
	return problems
}

// permanentError is a database error that retrying cannot cure: serve
// exits with it.
type permanentError struct{ msg string }

func (e permanentError) Error() string { return e.msg }

// errPermanent reports whether err is a permanentError.
func errPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// problemsError is the error of serve for problems, in check's words.
func problemsError(problems []cdc.Problem) error {
	return permanentError{strings.TrimRight(FormatProblems(problems), "\n")}
}

// FormatProblems writes problems as `check` prints them.
func FormatProblems(problems []cdc.Problem) string {
	var b strings.Builder
	for _, p := range problems {
		fmt.Fprintf(&b, "problem: %s: %s\n  fix: %s\n", p.Key, p.What, p.Fix)
	}
	return b.String()
}
