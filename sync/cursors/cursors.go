package cursors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Protocol error strings (spec §2.4) and the limit errors of this service.
const (
	ErrNotAuthenticated rpc.Error = "Not authenticated"
	ErrAlreadyJoined    rpc.Error = "Already joined"
	ErrNotJoined        rpc.Error = "Not joined"
	ErrReusedHandle     rpc.Error = "Reused handle"
	ErrTooManyCursors   rpc.Error = "Too many cursors"
	ErrNoSuchCursor     rpc.Error = "No such cursor"
	ErrTooManyDocuments rpc.Error = "Too many documents (limits.documents_per_connection)"
	ErrDocumentTooLong  rpc.Error = "Document too long (limits.document_bytes)"
	ErrHandleTooLong    rpc.Error = "Handle too long (limits.cursor_handle_bytes)"
)

// MaxCursorsPerConn is the number of cursors one connection may hold (spec
// §2.4).
const MaxCursorsPerConn = 16

// Defaults of Config's zero fields.
const (
	DefaultMaxDocuments     = 256
	DefaultMaxDocumentBytes = 256
	DefaultMaxHandleBytes   = 256
	DefaultMaxListed        = 1000
)

// handles is the number of public handles (0–65535).
const handles = 1 << 16

// Config holds the Cursors limits (reliability S1).
type Config struct {
	// MaxDocuments is how many documents one connection may have joined at
	// once. Zero means 256.
	MaxDocuments int
	// MaxDocumentBytes is the longest document accepted by join, in bytes
	// of its canonical JSON text (jsonval.Canonical). Zero means 256.
	MaxDocumentBytes int
	// MaxHandleBytes is the longest private handle accepted by
	// createCursor, in bytes of its canonical JSON text. Zero means 256.
	MaxHandleBytes int
	// MaxListed is how many cursors a join reply lists at most; a longer
	// list is cut and the reply carries "truncated": true. Zero means 1000.
	MaxListed int
}

// Validate reports negative limits. Errors name the field.
func (c Config) Validate() error {
	if c.MaxDocuments < 0 {
		return fmt.Errorf("MaxDocuments: must not be negative (got %d)", c.MaxDocuments)
	}
	if c.MaxDocumentBytes < 0 {
		return fmt.Errorf("MaxDocumentBytes: must not be negative (got %d)", c.MaxDocumentBytes)
	}
	if c.MaxHandleBytes < 0 {
		return fmt.Errorf("MaxHandleBytes: must not be negative (got %d)", c.MaxHandleBytes)
	}
	if c.MaxListed < 0 {
		return fmt.Errorf("MaxListed: must not be negative (got %d)", c.MaxListed)
	}
	return nil
}

// withDefaults returns c with each zero field set to its default (the
// Default constants).
func (c Config) withDefaults() Config {
	if c.MaxDocuments == 0 {
		c.MaxDocuments = DefaultMaxDocuments
	}
	if c.MaxDocumentBytes == 0 {
		c.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if c.MaxHandleBytes == 0 {
		c.MaxHandleBytes = DefaultMaxHandleBytes
	}
	if c.MaxListed == 0 {
		c.MaxListed = DefaultMaxListed
	}
	return c
}

// Service is the Cursors service.
type Service struct {
	name       []byte // the wire name as JSON text
	cfg        Config
	randHandle func() int // a candidate public handle; replaced in tests

	mu     sync.Mutex
	docs   map[string]*document // canonical document → document
	conns  map[uint64]*member   // connections that joined a document
	serial uint64               // numbers cursors, for SendLatest keys
}

type document struct {
	key     string
	members map[uint64]rpc.Conn
	cursors map[int]*cursor // public handle → cursor
}

type cursor struct {
	public   int
	private  string // canonical private handle
	doc      *document
	docJSON  json.RawMessage // the document as given to createCursor
	owner    json.RawMessage
	position json.RawMessage
	status   json.RawMessage
	latest   string // SendLatest key of cursorUpdated
}

// member is one connection's documents and cursors.
type member struct {
	conn    rpc.Conn
	docs    map[string]json.RawMessage // canonical document → as joined
	cursors map[string]*cursor         // canonical private handle → cursor
}

// New returns a Cursors service named name on the wire.
func New(name string, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Service{
		name:       rpc.QuoteName(name),
		cfg:        cfg,
		randHandle: func() int { return rand.IntN(handles) },
		docs:       map[string]*document{},
		conns:      map[uint64]*member{},
	}, nil
}

// Handle implements rpc.Service.
func (s *Service) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "join":
		p, err := rpc.Params(req.Params, []string{"document"}, nil)
		if err != nil {
			return nil, err
		}
		return s.join(c, p["document"])
	case "leave":
		p, err := rpc.Params(req.Params, []string{"document"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.leaveCmd(c, p["document"])
	case "createCursor":
		p, err := rpc.Params(req.Params, []string{"privateHandle", "document", "position", "status"}, nil)
		if err != nil {
			return nil, err
		}
		return s.create(c, p)
	case "updateCursor":
		p, err := rpc.Params(req.Params, []string{"privateHandle", "newData"}, nil)
		if err != nil {
			return nil, err
		}
		var nd map[string]json.RawMessage
		if err := json.Unmarshal(p["newData"], &nd); err != nil || nd == nil {
			return nil, rpc.ErrInvalidParams
		}
		return nil, s.update(c, p["privateHandle"], nd)
	case "removeCursor":
		p, err := rpc.Params(req.Params, []string{"privateHandle"}, nil)
		if err != nil {
			return nil, err
		}
		return nil, s.remove(c, p["privateHandle"])
	default:
		return nil, rpc.ErrUnknownCommand
	}
}

// canonical returns the canonical key of a JSON parameter.
func canonical(raw json.RawMessage) (string, error) {
	k, err := jsonval.Canonical(raw)
	if err != nil {
		return "", rpc.ErrInvalidParams
	}
	return k, nil
}

// owned returns a compact copy of raw, safe to keep after the request.
func owned(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return append(json.RawMessage(nil), raw...)
	}
	return b.Bytes()
}

