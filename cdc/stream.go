package cdc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// relation is the cached shape of a published table (pgoutput Relation).
type relation struct {
	name string // schema.table
	cols []relColumn
	// refreshed is when decode last read its types again; after skip
	// refreshes that did not help, it lets that many failures pass
	// (skipped counts them) before the next, or a second.
	refreshed     time.Time
	skip, skipped int
}

type relColumn struct {
	name string
	key  bool
	oid  uint32
	typ  *pgType
}

// stream turns pgoutput messages into whole transactions. It owns the
// relation cache and the open transaction; it is used by one goroutine.
type stream struct {
	rels   map[uint32]*relation
	types  *typeCache
	lookup typeLookup
	prefix string
	// warn, when set, reports a value sent as its text (see decode).
	warn   func(msg string, args ...any)
	warned time.Time // the last warning (at most one a minute)
	// maxTx bounds the decoded bytes of one transaction (0: none).
	maxTx int

	txn *Txn // open transaction, between Begin and Commit
	// chunk, when set, is a part of the open transaction ready to be
	// handed on (see Txn.Partial).
	chunk *Txn

	// marker is the LSN of the latest non-transactional logical message
	// (the reader's heartbeats among them), 0 once taken by takeMarker.
	// PostgreSQL decodes in WAL order and sends a transaction whole at its
	// commit, so every transaction that committed before a marker has been
	// received when the marker arrives.
	marker LSN
}

func newStream(lookup typeLookup, prefix string) *stream {
	return &stream{rels: make(map[uint32]*relation), types: newTypeCache(), lookup: lookup, prefix: prefix}
}

// reset forgets the open transaction (after a lost connection: PostgreSQL
// sends it again). The relation cache is kept: PostgreSQL sends Relation
// messages again on a new connection before they are used.
func (s *stream) reset() { s.txn, s.chunk = nil, nil }

// chunkChanges is the number of changes after which an open transaction's
// changes are handed on as a Partial chunk.
const chunkChanges = 2048

// takeChunk returns the chunk of the open transaction ready to be handed
// on, if any.
func (s *stream) takeChunk() *Txn {
	c := s.chunk
	s.chunk = nil
	return c
}

// takeMarker returns the position of the latest non-transactional message
// received since the last call, or 0.
func (s *stream) takeMarker() LSN {
	m := s.marker
	s.marker = 0
	return m
}

// inTxn reports whether a transaction is open.
func (s *stream) inTxn() bool { return s.txn != nil }

