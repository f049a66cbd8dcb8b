package datasync

import (
	"sort"
	"time"

	"github.com/snorkyhq/snorky/cdc"
)

// pos is a stream position (spec §3.6): the end LSN of the last PostgreSQL
// transaction taken, and the publishDeltas batches accepted since it (only
// without a database: with one, batches are transactions of their own).
type pos struct {
	lsn   cdc.LSN
	batch uint32
}

func (p pos) cmp(q pos) int {
	switch {
	case p.lsn < q.lsn:
		return -1
	case p.lsn > q.lsn:
		return 1
	case p.batch < q.batch:
		return -1
	case p.batch > q.batch:
		return 1
	}
	return 0
}

// offset is the place of one delta: its transaction's position and its
// index in the transaction. A position as a whole (every delta of its
// transaction included) is the offset with index lastIdx.
type offset struct {
	pos
	idx uint32
}

const lastIdx = ^uint32(0)

func (o offset) cmp(p offset) int {
	if c := o.pos.cmp(p.pos); c != 0 {
		return c
	}
	switch {
	case o.idx < p.idx:
		return -1
	case o.idx > p.idx:
		return 1
	}
	return 0
}

const hexDigits = "0123456789ABCDEF"

// appendOffset appends the 32 upper-case hex digits of an offset.
func appendOffset(b []byte, lsn cdc.LSN, batch, idx uint32) []byte {
	for s := 60; s >= 0; s -= 4 {
		b = append(b, hexDigits[lsn>>uint(s)&0xF])
	}
	for s := 28; s >= 0; s -= 4 {
		b = append(b, hexDigits[batch>>uint(s)&0xF])
	}
	for s := 28; s >= 0; s -= 4 {
		b = append(b, hexDigits[idx>>uint(s)&0xF])
	}
	return b
}

func (o offset) String() string {
	return string(appendOffset(make([]byte, 0, 32), o.lsn, o.batch, o.idx))
}

// parseHex parses exactly len(s) upper- or lower-case hex digits.
func parseHex(s string) (uint64, bool) {
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(c)
	}
	return v, true
}

// parseOffset parses a 32-digit offset, or a 24-digit position (a token's
// start), which stands for every delta of its transaction.
func parseOffset(s string) (offset, bool) {
	if len(s) != 32 && len(s) != 24 {
		return offset{}, false
	}
	l, ok1 := parseHex(s[:16])
	b, ok2 := parseHex(s[16:24])
	if !ok1 || !ok2 {
		return offset{}, false
	}
	o := offset{pos{cdc.LSN(l), uint32(b)}, lastIdx}
	if len(s) == 32 {
		i, ok := parseHex(s[24:])
		if !ok {
			return offset{}, false
		}
		o.idx = uint32(i)
	}
	return o, true
}

// winTxn is one transaction (or batch) held in the replay window. It is
// immutable once added, so connection writers read its deltas without a
// lock.
type winTxn struct {
	pos pos
	db  bool    // from PostgreSQL: xid and lsn are set
	xid uint32  // transaction ID (32-bit, as logical decoding gives it)
	lsn cdc.LSN // commit LSN
	at  time.Time
	// deltas are the transaction's deltas of configured models, in order.
	deltas []delta
	// unchanged lists, by delta index, the unchanged-TOAST columns left out
	// of a row (spec §3.8).
	unchanged map[uint32][]string
	size      int
	// tooLarge names the models of a transaction over database.max_tx_bytes:
	// it is held without deltas, and replaying it means must-refetch.
	tooLarge []string
}

// window is the replay window (spec §3.9): the recent transactions, as
// deltas, bounded in age and bytes. Every transaction after floor is held.
// It also serves snapshot handoff (D8): what it forgets is remembered as
// transaction IDs, to refuse snapshots that would need it.
type window struct {
	maxAge   time.Duration
	maxBytes int

	txns  []*winTxn // oldest first; txns[head:] are live
	head  int
	bytes int
	floor offset

	// trimmed remembers the IDs of recently forgotten transactions, and
	// forgottenMax bounds the rest (32-bit IDs widened at check time).
	trimmed      map[uint32]struct{}
	trimmedFIFO  []uint32
	trimmedMax   uint32
	anyTrimmed   bool
	forgottenMax uint32
	anyForgotten bool
}

