package cdc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func describe(c Change) string {
	s := c.Op.String() + " " + c.Table
	if c.New != nil {
		s += " new=" + rowJSON(c.New)
	}
	if c.Old != nil {
		s += " old=" + rowJSON(c.Old)
	}
	if len(c.Unchanged) > 0 {
		s += " unchanged=" + strings.Join(c.Unchanged, ",")
	}
	return s
}

func TestChangesInCommitOrder(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url,
		`CREATE TABLE tasks (id int PRIMARY KEY, title text, done bool)`,
		`CREATE TABLE keyed (id int PRIMARY KEY, v text)`,
		`CREATE SCHEMA app`,
		`CREATE TABLE app.notes (id int PRIMARY KEY, body text)`,
	)
	cfg := testConfig(url, "tasks", "app.notes")
	cfg.Tables = append(cfg.Tables, TableConfig{Name: "keyed", ReplicaIdentity: IdentityDefault})
	sink := &collector{}
	startReader(t, cfg, sink)

	execSQL(t, url,
		`INSERT INTO tasks VALUES (1, 'a', false)`,
		`BEGIN; INSERT INTO tasks VALUES (2, 'b', false), (3, 'c', true); INSERT INTO app.notes VALUES (1, 'n'); COMMIT`,
		`BEGIN; INSERT INTO tasks VALUES (99, 'rolled back', false); ROLLBACK`,
		`UPDATE tasks SET done = true WHERE id = 1`,
		`INSERT INTO keyed VALUES (1, 'x')`,
		`UPDATE keyed SET v = 'y' WHERE id = 1`,
		`UPDATE keyed SET id = 2 WHERE id = 1`,
		`DELETE FROM keyed WHERE id = 2`,
		`DELETE FROM tasks WHERE id = 2`,
		`TRUNCATE tasks, app.notes`,
	)
	want := [][]string{
		{`insert public.tasks new={"id":1,"title":"a","done":false}`},
		{`insert public.tasks new={"id":2,"title":"b","done":false}`, `insert public.tasks new={"id":3,"title":"c","done":true}`, `insert app.notes new={"id":1,"body":"n"}`},
		{`update public.tasks new={"id":1,"title":"a","done":true} old={"id":1,"title":"a","done":false}`},
		{`insert public.keyed new={"id":1,"v":"x"}`},
		{`update public.keyed new={"id":1,"v":"y"} old={"id":1}`},
		{`update public.keyed new={"id":2,"v":"y"} old={"id":1}`},
		{`delete public.keyed old={"id":2}`},
		{`delete public.tasks old={"id":2,"title":"b","done":false}`},
		{`truncate public.tasks`, `truncate app.notes`},
	}
	eventually(t, 30*time.Second, "all transactions delivered", func() bool { return len(sink.snapshot()) >= len(want) })
	txns := sink.snapshot()
	if len(txns) != len(want) {
		t.Fatalf("transactions: got %d, want %d", len(txns), len(want))
	}
	var prev LSN
	for i, txn := range txns {
		var got []string
		for _, c := range txn.Changes {
			got = append(got, describe(c))
		}
		if strings.Join(got, "\n") != strings.Join(want[i], "\n") {
			t.Errorf("txn %d:\ngot  %q\nwant %q", i, got, want[i])
		}
		if txn.EndLSN <= prev || txn.CommitLSN >= txn.EndLSN {
			t.Errorf("txn %d: CommitLSN %s EndLSN %s after previous end %s: want increasing", i, txn.CommitLSN, txn.EndLSN, prev)
		}
		if txn.CommitTime.IsZero() || txn.Xid == 0 {
			t.Errorf("txn %d: CommitTime %v, Xid %d: want both set", i, txn.CommitTime, txn.Xid)
		}
		prev = txn.EndLSN
	}
	// The publication covers exactly the configured tables, via the root.
	if got := queryString(t, url, `SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) || ' ' || bool_and(p.pubviaroot)
		FROM pg_publication_tables JOIN pg_publication p USING (pubname) WHERE pubname = 'snorky_test'`); got != "app.notes,public.keyed,public.tasks true" {
		t.Errorf("publication: got %q, want app.notes,public.keyed,public.tasks true", got)
	}
	if got := queryString(t, url, `SELECT relreplident::text FROM pg_class WHERE oid = 'tasks'::regclass`); got != "f" {
		t.Errorf("replica identity of tasks: got %q, want f", got)
	}
}

