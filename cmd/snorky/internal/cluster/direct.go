package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/snorkyhq/snorky/cdc"
)

// DirectPublisher, in a cluster without a database, publishes
// publishDeltas batches to the stream itself (datasync.Config.PublishWAL):
// each becomes a transaction of one logical message whose position is the
// stream sequence it is stored at, so that offsets follow the stream and
// every node delivers the batch in the same order. Nodes publish
// concurrently: each publish expects the stream's last sequence and is
// retried when another node's came first.
type DirectPublisher struct {
	c      *Cluster
	prefix string
	n      atomic.Uint64
}

// NewDirectPublisher returns the publisher of batches with message prefix
// prefix (datasync.MessagePrefix).
func (c *Cluster) NewDirectPublisher(prefix string) *DirectPublisher {
	return &DirectPublisher{c: c, prefix: prefix}
}

// Start publishes the stream's first record, a session start, when the
// stream is empty (the first node to try wins; the others find it there).
func (d *DirectPublisher) Start(ctx context.Context) error {
	c := d.c
	s, err := c.JS.Stream(ctx, c.stream)
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", c.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.LastSeq > 0 {
		return err
	}
	rec := encodeStart(nil, d.epoch(s), 0, 0, "")
	body := binary.AppendUvarint(nil, uint64(len(rec)))
	msg := &nats.Msg{Subject: c.subject, Data: append(body, rec...), Header: nats.Header{}}
	msg.Header.Set(posHeader, cdc.LSN(0).String())
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err = c.JS.PublishMsg(pctx, msg, jetstream.WithMsgID("start-"+c.ID), jetstream.WithExpectStream(c.stream), jetstream.WithExpectLastSequence(0))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsWrongLastSequence {
		return nil // another node started it
	}
	return err
}

// epoch is the stream's epoch without a database: the stream's identity.
func (d *DirectPublisher) epoch(s jetstream.Stream) string {
	return "js" + strconv.FormatInt(s.CachedInfo().Created.UnixNano(), 36)
}

// Publish stores payload in the stream and returns the position just
// before it (the engine answers once it has passed that position).
func (d *DirectPublisher) Publish(ctx context.Context, payload []byte) (cdc.LSN, error) {
	c := d.c
	s, err := c.JS.Stream(ctx, c.stream)
	if err != nil {
		return 0, fmt.Errorf("cluster stream %s: %w", c.stream, err)
	}
	epoch := d.epoch(s)
	id := fmt.Sprintf("p-%s-%d", c.ID, d.n.Add(1))
	for {
		info, err := s.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("cluster stream %s: %w", c.stream, err)
		}
		last := info.State.LastSeq
		pos := cdc.LSN(last + 1)
		txn := &cdc.Txn{Xid: uint32(pos), CommitLSN: pos, EndLSN: pos, CommitTime: time.Now(),
			Messages: []cdc.Message{{Prefix: d.prefix, Content: payload, LSN: pos}}}
		rec := encodeTxn(nil, epoch, cdc.LSN(last), txn)
		body := binary.AppendUvarint(nil, uint64(len(rec)))
		body = append(body, rec...)
		msg := &nats.Msg{Subject: c.subject, Data: body, Header: nats.Header{}}
		msg.Header.Set(posHeader, pos.String())
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		ack, err := c.JS.PublishMsg(pctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(c.stream), jetstream.WithExpectLastSequence(last))
		cancel()
		if err == nil {
			// A retried publish may be answered as a duplicate of an
			// earlier attempt, stored at its own sequence.
			return cdc.LSN(ack.Sequence) - 1, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsWrongLastSequence {
			continue // another node published first: take the next sequence
		}
		return 0, err
	}
}
