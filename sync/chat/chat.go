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
	set *membership.Set[presenceSet, *rpc.Identity]
}

// presenceSet is one channel's presence: identity key → its connections
// there.
type presenceSet map[string]*presence

type presence struct {
	identity json.RawMessage
	conns    map[uint64]rpc.Conn
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
		set: membership.New[presenceSet, *rpc.Identity](
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
	var out []byte
	err = s.set.Join(c, k, func(ch *membership.Room[presenceSet], m *membership.Member[*rpc.Identity]) {
		if m.State == nil {
			m.State = id
		}
		if ch.State == nil {
			ch.State = presenceSet{}
		}
		pr := ch.State[id.Key]
		if pr == nil {
			// The identity's first connection here: tell everyone already in.
			if len(ch.State) > 0 {
				frame := s.presenceFrame(id.JSON, k.JSON, "joined")
				for _, to := range ch.Conns() {
					if to.ID() != c.ID() {
						to.Send(frame)
					}
				}
			}
			pr = &presence{identity: id.JSON, conns: map[uint64]rpc.Conn{}}
			ch.State[id.Key] = pr
		}
		pr.conns[c.ID()] = c
		out = s.membersReply(ch.State)
	})
	if err != nil {
		return nil, err
	}
	return json.RawMessage(out), nil
}

// membersReply encodes the reply to join: the identities present, at most
// MaxMembers of them.
func (s *Service) membersReply(ids presenceSet) []byte {
	out := []byte(`{"members":[`)
	n := 0
	for _, p := range ids {
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
	if n < len(ids) {
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
func (s *Service) left(ch *membership.Room[presenceSet], m *membership.Member[*rpc.Identity], k membership.Key) {
	id := m.State
	pr := ch.State[id.Key]
	delete(pr.conns, m.Conn.ID())
	if len(pr.conns) > 0 {
		return
	}
	delete(ch.State, id.Key)
	if len(ch.State) == 0 {
		return
	}
	ch.Send(s.presenceFrame(pr.identity, k.JSON, "left"))
}

func (s *Service) send(c rpc.Conn, rawCh, body json.RawMessage) error {
	k, err := jsonval.Canonical(rawCh)
	if err != nil {
		return rpc.ErrInvalidParams
	}
	return s.set.In(c, k, func(ch *membership.Room[presenceSet], m *membership.Member[*rpc.Identity]) error {
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
		ch.Send(rpc.AppendEnvelope(nil, s.name, msg))
		return nil
	})
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
	s.set.WithRoom(k, func(ch *membership.Room[presenceSet]) {
		pr := ch.State[id.Key]
		if pr == nil {
			return
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
	})
	return nil
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
