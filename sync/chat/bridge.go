package chat

import (
	"encoding/json"

	"github.com/snorkyhq/snorky/sync/membership"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Bridge joins a Service to the Chat services of the other nodes of a
// cluster (package cmd/snorky/internal/cluster/presence implements it).
// Channels are named by their canonical key (jsonval.Canonical).
//
// The Service calls Acquire before a connection joins a channel and
// Release once for every successful Acquire (after a refused join, or when
// the connection leaves or disconnects), so the bridge knows which
// channels this node needs. Between the two it reports this node's
// presence (Present), and hands on messages and read receipts (Message,
// Read); the bridge hands back what the other nodes do through
// RemotePresence, Deliver and DeliverRead.
type Bridge interface {
	// Acquire readies channel k for a join: once it returns, the node
	// receives the channel's traffic from the other nodes and Remote knows
	// their members. It is called outside the Service's lock and may
	// block; an error refuses the join (Internal error).
	Acquire(k string) error
	// Release undoes one Acquire. It is called under the Service's lock
	// and must not block.
	Release(k string)
	// Remote returns the members of channel k on the other nodes as last
	// known, by node. It is called under the Service's lock, when the
	// channel gets its first connection on this node.
	Remote(k string) map[string][]Member
	// Present reports the identities present in channel k on this node,
	// the whole list, after each change; none when the last one has left.
	// It is called under the Service's lock, must not block, and may keep
	// the slice.
	Present(k string, members []Member)
	// Message hands on a message sent in channel k: frame is the envelope
	// as queued to this node's members. It is called outside any lock, on
	// the sender's goroutine, in the order of that sender's messages.
	Message(k string, frame []byte)
	// Read hands on a read receipt of identity (its key) in channel k, for
	// the identity's connections on other nodes. It is called outside any
	// lock.
	Read(k, identity string, frame []byte)
}

// Member is an identity present in a channel.
type Member struct {
	Identity rpc.Identity
	// Channel is the channel as the identity's first connection gave it on
	// join, repeated in the presence notifications about it.
	Channel json.RawMessage
}

// SetBridge joins the Service to other nodes through b. Call it before
// serving; without it the Service is the single-node service of the spec.
func (s *Service) SetBridge(b Bridge) { s.bridge = b }

// RemotePresence sets the members of channel k (canonical) on node, the
// whole list, none when the node has no member left there. An identity
// that becomes present in the channel (it was on no node) is announced
// "joined" to this node's connections in the channel, and one that is no
// longer present anywhere "left", as for local connections. The bridge
// calls it for one channel at a time, after updating what Remote returns.
// It is a no-op when no connection of this node is in the channel.
func (s *Service) RemotePresence(k, node string, members []Member) {
	s.set.WithRoom(k, func(ch *membership.Room[channel]) {
		if ch.State.remote == nil {
			ch.State.remote = map[string]map[string]Member{}
		}
		old := ch.State.remote[node]
		next := make(map[string]Member, len(members))
		for _, m := range members {
			next[m.Identity.Key] = m
		}
		if len(next) == 0 {
			delete(ch.State.remote, node)
		} else {
			ch.State.remote[node] = next
		}
		// Now ch.State holds the new presence: compare each identity that
		// changed on node with the rest of the cluster.
		for key, m := range next {
			if _, was := old[key]; was || ch.State.local[key] != nil || presentElsewhere(ch.State.remote, node, key) {
				continue
			}
			ch.Send(s.presenceFrame(m.Identity.JSON, m.Channel, "joined"))
		}
		for key, m := range old {
			if _, still := next[key]; still || ch.State.local[key] != nil || presentElsewhere(ch.State.remote, node, key) {
				continue
			}
			ch.Send(s.presenceFrame(m.Identity.JSON, m.Channel, "left"))
		}
	})
}

// presentElsewhere reports whether identity key is present on a node
// other than node.
func presentElsewhere(remote map[string]map[string]Member, node, key string) bool {
	for n, ms := range remote {
		if n == node {
			continue
		}
		if _, ok := ms[key]; ok {
			return true
		}
	}
	return false
}

// Deliver queues a message frame from another node on this node's
// connections in channel k (canonical).
func (s *Service) Deliver(k string, frame []byte) {
	s.set.WithRoom(k, func(ch *membership.Room[channel]) { ch.Send(frame) })
}

// DeliverRead queues a read receipt frame from another node on this node's
// connections of identity (its key) in channel k (canonical).
func (s *Service) DeliverRead(k, identity string, frame []byte) {
	s.set.WithRoom(k, func(ch *membership.Room[channel]) {
		if pr := ch.State.local[identity]; pr != nil {
			for _, to := range pr.conns {
				to.Send(frame)
			}
		}
	})
}
