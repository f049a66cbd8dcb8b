package cdc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// State is what a Reader is doing, for /readyz.
type State string

// The states of a Reader.
const (
	// StateConnecting: connecting, checking the tables, the publication and
	// the slot, or waiting to retry after an error.
	StateConnecting State = "connecting"
	// StateStandby: another process (another snorky serve) owns the slot,
	// or another connection streams from it (55006); this reader waits,
	// delivers nothing, and takes over when the owner's session ends.
	StateStandby State = "standby"
	// StateCreatingSlot: creating the slot, which PostgreSQL does only once
	// every transaction running at that moment has ended.
	StateCreatingSlot State = "creating slot"
	// StateStreaming: the reader owns the slot and streams from it.
	StateStreaming State = "streaming"
	// StateStopped: Run has returned.
	StateStopped State = "stopped"
)

// Status is a Reader's state and what it last read about its slot (for
// /readyz's detail; it marshals to JSON).
type Status struct {
	State State  `json:"state"`
	Slot  string `json:"slot"`
	// WALStatus is the slot's wal_status in pg_replication_slots at the last
	// poll (WALPollInterval): reserved, extended, unreserved (the next
	// checkpoint removes WAL the slot needs unless it catches up) or lost.
	// Empty: not polled yet, or no slot.
	WALStatus string `json:"wal_status"`
	// SafeWALSize is the slot's safe_wal_size at the last poll: bytes of WAL
	// that can be written before the slot is lost. -1: no limit
	// (max_slot_wal_keep_size = -1) or unknown.
	SafeWALSize int64 `json:"safe_wal_size"`
	// Invalidations counts the slots this reader found invalidated and
	// recreated (each one a new epoch).
	Invalidations int64 `json:"invalidations"`
	// Warning says, with the fix, that the slot is about to be lost
	// (wal_status unreserved) or was lost; empty otherwise.
	Warning string `json:"warning,omitempty"`
}

// health is the part of a Reader that Status reads: its state and what
// it last read about its slot. The zero value is ready to use.
type health struct {
	state         atomic.Pointer[State]
	slotWAL       atomic.Pointer[slotWAL]
	invalidations atomic.Int64
}

// Status returns the reader's state and slot health.
func (r *Reader) Status() Status {
	st := Status{State: r.State(), Slot: r.cfg.Slot, SafeWALSize: -1, Invalidations: r.invalidations.Load()}
	if w := r.slotWAL.Load(); w != nil && w.exists {
		st.WALStatus, st.SafeWALSize = w.status, w.safeSize
	}
	switch st.WALStatus {
	case "unreserved":
		st.Warning = fmt.Sprintf("replication slot %q is about to be lost (wal_status unreserved): it retains more WAL than max_slot_wal_keep_size allows, "+
			"and a checkpoint will invalidate it (clients would then have to refetch); raise max_slot_wal_keep_size in postgresql.conf "+
			"(or set it to -1) and check why snorky falls behind", st.Slot)
	case "lost":
		st.Warning = fmt.Sprintf("replication slot %q was invalidated (wal_status lost): snorky recreates it with a new epoch (clients must refetch); "+
			"to prevent it, raise max_slot_wal_keep_size in postgresql.conf (or set it to -1)", st.Slot)
	}
	return st
}

// State returns what the reader is doing.
func (r *Reader) State() State {
	if r.ready.Load() {
		return StateStreaming
	}
	if s := r.state.Load(); s != nil {
		return *s
	}
	return StateConnecting
}

func (r *Reader) setState(s State) { r.state.Store(&s) }

// Health returns nil while the reader streams, else an error saying what
// it does instead (for /readyz): connecting, standby, creating the slot or
// stopped. A slot at
// risk does not make it unhealthy (it still delivers): Status().Warning
// says so.
func (r *Reader) Health() error {
	switch st := r.State(); st {
	case StateStandby:
		return fmt.Errorf("standby: another process owns replication slot %q; this one takes over when it stops", r.cfg.Slot)
	case StateStopped:
		return errors.New("the WAL reader stopped (see the log)")
	case StateConnecting:
		return errors.New("not streaming from PostgreSQL yet (see the log)")
	case StateCreatingSlot:
		return fmt.Errorf("waiting for slot creation: PostgreSQL creates replication slot %q once every transaction "+
			"running now has ended (see pg_stat_activity for long ones)", r.cfg.Slot)
	}
	return nil
}

// ownerLockClass is the first key of the session-level advisory lock
// (pg_advisory_lock(int4, int4)) that makes one process the owner of a
// slot: "snky". The second is ownerLockKey(slot).
const ownerLockClass int32 = 0x736e6b79

// ownerLockKey is the second key of the slot's advisory lock: a hash of
// its name, non-negative so that it reads the same in pg_locks.objid.
// Slot names are unique in the cluster and a slot belongs to one database,
// so every process using the slot takes the lock in that database.
func ownerLockKey(slot string) int32 {
	h := fnv.New32a()
	h.Write([]byte(slot))
	return int32(h.Sum32() & 0x7fffffff)
}

// standbyPoll bounds one wait for the owner lock (lock_timeout): a standby
// checks its connection at least this often. Taking over is not delayed by
// it: the wait ends as soon as the owner's session ends.
const standbyPoll = 5 * time.Second

