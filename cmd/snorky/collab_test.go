package main

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func identityToken(t testing.TB, s *server, identity any) string {
	t.Helper()
	var tok string
	if err := json.Unmarshal(backendOK(t, s, "identity_backend", "authorizeIdentity", map[string]any{"identity": identity}), &tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

func dialToken(t testing.TB, s *server, tok string) *wsClient {
	t.Helper()
	return dialURL(t, s.frontendURL()+"?token="+url.QueryEscape(tok), nil)
}

// TestIdentityChatOverWebSocket: identity from the URL token and from
// authenticate, chat presence across two devices of one identity, and
// disconnectIdentity closing with 4001.
func TestIdentityChatOverWebSocket(t *testing.T) {
	s := startServer(t, "")
	alice1 := dialToken(t, s, identityToken(t, s, "alice"))
	alice2 := dialToken(t, s, identityToken(t, s, "alice"))
	bob := dial(t, s, nil)
	bob.fails("chat", "join", map[string]any{"channel": "#cats"}, "Not authenticated")
	if got := bob.ok("identity", "authenticate", map[string]any{"token": identityToken(t, s, "bob")}); got != "bob" {
		t.Fatalf("authenticate: got %v, want bob", got)
	}
	bob.fails("identity", "authenticate", map[string]any{"token": identityToken(t, s, "bob")}, "Identity already set")

	bob.ok("chat", "join", map[string]any{"channel": "#cats"})
	alice1.ok("chat", "join", map[string]any{"channel": "#cats"})
	if m := bob.next()["message"].(map[string]any); m["type"] != "presence" || m["from"] != "alice" || m["status"] != "joined" {
		t.Fatalf("bob: got %v, want alice joined", m)
	}
	// Alice's second device: no new presence for bob.
	alice2.ok("chat", "join", map[string]any{"channel": "#cats"})
	alice2.ok("chat", "send", map[string]any{"channel": "#cats", "body": "meow"})
	for _, c := range []*wsClient{bob, alice1, alice2} {
		m := c.next()["message"].(map[string]any)
		if m["type"] != "message" || m["from"] != "alice" || m["body"] != "meow" || !strings.HasSuffix(m["timestamp"].(string), "Z") {
			t.Fatalf("got %v, want alice's message", m)
		}
	}
	// Logout: both of alice's devices are closed with 4001.
	var n int
	json.Unmarshal(backendOK(t, s, "identity_backend", "disconnectIdentity", map[string]any{"identity": "alice"}), &n)
	if n != 2 {
		t.Fatalf("disconnectIdentity: got %d, want 2", n)
	}
	for _, c := range []*wsClient{alice1, alice2} {
		var ce *websocket.CloseError
		if err := c.waitClose(); !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "identity revoked" {
			t.Fatalf("got %v, want close 4001 identity revoked", err)
		}
	}
	// Her last connection has gone: bob sees her leave.
	if m := bob.next()["message"].(map[string]any); m["type"] != "presence" || m["status"] != "left" {
		t.Fatalf("bob: got %v, want alice left", m)
	}
}
