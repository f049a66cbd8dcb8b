package cdc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// ErrMalformed marks a replication message that could not be decoded. The
// reader drops the connection and reconnects.
var ErrMalformed = errors.New("malformed replication message")

// parseMessage parses one pgoutput (protocol version 1) message, the WAL
// data of an XLogData. Unlike pglogrepl.Parse, which indexes past the end of
// truncated input and allocates whatever length a tuple column claims, it
// checks the message's structure first and never panics: malformed input is
// an error wrapping ErrMalformed. The result owns its memory.
func parseMessage(data []byte) (msg pglogrepl.Message, err error) {
	if err := checkMessage(data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: type %q: %v", ErrMalformed, data[0], r)
		}
	}()
	msg, err = pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: type %q: %v", ErrMalformed, data[0], err)
	}
	if m, ok := msg.(*pglogrepl.LogicalDecodingMessage); ok {
		m.Content = bytes.Clone(m.Content) // aliases data
	}
	return msg, nil
}

// msgReader walks a message, checking bounds.
type msgReader struct {
	b   []byte
	err error
}

func (r *msgReader) need(n int, what string) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b) < n {
		r.err = fmt.Errorf("truncated %s: need %d bytes, have %d", what, n, len(r.b))
		return false
	}
	return true
}

func (r *msgReader) skip(n int, what string) {
	if r.need(n, what) {
		r.b = r.b[n:]
	}
}

func (r *msgReader) byte1(what string) byte {
	if !r.need(1, what) {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *msgReader) uint16(what string) int {
	if !r.need(2, what) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return int(v)
}

func (r *msgReader) uint32(what string) uint32 {
	if !r.need(4, what) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *msgReader) cstring(what string) {
	if r.err != nil {
		return
	}
	i := bytes.IndexByte(r.b, 0)
	if i < 0 {
		r.err = fmt.Errorf("unterminated %s", what)
		return
	}
	r.b = r.b[i+1:]
}

func (r *msgReader) tuple(what string) {
	// Names are constant here: building "<what> column …" for every column
	// would cost an allocation per column of every row. The error, if
	// any, says which tuple at the end.
	defer func() {
		if r.err != nil {
			r.err = fmt.Errorf("%s: %w", what, r.err)
		}
	}()
	n := r.uint16("column count")
	for i := 0; i < n && r.err == nil; i++ {
		switch k := r.byte1("column kind"); k {
		case 'n', 'u':
		case 't', 'b':
			l := r.uint32("column length")
			if l > uint32(len(r.b)) {
				r.err = fmt.Errorf("column %d: length %d exceeds the %d bytes left", i, l, len(r.b))
				return
			}
			r.skip(int(l), "column")
		default:
			if r.err == nil {
				r.err = fmt.Errorf("column %d: unknown kind %q", i, k)
			}
		}
	}
}

// checkMessage verifies that data is a structurally complete pgoutput
// message of a type the reader handles (or a type it skips).
func checkMessage(data []byte) error {
	if len(data) == 0 {
		return errors.New("empty message")
	}
	r := &msgReader{b: data[1:]}
	switch data[0] {
	case 'B':
		r.skip(20, "begin")
	case 'C':
		r.skip(25, "commit")
	case 'O':
		r.skip(8, "origin")
		r.cstring("origin name")
	case 'R':
		r.skip(4, "relation id")
		r.cstring("relation namespace")
		r.cstring("relation name")
		r.skip(1, "replica identity")
		n := r.uint16("relation column count")
		for i := 0; i < n && r.err == nil; i++ {
			r.skip(1, "column flags")
			r.cstring("column name")
			r.skip(8, "column type")
		}
	case 'Y':
		r.skip(4, "type id")
		r.cstring("type namespace")
		r.cstring("type name")
	case 'I':
		r.skip(4, "relation id")
		if k := r.byte1("tuple kind"); r.err == nil && k != 'N' {
			return fmt.Errorf("insert: tuple kind %q, want 'N'", k)
		}
		r.tuple("insert tuple")
	case 'U':
		r.skip(4, "relation id")
		k := r.byte1("tuple kind")
		if r.err == nil && (k == 'K' || k == 'O') {
			r.tuple("update old tuple")
			k = r.byte1("tuple kind")
		}
		if r.err == nil && k != 'N' {
			return fmt.Errorf("update: tuple kind %q, want 'N'", k)
		}
		r.tuple("update new tuple")
	case 'D':
		r.skip(4, "relation id")
		if k := r.byte1("tuple kind"); r.err == nil && k != 'K' && k != 'O' {
			return fmt.Errorf("delete: tuple kind %q, want 'K' or 'O'", k)
		}
		r.tuple("delete tuple")
	case 'T':
		n := r.uint32("truncate relation count")
		r.skip(1, "truncate options")
		if r.err == nil && uint64(n)*4 > uint64(len(r.b)) {
			return fmt.Errorf("truncate: %d relations exceed the %d bytes left", n, len(r.b))
		}
		r.skip(int(n)*4, "truncate relations")
	case 'M':
		r.skip(1, "message flags")
		r.skip(8, "message lsn")
		r.cstring("message prefix")
		l := r.uint32("message length")
		if r.err == nil && l > uint32(len(r.b)) {
			return fmt.Errorf("message: length %d exceeds the %d bytes left", l, len(r.b))
		}
	default:
		return fmt.Errorf("unsupported message type %q", data[0])
	}
	return r.err
}
