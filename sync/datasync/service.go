package datasync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/token"
)

// Errors of spec §2.5.
const (
	ErrTokenNotString     rpc.Error = "token must be string"
	ErrNoSuchSubscription rpc.Error = "No such subscription"
	ErrAlreadyAcquired    rpc.Error = "Subscription already acquired"
	// ErrCannotServe: in a cluster, this node's models or dealers cannot
	// serve a subscription another node authorised (their configurations
	// differ).
	ErrCannotServe      rpc.Error = "Subscription not servable here: this node's models or dealers differ from those of the node that authorised it"
	ErrDropped          rpc.Error = "Subscription dropped: too many pending deltas"
	ErrMissingDealer    rpc.Error = "Missing field 'dealer'"
	ErrDealerNotString  rpc.Error = "dealer should be a dealer name"
	ErrNoSuchDealer     rpc.Error = "No such dealer"
	ErrMissingQuery     rpc.Error = "Missing field 'query'"
	ErrMissingField     rpc.Error = "Missing field"
	ErrModelNotString   rpc.Error = "model must be string"
	ErrInvalidDeltaType rpc.Error = "Invalid delta type"
	ErrInvalidSnapshot  rpc.Error = "Invalid snapshot"
	ErrSnapshotTooOld   rpc.Error = "Snapshot too old"
	ErrSnapshotsNeedDB  rpc.Error = "Snapshots need a database"
	ErrSnapshotFuture   rpc.Error = "Invalid snapshot: newer than the database"
	ErrBatchTooLarge    rpc.Error = "Batch too large"
	ErrPublishFailed    rpc.Error = "Batch not published: the database is unavailable"
	ErrPublishPending   rpc.Error = "Batch committed but not yet delivered: the replication stream is behind"
)

// tokenPurpose separates subscription tokens from every other signed token.
const tokenPurpose = "datasync-subscription"

// tokenPayload is what a subscription token carries (D7).
type tokenPayload struct {
	ID    string            `json:"id"`
	Items []json.RawMessage `json:"items"`
	// Start is the stream position the subscription is entitled from.
	Start string `json:"start"`
	// Snapshot is the snapshot it was authorised with, if any (so that a
	// node other than the one that authorised it can serve its acquire).
	Snapshot string `json:"snapshot,omitempty"`
}

// Frontend is the browser-facing service (acquireSubscription,
// resumeSubscription, cancelSubscription).
type Frontend struct{ e *Engine }

// Backend is the application-facing service (authorizeSubscription,
// publishDeltas).
type Backend struct{ e *Engine }

// Frontend returns the engine's frontend service.
func (e *Engine) Frontend() *Frontend { return &Frontend{e} }

// Backend returns the engine's backend service.
func (e *Engine) Backend() *Backend { return &Backend{e} }

// Handle implements rpc.Service.
func (f *Frontend) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "acquireSubscription":
		p, err := rpc.Params(req.Params, []string{"token"}, []string{"resumable"})
		if err != nil {
			return nil, err
		}
		tok, ok := rpc.String(p["token"])
		if !ok {
			return nil, ErrTokenNotString
		}
		resumable := false
		if raw, ok := p["resumable"]; ok {
			if err := json.Unmarshal(raw, &resumable); err != nil {
				return nil, rpc.ErrInvalidParams
			}
		}
		return f.e.acquire(c, tok, resumable)
	case "resumeSubscription":
		p, err := rpc.Params(req.Params, []string{"resume", "epoch", "offset"}, nil)
		if err != nil {
			return nil, err
		}
		cred, ok1 := rpc.String(p["resume"])
		epoch, ok2 := rpc.String(p["epoch"])
		off, ok3 := rpc.String(p["offset"])
		if !ok1 || !ok2 || !ok3 {
			return nil, rpc.ErrInvalidParams
		}
		o, ok := parseOffset(off)
		if !ok {
			return nil, rpc.ErrInvalidParams
		}
		return f.e.resume(c, cred, epoch, o)
	case "cancelSubscription":
		p, err := rpc.Params(req.Params, []string{"token"}, nil)
		if err != nil {
			return nil, err
		}
		tok, ok := rpc.String(p["token"])
		if !ok {
			return nil, ErrTokenNotString
		}
		return nil, f.e.cancel(c, tok)
	}
	return nil, rpc.ErrUnknownCommand
}

// Disconnected implements rpc.Disconnecter: the connection's subscriptions
// end.
func (f *Frontend) Disconnected(c rpc.Conn) { f.e.disconnect(c) }

// subscriptionID verifies a token and returns the subscription id it names.
func (e *Engine) subscriptionID(tok string) (string, bool) {
	p, _, ok := e.verifyToken(tok)
	return p.ID, ok
}

