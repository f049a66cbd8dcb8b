package datasync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// insertTxn is a transaction inserting rows (id, owner) into public.tasks.
func insertTxn(xid uint32, end cdc.LSN, rows ...[2]int) *cdc.Txn {
	txn := &cdc.Txn{Xid: xid, CommitLSN: end - 0x30, EndLSN: end}
	for _, r := range rows {
		txn.Changes = append(txn.Changes, cdc.Change{Table: "public.tasks", Op: cdc.Insert,
			New: cols("id", fmt.Sprint(r[0]), "owner", fmt.Sprint(r[1]))})
	}
	return txn
}

// acquireResumable acquires items with resumable: true and returns the
// connection and the result.
func acquireResumable(t *testing.T, e *Engine, reg *rpc.Registry, items string) (*rpctest.Conn, resumeResult) {
	t.Helper()
	tok, err := e.authorize(json.RawMessage(items), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := rpctest.NewConn()
	q, _ := json.Marshal(tok)
	r := rpctest.Call(t, reg, c, "datasync", "acquireSubscription", `{"token":`+string(q)+`,"resumable":true}`)
	if r.Err() != "" {
		t.Fatalf("acquire: %s", r.Err())
	}
	var res resumeResult
	if err := json.Unmarshal(r.Data(t), &res); err != nil || res.Epoch == "" || len(res.Offset) != 32 || res.Resume == "" {
		t.Fatalf("acquire result: %s (%v)", r.Data(t), err)
	}
	c.Take()
	return c, res
}

func resumeCall(t *testing.T, reg *rpc.Registry, c *rpctest.Conn, res resumeResult, epoch, off string) rpctest.Reply {
	t.Helper()
	p, _ := json.Marshal(map[string]string{"resume": res.Resume, "epoch": epoch, "offset": off})
	return rpctest.Call(t, reg, c, "datasync", "resumeSubscription", string(p))
}

// deltaOffsets returns the offsets of the delta notifications received.
func deltaOffsets(t *testing.T, msgs []rpctest.Msg) []string {
	var out []string
	for _, m := range msgs {
		if m.Type() != "delta" {
			continue
		}
		var env struct {
			Message struct {
				Delta struct {
					Offset string `json:"offset"`
				} `json:"delta"`
			} `json:"message"`
		}
		if err := json.Unmarshal(m.Raw, &env); err != nil {
			t.Fatal(err)
		}
		out = append(out, env.Message.Delta.Offset)
	}
	return out
}

// TestResumeCatchesUpExactly: a client that resumes from the last offset it
// saw receives exactly the matching deltas after it, in order, then the
// result, then live deltas; the old connection no longer receives them.
func TestResumeCatchesUpExactly(t *testing.T) {
	e, reg := newTestEngineDB(t, 64<<20)
	e.StartStream("ep1", 0x1000, "")
	old, res := acquireResumable(t, e, reg, `[{"dealer":"ByOwner","query":7}]`)
	if res.Epoch != "ep1" {
		t.Fatalf("epoch: got %q, want ep1", res.Epoch)
	}
	e.Apply(insertTxn(800, 0x2000, [2]int{1, 7}, [2]int{2, 8}, [2]int{3, 7}))
	seen := deltaOffsets(t, rpctest.Msgs(t, old))
	if len(seen) != 2 {
		t.Fatalf("live: got %v, want 2 deltas", seen)
	}
	// The client saw only the first delta before losing its connection.
	e.Apply(insertTxn(801, 0x3000, [2]int{4, 7}))
	e.Apply(insertTxn(802, 0x4000, [2]int{5, 9}))
	c := rpctest.NewConn()
	r := resumeCall(t, reg, c, res, "ep1", seen[0])
	if r.Err() != "" {
		t.Fatalf("resume: %s", r.Err())
	}
	got := deltaOffsets(t, r.Before)
	want := []string{seen[1], "00000000000030000000000000000000"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("resumed deltas: got %v, want %v", got, want)
	}
	var res2 resumeResult
	json.Unmarshal(r.Data(t), &res2)
	if res2.Offset != "0000000000004000"+"00000000FFFFFFFF" || res2.Resume == "" {
		t.Fatalf("resume result: %s", r.Data(t))
	}
	old.Take()
	e.Apply(insertTxn(803, 0x5000, [2]int{6, 7}))
	if got := deltaOffsets(t, rpctest.Msgs(t, c)); len(got) != 1 {
		t.Fatalf("live after resume: got %v", got)
	}
	if got := rpctest.Msgs(t, old); len(got) != 0 {
		t.Fatalf("the old connection still receives after the takeover: %v", got)
	}
	// Resuming again from the newest offset sends nothing.
	c3 := rpctest.NewConn()
	r = resumeCall(t, reg, c3, res2, "ep1", "000000000000500000000000FFFFFFFF")
	if r.Err() != "" {
		t.Fatalf("second resume: %s", r.Err())
	}
	if got := deltaOffsets(t, r.Before); len(got) != 0 {
		t.Fatalf("resume at the head: got %v, want nothing", got)
	}
}

// TestResumeMustRefetch: every case that cannot be resumed answers
// "Must refetch: <reason>", and nothing else is sent.
func TestResumeMustRefetch(t *testing.T) {
	e, reg := newTestEngineDB(t, 600)
	e.cfg.ResumeWait = 50 * time.Millisecond
	e.StartStream("ep1", 0x1000, "")
	_, res := acquireResumable(t, e, reg, `[{"dealer":"All","query":null}]`)
	for i := range 10 {
		e.Apply(insertTxn(uint32(900+i), cdc.LSN(0x2000+0x100*i), [2]int{i, 1}))
	}
	for _, tc := range []struct {
		name, cred, epoch, offset, want string
	}{
		{"wrong epoch", res.Resume, "other", res.Offset, "Must refetch: the stream was reset"},
		{"outside the window", res.Resume, "ep1", res.Offset, "Must refetch: offset is outside the replay window"},
		{"ahead of the server", res.Resume, "ep1", "0000000099999999000000000000000", "Invalid params"},
		{"behind", res.Resume, "ep1", "000000009999999900000000FFFFFFFF", "Must refetch: the server is behind the offset"},
		{"tampered", res.Resume[:len(res.Resume)-2] + "xx", "ep1", res.Offset, "Must refetch: invalid resume credential"},
		{"a subscription token", mustToken(t, e), "ep1", res.Offset, "Must refetch: invalid resume credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rpctest.NewConn()
			p, _ := json.Marshal(map[string]string{"resume": tc.cred, "epoch": tc.epoch, "offset": tc.offset})
			r := rpctest.Call(t, reg, c, "datasync", "resumeSubscription", string(p))
			if r.Err() != tc.want {
				t.Fatalf("got %q, want %q", r.Err(), tc.want)
			}
			if len(r.Before) != 0 {
				t.Fatalf("sent besides the error: %v", r.Before)
			}
		})
	}
	// An expired credential.
	now := time.Now()
	e.cfg.Now = func() time.Time { return now.Add(25 * time.Hour) }
	c := rpctest.NewConn()
	if r := resumeCall(t, reg, c, res, "ep1", res.Offset); r.Err() != "Must refetch: resume credential expired" {
		t.Fatalf("expired: got %q", r.Err())
	}
}

