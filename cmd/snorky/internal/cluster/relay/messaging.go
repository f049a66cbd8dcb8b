package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/messaging"
)

// maxNameKey bounds a key of the names bucket (a subject), far below
// NATS's control line limit; a longer name cannot be registered in a
// cluster ("Name too long").
const maxNameKey = 1024

// nameKey returns the bucket key of name: "n" and the name in base64url
// (the prefix gives the empty name a key too).
func nameKey(name string) (string, bool) {
	k := "n" + base64.RawURLEncoding.EncodeToString([]byte(name))
	return k, len(k) <= maxNameKey
}

func keyName(key string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(key, "n"))
	return string(b), err == nil && strings.HasPrefix(key, "n")
}

// errTaken: the key belongs to another node.
var errTaken = errors.New("name held by another node")

// release is a name given back, to delete at the revision claimed.
type release struct {
	name string
	rev  uint64
}

// names is the messaging.Directory of one node.
type names struct {
	m   *messaging.Service
	nc  *nats.Conn
	kv  jetstream.KeyValue
	id  string
	cfg Config
	log *slog.Logger
	sub *nats.Subscription // <prefix>.msg.<id>

	msgPrefix string // "<Prefix>.msg."
	releases  chan release
	done      chan struct{}
	wg        sync.WaitGroup
	stopped   atomic.Bool
	dropped   drops // releases left to the TTL (queue full)

	mu    sync.Mutex
	owned map[string]uint64 // name → revision of this node's claim
}

// Messaging joins m to the Messaging services of the other nodes of n's
// cluster (see the package comment), creating or updating the names
// bucket. Call it before m handles any request; stop, after m's
// connections are gone, deletes this node's remaining names (within
// cfg.Timeout) and waits for the bridge's goroutines.
func Messaging(m *messaging.Service, n *cluster.Node, cfg Config) (stop func(), err error) {
	cfg, err = check(n, cfg)
	if err != nil {
		return nil, err
	}
	if n.JS == nil {
		return nil, errors.New("relay: no JetStream context")
	}
	bucket := "snorky_" + n.Name + "_names"
	if !bucketName.MatchString(bucket) {
		return nil, fmt.Errorf("relay: cluster name %q: a bucket name takes only A-Z a-z 0-9 _ -", n.Name)
	}
	kv, err := n.OpenBucket(context.Background(), jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Messaging names of the snorky cluster " + n.Name + ": name (base64url) → owner node",
		History:     1,
		TTL:         cfg.NameTTL,
		Storage:     jetstream.MemoryStorage, // the names live no longer than their nodes
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("relay: creating bucket %s: %w", bucket, err)
	}
	log := logger(n, "messaging")
	r := &names{
		m:         m,
		nc:        n.NC,
		kv:        kv,
		id:        n.ID,
		cfg:       cfg,
		log:       log,
		msgPrefix: n.Prefix + ".msg.",
		releases:  make(chan release, cfg.QueueLen),
		done:      make(chan struct{}),
		dropped:   drops{log: log, msg: "messaging: names left to expire (release queue full)"},
		owned:     map[string]uint64{},
	}
	r.sub, err = n.NC.Subscribe(r.msgPrefix+n.ID, r.receive)
	if err != nil {
		return nil, fmt.Errorf("relay: subscribing to messages: %w", err)
	}
	m.SetDirectory(r)
	r.wg.Add(1)
	go r.loop()
	return r.stop, nil
}

// Claim implements messaging.Directory.
func (r *names) Claim(name string) error {
	if r.stopped.Load() {
		return errors.New("relay stopped")
	}
	key, ok := nameKey(name)
	if !ok {
		return messaging.ErrNameTooLong
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	rev, err := r.take(ctx, key)
	if errors.Is(err, errTaken) {
		return messaging.ErrNameTaken
	}
	if err != nil {
		return fmt.Errorf("claiming name: %w", err)
	}
	r.mu.Lock()
	r.owned[name] = rev
	r.mu.Unlock()
	return nil
}

// take writes this node's ID at key, unless another node's is there
// (errTaken), and returns the revision written. A key that holds this
// node's ID already is one whose release has not been applied yet, or
// whose refresh was lost: it is taken over.
func (r *names) take(ctx context.Context, key string) (uint64, error) {
	for range 3 {
		rev, err := r.kv.Create(ctx, key, []byte(r.id))
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return rev, err
		}
		e, err := r.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
			continue // gone meanwhile: create again
		case err != nil:
			return 0, err
		case string(e.Value()) != r.id:
			return 0, errTaken
		}
		rev, err = r.kv.Update(ctx, key, []byte(r.id), e.Revision())
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return rev, err
		}
		// Changed between Get and Update: look again.
	}
	return 0, errTaken
}

// Release implements messaging.Directory: this node stops refreshing the
// names at once, and the loop deletes them.
func (r *names) Release(names []string) {
	if r.stopped.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range names {
		rev, ok := r.owned[name]
		if !ok {
			continue
		}
		delete(r.owned, name)
		select {
		case r.releases <- release{name, rev}:
		default:
			r.dropped.add(errors.New("release queue full"))
		}
	}
}

