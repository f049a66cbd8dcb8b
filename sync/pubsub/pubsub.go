// Package pubsub is the PubSub service of spec §2.1: connections subscribe to
// channels (any JSON value, compared by JSON equality) and every publish is
// delivered to every subscriber of the channel, the publisher included.
//
// The subscriptions are a membership.Set; a publish encodes its
// notification once and queues the same bytes on every subscriber under
// the set's mutex (queueing never blocks), so a publish is atomic with
// respect to subscribe and unsubscribe.
//
// In a cluster a Bridge (package relay) carries publishes between the
// nodes: it learns which channels this node's connections hold and every
// publish made here, and hands the other nodes' publishes to Deliver.
// Without a bridge the service is one node's, unchanged.
package pubsub

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/membership"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Policy decides which channels clients (not the backend) may publish to.
// The zero value forbids everything; DefaultPolicy allows everything.
type Policy struct {
	// ClientPublish allows clients to publish at all.
	ClientPublish bool
	// AllowPrefixes, when not empty, restricts client publishing to string
	// channels starting with one of these prefixes.
	AllowPrefixes []string
	// DenyPrefixes forbids client publishing to string channels starting
	// with one of these prefixes.
	DenyPrefixes []string
}

// DefaultPolicy lets every client publish to every channel.
var DefaultPolicy = Policy{ClientPublish: true}

// Allows reports whether a client may publish to the channel (raw JSON).
func (p Policy) Allows(channel json.RawMessage) bool {
	if !p.ClientPublish {
		return false
	}
	if len(p.AllowPrefixes) == 0 && len(p.DenyPrefixes) == 0 {
		return true
	}
	name, isString := rpc.String(channel)
	for _, d := range p.DenyPrefixes {
		if isString && strings.HasPrefix(name, d) {
			return false
		}
	}
	if len(p.AllowPrefixes) == 0 {
		return true
	}
	for _, a := range p.AllowPrefixes {
		if isString && strings.HasPrefix(name, a) {
			return true
		}
	}
	return false
}

// Errors of spec §2.1.
const (
	ErrAlreadySubscribed rpc.Error = "Already subscribed"
	ErrNotSubscribed     rpc.Error = "Not subscribed"
	ErrNotAuthorized     rpc.Error = "Not authorized"
	ErrTooManyChannels   rpc.Error = "Too many channels (limits.channels_per_connection)"
	ErrChannelTooLong    rpc.Error = "Channel too long (limits.channel_bytes)"
)

// Config configures the PubSub service.
type Config struct {
	Policy Policy
	// MaxChannelsPerConn limits the subscriptions of one connection; 0 means
	// no limit.
	MaxChannelsPerConn int
	// MaxChannelBytes limits the length of a channel a client subscribes or
	// publishes to, in bytes of its canonical JSON text; 0 means no limit.
	// The backend is not limited.
	MaxChannelBytes int
}

// Service is the frontend PubSub service.
type Service struct {
	name []byte // JSON text of the wire name
	cfg  Config

	// set holds the subscriptions: a room is a channel, with no state of
	// its own.
	set *membership.Set[struct{}, struct{}]

	// bridge, joined and left are set once by SetBridge, before the
	// service is used; nil on a single node.
	bridge Bridge
	joined func(*membership.Room[struct{}], *membership.Member[struct{}])
	left   func(*membership.Room[struct{}], *membership.Member[struct{}], membership.Key)
}

// Bridge carries publishes between this node and the other nodes of a
// cluster. Interest is called under the service's subscription mutex and
// Published on the publisher's goroutine: neither may block.
type Bridge interface {
	// Interest reports that the channel with canonical key key got its
	// first subscriber on this node (true) or lost its last (false). The
	// calls for one key come in the order of the changes.
	Interest(key string, subscribed bool)
	// Published reports a publish made on this node (Publish), after its
	// local delivery: key is the channel's canonical key, ch and message
	// the JSON texts Publish got. They may alias the caller's buffers:
	// copy what is kept.
	Published(key string, ch, message json.RawMessage)
}

// SetBridge joins the service to the other nodes through b. Call it once,
// before the service handles any request: the channels subscribed before
// it would be unknown to b.
func (s *Service) SetBridge(b Bridge) {
	s.bridge = b
	s.joined = func(r *membership.Room[struct{}], _ *membership.Member[struct{}]) {
		if r.Len() == 1 {
			b.Interest(r.Key, true)
		}
	}
	s.left = func(r *membership.Room[struct{}], _ *membership.Member[struct{}], _ membership.Key) {
		if r.Len() == 0 {
			b.Interest(r.Key, false)
		}
	}
}