// verifyToken verifies a subscription token and returns what it carries.
// A genuine token past its acquire deadline is ok but expired: it still
// names its subscription, which its owner can cancel (§3.5.6) and which a
// second acquire finds taken.
func (e *Engine) verifyToken(tok string) (p tokenPayload, expired, ok bool) {
	raw, err := e.cfg.Signer.Verify(tokenPurpose, tok, e.cfg.Now())
	expired = errors.Is(err, token.ErrExpired)
	if err != nil && !expired || json.Unmarshal(raw, &p) != nil || p.ID == "" {
		return tokenPayload{}, false, false
	}
	return p, expired, true
}

// fromTokenLocked registers, in a cluster, the subscription a token
// carries when another node authorised it: its items, its start position
// and its snapshot. It returns nil for a token this node cannot serve.
func (e *Engine) fromTokenLocked(p tokenPayload) *subscription {
	objs, ok := decodeItems(p.Items)
	if !ok {
		return nil
	}
	items, err := e.compileItemsLocked(objs)
	if err != nil {
		return nil
	}
	start, ok := parseOffset(p.Start)
	if !ok {
		return nil
	}
	var snap *snapshot
	if p.Snapshot != "" {
		if snap, ok = parseSnapshot(p.Snapshot); !ok {
			return nil
		}
	}
	s := e.newSubscriptionLocked(p.ID, items, p.Items)
	s.start, s.snap, s.snapText = start.pos, snap, p.Snapshot
	return s
}

