package jsonval

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kind is the JSON type of a value.
type Kind uint8

// The JSON types.
const (
	KindNull Kind = iota
	KindBool
	KindNumber
	KindString
	KindArray
	KindObject
)

var kindNames = [...]string{"null", "boolean", "number", "string", "array", "object"}

// String returns the type's name as an error message says it ("boolean").
func (k Kind) String() string { return kindNames[k] }

// Value is a parsed JSON value, built once and then read many times (a
// row's fields by every dealer and filter of its model). It is immutable
// once built, so several goroutines may read it at once. Its zero value is
// null.
type Value struct {
	// s is the decoded text of a string, or the source text of a number.
	s string
	// n is the value of a number when small is set, and 1 for true.
	n int64
	// c holds the elements of an array or the members of an object.
	c     *composite
	kind  Kind
	small bool // number: an integer that fits n exactly
}

// composite is the content of an array (elems) or an object (members,
// sorted by key, each key once: the last occurrence in the text wins, as in
// encoding/json).
type composite struct {
	elems   []Value
	members []member
}

type member struct {
	key string
	val Value
}

// Get returns the member of an object value named key, or nil.
func (v *Value) Get(key string) *Value {
	if v.kind != KindObject {
		return nil
	}
	ms := v.c.members
	if len(ms) <= 8 {
		for i := range ms {
			if ms[i].key == key {
				return &ms[i].val
			}
		}
		return nil
	}
	lo, hi := 0, len(ms)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ms[m].key < key {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(ms) && ms[lo].key == key {
		return &ms[lo].val
	}
	return nil
}

// Lookup follows a dotted path (already split) from v. It returns nil when
// the field is absent: a missing key, or a step into a value that is not an
// object.
func (v *Value) Lookup(path []string) *Value {
	for _, k := range path {
		v = v.Get(k)
		if v == nil {
			return nil
		}
	}
	return v
}

// ErrInvalidJSON is returned for text that is not one valid JSON value.
var ErrInvalidJSON = errors.New("invalid JSON")

// Parse validates data and builds its value tree. It fails only on text
// that is not one JSON value (ErrInvalidJSON).
func Parse(data []byte) (Value, error) {
	if !json.Valid(data) {
		return Value{}, ErrInvalidJSON
	}
	return ParseValid(data), nil
}

// ParseValid is Parse for data the caller knows to be valid JSON (a
// json.RawMessage that encoding/json produced, or text the server encoded
// itself): it skips the validation pass. Invalid data gives a wrong value.
func ParseValid(data []byte) Value {
	var members [16]member
	var elems [16]Value
	p := parser{data: data, text: string(data), members: members[:0], elems: elems[:0]}
	return p.value()
}

// parser builds a value tree from text that json.Valid accepted, so it does
// not check the grammar again. Strings without escapes share the memory of
// one copy of the whole text.
type parser struct {
	data    []byte
	text    string
	i       int
	elems   []Value  // stack of array elements under construction
	members []member // stack of object members under construction
}

func (p *parser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value() Value {
	p.ws()
	switch c := p.data[p.i]; c {
	case '{':
		return p.object()
	case '[':
		return p.array()
	case '"':
		return Value{kind: KindString, s: p.str()}
	case 't':
		p.i += 4
		return Value{kind: KindBool, n: 1}
	case 'f':
		p.i += 5
		return Value{kind: KindBool}
	case 'n':
		p.i += 4
		return Value{kind: KindNull}
	default:
		start := p.i
		for p.i < len(p.data) {
			c := p.data[p.i]
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				p.i++
				continue
			}
			break
		}
		return numberValue(p.text[start:p.i])
	}
}

// numberValue builds a number value from valid JSON number text.
func numberValue(s string) Value {
	v := Value{kind: KindNumber, s: s}
	v.n, v.small = smallInt(s)
	return v
}

// smallInt parses integer text of at most 18 digits (no fraction, no
// exponent), which always fits an int64.
func smallInt(s string) (int64, bool) {
	neg := false
	d := s
	if len(d) > 0 && d[0] == '-' {
		neg, d = true, d[1:]
	}
	if len(d) == 0 || len(d) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// str reads a string token starting at the opening quote.
func (p *parser) str() string {
	start := p.i + 1
	j := start
	esc, high := false, false
	for {
		c := p.data[j]
		if c == '"' {
			break
		}
		if c == '\\' {
			esc = true
			j += 2
			continue
		}
		if c >= utf8.RuneSelf {
			high = true
		}
		j++
	}
	p.i = j + 1
	if !esc && (!high || utf8.Valid(p.data[start:j])) {
		return p.text[start:j]
	}
	// Escapes or invalid UTF-8: let encoding/json decode it, so the result
	// is exactly what every other part of the server sees (invalid bytes
	// become U+FFFD).
	var s string
	if err := json.Unmarshal(p.data[start-1:j+1], &s); err != nil {
		// Unreachable for text json.Valid accepted.
		return p.text[start:j]
	}
	return s
}

func (p *parser) array() Value {
	p.i++ // [
	mark := len(p.elems)
	p.ws()
	if p.data[p.i] == ']' {
		p.i++
		return Value{kind: KindArray, c: &composite{}}
	}
	for {
		v := p.value()
		p.elems = append(p.elems, v)
		p.ws()
		c := p.data[p.i]
		p.i++
		if c == ']' {
			break
		}
	}
	elems := slices.Clone(p.elems[mark:])
	clear(p.elems[mark:])
	p.elems = p.elems[:mark]
	return Value{kind: KindArray, c: &composite{elems: elems}}
}

func (p *parser) object() Value {
	p.i++ // {
	mark := len(p.members)
	p.ws()
	if p.data[p.i] == '}' {
		p.i++
		return Value{kind: KindObject, c: &composite{}}
	}
	for {
		p.ws()
		k := p.str()
		p.ws()
		p.i++ // :
		v := p.value()
		p.members = append(p.members, member{key: k, val: v})
		p.ws()
		c := p.data[p.i]
		p.i++
		if c == '}' {
			break
		}
	}
	ms := slices.Clone(p.members[mark:])
	clear(p.members[mark:])
	p.members = p.members[:mark]
	return Value{kind: KindObject, c: &composite{members: sortMembers(ms)}}
}

// sortMembers sorts members by key (byte order, stable) and keeps only the
// last member of each key.
func sortMembers(ms []member) []member {
	if len(ms) <= 12 {
		// Insertion sort: stable and allocation-free for typical rows.
		for i := 1; i < len(ms); i++ {
			for j := i; j > 0 && ms[j].key < ms[j-1].key; j-- {
				ms[j], ms[j-1] = ms[j-1], ms[j]
			}
		}
	} else {
		slices.SortStableFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	}
	// Drop duplicates, keeping the last of each run.
	out := ms[:0]
	for i := range ms {
		if i+1 < len(ms) && ms[i+1].key == ms[i].key {
			continue
		}
		out = append(out, ms[i])
	}
	clear(ms[len(out):])
	return out
}

// Kind returns the JSON type of v.
func (v *Value) Kind() Kind { return v.kind }

// Text returns the decoded text of a string, the source text of a number,
// and "" for the other kinds.
func (v *Value) Text() string { return v.s }

// Elems returns the elements of an array, nil for the other kinds. The
// slice belongs to v: do not modify it.
func (v *Value) Elems() []Value {
	if v.kind != KindArray {
		return nil
	}
	return v.c.elems
}

// SmallInt returns the value of a number that is an integer of at most 18
// digits, written without fraction or exponent; ok is false otherwise.
func (v *Value) SmallInt() (n int64, ok bool) {
	if v.kind != KindNumber || !v.small {
		return 0, false
	}
	return v.n, true
}

// Number parses a number value exactly. Valid JSON numbers always parse;
// ok is false for a value that is not a number.
func (v *Value) Number() (Number, bool) {
	if v.kind != KindNumber {
		return Number{}, false
	}
	n, err := ParseNumber(v.s)
	return n, err == nil
}

// CompareNumber orders the numbers a and b exactly. bn, when not nil, is b
// already parsed (Number). ok is false if either is not a number.
func (a *Value) CompareNumber(b *Value, bn *Number) (c int, ok bool) {
	if a.kind != KindNumber || b.kind != KindNumber {
		return 0, false
	}
	if a.small && b.small {
		switch {
		case a.n < b.n:
			return -1, true
		case a.n > b.n:
			return 1, true
		}
		return 0, true
	}
	if a.s == b.s {
		return 0, true
	}
	na, ok := a.Number()
	if !ok {
		return 0, false
	}
	if bn == nil {
		nb, ok := b.Number()
		if !ok {
			return 0, false
		}
		bn = &nb
	}
	return na.Compare(*bn), true
}

// Equal reports whether a and b are equal JSON values (spec §1.8): what
// Canonical maps to the same text.
func (a *Value) Equal(b *Value) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case KindNull:
		return true
	case KindBool:
		return a.n == b.n
	case KindString:
		return a.s == b.s
	case KindNumber:
		c, ok := a.CompareNumber(b, nil)
		return ok && c == 0
	case KindArray:
		ae, be := a.c.elems, b.c.elems
		if len(ae) != len(be) {
			return false
		}
		for i := range ae {
			if !ae[i].Equal(&be[i]) {
				return false
			}
		}
		return true
	case KindObject:
		am, bm := a.c.members, b.c.members
		if len(am) != len(bm) {
			return false
		}
		for i := range am {
			if am[i].key != bm[i].key || !am[i].val.Equal(&bm[i].val) {
				return false
			}
		}
		return true
	}
	return false
}