// handle processes one pgoutput message and returns the transaction it
// completes, if any.
func (s *stream) handle(ctx context.Context, data []byte) (*Txn, error) {
	msg, err := parseMessage(data)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		if s.txn != nil {
			return nil, fmt.Errorf("%w: begin of xid %d inside xid %d", ErrMalformed, m.Xid, s.txn.Xid)
		}
		s.txn = &Txn{Xid: m.Xid, CommitTime: m.CommitTime, CommitLSN: m.FinalLSN}
	case *pglogrepl.CommitMessage:
		if s.txn == nil {
			return nil, fmt.Errorf("%w: commit without begin", ErrMalformed)
		}
		txn := s.txn
		s.txn = nil
		if txn.TooLarge {
			slices.Sort(txn.Tables)
			txn.Tables = slices.Compact(txn.Tables)
		}
		txn.CommitLSN = m.CommitLSN
		txn.EndLSN = m.TransactionEndLSN
		txn.CommitTime = m.CommitTime
		return txn, nil
	case *pglogrepl.RelationMessage:
		return nil, s.relation(ctx, m)
	case *pglogrepl.InsertMessage:
		rel, err := s.change(m.RelationID, "insert")
		if err != nil {
			return nil, err
		}
		c := Change{Table: rel.name, Op: Insert}
		if err = s.decode(ctx, rel, func(lenient bool) (err error) {
			c.New, c.Unchanged, err = decodeNew(rel, m.Tuple, nil, lenient)
			return err
		}); err != nil {
			return nil, fmt.Errorf("decoding insert into %s: %w", rel.name, err)
		}
		s.keep(c)
	case *pglogrepl.UpdateMessage:
		rel, err := s.change(m.RelationID, "update")
		if err != nil {
			return nil, err
		}
		c := Change{Table: rel.name, Op: Update}
		if err = s.decode(ctx, rel, func(lenient bool) (err error) {
			var oldFull []Column
			if m.OldTuple != nil {
				if c.Old, err = decodeOld(rel, m.OldTuple, m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey, lenient); err != nil {
					return fmt.Errorf("old row: %w", err)
				}
				if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld {
					oldFull = c.Old
				}
			}
			c.New, c.Unchanged, err = decodeNew(rel, m.NewTuple, oldFull, lenient)
			return err
		}); err != nil {
			return nil, fmt.Errorf("decoding update of %s: %w", rel.name, err)
		}
		if c.Old == nil {
			// The key did not change (REPLICA IDENTITY DEFAULT or INDEX):
			// the old row's identity is the new row's key columns.
			c.Old = keyColumns(rel, c.New)
		}
		s.keep(c)
	case *pglogrepl.DeleteMessage:
		rel, err := s.change(m.RelationID, "delete")
		if err != nil {
			return nil, err
		}
		c := Change{Table: rel.name, Op: Delete}
		if err = s.decode(ctx, rel, func(lenient bool) (err error) {
			c.Old, err = decodeOld(rel, m.OldTuple, m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey, lenient)
			return err
		}); err != nil {
			return nil, fmt.Errorf("decoding delete from %s: %w", rel.name, err)
		}
		s.keep(c)
	case *pglogrepl.TruncateMessage:
		if s.txn == nil {
			return nil, fmt.Errorf("%w: truncate outside a transaction", ErrMalformed)
		}
		for _, id := range m.RelationIDs {
			rel := s.rels[id]
			if rel == nil {
				return nil, fmt.Errorf("%w: truncate of unknown relation %d", ErrMalformed, id)
			}
			s.keep(Change{Table: rel.name, Op: Truncate})
		}
	case *pglogrepl.LogicalDecodingMessage:
		if !m.Transactional {
			if s.txn == nil {
				s.marker = max(s.marker, m.LSN)
			}
			return nil, nil
		}
		if s.txn != nil && strings.HasPrefix(m.Prefix, s.prefix) {
			s.keepMessage(Message{Index: len(s.txn.Changes), Prefix: m.Prefix, Content: m.Content, LSN: m.LSN})
		}
	case *pglogrepl.TypeMessage, *pglogrepl.OriginMessage:
		// Types are resolved from the catalog; origins do not matter.
	}
	return nil, nil
}

// keep adds a change to the open transaction, until the transaction passes
// maxTx: from then on only the tables it touches are recorded.
func (s *stream) keep(c Change) {
	t := s.txn
	if !t.TooLarge {
		t.size += changeSize(&c)
		s.checkSize()
	}
	if t.TooLarge {
		addTable(t, c.Table)
		return
	}
	t.Changes = append(t.Changes, c)
	s.checkChunk()
}

// keepMessage adds a logical message to the open transaction, which counts
// towards maxTx and the chunk size as a change does.
func (s *stream) keepMessage(m Message) {
	t := s.txn
	if !t.TooLarge {
		t.size += len(m.Content)
		s.checkSize()
	}
	if t.TooLarge {
		addTable(t, MessagesDropped)
		return
	}
	t.Messages = append(t.Messages, m)
	s.checkChunk()
}

// checkSize makes the open transaction TooLarge once it passes maxTx,
// keeping the tables of what it held (and MessagesDropped for its
// messages).
func (s *stream) checkSize() {
	t := s.txn
	if s.maxTx <= 0 || t.size <= s.maxTx {
		return
	}
	t.TooLarge = true
	for i := range t.Changes {
		addTable(t, t.Changes[i].Table)
	}
	if len(t.Messages) > 0 {
		addTable(t, MessagesDropped)
	}
	t.Changes, t.Messages = nil, nil
}

// addTable lists a table of a too-large transaction once, so that the list
// stays as small as the set of tables however many changes follow.
func addTable(t *Txn, table string) {
	if !slices.Contains(t.Tables, table) {
		t.Tables = append(t.Tables, table)
	}
}

// checkChunk hands the open transaction's changes and messages on as a
// chunk once they are chunkChanges.
func (s *stream) checkChunk() {
	t := s.txn
	if len(t.Changes)+len(t.Messages) >= chunkChanges {
		s.chunk = &Txn{Xid: t.Xid, CommitTime: t.CommitTime, Changes: t.Changes, Messages: t.Messages, Partial: true}
		t.Changes, t.Messages, t.chunked = nil, nil, true
	}
}

