package rpc

import (
	"bytes"
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// Params decodes a request's params object and checks its keys: every name
// in required must be present and no key outside required and optional may
// be. Otherwise it returns ErrInvalidParams (spec §1.4).
func Params(raw json.RawMessage, required, optional []string) (map[string]json.RawMessage, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(raw, &p); err != nil || p == nil {
		return nil, ErrInvalidParams
	}
	for _, k := range required {
		if _, ok := p[k]; !ok {
			return nil, ErrInvalidParams
		}
	}
	for k := range p {
		if !slices.Contains(required, k) && !slices.Contains(optional, k) {
			return nil, ErrInvalidParams
		}
	}
	return p, nil
}

// String decodes a JSON string strictly: null and every other type fail
// (encoding/json would accept null as "").
func String(raw json.RawMessage) (string, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	// Fast path: no escapes, nothing to decode.
	if n := len(raw); n >= 2 && raw[n-1] == '"' && bytes.IndexByte(raw[1:n-1], '\\') < 0 && bytes.IndexByte(raw[1:n-1], '"') < 0 && utf8.Valid(raw[1:n-1]) {
		for _, c := range raw[1 : n-1] {
			if c < 0x20 {
				return "", false
			}
		}
		return string(raw[1 : n-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
