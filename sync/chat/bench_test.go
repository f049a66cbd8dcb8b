package chat

import (
	"fmt"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// nopConn is an rpc.Conn that drops frames.
type nopConn struct {
	id  uint64
	ide *rpc.Identity
}

func (c *nopConn) ID() uint64                        { return c.id }
func (c *nopConn) Send([]byte)                       {}
func (c *nopConn) SendLatest(string, []byte)         {}
func (c *nopConn) Identity() *rpc.Identity           { return c.ide }
func (c *nopConn) SetIdentity(id *rpc.Identity) bool { c.ide = id; return true }
func (c *nopConn) Close(int, string)                 {}

// BenchmarkSend measures one send to a channel of 100 connections, through
// the registry (decode, handle, encode once, 100 queue calls, reply).
func BenchmarkSend(b *testing.B) {
	svc, _ := New("chat", Config{})
	reg := rpc.NewRegistry(nil)
	_ = reg.Register("chat", svc)
	conns := make([]*nopConn, 100)
	for i := range conns {
		conns[i] = &nopConn{id: rpc.NewConnID(), ide: &rpc.Identity{JSON: []byte(fmt.Sprintf(`"u%d"`, i)), Key: fmt.Sprintf(`"u%d"`, i)}}
		reg.Dispatch(conns[i], []byte(`{"service":"chat","message":{"command":"join","params":{"channel":"#cats"}}}`))
	}
	frame := []byte(`{"service":"chat","message":{"command":"send","params":{"channel":"#cats","body":"meow meow meow"},"callId":1}}`)
	b.ReportAllocs()
	for b.Loop() {
		reg.Dispatch(conns[0], frame)
	}
}
