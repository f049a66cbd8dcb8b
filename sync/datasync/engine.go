package datasync

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/dealers"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Engine routes deltas to subscriptions. It implements cdc.Sink.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	name    []byte // the frontend service name as JSON text
	metrics *metrics

	mu      sync.Mutex
	dealers map[string]*dealers.Dealer
	byModel map[string][]*dealers.Dealer
	models  map[string]*model
	byTable map[string]*model
	subs    map[uint64]*subscription // by dealer-facing sequence number
	byID    map[string]*subscription // by the public id in the token
	dropped map[string]struct{}      // ids dropped for too many pending deltas
	byConn  map[rpc.Conn]map[*subscription]struct{}
	nextSeq uint64

	// The stream position (spec §3.6): the end LSN of the last PostgreSQL
	// transaction taken, and the publishDeltas batches accepted since.
	lsn   uint64
	batch uint32

	history *history // nil without a database
	// horizon is a snapshot taken before the reader began streaming: every
	// transaction it did not see reaches the engine, so the history is
	// complete for exactly those (see coversSnapshotLocked).
	horizon *snapshot

	// Scratch state of one routing pass, reused.
	marks  map[uint64]uint8
	out    []outFrame // a transaction's frames, queued together at its end
	frames [][]byte
}

// outFrame is a frame for a connection, held until its transaction ends.
type outFrame struct {
	c     rpc.Conn
	frame []byte
}

type model struct {
	name    string
	quoted  []byte // JSON text of the name
	cfg     Model
	allowed map[string]bool // nil: every column
	key     []string
	// names caches the JSON text of column names (only the engine's
	// goroutine, under Engine.mu, touches it).
	names map[string][]byte
}

type subscription struct {
	seq     uint64
	id      string
	items   []item
	owner   rpc.Conn
	pending [][]byte
	size    int // bytes pending
	timer   *time.Timer
	// snap, when set, is the snapshot the application's query saw: the
	// transactions visible in it are never delivered (D8).
	snap *snapshot
}

type item struct {
	d *dealers.Dealer
	q dealers.Query
}

// New builds the engine. Metrics are registered on reg when it is not nil.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:     cfg,
		log:     log,
		name:    rpc.QuoteName(cfg.Service),
		dealers: map[string]*dealers.Dealer{},
		byModel: map[string][]*dealers.Dealer{},
		models:  map[string]*model{},
		byTable: map[string]*model{},
		subs:    map[uint64]*subscription{},
		byID:    map[string]*subscription{},
		dropped: map[string]struct{}{},
		byConn:  map[rpc.Conn]map[*subscription]struct{}{},
		marks:   map[uint64]uint8{},
	}
	if cfg.Database {
		e.history = newHistory(cfg.HistoryMaxAge, cfg.HistoryMaxBytes)
	}
	m, err := newMetrics(reg, e)
	if err != nil {
		return nil, err
	}
	e.metrics = m
	for name, mc := range cfg.Models {
		md := &model{name: name, quoted: rpc.QuoteName(name), cfg: mc, key: mc.Key}
		if len(md.key) == 0 && mc.Table == "" {
			md.key = []string{"id"}
		}
		if len(mc.Columns) > 0 {
			md.allowed = map[string]bool{}
			for _, c := range mc.Columns {
				md.allowed[c] = true
			}
		}
		e.models[name] = md
		if mc.Table != "" {
			e.byTable[mc.Table] = md
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Dealers)) {
		d, err := dealers.New(name, cfg.Dealers[name])
		if err != nil {
			return nil, err
		}
		e.dealers[name] = d
		e.byModel[d.Model()] = append(e.byModel[d.Model()], d)
	}
	return e, nil
}

// Subscriptions returns the number of live subscriptions.
func (e *Engine) Subscriptions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byID)
}

