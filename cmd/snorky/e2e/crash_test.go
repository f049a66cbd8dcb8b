package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// lsnSample is one reading of the slot's confirmed_flush_lsn.
type lsnSample struct {
	at  time.Time
	lsn uint64
}

// sampleSlot reads the slot's confirmed_flush_lsn every 20 ms until stop
// is closed, and returns the samples.
func sampleSlot(t *testing.T, url, slot string, stop <-chan struct{}) <-chan []lsnSample {
	conn := dbConnect(t, url)
	out := make(chan []lsnSample, 1)
	go func() {
		var samples []lsnSample
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			lsn, _, err := slotState(ctx, conn, slot)
			cancel()
			if err == nil {
				samples = append(samples, lsnSample{time.Now(), lsn})
			}
			select {
			case <-stop:
				out <- samples
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// holdSlot streams from the slot on a replication connection of its own,
// so that a server started now waits (SQLSTATE 55006) until release is
// called. It confirms nothing: the slot's position is unchanged.
func holdSlot(t *testing.T, url, slot string) (release func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, url+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + slot + "'"},
	})
	if err != nil {
		conn.Close(ctx)
		t.Fatalf("holding slot %s: %v", slot, err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	return release
}

// burstTxn is one transaction of the burst as a client saw it.
type burstTxn struct {
	key  string // offset prefix
	end  uint64 // end LSN
	seqs []int64
}

// burstTxns checks one client's deltas of the burst table (all inserts, in
// strictly increasing offset order, each transaction's rows the contiguous
// seq block of one writer transaction) and groups them by transaction.
// partialLast allows the last transaction to be incomplete (a client whose
// server was killed while sending it).
func burstTxns(t *testing.T, who string, ds []delta, rowsPerTxn int, partialLast bool) []burstTxn {
	t.Helper()
	var out []burstTxn
	prev := ""
	for i := range ds {
		d := &ds[i]
		if d.Type != "insert" || d.Model != "Row" {
			t.Errorf("%s: delta %d: got %s, want an insert of model Row", who, i, d.Raw)
			continue
		}
		if !isOffset(d.Offset) {
			t.Errorf("%s: delta %d: offset %q is not 32 upper-case hex digits", who, i, d.Offset)
		}
		if d.Offset <= prev {
			t.Errorf("%s: delta %d: offset %s after %s, want strictly increasing", who, i, d.Offset, prev)
		}
		prev = d.Offset
		seq, tx := num(d.Data, "seq"), num(d.Data, "tx")
		if seq/int64(rowsPerTxn) != tx {
			t.Errorf("%s: delta %d: seq %d in writer transaction %d", who, i, seq, tx)
		}
		if n := len(out); n == 0 || out[n-1].key != d.txn() {
			out = append(out, burstTxn{key: d.txn(), end: d.endLSN()})
		}
		last := &out[len(out)-1]
		if want := tx*int64(rowsPerTxn) + int64(len(last.seqs)); seq != want {
			t.Errorf("%s: transaction %s: row %d has seq %d, want %d (a transaction's rows in order and contiguous)", who, last.key, len(last.seqs), seq, want)
		}
		last.seqs = append(last.seqs, seq)
	}
	for i, tx := range out {
		if len(tx.seqs) == rowsPerTxn || partialLast && i == len(out)-1 {
			continue
		}
		t.Errorf("%s: transaction %s has %d rows, want %d (a transaction delivered in part)", who, tx.key, len(tx.seqs), rowsPerTxn)
	}
	return out
}

// isOffset reports whether s has the offset form of spec §3.6.
func isOffset(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// TestCrashSafetyKillDuringBurst is reliability.md T1 at CI scale: the
// server is killed with SIGKILL in the middle of a 10,000-row burst (100
// transactions of 100 rows) after it confirmed a position mid-burst, and
// restarted. A DataSync subscription does not survive a restart (tokens
// belong to one process), so each of the 5 subscribers before the kill is
// paired with one that subscribes after the restart, before the restarted
// server streams (it is made to wait on the slot). Together, after
// deduplication by offset, each pair must hold every row exactly once, in
// commit order, every transaction whole; PostgreSQL redelivers only
// transactions after the slot's confirmed position, and every transaction
// at or below that position must have reached the subscribers before the
// kill (the observable form of R2: the server never confirmed what it had
// not taken). The sampled confirmed_flush_lsn only grows (checked), so the
// check against the final position covers every sample. Samples are not
// compared with what clients held at that instant: a keepalive position may
// legitimately lie beyond the last transaction (with none in between), and
// delivery trails the engine by a few milliseconds.
func TestCrashSafetyKillDuringBurst(t *testing.T) {
	const (
		txns        = 100
		rowsPerTxn  = 100
		subscribers = 5
		rows        = txns * rowsPerTxn
	)
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE burst (seq int PRIMARY KEY, tx int NOT NULL)`)
	slot := randomName("e2e_crash_")
	// A replay window of one second, so that the server confirms
	// mid-burst (it confirms only what left the window, R2/R3).
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot,
		DatabaseExtra: "history: {max_age: 1s}", TokensExtra: "acquire_timeout: 1s", Body: `models:
  Row: {table: burst}
dealers:
  AllRows: {model: Row, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	allRows := []map[string]any{item("AllRows", nil)}
	pre := make([]*wsClient, subscribers)
	for i := range pre {
		pre[i] = p.dial()
		pre[i].acquire(p.mustAuthorize(allRows, ""))
	}
	ctx := context.Background()
	before, _, err := slotState(ctx, db, slot)
	if err != nil {
		t.Fatal(err)
	}

	stopSampling := make(chan struct{})
	samplesc := sampleSlot(t, url, slot, stopSampling)
	var samples []lsnSample
	stopSamples := func() []lsnSample {
		if stopSampling != nil {
			close(stopSampling)
			stopSampling = nil
			samples = <-samplesc
		}
		return samples
	}
	t.Cleanup(func() { stopSamples() })

	// The writer paces its transactions so that the burst outlasts the
	// reader's 5 s status interval: the server confirms mid-burst.
	wconn := dbConnect(t, url)
	var committed sync.Map // tx → commit time
	writerDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(80 * time.Millisecond)
		defer tick.Stop()
		for tx := range txns {
			<-tick.C
			_, err := wconn.Exec(ctx, `INSERT INTO burst (seq, tx) SELECT g, $1 FROM generate_series($2::int, $3::int) g`,
				tx, tx*rowsPerTxn, tx*rowsPerTxn+rowsPerTxn-1)
			if err != nil {
				writerDone <- fmt.Errorf("writer transaction %d: %w", tx, err)
				return
			}
			committed.Store(tx, time.Now())
		}
		writerDone <- nil
	}()
	writerFinished := func() bool { _, ok := committed.Load(txns - 1); return ok }

	// Kill as soon as the slot's confirmed position has advanced during
	// the burst, and while the writer is still writing.
	var midBurst uint64
	waitFor(t, 60*time.Second, "a confirmed position advanced mid-burst", func() bool {
		l, _, err := slotState(ctx, db, slot)
		if err == nil && l > before && pre[0].count() > 0 {
			midBurst = l
			return true
		}
		return writerFinished()
	})
	if writerFinished() {
		t.Fatalf("the writer finished before the server confirmed anything mid-burst (confirmed_flush_lsn stayed %s)", pglogrepl.LSN(before))
	}
	// Let two more transactions reach the subscribers, so that some
	// transactions delivered before the kill lie above the confirmed
	// position and are redelivered after the restart.
	waitFor(t, 30*time.Second, "two transactions after the confirmed position", func() bool {
		ds := pre[0].received()
		above := map[string]bool{}
		for _, d := range ds {
			if d.endLSN() > midBurst {
				above[d.txn()] = true
			}
		}
		return len(above) >= 2 || writerFinished()
	})
	p.kill()
	killedAt := time.Now()
	// What the kernel had sent before the kill still arrives; then each
	// connection ends.
	receivedAtKill := make([]int, subscribers)
	for i, c := range pre {
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("subscriber %d's connection did not end after the kill", i)
		}
		receivedAtKill[i] = c.count()
	}

	// The walsender notices the dead connection and releases the slot; what
	// it confirmed is now final for this run.
	var final uint64
	waitFor(t, 60*time.Second, "the slot released by the killed server's walsender", func() bool {
		l, active, err := slotState(ctx, db, slot)
		final = l
		return err == nil && !active
	})

	// Restart, and subscribe before the new process streams: it waits on
	// the slot (55006) until release.
	release := holdSlot(t, url, slot)
	p2 := p.restart()
	p2.waitListening(30 * time.Second)
	post := make([]*wsClient, subscribers)
	for i := range post {
		post[i] = p2.dial()
		post[i].acquire(p2.mustAuthorize(allRows, ""))
	}
	if st := p2.readyStatus(); st == 200 {
		t.Fatalf("the restarted server is ready although the test holds slot %s", slot)
	}
	release()
	releasedAt := time.Now()
	p2.waitReady(60 * time.Second)
	readyAt := time.Now()

	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	lastSeq := func(ds []delta) bool { return len(ds) > 0 && num(ds[len(ds)-1].Data, "seq") == rows-1 }
	for i, c := range post {
		waitFor(t, 60*time.Second, fmt.Sprintf("subscriber %d after the restart to receive the burst's last row", i), func() bool {
			return lastSeq(c.received())
		})
	}
	samples = stopSamples()

	// Each pair: the union, deduplicated by offset, is the burst.
	var redelivered, lostRows int
	// Catch-up: when the subscribers after the restart held every
	// transaction committed before the slot was released.
	var caughtUp time.Time
	committedBefore := func(end time.Time) map[int64]bool {
		out := map[int64]bool{}
		committed.Range(func(k, v any) bool {
			if v.(time.Time).Before(end) {
				out[int64(k.(int))] = true
			}
			return true
		})
		return out
	}(releasedAt)
	var lastLatency time.Duration
	for i := range subscribers {
		preD, postD := pre[i].received(), post[i].received()
		preT := burstTxns(t, fmt.Sprintf("subscriber %d before the kill", i), preD, rowsPerTxn, true)
		postT := burstTxns(t, fmt.Sprintf("subscriber %d after the restart", i), postD, rowsPerTxn, false)
		for _, d := range postD {
			if committedBefore[num(d.Data, "tx")] && d.At.After(caughtUp) {
				caughtUp = d.At
			}
		}
		if v, ok := committed.Load(txns - 1); ok {
			lastLatency = max(lastLatency, postD[len(postD)-1].At.Sub(v.(time.Time)))
		}
		// Deduplicated by offset (what a client does with a redelivery),
		// in offset order, the deltas must be the burst exactly: a seq
		// under two offsets is a duplicate that deduplication cannot
		// remove.
		byOffset := map[string]delta{}
		for _, ds := range [][]delta{preD, postD} {
			for _, d := range ds {
				if o, ok := byOffset[d.Offset]; ok {
					if s := num(o.Data, "seq"); s != num(d.Data, "seq") {
						t.Errorf("subscriber %d: offset %s carried seq %d before the kill and %d after", i, d.Offset, s, num(d.Data, "seq"))
					}
					continue
				}
				byOffset[d.Offset] = d
			}
		}
		deduped := make([]delta, 0, len(byOffset))
		distinct := map[int64]bool{}
		for _, d := range byOffset {
			deduped = append(deduped, d)
			distinct[num(d.Data, "seq")] = true
		}
		sort.Slice(deduped, func(a, b int) bool { return deduped[a].Offset < deduped[b].Offset })
		if !checkDelivery(t, fmt.Sprintf("subscriber %d, deduplicated by offset", i), deduped, "seq", seqRange(0, rows-1)) {
			lostRows += rows - len(distinct)
		}

		// R2, observable: nothing at or below the final confirmed position
		// is redelivered, so it must all have arrived before the kill.
		preKeys := map[string]int{}
		for _, tx := range preT {
			preKeys[tx.key] = len(tx.seqs)
		}
		for _, tx := range postT {
			if tx.end <= final {
				t.Errorf("subscriber %d: transaction ending at %s redelivered after the restart, but the slot had confirmed %s",
					i, pglogrepl.LSN(tx.end), pglogrepl.LSN(final))
			}
			if _, ok := preKeys[tx.key]; ok {
				redelivered++
			}
		}
		for _, tx := range preT {
			if tx.end <= final && len(tx.seqs) != rowsPerTxn {
				t.Errorf("subscriber %d: transaction ending at %s arrived in part (%d rows) before the kill and the slot confirmed it (%s): its other rows are lost",
					i, pglogrepl.LSN(tx.end), len(tx.seqs), pglogrepl.LSN(final))
			}
		}
		if len(postT) > 0 && len(preT) > 0 {
			// The first transaction redelivered must follow directly what
			// the slot confirmed: nothing in between is missing.
			first := postT[0]
			for _, tx := range preT {
				if tx.end > final && tx.end < first.end {
					t.Errorf("subscriber %d: transaction ending at %s was above the confirmed position %s but not redelivered (first redelivered ends at %s)",
						i, pglogrepl.LSN(tx.end), pglogrepl.LSN(final), pglogrepl.LSN(first.end))
				}
			}
		}
	}

	// The samples: the position never moved backwards; report the rest.
	var prevLSN uint64
	advances := 0
	for _, s := range samples {
		if s.lsn < prevLSN {
			t.Errorf("confirmed_flush_lsn moved backwards: %s after %s", pglogrepl.LSN(s.lsn), pglogrepl.LSN(prevLSN))
		}
		if s.lsn > prevLSN && prevLSN != 0 {
			advances++
		}
		prevLSN = s.lsn
	}
	if final < midBurst {
		t.Errorf("final confirmed position %s is below one sampled mid-burst %s", pglogrepl.LSN(final), pglogrepl.LSN(midBurst))
	}
	preLast := pre[0].received()
	var lastPreEnd uint64
	if len(preLast) > 0 {
		lastPreEnd = preLast[len(preLast)-1].endLSN()
	}
	committedAtKill := 0
	committed.Range(func(_, v any) bool {
		if v.(time.Time).Before(killedAt) {
			committedAtKill++
		}
		return true
	})
	t.Logf("burst: %d rows in %d transactions, %d subscribers; killed with %d/%d transactions committed and %d rows received by subscriber 0",
		rows, txns, subscribers, committedAtKill, txns, receivedAtKill[0])
	t.Logf("confirmed_flush_lsn: %d samples, %d advances; before the burst %s, mid-burst %s, final %s; last transaction received before the kill ends at %s",
		len(samples), advances, pglogrepl.LSN(before), pglogrepl.LSN(midBurst), pglogrepl.LSN(final), pglogrepl.LSN(lastPreEnd))
	t.Logf("after the restart: %d transactions redelivered across %d subscribers (deduplicated), %d rows lost; ready %v after the slot was released; "+
		"the %d transactions committed by then all received %v after release; last row commit→client %v",
		redelivered, subscribers, lostRows, readyAt.Sub(releasedAt).Round(time.Millisecond), len(committedBefore),
		caughtUp.Sub(releasedAt).Round(time.Millisecond), lastLatency.Round(time.Millisecond))
}

// TestSnapshotOlderThanRestartIsRefused: a snapshot taken before the server
// restarted names transactions the restarted engine never saw (confirmed
// before the restart, so PostgreSQL does not resend them). Authorizing with
// it must answer "Snapshot too old" (spec §2.5) or deliver those
// transactions; accepting it silently leaves a gap.
func TestSnapshotOlderThanRestartIsRefused(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	slot := randomName("e2e_snaprestart_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Item: {table: items}
dealers:
  AllItems: {model: Item, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	watcher := p.dial()
	watcher.acquire(p.mustAuthorize([]map[string]any{item("AllItems", nil)}, ""))

	// The application's query and snapshot, then a change it did not see.
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExecTx := func(sql string) {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mustExecTx(`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`)
	mustExecTx(`SELECT * FROM items`)
	var snap string
	if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, `INSERT INTO items VALUES (1, 'unseen by the snapshot')`)
	watcher.waitDeltas(1, 30*time.Second)

	// A graceful stop confirms the insert; the restarted engine never sees it.
	p.stop()
	p2 := p.restart()
	p2.waitReady(60 * time.Second)
	tok, rpcErr, err := p2.authorize([]map[string]any{item("AllItems", nil)}, snap)
	if err != nil {
		t.Fatal(err)
	}
	if rpcErr == "Snapshot too old" {
		return
	}
	if rpcErr != "" {
		t.Fatalf("authorize with a pre-restart snapshot: got error %q, want a token or \"Snapshot too old\"", rpcErr)
	}
	c := p2.dial()
	c.acquire(tok)
	mustExec(t, db, `INSERT INTO items VALUES (2, 'marker')`)
	ds := c.waitDeltas(1, 30*time.Second)
	waitFor(t, 30*time.Second, "the marker row", func() bool {
		ds = c.received()
		return num(ds[len(ds)-1].Data, "id") == 2
	})
	var ids []int64
	for _, d := range ds {
		ids = append(ids, num(d.Data, "id"))
	}
	if len(ids) != 2 || ids[0] != 1 {
		t.Fatalf("a subscription authorized after a restart with snapshot %s (taken before the restart) received rows %v, "+
			"want [1 2] or \"Snapshot too old\"", snap, ids)
	}
}
