package datasync

import (
	"context"
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
	subs    map[uint64]*subscription // acquired, by dealer-facing sequence number
	byID    map[string]*subscription // by the public id in the token
	byConn  map[rpc.Conn]map[*subscription]struct{}
	// resumable holds the connections that opted in to resume (§3.9).
	resumable map[rpc.Conn]*connState
	nextSeq   uint64

	// The stream: its epoch, the position of the last transaction (or
	// batch) taken, and the replay window. started is false until the
	// PostgreSQL reader says where its stream starts (always true without
	// a database).
	epoch   string
	started bool
	pos     pos
	window  *window
	// advanced is closed (and replaced) whenever pos or the epoch changes.
	advanced chan struct{}
	// maxXid is the newest transaction ID seen from PostgreSQL (widened).
	maxXid uint64
	// horizon is a snapshot taken before the reader began streaming: every
	// transaction it did not see reaches the engine, so the window is
	// complete for exactly those (see coversSnapshotLocked).
	horizon *snapshot

	// open is a transaction whose chunks are arriving (cdc.Txn.Partial).
	open *openTxn

	// after holds what must not run under mu (logging, closing
	// connections): the holder of mu adds to it and unlock runs it.
	after []func()

	// Scratch state of one routing pass, reused.
	marks map[uint64]uint8
	outs  map[rpc.Conn]*connOut
	order []rpc.Conn
	spare []*connOut // reset connOuts, reused by routing passes
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
	seq   uint64
	id    string
	items []item
	raw   []json.RawMessage // the items as authorised (for resume credentials)
	owner rpc.Conn
	// start is the position the subscription is entitled from: it receives
	// the deltas after it.
	start pos
	timer *time.Timer
	// snap, when set, is the snapshot the application's query saw: the
	// transactions visible in it are never delivered (D8).
	snap     *snapshot
	snapText string
	// rev is the revision of its last binding (acquire, resume) in a
	// cluster (Config.Rebind): a takeover notice of a smaller one is stale.
	rev uint64
}

type item struct {
	d *dealers.Dealer
	q dealers.Query
}

// connState is what the engine keeps for a connection that opted in to
// resume: the last position notification sent.
type connState struct {
	sent pos
}

// New builds the engine. Metrics are registered on reg when it is not nil.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg:       cfg,
		log:       log,
		name:      rpc.QuoteName(cfg.Service),
		dealers:   map[string]*dealers.Dealer{},
		byModel:   map[string][]*dealers.Dealer{},
		models:    map[string]*model{},
		byTable:   map[string]*model{},
		subs:      map[uint64]*subscription{},
		byID:      map[string]*subscription{},
		byConn:    map[rpc.Conn]map[*subscription]struct{}{},
		resumable: map[rpc.Conn]*connState{},
		window:    newWindow(cfg.HistoryMaxAge, cfg.HistoryMaxBytes),
		advanced:  make(chan struct{}),
		marks:     map[uint64]uint8{},
		outs:      map[rpc.Conn]*connOut{},
	}
	if !cfg.Database && !cfg.StreamFed {
		// Without a database the window lives in memory only: a restart is
		// a new stream.
		e.epoch, e.started = randomEpoch(), true
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

func randomEpoch() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// unlock releases mu, then runs what was left for after it.
func (e *Engine) unlock() {
	after := e.after
	e.after = nil
	e.mu.Unlock()
	for _, f := range after {
		f()
	}
}

// logLater logs once mu is released (unlock).
func (e *Engine) logLater(level slog.Level, msg string, args ...any) {
	e.after = append(e.after, func() { e.log.Log(context.Background(), level, msg, args...) })
}

// closeLater closes c with 4008 once mu is released (unlock). The caller
// has already removed what c held, so nothing more is routed to it.
func (e *Engine) closeLater(c rpc.Conn) {
	e.after = append(e.after, func() { c.Close(rpc.CloseSlowConsumer, rpc.ReasonSlowConsumer) })
}

// Subscriptions returns the number of live subscriptions.
func (e *Engine) Subscriptions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byID)
}

