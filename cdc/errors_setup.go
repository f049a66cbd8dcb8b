package cdc

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

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