// New returns the service, named name on the wire.
func New(name string, cfg Config) *Service {
	return &Service{
		name: rpc.QuoteName(name),
		cfg:  cfg,
		set: membership.New[struct{}, struct{}](
			membership.Limits{PerConn: cfg.MaxChannelsPerConn, KeyBytes: cfg.MaxChannelBytes},
			membership.Errors{
				AlreadyMember: ErrAlreadySubscribed,
				NotMember:     ErrNotSubscribed,
				TooMany:       ErrTooManyChannels,
				KeyTooLong:    ErrChannelTooLong,
			}),
	}
}

// Handle implements rpc.Service.
func (s *Service) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "subscribe":
		p, err := rpc.Params(req.Params, []string{"channel"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.subscribe(c, p["channel"])
	case "unsubscribe":
		p, err := rpc.Params(req.Params, []string{"channel"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.unsubscribe(c, p["channel"])
	case "publish":
		p, err := rpc.Params(req.Params, []string{"channel", "message"}, nil)
		if err != nil {
			return nil, err
		}
		if !s.cfg.Policy.Allows(p["channel"]) {
			return nil, ErrNotAuthorized
		}
		if s.cfg.MaxChannelBytes > 0 {
			key, err := jsonval.Canonical(p["channel"])
			if err != nil {
				return nil, fmt.Errorf("channel key: %w", err)
			}
			if len(key) > s.cfg.MaxChannelBytes {
				return nil, ErrChannelTooLong
			}
		}
		return nil, s.Publish(p["channel"], p["message"])
	}
	return nil, rpc.ErrUnknownCommand
}

func (s *Service) subscribe(c rpc.Conn, ch json.RawMessage) error {
	k, err := membership.ParseKey(ch)
	if err != nil {
		return fmt.Errorf("channel key: %w", err)
	}
	return s.set.Join(c, k, s.joined)
}

func (s *Service) unsubscribe(c rpc.Conn, ch json.RawMessage) error {
	key, err := jsonval.Canonical(ch)
	if err != nil {
		return fmt.Errorf("channel key: %w", err)
	}
	return s.set.Leave(c, membership.Key{Canonical: key}, s.left)
}

// Publish delivers message to every subscriber of channel. Both are JSON
// text; channel is repeated as given. It bypasses the publish policy (the
// backend and SQL publishing use it directly). With a bridge the other
// nodes' subscribers get it too.
func (s *Service) Publish(ch, message json.RawMessage) error {
	key, err := s.deliver(ch, message)
	if err != nil {
		return err
	}
	if s.bridge != nil {
		s.bridge.Published(key, ch, message)
	}
	return nil
}

// Deliver delivers message to this node's subscribers of channel only: a
// publish made on another node, which the bridge brings.
func (s *Service) Deliver(ch, message json.RawMessage) error {
	_, err := s.deliver(ch, message)
	return err
}

// deliver queues the notification on this node's subscribers and returns
// the channel's canonical key.
func (s *Service) deliver(ch, message json.RawMessage) (string, error) {
	key, err := jsonval.Canonical(ch)
	if err != nil {
		return "", fmt.Errorf("channel key: %w", err)
	}
	s.set.WithRoom(key, func(r *membership.Room[struct{}]) {
		r.Send(s.notification(ch, message))
	})
	return key, nil
}

func (s *Service) notification(ch, message json.RawMessage) []byte {
	b := make([]byte, 0, len(s.name)+len(ch)+len(message)+64)
	b = append(b, `{"service":`...)
	b = append(b, s.name...)
	b = append(b, `,"message":{"type":"message","channel":`...)
	b = append(b, ch...)
	b = append(b, `,"message":`...)
	b = append(b, message...)
	return append(b, "}}"...)
}

// Disconnected implements rpc.Disconnecter.
func (s *Service) Disconnected(c rpc.Conn) { s.set.Disconnect(c, s.left) }

// Holds implements rpc.Holder: c holds at least one subscription.
func (s *Service) Holds(c rpc.Conn) bool { return s.set.Holds(c) }

// Backend is the pubsub_backend service: publish only, bypassing the policy.
type Backend struct{ s *Service }

// NewBackend returns the backend service publishing through s.
func NewBackend(s *Service) *Backend { return &Backend{s: s} }

// Handle implements rpc.Service.
func (b *Backend) Handle(_ rpc.Conn, req *rpc.Request) (any, error) {
	if req.Command != "publish" {
		return nil, rpc.ErrUnknownCommand
	}
	p, err := rpc.Params(req.Params, []string{"channel", "message"}, nil)
	if err != nil {
		return nil, err
	}
	return nil, b.s.Publish(p["channel"], p["message"])
}
