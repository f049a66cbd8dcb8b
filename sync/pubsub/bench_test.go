package pubsub

import (
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// nopConn is an rpc.Conn that drops frames.
type nopConn struct{ id uint64 }

func (c *nopConn) ID() uint64                     { return c.id }
func (c *nopConn) Send([]byte)                    {}
func (c *nopConn) SendLatest(string, []byte)      {}
func (c *nopConn) Identity() *rpc.Identity        { return nil }
func (c *nopConn) SetIdentity(*rpc.Identity) bool { return false }
func (c *nopConn) Close(int, string)              {}

// BenchmarkPublish measures one publish to a channel of 100 subscribers,
// through the registry (decode, handle, encode once, 100 queue calls,
// reply).
func BenchmarkPublish(b *testing.B) {
	svc := New("pubsub", Config{Policy: DefaultPolicy})
	reg := rpc.NewRegistry(nil)
	_ = reg.Register("pubsub", svc)
	conns := make([]*nopConn, 100)
	for i := range conns {
		conns[i] = &nopConn{id: rpc.NewConnID()}
		reg.Dispatch(conns[i], []byte(`{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"news"}}}`))
	}
	frame := []byte(`{"service":"pubsub","message":{"command":"publish","params":{"channel":"news","message":"hello"},"callId":1}}`)
	b.ReportAllocs()
	for b.Loop() {
		reg.Dispatch(conns[0], frame)
	}
}