func (s *Service) join(c rpc.Conn, raw json.RawMessage) (any, error) {
	if c.Identity() == nil {
		return nil, ErrNotAuthenticated
	}
	k, err := canonical(raw)
	if err != nil {
		return nil, err
	}
	if len(k) > s.cfg.MaxDocumentBytes {
		return nil, ErrDocumentTooLong
	}
	docJSON := owned(raw)

	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m != nil {
		if _, ok := m.docs[k]; ok {
			return nil, ErrAlreadyJoined
		}
		if len(m.docs) >= s.cfg.MaxDocuments {
			return nil, ErrTooManyDocuments
		}
	} else {
		m = &member{conn: c, docs: map[string]json.RawMessage{}, cursors: map[string]*cursor{}}
		s.conns[c.ID()] = m
	}
	m.docs[k] = docJSON
	d := s.docs[k]
	if d == nil {
		d = &document{key: k, members: map[uint64]rpc.Conn{}, cursors: map[int]*cursor{}}
		s.docs[k] = d
	}
	d.members[c.ID()] = c

	out := []byte(`{"cursors":[`)
	n := 0
	for _, cur := range d.cursors {
		if n == s.cfg.MaxListed {
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = cur.appendJSON(out)
	}
	out = append(out, ']')
	if n < len(d.cursors) {
		out = append(out, `,"truncated":true`...)
	}
	out = append(out, '}')
	return json.RawMessage(out), nil
}

func (s *Service) leaveCmd(c rpc.Conn, raw json.RawMessage) error {
	k, err := canonical(raw)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m == nil {
		return ErrNotJoined
	}
	if _, ok := m.docs[k]; !ok {
		return ErrNotJoined
	}
	s.leave(m, k)
	return nil
}

// leave removes m's cursors in document k, announcing each, then m's
// membership. The caller holds s.mu.
func (s *Service) leave(m *member, k string) {
	d := s.docs[k]
	for pk, cur := range m.cursors {
		if cur.doc == d {
			s.drop(m, pk, cur)
		}
	}
	delete(m.docs, k)
	if len(m.docs) == 0 {
		delete(s.conns, m.conn.ID())
	}
	delete(d.members, m.conn.ID())
	if len(d.members) == 0 {
		delete(s.docs, k)
	}
}

func (s *Service) create(c rpc.Conn, p map[string]json.RawMessage) (any, error) {
	dk, err := canonical(p["document"])
	if err != nil {
		return nil, err
	}
	pk, err := canonical(p["privateHandle"])
	if err != nil {
		return nil, err
	}
	if len(pk) > s.cfg.MaxHandleBytes {
		return nil, ErrHandleTooLong
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m == nil {
		return nil, ErrNotJoined
	}
	if _, ok := m.docs[dk]; !ok {
		return nil, ErrNotJoined
	}
	if _, ok := m.cursors[pk]; ok {
		return nil, ErrReusedHandle
	}
	if len(m.cursors) >= MaxCursorsPerConn {
		return nil, ErrTooManyCursors
	}
	d := s.docs[dk]
	h, ok := s.freeHandle(d)
	if !ok {
		return nil, ErrTooManyCursors
	}
	s.serial++
	cur := &cursor{
		public:   h,
		private:  pk,
		doc:      d,
		docJSON:  owned(p["document"]),
		owner:    c.Identity().JSON,
		position: owned(p["position"]),
		status:   owned(p["status"]),
		latest:   string(s.name) + "\x00cursor\x00" + strconv.FormatUint(s.serial, 10),
	}
	d.cursors[h] = cur
	m.cursors[pk] = cur

	msg := cur.appendJSON([]byte(`{"type":"cursorAdded","cursor":`))
	msg = append(msg, '}')
	s.toOthers(d, c.ID(), rpc.AppendEnvelope(nil, s.name, msg), "")
	return h, nil
}

// freeHandle picks a random public handle not used in d.
func (s *Service) freeHandle(d *document) (int, bool) {
	if len(d.cursors) >= handles {
		return 0, false
	}
	h := s.randHandle()
	for range 8 {
		if _, used := d.cursors[h]; !used {
			return h, true
		}
		h = s.randHandle()
	}
	// Crowded document: walk from the last candidate to the next free one.
	for i := range handles {
		c := (h + i) % handles
		if _, used := d.cursors[c]; !used {
			return c, true
		}
	}
	return 0, false
}

func (s *Service) update(c rpc.Conn, rawPrivate json.RawMessage, newData map[string]json.RawMessage) error {
	pk, err := canonical(rawPrivate)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, cur := s.ownCursorLocked(c, pk)
	if cur == nil {
		return ErrNoSuchCursor
	}
	if v, ok := newData["position"]; ok {
		cur.position = owned(v)
	}
	if v, ok := newData["status"]; ok {
		cur.status = owned(v)
	}
	msg := cur.appendJSON([]byte(`{"type":"cursorUpdated","cursor":`))
	msg = append(msg, '}')
	s.toOthers(cur.doc, c.ID(), rpc.AppendEnvelope(nil, s.name, msg), cur.latest)
	return nil
}

func (s *Service) remove(c rpc.Conn, rawPrivate json.RawMessage) error {
	pk, err := canonical(rawPrivate)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, cur := s.ownCursorLocked(c, pk)
	if cur == nil {
		return ErrNoSuchCursor
	}
	s.drop(m, pk, cur)
	return nil
}

// ownCursorLocked finds the cursor c created under the private handle pk
// (canonical form); cur is nil when there is none. The caller holds s.mu.
func (s *Service) ownCursorLocked(c rpc.Conn, pk string) (m *member, cur *cursor) {
	if m = s.conns[c.ID()]; m == nil {
		return nil, nil
	}
	return m, m.cursors[pk]
}

// drop deletes cur and announces cursorRemoved. The caller holds s.mu.
func (s *Service) drop(m *member, pk string, cur *cursor) {
	delete(m.cursors, pk)
	delete(cur.doc.cursors, cur.public)
	msg := []byte(`{"type":"cursorRemoved","cursor":{"publicHandle":`)
	msg = strconv.AppendInt(msg, int64(cur.public), 10)
	msg = append(msg, `,"document":`...)
	msg = append(msg, cur.docJSON...)
	msg = append(msg, "}}"...)
	s.toOthers(cur.doc, m.conn.ID(), rpc.AppendEnvelope(nil, s.name, msg), "")
}

// toOthers queues frame on every member of d but the one with ID except;
// with a latest key, through SendLatest.
func (s *Service) toOthers(d *document, except uint64, frame []byte, latest string) {
	for id, to := range d.members {
		if id == except {
			continue
		}
		if latest != "" {
			to.SendLatest(latest, frame)
		} else {
			to.Send(frame)
		}
	}
}

// Holds implements rpc.Holder: c has joined at least one document.
func (s *Service) Holds(c rpc.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[c.ID()] != nil
}

// Disconnected implements rpc.Disconnecter: c leaves every document as if
// by leave.
func (s *Service) Disconnected(c rpc.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.conns[c.ID()]
	if m == nil {
		return
	}
	for k := range m.docs {
		s.leave(m, k)
	}
}

// appendJSON appends the cursor as the protocol serialises it.
func (cur *cursor) appendJSON(b []byte) []byte {
	b = append(b, `{"publicHandle":`...)
	b = strconv.AppendInt(b, int64(cur.public), 10)
	b = append(b, `,"document":`...)
	b = append(b, cur.docJSON...)
	b = append(b, `,"position":`...)
	b = append(b, cur.position...)
	b = append(b, `,"status":`...)
	b = append(b, cur.status...)
	b = append(b, `,"owner":`...)
	b = append(b, cur.owner...)
	return append(b, '}')
}
