package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Slot invalidation (R4). PostgreSQL invalidates a slot that retains more
// WAL than max_slot_wal_keep_size at a checkpoint: its wal_status becomes
// "lost", an active walsender on it is terminated, and reading from it
// fails with SQLSTATE 55000. The changes in the removed WAL are gone, so
// the reader cannot resume: it logs one error saying so and how to prevent
// it, drops the slot and lets the session create it afresh, which records
// a new epoch in snorky.stream (clients must refetch), and streams on. The
// reader does not stop, so a server never crash-loops on a lost slot.

// walStatuses are the values of pg_replication_slots.wal_status.
var walStatuses = []string{"reserved", "extended", "unreserved", "lost"}

// slotWAL is what pg_replication_slots says about the slot's WAL.
type slotWAL struct {
	exists   bool
	retained int64  // pg_current_wal_lsn() - restart_lsn; 0 when unknown
	status   string // wal_status; "" when null
	safeSize int64  // safe_wal_size; -1 when null (no limit)
}

// readSlotWAL reads the slot's WAL state on a connection of its own.
func readSlotWAL(ctx context.Context, cfg Config) (slotWAL, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connectSQL(ctx, cfg)
	if err != nil {
		return slotWAL{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	w := slotWAL{exists: true}
	var status *string
	err = conn.QueryRow(ctx, `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8,
			wal_status, coalesce(safe_wal_size, -1)::int8
		FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&w.retained, &status, &w.safeSize)
	if errors.Is(err, pgx.ErrNoRows) {
		return slotWAL{safeSize: -1}, nil
	}
	if err != nil {
		return slotWAL{}, err
	}
	if status != nil {
		w.status = *status
	}
	return w, nil
}

// pollSlot reads the slot's WAL state into the metrics and Status.
func (r *Reader) pollSlot(ctx context.Context) {
	w, err := readSlotWAL(ctx, r.cfg)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Debug("cdc: polling the slot's WAL", "err", err)
		}
		return
	}
	prev := r.slotWAL.Swap(&w)
	r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.retainedWAL }, float64(w.retained))
	r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.safeWAL }, float64(w.safeSize))
	if r.metrics != nil {
		for _, s := range walStatuses {
			v := 0.0
			if s == w.status {
				v = 1
			}
			r.metrics.walStatus.WithLabelValues(s).Set(v)
		}
	}
	if w.status == "unreserved" && (prev == nil || prev.status != "unreserved") {
		r.log.Warn("cdc: the replication slot is about to be lost (wal_status unreserved): it retains more WAL than "+
			"max_slot_wal_keep_size allows and the next checkpoint may invalidate it, after which every client must refetch; "+
			"raise max_slot_wal_keep_size (or set it to -1) and check why snorky falls behind",
			"retained_bytes", w.retained)
	}
}

// prepareSlot drops the slot when PostgreSQL invalidated it (wal_status
// lost), logging the one error that says so; the caller (ensureSlot) then
// creates it afresh. A slot of another plugin or database is left to
// ensureSlot to report. It runs while the reader holds the slot's owner
// lock, so no other snorky process recreates the slot at the same time.
// When the slot is to be created the state is StateCreatingSlot: creating
// a logical slot waits for every transaction running at that moment.
func (r *Reader) prepareSlot(ctx context.Context, conn *pgx.Conn) error {
	s, err := readSlot(ctx, conn, r.cfg.Slot)
	if err != nil {
		return err
	}
	if !s.exists {
		r.setState(StateCreatingSlot)
	}
	if !s.exists || s.walStatus != "lost" || s.plugin != "pgoutput" {
		return nil
	}
	var db, keep string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_setting('max_slot_wal_keep_size')`).Scan(&db, &keep); err != nil {
		return err
	}
	if s.database != db {
		return nil
	}
	// Only while it is still the lost slot (not one recreated meanwhile by
	// a process that does not take the owner lock).
	tag, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = $1 AND wal_status = 'lost'`, r.cfg.Slot)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42704" { // dropped meanwhile
			return nil
		}
		return classifySetup(fmt.Errorf("dropping invalidated replication slot %s: %w", r.cfg.Slot, err))
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	r.invalidations.Add(1)
	r.slotWAL.Store(nil)
	r.setState(StateCreatingSlot)
	r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.invalidations }, 1)
	r.log.Error("cdc: PostgreSQL invalidated the replication slot (wal_status lost): it removed WAL the slot still needed, "+
		"so changes committed while snorky was stopped or behind cannot be delivered. Recreating the slot with a new stream "+
		"epoch: every client must fetch its data again. To prevent it, raise max_slot_wal_keep_size in postgresql.conf "+
		"(or set it to -1, no limit) so that it covers the longest time snorky may be down, or keep snorky running",
		"max_slot_wal_keep_size", keep)
	return nil
}

// startNewSlot resets the reader's positions to a slot just created: it
// streams from the slot's own start, and its confirmed position (status
// updates, the metric) starts at the slot's, never at a position of an
// earlier slot of the same name.
func (r *Reader) startNewSlot(ctx context.Context, conn *pgx.Conn) {
	r.handed = 0
	var lsn *string
	err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&lsn)
	if err != nil || lsn == nil {
		r.log.Debug("cdc: reading the new slot's position", "err", err)
		return
	}
	start, err := pglogrepl.ParseLSN(*lsn)
	if err == nil && uint64(start) > r.confirmed.Load() {
		r.confirmed.Store(uint64(start))
	}
}

// invalidatedError reports whether err is PostgreSQL refusing to read from
// an invalidated slot (SQLSTATE 55000, "This slot has been invalidated…";
// PostgreSQL 16 says "can no longer get changes from replication slot").
// Other 55000 errors (wal_level, …) are prerequisites.
func invalidatedError(pgErr *pgconn.PgError) bool {
	if pgErr.Code != "55000" {
		return false
	}
	text := strings.ToLower(pgErr.Message + " " + pgErr.Detail)
	return strings.Contains(text, "invalidated") || strings.Contains(text, "can no longer get changes")
}