// newSubscriptionLocked registers a subscription with its items and arms
// its acquire deadline. It joins the dealers' index when acquired.
func (e *Engine) newSubscriptionLocked(id string, items []item, raw []json.RawMessage) *subscription {
	e.nextSeq++
	if id == "" {
		var idb [16]byte
		rand.Read(idb[:])
		id = hex.EncodeToString(idb[:])
	}
	s := &subscription{seq: e.nextSeq, id: id, items: items, raw: raw, start: e.pos}
	e.byID[s.id] = s
	s.timer = time.AfterFunc(e.cfg.AcquireTimeout, func() { e.expire(s) })
	return s
}

// expire ends a subscription that was not acquired in time.
func (e *Engine) expire(s *subscription) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.byID[s.id] == s && s.owner == nil {
		e.removeLocked(s)
		e.metrics.expired.Inc()
	}
}

// bindLocked makes c the owner of s and puts s in the dealers' index.
func (e *Engine) bindLocked(s *subscription, c rpc.Conn) {
	s.timer.Stop()
	if s.owner != nil {
		e.unbindLocked(s)
	}
	s.owner = c
	m := e.byConn[c]
	if m == nil {
		m = map[*subscription]struct{}{}
		e.byConn[c] = m
	}
	m[s] = struct{}{}
	for _, it := range s.items {
		it.d.Add(s.seq, it.q)
	}
	e.subs[s.seq] = s
}

// unbindLocked takes s out of the index and off its owner.
func (e *Engine) unbindLocked(s *subscription) {
	if s.owner == nil {
		return
	}
	for _, it := range s.items {
		it.d.Remove(s.seq, it.q)
	}
	delete(e.subs, s.seq)
	if m := e.byConn[s.owner]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(e.byConn, s.owner)
		}
	}
	s.owner = nil
}

func (e *Engine) removeLocked(s *subscription) {
	e.unbindLocked(s)
	if e.byID[s.id] == s {
		delete(e.byID, s.id)
	}
	s.timer.Stop()
}

// disconnect ends every subscription c acquired.
func (e *Engine) disconnect(c rpc.Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := range e.byConn[c] {
		e.removeLocked(s)
	}
	delete(e.byConn, c)
	delete(e.resumable, c)
}

// delta is one delta of a transaction; its offset is its transaction's
// position and its index.
type delta struct {
	model *model
	typ   deltaType
	data  json.RawMessage
	old   json.RawMessage // update: oldData
}

// Position returns the offset prefix of the current stream position: the
// offset a subscription authorised now starts after.
func (e *Engine) Position() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return offset{e.pos, 0}.String()[:24]
}

// advanceLocked records a new position and wakes those waiting for one.
func (e *Engine) advanceLocked(p pos) {
	if p.cmp(e.pos) > 0 {
		e.pos = p
	}
	close(e.advanced)
	e.advanced = make(chan struct{})
}

// StartStream is called by the PostgreSQL reader, in order with the
// transactions, when a replication session starts: epoch names the stream
// (snorky.stream; "" when the snorky schema is absent) and from is the
// position it starts after. A new epoch means the slot was recreated: the
// window is emptied and every resumable subscription must refetch (§3.9).
// horizon ("" for none) replaces the snapshot horizon when the stream is
// new to this process (first start, a takeover by a standby, a reset): the
// engine then sees every transaction it did not see.
func (e *Engine) StartStream(epoch string, from cdc.LSN, horizon string) error {
	h, _ := parseSnapshot(horizon)
	e.mu.Lock()
	defer e.unlock()
	e.open = nil // a new session sends an unfinished transaction again
	if epoch == "" {
		if e.epoch == "" {
			e.logLater(slog.LevelWarn, "the snorky schema is absent: resume positions will not survive a restart (run `snorky migrate` or set database.migrate: true)")
			epoch = randomEpoch()
		} else {
			epoch = e.epoch
		}
	}
	switch {
	case !e.started:
		e.epoch, e.started = epoch, true
		e.window.reset(pos{from, 0})
		e.setHorizonLocked(h)
		e.advanceLocked(pos{from, 0})
	case epoch != e.epoch:
		e.logLater(slog.LevelError, "the replication stream was reset (new epoch): every resumable client must refetch", "old_epoch", e.epoch, "epoch", epoch)
		e.epoch = epoch
		e.window.reset(pos{max(from, e.pos.lsn), 0})
		e.setHorizonLocked(h)
		e.metrics.resets.Inc()
		e.refetchAllLocked("the stream was reset")
		e.advanceLocked(pos{from, 0})
	}
	return nil
}

