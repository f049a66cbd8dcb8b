package handofftest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
)

// Row is a row of the items table.
type Row struct {
	ID int64 `json:"id"`
	V  int64 `json:"v"`
}

// op is one committed change of the writer.
type op struct {
	id, v int64
	del   bool
}

// Writer commits single-row changes to the items table, one transaction
// each, from one connection, so commit order is the order of its log:
// the table after its n-th commit is the replay of its first n changes.
type Writer struct {
	mu     sync.Mutex
	ops    []op
	xids   map[uint32]int // xid → 1-based index in ops
	errc   chan error
	stop   chan struct{}
	done   chan struct{}
	start  time.Time
	end    time.Time
	ids    int
	cancel context.CancelFunc
}

// StartWriter starts a writer at about rate commits per second over ids
// 1..ids (inserts of absent ids; updates and deletes of present ones).
// Stop it with Stop; cleanup stops it too.
func StartWriter(tb testing.TB, url string, rate float64, ids int) *Writer {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	w := &Writer{xids: map[uint32]int{}, errc: make(chan error, 1), stop: make(chan struct{}), done: make(chan struct{}), ids: ids, cancel: cancel}
	w.start = time.Now()
	go w.run(ctx, conn, rate)
	tb.Cleanup(func() { w.Stop(tb) })
	return w
}

func (w *Writer) run(ctx context.Context, conn *pgx.Conn, rate float64) {
	defer close(w.done)
	defer conn.Close(context.Background())
	rng := rand.New(rand.NewPCG(1, 2))
	present := map[int64]int64{}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		for float64(n) < rate*time.Since(w.start).Seconds() {
			id := int64(1 + rng.IntN(w.ids))
			o := op{id: id, v: rng.Int64N(1_000_000)}
			var sql string
			var args []any
			if _, ok := present[id]; !ok {
				sql, args = `INSERT INTO items (id, v) VALUES ($1, $2) RETURNING pg_current_xact_id()::text`, []any{id, o.v}
			} else if rng.IntN(3) == 0 {
				o.del = true
				sql, args = `DELETE FROM items WHERE id = $1 RETURNING pg_current_xact_id()::text`, []any{id}
			} else {
				sql, args = `UPDATE items SET v = $2 WHERE id = $1 RETURNING pg_current_xact_id()::text`, []any{id, o.v}
			}
			if err := w.commit(ctx, conn, o, sql, args); err != nil {
				select {
				case w.errc <- err:
				default:
				}
				return
			}
			if o.del {
				delete(present, id)
			} else {
				present[id] = o.v
			}
			n++
		}
	}
}

// commit runs one change in its own transaction, in one round trip, and
// records it with its xid.
func (w *Writer) commit(ctx context.Context, conn *pgx.Conn, o op, sql string, args []any) error {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	var xid string
	b.Queue(sql, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&xid) })
	b.Queue(`COMMIT`)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("writer: %s: %w", sql, err)
	}
	full, err := strconv.ParseUint(xid, 10, 64)
	if err != nil {
		return fmt.Errorf("writer: xid %q: %w", xid, err)
	}
	w.mu.Lock()
	w.ops = append(w.ops, o)
	w.xids[uint32(full)] = len(w.ops)
	w.mu.Unlock()
	return nil
}

// Stop stops the writer and fails tb if it failed.
func (w *Writer) Stop(tb testing.TB) {
	tb.Helper()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.cancel()
	w.mu.Lock()
	if w.end.IsZero() {
		w.end = time.Now()
	}
	w.mu.Unlock()
	select {
	case err := <-w.errc:
		tb.Errorf("%v", err)
	default:
	}
}

// Commits returns how many changes the writer has committed and recorded.
func (w *Writer) Commits() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ops)
}

// Rate returns the writer's commits per second so far.
func (w *Writer) Rate() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	end := w.end
	if end.IsZero() {
		end = time.Now()
	}
	return float64(len(w.ops)) / end.Sub(w.start).Seconds()
}

