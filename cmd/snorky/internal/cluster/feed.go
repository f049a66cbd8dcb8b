package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/snorkyhq/snorky/cdc"
)

// Target is what a Feed drives: the DataSync engine.
type Target interface {
	cdc.Sink
	cdc.StreamStarter
	// Reset restarts the window after a gap in the stream, with a new
	// snapshot horizon.
	Reset(from cdc.LSN, horizon, reason string)
}

// Feed consumes the cluster's stream on every node, the slot's owner
// included, and gives its records to the engine in order: the engine
// then sees exactly the transactions, session starts and positions that a
// single node's WAL reader would give it, so offsets, epochs and resume
// are the same on every node.
type Feed struct {
	js      jetstream.JetStream
	stream  string
	subject string
	target  Target
	horizon func(ctx context.Context) (string, error)
	log     *slog.Logger
	metrics *Metrics

	// Owned by Run's goroutine.
	epoch string
	pos   cdc.LSN
	seq   uint64
	names map[string]string // table and column names, interned
	// gap: records were lost (expired, unreadable) since the last one.
	// skipXid, when not 0 (no transaction has xid 0), is a transaction of
	// epoch skipEpoch found part-way: its rest is skipped.
	gap       bool
	skipXid   uint32
	skipEpoch string

	caughtUp atomic.Bool
	begun    atomic.Bool // the engine took its first record
	lag      atomic.Uint64
	lastErr  atomic.Pointer[string]
}

// NewFeed returns the feed of stream (subject) to target. horizon returns
// pg_current_snapshot() of this node's database connection (nil without a
// database): taken once the first record arrived, it is the snapshot
// horizon of a node that joins the stream part-way.
func NewFeed(js jetstream.JetStream, stream, subject string, target Target, horizon func(context.Context) (string, error), log *slog.Logger, m *Metrics) *Feed {
	return &Feed{js: js, stream: stream, subject: subject, target: target, horizon: horizon, log: log, metrics: m}
}

// Health is nil once the feed has caught up with the stream: before that
// the node would serve acquires and resumes from a window that is behind.
func (f *Feed) Health() error {
	if e := f.lastErr.Load(); e != nil {
		return errors.New(*e)
	}
	if !f.begun.Load() {
		return fmt.Errorf("waiting for the cluster stream %s to begin (no node owns the replication slot yet: see the nodes' logs)", f.stream)
	}
	if !f.caughtUp.Load() {
		return fmt.Errorf("catching up with the cluster stream %s (%d records behind)", f.stream, f.lag.Load())
	}
	return nil
}

// Lag is the number of records of the stream not yet given to the engine.
func (f *Feed) Lag() uint64 { return f.lag.Load() }

// Run consumes the stream until ctx is done. An ordered consumer recreates
// itself after a disconnect or a server's failure and continues after the
// last record it delivered.
func (f *Feed) Run(ctx context.Context) error {
	wait := time.Second
	for {
		began := time.Now()
		err := f.consume(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("the consumer stopped")
		}
		msg := err.Error()
		f.lastErr.Store(&msg)
		if time.Since(began) > 30*time.Second {
			wait = time.Second
		}
		f.log.Warn("cluster: consuming the stream failed; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, 30*time.Second)
	}
}

func (f *Feed) consume(ctx context.Context) error {
	s, err := f.js.Stream(ctx, f.stream)
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", f.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", f.stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.subject}}
	if f.seq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.seq+1
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("cluster stream %s: creating a consumer: %w", f.stream, err)
	}
	if info.State.Msgs == 0 || f.seq >= info.State.LastSeq {
		f.caughtUp.Store(true)
	}
	// Short heartbeats: a consumer lost with its NATS server is noticed
	// (two missed heartbeats) and recreated on another within seconds.
	it, err := cons.Messages(jetstream.PullExpiry(4*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("cluster stream %s: %w", f.stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	f.lastErr.Store(nil)
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("cluster stream %s: %w", f.stream, err)
		}
		if err := f.handleMessage(ctx, meta.Sequence.Stream, m.Data()); err != nil {
			return err
		}
		f.lag.Store(meta.NumPending)
		f.metrics.lag.Set(float64(meta.NumPending))
		if meta.NumPending == 0 {
			f.caughtUp.Store(true)
		}
	}
}

