package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/migrations"
)

// smallWALCluster starts a cluster that loses a slot quickly (T9): 1 MB WAL
// segments, and a slot may retain at most 4 MB.
func smallWALCluster(t *testing.T) *pglocal.Server {
	t.Helper()
	return pgtest.StartTB(t, pglocal.Options{
		InitdbArgs: []string{"--wal-segsize=1"},
		Settings: map[string]string{
			"max_slot_wal_keep_size": "4MB",
			"max_wal_size":           "4MB",
			"min_wal_size":           "2MB",
		},
	})
}

// migratedDatabase creates a database on srv with table t (published) and
// table filler (not published), and the snorky schema (snorky.stream).
func migratedDatabase(t *testing.T, srv *pglocal.Server) string {
	t.Helper()
	url := pgtest.NewDatabaseAt(t, srv.URL("postgres"))
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE TABLE filler (id serial PRIMARY KEY, pad text)`)
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := migrations.Up(context.Background(), conn); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	return url
}

// loseSlot writes WAL to the unpublished table and checkpoints until
// PostgreSQL invalidates the slot (wal_status lost).
func loseSlot(t *testing.T, url, slot string) {
	t.Helper()
	var written int
	eventually(t, 2*time.Minute, "wal_status lost", func() bool {
		// About 2 MB of WAL per round.
		execSQL(t, url, `INSERT INTO filler (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 2000) g`,
			`SELECT pg_switch_wal()`, `CHECKPOINT`)
		written += 2
		return queryString(t, url, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, slot) == "lost"
	})
	t.Logf("slot %s lost after about %d MB of WAL", slot, written)
}

// errorLog keeps the messages of the records of level Error logged
// through its handler.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *errorLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// handler returns a handler that writes to the test log and records errors.
func (l *errorLog) handler(t *testing.T) slog.Handler {
	return recording{slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}), l}
}

type recording struct {
	slog.Handler
	log *errorLog
}

func (h recording) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelError {
		h.log.mu.Lock()
		h.log.msgs = append(h.log.msgs, rec.Message)
		h.log.mu.Unlock()
	}
	return h.Handler.Handle(ctx, rec)
}

func (h recording) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recording{h.Handler.WithAttrs(attrs), h.log}
}

func (h recording) WithGroup(name string) slog.Handler {
	return recording{h.Handler.WithGroup(name), h.log}
}

// running is a Reader's Run in a goroutine of the test.
type running struct {
	cancel context.CancelFunc
	done   chan error

	mu       sync.Mutex
	finished bool
	err      error
}

// runReader runs r until stop or the end of the test; Run must then
// return nil.
func runReader(t *testing.T, r *Reader) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	x := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		if err := x.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return x
}

func (x *running) collect(block bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.finished {
		return
	}
	if block {
		select {
		case x.err = <-x.done:
			x.finished = true
		case <-time.After(30 * time.Second):
			x.err, x.finished = errors.New("Run did not return within 30s of cancel"), true
		}
		return
	}
	select {
	case x.err = <-x.done:
		x.finished = true
	default:
	}
}

// stop cancels Run and returns its result.
func (x *running) stop() error {
	x.cancel()
	x.collect(true)
	return x.err
}

// exited returns an error when Run has returned (it must not before stop).
func (x *running) exited() error {
	x.collect(false)
	if x.finished {
		return fmt.Errorf("Run returned early: %v", x.err)
	}
	return nil
}

// TestSlotInvalidatedWhileStopped is T9: the slot is lost while no reader
// runs; the next reader logs one error, recreates the slot with a new
// epoch, counts it, and streams the rows written afterwards. Run does not
// return (no crash loop).
func TestSlotInvalidatedWhileStopped(t *testing.T) {
	srv := smallWALCluster(t)
	url := migratedDatabase(t, srv)
	cfg := testConfig(url, "t")
	cfg.WALPollInterval = 200 * time.Millisecond

	first := &collector{}
	r1 := NewReader(cfg, first, nil, nil)
	run1 := runReader(t, r1)
	eventually(t, 30*time.Second, "first reader ready", r1.Ready)
	execSQL(t, url, `INSERT INTO t VALUES (1)`)
	eventually(t, 30*time.Second, "row 1", func() bool { return len(first.changes()) == 1 })
	oldEpoch := r1.Epoch()
	if !epochRE.MatchString(oldEpoch) {
		t.Fatalf("Epoch: got %q, want 16 hex digits", oldEpoch)
	}
	// Stop the first reader ("the server is stopped").
	if err := run1.stop(); err != nil {
		t.Fatalf("first Run: %v", err)
	}

	loseSlot(t, url, cfg.Slot)
	// What PostgreSQL answers when streaming from the lost slot is read as
	// ErrSlotInvalidated (SQLSTATE 55000), not as a prerequisite.
	if err := startReplicationError(t, cfg); !errors.Is(err, ErrSlotInvalidated) || errors.Is(err, ErrPrerequisite) {
		t.Errorf("START_REPLICATION on the lost slot: got %v, want ErrSlotInvalidated", err)
	} else {
		t.Logf("START_REPLICATION on the lost slot: %v", err)
	}
	// Rows committed while the slot is lost are not delivered: the new slot
	// starts after them (the epoch tells clients to refetch).
	execSQL(t, url, `INSERT INTO t VALUES (2)`)

	errLog := &errorLog{}
	second := &collector{}
	r2 := NewReader(cfg, second, slog.New(errLog.handler(t)), NewMetrics(nil))
	began := time.Now()
	run2 := runReader(t, r2)
	eventually(t, 30*time.Second, "the second reader streams", func() bool {
		if err := run2.exited(); err != nil {
			t.Fatal(err)
		}
		return r2.Ready()
	})
	t.Logf("slot recreated and streaming %v after start", time.Since(began).Round(time.Millisecond))

	newEpoch := r2.Epoch()
	if newEpoch == oldEpoch || !epochRE.MatchString(newEpoch) {
		t.Errorf("Epoch after invalidation: got %q, want a new one (old %q)", newEpoch, oldEpoch)
	}
	if got := queryString(t, url, `SELECT epoch FROM snorky.stream WHERE slot = $1`, cfg.Slot); got != newEpoch {
		t.Errorf("snorky.stream epoch: got %q, want %q", got, newEpoch)
	}
	if got := queryString(t, url, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot); got == "lost" || got == "" {
		t.Errorf("wal_status of the recreated slot: got %q, want reserved", got)
	}
	if got := testutil.ToFloat64(r2.metrics.invalidations); got != 1 {
		t.Errorf("snorky_cdc_slot_invalidations_total: got %v, want 1", got)
	}
	if got := r2.Status().Invalidations; got != 1 {
		t.Errorf("Status().Invalidations: got %d, want 1", got)
	}
	if got := testutil.ToFloat64(r2.metrics.reconnects); got > 3 {
		t.Errorf("reconnects: got %v, want at most 3", got)
	}
	errs := errLog.lines()
	if len(errs) != 1 || !strings.Contains(errs[0], "max_slot_wal_keep_size") || !strings.Contains(errs[0], "must fetch") {
		t.Errorf("error log lines: got %q, want one naming max_slot_wal_keep_size and the refetch", errs)
	}

	execSQL(t, url, `INSERT INTO t VALUES (3)`)
	eventually(t, 30*time.Second, "row 3 after the recreation", func() bool { return len(second.changes()) >= 1 })
	if got := second.changes(); len(got) != 1 || string(got[0].New[0].Value) != "3" {
		var rows []string
		for _, c := range got {
			rows = append(rows, describe(c))
		}
		t.Errorf("second reader's changes: got %q, want only row 3", rows)
	}
	eventually(t, 10*time.Second, "wal_status polled", func() bool { return r2.Status().WALStatus == "reserved" })
	if got := testutil.ToFloat64(r2.metrics.walStatus.WithLabelValues("reserved")); got != 1 {
		t.Errorf(`snorky_cdc_slot_wal_status{status="reserved"}: got %v, want 1`, got)
	}
	if got := testutil.ToFloat64(r2.metrics.safeWAL); got <= 0 {
		t.Errorf("snorky_cdc_slot_safe_wal_size_bytes: got %v, want > 0 with max_slot_wal_keep_size 4MB", got)
	}
	if err := r2.Health(); err != nil {
		t.Errorf("Health: got %v, want nil", err)
	}
	if err := run2.exited(); err != nil {
		t.Fatal(err)
	}
}

// startReplicationError starts replication from cfg's slot on a
// connection of its own and returns the error, classified as the reader
// does.
func startReplicationError(t *testing.T, cfg Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connectReplication(ctx, cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + cfg.Publication + "'"},
	})
	if err == nil {
		// PostgreSQL may report it on the stream instead.
		_, err = conn.ReceiveMessage(ctx)
	}
	return classifySetup(err)
}

// TestSlotInvalidatedWhileStreaming is T9 while running: the sink stalls,
// so the reader confirms nothing and the slot falls behind until a
// checkpoint invalidates it and PostgreSQL ends the walsender. The reader
// reconnects, recreates the slot with a new epoch, and goes on: once the
// sink resumes it takes what was already handed on, then the new stream.
func TestSlotInvalidatedWhileStreaming(t *testing.T) {
	srv := smallWALCluster(t)
	url := migratedDatabase(t, srv)
	cfg := testConfig(url, "t")
	sink := &collector{gate: make(chan struct{})}
	r := NewReader(cfg, sink, slog.New(slog.NewTextHandler(testWriter{t}, nil)), NewMetrics(nil))
	run := runReader(t, r)
	eventually(t, 30*time.Second, "reader ready", r.Ready)
	oldEpoch := r.Epoch()

	// Row 0 is taken and confirmed; row 1 stalls in the sink.
	execSQL(t, url, `INSERT INTO t VALUES (0)`)
	sink.gate <- struct{}{}
	eventually(t, 30*time.Second, "row 0 confirmed", func() bool { return r.TakenLSN() > 0 && r.ConfirmedLSN() >= r.TakenLSN() })
	execSQL(t, url, `INSERT INTO t VALUES (1)`)
	eventually(t, 30*time.Second, "row 1 handed to the stalled sink", func() bool { return r.pending.Load() == 1 })
	loseSlot(t, url, cfg.Slot)
	eventually(t, 60*time.Second, "a new epoch", func() bool {
		if err := run.exited(); err != nil {
			t.Fatal(err)
		}
		return r.Epoch() != oldEpoch && r.Ready()
	})
	// At least one: while the sink stalls, the WAL the test keeps writing
	// until it sees "lost" can outrun the recreated slot as well (seen on a
	// loaded machine), and each loss is counted.
	if got := testutil.ToFloat64(r.metrics.invalidations); got < 1 {
		t.Errorf("snorky_cdc_slot_invalidations_total: got %v, want at least 1", got)
	}
	// No position of the old slot is confirmed to the new one: while the
	// stalled sink still holds the old slot's transaction, the reader's
	// confirmed position (status updates, the metric) is the new slot's
	// start, not the old slot's row 0.
	var restart string
	eventually(t, 10*time.Second, "the new slot's restart_lsn", func() bool {
		restart = queryString(t, url, `SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot)
		return restart != ""
	})
	if start, err := pglogrepl.ParseLSN(restart); err != nil || r.ConfirmedLSN() < start {
		t.Errorf("reader's confirmed position: got %s, want at least the new slot's restart_lsn %s", r.ConfirmedLSN(), restart)
	}
	close(sink.gate)
	execSQL(t, url, `INSERT INTO t VALUES (2)`)
	eventually(t, 30*time.Second, "rows 1 and 2", func() bool { return len(sink.changes()) >= 3 })
	var got []string
	for _, c := range sink.changes() {
		got = append(got, string(c.New[0].Value))
	}
	if strings.Join(got, ",") != "0,1,2" {
		t.Errorf("rows: got %v, want [0 1 2]", got)
	}
}

