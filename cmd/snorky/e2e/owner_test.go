package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/migrations"
)

// readyz returns the status and body of GET /readyz (0 when unreachable).
func (p *proc) readyz() (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.back + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// slotDetail returns /readyz's detail.slot (the reader's cdc.Status).
func (p *proc) slotDetail() map[string]any {
	_, body := p.readyz()
	var v struct {
		Detail struct {
			Slot map[string]any `json:"slot"`
		} `json:"detail"`
	}
	_ = json.Unmarshal([]byte(body), &v)
	return v.Detail.Slot
}

// seqs returns the seq column of the deltas, in the order received.
func seqs(ds []delta) []int64 {
	out := make([]int64, len(ds))
	for i := range ds {
		out[i] = num(ds[i].row(), "seq")
	}
	return out
}

// TestStandbyTakesOverAfterKill is reliability.md T19a: two servers on one
// slot. The second is a standby: /readyz says so (503, detail.slot.state),
// its subscriber receives nothing and its reader hands on no transaction
// while the first owns the slot. The owner is killed with SIGKILL; the
// standby takes over (measured: kill → /readyz 200), its subscriber gets
// each row once in commit order (the owner's unconfirmed window replayed
// from the slot, then the new rows), and the owner's resumable client
// resumes on the standby with exactly the rows written after the kill.
func TestStandbyTakesOverAfterKill(t *testing.T) {
	const before, after = 50, 50
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE rows (seq int PRIMARY KEY)`)
	if _, err := migrations.Up(context.Background(), db); err != nil { // the epoch in snorky.stream
		t.Fatalf("migrations.Up: %v", err)
	}
	slot := randomName("e2e_owner_")
	cfg := serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Row: {table: rows}
dealers:
  AllRows: {model: Row, kind: broadcast}
`}
	owner := startServer(t, cfg)
	owner.waitReady(60 * time.Second)
	standby := startServer(t, cfg)
	standby.waitListening(30 * time.Second)
	waitFor(t, 30*time.Second, "the second server reports standby", func() bool {
		st, body := standby.readyz()
		return st == http.StatusServiceUnavailable && strings.Contains(body, "standby")
	})
	if v, ok := standby.metric("snorky_cdc_standby"); !ok || v != 1 {
		t.Errorf("standby's snorky_cdc_standby: got %v (found %v), want 1", v, ok)
	}
	if d := standby.slotDetail(); d["state"] != "standby" || d["slot"] != slot {
		t.Errorf("standby's /readyz detail.slot: got %v, want state standby and slot %s", d, slot)
	}
	// The log line comes through the process's pipe, maybe after /readyz
	// already said standby.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(standby.log.String(), `owner="pid `) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(standby.log.String(), `owner="pid `) {
		t.Errorf("standby's log does not name the owner's session:\n%s", tail(standby.log.String(), 2000))
	}

	allRows := []map[string]any{item("AllRows", nil)}
	subOwner := owner.dial()
	ownerRes := subOwner.acquireResumable(owner.mustAuthorize(allRows, ""))
	subStandby := standby.dial()
	subStandby.acquire(standby.mustAuthorize(allRows, ""))

	for i := range before {
		mustExec(t, db, `INSERT INTO rows VALUES ($1)`, i)
	}
	checkDelivery(t, "owner's subscriber", subOwner.waitDeltas(before, 30*time.Second), "seq", seqRange(0, before-1))
	// The owner's subscriber has every row, so a standby that streamed
	// would have delivered them by now too.
	if n := subStandby.count(); n != 0 {
		t.Errorf("standby's subscriber before the takeover: got %d deltas, want 0", n)
	}
	if v, ok := standby.metric("snorky_cdc_transactions_total"); !ok || v != 0 {
		t.Errorf("standby's snorky_cdc_transactions_total before the takeover: got %v (found %v), want 0", v, ok)
	}

	owner.kill()
	killedAt := time.Now()
	// Generous correctness bound: wal_sender_timeout + backoff (25 s).
	waitFor(t, 25*time.Second, "the standby streams", func() bool {
		if standby.exited() {
			t.Fatalf("the standby exited: %v", standby.err)
		}
		return standby.readyStatus() == http.StatusOK
	})
	takeover := time.Since(killedAt)
	for i := before; i < before+after; i++ {
		mustExec(t, db, `INSERT INTO rows VALUES ($1)`, i)
	}
	last := int64(before + after - 1)
	waitFor(t, 30*time.Second, "the standby's subscriber to receive the last row", func() bool {
		got := seqs(subStandby.received())
		return len(got) > 0 && got[len(got)-1] == last
	})
	got := subStandby.received()
	firstRow := got[0].At.Sub(killedAt)
	// PostgreSQL resends what the owner had not confirmed (its replay
	// window): those rows may reach the standby's subscriber too, once
	// each, in commit order, before the new ones.
	replayed := 0
	for _, v := range seqs(got) {
		if v < before {
			replayed++
		}
	}
	// The replayed rows are the owner's unconfirmed tail: from the first
	// one replayed to the last written before the kill.
	from := int64(before)
	if replayed > 0 {
		from = seqs(got)[0]
	}
	checkDelivery(t, "standby's subscriber (replayed rows, then those written after the kill)", got, "seq", seqRange(from, last))
	// The owner's client resumes on the standby (same slot, same epoch)
	// and gets exactly the rows written after the kill.
	moved := standby.dial()
	if _, msg := moved.resume(ownerRes, subOwner.lastOffset(ownerRes)); msg != "" {
		t.Errorf("the owner's client resuming on the standby: got error %q, want a response", msg)
	} else {
		checkDelivery(t, "the owner's client resumed on the standby", moved.waitDeltas(after, 30*time.Second), "seq", seqRange(before, last))
	}
	if v, ok := standby.metric("snorky_cdc_standby"); !ok || v != 0 {
		t.Errorf("snorky_cdc_standby after the takeover: got %v (found %v), want 0", v, ok)
	}
	if d := standby.slotDetail(); d["state"] != "streaming" {
		t.Errorf("/readyz detail.slot after the takeover: got %v, want state streaming", d)
	}
	if n := strings.Count(standby.log.String(), "took over the slot"); n != 1 {
		t.Errorf("standby's log: %d takeover lines, want 1", n)
	}
	t.Logf("takeover: /readyz 200 on the standby %v after SIGKILL of the owner; its first delta %v after the kill; %d rows of before the kill replayed from the slot",
		takeover.Round(time.Millisecond), firstRow.Round(time.Millisecond), replayed)
}

