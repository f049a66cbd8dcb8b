package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestPubSubCommands(t *testing.T) {
	s := startServer(t, "")
	a, b := dial(t, s, nil), dial(t, s, nil)

	if got := a.ok("pubsub", "subscribe", map[string]any{"channel": "news"}); got != nil {
		t.Fatalf("subscribe: got data %v, want null", got)
	}
	a.fails("pubsub", "subscribe", map[string]any{"channel": "news"}, "Already subscribed")
	b.fails("pubsub", "unsubscribe", map[string]any{"channel": "news"}, "Not subscribed")

	// A publisher that is not subscribed; a subscriber receives the
	// channel as given and the message.
	b.ok("pubsub", "publish", map[string]any{"channel": "news", "message": map[string]any{"text": "hello"}})
	got := a.next()
	want := map[string]any{"service": "pubsub", "message": map[string]any{"type": "message", "channel": "news", "message": map[string]any{"text": "hello"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("notification: got %v, want %v", got, want)
	}

	// The publisher, subscribed, gets its notification before the response.
	a.call("pubsub", "publish", map[string]any{"channel": "news", "message": "self"}, "5")
	if m := a.next()["message"].(map[string]any); m["type"] != "message" || m["message"] != "self" {
		t.Fatalf("got %v first, want the notification", m)
	}
	if m := a.next()["message"].(map[string]any); m["type"] != "response" || fmt.Sprint(m["callId"]) != "5" {
		t.Fatalf("got %v second, want the response", m)
	}

	// Publishing to a channel without subscribers succeeds.
	b.ok("pubsub", "publish", map[string]any{"channel": "nobody", "message": 1})

	// Any JSON value is a channel; equal values are one channel (1 == 1.0).
	a.ok("pubsub", "subscribe", map[string]any{"channel": map[string]any{"room": 1, "tags": []any{"x"}}})
	b.sendRaw(`{"service":"pubsub","message":{"command":"publish","params":{"channel":{"tags":["x"],"room":1.0},"message":"obj"},"callId":2}}`)
	if m := b.next()["message"].(map[string]any); m["type"] != "response" {
		t.Fatalf("publish to object channel: got %v", m)
	}
	if m := a.next()["message"].(map[string]any); m["message"] != "obj" {
		t.Fatalf("object channel notification: got %v", m)
	}

	// The backend publishes to the same channels, with any JSON channel (D2).
	backendOK(t, s, "pubsub_backend", "publish", map[string]any{"channel": map[string]any{"room": 1, "tags": []any{"x"}}, "message": "from backend"})
	if m := a.next()["message"].(map[string]any); m["message"] != "from backend" {
		t.Fatalf("backend publish: got %v", m)
	}

	a.ok("pubsub", "unsubscribe", map[string]any{"channel": "news"})
	b.ok("pubsub", "publish", map[string]any{"channel": "news", "message": "after"})
	a.quiet(100 * time.Millisecond)

	// Invalid params.
	a.fails("pubsub", "subscribe", map[string]any{}, "Invalid params")
	a.fails("pubsub", "subscribe", map[string]any{"channel": "x", "extra": 1}, "Invalid params")
	a.fails("pubsub", "publish", map[string]any{"channel": "x"}, "Invalid params")
	a.fails("pubsub", "nope", map[string]any{}, "Unknown command")
}

func TestPubSubDisconnectUnsubscribes(t *testing.T) {
	s := startServer(t, "")
	a := dial(t, s, nil)
	a.ok("pubsub", "subscribe", map[string]any{"channel": "c"})
	a.ws.Close()
	b := dial(t, s, nil)
	eventually(t, "subscriber removed", func() bool { return s.ws.Len() == 1 })
	b.ok("pubsub", "subscribe", map[string]any{"channel": "c"})
	b.ok("pubsub", "publish", map[string]any{"channel": "c", "message": "m"})
	if m := b.next()["message"].(map[string]any); m["type"] != "message" {
		t.Fatalf("got %v, want the notification", m)
	}
}

func TestPubSubPublishPolicy(t *testing.T) {
	s := startServer(t, `pubsub: {client_publish: ["public."], client_publish_deny: ["public.admin"]}`)
	c := dial(t, s, nil)
	c.ok("pubsub", "publish", map[string]any{"channel": "public.news", "message": 1})
	c.fails("pubsub", "publish", map[string]any{"channel": "private", "message": 1}, "Not authorized")
	c.fails("pubsub", "publish", map[string]any{"channel": "public.admin.x", "message": 1}, "Not authorized")
	c.fails("pubsub", "publish", map[string]any{"channel": 7, "message": 1}, "Not authorized")
	// The backend bypasses the policy.
	backendOK(t, s, "pubsub_backend", "publish", map[string]any{"channel": "private", "message": 1})

	s2 := startServer(t, `pubsub: {client_publish: false}`)
	c2 := dial(t, s2, nil)
	c2.fails("pubsub", "publish", map[string]any{"channel": "any", "message": 1}, "Not authorized")
	c2.ok("pubsub", "subscribe", map[string]any{"channel": "any"})
}

func TestMessaging(t *testing.T) {
	s := startServer(t, "")
	alice, bob := dial(t, s, nil), dial(t, s, nil)
	alice.ok("messaging", "registerParticipant", map[string]any{"name": "Alice"})
	alice.ok("messaging", "registerParticipant", map[string]any{"name": "Al"})
	alice.fails("messaging", "registerParticipant", map[string]any{"name": "Alice"}, "Name already registered")
	bob.fails("messaging", "registerParticipant", map[string]any{"name": "Alice"}, "Name already registered")
	bob.ok("messaging", "registerParticipant", map[string]any{"name": "Bob"})

	list := bob.ok("messaging", "listParticipants", map[string]any{})
	if fmt.Sprint(list) != "[Al Alice Bob]" {
		t.Fatalf("listParticipants: got %v, want [Al Alice Bob]", list)
	}
	bob.fails("messaging", "unregisterParticipant", map[string]any{"name": "Nobody"}, "Unknown participant")
	bob.fails("messaging", "unregisterParticipant", map[string]any{"name": "Alice"}, "Invalid participant")
	bob.fails("messaging", "send", map[string]any{"sender": "Alice", "dest": "Bob", "body": "x"}, "Invalid sender")
	bob.fails("messaging", "send", map[string]any{"sender": "Nobody", "dest": "Bob", "body": "x"}, "Invalid sender")
	bob.fails("messaging", "send", map[string]any{"sender": "Bob", "dest": "Nobody", "body": "x"}, "Unknown destination")

	bob.ok("messaging", "send", map[string]any{"sender": "Bob", "dest": "Alice", "body": "Hi, Alice."})
	got := alice.next()
	want := map[string]any{"service": "messaging", "message": map[string]any{"type": "message", "sender": "Bob", "dest": "Alice", "body": "Hi, Alice."}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("message: got %v, want %v", got, want)
	}
	// To oneself: the notification, then the response.
	alice.call("messaging", "send", map[string]any{"sender": "Al", "dest": "Alice", "body": map[string]any{"k": 1}}, `"s"`)
	if m := alice.next()["message"].(map[string]any); m["type"] != "message" || m["sender"] != "Al" {
		t.Fatalf("got %v first, want the message", m)
	}
	if m := alice.next()["message"].(map[string]any); m["type"] != "response" || m["callId"] != "s" {
		t.Fatalf("got %v second, want the response", m)
	}

	alice.ok("messaging", "unregisterParticipant", map[string]any{"name": "Al"})
	bob.fails("messaging", "send", map[string]any{"sender": "Bob", "dest": "Al", "body": "x"}, "Unknown destination")
	alice.fails("messaging", "listParticipants", map[string]any{"x": 1}, "Invalid params")

	// Disconnect frees every name.
	alice.ws.Close()
	eventually(t, "Alice's names freed", func() bool {
		return fmt.Sprint(bob.ok("messaging", "listParticipants", map[string]any{})) == "[Bob]"
	})
}

func TestCallIDEcho(t *testing.T) {
	s := startServer(t, "")
	c := dial(t, s, nil)
	for _, id := range []string{`7`, `-3`, `1e2`, `"abc"`, `{"a":[1,2,{"b":null}]}`, `[1,"x"]`, `true`} {
		t.Run(id, func(t *testing.T) {
			c.t = t
			c.call("pubsub", "publish", map[string]any{"channel": "c", "message": 1}, id)
			raw := c.nextRaw()
			if !strings.Contains(raw, `"callId":`+id+`,`) {
				t.Fatalf("response %s does not echo callId %s byte for byte", raw, id)
			}
			c.call("pubsub", "unsubscribe", map[string]any{"channel": "c"}, id)
			raw = c.nextRaw()
			if !strings.Contains(raw, `"callId":`+id+`,`) || !strings.Contains(raw, `"type":"error"`) {
				t.Fatalf("error %s does not echo callId %s", raw, id)
			}
		})
	}
	c.t = t
	// No callId, or null: omitted from a response, null in an error.
	for _, id := range []string{"", "null"} {
		c.call("pubsub", "publish", map[string]any{"channel": "c", "message": 1}, id)
		m := c.next()["message"].(map[string]any)
		if _, has := m["callId"]; has || m["type"] != "response" {
			t.Fatalf("callId %q: response %v must have no callId", id, m)
		}
		c.call("pubsub", "unsubscribe", map[string]any{"channel": "c"}, id)
		m = c.next()["message"].(map[string]any)
		if v, has := m["callId"]; !has || v != nil || m["type"] != "error" {
			t.Fatalf("callId %q: error %v must have callId null", id, m)
		}
	}
}

// TestMalformedInput covers every D1 case: each gets an error reply and the
// connection stays open.
func TestMalformedInput(t *testing.T) {
	s := startServer(t, "")
	c := dial(t, s, nil)
	cases := []struct {
		name, in     string
		service      any // want: nil or a name
		callID       any
		messageHas   string
		exactMessage string
	}{
		{name: "invalid JSON", in: `{"service": "pubsub", `, messageHas: "Invalid JSON"},
		{name: "not JSON at all", in: `hello`, messageHas: "Invalid JSON"},
		{name: "top-level array", in: `[1,2]`, messageHas: "must be a JSON object"},
		{name: "top-level string", in: `"x"`, messageHas: "must be a JSON object"},
		{name: "null", in: `null`, messageHas: "must be a JSON object"},
		{name: "missing service", in: `{"message":{"command":"subscribe","params":{}}}`, messageHas: `missing "service"`},
		{name: "service not a string", in: `{"service":1,"message":{}}`, messageHas: `"service" must be a string`},
		{name: "missing message", in: `{"service":"pubsub"}`, service: "pubsub", messageHas: `missing "message"`},
		{name: "unknown service", in: `{"service":"pubsubb","message":{"command":"x","params":{}}}`, service: "pubsubb", messageHas: "Unknown service 'pubsubb'"},
		{name: "message not an object", in: `{"service":"pubsub","message":[1]}`, service: "pubsub", messageHas: `"message" must be a JSON object`},
		{name: "missing command", in: `{"service":"pubsub","message":{"params":{},"callId":4}}`, service: "pubsub", callID: json.Number("4"), messageHas: `missing "command"`},
		{name: "missing params", in: `{"service":"pubsub","message":{"command":"subscribe","callId":"q"}}`, service: "pubsub", callID: "q", messageHas: `missing "params"`},
		{name: "params an array", in: `{"service":"pubsub","message":{"command":"subscribe","params":[],"callId":1}}`, service: "pubsub", callID: json.Number("1"), exactMessage: "Invalid params"},
		{name: "params null", in: `{"service":"pubsub","message":{"command":"subscribe","params":null,"callId":1}}`, service: "pubsub", callID: json.Number("1"), exactMessage: "Invalid params"},
		{name: "params a string", in: `{"service":"pubsub","message":{"command":"subscribe","params":"x","callId":1}}`, service: "pubsub", callID: json.Number("1"), exactMessage: "Invalid params"},
		{name: "command not a string", in: `{"service":"pubsub","message":{"command":5,"params":{},"callId":1}}`, service: "pubsub", callID: json.Number("1"), exactMessage: "Unknown command"},
		{name: "unknown command", in: `{"service":"pubsub","message":{"command":"Subscribe","params":{},"callId":1}}`, service: "pubsub", callID: json.Number("1"), exactMessage: "Unknown command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.sendRaw(tc.in)
			m := c.next()
			if m["service"] != tc.service {
				t.Errorf("service: got %v, want %v", m["service"], tc.service)
			}
			msg := m["message"].(map[string]any)
			if msg["type"] != "error" {
				t.Fatalf("got %v, want an error", msg)
			}
			if v, has := msg["callId"]; !has || v != tc.callID {
				t.Errorf("callId: got %v (present %v), want %v", v, has, tc.callID)
			}
			text, _ := msg["message"].(string)
			if tc.exactMessage != "" && text != tc.exactMessage {
				t.Errorf("message: got %q, want %q", text, tc.exactMessage)
			}
			if tc.messageHas != "" && !strings.Contains(text, tc.messageHas) {
				t.Errorf("message: got %q, want it to contain %q", text, tc.messageHas)
			}
		})
	}
	c.t = t
	// The connection is still open and works; binary frames work too.
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte(`{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"b"},"callId":9}}`)); err != nil {
		t.Fatal(err)
	}
	if m := c.next()["message"].(map[string]any); m["type"] != "response" {
		t.Fatalf("after malformed input: got %v, want a response", m)
	}
}

