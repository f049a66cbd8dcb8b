package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/snorkyhq/snorky/cdc"
)

// epochHeader carries the epoch of a message's last record: a new owner
// trusts the stream's position only in its own epoch.
const epochHeader = "Snorky-Epoch"

// posHeader carries the stream's position after a record (an LSN in
// PostgreSQL's text form), so that a new owner of the slot reads where the
// stream stands without decoding the record.
const posHeader = "Snorky-Pos"

// payloadMargin is what a message's headers and a batch's lengths may
// take beside its records.
const payloadMargin = 4 << 10

// publishGiveUp is how long publishing may fail before the owner stops
// (its node exits), so that another node takes the slot over instead of
// every node waiting on one that cannot reach NATS.
const publishGiveUp = time.Minute

// publishTimeout bounds one attempt to publish: an attempt whose server
// died is retried (with the same message id) on another.
const publishTimeout = 2 * time.Second

// jsWrongLastSequence is JetStream's error code for a publish whose
// expected last sequence is not the stream's: someone else published.
const jsWrongLastSequence = 10071

// Publisher is the sink of the WAL reader on the node that owns the slot:
// it publishes every session start and transaction to the cluster's
// stream, in order. Records are batched: while one message is on its way
// to JetStream, the records that follow gather into the next, so that a
// busy stream costs one message (and one wake-up on every node) per batch
// rather than per transaction. The reader confirms to PostgreSQL only what
// JetStream has stored (cdc.ConfirmGate).
//
// Each publish expects the stream's last sequence to be the previous one's:
// should an old owner still publish (a partition), the stream never
// interleaves two owners; the loser stops with an error that says so.
type Publisher struct {
	js       jetstream.JetStream
	stream   string
	subject  string
	log      *slog.Logger
	ctx      context.Context
	metrics  *Metrics
	maxBatch int

	mu       sync.Mutex
	changed  *sync.Cond // the batch, the flight or err changed
	cur      batch      // records gathering for the next message
	spare    batch      // the previous message's, for reuse
	inFlight bool
	acked    cdc.LSN // the stream's position after what JetStream stored
	err      error   // the flusher stopped
	flusher  bool    // the flusher runs

	pos       cdc.LSN // the stream's position after the last record encoded
	lastEpoch string  // the epoch of the stream's last record, as read
	lastSeq   uint64  // the stream's last sequence (the flusher's)
	known     bool    // pos, acked and lastSeq were read from the stream
	epoch     string
	session   string
	xid       uint32          // the open (chunked) transaction
	chunks    int             // chunks of it encoded
	tables    map[string]bool // tables it touched so far
	// dropping says the open transaction is too large for one message:
	// only its tables are kept.
	dropping   bool
	maxPayload int
	rec        []byte
	lastAdd    time.Time   // when the last record was added
	markers    int         // markers published
	active     func() bool // this node owns the slot (nil: always)
}

// batch is one message's worth of records, each after its length.
type batch struct {
	buf   []byte
	id    string  // the message id: the last record's
	after cdc.LSN // the stream's position after it
	epoch string  // the epoch of its last record
}

var (
	_ cdc.Sink             = (*Publisher)(nil)
	_ cdc.StreamStarter    = (*Publisher)(nil)
	_ cdc.StreamPositioner = (*Publisher)(nil)
	_ cdc.ConfirmGate      = (*Publisher)(nil)
	_ cdc.OwnerGate        = (*Publisher)(nil)
)

// NewPublisher returns the publisher to stream (subject) of js. It stops
// retrying when ctx is done.
// markEvery is how often a quiet stream gets a marker (0: never).
func NewPublisher(ctx context.Context, js jetstream.JetStream, stream, subject string, maxPayload int, markEvery time.Duration, log *slog.Logger, m *Metrics) *Publisher {
	p := &Publisher{js: js, stream: stream, subject: subject, ctx: ctx, log: log, metrics: m, maxPayload: maxPayload,
		maxBatch: min(maxPayload-payloadMargin, 256<<10)}
	p.changed = sync.NewCond(&p.mu)
	if markEvery > 0 {
		go p.markQuiet(markEvery)
	}
	context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.changed.Broadcast()
		p.mu.Unlock()
	})
	return p
}

// SetActive tells the publisher whether this node owns the slot (markers
// are published only then).
func (p *Publisher) SetActive(f func() bool) {
	p.mu.Lock()
	p.active = f
	p.mu.Unlock()
}

