package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pubsubMessage returns the next message, which must be a PubSub
// notification, as its channel and message.
func (c *wsClient) pubsubMessage() (channel, message string) {
	c.t.Helper()
	m := c.next()
	msg, _ := m["message"].(map[string]any)
	if m["service"] != "pubsub" || msg["type"] != "message" {
		c.t.Fatalf("got %v, want a PubSub message", m)
	}
	return fmt.Sprint(msg["channel"]), fmt.Sprint(msg["message"])
}

// TestSQLPublish: snorky.publish in a committed transaction reaches the
// channel's subscribers once, after the deltas of the rows the transaction
// changed before it; a rolled-back transaction delivers nothing.
func TestSQLPublish(t *testing.T) {
	e := startCDC(t, "")
	sub := dial(t, e.s, nil)
	sub.ok("pubsub", "subscribe", map[string]any{"channel": "orders"})
	both := dial(t, e.s, nil)
	both.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, e.s, `[{"dealer":"AllTasks","query":null}]`)})
	both.ok("pubsub", "subscribe", map[string]any{"channel": "orders"})
	obj := dial(t, e.s, nil)
	obj.ok("pubsub", "subscribe", map[string]any{"channel": map[string]any{"room": 1, "tags": []any{"x"}}})

	e.exec(t, `BEGIN; INSERT INTO tasks (id, title, owner) VALUES (1, 'a', 7); SELECT snorky.publish('"orders"', '{"id":1}'); COMMIT`)
	if ch, msg := sub.pubsubMessage(); ch != "orders" || msg != "map[id:1]" {
		t.Fatalf("subscriber: got %s %s, want orders map[id:1]", ch, msg)
	}
	if d := both.delta(); d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["id"]) != "1" {
		t.Fatalf("DataSync and PubSub subscriber, first: got %v, want the insert of task 1", d)
	}
	if ch, msg := both.pubsubMessage(); ch != "orders" || msg != "map[id:1]" {
		t.Fatalf("DataSync and PubSub subscriber, second: got %s %s, want orders map[id:1]", ch, msg)
	}

	// Rolled back: nothing. The next committed publish is the next message
	// (commit order), so nothing of the rollback came before it.
	e.exec(t, `BEGIN; INSERT INTO tasks (id, title, owner) VALUES (2, 'never', 7); SELECT snorky.publish('"orders"', '{"id":2}'); ROLLBACK`)
	e.exec(t, `SELECT snorky.publish('"orders"', '{"id":3}')`)
	for _, c := range []*wsClient{sub, both} {
		if ch, msg := c.pubsubMessage(); ch != "orders" || msg != "map[id:3]" {
			t.Fatalf("after a rollback: got %s %s, want orders map[id:3]", ch, msg)
		}
	}

	// Channels compare as JSON values, as the PubSub service compares them.
	e.exec(t, `SELECT snorky.publish('{"tags":["x"],"room":1.0}', '"obj"')`)
	if _, msg := obj.pubsubMessage(); msg != "obj" {
		t.Fatalf("object channel: got %s, want obj", msg)
	}
	// Nothing more: the next message of each is the next commit's.
	e.exec(t, `SELECT snorky.publish('"orders"', '"end"')`)
	for _, c := range []*wsClient{sub, both} {
		if ch, msg := c.pubsubMessage(); ch != "orders" || msg != "end" {
			t.Fatalf("got %s %s, want orders end and nothing before it", ch, msg)
		}
	}
}

// TestSQLPublishDelta: snorky.publish_delta reaches exactly the
// subscriptions its dealers match, with an offset in order with the
// transaction's row changes.
func TestSQLPublishDelta(t *testing.T) {
	e := startCDC(t, "")
	owner := func(n int) *wsClient {
		c := dial(t, e.s, nil)
		c.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, e.s, fmt.Sprintf(`[{"dealer":"TasksByOwner","query":%d}]`, n))})
		return c
	}
	owner7, owner8 := owner(7), owner(8)

	e.exec(t, `BEGIN;
		INSERT INTO tasks (id, title, owner) VALUES (10, 'row', 7);
		SELECT snorky.publish_delta('Task', 'insert', '{"id":11,"title":"sql","owner":7}');
		INSERT INTO tasks (id, title, owner) VALUES (12, 'row', 7);
		COMMIT`)
	var offsets []string
	for _, want := range []string{"10", "11", "12"} {
		d := owner7.delta()
		if d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["id"]) != want {
			t.Fatalf("owner 7: got %v, want the insert of %s", d, want)
		}
		offsets = append(offsets, d["offset"].(string))
	}
	if !(offsets[0] < offsets[1] && offsets[1] < offsets[2]) {
		t.Fatalf("offsets %v: want increasing in transaction order", offsets)
	}

	// An update moving the SQL-made row from owner 7 to owner 8: a delete
	// for 7, an insert for 8, as publishDeltas would route it.
	e.exec(t, `SELECT snorky.publish_delta('Task', 'update', '{"id":11,"title":"sql","owner":8}', '{"id":11,"title":"sql","owner":7}')`)
	if d := owner7.delta(); d["type"] != "delete" || fmt.Sprint(d["data"].(map[string]any)["id"]) != "11" || d["offset"].(string) <= offsets[2] {
		t.Fatalf("owner 7: got %v, want the delete of 11 after offset %s", d, offsets[2])
	}
	// owner 8's first delta is this insert: it received none of the above.
	if d := owner8.delta(); d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["owner"]) != "8" {
		t.Fatalf("owner 8: got %v, want the insert of 11", d)
	}
	// Nothing more: the next delta of each is the next commit's.
	e.exec(t, `BEGIN;
		SELECT snorky.publish_delta('Task', 'insert', '{"id":97,"title":"end","owner":7}');
		SELECT snorky.publish_delta('Task', 'insert', '{"id":98,"title":"end","owner":8}');
		COMMIT`)
	for c, want := range map[*wsClient]string{owner7: "97", owner8: "98"} {
		if d := c.delta(); d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["id"]) != want {
			t.Fatalf("got %v, want the insert of %s and nothing before it", d, want)
		}
	}
}

