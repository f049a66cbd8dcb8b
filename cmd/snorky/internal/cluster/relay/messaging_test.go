package relay

import (
	"fmt"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/messaging"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// A short TTL, so that a dead node's names go within the test.
var testNames = Config{NameTTL: time.Second, NameRefresh: 200 * time.Millisecond}

// msgNode is one node's Messaging service behind a registry, bridged.
type msgNode struct {
	node *cluster.Node
	reg  *rpc.Registry
	stop func()
}

func newMsgNode(t *testing.T, name string, server int, id string, cfg messaging.Config) *msgNode {
	t.Helper()
	n := &msgNode{node: newNode(t, name, server, id), reg: rpc.NewRegistry(nil)}
	svc := messaging.New("messaging", cfg)
	if err := n.reg.Register("messaging", svc); err != nil {
		t.Fatal(err)
	}
	stop, err := Messaging(svc, n.node, testNames)
	if err != nil {
		t.Fatal(err)
	}
	n.stop = stop
	t.Cleanup(stop)
	return n
}

func (n *msgNode) call(t *testing.T, c *rpctest.Conn, command, params string) rpctest.Reply {
	t.Helper()
	return rpctest.Call(t, n.reg, c, "messaging", command, params)
}

func (n *msgNode) ok(t *testing.T, c *rpctest.Conn, command, params string) rpctest.Reply {
	t.Helper()
	r := n.call(t, c, command, params)
	if r.Err() != "" {
		t.Fatalf("%s %s on %s: got error %q, want a response", command, params, n.node.ID, r.Err())
	}
	return r
}

func (n *msgNode) fails(t *testing.T, c *rpctest.Conn, command, params, want string) {
	t.Helper()
	if got := n.call(t, c, command, params).Err(); got != want {
		t.Fatalf("%s %s on %s: got error %q, want %q", command, params, n.node.ID, got, want)
	}
}

// list returns listParticipants on n as JSON text.
func (n *msgNode) list(t *testing.T, params string) string {
	t.Helper()
	return string(n.ok(t, rpctest.NewConn(), "listParticipants", params).Data(t))
}

// TestMessagingAcrossNodes: a name is unique in the cluster, messages
// reach names on other nodes, listing is the cluster's, and unregister and
// disconnect free a name for the other nodes.
func TestMessagingAcrossNodes(t *testing.T) {
	name := clusterName(t)
	a := newMsgNode(t, name, 0, "A", messaging.Config{})
	b := newMsgNode(t, name, 1, "B", messaging.Config{MaxListed: 2})
	waitKnown(t, a.node.Prefix+".msg.A", b.node.Prefix+".msg.B")
	alice, bob := rpctest.NewConn(), rpctest.NewConn()

	a.ok(t, alice, "registerParticipant", `{"name":"Alice"}`)
	b.fails(t, bob, "registerParticipant", `{"name":"Alice"}`, "Name already registered")
	a.fails(t, rpctest.NewConn(), "registerParticipant", `{"name":"Alice"}`, "Name already registered")
	b.ok(t, bob, "registerParticipant", `{"name":"Bob"}`)
	b.ok(t, bob, "registerParticipant", `{"name":"Bobby"}`)
	b.ok(t, rpctest.NewConn(), "registerParticipant", `{"name":""}`)

	rpctest.JSONEqual(t, "list on A", []byte(a.list(t, `{}`)), `["","Alice","Bob","Bobby"]`)
	rpctest.JSONEqual(t, "list on B, first page", []byte(b.list(t, `{}`)), `["","Alice"]`)
	rpctest.JSONEqual(t, "list on B after Alice", []byte(b.list(t, `{"after":"Alice"}`)), `["Bob","Bobby"]`)

	// B to A and back; the notification is queued before the response.
	b.ok(t, bob, "send", `{"sender":"Bob","dest":"Alice","body":{"text":"Hi, Alice."}}`)
	got := alice.Take()
	if len(got) != 1 {
		t.Fatalf("Alice got %d frames %q, want the message", len(got), got)
	}
	rpctest.JSONEqual(t, "message to Alice", got[0], `{"service":"messaging","message":{"type":"message","sender":"Bob","dest":"Alice","body":{"text":"Hi, Alice."}}}`)
	a.ok(t, alice, "send", `{"sender":"Alice","dest":"Bobby","body":"Hi."}`)
	got = bob.Take()
	if len(got) != 1 {
		t.Fatalf("Bob got %d frames %q, want the message", len(got), got)
	}
	rpctest.JSONEqual(t, "message to Bobby", got[0], `{"service":"messaging","message":{"type":"message","sender":"Alice","dest":"Bobby","body":"Hi."}}`)

	// The single-node errors.
	b.fails(t, bob, "send", `{"sender":"Bob","dest":"Nobody","body":1}`, "Unknown destination")
	b.fails(t, bob, "send", `{"sender":"Alice","dest":"Bob","body":1}`, "Invalid sender")
	b.fails(t, bob, "unregisterParticipant", `{"name":"Alice"}`, "Unknown participant")

	// Many messages from one sender arrive in order.
	for i := range 50 {
		b.ok(t, bob, "send", fmt.Sprintf(`{"sender":"Bob","dest":"Alice","body":%d}`, i))
	}
	got = alice.Take()
	if len(got) != 50 {
		t.Fatalf("Alice got %d messages, want 50", len(got))
	}
	for i, f := range got {
		rpctest.JSONEqual(t, fmt.Sprintf("message %d", i), f, fmt.Sprintf(`{"service":"messaging","message":{"type":"message","sender":"Bob","dest":"Alice","body":%d}}`, i))
	}

	// Unregister on A frees the name for B.
	a.ok(t, alice, "unregisterParticipant", `{"name":"Alice"}`)
	b.fails(t, bob, "send", `{"sender":"Bob","dest":"Alice","body":1}`, "Unknown destination")
	eventually(t, 5*time.Second, "B registers Alice once A released it", func() bool {
		return b.call(t, bob, "registerParticipant", `{"name":"Alice"}`).Err() == ""
	})
	a.fails(t, rpctest.NewConn(), "registerParticipant", `{"name":"Alice"}`, "Name already registered")

	// Disconnect on B frees every name of the connection.
	b.reg.Disconnect(bob)
	carol := rpctest.NewConn()
	eventually(t, 5*time.Second, "A registers Bob once B's connection went", func() bool {
		return a.call(t, carol, "registerParticipant", `{"name":"Bob"}`).Err() == ""
	})
	eventually(t, 5*time.Second, "A registers Alice once B's connection went", func() bool {
		return a.call(t, carol, "registerParticipant", `{"name":"Alice"}`).Err() == ""
	})
	rpctest.JSONEqual(t, "list on A at the end", []byte(a.list(t, `{}`)), `["","Alice","Bob"]`)
}

// TestMessagingNodeDies: the names of a node that dies without cleaning
// up expire after the TTL, while a live node's names, refreshed, stay.
func TestMessagingNodeDies(t *testing.T) {
	name := clusterName(t)
	a := newMsgNode(t, name, 0, "A", messaging.Config{})
	c := newMsgNode(t, name, 1, "C", messaging.Config{})
	waitKnown(t, a.node.Prefix+".msg.A", c.node.Prefix+".msg.C")
	alice, carol := rpctest.NewConn(), rpctest.NewConn()
	a.ok(t, alice, "registerParticipant", `{"name":"Alice"}`)
	registered := time.Now()
	c.ok(t, carol, "registerParticipant", `{"name":"Carol"}`)
	rpctest.JSONEqual(t, "list on A", []byte(a.list(t, `{}`)), `["Alice","Carol"]`)

	// C dies: its connection to NATS goes first, so stop cleans nothing.
	c.node.NC.Close()
	c.stop()
	// Its name is still listed until it expires, but once the servers
	// know C is gone nobody answers for it. (Before, a request may time
	// out: "Internal error".)
	eventually(t, 5*time.Second, "C's subscription gone", func() bool {
		return interest(0, c.node.Prefix+".msg.C") == 0 && interest(1, c.node.Prefix+".msg.C") == 0
	})
	a.fails(t, alice, "send", `{"sender":"Alice","dest":"Carol","body":1}`, "Unknown destination")
	a.fails(t, rpctest.NewConn(), "registerParticipant", `{"name":"Carol"}`, "Name already registered")
	eventually(t, 10*time.Second, "Carol expires", func() bool { return a.list(t, `{}`) == `["Alice"]` })
	if age := time.Since(registered); age <= testNames.NameTTL {
		t.Fatalf("Carol expired %s after Alice's registration, want more than the TTL %s", age, testNames.NameTTL)
	}
	// Alice, older than the TTL, is still registered: refreshed.
	a.ok(t, rpctest.NewConn(), "registerParticipant", `{"name":"Carol"}`)
	other := newMsgNode(t, name, 1, "D", messaging.Config{})
	other.fails(t, rpctest.NewConn(), "registerParticipant", `{"name":"Alice"}`, "Name already registered")
	rpctest.JSONEqual(t, "list on D", []byte(other.list(t, `{}`)), `["Alice","Carol"]`)
}
