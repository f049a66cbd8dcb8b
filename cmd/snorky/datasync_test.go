package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

const dataSyncConfig = `
models:
  Task: {}
  Note: {}
dealers:
  AllTasks: {model: Task, kind: broadcast}
  TasksByColor: {model: Task, kind: simple, key: color}
  TasksByTeam: {model: Task, kind: simple, key: owner.team}
  TaskFilter: {model: Task, kind: filter}
`

func authorize(t testing.TB, s *server, items string) string {
	t.Helper()
	var its any
	if err := json.Unmarshal([]byte(items), &its); err != nil {
		t.Fatal(err)
	}
	var tok string
	if err := json.Unmarshal(backendOK(t, s, "datasync_backend", "authorizeSubscription", map[string]any{"items": its}), &tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

// backendErr calls a backend command and returns its error string.
func backendErr(t testing.TB, s *server, service, command string, params any) string {
	t.Helper()
	p, _ := json.Marshal(params)
	status, body := backendCall(t, s, `{"service":`+quote(service)+`,"message":{"command":`+quote(command)+`,"params":`+string(p)+`}}`)
	if status != 200 {
		t.Fatalf("HTTP %d %s", status, body)
	}
	var env struct {
		Message struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"message"`
	}
	json.Unmarshal(body, &env)
	if env.Message.Type != "error" {
		t.Fatalf("%s.%s: got %s, want an error", service, command, body)
	}
	return env.Message.Message
}

func publishDeltas(t testing.TB, s *server, deltas string) {
	t.Helper()
	var ds any
	if err := json.Unmarshal([]byte(deltas), &ds); err != nil {
		t.Fatal(err)
	}
	backendOK(t, s, "datasync_backend", "publishDeltas", map[string]any{"deltas": ds})
}

// delta returns the next message, which must be a delta, as its inner delta.
func (c *wsClient) delta() map[string]any {
	c.t.Helper()
	m := c.next()
	msg := m["message"].(map[string]any)
	if m["service"] != "datasync" || msg["type"] != "delta" {
		c.t.Fatalf("got %v, want a delta", m)
	}
	return msg["delta"].(map[string]any)
}

var offsetRE = regexp.MustCompile(`^[0-9A-F]{32}$`)

func TestDataSyncPendingDeltasArriveBeforeAcquireResponse(t *testing.T) {
	s := startServer(t, dataSyncConfig)
	tok := authorize(t, s, `[{"dealer":"AllTasks","query":null}]`)
	publishDeltas(t, s, `[{"type":"insert","model":"Task","data":{"id":1,"title":"a"}},{"type":"insert","model":"Task","data":{"id":2,"title":"b"}}]`)
	publishDeltas(t, s, `[{"type":"delete","model":"Task","data":{"id":1},"extra":"dropped"}]`)
	c := dial(t, s, nil)
	c.call("datasync", "acquireSubscription", map[string]any{"token": tok}, "0")
	d1, d2, d3 := c.delta(), c.delta(), c.delta()
	if d1["type"] != "insert" || fmt.Sprint(d1["data"]) != "map[id:1 title:a]" || d2["type"] != "insert" || d3["type"] != "delete" {
		t.Fatalf("got %v %v %v, want insert 1, insert 2, delete 1", d1, d2, d3)
	}
	if _, has := d3["extra"]; has {
		t.Fatalf("extra fields must be dropped: %v", d3)
	}
	offs := []string{d1["offset"].(string), d2["offset"].(string), d3["offset"].(string)}
	for _, o := range offs {
		if !offsetRE.MatchString(o) {
			t.Fatalf("offset %q: want 32 upper-case hex digits", o)
		}
	}
	if !(offs[0] < offs[1] && offs[1] < offs[2]) {
		t.Fatalf("offsets %v are not increasing", offs)
	}
	if m := c.next()["message"].(map[string]any); m["type"] != "response" || fmt.Sprint(m["callId"]) != "0" || m["data"] != nil {
		t.Fatalf("got %v, want the acquire response after the deltas", m)
	}
	// Later deltas arrive as they are routed.
	publishDeltas(t, s, `[{"type":"insert","model":"Task","data":{"id":3}}]`)
	if d := c.delta(); fmt.Sprint(d["data"]) != "map[id:3]" || d["offset"].(string) <= offs[2] {
		t.Fatalf("got %v, want insert 3 with a greater offset", d)
	}
	// Other models do not reach it.
	publishDeltas(t, s, `[{"type":"insert","model":"Note","data":{"id":3}}]`)
	c.quiet(100 * time.Millisecond)
}

// TestDataSyncTransitions: spec §3.2 for simple (plain and dotted key) and
// filter dealers.
func TestDataSyncTransitions(t *testing.T) {
	s := startServer(t, dataSyncConfig)
	for _, tc := range []struct{ name, items string }{
		{"simple", `[{"dealer":"TasksByColor","query":"red"}]`},
		{"dotted", `[{"dealer":"TasksByTeam","query":"red"}]`},
		{"filter", `[{"dealer":"TaskFilter","query":["and",["==","color","red"],[">=","prio",0]]}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s, nil)
			c.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, s, tc.items)})
			row := func(id int, color string) string {
				return fmt.Sprintf(`{"id":%d,"color":%q,"owner":{"team":%q},"prio":1}`, id, color, color)
			}
			upd := func(id int, from, to string) string {
				return fmt.Sprintf(`[{"type":"update","model":"Task","oldData":%s,"newData":%s}]`, row(id, from), row(id, to))
			}
			publishDeltas(t, s, upd(1, "blue", "red"))
			if d := c.delta(); d["type"] != "insert" || d["data"].(map[string]any)["color"] != "red" {
				t.Fatalf("blue → red: got %v, want insert with newData", d)
			}
			publishDeltas(t, s, upd(1, "red", "red"))
			if d := c.delta(); d["type"] != "update" || d["newData"] == nil || d["oldData"] == nil {
				t.Fatalf("red → red: got %v, want the update", d)
			}
			publishDeltas(t, s, upd(1, "red", "blue"))
			if d := c.delta(); d["type"] != "delete" || d["data"].(map[string]any)["color"] != "red" {
				t.Fatalf("red → blue: got %v, want delete with oldData", d)
			}
			publishDeltas(t, s, upd(1, "blue", "blue"))
			publishDeltas(t, s, `[{"type":"insert","model":"Task","data":`+row(2, "blue")+`}]`)
			c.quiet(100 * time.Millisecond)
			publishDeltas(t, s, `[{"type":"delete","model":"Task","data":`+row(3, "red")+`}]`)
			if d := c.delta(); d["type"] != "delete" {
				t.Fatalf("delete of a red row: got %v", d)
			}
		})
	}
}

