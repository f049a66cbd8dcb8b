package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
)

// shutdownTimeout bounds the wait for the sink's Apply in progress at
// shutdown and the final status update.
const shutdownTimeout = 10 * time.Second

// Reader tails the configured tables through a permanent logical
// replication slot and hands whole transactions, in commit order, to a
// Sink. See the package documentation for its goroutines and invariants.
type Reader struct {
	cfg     Config
	sink    Sink
	quick   bool // the sink is a QuickSink
	log     *slog.Logger
	metrics *Metrics

	ready     atomic.Bool
	taken     atomic.Uint64 // EndLSN of the latest transaction the sink took
	pending   atomic.Int64  // transactions handed to the applier, not yet taken
	confirmed atomic.Uint64 // last flush position sent to PostgreSQL
	epoch     atomic.Pointer[string]
	health    // state and slot health (owner.go, invalidation.go)

	// tap, when set (tests), sees every pgoutput message received.
	tap func([]byte)
	// prepare, when set, runs at the start of every session (OnSession).
	prepare func(context.Context, *pgx.Conn) error

	// Owned by the Run goroutine.
	st        *stream
	handed    LSN // EndLSN of the latest transaction handed to the applier
	serverEnd LSN // latest server WAL end seen
	// idleEnd is the latest position known to hold no transaction not yet
	// received: a keepalive's WAL end or a non-transactional message
	// (heartbeat). It is confirmed only when nothing is in flight.
	idleEnd     LSN
	queue       chan handoff
	applyErr    chan error
	stopApply   chan struct{}
	applierDone chan struct{}
}

// handoff is a transaction on its way to the sink; txn is nil for an empty
// transaction that only advances the position.
type handoff struct {
	txn *Txn
	end LSN
	// start, when set, tells a StreamStarter sink where a session starts.
	start *streamStart
}

type streamStart struct {
	epoch   string
	from    LSN
	horizon string
}

// NewReader returns a reader of cfg (defaults applied) feeding sink. log
// may be nil (discard); metrics may be nil.
func NewReader(cfg Config, sink Sink, log *slog.Logger, metrics *Metrics) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	_, quick := sink.(QuickSink)
	return &Reader{cfg: cfg, sink: sink, quick: quick, log: log.With("slot", cfg.Slot), metrics: metrics}
}

// maxQuickChanges bounds the transactions a QuickSink takes on the
// reader's goroutine: larger ones go to the applier, so that routing them
// never delays the reader's status updates.
const maxQuickChanges = 256

// OnSession sets f to run at the start of every session, once this process
// owns the slot, on the reader's SQL connection and before the tables are
// checked: e.g. applying migrations and checking what the rest of the
// configuration needs of the tables. An error wrapping ErrPrerequisite
// stops Run; any other is retried with the reader's backoff, as a lost
// connection is. Call it before Run.
func (r *Reader) OnSession(f func(ctx context.Context, conn *pgx.Conn) error) { r.prepare = f }

// Ready reports whether the reader is connected and streaming (for /readyz).
func (r *Reader) Ready() bool { return r.ready.Load() }

// TakenLSN is the end LSN of the latest transaction the sink took.
func (r *Reader) TakenLSN() LSN { return LSN(r.taken.Load()) }

// ConfirmedLSN is the flush position last sent to PostgreSQL.
func (r *Reader) ConfirmedLSN() LSN { return LSN(r.confirmed.Load()) }

// Epoch is the stream's epoch: the random id recorded in snorky.stream when
// the slot was created, read at the start of each session. It is "" when the
// snorky schema is absent (migrations not applied) or before the first
// session.
func (r *Reader) Epoch() string {
	if p := r.epoch.Load(); p != nil {
		return *p
	}
	return ""
}

