package handofftest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// recordingTB keeps what Check reports instead of failing the test.
type recordingTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

// TestCheckFindsBrokenHandoffs: the checker is not blind. A list that
// drops a row is reported as lost changes, one that repeats a row as
// doubled, and authorising before the query without a snapshot (changes
// arrive again) as doubled too; a correct handoff reports nothing.
func TestCheckFindsBrokenHandoffs(t *testing.T) {
	srv := StartServer(t, Options{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var mu sync.Mutex
	authorize := func(ctx context.Context, snapshot string) (string, error) {
		params := map[string]any{"items": []map[string]any{{"dealer": "AllItems", "query": nil}}}
		if snapshot != "" {
			params["snapshot"] = snapshot
		}
		return backendCall(ctx, srv, params)
	}
	list := func(ctx context.Context, tx pgx.Tx) ([]Row, error) {
		var b []byte
		if err := tx.QueryRow(ctx, `SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY id), '[]') FROM items i`).Scan(&b); err != nil {
			return nil, err
		}
		var rows []Row
		return rows, json.Unmarshal(b, &rows)
	}
	// handoff lists in a REPEATABLE READ transaction; change alters the
	// list, early authorises without a snapshot before the query.
	handoff := func(change func([]Row) []Row, early bool) HandoffFunc {
		return func(ctx context.Context) (rows []Row, token string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if early {
				if token, err = authorize(ctx, ""); err != nil {
					return nil, "", err
				}
				// Commits land between the authorisation and the query.
				if _, err := conn.Exec(ctx, `SELECT pg_sleep(0.02)`); err != nil {
					return nil, "", err
				}
			}
			err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
				var snapshot string
				if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snapshot); err != nil {
					return err
				}
				if rows, err = list(ctx, tx); err != nil {
					return err
				}
				if !early {
					token, err = authorize(ctx, snapshot)
				}
				return err
			})
			return change(rows), token, err
		}
	}
	same := func(r []Row) []Row { return r }
	w := StartWriter(t, srv.DatabaseURL, 300, 50)
	for deadline := time.Now().Add(30 * time.Second); len(w.State(w.Commits())) < 5; {
		if time.Now().After(deadline) {
			t.Fatal("the writer made fewer than 5 rows in 30s")
		}
		time.Sleep(10 * time.Millisecond) // rows to drop and repeat
	}
	tests := []struct {
		name                 string
		f                    HandoffFunc
		wantLost, wantDouble bool // at least one; a correct handoff has none of either
	}{
		{"correct", handoff(same, false), false, false},
		{"a row dropped from the list", handoff(func(r []Row) []Row { return r[1:] }, false), true, false},
		{"a row listed twice", handoff(func(r []Row) []Row { return append(r, r[0]) }, false), false, true},
		// Changes in the list arrive again: inserts doubled (and the
		// updates that follow them stale).
		{"authorised before the query, no snapshot", handoff(same, true), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			res := Check(rec, srv, w, 20, 1, tt.f)
			correct := !tt.wantLost && !tt.wantDouble
			switch {
			case correct && (res.Lost > 0 || res.Doubled > 0 || len(rec.errors) > 0):
				t.Errorf("got %v, want none lost or doubled: %s", res, strings.Join(rec.errors, "; "))
			case tt.wantLost && res.Lost == 0, tt.wantDouble && res.Doubled == 0:
				t.Errorf("got %v, want lost>0: %v, doubled>0: %v", res, tt.wantLost, tt.wantDouble)
			case !correct && len(rec.errors) == 0:
				t.Errorf("got %v and no report, want the problems reported", res)
			}
			if res.Handoffs != 20 {
				t.Errorf("got %d handoffs, want 20", res.Handoffs)
			}
		})
	}
}
