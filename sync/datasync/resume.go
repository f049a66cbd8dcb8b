package datasync

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/token"
)

// resumePurpose separates resume credentials from every other signed token.
const resumePurpose = "datasync-resume"

// Reasons of "Must refetch: …" (spec §3.9).
const (
	refetchReset    = "the stream was reset"
	refetchWindow   = "offset is outside the replay window"
	refetchExpired  = "resume credential expired"
	refetchInvalid  = "invalid resume credential"
	refetchBehind   = "the server is behind the offset"
	refetchTooLarge = "transaction too large"
)

// resumePayload is what a resume credential carries: the subscription and
// its items, and the snapshot it was authorised with.
type resumePayload struct {
	ID       string            `json:"id"`
	Items    []json.RawMessage `json:"items"`
	Snapshot string            `json:"snapshot,omitempty"`
}

// resumeResult is the result of a resumable acquire and of a resume.
type resumeResult struct {
	Epoch  string `json:"epoch"`
	Offset string `json:"offset"`
	Resume string `json:"resume"`
}

// resumeResultLocked opts c in and returns the epoch, the position and a
// fresh credential for s.
func (e *Engine) resumeResultLocked(c rpc.Conn, s *subscription) resumeResult {
	st := e.resumable[c]
	if st == nil {
		st = &connState{}
		e.resumable[c] = st
	}
	st.sent = e.pos
	payload, _ := json.Marshal(resumePayload{ID: s.id, Items: s.raw, Snapshot: s.snapText})
	return resumeResult{
		Epoch:  e.epoch,
		Offset: offset{e.pos, lastIdx}.String(),
		Resume: e.cfg.Signer.Sign(resumePurpose, payload, e.cfg.Now().Add(e.cfg.ResumeTTL)),
	}
}

func mustRefetch(reason string) error { return rpc.Error("Must refetch: " + reason) }

// resume continues a subscription on c after offset o of epoch (spec §3.9).
func (e *Engine) resume(c rpc.Conn, cred, epoch string, o offset) (any, error) {
	raw, err := e.cfg.Signer.Verify(resumePurpose, cred, e.cfg.Now())
	if errors.Is(err, token.ErrExpired) {
		return nil, mustRefetch(refetchExpired)
	}
	var p resumePayload
	if err != nil || json.Unmarshal(raw, &p) != nil || p.ID == "" {
		return nil, mustRefetch(refetchInvalid)
	}
	objs, ok := decodeItems(p.Items)
	if !ok {
		return nil, mustRefetch(refetchInvalid)
	}
	var snap *snapshot
	if p.Snapshot != "" {
		if snap, ok = parseSnapshot(p.Snapshot); !ok {
			return nil, mustRefetch(refetchInvalid)
		}
	}
	// A restarted server first rebuilds its window from the slot: wait
	// until it knows its epoch and has reached the offset.
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.ResumeWait)
	defer cancel()
	reached := e.waitFor(ctx, func() bool {
		return e.started && (e.epoch != epoch || offset{e.pos, lastIdx}.cmp(o) >= 0)
	})
	var rev uint64
	if e.cfg.Rebind != nil {
		// Just before taking the lock (a round trip to the cluster), so
		// that a resume elsewhere after it is ordered after it. Without it
		// (the cluster unreachable) the resume still binds here, unordered:
		// no notice ends it and none is sent; its connection's end does.
		if rev, err = e.cfg.Rebind(p.ID); err != nil {
			rev = unordered
		}
	}
	e.mu.Lock()
	defer e.unlock()
	if e.started && e.epoch != epoch {
		return nil, mustRefetch(refetchReset)
	}
	if !reached {
		return nil, mustRefetch(refetchBehind)
	}
	// Only the offset must be held: what the window forgot is before it,
	// so the client has it. The snapshot, if any, still tells which held
	// transactions after o its fetch already saw (replayLocked); whether
	// the window covers it mattered only at the first acquire.
	if !e.window.holds(o) {
		return nil, mustRefetch(refetchWindow)
	}
	items, err := e.compileItemsLocked(objs)
	if err != nil {
		return nil, mustRefetch(refetchInvalid)
	}
	s := e.byID[p.ID]
	if s == nil {
		s = e.newSubscriptionLocked(p.ID, items, p.Items)
		s.snap, s.snapText = snap, p.Snapshot
	} else if s.owner != nil {
		// The last resume wins: the old connection is usually dead without
		// knowing it yet.
		e.unbindLocked(s)
	}
	out, refetch := e.replayLocked(s, o, false)
	if refetch != "" {
		e.removeLocked(s)
		return nil, mustRefetch(refetch)
	}
	if out.n > 0 {
		rpc.SendStream(c, &txnStream{e: e, parts: out.parts})
	}
	e.bindLocked(s, c)
	s.rev = rev
	e.metrics.resumed.Inc()
	if f := e.cfg.Resumed; f != nil && rev != unordered {
		id := s.id
		e.after = append(e.after, func() { f(id, rev) }) // NATS, after the lock
	}
	return e.resumeResultLocked(c, s), nil
}

