package chat

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/membership"
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

	// set holds the memberships; a channel's state is its presence, a
	// connection's its identity (as it was when it first joined).
	set *membership.Set[channel, *rpc.Identity]

	// bridge, when set, joins the channels of this node to those of the
	// other nodes of a cluster (SetBridge).
	bridge Bridge
}

// channel is one channel's state: the presence of this node's connections
// and, with a bridge, that of the other nodes. An identity is present in
// the channel while it is in local or in any of remote.
type channel struct {
	local  presenceSet
	remote map[string]map[string]Member // node → identity key → member
}

// presenceSet is one channel's presence on this node: identity key → its
// connections there.
type presenceSet map[string]*presence

type presence struct {
	identity json.RawMessage
	channel  json.RawMessage // as the identity's first connection here gave it
	conns    map[uint64]rpc.Conn
}

// remoteHas reports whether identity key is present on another node.
func (ch *channel) remoteHas(key string) bool {
	for _, ms := range ch.remote {
		if _, ok := ms[key]; ok {
			return true
		}
	}
	return false
}

// localMembers lists the identities present on this node, for the bridge.
func (ch *channel) localMembers() []Member {
	if len(ch.local) == 0 {
		return nil
	}
	out := make([]Member, 0, len(ch.local))
	for key, p := range ch.local {
		out = append(out, Member{Identity: rpc.Identity{JSON: p.identity, Key: key}, Channel: p.channel})
	}
	return out
}

// New returns a Chat service named name on the wire.
func New(name string, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Service{
		name: rpc.QuoteName(name),
		cfg:  cfg,
		now:  time.Now,
		set: membership.New[channel, *rpc.Identity](
			membership.Limits{PerConn: cfg.MaxChannels, KeyBytes: cfg.MaxChannelBytes},
			membership.Errors{
				AlreadyMember: ErrAlreadyJoined,
				NotMember:     ErrNotJoined,
				TooMany:       ErrTooManyChannels,
				KeyTooLong:    ErrChannelTooLong,
			}),
	}, nil
}

// The params of the commands: every one names a channel; send also has a
// body.
var (
	channelParams = []string{"channel"}
	sendParams    = []string{"channel", "body"}
)

// Handle implements rpc.Service.
func (s *Service) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	want := channelParams
	switch req.Command {
	case "join", "leave", "read":
	case "send":
		want = sendParams
	default:
		return nil, rpc.ErrUnknownCommand
	}
	p, err := rpc.Params(req.Params, want, nil)
	if err != nil {
		return nil, err
	}
	switch req.Command {
	case "join":
		return s.join(c, p["channel"])
	case "leave":
		return nil, s.leave(c, p["channel"])
	case "send":
		return nil, s.send(c, p["channel"], p["body"])
	default:
		return nil, s.read(c, p["channel"])
	}
}

func (s *Service) join(c rpc.Conn, raw json.RawMessage) (any, error) {
	id := c.Identity()
	if id == nil {
		return nil, ErrNotAuthenticated
	}
	k, err := membership.ParseKey(raw)
	if err != nil {
		return nil, rpc.ErrInvalidParams
	}
	if s.bridge != nil {
		// The set refuses a long key too; refusing it here first keeps it
		// off the cluster.
		if len(k.Canonical) > s.cfg.MaxChannelBytes {
			return nil, ErrChannelTooLong
		}
		if err := s.bridge.Acquire(k.Canonical); err != nil {
			return nil, fmt.Errorf("joining channel across nodes: %w", err)
		}
	}
	var out []byte
	err = s.set.Join(c, k, func(ch *membership.Room[channel], m *membership.Member[*rpc.Identity]) {
		if m.State == nil {
			m.State = id
		}
		if ch.State.local == nil {
			ch.State.local = presenceSet{}
			if s.bridge != nil {
				ch.State.remote = remoteMembers(s.bridge.Remote(k.Canonical))
			}
		}
		pr := ch.State.local[id.Key]
		if pr == nil {
			// The identity's first connection here: tell everyone already
			// in, unless it is present on another node.
			if len(ch.State.local) > 0 && !ch.State.remoteHas(id.Key) {
				frame := s.presenceFrame(id.JSON, k.JSON, "joined")
				for _, to := range ch.Conns() {
					if to.ID() != c.ID() {
						to.Send(frame)
					}
				}
			}
			pr = &presence{identity: id.JSON, channel: k.JSON, conns: map[uint64]rpc.Conn{}}
			ch.State.local[id.Key] = pr
			if s.bridge != nil {
				s.bridge.Present(k.Canonical, ch.State.localMembers())
			}
		}
		pr.conns[c.ID()] = c
		out = s.membersReply(&ch.State)
	})
	if err != nil {
		if s.bridge != nil {
			s.bridge.Release(k.Canonical)
		}
		return nil, err
	}
	return json.RawMessage(out), nil
}

