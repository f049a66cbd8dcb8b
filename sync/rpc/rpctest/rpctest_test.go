package rpctest

import (
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// TestConn: frames queue in order until Take; SendLatest replaces a queued
// frame of its key where it stands; the identity is set once; the first
// close is the one recorded.
func TestConn(t *testing.T) {
	c := NewConn()
	if c.ID() == NewConn().ID() {
		t.Fatal("two connections share an ID")
	}
	c.Send([]byte("a"))
	c.SendLatest("k", []byte("k1"))
	c.Send([]byte("b"))
	c.SendLatest("k", []byte("k2"))
	if got := c.Take(); len(got) != 3 || string(got[0]) != "a" || string(got[1]) != "k2" || string(got[2]) != "b" {
		t.Fatalf("got %q, want [a k2 b]", got)
	}
	if got := c.Take(); len(got) != 0 {
		t.Fatalf("second Take: got %q, want nothing", got)
	}
	c.SendLatest("k", []byte("k3")) // taken frames are not replaced
	if got := c.Take(); len(got) != 1 || string(got[0]) != "k3" {
		t.Fatalf("after Take: got %q, want [k3]", got)
	}

	if c.Identity() != nil {
		t.Fatal("a new connection has an identity")
	}
	if !c.SetIdentity(Identity(t, `"alice"`)) || c.SetIdentity(Identity(t, `"bob"`)) {
		t.Fatal("SetIdentity: want true once, then false")
	}
	if got := string(c.Identity().JSON); got != `"alice"` {
		t.Fatalf("identity: got %s, want \"alice\"", got)
	}
	if id := Identity(t, `{"b":1,"a":2}`); id.Key != Identity(t, `{"a":2.0,"b":1}`).Key {
		t.Fatalf("equal JSON identities have different keys: %q", id.Key)
	}

	if closed, _, _ := c.Closed(); closed {
		t.Fatal("closed before Close")
	}
	c.Close(4008, "slow consumer")
	c.Close(1000, "later")
	if closed, code, reason := c.Closed(); !closed || code != 4008 || reason != "slow consumer" {
		t.Fatalf("got %v %d %q, want the first close: 4008 slow consumer", closed, code, reason)
	}
}

type echo struct{}

func (echo) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "notify":
		c.Send([]byte(`{"service":"echo","message":{"type":"note"}}`))
		return "done", nil
	case "fail":
		return nil, rpc.Error("Nope")
	}
	return nil, rpc.ErrUnknownCommand
}

// TestCall: Call returns the reply, with the notifications queued before
// it; Data and Err read responses and errors.
func TestCall(t *testing.T) {
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("echo", echo{}); err != nil {
		t.Fatal(err)
	}
	c := NewConn()
	r := Call(t, reg, c, "echo", "notify", `{}`)
	if len(r.Before) != 1 || r.Before[0].Type() != "note" || r.Before[0].Service != "echo" {
		t.Fatalf("before the reply: got %v, want the note", r.Before)
	}
	JSONEqual(t, "data", r.Data(t), `"done"`)
	if r.Err() != "" {
		t.Fatalf("Err of a response: got %q, want \"\"", r.Err())
	}
	if got := Call(t, reg, c, "echo", "fail", `{}`).Err(); got != "Nope" {
		t.Fatalf("Err: got %q, want Nope", got)
	}
	var v struct{ A []int }
	JSONDecode(t, []byte(`{"A":[1,2]}`), &v)
	if len(v.A) != 2 {
		t.Fatalf("JSONDecode: got %+v", v)
	}
	m := Parse(t, []byte(`{"service":"x","message":{"type":"t"}}`))
	if m.Service != "x" || m.Type() != "t" || m.String() != `{"service":"x","message":{"type":"t"}}` {
		t.Fatalf("Parse: got %+v", m)
	}
}
