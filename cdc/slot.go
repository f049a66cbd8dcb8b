package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// slotState is a row of pg_replication_slots.
type slotState struct {
	exists    bool
	plugin    string
	database  string
	active    bool
	walStatus string
	temporary bool
}

// checkSlot reports what keeps the reader from using slot: another
// plugin or database, lost WAL, or no free slot to create it in.
func checkSlot(ctx context.Context, conn *pgx.Conn, slot string, srv serverState) ([]Problem, error) {
	st, err := readSlot(ctx, conn, slot)
	if err != nil {
		return nil, err
	}
	if !st.exists {
		if srv.maxSlots == 0 {
			return nil, nil // reported by checkSettings
		}
		var used int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots").Scan(&used); err == nil && used >= srv.maxSlots {
			return []Problem{{"database.slot", fmt.Sprintf("all %d replication slots are in use, so slot %q cannot be created", srv.maxSlots, slot),
				"drop unused slots (SELECT pg_drop_replication_slot(name)) or raise max_replication_slots"}}, nil
		}
		return nil, nil
	}
	switch {
	case st.plugin != "pgoutput":
		return []Problem{{"database.slot", fmt.Sprintf("slot %q uses plugin %q, not pgoutput", slot, st.plugin),
			fmt.Sprintf("SELECT pg_drop_replication_slot('%s'); or name another slot", slot)}}, nil
	case st.database != srv.database:
		return []Problem{{"database.slot", fmt.Sprintf("slot %q belongs to database %q, not %q", slot, st.database, srv.database), "name another slot"}}, nil
	case st.walStatus == "lost":
		return []Problem{{"database.slot", fmt.Sprintf("slot %q was invalidated (wal_status lost): changes were lost", slot),
			"snorky serve drops it and creates it afresh with a new epoch (clients must refetch); to prevent it, raise max_slot_wal_keep_size"}}, nil
	}
	return nil, nil
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotState, error) {
	var s slotState
	var plugin, database, walStatus *string
	err := conn.QueryRow(ctx, `SELECT plugin, database, active, wal_status, temporary
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &database, &s.active, &walStatus, &s.temporary)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading slot %s: %w", slot, err)
	}
	s.exists = true
	for dst, src := range map[*string]*string{&s.plugin: plugin, &s.database: database, &s.walStatus: walStatus} {
		if src != nil {
			*dst = *src
		}
	}
	return s, nil
}

// ensureSlot creates the permanent pgoutput slot when absent and checks an
// existing one.
func ensureSlot(ctx context.Context, sqlConn *pgx.Conn, repl *pgconn.PgConn, cfg Config) (created bool, err error) {
	s, err := readSlot(ctx, sqlConn, cfg.Slot)
	if err != nil {
		return false, err
	}
	if s.exists {
		var db string
		if err := sqlConn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			return false, err
		}
		switch {
		case s.plugin != "pgoutput":
			return false, prerequisite("database.slot: slot %q uses plugin %q, not pgoutput; drop it (SELECT pg_drop_replication_slot('%s');) or name another slot", cfg.Slot, s.plugin, cfg.Slot)
		case s.database != db:
			return false, prerequisite("database.slot: slot %q belongs to database %q, not %q; name another slot", cfg.Slot, s.database, db)
		case s.walStatus == "lost":
			return false, fmt.Errorf("%w: slot %q has wal_status lost (it fell behind max_slot_wal_keep_size); "+
				"drop it (SELECT pg_drop_replication_slot('%s');) to start afresh: changes made meanwhile were not delivered", ErrSlotInvalidated, cfg.Slot, cfg.Slot)
		}
		return false, nil
	}
	_, err = pglogrepl.CreateReplicationSlot(ctx, repl, cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "NOEXPORT_SNAPSHOT",
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // created meanwhile by another server
			return false, nil
		}
		return false, classifySetup(fmt.Errorf("creating replication slot %s: %w", cfg.Slot, err))
	}
	return true, nil
}

// streamEpoch returns the stream's epoch from snorky.stream, recording a new
// random one when the slot was just created (or when the row is missing:
// the schema was migrated after the slot was made). Without the snorky
// schema it returns "" and no error.
func streamEpoch(ctx context.Context, conn *pgx.Conn, slot string, created bool) (string, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('snorky.stream') IS NOT NULL`).Scan(&exists); err != nil {
		return "", fmt.Errorf("looking for snorky.stream: %w", err)
	}
	if !exists {
		return "", nil
	}
	fresh := newEpoch()
	upsert := `INSERT INTO snorky.stream (slot, epoch) VALUES ($1, $2) ON CONFLICT (slot) DO NOTHING`
	if created {
		upsert = `INSERT INTO snorky.stream (slot, epoch) VALUES ($1, $2)
			ON CONFLICT (slot) DO UPDATE SET epoch = EXCLUDED.epoch, created_at = now()`
	}
	if _, err := conn.Exec(ctx, upsert, slot, fresh); err != nil {
		return "", fmt.Errorf("recording the epoch of slot %s: %w", slot, err)
	}
	var epoch string
	if err := conn.QueryRow(ctx, `SELECT epoch FROM snorky.stream WHERE slot = $1`, slot).Scan(&epoch); err != nil {
		return "", fmt.Errorf("reading the epoch of slot %s: %w", slot, err)
	}
	return epoch, nil
}

// newEpoch returns 16 random lower-case hex digits.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
