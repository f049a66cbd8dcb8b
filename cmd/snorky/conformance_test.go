package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestConformanceSmoke checks that the binary wires every service and
// setting to its wire name and key: each service answers over the real
// listeners, and the settings reach the transports. What each package
// does is tested in that package (sync/pubsub, sync/messaging,
// sync/datasync, sync/rpc, wsapi, backendapi).
func TestConformanceSmoke(t *testing.T) {
	s := startServer(t, dataSyncConfig+`
frontend: {listen: "127.0.0.1:0", path: /ws, max_message_bytes: 1KiB, allowed_origins: ["https://app.example.com"]}
pubsub: {client_publish: ["public."], client_publish_deny: ["public.admin"]}`)
	a, b := dial(t, s, nil), dial(t, s, http.Header{"Origin": {"https://app.example.com"}})

	t.Run("pubsub", func(t *testing.T) {
		a.t, b.t = t, t
		a.ok("pubsub", "subscribe", map[string]any{"channel": "public.news"})
		b.ok("pubsub", "publish", map[string]any{"channel": "public.news", "message": "hi"})
		if m := a.next()["message"].(map[string]any); m["type"] != "message" || m["message"] != "hi" {
			t.Fatalf("got %v, want the message", m)
		}
		// pubsub.client_publish and client_publish_deny reach the policy;
		// the backend bypasses it.
		b.fails("pubsub", "publish", map[string]any{"channel": "private", "message": 1}, "Not authorized")
		b.fails("pubsub", "publish", map[string]any{"channel": "public.admin.x", "message": 1}, "Not authorized")
		backendOK(t, s, "pubsub_backend", "publish", map[string]any{"channel": "public.news", "message": "from backend"})
		if m := a.next()["message"].(map[string]any); m["message"] != "from backend" {
			t.Fatalf("backend publish: got %v", m)
		}
	})
	t.Run("messaging", func(t *testing.T) {
		a.t, b.t = t, t
		a.ok("messaging", "registerParticipant", map[string]any{"name": "Alice"})
		b.ok("messaging", "registerParticipant", map[string]any{"name": "Bob"})
		b.ok("messaging", "send", map[string]any{"sender": "Bob", "dest": "Alice", "body": "Hi"})
		if m := a.next()["message"].(map[string]any); m["type"] != "message" || m["body"] != "Hi" {
			t.Fatalf("got %v, want Bob's message", m)
		}
	})
	t.Run("datasync", func(t *testing.T) {
		a.t = t
		a.ok("datasync", "acquireSubscription", map[string]any{"token": authorize(t, s, `[{"dealer":"TasksByColor","query":"red"}]`)})
		publishDeltas(t, s, `[{"type":"insert","model":"Task","data":{"id":1,"color":"blue"}},{"type":"insert","model":"Task","data":{"id":2,"color":"red"}}]`)
		if d := a.delta(); fmt.Sprint(d["data"]) != "map[color:red id:2]" || !offsetRE.MatchString(fmt.Sprint(d["offset"])) {
			t.Fatalf("got %v, want the red row with an offset", d)
		}
	})
	t.Run("envelope", func(t *testing.T) {
		a.t = t
		a.call("pubsub", "publish", map[string]any{"channel": "public.x", "message": 1}, `{"k":[1]}`)
		if raw := a.nextRaw(); !strings.Contains(raw, `"callId":{"k":[1]},`) {
			t.Fatalf("response %s does not echo the callId", raw)
		}
		a.sendRaw(`{"service":"pubsubb","message":{}}`)
		if m := a.next()["message"].(map[string]any); m["type"] != "error" || m["message"] != "Unknown service 'pubsubb'" {
			t.Fatalf("got %v, want Unknown service", m)
		}
	})
	t.Run("backend", func(t *testing.T) {
		status, body := backendRequest(t, s, http.MethodPost, `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}`, nil)
		if status != http.StatusUnauthorized {
			t.Fatalf("without backend.api_key: got HTTP %d %s, want 401", status, body)
		}
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get("http://" + s.backLn.Addr().String() + p)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET %s: %v %v", p, err, resp)
			}
			resp.Body.Close()
		}
	})
	t.Run("origin", func(t *testing.T) {
		if _, resp, err := websocket.DefaultDialer.Dial(s.frontendURL(), http.Header{"Origin": {"https://other.example.com"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin not in frontend.allowed_origins: got %v, want HTTP 403", err)
		}
	})
	t.Run("identity token in the URL", func(t *testing.T) {
		tok := identityToken(t, s, "alice")
		c := dialToken(t, s, tok[:len(tok)-3]+"xyz")
		var ce *websocket.CloseError
		if err := c.waitClose(); !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "invalid identity token" {
			t.Fatalf("tampered token: got %v, want close 4001 invalid identity token", err)
		}
	})
	t.Run("max_message_bytes", func(t *testing.T) {
		c := dial(t, s, nil)
		c.call("pubsub", "publish", map[string]any{"channel": "public.c", "message": strings.Repeat("x", 2000)}, "1")
		var ce *websocket.CloseError
		if err := c.waitClose(); !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("got %v, want close 1009", err)
		}
	})
}