// Reset empties the window after a gap in what feeds the engine (a
// cluster node that missed part of the stream while it was away longer
// than the stream keeps it): every resumable subscription must refetch,
// the others are closed, and the stream continues after from.
// horizon replaces the snapshot horizon: the window no longer knows what
// it missed ("" refuses snapshots until the next session start).
func (e *Engine) Reset(from cdc.LSN, horizon, reason string) {
	h, _ := parseSnapshot(horizon)
	e.mu.Lock()
	defer e.unlock()
	e.open = nil
	e.logLater(slog.LevelError, "the stream has a gap: every resumable client must refetch", "reason", reason)
	e.window.reset(pos{max(from, e.pos.lsn), 0})
	e.horizon = nil
	e.setHorizonLocked(h)
	e.metrics.resets.Inc()
	e.refetchAllLocked(refetchReset)
	e.advanceLocked(pos{from, 0})
}

// ConfirmLimit is the position the PostgreSQL reader may confirm at most
// (R2/R3): the end of the newest transaction no longer held in the window,
// so that after a restart PostgreSQL sends the window again. limited is
// false when the window holds nothing.
func (e *Engine) ConfirmLimit() (lsn cdc.LSN, limited bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.window.trim(e.cfg.Now())
	if !e.started {
		return 0, true
	}
	if e.window.len() == 0 {
		return 0, false
	}
	return e.window.floor.lsn, true
}

// QuickApply marks the engine as a cdc.QuickSink: Apply takes only e.mu,
// whose holders never wait on I/O (sockets are written without blocking or
// queued; logging and closing wait for the unlock), so the reader may call
// it on its own goroutine.
func (e *Engine) QuickApply() {}

// Apply takes one committed PostgreSQL transaction, or a chunk of one
// (cdc.Sink): its changes become deltas of their tables' models, routed in
// order at the commit, each connection's share queued contiguously. Apply
// owns txn: it releases its changes as it converts them.
func (e *Engine) Apply(txn *cdc.Txn) error {
	e.mu.Lock()
	defer e.unlock()
	if !e.started {
		e.epoch, e.started = randomEpoch(), true
	}
	if o := e.open; o != nil && o.t.xid != txn.Xid {
		e.logLater(slog.LevelWarn, "discarding an unfinished transaction", "xid", o.t.xid, "next_xid", txn.Xid)
		e.open = nil
	}
	o := e.open
	if o == nil {
		o = &openTxn{t: &winTxn{db: true, xid: txn.Xid}}
		if x := widen(txn.Xid, e.maxXid); x > e.maxXid {
			e.maxXid = x
		}
	}
	e.open = nil
	now := e.cfg.Now()
	t := o.t
	if txn.TooLarge {
		t.pos, t.lsn, t.at = pos{txn.EndLSN, 0}, txn.CommitLSN, now
		e.tooLargeLocked(t, txn.Tables)
		t.deltas = nil
		e.window.add(t, now)
		e.advanceLocked(t.pos)
		e.metrics.txns.Inc()
		return nil
	}
	e.convertLocked(o, txn)
	if txn.Partial {
		e.open = o
		return nil
	}
	t.pos, t.lsn, t.at = pos{txn.EndLSN, 0}, txn.CommitLSN, now
	// SQL publishes come in their place: what the transaction changed
	// before them is delivered first.
	from := 0
	for _, p := range o.publishes {
		e.deliverLocked(t, from, p.at)
		from = p.at
		if err := e.cfg.Publish(p.Channel, p.Message); err != nil {
			e.metrics.badMessages.Inc()
			e.logLater(slog.LevelWarn, "skipping a malformed SQL publish", "lsn", t.lsn.String(), "err", err)
		}
	}
	e.deliverLocked(t, from, len(t.deltas))
	e.window.add(t, now)
	e.advanceLocked(t.pos)
	e.metrics.txns.Inc()
	return nil
}

