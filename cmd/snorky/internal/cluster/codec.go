package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/snorkyhq/snorky/cdc"
)

// A stream message is one record of the replication stream as the slot's
// owner publishes it: a session start or a transaction (or a chunk of one).
// Its body is a compact binary encoding of the cdc types: the row values are
// already JSON text and are carried as they are.
//
//	version(1) kind(1) epoch(str) prev(u64) ...
//	start: from(u64) horizon(str)
//	txn:   xid(u32) commit(u64) end(u64) time(varint ns) flags(1)
//	       tables(n, str…) changes(n, change…) messages(n, message…)
//
// Integers of fixed width are big-endian; n and str lengths are uvarints.
const codecVersion = 1

// Record kinds.
const (
	kindStart  byte = 's'
	kindTxn    byte = 't'
	kindMarker byte = 'm' // where the stream stands, published when it is quiet
)

// Transaction flags.
const (
	flagPartial  = 1
	flagTooLarge = 2
)

// record is one decoded stream message.
type record struct {
	kind  byte
	epoch string
	// prev is the stream's position before this record: the end of the
	// last whole transaction published before it.
	prev cdc.LSN
	// start
	from    cdc.LSN
	horizon string
	// txn
	txn *cdc.Txn
}

// position is the stream's position after r: a whole transaction's end,
// else what it was before r.
func (r *record) position() cdc.LSN {
	if r.kind == kindTxn && !r.txn.Partial {
		return r.txn.EndLSN
	}
	return r.prev
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendColumns(b []byte, cols []cdc.Column) []byte {
	b = binary.AppendUvarint(b, uint64(len(cols)))
	for _, c := range cols {
		b = appendStr(b, c.Name)
		b = appendBytes(b, c.Value)
	}
	return b
}

func appendStrs(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendStr(b, s)
	}
	return b
}

// encodeStart encodes a session start.
func encodeStart(b []byte, epoch string, prev, from cdc.LSN, horizon string) []byte {
	b = append(b, codecVersion, kindStart)
	b = appendStr(b, epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(prev))
	b = binary.BigEndian.AppendUint64(b, uint64(from))
	return appendStr(b, horizon)
}

// encodeMarker encodes a marker: the stream stands at prev, in epoch. A
// quiet stream still holds a recent record, from which a node that joins
// begins.
func encodeMarker(b []byte, epoch string, prev cdc.LSN) []byte {
	b = append(b, codecVersion, kindMarker)
	b = appendStr(b, epoch)
	return binary.BigEndian.AppendUint64(b, uint64(prev))
}

// encodeTxn encodes a transaction or a chunk of one.
func encodeTxn(b []byte, epoch string, prev cdc.LSN, t *cdc.Txn) []byte {
	b = append(b, codecVersion, kindTxn)
	b = appendStr(b, epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(prev))
	b = binary.BigEndian.AppendUint32(b, t.Xid)
	b = binary.BigEndian.AppendUint64(b, uint64(t.CommitLSN))
	b = binary.BigEndian.AppendUint64(b, uint64(t.EndLSN))
	var ns int64
	if !t.CommitTime.IsZero() {
		ns = t.CommitTime.UnixNano()
	}
	b = binary.AppendVarint(b, ns)
	var flags byte
	if t.Partial {
		flags |= flagPartial
	}
	if t.TooLarge {
		flags |= flagTooLarge
	}
	b = append(b, flags)
	b = appendStrs(b, t.Tables)
	b = binary.AppendUvarint(b, uint64(len(t.Changes)))
	for i := range t.Changes {
		c := &t.Changes[i]
		b = appendStr(b, c.Table)
		b = append(b, byte(c.Op))
		b = appendColumns(b, c.New)
		b = appendColumns(b, c.Old)
		b = appendStrs(b, c.Unchanged)
	}
	b = binary.AppendUvarint(b, uint64(len(t.Messages)))
	for i := range t.Messages {
		m := &t.Messages[i]
		b = binary.AppendUvarint(b, uint64(m.Index))
		b = appendStr(b, m.Prefix)
		b = appendBytes(b, m.Content)
		b = binary.BigEndian.AppendUint64(b, uint64(m.LSN))
	}
	return b
}

var errCorrupt = errors.New("corrupt stream record")

// errVersion is a record of another codec version: the nodes run
// different Snorky versions.
var errVersion = errors.New("stream record of another version")

// decoder reads a record; the first error sticks.
type decoder struct {
	b   []byte
	err error
	// names interns table and column names: every row repeats them.
	names map[string]string
}

// name reads a string that recurs (a table or column name).
func (d *decoder) name() string {
	b := d.bytes()
	if d.names == nil {
		return string(b)
	}
	if s, ok := d.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.names) < 4096 {
		d.names[s] = s
	}
	return s
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *decoder) byte1() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u32() uint32 {
	if len(d.b) < 4 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks that at least min bytes per element
// remain, so that a corrupt length never allocates much.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/max(min, 1)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes()) }

func (d *decoder) strs() []string {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.str()
	}
	return ss
}

func (d *decoder) columns() []cdc.Column {
	n := d.count(2)
	if n == 0 {
		return nil
	}
	cols := make([]cdc.Column, n)
	for i := range cols {
		cols[i].Name = d.name()
		cols[i].Value = d.bytes()
	}
	return cols
}

// decodeRecord decodes a stream record. The record's values share body's
// memory.
func decodeRecord(body []byte) (*record, error) { return decodeRecordNames(body, nil) }

// decodeRecordNames is decodeRecord with names interned in names (nil:
// not interned).
func decodeRecordNames(body []byte, names map[string]string) (*record, error) {
	d := &decoder{b: body, names: names}
	if v := d.byte1(); d.err == nil && v != codecVersion {
		return nil, fmt.Errorf("%w: version %d (this node reads %d): run the same snorky version on every node", errVersion, v, codecVersion)
	}
	r := &record{kind: d.byte1()}
	r.epoch = d.str()
	r.prev = cdc.LSN(d.u64())
	switch r.kind {
	case kindMarker:
	case kindStart:
		r.from = cdc.LSN(d.u64())
		r.horizon = d.str()
	case kindTxn:
		t := &cdc.Txn{}
		t.Xid = d.u32()
		t.CommitLSN = cdc.LSN(d.u64())
		t.EndLSN = cdc.LSN(d.u64())
		if ns := d.varint(); ns != 0 {
			t.CommitTime = time.Unix(0, ns).UTC()
		}
		flags := d.byte1()
		t.Partial, t.TooLarge = flags&flagPartial != 0, flags&flagTooLarge != 0
		t.Tables = d.strs()
		if n := d.count(4); n > 0 {
			t.Changes = make([]cdc.Change, n)
			for i := range t.Changes {
				c := &t.Changes[i]
				c.Table = d.name()
				c.Op = cdc.Op(d.byte1())
				c.New = d.columns()
				c.Old = d.columns()
				c.Unchanged = d.strs()
			}
		}
		if n := d.count(11); n > 0 {
			t.Messages = make([]cdc.Message, n)
			for i := range t.Messages {
				m := &t.Messages[i]
				m.Index = int(d.uvarint())
				m.Prefix = d.str()
				m.Content = d.bytes()
				m.LSN = cdc.LSN(d.u64())
			}
		}
		r.txn = t
	default:
		d.fail()
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}
