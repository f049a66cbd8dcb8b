package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// resumable is a client's resume state (spec §3.9): the result of its
// resumable acquire or last resume, and the greatest offset it has seen.
type resumable struct {
	Epoch  string `json:"epoch"`
	Offset string `json:"offset"`
	Resume string `json:"resume"`
}

// acquireResumable acquires token with resumable: true.
func (c *wsClient) acquireResumable(token string) resumable {
	c.t.Helper()
	r := c.call("datasync", "acquireSubscription", map[string]any{"token": token, "resumable": true})
	if r.Type != "response" {
		c.t.Fatalf("acquireSubscription: got %s %q, want a response", r.Type, r.Message)
	}
	var res resumable
	if err := json.Unmarshal(r.Data, &res); err != nil || res.Epoch == "" || res.Resume == "" || !isOffset(res.Offset) {
		c.t.Fatalf("acquireSubscription result %s: want {epoch, offset, resume}", r.Data)
	}
	return res
}

// lastOffset is the greatest offset c has seen: in a delta, a position or
// the result res (one subscription per client here).
func (c *wsClient) lastOffset(res resumable) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := res.Offset
	for _, d := range c.deltas {
		last = max(last, d.Offset)
	}
	for _, n := range c.notes {
		if n.Type == "position" && n.Epoch == res.Epoch {
			last = max(last, n.Offset)
		}
	}
	return last
}

// resume calls resumeSubscription and returns the result or the error text.
func (c *wsClient) resume(res resumable, offset string) (resumable, string) {
	c.t.Helper()
	r := c.call("datasync", "resumeSubscription", map[string]any{"resume": res.Resume, "epoch": res.Epoch, "offset": offset})
	if r.Type != "response" {
		return resumable{}, r.Message
	}
	var out resumable
	if err := json.Unmarshal(r.Data, &out); err != nil {
		c.t.Fatalf("resumeSubscription result %s: %v", r.Data, err)
	}
	return out, ""
}

// TestResumeAcrossKill is reliability.md T1 with resume (issue 10): the
// server is killed with SIGKILL during a 10,000-row burst (100 transactions
// of 100 rows) and restarted after 1 s; each of 5 resumable subscribers
// reconnects and resumes from the last offset it saw. Without any
// client-side deduplication each ends with exactly the 10,000 deltas, in
// strictly increasing offsets, every transaction whole.
func TestResumeAcrossKill(t *testing.T) {
	testResumeAcrossRestart(t, func(p *proc) { p.kill() })
}

// TestResumeAcrossGracefulStop is T2 with resume: SIGTERM during the burst,
// plus a publishDeltas batch accepted just before the stop, which reaches
// every resumed client exactly once.
func TestResumeAcrossGracefulStop(t *testing.T) {
	testResumeAcrossRestart(t, func(p *proc) { p.stop() })
}

func testResumeAcrossRestart(t *testing.T, stop func(*proc)) {
	const (
		txns        = 100
		rowsPerTxn  = 100
		subscribers = 5
		rows        = txns * rowsPerTxn
	)
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE burst (seq int PRIMARY KEY, tx int NOT NULL)`)
	slot := randomName("e2e_resume_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Migrate: true, Body: `models:
  Row: {table: burst}
  Note: {}
dealers:
  AllRows: {model: Row, kind: broadcast}
  AllNotes: {model: Note, kind: broadcast}
datasync: {position_interval: 200ms, resume_wait: 20s}
`})
	p.waitReady(60 * time.Second)
	items := []map[string]any{item("AllRows", nil), item("AllNotes", nil)}
	clients := make([]*wsClient, subscribers)
	res := make([]resumable, subscribers)
	for i := range clients {
		clients[i] = p.dial()
		res[i] = clients[i].acquireResumable(p.mustAuthorize(items, ""))
	}
	epoch := res[0].Epoch

	// The writer commits the burst on its own connection, at a pace that
	// puts the stop in its middle.
	var written atomic.Int64
	writerDone := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for tx := range txns {
			batch := make([]any, 0, 2)
			_ = batch
			if _, err := db.Exec(ctx, `INSERT INTO burst SELECT g, $1 FROM generate_series($2::int, $3::int) g`,
				tx, tx*rowsPerTxn, tx*rowsPerTxn+rowsPerTxn-1); err != nil {
				writerDone <- fmt.Errorf("transaction %d: %w", tx, err)
				return
			}
			written.Add(rowsPerTxn)
			time.Sleep(15 * time.Millisecond)
		}
		writerDone <- nil
	}()
	waitFor(t, 60*time.Second, "a third of the burst at subscriber 0", func() bool { return clients[0].count() >= rows/3 })
	// A publishDeltas batch accepted just before the stop.
	if _, rpcErr, err := p.backend("datasync_backend", "publishDeltas", map[string]any{"deltas": []any{
		map[string]any{"type": "insert", "model": "Note", "data": map[string]any{"id": 1, "text": "just before the stop"}},
	}}); err != nil || rpcErr != "" {
		t.Fatalf("publishDeltas: %v %s", err, rpcErr)
	}
	stop(p)
	stoppedAt := written.Load()
	time.Sleep(time.Second)
	p2 := p.restart()
	p2.waitListening(60 * time.Second)
	restarted := time.Now()

	// Each client reconnects and resumes from the greatest offset it saw.
	second := make([]*wsClient, subscribers)
	for i, c := range clients {
		<-c.done // the old connection is gone
		from := c.lastOffset(res[i])
		second[i] = p2.dial()
		r, errText := second[i].resume(res[i], from)
		if errText != "" {
			t.Fatalf("client %d: resumeSubscription from %s: %s", i, from, errText)
		}
		if r.Epoch != epoch {
			t.Fatalf("client %d: epoch changed across the restart: %s → %s", i, epoch, r.Epoch)
		}
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	for i := range clients {
		second[i].waitDeltas(rows+1-clients[i].count(), 60*time.Second)
	}
	caughtUp := time.Since(restarted)
	time.Sleep(300 * time.Millisecond) // anything extra would show now
	for i := range clients {
		all := append(clients[i].received(), second[i].received()...)
		var rowsOnly []delta
		notes := 0
		checkOffsets(t, fmt.Sprintf("client %d", i), all)
		for _, d := range all {
			if d.Model == "Note" {
				notes++
				continue
			}
			rowsOnly = append(rowsOnly, d)
		}
		if len(rowsOnly) != rows || notes != 1 {
			t.Errorf("client %d: got %d row deltas and %d notes, want %d and 1", i, len(rowsOnly), notes, rows)
		}
		burstTxns(t, fmt.Sprintf("client %d", i), rowsOnly, rowsPerTxn, false)
	}
	t.Logf("stopped after %d of %d rows were written; every client caught up %v after the restart", stoppedAt, rows, caughtUp.Round(time.Millisecond))
}
