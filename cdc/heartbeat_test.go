package cdc

import (
	"context"
	"encoding/binary"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/migrations"
)

// TestHeartbeatReleasesWAL is T10(b) at CI scale: our database is idle
// while another database of the same cluster writes about 50 MB; the
// heartbeats and keepalives confirmed with nothing in flight let the slot
// advance, so it retains less than 16 MiB at the end.
func TestHeartbeatReleasesWAL(t *testing.T) {
	srv := pgtest.StartTB(t, pglocal.Options{})
	ours := pgtest.NewDatabaseAt(t, srv.URL("postgres"))
	other := pgtest.NewDatabaseAt(t, srv.URL("postgres"))
	execSQL(t, ours, `CREATE TABLE t (id int PRIMARY KEY)`)
	cfg := testConfig(ours, "t")
	cfg.StatusInterval = 200 * time.Millisecond
	cfg.HeartbeatInterval = 500 * time.Millisecond
	r := startReader(t, cfg, &collector{})

	// About 50 MB of WAL in the other database: 50 transactions of 1 MB of
	// incompressible rows each.
	execSQL(t, other, `CREATE TABLE big (id serial PRIMARY KEY, pad text)`,
		`ALTER TABLE big ALTER COLUMN pad SET STORAGE EXTERNAL`)
	before := queryString(t, ours, `SELECT pg_current_wal_lsn()::text`)
	for range 50 {
		execSQL(t, other, `INSERT INTO big (pad)
			SELECT (SELECT string_agg(md5(random()::text || i || g), '') FROM generate_series(1, 1024) i)
			FROM generate_series(1, 32) g`)
	}
	written := queryString(t, ours, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8::text`, before)
	t.Logf("WAL written by the other database: %s bytes", written)

	retained := func() int64 {
		n, err := RetainedWAL(context.Background(), cfg)
		if err != nil {
			t.Fatalf("retained WAL: %v", err)
		}
		return n
	}
	var last int64
	eventually(t, 60*time.Second, "the slot retains < 16 MiB", func() bool {
		execSQL(t, other, `CHECKPOINT`) // logs running_xacts: restart_lsn can move
		last = retained()
		return last < 16<<20
	})
	t.Logf("retained WAL at the end: %d bytes; heartbeats received: %v", last, testutil.ToFloat64(r.metrics.heartbeats))
	if n := testutil.ToFloat64(r.metrics.heartbeats); n < 1 {
		t.Errorf("heartbeats received: got %v, want at least 1", n)
	}
}

var epochRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// TestStreamEpoch: without the snorky schema the reader has no epoch and
// streams; with it, creating the slot records a random epoch in
// snorky.stream, a restart on the same slot keeps it, and a recreated slot
// gets a new one.
func TestStreamEpoch(t *testing.T) {
	run := func(t *testing.T, cfg Config) string {
		t.Helper()
		r := NewReader(cfg, &collector{}, nil, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		eventually(t, 30*time.Second, "reader ready", r.Ready)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		return r.Epoch()
	}
	t.Run("without migrations", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
		if got := run(t, testConfig(url, "t")); got != "" {
			t.Fatalf("Epoch: got %q, want none without the snorky schema", got)
		}
	})
	t.Run("with migrations", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := migrations.Up(context.Background(), conn); err != nil {
			t.Fatalf("migrations.Up: %v", err)
		}
		conn.Close(context.Background())
		cfg := testConfig(url, "t")
		first := run(t, cfg)
		if !epochRE.MatchString(first) {
			t.Fatalf("Epoch: got %q, want 16 hex digits", first)
		}
		if got := queryString(t, url, `SELECT epoch FROM snorky.stream WHERE slot = $1`, cfg.Slot); got != first {
			t.Fatalf("snorky.stream: got %q, want %q", got, first)
		}
		if again := run(t, cfg); again != first {
			t.Fatalf("Epoch after a restart on the same slot: got %q, want %q", again, first)
		}
		execSQL(t, url, fmt.Sprintf(`SELECT pg_drop_replication_slot('%s')`, cfg.Slot))
		if fresh := run(t, cfg); fresh == first || !epochRE.MatchString(fresh) {
			t.Fatalf("Epoch of a recreated slot: got %q, want a new one (old %q)", fresh, first)
		}
	})
}

// pgoutput messages built by hand for the marker tests.
func msgBegin(xid uint32) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, 0x500)
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, xid)
}

func msgCommit(end uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, end-8)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 0)
}

func msgLogical(transactional bool, lsn uint64, prefix string) []byte {
	b := []byte{'M', 0}
	if transactional {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint64(b, lsn)
	b = append(append(b, prefix...), 0)
	return binary.BigEndian.AppendUint32(b, 0)
}

// TestStreamMarkers: a non-transactional message received outside a
// transaction marks a position with nothing unreceived before it; a
// transactional one does not.
func TestStreamMarkers(t *testing.T) {
	tests := []struct {
		name string
		msgs [][]byte
		want LSN
	}{
		{"heartbeat", [][]byte{msgLogical(false, 0x900, HeartbeatPrefix)}, 0x900},
		{"latest of two", [][]byte{msgLogical(false, 0x900, HeartbeatPrefix), msgLogical(false, 0xA00, "other")}, 0xA00},
		{"after a transaction", [][]byte{msgBegin(7), msgCommit(0x800), msgLogical(false, 0x900, HeartbeatPrefix)}, 0x900},
		{"transactional", [][]byte{msgBegin(7), msgLogical(true, 0x700, "snorky"), msgCommit(0x800)}, 0},
		{"inside a transaction", [][]byte{msgBegin(7), msgLogical(false, 0x700, HeartbeatPrefix)}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newStream(fakeLookup, "snorky")
			for i, m := range tc.msgs {
				if _, err := st.handle(context.Background(), m); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			if got := st.takeMarker(); got != tc.want {
				t.Errorf("marker: got %X, want %X", got, tc.want)
			}
			if got := st.takeMarker(); got != 0 {
				t.Errorf("marker taken twice: got %X, want 0", got)
			}
		})
	}
}

// TestFlushPositionIdle: a keepalive or heartbeat position is confirmed
// only when nothing is in flight (R2).
func TestFlushPositionIdle(t *testing.T) {
	tests := []struct {
		name    string
		taken   uint64
		idle    LSN
		pending int64
		inTxn   bool
		want    LSN
	}{
		{"idle", 0x100, 0x200, 0, false, 0x200},
		{"waiting for the sink", 0x100, 0x200, 1, false, 0x100},
		{"open transaction", 0x100, 0x200, 0, true, 0x100},
		{"idle position behind", 0x300, 0x200, 0, false, 0x300},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Reader{st: newStream(fakeLookup, "snorky"), idleEnd: tc.idle}
			r.taken.Store(tc.taken)
			r.pending.Store(tc.pending)
			if tc.inTxn {
				if _, err := r.st.handle(context.Background(), msgBegin(1)); err != nil {
					t.Fatal(err)
				}
			}
			if got := r.flushPosition(false); got != tc.want {
				t.Errorf("flushPosition: got %X, want %X", got, tc.want)
			}
		})
	}
}