// newSubscriptionLocked registers a subscription with its items and arms
// its acquire deadline.
func (e *Engine) newSubscriptionLocked(items []item) *subscription {
	e.nextSeq++
	var idb [16]byte
	rand.Read(idb[:])
	s := &subscription{seq: e.nextSeq, id: hex.EncodeToString(idb[:]), items: items}
	for _, it := range items {
		it.d.Add(s.seq, it.q)
	}
	e.subs[s.seq] = s
	e.byID[s.id] = s
	s.timer = time.AfterFunc(e.cfg.AcquireTimeout, func() { e.expire(s) })
	return s
}

// expire ends a subscription that was not acquired in time, and forgets a
// dropped one.
func (e *Engine) expire(s *subscription) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.dropped, s.id)
	if e.byID[s.id] == s && s.owner == nil {
		e.removeLocked(s)
		e.metrics.expired.Inc()
	}
}

func (e *Engine) removeLocked(s *subscription) {
	for _, it := range s.items {
		it.d.Remove(s.seq, it.q)
	}
	delete(e.subs, s.seq)
	delete(e.byID, s.id)
	if s.owner != nil {
		if m := e.byConn[s.owner]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(e.byConn, s.owner)
			}
		}
	}
	s.timer.Stop()
	s.pending, s.size = nil, 0
}

// disconnect ends every subscription c acquired.
func (e *Engine) disconnect(c rpc.Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.byConn[c] {
		e.removeLocked(s)
	}
	delete(e.byConn, c)
}

// delta is one delta being routed.
type delta struct {
	model     *model
	typ       string // insert, update, delete, truncate
	data      json.RawMessage
	old       json.RawMessage // update: oldData
	unchanged []string
	offset    [32]byte
	lsn       uint64 // 0: not from PostgreSQL
	xid       uint32
}

const (
	inOld = 1 << iota
	inNew
)

// routeLocked delivers d to every matching subscription (its row data is
// valid JSON: decoded by encoding/json or encoded by the cdc package): directly to the
// owner's connection (through e.out when batching a transaction) or to the
// pending buffer of a subscription not yet acquired.
func (e *Engine) routeLocked(d *delta, batch bool) error {
	ds := e.byModel[d.model.name]
	items := 0
	for _, dl := range ds {
		items += dl.Len()
	}
	if items == 0 {
		return nil // nobody to route to: do not even parse the row
	}
	clear(e.marks)
	switch d.typ {
	case "truncate":
		for _, dl := range ds {
			dl.All(func(sub uint64) { e.marks[sub] = inNew })
		}
	case "insert", "delete":
		row := dealers.NewRowValid(d.data)
		for _, dl := range ds {
			dl.Match(row, func(sub uint64) { e.marks[sub] = inNew })
		}
	case "update":
		newRow, oldRow := dealers.NewRowValid(d.data), dealers.NewRowValid(d.old)
		for _, dl := range ds {
			dl.Match(oldRow, func(sub uint64) { e.marks[sub] |= inOld })
			dl.Match(newRow, func(sub uint64) { e.marks[sub] |= inNew })
		}
	}
	if len(e.marks) == 0 {
		return nil
	}
	var frames [4][]byte // by mark: 1 old only, 2 new only, 3 both
	for seq, mark := range e.marks {
		s := e.subs[seq]
		if s == nil || s.snap != nil && d.lsn != 0 && s.snap.visible(d.xid) {
			continue
		}
		f := frames[mark]
		if f == nil {
			f = e.encode(d, mark)
			frames[mark] = f
		}
		e.deliverLocked(s, f, batch)
	}
	e.metrics.deltas.Inc()
	return nil
}

func (e *Engine) deliverLocked(s *subscription, frame []byte, batch bool) {
	e.metrics.deliveries.Inc()
	if s.owner == nil {
		if s.size+len(frame) > e.cfg.PendingBytes {
			e.log.Warn("dropping subscription: too many pending deltas before acquire", "sub", s.id[:8], "pending_bytes", e.cfg.PendingBytes)
			e.removeLocked(s)
			e.dropped[s.id] = struct{}{}
			s.timer = time.AfterFunc(e.cfg.AcquireTimeout, func() { e.expire(s) })
			e.metrics.dropped.Inc()
			return
		}
		s.pending = append(s.pending, frame)
		s.size += len(frame)
		return
	}
	if !batch {
		s.owner.Send(frame)
		return
	}
	e.out = append(e.out, outFrame{s.owner, frame})
}

