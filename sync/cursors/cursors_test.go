package cursors

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

type env struct {
	t   *testing.T
	reg *rpc.Registry
	svc *Service
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	svc, err := New("cursors", cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("cursors", svc); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, reg: reg, svc: svc}
}

func (e *env) call(c *rpctest.Conn, command, params string) rpctest.Reply {
	e.t.Helper()
	return rpctest.Call(e.t, e.reg, c, "cursors", command, params)
}

func (e *env) ok(c *rpctest.Conn, command, params, want string) rpctest.Reply {
	e.t.Helper()
	r := e.call(c, command, params)
	rpctest.JSONEqual(e.t, command+" "+params+" data", r.Data(e.t), want)
	return r
}

func (e *env) fails(c *rpctest.Conn, command, params, want string) {
	e.t.Helper()
	r := e.call(c, command, params)
	if got := r.Err(); got != want {
		e.t.Fatalf("%s %s: got reply %s, want error %q", command, params, r.Raw, want)
	}
	if len(r.Before) != 0 {
		e.t.Fatalf("%s %s: got notifications %v before an error", command, params, r.Before)
	}
}

// create makes a cursor and returns its public handle.
func (e *env) create(c *rpctest.Conn, private, document, position, status string) int {
	e.t.Helper()
	r := e.call(c, "createCursor", fmt.Sprintf(`{"privateHandle":%s,"document":%s,"position":%s,"status":%s}`, private, document, position, status))
	if len(r.Before) != 0 {
		e.t.Fatalf("createCursor: the creator got %v", r.Before)
	}
	var h int
	if err := json.Unmarshal(r.Data(e.t), &h); err != nil || h < 0 || h > 65535 {
		e.t.Fatalf("createCursor: got data %s, want an integer in 0–65535", r.Data(e.t))
	}
	return h
}