// TestSlotInvalidatedWhileServerStopped is reliability.md T9 with the
// server as a subprocess: a cluster that keeps at most 4 MB of WAL for a
// slot; the server is stopped, WAL is written and checkpointed until the
// slot is lost; the restarted server logs one error naming the fix,
// recreates the slot with a new epoch, counts it in /metrics, becomes ready
// (measured) without ever exiting, answers a client resuming from before
// "Must refetch: the stream was reset", and delivers the rows written
// afterwards.
func TestSlotInvalidatedWhileServerStopped(t *testing.T) {
	pg := pgtest.StartTB(t, pglocal.Options{
		InitdbArgs: []string{"--wal-segsize=1"},
		Settings:   map[string]string{"max_slot_wal_keep_size": "4MB", "max_wal_size": "4MB", "min_wal_size": "2MB"},
	})
	url := pgtest.NewDatabaseAt(t, pg.URL("postgres"))
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE rows (seq int PRIMARY KEY)`)
	mustExec(t, db, `CREATE TABLE filler (id serial PRIMARY KEY, pad text)`)
	ctx := context.Background()
	if _, err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	slot := randomName("e2e_lost_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Row: {table: rows}
dealers:
  AllRows: {model: Row, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	epoch := func() string {
		var e string
		if err := db.QueryRow(ctx, `SELECT epoch FROM snorky.stream WHERE slot = $1`, slot).Scan(&e); err != nil {
			t.Fatalf("reading the epoch: %v", err)
		}
		return e
	}
	oldEpoch := epoch()
	client := p.dial()
	res := client.acquireResumable(p.mustAuthorize([]map[string]any{item("AllRows", nil)}, ""))
	mustExec(t, db, `INSERT INTO rows VALUES (-1)`)
	client.waitDeltas(1, 30*time.Second)
	p.stop()

	var mb int
	waitFor(t, 2*time.Minute, "wal_status lost", func() bool {
		mustExec(t, db, `INSERT INTO filler (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 2000) g`)
		mustExec(t, db, `SELECT pg_switch_wal()`)
		mustExec(t, db, `CHECKPOINT`)
		mb += 2
		var status *string
		err := db.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status)
		return err == nil && status != nil && *status == "lost"
	})

	p2 := p.restart()
	started := time.Now()
	p2.waitReady(60 * time.Second)
	ready := time.Since(started)
	if newEpoch := epoch(); newEpoch == oldEpoch {
		t.Errorf("epoch after the invalidation: got %q again, want a new one", newEpoch)
	}
	if v, ok := p2.metric("snorky_cdc_slot_invalidations_total"); !ok || v != 1 {
		t.Errorf("snorky_cdc_slot_invalidations_total: got %v (found %v), want 1", v, ok)
	}
	errLines := 0
	for _, l := range strings.Split(p2.log.String(), "\n") {
		if strings.Contains(l, "level=ERROR") {
			errLines++
			if !strings.Contains(l, "max_slot_wal_keep_size") {
				t.Errorf("error line without the fix: %s", l)
			}
		}
	}
	if errLines != 1 {
		t.Errorf("error lines in the restarted server's log: got %d, want 1", errLines)
	}
	back := p2.dial()
	if _, msg := back.resume(res, client.lastOffset(res)); msg != "Must refetch: the stream was reset" {
		t.Errorf("resuming across the invalidation: got %q, want %q", msg, "Must refetch: the stream was reset")
	}
	sub := p2.dial()
	sub.acquire(p2.mustAuthorize([]map[string]any{item("AllRows", nil)}, ""))
	for i := range 10 {
		mustExec(t, db, `INSERT INTO rows VALUES ($1)`, i)
	}
	checkDelivery(t, "subscriber after the recreation", sub.waitDeltas(10, 30*time.Second), "seq", seqRange(0, 9))
	if p2.exited() {
		t.Errorf("the server exited: %v", p2.err)
	}
	t.Logf("slot lost after about %d MB of WAL; restarted server ready %v after start (slot recreated, new epoch)", mb, ready.Round(time.Millisecond))
}
