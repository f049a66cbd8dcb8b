package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkCDCIngest: the server's share of decoding and routing row
// changes from PostgreSQL (no subscriptions, so nothing is written to
// sockets): per iteration 100 transactions of 100 rows are committed, and
// the clock runs until the engine has taken them all.
func BenchmarkCDCIngest(b *testing.B) {
	e := startCDC(b, "log: {level: error}")
	var sql strings.Builder
	for i := range 100 {
		fmt.Fprintf(&sql, "INSERT INTO tasks (id, title, owner) SELECT g, 'a task title of some length', g %% 1000 FROM generate_series(%d, %d) g;", i*100, i*100+99)
	}
	ctx := context.Background()
	b.ResetTimer()
	for n := range b.N {
		before := counter(b, e.s, "snorky_datasync_transactions_total")
		if _, err := e.db.Exec(ctx, "TRUNCATE tasks; "+sqlBatches(sql.String(), n)); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for counter(b, e.s, "snorky_datasync_transactions_total") < before+100 {
			if time.Now().After(deadline) {
				b.Fatal("the engine did not take the transactions within 60s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10000), "ns/row")
}

// sqlBatches wraps each statement in its own transaction (a multi-statement
// string is otherwise one transaction).
func sqlBatches(stmts string, _ int) string {
	var out strings.Builder
	for _, s := range strings.Split(strings.TrimSuffix(stmts, ";"), ";") {
		out.WriteString("BEGIN;" + s + ";COMMIT;")
	}
	return out.String()
}

// counter reads a counter from the server's metrics registry.
func counter(tb testing.TB, s *server, name string) float64 {
	mfs, err := s.metrics.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			total := 0.0
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
			return total
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}