// markQuiet publishes a marker whenever nothing was published for every:
// records expire after the stream's max_age, and a node that joins a
// stream with none would wait for the next change to begin.
func (p *Publisher) markQuiet(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		if p.session != "" && p.xid == 0 && p.err == nil && time.Since(p.lastAdd) >= every && (p.active == nil || p.active()) {
			p.markers++
			p.rec = encodeMarker(p.rec[:0], p.epoch, p.pos)
			if err := p.addLocked(fmt.Sprintf("m-%s-%d", p.session, p.markers), p.pos); err != nil {
				p.log.Warn("cluster: publishing a marker failed", "err", err)
			}
		}
		p.mu.Unlock()
	}
}

// ConfirmLimit caps what the reader confirms at what JetStream stored
// (cdc.ConfirmLimiter).
func (p *Publisher) ConfirmLimit() (cdc.LSN, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cur.buf) > 0 || p.inFlight || p.err != nil {
		return p.acked, true
	}
	return 0, false
}

// GateConfirm marks the publisher as a cdc.ConfirmGate.
func (p *Publisher) GateConfirm() {}

// StreamPosition reads where the stream stands (cdc.StreamPositioner),
// once what this process handed on is stored: the reader streams after
// it, so a new owner does not publish again what the stream holds.
func (p *Publisher) StreamPosition(ctx context.Context, epoch string) (cdc.LSN, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.idleLocked(); err != nil {
		return 0, err
	}
	if err := p.readStreamLocked(ctx); err != nil {
		return 0, err
	}
	if p.lastEpoch != "" && epoch != "" && p.lastEpoch != epoch {
		// Another slot's stream (recreated, or another database): its
		// positions say nothing about this one.
		p.log.Warn("cluster: the stream's last record is of another epoch; streaming from the slot's position",
			"stream_epoch", p.lastEpoch, "epoch", epoch)
		return 0, nil
	}
	return p.pos, nil
}

// Drain waits at most timeout for every record handed on to be stored
// (at shutdown: what is stored need not be sent again by the next owner).
func (p *Publisher) Drain(timeout time.Duration) {
	expired := false
	t := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		expired = true
		p.changed.Broadcast()
		p.mu.Unlock()
	})
	defer t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for (len(p.cur.buf) > 0 || p.inFlight) && p.err == nil && p.ctx.Err() == nil && !expired {
		p.changed.Wait()
	}
}

// idleLocked waits until every record is stored.
func (p *Publisher) idleLocked() error {
	for (len(p.cur.buf) > 0 || p.inFlight) && p.err == nil && p.ctx.Err() == nil {
		p.changed.Wait()
	}
	if p.err != nil {
		return p.err
	}
	return p.ctx.Err()
}

func (p *Publisher) readStreamLocked(ctx context.Context) error {
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", p.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", p.stream, err)
	}
	p.lastSeq, p.pos, p.lastEpoch = info.State.LastSeq, 0, ""
	if info.State.Msgs > 0 {
		m, err := s.GetLastMsgForSubject(ctx, p.subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return fmt.Errorf("cluster stream %s: reading its last record: %w", p.stream, err)
		default:
			lsn, err := pglogrepl.ParseLSN(m.Header.Get(posHeader))
			if err != nil {
				return fmt.Errorf("cluster stream %s: record %d has no valid %s header: %w", p.stream, m.Sequence, posHeader, err)
			}
			p.pos, p.lastEpoch = lsn, m.Header.Get(epochHeader)
		}
	}
	p.acked, p.known = p.pos, true
	return nil
}

// StartStream publishes a session start (cdc.StreamStarter).
func (p *Publisher) StartStream(epoch string, from cdc.LSN, horizon string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.known {
		if err := p.idleLocked(); err != nil {
			return err
		}
		if err := p.readStreamLocked(p.ctx); err != nil {
			return err
		}
	}
	if epoch == "" {
		// Without the snorky schema the reader has no epoch: the stream's
		// identity stands in, shared by every node.
		s, err := p.js.Stream(p.ctx, p.stream)
		if err != nil {
			return err
		}
		epoch = streamEpoch(s)
	}
	p.epoch = epoch
	var id [8]byte
	rand.Read(id[:])
	p.session = hex.EncodeToString(id[:])
	p.xid, p.chunks, p.tables, p.dropping = 0, 0, nil, false
	p.rec = encodeStart(p.rec[:0], epoch, p.pos, from, horizon)
	return p.addLocked("s-"+p.session, p.pos)
}

