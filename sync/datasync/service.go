package datasync

import (
	"bytes"
	"encoding/json"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// Errors of spec §2.5.
const (
	ErrTokenNotString     rpc.Error = "token must be string"
	ErrNoSuchSubscription rpc.Error = "No such subscription"
	ErrAlreadyAcquired    rpc.Error = "Subscription already acquired"
	ErrDropped            rpc.Error = "Subscription dropped: too many pending deltas"
	ErrMissingDealer      rpc.Error = "Missing field 'dealer'"
	ErrDealerNotString    rpc.Error = "dealer should be a dealer name"
	ErrNoSuchDealer       rpc.Error = "No such dealer"
	ErrMissingQuery       rpc.Error = "Missing field 'query'"
	ErrMissingField       rpc.Error = "Missing field"
	ErrModelNotString     rpc.Error = "model must be string"
	ErrInvalidDeltaType   rpc.Error = "Invalid delta type"
	ErrInvalidSnapshot    rpc.Error = "Invalid snapshot"
	ErrSnapshotTooOld     rpc.Error = "Snapshot too old"
	ErrSnapshotsNeedDB    rpc.Error = "Snapshots need a database"
)

// tokenPurpose separates subscription tokens from every other signed token.
const tokenPurpose = "datasync-subscription"

// tokenPayload is what a subscription token carries (D7).
type tokenPayload struct {
	ID    string            `json:"id"`
	Items []json.RawMessage `json:"items"`
	// Start is the stream position the subscription is entitled from.
	Start string `json:"start"`
}

// Frontend is the browser-facing service (acquireSubscription,
// cancelSubscription).
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
	case "acquireSubscription", "cancelSubscription":
	default:
		return nil, rpc.ErrUnknownCommand
	}
	p, err := rpc.Params(req.Params, []string{"token"}, nil)
	if err != nil {
		return nil, err
	}
	tok, ok := rpc.String(p["token"])
	if !ok {
		return nil, ErrTokenNotString
	}
	if req.Command == "acquireSubscription" {
		return nil, f.e.acquire(c, tok)
	}
	return nil, f.e.cancel(c, tok)
}

// Disconnected implements rpc.Disconnecter: the connection's subscriptions
// end.
func (f *Frontend) Disconnected(c rpc.Conn) { f.e.disconnect(c) }

// subscriptionID verifies a token and returns the subscription id it names.
func (e *Engine) subscriptionID(tok string) (string, bool) {
	raw, err := e.cfg.Signer.Verify(tokenPurpose, tok, e.cfg.Now())
	if err != nil {
		return "", false
	}
	var p tokenPayload
	if json.Unmarshal(raw, &p) != nil || p.ID == "" {
		return "", false
	}
	return p.ID, true
}

func (e *Engine) acquire(c rpc.Conn, tok string) error {
	id, ok := e.subscriptionID(tok)
	if !ok {
		return ErrNoSuchSubscription
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.byID[id]
	if s == nil {
		if _, dropped := e.dropped[id]; dropped {
			return ErrDropped
		}
		return ErrNoSuchSubscription
	}
	if s.owner != nil {
		return ErrAlreadyAcquired
	}
	s.timer.Stop()
	s.owner = c
	m := e.byConn[c]
	if m == nil {
		m = map[*subscription]struct{}{}
		e.byConn[c] = m
	}
	m[s] = struct{}{}
	// The pending deltas go before the response (spec §3.5).
	for _, f := range s.pending {
		c.Send(f)
	}
	s.pending, s.size = nil, 0
	e.metrics.acquired.Inc()
	return nil
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

func (e *Engine) authorize(rawItems, rawSnap json.RawMessage) (string, error) {
	var list []json.RawMessage
	if json.Unmarshal(rawItems, &list) != nil || list == nil {
		return "", rpc.ErrInvalidParams
	}
	objs := make([]map[string]json.RawMessage, len(list))
	for i, raw := range list {
		if json.Unmarshal(raw, &objs[i]) != nil || objs[i] == nil {
			return "", rpc.ErrInvalidParams
		}
	}
	var snap *snapshot
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
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if snap != nil && !e.coversSnapshotLocked(snap) {
		return "", ErrSnapshotTooOld
	}
	items := make([]item, 0, len(objs))
	for _, o := range objs {
		rawDealer, ok := o["dealer"]
		if !ok {
			return "", ErrMissingDealer
		}
		name, ok := rpc.String(rawDealer)
		if !ok {
			return "", ErrDealerNotString
		}
		d := e.dealers[name]
		if d == nil {
			return "", ErrNoSuchDealer
		}
		rawQuery, ok := o["query"]
		if !ok {
			return "", ErrMissingQuery
		}
		q, err := d.Compile(rawQuery)
		if err != nil {
			return "", rpc.Error("Invalid filter: " + err.Error())
		}
		items = append(items, item{d: d, q: q})
	}
	s := e.newSubscriptionLocked(items)
	if snap != nil {
		s.snap = snap
		e.replayLocked(s)
	}
	var pos delta
	e.setOffset(&pos, 0)
	payload, err := json.Marshal(tokenPayload{ID: s.id, Items: list, Start: string(pos.offset[:24])})
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

// publish validates a publishDeltas batch whole, then routes it (D2).
func (e *Engine) publish(raw json.RawMessage) error {
	// One decoding pass; a null or non-object element is invalid params.
	var list []*wireDelta
	if json.Unmarshal(raw, &list) != nil || list == nil {
		return rpc.ErrInvalidParams
	}
	for _, w := range list {
		if w == nil {
			return rpc.ErrInvalidParams
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ds := make([]delta, len(list))
	for i, w := range list {
		if err := e.checkDeltaLocked(w, &ds[i]); err != nil {
			return err
		}
	}
	e.batch++
	batch := len(ds) > 1
	for i := range ds {
		e.setOffset(&ds[i], i)
		if err := e.routeLocked(&ds[i], batch); err != nil {
			e.log.Error("routing a published delta", "model", ds[i].model.name, "err", err)
		}
	}
	if batch {
		e.flushLocked()
	}
	return nil
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
	typ, _ := rpc.String(w.Type)
	switch typ {
	case "insert", "delete":
		if w.Data == nil {
			return ErrMissingField
		}
		d.data = compact(w.Data)
	case "update":
		if w.NewData == nil || w.OldData == nil {
			return ErrMissingField
		}
		d.data, d.old = compact(w.NewData), compact(w.OldData)
	default:
		return ErrInvalidDeltaType
	}
	d.typ = typ
	m := e.models[name]
	if m == nil {
		return rpc.Error("Unknown model '" + name + "'")
	}
	d.model = m
	return nil
}

// parseDeltaLocked checks a delta given as a map of its fields.
func (e *Engine) parseDeltaLocked(o map[string]json.RawMessage, d *delta) error {
	return e.checkDeltaLocked(&wireDelta{Type: o["type"], Model: o["model"], Data: o["data"], NewData: o["newData"], OldData: o["oldData"]}, d)
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
