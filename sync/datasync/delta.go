package datasync

import (
	"errors"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// deltaType is a delta's type (spec §3.6). On the wire it is a JSON
// string: "insert", "update", "delete" or "truncate"; the zero value is
// no type, and is never sent.
type deltaType uint8

const (
	typeInsert deltaType = iota + 1
	typeUpdate
	typeDelete
	typeTruncate
)

var typeNames = [...]string{typeInsert: "insert", typeUpdate: "update", typeDelete: "delete", typeTruncate: "truncate"}

func (t deltaType) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "invalid"
}

// errDeltaType is the error of UnmarshalJSON for a value that names no
// delta type.
var errDeltaType = errors.New("invalid delta type")

// MarshalJSON returns the type as a JSON string; the zero value is an
// error.
func (t deltaType) MarshalJSON() ([]byte, error) {
	if t == 0 || int(t) >= len(typeNames) {
		return nil, errDeltaType
	}
	b := make([]byte, 0, len(typeNames[t])+2)
	b = append(b, '"')
	b = append(b, typeNames[t]...)
	return append(b, '"'), nil
}

// UnmarshalJSON sets t from a JSON string naming a type (escapes allowed,
// as anywhere in JSON). Anything else, null included, is an error and
// leaves t zero.
func (t *deltaType) UnmarshalJSON(raw []byte) error {
	*t = 0
	s, ok := rpc.String(raw)
	if !ok {
		return errDeltaType
	}
	for i, n := range typeNames {
		if n != "" && n == s {
			*t = deltaType(i)
			return nil
		}
	}
	return errDeltaType
}