// Run streams until ctx is done (then it returns nil after a final status
// update) or a permanent error occurs: invalid configuration, an
// ErrPrerequisite (wal_level, privileges, tables), or an error from the
// sink. Connection losses and server restarts are retried with exponential
// backoff and jitter; while another process owns the slot the reader is a
// standby (owner.go); a slot in use (ErrSlotInUse) is retried at least every
// maxSlotInUseWait; an invalidated slot is recreated with a new epoch
// (invalidation.go). Run may be called once.
func (r *Reader) Run(ctx context.Context) error {
	if err := r.cfg.Validate(); err != nil {
		return err
	}
	r.st = newStream(nil, r.cfg.MessagePrefix)
	r.st.maxTx = r.cfg.MaxTxBytes
	r.st.warn = r.log.Warn
	r.queue = make(chan handoff, 1)
	r.applyErr = make(chan error, 1)
	r.stopApply = make(chan struct{})
	r.applierDone = make(chan struct{})
	go r.applier()

	pollCtx, stopPoll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if r.cfg.WALPollInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pollWAL(pollCtx)
		}()
	}
	defer func() {
		stopPoll()
		r.stopApplier()
		wg.Wait()
		r.setState(StateStopped)
	}()

	delay := r.cfg.MinBackoff
	for {
		began := time.Now()
		streamed, err := r.session(ctx)
		r.ready.Store(false)
		r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.connected }, 0)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, ErrPrerequisite), errors.Is(err, errSink):
			r.log.Error("cdc: stopping", "err", err)
			return err
		}
		r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.reconnects }, 1)
		if streamed && time.Since(began) > 10*time.Second {
			delay = r.cfg.MinBackoff
		}
		wait := delay/2 + rand.N(delay/2+1)
		switch {
		case errors.Is(err, ErrSlotInUse):
			wait = min(wait, maxSlotInUseWait)
			r.setState(StateStandby)
			r.log.Info("cdc: slot in use by another connection, waiting", "err", err, "retry_in", wait)
		case errors.Is(err, ErrSlotInvalidated): // the next session recreates it
			wait = r.cfg.MinBackoff
			r.log.Info("cdc: the slot was invalidated; recreating it", "err", err)
		default:
			r.log.Warn("cdc: replication interrupted; retrying", "err", err, "retry_in", wait)
		}
		delay = min(delay*2, r.cfg.MaxBackoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

var errSink = errors.New("sink refused a transaction")

// maxSlotInUseWait bounds the wait before retrying a slot in use (55006):
// a walsender that outlives its owner by a moment is taken over quickly.
const maxSlotInUseWait = 5 * time.Second

// applier calls the sink, in order, for what the reader hands on, so that
// a slow sink never keeps the reader from sending status updates.
func (r *Reader) applier() {
	defer close(r.applierDone)
	for {
		select {
		case <-r.stopApply:
			return
		case h := <-r.queue:
			if err := r.apply(h); err != nil {
				r.applyErr <- err
				return
			}
			r.pending.Add(-1)
		}
	}
}

// apply gives h to the sink and records what it took.
func (r *Reader) apply(h handoff) error {
	if h.start != nil {
		if ss, ok := r.sink.(StreamStarter); ok {
			if err := ss.StartStream(h.start.epoch, h.start.from, h.start.horizon); err != nil {
				return fmt.Errorf("%w: starting the stream: %w", errSink, err)
			}
		}
		return nil
	}
	if h.txn != nil {
		if err := r.sink.Apply(h.txn); err != nil {
			return fmt.Errorf("%w: xid %d at %s: %w", errSink, h.txn.Xid, h.txn.CommitLSN, err)
		}
		if !h.txn.Partial {
			r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.transactions }, 1)
		}
		r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.changes }, float64(len(h.txn.Changes)))
	}
	if h.end != 0 {
		r.taken.Store(uint64(h.end))
	}
	return nil
}

func (r *Reader) stopApplier() {
	select {
	case <-r.stopApply:
	default:
		close(r.stopApply)
	}
	select {
	case <-r.applierDone:
	case <-time.After(shutdownTimeout):
		r.log.Warn("cdc: the sink did not return within the shutdown timeout")
	}
}