// unordered is the revision of a binding the cluster could not record.
const unordered = math.MaxUint64

// Release ends subscription id on this node, in a cluster, when a resume
// on another node, whose binding has revision rev, took it over; its
// connection here is usually dead without knowing it yet (as with a
// takeover on one node, it is not told). A binding made after that one
// (the client came back here) has a greater revision and stays.
func (e *Engine) Release(id string, rev uint64) {
	e.mu.Lock()
	defer e.unlock()
	if s := e.byID[id]; s != nil && s.owner != nil && s.rev < rev {
		e.removeLocked(s)
	}
}

// positionFrame encodes a position notification.
func (e *Engine) positionFrame() []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"service":`...)
	b = append(b, e.name...)
	b = append(b, `,"message":{"type":"position","epoch":`...)
	ep, _ := json.Marshal(e.epoch)
	b = append(b, ep...)
	b = append(b, `,"offset":"`...)
	b = appendOffset(b, e.pos.lsn, e.pos.batch, lastIdx)
	return append(b, `"}}`...)
}

// sendPositionsLocked tells every opted-in connection that holds
// subscriptions the current position, when it moved since the last one.
func (e *Engine) sendPositionsLocked() {
	var frame []byte
	for c, st := range e.resumable {
		if st.sent == e.pos || len(e.byConn[c]) == 0 {
			continue
		}
		if frame == nil {
			frame = e.positionFrame()
		}
		st.sent = e.pos
		c.Send(frame)
	}
}

// refetchFrame encodes a mustRefetch notification; models nil means every
// subscription of the connection.
func (e *Engine) refetchFrame(reason string, models []string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"service":`...)
	b = append(b, e.name...)
	b = append(b, `,"message":{"type":"mustRefetch","reason":`...)
	r, _ := json.Marshal(reason)
	b = append(b, r...)
	b = append(b, `,"models":`...)
	m, _ := json.Marshal(models)
	b = append(b, m...)
	return append(b, "}}"...)
}

// refetchAllLocked ends every subscription: opted-in connections get
// mustRefetch (models null), the others are closed with 4008 (once mu is
// released) so that they cannot miss it silently. Unacquired subscriptions end too.
func (e *Engine) refetchAllLocked(reason string) {
	frame := e.refetchFrame(reason, nil)
	for c, subs := range e.byConn {
		for s := range subs {
			e.removeLocked(s)
		}
		if _, ok := e.resumable[c]; ok {
			c.Send(frame)
		} else {
			e.closeLater(c)
		}
		e.metrics.refetches.Inc()
	}
	for _, s := range e.byID {
		e.removeLocked(s)
	}
}

// refetchModelsLocked ends the acquired subscriptions with an item on one
// of models, telling their connections as refetchAllLocked does.
func (e *Engine) refetchModelsLocked(models []string, reason string) {
	for c, subs := range e.byConn {
		var hit []string
		for s := range subs {
			if !s.hasModel(models) {
				continue
			}
			for _, it := range s.items {
				if m := it.d.Model(); slices.Contains(models, m) && !slices.Contains(hit, m) {
					hit = append(hit, m)
				}
			}
			e.removeLocked(s)
		}
		if len(hit) == 0 {
			continue
		}
		if _, ok := e.resumable[c]; ok {
			c.Send(e.refetchFrame(reason, hit))
		} else {
			e.closeLater(c)
		}
		e.metrics.refetches.Inc()
	}
}

// checkNotFuture refuses a snapshot whose xmax is beyond the transactions
// the database has started: it would make upcoming transactions look
// already seen (issue: a pasted example snapshot). When the snapshot is
// newer than anything seen on the stream, the database itself is asked.
func (e *Engine) checkNotFuture(s *snapshot) error {
	e.mu.Lock()
	seen, known := e.maxXid, e.horizon != nil
	e.mu.Unlock()
	if !known || s.xmax <= seen+1 {
		return nil // without a horizon the snapshot is refused as too old
	}
	if e.cfg.CurrentSnapshot == nil {
		return nil // nothing to ask (tests of the engine alone)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := e.cfg.CurrentSnapshot(ctx)
	if err != nil {
		e.log.Warn("authorizeSubscription: reading pg_current_snapshot() to check a snapshot failed", "err", err)
		return ErrSnapshotFuture
	}
	cur, ok := parseSnapshot(text)
	if !ok || s.xmax > cur.xmax {
		return ErrSnapshotFuture
	}
	return nil
}
