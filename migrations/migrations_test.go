package migrations

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestUpDownUp(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, pgtest.NewDatabase(t))
	all, err := All()
	if err != nil || len(all) == 0 {
		t.Fatalf("All: %v, %v", all, err)
	}
	applied, err := Up(ctx, conn)
	if err != nil || len(applied) != len(all) {
		t.Fatalf("Up: applied %v, err %v; want all %d", applied, err, len(all))
	}
	var n int
	conn.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE pronamespace = 'snorky'::regnamespace`).Scan(&n)
	if n != 2 {
		t.Fatalf("functions in snorky: got %d, want 2", n)
	}
	if again, err := Up(ctx, conn); err != nil || len(again) != 0 {
		t.Fatalf("Up again: applied %v, err %v; want nothing", again, err)
	}
	reverted, err := Down(ctx, conn, 1)
	if err != nil || len(reverted) != 1 || reverted[0] != all[len(all)-1].Version {
		t.Fatalf("Down 1: %v, %v", reverted, err)
	}
	if _, err := Down(ctx, conn, 100); err != nil {
		t.Fatal(err)
	}
	conn.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE pronamespace = 'snorky'::regnamespace`).Scan(&n)
	if n != 0 {
		t.Fatalf("after Down: %d functions left", n)
	}
	if v, _ := Applied(ctx, conn); len(v) != 0 {
		t.Fatalf("after Down: applied %v", v)
	}
	if applied, err := Up(ctx, conn); err != nil || len(applied) != len(all) {
		t.Fatalf("Up after Down: %v, %v", applied, err)
	}
}

// TestConcurrentUp: two sessions migrating at once apply each migration
// once and both succeed.
func TestConcurrentUp(t *testing.T) {
	url := pgtest.NewDatabase(t)
	conns := []*pgx.Conn{connect(t, url), connect(t, url), connect(t, url)}
	var wg sync.WaitGroup
	results := make([][]int, len(conns))
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Up(context.Background(), c)
		}()
	}
	wg.Wait()
	total := 0
	for i := range conns {
		if errs[i] != nil {
			t.Fatalf("session %d: %v", i, errs[i])
		}
		total += len(results[i])
	}
	all, _ := All()
	if total != len(all) {
		t.Fatalf("migrations applied %d times in all, want %d", total, len(all))
	}
}

func TestPublishDeltaRefusesBadType(t *testing.T) {
	ctx := context.Background()
	conn := connect(t, pgtest.NewDatabase(t))
	if _, err := Up(ctx, conn); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, `SELECT snorky.publish_delta('Task', 'upsert', '{"id":1}')`)
	if err == nil || !strings.Contains(err.Error(), "type must be insert, update or delete") {
		t.Fatalf("got %v, want a clear error", err)
	}
	if _, err := conn.Exec(ctx, `SELECT snorky.publish('{"room":1}', '"hi"'), snorky.publish_delta('Task', 'insert', '{"id":1}')`); err != nil {
		t.Fatal(err)
	}
}