func TestDataSyncOneDeliveryPerSubscription(t *testing.T) {
	s := startServer(t, dataSyncConfig)
	c := dial(t, s, nil)
	tok := authorize(t, s, `[{"dealer":"AllTasks","query":null},{"dealer":"TasksByColor","query":"red"},{"dealer":"TaskFilter","query":["==","color","red"]},{"dealer":"TasksByColor","query":"red"}]`)
	c.ok("datasync", "acquireSubscription", map[string]any{"token": tok})
	publishDeltas(t, s, `[{"type":"insert","model":"Task","data":{"id":1,"color":"red"}}]`)
	c.delta()
	c.quiet(150 * time.Millisecond)
	// An update seen as an update by one item and as an insert by another
	// is still one delta: the update.
	publishDeltas(t, s, `[{"type":"update","model":"Task","oldData":{"id":1,"color":"blue"},"newData":{"id":1,"color":"red"}}]`)
	if d := c.delta(); d["type"] != "update" {
		t.Fatalf("got %v, want the update (AllTasks matches old and new)", d)
	}
	c.quiet(150 * time.Millisecond)
}

func TestDataSyncTokenLifecycle(t *testing.T) {
	s := startServer(t, dataSyncConfig)
	a, b := dial(t, s, nil), dial(t, s, nil)
	tok := authorize(t, s, `[{"dealer":"AllTasks","query":null}]`)

	a.fails("datasync", "acquireSubscription", map[string]any{"token": 5}, "token must be string")
	a.fails("datasync", "cancelSubscription", map[string]any{"token": nil}, "token must be string")
	a.fails("datasync", "acquireSubscription", map[string]any{"token": "garbage"}, "No such subscription")
	tampered := tok[:len(tok)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(tok, "AA")]
	a.fails("datasync", "acquireSubscription", map[string]any{"token": tampered}, "No such subscription")
	// Cancel before acquire: not acquired by this connection.
	a.fails("datasync", "cancelSubscription", map[string]any{"token": tok}, "No such subscription")

	a.ok("datasync", "acquireSubscription", map[string]any{"token": tok})
	a.fails("datasync", "acquireSubscription", map[string]any{"token": tok}, "Subscription already acquired")
	b.fails("datasync", "acquireSubscription", map[string]any{"token": tok}, "Subscription already acquired")
	b.fails("datasync", "cancelSubscription", map[string]any{"token": tok}, "No such subscription")
	a.ok("datasync", "cancelSubscription", map[string]any{"token": tok})
	publishDeltas(t, s, `[{"type":"insert","model":"Task","data":{"id":1}}]`)
	a.quiet(100 * time.Millisecond)
	// A cancelled token is not reusable.
	b.fails("datasync", "acquireSubscription", map[string]any{"token": tok}, "No such subscription")

	// Disconnect ends the subscriptions the connection acquired.
	tok2 := authorize(t, s, `[{"dealer":"AllTasks","query":null}]`)
	a.ok("datasync", "acquireSubscription", map[string]any{"token": tok2})
	a.ws.Close()
	eventually(t, "subscription ended", func() bool { return s.datasync.Subscriptions() == 0 })
	b.fails("datasync", "acquireSubscription", map[string]any{"token": tok2}, "No such subscription")
}

