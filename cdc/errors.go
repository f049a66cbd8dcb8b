package cdc

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ConnectProblem explains an error of connecting to PostgreSQL at url (a
// *pgconn.ConnectError, as pgx.Connect returns) that
// retrying cannot cure (the database does not exist, authentication
// failed, no pg_hba.conf entry, the role does not exist or may not
// connect), with the fix naming the actual database and role. It returns
// false for errors that may pass (connection refused, the server starting
// up or shutting down, too many connections, timeouts): those are worth
// retrying.
func ConnectProblem(err error, url string) (Problem, bool) {
	if err == nil || Transient(err) {
		return Problem{}, false
	}
	user, db, host := "the role", "the database", "its address"
	if pc, perr := pgx.ParseConfig(url); perr == nil {
		user, db = pc.User, pc.Database
		if pc.Host != "" && !strings.HasPrefix(pc.Host, "/") {
			host = "the server's address as PostgreSQL sees it (e.g. 10.0.0.5/32)"
		}
	}
	role := pgx.Identifier{user}.Sanitize()
	dbIdent := pgx.Identifier{db}.Sanitize()
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	if !errors.As(err, &pgErr) || !errors.As(err, &connectErr) {
		// Only the server's refusal to connect, not an error of a
		// statement on an open connection.
		var parse *pgconn.ParseConfigError
		if errors.As(err, &parse) {
			return Problem{Key: "database.url", What: err.Error(),
				Fix: "write database.url as postgres://ROLE:PASSWORD@HOST:5432/DATABASE (or set SNORKY_DATABASE__URL)"}, true
		}
		return Problem{}, false
	}
	what := fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	switch pgErr.Code {
	case "3D000": // invalid_catalog_name
		return Problem{Key: "database.url", What: what,
			Fix: fmt.Sprintf("create it as a superuser: CREATE DATABASE %s OWNER %s; or correct the database name in database.url", dbIdent, role)}, true
	case "28P01": // invalid_password
		return Problem{Key: "database.url", What: what,
			Fix: fmt.Sprintf("put role %s's password in database.url (or SNORKY_DATABASE__URL), or set it as a superuser: ALTER ROLE %s PASSWORD '…';", user, role)}, true
	case "28000": // invalid_authorization_specification
		switch {
		case strings.Contains(pgErr.Message, "does not exist"):
			return Problem{Key: "database.url", What: what,
				Fix: fmt.Sprintf("create the role as a superuser: CREATE ROLE %s LOGIN REPLICATION PASSWORD '…'; GRANT CREATE ON DATABASE %s TO %s;", role, dbIdent, role)}, true
		case strings.Contains(pgErr.Message, "pg_hba.conf"):
			return Problem{Key: "database.url", What: what,
				Fix: fmt.Sprintf("add to pg_hba.conf, with ADDR %s: host %s %s ADDR scram-sha-256 (it also admits the logical replication connection), then SELECT pg_reload_conf();", host, db, user)}, true
		}
		return Problem{Key: "database.url", What: what, Fix: "check the role and pg_hba.conf"}, true
	case "42501": // insufficient_privilege, e.g. no CONNECT
		return Problem{Key: "database.url", What: what,
			Fix: fmt.Sprintf("as a superuser: GRANT CONNECT ON DATABASE %s TO %s; ALTER ROLE %s LOGIN;", dbIdent, role, role)}, true
	}
	return Problem{}, false
}

// Transient reports whether a connection error may pass by itself:
// PostgreSQL unreachable, starting up, shutting down or out of
// connections, or a timeout.
func Transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", "53300", "08006", "08001", "08004":
			return true
		}
		return false
	}
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &netErr) || errors.As(err, &opErr) || pgconn.Timeout(err) ||
		strings.Contains(err.Error(), "connection refused")
}

// Sentinel errors callers may branch on.
var (
	// ErrSlotInUse: another connection streams from the slot (SQLSTATE
	// 55006). The reader waits and retries.
	ErrSlotInUse = errors.New("replication slot is in use by another connection")
	// ErrSlotInvalidated: the slot lost WAL it needed (wal_status "lost",
	// max_slot_wal_keep_size; SQLSTATE 55000 on reading it). Changes were
	// lost; the reader drops and recreates the slot with a new epoch.
	ErrSlotInvalidated = errors.New("replication slot was invalidated")
	// ErrPrerequisite marks an error the reader cannot recover from by
	// retrying (configuration, privileges, missing tables, wal_level). Run
	// returns it.
	ErrPrerequisite = errors.New("prerequisite not met")
)

// prerequisite wraps err as ErrPrerequisite.
func prerequisite(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPrerequisite, fmt.Sprintf(format, args...))
}

// classifyConnect marks an error of connecting to url that retrying cannot
// cure (ConnectProblem) as ErrPrerequisite, with its fix.
func classifyConnect(err error, url string) error {
	if p, ok := ConnectProblem(err, url); ok {
		return fmt.Errorf("%w: %w (fix: %s)", ErrPrerequisite, err, p.Fix)
	}
	return classifySetup(err)
}

// classifySetup marks errors that retrying cannot fix as ErrPrerequisite.
func classifySetup(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if invalidatedError(pgErr) {
			return fmt.Errorf("%w: %w", ErrSlotInvalidated, err)
		}
		switch pgErr.Code {
		case "42501", "28000", "28P01", "55000", "22023", "42704", "42P01":
			return fmt.Errorf("%w: %w", ErrPrerequisite, err)
		case "55006":
			return fmt.Errorf("%w: %w", ErrSlotInUse, err)
		}
	}
	return err
}
