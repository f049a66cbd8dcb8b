package cursors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/snorkyhq/snorky/sync/jsonval"
	"github.com/snorkyhq/snorky/sync/membership"
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

	// set holds the memberships; a document's state is its cursors, a
	// connection's the cursors it created. Every command runs under the
	// set's mutex, which also guards serial.
	set    *membership.Set[docState, owner]
	serial uint64 // numbers cursors, for SendLatest keys

	// firstHandle and numHandles are the public handles this node gives
	// out: all of 0–65535 alone, a share of them with a bridge
	// (SetBridge).
	firstHandle, numHandles int
	// bridge, when set, joins the documents of this node to those of the
	// other nodes of a cluster.
	bridge Bridge
}

// docState is one document's state: every cursor in it, and which of them
// other nodes own.
type docState struct {
	cursors document
	remote  map[string]map[int]*cursor // node → public handle → cursor
}

// document is one document's cursors: public handle → cursor.
type document map[int]*cursor

// owner is one connection's cursors: canonical private handle → cursor.
type owner map[string]*cursor

type cursor struct {
	public   int
	private  string // canonical private handle; "" for another node's cursor
	doc      *membership.Room[docState]
	docJSON  json.RawMessage // the document as given to createCursor
	owner    json.RawMessage
	position json.RawMessage
	status   json.RawMessage
	latest   string // SendLatest key of cursorUpdated
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
		numHandles: handles,
		set: membership.New[docState, owner](
			membership.Limits{PerConn: cfg.MaxDocuments, KeyBytes: cfg.MaxDocumentBytes},
			membership.Errors{
				AlreadyMember: ErrAlreadyJoined,
				NotMember:     ErrNotJoined,
				TooMany:       ErrTooManyDocuments,
				KeyTooLong:    ErrDocumentTooLong,
			}),
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
		return nil, s.leave(c, p["document"])
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
	k, err := membership.ParseKey(raw)
	if err != nil {
		return nil, rpc.ErrInvalidParams
	}
	if s.bridge != nil {
		// The set refuses a long key too; refusing it here first keeps it
		// off the cluster.
		if len(k.Canonical) > s.cfg.MaxDocumentBytes {
			return nil, ErrDocumentTooLong
		}
		if err := s.bridge.Acquire(k.Canonical); err != nil {
			return nil, fmt.Errorf("joining document across nodes: %w", err)
		}
	}
	var out []byte
	err = s.set.Join(c, k, func(d *membership.Room[docState], _ *membership.Member[owner]) {
		if d.State.cursors == nil {
			d.State.cursors = document{}
			if s.bridge != nil {
				for node, curs := range s.bridge.Remote(k.Canonical) {
					s.setRemote(d, node, curs, false)
				}
			}
		}
		out = []byte(`{"cursors":[`)
		n := 0
		for _, cur := range d.State.cursors {
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
		if n < len(d.State.cursors) {
			out = append(out, `,"truncated":true`...)
		}
		out = append(out, '}')
	})
	if err != nil {
		if s.bridge != nil {
			s.bridge.Release(k.Canonical)
		}
		return nil, err
	}
	return json.RawMessage(out), nil
}

func (s *Service) leave(c rpc.Conn, raw json.RawMessage) error {
	k, err := membership.ParseKey(raw)
	if err != nil {
		return rpc.ErrInvalidParams
	}
	return s.set.Leave(c, k, s.left)
}

// left removes m's cursors in document d, announcing each, once m has
// left d. It runs under the set's mutex.
func (s *Service) left(d *membership.Room[docState], m *membership.Member[owner], _ membership.Key) {
	for pk, cur := range m.State {
		if cur.doc == d {
			s.drop(m, pk, cur)
		}
	}
	if s.bridge != nil {
		s.bridge.Release(d.Key)
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
	var h int
	err = s.set.In(c, dk, func(d *membership.Room[docState], m *membership.Member[owner]) error {
		if _, ok := m.State[pk]; ok {
			return ErrReusedHandle
		}
		if len(m.State) >= MaxCursorsPerConn {
			return ErrTooManyCursors
		}
		var ok bool
		if h, ok = s.freeHandle(d.State.cursors); !ok {
			return ErrTooManyCursors
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
		if m.State == nil {
			m.State = owner{}
		}
		d.State.cursors[h] = cur
		m.State[pk] = cur
		s.changed(d)

		msg := cur.appendJSON([]byte(`{"type":"cursorAdded","cursor":`))
		msg = append(msg, '}')
		s.toOthers(d, c.ID(), rpc.AppendEnvelope(nil, s.name, msg), "")
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// freeHandle picks a random public handle of this node's share not used
// in d.
func (s *Service) freeHandle(d document) (int, bool) {
	if len(d) >= handles {
		return 0, false
	}
	first, n := s.firstHandle, s.numHandles
	h := first + s.randHandle()%n
	for range 8 {
		if _, used := d[h]; !used {
			return h, true
		}
		h = first + s.randHandle()%n
	}
	// Crowded document: walk from the last candidate to the next free one.
	for i := range n {
		c := first + (h-first+i)%n
		if _, used := d[c]; !used {
			return c, true
		}
	}
	return 0, false
}

func (s *Service) update(c rpc.Conn, rawPrivate json.RawMessage, newData map[string]json.RawMessage) error {
	return s.withOwnCursor(c, rawPrivate, func(_ *membership.Member[owner], _ string, cur *cursor) {
		if v, ok := newData["position"]; ok {
			cur.position = owned(v)
		}
		if v, ok := newData["status"]; ok {
			cur.status = owned(v)
		}
		msg := cur.appendJSON([]byte(`{"type":"cursorUpdated","cursor":`))
		msg = append(msg, '}')
		s.toOthers(cur.doc, c.ID(), rpc.AppendEnvelope(nil, s.name, msg), cur.latest)
		s.changed(cur.doc)
	})
}

func (s *Service) remove(c rpc.Conn, rawPrivate json.RawMessage) error {
	return s.withOwnCursor(c, rawPrivate, s.drop)
}

// withOwnCursor calls f, under the set's mutex, with the cursor c created
// under the private handle rawPrivate, its canonical form pk and c's
// record. It returns ErrNoSuchCursor when c has no such cursor.
func (s *Service) withOwnCursor(c rpc.Conn, rawPrivate json.RawMessage, f func(m *membership.Member[owner], pk string, cur *cursor)) error {
	pk, err := canonical(rawPrivate)
	if err != nil {
		return err
	}
	return s.set.WithMember(c, func(m *membership.Member[owner]) error {
		if m == nil || m.State[pk] == nil {
			return ErrNoSuchCursor
		}
		f(m, pk, m.State[pk])
		return nil
	})
}

// drop deletes cur and announces cursorRemoved. It runs under the set's
// mutex.
func (s *Service) drop(m *membership.Member[owner], pk string, cur *cursor) {
	delete(m.State, pk)
	delete(cur.doc.State.cursors, cur.public)
	s.toOthers(cur.doc, m.Conn.ID(), s.removedFrame(cur), "")
	s.changed(cur.doc)
}

// removedFrame encodes the cursorRemoved notification of cur.
func (s *Service) removedFrame(cur *cursor) []byte {
	msg := []byte(`{"type":"cursorRemoved","cursor":{"publicHandle":`)
	msg = strconv.AppendInt(msg, int64(cur.public), 10)
	msg = append(msg, `,"document":`...)
	msg = append(msg, cur.docJSON...)
	msg = append(msg, "}}"...)
	return rpc.AppendEnvelope(nil, s.name, msg)
}

// toOthers queues frame on every member of d but the one with ID except;
// with a latest key, through SendLatest.
func (s *Service) toOthers(d *membership.Room[docState], except uint64, frame []byte, latest string) {
	for _, to := range d.Conns() {
		if to.ID() == except {
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
func (s *Service) Holds(c rpc.Conn) bool { return s.set.Holds(c) }

// Disconnected implements rpc.Disconnecter: c leaves every document as if
// by leave.
func (s *Service) Disconnected(c rpc.Conn) { s.set.Disconnect(c, s.left) }

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
