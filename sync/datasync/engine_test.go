package datasync

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
	"github.com/snorkyhq/snorky/sync/token"
)

func newTestEngine(t testing.TB) (*Engine, *rpc.Registry) {
	return newTestEngineWith(t, false, 0)
}

func newTestEngineDB(t testing.TB, historyBytes int) (*Engine, *rpc.Registry) {
	return newTestEngineWith(t, true, historyBytes)
}

func newTestEngineWith(t testing.TB, db bool, historyBytes int) (*Engine, *rpc.Registry) {
	t.Helper()
	signer, err := token.New([]byte("0123456789abcdef0123"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{
		Models: map[string]Model{
			"Task": {Table: "public.tasks", Key: []string{"id"}, Columns: []string{"id", "title", "owner", "body"}},
		},
		Dealers: map[string]dealers.Config{
			"ByOwner": {Model: "Task", Kind: dealers.KindSimple, Key: "owner"},
			"All":     {Model: "Task", Kind: dealers.KindBroadcast},
		},
		Signer:          signer,
		Database:        db,
		HistoryMaxBytes: historyBytes,
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := rpc.NewRegistry(nil)
	reg.Register("datasync", e.Frontend())
	return e, reg
}

func cols(kv ...string) []cdc.Column {
	var out []cdc.Column
	for i := 0; i < len(kv); i += 2 {
		out = append(out, cdc.Column{Name: kv[i], Value: json.RawMessage(kv[i+1])})
	}
	return out
}

func acquire(t *testing.T, e *Engine, reg *rpc.Registry, items string) *rpctest.Conn {
	t.Helper()
	tok, err := e.authorize(json.RawMessage(items), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := rpctest.NewConn()
	q, _ := json.Marshal(tok)
	if r := rpctest.Call(t, reg, c, "datasync", "acquireSubscription", `{"token":`+string(q)+`}`); r.Err() != "" {
		t.Fatalf("acquire: %s", r.Err())
	}
	c.Take()
	return c
}

// TestApplyTransaction: a transaction's changes become deltas of the
// table's model, restricted to its columns, with offsets, lsn and xid, the
// transitions of §3.2, and every delta of the transaction queued together.
func TestApplyTransaction(t *testing.T) {
	e, reg := newTestEngine(t)
	seven := acquire(t, e, reg, `[{"dealer":"ByOwner","query":7}]`)
	all := acquire(t, e, reg, `[{"dealer":"All","query":null}]`)

	txn := &cdc.Txn{Xid: 742, CommitLSN: 0x16B3740, EndLSN: 0x16B3770, Changes: []cdc.Change{
		{Table: "public.tasks", Op: cdc.Insert, New: cols("id", "1", "title", `"a"`, "owner", "7", "secret", `"hash"`)},
		{Table: "public.tasks", Op: cdc.Update, New: cols("id", "1", "title", `"b"`, "owner", "8"), Old: cols("id", "1", "title", `"a"`, "owner", "7")},
		// REPLICA IDENTITY DEFAULT: no old row; TOASTed columns unchanged,
		// of which the hidden one is not named.
		{Table: "public.tasks", Op: cdc.Update, New: cols("id", "2", "title", `"c"`, "owner", "7"), Unchanged: []string{"secret", "body"}},
		{Table: "public.other", Op: cdc.Insert, New: cols("id", "9")},
		{Table: "public.tasks", Op: cdc.Truncate},
	}}
	if err := e.Apply(txn); err != nil {
		t.Fatal(err)
	}
	got := rpctest.Msgs(t, seven)
	want := []string{
		`{"service":"datasync","message":{"type":"delta","delta":{"type":"insert","model":"Task","data":{"id":1,"title":"a","owner":7},"offset":"00000000016B37700000000000000000","lsn":"0/16B3740","xid":742}}}`,
		`{"service":"datasync","message":{"type":"delta","delta":{"type":"delete","model":"Task","data":{"id":1,"title":"a","owner":7},"offset":"00000000016B37700000000000000001","lsn":"0/16B3740","xid":742}}}`,
		`{"service":"datasync","message":{"type":"delta","delta":{"type":"insert","model":"Task","data":{"id":2,"title":"c","owner":7},"unchanged":["body"],"offset":"00000000016B37700000000000000002","lsn":"0/16B3740","xid":742}}}`,
		`{"service":"datasync","message":{"type":"delta","delta":{"type":"truncate","model":"Task","offset":"00000000016B37700000000000000003","lsn":"0/16B3740","xid":742}}}`,
	}
	if len(got) != len(want) {
		t.Fatalf("owner 7 got %d messages, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("message %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	// The broadcast subscriber sees the updates as updates; under DEFAULT
	// the old row is the key.
	msgs := rpctest.Msgs(t, all)
	if len(msgs) != 4 || !strings.Contains(msgs[2].String(), `"type":"update","model":"Task","newData":{"id":2,"title":"c","owner":7},"oldData":{"id":2}`) {
		t.Fatalf("broadcast subscriber got %v", msgs)
	}

	// Position: a publishDeltas batch counts after the transaction.
	if p := e.Position(); p != "00000000016B377000000000" {
		t.Fatalf("Position: got %s", p)
	}
}

// TestApplySQLMessages: snorky.publish and snorky.publish_delta messages are
// handled in their place among the transaction's changes; malformed ones
// are skipped and counted.
func TestApplySQLMessages(t *testing.T) {
	e, reg := newTestEngine(t)
	c := acquire(t, e, reg, `[{"dealer":"ByOwner","query":7}]`)
	var published []string
	e.cfg.Publish = func(ch, msg json.RawMessage) error {
		published = append(published, string(ch)+"="+string(msg))
		// What the transaction changed before the publish is already queued.
		if n := len(c.Take()); n != 1 {
			t.Errorf("at publish time %d deltas were queued, want 1", n)
		}
		return nil
	}
	msg := func(index int, payload string) cdc.Message {
		return cdc.Message{Index: index, Prefix: "snorky", Content: []byte(payload), LSN: 0x100}
	}
	txn := &cdc.Txn{Xid: 9, CommitLSN: 0x200, EndLSN: 0x208,
		Changes: []cdc.Change{
			{Table: "public.tasks", Op: cdc.Insert, New: cols("id", "1", "owner", "7")},
		},
		Messages: []cdc.Message{
			msg(1, `{"op":"publish","channel":{"room":1},"message":"shipped"}`),
			msg(1, `{"op":"delta","model":"Task","type":"insert","data":{"id":2,"owner":7},"old_data":null}`),
			msg(1, `{"op":"delta","model":"Nope","type":"insert","data":{}}`),
			msg(1, `not json`),
			msg(1, `{"op":"delta","model":"Task","type":"update","data":{"id":2,"owner":8},"old_data":{"id":2,"owner":7}}`),
		},
	}
	if err := e.Apply(txn); err != nil {
		t.Fatal(err)
	}
	if len(published) != 1 || published[0] != `{"room":1}="shipped"` {
		t.Fatalf("published %v", published)
	}
	got := rpctest.Msgs(t, c)
	if len(got) != 2 || !strings.Contains(got[0].String(), `"type":"insert","model":"Task","data":{"id":2,"owner":7},"offset":"00000000000002080000000000000001"`) ||
		!strings.Contains(got[1].String(), `"type":"delete","model":"Task","data":{"id":2,"owner":7},"offset":"00000000000002080000000000000002"`) {
		t.Fatalf("got %v", got)
	}
	if n := testutil.ToFloat64(e.metrics.badMessages); n != 2 {
		t.Fatalf("rejected messages: got %v, want 2", n)
	}
}