// Apply publishes a transaction or a chunk of one (cdc.Sink). A record
// over the largest message NATS takes is split into chunks; a single
// change over it turns the transaction into one too large to deliver
// (spec §3.10), as database.max_tx_bytes does.
func (p *Publisher) Apply(txn *cdc.Txn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.xid != txn.Xid {
		p.xid, p.chunks, p.tables, p.dropping = txn.Xid, 0, nil, false
	}
	if txn.Partial || p.chunks > 0 || p.dropping {
		p.addTablesLocked(txn)
	}
	if p.dropping {
		if txn.Partial {
			return nil
		}
		return p.publishTooLargeLocked(txn)
	}
	if err := p.publishSplitLocked(txn); err != nil {
		if errors.Is(err, errTooLarge) {
			p.addTablesLocked(txn) // its chunks sent so far are in p.tables
			p.dropping = true
			if txn.Partial {
				return nil
			}
			return p.publishTooLargeLocked(txn)
		}
		return err
	}
	if !txn.Partial {
		p.xid, p.chunks, p.tables = 0, 0, nil
	}
	return nil
}

// addTablesLocked records the tables txn touched, for the transaction's
// must-refetch should it turn out too large.
func (p *Publisher) addTablesLocked(txn *cdc.Txn) {
	if p.tables == nil {
		p.tables = map[string]bool{}
	}
	for i := range txn.Changes {
		p.tables[txn.Changes[i].Table] = true
	}
	if len(txn.Messages) > 0 {
		// Should the transaction turn out too large, its SQL-published
		// deltas are dropped too, and they may name any model.
		p.tables[cdc.MessagesDropped] = true
	}
	for _, t := range txn.Tables {
		p.tables[t] = true
	}
}

var errTooLarge = errors.New("a single change is larger than the largest NATS message")

// publishSplitLocked publishes txn, halving its changes until each record
// fits in a message.
func (p *Publisher) publishSplitLocked(txn *cdc.Txn) error {
	p.rec = encodeTxn(p.rec[:0], p.epoch, p.pos, txn)
	if len(p.rec)+payloadMargin <= p.maxPayload {
		if txn.Partial {
			p.chunks++
			return p.addLocked(fmt.Sprintf("c-%s-%d-%d", p.session, txn.Xid, p.chunks), p.pos)
		}
		return p.addLocked("t-"+txn.EndLSN.String(), txn.EndLSN)
	}
	// Halve the changes and messages, kept in their order: a message
	// with Index i comes before change i.
	total := len(txn.Changes) + len(txn.Messages)
	if total <= 1 {
		return errTooLarge
	}
	first := &cdc.Txn{Xid: txn.Xid, Partial: true}
	ci, mi := 0, 0
	for range total / 2 {
		if mi < len(txn.Messages) && txn.Messages[mi].Index <= ci {
			first.Messages = append(first.Messages, txn.Messages[mi])
			mi++
		} else {
			ci++
		}
	}
	first.Changes = txn.Changes[:ci]
	second := &cdc.Txn{Xid: txn.Xid, CommitLSN: txn.CommitLSN, EndLSN: txn.EndLSN, CommitTime: txn.CommitTime,
		Partial: txn.Partial, Changes: txn.Changes[ci:]}
	for _, m := range txn.Messages[mi:] {
		m.Index = max(m.Index-ci, 0)
		second.Messages = append(second.Messages, m)
	}
	if err := p.publishSplitLocked(first); err != nil {
		return err
	}
	return p.publishSplitLocked(second)
}

// publishTooLargeLocked publishes the end of a transaction whose rows were
// dropped: its tables (p.tables, which the caller has completed with
// txn's), so that their subscribers refetch.
func (p *Publisher) publishTooLargeLocked(txn *cdc.Txn) error {
	p.log.Warn("cluster: a row is larger than the largest NATS message (max_payload); its transaction becomes \"must refetch\" for its models",
		"xid", txn.Xid, "max_payload", p.maxPayload)
	t := &cdc.Txn{Xid: txn.Xid, CommitLSN: txn.CommitLSN, EndLSN: txn.EndLSN, CommitTime: txn.CommitTime, TooLarge: true}
	for tb := range p.tables {
		t.Tables = append(t.Tables, tb)
	}
	p.xid, p.chunks, p.tables, p.dropping = 0, 0, nil, false
	p.rec = encodeTxn(p.rec[:0], p.epoch, p.pos, t)
	return p.addLocked("t-"+txn.EndLSN.String(), txn.EndLSN)
}

// addLocked adds the record in p.rec, whose message id is id and after
// which the stream stands at after, to the next message. It waits only
// when that message is full.
func (p *Publisher) addLocked(id string, after cdc.LSN) error {
	need := len(p.rec) + binary.MaxVarintLen64
	for len(p.cur.buf) > 0 && len(p.cur.buf)+need > p.maxBatch && p.err == nil && p.ctx.Err() == nil {
		p.changed.Wait()
	}
	if p.err != nil {
		return p.err
	}
	if err := p.ctx.Err(); err != nil {
		return err
	}
	p.cur.buf = binary.AppendUvarint(p.cur.buf, uint64(len(p.rec)))
	p.cur.buf = append(p.cur.buf, p.rec...)
	p.cur.id, p.cur.after, p.cur.epoch, p.pos = id, after, p.epoch, after
	p.lastAdd = time.Now()
	if !p.flusher {
		p.flusher = true
		go p.flush()
	}
	p.changed.Broadcast()
	return nil
}

