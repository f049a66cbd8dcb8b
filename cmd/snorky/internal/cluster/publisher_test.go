package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/natslocal"
)

// recorder is a Target that records what the feed gives it.
type recorder struct {
	mu     sync.Mutex
	starts []string
	resets []cdc.LSN
	txns   []*cdc.Txn
}

func (r *recorder) StartStream(epoch string, from cdc.LSN, horizon string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, fmt.Sprintf("%s@%s", epoch, from))
	return nil
}

func (r *recorder) Apply(t *cdc.Txn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.txns = append(r.txns, t)
	return nil
}

func (r *recorder) Reset(from cdc.LSN, _, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resets = append(r.resets, from)
}

func (r *recorder) applied() []*cdc.Txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*cdc.Txn(nil), r.txns...)
}

// testStream starts NATS, the stream, a publisher that takes maxPayload
// as NATS's limit, and a feed into a recorder.
func testStream(t *testing.T, maxPayload int) (*Publisher, *recorder) {
	t.Helper()
	ns, err := natslocal.Start(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "snorky_t_wal", Subjects: []string{"snorky.t.wal"}}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	m := NewMetrics(nil)
	p := NewPublisher(ctx, js, "snorky_t_wal", "snorky.t.wal", maxPayload, 0, log, m)
	rec := &recorder{}
	f := NewFeed(js, "snorky_t_wal", "snorky.t.wal", rec, nil, log, m)
	go f.Run(ctx)
	if err := p.StartStream("ep", 0x100, ""); err != nil {
		t.Fatal(err)
	}
	return p, rec
}

func waitApplied(t *testing.T, rec *recorder, n int) []*cdc.Txn {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := rec.applied()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed applied %d records, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func row(table string, id, size int) cdc.Change {
	v, _ := json.Marshal(strings.Repeat("x", size))
	return cdc.Change{Table: table, Op: cdc.Insert, New: []cdc.Column{{Name: "id", Value: json.RawMessage(fmt.Sprint(id))}, {Name: "v", Value: v}}}
}

// TestPublisherSplitsInOrder: a transaction over the largest message is
// split into chunks that keep its changes and logical messages in their
// order, and the last carries the commit.
func TestPublisherSplitsInOrder(t *testing.T) {
	p, rec := testStream(t, 16<<10)
	txn := &cdc.Txn{Xid: 7, CommitLSN: 0x200, EndLSN: 0x210}
	// msg0 before change 0; then changes 0..5 with msg1 after change 2
	// and msg2, msg3 at the end.
	for i := range 6 {
		txn.Changes = append(txn.Changes, row("public.a", i, 3000))
	}
	big := []byte(`{"op":"publish","pad":"` + strings.Repeat("m", 3000) + `"}`)
	txn.Messages = []cdc.Message{{Index: 0, Prefix: "m0", Content: big}, {Index: 3, Prefix: "m1", Content: big},
		{Index: 6, Prefix: "m2", Content: big}, {Index: 6, Prefix: "m3", Content: big}}
	if err := p.Apply(txn); err != nil {
		t.Fatal(err)
	}
	if lim, limited := p.ConfirmLimit(); limited && lim >= txn.EndLSN {
		t.Fatalf("confirm limit %s before the stream stored the transaction", lim)
	}
	var got []*cdc.Txn
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = rec.applied()
		if n := len(got); n > 0 && !got[n-1].Partial {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the whole transaction did not arrive: %d chunks", len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(got) < 2 {
		t.Fatalf("%d records, want the transaction split", len(got))
	}
	var seq []string
	for i, c := range got {
		if c.Xid != 7 || c.Partial != (i < len(got)-1) {
			t.Fatalf("chunk %d: xid %d partial %v", i, c.Xid, c.Partial)
		}
		mi := 0
		for ci := 0; ci <= len(c.Changes); ci++ {
			for mi < len(c.Messages) && c.Messages[mi].Index <= ci {
				seq = append(seq, c.Messages[mi].Prefix)
				mi++
			}
			if ci < len(c.Changes) {
				seq = append(seq, "c"+string(c.Changes[ci].New[0].Value))
			}
		}
		if mi != len(c.Messages) {
			t.Fatalf("chunk %d: messages with an Index past its changes: %+v", i, c.Messages)
		}
	}
	if want := "m0 c0 c1 c2 m1 c3 c4 c5 m2 m3"; strings.Join(seq, " ") != want {
		t.Fatalf("order after splitting: %s, want %s", strings.Join(seq, " "), want)
	}
	last := got[len(got)-1]
	if last.EndLSN != 0x210 || last.CommitLSN != 0x200 {
		t.Fatalf("the last chunk carries %s/%s, want the commit", last.CommitLSN, last.EndLSN)
	}
	waitLimit(t, p, 0x210)
}

func waitLimit(t *testing.T, p *Publisher, want cdc.LSN) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lim, limited := p.ConfirmLimit()
		if !limited || lim >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("confirm limit stayed at %s, want %s once stored", lim, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPublisherTooLarge: a change larger than the largest message turns its
// transaction into one too large, listing every table it touched, its
// earlier chunks' included.
func TestPublisherTooLarge(t *testing.T) {
	p, rec := testStream(t, 16<<10)
	// A whole transaction of one huge row.
	if err := p.Apply(&cdc.Txn{Xid: 1, CommitLSN: 0x300, EndLSN: 0x310, Changes: []cdc.Change{row("public.big", 1, 40000)}}); err != nil {
		t.Fatal(err)
	}
	// A chunked one: a small chunk of public.a, then public.b with a huge row.
	if err := p.Apply(&cdc.Txn{Xid: 2, Partial: true, Changes: []cdc.Change{row("public.a", 1, 10)}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(&cdc.Txn{Xid: 2, CommitLSN: 0x400, EndLSN: 0x410, Changes: []cdc.Change{row("public.b", 2, 40000), row("public.c", 3, 10)}}); err != nil {
		t.Fatal(err)
	}
	got := waitApplied(t, rec, 3)
	if g := got[0]; !g.TooLarge || g.EndLSN != 0x310 || strings.Join(g.Tables, ",") != "public.big" || len(g.Changes) != 0 {
		t.Fatalf("huge row: got %+v, want too large with table public.big", g)
	}
	if g := got[1]; !g.Partial || g.Xid != 2 {
		t.Fatalf("second record: %+v, want the first chunk", g)
	}
	g := got[2]
	tables := map[string]bool{}
	for _, tb := range g.Tables {
		tables[tb] = true
	}
	if !g.TooLarge || g.EndLSN != 0x410 || !tables["public.a"] || !tables["public.b"] || !tables["public.c"] {
		t.Fatalf("chunked: got %+v, want too large with tables a, b and c", g)
	}
	waitLimit(t, p, 0x410)
}
