package e2e

// Fault injection (issue 16, reliability.md T3, T4, T5 and a client
// blackhole): PostgreSQL crashes, a silent network between the server and
// PostgreSQL or between a client and the server, a paused server. Each test
// prints its measured figures as "figure:" lines in the test log and
// asserts its loss promises exactly and its time bounds with a margin that
// holds on a loaded 2-core machine.

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"github.com/snorkyhq/snorky/cmd/snorky/e2e/netfault"
)

// figure logs one measured figure (grep the test log for "figure:").
func figure(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf("figure: "+format, args...)
}

// faultTable is the table the fault tests write: seq increases with commit
// order (one writer).
const faultTable = `CREATE TABLE rows (seq int PRIMARY KEY, phase text NOT NULL DEFAULT '')`

const faultModels = `models:
  Row: {table: rows}
dealers:
  AllRows: {model: Row, kind: broadcast}
`

// writeResult is one INSERT transaction of rows first..last and whether it
// returned success.
type writeResult struct {
	first, last int
	ok          bool
	at          time.Time // when the INSERT returned
}

// seqWriter inserts rows of increasing seq, rowsPerTx per transaction, on
// a connection of its own that it reopens after an error, until stopped or
// until target rows were inserted successfully. A failed transaction's seqs
// are not reused.
type seqWriter struct {
	url       string
	rowsPerTx int
	pace      time.Duration
	target    int

	mu      sync.Mutex
	results []writeResult
	okRows  int
	phase   string

	stop chan struct{}
	done chan struct{}
}

