package membership

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Key names a room: its canonical form, which is the map key, and the JSON
// text as a client gave it (compact, owned), for repeating in
// notifications.
type Key struct {
	Canonical string
	JSON      json.RawMessage
}

// ParseKey returns the Key of the JSON text raw, copying what it keeps. It
// fails only on invalid JSON, with jsonval's error.
func ParseKey(raw json.RawMessage) (Key, error) {
	k, err := jsonval.Canonical(raw)
	if err != nil {
		return Key{}, err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return Key{}, err
	}
	return Key{Canonical: k, JSON: b.Bytes()}, nil
}

// Limits bound what one connection may hold in a Set. A zero field means
// no limit.
type Limits struct {
	// PerConn is how many rooms one connection may be in at once.
	PerConn int
	// KeyBytes is the longest key Join accepts, in bytes of its canonical
	// form.
	KeyBytes int
}

// Errors are the service's own protocol errors for the Set's refusals, so
// that each service keeps its wire text ("Already joined", "Already
// subscribed", …). A nil field is returned as is: set them all.
type Errors struct {
	// AlreadyMember: Join of a room the connection is in.
	AlreadyMember error
	// NotMember: Leave of, or In for, a room the connection is not in.
	NotMember error
	// TooMany: Join beyond Limits.PerConn.
	TooMany error
	// KeyTooLong: Join of a key longer than Limits.KeyBytes.
	KeyTooLong error
}

// Room is one room: its members and the service's state R. A Room and its
// State may be used only inside the hooks and callbacks of its Set, which
// run under the Set's mutex.
type Room[R any] struct {
	// Key is the canonical key of the room.
	Key string
	// State is the service's state of the room; its zero value when the
	// room is created.
	State R

	conns []rpc.Conn     // members, for fan-out
	index map[uint64]int // connection ID → position in conns
}

// Len returns the number of connections in the room.
func (r *Room[R]) Len() int { return len(r.conns) }

// Conns returns the connections in the room, in no particular order. The
// slice belongs to the room: read it, inside the hook, and keep nothing.
func (r *Room[R]) Conns() []rpc.Conn { return r.conns }

// Send queues frame on every connection in the room.
func (r *Room[R]) Send(frame []byte) {
	for _, c := range r.conns {
		c.Send(frame)
	}
}

// Has reports whether the connection with ID id is in the room.
func (r *Room[R]) Has(id uint64) bool {
	_, ok := r.index[id]
	return ok
}

func (r *Room[R]) add(c rpc.Conn) {
	r.index[c.ID()] = len(r.conns)
	r.conns = append(r.conns, c)
}

func (r *Room[R]) remove(id uint64) {
	i, ok := r.index[id]
	if !ok {
		return
	}
	last := len(r.conns) - 1
	if i != last {
		moved := r.conns[last]
		r.conns[i] = moved
		r.index[moved.ID()] = i
	}
	r.conns[last] = nil
	r.conns = r.conns[:last]
	delete(r.index, id)
}

// Member is one connection's record: the rooms it is in and the service's
// state M. It exists while the connection is in at least one room, and
// may be used only inside the hooks and callbacks of its Set.
type Member[M any] struct {
	// Conn is the connection.
	Conn rpc.Conn
	// State is the service's state of the connection; its zero value when
	// the connection joins its first room.
	State M

	keys map[string]json.RawMessage // canonical key → key JSON as joined
}

// Len returns the number of rooms the connection is in.
func (m *Member[M]) Len() int { return len(m.keys) }

// In reports whether the connection is in the room with canonical key k.
func (m *Member[M]) In(k string) bool {
	_, ok := m.keys[k]
	return ok
}

// Set is the memberships of one service: rooms with state R, connections
// with state M. Its methods are safe for concurrent use.
type Set[R, M any] struct {
	limits Limits
	errs   Errors

	mu      sync.Mutex
	rooms   map[string]*Room[R]
	members map[uint64]*Member[M]
}

// New returns an empty Set with the given limits, refusing with errs.
func New[R, M any](limits Limits, errs Errors) *Set[R, M] {
	return &Set[R, M]{
		limits:  limits,
		errs:    errs,
		rooms:   map[string]*Room[R]{},
		members: map[uint64]*Member[M]{},
	}
}

