// Package messaging is the Messaging service of spec §2.2: connections
// register participant names and send messages to each other by name.
package messaging

import (
	"encoding/json"
	"slices"
	"sync"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// Errors of spec §2.2.
const (
	ErrNameTaken          rpc.Error = "Name already registered"
	ErrNameNotAllowed     rpc.Error = "Name not allowed"
	ErrUnknownParticipant rpc.Error = "Unknown participant"
	ErrInvalidParticipant rpc.Error = "Invalid participant"
	ErrInvalidSender      rpc.Error = "Invalid sender"
	ErrUnknownDestination rpc.Error = "Unknown destination"
	// Limit errors of this project (reliability S1).
	ErrTooManyNames rpc.Error = "Too many names (limits.names_per_connection)"
	ErrNameTooLong  rpc.Error = "Name too long (limits.name_bytes)"
)

// Config holds the Messaging limits; a zero field means no limit.
type Config struct {
	// Policy decides which names a connection may register; nil allows
	// every name.
	Policy NamePolicy
	// MaxNamesPerConn is how many names one connection may hold at once.
	MaxNamesPerConn int
	// MaxNameBytes is the longest name registerParticipant accepts, in
	// bytes of UTF-8.
	MaxNameBytes int
	// MaxListed is how many names one listParticipants reply carries: the
	// first in ascending order, after the optional "after" parameter (a
	// name; the reply then starts with the next name), so a client pages
	// through a long list.
	MaxListed int
}

// NamePolicy decides whether a connection may register a name. nil allows
// every name.
type NamePolicy func(c rpc.Conn, name string) bool

// Service is the Messaging service. A name has one owner, so names are
// not rooms of a membership.Set; connections are keyed by ID as there.
type Service struct {
	name   []byte
	policy NamePolicy
	cfg    Config

	mu     sync.Mutex
	owners map[string]rpc.Conn
	byConn map[uint64][]string // connection ID → the names it registered
	sorted []string            // every registered name, in ascending order (listParticipants)
}

// New returns the service, named name on the wire.
func New(name string, cfg Config) *Service {
	return &Service{
		name:   rpc.QuoteName(name),
		policy: cfg.Policy,
		cfg:    cfg,
		owners: map[string]rpc.Conn{},
		byConn: map[uint64][]string{},
	}
}

// Names are strings; any other JSON value is invalid params.
func stringParam(raw json.RawMessage) (string, error) {
	s, ok := rpc.String(raw)
	if !ok {
		return "", rpc.ErrInvalidParams
	}
	return s, nil
}

// nameParam decodes the params of a command whose only parameter is name.
func nameParam(req *rpc.Request) (string, error) {
	p, err := rpc.Params(req.Params, []string{"name"}, nil)
	if err != nil {
		return "", err
	}
	return stringParam(p["name"])
}

// Handle implements rpc.Service.
func (s *Service) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "registerParticipant":
		name, err := nameParam(req)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.owners[name]; ok {
			return nil, ErrNameTaken
		}
		if s.cfg.MaxNameBytes > 0 && len(name) > s.cfg.MaxNameBytes {
			return nil, ErrNameTooLong
		}
		if s.cfg.MaxNamesPerConn > 0 && len(s.byConn[c.ID()]) >= s.cfg.MaxNamesPerConn {
			return nil, ErrTooManyNames
		}
		if s.policy != nil && !s.policy(c, name) {
			return nil, ErrNameNotAllowed
		}
		s.owners[name] = c
		s.addSorted(name)
		s.byConn[c.ID()] = append(s.byConn[c.ID()], name)
		return nil, nil
	case "unregisterParticipant":
		name, err := nameParam(req)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		owner, ok := s.owners[name]
		if !ok {
			return nil, ErrUnknownParticipant
		}
		if owner.ID() != c.ID() {
			return nil, ErrInvalidParticipant
		}
		delete(s.owners, name)
		s.removeSorted(name)
		names := slices.DeleteFunc(s.byConn[c.ID()], func(n string) bool { return n == name })
		if len(names) == 0 {
			delete(s.byConn, c.ID())
		} else {
			s.byConn[c.ID()] = names
		}
		return nil, nil
	case "listParticipants":
		p, err := rpc.Params(req.Params, nil, []string{"after"})
		if err != nil {
			return nil, err
		}
		after, paged := "", false
		if raw, ok := p["after"]; ok {
			if after, err = stringParam(raw); err != nil {
				return nil, err
			}
			paged = true
		}
		return s.list(after, paged), nil
	case "send":
		p, err := rpc.Params(req.Params, []string{"sender", "dest", "body"}, nil)
		if err != nil {
			return nil, err
		}
		sender, err := stringParam(p["sender"])
		if err != nil {
			return nil, err
		}
		dest, err := stringParam(p["dest"])
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if owner, ok := s.owners[sender]; !ok || owner.ID() != c.ID() {
			return nil, ErrInvalidSender
		}
		to, ok := s.owners[dest]
		if !ok {
			return nil, ErrUnknownDestination
		}
		b := append([]byte(nil), `{"type":"message","sender":`...)
		b = append(b, p["sender"]...)
		b = append(b, `,"dest":`...)
		b = append(b, p["dest"]...)
		b = append(b, `,"body":`...)
		b = append(b, p["body"]...)
		b = append(b, '}')
		to.Send(rpc.AppendEnvelope(nil, s.name, b))
		return nil, nil
	}
	return nil, rpc.ErrUnknownCommand
}

// list returns the registered names in ascending order, those after after
// when paged, at most MaxListed of them. The names are kept sorted, so a
// page costs a binary search and a copy, however many names there are.
func (s *Service) list(after string, paged bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := 0
	if paged {
		i, found := slices.BinarySearch(s.sorted, after)
		if found {
			i++
		}
		from = i
	}
	to := len(s.sorted)
	if s.cfg.MaxListed > 0 {
		to = min(to, from+s.cfg.MaxListed)
	}
	return append(make([]string, 0, to-from), s.sorted[from:to]...) // never nil: an empty list is []
}

func (s *Service) addSorted(name string) {
	i, _ := slices.BinarySearch(s.sorted, name)
	s.sorted = slices.Insert(s.sorted, i, name)
}

func (s *Service) removeSorted(name string) {
	if i, ok := slices.BinarySearch(s.sorted, name); ok {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
}

// Holds implements rpc.Holder: c has registered at least one name.
func (s *Service) Holds(c rpc.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byConn[c.ID()]) > 0
}

// Disconnected implements rpc.Disconnecter: it frees the connection's names.
func (s *Service) Disconnected(c rpc.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.byConn[c.ID()] {
		delete(s.owners, n)
		s.removeSorted(n)
	}
	delete(s.byConn, c.ID())
}