func TestLogicalMessages(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	sink := &collector{}
	startReader(t, testConfig(url, "t"), sink)
	execSQL(t, url, `BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'snorky', 'hello'); SELECT pg_logical_emit_message(true, 'other', 'x'); INSERT INTO t VALUES (2); COMMIT`)
	eventually(t, 30*time.Second, "txn delivered", func() bool { return len(sink.snapshot()) == 1 })
	txn := sink.snapshot()[0]
	if len(txn.Messages) != 1 || txn.Messages[0].Index != 1 || string(txn.Messages[0].Content) != "hello" {
		t.Errorf("messages: got %+v, want one 'hello' at index 1", txn.Messages)
	}
}

func TestConfirmedNeverPassesTaken(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	gate := make(chan struct{})
	sink := &collector{gate: gate}
	cfg := testConfig(url, "t")
	r := startReader(t, cfg, sink)
	t.Cleanup(func() { close(gate) })

	slotConfirmed := func() LSN {
		s := queryString(t, url, `SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot)
		lsn, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatalf("parsing %q: %v", s, err)
		}
		return lsn
	}
	before := slotConfirmed()
	for i := 1; i <= 3; i++ {
		execSQL(t, url, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
	}
	end := queryString(t, url, `SELECT pg_current_wal_lsn()::text`)
	// Sample the slot while the sink holds the first transaction and
	// status updates keep flowing (every 100ms).
	eventually(t, 30*time.Second, "reader waiting on the sink", func() bool { return r.pending.Load() >= 2 })
	for range 20 {
		if got := slotConfirmed(); got > r.TakenLSN() && got > before {
			t.Fatalf("confirmed_flush_lsn %s passed what the sink took (%s)", got, r.TakenLSN())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		gate <- struct{}{}
	}
	eventually(t, 30*time.Second, "three transactions taken", func() bool { return len(sink.snapshot()) == 3 })
	endLSN, _ := pglogrepl.ParseLSN(end)
	eventually(t, 30*time.Second, "slot confirmed up to the last transaction", func() bool {
		return slotConfirmed() >= sink.snapshot()[2].EndLSN && r.ConfirmedLSN() >= sink.snapshot()[2].EndLSN
	})
	if last := sink.snapshot()[2].EndLSN; last > endLSN {
		t.Errorf("last EndLSN %s beyond the WAL end %s after the commits", last, endLSN)
	}
}

func TestReconnectAfterRestart(t *testing.T) {
	srv := pgtest.StartTB(t, pglocal.Options{})
	url := pgtest.NewDatabaseAt(t, srv.URL("postgres"))
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	sink := &collector{}
	r := startReader(t, testConfig(url, "t"), sink)

	for i := 1; i <= 20; i++ {
		execSQL(t, url, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
	}
	eventually(t, 30*time.Second, "first 20 delivered", func() bool { return len(sink.changes()) == 20 })
	if err := srv.Restart(context.Background(), pglocal.Fast); err != nil {
		t.Fatalf("restart: %v", err)
	}
	for i := 21; i <= 40; i++ {
		execSQL(t, url, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, i))
	}
	eventually(t, 60*time.Second, "all 40 delivered after the restart", func() bool { return len(sink.changes()) >= 40 && r.Ready() })
	seen := make(map[string]int)
	for i, c := range sink.changes() {
		id := string(c.New[0].Value)
		seen[id]++
		if want := fmt.Sprint(i + 1); id != want {
			t.Errorf("change %d: got id %s, want %s (commit order, no duplicate)", i, id, want)
		}
	}
	if len(seen) != 40 {
		t.Errorf("distinct rows: got %d, want 40", len(seen))
	}
}

func TestSchemaChangesMidStream(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY, a text, b int)`)
	sink := &collector{}
	startReader(t, testConfig(url, "t"), sink)
	execSQL(t, url,
		`INSERT INTO t VALUES (1, 'x', 1)`,
		`ALTER TABLE t ADD COLUMN c numeric DEFAULT 1.50`,
		`INSERT INTO t VALUES (2, 'y', 2, 3.25)`,
		`ALTER TABLE t DROP COLUMN b`,
		`INSERT INTO t VALUES (3, 'z', 4)`,
		`ALTER TABLE t RENAME COLUMN a TO title`,
		`ALTER TABLE t ALTER COLUMN c TYPE text`,
		`UPDATE t SET title = 'zz' WHERE id = 3`,
	)
	want := []string{
		`insert public.t new={"id":1,"a":"x","b":1}`,
		`insert public.t new={"id":2,"a":"y","b":2,"c":3.25}`,
		`insert public.t new={"id":3,"a":"z","c":4}`,
		`update public.t new={"id":3,"title":"zz","c":"4"} old={"id":3,"title":"z","c":"4"}`,
	}
	eventually(t, 30*time.Second, "all changes", func() bool { return len(sink.changes()) >= len(want) })
	for i, c := range sink.changes() {
		if got := describe(c); i >= len(want) || got != want[i] {
			t.Errorf("change %d: got %s, want %s", i, got, want[min(i, len(want)-1)])
		}
	}
}

func TestUnchangedToast(t *testing.T) {
	url := pgtest.NewDatabase(t)
	big := strings.Repeat("0123456789abcdef", 20*1024/16)
	execSQL(t, url,
		`CREATE TABLE full_t (id int PRIMARY KEY, n int, big text)`,
		`ALTER TABLE full_t ALTER COLUMN big SET STORAGE EXTERNAL`,
		`CREATE TABLE def_t (id int PRIMARY KEY, n int, big text)`,
		`ALTER TABLE def_t ALTER COLUMN big SET STORAGE EXTERNAL`,
		fmt.Sprintf(`INSERT INTO full_t VALUES (1, 1, '%s')`, big),
		fmt.Sprintf(`INSERT INTO def_t VALUES (1, 1, '%s')`, big),
	)
	cfg := testConfig(url, "full_t")
	cfg.Tables = append(cfg.Tables, TableConfig{Name: "def_t", ReplicaIdentity: IdentityDefault})
	sink := &collector{}
	startReader(t, cfg, sink)
	execSQL(t, url, `UPDATE full_t SET n = 2`, `UPDATE def_t SET n = 2`)
	eventually(t, 30*time.Second, "two updates", func() bool { return len(sink.changes()) == 2 })
	changes := sink.changes()
	full, def := changes[0], changes[1]
	if len(full.Unchanged) != 0 || len(full.New) != 3 || string(full.New[2].Value) != `"`+big+`"` {
		t.Errorf("FULL: got unchanged %v and %d columns (big filled: %v), want big filled from the old row",
			full.Unchanged, len(full.New), len(full.New) == 3 && string(full.New[2].Value) == `"`+big+`"`)
	}
	if strings.Join(def.Unchanged, ",") != "big" || len(def.New) != 2 {
		t.Errorf("DEFAULT: got unchanged %v, new %s; want big unchanged and absent", def.Unchanged, rowJSON(def.New))
	}
	for _, c := range changes {
		for _, col := range c.New {
			if col.Name == "big" && string(col.Value) == "null" {
				t.Errorf("%s: unchanged TOAST reported as null", c.Table)
			}
		}
	}
}

// TestSlotTakeover is T19a in process: a second reader on the slot is a
// standby that receives nothing, and takes over when the first stops.
func TestSlotTakeover(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	cfg := testConfig(url, "t")
	first := &collector{}
	r1 := NewReader(cfg, first, nil, nil)
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- r1.Run(ctx1) }()
	defer stop1()
	eventually(t, 30*time.Second, "first reader ready", r1.Ready)
	execSQL(t, url, `INSERT INTO t VALUES (1)`)
	eventually(t, 30*time.Second, "first reader got row 1", func() bool { return len(first.changes()) == 1 })

	reg := prometheus.NewRegistry()
	second := &collector{}
	r2 := NewReader(cfg, second, nil, NewMetrics(reg))
	ctx2, stop2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- r2.Run(ctx2) }()
	defer func() {
		stop2()
		if err := <-done2; err != nil {
			t.Errorf("second Run: %v", err)
		}
	}()
	// The second is a standby while the first owns the slot (R1): it
	// waits on the owner lock, reports so, and receives nothing.
	eventually(t, 30*time.Second, "second reader is a standby", func() bool { return r2.State() == StateStandby })
	if err := r2.Health(); err == nil || !strings.Contains(err.Error(), "standby") {
		t.Errorf("standby Health: got %v, want an error saying standby", err)
	}
	if got := testutil.ToFloat64(r2.metrics.standby); got != 1 {
		t.Errorf("snorky_cdc_standby: got %v, want 1", got)
	}
	// A standby stops promptly while it waits.
	r3 := NewReader(cfg, &collector{}, nil, nil)
	ctx3, stop3 := context.WithCancel(context.Background())
	done3 := make(chan error, 1)
	go func() { done3 <- r3.Run(ctx3) }()
	eventually(t, 30*time.Second, "third reader is a standby", func() bool { return r3.State() == StateStandby })
	stop3()
	select {
	case err := <-done3:
		if err != nil {
			t.Errorf("standby's Run after cancel: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("a standby's Run did not return within 10s of cancel")
	}
	if got := r3.State(); got != StateStopped {
		t.Errorf("State after Run returned: got %s, want %s", got, StateStopped)
	}
	execSQL(t, url, `INSERT INTO t VALUES (10)`)
	eventually(t, 30*time.Second, "first reader got row 10", func() bool { return len(first.changes()) == 2 })
	if r2.Ready() || r2.State() != StateStandby || len(second.changes()) != 0 {
		t.Fatalf("second reader while the first owns the slot: ready %v, state %s, %d changes; want a standby with none",
			r2.Ready(), r2.State(), len(second.changes()))
	}
	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("first Run: %v", err)
	}
	execSQL(t, url, `INSERT INTO t VALUES (2)`)
	eventually(t, 30*time.Second, "second reader took over", func() bool { return len(second.changes()) == 1 })
	if got := string(second.changes()[0].New[0].Value); got != "2" {
		t.Errorf("second reader's first row: got %s, want 2 (rows 1 and 10 were confirmed by the first)", got)
	}
	if got := testutil.ToFloat64(r2.metrics.transactions); got != 1 {
		t.Errorf("snorky_cdc_transactions_total: got %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 9 {
		t.Errorf("registered metrics: got %d (%v), want 9", n, err)
	}
}

// TestCompositeTypeAlteredMidStream: a composite type altered while the
// reader streams (pgoutput sends no Relation message for it) is read again
// from the catalog when a value stops parsing, and the stream goes on; it
// used to stop at the first such value, and to retry on it for ever.
func TestCompositeTypeAlteredMidStream(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TYPE pair AS (a int, b text)`, `CREATE TABLE t (id int PRIMARY KEY, p pair)`)
	sink := &collector{}
	startReader(t, testConfig(url, "t"), sink)
	step := func(n int, stmts ...string) {
		t.Helper()
		execSQL(t, url, stmts...)
		eventually(t, 30*time.Second, fmt.Sprintf("change %d", n), func() bool { return len(sink.changes()) >= n })
	}
	step(1, `INSERT INTO t VALUES (1, ROW(1, 'x'))`)
	step(2, `ALTER TYPE pair ADD ATTRIBUTE c int`, `INSERT INTO t VALUES (2, ROW(2, 'y', 3))`)
	step(3, `ALTER TYPE pair DROP ATTRIBUTE b`, `INSERT INTO t VALUES (3, ROW(3, 4))`)
	want := []string{
		`insert public.t new={"id":1,"p":{"a":1,"b":"x"}}`,
		`insert public.t new={"id":2,"p":{"a":2,"b":"y","c":3}}`,
		`insert public.t new={"id":3,"p":{"a":3,"c":4}}`,
	}
	got := sink.changes()
	if len(got) != len(want) {
		t.Fatalf("got %d changes, want %d", len(got), len(want))
	}
	for i := range want {
		if d := describe(got[i]); d != want[i] {
			t.Errorf("change %d: got %s, want %s", i, d, want[i])
		}
	}
}

// TestMessagesCountTowardsTheLimits: logical messages (SQL publishing) are
// handed on in chunks and bounded by max_tx_bytes as changes are; a
// transaction too large that held messages says so (MessagesDropped).
func TestMessagesCountTowardsTheLimits(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TABLE t (id int PRIMARY KEY)`)
	sink := &collector{}
	cfg := testConfig(url, "t")
	cfg.MaxTxBytes = 64 << 10
	startReader(t, cfg, sink)

	// 5,000 messages of ~5 bytes: under the bound, more than a chunk.
	execSQL(t, url, `BEGIN; SELECT count(pg_logical_emit_message(true, 'snorky', 'm' || i)) FROM generate_series(1, 5000) i; INSERT INTO t VALUES (1); COMMIT`)
	eventually(t, 30*time.Second, "the transaction's end", func() bool {
		txns := sink.snapshot()
		return len(txns) > 0 && !txns[len(txns)-1].Partial
	})
	txns := sink.snapshot()
	messages, partial := 0, 0
	for _, txn := range txns {
		messages += len(txn.Messages)
		if txn.Partial {
			partial++
		}
		if txn.TooLarge {
			t.Fatalf("5,000 small messages made a transaction too large")
		}
	}
	if messages != 5000 || partial == 0 || len(txns[len(txns)-1].Changes) != 1 {
		t.Fatalf("got %d messages in %d chunks (%d partial), want 5,000 in more than one, then the insert", messages, len(txns), partial)
	}

	// 100 messages of 1 KB: over the 64 KiB bound.
	before := len(txns)
	execSQL(t, url, `SELECT count(pg_logical_emit_message(true, 'snorky', repeat('x', 1000))) FROM generate_series(1, 100)`)
	eventually(t, 30*time.Second, "the large transaction", func() bool {
		txns := sink.snapshot()
		return len(txns) > before && !txns[len(txns)-1].Partial
	})
	last := sink.snapshot()[len(sink.snapshot())-1]
	if !last.TooLarge || len(last.Messages) != 0 || !slices.Equal(last.Tables, []string{MessagesDropped}) {
		t.Fatalf("too large: got TooLarge %v, %d messages, tables %q; want TooLarge, none, [%s]", last.TooLarge, len(last.Messages), last.Tables, MessagesDropped)
	}
}

