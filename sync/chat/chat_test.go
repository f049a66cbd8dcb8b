package chat

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

var (
	fixedNow = time.Date(2024, 5, 1, 14, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	wantTS   = "2024-05-01T12:00:00.123Z"
)

type env struct {
	t   *testing.T
	reg *rpc.Registry
	svc *Service
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	svc, err := New("chat", cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc.now = func() time.Time { return fixedNow }
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("chat", svc); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, reg: reg, svc: svc}
}

func (e *env) call(c *rpctest.Conn, command, params string) rpctest.Reply {
	e.t.Helper()
	return rpctest.Call(e.t, e.reg, c, "chat", command, params)
}

// ok calls and fails unless the response data equals want.
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

// expect takes c's queued frames and compares them, in order, with want.
func expect(t *testing.T, what string, c *rpctest.Conn, want ...string) {
	t.Helper()
	expectMsgs(t, what, rpctest.Msgs(t, c), want...)
}

func expectMsgs(t *testing.T, what string, got []rpctest.Msg, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d messages %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		rpctest.JSONEqual(t, fmt.Sprintf("%s: message %d", what, i), got[i].Raw, want[i])
	}
}

func presenceNote(from, channel, status string) string {
	return fmt.Sprintf(`{"service":"chat","message":{"type":"presence","from":%s,"channel":%s,"status":%q,"timestamp":%q}}`, from, channel, status, wantTS)
}

func messageNote(from, channel, body string) string {
	return fmt.Sprintf(`{"service":"chat","message":{"type":"message","from":%s,"channel":%s,"body":%s,"timestamp":%q}}`, from, channel, body, wantTS)
}

func readNote(channel string) string {
	return fmt.Sprintf(`{"service":"chat","message":{"type":"read","channel":%s,"timestamp":%q}}`, channel, wantTS)
}

// members checks a join result as a set: each identity once.
func members(t *testing.T, data json.RawMessage, want ...string) {
	t.Helper()
	var got struct{ Members []json.RawMessage }
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("join data %s: %v", data, err)
	}
	canon := func(xs []string) []string {
		out := make([]string, len(xs))
		for i, x := range xs {
			c, err := jsonval.Canonical([]byte(x))
			if err != nil {
				t.Fatal(err)
			}
			out[i] = c
		}
		slices.Sort(out)
		return out
	}
	g := make([]string, len(got.Members))
	for i, m := range got.Members {
		g[i] = string(m)
	}
	if gs, ws := canon(g), canon(want); !slices.Equal(gs, ws) {
		t.Fatalf("members: got %v, want %v", g, want)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, Config{MaxChannels: 2, MaxChannelBytes: 16, MaxBodyBytes: 8})
	alice := rpctest.NewConnAs(t, `"alice"`)
	anon := rpctest.NewConn()
	e.call(alice, "join", `{"channel":"#cats"}`)

	for _, tc := range []struct {
		name, command, params, want string
		c                           *rpctest.Conn
	}{
		{"join without identity", "join", `{"channel":"#cats"}`, "Not authenticated", anon},
		{"identity checked before length", "join", `{"channel":"` + strings.Repeat("x", 40) + `"}`, "Not authenticated", anon},
		{"join twice", "join", `{"channel":"#cats"}`, "Already joined", alice},
		{"join twice, equal value", "join", `{"channel":"#cats" }`, "Already joined", alice},
		{"channel too long", "join", `{"channel":"` + strings.Repeat("x", 40) + `"}`, "Channel too long (limits.channel_bytes)", alice},
		{"leave not joined", "leave", `{"channel":"#dogs"}`, "Not joined", alice},
		{"leave without identity", "leave", `{"channel":"#cats"}`, "Not joined", anon},
		{"send not joined", "send", `{"channel":"#dogs","body":"hi"}`, "Not joined", alice},
		{"send without identity", "send", `{"channel":"#cats","body":"hi"}`, "Not joined", anon},
		{"not joined checked before size", "send", `{"channel":"#dogs","body":"0123456789"}`, "Not joined", alice},
		{"message too big", "send", `{"channel":"#cats","body":"0123456789"}`, "Message too big (limits.message_body_bytes)", alice},
		{"missing param", "join", `{}`, "Invalid params", alice},
		{"unknown param", "join", `{"channel":"#cats","x":1}`, "Invalid params", alice},
		{"send without body", "send", `{"channel":"#cats"}`, "Invalid params", alice},
		{"params not an object", "read", `["#cats"]`, "Invalid params", alice},
		{"params null", "leave", `null`, "Invalid params", alice},
		{"unknown command", "shout", `{}`, "Unknown command", alice},
		{"helper name is not a command", "leave ", `{}`, "Unknown command", alice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			e.fails(tc.c, tc.command, tc.params, tc.want)
		})
	}
	e.t = t
	e.ok(alice, "join", `{"channel":"#dogs"}`, `{"members":["alice"]}`)
	e.fails(alice, "join", `{"channel":"#birds"}`, "Too many channels (limits.channels_per_connection)")
	e.ok(alice, "leave", `{"channel":"#dogs"}`, `null`)
	e.ok(alice, "join", `{"channel":"#birds"}`, `{"members":["alice"]}`)
	// A body exactly at the limit is accepted.
	e.call(alice, "send", `{"channel":"#cats","body":"012345"}`).Data(t)
}