func startSeqWriter(t testing.TB, url string, first, rowsPerTx, target int, pace time.Duration) *seqWriter {
	w := &seqWriter{url: url, rowsPerTx: rowsPerTx, pace: pace, target: target, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(first)
	t.Cleanup(w.halt)
	return w
}

func (w *seqWriter) run(next int) {
	defer close(w.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		w.mu.Lock()
		enough := w.target > 0 && w.okRows >= w.target
		phase := w.phase
		w.mu.Unlock()
		if enough {
			return
		}
		select {
		case <-w.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var err error
		if conn == nil {
			conn, err = pgx.Connect(ctx, w.url)
		}
		if err == nil {
			_, err = conn.Exec(ctx, `INSERT INTO rows (seq, phase) SELECT g, $3 FROM generate_series($1::int, $2::int) g`,
				next, next+w.rowsPerTx-1, phase)
			if err != nil {
				conn.Close(ctx)
				conn = nil
			}
		}
		cancel()
		w.mu.Lock()
		w.results = append(w.results, writeResult{first: next, last: next + w.rowsPerTx - 1, ok: err == nil, at: time.Now()})
		if err == nil {
			w.okRows += w.rowsPerTx
		}
		w.mu.Unlock()
		next += w.rowsPerTx
		pace := w.pace
		if err != nil {
			pace = max(pace, 100*time.Millisecond)
		}
		select {
		case <-w.stop:
			return
		case <-time.After(pace):
		}
	}
}

func (w *seqWriter) setPhase(p string) {
	w.mu.Lock()
	w.phase = p
	w.mu.Unlock()
}

// halt stops the writer and waits for it.
func (w *seqWriter) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// succeeded returns how many rows were inserted successfully so far.
func (w *seqWriter) succeeded() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.okRows
}

// outcome returns the seqs whose INSERT succeeded and those whose failed.
func (w *seqWriter) outcome() (ok, failed []int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.results {
		for s := r.first; s <= r.last; s++ {
			if r.ok {
				ok = append(ok, int64(s))
			} else {
				failed = append(failed, int64(s))
			}
		}
	}
	return ok, failed
}

// tableSeqs returns the committed seqs of rows, in order.
func tableSeqs(t testing.TB, url string) []int64 {
	t.Helper()
	db := dbConnect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT seq FROM rows ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	db.Close(ctx)
	return seqs
}

// distinctSeqs returns the seqs of the insert deltas in order of first
// receipt (deduplicated) and how many were duplicates.
func distinctSeqs(ds []delta) (seqs []int64, dups int) {
	seen := map[int64]bool{}
	for _, d := range ds {
		if d.Type != "insert" {
			continue
		}
		s := num(d.Data, "seq")
		if seen[s] {
			dups++
			continue
		}
		seen[s] = true
		seqs = append(seqs, s)
	}
	return seqs, dups
}

// delivery is what checkTableDelivery found.
type delivery struct {
	delivered, duplicates int
	// ambiguous: INSERTs that reported an error although they committed
	// (the connection died after the commit); they are in the table and
	// delivered, as they must be.
	ambiguous int
}

// checkTableDelivery compares what a subscriber received (deduplicated) with
// the table: every committed row delivered, in commit (seq) order, nothing
// else; every INSERT that returned success committed; every failed INSERT
// either absent from both or committed (ambiguous) and delivered.
func checkTableDelivery(t testing.TB, who string, ds []delta, table, ok, failed []int64) delivery {
	t.Helper()
	got, dups := distinctSeqs(ds)
	inTable := map[int64]bool{}
	for _, s := range table {
		inTable[s] = true
	}
	gotSet := map[int64]bool{}
	for i, s := range got {
		gotSet[s] = true
		if i > 0 && s <= got[i-1] {
			t.Errorf("%s: row %d delivered after row %d: want commit order", who, s, got[i-1])
		}
		if !inTable[s] {
			t.Errorf("%s: row %d delivered but not in the table (its INSERT failed and did not commit)", who, s)
		}
	}
	lost := 0
	for _, s := range table {
		if !gotSet[s] {
			if lost < 10 {
				t.Errorf("%s: committed row %d never delivered", who, s)
			}
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%s: %d of %d committed rows lost", who, lost, len(table))
	}
	for _, s := range ok {
		if !inTable[s] {
			t.Errorf("%s: row %d: its INSERT succeeded but it is not in the table", who, s)
			break
		}
	}
	amb := 0
	for _, s := range failed {
		if inTable[s] {
			amb++
		}
	}
	return delivery{delivered: len(got), duplicates: dups, ambiguous: amb}
}

// waitAllDelivered waits until the subscriber holds every row of the
// table (deduplicated) and returns when it did.
func waitAllDelivered(t testing.TB, c *wsClient, url string, timeout time.Duration) time.Time {
	t.Helper()
	want := len(tableSeqs(t, url))
	var at time.Time
	waitFor(t, timeout, fmt.Sprintf("all %d committed rows at the subscriber", want), func() bool {
		got, _ := distinctSeqs(c.received())
		if len(got) >= want {
			at = time.Now()
			return true
		}
		return false
	})
	return at
}

// proxiedURL is url with its host and port replaced by addr.
func proxiedURL(t testing.TB, raw, addr string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

func startProxy(t testing.TB, target string) *netfault.Proxy {
	t.Helper()
	px, err := netfault.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return px
}

// metricWait polls a metric until cond holds and returns when it did.
func (p *proc) metricWait(timeout time.Duration, name string, cond func(float64) bool) time.Time {
	p.t.Helper()
	var at time.Time
	// Every 100 ms, not faster: a scrape costs the server CPU, which some
	// tests measure.
	deadline := time.Now().Add(timeout)
	for {
		if v, ok := p.metric(name); ok && cond(v) {
			at = time.Now()
			return at
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %v waiting for metric %s to reach its bound", timeout, name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// goroutinesBack waits until go_goroutines is within ±5 of base and
// returns the count.
func (p *proc) goroutinesBack(base float64) float64 {
	p.t.Helper()
	var g float64
	waitFor(p.t, 60*time.Second, fmt.Sprintf("go_goroutines back to %v ± 5", base), func() bool {
		g, _ = p.metric("go_goroutines")
		return g >= base-5 && g <= base+5
	})
	return g
}

// startFaultServer creates the rows table in a fresh database of pg and
// starts a server on it (through dbURL, which may point at a proxy) with
// one broadcast subscriber.
func startFaultServer(t *testing.T, dbURL, dbExtra string) (*proc, *wsClient) {
	t.Helper()
	p := startServer(t, serverConfig{DatabaseURL: dbURL, Slot: randomName("e2e_fault_"), DatabaseExtra: dbExtra, Body: faultModels})
	p.waitReady(60 * time.Second)
	sub := p.dial()
	sub.acquire(p.mustAuthorize([]map[string]any{item("AllRows", nil)}, ""))
	return p, sub
}

// TestT3PostgresCrashDuringBurst is reliability.md T3 with a crash:
// `pg_ctl stop -m immediate` (SIGQUIT to the postmaster: no shutdown
// checkpoint, recovery at the next start) a third of the way through a
// 10,000-row burst (100 rows per transaction), PostgreSQL down 5 s. Every
// INSERT that returned success is delivered, none that failed unless it
// committed anyway; the server resumes by itself; its goroutines return to
// their count before the crash.
func TestT3PostgresCrashDuringBurst(t *testing.T) {
	pg := pgtest.StartTB(t, pglocal.Options{})
	url := pgtest.NewDatabaseAt(t, pg.URL("postgres"))
	mustExec(t, dbConnect(t, url), faultTable)
	p, sub := startFaultServer(t, url, "")
	watch := watchReady(p)
	defer watch.close()
	base, _ := p.metric("go_goroutines")

	const rows = 10000
	w := startSeqWriter(t, url, 1, 100, rows, 10*time.Millisecond)
	waitFor(t, 60*time.Second, "a third of the burst written", func() bool { return w.succeeded() >= rows/3 })
	w.setPhase("crash")
	downAt := time.Now()
	if err := pg.Down(pglocal.Immediate); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pg.Up(ctx); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	w.setPhase("after")
	var readyAt time.Time
	waitFor(t, 90*time.Second, "the server streaming again (/readyz 200)", func() bool {
		_, up, ok := watch.readyAgainAfter(downAt)
		readyAt = up
		return ok
	})
	select {
	case <-w.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the burst did not finish (%d of %d rows)", w.succeeded(), rows)
	}
	caughtUp := waitAllDelivered(t, sub, url, 2*time.Minute)
	table := tableSeqs(t, url)
	ok, failed := w.outcome()
	d := checkTableDelivery(t, "T3", sub.received(), table, ok, failed)
	g := p.goroutinesBack(base)

	resumed := readyAt.Sub(upAt)
	figure(t, "T3: PostgreSQL down %v (immediate stop + 5 s); replication resumed (/readyz 200) %v after PostgreSQL accepted connections; subscriber caught up %v after",
		upAt.Sub(downAt).Round(time.Millisecond), resumed.Round(time.Millisecond), caughtUp.Sub(upAt).Round(time.Millisecond))
	figure(t, "T3: %d rows committed, %d delivered (deduplicated), %d duplicates; %d INSERTs of 100 rows failed (%d rows of them committed anyway, and were delivered); goroutines %v before, %v after",
		len(table), d.delivered, d.duplicates, len(failed)/100, d.ambiguous, base, g)
	if resumed > 30*time.Second {
		t.Errorf("replication resumed %v after PostgreSQL accepted connections; want ≤ 10 s (asserted ≤ 30 s)", resumed)
	}
}

// TestT4BlackholeToPostgres is reliability.md T4: the server reaches
// PostgreSQL (wal_sender_timeout=10s) through a proxy that goes silent for
// 30 s: bytes dropped, sockets left open, and the links of that time dead
// for good, as after a NAT or firewall timeout. The server must notice by
// its dead-link timeout (10 s here, as wal_sender_timeout), reconnect after
// the heal (taking the slot over from the old walsender, with retry on
// 55006 if PostgreSQL has not ended it yet), lose none of the 1,000 rows
// written meanwhile directly to PostgreSQL, and not spin while the link is
// down.
func TestT4BlackholeToPostgres(t *testing.T) {
	b := testBlackholeToPostgres(t, "T4", 10*time.Second, 30*time.Second, 1000)
	if b.detected > 25*time.Second {
		t.Errorf("dead link detected after %v, want ≤ 25 s", b.detected)
	}
	if b.resumed > 45*time.Second {
		t.Errorf("replication resumed %v after the heal; want ≤ 15 s (asserted ≤ 45 s)", b.resumed)
	}
	if b.cpuShare >= 0.20 {
		t.Errorf("server CPU while the link was down: %.1f%% of a core, want < 20%% (no busy loop)", 100*b.cpuShare)
	}
}

// TestT4SlotActiveAfterHeal is T4 with the walsender outliving the dead
// link: wal_sender_timeout 30 s, a 15 s blackhole. The server gives the link
// up after 10 s and, once the network heals, finds the slot still held by
// the old walsender (55006 "slot active"): it retries, as a standby, until
// PostgreSQL ends that walsender, then streams again, losing nothing.
func TestT4SlotActiveAfterHeal(t *testing.T) {
	b := testBlackholeToPostgres(t, "T4 (walsender outlives the link)", 30*time.Second, 15*time.Second, 500)
	if b.resumed > 90*time.Second {
		t.Errorf("replication resumed %v after the heal; want within wal_sender_timeout and a retry (asserted ≤ 90 s)", b.resumed)
	}
}

// blackholeFigures are what testBlackholeToPostgres measured.
type blackholeFigures struct {
	detected, resumed time.Duration
	cpuShare          float64
}

// testBlackholeToPostgres runs the blackhole scenario: PostgreSQL with
// walSenderTimeout, the server's link to it silent for outage while rows
// are written directly to PostgreSQL.
func testBlackholeToPostgres(t *testing.T, name string, walSenderTimeout, outage time.Duration, rows int) blackholeFigures {
	pg := pgtest.StartTB(t, pglocal.Options{Settings: map[string]string{"wal_sender_timeout": fmt.Sprintf("%ds", int(walSenderTimeout.Seconds()))}})
	url := pgtest.NewDatabaseAt(t, pg.URL("postgres"))
	mustExec(t, dbConnect(t, url), faultTable)
	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	p, sub := startFaultServer(t, proxiedURL(t, url, px.Addr()), "dead_link_timeout: 10s")

	// Warm up: 100 rows through the healthy link.
	db := dbConnect(t, url)
	mustExec(t, db, `INSERT INTO rows (seq, phase) SELECT g, 'before' FROM generate_series(1, 100) g`)
	sub.waitDeltas(100, 60*time.Second)
	dead0, _ := p.metric("snorky_cdc_dead_links_total")

	cpu0 := p.cpuTime()
	downAt := time.Now()
	px.Blackhole()
	// The rows during the outage, directly to PostgreSQL: transactions
	// of 10, spread over all but the last 5 s of it.
	wrote := make(chan error, 1)
	go func() {
		txns := rows / 10
		gap := (outage - 5*time.Second) / time.Duration(txns)
		for i := range txns {
			first := 1000 + i*10
			if _, err := db.Exec(context.Background(), `INSERT INTO rows (seq, phase) SELECT g, 'outage' FROM generate_series($1::int, $2::int) g`, first, first+9); err != nil {
				wrote <- err
				return
			}
			time.Sleep(gap)
		}
		wrote <- nil
	}()
	detectedAt := p.metricWait(outage+30*time.Second, "snorky_cdc_dead_links_total", func(v float64) bool { return v > dead0 })
	if err := <-wrote; err != nil {
		t.Fatalf("writing during the outage: %v", err)
	}
	time.Sleep(time.Until(downAt.Add(outage)))
	cpu := p.cpuTime() - cpu0
	wall := time.Since(downAt)
	// Watched from now on only: polling /readyz costs the server CPU.
	watch := watchReady(p)
	defer watch.close()
	px.Heal()
	healAt := time.Now()
	var readyAt time.Time
	waitFor(t, 2*time.Minute, "the server streaming again (/readyz 200)", func() bool {
		_, up, ok := watch.readyAgainAfter(healAt.Add(-time.Second))
		readyAt = up
		return ok
	})
	caughtUp := waitAllDelivered(t, sub, url, 90*time.Second)
	table := tableSeqs(t, url)
	d := checkTableDelivery(t, name, sub.received(), table, table, nil)
	slotInUse := strings.Count(p.log.String(), "slot in use by another connection")
	b := blackholeFigures{detected: detectedAt.Sub(downAt), resumed: readyAt.Sub(healAt), cpuShare: float64(cpu) / float64(wall)}

	figure(t, "%s: blackhole %v; dead link detected %v after it began (dead_link_timeout 10s, wal_sender_timeout %v)", name, outage, b.detected.Round(time.Millisecond), walSenderTimeout)
	figure(t, "%s: replication resumed (/readyz 200) %v after the heal; all %d outage rows delivered %v after the heal; %d retries on slot in use (55006)",
		name, b.resumed.Round(time.Millisecond), rows, caughtUp.Sub(healAt).Round(time.Millisecond), slotInUse)
	figure(t, "%s: server CPU while the link was down: %v over %v = %.1f%% of one core", name, cpu, wall.Round(time.Millisecond), 100*b.cpuShare)
	figure(t, "%s: %d rows committed, %d delivered, %d duplicates; proxy connections accepted/open: %s", name, len(table), d.delivered, d.duplicates, proxyStats(px))
	return b
}

func proxyStats(px *netfault.Proxy) string {
	acc, open := px.Stats()
	return fmt.Sprintf("%d/%d", acc, open)
}

// TestT5ServerPaused is reliability.md T5: SIGSTOP of the server for 20 s
// (twice wal_sender_timeout, so PostgreSQL ends the walsender), then
// SIGCONT. No panic; the rows written during the pause are delivered
// exactly once; recovery is measured from SIGCONT.
func TestT5ServerPaused(t *testing.T) {
	pg := pgtest.StartTB(t, pglocal.Options{Settings: map[string]string{"wal_sender_timeout": "10s"}})
	url := pgtest.NewDatabaseAt(t, pg.URL("postgres"))
	db := dbConnect(t, url)
	mustExec(t, db, faultTable)
	p, sub := startFaultServer(t, url, "")
	mustExec(t, db, `INSERT INTO rows (seq, phase) SELECT g, 'before' FROM generate_series(1, 100) g`)
	sub.waitDeltas(100, 60*time.Second)

	const pause = 20 * time.Second
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	cont := func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }
	defer cont()
	// 500 rows during the pause: 50 transactions of 10.
	for i := range 50 {
		first := 1000 + i*10
		mustExec(t, db, `INSERT INTO rows (seq, phase) SELECT g, 'paused' FROM generate_series($1::int, $2::int) g`, first, first+9)
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(stoppedAt.Add(pause)))
	cont()
	contAt := time.Now()
	caughtUp := waitAllDelivered(t, sub, url, 90*time.Second)
	if p.exited() {
		t.Fatalf("the server exited after SIGCONT: %v", p.err)
	}
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	table := tableSeqs(t, url)
	d := checkTableDelivery(t, "T5", sub.received(), table, table, nil)
	recovery := caughtUp.Sub(contAt)
	figure(t, "T5: server stopped %v; the 500 rows written during the pause delivered %v after SIGCONT; %d rows, %d duplicates; %d dead-link reconnects",
		contAt.Sub(stoppedAt).Round(time.Millisecond), recovery.Round(time.Millisecond), d.delivered, d.duplicates,
		strings.Count(p.log.String(), "dead replication link"))
	if d.duplicates != 0 {
		t.Errorf("%d duplicate deltas, want every row delivered once", d.duplicates)
	}
	if recovery > 30*time.Second {
		t.Errorf("recovery %v after SIGCONT, want ≤ 10 s (asserted ≤ 30 s)", recovery)
	}
}

// startServerWith is startServer with the frontend section's keys
// extended by frontendExtra ("k: v, …").
func startServerWith(t *testing.T, c serverConfig, frontendExtra string) *proc {
	t.Helper()
	path, front, back := writeConfig(t, c)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.Replace(string(b), "frontend: {", "frontend: {"+frontendExtra+", ", 1)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startProc(t, path, front, back)
}

// dialAddr opens a WebSocket to addr (the frontend or a proxy in front of
// it) with p's path.
func (p *proc) dialAddr(addr string) *wsClient {
	p.t.Helper()
	saved := p.front
	p.front = addr
	defer func() { p.front = saved }()
	return p.dial()
}

// TestClientBlackhole: a client's network goes silent (a proxy between it
// and the server drops every byte, sockets open). The server drops the
// client by its ping deadline (2 × frontend.ping_interval) and frees its
// connection and subscription; the client, back on a new connection,
// resumes its subscription and gets exactly the rows it missed.
func TestClientBlackhole(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, faultTable)
	p := startServerWith(t, serverConfig{DatabaseURL: url, Slot: randomName("e2e_cbh_"), Migrate: true, Body: faultModels +
		"datasync: {position_interval: 200ms}\n"}, "ping_interval: 1s")
	p.waitReady(60 * time.Second)
	px := startProxy(t, p.front)
	c := p.dialAddr(px.Addr())
	res := c.acquireResumable(p.mustAuthorize([]map[string]any{item("AllRows", nil)}, ""))
	mustExec(t, db, `INSERT INTO rows (seq, phase) SELECT g, 'before' FROM generate_series(1, 100) g`)
	c.waitDeltas(100, 60*time.Second)
	conns0, _ := p.metric("snorky_ws_connections")
	subs0, _ := p.metric("snorky_datasync_subscriptions")
	base, _ := p.metric("go_goroutines")

	px.Blackhole()
	downAt := time.Now()
	droppedAt := p.metricWait(60*time.Second, "snorky_ws_connections", func(v float64) bool { return v <= conns0-1 })
	subsAt := p.metricWait(60*time.Second, "snorky_datasync_subscriptions", func(v float64) bool { return v <= subs0-1 })
	g := p.goroutinesBack(base - 2) // the connection's reader and writer
	// Rows the client misses while it is away.
	mustExec(t, db, `INSERT INTO rows (seq, phase) SELECT g, 'away' FROM generate_series(101, 200) g`)
	from := c.lastOffset(res)
	px.Heal()
	c2 := p.dialAddr(px.Addr())
	r, errText := c2.resume(res, from)
	if errText != "" {
		t.Fatalf("resumeSubscription from %s: %s", from, errText)
	}
	if r.Epoch != res.Epoch {
		t.Fatalf("epoch changed: %s → %s", res.Epoch, r.Epoch)
	}
	mustExec(t, db, `INSERT INTO rows (seq, phase) SELECT g, 'after' FROM generate_series(201, 250) g`)
	c2.waitDeltas(150, 60*time.Second)
	time.Sleep(300 * time.Millisecond)
	all := append(c.received(), c2.received()...)
	table := tableSeqs(t, url)
	d := checkTableDelivery(t, "client", all, table, table, nil)
	if d.duplicates != 0 {
		t.Errorf("%d duplicate deltas across the resume, want 0", d.duplicates)
	}
	figure(t, "client blackhole: the server dropped the silent client %v after the blackhole began (its read deadline: 2 × ping_interval 1s + write_timeout 10s = 12 s), its subscription %v after; goroutines %v before, %v after",
		droppedAt.Sub(downAt).Round(time.Millisecond), subsAt.Sub(downAt).Round(time.Millisecond), base, g)
	figure(t, "client blackhole: resumed on a new connection: %d rows delivered in all, %d duplicates", d.delivered, d.duplicates)
}
