package datasync

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// nopConn counts what it is sent.
type nopConn struct {
	id uint64
	n  atomic.Int64
}

func (c *nopConn) ID() uint64                        { return c.id }
func (c *nopConn) Send([]byte)                       { c.n.Add(1) }
func (c *nopConn) SendLatest(string, []byte)         { c.n.Add(1) }
func (c *nopConn) Identity() *rpc.Identity           { return nil }
func (c *nopConn) SetIdentity(id *rpc.Identity) bool { return false }
func (c *nopConn) Close(int, string)                 {}

// BenchmarkPublishDeltas: one publishDeltas batch of 100 deltas, each to
// one of 10,000 acquired subscriptions of a simple dealer (the engine's
// share of `snorky-bench datasync --dealer simple`); per delta.
func BenchmarkPublishDeltas(b *testing.B) {
	e, _ := newTestEngine(b)
	const subs = 10000
	for i := range subs {
		tok, err := e.authorize(json.RawMessage(fmt.Sprintf(`[{"dealer":"ByOwner","query":%d}]`, i)), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.acquire(&nopConn{id: uint64(i)}, tok, false); err != nil {
			b.Fatal(err)
		}
	}
	var batch strings.Builder
	batch.WriteString(`{"deltas":[`)
	for i := range 100 {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"type":"insert","model":"Task","data":{"id":%d,"owner":%d,"title":"a task title of some length","seq":%d,"ts":1764260000000000000}}`, i, i*97%subs, i)
	}
	batch.WriteString(`]}`)
	req := &rpc.Request{Command: "publishDeltas", Params: json.RawMessage(batch.String())}
	be := e.Backend()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := be.Handle(nil, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/delta")
}
