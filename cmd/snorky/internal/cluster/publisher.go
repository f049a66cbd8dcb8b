package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/snorkyhq/snorky/cdc"
)

// posHeader carries the stream's position after a record (an LSN in
// PostgreSQL's text form), so that a new owner of the slot reads where the
// stream stands without decoding the record.
const posHeader = "Snorky-Pos"

// publishTimeout bounds one attempt to publish: an attempt whose server
// died is retried (with the same message id) on another.
const publishTimeout = 2 * time.Second

// jsWrongLastSequence is JetStream's error code for a publish whose
// expected last sequence is not the stream's: someone else published.
const jsWrongLastSequence = 10071

// Publisher is the sink of the WAL reader on the node that owns the slot:
// it publishes every session start and transaction to the cluster's stream,
// in order, and returns only once JetStream has stored it, so that the
// reader confirms to PostgreSQL only what the stream holds.
//
// Each publish expects the stream's last sequence to be the previous one's:
// should an old owner still publish (a partition), the stream never
// interleaves two owners; the loser stops with an error that says so.
type Publisher struct {
	js      jetstream.JetStream
	stream  string
	subject string
	log     *slog.Logger
	ctx     context.Context
	metrics *Metrics

	mu         sync.Mutex
	pos        cdc.LSN // the stream's position after the last record
	lastSeq    uint64  // the stream's last sequence
	known      bool    // pos and lastSeq were read from the stream
	epoch      string
	session    string
	xid        uint32          // the open (chunked) transaction
	chunks     int             // chunks of it published
	tables     map[string]bool // tables it touched so far
	dropping   bool            // it is too large for one message: only its tables are kept
	maxPayload int
	buf        []byte
}

var (
	_ cdc.Sink             = (*Publisher)(nil)
	_ cdc.StreamStarter    = (*Publisher)(nil)
	_ cdc.StreamPositioner = (*Publisher)(nil)
)

// NewPublisher returns the publisher to stream (subject) of js. It stops
// retrying when ctx is done.
func NewPublisher(ctx context.Context, js jetstream.JetStream, stream, subject string, maxPayload int, log *slog.Logger, m *Metrics) *Publisher {
	return &Publisher{js: js, stream: stream, subject: subject, ctx: ctx, log: log, metrics: m, maxPayload: maxPayload}
}

// StreamPosition reads where the stream stands (cdc.StreamPositioner):
// the reader streams after it, so a new owner does not publish again what
// the stream holds.
func (p *Publisher) StreamPosition(ctx context.Context) (cdc.LSN, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.readStreamLocked(ctx); err != nil {
		return 0, err
	}
	return p.pos, nil
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
	p.lastSeq, p.pos = info.State.LastSeq, 0
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
			p.pos = lsn
		}
	}
	p.known = true
	return nil
}

