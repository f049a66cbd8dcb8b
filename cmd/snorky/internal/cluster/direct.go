package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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

// Start publishes a marker when the stream holds no record, so that every
// node's engine begins with the stream's epoch (the first node to try
// wins; the others find it there); then, until ctx is done, it publishes
// one whenever the stream has been quiet for every, so that it always
// holds a recent record for a node that joins.
func (d *DirectPublisher) Start(ctx context.Context, every time.Duration) error {
	if err := d.mark(ctx, 0); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := d.mark(ctx, every); err != nil && ctx.Err() == nil {
				d.c.Log.Warn("cluster: publishing a marker failed", "err", err)
			}
		}
	}()
	return nil
}

// mark publishes a marker if the stream is empty or, with quiet > 0, its
// last record is older than quiet.
func (d *DirectPublisher) mark(ctx context.Context, quiet time.Duration) error {
	c := d.c
	s, err := c.JS.Stream(ctx, c.stream)
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", c.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if st := info.State; st.Msgs > 0 && (quiet == 0 || time.Since(st.LastTime) < quiet) {
		return nil
	}
	last := info.State.LastSeq
	rec := encodeMarker(nil, streamEpoch(s), cdc.LSN(last))
	_, err = d.put(ctx, rec, cdc.LSN(last), last, fmt.Sprintf("m-%s-%d", c.ID, d.n.Add(1)))
	if errors.Is(err, errRaced) {
		return nil // another node's record came first
	}
	return err
}

// errRaced is put's error when another record took the expected place.
var errRaced = errors.New("another record came first")

// put publishes the record rec, after which the stream stands at pos, as
// message id, expecting the stream's last sequence to be last.
func (d *DirectPublisher) put(ctx context.Context, rec []byte, pos cdc.LSN, last uint64, id string) (*jetstream.PubAck, error) {
	c := d.c
	body := binary.AppendUvarint(nil, uint64(len(rec)))
	msg := &nats.Msg{Subject: c.subject, Data: append(body, rec...), Header: nats.Header{}}
	msg.Header.Set(posHeader, pos.String())
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	ack, err := c.JS.PublishMsg(pctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(c.stream), jetstream.WithExpectLastSequence(last))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsWrongLastSequence {
		return nil, errRaced
	}
	return ack, err
}

// Publish stores payload in the stream and returns the position just
// before it (the engine answers once it has passed that position).
func (d *DirectPublisher) Publish(ctx context.Context, payload []byte) (cdc.LSN, error) {
	c := d.c
	s, err := c.JS.Stream(ctx, c.stream)
	if err != nil {
		return 0, fmt.Errorf("cluster stream %s: %w", c.stream, err)
	}
	epoch := streamEpoch(s)
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
		ack, err := d.put(ctx, encodeTxn(nil, epoch, cdc.LSN(last), txn), pos, last, id)
		if err == nil {
			// A retried publish may be answered as a duplicate of an
			// earlier attempt, stored at its own sequence.
			return cdc.LSN(ack.Sequence) - 1, nil
		}
		if errors.Is(err, errRaced) {
			continue // another node published first: take the next sequence
		}
		return 0, err
	}
}
