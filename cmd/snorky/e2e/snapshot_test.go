package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// itemRow is a row of the items table.
type itemRow struct{ id, grp, val, seq int64 }

func rowOf(m map[string]any) itemRow {
	return itemRow{num(m, "id"), num(m, "grp"), num(m, "val"), num(m, "seq")}
}

// handoffApp is one application instance of the snapshot handoff test:
// its initial query, the snapshot, and the client that applies deltas.
type handoffApp struct {
	grp      int64
	snapshot string
	initial  map[int64]itemRow
	client   *wsClient
	pending  int // deltas received before the acquire response
	// authorizeTook is the latency of authorizeSubscription.
	authorizeTook time.Duration
}

// handoffCounts are what applying a client's deltas to its copy found.
type handoffCounts struct {
	deltas     int
	gaps       int // update or delete of a row the copy lacks; rows missing at the end
	duplicates int // insert of a row the copy has; rows extra at the end
	stale      int // update whose oldData differs from the copy; values differing at the end
}

// apply replays ds on a copy of app.initial and compares the result with
// want (the group's final rows).
func (app *handoffApp) apply(t *testing.T, name string, ds []delta, want map[int64]itemRow) handoffCounts {
	t.Helper()
	var c handoffCounts
	copy := make(map[int64]itemRow, len(app.initial))
	for k, v := range app.initial {
		copy[k] = v
	}
	var problems []string
	note := func(format string, args ...any) {
		if len(problems) < 5 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	checkOffsets(t, name, ds)
	for i := range ds {
		d := &ds[i]
		c.deltas++
		switch d.Type {
		case "insert":
			r := rowOf(d.Data)
			if _, ok := copy[r.id]; ok {
				c.duplicates++
				note("insert of row %d already in the copy (xid %s)", r.id, d.Xid)
			}
			copy[r.id] = r
		case "update":
			r, old := rowOf(d.NewData), rowOf(d.OldData)
			have, ok := copy[r.id]
			switch {
			case !ok:
				c.gaps++
				note("update of row %d not in the copy (xid %s)", r.id, d.Xid)
			case have != old:
				c.stale++
				note("update of row %d: oldData %+v, copy %+v (xid %s)", r.id, old, have, d.Xid)
			}
			copy[r.id] = r
		case "delete":
			r := rowOf(d.Data)
			if _, ok := copy[r.id]; !ok {
				c.gaps++
				note("delete of row %d not in the copy (xid %s)", r.id, d.Xid)
			}
			delete(copy, r.id)
		default:
			t.Errorf("%s: unexpected delta %s", name, d.Raw)
		}
	}
	for id, w := range want {
		switch have, ok := copy[id]; {
		case !ok:
			c.gaps++
			note("row %d missing at the end", id)
		case have != w:
			c.stale++
			note("row %d is %+v at the end, want %+v", id, have, w)
		}
	}
	for id := range copy {
		if _, ok := want[id]; !ok {
			c.duplicates++
			note("row %d extra at the end", id)
		}
	}
	if len(problems) > 0 {
		t.Errorf("%s (snapshot %s): %d gaps, %d duplicates, %d stale: %s", name, app.snapshot, c.gaps, c.duplicates, c.stale, strings.Join(problems, "; "))
	}
	return c
}

// TestSnapshotHandoff is D8 under load: while writers commit about 1,000
// row changes/s (inserts, updates and deletes; one writer keeps some
// transactions open for 40 ms so that snapshots list transactions in
// progress), 100 application instances each query their group's rows and
// pg_current_snapshot() in one REPEATABLE READ transaction, wait a moment
// (changes commit between the query and the authorization), authorize a
// subscription with the snapshot and apply its deltas to their copy. After
// the writers stop and a final marker row per group has arrived, every copy
// equals its group's rows in the table: 0 gaps, 0 duplicates.
func TestSnapshotHandoff(t *testing.T) {
	const (
		groups  = 20
		apps    = 100
		workers = 10
		fastIDs = 300 // ids 1..300: the fast writer; 301..400: the slow one
		slowIDs = 100
		marker  = 1_000_000
	)
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, val bigint NOT NULL, seq bigint NOT NULL)`)
	slot := randomName("e2e_handoff_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Item: {table: items}
dealers:
  ItemsByGroup: {model: Item, kind: simple, key: grp}
`})
	p.waitReady(60 * time.Second)

	// Writers: the fast one commits about 900 changes/s in transactions of
	// up to 20 (one round trip each); the slow one 2 changes every 20 ms,
	// held open 40 ms.
	var seq, changes, fastTxns atomic.Int64
	stopWriters := make(chan struct{})
	var writers sync.WaitGroup
	writerErr := make(chan error, 2)
	writer := func(first, n int, rate float64, every, hold time.Duration, count *atomic.Int64) {
		defer writers.Done()
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			writerErr <- err
			return
		}
		defer conn.Close(ctx)
		rng := rand.New(rand.NewPCG(uint64(first), 7))
		tick := time.NewTicker(every)
		defer tick.Stop()
		start, done := time.Now(), 0
		for {
			select {
			case <-stopWriters:
				return
			case <-tick.C:
			}
			ops := min(20, max(1, int(rate*time.Since(start).Seconds())-done))
			b := &pgx.Batch{}
			b.Queue(`BEGIN`)
			for range ops {
				id := int64(first + rng.IntN(n))
				if rng.IntN(10) < 3 {
					b.Queue(`DELETE FROM items WHERE id = $1`, id)
				} else {
					b.Queue(`INSERT INTO items VALUES ($1, $2, $3, $4)
						ON CONFLICT (id) DO UPDATE SET val = excluded.val, seq = excluded.seq`,
						id, id%groups, rng.Int64N(1_000_000), seq.Add(1))
				}
			}
			if hold > 0 {
				b.Queue(`SELECT pg_sleep($1)`, hold.Seconds())
			}
			b.Queue(`COMMIT`)
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				writerErr <- fmt.Errorf("writer of ids from %d: %w", first, err)
				return
			}
			done += ops
			changes.Add(int64(ops))
			if count != nil {
				count.Add(1)
			}
		}
	}
	writers.Add(2)
	began := time.Now()
	go writer(1, fastIDs, 900, 10*time.Millisecond, 0, &fastTxns)
	go writer(fastIDs+1, slowIDs, 100, 20*time.Millisecond, 40*time.Millisecond, nil)
	stop := func() {
		select {
		case <-stopWriters:
		default:
			close(stopWriters)
		}
		writers.Wait()
	}
	defer stop()
	waitFor(t, 30*time.Second, "the writers running", func() bool { return fastTxns.Load() >= 50 })

	// The applications, 10 at a time. Workers query and authorize; the
	// test goroutine dials and acquires (pending deltas wait for it).
	type authorized struct {
		app   *handoffApp
		token string
		err   error
	}
	ready := make(chan authorized, apps)
	for w := range workers {
		go func() {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				ready <- authorized{err: err}
				return
			}
			defer conn.Close(ctx)
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for i := w; i < apps; i += workers {
				// Spread the applications over the run, and let changes
				// commit between each one's query and its authorization.
				<-time.After(time.Duration(rng.IntN(400)) * time.Millisecond)
				app := &handoffApp{grp: int64(i % groups), initial: map[int64]itemRow{}}
				err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
					rows, err := tx.Query(ctx, `SELECT id, grp, val, seq FROM items WHERE grp = $1`, app.grp)
					if err != nil {
						return err
					}
					for rows.Next() {
						var r itemRow
						if err := rows.Scan(&r.id, &r.grp, &r.val, &r.seq); err != nil {
							return err
						}
						app.initial[r.id] = r
					}
					if err := rows.Err(); err != nil {
						return err
					}
					return tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&app.snapshot)
				})
				if err != nil {
					ready <- authorized{err: fmt.Errorf("app %d: query: %w", i, err)}
					return
				}
				<-time.After(time.Duration(rng.IntN(200)) * time.Millisecond)
				t0 := time.Now()
				tok, rpcErr, err := p.authorize([]map[string]any{item("ItemsByGroup", app.grp)}, app.snapshot)
				app.authorizeTook = time.Since(t0)
				if err == nil && rpcErr != "" {
					err = fmt.Errorf("error %q", rpcErr)
				}
				if err != nil {
					ready <- authorized{err: fmt.Errorf("app %d: authorizeSubscription with snapshot %s: %w", i, app.snapshot, err)}
					return
				}
				ready <- authorized{app: app, token: tok}
			}
		}()
	}
	var list []*handoffApp
	withXip := 0
	for range apps {
		var a authorized
		select {
		case a = <-ready:
		case err := <-writerErr:
			t.Fatal(err)
		case <-time.After(60 * time.Second):
			t.Fatal("applications not authorized within 60s")
		}
		if a.err != nil {
			t.Fatal(a.err)
		}
		a.app.client = p.dial()
		a.app.client.acquire(a.token)
		a.app.pending = a.app.client.count()
		if !strings.HasSuffix(a.app.snapshot, ":") {
			withXip++
		}
		list = append(list, a.app)
	}
	subscribedIn := time.Since(began)

	// Writers go on a little, stop, and a marker row per group ends the run.
	n := fastTxns.Load()
	waitFor(t, 30*time.Second, "100 more writer transactions", func() bool { return fastTxns.Load() >= n+100 })
	stop()
	select {
	case err := <-writerErr:
		t.Fatal(err)
	default:
	}
	wrote := time.Since(began)
	var markers []string
	for g := range groups {
		markers = append(markers, fmt.Sprintf("(%d, %d, 0, 0)", marker+g, g))
	}
	mustExec(t, db, `INSERT INTO items VALUES `+strings.Join(markers, ", "))
	for i, app := range list {
		waitFor(t, 60*time.Second, fmt.Sprintf("app %d's marker row", i), func() bool {
			ds := app.client.received()
			return len(ds) > 0 && num(ds[len(ds)-1].Data, "id") == marker+app.grp
		})
	}

	// Compare each copy with its group's rows.
	final := map[int64]map[int64]itemRow{}
	rows, err := db.Query(context.Background(), `SELECT id, grp, val, seq FROM items`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r itemRow
		if err := rows.Scan(&r.id, &r.grp, &r.val, &r.seq); err != nil {
			t.Fatal(err)
		}
		if final[r.grp] == nil {
			final[r.grp] = map[int64]itemRow{}
		}
		final[r.grp][r.id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var total handoffCounts
	pending := 0
	var authMax, authSum time.Duration
	for _, app := range list {
		authMax = max(authMax, app.authorizeTook)
		authSum += app.authorizeTook
	}
	for i, app := range list {
		c := app.apply(t, fmt.Sprintf("app %d (group %d)", i, app.grp), app.client.received(), final[app.grp])
		total.deltas += c.deltas
		total.gaps += c.gaps
		total.duplicates += c.duplicates
		total.stale += c.stale
		pending += app.pending
	}
	t.Logf("writers: %d row changes in %v (%.0f/s); %d subscriptions authorized with snapshots over %v, %d of the snapshots listing transactions in progress",
		changes.Load(), wrote.Round(time.Millisecond), float64(changes.Load())/wrote.Seconds(), len(list), subscribedIn.Round(time.Millisecond), withXip)
	t.Logf("clients: %d deltas applied (%d delivered before the acquire response, from the history or pending); %d gaps, %d duplicates, %d stale",
		total.deltas, pending, total.gaps, total.duplicates, total.stale)
	t.Logf("authorizeSubscription with a snapshot: mean %v, max %v", (authSum / time.Duration(len(list))).Round(time.Microsecond), authMax.Round(time.Microsecond))
}

// TestSnapshotFromTheFuture: a snapshot whose xmax is beyond what the
// database has started (the README's old example, pasted on a fresh
// database) is refused; a real snapshot taken a moment later is accepted
// and its subscription receives exactly the rows its query did not see.
func TestSnapshotFromTheFuture(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE fut (id int PRIMARY KEY)`)
	slot := randomName("e2e_future_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Fut: {table: fut}
dealers:
  AllFut: {model: Fut, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	ctx := context.Background()
	var cur uint64
	if err := db.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8`).Scan(&cur); err != nil {
		t.Fatal(err)
	}
	future := fmt.Sprintf("%d:%d:", cur+1000, cur+1010)
	items := []map[string]any{item("AllFut", nil)}
	if _, rpcErr, err := p.authorize(items, future); err != nil || rpcErr != "Invalid snapshot: newer than the database" {
		t.Fatalf("snapshot %s (the database is at %d): got %q %v, want the refusal", future, cur, rpcErr, err)
	}
	// A real one: the query and the snapshot in one REPEATABLE READ
	// transaction, while rows are inserted around it.
	mustExec(t, db, `INSERT INTO fut SELECT g FROM generate_series(1, 10) g`)
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var snap string
	var seen int
	if err := tx.QueryRow(ctx, `SELECT count(*), pg_current_snapshot()::text FROM fut`).Scan(&seen, &snap); err != nil {
		t.Fatal(err)
	}
	other := dbConnect(t, url)
	mustExec(t, other, `INSERT INTO fut SELECT g FROM generate_series(11, 15) g`) // after the snapshot
	tx.Commit(ctx)
	tok, rpcErr, err := p.authorize(items, snap)
	if err != nil || rpcErr != "" {
		t.Fatalf("a real snapshot %s: %q %v", snap, rpcErr, err)
	}
	c := p.dial()
	c.acquire(tok)
	mustExec(t, db, `INSERT INTO fut VALUES (16)`)
	ds := c.waitDeltas(6, 30*time.Second)
	time.Sleep(200 * time.Millisecond)
	var ids []int64
	for _, d := range c.received() {
		ids = append(ids, num(d.Data, "id"))
	}
	if seen != 10 || fmt.Sprint(ids) != "[11 12 13 14 15 16]" {
		t.Fatalf("query saw %d rows, deltas %v (%d): want 10 and [11 … 16]", seen, ids, len(ds))
	}
}