// flushLocked queues a transaction's frames, each connection's together
// and in order.
func (e *Engine) flushLocked() {
	out := e.out
	slices.SortStableFunc(out, func(a, b outFrame) int { return cmp.Compare(a.c.ID(), b.c.ID()) })
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && out[j].c == out[i].c {
			j++
		}
		if j == i+1 {
			out[i].c.Send(out[i].frame)
		} else {
			e.frames = e.frames[:0]
			for _, o := range out[i:j] {
				e.frames = append(e.frames, o.frame)
			}
			rpc.SendMany(out[i].c, e.frames)
		}
		i = j
	}
	clear(out)
	e.out = out[:0]
	clear(e.frames)
}

// encode builds the notification frame of d as seen by a subscription with
// the given mark (spec §3.2: update, or the insert or delete it becomes).
func (e *Engine) encode(d *delta, mark uint8) []byte {
	typ, data := d.typ, d.data
	if d.typ == "update" {
		switch mark {
		case inNew:
			typ = "insert"
		case inOld:
			typ, data = "delete", d.old
		}
	}
	b := make([]byte, 0, 96+len(e.name)+len(d.model.quoted)+len(data)+len(d.old))
	b = append(b, `{"service":`...)
	b = append(b, e.name...)
	b = append(b, `,"message":{"type":"delta","delta":{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","model":`...)
	b = append(b, d.model.quoted...)
	switch typ {
	case "insert", "delete":
		b = append(b, `,"data":`...)
		b = append(b, data...)
	case "update":
		b = append(b, `,"newData":`...)
		b = append(b, d.data...)
		b = append(b, `,"oldData":`...)
		b = append(b, d.old...)
	}
	if len(d.unchanged) > 0 && (typ == "update" || typ == "insert") {
		u, _ := json.Marshal(d.unchanged)
		b = append(b, `,"unchanged":`...)
		b = append(b, u...)
	}
	b = append(b, `,"offset":"`...)
	b = append(b, d.offset[:]...)
	b = append(b, '"')
	if d.lsn != 0 {
		b = append(b, `,"lsn":"`...)
		b = fmt.Appendf(b, "%X/%X", d.lsn>>32, uint32(d.lsn))
		b = append(b, `","xid":`...)
		b = fmt.Appendf(b, "%d", d.xid)
	}
	return append(b, "}}}"...)
}

// setOffset writes the offset of the idx-th delta at the current position.
func (e *Engine) setOffset(d *delta, idx int) {
	const hexDigits = "0123456789ABCDEF"
	put := func(dst []byte, v uint64) {
		for i := len(dst) - 1; i >= 0; i-- {
			dst[i] = hexDigits[v&0xF]
			v >>= 4
		}
	}
	put(d.offset[0:16], e.lsn)
	put(d.offset[16:24], uint64(e.batch))
	put(d.offset[24:32], uint64(uint32(idx)))
}

// Position returns the offset prefix of the current stream position: the
// offset a subscription authorised now starts after.
func (e *Engine) Position() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var d delta
	e.setOffset(&d, 0)
	return string(d.offset[:24])
}