func expect(t *testing.T, what string, c *rpctest.Conn, want ...string) {
	t.Helper()
	got := rpctest.Msgs(t, c)
	if len(got) != len(want) {
		t.Fatalf("%s: got %d messages %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		rpctest.JSONEqual(t, fmt.Sprintf("%s: message %d", what, i), got[i].Raw, want[i])
	}
}

func cursorJSON(h int, doc, pos, status, owner string) string {
	return fmt.Sprintf(`{"publicHandle":%d,"document":%s,"position":%s,"status":%s,"owner":%s}`, h, doc, pos, status, owner)
}

func added(h int, doc, pos, status, owner string) string {
	return `{"service":"cursors","message":{"type":"cursorAdded","cursor":` + cursorJSON(h, doc, pos, status, owner) + `}}`
}

func updated(h int, doc, pos, status, owner string) string {
	return `{"service":"cursors","message":{"type":"cursorUpdated","cursor":` + cursorJSON(h, doc, pos, status, owner) + `}}`
}

func removed(h int, doc string) string {
	return fmt.Sprintf(`{"service":"cursors","message":{"type":"cursorRemoved","cursor":{"publicHandle":%d,"document":%s}}}`, h, doc)
}

func TestErrors(t *testing.T) {
	e := newEnv(t, Config{MaxDocuments: 3, MaxDocumentBytes: 16})
	alice := rpctest.NewConnAs(t, `"alice"`)
	anon := rpctest.NewConn()
	e.call(alice, "join", `{"document":"A"}`)
	e.call(alice, "join", `{"document":"B"}`)
	e.create(alice, `1`, `"A"`, `0`, `null`)

	for _, tc := range []struct {
		name, command, params, want string
		c                           *rpctest.Conn
	}{
		{"join without identity", "join", `{"document":"A"}`, "Not authenticated", anon},
		{"join twice", "join", `{"document":"A"}`, "Already joined", alice},
		{"document too long", "join", `{"document":"` + strings.Repeat("x", 20) + `"}`, "Document too long (limits.document_bytes)", alice},
		{"leave not joined", "leave", `{"document":"C"}`, "Not joined", alice},
		{"leave without identity", "leave", `{"document":"A"}`, "Not joined", anon},
		{"create not joined", "createCursor", `{"privateHandle":2,"document":"C","position":0,"status":0}`, "Not joined", alice},
		{"not joined checked before reuse", "createCursor", `{"privateHandle":1,"document":"C","position":0,"status":0}`, "Not joined", alice},
		{"reused handle, same document", "createCursor", `{"privateHandle":1,"document":"A","position":0,"status":0}`, "Reused handle", alice},
		{"reused handle, other document", "createCursor", `{"privateHandle":1.0,"document":"B","position":0,"status":0}`, "Reused handle", alice},
		{"update no such cursor", "updateCursor", `{"privateHandle":2,"newData":{"position":1}}`, "No such cursor", alice},
		{"update, handle of another type", "updateCursor", `{"privateHandle":"1","newData":{}}`, "No such cursor", alice},
		{"update without joining", "updateCursor", `{"privateHandle":1,"newData":{}}`, "No such cursor", anon},
		{"remove no such cursor", "removeCursor", `{"privateHandle":2}`, "No such cursor", alice},
		{"newData not an object", "updateCursor", `{"privateHandle":1,"newData":[1]}`, "Invalid params", alice},
		{"newData null", "updateCursor", `{"privateHandle":1,"newData":null}`, "Invalid params", alice},
		{"create without status", "createCursor", `{"privateHandle":2,"document":"A","position":0}`, "Invalid params", alice},
		{"unknown param", "removeCursor", `{"privateHandle":1,"document":"A"}`, "Invalid params", alice},
		{"unknown command", "moveCursor", `{}`, "Unknown command", alice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			e.fails(tc.c, tc.command, tc.params, tc.want)
		})
	}
	e.t = t

	e.ok(alice, "join", `{"document":"C"}`, `{"cursors":[]}`)
	e.fails(alice, "join", `{"document":"D"}`, "Too many documents (limits.documents_per_connection)")

	for i := 2; i <= MaxCursorsPerConn; i++ {
		e.create(alice, fmt.Sprint(i), `"B"`, `0`, `0`)
	}
	e.fails(alice, "createCursor", `{"privateHandle":1,"document":"C","position":0,"status":0}`, "Reused handle")
	e.fails(alice, "createCursor", `{"privateHandle":99,"document":"C","position":0,"status":0}`, "Too many cursors")
	e.ok(alice, "removeCursor", `{"privateHandle":16}`, `null`)
	e.create(alice, `99`, `"C"`, `0`, `0`)
}