// TestSQLPublishMalformed: malformed messages are skipped and counted, and
// replication continues, with the rest of their transaction.
func TestSQLPublishMalformed(t *testing.T) {
	e := startCDC(t, "")
	all := dial(t, e.s, nil)
	all.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, e.s, `[{"dealer":"AllTasks","query":null}]`)})
	before := rejected(t, e.s)

	e.exec(t, `BEGIN; SELECT pg_logical_emit_message(true, 'snorky', 'not json'); INSERT INTO tasks (id, title, owner) VALUES (20, 'a', 1); COMMIT`)
	e.exec(t, `SELECT snorky.publish_delta('Nope', 'insert', '{"id":1}')`)
	e.exec(t, `SELECT pg_logical_emit_message(true, 'snorky', '{"op":"publish","channel":"orders"}')`)
	e.exec(t, `SELECT pg_logical_emit_message(true, 'snorky', '{"op":"delta","model":"Task","type":"upsert","data":{"id":1}}')`)
	e.exec(t, `INSERT INTO tasks (id, title, owner) VALUES (21, 'b', 1)`)
	for _, want := range []string{"20", "21"} {
		if d := all.delta(); d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["id"]) != want {
			t.Fatalf("got %v, want the insert of %s", d, want)
		}
	}
	if got := rejected(t, e.s) - before; got != 4 {
		t.Fatalf("snorky_datasync_sql_messages_rejected_total grew by %v, want 4", got)
	}
	if !e.s.reader.Ready() {
		t.Fatal("replication stopped after malformed messages")
	}
	// Nothing more: the next delta is the next commit's.
	e.exec(t, `INSERT INTO tasks (id, title, owner) VALUES (22, 'end', 1)`)
	if d := all.delta(); d["type"] != "insert" || fmt.Sprint(d["data"].(map[string]any)["id"]) != "22" {
		t.Fatalf("got %v, want the insert of 22 and nothing before it", d)
	}
}

// rejected scrapes snorky_datasync_sql_messages_rejected_total from the
// backend listener's /metrics.
func rejected(t *testing.T, s *server) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.backLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "snorky_datasync_sql_messages_rejected_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric value %q: %v", v, err)
			}
			return f
		}
	}
	t.Fatal("snorky_datasync_sql_messages_rejected_total not in /metrics")
	return 0
}

// TestServeMigratesEmptyDatabase: serve with database.migrate: true on an
// empty database creates the snorky schema, and the reader records the
// stream's epoch when it creates the slot.
func TestServeMigratesEmptyDatabase(t *testing.T) {
	e := startCDC(t, "")
	ctx := context.Background()
	var functions, applied int
	if err := e.db.QueryRow(ctx, `SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'snorky' AND p.proname IN ('publish', 'publish_delta') AND p.prosecdef`).Scan(&functions); err != nil {
		t.Fatal(err)
	}
	if functions != 2 {
		t.Fatalf("SECURITY DEFINER functions snorky.publish and publish_delta: got %d, want 2", functions)
	}
	if err := e.db.QueryRow(ctx, `SELECT count(*) FROM snorky.schema_migrations`).Scan(&applied); err != nil || applied == 0 {
		t.Fatalf("snorky.schema_migrations: got %d rows (%v), want the applied migrations", applied, err)
	}
	var epoch string
	if err := e.db.QueryRow(ctx, `SELECT epoch FROM snorky.stream WHERE slot = $1`, e.slot).Scan(&epoch); err != nil {
		t.Fatalf("snorky.stream row of slot %s: %v", e.slot, err)
	}
	if got := e.s.reader.Epoch(); got == "" || got != epoch {
		t.Fatalf("reader epoch: got %q, want %q (snorky.stream)", got, epoch)
	}
}

