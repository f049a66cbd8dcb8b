// Package pubsub is the PubSub service of spec §2.1: connections subscribe to
// channels (any JSON value, compared by JSON equality) and every publish is
// delivered to every subscriber of the channel, the publisher included.
//
// One mutex guards the channel table; a publish encodes its notification once
// and queues the same bytes on every subscriber while holding it (queueing
// never blocks), so a publish is atomic with respect to subscribe and
// unsubscribe.
package pubsub

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/snorkyhq/snorky/sync/jsonval"
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

	mu       sync.Mutex
	channels map[string]*channel
	byConn   map[rpc.Conn]map[string]struct{}
}

type channel struct {
	subs  []rpc.Conn
	index map[rpc.Conn]int
}

// New returns the service, named name on the wire.
func New(name string, cfg Config) *Service {
	return &Service{
		name:     rpc.QuoteName(name),
		cfg:      cfg,
		channels: map[string]*channel{},
		byConn:   map[rpc.Conn]map[string]struct{}{},
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
	key, err := jsonval.Canonical(ch)
	if err != nil {
		return fmt.Errorf("channel key: %w", err)
	}
	if s.cfg.MaxChannelBytes > 0 && len(key) > s.cfg.MaxChannelBytes {
		return ErrChannelTooLong
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := s.byConn[c]
	if _, ok := mine[key]; ok {
		return ErrAlreadySubscribed
	}
	if s.cfg.MaxChannelsPerConn > 0 && len(mine) >= s.cfg.MaxChannelsPerConn {
		return ErrTooManyChannels
	}
	if mine == nil {
		mine = map[string]struct{}{}
		s.byConn[c] = mine
	}
	mine[key] = struct{}{}
	chn := s.channels[key]
	if chn == nil {
		chn = &channel{index: map[rpc.Conn]int{}}
		s.channels[key] = chn
	}
	chn.index[c] = len(chn.subs)
	chn.subs = append(chn.subs, c)
	return nil
}

func (s *Service) unsubscribe(c rpc.Conn, ch json.RawMessage) error {
	key, err := jsonval.Canonical(ch)
	if err != nil {
		return fmt.Errorf("channel key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := s.byConn[c]
	if _, ok := mine[key]; !ok {
		return ErrNotSubscribed
	}
	delete(mine, key)
	if len(mine) == 0 {
		delete(s.byConn, c)
	}
	s.removeLocked(key, c)
	return nil
}

func (s *Service) removeLocked(key string, c rpc.Conn) {
	chn := s.channels[key]
	if chn == nil {
		return
	}
	i, ok := chn.index[c]
	if !ok {
		return
	}
	last := len(chn.subs) - 1
	if i != last {
		moved := chn.subs[last]
		chn.subs[i] = moved
		chn.index[moved] = i
	}
	chn.subs[last] = nil
	chn.subs = chn.subs[:last]
	delete(chn.index, c)
	if len(chn.subs) == 0 {
		delete(s.channels, key)
	}
}

// Publish delivers message to every subscriber of channel. Both are JSON
// text; channel is repeated as given. It bypasses the publish policy (the
// backend and SQL publishing use it directly).
func (s *Service) Publish(ch, message json.RawMessage) error {
	key, err := jsonval.Canonical(ch)
	if err != nil {
		return fmt.Errorf("channel key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	chn := s.channels[key]
	if chn == nil {
		return nil
	}
	frame := s.notification(ch, message)
	for _, c := range chn.subs {
		c.Send(frame)
	}
	return nil
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
func (s *Service) Disconnected(c rpc.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.byConn[c] {
		s.removeLocked(key, c)
	}
	delete(s.byConn, c)
}

// Holds implements rpc.Holder: c holds at least one subscription.
func (s *Service) Holds(c rpc.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byConn[c]) > 0
}

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
