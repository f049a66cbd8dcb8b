package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
	"github.com/snorkyhq/snorky/sync/chat"
	"github.com/snorkyhq/snorky/sync/cursors"
	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// testTTL is short so that a dead node's members leave quickly.
const testTTL = time.Second

// waitFor bounds every poll of the tests.
const waitFor = 10 * time.Second

// testNode is one in-process node: its own NATS connection and services.
type testNode struct {
	t    *testing.T
	id   string
	nc   *nats.Conn
	reg  *rpc.Registry
	chat *chat.Service
	curs *cursors.Service
	kv   map[string]jetstream.KeyValue // bucket suffix → bucket
}

func startNATS(t *testing.T, servers int) *natslocal.Cluster {
	t.Helper()
	c, err := natslocal.Start(t.TempDir(), servers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// newNode connects to url as node id and bridges a Chat and a Cursors
// service; cleanup stops both bridges and closes the connection.
func newNode(t *testing.T, url, id string) *testNode {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	n := &cluster.Node{ID: id, Prefix: "snorky.test", Name: "test", NC: nc, JS: js, Log: slog.New(slog.DiscardHandler)}
	tn := &testNode{t: t, id: id, nc: nc, reg: rpc.NewRegistry(nil), kv: map[string]jetstream.KeyValue{}}
	if tn.chat, err = chat.New("chat", chat.Config{}); err != nil {
		t.Fatal(err)
	}
	if tn.curs, err = cursors.New("cursors", cursors.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := tn.reg.Register("chat", tn.chat); err != nil {
		t.Fatal(err)
	}
	if err := tn.reg.Register("cursors", tn.curs); err != nil {
		t.Fatal(err)
	}
	stopChat, err := Chat(tn.chat, n, testTTL)
	if err != nil {
		t.Fatal(err)
	}
	stopCursors, err := Cursors(tn.curs, n, testTTL)
	if err != nil {
		stopChat()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCursors()
		stopChat()
		nc.Close()
	})
	for _, b := range []string{"chat", "cursors"} {
		if tn.kv[b], err = js.KeyValue(context.Background(), "snorky_test_"+b); err != nil {
			t.Fatal(err)
		}
	}
	return tn
}

// call runs a command from c on n and returns the reply.
func (n *testNode) call(c *rpctest.Conn, service, command, params string) rpctest.Reply {
	n.t.Helper()
	return rpctest.Call(n.t, n.reg, c, service, command, params)
}

// waitRecord polls until n's record of room (its JSON text) in bucket
// satisfies ok (nil value: no record).
func (n *testNode) waitRecord(bucket, room string, ok func(value []byte) bool) {
	n.t.Helper()
	canon, err := jsonval.Canonical([]byte(room))
	if err != nil {
		n.t.Fatal(err)
	}
	key := token(canon) + "." + token(n.id)
	deadline := time.Now().Add(waitFor)
	for {
		var value []byte
		e, err := n.kv[bucket].Get(context.Background(), key)
		switch {
		case err == nil:
			value = e.Value()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			n.t.Fatalf("reading record %s: %v", key, err)
		}
		if ok(value) {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("record %s of node %s: got %s after %v", room, n.id, value, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMsgs collects c's frames until there are want of them, failing after
// waitFor; then it waits a moment more and fails on any extra frame.
func waitMsgs(t *testing.T, what string, c *rpctest.Conn, want int) []rpctest.Msg {
	t.Helper()
	var got []rpctest.Msg
	deadline := time.Now().Add(waitFor)
	for len(got) < want {
		got = append(got, rpctest.Msgs(t, c)...)
		if len(got) >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d messages %v after %v, want %d", what, len(got), got, waitFor, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	quiet(t, what, c, 200*time.Millisecond)
	return got
}

// quiet fails if c gets a frame within d.
func quiet(t *testing.T, what string, c *rpctest.Conn, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if extra := rpctest.Msgs(t, c); len(extra) > 0 {
		t.Fatalf("%s: got unexpected messages %v", what, extra)
	}
}

// field returns a message's field as compact JSON text.
func field(m rpctest.Msg, path ...string) string {
	raw := m.Message[path[0]]
	for _, p := range path[1:] {
		var obj map[string]json.RawMessage
		_ = json.Unmarshal(raw, &obj)
		raw = obj[p]
	}
	return string(raw)
}

// members returns the identities of a chat join reply, sorted.
func members(t *testing.T, r rpctest.Reply) []string {
	t.Helper()
	var got struct{ Members []json.RawMessage }
	rpctest.JSONDecode(t, r.Data(t), &got)
	out := make([]string, len(got.Members))
	for i, m := range got.Members {
		out[i] = string(m)
	}
	slices.Sort(out)
	return out
}

func expectPresence(t *testing.T, what string, m rpctest.Msg, from, status string) {
	t.Helper()
	if m.Type() != "presence" || field(m, "from") != from || field(m, "status") != `"`+status+`"` {
		t.Fatalf("%s: got %s, want presence %s %s", what, m.Raw, from, status)
	}
}

// A message sent on one node reaches the members on the other node once,
// in the sender's order, and the sender's node once too; a join on the
// second node lists the member of the first; read receipts cross to the
// identity's other devices. The two nodes use two routed NATS servers.
func TestChatMessagesCrossNodes(t *testing.T) {
	ns := startNATS(t, 2)
	a := newNode(t, ns.URL(0), "node-a")
	b := newNode(t, ns.URL(1), "node-b")
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	alice2 := rpctest.NewConnAs(t, `"alice"`)

	a.call(alice, "chat", "join", `{"channel":"#cats"}`)
	a.waitRecord("chat", `"#cats"`, func(v []byte) bool { return v != nil })
	if got := members(t, b.call(bob, "chat", "join", `{"channel":"#cats"}`)); !slices.Equal(got, []string{`"alice"`, `"bob"`}) {
		t.Fatalf("bob's join on B: got members %v, want alice and bob", got)
	}
	expectPresence(t, "alice after bob's join", waitMsgs(t, "alice", alice, 1)[0], `"bob"`, "joined")

	const n = 20
	isMessage := func(m rpctest.Msg, i int) bool {
		return m.Type() == "message" && field(m, "from") == `"alice"` && field(m, "body") == fmt.Sprint(i) && field(m, "channel") == `"#cats"`
	}
	for i := range n {
		// The sender gets its own message before the reply, from A only.
		r := a.call(alice, "chat", "send", fmt.Sprintf(`{"channel":"#cats","body":%d}`, i))
		if len(r.Before) != 1 || !isMessage(r.Before[0], i) {
			t.Fatalf("alice's send %d: got %v before the reply, want her message", i, r.Before)
		}
	}
	for i, m := range waitMsgs(t, "bob on B", bob, n) {
		if !isMessage(m, i) {
			t.Fatalf("bob on B: message %d: got %s, want alice's body %d", i, m.Raw, i)
		}
	}
	quiet(t, "alice on A after her messages", alice, 0)

	// A read receipt of alice on A reaches her other device on B only.
	if got := members(t, b.call(alice2, "chat", "join", `{"channel":"#cats"}`)); !slices.Equal(got, []string{`"alice"`, `"bob"`}) {
		t.Fatalf("alice's second join on B: got members %v, want alice and bob", got)
	}
	a.call(alice, "chat", "read", `{"channel":"#cats"}`)
	if m := waitMsgs(t, "alice's other device", alice2, 1)[0]; m.Type() != "read" || field(m, "channel") != `"#cats"` {
		t.Fatalf("alice's other device: got %s, want read", m.Raw)
	}
	quiet(t, "bob after alice's read", bob, 0)
}

// Presence counts an identity once across nodes: a second device on
// another node is no "joined", the first device leaving is no "left", the
// last one leaving is.
func TestChatPresenceAcrossNodes(t *testing.T) {
	ns := startNATS(t, 1)
	a := newNode(t, ns.URL(0), "node-a")
	b := newNode(t, ns.URL(0), "node-b")
	alice := rpctest.NewConnAs(t, `"alice"`)
	alice2 := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	carol := rpctest.NewConnAs(t, `"carol"`)

	b.call(bob, "chat", "join", `{"channel":"#c"}`)
	b.waitRecord("chat", `"#c"`, func(v []byte) bool { return v != nil })
	if got := members(t, a.call(alice, "chat", "join", `{"channel":"#c"}`)); !slices.Equal(got, []string{`"alice"`, `"bob"`}) {
		t.Fatalf("alice's join on A: got members %v, want alice and bob", got)
	}
	expectPresence(t, "bob", waitMsgs(t, "bob", bob, 1)[0], `"alice"`, "joined")

	// Alice's second device, on B: nobody is told.
	if got := members(t, b.call(alice2, "chat", "join", `{"channel":"#c"}`)); !slices.Equal(got, []string{`"alice"`, `"bob"`}) {
		t.Fatalf("alice's second join on B: got members %v, want alice and bob", got)
	}
	b.waitRecord("chat", `"#c"`, func(v []byte) bool { return len(v) > 0 && json.Valid(v) && countMembers(v) == 2 })
	quiet(t, "bob after alice's second device", bob, 200*time.Millisecond)
	quiet(t, "alice after her second device", alice, 0)

	// Carol on A sees everyone; both nodes are told once.
	if got := members(t, a.call(carol, "chat", "join", `{"channel":"#c"}`)); !slices.Equal(got, []string{`"alice"`, `"bob"`, `"carol"`}) {
		t.Fatalf("carol's join on A: got members %v, want alice, bob and carol", got)
	}
	expectPresence(t, "alice", waitMsgs(t, "alice", alice, 1)[0], `"carol"`, "joined")
	expectPresence(t, "bob", waitMsgs(t, "bob", bob, 1)[0], `"carol"`, "joined")
	expectPresence(t, "alice2", waitMsgs(t, "alice2", alice2, 1)[0], `"carol"`, "joined")

	// Alice leaves A: she is still on B, so no "left".
	a.call(alice, "chat", "leave", `{"channel":"#c"}`)
	a.waitRecord("chat", `"#c"`, func(v []byte) bool { return countMembers(v) == 1 })
	quiet(t, "bob after alice left A", bob, 200*time.Millisecond)
	quiet(t, "carol after alice left A", carol, 0)

	// Her last device leaves: both nodes are told once.
	b.call(alice2, "chat", "leave", `{"channel":"#c"}`)
	expectPresence(t, "bob", waitMsgs(t, "bob", bob, 1)[0], `"alice"`, "left")
	expectPresence(t, "carol", waitMsgs(t, "carol", carol, 1)[0], `"alice"`, "left")

	// Carol disconnects: B is told, and A's record goes.
	a.chat.Disconnected(carol)
	expectPresence(t, "bob", waitMsgs(t, "bob", bob, 1)[0], `"carol"`, "left")
	a.waitRecord("chat", `"#c"`, func(v []byte) bool { return v == nil })
}

func countMembers(v []byte) int {
	var w wireMembers
	if json.Unmarshal(v, &w) != nil {
		return -1
	}
	return len(w.Members)
}

// A node that dies without a goodbye (its NATS connection closed, its
// bridge never stopped) has its members leave on the other node within
// the TTL and a margin.
func TestChatNodeDies(t *testing.T) {
	ns := startNATS(t, 1)
	a := newNode(t, ns.URL(0), "node-a")
	b := newNode(t, ns.URL(0), "node-b")
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	carol := rpctest.NewConnAs(t, `"carol"`)

	b.call(bob, "chat", "join", `{"channel":"#c"}`)
	a.call(alice, "chat", "join", `{"channel":"#c"}`)
	expectPresence(t, "bob", waitMsgs(t, "bob", bob, 1)[0], `"alice"`, "joined")

	a.nc.Close()
	died := time.Now()
	got := waitMsgs(t, "bob after A died", bob, 1)
	expectPresence(t, "bob after A died", got[0], `"alice"`, "left")
	if took := time.Since(died); took > 2*testTTL {
		t.Fatalf("left after %v, want within %v", took, 2*testTTL)
	}
	if got := members(t, b.call(carol, "chat", "join", `{"channel":"#c"}`)); !slices.Equal(got, []string{`"bob"`, `"carol"`}) {
		t.Fatalf("carol's join on B after A died: got members %v, want bob and carol", got)
	}
}

// cursor decodes a cursor notification's or listing's cursor.
type cursorJSON struct {
	PublicHandle int
	Document     json.RawMessage
	Position     json.RawMessage
	Status       json.RawMessage
	Owner        json.RawMessage
}

func listed(t *testing.T, r rpctest.Reply) []cursorJSON {
	t.Helper()
	var got struct{ Cursors []cursorJSON }
	rpctest.JSONDecode(t, r.Data(t), &got)
	return got.Cursors
}

func notified(t *testing.T, m rpctest.Msg, typ string) cursorJSON {
	t.Helper()
	if m.Type() != typ {
		t.Fatalf("got %s, want %s", m.Raw, typ)
	}
	var c cursorJSON
	rpctest.JSONDecode(t, m.Message["cursor"], &c)
	return c
}

func handle(t *testing.T, r rpctest.Reply) int {
	t.Helper()
	var h int
	rpctest.JSONDecode(t, r.Data(t), &h)
	return h
}

// A document spans nodes: a join lists the other node's cursors; created,
// updated and removed cursors reach the other node; each node's handles
// come from its own range.
func TestCursorsAcrossNodes(t *testing.T) {
	ns := startNATS(t, 1)
	a := newNode(t, ns.URL(0), "node-a")
	b := newNode(t, ns.URL(0), "node-b")
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)

	a.call(alice, "cursors", "join", `{"document":"S"}`)
	ha := handle(t, a.call(alice, "cursors", "createCursor", `{"privateHandle":1,"document":"S","position":12,"status":"focused"}`))
	a.waitRecord("cursors", `"S"`, func(v []byte) bool { return v != nil })

	cs := listed(t, b.call(bob, "cursors", "join", `{"document":"S"}`))
	if len(cs) != 1 || cs[0].PublicHandle != ha || string(cs[0].Position) != "12" || string(cs[0].Owner) != `"alice"` || string(cs[0].Document) != `"S"` {
		t.Fatalf("bob's join on B: got cursors %+v, want alice's %d at 12", cs, ha)
	}

	a.call(alice, "cursors", "updateCursor", `{"privateHandle":1,"newData":{"position":13,"status":"writing"}}`)
	if c := notified(t, waitMsgs(t, "bob", bob, 1)[0], "cursorUpdated"); c.PublicHandle != ha || string(c.Position) != "13" || string(c.Status) != `"writing"` {
		t.Fatalf("bob: got update %+v, want %d at 13 writing", c, ha)
	}

	hb := handle(t, b.call(bob, "cursors", "createCursor", `{"privateHandle":"p","document":"S","position":0,"status":null}`))
	if ha/HandlesPerSlot == hb/HandlesPerSlot {
		t.Fatalf("handles %d (A) and %d (B) share a slot", ha, hb)
	}
	if c := notified(t, waitMsgs(t, "alice", alice, 1)[0], "cursorAdded"); c.PublicHandle != hb || string(c.Owner) != `"bob"` {
		t.Fatalf("alice: got added %+v, want bob's %d", c, hb)
	}

	a.call(alice, "cursors", "removeCursor", `{"privateHandle":1}`)
	if m := waitMsgs(t, "bob", bob, 1)[0]; m.Type() != "cursorRemoved" || field(m, "cursor", "publicHandle") != fmt.Sprint(ha) || field(m, "cursor", "document") != `"S"` {
		t.Fatalf("bob: got %s, want cursorRemoved %d", m.Raw, ha)
	}

	// Bob leaves: his cursor goes on A too.
	b.call(bob, "cursors", "leave", `{"document":"S"}`)
	if c := notified(t, waitMsgs(t, "alice", alice, 1)[0], "cursorRemoved"); c.PublicHandle != hb {
		t.Fatalf("alice: got removed %+v, want %d", c, hb)
	}
}

// A dead node's cursors are removed on the other node within the TTL and
// a margin, with cursorRemoved.
func TestCursorsNodeDies(t *testing.T) {
	ns := startNATS(t, 1)
	a := newNode(t, ns.URL(0), "node-a")
	b := newNode(t, ns.URL(0), "node-b")
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	carol := rpctest.NewConnAs(t, `"carol"`)

	b.call(bob, "cursors", "join", `{"document":"S"}`)
	a.call(alice, "cursors", "join", `{"document":"S"}`)
	ha := handle(t, a.call(alice, "cursors", "createCursor", `{"privateHandle":1,"document":"S","position":1,"status":null}`))
	if c := notified(t, waitMsgs(t, "bob", bob, 1)[0], "cursorAdded"); c.PublicHandle != ha {
		t.Fatalf("bob: got added %+v, want %d", c, ha)
	}

	a.nc.Close()
	died := time.Now()
	if c := notified(t, waitMsgs(t, "bob after A died", bob, 1)[0], "cursorRemoved"); c.PublicHandle != ha {
		t.Fatalf("bob after A died: got removed %+v, want %d", c, ha)
	}
	if took := time.Since(died); took > 2*testTTL {
		t.Fatalf("removed after %v, want within %v", took, 2*testTTL)
	}
	if cs := listed(t, b.call(carol, "cursors", "join", `{"document":"S"}`)); len(cs) != 0 {
		t.Fatalf("carol's join on B after A died: got cursors %+v, want none", cs)
	}
}

// Each node claims its own handle slot; a stopped node's slot is free
// again.
func TestCursorSlots(t *testing.T) {
	ns := startNATS(t, 1)
	nc, err := nats.Connect(ns.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	n := &cluster.Node{ID: "x", Prefix: "snorky.test", Name: "test", NC: nc, JS: js}
	kv, err := openBucket(n, "cursor_slots", testTTL)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	first, err := claimSlot(kv, "one", testTTL, log)
	if err != nil {
		t.Fatal(err)
	}
	second, err := claimSlot(kv, "two", testTTL, log)
	if err != nil {
		t.Fatal(err)
	}
	if first.slot != 0 || second.slot != 1 {
		t.Fatalf("got slots %d and %d, want 0 and 1", first.slot, second.slot)
	}
	// Outliving the TTL: the keeper holds the slot.
	time.Sleep(testTTL + testTTL/2)
	if e, err := kv.Get(context.Background(), "s0"); err != nil || string(e.Value()) != "one" {
		t.Fatalf("slot 0 after the TTL: got %v, %v; want held by one", e, err)
	}
	first.stop()
	third, err := claimSlot(kv, "three", testTTL, log)
	if err != nil {
		t.Fatal(err)
	}
	defer third.stop()
	defer second.stop()
	if third.slot != 0 {
		t.Fatalf("after slot 0 was freed: got slot %d, want 0", third.slot)
	}
}

// Bad arguments are refused.
func TestConfig(t *testing.T) {
	if _, err := checkTTL(100 * time.Millisecond); err == nil {
		t.Fatal("ttl 100ms: got no error")
	}
	if ttl, err := checkTTL(0); err != nil || ttl != DefaultTTL {
		t.Fatalf("ttl 0: got %v, %v; want %v", ttl, err, DefaultTTL)
	}
	n := &cluster.Node{Name: "bad.name"}
	if _, err := openBucket(n, "chat", time.Second); err == nil {
		t.Fatal("cluster name with a dot: got no error")
	}
}