// TestCompositeRowsFromBeforeTheChange: rows written before an ALTER TYPE
// and read after it (the reader was stopped) no longer parse as the type
// is now: they are sent as their text, and the rows after the change as
// objects; the stream goes on.
func TestCompositeRowsFromBeforeTheChange(t *testing.T) {
	url := pgtest.NewDatabase(t)
	execSQL(t, url, `CREATE TYPE pair AS (a int, b text)`, `CREATE TABLE t (id int PRIMARY KEY, p pair)`)
	cfg := testConfig(url, "t")
	r1 := NewReader(cfg, &collector{}, nil, nil)
	run1 := runReader(t, r1)
	eventually(t, 30*time.Second, "the slot created", r1.Ready)
	if err := run1.stop(); err != nil {
		t.Fatal(err)
	}
	execSQL(t, url,
		`INSERT INTO t SELECT i, ROW(i, 'x')::pair FROM generate_series(1, 5) i`,
		`ALTER TYPE pair ADD ATTRIBUTE c int`,
		`INSERT INTO t VALUES (6, ROW(6, 'y', 7))`)
	sink := &collector{}
	startReader(t, cfg, sink)
	eventually(t, 30*time.Second, "6 rows", func() bool { return len(sink.changes()) >= 6 })
	for i, c := range sink.changes() {
		want := fmt.Sprintf(`insert public.t new={"id":%d,"p":"(%d,x)"}`, i+1, i+1)
		if i == 5 {
			want = `insert public.t new={"id":6,"p":{"a":6,"b":"y","c":7}}`
		}
		if got := describe(c); got != want {
			t.Errorf("change %d: got %s, want %s", i, got, want)
		}
	}
}
