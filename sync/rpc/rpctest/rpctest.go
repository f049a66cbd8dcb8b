// Package rpctest is a test helper for services built on sync/rpc: a fake
// rpc.Conn that records the frames queued on it, and helpers that drive a
// service through an rpc.Registry and read the replies.
package rpctest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Conn is a fake rpc.Conn. Frames queue until Take; SendLatest replaces a
// queued frame with the same key in place, as a transport may.
type Conn struct {
	id uint64

	mu       sync.Mutex
	queue    []queued
	identity *rpc.Identity
	closed   bool
	code     int
	reason   string
}

type queued struct {
	key   string
	frame []byte
}

var _ rpc.Conn = (*Conn)(nil)

// NewConn returns a connection without identity.
func NewConn() *Conn { return &Conn{id: rpc.NewConnID()} }

// NewConnAs returns a connection whose identity is the JSON text id.
func NewConnAs(t testing.TB, id string) *Conn {
	t.Helper()
	c := NewConn()
	c.SetIdentity(Identity(t, id))
	return c
}

// Identity returns the rpc.Identity of the JSON text id.
func Identity(t testing.TB, id string) *rpc.Identity {
	t.Helper()
	key, err := jsonval.Canonical([]byte(id))
	if err != nil {
		t.Fatalf("identity %s: %v", id, err)
	}
	return &rpc.Identity{JSON: json.RawMessage(id), Key: key}
}

// ID implements rpc.Conn.
func (c *Conn) ID() uint64 { return c.id }

// Send implements rpc.Conn.
func (c *Conn) Send(frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, queued{frame: frame})
}

// SendLatest implements rpc.Conn: a queued frame with the same key is
// replaced where it stands.
func (c *Conn) SendLatest(key string, frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.queue {
		if c.queue[i].key == key {
			c.queue[i].frame = frame
			return
		}
	}
	c.queue = append(c.queue, queued{key: key, frame: frame})
}

// Identity implements rpc.Conn.
func (c *Conn) Identity() *rpc.Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.identity
}

// SetIdentity implements rpc.Conn.
func (c *Conn) SetIdentity(id *rpc.Identity) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.identity != nil {
		return false
	}
	c.identity = id
	return true
}

// Close implements rpc.Conn; it records the first close.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed, c.code, c.reason = true, code, reason
}

// Closed reports whether Close was called, and with what.
func (c *Conn) Closed() (closed bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.code, c.reason
}

// Take returns the frames queued since the last Take, oldest first.
func (c *Conn) Take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]byte, len(c.queue))
	for i, q := range c.queue {
		out[i] = q.frame
	}
	c.queue = nil
	return out
}

// Msg is one decoded outgoing envelope.
type Msg struct {
	Service string
	Message map[string]json.RawMessage
	Raw     []byte
}

// Type returns the message's "type" field, "" when absent.
func (m Msg) Type() string {
	var s string
	_ = json.Unmarshal(m.Message["type"], &s)
	return s
}

// String returns the raw frame.
func (m Msg) String() string { return string(m.Raw) }

// Parse decodes an outgoing frame.
func Parse(t testing.TB, frame []byte) Msg {
	t.Helper()
	var env struct {
		Service *string
		Message map[string]json.RawMessage
	}
	if err := json.Unmarshal(frame, &env); err != nil {
		t.Fatalf("frame %s: %v", frame, err)
	}
	m := Msg{Message: env.Message, Raw: frame}
	if env.Service != nil {
		m.Service = *env.Service
	}
	return m
}

// Msgs takes c's queued frames and decodes them.
func Msgs(t testing.TB, c *Conn) []Msg {
	t.Helper()
	frames := c.Take()
	out := make([]Msg, len(frames))
	for i, f := range frames {
		out[i] = Parse(t, f)
	}
	return out
}

// Reply is the outcome of one call: the notifications queued on the caller
// before the reply, and the reply.
type Reply struct {
	Before []Msg
	Msg
}

// Data returns the response data; it fails the test on an error reply.
func (r Reply) Data(t testing.TB) json.RawMessage {
	t.Helper()
	if r.Type() != "response" {
		t.Fatalf("got %s, want a response", r.Raw)
	}
	return r.Message["data"]
}

// Err returns the error string of an error reply, "" for a response.
func (r Reply) Err() string {
	if r.Type() != "error" {
		return ""
	}
	var s string
	_ = json.Unmarshal(r.Message["message"], &s)
	return s
}

// Call dispatches {"service":service,"message":{"command":command,
// "params":params,"callId":1}} from c through reg and returns what c got.
// c's queue must be empty first (Take it).
func Call(t testing.TB, reg *rpc.Registry, c *Conn, service, command, params string) Reply {
	t.Helper()
	if n := len(c.Take()); n != 0 {
		t.Fatalf("conn %d had %d unread frames before calling %s", c.ID(), n, command)
	}
	frame := fmt.Sprintf(`{"service":%q,"message":{"command":%q,"params":%s,"callId":1}}`, service, command, params)
	reg.Dispatch(c, []byte(frame))
	msgs := Msgs(t, c)
	if len(msgs) == 0 {
		t.Fatalf("%s %s: no reply", service, command)
	}
	r := Reply{Before: msgs[:len(msgs)-1], Msg: msgs[len(msgs)-1]}
	if typ := r.Type(); typ != "response" && typ != "error" {
		t.Fatalf("%s %s: last frame %s is not a reply", service, command, r.Raw)
	}
	if string(r.Message["callId"]) != "1" {
		t.Fatalf("%s %s: reply %s: got callId %s, want 1", service, command, r.Raw, r.Message["callId"])
	}
	if r.Service != service {
		t.Fatalf("%s %s: reply from service %q", service, command, r.Service)
	}
	return r
}

// JSONEqual fails the test unless got and want hold equal JSON values.
func JSONEqual(t testing.TB, what string, got []byte, want string) {
	t.Helper()
	if !jsonval.Equal(got, []byte(want)) {
		t.Fatalf("%s: got %s, want %s", what, got, want)
	}
}

// JSONDecode decodes data into v, failing the test on an error.
func JSONDecode(t testing.TB, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
}