func TestCursorLifecycle(t *testing.T) {
	e := newEnv(t, Config{})
	phone := rpctest.NewConnAs(t, `"alice"`)
	laptop := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `{"user":"bob"}`)
	elsewhere := rpctest.NewConnAs(t, `"carol"`)
	for _, c := range []*rpctest.Conn{phone, laptop, bob} {
		e.ok(c, "join", `{"document":"Sheet1"}`, `{"cursors":[]}`)
	}
	e.call(elsewhere, "join", `{"document":"Sheet2"}`)

	h := e.create(phone, `7`, `"Sheet1"`, `12`, `"focused"`)
	add := added(h, `"Sheet1"`, `12`, `"focused"`, `"alice"`)
	expect(t, "laptop (same identity, other connection)", laptop, add)
	expect(t, "bob", bob, add)
	expect(t, "phone", phone)
	expect(t, "another document", elsewhere)

	hb := e.create(bob, `{"k":1}`, `"Sheet1"`, `[1,2]`, `{"sel":true}`)
	if hb == h {
		t.Fatalf("two cursors in one document got public handle %d", h)
	}
	for _, c := range []*rpctest.Conn{phone, laptop} {
		expect(t, "after bob's cursor", c, added(hb, `"Sheet1"`, `[1,2]`, `{"sel":true}`, `{"user":"bob"}`))
	}

	// A later joiner sees every cursor now in the document.
	carol := rpctest.NewConnAs(t, `"carol"`)
	r := e.call(carol, "join", `{"document":"Sheet1"}`)
	var got struct{ Cursors []json.RawMessage }
	if err := json.Unmarshal(r.Data(t), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Cursors) != 2 {
		t.Fatalf("join: got %s, want two cursors", r.Data(t))
	}
	slices.SortFunc(got.Cursors, func(a, b json.RawMessage) int { return strings.Compare(string(a), string(b)) })
	wantCursors := []string{cursorJSON(h, `"Sheet1"`, `12`, `"focused"`, `"alice"`), cursorJSON(hb, `"Sheet1"`, `[1,2]`, `{"sel":true}`, `{"user":"bob"}`)}
	for _, c := range got.Cursors {
		if !slices.ContainsFunc(wantCursors, func(w string) bool { return string(c) == w }) {
			t.Fatalf("join: got cursor %s, want one of %v", c, wantCursors)
		}
	}

	// updateCursor applies position and status only.
	r = e.ok(phone, "updateCursor", `{"privateHandle":7,"newData":{"position":13,"status":"writing","owner":"mallory","publicHandle":1}}`, `null`)
	if len(r.Before) != 0 {
		t.Fatalf("the updater got %v", r.Before)
	}
	up := updated(h, `"Sheet1"`, `13`, `"writing"`, `"alice"`)
	for name, c := range map[string]*rpctest.Conn{"laptop": laptop, "bob": bob, "carol": carol} {
		expect(t, name, c, up)
	}
	e.ok(phone, "updateCursor", `{"privateHandle":7,"newData":{"position":{"line":2}}}`, `null`)
	expect(t, "bob after a position-only update", bob, updated(h, `"Sheet1"`, `{"line":2}`, `"writing"`, `"alice"`))
	e.ok(phone, "updateCursor", `{"privateHandle":7,"newData":{}}`, `null`)
	for name, c := range map[string]*rpctest.Conn{"laptop": laptop, "bob": bob, "carol": carol} {
		expect(t, name+" after an empty update", c, updated(h, `"Sheet1"`, `{"line":2}`, `"writing"`, `"alice"`))
	}

	e.ok(phone, "removeCursor", `{"privateHandle":7}`, `null`)
	for name, c := range map[string]*rpctest.Conn{"laptop": laptop, "bob": bob} {
		expect(t, name, c, removed(h, `"Sheet1"`))
	}
	expect(t, "phone", phone)
	e.fails(phone, "updateCursor", `{"privateHandle":7,"newData":{}}`, "No such cursor")
	// The private handle is free again.
	e.create(phone, `7`, `"Sheet1"`, `0`, `0`)
}

func TestLeaveAndDisconnectRemoveCursorsFirst(t *testing.T) {
	e := newEnv(t, Config{})
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	for _, doc := range []string{`{"doc":1}`, `"B"`} {
		e.call(alice, "join", `{"document":`+doc+`}`)
		e.call(bob, "join", `{"document":`+doc+`}`)
	}
	// alice spells the document differently when creating.
	h1 := e.create(alice, `1`, `{"doc":1.0}`, `0`, `0`)
	h2 := e.create(alice, `2`, `{"doc":1}`, `0`, `0`)
	h3 := e.create(alice, `3`, `"B"`, `0`, `0`)
	bob.Take()

	e.ok(alice, "leave", `{"document":{"doc":1}}`, `null`)
	got := rpctest.Msgs(t, bob)
	want := []string{removed(h1, `{"doc":1.0}`), removed(h2, `{"doc":1}`)}
	if len(got) != 2 || jsonval.Equal(got[0].Raw, got[1].Raw) {
		t.Fatalf("bob after alice left: got %v, want %v in any order", got, want)
	}
	for _, g := range got {
		if !slices.ContainsFunc(want, func(w string) bool { return jsonval.Equal(g.Raw, []byte(w)) }) {
			t.Fatalf("bob after alice left: got %s, want one of %v", g.Raw, want)
		}
	}
	e.fails(alice, "createCursor", `{"privateHandle":4,"document":{"doc":1},"position":0,"status":0}`, "Not joined")
	e.fails(alice, "removeCursor", `{"privateHandle":1}`, "No such cursor")
	// Cursors in other documents stay.
	e.ok(alice, "updateCursor", `{"privateHandle":3,"newData":{"position":5}}`, `null`)
	expect(t, "bob", bob, updated(h3, `"B"`, `5`, `0`, `"alice"`))

	e.reg.Disconnect(alice)
	expect(t, "bob after alice disconnected", bob, removed(h3, `"B"`))
	e.reg.Disconnect(bob)
	if rooms, conns := e.svc.set.Len(); rooms+conns != 0 {
		t.Fatalf("after all disconnected: got %d documents and %d members, want 0", rooms, conns)
	}
}