// changeSize is the decoded row data of a change (its JSON values and
// column names), what database.max_tx_bytes bounds.
func changeSize(c *Change) int {
	n := 0
	for _, col := range c.New {
		n += len(col.Value) + len(col.Name)
	}
	for _, col := range c.Old {
		n += len(col.Value) + len(col.Name)
	}
	return n
}

func (s *stream) change(id uint32, what string) (*relation, error) {
	if s.txn == nil {
		return nil, fmt.Errorf("%w: %s outside a transaction", ErrMalformed, what)
	}
	rel := s.rels[id]
	if rel == nil {
		return nil, fmt.Errorf("%w: %s on unknown relation %d", ErrMalformed, what, id)
	}
	return rel, nil
}

func (s *stream) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	oids := make([]uint32, len(m.Columns))
	for i, c := range m.Columns {
		oids[i] = c.DataType
	}
	// A Relation message comes at a session's start and after the table
	// changed: read the types again too (a composite type may have).
	s.types.forget()
	types, err := s.types.resolve(ctx, s.lookup, oids)
	if err != nil {
		return fmt.Errorf("relation %s.%s: %w", m.Namespace, m.RelationName, err)
	}
	rel := &relation{name: m.Namespace + "." + m.RelationName, cols: make([]relColumn, len(m.Columns))}
	for i, c := range m.Columns {
		rel.cols[i] = relColumn{name: c.Name, key: c.Flags&1 != 0, oid: c.DataType, typ: types[i]}
	}
	s.rels[m.RelationID] = rel
	return nil
}

// valueError is a value that does not parse as its column's type.
type valueError struct {
	col string
	err error
}

func (e *valueError) Error() string { return "column " + e.col + ": " + e.err.Error() }
func (e *valueError) Unwrap() error { return e.err }

// isValueError reports whether err (not nil) is, or wraps, a valueError.
func isValueError(err error) bool {
	var ve *valueError
	return errors.As(err, &ve)
}

// decode runs f, which decodes one change of rel. A value that does not
// parse as its column's type, which happens when a composite type was
// altered after the stream read it from the catalog (pgoutput sends no
// Relation message for that), makes the stream read rel's types again and
// decode once more; after refreshes that did not help, the next waits for
// twice as many failures or a second. A value that still does not parse (a
// row written before the change) is sent as its text, with a warning,
// rather than stopping the stream.
func (s *stream) decode(ctx context.Context, rel *relation, f func(lenient bool) error) error {
	err := f(false)
	if err == nil || !isValueError(err) {
		return err // the common case costs nothing more
	}
	now := time.Now()
	if rel.skipped < rel.skip && now.Sub(rel.refreshed) < time.Second {
		// The last refreshes did not help: a backlog of rows from before
		// the change. It does not cost a catalog query each.
		rel.skipped++
		return s.lenient(rel, err, f)
	}
	rel.refreshed, rel.skipped = now, 0
	s.types.forget()
	oids := make([]uint32, len(rel.cols))
	for i, c := range rel.cols {
		oids[i] = c.oid
	}
	types, rerr := s.types.resolve(ctx, s.lookup, oids)
	if rerr != nil {
		return fmt.Errorf("%w (reading the types again: %v)", err, rerr)
	}
	for i := range rel.cols {
		rel.cols[i].typ = types[i]
	}
	if err = f(false); err == nil || !isValueError(err) {
		rel.skip = 0
		return err
	}
	rel.skip = max(1, 2*rel.skip)
	return s.lenient(rel, err, f)
}

// lenient decodes with values that do not parse sent as their text, and
// warns (at most once a minute).
func (s *stream) lenient(rel *relation, err error, f func(lenient bool) error) error {
	if now := time.Now(); s.warn != nil && now.Sub(s.warned) >= time.Minute {
		s.warned = now
		s.warn("cdc: a value does not parse as its column's type (was the type altered?); sent as its text", "table", rel.name, "err", err)
	}
	return f(true)
}

