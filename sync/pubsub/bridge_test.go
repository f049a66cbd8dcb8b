package pubsub_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/pubsub"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// fakeBridge records the calls of a pubsub.Bridge.
type fakeBridge struct {
	mu     sync.Mutex
	events []string
}

func (b *fakeBridge) Interest(key string, subscribed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, fmt.Sprintf("interest %s %v", key, subscribed))
}

func (b *fakeBridge) Published(key string, ch, message json.RawMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, fmt.Sprintf("published %s %s %s", key, ch, message))
}

func (b *fakeBridge) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.events
	b.events = nil
	return e
}

// TestBridge: the bridge hears of a channel's first and last subscriber
// on this node and of every publish made here (not of Deliver's).
func TestBridge(t *testing.T) {
	svc := pubsub.New("pubsub", pubsub.Config{Policy: pubsub.DefaultPolicy})
	bridge := &fakeBridge{}
	svc.SetBridge(bridge)
	front, back := rpc.NewRegistry(nil), rpc.NewRegistry(nil)
	if err := front.Register("pubsub", svc); err != nil {
		t.Fatal(err)
	}
	if err := back.Register("pubsub_backend", pubsub.NewBackend(svc)); err != nil {
		t.Fatal(err)
	}
	a, b := rpctest.NewConn(), rpctest.NewConn()
	obj, err := jsonval.Canonical([]byte(`{"a":2,"b":1}`))
	if err != nil {
		t.Fatal(err)
	}
	y, err := jsonval.Canonical([]byte(`"y"`))
	if err != nil {
		t.Fatal(err)
	}
	x, err := jsonval.Canonical([]byte(`"x"`))
	if err != nil {
		t.Fatal(err)
	}
	expect := func(what string, want ...string) {
		t.Helper()
		if got := bridge.take(); !slices.Equal(got, want) {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
	}

	ok(t, front, a, "subscribe", `{"channel":{"b":1,"a":2}}`)
	expect("first subscriber", "interest "+obj+" true")
	ok(t, front, b, "subscribe", `{"channel":{"a":2,"b":1}}`)
	fails(t, front, b, "subscribe", `{"channel":{"a":2,"b":1}}`, "Already subscribed")
	expect("second subscriber")
	ok(t, front, a, "unsubscribe", `{"channel":{"a":2,"b":1}}`)
	expect("one left")

	ok(t, front, a, "publish", `{"channel":{"b":1, "a":2},"message":"m"}`)
	expect("client publish", "published "+obj+` {"b":1, "a":2} "m"`)
	one(t, b, `{"service":"pubsub","message":{"type":"message","channel":{"b":1,"a":2},"message":"m"}}`)
	if r := rpctest.Call(t, back, rpctest.NewConn(), "pubsub_backend", "publish", `{"channel":"x","message":1}`); r.Err() != "" {
		t.Fatal(r.Err())
	}
	expect("backend publish", "published "+x+` "x" 1`)

	// A publish from another node: delivered here, not sent back.
	if err := svc.Deliver([]byte(`{"a":2,"b":1}`), []byte(`"remote"`)); err != nil {
		t.Fatal(err)
	}
	one(t, b, `{"service":"pubsub","message":{"type":"message","channel":{"a":2,"b":1},"message":"remote"}}`)
	expect("Deliver")
	if err := svc.Deliver([]byte(`{`), []byte(`1`)); err == nil {
		t.Fatal("Deliver of invalid JSON: got no error")
	}

	ok(t, front, a, "subscribe", `{"channel":"y"}`)
	expect("first subscriber of y", "interest "+y+" true")
	front.Disconnect(b)
	expect("last subscriber gone", "interest "+obj+" false")
	front.Disconnect(a)
	expect("disconnect", "interest "+y+" false")
}
