package rpc_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// fakeService answers "ok" with a response and "fail" with a protocol
// error; anything else is an unknown command.
type fakeService struct{}

func (fakeService) Handle(_ rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "ok":
		return nil, nil
	case "fail":
		return nil, rpc.Error("Not subscribed")
	}
	return nil, rpc.ErrUnknownCommand
}

func newRegistry(t *testing.T) *rpc.Registry {
	t.Helper()
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("svc", fakeService{}); err != nil {
		t.Fatal(err)
	}
	return reg
}

// dispatch sends frame from c and returns the one reply.
func dispatch(t *testing.T, reg *rpc.Registry, c *rpctest.Conn, frame string) rpctest.Msg {
	t.Helper()
	reg.Dispatch(c, []byte(frame))
	msgs := rpctest.Msgs(t, c)
	if len(msgs) != 1 {
		t.Fatalf("%s: got %d replies, want one", frame, len(msgs))
	}
	return msgs[0]
}

// TestCallIDEcho: any JSON callId is echoed byte for byte, in responses and
// errors; without one (or null) a response has none and an error has null.
func TestCallIDEcho(t *testing.T) {
	reg := newRegistry(t)
	c := rpctest.NewConn()
	for _, id := range []string{`7`, `-3`, `1e2`, `"abc"`, `{"a":[1,2,{"b":null}]}`, `[1,"x"]`, `true`} {
		t.Run(id, func(t *testing.T) {
			raw := dispatch(t, reg, c, `{"service":"svc","message":{"command":"ok","params":{},"callId":`+id+`}}`).String()
			if !strings.Contains(raw, `"callId":`+id+`,`) || !strings.Contains(raw, `"type":"response"`) {
				t.Fatalf("response %s does not echo callId %s byte for byte", raw, id)
			}
			raw = dispatch(t, reg, c, `{"service":"svc","message":{"command":"fail","params":{},"callId":`+id+`}}`).String()
			if !strings.Contains(raw, `"callId":`+id+`,`) || !strings.Contains(raw, `"type":"error"`) {
				t.Fatalf("error %s does not echo callId %s", raw, id)
			}
		})
	}
	for _, id := range []string{"", `,"callId":null`} {
		m := dispatch(t, reg, c, `{"service":"svc","message":{"command":"ok","params":{}`+id+`}}`)
		if _, has := m.Message["callId"]; has || m.Type() != "response" {
			t.Fatalf("callId %q: response %s must have no callId", id, m)
		}
		m = dispatch(t, reg, c, `{"service":"svc","message":{"command":"fail","params":{}`+id+`}}`)
		if v, has := m.Message["callId"]; !has || string(v) != "null" || m.Type() != "error" {
			t.Fatalf("callId %q: error %s must have callId null", id, m)
		}
	}
}

// TestMalformedInput covers every D1 case: each gets an error reply naming
// what is wrong, with the service and callId where they were readable.
func TestMalformedInput(t *testing.T) {
	reg := newRegistry(t)
	c := rpctest.NewConn()
	cases := []struct {
		name, in     string
		service      string // the raw JSON wanted, "null" when unreadable
		callID       string
		messageHas   string
		exactMessage string
	}{
		{name: "invalid JSON", in: `{"service": "svc", `, messageHas: "Invalid JSON"},
		{name: "not JSON at all", in: `hello`, messageHas: "Invalid JSON"},
		{name: "invalid UTF-8", in: "{\"service\":\"svc\xff\"}", messageHas: "Invalid JSON"},
		{name: "top-level array", in: `[1,2]`, messageHas: "must be a JSON object"},
		{name: "top-level string", in: `"x"`, messageHas: "must be a JSON object"},
		{name: "null", in: `null`, messageHas: "must be a JSON object"},
		{name: "missing service", in: `{"message":{"command":"ok","params":{}}}`, messageHas: `missing "service"`},
		{name: "service not a string", in: `{"service":1,"message":{}}`, messageHas: `"service" must be a string`},
		{name: "missing message", in: `{"service":"svc"}`, service: `"svc"`, messageHas: `missing "message"`},
		{name: "unknown service", in: `{"service":"svcc","message":{"command":"x","params":{}}}`, service: `"svcc"`, messageHas: "Unknown service 'svcc'"},
		{name: "message not an object", in: `{"service":"svc","message":[1]}`, service: `"svc"`, messageHas: `"message" must be a JSON object`},
		{name: "missing command", in: `{"service":"svc","message":{"params":{},"callId":4}}`, service: `"svc"`, callID: `4`, messageHas: `missing "command"`},
		{name: "missing params", in: `{"service":"svc","message":{"command":"ok","callId":"q"}}`, service: `"svc"`, callID: `"q"`, messageHas: `missing "params"`},
		{name: "params an array", in: `{"service":"svc","message":{"command":"ok","params":[],"callId":1}}`, service: `"svc"`, callID: `1`, exactMessage: "Invalid params"},
		{name: "params null", in: `{"service":"svc","message":{"command":"ok","params":null,"callId":1}}`, service: `"svc"`, callID: `1`, exactMessage: "Invalid params"},
		{name: "params a string", in: `{"service":"svc","message":{"command":"ok","params":"x","callId":1}}`, service: `"svc"`, callID: `1`, exactMessage: "Invalid params"},
		{name: "command not a string", in: `{"service":"svc","message":{"command":5,"params":{},"callId":1}}`, service: `"svc"`, callID: `1`, exactMessage: "Unknown command"},
		{name: "unknown command", in: `{"service":"svc","message":{"command":"OK","params":{},"callId":1}}`, service: `"svc"`, callID: `1`, exactMessage: "Unknown command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := dispatch(t, reg, c, tc.in)
			var env map[string]json.RawMessage
			rpctest.JSONDecode(t, m.Raw, &env)
			wantSvc := tc.service
			if wantSvc == "" {
				wantSvc = "null"
			}
			if got := string(env["service"]); got != wantSvc {
				t.Errorf("service: got %s, want %s", got, wantSvc)
			}
			if m.Type() != "error" {
				t.Fatalf("got %s, want an error", m)
			}
			wantID := tc.callID
			if wantID == "" {
				wantID = "null"
			}
			if v, has := m.Message["callId"]; !has || string(v) != wantID {
				t.Errorf("callId: got %s (present %v), want %s", v, has, wantID)
			}
			var text string
			rpctest.JSONDecode(t, m.Message["message"], &text)
			if tc.exactMessage != "" && text != tc.exactMessage {
				t.Errorf("message: got %q, want %q", text, tc.exactMessage)
			}
			if tc.messageHas != "" && !strings.Contains(text, tc.messageHas) {
				t.Errorf("message: got %q, want it to contain %q", text, tc.messageHas)
			}
		})
	}
	// The registry keeps answering the same connection.
	if m := dispatch(t, reg, c, `{"service":"svc","message":{"command":"ok","params":{},"callId":9}}`); m.Type() != "response" {
		t.Fatalf("after malformed input: got %s, want a response", m)
	}
}