func TestDataSyncAcquireDeadline(t *testing.T) {
	s := startServer(t, dataSyncConfig+`tokens: {secret: "`+testSecret+`", acquire_timeout: 200ms}`)
	tok := authorize(t, s, `[{"dealer":"AllTasks","query":null}]`)
	eventually(t, "subscription expired", func() bool { return s.datasync.Subscriptions() == 0 })
	c := dial(t, s, nil)
	c.fails("datasync", "acquireSubscription", map[string]any{"token": tok}, "No such subscription")
}

func TestDataSyncPendingBound(t *testing.T) {
	s := startServer(t, dataSyncConfig+`limits: {commands_per_second: 0, pending_bytes: 2KiB}`)
	tok := authorize(t, s, `[{"dealer":"AllTasks","query":null}]`)
	for i := range 30 {
		publishDeltas(t, s, fmt.Sprintf(`[{"type":"insert","model":"Task","data":{"id":%d,"pad":"%s"}}]`, i, strings.Repeat("x", 100)))
	}
	c := dial(t, s, nil)
	c.fails("datasync", "acquireSubscription", map[string]any{"token": tok}, "Subscription dropped: too many pending deltas")
}

func TestDataSyncAuthorizeErrors(t *testing.T) {
	s := startServer(t, dataSyncConfig)
	for _, tc := range []struct {
		params any
		want   string
	}{
		{map[string]any{"items": []any{map[string]any{"query": nil}}}, "Missing field 'dealer'"},
		{map[string]any{"items": []any{map[string]any{"dealer": 1, "query": nil}}}, "dealer should be a dealer name"},
		{map[string]any{"items": []any{map[string]any{"dealer": "Nope", "query": nil}}}, "No such dealer"},
		{map[string]any{"items": []any{map[string]any{"dealer": "AllTasks"}}}, "Missing field 'query'"},
		{map[string]any{"items": []any{map[string]any{"dealer": "TaskFilter", "query": []any{"like", "a", "b"}}}}, `Invalid filter: unknown operator "like"`},
		{map[string]any{"items": []any{map[string]any{"dealer": "AllTasks", "query": nil}, map[string]any{"dealer": "Nope", "query": nil}}}, "No such dealer"},
		{map[string]any{"items": "x"}, "Invalid params"},
		{map[string]any{"items": []any{1}}, "Invalid params"},
		{map[string]any{}, "Invalid params"},
		{map[string]any{"items": []any{}, "snapshot": "1:2:"}, "Snapshots need a database"},
	} {
		if got := backendErr(t, s, "datasync_backend", "authorizeSubscription", tc.params); got != tc.want && !(strings.HasPrefix(tc.want, "Invalid filter") && strings.HasPrefix(got, "Invalid filter")) {
			t.Errorf("authorizeSubscription(%v): got %q, want %q", tc.params, got, tc.want)
		}
	}
	if n := s.datasync.Subscriptions(); n != 0 {
		t.Fatalf("failed authorisations left %d subscriptions", n)
	}
	// items: [] is valid and receives nothing.
	c := dial(t, s, nil)
	c.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, s, `[]`)})
	publishDeltas(t, s, `[{"type":"insert","model":"Task","data":{"id":1}}]`)
	c.quiet(100 * time.Millisecond)
}

func TestPublishDeltasValidatedWhole(t *testing.T) {
	s := startServer(t, dataSyncConfig)
	c := dial(t, s, nil)
	c.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, s, `[{"dealer":"AllTasks","query":null}]`)})
	good := map[string]any{"type": "insert", "model": "Task", "data": map[string]any{"id": 1}}
	for _, tc := range []struct {
		bad  any
		want string
	}{
		{map[string]any{"model": "Task", "data": 1}, "Missing field"},
		{map[string]any{"type": "insert", "data": 1}, "Missing field"},
		{map[string]any{"type": "insert", "model": "Task"}, "Missing field"},
		{map[string]any{"type": "update", "model": "Task", "newData": 1}, "Missing field"},
		{map[string]any{"type": "insert", "model": 7, "data": 1}, "model must be string"},
		{map[string]any{"type": "upsert", "model": "Task", "data": 1}, "Invalid delta type"},
		{map[string]any{"type": "truncate", "model": "Task"}, "Invalid delta type"},
		{map[string]any{"type": "insert", "model": "Nope", "data": 1}, "Unknown model 'Nope'"},
		{"not an object", "Invalid params"},
	} {
		if got := backendErr(t, s, "datasync_backend", "publishDeltas", map[string]any{"deltas": []any{good, tc.bad}}); got != tc.want {
			t.Errorf("publishDeltas([good, %v]): got %q, want %q", tc.bad, got, tc.want)
		}
	}
	if got := backendErr(t, s, "datasync_backend", "publishDeltas", map[string]any{"deltas": "x"}); got != "Invalid params" {
		t.Errorf("deltas not an array: got %q", got)
	}
	// Nothing of the rejected batches was delivered.
	c.quiet(150 * time.Millisecond)
}