// opOf returns the 1-based index of the change of xid, waiting a moment
// for the writer to record it (a delta may arrive first); 0 if none.
func (w *Writer) opOf(xid uint32) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		k := w.xids[xid]
		w.mu.Unlock()
		if k != 0 || time.Now().After(deadline) {
			return k
		}
		time.Sleep(time.Millisecond)
	}
}

// State returns the table after the writer's first n changes.
func (w *Writer) State(n int) map[int64]int64 {
	w.mu.Lock()
	ops := w.ops[:n]
	w.mu.Unlock()
	s := map[int64]int64{}
	for _, o := range ops {
		if o.del {
			delete(s, o.id)
		} else {
			s[o.id] = o.v
		}
	}
	return s
}

// HandoffFunc is one handoff through the application under test: its list
// view, called with X-Snorky: Subscribe, returns the rows and the token.
type HandoffFunc func(ctx context.Context) (rows []Row, token string, err error)

// Result sums up Check.
type Result struct {
	Handoffs int
	// Lost counts changes missing from a collection (an update or delete
	// of a row it lacks, an update whose oldData differs, a row missing or
	// different at the check); Doubled changes applied twice (an insert
	// of a row it has, a row extra at the check).
	Lost, Doubled int
	// Deltas is how many deltas were applied in all; Raced how many
	// handoffs got deltas before their acquire response (changes committed
	// between the list query and the acquire).
	Deltas, Raced int
	// WriterRate is the writer's commits per second during the check.
	WriterRate float64
	Took       time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d handoffs in %v with the writer at %.0f commits/s: %d lost, %d doubled; %d deltas applied, %d handoffs with deltas pending at acquire",
		r.Handoffs, r.Took.Round(time.Millisecond), r.WriterRate, r.Lost, r.Doubled, r.Deltas, r.Raced)
}

// Check performs n handoffs through f, workers at a time, while w writes.
// For each: f's rows become a collection; the token is acquired on a
// WebSocket to srv; every delta is applied strictly; once a delta of a
// change committed after the list was returned has been applied (change
// M), the collection must equal the table after change M. Then the
// subscription is cancelled. Problems are reported with t.Errorf (up to a
// few per kind) and counted in the result.
func Check(t testing.TB, srv *Server, w *Writer, n, workers int, f HandoffFunc) Result {
	t.Helper()
	start := time.Now()
	commits0 := w.Commits()
	var next atomic.Int64
	var mu sync.Mutex
	var res Result
	var reported atomic.Int64
	report := func(format string, args ...any) {
		if reported.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	var wg sync.WaitGroup
	for worker := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial(srv.WebSocketURL)
			if err != nil {
				report("worker %d: %v", worker, err)
				return
			}
			defer c.close()
			for int(next.Add(1)) <= n {
				r, err := handoff(c, w, f)
				mu.Lock()
				res.Handoffs++
				res.Lost += r.lost
				res.Doubled += r.doubled
				res.Deltas += r.deltas
				if r.pending > 0 {
					res.Raced++
				}
				mu.Unlock()
				if err != nil {
					report("handoff: %v", err)
					return
				}
				if len(r.problems) > 0 {
					report("handoff: %d lost, %d doubled: %s", r.lost, r.doubled, strings.Join(r.problems, "; "))
				}
			}
		}()
	}
	wg.Wait()
	res.Took = time.Since(start)
	res.WriterRate = float64(w.Commits()-commits0) / res.Took.Seconds()
	return res
}