// session runs one connection: setup, then streaming until an error or
// ctx is done. streamed reports whether it got as far as streaming.
func (r *Reader) session(ctx context.Context) (streamed bool, err error) {
	r.setState(StateConnecting)
	if g, ok := r.sink.(OwnerGate); ok {
		if err := g.CanOwn(); err != nil {
			return false, err
		}
	}
	owner, err := r.acquireOwnership(ctx)
	if err != nil {
		return false, err
	}
	defer owner.release()
	sqlConn, err := connectSQL(ctx, r.cfg)
	if err != nil {
		return false, classifyConnect(err, r.cfg.URL)
	}
	defer sqlConn.Close(context.WithoutCancel(ctx))
	if r.prepare != nil {
		if err := r.prepare(ctx, sqlConn); err != nil {
			return false, fmt.Errorf("preparing the session: %w", err)
		}
	}

	if err := CheckTables(ctx, sqlConn, r.cfg.Tables); err != nil {
		return false, err
	}
	if err := ensurePublication(ctx, sqlConn, r.cfg); err != nil {
		return false, err
	}
	repl, err := connectReplication(ctx, r.cfg)
	if err != nil {
		return false, classifyConnect(err, r.cfg.URL)
	}
	defer repl.Close(context.WithoutCancel(ctx))

	if err := r.prepareSlot(ctx, sqlConn); err != nil {
		return false, err
	}
	created, err := ensureSlot(ctx, sqlConn, repl, r.cfg)
	if err != nil {
		return false, err
	}
	if created {
		r.log.Info("cdc: created replication slot")
		r.startNewSlot(ctx, sqlConn)
	}
	if epoch, err := streamEpoch(ctx, sqlConn, r.cfg.Slot, created); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		r.log.Warn("cdc: recording the stream epoch in snorky.stream failed; continuing without one", "err", err)
	} else if epoch != "" && epoch != r.Epoch() {
		r.epoch.Store(&epoch)
		r.log.Info("cdc: stream epoch", "epoch", epoch)
	}
	r.st.lookup = sqlLookup(sqlConn)
	r.st.reset()

	// Resume after what was handed on in this process (the applier still
	// holds it); on a fresh process from the slot's confirmed position.
	start := r.handed
	from := r.handed
	if from == 0 {
		var text string
		if err := sqlConn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&text); err != nil {
			return false, fmt.Errorf("reading the slot's confirmed position: %w", err)
		}
		lsn, err := pglogrepl.ParseLSN(text)
		if err != nil {
			return false, fmt.Errorf("reading the slot's confirmed position: %w", err)
		}
		from = lsn
	}
	if sp, ok := r.sink.(StreamPositioner); ok {
		held, err := sp.StreamPosition(ctx, r.Epoch())
		if errors.Is(err, ErrSinkStopped) {
			return false, fmt.Errorf("%w: %w", errSink, err)
		}
		if err != nil {
			return false, fmt.Errorf("reading the sink's stream position: %w", err)
		}
		if held > from {
			r.log.Info("cdc: streaming after the sink's stream position", "slot_or_handed", from, "stream", held)
			start, from = held, held
		}
	}
	if _, ok := r.sink.(StreamStarter); ok {
		// The horizon: this process owns the slot, whose position stays
		// where it is until we stream, so every transaction this snapshot
		// did not see commits after it and will be streamed.
		var horizon string
		if err := sqlConn.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&horizon); err != nil {
			return false, fmt.Errorf("reading the snapshot horizon: %w", err)
		}
		if err := r.handOffStart(ctx, streamStart{epoch: r.Epoch(), from: from, horizon: horizon}); err != nil {
			return false, err
		}
	}
	pubArg := strings.ReplaceAll(pgx.Identifier{r.cfg.Publication}.Sanitize(), "'", "''")
	err = pglogrepl.StartReplication(ctx, repl, r.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names '" + pubArg + "'",
			"messages 'true'",
		},
	})
	if err != nil {
		return false, classifySetup(fmt.Errorf("starting replication: %w", err))
	}
	r.ready.Store(true)
	r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.connected }, 1)
	r.log.Info("cdc: streaming", "lsn", start)

	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		if r.cfg.HeartbeatInterval > 0 {
			r.heartbeat(hbCtx)
		}
	}()
	err = r.stream(ctx, repl)
	stopHeartbeat()
	<-hbDone
	if ctx.Err() != nil {
		r.shutdown(repl)
		return true, nil
	}
	return true, err
}

// shutdown waits for the sink's Apply in progress and sends the final
// status update.
func (r *Reader) shutdown(repl *pgconn.PgConn) {
	r.stopApplier()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := r.sendStatus(ctx, repl, false, false); err != nil {
		r.log.Warn("cdc: final status update failed", "err", err)
		return
	}
	r.log.Info("cdc: final status update sent", "lsn", r.ConfirmedLSN())
}

// flushPosition is the position safe to confirm: the end of the latest
// transaction the sink took, or the latest keepalive or heartbeat position
// when nothing is in flight (no open transaction, nothing waiting for the
// sink).
//
// A sink that holds what it took (ConfirmLimiter: the replay window) caps
// the position at its limit, so that PostgreSQL resends what it holds
// after a restart; pastLimit lifts that cap while nothing is in flight
// (see the keepalive handling in stream).
func (r *Reader) flushPosition(pastLimit bool) LSN {
	pos := r.TakenLSN()
	idle := !r.st.inTxn() && r.pending.Load() == 0
	if idle && r.idleEnd > pos {
		pos = r.idleEnd
	}
	_, gate := r.sink.(ConfirmGate)
	if cl, ok := r.sink.(ConfirmLimiter); ok && (gate || !(pastLimit && idle)) {
		if lim, limited := cl.ConfirmLimit(); limited && pos > lim {
			pos = lim
		}
	}
	return pos
}

