package relay

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/pubsub"
)

// maxTokenKey is the longest canonical channel key whose subject token is
// the key itself in base64url; a longer key's token is a hash, so that a
// subject stays far below NATS's control line limit (4 KiB).
const maxTokenKey = 192

// channelToken returns the subject token of the channel with canonical key
// key. A hashed token begins with '~', which base64url never holds. Two
// channels sharing a token would only cost a needless delivery attempt:
// the receiver finds the channel in the payload.
func channelToken(key string) string {
	if len(key) <= maxTokenKey {
		return base64.RawURLEncoding.EncodeToString([]byte(key))
	}
	sum := sha256.Sum256([]byte(key))
	return "~" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// pubsubRelay is the pubsub.Bridge of one node.
type pubsubRelay struct {
	ps     *pubsub.Service
	nc     *nats.Conn
	id     string
	prefix string // "<Prefix>.pubsub."
	log    *slog.Logger

	out  chan *nats.Msg // publishes of this node, for the publisher goroutine
	in   chan *nats.Msg // every channel subscription's messages, for the deliverer
	kick chan struct{}  // wakes the subscriber goroutine
	done chan struct{}
	wg   sync.WaitGroup

	stopped  atomic.Bool
	outDrops drops // publishes not sent (queue full, NATS refused)
	inDrops  drops // received publishes not delivered (malformed)

	mu   sync.Mutex
	want map[string]bool // interest changed since the subscriber goroutine last looked: key → held

	// subs is the subscriber goroutine's: the NATS subscription of each
	// channel this node holds.
	subs map[string]*nats.Subscription
}

// PubSub joins ps to the PubSub services of the other nodes of n's
// cluster (see the package comment). Call it before ps handles any
// request; stop, after ps's connections are gone, unsubscribes and waits
// for the bridge's goroutines.
func PubSub(ps *pubsub.Service, n *cluster.Node, cfg Config) (stop func(), err error) {
	cfg, err = check(n, cfg)
	if err != nil {
		return nil, err
	}
	log := logger(n, "pubsub")
	r := &pubsubRelay{
		ps:     ps,
		nc:     n.NC,
		id:     n.ID,
		prefix: n.Prefix + ".pubsub.",
		log:    log,
		out:    make(chan *nats.Msg, cfg.QueueLen),
		in:     make(chan *nats.Msg, cfg.QueueLen),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		want:   map[string]bool{},
		subs:   map[string]*nats.Subscription{},
	}
	r.outDrops = drops{log: log, msg: "pubsub: publishes not sent to the cluster"}
	r.inDrops = drops{log: log, msg: "pubsub: malformed publishes from the cluster"}
	ps.SetBridge(r)
	r.wg.Add(3)
	go r.publishLoop()
	go r.deliverLoop()
	go r.subscribeLoop()
	return r.stop, nil
}

// Interest implements pubsub.Bridge. It runs under the service's lock:
// it records the change and wakes the subscriber goroutine.
func (r *pubsubRelay) Interest(key string, subscribed bool) {
	if r.stopped.Load() {
		return
	}
	r.mu.Lock()
	r.want[key] = subscribed
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Published implements pubsub.Bridge: it queues the publish for the
// other nodes, or drops it when the queue is full.
func (r *pubsubRelay) Published(key string, ch, message json.RawMessage) {
	if r.stopped.Load() {
		return
	}
	m := &nats.Msg{
		Subject: r.prefix + channelToken(key),
		Header:  nats.Header{nodeHeader: []string{r.id}},
		Data:    appendFrame(make([]byte, 0, len(ch)+len(message)+4), ch, message),
	}
	select {
	case r.out <- m:
	default:
		r.outDrops.add(errors.New("publish queue full"))
	}
}

// publishLoop sends the queued publishes, in order. The client buffers
// while NATS is away; what it refuses is dropped.
func (r *pubsubRelay) publishLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case m := <-r.out:
			if err := r.nc.PublishMsg(m); err != nil {
				r.outDrops.add(err)
			}
		}
	}
}

// deliverLoop delivers the other nodes' publishes, in the order they
// arrived, whatever their channel.
func (r *pubsubRelay) deliverLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case m := <-r.in:
			if m.Header.Get(nodeHeader) == r.id {
				continue // delivered here when published
			}
			ch, message, err := splitFrame(m.Data)
			if err == nil {
				err = r.ps.Deliver(ch, message)
			}
			if err != nil {
				r.inDrops.add(err)
			}
		}
	}
}

// subscribeLoop applies the changes of interest: one NATS subscription
// per channel held here, all feeding r.in.
func (r *pubsubRelay) subscribeLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case <-r.kick:
		}
		r.mu.Lock()
		want := r.want
		r.want = map[string]bool{}
		r.mu.Unlock()
		for key, held := range want {
			sub := r.subs[key]
			switch {
			case held && sub == nil:
				s, err := r.nc.ChanSubscribe(r.prefix+channelToken(key), r.in)
				if err != nil {
					// Only a closed connection refuses: the node is going.
					r.log.Error("pubsub: subscribing", "channel", key, "err", err)
					continue
				}
				r.subs[key] = s
			case !held && sub != nil:
				if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
					r.log.Warn("pubsub: unsubscribing", "channel", key, "err", err)
				}
				delete(r.subs, key)
			}
		}
	}
}

func (r *pubsubRelay) stop() {
	if r.stopped.Swap(true) {
		return
	}
	close(r.done)
	r.wg.Wait()
	for key, s := range r.subs {
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			r.log.Warn("pubsub: unsubscribing", "channel", key, "err", err)
		}
	}
	r.subs = nil
}
