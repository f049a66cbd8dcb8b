package relay

import (
	"fmt"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/pubsub"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// psNode is one node's PubSub: its service behind a frontend and a
// backend registry, bridged to the cluster.
type psNode struct {
	node        *cluster.Node
	front, back *rpc.Registry
	svc         *pubsub.Service
	stop        func()
}

func newPSNode(t *testing.T, name string, server int, id string) *psNode {
	t.Helper()
	n := &psNode{node: newNode(t, name, server, id), svc: pubsub.New("pubsub", pubsub.Config{Policy: pubsub.DefaultPolicy})}
	n.front, n.back = rpc.NewRegistry(nil), rpc.NewRegistry(nil)
	if err := n.front.Register("pubsub", n.svc); err != nil {
		t.Fatal(err)
	}
	if err := n.back.Register("pubsub_backend", pubsub.NewBackend(n.svc)); err != nil {
		t.Fatal(err)
	}
	stop, err := PubSub(n.svc, n.node, Config{})
	if err != nil {
		t.Fatal(err)
	}
	n.stop = stop
	t.Cleanup(stop)
	return n
}

func (n *psNode) call(t *testing.T, c *rpctest.Conn, command, params string) {
	t.Helper()
	if r := rpctest.Call(t, n.front, c, "pubsub", command, params); r.Err() != "" {
		t.Fatalf("%s %s on %s: got error %q", command, params, n.node.ID, r.Err())
	}
}

// subject returns the NATS subject of the channel (JSON text).
func (n *psNode) subject(t *testing.T, channel string) string {
	t.Helper()
	key, err := jsonval.Canonical([]byte(channel))
	if err != nil {
		t.Fatal(err)
	}
	return n.node.Prefix + ".pubsub." + channelToken(key)
}

// TestPubSubAcrossNodes: publishes on A, by a client and by the backend,
// on two channels, reach a subscriber on B once each, in the publisher's
// order across both channels, and A's own subscriber once (its echo from
// NATS is dropped); a publish on B reaches A.
func TestPubSubAcrossNodes(t *testing.T) {
	name := clusterName(t)
	a, b := newPSNode(t, name, 0, "A"), newPSNode(t, name, 1, "B")
	subA, subB := &collector{c: rpctest.NewConn()}, &collector{c: rpctest.NewConn()}
	a.call(t, subA.c, "subscribe", `{"channel":"news"}`)
	b.call(t, subB.c, "subscribe", `{"channel":"news"}`)
	b.call(t, subB.c, "subscribe", `{"channel":{"room":1}}`)
	// Each server knows a local and a routed subscription to "news".
	eventually(t, 5*time.Second, "interest in news on both servers", func() bool {
		return interest(0, a.subject(t, `"news"`)) == 2 && interest(1, a.subject(t, `"news"`)) == 2 &&
			interest(0, a.subject(t, `{"room":1}`)) == 1
	})

	const n = 1000
	publisher, backend := rpctest.NewConn(), rpctest.NewConn()
	for i := range n {
		channel := `"news"`
		if i%2 == 1 {
			channel = `{"room":1}`
		}
		params := fmt.Sprintf(`{"channel":%s,"message":{"n":%d}}`, channel, i)
		if i%10 == 0 {
			if r := rpctest.Call(t, a.back, backend, "pubsub_backend", "publish", params); r.Err() != "" {
				t.Fatalf("backend publish: %s", r.Err())
			}
		} else {
			a.call(t, publisher, "publish", params)
		}
	}
	// A last publish on news: anything duplicated would come before it.
	a.call(t, publisher, "publish", `{"channel":"news","message":"end"}`)

	frames := subB.waitFrames(t, n+1)
	for i, f := range frames[:n] {
		_, msg := messageText(t, f)
		if want := fmt.Sprintf(`{"n":%d}`, i); msg != want {
			t.Fatalf("B's frame %d: got %s, want %s (order or duplicate)", i, msg, want)
		}
	}
	rpctest.JSONEqual(t, "B's last frame", frames[n], `{"service":"pubsub","message":{"type":"message","channel":"news","message":"end"}}`)
	rpctest.JSONEqual(t, "B's frame 1", frames[1], `{"service":"pubsub","message":{"type":"message","channel":{"room":1},"message":{"n":1}}}`)

	// B publishes; once A has it, A's own publishes have come back from
	// NATS long before (same server, earlier): none was delivered twice.
	b.call(t, rpctest.NewConn(), "publish", `{"channel":"news","message":"from B"}`)
	framesA := subA.waitFrames(t, n/2+2)
	if len(framesA) != n/2+2 {
		t.Fatalf("A's subscriber: got %d frames, want %d", len(framesA), n/2+2)
	}
	for i, f := range framesA[:n/2] {
		_, msg := messageText(t, f)
		if want := fmt.Sprintf(`{"n":%d}`, 2*i); msg != want {
			t.Fatalf("A's frame %d: got %s, want %s", i, msg, want)
		}
	}
	if _, msg := messageText(t, framesA[n/2+1]); msg != `"from B"` {
		t.Fatalf("A's last frame: got %s, want \"from B\"", msg)
	}
	if got := subB.take(); len(got) != n+2 {
		t.Fatalf("B's subscriber: got %d frames, want %d", len(got), n+2)
	}
}

// TestPubSubInterest: a node subscribes on NATS only to the channels its
// connections hold, from the first subscriber to the last (unsubscribe
// and disconnect), and receives nothing of the others.
func TestPubSubInterest(t *testing.T) {
	name := clusterName(t)
	a, b := newPSNode(t, name, 0, "A"), newPSNode(t, name, 1, "B")
	quiet, ping := a.subject(t, `"quiet"`), a.subject(t, `"ping"`)

	subA, subB := &collector{c: rpctest.NewConn()}, &collector{c: rpctest.NewConn()}
	a.call(t, subA.c, "subscribe", `{"channel":"quiet"}`)
	b.call(t, subB.c, "subscribe", `{"channel":"ping"}`)
	eventually(t, 5*time.Second, "interest in ping on A's server", func() bool { return interest(0, ping) == 1 })
	eventually(t, 5*time.Second, "interest in quiet on B's server", func() bool { return interest(1, quiet) == 1 })
	// Only A's subscription: none from B.
	if got := interest(0, quiet); got != 1 {
		t.Fatalf("interest in quiet on A's server: got %d, want 1 (A's own)", got)
	}

	before := b.node.NC.Stats().InMsgs
	publisher := rpctest.NewConn()
	for i := range 100 {
		a.call(t, publisher, "publish", fmt.Sprintf(`{"channel":"quiet","message":%d}`, i))
	}
	a.call(t, publisher, "publish", `{"channel":"ping","message":"last"}`)
	subB.waitFrames(t, 1)
	if got := b.node.NC.Stats().InMsgs - before; got != 1 {
		t.Fatalf("B's NATS connection received %d messages, want 1 (ping only)", got)
	}
	if got := len(subA.waitFrames(t, 100)); got != 100 {
		t.Fatalf("A's subscriber: got %d frames, want 100", got)
	}

	// A second subscriber on B: B subscribes; the last one leaving, by
	// unsubscribe or disconnect, ends B's interest.
	c1, c2 := rpctest.NewConn(), rpctest.NewConn()
	b.call(t, c1, "subscribe", `{"channel":"quiet"}`)
	b.call(t, c2, "subscribe", `{"channel":"quiet"}`)
	eventually(t, 5*time.Second, "B's interest in quiet on A's server", func() bool { return interest(0, quiet) == 2 })
	b.call(t, c1, "unsubscribe", `{"channel":"quiet"}`)
	b.front.Disconnect(c2)
	eventually(t, 5*time.Second, "B's interest in quiet gone from A's server", func() bool { return interest(0, quiet) == 1 })
	b.front.Disconnect(subB.c)
	eventually(t, 5*time.Second, "B's interest in ping gone", func() bool { return interest(0, ping) == 0 && interest(1, ping) == 0 })
}

// TestPubSubWithoutNATS: with the node's NATS connection closed, a
// publish is still delivered locally and answered.
func TestPubSubWithoutNATS(t *testing.T) {
	a := newPSNode(t, clusterName(t), 0, "A")
	sub := &collector{c: rpctest.NewConn()}
	a.call(t, sub.c, "subscribe", `{"channel":"news"}`)
	a.node.NC.Close()
	publisher := rpctest.NewConn()
	for i := range 3 {
		a.call(t, publisher, "publish", fmt.Sprintf(`{"channel":"news","message":%d}`, i))
	}
	if got := len(sub.take()); got != 3 {
		t.Fatalf("local subscriber: got %d frames, want 3", got)
	}
	a.call(t, rpctest.NewConn(), "subscribe", `{"channel":"other"}`)
	a.stop()
}