// Send implements messaging.Directory: a request to the owner node,
// answered once the message is queued there (empty) or with the error
// text of its Deliver.
func (r *names) Send(dest string, message []byte) error {
	key, ok := nameKey(dest)
	if !ok {
		return messaging.ErrUnknownDestination
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return messaging.ErrUnknownDestination
	}
	if err != nil {
		return fmt.Errorf("looking up destination: %w", err)
	}
	owner := string(e.Value())
	if owner == r.id || owner == "" || strings.ContainsAny(owner, ".*> \t\r\n") {
		// This node's: released here, its delete not applied yet.
		return messaging.ErrUnknownDestination
	}
	reply, err := r.nc.RequestMsgWithContext(ctx, &nats.Msg{
		Subject: r.msgPrefix + owner,
		Data:    appendFrame(nil, []byte(dest), message),
	})
	if errors.Is(err, nats.ErrNoResponders) {
		return messaging.ErrUnknownDestination // the owner died; its names expire
	}
	if err != nil {
		return fmt.Errorf("sending to node %s: %w", owner, err)
	}
	switch string(reply.Data) {
	case "":
		return nil
	case string(messaging.ErrUnknownDestination):
		return messaging.ErrUnknownDestination
	}
	return fmt.Errorf("node %s: %s", owner, reply.Data)
}

// receive delivers a message from another node and answers it.
func (r *names) receive(m *nats.Msg) {
	var reply []byte
	dest, message, err := splitFrame(m.Data)
	if err == nil {
		err = r.m.Deliver(string(dest), message)
	}
	if err != nil {
		reply = []byte(err.Error())
	}
	if err := m.Respond(reply); err != nil {
		r.log.Warn("messaging: answering a message", "err", err)
	}
}

// List implements messaging.Directory: the bucket's keys.
func (r *names) List() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	keys, err := r.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		r.log.Warn("messaging: listing the cluster's names; listing this node's", "err", err)
		return nil, err
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if name, ok := keyName(k); ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// loop deletes released names and refreshes the others.
func (r *names) loop() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.NameRefresh)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case rel := <-r.releases:
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
			r.delete(ctx, rel)
			cancel()
		case <-t.C:
			r.refresh()
		}
	}
}

// delete removes a released name's key, unless it changed since (taken
// over by a new claim, or expired and claimed elsewhere).
func (r *names) delete(ctx context.Context, rel release) {
	key, _ := nameKey(rel.name)
	err := r.kv.Delete(ctx, key, jetstream.LastRevision(rel.rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
		r.log.Warn("messaging: releasing a name; it expires", "err", err)
	}
}

// refresh rewrites every name this node owns, a few at a time, so that
// none reaches the bucket's TTL.
func (r *names) refresh() {
	r.mu.Lock()
	owned := make([]release, 0, len(r.owned))
	for name, rev := range r.owned {
		owned = append(owned, release{name, rev})
	}
	r.mu.Unlock()
	var g errgroup.Group
	g.SetLimit(16)
	for _, o := range owned {
		g.Go(func() error {
			r.refreshOne(o)
			return nil
		})
	}
	_ = g.Wait()
}

func (r *names) refreshOne(o release) {
	key, _ := nameKey(o.name)
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	rev, err := r.kv.Update(ctx, key, []byte(r.id), o.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		// Expired (NATS was away longer than the TTL), or taken over by a
		// claim of this node: claim it again.
		rev, err = r.take(ctx, key)
	}
	r.mu.Lock()
	cur, still := r.owned[o.name]
	switch {
	case err != nil && still && cur == o.rev && errors.Is(err, errTaken):
		// Another node claimed the name while this one was cut off:
		// theirs now. This node's connection keeps it locally.
		delete(r.owned, o.name)
		r.log.Warn("messaging: a name expired and another node claimed it", "name", o.name)
	case err != nil:
		if !errors.Is(err, errTaken) {
			r.log.Warn("messaging: refreshing a name", "err", err)
		}
	case still && cur == o.rev:
		r.owned[o.name] = rev
	case !still:
		// Released meanwhile, at the revision this refresh replaced.
		r.mu.Unlock()
		r.delete(ctx, release{o.name, rev})
		return
	}
	r.mu.Unlock()
}

func (r *names) stop() {
	if r.stopped.Swap(true) {
		return
	}
	close(r.done)
	r.wg.Wait()
	if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		r.log.Warn("messaging: unsubscribing", "err", err)
	}
	// Give back what is left, within one timeout; the TTL frees the rest.
	r.mu.Lock()
	left := make([]release, 0, len(r.owned)+len(r.releases))
	for name, rev := range r.owned {
		left = append(left, release{name, rev})
	}
	r.owned = map[string]uint64{}
	r.mu.Unlock()
drain:
	for {
		select {
		case rel := <-r.releases:
			left = append(left, rel)
		default:
			break drain
		}
	}
	if r.nc.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	for _, rel := range left {
		if ctx.Err() != nil {
			return
		}
		r.delete(ctx, rel)
	}
}