// remoteMembers indexes a bridge's members of other nodes by identity key.
func remoteMembers(byNode map[string][]Member) map[string]map[string]Member {
	out := make(map[string]map[string]Member, len(byNode))
	for node, ms := range byNode {
		if len(ms) == 0 {
			continue
		}
		idx := make(map[string]Member, len(ms))
		for _, m := range ms {
			idx[m.Identity.Key] = m
		}
		out[node] = idx
	}
	return out
}

// membersReply encodes the reply to join: the identities present, on this
// node and on the others, each once, at most MaxMembers of them.
func (s *Service) membersReply(ch *channel) []byte {
	out := []byte(`{"members":[`)
	n, more := 0, false
	add := func(identity json.RawMessage) bool {
		if n == s.cfg.MaxMembers {
			more = true
			return false
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = append(out, identity...)
		return true
	}
	for _, p := range ch.local {
		if !add(p.identity) {
			break
		}
	}
	if len(ch.remote) > 0 && !more {
		seen := map[string]bool{}
	remote:
		for _, ms := range ch.remote {
			for key, m := range ms {
				if ch.local[key] != nil || seen[key] {
					continue
				}
				seen[key] = true
				if !add(m.Identity.JSON) {
					break remote
				}
			}
		}
	}
	out = append(out, ']')
	if more {
		out = append(out, `,"truncated":true`...)
	}
	return append(out, '}')
}

func (s *Service) leave(c rpc.Conn, raw json.RawMessage) error {
	k, err := membership.ParseKey(raw)
	if err != nil {
		return rpc.ErrInvalidParams
	}
	return s.set.Leave(c, k, s.left)
}

// left applies the presence rules once a connection has left channel k
// (given as the connection gave it): "left" goes to the connections
// remaining if it was its identity's last connection there. It runs under
// the set's mutex.
func (s *Service) left(ch *membership.Room[channel], m *membership.Member[*rpc.Identity], k membership.Key) {
	if s.bridge != nil {
		defer s.bridge.Release(ch.Key)
	}
	id := m.State
	pr := ch.State.local[id.Key]
	delete(pr.conns, m.Conn.ID())
	if len(pr.conns) > 0 {
		return
	}
	delete(ch.State.local, id.Key)
	if s.bridge != nil {
		s.bridge.Present(ch.Key, ch.State.localMembers())
	}
	if len(ch.State.local) == 0 || ch.State.remoteHas(id.Key) {
		return
	}
	ch.Send(s.presenceFrame(pr.identity, k.JSON, "left"))
}

func (s *Service) send(c rpc.Conn, rawCh, body json.RawMessage) error {
	k, err := jsonval.Canonical(rawCh)
	if err != nil {
		return rpc.ErrInvalidParams
	}
	var frame []byte
	err = s.set.In(c, k, func(ch *membership.Room[channel], m *membership.Member[*rpc.Identity]) error {
		if len(body) > s.cfg.MaxBodyBytes {
			return ErrMessageTooBig
		}
		from := m.State.JSON
		msg := make([]byte, 0, 96+len(from)+len(rawCh)+len(body))
		msg = append(msg, `{"type":"message","from":`...)
		msg = append(msg, from...)
		msg = append(msg, `,"channel":`...)
		msg = append(msg, rawCh...)
		msg = append(msg, `,"body":`...)
		msg = append(msg, body...)
		msg = s.appendTimestamp(msg)
		frame = rpc.AppendEnvelope(nil, s.name, msg)
		ch.Send(frame)
		return nil
	})
	if err == nil && s.bridge != nil {
		s.bridge.Message(k, frame)
	}
	return err
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
	var frame []byte
	s.set.WithRoom(k, func(ch *membership.Room[channel]) {
		pr := ch.State.local[id.Key]
		if pr == nil {
			return
		}
		for cid, to := range pr.conns {
			if cid == c.ID() {
				continue
			}
			if frame == nil {
				frame = s.readFrame(rawCh)
			}
			to.Send(frame)
		}
	})
	if s.bridge != nil {
		if frame == nil {
			frame = s.readFrame(rawCh)
		}
		s.bridge.Read(k, id.Key, frame)
	}
	return nil
}

func (s *Service) readFrame(rawCh json.RawMessage) []byte {
	msg := make([]byte, 0, 64+len(rawCh))
	msg = append(msg, `{"type":"read","channel":`...)
	msg = append(msg, rawCh...)
	msg = s.appendTimestamp(msg)
	return rpc.AppendEnvelope(nil, s.name, msg)
}

// Holds implements rpc.Holder: c has joined at least one channel.
func (s *Service) Holds(c rpc.Conn) bool { return s.set.Holds(c) }

// Disconnected implements rpc.Disconnecter: c leaves every channel under
// the presence rules, the channel repeated as c joined it.
func (s *Service) Disconnected(c rpc.Conn) { s.set.Disconnect(c, s.left) }

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