// Join puts c in the room k, creating the room and c's record when they
// do not exist, then calls joined (when not nil) with both, c already in
// the room. It refuses, in this order, a key longer than Limits.KeyBytes
// (Errors.KeyTooLong), a room c is in (Errors.AlreadyMember) and a room
// beyond Limits.PerConn (Errors.TooMany); a refused Join changes nothing
// and calls no hook.
func (s *Set[R, M]) Join(c rpc.Conn, k Key, joined func(*Room[R], *Member[M])) error {
	if s.limits.KeyBytes > 0 && len(k.Canonical) > s.limits.KeyBytes {
		return s.errs.KeyTooLong
	}
	id := c.ID()
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[id]
	if m != nil {
		if _, ok := m.keys[k.Canonical]; ok {
			return s.errs.AlreadyMember
		}
		if s.limits.PerConn > 0 && len(m.keys) >= s.limits.PerConn {
			return s.errs.TooMany
		}
	} else {
		m = &Member[M]{Conn: c, keys: map[string]json.RawMessage{}}
		s.members[id] = m
	}
	m.keys[k.Canonical] = k.JSON
	r := s.rooms[k.Canonical]
	if r == nil {
		r = &Room[R]{Key: k.Canonical, index: map[uint64]int{}}
		s.rooms[k.Canonical] = r
	}
	r.add(c)
	if joined != nil {
		joined(r, m)
	}
	return nil
}

// Leave takes c out of the room k.Canonical and calls left (when not nil)
// with the room, c's record and k, c no longer in the room; after left,
// an empty room and a record of no rooms are dropped. It returns
// Errors.NotMember when c is not in the room.
func (s *Set[R, M]) Leave(c rpc.Conn, k Key, left func(*Room[R], *Member[M], Key)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[c.ID()]
	if m == nil || !m.In(k.Canonical) {
		return s.errs.NotMember
	}
	s.leaveLocked(m, k, left)
	return nil
}

// Disconnect takes c out of every room it is in, as Leave does, calling
// left for each with the key as c joined it.
func (s *Set[R, M]) Disconnect(c rpc.Conn, left func(*Room[R], *Member[M], Key)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[c.ID()]
	if m == nil {
		return
	}
	for k, js := range m.keys {
		s.leaveLocked(m, Key{Canonical: k, JSON: js}, left)
	}
}

func (s *Set[R, M]) leaveLocked(m *Member[M], k Key, left func(*Room[R], *Member[M], Key)) {
	id := m.Conn.ID()
	delete(m.keys, k.Canonical)
	r := s.rooms[k.Canonical]
	r.remove(id)
	if left != nil {
		left(r, m, k)
	}
	if r.Len() == 0 {
		delete(s.rooms, k.Canonical)
	}
	if len(m.keys) == 0 {
		delete(s.members, id)
	}
}

// In calls f with the room k and c's record when c is in that room, and
// returns f's error; otherwise it returns Errors.NotMember.
func (s *Set[R, M]) In(c rpc.Conn, k string, f func(*Room[R], *Member[M]) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.members[c.ID()]
	if m == nil || !m.In(k) {
		return s.errs.NotMember
	}
	return f(s.rooms[k], m)
}

// WithMember calls f with c's record, nil when c is in no room, and
// returns f's error.
func (s *Set[R, M]) WithMember(c rpc.Conn, f func(*Member[M]) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f(s.members[c.ID()])
}

// WithRoom calls f with the room k when it exists, and reports whether it
// did.
func (s *Set[R, M]) WithRoom(k string, f func(*Room[R])) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[k]
	if r == nil {
		return false
	}
	f(r)
	return true
}

// Remove drops the room k and every connection's membership of it, and
// returns the connections that were in it (nil when there was no room).
// No hook runs: the caller acts on the connections, outside the Set.
func (s *Set[R, M]) Remove(k string) []rpc.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[k]
	if r == nil {
		return nil
	}
	delete(s.rooms, k)
	for _, c := range r.conns {
		id := c.ID()
		m := s.members[id]
		delete(m.keys, k)
		if len(m.keys) == 0 {
			delete(s.members, id)
		}
	}
	return r.conns
}

// Holds reports whether c is in at least one room (rpc.Holder).
func (s *Set[R, M]) Holds(c rpc.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.members[c.ID()] != nil
}

// Count returns the number of connections in the room k.
func (s *Set[R, M]) Count(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rooms[k]; r != nil {
		return r.Len()
	}
	return 0
}

// Len returns how many rooms exist and how many connections are in at
// least one: both zero once every connection has left or disconnected.
func (s *Set[R, M]) Len() (rooms, conns int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rooms), len(s.members)
}
