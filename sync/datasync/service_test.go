package datasync_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/sync/datasync"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
	"github.com/snorkyhq/snorky/sync/token"
)

// env is an engine without a database, its "datasync" service on a
// frontend registry and "datasync_backend" on a backend registry, with the
// models and dealers of the spec's examples.
type env struct {
	t           *testing.T
	e           *datasync.Engine
	front, back *rpc.Registry
}

func newEnv(t *testing.T, tune func(*datasync.Config)) *env {
	t.Helper()
	signer, err := token.New([]byte("test-secret-0123456789abcdefghijklm"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := datasync.Config{
		Service: "datasync",
		Models: map[string]datasync.Model{
			"Task": {Key: []string{"id"}},
			"Note": {Key: []string{"id"}},
		},
		Dealers: map[string]dealers.Config{
			"AllTasks":     {Model: "Task", Kind: dealers.KindBroadcast},
			"TasksByColor": {Model: "Task", Kind: dealers.KindSimple, Key: "color"},
			"TasksByTeam":  {Model: "Task", Kind: dealers.KindSimple, Key: "owner.team"},
			"TaskFilter":   {Model: "Task", Kind: dealers.KindFilter},
		},
		AcquireTimeout: 2 * time.Minute,
		Signer:         signer,
	}
	if tune != nil {
		tune(&cfg)
	}
	e, err := datasync.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := &env{t: t, e: e, front: rpc.NewRegistry(nil), back: rpc.NewRegistry(nil)}
	if err := ev.front.Register("datasync", e.Frontend()); err != nil {
		t.Fatal(err)
	}
	if err := ev.back.Register("datasync_backend", e.Backend()); err != nil {
		t.Fatal(err)
	}
	return ev
}

// backend calls a backend command and returns its reply.
func (ev *env) backend(command, params string) rpctest.Reply {
	ev.t.Helper()
	return rpctest.Call(ev.t, ev.back, rpctest.NewConn(), "datasync_backend", command, params)
}

// authorize returns a token for the items (JSON).
func (ev *env) authorize(items string) string {
	ev.t.Helper()
	var tok string
	rpctest.JSONDecode(ev.t, ev.backend("authorizeSubscription", `{"items":`+items+`}`).Data(ev.t), &tok)
	return tok
}

// publish publishes deltas (a JSON array); it fails on an error reply.
func (ev *env) publish(deltas string) {
	ev.t.Helper()
	ev.backend("publishDeltas", `{"deltas":`+deltas+`}`).Data(ev.t)
}

// call sends a frontend command from c.
func (ev *env) call(c *rpctest.Conn, command string, params any) rpctest.Reply {
	ev.t.Helper()
	p, err := json.Marshal(params)
	if err != nil {
		ev.t.Fatal(err)
	}
	return rpctest.Call(ev.t, ev.front, c, "datasync", command, string(p))
}

func (ev *env) ok(c *rpctest.Conn, command string, params any) rpctest.Reply {
	ev.t.Helper()
	r := ev.call(c, command, params)
	if r.Err() != "" {
		ev.t.Fatalf("%s %v: got error %q, want a response", command, params, r.Err())
	}
	return r
}

func (ev *env) fails(c *rpctest.Conn, command string, params any, want string) {
	ev.t.Helper()
	if got := ev.call(c, command, params).Err(); got != want {
		ev.t.Fatalf("%s %v: got error %q, want %q", command, params, got, want)
	}
}

// wireDelta is a delta notification's delta.
type wireDelta struct {
	Type    string         `json:"type"`
	Model   string         `json:"model"`
	Data    map[string]any `json:"data"`
	NewData map[string]any `json:"newData"`
	OldData map[string]any `json:"oldData"`
	Offset  string         `json:"offset"`
	Extra   any            `json:"extra"`
}

// deltas decodes msgs, which must all be delta notifications.
func deltas(t *testing.T, msgs []rpctest.Msg) []wireDelta {
	t.Helper()
	out := make([]wireDelta, len(msgs))
	for i, m := range msgs {
		if m.Service != "datasync" || m.Type() != "delta" {
			t.Fatalf("got %s, want a delta", m)
		}
		rpctest.JSONDecode(t, m.Message["delta"], &out[i])
	}
	return out
}

// received takes what c got, all deltas.
func received(t *testing.T, c *rpctest.Conn) []wireDelta {
	t.Helper()
	return deltas(t, rpctest.Msgs(t, c))
}

// none fails if c got anything. Routing is synchronous: when publishDeltas
// has answered, every matching connection has its deltas queued.
func none(t *testing.T, c *rpctest.Conn) {
	t.Helper()
	if frames := c.Take(); len(frames) != 0 {
		t.Fatalf("got %q, want nothing", frames)
	}
}

var offsetRE = regexp.MustCompile(`^[0-9A-F]{32}$`)

func TestDataSyncPendingDeltasArriveBeforeAcquireResponse(t *testing.T) {
	ev := newEnv(t, nil)
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	ev.publish(`[{"type":"insert","model":"Task","data":{"id":1,"title":"a"}},{"type":"insert","model":"Task","data":{"id":2,"title":"b"}}]`)
	ev.publish(`[{"type":"delete","model":"Task","data":{"id":1},"extra":"dropped"}]`)
	c := rpctest.NewConn()
	r := ev.ok(c, "acquireSubscription", map[string]any{"token": tok})
	rpctest.JSONEqual(t, "acquire data", r.Data(t), `null`)
	ds := deltas(t, r.Before)
	if len(ds) != 3 || ds[0].Type != "insert" || fmt.Sprint(ds[0].Data) != "map[id:1 title:a]" || ds[1].Type != "insert" || ds[2].Type != "delete" {
		t.Fatalf("got %+v before the response, want insert 1, insert 2, delete 1", ds)
	}
	if ds[2].Extra != nil {
		t.Fatalf("extra fields must be dropped: %s", r.Before[2])
	}
	for _, d := range ds {
		if !offsetRE.MatchString(d.Offset) {
			t.Fatalf("offset %q: want 32 upper-case hex digits", d.Offset)
		}
	}
	if !(ds[0].Offset < ds[1].Offset && ds[1].Offset < ds[2].Offset) {
		t.Fatalf("offsets %s %s %s are not increasing", ds[0].Offset, ds[1].Offset, ds[2].Offset)
	}
	// Later deltas arrive as they are routed.
	ev.publish(`[{"type":"insert","model":"Task","data":{"id":3}}]`)
	if got := received(t, c); len(got) != 1 || fmt.Sprint(got[0].Data) != "map[id:3]" || got[0].Offset <= ds[2].Offset {
		t.Fatalf("got %+v, want insert 3 with a greater offset", got)
	}
	// Other models do not reach it.
	ev.publish(`[{"type":"insert","model":"Note","data":{"id":3}}]`)
	none(t, c)
}

// TestDataSyncTransitions: spec §3.2 for simple (plain and dotted key) and
// filter dealers.
func TestDataSyncTransitions(t *testing.T) {
	ev := newEnv(t, nil)
	for _, tc := range []struct{ name, items string }{
		{"simple", `[{"dealer":"TasksByColor","query":"red"}]`},
		{"dotted", `[{"dealer":"TasksByTeam","query":"red"}]`},
		{"filter", `[{"dealer":"TaskFilter","query":["and",["==","color","red"],[">=","prio",0]]}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev.t = t
			defer func(parent *testing.T) { ev.t = parent }(ev.t)
			c := rpctest.NewConn()
			ev.ok(c, "acquireSubscription", map[string]any{"token": ev.authorize(tc.items)})
			row := func(id int, color string) string {
				return fmt.Sprintf(`{"id":%d,"color":%q,"owner":{"team":%q},"prio":1}`, id, color, color)
			}
			upd := func(id int, from, to string) string {
				return fmt.Sprintf(`[{"type":"update","model":"Task","oldData":%s,"newData":%s}]`, row(id, from), row(id, to))
			}
			one := func(what string) wireDelta {
				t.Helper()
				got := received(t, c)
				if len(got) != 1 {
					t.Fatalf("%s: got %d deltas %+v, want one", what, len(got), got)
				}
				return got[0]
			}
			ev.publish(upd(1, "blue", "red"))
			if d := one("blue → red"); d.Type != "insert" || d.Data["color"] != "red" {
				t.Fatalf("blue → red: got %+v, want insert with newData", d)
			}
			ev.publish(upd(1, "red", "red"))
			if d := one("red → red"); d.Type != "update" || d.NewData == nil || d.OldData == nil {
				t.Fatalf("red → red: got %+v, want the update", d)
			}
			ev.publish(upd(1, "red", "blue"))
			if d := one("red → blue"); d.Type != "delete" || d.Data["color"] != "red" {
				t.Fatalf("red → blue: got %+v, want delete with oldData", d)
			}
			ev.publish(upd(1, "blue", "blue"))
			ev.publish(`[{"type":"insert","model":"Task","data":` + row(2, "blue") + `}]`)
			none(t, c)
			ev.publish(`[{"type":"delete","model":"Task","data":` + row(3, "red") + `}]`)
			if d := one("delete of a red row"); d.Type != "delete" {
				t.Fatalf("delete of a red row: got %+v", d)
			}
		})
	}
}

func TestDataSyncOneDeliveryPerSubscription(t *testing.T) {
	ev := newEnv(t, nil)
	c := rpctest.NewConn()
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null},{"dealer":"TasksByColor","query":"red"},{"dealer":"TaskFilter","query":["==","color","red"]},{"dealer":"TasksByColor","query":"red"}]`)
	ev.ok(c, "acquireSubscription", map[string]any{"token": tok})
	ev.publish(`[{"type":"insert","model":"Task","data":{"id":1,"color":"red"}}]`)
	if got := received(t, c); len(got) != 1 {
		t.Fatalf("insert matched by four items: got %d deltas, want one", len(got))
	}
	// An update seen as an update by one item and as an insert by another
	// is still one delta: the update.
	ev.publish(`[{"type":"update","model":"Task","oldData":{"id":1,"color":"blue"},"newData":{"id":1,"color":"red"}}]`)
	if got := received(t, c); len(got) != 1 || got[0].Type != "update" {
		t.Fatalf("got %+v, want the update alone (AllTasks matches old and new)", got)
	}
}

func TestDataSyncTokenLifecycle(t *testing.T) {
	ev := newEnv(t, nil)
	a, b := rpctest.NewConn(), rpctest.NewConn()
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)

	ev.fails(a, "acquireSubscription", map[string]any{"token": 5}, "token must be string")
	ev.fails(a, "cancelSubscription", map[string]any{"token": nil}, "token must be string")
	ev.fails(a, "acquireSubscription", map[string]any{"token": "garbage"}, "No such subscription")
	tampered := tok[:len(tok)-2] + map[bool]string{true: "AA", false: "BB"}[!strings.HasSuffix(tok, "AA")]
	ev.fails(a, "acquireSubscription", map[string]any{"token": tampered}, "No such subscription")
	// Cancel before acquire: not acquired by this connection.
	ev.fails(a, "cancelSubscription", map[string]any{"token": tok}, "No such subscription")

	ev.ok(a, "acquireSubscription", map[string]any{"token": tok})
	ev.fails(a, "acquireSubscription", map[string]any{"token": tok}, "Subscription already acquired")
	ev.fails(b, "acquireSubscription", map[string]any{"token": tok}, "Subscription already acquired")
	ev.fails(b, "cancelSubscription", map[string]any{"token": tok}, "No such subscription")
	ev.ok(a, "cancelSubscription", map[string]any{"token": tok})
	ev.publish(`[{"type":"insert","model":"Task","data":{"id":1}}]`)
	none(t, a)
	// A cancelled token is not reusable.
	ev.fails(b, "acquireSubscription", map[string]any{"token": tok}, "No such subscription")
	if n := ev.e.Subscriptions(); n != 0 {
		t.Fatalf("after cancel: %d subscriptions, want 0", n)
	}

	// Disconnect ends the subscriptions the connection acquired, at once.
	tok2 := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	ev.ok(a, "acquireSubscription", map[string]any{"token": tok2})
	ev.front.Disconnect(a)
	if n := ev.e.Subscriptions(); n != 0 {
		t.Fatalf("after disconnect: %d subscriptions, want 0", n)
	}
	ev.fails(b, "acquireSubscription", map[string]any{"token": tok2}, "No such subscription")
}

// TestDataSyncAcquireDeadline: a token not acquired within the acquire
// timeout is gone (polled: the expiry runs on a timer).
func TestDataSyncAcquireDeadline(t *testing.T) {
	ev := newEnv(t, func(c *datasync.Config) { c.AcquireTimeout = 200 * time.Millisecond })
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	if n := ev.e.Subscriptions(); n != 1 {
		t.Fatalf("after authorize: %d subscriptions, want 1", n)
	}
	deadline := time.Now().Add(30 * time.Second)
	for ev.e.Subscriptions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unacquired subscription did not expire")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ev.fails(rpctest.NewConn(), "acquireSubscription", map[string]any{"token": tok}, "No such subscription")
}

func TestDataSyncPendingBound(t *testing.T) {
	ev := newEnv(t, func(c *datasync.Config) { c.PendingBytes = 2 << 10 })
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	for i := range 30 {
		ev.publish(fmt.Sprintf(`[{"type":"insert","model":"Task","data":{"id":%d,"pad":"%s"}}]`, i, strings.Repeat("x", 100)))
	}
	ev.fails(rpctest.NewConn(), "acquireSubscription", map[string]any{"token": tok}, "Subscription dropped: too many pending deltas")
}

func TestDataSyncAuthorizeErrors(t *testing.T) {
	ev := newEnv(t, nil)
	for _, tc := range []struct {
		params string
		want   string
	}{
		{`{"items":[{"query":null}]}`, "Missing field 'dealer'"},
		{`{"items":[{"dealer":1,"query":null}]}`, "dealer should be a dealer name"},
		{`{"items":[{"dealer":"Nope","query":null}]}`, "No such dealer"},
		{`{"items":[{"dealer":"AllTasks"}]}`, "Missing field 'query'"},
		{`{"items":[{"dealer":"TaskFilter","query":["like","a","b"]}]}`, `Invalid filter: unknown operator "like"`},
		{`{"items":[{"dealer":"AllTasks","query":null},{"dealer":"Nope","query":null}]}`, "No such dealer"},
		{`{"items":"x"}`, "Invalid params"},
		{`{"items":[1]}`, "Invalid params"},
		{`{}`, "Invalid params"},
		{`{"items":[],"snapshot":"1:2:"}`, "Snapshots need a database"},
	} {
		if got := ev.backend("authorizeSubscription", tc.params).Err(); got != tc.want && !(strings.HasPrefix(tc.want, "Invalid filter") && strings.HasPrefix(got, "Invalid filter")) {
			t.Errorf("authorizeSubscription(%s): got %q, want %q", tc.params, got, tc.want)
		}
	}
	if n := ev.e.Subscriptions(); n != 0 {
		t.Fatalf("failed authorisations left %d subscriptions", n)
	}
	// items: [] is valid and receives nothing.
	c := rpctest.NewConn()
	ev.ok(c, "acquireSubscription", map[string]any{"token": ev.authorize(`[]`)})
	ev.publish(`[{"type":"insert","model":"Task","data":{"id":1}}]`)
	none(t, c)
}

func TestPublishDeltasValidatedWhole(t *testing.T) {
	ev := newEnv(t, nil)
	c := rpctest.NewConn()
	ev.ok(c, "acquireSubscription", map[string]any{"token": ev.authorize(`[{"dealer":"AllTasks","query":null}]`)})
	good := `{"type":"insert","model":"Task","data":{"id":1}}`
	for _, tc := range []struct {
		bad  string
		want string
	}{
		{`{"model":"Task","data":1}`, "Missing field"},
		{`{"type":"insert","data":1}`, "Missing field"},
		{`{"type":"insert","model":"Task"}`, "Missing field"},
		{`{"type":"update","model":"Task","newData":1}`, "Missing field"},
		{`{"type":"insert","model":7,"data":1}`, "model must be string"},
		{`{"type":"upsert","model":"Task","data":1}`, "Invalid delta type"},
		{`{"type":"truncate","model":"Task"}`, "Invalid delta type"},
		{`{"type":"insert","model":"Nope","data":1}`, "Unknown model 'Nope'"},
		{`"not an object"`, "Invalid params"},
	} {
		if got := ev.backend("publishDeltas", `{"deltas":[`+good+`,`+tc.bad+`]}`).Err(); got != tc.want {
			t.Errorf("publishDeltas([good, %s]): got %q, want %q", tc.bad, got, tc.want)
		}
	}
	if got := ev.backend("publishDeltas", `{"deltas":"x"}`).Err(); got != "Invalid params" {
		t.Errorf("deltas not an array: got %q", got)
	}
	// Nothing of the rejected batches was delivered.
	none(t, c)
}

// TestDataSyncExpiredTokenStillCancels: a token's expiry bounds its
// acquire, not the subscription: once acquired, its owner can still cancel
// it (§3.5.6) and another acquire still finds it taken, long after the
// acquire timeout.
func TestDataSyncExpiredTokenStillCancels(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	later := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	ev := newEnv(t, func(c *datasync.Config) {
		c.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		}
	})
	a, b := rpctest.NewConn(), rpctest.NewConn()
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	ev.ok(a, "acquireSubscription", map[string]any{"token": tok})
	later(3 * time.Minute) // past the 2-minute acquire timeout
	ev.fails(b, "acquireSubscription", map[string]any{"token": tok}, "Subscription already acquired")
	ev.fails(b, "cancelSubscription", map[string]any{"token": tok}, "No such subscription")
	ev.ok(a, "cancelSubscription", map[string]any{"token": tok})
	ev.publish(`[{"type":"insert","model":"Task","data":{"id":1}}]`)
	none(t, a)
	if n := ev.e.Subscriptions(); n != 0 {
		t.Fatalf("after cancel: %d subscriptions, want 0", n)
	}
	ev.fails(b, "acquireSubscription", map[string]any{"token": tok}, "No such subscription")

	// Never acquired: the expired token acquires nothing.
	tok2 := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	later(3 * time.Minute)
	ev.fails(a, "acquireSubscription", map[string]any{"token": tok2}, "No such subscription")
}

// TestDataSyncLongAcquireWithoutDatabase: without a database nothing sets
// the window's age, which must still outlive a longer acquire deadline:
// deltas published over 4 minutes reach an acquire at 4.5 minutes.
func TestDataSyncLongAcquireWithoutDatabase(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	ev := newEnv(t, func(c *datasync.Config) {
		c.AcquireTimeout = 5 * time.Minute
		c.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		}
	})
	tok := ev.authorize(`[{"dealer":"AllTasks","query":null}]`)
	later := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	for i := range 4 {
		later(time.Minute)
		ev.publish(fmt.Sprintf(`[{"type":"insert","model":"Task","data":{"id":%d}}]`, i))
	}
	later(30 * time.Second)
	c := rpctest.NewConn()
	r := ev.ok(c, "acquireSubscription", map[string]any{"token": tok})
	n := 0
	for _, m := range r.Before {
		if m.Type() == "delta" {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("the acquire replayed %d deltas, want the 4 published since authorising (%v)", n, r.Before)
	}
}
