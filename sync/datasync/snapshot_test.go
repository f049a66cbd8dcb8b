package datasync

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

func TestParseSnapshot(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"783:790:784,787", true},
		{"10:10:", true},
		{"10:9:", false},
		{"1:2", false},
		{"a:2:", false},
		{"5:9:4", false}, // in progress below xmin
		{"5:9:9", false}, // in progress at xmax
		{"5:9:6,x", false},
	} {
		if _, ok := parseSnapshot(tc.in); ok != tc.ok {
			t.Errorf("parseSnapshot(%q): got ok=%v, want %v", tc.in, ok, tc.ok)
		}
	}
}

func TestVisibility(t *testing.T) {
	s, _ := parseSnapshot("783:790:784,787")
	for _, tc := range []struct {
		xid  uint32
		want bool
	}{
		{700, true}, {783, true}, {784, false}, {785, true}, {787, false}, {789, true}, {790, false}, {900, false},
	} {
		if got := s.visible(tc.xid); got != tc.want {
			t.Errorf("visible(%d): got %v, want %v", tc.xid, got, tc.want)
		}
	}
	// Across an epoch boundary: xmax in epoch 1, xid 5 of epoch 1 is after
	// xmin, and 0xFFFFFFF0 belongs to epoch 0.
	s2, _ := parseSnapshot("4294967290:4294967306:4294967301")
	if s2.visible(0xFFFFFFF0) != true || s2.visible(5) != false || s2.visible(3) != true || s2.visible(20) != false {
		t.Errorf("epoch widening wrong")
	}
}

func TestSnapshotHandoff(t *testing.T) {
	e, reg := newTestEngineDB(t, 64<<20)
	if err := e.SetHorizon("100:100:"); err != nil {
		t.Fatal(err)
	}
	insert := func(xid uint32, id int) {
		t.Helper()
		lsn := cdc.LSN(xid) * 100
		if err := e.Apply(&cdc.Txn{Xid: xid, CommitLSN: lsn, EndLSN: lsn + 8, Changes: []cdc.Change{
			{Table: "public.tasks", Op: cdc.Insert, New: cols("id", strconv.Itoa(id), "owner", "7")},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	insert(100, 1) // visible to the snapshot
	insert(105, 2) // in progress when the snapshot was taken
	insert(110, 3) // started after it
	tok, err := e.authorize(json.RawMessage(`[{"dealer":"ByOwner","query":7}]`), json.RawMessage(`"101:108:105"`))
	if err != nil {
		t.Fatal(err)
	}
	insert(104, 4) // committed before the snapshot, decoded late: visible
	insert(107, 5) // visible
	insert(120, 6)
	c := rpctest.NewConn()
	q, _ := json.Marshal(tok)
	r := rpctest.Call(t, reg, c, "datasync", "acquireSubscription", `{"token":`+string(q)+`}`)
	if r.Err() != "" {
		t.Fatalf("acquire: %s", r.Err())
	}
	var ids []string
	for _, m := range append(r.Before, rpctest.Msgs(t, c)...) {
		if m.Type() == "delta" {
			var v struct {
				Data struct{ ID int } `json:"data"`
			}
			json.Unmarshal(m.Message["delta"], &v)
			ids = append(ids, strconv.Itoa(v.Data.ID))
		}
	}
	if got := strings.Join(ids, ","); got != "2,3,6" {
		t.Fatalf("got rows %s, want 2,3,6 (the transactions the snapshot did not see)", got)
	}

	for _, tc := range []struct{ snap, want string }{
		{`"x"`, "Invalid snapshot"},
		{`7`, "Invalid snapshot"},
		{`"9:5:"`, "Invalid snapshot"},
	} {
		if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(tc.snap)); err == nil || err.Error() != tc.want {
			t.Errorf("snapshot %s: got %v, want %q", tc.snap, err, tc.want)
		}
	}
}

func TestSnapshotTooOld(t *testing.T) {
	e, _ := newTestEngineDB(t, 1) // forgets every transaction at once
	e.SetHorizon("100:100:")
	for xid := uint32(100); xid < 110; xid++ {
		e.Apply(&cdc.Txn{Xid: xid, CommitLSN: cdc.LSN(xid), EndLSN: cdc.LSN(xid) + 1, Changes: []cdc.Change{
			{Table: "public.tasks", Op: cdc.Insert, New: cols("id", "1", "owner", "7")},
		}})
	}
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"105:105:"`)); err == nil || err.Error() != "Snapshot too old" {
		t.Fatalf("got %v, want Snapshot too old", err)
	}
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"110:110:"`)); err != nil {
		t.Fatalf("a snapshot that saw every forgotten transaction: got %v", err)
	}
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"103:111:104"`)); err == nil {
		t.Fatal("a forgotten transaction in progress for the snapshot must be refused")
	}
}

// TestSnapshotHorizon: a snapshot is honoured only if every transaction it
// did not see is one the engine has or will get: none before the horizon
// (the snapshot taken before the reader started streaming).
func TestSnapshotHorizon(t *testing.T) {
	e, _ := newTestEngineDB(t, 64<<20)
	if _, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"50:60:"`)); err == nil || err.Error() != "Snapshot too old" {
		t.Fatalf("before the horizon is known: got %v, want Snapshot too old", err)
	}
	e.SetHorizon("100:110:103,107")
	for _, tc := range []struct {
		snap string
		ok   bool
	}{
		{"100:110:103,107", true},  // the horizon itself
		{"105:120:107,115", true},  // newer
		{"90:105:95", false},       // older: 105..109 committed before streaming
		{"100:112:101,103", false}, // 101 was finished for the horizon
		{"103:112:103,107", true},
	} {
		_, err := e.authorize(json.RawMessage(`[]`), json.RawMessage(`"`+tc.snap+`"`))
		if (err == nil) != tc.ok {
			t.Errorf("snapshot %s: got %v, want ok=%v", tc.snap, err, tc.ok)
		}
	}
}