func (r *Reader) sendStatus(ctx context.Context, conn *pgconn.PgConn, replyRequested, pastLimit bool) error {
	pos := r.flushPosition(pastLimit)
	if c := r.ConfirmedLSN(); pos < c {
		pos = c // never move backwards
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos,
		WALFlushPosition: pos,
		WALApplyPosition: pos,
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("sending standby status: %w", err)
	}
	r.confirmed.Store(uint64(pos))
	r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.confirmedLSN }, float64(pos))
	if r.serverEnd > pos {
		r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.lagBytes }, float64(r.serverEnd-pos))
	} else {
		r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.lagBytes }, 0)
	}
	return nil
}

var errDeadLink = errors.New("no message from PostgreSQL within the receive timeout")

// stream receives and decodes until an error or ctx is done.
func (r *Reader) stream(ctx context.Context, conn *pgconn.PgConn) error {
	interval := r.cfg.StatusInterval
	nextStatus := time.Now()
	lastRecv := time.Now()
	// One receive context per status period, not one per message.
	var recv struct {
		ctx      context.Context
		cancel   context.CancelFunc
		deadline time.Time
	}
	defer func() {
		if recv.cancel != nil {
			recv.cancel()
		}
	}()
	for {
		select {
		case err := <-r.applyErr:
			return err
		default:
		}
		now := time.Now()
		if silent := now.Sub(lastRecv); silent >= r.cfg.ReceiveTimeout {
			r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.deadLinks }, 1)
			r.log.Warn("cdc: dead replication link: nothing received from PostgreSQL within database.dead_link_timeout; reconnecting",
				"silent_for", silent.Round(time.Millisecond), "dead_link_timeout", r.cfg.ReceiveTimeout)
			return fmt.Errorf("%w (%v)", errDeadLink, r.cfg.ReceiveTimeout)
		}
		if !now.Before(nextStatus) {
			if err := r.sendStatus(ctx, conn, now.Sub(lastRecv) >= interval, false); err != nil {
				return err
			}
			nextStatus = now.Add(interval)
		}
		// Wake for the next status update or when the link would count
		// as dead, whichever comes first.
		wake := nextStatus
		if dead := lastRecv.Add(r.cfg.ReceiveTimeout); dead.Before(wake) {
			wake = dead
		}
		if recv.ctx == nil || !recv.deadline.Equal(wake) {
			if recv.cancel != nil {
				recv.cancel()
			}
			recv.ctx, recv.cancel = context.WithDeadline(ctx, wake)
			recv.deadline = wake
		}
		msg, err := conn.ReceiveMessage(recv.ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receiving: %w", err)
		}
		lastRecv = time.Now()
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return fmt.Errorf("%w: empty CopyData", ErrMalformed)
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return fmt.Errorf("%w: %v", ErrMalformed, err)
				}
				r.noteServerEnd(pkm.ServerWALEnd)
				r.idleEnd = max(r.idleEnd, pkm.ServerWALEnd)
				if pkm.ReplyRequested {
					// PostgreSQL asks for a reply when it has heard nothing
					// for half of wal_sender_timeout, and, repeatedly, when
					// it shuts down: a walsender ends only once everything it
					// sent is confirmed. So with nothing in flight the
					// reply confirms everything taken, past the sink's
					// limit: a fast shutdown never waits for us. The cost is
					// a shorter replay window should this process restart
					// before the window refills (clients older than it get
					// an explicit must-refetch).
					if err := r.sendStatus(ctx, conn, false, true); err != nil {
						return err
					}
					nextStatus = time.Now().Add(interval)
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return fmt.Errorf("%w: %v", ErrMalformed, err)
				}
				r.noteServerEnd(xld.ServerWALEnd)
				r.metrics.setGauge(func(m *Metrics) prometheus.Gauge { return m.receivedLSN }, float64(xld.WALStart))
				if r.tap != nil {
					r.tap(xld.WALData)
				}
				txn, err := r.st.handle(ctx, xld.WALData)
				if err != nil {
					return err
				}
				if chunk := r.st.takeChunk(); chunk != nil {
					if err := r.handOff(ctx, conn, chunk, &nextStatus); err != nil {
						return err
					}
				}
				if lsn := r.st.takeMarker(); lsn != 0 {
					r.idleEnd = max(r.idleEnd, lsn)
					r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.heartbeats }, 1)
				}
				if txn != nil {
					if err := r.handOff(ctx, conn, txn, &nextStatus); err != nil {
						return err
					}
					lastRecv = time.Now()
				}
			}
		case *pgproto3.ErrorResponse:
			return classifySetup(fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m)))
		case *pgproto3.CopyDone:
			return errors.New("replication stream ended by the server")
		}
	}
}

