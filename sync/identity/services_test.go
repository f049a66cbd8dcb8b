package identity_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/sync/chat"
	"github.com/snorkyhq/snorky/sync/cursors"
	"github.com/snorkyhq/snorky/sync/identity"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
	"github.com/snorkyhq/snorky/sync/token"
)

// TestIdentityWithChatAndCursors wires the services as the server does: a
// frontend registry (identity, chat, cursors) and a backend one
// (identity_backend). A token from the backend gives a connection the
// identity that Chat reports and Cursors uses as owner; revoking it closes
// the connections, and their disconnect leaves the channel.
func TestIdentityWithChatAndCursors(t *testing.T) {
	signer, err := token.New([]byte("wiring-test-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := identity.New(signer, identity.Config{DefaultTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	chatSvc, err := chat.New("chat", chat.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cursorSvc, err := cursors.New("cursors", cursors.Config{})
	if err != nil {
		t.Fatal(err)
	}
	front, back := rpc.NewRegistry(nil), rpc.NewRegistry(nil)
	for name, s := range map[string]rpc.Service{"identity": dir.Frontend(), "chat": chatSvc, "cursors": cursorSvc} {
		if err := front.Register(name, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := back.Register("identity_backend", dir.Backend()); err != nil {
		t.Fatal(err)
	}
	backend := rpctest.NewConn()
	tokenFor := func(identity string) string {
		r := rpctest.Call(t, back, backend, "identity_backend", "authorizeIdentity", `{"identity":`+identity+`}`)
		var tok string
		if err := json.Unmarshal(r.Data(t), &tok); err != nil {
			t.Fatalf("authorizeIdentity: %s", r.Raw)
		}
		return tok
	}

	alice, bob := rpctest.NewConn(), rpctest.NewConn()
	for _, name := range []string{"chat", "cursors"} {
		param := map[string]string{"chat": "channel", "cursors": "document"}[name]
		if got := rpctest.Call(t, front, alice, name, "join", `{"`+param+`":"x"}`).Err(); got != "Not authenticated" {
			t.Fatalf("%s join without identity: got %q, want %q", name, got, "Not authenticated")
		}
	}
	rpctest.Call(t, front, alice, "identity", "authenticate", `{"token":"`+tokenFor(`"alice"`)+`"}`).Data(t)
	if err := dir.AuthenticateToken(bob, tokenFor(`"bob"`)); err != nil { // as from ?token=
		t.Fatal(err)
	}

	rpctest.JSONEqual(t, "alice joins", rpctest.Call(t, front, alice, "chat", "join", `{"channel":"#cats"}`).Data(t), `{"members":["alice"]}`)
	rpctest.Call(t, front, bob, "chat", "join", `{"channel":"#cats"}`).Data(t)
	alice.Take()
	rpctest.Call(t, front, alice, "cursors", "join", `{"document":"doc"}`).Data(t)
	rpctest.Call(t, front, bob, "cursors", "join", `{"document":"doc"}`).Data(t)
	h := rpctest.Call(t, front, alice, "cursors", "createCursor", `{"privateHandle":0,"document":"doc","position":1,"status":null}`).Data(t)
	msgs := rpctest.Msgs(t, bob)
	if len(msgs) != 1 {
		t.Fatalf("bob: got %v, want one cursorAdded", msgs)
	}
	rpctest.JSONEqual(t, "bob's cursorAdded", msgs[0].Raw,
		`{"service":"cursors","message":{"type":"cursorAdded","cursor":{"publicHandle":`+string(h)+`,"document":"doc","position":1,"status":null,"owner":"alice"}}}`)

	r := rpctest.Call(t, back, backend, "identity_backend", "disconnectIdentity", `{"identity":"alice"}`)
	rpctest.JSONEqual(t, "disconnectIdentity", r.Data(t), `1`)
	if closed, code, reason := alice.Closed(); !closed || code != rpc.CloseIdentity || reason != rpc.ReasonIdentityRevoke {
		t.Fatalf("alice: got closed=%v %d %q, want 4001 %q", closed, code, reason, rpc.ReasonIdentityRevoke)
	}
	front.Disconnect(alice) // what the transport does once the socket is gone
	got := rpctest.Msgs(t, bob)
	if len(got) != 2 {
		t.Fatalf("bob after alice was revoked: got %v, want presence left and cursorRemoved", got)
	}
	for _, m := range got {
		switch m.Service + "/" + m.Type() {
		case "chat/presence":
			rpctest.JSONEqual(t, "presence status", m.Message["status"], `"left"`)
			rpctest.JSONEqual(t, "presence from", m.Message["from"], `"alice"`)
		case "cursors/cursorRemoved":
			rpctest.JSONEqual(t, "removed cursor", m.Message["cursor"], `{"publicHandle":`+string(h)+`,"document":"doc"}`)
		default:
			t.Fatalf("bob: unexpected %s", m.Raw)
		}
	}
}