// acquire binds the subscription of tok to c, after queueing what it
// missed since its start (replayed from the window, spec §3.5, §3.9).
func (e *Engine) acquire(c rpc.Conn, tok string, resumable bool) (any, error) {
	p, expired, ok := e.verifyToken(tok)
	if !ok {
		return nil, ErrNoSuchSubscription
	}
	if expired {
		e.mu.Lock()
		defer e.mu.Unlock()
		if s := e.byID[p.ID]; s != nil && s.owner != nil {
			return nil, ErrAlreadyAcquired
		}
		return nil, ErrNoSuchSubscription
	}
	var rev uint64
	if e.cfg.Claim != nil {
		// Before taking the lock: a claim is a round trip to the cluster.
		var err error
		if rev, err = e.cfg.Claim(p.ID); err != nil {
			return nil, err
		}
		// The node that authorised it may be ahead of this one: wait (as a
		// resume does) until this one has reached the token's start, so
		// that nothing the application's fetch saw is delivered again.
		if start, ok := parseOffset(p.Start); ok {
			ctx, cancel := context.WithTimeout(context.Background(), e.cfg.ResumeWait)
			e.waitFor(ctx, func() bool { return e.started && e.pos.cmp(start.pos) >= 0 })
			cancel()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.byID[p.ID]
	if s == nil && e.cfg.Claim != nil {
		if s = e.fromTokenLocked(p); s == nil {
			return nil, ErrCannotServe
		}
	}
	if s == nil {
		return nil, ErrNoSuchSubscription
	}
	if s.owner != nil {
		return nil, ErrAlreadyAcquired
	}
	from := offset{s.start, lastIdx}
	if s.snap != nil && !e.window.covers(s.snap) || s.snap == nil && !e.window.holds(from) {
		e.removeLocked(s)
		e.metrics.dropped.Inc()
		return nil, ErrDropped
	}
	out, refetch := e.replayLocked(s, from, true)
	if refetch != "" {
		e.removeLocked(s)
		return nil, rpc.Error("Must refetch: " + refetch)
	}
	if out.size > e.cfg.PendingBytes {
		e.removeLocked(s)
		e.metrics.dropped.Inc()
		return nil, ErrDropped
	}
	if out.n > 0 {
		rpc.SendStream(c, &txnStream{e: e, parts: out.parts})
	}
	e.bindLocked(s, c)
	s.rev = rev
	e.metrics.acquired.Inc()
	if !resumable {
		return nil, nil
	}
	return e.resumeResultLocked(c, s), nil
}

// replayLocked collects the deltas of the window after from that s is
// entitled to; refetch is the reason s cannot be served, if any. A
// subscription authorised with a snapshot is entitled, at its acquire
// (whole true), to every transaction its snapshot did not see, whatever its
// position; after that, as every other, to what follows from.
func (e *Engine) replayLocked(s *subscription, from offset, whole bool) (out connOut, refetch string) {
	txns := e.window.after(from.pos)
	if whole && s.snap != nil {
		txns = e.window.live()
	}
	for _, t := range txns {
		if s.snap != nil {
			if t.db && s.snap.visible(t.xid) || whole && !t.db && t.pos.cmp(s.start) <= 0 {
				continue
			}
		}
		first := uint32(0)
		if !(whole && s.snap != nil) && t.pos == from.pos {
			if from.idx == lastIdx {
				continue
			}
			first = from.idx + 1
		}
		if len(t.tooLarge) > 0 && s.hasModel(t.tooLarge) {
			return connOut{}, "transaction too large"
		}
		for i := first; int(i) < len(t.deltas); i++ {
			if mark := e.marksFor(s, &t.deltas[i]); mark != 0 {
				out.add(t, i, mark)
			}
		}
	}
	return out, ""
}

func (s *subscription) hasModel(models []string) bool {
	for _, it := range s.items {
		if slices.Contains(models, it.d.Model()) {
			return true
		}
	}
	return false
}

func (e *Engine) cancel(c rpc.Conn, tok string) error {
	id, ok := e.subscriptionID(tok)
	if !ok {
		return ErrNoSuchSubscription
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.byID[id]
	if s == nil || s.owner != c {
		return ErrNoSuchSubscription
	}
	e.removeLocked(s)
	return nil
}

// Handle implements rpc.Service.
func (b *Backend) Handle(_ rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "authorizeSubscription":
		p, err := rpc.Params(req.Params, []string{"items"}, []string{"snapshot"})
		if err != nil {
			return nil, err
		}
		return b.e.authorize(p["items"], p["snapshot"])
	case "publishDeltas":
		p, err := rpc.Params(req.Params, []string{"deltas"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, b.e.publish(p["deltas"])
	}
	return nil, rpc.ErrUnknownCommand
}

// compileItemsLocked checks and compiles subscription items in the order of
// spec §2.5.
func (e *Engine) compileItemsLocked(objs []map[string]json.RawMessage) ([]item, error) {
	items := make([]item, 0, len(objs))
	for _, o := range objs {
		rawDealer, ok := o["dealer"]
		if !ok {
			return nil, ErrMissingDealer
		}
		name, ok := rpc.String(rawDealer)
		if !ok {
			return nil, ErrDealerNotString
		}
		d := e.dealers[name]
		if d == nil {
			return nil, ErrNoSuchDealer
		}
		rawQuery, ok := o["query"]
		if !ok {
			return nil, ErrMissingQuery
		}
		q, err := d.Compile(rawQuery)
		if err != nil {
			return nil, rpc.Error("Invalid filter: " + err.Error())
		}
		items = append(items, item{d: d, q: q})
	}
	return items, nil
}

func decodeItems(list []json.RawMessage) ([]map[string]json.RawMessage, bool) {
	objs := make([]map[string]json.RawMessage, len(list))
	for i, raw := range list {
		if json.Unmarshal(raw, &objs[i]) != nil || objs[i] == nil {
			return nil, false
		}
	}
	return objs, true
}

func (e *Engine) authorize(rawItems, rawSnap json.RawMessage) (string, error) {
	var list []json.RawMessage
	if json.Unmarshal(rawItems, &list) != nil || list == nil {
		return "", rpc.ErrInvalidParams
	}
	objs, ok := decodeItems(list)
	if !ok {
		return "", rpc.ErrInvalidParams
	}
	var snap *snapshot
	var snapText string
	if rawSnap != nil {
		if !e.cfg.Database {
			return "", ErrSnapshotsNeedDB
		}
		text, ok := rpc.String(rawSnap)
		if !ok {
			return "", ErrInvalidSnapshot
		}
		if snap, ok = parseSnapshot(text); !ok {
			return "", ErrInvalidSnapshot
		}
		snapText = text
		if err := e.checkNotFuture(snap); err != nil {
			return "", err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if snap != nil && !e.coversSnapshotLocked(snap) {
		return "", ErrSnapshotTooOld
	}
	items, err := e.compileItemsLocked(objs)
	if err != nil {
		return "", err
	}
	s := e.newSubscriptionLocked("", items, list)
	s.snap, s.snapText = snap, snapText
	tp := tokenPayload{ID: s.id, Items: list, Start: offset{s.start, 0}.String()[:24]}
	if e.cfg.Claim != nil {
		tp.Snapshot = snapText // another node may serve the acquire
	}
	payload, err := json.Marshal(tp)
	if err != nil {
		e.removeLocked(s)
		return "", err
	}
	e.metrics.authorized.Inc()
	return e.cfg.Signer.Sign(tokenPurpose, payload, e.cfg.Now().Add(e.cfg.AcquireTimeout)), nil
}

// wireDelta is an incoming delta; other fields are dropped (spec §2.5).
type wireDelta struct {
	Type    json.RawMessage `json:"type"`
	Model   json.RawMessage `json:"model"`
	Data    json.RawMessage `json:"data"`
	NewData json.RawMessage `json:"newData"`
	OldData json.RawMessage `json:"oldData"`
}

// publish validates a publishDeltas batch whole, then routes it (D2):
// through the WAL with a database (so it is in the replay window and
// survives a restart, §3.9), from memory without one.
func (e *Engine) publish(raw json.RawMessage) error {
	if e.cfg.MaxTxBytes > 0 && len(raw) > e.cfg.MaxTxBytes {
		return ErrBatchTooLarge
	}
	e.mu.Lock()
	ds, err := e.checkBatchLocked(raw)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	if e.cfg.PublishWAL == nil {
		defer e.mu.Unlock()
		e.pos.batch++
		t := &winTxn{pos: e.pos, at: e.cfg.Now()}
		for _, d := range ds {
			t.add(d)
		}
		e.deliverLocked(t, 0, len(t.deltas))
		e.window.add(t, t.at)
		e.advanceLocked(t.pos)
		return nil
	}
	e.mu.Unlock()
	payload, err := encodeBatch(ds)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	lsn, err := e.cfg.PublishWAL(ctx, payload)
	if err != nil {
		e.log.Warn("publishDeltas: writing the batch to the WAL failed", "err", err)
		return ErrPublishFailed
	}
	// Answer once the batch has been taken (§1.6: once publishDeltas is
	// answered, its notifications are queued).
	if !e.waitFor(ctx, func() bool { return e.pos.lsn > lsn }) {
		return ErrPublishPending
	}
	return nil
}

// publishTimeout bounds a publishDeltas call through the WAL.
const publishTimeout = 30 * time.Second

// encodeBatch renders checked deltas as the payload of a WAL message.
func encodeBatch(ds []delta) ([]byte, error) {
	type wire struct {
		Type    string          `json:"type"`
		Model   string          `json:"model"`
		Data    json.RawMessage `json:"data,omitempty"`
		NewData json.RawMessage `json:"newData,omitempty"`
		OldData json.RawMessage `json:"oldData,omitempty"`
	}
	out := struct {
		Op     string `json:"op"`
		Deltas []wire `json:"deltas"`
	}{Op: "deltas", Deltas: make([]wire, len(ds))}
	for i, d := range ds {
		w := wire{Type: d.typ.String(), Model: d.model.name}
		if d.typ == typeUpdate {
			w.NewData, w.OldData = d.data, d.old
		} else {
			w.Data = d.data
		}
		out.Deltas[i] = w
	}
	return json.Marshal(out)
}

// waitFor waits until cond (checked under e.mu) holds or ctx ends.
func (e *Engine) waitFor(ctx context.Context, cond func() bool) bool {
	for {
		e.mu.Lock()
		ok := cond()
		ch := e.advanced
		e.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// checkBatchLocked decodes and checks a publishDeltas batch whole.
func (e *Engine) checkBatchLocked(raw json.RawMessage) ([]delta, error) {
	// One decoding pass; a null or non-object element is invalid params.
	var list []*wireDelta
	if json.Unmarshal(raw, &list) != nil || list == nil {
		return nil, rpc.ErrInvalidParams
	}
	for _, w := range list {
		if w == nil {
			return nil, rpc.ErrInvalidParams
		}
	}
	ds := make([]delta, len(list))
	for i, w := range list {
		if err := e.checkDeltaLocked(w, &ds[i]); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// checkDeltaLocked checks one incoming delta in the order of spec §2.5.
func (e *Engine) checkDeltaLocked(w *wireDelta, d *delta) error {
	if w.Type == nil || w.Model == nil {
		return ErrMissingField
	}
	name, ok := rpc.String(w.Model)
	if !ok {
		return ErrModelNotString
	}
	_ = d.typ.UnmarshalJSON(w.Type) // an invalid type is zero
	switch d.typ {
	case typeInsert, typeDelete:
		if w.Data == nil {
			return ErrMissingField
		}
		d.data = compact(w.Data)
	case typeUpdate:
		if w.NewData == nil || w.OldData == nil {
			return ErrMissingField
		}
		d.data, d.old = compact(w.NewData), compact(w.OldData)
	default: // truncate is not for publishDeltas
		return ErrInvalidDeltaType
	}
	m := e.models[name]
	if m == nil {
		return rpc.Error("Unknown model '" + name + "'")
	}
	d.model = m
	return nil
}

// compact removes insignificant whitespace so frames stay small; the input
// is valid JSON (it came out of a decoded envelope).
func compact(raw json.RawMessage) json.RawMessage {
	if !bytes.ContainsAny(raw, " \t\r\n") {
		return raw
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}
