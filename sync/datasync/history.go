package datasync

import "time"

// history keeps the recent PostgreSQL transactions, as routed deltas, so
// that a subscription authorised with a snapshot (D8) receives the
// transactions its snapshot did not see even when they committed before the
// authorisation. It is bounded in age and bytes; what it forgets is
// remembered as transaction IDs (to refuse snapshots that would need it).
type history struct {
	maxAge   time.Duration
	maxBytes int

	txns  []histTxn // oldest first; txns[head:] are live
	head  int
	bytes int

	// trimmed remembers the IDs of recently forgotten transactions, and
	// forgottenMax bounds the rest (32-bit IDs widened at check time).
	trimmed      map[uint32]struct{}
	trimmedFIFO  []uint32
	trimmedMax   uint32
	anyTrimmed   bool
	forgottenMax uint32
	anyForgotten bool
}

type histTxn struct {
	xid    uint32
	at     time.Time
	deltas []delta
	size   int
}

const rememberTrimmed = 1 << 16

func newHistory(maxAge time.Duration, maxBytes int) *history {
	return &history{maxAge: maxAge, maxBytes: maxBytes, trimmed: map[uint32]struct{}{}}
}

func (h *history) add(t histTxn, now time.Time) {
	h.txns = append(h.txns, t)
	h.bytes += t.size
	for h.head < len(h.txns) && (h.bytes > h.maxBytes || now.Sub(h.txns[h.head].at) > h.maxAge) {
		old := &h.txns[h.head]
		h.forget(old.xid)
		h.bytes -= old.size
		*old = histTxn{}
		h.head++
	}
	if h.head > 1024 && h.head*2 > len(h.txns) {
		h.txns = append([]histTxn(nil), h.txns[h.head:]...)
		h.head = 0
	}
}

func (h *history) forget(xid uint32) {
	if !h.anyTrimmed || int32(xid-h.trimmedMax) > 0 {
		h.trimmedMax = xid
	}
	h.anyTrimmed = true
	h.trimmed[xid] = struct{}{}
	h.trimmedFIFO = append(h.trimmedFIFO, xid)
	if len(h.trimmedFIFO) > rememberTrimmed {
		x := h.trimmedFIFO[0]
		h.trimmedFIFO = h.trimmedFIFO[1:]
		delete(h.trimmed, x)
		if !h.anyForgotten || int32(x-h.forgottenMax) > 0 {
			h.forgottenMax = x
		}
		h.anyForgotten = true
	}
}

// covers reports whether every transaction the snapshot did not see and
// that the history no longer holds is... none: a snapshot is honoured only
// if no forgotten transaction is invisible to it.
func (h *history) covers(s *snapshot) bool {
	if !h.anyTrimmed {
		return true
	}
	if widen(h.trimmedMax, s.xmax) >= s.xmax {
		return false // a forgotten transaction started after the snapshot
	}
	for x := range s.xip {
		if _, ok := h.trimmed[uint32(x)]; ok {
			return false
		}
		if h.anyForgotten && x <= widen(h.forgottenMax, s.xmax) {
			return false // it may have been forgotten; refuse rather than risk a gap
		}
	}
	return true
}

// each calls f for every transaction held, oldest first.
func (h *history) each(f func(*histTxn)) {
	for i := h.head; i < len(h.txns); i++ {
		f(&h.txns[i])
	}
}