func mustToken(t *testing.T, e *Engine) string {
	tok, err := e.authorize(json.RawMessage(`[]`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestPositionsAndStreamReset: opted-in connections get a position when it
// moved; a new epoch ends every subscription with mustRefetch (models
// null) for them and a 4008 close for the others.
func TestPositionsAndStreamReset(t *testing.T) {
	e, reg := newTestEngineDB(t, 64<<20)
	e.StartStream("ep1", 0x1000, "")
	opted, _ := acquireResumable(t, e, reg, `[{"dealer":"ByOwner","query":7}]`)
	plain := acquire(t, e, reg, `[{"dealer":"ByOwner","query":7}]`)
	e.Apply(insertTxn(700, 0x2000, [2]int{1, 8})) // matches nobody
	e.mu.Lock()
	e.sendPositionsLocked()
	e.sendPositionsLocked() // unchanged: nothing more
	e.mu.Unlock()
	msgs := rpctest.Msgs(t, opted)
	if len(msgs) != 1 || msgs[0].String() != `{"service":"datasync","message":{"type":"position","epoch":"ep1","offset":"000000000000200000000000FFFFFFFF"}}` {
		t.Fatalf("position: got %v", msgs)
	}
	if msgs := rpctest.Msgs(t, plain); len(msgs) != 0 {
		t.Fatalf("a connection that did not opt in got %v", msgs)
	}
	e.StartStream("ep2", 0x9000, "")
	msgs = rpctest.Msgs(t, opted)
	if len(msgs) != 1 || msgs[0].String() != `{"service":"datasync","message":{"type":"mustRefetch","reason":"the stream was reset","models":null}}` {
		t.Fatalf("reset: got %v", msgs)
	}
	if closed, code, _ := plain.Closed(); !closed || code != rpc.CloseSlowConsumer {
		t.Fatalf("a plain connection on reset: closed %v code %d, want 4008", closed, code)
	}
	if n := e.Subscriptions(); n != 0 {
		t.Fatalf("subscriptions after the reset: %d", n)
	}
}

// TestTooLargeTransaction: a transaction over the cap reaches its models'
// subscribers as mustRefetch; the others are untouched, and the stream
// goes on.
func TestTooLargeTransaction(t *testing.T) {
	e, reg := newTestEngineDB(t, 64<<20)
	e.StartStream("ep1", 0x1000, "")
	c, res := acquireResumable(t, e, reg, `[{"dealer":"All","query":null}]`)
	e.Apply(&cdc.Txn{Xid: 5, EndLSN: 0x2000, TooLarge: true, Tables: []string{"public.other", "public.tasks"}})
	msgs := rpctest.Msgs(t, c)
	if len(msgs) != 1 || msgs[0].String() != `{"service":"datasync","message":{"type":"mustRefetch","reason":"transaction too large","models":["Task"]}}` {
		t.Fatalf("got %v", msgs)
	}
	// Dropped SQL messages could have named any model: all refetch.
	c3, _ := acquireResumable(t, e, reg, `[{"dealer":"All","query":null}]`)
	e.Apply(&cdc.Txn{Xid: 6, EndLSN: 0x2100, TooLarge: true, Tables: []string{cdc.MessagesDropped}})
	if msgs := rpctest.Msgs(t, c3); len(msgs) != 1 || msgs[0].String() != `{"service":"datasync","message":{"type":"mustRefetch","reason":"transaction too large","models":["Task"]}}` {
		t.Fatalf("messages dropped: got %v", msgs)
	}
	// Resuming across it must refetch too.
	c2 := rpctest.NewConn()
	if r := resumeCall(t, reg, c2, res, "ep1", res.Offset); r.Err() != "Must refetch: transaction too large" {
		t.Fatalf("resume across it: got %q", r.Err())
	}
	// A batch over the cap is refused.
	e.cfg.MaxTxBytes = 100
	_, err := e.Backend().Handle(nil, &rpc.Request{Command: "publishDeltas", Params: json.RawMessage(`{"deltas":[{"type":"insert","model":"Task","data":{"id":1,"title":"` + strings.Repeat("x", 200) + `"}}]}`)})
	if err == nil || err.Error() != "Batch too large" {
		t.Fatalf("big batch: got %v", err)
	}
}

// TestLargeTransactionIsStreamed: a transaction larger than a send queue
// reaches a connection as one stream whose frames are the deltas in order,
// built from a few runs (not one entry per delta per connection).
func TestLargeTransactionIsStreamed(t *testing.T) {
	e, _ := newTestEngineDB(t, 64<<20)
	e.StartStream("ep1", 0x1000, "")
	sc := &streamConn{Conn: rpctest.NewConn()}
	tok := mustTokenItems(t, e, `[{"dealer":"All","query":null}]`)
	if _, err := e.acquire(sc, tok, false); err != nil {
		t.Fatal(err)
	}
	const rows = 5000
	txn := &cdc.Txn{Xid: 9, EndLSN: 0x2000}
	for i := range rows {
		txn.Changes = append(txn.Changes, cdc.Change{Table: "public.tasks", Op: cdc.Insert,
			New: cols("id", fmt.Sprint(i), "owner", "1", "title", `"`+strings.Repeat("t", 100)+`"`)})
	}
	if err := e.Apply(txn); err != nil {
		t.Fatal(err)
	}
	if len(sc.streams) != 1 {
		t.Fatalf("got %d streams, want 1", len(sc.streams))
	}
	st := sc.streams[0].(*txnStream)
	if len(st.parts) != 1 || len(st.parts[0].runs) != 1 {
		t.Fatalf("runs: got %d parts, %d runs; want 1 run", len(st.parts), len(st.parts[0].runs))
	}
	n := 0
	for {
		f, ok := st.Next(nil)
		if !ok {
			break
		}
		want := fmt.Sprintf(`"offset":"0000000000002000000000000000%04X"`, n)
		if !strings.Contains(string(f), want) || !strings.Contains(string(f), fmt.Sprintf(`"id":%d,`, n)) {
			t.Fatalf("frame %d: %s", n, f)
		}
		n++
	}
	if n != rows {
		t.Fatalf("stream gave %d frames, want %d", n, rows)
	}
}

func mustTokenItems(t *testing.T, e *Engine, items string) string {
	tok, err := e.authorize(json.RawMessage(items), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// streamConn records the streams queued to it.
type streamConn struct {
	*rpctest.Conn
	streams []rpc.Stream
}

func (c *streamConn) SendStream(s rpc.Stream) { c.streams = append(c.streams, s) }

// TestAcquireReplaysFromTheWindow: an authorised subscription holds no
// buffer; its acquire replays what it missed from the window, and a
// subscription whose start fell out of the window is dropped.
func TestAcquireReplaysFromTheWindow(t *testing.T) {
	e, reg := newTestEngineDB(t, 1000)
	e.StartStream("ep1", 0x1000, "")
	tok := mustTokenItems(t, e, `[{"dealer":"ByOwner","query":7}]`)
	e.Apply(insertTxn(10, 0x2000, [2]int{1, 7}, [2]int{2, 8}))
	c := rpctest.NewConn()
	q, _ := json.Marshal(tok)
	r := rpctest.Call(t, reg, c, "datasync", "acquireSubscription", `{"token":`+string(q)+`}`)
	if r.Err() != "" || len(r.Before) != 1 || r.Before[0].Type() != "delta" {
		t.Fatalf("acquire: err %q, before the response %v", r.Err(), r.Before)
	}
	tok2 := mustTokenItems(t, e, `[{"dealer":"ByOwner","query":7}]`)
	for i := range 20 {
		e.Apply(insertTxn(uint32(20+i), cdc.LSN(0x3000+0x100*i), [2]int{i, 7}))
	}
	q, _ = json.Marshal(tok2)
	r = rpctest.Call(t, reg, rpctest.NewConn(), "datasync", "acquireSubscription", `{"token":`+string(q)+`}`)
	if r.Err() != "Subscription dropped: too many pending deltas" {
		t.Fatalf("start out of the window: got %q", r.Err())
	}
}

// TestSnapshotFromTheFuture: a snapshot whose xmax is beyond what the
// database has started is refused.
func TestSnapshotFromTheFuture(t *testing.T) {
	e, _ := newTestEngineDB(t, 64<<20)
	e.cfg.CurrentSnapshot = func(context.Context) (string, error) { return "760:760:", nil }
	e.SetHorizon("700:700:")
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"783:790:784,787"`)); err == nil || err.Error() != "Invalid snapshot: newer than the database" {
		t.Fatalf("future snapshot: got %v", err)
	}
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"755:760:"`)); err != nil {
		t.Fatalf("current snapshot: got %v", err)
	}
}

// TestConfirmLimit: the reader may confirm only up to the newest
// transaction no longer held.
func TestConfirmLimit(t *testing.T) {
	e, _ := newTestEngineDB(t, 400)
	if _, limited := e.ConfirmLimit(); !limited {
		t.Fatal("before the stream starts: want limited")
	}
	e.StartStream("ep", 0x1000, "")
	if _, limited := e.ConfirmLimit(); limited {
		t.Fatal("empty window: want unlimited")
	}
	e.Apply(insertTxn(1, 0x2000, [2]int{1, 1}))
	if lsn, limited := e.ConfirmLimit(); !limited || lsn != 0x1000 {
		t.Fatalf("one held: got %X %v, want 1000 true", lsn, limited)
	}
	for i := range 5 {
		e.Apply(insertTxn(uint32(2+i), cdc.LSN(0x3000+0x1000*i), [2]int{i, 1}))
	}
	lsn, limited := e.ConfirmLimit()
	w := e.Window()
	if !limited || lsn == 0x1000 || lsn >= 0x7000 || w.Transactions == 0 {
		t.Fatalf("after trimming: got %X %v, window %v", lsn, limited, w)
	}
}

// TestChunkedTransaction: the chunks of a large transaction are held until
// its commit, then delivered whole with the commit's offsets; a new
// session discards an unfinished one.
func TestChunkedTransaction(t *testing.T) {
	e, reg := newTestEngineDB(t, 64<<20)
	e.StartStream("ep", 0x1000, "")
	c := acquire(t, e, reg, `[{"dealer":"All","query":null}]`)
	part := insertTxn(77, 0, [2]int{1, 1}, [2]int{2, 1})
	part.Partial = true
	e.Apply(part)
	if msgs := rpctest.Msgs(t, c); len(msgs) != 0 {
		t.Fatalf("delivered before the commit: %v", msgs)
	}
	e.Apply(insertTxn(77, 0x2000, [2]int{3, 1}))
	got := deltaOffsets(t, rpctest.Msgs(t, c))
	want := "00000000000020000000000000000000 00000000000020000000000000000001 00000000000020000000000000000002"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	// An unfinished transaction is dropped by a new session, which sends it
	// again.
	part = insertTxn(78, 0, [2]int{4, 1})
	part.Partial = true
	e.Apply(part)
	e.StartStream("ep", 0x2000, "")
	e.Apply(insertTxn(78, 0x3000, [2]int{4, 1}))
	if got := deltaOffsets(t, rpctest.Msgs(t, c)); len(got) != 1 {
		t.Fatalf("after a new session: got %v, want the transaction once", got)
	}
}

// TestStreamStartSetsTheHorizon: a stream that starts in this process
// (first start, a standby's takeover, a reset) brings its own horizon, so
// a snapshot older than it is refused: transactions between the two may
// have been confirmed by another process and will never arrive.
func TestStreamStartSetsTheHorizon(t *testing.T) {
	e, _ := newTestEngineDB(t, 64<<20)
	e.SetHorizon("100:100:")
	e.StartStream("ep", 0x1000, "500:500:")
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"200:200:"`)); err == nil || err.Error() != "Snapshot too old" {
		t.Fatalf("a snapshot older than the stream's horizon: got %v, want Snapshot too old", err)
	}
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"500:501:500"`)); err != nil {
		t.Fatalf("a snapshot at the horizon: got %v", err)
	}
}

// TestResumeWithSnapshotAfterTrim: a subscription authorised with a
// snapshot resumes from a held offset after the window has forgotten
// transactions its snapshot did not see: those were before the offset, so
// the client has them (the snapshot matters only at the first acquire).
func TestResumeWithSnapshotAfterTrim(t *testing.T) {
	e, reg := newTestEngineDB(t, 600)
	e.cfg.CurrentSnapshot = func(context.Context) (string, error) { return "1000:1000:", nil }
	e.StartStream("ep1", 0x1000, "1000:1000:")
	tok, err := e.authorize(json.RawMessage(`[{"dealer":"All","query":null}]`), json.RawMessage(`"1000:1000:"`))
	if err != nil {
		t.Fatal(err)
	}
	old := rpctest.NewConn()
	q, _ := json.Marshal(tok)
	r := rpctest.Call(t, reg, old, "datasync", "acquireSubscription", `{"token":`+string(q)+`,"resumable":true}`)
	var res resumeResult
	if r.Err() != "" || json.Unmarshal(r.Data(t), &res) != nil {
		t.Fatalf("acquire: %q %s", r.Err(), r.Data(t))
	}
	// Transactions the snapshot did not see (xid ≥ its xmax 1000), more
	// than the 600-byte window holds: the first ones are forgotten.
	for i := range 20 {
		e.Apply(insertTxn(uint32(1000+i), cdc.LSN(0x2000+0x100*i), [2]int{i, 1}))
	}
	seen := deltaOffsets(t, rpctest.Msgs(t, old))
	if len(seen) != 20 {
		t.Fatalf("live: got %d deltas, want 20", len(seen))
	}
	if e.window.covers(&snapshot{xmin: 1000, xmax: 1000}) {
		t.Fatal("the window forgot nothing: the test does not test")
	}
	// The client saw all but the last two.
	c := rpctest.NewConn()
	r = resumeCall(t, reg, c, res, "ep1", seen[17])
	if r.Err() != "" {
		t.Fatalf("resume from a held offset: %s", r.Err())
	}
	if got := deltaOffsets(t, r.Before); strings.Join(got, " ") != strings.Join(seen[18:], " ") {
		t.Fatalf("resumed: got %v, want %v", got, seen[18:])
	}
}

// TestReleaseByRevision: in a cluster, a takeover notice ends the binding
// here only when the notice's binding came after it (a greater revision,
// one order for every node), never by the nodes' clocks.
func TestReleaseByRevision(t *testing.T) {
	e, reg := newTestEngineDB(t, 64<<20)
	e.StartStream("ep1", 0x1000, "")
	next := uint64(10)
	e.cfg.Rebind = func(string) (uint64, error) { next++; return next, nil }
	var announced []uint64
	e.cfg.Resumed = func(_ string, rev uint64) { announced = append(announced, rev) }
	_, res := acquireResumable(t, e, reg, `[{"dealer":"All","query":null}]`)
	if r := resumeCall(t, reg, rpctest.NewConn(), res, "ep1", res.Offset); r.Err() != "" {
		t.Fatalf("resume: %s", r.Err())
	}
	if len(announced) != 1 || announced[0] != 11 {
		t.Fatalf("announced %v, want the resume's revision 11", announced)
	}
	var id string
	for k := range e.byID {
		id = k
	}
	e.Release(id, 9) // a notice of an earlier binding elsewhere, late
	if n := e.Subscriptions(); n != 1 {
		t.Fatalf("a stale notice ended the binding: %d subscriptions", n)
	}
	e.Release(id, 12) // a later resume on another node
	if n := e.Subscriptions(); n != 0 {
		t.Fatalf("a later binding elsewhere left %d subscriptions here", n)
	}

	// The cluster unreachable: the resume still binds, unannounced, and no
	// notice ends it.
	e.cfg.Rebind = func(string) (uint64, error) { return 0, errors.New("no NATS") }
	_, res = acquireResumable(t, e, reg, `[{"dealer":"All","query":null}]`)
	announced = nil
	if r := resumeCall(t, reg, rpctest.NewConn(), res, "ep1", res.Offset); r.Err() != "" {
		t.Fatalf("resume without the cluster: %s", r.Err())
	}
	if len(announced) != 0 {
		t.Fatalf("announced %v without a recorded binding", announced)
	}
	for k := range e.byID {
		id = k
	}
	e.Release(id, 1<<40)
	if n := e.Subscriptions(); n != 1 {
		t.Fatalf("a notice ended an unrecorded binding: %d subscriptions", n)
	}
}