func TestJoinPresenceAndMembers(t *testing.T) {
	e := newEnv(t, Config{})
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `{"user":"bob","id":2}`)

	r := e.call(alice, "join", `{"channel":"#cats"}`)
	members(t, r.Data(t), `"alice"`)
	expectMsgs(t, "alice's join", r.Before)

	r = e.call(bob, "join", `{"channel":"#cats"}`)
	members(t, r.Data(t), `"alice"`, `{"id":2,"user":"bob"}`)
	expectMsgs(t, "the joiner gets no presence", r.Before)
	expect(t, "alice", alice, presenceNote(`{"user":"bob","id":2}`, `"#cats"`, "joined"))

	e.ok(bob, "leave", `{"channel":"#cats"}`, `null`)
	expect(t, "alice after bob left", alice, presenceNote(`{"user":"bob","id":2}`, `"#cats"`, "left"))
	e.fails(bob, "send", `{"channel":"#cats","body":"hi"}`, "Not joined")

	// The last one out leaves no presence behind and no channel.
	e.ok(alice, "leave", `{"channel":"#cats"}`, `null`)
	if rooms, conns := e.svc.set.Len(); rooms+conns != 0 {
		t.Fatalf("after everyone left: got %d channels and %d members, want 0", rooms, conns)
	}
}

func TestPresenceAcrossDevices(t *testing.T) {
	e := newEnv(t, Config{})
	phone := rpctest.NewConnAs(t, `"alice"`)
	laptop := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)

	e.ok(bob, "join", `{"channel":"#cats"}`, `{"members":["bob"]}`)
	e.call(phone, "join", `{"channel":"#cats"}`)
	expect(t, "bob after alice's first device", bob, presenceNote(`"alice"`, `"#cats"`, "joined"))

	r := e.call(laptop, "join", `{"channel":"#cats"}`)
	members(t, r.Data(t), `"alice"`, `"bob"`)
	expect(t, "bob after alice's second device", bob)
	expect(t, "alice's phone after her second device", phone)

	e.ok(phone, "leave", `{"channel":"#cats"}`, `null`)
	expect(t, "bob while alice's laptop stays", bob)
	expect(t, "laptop", laptop)

	e.call(phone, "join", `{"channel":"#cats"}`)
	expect(t, "bob on rejoin of a present identity", bob)

	// Disconnecting one device says nothing; the last one says "left".
	e.reg.Disconnect(laptop)
	expect(t, "bob after laptop disconnect", bob)
	e.reg.Disconnect(phone)
	expect(t, "bob after phone disconnect", bob, presenceNote(`"alice"`, `"#cats"`, "left"))
}

func TestSendReachesEveryConnectionIncludingSender(t *testing.T) {
	e := newEnv(t, Config{})
	phone := rpctest.NewConnAs(t, `"alice"`)
	laptop := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	outsider := rpctest.NewConnAs(t, `"carol"`)
	for _, c := range []*rpctest.Conn{phone, laptop, bob} {
		e.call(c, "join", `{"channel":"#cats"}`)
	}
	for _, c := range []*rpctest.Conn{phone, laptop, bob} {
		c.Take()
	}
	e.call(outsider, "join", `{"channel":"#dogs"}`)

	body := `{"text":"meow","n":[1, 2.50]}`
	r := e.call(phone, "send", `{"channel":"#cats","body":`+body+`}`)
	rpctest.JSONEqual(t, "send data", r.Data(t), `null`)
	want := messageNote(`"alice"`, `"#cats"`, body)
	expectMsgs(t, "sender: notification before the response", r.Before, want)
	expect(t, "laptop", laptop, want)
	expect(t, "bob", bob, want)
	expect(t, "outsider", outsider)
}

func TestRead(t *testing.T) {
	e := newEnv(t, Config{})
	phone := rpctest.NewConnAs(t, `"alice"`)
	laptop := rpctest.NewConnAs(t, `"alice"`)
	tablet := rpctest.NewConnAs(t, `"alice"`) // not joined
	bob := rpctest.NewConnAs(t, `"bob"`)
	anon := rpctest.NewConn()
	for _, c := range []*rpctest.Conn{phone, laptop, bob} {
		e.call(c, "join", `{"channel":"#cats"}`)
	}
	for _, c := range []*rpctest.Conn{phone, laptop, bob} {
		c.Take()
	}

	r := e.ok(phone, "read", `{"channel":"#cats"}`, `null`)
	expectMsgs(t, "reader", r.Before)
	expect(t, "laptop", laptop, readNote(`"#cats"`))
	expect(t, "bob", bob)
	expect(t, "tablet", tablet)

	// Reading does not require joining.
	r = e.ok(tablet, "read", `{"channel":"#cats"}`, `null`)
	expect(t, "phone", phone, readNote(`"#cats"`))
	expect(t, "laptop", laptop, readNote(`"#cats"`))
	expect(t, "bob", bob)

	e.ok(anon, "read", `{"channel":"#cats"}`, `null`)
	e.ok(bob, "read", `{"channel":"#nowhere"}`, `null`)
	for name, c := range map[string]*rpctest.Conn{"phone": phone, "laptop": laptop, "bob": bob} {
		expect(t, name+" after reads elsewhere", c)
	}
}