// AppendCanonical appends the canonical text of v (see Canonical) to dst:
// equal values give equal texts.
func (v *Value) AppendCanonical(dst []byte) []byte {
	switch v.kind {
	case KindNull:
		return append(dst, "null"...)
	case KindBool:
		if v.n != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case KindString:
		return appendString(dst, v.s)
	case KindNumber:
		dst = append(dst, 'n')
		if v.small {
			return appendSmallNumber(dst, v.n)
		}
		n, ok := v.Number()
		if !ok {
			return append(dst, v.s...)
		}
		return n.appendText(dst)
	case KindArray:
		dst = append(dst, '[')
		for i := range v.c.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = v.c.elems[i].AppendCanonical(dst)
		}
		return append(dst, ']')
	case KindObject:
		dst = append(dst, '{')
		for i := range v.c.members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, v.c.members[i].key)
			dst = append(dst, ':')
			dst = v.c.members[i].val.AppendCanonical(dst)
		}
		return append(dst, '}')
	}
	return dst
}

// appendSmallNumber writes n in Number's normal form: "0", or
// [-]digits"e"exp with the trailing zeros of digits moved into exp.
func appendSmallNumber(dst []byte, n int64) []byte {
	if n == 0 {
		return append(dst, '0')
	}
	u := uint64(n)
	if n < 0 {
		dst = append(dst, '-')
		u = -u
	}
	exp := 0
	for u%10 == 0 {
		u /= 10
		exp++
	}
	dst = strconv.AppendUint(dst, u, 10)
	dst = append(dst, 'e')
	return strconv.AppendInt(dst, int64(exp), 10)
}

// appendString quotes s with a single escaping rule, so that equal code
// point sequences give equal text.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r < 0x20:
			const hex = "0123456789abcdef"
			dst = append(dst, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		case r == utf8.RuneError:
			dst = append(dst, `\ufffd`...)
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return append(dst, '"')
}

// Canonical returns the canonical text of v as a string.
func (v *Value) Canonical() string {
	return string(v.AppendCanonical(nil))
}
