package messaging_test

import (
	"testing"

	"github.com/snorkyhq/snorky/sync/messaging"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestMessaging: names, listing, sending and the errors of spec §2.2,
// driven through the registry as a transport would.
func TestMessaging(t *testing.T) {
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("messaging", messaging.New("messaging", messaging.Config{})); err != nil {
		t.Fatal(err)
	}
	alice, bob := rpctest.NewConn(), rpctest.NewConn()
	call := func(c *rpctest.Conn, command, params string) rpctest.Reply {
		t.Helper()
		return rpctest.Call(t, reg, c, "messaging", command, params)
	}
	ok := func(c *rpctest.Conn, command, params string) rpctest.Reply {
		t.Helper()
		r := call(c, command, params)
		if r.Err() != "" {
			t.Fatalf("%s %s: got error %q, want a response", command, params, r.Err())
		}
		return r
	}
	fails := func(c *rpctest.Conn, command, params, want string) {
		t.Helper()
		if got := call(c, command, params).Err(); got != want {
			t.Fatalf("%s %s: got error %q, want %q", command, params, got, want)
		}
	}
	ok(alice, "registerParticipant", `{"name":"Alice"}`)
	ok(alice, "registerParticipant", `{"name":"Al"}`)
	fails(alice, "registerParticipant", `{"name":"Alice"}`, "Name already registered")
	fails(bob, "registerParticipant", `{"name":"Alice"}`, "Name already registered")
	ok(bob, "registerParticipant", `{"name":"Bob"}`)

	rpctest.JSONEqual(t, "listParticipants", ok(bob, "listParticipants", `{}`).Data(t), `["Al","Alice","Bob"]`)
	fails(bob, "unregisterParticipant", `{"name":"Nobody"}`, "Unknown participant")
	fails(bob, "unregisterParticipant", `{"name":"Alice"}`, "Invalid participant")
	fails(bob, "send", `{"sender":"Alice","dest":"Bob","body":"x"}`, "Invalid sender")
	fails(bob, "send", `{"sender":"Nobody","dest":"Bob","body":"x"}`, "Invalid sender")
	fails(bob, "send", `{"sender":"Bob","dest":"Nobody","body":"x"}`, "Unknown destination")

	ok(bob, "send", `{"sender":"Bob","dest":"Alice","body":"Hi, Alice."}`)
	got := alice.Take()
	if len(got) != 1 {
		t.Fatalf("Alice got %d frames %q, want the message", len(got), got)
	}
	rpctest.JSONEqual(t, "message", got[0], `{"service":"messaging","message":{"type":"message","sender":"Bob","dest":"Alice","body":"Hi, Alice."}}`)

	// To oneself: the notification, then the response.
	r := ok(alice, "send", `{"sender":"Al","dest":"Alice","body":{"k":1}}`)
	if len(r.Before) != 1 {
		t.Fatalf("send to oneself: got %d frames before the response, want the message", len(r.Before))
	}
	rpctest.JSONEqual(t, "message to oneself", r.Before[0].Raw, `{"service":"messaging","message":{"type":"message","sender":"Al","dest":"Alice","body":{"k":1}}}`)

	ok(alice, "unregisterParticipant", `{"name":"Al"}`)
	fails(bob, "send", `{"sender":"Bob","dest":"Al","body":"x"}`, "Unknown destination")
	fails(alice, "listParticipants", `{"x":1}`, "Invalid params")

	// Disconnect frees every name, at once.
	reg.Disconnect(alice)
	rpctest.JSONEqual(t, "after Alice left", ok(bob, "listParticipants", `{}`).Data(t), `["Bob"]`)
	ok(bob, "registerParticipant", `{"name":"Alice"}`)
	if frames := alice.Take(); len(frames) != 0 {
		t.Fatalf("a disconnected connection got %q", frames)
	}
}
