package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	"github.com/snorkyhq/snorky/migrations"
)

// runDatabase runs the reader until ctx is done. Every session first
// prepares the database (prepareSession), retried with the reader's backoff
// while PostgreSQL is unreachable. It returns only permanent errors.
func (s *Server) runDatabase(ctx context.Context) error {
	s.reader.OnSession(s.prepareSession)
	err := s.reader.Run(ctx)
	var said permanentError
	if errors.As(err, &said) {
		return said // the problems, in check's words
	}
	if errors.Is(err, cdc.ErrPrerequisite) {
		// Say what to do, as `snorky check` does.
		cc, _ := s.cfg.CDCConfig()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if problems := cdc.Check(cctx, cc, s.cfg.TableUses()...); len(problems) > 0 {
			var b strings.Builder
			for _, p := range config.RenameProblems(s.cfg, problems) {
				fmt.Fprintf(&b, "\n  problem: %s: %s\n  fix: %s", p.Key, p.What, p.Fix)
			}
			return config.RenamedError{Msg: config.TableKeys(s.cfg).Replace(err.Error()) + b.String(), Err: err}
		}
	}
	return err
}

// prepareSession runs at the start of each of the reader's sessions, on its
// connection: it checks the columns the models and dealers use and applies
// the migrations (database.migrate).
func (s *Server) prepareSession(ctx context.Context, conn *pgx.Conn) error {
	if problems := cdc.CheckUses(ctx, conn, s.cfg.TableUses()); len(problems) > 0 {
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

// permanentError is a database error that retrying cannot cure: serve
// exits with it.
type permanentError struct{ msg string }

func (e permanentError) Error() string { return e.msg }

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