// openTxn is a transaction being assembled from its chunks.
type openTxn struct {
	t         *winTxn
	publishes []atPublish
}

// atPublish is a SQL publish placed before delta at of its transaction.
type atPublish struct {
	at int
	*sqlPublish
}

// convertLocked turns the changes and SQL messages of txn (a transaction or
// a chunk) into deltas of o.
func (e *Engine) convertLocked(o *openTxn, txn *cdc.Txn) {
	t := o.t
	// SQL messages (snorky.publish, snorky.publish_delta, publishDeltas
	// batches) come in their place among the row changes.
	msg := 0
	messagesBefore := func(i int) {
		for ; msg < len(txn.Messages) && txn.Messages[msg].Index <= i; msg++ {
			m := &txn.Messages[msg]
			ds, publish, err := e.parseMessageLocked(m)
			if err != nil {
				e.metrics.badMessages.Inc()
				e.logLater(slog.LevelWarn, "skipping a malformed SQL message", "lsn", m.LSN.String(), "prefix", m.Prefix, "err", err)
				continue
			}
			if publish != nil {
				o.publishes = append(o.publishes, atPublish{len(t.deltas), publish})
				continue
			}
			for _, d := range ds {
				t.add(d)
			}
		}
	}
	if t.deltas == nil {
		t.deltas = make([]delta, 0, len(txn.Changes))
	}
	for i := range txn.Changes {
		messagesBefore(i)
		ch := &txn.Changes[i]
		m := e.byTable[ch.Table]
		if m == nil {
			continue // a table of the publication that no model maps
		}
		d := delta{model: m}
		switch ch.Op {
		case cdc.Insert:
			d.typ = typeInsert
			d.data = m.rowJSON(ch.New, ch.Unchanged)
			t.setUnchanged(m.shown(ch.Unchanged))
		case cdc.Update:
			d.typ = typeUpdate
			d.data = m.rowJSON(ch.New, ch.Unchanged)
			t.setUnchanged(m.shown(ch.Unchanged))
			if ch.Old != nil {
				d.old = m.rowJSON(ch.Old, nil)
			} else {
				d.old = m.keyJSON(ch.New)
			}
		case cdc.Delete:
			d.typ = typeDelete
			d.data = m.rowJSON(ch.Old, nil)
		case cdc.Truncate:
			d.typ = typeTruncate
		default:
			continue
		}
		*ch = cdc.Change{} // the transaction's decoded values can go
		t.add(d)
	}
	messagesBefore(len(txn.Changes))
}

// setUnchanged records the unchanged-TOAST columns of the delta about to
// be added (rare: kept aside so a delta stays small).
func (t *winTxn) setUnchanged(cols []string) {
	if len(cols) == 0 {
		return
	}
	if t.unchanged == nil {
		t.unchanged = map[uint32][]string{}
	}
	t.unchanged[uint32(len(t.deltas))] = cols
}

func (t *winTxn) add(d delta) {
	t.deltas = append(t.deltas, d)
	t.size += len(d.data) + len(d.old) + deltaOverhead
}

// deltaOverhead approximates what a held delta costs besides its row data.
const deltaOverhead = 64

