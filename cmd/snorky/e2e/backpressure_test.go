package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// TestStalledClients is reliability.md T6: every client stops reading for
// 25 s (2.5 × wal_sender_timeout, set to 10 s) while writes continue. The
// reader never waits on clients, so the walsender is never reset (its PID
// is unchanged); the server's RSS stays within its bounds; the clients,
// closed as slow consumers, resume and get every row.
func TestStalledClients(t *testing.T) {
	const clients = 5
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `ALTER SYSTEM SET wal_sender_timeout = '10s'`)
	mustExec(t, db, `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		ctx := context.Background()
		db.Exec(ctx, `ALTER SYSTEM RESET wal_sender_timeout`)
		db.Exec(ctx, `SELECT pg_reload_conf()`)
	})
	mustExec(t, db, `CREATE TABLE st (seq int PRIMARY KEY, payload text NOT NULL)`)
	slot := randomName("e2e_stall_")
	p := startPlainServer(t, serverConfig{DatabaseURL: url, Slot: slot, Migrate: true, SendQueue: "1MiB", Body: `models:
  St: {table: st}
dealers:
  AllSt: {model: St, kind: broadcast}
datasync: {position_interval: 500ms}
`})
	p.waitReady(60 * time.Second)
	pid := func() int {
		var n int
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := db.QueryRow(ctx, `SELECT coalesce((SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1), 0)`, slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := pid()
	if before == 0 {
		t.Fatal("no walsender for the slot")
	}
	cs := make([]*wsClient, clients)
	res := make([]resumable, clients)
	for i := range cs {
		cs[i] = p.dial()
		res[i] = cs[i].acquireResumable(p.mustAuthorize([]map[string]any{item("AllSt", nil)}, ""))
		cs[i].stall() // reads nothing from now on
	}
	_, rssBefore := p.rss()
	// 25 s of writes: about 40 transactions of 20 rows a second.
	stop := rssSampler(p)
	deadline := time.Now().Add(25 * time.Second)
	seq := 0
	for time.Now().Before(deadline) {
		mustExec(t, db, `INSERT INTO st SELECT g, repeat('p', 200) FROM generate_series($1::int, $1::int + 19) g`, seq)
		seq += 20
		time.Sleep(25 * time.Millisecond)
		if got := pid(); got != before {
			t.Fatalf("the walsender changed from PID %d to %d: the replication connection was reset", before, got)
		}
	}
	peak := stop()
	t.Logf("%d rows in 25 s with every client stalled: walsender PID %d unchanged; server RSS peak %.1f MiB (before %.1f MiB)", seq, before, float64(peak)/(1<<20), float64(rssBefore)/(1<<20))
	// The window (64 MiB) and the queues (1 MiB each) bound memory.
	if limit := int64(64<<20 + 64<<20 + clients<<20); peak > limit {
		t.Errorf("server RSS peaked at %.1f MiB, want below %d MiB", float64(peak)/(1<<20), limit>>20)
	}
	// Every client resumes and gets every row exactly once.
	for i, c := range cs {
		c.unstall()
		waitFor(t, 60*time.Second, fmt.Sprintf("client %d's connection to end (4008) or catch up", i), func() bool {
			return c.exited() || c.count() == seq
		})
		got := c.count()
		if !c.exited() {
			continue // it kept up after all
		}
		next := p.dial()
		if _, errText := next.resume(res[i], c.lastOffset(res[i])); errText != "" {
			t.Fatalf("client %d: resume: %s", i, errText)
		}
		next.waitDeltas(seq-got, 60*time.Second)
		checkDelivery(t, fmt.Sprintf("client %d, across its two connections", i), append(c.received(), next.received()...), "seq", seqRange(0, int64(seq-1)))
	}
}

// TestUnacquiredSubscriptionsHoldNothing: 2,000 authorised subscriptions
// that are never acquired hold no buffer (an acquire replays the window),
// so 3,500 rows inserted meanwhile grow the server's RSS by less than
// 32 MiB.
func TestUnacquiredSubscriptionsHoldNothing(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE un (id int PRIMARY KEY, payload text NOT NULL)`)
	slot := randomName("e2e_unacq_")
	p := startPlainServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Un: {table: un}
dealers:
  AllUn: {model: Un, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	for range 2000 {
		p.mustAuthorize([]map[string]any{item("AllUn", nil)}, "")
	}
	before, _ := p.rss()
	for i := range 35 {
		mustExec(t, db, `INSERT INTO un SELECT g, repeat('u', 200) FROM generate_series($1::int, $1::int + 99) g`, i*100)
	}
	// Wait until the server has taken the rows: a new subscriber gets the
	// next row.
	c := p.dial()
	c.acquire(p.mustAuthorize([]map[string]any{item("AllUn", nil)}, ""))
	mustExec(t, db, `INSERT INTO un VALUES (100000, 'marker')`)
	c.waitDeltas(1, 30*time.Second)
	after, _ := p.rss()
	growth := after - before
	t.Logf("2,000 unacquired subscriptions, 3,500 rows: server RSS %.1f → %.1f MiB (+%.1f MiB)", float64(before)/(1<<20), float64(after)/(1<<20), float64(growth)/(1<<20))
	if growth > 32<<20 {
		t.Errorf("RSS grew by %.1f MiB, want less than 32 MiB", float64(growth)/(1<<20))
	}
}
