package datasync

import (
	"encoding/json"
	"fmt"

	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Routing: which acquired subscriptions a delta reaches (the dealers'
// match), and the queuing of each connection's share of a transaction,
// encoded once per delta and shape. Applying transactions (engine.go)
// calls deliverLocked under Engine.mu.

// How a subscription sees a delta: it matched the old row, the new row, or
// both (spec §3.2).
const (
	inOld = 1 << iota
	inNew
)

// matchLocked marks in e.marks every acquired subscription that d reaches,
// with how (spec §3.2).
func (e *Engine) matchLocked(d *delta) {
	clear(e.marks)
	ds := e.byModel[d.model.name]
	items := 0
	for _, dl := range ds {
		items += dl.Len()
	}
	if items == 0 {
		return // nobody to route to: do not even parse the row
	}
	switch d.typ {
	case typeTruncate:
		for _, dl := range ds {
			dl.All(func(sub uint64) { e.marks[sub] = inNew })
		}
	case typeInsert, typeDelete:
		row := dealers.NewRowValid(d.data)
		for _, dl := range ds {
			dl.Match(row, func(sub uint64) { e.marks[sub] = inNew })
		}
	case typeUpdate:
		newRow, oldRow := dealers.NewRowValid(d.data), dealers.NewRowValid(d.old)
		for _, dl := range ds {
			dl.Match(oldRow, func(sub uint64) { e.marks[sub] |= inOld })
			dl.Match(newRow, func(sub uint64) { e.marks[sub] |= inNew })
		}
	}
}

// deliverLocked routes the deltas [from, to) of t to the acquired
// subscriptions and queues each connection's share contiguously: as frames
// encoded once and shared when the transaction is small, as a stream the
// connection's writer encodes when it is large (spec §3.10).
func (e *Engine) deliverLocked(t *winTxn, from, to int) {
	for i := from; i < to; i++ {
		d := &t.deltas[i]
		e.matchLocked(d)
		if len(e.marks) == 0 {
			continue
		}
		e.metrics.deltas.Inc()
		for seq, mark := range e.marks {
			s := e.subs[seq]
			if s == nil || s.snap != nil && t.db && s.snap.visible(t.xid) {
				continue
			}
			e.metrics.deliveries.Inc()
			o := e.outs[s.owner]
			if o == nil {
				o = e.spareOut()
				e.outs[s.owner] = o
				e.order = append(e.order, s.owner)
			}
			o.add(t, uint32(i), mark)
		}
	}
	if len(e.order) == 0 {
		return
	}
	small := t.size <= smallTxnBytes
	var cache frameCache
	for _, c := range e.order {
		o := e.outs[c]
		switch {
		case o.n == 1:
			p := &o.parts[0]
			rpc.SendImmediate(c, cache.frame(e, t, p.runs[0].start, p.runs[0].mark, small))
		case small:
			frames := make([][]byte, 0, o.n)
			for _, p := range o.parts {
				for _, r := range p.runs {
					for k := uint32(0); k < r.n; k++ {
						frames = append(frames, cache.frame(e, t, r.start+k, r.mark, true))
					}
				}
			}
			rpc.SendImmediate(c, frames...)
		default:
			rpc.SendStream(c, &txnStream{e: e, parts: o.parts})
			o = nil // the stream keeps its runs
		}
		delete(e.outs, c)
		if o != nil {
			o.reset()
			e.spare = append(e.spare, o)
		}
	}
	clear(e.order)
	e.order = e.order[:0]
}

// spareOut returns a reset connOut, reused when one is spare.
func (e *Engine) spareOut() *connOut {
	if n := len(e.spare); n > 0 {
		o := e.spare[n-1]
		e.spare = e.spare[:n-1]
		return o
	}
	return &connOut{}
}

// smallTxnBytes is the size up to which a transaction's frames are
// encoded once and shared; larger ones are streamed (spec §3.10).
const smallTxnBytes = 128 << 10

// frameCache shares a small transaction's encoded frames among the
// connections it goes to, by delta index and mark.
type frameCache struct {
	frames [][4][]byte
}

func (fc *frameCache) frame(e *Engine, t *winTxn, i uint32, mark uint8, keep bool) []byte {
	if !keep {
		return e.encode(nil, t, i, mark)
	}
	if fc.frames == nil {
		fc.frames = make([][4][]byte, len(t.deltas))
	}
	f := fc.frames[i][mark]
	if f == nil {
		f = e.encode(nil, t, i, mark)
		fc.frames[i][mark] = f
	}
	return f
}

// encode appends the notification frame of delta i of t as seen by a
// subscription with the given mark (spec §3.2: update, or the insert or
// delete it becomes).
func (e *Engine) encode(b []byte, t *winTxn, i uint32, mark uint8) []byte {
	d := &t.deltas[i]
	typ, data := d.typ, d.data
	if d.typ == typeUpdate {
		switch mark {
		case inNew:
			typ = typeInsert
		case inOld:
			typ, data = typeDelete, d.old
		}
	}
	if b == nil {
		b = make([]byte, 0, 128+len(e.name)+len(d.model.quoted)+len(data)+len(d.old))
	}
	b = append(b, `{"service":`...)
	b = append(b, e.name...)
	b = append(b, `,"message":{"type":"delta","delta":{"type":"`...)
	b = append(b, typeNames[typ]...)
	b = append(b, `","model":`...)
	b = append(b, d.model.quoted...)
	switch typ {
	case typeInsert, typeDelete:
		b = append(b, `,"data":`...)
		b = append(b, data...)
	case typeUpdate:
		b = append(b, `,"newData":`...)
		b = append(b, d.data...)
		b = append(b, `,"oldData":`...)
		b = append(b, d.old...)
	}
	if u := t.unchanged[i]; len(u) > 0 && (typ == typeUpdate || typ == typeInsert) {
		u, _ := json.Marshal(u)
		b = append(b, `,"unchanged":`...)
		b = append(b, u...)
	}
	b = append(b, `,"offset":"`...)
	b = appendOffset(b, t.pos.lsn, t.pos.batch, i)
	b = append(b, '"')
	if t.db {
		b = append(b, `,"lsn":"`...)
		b = append(b, t.lsn.String()...)
		b = append(b, `","xid":`...)
		b = fmt.Appendf(b, "%d", t.xid)
	}
	return append(b, "}}}"...)
}

// marksFor evaluates one subscription's items against a delta.
func (e *Engine) marksFor(s *subscription, d *delta) uint8 {
	var mark uint8
	var oldRow, newRow *dealers.Row
	for _, it := range s.items {
		if it.d.Model() != d.model.name {
			continue
		}
		switch d.typ {
		case typeTruncate:
			mark |= inNew
		case typeInsert, typeDelete:
			if newRow == nil {
				newRow, _ = dealers.NewRow(d.data)
			}
			if newRow != nil && it.d.MatchQuery(it.q, newRow) {
				mark |= inNew
			}
		case typeUpdate:
			if newRow == nil {
				newRow, _ = dealers.NewRow(d.data)
				oldRow, _ = dealers.NewRow(d.old)
			}
			if oldRow != nil && it.d.MatchQuery(it.q, oldRow) {
				mark |= inOld
			}
			if newRow != nil && it.d.MatchQuery(it.q, newRow) {
				mark |= inNew
			}
		}
	}
	return mark
}