// TestSQLPublishPrivileges: what an application role needs. snorky.publish
// is refused without USAGE on the schema and EXECUTE on the function, and
// works with them. It also shows that PostgreSQL 15 lets a plain role call
// pg_logical_emit_message itself, and that revoking it from PUBLIC closes
// that door without breaking snorky.publish.
func TestSQLPublishPrivileges(t *testing.T) {
	e := startCDC(t, "")
	sub := dial(t, e.s, nil)
	sub.ok("pubsub", "subscribe", map[string]any{"channel": "orders"})
	role := "app_" + e.slot
	e.exec(t, `CREATE ROLE `+role+` LOGIN NOSUPERUSER NOREPLICATION`)
	t.Cleanup(func() {
		ctx := context.Background()
		e.db.Exec(ctx, `DROP OWNED BY `+role)
		e.db.Exec(ctx, `DROP ROLE `+role)
	})
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	app, err := pgx.Connect(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	publish := func(id int) error {
		_, err := app.Exec(context.Background(), fmt.Sprintf(`SELECT snorky.publish('"orders"', '{"id":%d}')`, id))
		return err
	}
	var pgErr *pgconn.PgError
	if err := publish(1); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("publish without grants: got %v, want permission denied (42501)", err)
	}
	e.exec(t, `GRANT USAGE ON SCHEMA snorky TO `+role)
	if err := publish(2); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("publish with USAGE only: got %v, want permission denied (42501)", err)
	}
	e.exec(t, `GRANT EXECUTE ON FUNCTION snorky.publish(jsonb, jsonb) TO `+role)
	if err := publish(3); err != nil {
		t.Fatalf("publish with USAGE and EXECUTE: %v", err)
	}
	if _, msg := sub.pubsubMessage(); msg != "map[id:3]" {
		t.Fatalf("got %s, want map[id:3]", msg)
	}

	// PostgreSQL 15 grants EXECUTE on pg_logical_emit_message to PUBLIC:
	// a role with neither superuser nor REPLICATION can emit a message with
	// the snorky prefix and bypass the grants above.
	direct := `SELECT pg_logical_emit_message(true, 'snorky', '{"op":"publish","channel":"orders","message":"direct"}')`
	if _, err := app.Exec(context.Background(), direct); err != nil {
		t.Fatalf("pg_logical_emit_message as a plain role: %v (PostgreSQL allowed it when this test was written)", err)
	}
	if _, msg := sub.pubsubMessage(); msg != "direct" {
		t.Fatalf("got %s, want the directly emitted message", msg)
	}
	// The hardening the README documents, run by a superuser in this
	// database only: the plain role can no longer emit messages, while
	// snorky.publish (SECURITY DEFINER, owned by the migrating role) and the
	// reader's heartbeats keep working.
	e.exec(t, `REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text), pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC`)
	if _, err := app.Exec(context.Background(), direct); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("direct emit after REVOKE: got %v, want permission denied (42501)", err)
	}
	if err := publish(4); err != nil {
		t.Fatalf("publish after the REVOKE: %v", err)
	}
	if _, msg := sub.pubsubMessage(); msg != "map[id:4]" {
		t.Fatalf("got %s, want map[id:4]", msg)
	}
}

// TestSQLPublishTrigger runs the README's trigger example: a status change
// of an order is published to the order's channel when it commits; other
// updates publish nothing.
func TestSQLPublishTrigger(t *testing.T) {
	e := startCDC(t, "")
	e.exec(t, `CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, note text)`)
	e.exec(t, `CREATE FUNCTION orders_publish_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM snorky.publish(
        jsonb_build_object('customer', NEW.customer_id),
        jsonb_build_object('order', NEW.id, 'from', OLD.status, 'to', NEW.status));
    RETURN NULL;
END
$$`)
	e.exec(t, `CREATE TRIGGER orders_status_changed
    AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION orders_publish_status()`)
	sub := dial(t, e.s, nil)
	sub.ok("pubsub", "subscribe", map[string]any{"channel": map[string]any{"customer": 42}})
	e.exec(t, `INSERT INTO orders VALUES (1, 42, 'new', '')`)
	e.exec(t, `UPDATE orders SET note = 'gift wrap' WHERE id = 1`)
	e.exec(t, `BEGIN; UPDATE orders SET status = 'cancelled' WHERE id = 1; ROLLBACK`)
	e.exec(t, `UPDATE orders SET status = 'shipped' WHERE id = 1`)
	if ch, msg := sub.pubsubMessage(); ch != "map[customer:42]" || msg != "map[from:new order:1 to:shipped]" {
		t.Fatalf("got %s %s, want the status change new → shipped on channel {customer: 42}", ch, msg)
	}
	// Nothing more: the next message is the next commit's.
	e.exec(t, `SELECT snorky.publish('{"customer":42}', '"end"')`)
	if _, msg := sub.pubsubMessage(); msg != "end" {
		t.Fatalf("got %s, want end and nothing before it", msg)
	}
}
