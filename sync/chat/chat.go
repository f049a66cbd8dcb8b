package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Protocol error strings (spec §2.3) and the limit errors of this service.
const (
	ErrNotAuthenticated rpc.Error = "Not authenticated"
	ErrAlreadyJoined    rpc.Error = "Already joined"
	ErrNotJoined        rpc.Error = "Not joined"
	ErrTooManyChannels  rpc.Error = "Too many channels (limits.channels_per_connection)"
	ErrChannelTooLong   rpc.Error = "Channel too long (limits.channel_bytes)"
	ErrMessageTooBig    rpc.Error = "Message too big (limits.message_body_bytes)"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxChannels     = 256
	DefaultMaxChannelBytes = 256
	DefaultMaxBodyBytes    = 16 << 10
	DefaultMaxMembers      = 1000
)

// TimestampLayout is the notifications' timestamp format: UTC, millisecond
// precision, "Z" suffix.
const TimestampLayout = "2006-01-02T15:04:05.000Z"

// Config holds the Chat limits (reliability S1).
type Config struct {
	// MaxChannels is how many channels one connection may have joined at
	// once (limits.channels_per_connection). Zero means 256.
	MaxChannels int
	// MaxChannelBytes is the longest channel accepted by join, in bytes of
	// its canonical JSON text (jsonval.Canonical). Zero means 256.
	MaxChannelBytes int
	// MaxMembers is how many identities a join reply lists at most; a
	// longer list is cut and the reply carries "truncated": true. Zero
	// means 1000.
	MaxMembers int
	// MaxBodyBytes is the largest message body accepted by send, in bytes
	// of its JSON text as sent. Zero means 16384.
	MaxBodyBytes int
}

// Validate reports negative limits. Errors name the field.
func (c Config) Validate() error {
	for _, f := range []struct {
		field string
		v     int
	}{
		{"MaxChannels", c.MaxChannels},
		{"MaxChannelBytes", c.MaxChannelBytes},
		{"MaxBodyBytes", c.MaxBodyBytes},
		{"MaxMembers", c.MaxMembers},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative (got %d)", f.field, f.v)
		}
	}
	return nil
}