// flush publishes the gathered records, one message at a time, until the
// publisher's context ends or a publish fails for good.
func (p *Publisher) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		for len(p.cur.buf) == 0 && p.ctx.Err() == nil {
			p.changed.Wait()
		}
		if p.ctx.Err() != nil {
			p.flusher = false
			p.changed.Broadcast()
			return
		}
		b := p.cur
		p.cur, p.spare = batch{buf: p.spare.buf[:0]}, batch{}
		p.inFlight = true
		p.mu.Unlock()
		err := p.publish(&b)
		p.mu.Lock()
		p.inFlight, p.spare = false, b
		if err != nil {
			if p.ctx.Err() == nil {
				p.log.Error("cluster: "+err.Error(), "stream", p.stream)
			}
			p.err, p.flusher = err, false
			p.changed.Broadcast()
			return
		}
		p.acked = b.after
		p.changed.Broadcast()
	}
}

// publish publishes b and retries until JetStream stores it or the
// publisher's context ends.
func (p *Publisher) publish(b *batch) error {
	msg := &nats.Msg{Subject: p.subject, Data: b.buf, Header: nats.Header{}}
	msg.Header.Set(posHeader, b.after.String())
	msg.Header.Set(epochHeader, b.epoch)
	wait := 50 * time.Millisecond
	failing := time.Time{}
	for {
		ctx, cancel := context.WithTimeout(p.ctx, publishTimeout)
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(b.id), jetstream.WithExpectStream(p.stream)}
		if p.lastSeq > 0 {
			opts = append(opts, jetstream.WithExpectLastSequence(p.lastSeq))
		}
		ack, err := p.js.PublishMsg(ctx, msg, opts...)
		cancel()
		if err == nil {
			if !failing.IsZero() {
				p.log.Info("cluster: publishing to the stream again", "after", time.Since(failing).Round(time.Millisecond))
			}
			p.lastSeq = ack.Sequence
			p.metrics.published.Inc()
			return nil
		}
		if p.ctx.Err() != nil {
			return p.ctx.Err()
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsWrongLastSequence {
			// Our own earlier attempt may have been stored without its
			// acknowledgement reaching us.
			if seq, ok := p.storedLast(b.id); ok {
				p.lastSeq = seq
				p.metrics.published.Inc()
				return nil
			}
			return fmt.Errorf("%w: another process published to cluster stream %s while this node owned the replication slot, so this node stops "+
				"(after a failover this is a late publish of the previous owner and the node can be started again; if it recurs, "+
				"two deployments share cluster.name %q on one NATS: give each its own): %w", cdc.ErrSinkStopped, p.stream, p.clusterName(), err)
		}
		if errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("%w: a message of %d bytes is larger than NATS's max_payload (%d): raise max_payload in the NATS servers' configuration: %w",
				cdc.ErrSinkStopped, len(b.buf), p.maxPayload, err)
		}
		if failing.IsZero() {
			failing = time.Now()
			p.log.Warn("cluster: publishing to the stream failed; retrying (the slot is not confirmed past what the stream holds)", "err", err)
		} else if time.Since(failing) > publishGiveUp {
			return fmt.Errorf("%w: publishing to the cluster stream has failed for %v (%v): this node stops so that another node takes the replication slot over; start it again once it reaches NATS",
				cdc.ErrSinkStopped, publishGiveUp, err)
		}
		p.metrics.publishRetries.Inc()
		select {
		case <-p.ctx.Done():
			return p.ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// clusterName is the cluster's name, from the stream's.
func (p *Publisher) clusterName() string {
	return strings.TrimSuffix(strings.TrimPrefix(p.stream, "snorky_"), "_wal")
}

// CanOwn is nil while this node reaches NATS (cdc.OwnerGate): a node that
// cannot publish must not take the replication slot.
func (p *Publisher) CanOwn() error {
	if !p.js.Conn().IsConnected() {
		return errors.New("not connected to NATS: this node does not take the replication slot until it is")
	}
	return nil
}

// storedLast reports whether the stream's last record has message id id,
// and its sequence.
func (p *Publisher) storedLast(id string) (uint64, bool) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		return 0, false
	}
	m, err := s.GetLastMsgForSubject(ctx, p.subject)
	if err != nil || m.Header.Get(nats.MsgIdHdr) != id {
		return 0, false
	}
	return m.Sequence, true
}
