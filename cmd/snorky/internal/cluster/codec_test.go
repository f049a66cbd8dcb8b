package cluster

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cdc"
)

func sampleTxn() *cdc.Txn {
	return &cdc.Txn{
		Xid: 4242, CommitLSN: 0x16B374D848, EndLSN: 0x16B374D878,
		CommitTime: time.Date(2026, 12, 3, 9, 30, 0, 123456000, time.UTC),
		Changes: []cdc.Change{
			{Table: "public.tasks", Op: cdc.Insert, New: []cdc.Column{{Name: "id", Value: json.RawMessage(`1`)}, {Name: "title", Value: json.RawMessage(`"a \"b\""`)}}},
			{Table: "public.tasks", Op: cdc.Update,
				New:       []cdc.Column{{Name: "id", Value: json.RawMessage(`1`)}},
				Old:       []cdc.Column{{Name: "id", Value: json.RawMessage(`1`)}, {Name: "big", Value: json.RawMessage(`12345678901234567890`)}},
				Unchanged: []string{"blob"}},
			{Table: "app.notes", Op: cdc.Delete, Old: []cdc.Column{{Name: "id", Value: json.RawMessage(`null`)}}},
			{Table: "app.notes", Op: cdc.Truncate},
		},
		Messages: []cdc.Message{{Index: 2, Prefix: "snorky", Content: []byte(`{"deltas":[]}`), LSN: 0x16B374D860}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	txn := sampleTxn()
	r, err := decodeRecord(encodeTxn(nil, "ep1", 0x10, txn))
	if err != nil {
		t.Fatal(err)
	}
	if r.kind != kindTxn || r.epoch != "ep1" || r.prev != 0x10 || r.position() != txn.EndLSN {
		t.Fatalf("header %+v", r)
	}
	if !reflect.DeepEqual(r.txn, txn) {
		t.Fatalf("txn\n got %+v\nwant %+v", r.txn, txn)
	}

	chunk := &cdc.Txn{Xid: 7, Partial: true, Changes: txn.Changes[:1]}
	r, err = decodeRecord(encodeTxn(nil, "ep1", 0x20, chunk))
	if err != nil {
		t.Fatal(err)
	}
	if !r.txn.Partial || r.position() != 0x20 || !reflect.DeepEqual(r.txn, chunk) {
		t.Fatalf("chunk %+v position %s", r.txn, r.position())
	}

	big := &cdc.Txn{Xid: 8, EndLSN: 0x30, TooLarge: true, Tables: []string{"public.tasks", "app.notes"}}
	r, err = decodeRecord(encodeTxn(nil, "", 0x20, big))
	if err != nil || !reflect.DeepEqual(r.txn, big) {
		t.Fatalf("too large: %v %+v", err, r)
	}

	r, err = decodeRecord(encodeMarker(nil, "ep3", 0x40))
	if err != nil || r.kind != kindMarker || r.epoch != "ep3" || r.prev != 0x40 || r.position() != 0x40 {
		t.Fatalf("marker %+v %v", r, err)
	}

	r, err = decodeRecord(encodeStart(nil, "ep2", 0x20, 0x18, "100:105:101,103"))
	if err != nil {
		t.Fatal(err)
	}
	if r.kind != kindStart || r.epoch != "ep2" || r.prev != 0x20 || r.from != 0x18 || r.horizon != "100:105:101,103" || r.position() != 0x20 {
		t.Fatalf("start %+v", r)
	}
}

func TestCodecRejectsCorruption(t *testing.T) {
	body := encodeTxn(nil, "ep1", 0x10, sampleTxn())
	for n := 0; n < len(body); n++ {
		if _, err := decodeRecord(body[:n]); err == nil {
			t.Fatalf("a record cut to %d of %d bytes decoded", n, len(body))
		}
	}
	if _, err := decodeRecord(append(body, 0)); err == nil {
		t.Fatal("trailing bytes accepted")
	}
	other := append([]byte{}, body...)
	other[0] = 9
	if _, err := decodeRecord(other); err == nil {
		t.Fatal("another codec version accepted")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeTxn(nil, "ep1", 0x10, sampleTxn()))
	f.Add(encodeStart(nil, "ep", 1, 2, "1:2:"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeRecord(body)
		if err != nil {
			return
		}
		// What decodes encodes to the same bytes.
		var again []byte
		switch r.kind {
		case kindStart:
			again = encodeStart(nil, r.epoch, r.prev, r.from, r.horizon)
		case kindMarker:
			again = encodeMarker(nil, r.epoch, r.prev)
		default:
			again = encodeTxn(nil, r.epoch, r.prev, r.txn)
		}
		if r2, err := decodeRecord(again); err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("re-encoding changed the record: %v", err)
		}
	})
}
