package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/snorkyhq/snorky/cdc"
)

// TestFeedNewEpochAfterGap: a node that lost records (a gap) and then meets
// a transaction of a new epoch part-way skips the rest of it and begins the
// new epoch after it (StartStream); resetting the old epoch's window would
// leave the engine on an epoch whose positions no longer follow.
func TestFeedNewEpochAfterGap(t *testing.T) {
	rec := &recorder{}
	f := &Feed{target: rec, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	for _, r := range []*record{
		{kind: kindStart, epoch: "e1", from: 100},
		{kind: kindTxn, epoch: "e2", prev: 200, txn: &cdc.Txn{Xid: 7, EndLSN: 300, Partial: true}},
		{kind: kindTxn, epoch: "e2", prev: 200, txn: &cdc.Txn{Xid: 7, EndLSN: 300}},
		{kind: kindTxn, epoch: "e2", prev: 300, txn: &cdc.Txn{Xid: 8, EndLSN: 400}},
	} {
		if err := f.handle(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.kind == kindStart {
			f.gap = true // records lost after the session start
		}
	}
	want := []string{fmt.Sprintf("e1@%s", cdc.LSN(100)), fmt.Sprintf("e2@%s", cdc.LSN(300))}
	if !slices.Equal(rec.starts, want) || len(rec.resets) > 0 {
		t.Errorf("stream starts %v and resets %v, want starts %v and no reset", rec.starts, rec.resets, want)
	}
	if got := rec.applied(); len(got) != 1 || got[0].Xid != 8 {
		t.Errorf("applied %d transactions, want only xid 8 (7 was met part-way)", len(got))
	}
}
