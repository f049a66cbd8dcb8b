package datasync

import "github.com/snorkyhq/snorky/sync/rpc"

// run is a range of consecutive deltas of one transaction that reach a
// connection the same way (the same mark).
type run struct {
	start, n uint32
	mark     uint8
}

// part is what one connection receives of one transaction.
type part struct {
	t    *winTxn
	runs []run
}

// connOut collects what one connection receives of a routing pass or a
// replay: a few runs per transaction, however many deltas match (a
// broadcast subscriber of a 200,000-row transaction holds one run).
type connOut struct {
	parts []part
	n     int // deltas
	size  int // approximate bytes of their frames
}

func (o *connOut) add(t *winTxn, i uint32, mark uint8) {
	o.n++
	d := &t.deltas[i]
	o.size += len(d.data) + len(d.old) + 160
	if k := len(o.parts) - 1; k >= 0 && o.parts[k].t == t {
		p := &o.parts[k]
		if r := &p.runs[len(p.runs)-1]; r.mark == mark && r.start+r.n == i {
			r.n++
			return
		}
		p.runs = append(p.runs, run{start: i, n: 1, mark: mark})
		return
	}
	if k := len(o.parts); k < cap(o.parts) {
		// A part kept by reset: its runs' array is reused.
		o.parts = o.parts[:k+1]
		p := &o.parts[k]
		p.t, p.runs = t, append(p.runs[:0], run{start: i, n: 1, mark: mark})
		return
	}
	o.parts = append(o.parts, part{t: t, runs: []run{{start: i, n: 1, mark: mark}}})
}

// reset empties o for reuse, keeping its arrays.
func (o *connOut) reset() {
	for i := range o.parts {
		o.parts[i].t = nil
	}
	o.parts, o.n, o.size = o.parts[:0], 0, 0
}

// txnStream produces the frames of a connOut as the connection's writer
// asks for them (rpc.Stream): nothing is encoded ahead, and the deltas are
// shared with the window, so a large transaction costs each connection only
// its runs.
type txnStream struct {
	e     *Engine
	parts []part
	p, r  int    // current part and run
	k     uint32 // next delta within the run
}

var _ rpc.Stream = (*txnStream)(nil)

func (s *txnStream) Next(dst []byte) ([]byte, bool) {
	for s.p < len(s.parts) {
		p := &s.parts[s.p]
		if s.r >= len(p.runs) {
			s.p, s.r, s.k = s.p+1, 0, 0
			continue
		}
		r := &p.runs[s.r]
		if s.k >= r.n {
			s.r, s.k = s.r+1, 0
			continue
		}
		i := r.start + s.k
		s.k++
		return s.e.encode(dst, p.t, i, r.mark), true
	}
	return dst, false
}
