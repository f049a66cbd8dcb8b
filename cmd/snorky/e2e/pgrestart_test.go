package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// metric reads one unlabelled metric from the backend's /metrics.
func (p *proc) metric(name string) (float64, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.back + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// readyWatch polls /readyz every 20 ms and records the status changes.
type readyWatch struct {
	mu      sync.Mutex
	changes []readyChange
	stop    chan struct{}
	done    chan struct{}
}

type readyChange struct {
	at     time.Time
	status int
}

func watchReady(p *proc) *readyWatch {
	w := &readyWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := -1
		for {
			st := p.readyStatus()
			if st != last {
				w.mu.Lock()
				w.changes = append(w.changes, readyChange{time.Now(), st})
				w.mu.Unlock()
				last = st
			}
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *readyWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// readyAgainAfter returns when /readyz first answered 200 after answering
// something else after t0.
func (w *readyWatch) readyAgainAfter(t0 time.Time) (down, up time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.changes {
		if c.at.Before(t0) {
			continue
		}
		if c.status != http.StatusOK && down.IsZero() {
			down = c.at
		}
		if c.status == http.StatusOK && !down.IsZero() {
			return down, c.at, true
		}
	}
	return down, time.Time{}, false
}

// TestPostgresRestartUnderRunningServer is reliability.md T3 with a clean
// restart (pg_ctl restart -m fast): a writer inserts one row per
// transaction before, during and after the restart (retrying on a fresh
// connection when PostgreSQL is down); the server reconnects by itself and
// its one subscriber ends with exactly the table's rows, in commit order,
// without a duplicate: the subscription and its WebSocket survive, since
// the server process does.
func TestPostgresRestartUnderRunningServer(t *testing.T) {
	pg := pgtest.StartTB(t, pglocal.Options{})
	url := pgtest.NewDatabaseAt(t, pg.URL("postgres"))
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE events (id int PRIMARY KEY, phase text NOT NULL)`)
	db.Close(context.Background())
	slot := randomName("e2e_pgrestart_")
	p := startServer(t, serverConfig{DatabaseURL: url, Slot: slot, Body: `models:
  Event: {table: events}
dealers:
  AllEvents: {model: Event, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	sub := p.dial()
	sub.acquire(p.mustAuthorize([]map[string]any{item("AllEvents", nil)}, ""))
	watch := watchReady(p)
	defer watch.close()
	goroutinesBefore, _ := p.metric("go_goroutines")

	// The writer: one row per transaction every 5 ms; on an error it
	// records the failure and reconnects.
	var phase atomic.Value
	phase.Store("before")
	type write struct {
		id     int
		at     time.Time
		failed bool
	}
	var (
		wmu    sync.Mutex
		writes []write
	)
	stopWriter := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for id := 1; ; id++ {
			select {
			case <-stopWriter:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			if conn == nil {
				conn, err = pgx.Connect(ctx, url)
			}
			if err == nil {
				_, err = conn.Exec(ctx, `INSERT INTO events VALUES ($1, $2)`, id, phase.Load().(string))
				if err != nil {
					conn.Close(ctx)
					conn = nil
				}
			}
			cancel()
			wmu.Lock()
			writes = append(writes, write{id: id, at: time.Now(), failed: err != nil})
			wmu.Unlock()
		}
	}()
	stop := func() {
		select {
		case <-stopWriter:
		default:
			close(stopWriter)
		}
		<-writerDone
	}
	defer stop()
	succeeded := func() int {
		wmu.Lock()
		defer wmu.Unlock()
		n := 0
		for _, w := range writes {
			if !w.failed {
				n++
			}
		}
		return n
	}

	sub.waitDeltas(100, 30*time.Second)
	failures := func() int {
		wmu.Lock()
		defer wmu.Unlock()
		n := 0
		for _, w := range writes {
			if w.failed {
				n++
			}
		}
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Two outages: pg_ctl restart -m fast, then a longer one (stopped
	// until the writer has failed 300 times, about 1.5 s, and the server
	// reported itself not ready) that exercises the reconnect backoff.
	outages := []struct {
		name string
		run  func() error
	}{
		{"restart", func() error { return pg.Restart(ctx, pglocal.Fast) }},
		{"outage", func() error {
			if err := pg.Down(pglocal.Fast); err != nil {
				return err
			}
			f := failures()
			waitFor(t, 60*time.Second, "300 failed writes and /readyz not ready while PostgreSQL is down", func() bool {
				st := p.readyStatus()
				return failures() >= f+300 && st != http.StatusOK && st != 0
			})
			return pg.Up(ctx)
		}},
	}
	type recovery struct {
		name             string
		down, readyAfter time.Duration
	}
	var recoveries []recovery
	for _, o := range outages {
		phase.Store(o.name)
		downAt := time.Now()
		if err := o.run(); err != nil {
			t.Fatalf("%s of PostgreSQL: %v", o.name, err)
		}
		upAt := time.Now()
		var readyAgain time.Time
		waitFor(t, 60*time.Second, "the server ready again after the "+o.name, func() bool {
			_, up, ok := watch.readyAgainAfter(downAt)
			readyAgain = up
			return ok
		})
		recoveries = append(recoveries, recovery{o.name, upAt.Sub(downAt), readyAgain.Sub(upAt)})
		phase.Store("after " + o.name)
		n := succeeded()
		waitFor(t, 30*time.Second, "100 more rows written after the server reconnected", func() bool { return succeeded() >= n+100 })
	}
	stop()

	// A marker row last: once the subscriber has it, it has everything
	// (delivery is in commit order), duplicates included.
	db = dbConnect(t, url)
	mustExec(t, db, `INSERT INTO events VALUES (1000000000, 'end')`)
	waitFor(t, 60*time.Second, "the marker row", func() bool {
		ds := sub.received()
		return len(ds) > 0 && num(ds[len(ds)-1].Data, "id") == 1000000000
	})
	// Every committed row, as the table has it, in commit order.
	rows, err := db.Query(ctx, `SELECT id, phase FROM events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id    int64
		phase string
	}
	table, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.phase)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	ds := sub.received()
	byPhase := map[string]int{}
	for _, r := range table {
		byPhase[r.phase]++
	}
	ids := make([]int64, len(table))
	for i, r := range table {
		ids[i] = r.id
	}
	if checkDelivery(t, "the subscriber", ds, "id", ids) {
		for i, d := range ds { // each is the table's row, as the table has it
			if d.Type != "insert" || d.Data["phase"] != table[i].phase {
				t.Errorf("delta %d: got %s, want the insert of row %d (%s)", i, d.Raw, table[i].id, table[i].phase)
			}
		}
	}
	wmu.Lock()
	failed, committedFailed := 0, 0
	inTable := map[int64]bool{}
	for _, r := range table {
		inTable[r.id] = true
	}
	for _, w := range writes {
		switch {
		case w.failed:
			failed++
			if inTable[int64(w.id)] {
				committedFailed++
			}
		case !inTable[int64(w.id)]:
			t.Errorf("row %d: its INSERT succeeded but it is not in the table", w.id)
		}
	}
	wmu.Unlock()
	var goroutinesAfter float64
	waitFor(t, 30*time.Second, "the server's goroutines back to their count before the restart (±5)", func() bool {
		goroutinesAfter, _ = p.metric("go_goroutines")
		return goroutinesAfter <= goroutinesBefore+5
	})
	t.Logf("rows committed: %v; %d inserts failed while PostgreSQL was down (%d of them committed anyway)", byPhase, failed, committedFailed)
	for _, r := range recoveries {
		t.Logf("%s: PostgreSQL down for %v; the server was streaming (/readyz 200) again %v after PostgreSQL accepted connections",
			r.name, r.down.Round(time.Millisecond), r.readyAfter.Round(time.Millisecond))
	}
	t.Logf("server goroutines: %v before the outages, %v after", goroutinesBefore, goroutinesAfter)
	if len(ds) != len(table) {
		t.Errorf("the subscriber received %d deltas, want %d (the table's rows)", len(ds), len(table))
	}
}