func TestInvalidatedError(t *testing.T) {
	tests := []struct {
		name string
		err  pgconn.PgError
		want bool
	}{
		{"PostgreSQL 15", pgconn.PgError{Code: "55000", Message: `cannot read from logical replication slot "s"`,
			Detail: "This slot has been invalidated because it exceeded the maximum reserved size."}, true},
		{"PostgreSQL 16", pgconn.PgError{Code: "55000", Message: `can no longer get changes from replication slot "s"`}, true},
		{"wal_level", pgconn.PgError{Code: "55000", Message: `logical decoding requires wal_level >= logical`}, false},
		{"slot in use", pgconn.PgError{Code: "55006", Message: `replication slot "s" is active for PID 1`}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := invalidatedError(&tc.err); got != tc.want {
				t.Errorf("invalidatedError: got %v, want %v", got, tc.want)
			}
			wrapped := classifySetup(&tc.err)
			if got := errors.Is(wrapped, ErrSlotInvalidated); got != tc.want {
				t.Errorf("classifySetup is ErrSlotInvalidated: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name      string
		ready     bool
		state     State
		walStatus string
		health    string // substring of Health's error; "" for nil
		warning   string // substring of Status().Warning; "" for none
	}{
		{"connecting", false, StateConnecting, "", "not streaming", ""},
		{"standby", false, StateStandby, "reserved", "standby", ""},
		{"stopped", false, StateStopped, "", "stopped", ""},
		{"creating slot", false, StateCreatingSlot, "", "waiting for slot creation", ""},
		{"streaming", true, StateConnecting, "reserved", "", ""},
		{"streaming, extended", true, StateConnecting, "extended", "", ""},
		{"streaming, unreserved", true, StateConnecting, "unreserved", "", "max_slot_wal_keep_size"},
		{"streaming, lost", true, StateConnecting, "lost", "", "max_slot_wal_keep_size"},
		{"standby, unreserved", false, StateStandby, "unreserved", "standby", "about to be lost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReader(Config{Slot: "s"}, nil, nil, nil)
			r.ready.Store(tc.ready)
			r.setState(tc.state)
			r.slotWAL.Store(&slotWAL{exists: true, status: tc.walStatus, safeSize: -1})
			err := r.Health()
			switch {
			case tc.health == "" && err != nil:
				t.Errorf("Health: got %v, want nil", err)
			case tc.health != "" && (err == nil || !strings.Contains(err.Error(), tc.health)):
				t.Errorf("Health: got %v, want an error containing %q", err, tc.health)
			}
			w := r.Status().Warning
			switch {
			case tc.warning == "" && w != "":
				t.Errorf("Status().Warning: got %q, want none", w)
			case tc.warning != "" && !strings.Contains(w, tc.warning):
				t.Errorf("Status().Warning: got %q, want one containing %q", w, tc.warning)
			}
		})
	}
}

func TestOwnerLockKey(t *testing.T) {
	for _, slot := range []string{"snorky", "a", "t_0123456789ab", strings.Repeat("z", 63)} {
		k := ownerLockKey(slot)
		if k < 0 || k != ownerLockKey(slot) {
			t.Errorf("ownerLockKey(%q): got %d, want a stable non-negative key", slot, k)
		}
	}
	if ownerLockKey("a") == ownerLockKey("b") {
		t.Errorf("ownerLockKey: slots a and b share a key")
	}
}
