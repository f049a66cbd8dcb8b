package presence

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// primeTimeout bounds how long Acquire waits for a room's records.
const primeTimeout = 10 * time.Second

// errClosed refuses Acquire once the bridge has stopped.
var errClosed = errors.New("cluster bridge stopped")

// token encodes a canonical key (or a node ID) for a subject or a KV key:
// base64url without padding.
func token(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// rooms shares what each node holds in each room (a chat channel, a
// document) through a JetStream key-value bucket: the key
// "<room token>.<node token>" holds that node's record of the room, put
// again every ttl/3 (the heartbeat) and deleted when the node holds
// nothing there. The bucket's TTL drops the records of a node that died.
//
// A node watches the keys of a room while its connections are in it
// (Acquire to the last Release), keeping the other nodes' records, and
// hands each change to apply. Survivors reap: a record not put again
// within ttl is dropped as if deleted, so a killed node's members leave
// within ttl (and a tenth, the reaper's tick).
type rooms struct {
	kv   jetstream.KeyValue
	ttl  time.Duration
	self string // this node's token
	log  *slog.Logger

	// apply hands on a node's new record of a room, nil when it is gone.
	// Calls for one room never overlap and come in the order of the
	// record's changes.
	apply func(room, node string, value []byte)
	// open, when not nil, sets up what else the node needs while in a room
	// (chat's message subscription); close undoes it.
	open func(room string) (close func(), err error)
	// encode builds this node's record from what the service reported,
	// nil for nothing.
	encode func(v any) []byte

	ctx    context.Context // the bridge's lifetime
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // this node's records changed

	mu      sync.Mutex
	closed  bool
	entries map[string]*entry
	own     map[string]*ownRecord
}

// entry is a room this node is in.
type entry struct {
	room  string
	refs  int           // Acquires not yet Released
	ready chan struct{} // closed once primed (or failed: err)
	err   error
	done  chan struct{} // closed once torn down
	// closing: refs fell to zero, teardown runs; Acquire waits for done.
	closing bool
	stop    context.CancelFunc
	watched chan struct{} // closed when the watch goroutine has returned
	shut    func()        // from rooms.open

	// applyMu makes the update of records and the apply that follows one
	// step, for the watcher and the reaper alike.
	applyMu sync.Mutex
	records map[string]*record // node token → record; guarded by rooms.mu
}

type record struct {
	value []byte
	seen  time.Time
}

// ownRecord is this node's record of a room: what the service last
// reported (nil: nothing), and whether it still has to be written.
type ownRecord struct {
	v     any
	dirty bool
}

func newRooms(kv jetstream.KeyValue, ttl time.Duration, self string, log *slog.Logger) *rooms {
	ctx, cancel := context.WithCancel(context.Background())
	return &rooms{
		kv:      kv,
		ttl:     ttl,
		self:    token(self),
		log:     log,
		ctx:     ctx,
		cancel:  cancel,
		kick:    make(chan struct{}, 1),
		entries: map[string]*entry{},
		own:     map[string]*ownRecord{},
	}
}

// start runs the publisher and the reaper.
func (r *rooms) start() {
	r.wg.Add(2)
	go r.publish()
	go r.reap()
}

// Acquire waits until this node watches room, starting the watch when it
// is the first.
func (r *rooms) Acquire(room string) error {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return errClosed
		}
		e := r.entries[room]
		if e != nil && e.closing {
			r.mu.Unlock()
			<-e.done
			continue
		}
		first := e == nil
		if first {
			e = &entry{
				room:    room,
				ready:   make(chan struct{}),
				done:    make(chan struct{}),
				watched: make(chan struct{}),
				records: map[string]*record{},
			}
			r.entries[room] = e
		}
		e.refs++
		r.mu.Unlock()
		if first {
			e.err = r.prime(e)
			close(e.ready)
		} else {
			<-e.ready
		}
		if e.err != nil {
			r.Release(room)
			return e.err
		}
		return nil
	}
}

// prime opens the room and starts its watch, returning once the watch
// has delivered the room's current records.
func (r *rooms) prime(e *entry) error {
	ctx, stop := context.WithCancel(r.ctx)
	e.stop = stop
	if r.open != nil {
		c, err := r.open(e.room)
		if err != nil {
			close(e.watched)
			return err
		}
		e.shut = c
	}
	w, err := r.kv.Watch(ctx, token(e.room)+".*")
	if err != nil {
		close(e.watched)
		return fmt.Errorf("watching room records: %w", err)
	}
	primed := make(chan struct{})
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = w.Stop()
		close(e.watched)
		return errClosed
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go r.watch(ctx, e, w, primed)
	select {
	case <-primed:
		return nil
	case <-e.watched:
		return errors.New("room watch ended while starting")
	case <-time.After(primeTimeout):
		return fmt.Errorf("room records: none after %v", primeTimeout)
	}
}

// watch hands on the room's records until ctx ends or the watch does.
func (r *rooms) watch(ctx context.Context, e *entry, w jetstream.KeyWatcher, primed chan struct{}) {
	defer r.wg.Done()
	defer close(e.watched)
	defer stopWatch(w)
	for {
		select {
		case <-ctx.Done():
			return
		case kve, ok := <-w.Updates():
			if !ok {
				r.log.Warn("room watch ended", "room", e.room)
				return
			}
			if kve == nil { // the current records are in
				if primed != nil {
					close(primed)
					primed = nil
				}
				continue
			}
			_, node, ok := strings.Cut(kve.Key(), ".")
			if !ok || node == r.self {
				continue
			}
			var value []byte
			if kve.Operation() == jetstream.KeyValuePut {
				value = kve.Value()
			}
			r.update(e, node, value)
		}
	}
}

