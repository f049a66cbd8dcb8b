package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/cursors"
)

// Public cursor handles are integers 0–65535 (spec §2.4). A cluster splits
// them into Slots ranges of HandlesPerSlot; each node claims one slot
// while it runs and gives out handles of its range only, so handles never
// collide in a document across nodes.
const (
	Slots          = 32
	HandlesPerSlot = 65536 / Slots // 2048 cursors per node per document
)

// cursorsBridge implements cursors.Bridge.
type cursorsBridge struct {
	svc   *cursors.Service
	rooms *rooms
}

// Cursors joins svc to the Cursors services of the other nodes of n's
// cluster and returns the function that stops it. The documents' cursors
// are kept in the bucket snorky_<n.Name>_cursors, and this node's handle
// slot in snorky_<n.Name>_cursor_slots, both with ttl (zero: DefaultTTL).
// It fails when every slot is taken. Call stop once the frontend no
// longer serves; it deletes this node's cursors, so they are removed at
// once elsewhere, and frees its slot.
func Cursors(svc *cursors.Service, n *cluster.Node, ttl time.Duration) (stop func(), err error) {
	if ttl, err = checkTTL(ttl); err != nil {
		return nil, err
	}
	log := logger(n).With("service", "cursors")
	slots, err := openBucket(n, "cursor_slots", ttl)
	if err != nil {
		return nil, err
	}
	kv, err := openBucket(n, "cursors", ttl)
	if err != nil {
		return nil, err
	}
	sl, err := claimSlot(slots, n.ID, ttl, log)
	if err != nil {
		return nil, err
	}
	b := &cursorsBridge{svc: svc}
	if err := svc.SetBridge(b, sl.slot*HandlesPerSlot, HandlesPerSlot); err != nil {
		sl.stop()
		return nil, err
	}
	b.rooms = newRooms(kv, ttl, n.ID, log)
	b.rooms.apply = b.apply
	b.rooms.encode = encodeCursors
	b.rooms.start()
	return func() {
		b.rooms.close()
		sl.stop()
	}, nil
}

// wireCursors is a node's record of a document: its cursors there.
type wireCursors struct {
	Cursors []cursors.Cursor `json:"cursors"`
}

func encodeCursors(v any) []byte {
	b, _ := json.Marshal(wireCursors{Cursors: v.([]cursors.Cursor)}) // raw JSON values from the service: valid
	return b
}

func decodeCursors(b []byte) ([]cursors.Cursor, error) {
	var w wireCursors
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	return w.Cursors, nil
}

func (b *cursorsBridge) apply(k, node string, value []byte) {
	var cs []cursors.Cursor
	if value != nil {
		var err error
		if cs, err = decodeCursors(value); err != nil {
			b.rooms.log.Warn("decoding cursors", "room", k, "node", node, "err", err)
		}
	}
	b.svc.RemoteCursors(k, node, cs)
}

// Acquire implements cursors.Bridge.
func (b *cursorsBridge) Acquire(k string) error { return b.rooms.Acquire(k) }

// Release implements cursors.Bridge.
func (b *cursorsBridge) Release(k string) { b.rooms.Release(k) }

// Remote implements cursors.Bridge.
func (b *cursorsBridge) Remote(k string) map[string][]cursors.Cursor {
	recs := b.rooms.Records(k)
	out := make(map[string][]cursors.Cursor, len(recs))
	for node, v := range recs {
		cs, err := decodeCursors(v)
		if err != nil {
			b.rooms.log.Warn("decoding cursors", "room", k, "node", node, "err", err)
			continue
		}
		out[node] = cs
	}
	return out
}

// Cursors implements cursors.Bridge.
func (b *cursorsBridge) Cursors(k string, cs []cursors.Cursor) {
	if len(cs) == 0 {
		b.rooms.Set(k, nil)
		return
	}
	b.rooms.Set(k, cs)
}

// slotClaim is this node's handle slot: the key "s<slot>" of the slots
// bucket, holding the node ID, updated every ttl/3 so that it does not
// expire.
type slotClaim struct {
	slot int
	stop func()
	wg   sync.WaitGroup
}

// claimSlot takes the first free slot and keeps it until stop.
func claimSlot(kv jetstream.KeyValue, id string, ttl time.Duration, log *slog.Logger) (*slotClaim, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range Slots {
		key := "s" + strconv.Itoa(i)
		rev, err := kv.Create(ctx, key, []byte(id))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("claiming cursor handle slot: %w", err)
		}
		c := &slotClaim{slot: i}
		keepCtx, stopKeep := context.WithCancel(context.Background())
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			keepSlot(keepCtx, kv, key, id, rev, ttl, log)
		}()
		c.stop = sync.OnceFunc(func() {
			stopKeep()
			c.wg.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := kv.Delete(ctx, key); err != nil {
				log.Debug("freeing cursor handle slot", "slot", i, "err", err)
			}
		})
		return c, nil
	}
	return nil, fmt.Errorf("claiming cursor handle slot: all %d slots are taken (at most %d nodes)", Slots, Slots)
}

// keepSlot updates the slot's key every ttl/3 until ctx ends. Should the
// key have expired (a long disconnection), it claims it again; should
// another node have taken it meanwhile, handles may collide, which it
// logs.
func keepSlot(ctx context.Context, kv jetstream.KeyValue, key, id string, rev uint64, ttl time.Duration, log *slog.Logger) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wctx, cancel := context.WithTimeout(ctx, ttl/3)
		r, err := kv.Update(wctx, key, []byte(id), rev)
		if err != nil && ctx.Err() == nil {
			// Find out why: expired, ours at another revision, or taken.
			e, gerr := kv.Get(wctx, key)
			switch {
			case errors.Is(gerr, jetstream.ErrKeyNotFound):
				r, err = kv.Create(wctx, key, []byte(id))
			case gerr == nil && string(e.Value()) == id:
				r, err = kv.Update(wctx, key, []byte(id), e.Revision())
			case gerr == nil:
				log.Error("cursor handle slot taken by another node: handles may collide", "slot", key, "node", string(e.Value()))
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("keeping cursor handle slot", "slot", key, "err", err)
			}
		}
		cancel()
		if err == nil {
			rev = r
		}
	}
}

// logger returns n's logger, or one that discards.
func logger(n *cluster.Node) *slog.Logger {
	if n.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Log
}