// Apply takes one committed PostgreSQL transaction (cdc.Sink): its changes
// become deltas of their tables' models, routed in order, each connection's
// share queued contiguously.
func (e *Engine) Apply(txn *cdc.Txn) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lsn, e.batch = txn.EndLSN, 0
	batch := len(txn.Changes)+len(txn.Messages) > 1
	var kept []delta
	size := 0
	idx, msg := 0, 0
	route := func(d *delta) {
		e.setOffset(d, idx)
		idx++
		if err := e.routeLocked(d, batch); err != nil {
			e.log.Error("routing a change", "model", d.model.name, "lsn", lsnText(txn.CommitLSN), "err", err)
		}
		if e.history != nil {
			kept = append(kept, *d)
			size += len(d.data) + len(d.old) + 128
		}
	}
	// SQL messages (snorky.publish, snorky.publish_delta) come in their place
	// among the row changes.
	messagesBefore := func(i int) {
		for ; msg < len(txn.Messages) && txn.Messages[msg].Index <= i; msg++ {
			m := &txn.Messages[msg]
			d, publish, err := e.parseMessageLocked(m)
			if err != nil {
				e.metrics.badMessages.Inc()
				e.log.Warn("skipping a malformed SQL message", "lsn", lsnText(m.LSN), "prefix", m.Prefix, "err", err)
				continue
			}
			if publish != nil {
				if batch {
					e.flushLocked() // what the transaction changed before comes first
				}
				if err := e.cfg.Publish(publish.Channel, publish.Message); err != nil {
					e.metrics.badMessages.Inc()
					e.log.Warn("skipping a malformed SQL publish", "lsn", lsnText(m.LSN), "err", err)
				}
				continue
			}
			d.lsn, d.xid = txn.CommitLSN, txn.Xid
			route(d)
		}
	}
	for i := range txn.Changes {
		messagesBefore(i)
		ch := &txn.Changes[i]
		m := e.byTable[ch.Table]
		if m == nil {
			continue // a table of the publication that no model maps
		}
		d := delta{model: m, lsn: txn.CommitLSN, xid: txn.Xid}
		switch ch.Op {
		case cdc.Insert:
			d.typ = "insert"
			d.data = m.rowJSON(ch.New, ch.Unchanged)
			d.unchanged = ch.Unchanged
		case cdc.Update:
			d.typ = "update"
			d.data = m.rowJSON(ch.New, ch.Unchanged)
			d.unchanged = ch.Unchanged
			if ch.Old != nil {
				d.old = m.rowJSON(ch.Old, nil)
			} else {
				d.old = m.keyJSON(ch.New)
			}
		case cdc.Delete:
			d.typ = "delete"
			d.data = m.rowJSON(ch.Old, nil)
		case cdc.Truncate:
			d.typ = "truncate"
		default:
			continue
		}
		route(&d)
	}
	messagesBefore(len(txn.Changes))
	if batch {
		e.flushLocked()
	}
	if e.history != nil {
		e.history.add(histTxn{xid: txn.Xid, at: e.cfg.Now(), deltas: kept, size: size + 64}, e.cfg.Now())
	}
	e.metrics.txns.Inc()
	return nil
}

// rowJSON renders a row image restricted to the model's columns, leaving
// out unchanged-TOAST columns.
func (m *model) rowJSON(cols []cdc.Column, unchanged []string) json.RawMessage {
	b := make([]byte, 0, 128)
	b = append(b, '{')
	first := true
	for _, c := range cols {
		if m.allowed != nil && !m.allowed[c.Name] {
			continue
		}
		if c.Value == nil || slices.Contains(unchanged, c.Name) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		q, ok := m.names[c.Name]
		if !ok {
			q, _ = json.Marshal(c.Name)
			if m.names == nil {
				m.names = map[string][]byte{}
			}
			m.names[c.Name] = q
		}
		b = append(b, q...)
		b = append(b, ':')
		b = append(b, c.Value...)
	}
	return append(b, '}')
}

// keyJSON renders the key columns of a row: the old row of an update whose
// key did not change under REPLICA IDENTITY DEFAULT.
func (m *model) keyJSON(cols []cdc.Column) json.RawMessage {
	var keep []cdc.Column
	for _, c := range cols {
		if slices.Contains(m.key, c.Name) {
			keep = append(keep, c)
		}
	}
	return m.rowJSON(keep, nil)
}