func (r *Reader) noteServerEnd(lsn LSN) {
	if lsn > r.serverEnd {
		r.serverEnd = lsn
	}
}

// handOff gives a committed transaction to the applier, sending status
// updates while the sink is busy so that PostgreSQL never times the
// connection out.
func (r *Reader) handOff(ctx context.Context, conn *pgconn.PgConn, txn *Txn, nextStatus *time.Time) error {
	h := handoff{txn: txn, end: txn.EndLSN}
	if len(txn.Changes) == 0 && len(txn.Messages) == 0 && !txn.TooLarge && !txn.chunked {
		h.txn = nil
	}
	if r.quick && r.pending.Load() == 0 && len(txn.Changes) <= maxQuickChanges {
		// Nothing is queued or being applied: the sink takes it here, in
		// order, without waking the applier.
		r.markHanded(h.end)
		return r.apply(h)
	}
	r.pending.Add(1)
	// Most hand-offs find room at once: no timer for them.
	select {
	case r.queue <- h:
		r.markHanded(h.end)
		return nil
	default:
	}
	var waited time.Time
	for {
		timer := time.NewTimer(time.Until(*nextStatus))
		select {
		case r.queue <- h:
			timer.Stop()
			r.markHanded(h.end)
			if !waited.IsZero() {
				r.metrics.addCounter(func(m *Metrics) prometheus.Counter { return m.handoffWait }, time.Since(waited).Seconds())
			}
			return nil
		case <-timer.C:
			if waited.IsZero() {
				waited = time.Now()
			}
			if err := r.sendStatus(ctx, conn, false, false); err != nil {
				r.pending.Add(-1)
				return err
			}
			*nextStatus = time.Now().Add(r.cfg.StatusInterval)
		case err := <-r.applyErr:
			timer.Stop()
			r.pending.Add(-1)
			return err
		case <-ctx.Done():
			timer.Stop()
			r.pending.Add(-1)
			return ctx.Err()
		}
	}
}

// markHanded records end (0: none) as the latest position handed on.
func (r *Reader) markHanded(end LSN) {
	if end != 0 {
		r.handed = end
	}
}

// handOffStart queues a session start for the sink, in order with the
// transactions.
func (r *Reader) handOffStart(ctx context.Context, st streamStart) error {
	r.pending.Add(1)
	select {
	case r.queue <- handoff{start: &st}:
		return nil
	case err := <-r.applyErr:
		r.pending.Add(-1)
		return err
	case <-ctx.Done():
		r.pending.Add(-1)
		return ctx.Err()
	}
}

// heartbeatTimeout bounds one heartbeat (connecting included).
const heartbeatTimeout = 10 * time.Second

// heartbeat writes a non-transactional logical message every
// HeartbeatInterval, on a connection of its own, until ctx is done. The
// message comes back on the stream in WAL order and its position is
// confirmed when nothing is in flight, so the slot advances even when this
// database has no traffic while others of the cluster write (R4).
func (r *Reader) heartbeat(ctx context.Context) {
	t := time.NewTicker(r.cfg.HeartbeatInterval)
	defer t.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := func() error {
			hctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
			defer cancel()
			if conn == nil {
				c, err := connectSQL(hctx, r.cfg)
				if err != nil {
					return err
				}
				conn = c
			}
			_, err := conn.Exec(hctx, `SELECT pg_logical_emit_message(false, $1, '')`, HeartbeatPrefix)
			return err
		}()
		switch {
		case err == nil:
			if failing {
				r.log.Info("cdc: heartbeats resumed")
			}
			failing = false
		case ctx.Err() != nil:
			return
		default:
			if conn != nil { // start afresh on the next tick
				conn.Close(context.Background())
				conn = nil
			}
			if !failing {
				r.log.Warn("cdc: heartbeat failed; the slot may retain WAL while this database is idle", "err", err)
			} else {
				r.log.Debug("cdc: heartbeat failed", "err", err)
			}
			failing = true
		}
	}
}

// pollWAL updates the slot's WAL metrics (retained bytes, wal_status,
// safe_wal_size) and Status from pg_replication_slots.
func (r *Reader) pollWAL(ctx context.Context) {
	t := time.NewTicker(r.cfg.WALPollInterval)
	defer t.Stop()
	for {
		r.pollSlot(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RetainedWAL returns the bytes of WAL the slot of cfg retains
// (pg_current_wal_lsn() - restart_lsn), or 0 when the slot does not exist.
func RetainedWAL(ctx context.Context, cfg Config) (int64, error) {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connectSQL(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, `SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::int8
		FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return n, err
}
