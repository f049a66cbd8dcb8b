package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
	"golang.org/x/sync/errgroup"
)

// BenchmarkSQLPublish measures SQL-side publish throughput through the
// whole system: sqlWriters connections each commit transactions of
// sqlBatch snorky.publish calls; one WebSocket subscriber of the channel
// counts deliveries. One iteration is one message delivered. It reports
// messages/s delivered and the commit→client latency (from COMMIT
// returning on the writer to the message read by the client; a message
// read before its writer saw COMMIT return counts as 0) at p50 and p99.
//
// "max" writes as fast as the writers can (throughput; latency there is
// mostly queueing behind the saturated pipeline); "rate=N" paces the
// writers to N messages/s in total (latency at that load).
//
//	go test -run x -bench SQLPublish -benchtime 10s ./cmd/snorky
func BenchmarkSQLPublish(b *testing.B) {
	for _, rate := range []int{0, 20000} {
		name := "max"
		if rate > 0 {
			name = fmt.Sprintf("rate=%d", rate)
		}
		b.Run(name, func(b *testing.B) { benchSQLPublish(b, rate) })
	}
}

func benchSQLPublish(b *testing.B, rate int) {
	const (
		sqlWriters = 4
		sqlBatch   = 10
	)
	b.ReportAllocs()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(b)
	setup, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := setup.Exec(ctx, `CREATE TABLE tasks (id bigint PRIMARY KEY, title text)`); err != nil {
		b.Fatal(err)
	}
	setup.Close(ctx)
	slot := fmt.Sprintf("b_%d", time.Now().UnixNano()%1e9)
	s := startServer(b, fmt.Sprintf(`database: {url: %q, slot: %s, publication: %s, migrate: true}
models:
  Task: {table: tasks}
`, dbURL, slot, slot))
	deadline := time.Now().Add(30 * time.Second)
	for !s.reader.Ready() {
		if time.Now().After(deadline) {
			b.Fatal("replication not streaming within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Split b.N messages into transactions of up to sqlBatch, dealt round
	// robin to the writers.
	type txn struct{ first, n int }
	var plan [sqlWriters][]txn
	for i, k := 0, 0; i < b.N; k++ {
		n := min(sqlBatch, b.N-i)
		plan[k%sqlWriters] = append(plan[k%sqlWriters], txn{i, n})
		i += n
	}
	committed := make([]atomic.Int64, b.N) // UnixNano after COMMIT returned
	received := make([]int64, b.N)         // UnixNano when the client read it

	ws, _, err := websocket.DefaultDialer.Dial(s.frontendURL(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"bench"},"callId":1}}`)); err != nil {
		b.Fatal(err)
	}
	if _, m, err := ws.ReadMessage(); err != nil || !json.Valid(m) {
		b.Fatalf("subscribe: %s %v", m, err)
	}
	conns := make([]*pgx.Conn, sqlWriters)
	for w := range conns {
		if conns[w], err = pgx.Connect(ctx, dbURL); err != nil {
			b.Fatal(err)
		}
		defer conns[w].Close(ctx)
	}

	var got atomic.Int64
	done := make(chan error, 1)
	var once sync.Once
	b.ResetTimer()
	start := time.Now()
	go func() {
		var env struct {
			Message struct {
				Message struct {
					I int `json:"i"`
				} `json:"message"`
			} `json:"message"`
		}
		for n := 0; n < b.N; n++ {
			_, m, err := ws.ReadMessage()
			if err != nil {
				once.Do(func() { done <- err })
				return
			}
			at := time.Now().UnixNano()
			if err := json.Unmarshal(m, &env); err != nil || env.Message.Message.I < 0 || env.Message.Message.I >= b.N {
				once.Do(func() { done <- fmt.Errorf("unexpected message %s", m) })
				return
			}
			received[env.Message.Message.I] = at
			got.Add(1)
		}
		once.Do(func() { done <- nil })
	}()
	var g errgroup.Group
	for w := range sqlWriters {
		g.Go(func() error {
			// Paced: writer w's k-th transaction is due at start +
			// k*every (no sleep when behind).
			var every time.Duration
			if rate > 0 {
				every = time.Duration(float64(time.Second) * sqlBatch * sqlWriters / float64(rate))
			}
			for k, t := range plan[w] {
				if every > 0 {
					if d := time.Until(start.Add(time.Duration(k) * every)); d > 0 {
						time.Sleep(d)
					}
				}
				if _, err := conns[w].Exec(ctx, `SELECT count(snorky.publish('"bench"', jsonb_build_object('i', i))) FROM generate_series($1::int, $2::int) i`, t.first, t.first+t.n-1); err != nil {
					return err
				}
				now := time.Now().UnixNano()
				for i := t.first; i < t.first+t.n; i++ {
					committed[i].Store(now)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("writer: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			b.Fatalf("subscriber: %v", err)
		}
	case <-time.After(60 * time.Second):
		b.Fatalf("subscriber got %d of %d messages within 60s of the last commit", got.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	lat := make([]time.Duration, b.N)
	for i := range lat {
		lat[i] = time.Duration(max(0, received[i]-committed[i].Load()))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
