package presence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/cluster"
	"github.com/snorkyhq/snorky/sync/chat"
	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// DefaultTTL is the ttl of a zero argument to Chat and Cursors: how long a
// node's records outlive its last heartbeat.
const DefaultTTL = 15 * time.Second

// MinTTL is the shortest ttl accepted.
const MinTTL = 300 * time.Millisecond

// Message headers of the chat subjects.
const (
	headerNode = "Snorky-Node" // the sending node's ID
	headerRead = "Snorky-Read" // a read receipt: the identity key's token
)

var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// openBucket creates (or updates) the bucket snorky_<cluster>_<what>: in
// memory, one value per key, keys dropped ttl after their last put.
func openBucket(n *cluster.Node, what string, ttl time.Duration) (jetstream.KeyValue, error) {
	name := "snorky_" + n.Name + "_" + what
	if !bucketName.MatchString(name) {
		return nil, fmt.Errorf("cluster name %q: bucket %q may hold only A-Z a-z 0-9 _ -", n.Name, name)
	}
	kv, err := n.OpenBucket(context.Background(), jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "snorky " + what + " per node, refreshed by heartbeats",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.MemoryStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", name, err)
	}
	return kv, nil
}

// checkTTL applies DefaultTTL to zero and refuses a ttl below MinTTL.
func checkTTL(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return DefaultTTL, nil
	}
	if ttl < MinTTL {
		return 0, fmt.Errorf("presence ttl: %v is below the minimum %v", ttl, MinTTL)
	}
	return ttl, nil
}

// chatBridge implements chat.Bridge.
type chatBridge struct {
	svc   *chat.Service
	node  *cluster.Node
	rooms *rooms
}

// Chat joins svc to the Chat services of the other nodes of n's cluster
// and returns the function that stops it. Presence is kept in the bucket
// snorky_<n.Name>_chat with ttl (zero: DefaultTTL); messages and read
// receipts go over the subject <n.Prefix>.chat.<channel token>. Call stop
// once the frontend no longer serves (joins fail after it); it deletes
// this node's presence, so its members leave at once elsewhere.
func Chat(svc *chat.Service, n *cluster.Node, ttl time.Duration) (stop func(), err error) {
	if ttl, err = checkTTL(ttl); err != nil {
		return nil, err
	}
	kv, err := openBucket(n, "chat", ttl)
	if err != nil {
		return nil, err
	}
	b := &chatBridge{svc: svc, node: n}
	b.rooms = newRooms(kv, ttl, n.ID, logger(n).With("service", "chat"))
	b.rooms.apply = b.apply
	b.rooms.open = b.open
	b.rooms.encode = encodeMembers
	b.rooms.start()
	svc.SetBridge(b)
	return b.rooms.close, nil
}

// wireMembers is a node's record of a channel: the identities it has
// there.
type wireMembers struct {
	Members []wireMember `json:"members"`
}

type wireMember struct {
	Identity json.RawMessage `json:"identity"`
	Channel  json.RawMessage `json:"channel"`
}

func encodeMembers(v any) []byte {
	ms := v.([]chat.Member)
	w := wireMembers{Members: make([]wireMember, len(ms))}
	for i, m := range ms {
		w.Members[i] = wireMember{Identity: m.Identity.JSON, Channel: m.Channel}
	}
	b, _ := json.Marshal(w) // raw JSON values from the service: valid
	return b
}

func decodeMembers(b []byte) ([]chat.Member, error) {
	var w wireMembers
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	out := make([]chat.Member, 0, len(w.Members))
	for _, m := range w.Members {
		key, err := jsonval.Canonical(m.Identity)
		if err != nil {
			return nil, err
		}
		out = append(out, chat.Member{Identity: rpc.Identity{JSON: m.Identity, Key: key}, Channel: m.Channel})
	}
	return out, nil
}

func (b *chatBridge) subject(k string) string { return b.node.Prefix + ".chat." + token(k) }

// open subscribes to the channel's messages, and returns once the NATS
// server has the subscription.
func (b *chatBridge) open(k string) (func(), error) {
	sub, err := b.node.NC.Subscribe(b.subject(k), func(m *nats.Msg) {
		if m.Header.Get(headerNode) == b.node.ID {
			return // our own, delivered here already
		}
		if r := m.Header.Get(headerRead); r != "" {
			id, err := base64.RawURLEncoding.DecodeString(r)
			if err != nil {
				return
			}
			b.svc.DeliverRead(k, string(id), m.Data)
			return
		}
		b.svc.Deliver(k, m.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to chat channel: %w", err)
	}
	if err := b.node.NC.FlushTimeout(5 * time.Second); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribing to chat channel: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

func (b *chatBridge) apply(k, node string, value []byte) {
	var ms []chat.Member
	if value != nil {
		var err error
		if ms, err = decodeMembers(value); err != nil {
			b.rooms.log.Warn("decoding chat presence", "room", k, "node", node, "err", err)
		}
	}
	b.svc.RemotePresence(k, node, ms)
}

// Acquire implements chat.Bridge.
func (b *chatBridge) Acquire(k string) error { return b.rooms.Acquire(k) }

// Release implements chat.Bridge.
func (b *chatBridge) Release(k string) { b.rooms.Release(k) }

// Remote implements chat.Bridge.
func (b *chatBridge) Remote(k string) map[string][]chat.Member {
	recs := b.rooms.Records(k)
	out := make(map[string][]chat.Member, len(recs))
	for node, v := range recs {
		ms, err := decodeMembers(v)
		if err != nil {
			b.rooms.log.Warn("decoding chat presence", "room", k, "node", node, "err", err)
			continue
		}
		out[node] = ms
	}
	return out
}

// Present implements chat.Bridge.
func (b *chatBridge) Present(k string, members []chat.Member) {
	if len(members) == 0 {
		b.rooms.Set(k, nil)
		return
	}
	b.rooms.Set(k, members)
}

// Message implements chat.Bridge.
func (b *chatBridge) Message(k string, frame []byte) { b.publish(k, frame, "") }

// Read implements chat.Bridge.
func (b *chatBridge) Read(k, identity string, frame []byte) { b.publish(k, frame, identity) }

func (b *chatBridge) publish(k string, frame []byte, readBy string) {
	m := &nats.Msg{Subject: b.subject(k), Header: nats.Header{}, Data: frame}
	m.Header.Set(headerNode, b.node.ID)
	if readBy != "" {
		m.Header.Set(headerRead, token(readBy))
	}
	if err := b.node.NC.PublishMsg(m); err != nil {
		b.rooms.log.Warn("publishing chat message", "room", k, "err", err)
	}
}
