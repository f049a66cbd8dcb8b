package cdc

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// freezer is a TCP proxy to PostgreSQL that can stop forwarding, dropping
// bytes both ways while keeping every socket open: to PostgreSQL, a client
// that vanished without closing its connections (its host died, or the
// network dropped behind a proxy). Its kernel still acknowledges what
// PostgreSQL sends, so TCP keepalives do not find it.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, up)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(up, c)
		go f.pipe(c, up)
	}
}

// pipe copies src to dst, dropping what it reads while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !f.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !f.frozen.Load() && errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// via returns u with its host and port replaced by the proxy's.
func (f *freezer) via(t *testing.T, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pu.Host = f.ln.Addr().String()
	return pu.String()
}

// TestStandbyTakesOverFromVanishedOwner is T19a for an owner that vanishes
// without closing its sockets (host crash, network drop): the owner's
// connections go through a proxy that is frozen. PostgreSQL ends the
// owner's lock session after idle_session_timeout (the owner's keep-alive
// queries no longer arrive) and its walsender after wal_sender_timeout, and
// the standby takes over. An advisory lock held on a plain idle session
// would be held for hours and the standby would wait forever.
func TestStandbyTakesOverFromVanishedOwner(t *testing.T) {
	srv := pgtest.StartTB(t, pglocal.Options{Settings: map[string]string{"wal_sender_timeout": "4s"}})
	direct := pgtest.NewDatabaseAt(t, srv.URL("postgres"))
	execSQL(t, direct, `CREATE TABLE t (id int PRIMARY KEY)`)
	proxy := newFreezer(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port())))

	cfg := testConfig(direct, "t")
	cfg.ReceiveTimeout = 3 * time.Second // the owner's lock session: idle_session_timeout 3s
	ownerCfg := cfg
	ownerCfg.URL = proxy.via(t, direct)

	first, second := &collector{}, &collector{}
	r1 := NewReader(ownerCfg, first, nil, nil)
	runReader(t, r1)
	eventually(t, 30*time.Second, "owner ready", r1.Ready)
	r2 := NewReader(cfg, second, nil, nil)
	run2 := runReader(t, r2)
	eventually(t, 30*time.Second, "second reader is a standby", func() bool { return r2.State() == StateStandby })

	execSQL(t, direct, `INSERT INTO t VALUES (1)`)
	eventually(t, 30*time.Second, "owner got row 1", func() bool { return len(first.changes()) == 1 })
	end, _ := pglogrepl.ParseLSN(queryString(t, direct, `SELECT pg_current_wal_lsn()::text`))
	eventually(t, 30*time.Second, "owner confirmed row 1", func() bool {
		l, _ := pglogrepl.ParseLSN(queryString(t, direct, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot))
		return l >= end
	})

	proxy.frozen.Store(true)
	frozenAt := time.Now()
	execSQL(t, direct, `INSERT INTO t VALUES (2)`)
	eventually(t, 60*time.Second, "the standby took over and got row 2", func() bool {
		if err := run2.exited(); err != nil {
			t.Fatal(err)
		}
		return len(second.changes()) >= 1
	})
	t.Logf("takeover from a vanished owner: row 2 delivered by the standby %v after the freeze (idle_session_timeout 3s, wal_sender_timeout 4s)",
		time.Since(frozenAt).Round(time.Millisecond))
	if got := second.changes(); len(got) != 1 || string(got[0].New[0].Value) != "2" {
		t.Errorf("standby's changes: got %d (first %s), want only row 2", len(got), describe(got[0]))
	}
	if got := len(first.changes()); got != 1 {
		t.Errorf("owner's changes: got %d, want 1 (row 1)", got)
	}
}

// TestSlotInUseRetryIsBounded: a connection that is not a snorky reader
// streams from the slot (55006). The reader reports standby and retries
// at least every maxSlotInUseWait, however long its backoff has grown, so
// it streams soon after the slot is released.
func TestSlotInUseRetryIsBounded(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	cfg := testConfig(url, "t")
	cfg.MinBackoff, cfg.MaxBackoff = time.Second, time.Minute
	// Create the slot and publication, then hold the slot.
	r0 := NewReader(cfg, &collector{}, nil, nil)
	run0 := runReader(t, r0)
	eventually(t, 30*time.Second, "first reader ready", r0.Ready)
	if err := run0.stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, err := connectReplication(ctx, cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	err = pglogrepl.StartReplication(ctx, holder, cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + cfg.Publication + "'"},
	})
	if err != nil {
		t.Fatal(err)
	}

	r := NewReader(cfg, &collector{}, nil, NewMetrics(nil))
	runReader(t, r)
	eventually(t, 30*time.Second, "standby while the slot is held", func() bool { return r.State() == StateStandby })
	// Long enough for an unbounded backoff (1s, 2s, 4s, 8s, …) to grow
	// past maxSlotInUseWait.
	time.Sleep(12 * time.Second)
	if r.Ready() {
		t.Fatalf("ready while another connection holds the slot")
	}
	holder.Close(context.Background())
	released := time.Now()
	eventually(t, maxSlotInUseWait+10*time.Second, "streaming after the slot is released", r.Ready)
	t.Logf("streaming %v after the slot was released (retries: %v)", time.Since(released).Round(time.Millisecond), testutil.ToFloat64(r.metrics.reconnects))
}

// TestSlotCreationWaitsForOpenTransaction is T19(b): starting fresh while
// a transaction holding an xid is open, the reader says it waits for slot
// creation (not a crash loop), and streams soon after that transaction
// ends.
func TestSlotCreationWaitsForOpenTransaction(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	blocker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(context.Background())
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	r := NewReader(testConfig(url, "t"), &collector{}, nil, NewMetrics(nil))
	run := runReader(t, r)
	eventually(t, 30*time.Second, "waiting for slot creation", func() bool { return r.State() == StateCreatingSlot })
	if err := r.Health(); err == nil || !strings.Contains(err.Error(), "waiting for slot creation") {
		t.Errorf("Health: got %v, want waiting for slot creation", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	eventually(t, 30*time.Second, "streaming after the transaction ended", func() bool {
		if err := run.exited(); err != nil {
			t.Fatal(err)
		}
		return r.Ready()
	})
	t.Logf("streaming %v after the blocking transaction ended (reconnects: %v)", time.Since(ended).Round(time.Millisecond), testutil.ToFloat64(r.metrics.reconnects))
	if n := testutil.ToFloat64(r.metrics.reconnects); n != 0 {
		t.Errorf("reconnects: got %v, want 0", n)
	}
}