// replayLocked queues, for a subscription authorised with a snapshot, the
// held transactions its snapshot did not see, in commit order.
func (e *Engine) replayLocked(s *subscription) {
	e.history.each(func(t *histTxn) {
		if s.snap.visible(t.xid) {
			return
		}
		for i := range t.deltas {
			if e.byID[s.id] != s {
				return // dropped: too many pending deltas
			}
			d := &t.deltas[i]
			if mark := e.marksFor(s, d); mark != 0 {
				e.deliverLocked(s, e.encode(d, mark), false)
			}
		}
	})
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
		case "truncate":
			mark |= inNew
		case "insert", "delete":
			if newRow == nil {
				newRow, _ = dealers.NewRow(d.data)
			}
			if newRow != nil && it.d.MatchQuery(it.q, newRow) {
				mark |= inNew
			}
		case "update":
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

func lsnText(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }

// MessagePrefix is the prefix of the logical messages the engine takes
// (pg_logical_emit_message(true, 'snorky', …), written by the functions of
// the snorky schema).
const MessagePrefix = "snorky"

// sqlPublish is a PubSub message published from SQL.
type sqlPublish struct {
	Channel json.RawMessage
	Message json.RawMessage
}

// parseMessageLocked decodes one SQL message: {"op":"publish","channel",
// "message"} or {"op":"delta","model","type","data","old_data"}.
func (e *Engine) parseMessageLocked(m *cdc.Message) (*delta, *sqlPublish, error) {
	if m.Prefix != MessagePrefix {
		return nil, nil, fmt.Errorf("unknown prefix %q", m.Prefix)
	}
	var o map[string]json.RawMessage
	if err := json.Unmarshal(m.Content, &o); err != nil || o == nil {
		return nil, nil, fmt.Errorf("payload is not a JSON object")
	}
	op, _ := rpc.String(o["op"])
	switch op {
	case "publish":
		ch, okC := o["channel"]
		msg, okM := o["message"]
		if !okC || !okM || e.cfg.Publish == nil {
			return nil, nil, fmt.Errorf("publish needs channel and message")
		}
		return nil, &sqlPublish{Channel: ch, Message: msg}, nil
	case "delta":
		in := map[string]json.RawMessage{"type": o["type"], "model": o["model"]}
		typ, _ := rpc.String(o["type"])
		if typ == "update" {
			in["newData"], in["oldData"] = o["data"], o["old_data"]
		} else {
			in["data"] = o["data"]
		}
		for k, v := range in {
			if v == nil || string(v) == "null" && k != "data" {
				delete(in, k)
			}
		}
		var d delta
		if err := e.parseDeltaLocked(in, &d); err != nil {
			return nil, nil, err
		}
		return &d, nil, nil
	}
	return nil, nil, fmt.Errorf("unknown op %q", op)
}

// SetHorizon records pg_current_snapshot() taken before the PostgreSQL
// reader starts streaming. Until it is set, snapshots are refused: the
// engine cannot tell which transactions it will never see.
func (e *Engine) SetHorizon(text string) error {
	h, ok := parseSnapshot(text)
	if !ok {
		return fmt.Errorf("invalid snapshot %q", text)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.horizon = h
	return nil
}

// coversSnapshotLocked reports whether the engine can give a subscription
// authorised with s every transaction s did not see: each such transaction
// either is still held in the history or will still arrive from the reader.
//
// The reader delivers every transaction the horizon H did not see. A
// transaction that H saw committed before streaming began and may be
// missing: s must have seen it too. That holds when H.xmax ≤ s.xmax and no
// transaction in progress for s was already finished for H.
func (e *Engine) coversSnapshotLocked(s *snapshot) bool {
	h := e.horizon
	if h == nil || s.xmax < h.xmax {
		return false
	}
	for x := range s.xip {
		if x < h.xmax {
			if _, inProgress := h.xip[x]; !inProgress {
				return false
			}
		}
	}
	return e.history.covers(s)
}