// VerifyTable checks, after Stop, that the table equals the replay of the
// writer's log (the premise of Check).
func VerifyTable(t testing.TB, url string, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id, v FROM items`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int64{}
	for rows.Next() {
		var id, v int64
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		got[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := w.State(w.Commits())
	if diff := diffState(got, want); diff != "" {
		t.Errorf("the table differs from the writer's log: %s", diff)
	}
}

func diffState(got, want map[int64]int64) string {
	var out []string
	for id, v := range want {
		if g, ok := got[id]; !ok {
			out = append(out, fmt.Sprintf("row %d missing", id))
		} else if g != v {
			out = append(out, fmt.Sprintf("row %d has v=%d, want %d", id, g, v))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			out = append(out, fmt.Sprintf("row %d extra", id))
		}
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return strings.Join(out, ", ")
}

type handoffResult struct {
	lost, doubled, deltas, pending int
	problems                       []string
}

func (r *handoffResult) problem(lost bool, format string, args ...any) {
	if lost {
		r.lost++
	} else {
		r.doubled++
	}
	if len(r.problems) < 5 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

// Delta is a delta as a client receives it (spec §3.6).
type Delta struct {
	Type    string         `json:"type"`
	Model   string         `json:"model"`
	Data    map[string]any `json:"data"`
	NewData map[string]any `json:"newData"`
	OldData map[string]any `json:"oldData"`
	Offset  string         `json:"offset"`
	Xid     uint32         `json:"xid"`
}

func rowOf(m map[string]any) (Row, error) {
	id, ok1 := m["id"].(float64)
	v, ok2 := m["v"].(float64)
	if !ok1 || !ok2 {
		return Row{}, fmt.Errorf("row %v is not {id, v}", m)
	}
	return Row{int64(id), int64(v)}, nil
}

// handoff performs one handoff on c.
func handoff(c *wsConn, w *Writer, f HandoffFunc) (handoffResult, error) {
	var r handoffResult
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, token, err := f(ctx)
	if err != nil {
		return r, fmt.Errorf("the list view: %w", err)
	}
	if token == "" {
		return r, fmt.Errorf("the list view returned no X-Subscription-Token")
	}
	// The list cannot have seen a change recorded after this.
	after := w.Commits()
	coll := map[int64]int64{}
	for _, row := range rows {
		if _, ok := coll[row.ID]; ok {
			r.problem(false, "row %d twice in the list", row.ID)
		}
		coll[row.ID] = row.V
	}
	lastOp, lastOffset := 0, ""
	apply := func(d Delta) error {
		r.deltas++
		if d.Offset <= lastOffset {
			return fmt.Errorf("offset %s after %s", d.Offset, lastOffset)
		}
		lastOffset = d.Offset
		k := w.opOf(d.Xid)
		if k == 0 {
			return fmt.Errorf("a delta of xid %d, which the writer did not make", d.Xid)
		}
		if k <= lastOp {
			return fmt.Errorf("change %d after change %d: not in commit order", k, lastOp)
		}
		lastOp = k
		switch d.Type {
		case "insert":
			row, err := rowOf(d.Data)
			if err != nil {
				return err
			}
			if _, ok := coll[row.ID]; ok {
				r.problem(false, "insert of row %d, already in the collection (change %d)", row.ID, k)
			}
			coll[row.ID] = row.V
		case "update":
			row, err := rowOf(d.NewData)
			if err != nil {
				return err
			}
			old, err := rowOf(d.OldData)
			if err != nil {
				return err
			}
			if v, ok := coll[row.ID]; !ok {
				r.problem(true, "update of row %d, not in the collection (change %d)", row.ID, k)
			} else if v != old.V {
				r.problem(true, "update of row %d from v=%d, the collection has v=%d (change %d)", row.ID, old.V, v, k)
			}
			coll[row.ID] = row.V
		case "delete":
			row, err := rowOf(d.Data)
			if err != nil {
				return err
			}
			if _, ok := coll[row.ID]; !ok {
				r.problem(true, "delete of row %d, not in the collection (change %d)", row.ID, k)
			}
			delete(coll, row.ID)
		default:
			return fmt.Errorf("unexpected delta type %q", d.Type)
		}
		return nil
	}
	if err := c.call("acquireSubscription", map[string]any{"token": token}, func(d Delta) error {
		r.pending++
		return apply(d)
	}); err != nil {
		return r, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for lastOp <= after {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("no delta of change %d or later within 30s (last applied %d)", after+1, lastOp)
		}
		d, err := c.readDelta()
		if err != nil {
			return r, fmt.Errorf("waiting for the delta of change %d (last applied %d): %w", after+1, lastOp, err)
		}
		if err := apply(d); err != nil {
			return r, err
		}
	}
	want := w.State(lastOp)
	for id, v := range want {
		if g, ok := coll[id]; !ok {
			r.problem(true, "row %d missing from the collection after change %d", id, lastOp)
		} else if g != v {
			r.problem(true, "row %d has v=%d in the collection, the table v=%d after change %d", id, g, v, lastOp)
		}
	}
	for id := range coll {
		if _, ok := want[id]; !ok {
			r.problem(false, "row %d in the collection, not in the table after change %d", id, lastOp)
		}
	}
	// Deltas that arrive before the cancel's response belong to this
	// subscription and are dropped.
	if err := c.call("cancelSubscription", map[string]any{"token": token}, func(Delta) error { return nil }); err != nil {
		return r, err
	}
	return r, nil
}

// wsConn is a minimal DataSync client on one WebSocket.
type wsConn struct {
	ws     *websocket.Conn
	callID int
}

func dial(url string) (*wsConn, error) {
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", url, err)
	}
	return &wsConn{ws: ws}, nil
}

func (c *wsConn) close() { c.ws.Close() }

type frame struct {
	Service string `json:"service"`
	Message struct {
		Type    string          `json:"type"`
		CallID  *int            `json:"callId"`
		Message string          `json:"message"`
		Delta   json.RawMessage `json:"delta"`
	} `json:"message"`
}

func (c *wsConn) read() (frame, error) {
	var f frame
	c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("frame %.200q: %w", b, err)
	}
	return f, nil
}

// call sends a datasync command and reads until its reply, passing every
// Delta before it to onDelta.
func (c *wsConn) call(command string, params any, onDelta func(Delta) error) error {
	c.callID++
	id := c.callID
	msg := map[string]any{"service": "datasync", "message": map[string]any{"command": command, "params": params, "callId": id}}
	if err := c.ws.WriteJSON(msg); err != nil {
		return fmt.Errorf("%s: %w", command, err)
	}
	for {
		f, err := c.read()
		if err != nil {
			return fmt.Errorf("%s: %w", command, err)
		}
		switch f.Message.Type {
		case "delta":
			var d Delta
			if err := json.Unmarshal(f.Message.Delta, &d); err != nil {
				return err
			}
			if err := onDelta(d); err != nil {
				return err
			}
		case "response":
			if f.Message.CallID != nil && *f.Message.CallID == id {
				return nil
			}
		case "error":
			return fmt.Errorf("%s: %s", command, f.Message.Message)
		}
	}
}

func (c *wsConn) readDelta() (Delta, error) {
	for {
		f, err := c.read()
		if err != nil {
			return Delta{}, err
		}
		if f.Message.Type == "delta" {
			var d Delta
			err := json.Unmarshal(f.Message.Delta, &d)
			return d, err
		}
	}
}

// Conn is a DataSync client on one WebSocket, for tests.
type Conn struct {
	tb testing.TB
	c  *wsConn
}

// Dial connects to a frontend URL (ws://…/ws); cleanup closes it.
func Dial(tb testing.TB, url string) *Conn {
	tb.Helper()
	c, err := dial(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.close)
	return &Conn{tb: tb, c: c}
}

// Acquire acquires token and returns the deltas sent before the response.
func (c *Conn) Acquire(token string) []Delta {
	c.tb.Helper()
	var ds []Delta
	if err := c.c.call("acquireSubscription", map[string]any{"token": token}, func(d Delta) error {
		ds = append(ds, d)
		return nil
	}); err != nil {
		c.tb.Fatal(err)
	}
	return ds
}

// Next returns the next delta (failing after 20 s without one).
func (c *Conn) Next() Delta {
	c.tb.Helper()
	d, err := c.c.readDelta()
	if err != nil {
		c.tb.Fatalf("waiting for a delta: %v", err)
	}
	return d
}