// stopWatch stops w and takes what it still delivers, so that its
// callback never blocks on a full channel, until it closes (briefly).
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// update records node's new record of the room (nil: gone) and applies it
// when it changed.
func (r *rooms) update(e *entry, node string, value []byte) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	r.mu.Lock()
	rec := e.records[node]
	switch {
	case value == nil && rec == nil:
		r.mu.Unlock()
		return
	case value == nil:
		delete(e.records, node)
	case rec != nil && bytes.Equal(rec.value, value):
		rec.seen = time.Now() // a heartbeat
		r.mu.Unlock()
		return
	default:
		e.records[node] = &record{value: value, seen: time.Now()}
	}
	r.mu.Unlock()
	r.apply(e.room, node, value)
}

// Records returns the other nodes' records of room, by node token.
func (r *rooms) Records(room string) map[string][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[room]
	if e == nil {
		return nil
	}
	out := make(map[string][]byte, len(e.records))
	for node, rec := range e.records {
		out[node] = rec.value
	}
	return out
}

// Release undoes one Acquire; the last one tears the room down, in the
// background. It never blocks.
func (r *rooms) Release(room string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entries[room]
	if r.closed || e == nil || e.closing {
		return
	}
	e.refs--
	if e.refs > 0 {
		return
	}
	e.closing = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.teardown(e)
	}()
}

// teardown stops the room's watch and whatever open set up, then forgets
// the room.
func (r *rooms) teardown(e *entry) {
	<-e.ready
	if e.stop != nil {
		e.stop()
	}
	<-e.watched
	if e.shut != nil {
		e.shut()
	}
	e.applyMu.Lock() // a reaper's apply in flight
	e.applyMu.Unlock()
	r.mu.Lock()
	if r.entries[e.room] == e {
		delete(r.entries, e.room)
	}
	r.mu.Unlock()
	close(e.done)
}

// Set records v as this node's record of room (nil: nothing there) for
// the publisher to write. It never blocks.
func (r *rooms) Set(room string, v any) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	o := r.own[room]
	if o == nil {
		o = &ownRecord{}
		r.own[room] = o
	}
	o.v, o.dirty = v, true
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// publish writes this node's records: a changed one at once, every one
// again every ttl/3.
func (r *rooms) publish() {
	defer r.wg.Done()
	beat := time.NewTicker(r.ttl / 3)
	defer beat.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
			r.flush(false)
		case <-beat.C:
			r.flush(true)
		}
	}
}

// flush writes the changed records, and with all the others too.
func (r *rooms) flush(all bool) {
	type write struct {
		room string
		v    any
	}
	var writes []write
	r.mu.Lock()
	for room, o := range r.own {
		switch {
		case o.dirty:
			o.dirty = false
			if o.v == nil {
				delete(r.own, room)
			}
		case !all || o.v == nil:
			continue
		}
		writes = append(writes, write{room, o.v})
	}
	r.mu.Unlock()
	for _, w := range writes {
		if r.ctx.Err() != nil {
			return
		}
		key := token(w.room) + "." + r.self
		ctx, cancel := context.WithTimeout(r.ctx, r.ttl/3)
		var err error
		if w.v == nil {
			err = r.kv.Delete(ctx, key)
		} else {
			_, err = r.kv.Put(ctx, key, r.encode(w.v))
		}
		cancel()
		if err != nil && r.ctx.Err() == nil {
			r.log.Warn("writing room record", "room", w.room, "err", err)
		}
	}
}

// reap drops, every tenth of ttl, the records not put again within ttl.
func (r *rooms) reap() {
	defer r.wg.Done()
	tick := time.NewTicker(max(r.ttl/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-tick.C:
			type stale struct {
				e    *entry
				node string
			}
			var found []stale
			r.mu.Lock()
			for _, e := range r.entries {
				for node, rec := range e.records {
					if now.Sub(rec.seen) > r.ttl {
						found = append(found, stale{e, node})
					}
				}
			}
			r.mu.Unlock()
			for _, s := range found {
				r.expire(s.e, s.node, now)
			}
		}
	}
}

// expire drops node's record of e's room if it is still stale at now.
func (r *rooms) expire(e *entry, node string, now time.Time) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	r.mu.Lock()
	rec := e.records[node]
	if e.closing || rec == nil || now.Sub(rec.seen) <= r.ttl {
		r.mu.Unlock()
		return
	}
	delete(e.records, node)
	r.mu.Unlock()
	r.log.Info("room record expired", "room", e.room, "node", node)
	r.apply(e.room, node, nil)
}

// close stops every goroutine, deletes this node's records (best effort,
// so that the other nodes see its members leave at once) and tears down
// the rooms.
func (r *rooms) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	var keys []string
	for room, o := range r.own {
		if o.v != nil || o.dirty {
			keys = append(keys, token(room)+"."+r.self)
		}
	}
	entries := make([]*entry, 0, len(r.entries))
	for _, e := range r.entries {
		if !e.closing {
			e.closing = true
			entries = append(entries, e)
		}
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	for _, e := range entries {
		r.teardown(e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, k := range keys {
		if err := r.kv.Delete(ctx, k); err != nil {
			r.log.Debug("deleting room record", "key", k, "err", err)
			if ctx.Err() != nil {
				return
			}
		}
	}
}