func TestChannelsAreJSONValues(t *testing.T) {
	e := newEnv(t, Config{})
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	e.ok(alice, "join", `{"channel":{"room":1,"tags":["a"]}}`, `{"members":["alice"]}`)
	// An equal value is the same channel; presence repeats bob's spelling.
	e.call(bob, "join", `{"channel":{"tags":["a"],"room":1.0}}`)
	expect(t, "alice", alice, presenceNote(`"bob"`, `{"tags":["a"],"room":1.0}`, "joined"))
	e.call(alice, "send", `{"channel":{"room":10e-1,"tags":["a"]},"body":null}`)
	expect(t, "bob", bob, messageNote(`"alice"`, `{"room":10e-1,"tags":["a"]}`, `null`))
	// Values that differ only in type are different channels.
	e.fails(alice, "send", `{"channel":{"room":"1","tags":["a"]},"body":1}`, "Not joined")
	e.fails(alice, "send", `{"channel":{"room":true,"tags":["a"]},"body":1}`, "Not joined")
	// Disconnect repeats the channel as the leaver joined it.
	e.reg.Disconnect(bob)
	expect(t, "alice after bob's disconnect", alice, presenceNote(`"bob"`, `{"tags":["a"],"room":1.0}`, "left"))
}

func TestDisconnectLeavesEveryChannel(t *testing.T) {
	e := newEnv(t, Config{})
	alice := rpctest.NewConnAs(t, `"alice"`)
	bob := rpctest.NewConnAs(t, `"bob"`)
	for _, ch := range []string{`"a"`, `"b"`, `"c"`} {
		e.call(bob, "join", `{"channel":`+ch+`}`)
	}
	e.call(alice, "join", `{"channel":"a"}`)
	e.call(alice, "join", `{"channel":"b"}`)
	bob.Take()
	e.reg.Disconnect(alice)
	got := rpctest.Msgs(t, bob)
	slices.SortFunc(got, func(a, b rpctest.Msg) int { return strings.Compare(string(a.Raw), string(b.Raw)) })
	expectMsgs(t, "bob", got, presenceNote(`"alice"`, `"a"`, "left"), presenceNote(`"alice"`, `"b"`, "left"))
	e.reg.Disconnect(alice) // a second call is harmless
	e.reg.Disconnect(bob)
	if rooms, conns := e.svc.set.Len(); rooms+conns != 0 {
		t.Fatalf("after all disconnected: got %d channels and %d members, want 0", rooms, conns)
	}
}

func TestTimestamp(t *testing.T) {
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{fixedNow, wantTS},
		{time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "2024-01-02T03:04:05.000Z"},
		{time.Date(2023, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -5*3600)), "2024-01-01T04:59:59.999Z"},
	} {
		s := &Service{now: func() time.Time { return tc.at }}
		got := string(s.appendTimestamp(nil))
		if want := `,"timestamp":"` + tc.want + `"}`; got != want {
			t.Errorf("at %v: got %s, want %s", tc.at, got, want)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{MaxChannels: 1, MaxChannelBytes: 1, MaxBodyBytes: 1}, true},
		{Config{MaxChannels: -1}, false},
		{Config{MaxChannelBytes: -1}, false},
		{Config{MaxBodyBytes: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v): got %v, want ok=%v", tc.cfg, err, tc.ok)
		}
		if _, err := New("chat", tc.cfg); (err == nil) != tc.ok {
			t.Errorf("New(%+v): got %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
	s, _ := New("chat", Config{})
	if s.cfg.MaxChannels != DefaultMaxChannels || s.cfg.MaxChannelBytes != DefaultMaxChannelBytes || s.cfg.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Errorf("defaults: got %+v", s.cfg)
	}
}

func TestServiceNameOnNotifications(t *testing.T) {
	svc, err := New("room service", Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("room service", svc); err != nil {
		t.Fatal(err)
	}
	alice := rpctest.NewConnAs(t, `"alice"`)
	rpctest.Call(t, reg, alice, "room service", "join", `{"channel":1}`)
	r := rpctest.Call(t, reg, alice, "room service", "send", `{"channel":1,"body":2}`)
	if len(r.Before) != 1 || r.Before[0].Service != "room service" {
		t.Fatalf("got %v, want one notification from \"room service\"", r.Before)
	}
}