// tooLargeLocked handles a transaction over database.max_tx_bytes (D11):
// the subscriptions of its models end with mustRefetch (opted-in
// connections) or their connections close with 4008 (the others).
func (e *Engine) tooLargeLocked(t *winTxn, tables []string) {
	seen := map[string]bool{}
	add := func(m *model) {
		if m != nil && !seen[m.name] {
			seen[m.name] = true
			t.tooLarge = append(t.tooLarge, m.name)
		}
	}
	// The models of the chunks taken before it turned out too large.
	for i := range t.deltas {
		add(t.deltas[i].model)
	}
	for _, tb := range tables {
		if tb == cdc.MessagesDropped {
			// SQL-published deltas were left out, of models only their
			// text named: every model's subscribers must refetch.
			for _, m := range e.models {
				add(m)
			}
		}
		add(e.byTable[tb])
	}
	slices.Sort(t.tooLarge)
	t.size = 64
	e.logLater(slog.LevelWarn, "a transaction is over database.max_tx_bytes: its subscribers must refetch", "xid", t.xid, "lsn", t.lsn.String(), "models", t.tooLarge, "max_tx_bytes", e.cfg.MaxTxBytes)
	e.metrics.tooLarge.Inc()
	if len(t.tooLarge) == 0 {
		return
	}
	e.refetchModelsLocked(t.tooLarge, "transaction too large")
}

// shown returns the columns of names the model shows (its columns list),
// names itself when it shows them all: a hidden column is never named to
// clients, not even as unchanged.
func (m *model) shown(names []string) []string {
	if m.allowed == nil || !slices.ContainsFunc(names, func(n string) bool { return !m.allowed[n] }) {
		return names
	}
	var out []string
	for _, n := range names {
		if m.allowed[n] {
			out = append(out, n)
		}
	}
	return out
}

// rowJSON renders a row image restricted to the model's columns, leaving
// out unchanged-TOAST columns.
func (m *model) rowJSON(cols []cdc.Column, unchanged []string) json.RawMessage {
	n := 2
	for _, c := range cols {
		n += len(c.Name) + len(c.Value) + 4
	}
	b := make([]byte, 0, n)
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

// MessagePrefix is the prefix of the logical messages the engine takes
// (pg_logical_emit_message(true, 'snorky', …), written by the functions of
// the snorky schema and by publishDeltas).
const MessagePrefix = "snorky"

// sqlPublish is a PubSub message published from SQL.
type sqlPublish struct {
	Channel json.RawMessage
	Message json.RawMessage
}

// parseMessageLocked decodes one SQL message: {"op":"publish","channel",
// "message"}, {"op":"delta","model","type","data","old_data"}, or a
// publishDeltas batch {"op":"deltas","deltas":[…]} (validated whole).
func (e *Engine) parseMessageLocked(m *cdc.Message) ([]delta, *sqlPublish, error) {
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
		var typ deltaType
		_ = typ.UnmarshalJSON(o["type"]) // checked with the other fields below
		if typ == typeUpdate {
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
		if err := e.checkDeltaLocked(&wireDelta{Type: in["type"], Model: in["model"], Data: in["data"], NewData: in["newData"], OldData: in["oldData"]}, &d); err != nil {
			return nil, nil, err
		}
		return []delta{d}, nil, nil
	case "deltas":
		ds, err := e.checkBatchLocked(o["deltas"])
		if err != nil {
			return nil, nil, err
		}
		return ds, nil, nil
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
	e.setHorizonLocked(h)
	return nil
}

func (e *Engine) setHorizonLocked(h *snapshot) {
	if h == nil {
		return
	}
	e.horizon = h
	if h.xmax > e.maxXid {
		e.maxXid = h.xmax - 1
	}
}

// coversSnapshotLocked reports whether the engine can give a subscription
// authorised with s every transaction s did not see: each such transaction
// either is still held in the window or will still arrive from the reader.
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
	return e.window.covers(s)
}

// Run sends position notifications to the connections that opted in to
// resume and trims the window by age, until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.PositionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		e.window.trim(e.cfg.Now())
		e.sendPositionsLocked()
		e.mu.Unlock()
	}
}
