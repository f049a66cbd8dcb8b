package cursors

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

// BenchmarkUpdateCursor measures one updateCursor in a document of 20
// connections, through the registry.
func BenchmarkUpdateCursor(b *testing.B) {
	svc, _ := New("cursors", Config{})
	reg := rpc.NewRegistry(nil)
	_ = reg.Register("cursors", svc)
	conns := make([]*nopConn, 20)
	for i := range conns {
		conns[i] = &nopConn{id: rpc.NewConnID(), ide: &rpc.Identity{JSON: []byte(fmt.Sprintf(`"u%d"`, i)), Key: fmt.Sprintf(`"u%d"`, i)}}
		reg.Dispatch(conns[i], []byte(`{"service":"cursors","message":{"command":"join","params":{"document":"doc"}}}`))
	}
	reg.Dispatch(conns[0], []byte(`{"service":"cursors","message":{"command":"createCursor","params":{"privateHandle":1,"document":"doc","position":0,"status":null}}}`))
	frame := []byte(`{"service":"cursors","message":{"command":"updateCursor","params":{"privateHandle":1,"newData":{"position":{"line":12,"ch":4}}},"callId":1}}`)
	b.ReportAllocs()
	for b.Loop() {
		reg.Dispatch(conns[0], frame)
	}
}