// StartStream publishes a session start (cdc.StreamStarter).
func (p *Publisher) StartStream(epoch string, from cdc.LSN, horizon string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.known {
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
		epoch = "js" + strconv.FormatInt(s.CachedInfo().Created.UnixNano(), 36)
	}
	p.epoch = epoch
	var id [8]byte
	rand.Read(id[:])
	p.session = hex.EncodeToString(id[:])
	p.xid, p.chunks, p.tables, p.dropping = 0, 0, nil, false
	p.buf = encodeStart(p.buf[:0], epoch, p.pos, from, horizon)
	return p.publishLocked("s-"+p.session, p.pos)
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
		if p.tables == nil {
			p.tables = map[string]bool{}
		}
		for i := range txn.Changes {
			p.tables[txn.Changes[i].Table] = true
		}
		for _, t := range txn.Tables {
			p.tables[t] = true
		}
	}
	if p.dropping {
		if txn.Partial {
			return nil
		}
		return p.publishTooLargeLocked(txn)
	}
	if err := p.publishSplitLocked(txn); err != nil {
		if errors.Is(err, errTooLarge) {
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

var errTooLarge = errors.New("a single change is larger than the largest NATS message")

// publishSplitLocked publishes txn, halving its changes until each record
// fits in a message.
func (p *Publisher) publishSplitLocked(txn *cdc.Txn) error {
	p.buf = encodeTxn(p.buf[:0], p.epoch, p.pos, txn)
	if len(p.buf)+512 <= p.maxPayload {
		if txn.Partial {
			p.chunks++
			return p.publishLocked(fmt.Sprintf("c-%s-%d-%d", p.session, txn.Xid, p.chunks), p.pos)
		}
		return p.publishLocked("t-"+txn.EndLSN.String(), txn.EndLSN)
	}
	n := len(txn.Changes)
	if n <= 1 && len(txn.Messages) <= 1 {
		return errTooLarge
	}
	mid := n / 2
	first := &cdc.Txn{Xid: txn.Xid, Partial: true, Changes: txn.Changes[:mid]}
	second := &cdc.Txn{Xid: txn.Xid, CommitLSN: txn.CommitLSN, EndLSN: txn.EndLSN, CommitTime: txn.CommitTime,
		Partial: txn.Partial, Changes: txn.Changes[mid:]}
	if n <= 1 { // two or more messages and at most one change: split the messages
		k := len(txn.Messages) / 2
		first.Changes, second.Changes = nil, txn.Changes
		first.Messages = txn.Messages[:k]
		for _, m := range txn.Messages[k:] {
			second.Messages = append(second.Messages, m)
		}
		for i := range second.Messages {
			second.Messages[i].Index = 0
		}
	} else {
		for _, m := range txn.Messages {
			if m.Index <= mid {
				first.Messages = append(first.Messages, m)
			} else {
				m.Index -= mid
				second.Messages = append(second.Messages, m)
			}
		}
	}
	if err := p.publishSplitLocked(first); err != nil {
		return err
	}
	return p.publishSplitLocked(second)
}

// publishTooLargeLocked publishes the end of a transaction whose rows were
// dropped: its tables, so that their subscribers refetch.
func (p *Publisher) publishTooLargeLocked(txn *cdc.Txn) error {
	p.log.Warn("cluster: a row is larger than the largest NATS message (max_payload); its transaction becomes \"must refetch\" for its models",
		"xid", txn.Xid, "max_payload", p.maxPayload)
	t := &cdc.Txn{Xid: txn.Xid, CommitLSN: txn.CommitLSN, EndLSN: txn.EndLSN, CommitTime: txn.CommitTime, TooLarge: true}
	for tb := range p.tables {
		t.Tables = append(t.Tables, tb)
	}
	p.xid, p.chunks, p.tables, p.dropping = 0, 0, nil, false
	p.buf = encodeTxn(p.buf[:0], p.epoch, p.pos, t)
	return p.publishLocked("t-"+txn.EndLSN.String(), txn.EndLSN)
}

// publishLocked publishes p.buf with message id id and, once stored, makes
// after the stream's position. It retries until JetStream stores it or
// the publisher's context ends.
func (p *Publisher) publishLocked(id string, after cdc.LSN) error {
	msg := &nats.Msg{Subject: p.subject, Data: p.buf, Header: nats.Header{}}
	msg.Header.Set(posHeader, after.String())
	wait := 50 * time.Millisecond
	failing := time.Time{}
	for {
		ctx, cancel := context.WithTimeout(p.ctx, publishTimeout)
		opts := []jetstream.PublishOpt{jetstream.WithMsgID(id), jetstream.WithExpectStream(p.stream)}
		if p.lastSeq > 0 {
			opts = append(opts, jetstream.WithExpectLastSequence(p.lastSeq))
		}
		ack, err := p.js.PublishMsg(ctx, msg, opts...)
		cancel()
		if err == nil {
			if !failing.IsZero() {
				p.log.Info("cluster: publishing to the stream again", "after", time.Since(failing).Round(time.Millisecond))
			}
			p.lastSeq, p.pos = ack.Sequence, after
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
			if seq, ok := p.storedLast(id); ok {
				p.lastSeq, p.pos = seq, after
				p.metrics.published.Inc()
				return nil
			}
			return fmt.Errorf("another node published to cluster stream %s while this one owned the slot (split brain); stopping this node's WAL reader: %w", p.stream, err)
		}
		if failing.IsZero() {
			failing = time.Now()
			p.log.Warn("cluster: publishing to the stream failed; retrying (the slot is not confirmed past what the stream holds)", "err", err)
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