func TestOversizeMessageCloses1009(t *testing.T) {
	s := startServer(t, `frontend: {listen: "127.0.0.1:0", path: /ws, max_message_bytes: 1KiB}`)
	c := dial(t, s, nil)
	c.ok("pubsub", "publish", map[string]any{"channel": "c", "message": strings.Repeat("x", 900)})
	c.call("pubsub", "publish", map[string]any{"channel": "c", "message": strings.Repeat("x", 2000)}, "1")
	err := c.waitClose()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("got %v, want close 1009", err)
	}
}

func TestOriginPolicy(t *testing.T) {
	s := startServer(t, "")
	host := s.frontLn.Addr().String()
	dial(t, s, http.Header{"Origin": {"http://" + host}}) // same host: accepted
	dial(t, s, nil)                                       // no Origin: accepted
	_, resp, err := websocket.DefaultDialer.Dial(s.frontendURL(), http.Header{"Origin": {"http://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: got %v, want HTTP 403", err)
	}

	s2 := startServer(t, `frontend: {listen: "127.0.0.1:0", path: /ws, allowed_origins: ["https://app.example.com"]}`)
	dial(t, s2, http.Header{"Origin": {"https://app.example.com"}})
	if _, resp, err := websocket.DefaultDialer.Dial(s2.frontendURL(), http.Header{"Origin": {"https://other.example.com"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("unlisted origin: got %v, want 403", err)
	}
	s3 := startServer(t, `frontend: {listen: "127.0.0.1:0", path: /ws, allowed_origins: ["*"]}`)
	dial(t, s3, http.Header{"Origin": {"https://anything.example"}})
}

func TestBackendEndpoint(t *testing.T) {
	s := startServer(t, `backend: {listen: "127.0.0.1:0", path: /backend, api_key: "`+testKey+`", max_body_bytes: 4KiB}`)
	valid := `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}`
	cases := []struct {
		name    string
		method  string
		body    string
		headers map[string]string
		status  int
	}{
		{"missing key", "POST", valid, nil, 401},
		{"wrong key", "POST", valid, map[string]string{"X-Backend-Key": "nope"}, 401},
		{"key prefix", "POST", valid, map[string]string{"X-Backend-Key": testKey[:5]}, 401},
		{"GET", "GET", "", map[string]string{"X-Backend-Key": testKey}, 405},
		{"bad JSON", "POST", `{"service":`, map[string]string{"X-Backend-Key": testKey}, 400},
		{"not an object", "POST", `[]`, map[string]string{"X-Backend-Key": testKey}, 400},
		{"missing message", "POST", `{"service":"pubsub_backend"}`, map[string]string{"X-Backend-Key": testKey}, 400},
		{"unknown service", "POST", `{"service":"pubsub","message":{"command":"publish","params":{}}}`, map[string]string{"X-Backend-Key": testKey}, 400},
		{"missing params", "POST", `{"service":"pubsub_backend","message":{"command":"publish"}}`, map[string]string{"X-Backend-Key": testKey}, 400},
		{"oversize", "POST", `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":"` + strings.Repeat("x", 5000) + `"}}}`, map[string]string{"X-Backend-Key": testKey}, 413},
		{"valid", "POST", valid, map[string]string{"X-Backend-Key": testKey}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := backendRequest(t, s, tc.method, tc.body, tc.headers)
			if status != tc.status {
				t.Fatalf("got HTTP %d %s, want %d", status, body, tc.status)
			}
			var v map[string]any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			if status != 200 {
				if e, _ := v["error"].(string); e == "" {
					t.Fatalf("body %s: want a JSON error", body)
				}
			}
		})
	}
	// RPC errors are HTTP 200 with the error envelope, callId null.
	status, body := backendCall(t, s, `{"service":"pubsub_backend","message":{"command":"subscribe","params":{}}}`)
	if status != 200 || string(body) != `{"service":"pubsub_backend","message":{"type":"error","callId":null,"message":"Unknown command"}}` {
		t.Fatalf("got %d %s, want 200 with Unknown command", status, body)
	}
	// Health and readiness.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + s.backLn.Addr().String() + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
}