// decodeOld decodes an old tuple: all columns ('O', REPLICA IDENTITY FULL)
// or only the key columns ('K', the others are sent as nulls).
func decodeOld(rel *relation, t *pglogrepl.TupleData, keyOnly, lenient bool) ([]Column, error) {
	if t == nil {
		return nil, nil
	}
	if len(t.Columns) != len(rel.cols) {
		return nil, fmt.Errorf("%w: tuple has %d columns, relation %d", ErrMalformed, len(t.Columns), len(rel.cols))
	}
	var buf []byte
	ends := make([]int, 0, len(rel.cols))
	idx := make([]int, 0, len(rel.cols))
	for i, c := range t.Columns {
		if keyOnly && !rel.cols[i].key {
			continue
		}
		var err error
		switch c.DataType {
		case pglogrepl.TupleDataTypeToast:
			// PostgreSQL flattens old tuples, so this should not happen;
			// leave the column out rather than report a null.
			continue
		case pglogrepl.TupleDataTypeNull:
			buf = append(buf, "null"...)
		case pglogrepl.TupleDataTypeText:
			if buf, err = appendColumn(buf, rel.cols[i], c.Data, lenient); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: column %s: unsupported format %q", ErrMalformed, rel.cols[i].name, c.DataType)
		}
		ends = append(ends, len(buf))
		idx = append(idx, i)
	}
	cols := make([]Column, len(idx))
	start := 0
	for j, i := range idx {
		cols[j] = Column{Name: rel.cols[i].name, Value: buf[start:ends[j]:ends[j]]}
		start = ends[j]
	}
	return cols, nil
}

// appendColumn appends the JSON of a column's text value; a value that
// does not parse is a valueError, or with lenient its text as a string.
func appendColumn(buf []byte, col relColumn, text []byte, lenient bool) ([]byte, error) {
	n := len(buf)
	buf, err := appendValue(buf, col.typ, text)
	if err == nil {
		return buf, nil
	}
	if lenient {
		return appendString(buf[:n], text), nil
	}
	return buf, &valueError{col: col.name, err: err}
}

// decodeNew decodes a new tuple. An unchanged TOAST column is filled from
// old (the FULL old row) when it has the column, else left out and named in
// unchanged.
func decodeNew(rel *relation, t *pglogrepl.TupleData, old []Column, lenient bool) (cols []Column, unchanged []string, err error) {
	if t == nil {
		return nil, nil, fmt.Errorf("%w: missing new tuple", ErrMalformed)
	}
	if len(t.Columns) != len(rel.cols) {
		return nil, nil, fmt.Errorf("%w: tuple has %d columns, relation %d", ErrMalformed, len(t.Columns), len(rel.cols))
	}
	var buf []byte
	type span struct{ col, end int }
	spans := make([]span, 0, len(rel.cols))
	fill := make(map[int]Column)
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			buf = append(buf, "null"...)
		case pglogrepl.TupleDataTypeText:
			if buf, err = appendColumn(buf, rel.cols[i], c.Data, lenient); err != nil {
				return nil, nil, err
			}
		case pglogrepl.TupleDataTypeToast:
			if oc, ok := findColumn(old, i, rel.cols[i].name); ok {
				fill[i] = oc
				spans = append(spans, span{i, -1})
			} else {
				unchanged = append(unchanged, rel.cols[i].name)
			}
			continue
		default:
			return nil, nil, fmt.Errorf("%w: column %s: unsupported format %q", ErrMalformed, rel.cols[i].name, c.DataType)
		}
		spans = append(spans, span{i, len(buf)})
	}
	cols = make([]Column, len(spans))
	start := 0
	for j, sp := range spans {
		if sp.end < 0 {
			cols[j] = fill[sp.col]
			continue
		}
		cols[j] = Column{Name: rel.cols[sp.col].name, Value: buf[start:sp.end:sp.end]}
		start = sp.end
	}
	return cols, unchanged, nil
}

// findColumn finds column name in cols, trying index i first.
func findColumn(cols []Column, i int, name string) (Column, bool) {
	if i < len(cols) && cols[i].Name == name {
		return cols[i], true
	}
	for _, c := range cols {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// keyColumns returns the replica-identity columns of a row image.
func keyColumns(rel *relation, row []Column) []Column {
	var out []Column
	for _, col := range row {
		for _, rc := range rel.cols {
			if rc.name == col.Name && rc.key {
				out = append(out, col)
				break
			}
		}
	}
	return out
}