const rememberTrimmed = 1 << 16

func newWindow(maxAge time.Duration, maxBytes int) *window {
	return &window{maxAge: maxAge, maxBytes: maxBytes, trimmed: map[uint32]struct{}{}, floor: offset{idx: lastIdx}}
}

// reset empties the window: everything after floor is to come.
func (w *window) reset(floor pos) {
	*w = window{maxAge: w.maxAge, maxBytes: w.maxBytes, trimmed: map[uint32]struct{}{}, floor: offset{floor, lastIdx}}
}

func (w *window) add(t *winTxn, now time.Time) {
	w.txns = append(w.txns, t)
	w.bytes += t.size
	w.trim(now)
}

// trim forgets the transactions past the window's bounds.
func (w *window) trim(now time.Time) {
	for w.head < len(w.txns) && (w.bytes > w.maxBytes || now.Sub(w.txns[w.head].at) > w.maxAge) {
		old := w.txns[w.head]
		if old.db {
			w.forget(old.xid)
		}
		w.floor = offset{old.pos, lastIdx}
		w.bytes -= old.size
		w.txns[w.head] = nil
		w.head++
	}
	if w.head > 1024 && w.head*2 > len(w.txns) {
		w.txns = append([]*winTxn(nil), w.txns[w.head:]...)
		w.head = 0
	}
}

func (w *window) len() int { return len(w.txns) - w.head }

// live returns the held transactions, oldest first.
func (w *window) live() []*winTxn { return w.txns[w.head:] }

// after returns the held transactions whose position is at or after p.
func (w *window) after(p pos) []*winTxn {
	live := w.live()
	i := sort.Search(len(live), func(i int) bool { return live[i].pos.cmp(p) >= 0 })
	return live[i:]
}

// holds reports whether every delta after o is held.
func (w *window) holds(o offset) bool { return o.cmp(w.floor) >= 0 }

func (w *window) forget(xid uint32) {
	if !w.anyTrimmed || int32(xid-w.trimmedMax) > 0 {
		w.trimmedMax = xid
	}
	w.anyTrimmed = true
	w.trimmed[xid] = struct{}{}
	w.trimmedFIFO = append(w.trimmedFIFO, xid)
	if len(w.trimmedFIFO) > rememberTrimmed {
		x := w.trimmedFIFO[0]
		w.trimmedFIFO = w.trimmedFIFO[1:]
		delete(w.trimmed, x)
		if !w.anyForgotten || int32(x-w.forgottenMax) > 0 {
			w.forgottenMax = x
		}
		w.anyForgotten = true
	}
}

// covers reports whether no transaction the snapshot did not see has been
// forgotten: a snapshot is honoured only then.
func (w *window) covers(s *snapshot) bool {
	if !w.anyTrimmed {
		return true
	}
	if widen(w.trimmedMax, s.xmax) >= s.xmax {
		return false // a forgotten transaction started after the snapshot
	}
	for x := range s.xip {
		if _, ok := w.trimmed[uint32(x)]; ok {
			return false
		}
		if w.anyForgotten && x <= widen(w.forgottenMax, s.xmax) {
			return false // it may have been forgotten; refuse rather than risk a gap
		}
	}
	return true
}

// WindowStats describes the replay window (for /metrics and /readyz).
type WindowStats struct {
	Epoch        string
	Transactions int
	Bytes        int
	// Floor is the offset after which every delta is held; Newest the
	// offset of the newest position.
	Floor, Newest string

	floorLSN, newestLSN cdc.LSN
}

// Window describes the replay window.
func (e *Engine) Window() WindowStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return WindowStats{
		Epoch:        e.epoch,
		Transactions: e.window.len(),
		Bytes:        e.window.bytes,
		Floor:        e.window.floor.String(),
		Newest:       offset{e.pos, lastIdx}.String(),
		floorLSN:     e.window.floor.lsn,
		newestLSN:    e.pos.lsn,
	}
}