func TestPublicHandlesUniquePerDocument(t *testing.T) {
	e := newEnv(t, Config{})
	e.svc.randHandle = func() int { return 65535 } // every draw collides
	a := rpctest.NewConnAs(t, `"a"`)
	b := rpctest.NewConnAs(t, `"b"`)
	for _, c := range []*rpctest.Conn{a, b} {
		e.call(c, "join", `{"document":"X"}`)
		e.call(c, "join", `{"document":"Y"}`)
	}
	seen := map[int]bool{}
	for i := range 10 {
		c := []*rpctest.Conn{a, b}[i%2]
		c.Take()
		h := e.create(c, fmt.Sprint(i), `"X"`, `0`, `0`)
		if seen[h] {
			t.Fatalf("cursor %d: public handle %d is already used in the document", i, h)
		}
		seen[h] = true
	}
	if !seen[65535] || !seen[0] {
		t.Fatalf("got handles %v, want the walk to wrap from 65535 to 0", seen)
	}
	// Another document may use the same handle.
	a.Take()
	if h := e.create(a, `"y"`, `"Y"`, `0`, `0`); h != 65535 {
		t.Fatalf("first cursor in another document: got handle %d, want 65535", h)
	}
}

func TestFreeHandleInFullDocument(t *testing.T) {
	s, _ := New("cursors", Config{})
	d := document{}
	for h := range handles {
		if h != 4242 {
			d[h] = &cursor{}
		}
	}
	if h, ok := s.freeHandle(d); !ok || h != 4242 {
		t.Fatalf("one free handle: got (%d, %v), want (4242, true)", h, ok)
	}
	d[4242] = &cursor{}
	if h, ok := s.freeHandle(d); ok {
		t.Fatalf("full document: got handle %d, want none", h)
	}
}

// A lagging connection gets only the newest position of a cursor, and
// coalescing never mixes two cursors that had the same public handle.
func TestUpdatesCoalesceForLaggingConnection(t *testing.T) {
	e := newEnv(t, Config{})
	e.svc.randHandle = func() int { return 40213 }
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	e.call(alice, "join", `{"document":"S"}`)
	e.call(bob, "join", `{"document":"S"}`)

	h := e.create(alice, `1`, `"S"`, `0`, `"a"`)
	for pos := 1; pos <= 5; pos++ {
		e.ok(alice, "updateCursor", fmt.Sprintf(`{"privateHandle":1,"newData":{"position":%d}}`, pos), `null`)
	}
	e.ok(alice, "removeCursor", `{"privateHandle":1}`, `null`)
	h2 := e.create(alice, `2`, `"S"`, `100`, `"b"`)
	if h2 != h {
		t.Fatalf("got handle %d for the second cursor, want the freed %d", h2, h)
	}
	e.ok(alice, "updateCursor", `{"privateHandle":2,"newData":{"position":101}}`, `null`)
	e.ok(alice, "updateCursor", `{"privateHandle":2,"newData":{"position":102}}`, `null`)

	expect(t, "lagging bob", bob,
		added(h, `"S"`, `0`, `"a"`, `"alice"`),
		updated(h, `"S"`, `5`, `"a"`, `"alice"`),
		removed(h, `"S"`),
		added(h, `"S"`, `100`, `"b"`, `"alice"`),
		updated(h, `"S"`, `102`, `"b"`, `"alice"`),
	)
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{MaxDocuments: 1, MaxDocumentBytes: 1}, true},
		{Config{MaxDocuments: -1}, false},
		{Config{MaxDocumentBytes: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v): got %v, want ok=%v", tc.cfg, err, tc.ok)
		}
		if _, err := New("cursors", tc.cfg); (err == nil) != tc.ok {
			t.Errorf("New(%+v): got %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}
