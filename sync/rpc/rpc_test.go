package rpc

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
)

type recConn struct {
	mu     sync.Mutex
	frames [][]byte
	id     *Identity
}

func (c *recConn) ID() uint64 { return 1 }
func (c *recConn) Send(f []byte) {
	c.mu.Lock()
	c.frames = append(c.frames, f)
	c.mu.Unlock()
}
func (c *recConn) SendLatest(_ string, f []byte) { c.Send(f) }
func (c *recConn) Identity() *Identity           { return c.id }
func (c *recConn) SetIdentity(id *Identity) bool {
	if c.id != nil {
		return false
	}
	c.id = id
	return true
}
func (c *recConn) Close(int, string) {}

// echo answers "echo" with its params, "fail" with a protocol error,
// "boom" with an internal error and "panic" by panicking.
type echo struct{}

func (echo) Handle(c Conn, req *Request) (any, error) {
	switch req.Command {
	case "echo":
		return req.Params, nil
	case "fail":
		return nil, Error("Nope")
	case "boom":
		return nil, errors.New("database on fire")
	case "panic":
		panic("boom")
	}
	return nil, ErrUnknownCommand
}

func newTestRegistry(t testing.TB) *Registry {
	r := NewRegistry(nil)
	if err := r.Register("svc", echo{}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDispatch(t *testing.T) {
	r := newTestRegistry(t)
	cases := []struct{ in, want string }{
		{`{"service":"svc","message":{"command":"echo","params":{"a":1},"callId":3}}`, `{"service":"svc","message":{"type":"response","callId":3,"data":{"a":1}}}`},
		{`{"service":"svc","message":{"command":"echo","params":{}}}`, `{"service":"svc","message":{"type":"response","data":{}}}`},
		{`{"service":"svc","message":{"command":"echo","params":{},"callId":null}}`, `{"service":"svc","message":{"type":"response","data":{}}}`},
		{`{"service":"svc","message":{"command":"fail","params":{},"callId":"x"}}`, `{"service":"svc","message":{"type":"error","callId":"x","message":"Nope"}}`},
		{`{"service":"svc","message":{"command":"fail","params":{}}}`, `{"service":"svc","message":{"type":"error","callId":null,"message":"Nope"}}`},
		{`{"service":"svc","message":{"command":"boom","params":{},"callId":1}}`, `{"service":"svc","message":{"type":"error","callId":1,"message":"Internal error"}}`},
		{`{"service":"svc","message":{"command":"panic","params":{},"callId":1}}`, `{"service":"svc","message":{"type":"error","callId":1,"message":"Internal error"}}`},
		{`{"service":"svc","message":{"command":"echo","params":[],"callId":1}}`, `{"service":"svc","message":{"type":"error","callId":1,"message":"Invalid params"}}`},
		{`{"service":"svc","message":{"command":null,"params":{},"callId":1}}`, `{"service":"svc","message":{"type":"error","callId":1,"message":"Unknown command"}}`},
		{`{"service":"other","message":{}}`, `{"service":"other","message":{"type":"error","callId":null,"message":"Unknown service 'other'"}}`},
	}
	for _, tc := range cases {
		c := &recConn{}
		r.Dispatch(c, []byte(tc.in))
		if len(c.frames) != 1 || string(c.frames[0]) != tc.want {
			t.Errorf("Dispatch(%s):\n got %s\nwant %s", tc.in, c.frames, tc.want)
		}
	}
}

func TestParams(t *testing.T) {
	cases := []struct {
		raw string
		ok  bool
	}{
		{`{"a":1}`, true},
		{`{"a":1,"b":2}`, true},
		{`{}`, false},
		{`{"a":1,"c":3}`, false},
		{`[]`, false},
		{`null`, false},
	}
	for _, tc := range cases {
		_, err := Params(json.RawMessage(tc.raw), []string{"a"}, []string{"b"})
		if (err == nil) != tc.ok {
			t.Errorf("Params(%s): got err %v, want ok=%v", tc.raw, err, tc.ok)
		}
	}
}

// FuzzDispatch feeds arbitrary frames to the envelope and command decoder:
// it never panics, and every frame gets exactly one reply that is valid
// JSON with the envelope's shape.
func FuzzDispatch(f *testing.F) {
	for _, s := range []string{
		`{"service":"svc","message":{"command":"echo","params":{"a":1},"callId":3}}`,
		`{"service":"svc","message":{"command":"fail","params":{}}}`,
		`{"service":"svc","message":{"command":"panic","params":{},"callId":{"x":[1]}}}`,
		`{"service":"svc","message":{"command":5,"params":null}}`,
		`{"service":"svc","message":[]}`,
		`{"service":null}`,
		`{"service":"nope","message":{}}`,
		`[1,2]`, `null`, `"x"`, `{`, ``, `{"service":"svc","message":{"command":"echo","params":{},"callId":1e400}}`,
		`{"service":"svc","service":"svc","message":{"command":"echo","params":{"\u0000":"\ud800"}}}`,
	} {
		f.Add([]byte(s))
	}
	r := newTestRegistry(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		c := &recConn{}
		r.Dispatch(c, frame)
		if len(c.frames) != 1 {
			t.Fatalf("got %d replies, want 1", len(c.frames))
		}
		var env struct {
			Service *string `json:"service"`
			Message struct {
				Type string `json:"type"`
			} `json:"message"`
		}
		if err := json.Unmarshal(c.frames[0], &env); err != nil {
			t.Fatalf("reply %q is not valid JSON: %v", c.frames[0], err)
		}
		if env.Message.Type != "response" && env.Message.Type != "error" {
			t.Fatalf("reply %q is neither a response nor an error", c.frames[0])
		}
		if env.Message.Type == "error" && strings.Contains(string(c.frames[0]), "Internal error") && !strings.Contains(string(frame), "panic") && !strings.Contains(string(frame), "boom") {
			// Internal errors come only from the test service's own
			// commands; malformed input never produces one.
			var probe map[string]any
			if json.Unmarshal(frame, &probe) == nil {
				if m, ok := probe["message"].(map[string]any); ok {
					if cmd, _ := m["command"].(string); cmd != "panic" && cmd != "boom" {
						t.Fatalf("input %q produced Internal error", frame)
					}
				}
			}
		}
	})
}