// withDefaults returns c with each zero field set to its default (the
// Default constants).
func (c Config) withDefaults() Config {
	if c.MaxChannels == 0 {
		c.MaxChannels = DefaultMaxChannels
	}
	if c.MaxChannelBytes == 0 {
		c.MaxChannelBytes = DefaultMaxChannelBytes
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxMembers == 0 {
		c.MaxMembers = DefaultMaxMembers
	}
	return c
}

// Service is the Chat service.
type Service struct {
	name []byte // the wire name as JSON text
	cfg  Config
	now  func() time.Time // replaced in tests

	mu       sync.Mutex
	channels map[string]*channel // canonical channel → channel
	conns    map[uint64]*member  // connections that joined at least one channel
}

// channel is one channel's presence.
type channel struct {
	ids   map[string]*presence // identity key → its connections here
	conns map[uint64]rpc.Conn  // every connection here, for fan-out
}

type presence struct {
	identity json.RawMessage
	conns    map[uint64]rpc.Conn
}

// member is one connection's memberships.
type member struct {
	id    *rpc.Identity
	chans map[string]json.RawMessage // canonical channel → channel as joined
}

// New returns a Chat service named name on the wire.
func New(name string, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Service{
		name:     rpc.QuoteName(name),
		cfg:      cfg,
		now:      time.Now,
		channels: map[string]*channel{},
		conns:    map[uint64]*member{},
	}, nil
}

// Handle implements rpc.Service.
func (s *Service) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "join":
		p, err := rpc.Params(req.Params, []string{"channel"}, nil)
		if err != nil {
			return nil, err
		}
		return s.join(c, p["channel"])
	case "leave":
		p, err := rpc.Params(req.Params, []string{"channel"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.leaveCmd(c, p["channel"])
	case "send":
		p, err := rpc.Params(req.Params, []string{"channel", "body"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.send(c, p["channel"], p["body"])
	case "read":
		p, err := rpc.Params(req.Params, []string{"channel"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.read(c, p["channel"])
	default:
		return nil, rpc.ErrUnknownCommand
	}
}

// key returns the canonical key and a compact owned copy of a channel.
func key(raw json.RawMessage) (string, json.RawMessage, error) {
	k, err := jsonval.Canonical(raw)
	if err != nil {
		return "", nil, rpc.ErrInvalidParams
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "", nil, rpc.ErrInvalidParams
	}
	return k, b.Bytes(), nil
}

func (s *Service) join(c rpc.Conn, raw json.RawMessage) (any, error) {
	id := c.Identity()
	if id == nil {
		return nil, ErrNotAuthenticated
	}
	k, chJSON, err := key(raw)
	if err != nil {
		return nil, err
	}
	if len(k) > s.cfg.MaxChannelBytes {
		return nil, ErrChannelTooLong
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m != nil {
		if _, ok := m.chans[k]; ok {
			return nil, ErrAlreadyJoined
		}
		if len(m.chans) >= s.cfg.MaxChannels {
			return nil, ErrTooManyChannels
		}
	} else {
		m = &member{id: id, chans: map[string]json.RawMessage{}}
		s.conns[c.ID()] = m
	}
	m.chans[k] = chJSON

	ch := s.channels[k]
	if ch == nil {
		ch = &channel{ids: map[string]*presence{}, conns: map[uint64]rpc.Conn{}}
		s.channels[k] = ch
	}
	pr := ch.ids[id.Key]
	if pr == nil {
		// The identity's first connection here: tell everyone already in.
		if len(ch.ids) > 0 {
			frame := s.presenceFrame(id.JSON, chJSON, "joined")
			ch.each(func(to rpc.Conn) { to.Send(frame) })
		}
		pr = &presence{identity: id.JSON, conns: map[uint64]rpc.Conn{}}
		ch.ids[id.Key] = pr
	}
	pr.conns[c.ID()] = c
	ch.conns[c.ID()] = c

	out := []byte(`{"members":[`)
	n := 0
	for _, p := range ch.ids {
		if n == s.cfg.MaxMembers {
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = append(out, p.identity...)
	}
	out = append(out, ']')
	if n < len(ch.ids) {
		out = append(out, `,"truncated":true`...)
	}
	out = append(out, '}')
	return json.RawMessage(out), nil
}

func (s *Service) leaveCmd(c rpc.Conn, raw json.RawMessage) error {
	k, chJSON, err := key(raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m == nil {
		return ErrNotJoined
	}
	if _, ok := m.chans[k]; !ok {
		return ErrNotJoined
	}
	s.leave(c.ID(), m, k, chJSON)
	return nil
}

// leave removes connection cid from channel k and sends "left" if it was
// its identity's last connection there. chJSON is the channel as the
// connection gave it. The caller holds s.mu.
func (s *Service) leave(cid uint64, m *member, k string, chJSON json.RawMessage) {
	delete(m.chans, k)
	if len(m.chans) == 0 {
		delete(s.conns, cid)
	}
	ch := s.channels[k]
	delete(ch.conns, cid)
	pr := ch.ids[m.id.Key]
	delete(pr.conns, cid)
	if len(pr.conns) > 0 {
		return
	}
	delete(ch.ids, m.id.Key)
	if len(ch.ids) == 0 {
		delete(s.channels, k)
		return
	}
	frame := s.presenceFrame(pr.identity, chJSON, "left")
	ch.each(func(to rpc.Conn) { to.Send(frame) })
}

func (s *Service) send(c rpc.Conn, rawCh, body json.RawMessage) error {
	k, err := jsonval.Canonical(rawCh)
	if err != nil {
		return rpc.ErrInvalidParams
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m == nil {
		return ErrNotJoined
	}
	if _, ok := m.chans[k]; !ok {
		return ErrNotJoined
	}
	if len(body) > s.cfg.MaxBodyBytes {
		return ErrMessageTooBig
	}
	msg := make([]byte, 0, 96+len(m.id.JSON)+len(rawCh)+len(body))
	msg = append(msg, `{"type":"message","from":`...)
	msg = append(msg, m.id.JSON...)
	msg = append(msg, `,"channel":`...)
	msg = append(msg, rawCh...)
	msg = append(msg, `,"body":`...)
	msg = append(msg, body...)
	msg = s.appendTimestamp(msg)
	frame := rpc.AppendEnvelope(nil, s.name, msg)
	s.channels[k].each(func(to rpc.Conn) { to.Send(frame) })
	return nil
}

func (s *Service) read(c rpc.Conn, rawCh json.RawMessage) error {
	k, err := jsonval.Canonical(rawCh)
	if err != nil {
		return rpc.ErrInvalidParams
	}
	id := c.Identity()
	if id == nil {
		return nil // no identity, so no other connections of it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[k]
	if ch == nil {
		return nil
	}
	pr := ch.ids[id.Key]
	if pr == nil {
		return nil
	}
	var frame []byte
	for cid, to := range pr.conns {
		if cid == c.ID() {
			continue
		}
		if frame == nil {
			msg := make([]byte, 0, 64+len(rawCh))
			msg = append(msg, `{"type":"read","channel":`...)
			msg = append(msg, rawCh...)
			msg = s.appendTimestamp(msg)
			frame = rpc.AppendEnvelope(nil, s.name, msg)
		}
		to.Send(frame)
	}
	return nil
}

// Holds implements rpc.Holder: c has joined at least one channel.
func (s *Service) Holds(c rpc.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[c.ID()] != nil
}

// Disconnected implements rpc.Disconnecter: c leaves every channel under
// the presence rules, the channel repeated as c joined it.
func (s *Service) Disconnected(c rpc.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m == nil {
		return
	}
	for k, chJSON := range m.chans {
		s.leave(c.ID(), m, k, chJSON)
	}
}

func (s *Service) presenceFrame(identity, chJSON json.RawMessage, status string) []byte {
	msg := make([]byte, 0, 96+len(identity)+len(chJSON))
	msg = append(msg, `{"type":"presence","from":`...)
	msg = append(msg, identity...)
	msg = append(msg, `,"channel":`...)
	msg = append(msg, chJSON...)
	msg = append(msg, `,"status":"`...)
	msg = append(msg, status...)
	msg = append(msg, '"')
	msg = s.appendTimestamp(msg)
	return rpc.AppendEnvelope(nil, s.name, msg)
}

// appendTimestamp closes a notification object with its timestamp.
func (s *Service) appendTimestamp(msg []byte) []byte {
	msg = append(msg, `,"timestamp":"`...)
	msg = s.now().UTC().AppendFormat(msg, TimestampLayout)
	return append(msg, `"}`...)
}

// each calls f for every connection in the channel.
func (ch *channel) each(f func(rpc.Conn)) {
	for _, c := range ch.conns {
		f(c)
	}
}
