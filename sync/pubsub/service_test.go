package pubsub_test

import (
	"testing"

	"github.com/snorkyhq/snorky/sync/pubsub"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// newRegistries registers the service as "pubsub" on a frontend registry
// and its backend as "pubsub_backend" on a backend registry.
func newRegistries(t *testing.T, policy pubsub.Policy) (front, back *rpc.Registry) {
	t.Helper()
	svc := pubsub.New("pubsub", pubsub.Config{Policy: policy})
	front, back = rpc.NewRegistry(nil), rpc.NewRegistry(nil)
	if err := front.Register("pubsub", svc); err != nil {
		t.Fatal(err)
	}
	if err := back.Register("pubsub_backend", pubsub.NewBackend(svc)); err != nil {
		t.Fatal(err)
	}
	return front, back
}

// ok fails unless the call succeeds and returns the reply.
func ok(t *testing.T, reg *rpc.Registry, c *rpctest.Conn, command, params string) rpctest.Reply {
	t.Helper()
	r := rpctest.Call(t, reg, c, "pubsub", command, params)
	if r.Err() != "" {
		t.Fatalf("%s %s: got error %q, want a response", command, params, r.Err())
	}
	return r
}

// fails fails unless the call answers the error want.
func fails(t *testing.T, reg *rpc.Registry, c *rpctest.Conn, command, params, want string) {
	t.Helper()
	if got := rpctest.Call(t, reg, c, "pubsub", command, params).Err(); got != want {
		t.Fatalf("%s %s: got error %q, want %q", command, params, got, want)
	}
}

// one takes c's queued frames and fails unless there is exactly one, equal
// (as JSON) to want.
func one(t *testing.T, c *rpctest.Conn, want string) {
	t.Helper()
	frames := c.Take()
	if len(frames) != 1 {
		t.Fatalf("got %d frames %q, want one: %s", len(frames), frames, want)
	}
	rpctest.JSONEqual(t, "notification", frames[0], want)
}

// none fails if anything is queued on c. Delivery is synchronous: a
// publish has queued its notifications when its call returns.
func none(t *testing.T, c *rpctest.Conn) {
	t.Helper()
	if frames := c.Take(); len(frames) != 0 {
		t.Fatalf("got %q, want nothing", frames)
	}
}

func TestPubSubCommands(t *testing.T) {
	front, back := newRegistries(t, pubsub.DefaultPolicy)
	a, b := rpctest.NewConn(), rpctest.NewConn()

	rpctest.JSONEqual(t, "subscribe data", ok(t, front, a, "subscribe", `{"channel":"news"}`).Data(t), `null`)
	fails(t, front, a, "subscribe", `{"channel":"news"}`, "Already subscribed")
	fails(t, front, b, "unsubscribe", `{"channel":"news"}`, "Not subscribed")

	// A publisher that is not subscribed; a subscriber receives the
	// channel as given and the message.
	ok(t, front, b, "publish", `{"channel":"news","message":{"text":"hello"}}`)
	one(t, a, `{"service":"pubsub","message":{"type":"message","channel":"news","message":{"text":"hello"}}}`)

	// The publisher, subscribed, gets its notification before the response.
	r := ok(t, front, a, "publish", `{"channel":"news","message":"self"}`)
	if len(r.Before) != 1 {
		t.Fatalf("self-publish: got %d frames before the response, want the notification", len(r.Before))
	}
	rpctest.JSONEqual(t, "self notification", r.Before[0].Raw, `{"service":"pubsub","message":{"type":"message","channel":"news","message":"self"}}`)

	// Publishing to a channel without subscribers succeeds.
	ok(t, front, b, "publish", `{"channel":"nobody","message":1}`)

	// Any JSON value is a channel; equal values are one channel (1 == 1.0).
	ok(t, front, a, "subscribe", `{"channel":{"room":1,"tags":["x"]}}`)
	ok(t, front, b, "publish", `{"channel":{"tags":["x"],"room":1.0},"message":"obj"}`)
	one(t, a, `{"service":"pubsub","message":{"type":"message","channel":{"tags":["x"],"room":1.0},"message":"obj"}}`)

	// The backend publishes to the same channels, with any JSON channel (D2).
	backend := rpctest.NewConn()
	if r := rpctest.Call(t, back, backend, "pubsub_backend", "publish", `{"channel":{"room":1,"tags":["x"]},"message":"from backend"}`); r.Err() != "" {
		t.Fatalf("backend publish: %s", r.Err())
	}
	one(t, a, `{"service":"pubsub","message":{"type":"message","channel":{"room":1,"tags":["x"]},"message":"from backend"}}`)

	ok(t, front, a, "unsubscribe", `{"channel":"news"}`)
	ok(t, front, b, "publish", `{"channel":"news","message":"after"}`)
	none(t, a)

	// Invalid params.
	fails(t, front, a, "subscribe", `{}`, "Invalid params")
	fails(t, front, a, "subscribe", `{"channel":"x","extra":1}`, "Invalid params")
	fails(t, front, a, "publish", `{"channel":"x"}`, "Invalid params")
	fails(t, front, a, "nope", `{}`, "Unknown command")
}

func TestPubSubDisconnectUnsubscribes(t *testing.T) {
	front, _ := newRegistries(t, pubsub.DefaultPolicy)
	a, b := rpctest.NewConn(), rpctest.NewConn()
	ok(t, front, a, "subscribe", `{"channel":"c"}`)
	front.Disconnect(a)
	if front.Holds(a) {
		t.Fatal("the registry still holds a disconnected subscriber")
	}
	ok(t, front, b, "subscribe", `{"channel":"c"}`)
	r := ok(t, front, b, "publish", `{"channel":"c","message":"m"}`)
	if len(r.Before) != 1 || r.Before[0].Type() != "message" {
		t.Fatalf("got %v before the response, want the notification", r.Before)
	}
	none(t, a)
}

func TestPubSubPublishPolicy(t *testing.T) {
	front, back := newRegistries(t, pubsub.Policy{ClientPublish: true, AllowPrefixes: []string{"public."}, DenyPrefixes: []string{"public.admin"}})
	c := rpctest.NewConn()
	ok(t, front, c, "publish", `{"channel":"public.news","message":1}`)
	fails(t, front, c, "publish", `{"channel":"private","message":1}`, "Not authorized")
	fails(t, front, c, "publish", `{"channel":"public.admin.x","message":1}`, "Not authorized")
	fails(t, front, c, "publish", `{"channel":7,"message":1}`, "Not authorized")
	// The backend bypasses the policy.
	if r := rpctest.Call(t, back, rpctest.NewConn(), "pubsub_backend", "publish", `{"channel":"private","message":1}`); r.Err() != "" {
		t.Fatalf("backend publish: %s", r.Err())
	}

	front2, _ := newRegistries(t, pubsub.Policy{ClientPublish: false})
	c2 := rpctest.NewConn()
	fails(t, front2, c2, "publish", `{"channel":"any","message":1}`, "Not authorized")
	ok(t, front2, c2, "subscribe", `{"channel":"any"}`)
}

// TestPolicyAllows: the policy table, string channels only for prefixes.
func TestPolicyAllows(t *testing.T) {
	p := pubsub.Policy{ClientPublish: true, AllowPrefixes: []string{"public."}, DenyPrefixes: []string{"public.admin"}}
	for _, tc := range []struct {
		policy  pubsub.Policy
		channel string
		want    bool
	}{
		{pubsub.DefaultPolicy, `"x"`, true},
		{pubsub.DefaultPolicy, `{"room":1}`, true},
		{pubsub.Policy{}, `"x"`, false},
		{p, `"public.news"`, true},
		{p, `"public.admin"`, false},
		{p, `"public.administrators"`, false},
		{p, `"private"`, false},
		{p, `["public.x"]`, false},
		{pubsub.Policy{ClientPublish: true, DenyPrefixes: []string{"sys."}}, `"sys.x"`, false},
		{pubsub.Policy{ClientPublish: true, DenyPrefixes: []string{"sys."}}, `"app.x"`, true},
		{pubsub.Policy{ClientPublish: true, DenyPrefixes: []string{"sys."}}, `7`, true},
	} {
		if got := tc.policy.Allows([]byte(tc.channel)); got != tc.want {
			t.Errorf("%+v.Allows(%s): got %v, want %v", tc.policy, tc.channel, got, tc.want)
		}
	}
}
