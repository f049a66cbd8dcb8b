// Package messaging is the Messaging service of spec §2.2: connections
// register participant names and send messages to each other by name.
//
// In a cluster a Directory (package relay) keeps each name unique across
// the nodes, carries messages to names other nodes own and lists the
// whole cluster's names. Without one the service is one node's, unchanged.
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

	// dir is set once by SetDirectory, before the service is used; nil
	// on a single node.
	dir Directory

	mu       sync.Mutex
	owners   map[string]rpc.Conn
	byConn   map[uint64][]string // connection ID → the names it registered
	sorted   []string            // every registered name, in ascending order (listParticipants)
	claiming map[string]struct{} // names being claimed from the directory, not yet registered
}

// Directory makes the names unique across the nodes of a cluster and
// reaches the names other nodes own (package relay). The service calls it
// without holding its lock; each call may wait for the cluster.
type Directory interface {
	// Claim records name as this node's. It returns ErrNameTaken when
	// another node holds it; another error when the cluster could not be
	// asked (the client gets "Internal error").
	Claim(name string) error
	// Release gives back names this node claimed; it need not wait.
	Release(names []string)
	// Send delivers message, a message notification, to the connection
	// that owns dest on another node (through its Deliver). It returns
	// ErrUnknownDestination when no node holds dest.
	Send(dest string, message []byte) error
	// List returns every name registered in the cluster, ascending.
	List() ([]string, error)
}

// SetDirectory joins the service to the other nodes through d. Call it
// once, before the service handles any request.
func (s *Service) SetDirectory(d Directory) { s.dir = d }

// New returns the service, named name on the wire.
func New(name string, cfg Config) *Service {
	return &Service{
		name:     rpc.QuoteName(name),
		policy:   cfg.Policy,
		cfg:      cfg,
		owners:   map[string]rpc.Conn{},
		byConn:   map[uint64][]string{},
		claiming: map[string]struct{}{},
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
		return nil, s.register(c, name)
	case "unregisterParticipant":
		name, err := nameParam(req)
		if err != nil {
			return nil, err
		}
		return nil, s.unregister(c, name)
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
		b := append([]byte(nil), `{"type":"message","sender":`...)
		b = append(b, p["sender"]...)
		b = append(b, `,"dest":`...)
		b = append(b, p["dest"]...)
		b = append(b, `,"body":`...)
		b = append(b, p["body"]...)
		b = append(b, '}')
		return nil, s.send(c, sender, dest, b)
	}
	return nil, rpc.ErrUnknownCommand
}

func (s *Service) register(c rpc.Conn, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.owners[name]; ok {
		return ErrNameTaken
	}
	if _, ok := s.claiming[name]; ok {
		return ErrNameTaken
	}
	if s.cfg.MaxNameBytes > 0 && len(name) > s.cfg.MaxNameBytes {
		return ErrNameTooLong
	}
	if s.cfg.MaxNamesPerConn > 0 && len(s.byConn[c.ID()]) >= s.cfg.MaxNamesPerConn {
		return ErrTooManyNames
	}
	if s.policy != nil && !s.policy(c, name) {
		return ErrNameNotAllowed
	}
	if s.dir != nil {
		// The claim is a round trip to the cluster: made without the lock,
		// the name reserved meanwhile. c's own requests come one at a
		// time and its disconnect after the last, so c stays as it is.
		s.claiming[name] = struct{}{}
		s.mu.Unlock()
		err := s.dir.Claim(name)
		s.mu.Lock()
		delete(s.claiming, name)
		if err != nil {
			return err
		}
	}
	s.owners[name] = c
	s.addSorted(name)
	s.byConn[c.ID()] = append(s.byConn[c.ID()], name)
	return nil
}

func (s *Service) unregister(c rpc.Conn, name string) error {
	s.mu.Lock()
	owner, ok := s.owners[name]
	if !ok {
		s.mu.Unlock()
		return ErrUnknownParticipant
	}
	if owner.ID() != c.ID() {
		s.mu.Unlock()
		return ErrInvalidParticipant
	}
	delete(s.owners, name)
	s.removeSorted(name)
	names := slices.DeleteFunc(s.byConn[c.ID()], func(n string) bool { return n == name })
	if len(names) == 0 {
		delete(s.byConn, c.ID())
	} else {
		s.byConn[c.ID()] = names
	}
	s.mu.Unlock()
	if s.dir != nil {
		s.dir.Release([]string{name})
	}
	return nil
}

// send queues the message b for dest, from sender, which must be c's.
func (s *Service) send(c rpc.Conn, sender, dest string, b []byte) error {
	s.mu.Lock()
	if owner, ok := s.owners[sender]; !ok || owner.ID() != c.ID() {
		s.mu.Unlock()
		return ErrInvalidSender
	}
	to, ok := s.owners[dest]
	if ok {
		to.Send(rpc.AppendEnvelope(nil, s.name, b))
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.dir == nil {
		return ErrUnknownDestination
	}
	return s.dir.Send(dest, b)
}

// Deliver queues message, a message notification ({"type":"message",…})
// sent on another node, on the connection of this node that owns dest. It
// returns ErrUnknownDestination when no connection of this node does.
func (s *Service) Deliver(dest string, message []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	to, ok := s.owners[dest]
	if !ok {
		return ErrUnknownDestination
	}
	to.Send(rpc.AppendEnvelope(nil, s.name, message))
	return nil
}

// list returns the registered names in ascending order, those after after
// when paged, at most MaxListed of them. The names are kept sorted, so a
// page costs a binary search and a copy, however many names there are.
//
// With a directory the names are the cluster's: the directory's list
// merged with this node's names (so that a failing directory leaves at
// least these).
func (s *Service) list(after string, paged bool) []string {
	if s.dir != nil {
		all, err := s.dir.List()
		s.mu.Lock()
		if err != nil {
			all = nil
		}
		all = mergeSorted(all, s.sorted)
		s.mu.Unlock()
		return s.page(all, after, paged)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.page(s.sorted, after, paged)
}

// page returns the names of sorted after after when paged, at most
// MaxListed of them, in a new slice.
func (s *Service) page(sorted []string, after string, paged bool) []string {
	from := 0
	if paged {
		i, found := slices.BinarySearch(sorted, after)
		if found {
			i++
		}
		from = i
	}
	to := len(sorted)
	if s.cfg.MaxListed > 0 {
		to = min(to, from+s.cfg.MaxListed)
	}
	return append(make([]string, 0, to-from), sorted[from:to]...) // never nil: an empty list is []
}

// mergeSorted returns the union of two ascending lists, ascending and
// without duplicates, in a new slice.
func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || len(a) > 0 && a[0] < b[0]:
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0] < a[0]:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	return out
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
	names := s.byConn[c.ID()]
	for _, n := range names {
		delete(s.owners, n)
		s.removeSorted(n)
	}
	delete(s.byConn, c.ID())
	s.mu.Unlock()
	if s.dir != nil && len(names) > 0 {
		s.dir.Release(names)
	}
}
