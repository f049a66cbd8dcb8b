package e2e

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// TestManyClientsResumeAfterRestart measures issue 10's "1,000 clients
// resuming at once after a restart": every client resumes from its last
// offset after the server was killed and restarted while rows were
// written; the test reports the time until all are live again and the
// server's CPU time, and checks each got every missed row exactly once.
// CI runs 100 clients; SNORKY_TEST_RESUME_CLIENTS=1000 gives the figure in
// BENCHMARKS.md.
func TestManyClientsResumeAfterRestart(t *testing.T) {
	clients := 100
	if v, err := strconv.Atoi(os.Getenv("SNORKY_TEST_RESUME_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	url := pgtest.NewDatabase(t)
	db := dbConnect(t, url)
	mustExec(t, db, `CREATE TABLE mr (seq int PRIMARY KEY)`)
	slot := randomName("e2e_many_")
	p := startPlainServer(t, serverConfig{DatabaseURL: url, Slot: slot, Migrate: true, Body: `models:
  Mr: {table: mr}
dealers:
  AllMr: {model: Mr, kind: broadcast}
`})
	p.waitReady(60 * time.Second)
	token := func() string { return p.mustAuthorize([]map[string]any{item("AllMr", nil)}, "") }
	cs := make([]*wsClient, clients)
	res := make([]resumable, clients)
	for i := range cs {
		cs[i] = p.dial()
		res[i] = cs[i].acquireResumable(token())
	}
	mustExec(t, db, `INSERT INTO mr SELECT g FROM generate_series(1, 100) g`)
	for _, c := range cs {
		c.waitDeltas(100, 60*time.Second)
	}
	p.kill()
	// Missed while the server is down: 10 transactions of 100 rows.
	for i := range 10 {
		mustExec(t, db, `INSERT INTO mr SELECT g FROM generate_series($1::int, $1::int + 99) g`, 1000+i*100)
	}
	p2 := p.restart()
	p2.waitListening(60 * time.Second)
	cpu0 := p2.cpuTime()
	began := time.Now()
	for _, c := range cs {
		<-c.done // the old connections are gone
	}
	oldGone := time.Since(began)
	var wg sync.WaitGroup
	second := make([]*wsClient, clients)
	var dialed, maxResume atomic.Int64
	errs := make(chan error, clients)
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := p2.dial()
			second[i] = c
			dialed.Store(max(dialed.Load(), int64(time.Since(began))))
			t0 := time.Now()
			if _, errText := c.resume(res[i], cs[i].lastOffset(res[i])); errText != "" {
				errs <- fmt.Errorf("client %d: %s", i, errText)
			}
			if d := int64(time.Since(t0)); d > maxResume.Load() {
				maxResume.Store(d)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	answered := time.Since(began)
	for _, c := range second {
		c.waitDeltas(1000, 60*time.Second)
	}
	took := time.Since(began)
	cpu := p2.cpuTime() - cpu0
	time.Sleep(200 * time.Millisecond)
	for i, c := range second {
		if n := c.count(); n != 1000 {
			t.Errorf("client %d: got %d missed rows, want 1000", i, n)
		}
	}
	t.Logf("old connections gone %v; last dial done %v; slowest resume call %v", oldGone.Round(time.Millisecond), time.Duration(dialed.Load()).Round(time.Millisecond), time.Duration(maxResume.Load()).Round(time.Millisecond))
	t.Logf("%d clients resumed after a restart: every resume answered (after its 1,000 missed rows) %v after the server listened, all live %v after it; server CPU %v (%.2f µs per replayed delivery). The test's own clients decode every delta and share the machine's cores: they are most of the wall time", clients, answered.Round(time.Millisecond), took.Round(time.Millisecond), cpu, float64(cpu.Microseconds())/float64(clients*1000))
}
