package cdc

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// TestFinalStatusOnShutdown: with periodic status updates out of the way
// (one an hour), stopping the reader still confirms the end of the last
// transaction the sink took, and not more.
func TestFinalStatusOnShutdown(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE items (id int PRIMARY KEY)`)
	cfg := testConfig(url, "items")
	cfg.StatusInterval = time.Hour
	cfg.ReceiveTimeout = 2 * time.Hour
	cfg.HeartbeatInterval = -1
	sink := &collector{}
	r := NewReader(cfg, sink, slog.New(slog.NewTextHandler(testWriter{t}, nil)), NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	eventually(t, 30*time.Second, "streaming", r.Ready)
	execSQL(t, url, `INSERT INTO items VALUES (1)`, `INSERT INTO items VALUES (2)`)
	eventually(t, 30*time.Second, "two transactions taken", func() bool { return len(sink.snapshot()) == 2 })
	taken := r.TakenLSN()
	if want := sink.snapshot()[1].EndLSN; taken != want {
		t.Fatalf("taken %s, want the last transaction's end %s", taken, want)
	}

	cancel()
	err := <-done
	stopped = true
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	confirmed, err := pglogrepl.ParseLSN(queryString(t, url, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot))
	if err != nil {
		t.Fatal(err)
	}
	if confirmed < taken {
		t.Fatalf("confirmed_flush_lsn %s after shutdown, want at least the last transaction taken (%s): no final status update", confirmed, taken)
	}
	t.Logf("confirmed %s, taken %s", confirmed, taken)
}