// handleMessage gives the records of one stream message to the engine.
func (f *Feed) handleMessage(ctx context.Context, seq uint64, body []byte) error {
	if f.begun.Load() && f.seq > 0 && seq != f.seq+1 {
		f.log.Error("cluster: records of the stream expired before this node read them (it was away longer than cluster.stream.max_age)", "seq", seq)
		f.gap = true
	}
	f.seq = seq
	for i := 0; len(body) > 0; i++ {
		n, k := binary.Uvarint(body)
		if k <= 0 || n > uint64(len(body)-k) {
			f.log.Error("cluster: skipping the rest of a stream message this node cannot read", "seq", seq, "record", i)
			f.metrics.badRecords.Inc()
			f.gap = true
			return nil
		}
		if f.names == nil {
			f.names = map[string]string{}
		}
		r, err := decodeRecordNames(body[k:k+int(n)], f.names)
		body = body[k+int(n):]
		if errors.Is(err, errVersion) {
			return fmt.Errorf("cluster stream %s, record %d: %w", f.stream, seq, err)
		}
		if err != nil {
			// What this node cannot read is a gap in what it delivers.
			f.log.Error("cluster: skipping a stream record this node cannot read", "seq", seq, "record", i, "err", err)
			f.metrics.badRecords.Inc()
			f.gap = true
			continue
		}
		if err := f.handle(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// handle gives one record to the engine. A node that joins the stream, or
// continues after a gap, begins at a whole transaction's end: the rest of
// a transaction it found part-way is skipped.
func (f *Feed) handle(ctx context.Context, r *record) error {
	switch r.kind {
	case kindStart:
		if !f.begun.Load() || r.epoch != f.epoch {
			f.pos = r.from // a new epoch's positions begin again
		}
		if err := f.target.StartStream(r.epoch, r.from, r.horizon); err != nil {
			return err
		}
		f.epoch, f.gap, f.skipXid = r.epoch, false, 0
		f.begun.Store(true)
		return nil
	case kindMarker:
		if f.begun.Load() && r.epoch == f.epoch && !f.gap {
			return nil
		}
		return f.join(ctx, r.epoch, r.prev)
	}
	t := r.txn
	if f.skipXid != 0 {
		if t.Xid == f.skipXid && r.epoch == f.skipEpoch {
			if t.Partial {
				return nil
			}
			f.skipXid = 0
			return f.join(ctx, r.epoch, t.EndLSN) // after the transaction found part-way
		}
		f.skipXid = 0
	}
	if !f.begun.Load() || r.epoch != f.epoch || f.gap {
		if t.Partial {
			// f.epoch stays: join compares it with the epoch it joins.
			f.skipXid, f.skipEpoch = t.Xid, r.epoch
			return nil
		}
		if err := f.join(ctx, r.epoch, r.prev); err != nil {
			return err
		}
	}
	if !t.Partial && t.EndLSN <= f.pos {
		return nil // already taken (the stream was published again after a failover)
	}
	if err := f.target.Apply(t); err != nil {
		return err
	}
	if !t.Partial {
		f.pos = t.EndLSN
	}
	return nil
}

// join begins the engine's stream at position at of epoch: when joining
// (with this node's own snapshot, taken now that a later record arrived,
// as the horizon: every transaction it did not see comes after), or after
// a gap (the engine resets its window; its clients refetch).
func (f *Feed) join(ctx context.Context, epoch string, at cdc.LSN) error {
	horizon := ""
	if f.horizon != nil {
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		h, err := f.horizon(hctx)
		cancel()
		if err != nil {
			f.log.Warn("cluster: reading a snapshot horizon failed; snapshots are refused until the next session start", "err", err)
		}
		horizon = h
	}
	if f.begun.Load() && f.gap && epoch == f.epoch {
		f.target.Reset(at, horizon, "records of the cluster stream expired before this node read them")
	} else if err := f.target.StartStream(epoch, at, horizon); err != nil {
		return err
	}
	f.epoch, f.pos, f.gap = epoch, at, false
	f.begun.Store(true)
	return nil
}