// lease is the slot's owner lock, held on a connection of its own that a
// goroutine keeps alive: it runs a query every pingEvery, and the session
// has idle_session_timeout (and TCP keepalives) set, so that PostgreSQL
// ends it, releasing the lock, when the owner stops answering: its host
// died, the network dropped, the process hangs. Otherwise an idle session
// whose client vanished without closing its socket would hold the lock for
// hours (the kernel's TCP keepalive) and no standby could take over.
type lease struct {
	conn *pgx.Conn
	stop chan struct{}
	done chan struct{}
}

// release ends the lease: the lock goes with the connection.
func (l *lease) release() {
	close(l.stop)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.conn.Close(ctx)
}

// leaseTimes are the keep-alive period of the lease connection and the
// silence after which PostgreSQL ends it: ReceiveTimeout, the bound after
// which the reader itself gives up on a silent replication connection.
func (r *Reader) leaseTimes() (pingEvery, idleTimeout time.Duration) {
	idleTimeout = max(r.cfg.ReceiveTimeout, time.Second)
	return min(r.cfg.StatusInterval, idleTimeout/4), idleTimeout
}

// acquireOwnership takes the slot's advisory lock (R1) on a connection of
// its own, held until the lease is released. While another process holds
// it the reader is a standby: it waits on the lock, having opened no
// replication connection, so it delivers nothing; PostgreSQL releases the
// lock the moment the owner's session ends (a killed owner's socket closes;
// a vanished one's session times out), and this reader goes on at once.
// The lock orders the processes; the slot itself (55006) still guards
// against a walsender that outlives its owner's lock.
func (r *Reader) acquireOwnership(ctx context.Context) (*lease, error) {
	conn, err := connectSQL(ctx, r.cfg)
	if err != nil {
		return nil, classifyConnect(err, r.cfg.URL)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	pingEvery, idleTimeout := r.leaseTimes()
	secs := max(int(idleTimeout/time.Second)/3, 1)
	for name, value := range map[string]string{
		"idle_session_timeout": fmt.Sprint(idleTimeout.Milliseconds()), // PostgreSQL 14+
		// A dead host is found without waiting for the kernel's defaults.
		"tcp_keepalives_idle":     fmt.Sprint(secs),
		"tcp_keepalives_interval": fmt.Sprint(secs),
		"tcp_keepalives_count":    "3",
	} {
		if _, err := conn.Exec(ctx, `SELECT set_config($1, $2, false)`, name, value); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return nil, fmt.Errorf("setting %s on the owner lock's connection: %w", name, err)
			}
			r.log.Debug("cdc: owner lock's connection: setting not applied", "setting", name, "err", err)
		}
	}
	if err := r.waitForLock(ctx, conn); err != nil {
		return nil, err
	}
	ok = true
	l := &lease{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go r.keepLease(l, pingEvery)
	return l, nil
}

// waitForLock takes the slot's lock on conn, waiting as a standby while
// another session holds it.
func (r *Reader) waitForLock(ctx context.Context, conn *pgx.Conn) error {
	key := ownerLockKey(r.cfg.Slot)
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, ownerLockClass, key).Scan(&got); err != nil {
		return fmt.Errorf("taking the advisory lock of slot %s: %w", r.cfg.Slot, err)
	}
	if got {
		return nil
	}
	r.setState(StateStandby)
	r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.standby }, 1)
	defer func() {
		r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.standby }, 0)
		r.setState(StateConnecting)
	}()
	r.log.Info("cdc: standby: another process owns the slot; waiting to take over when it stops", "owner", r.lockHolder(ctx, conn, key))
	began := time.Now()
	for {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", standbyPoll.Milliseconds())); err != nil {
				return err
			}
			// A session-level lock: it outlives this transaction.
			_, err := tx.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, ownerLockClass, key)
			return err
		})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			r.log.Info("cdc: took over the slot from the previous owner", "waited", time.Since(began).Round(time.Millisecond))
			return nil
		case errors.As(err, &pgErr) && pgErr.Code == "55P03": // lock_timeout: still held
		default:
			return fmt.Errorf("waiting for the advisory lock of slot %s: %w", r.cfg.Slot, err)
		}
	}
}

// keepLease runs a query on the lease connection every pingEvery until the
// lease is released. A failure ends the keep-alive only: the owner streams
// on (the slot admits one walsender, so a process that takes the lock
// meanwhile waits on 55006), and its next session takes the lock anew.
func (r *Reader) keepLease(l *lease, pingEvery time.Duration) {
	defer close(l.done)
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(pingEvery, 5*time.Second))
		_, err := l.conn.Exec(ctx, `SELECT 1`)
		cancel()
		if err != nil {
			select {
			case <-l.stop:
			default:
				r.log.Warn("cdc: the owner lock's connection failed; another process may take the lock, and take over the slot once this one's session ends", "err", err)
			}
			return
		}
	}
}

// lockHolder describes the session holding the slot's lock, for the log.
func (r *Reader) lockHolder(ctx context.Context, conn *pgx.Conn, key int32) string {
	var who string
	err := conn.QueryRow(ctx, `
		SELECT format('pid %s, %s, %s', l.pid, coalesce(nullif(a.application_name, ''), '?'), coalesce(a.client_addr::text, 'local'))
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid AND l.objsubid = 2
		LIMIT 1`, ownerLockClass, key).Scan(&who)
	if err != nil {
		return "unknown"
	}
	return who
}
