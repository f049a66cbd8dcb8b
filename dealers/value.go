package dealers

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

// kind is the JSON type of a value.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

var kindNames = [...]string{"null", "boolean", "number", "string", "array", "object"}

func (k kind) String() string { return kindNames[k] }

// value is a parsed JSON value. It is immutable once built, so a Row may be
// read by several goroutines at once.
type value struct {
	// s is the decoded text of a string, or the source text of a number.
	s string
	// n is the value of a number when small is set, and 1 for true.
	n int64
	// c holds the elements of an array or the members of an object.
	c     *composite
	kind  kind
	small bool // number: an integer that fits n exactly
}

// composite is the content of an array (elems) or an object (members,
// sorted by key, each key once: the last occurrence in the text wins, as in
// encoding/json).
type composite struct {
	elems   []value
	members []member
}

type member struct {
	key string
	val value
}

// get returns the member of an object value named key, or nil.
func (v *value) get(key string) *value {
	if v.kind != kindObject {
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

// lookup follows a dotted path (already split) from v. It returns nil when
// the field is absent: a missing key, or a step into a value that is not an
// object.
func (v *value) lookup(path []string) *value {
	for _, k := range path {
		v = v.get(k)
		if v == nil {
			return nil
		}
	}
	return v
}

// Row is the data of one delta (a row image), parsed once so that every
// dealer and filter of a model can evaluate it without parsing again. A Row
// is immutable and safe for concurrent reads.
type Row struct {
	root value
}

// NewRow parses row data. It fails only on invalid JSON. Any JSON value is
// accepted; when it is not an object, every field is absent.
func NewRow(data json.RawMessage) (*Row, error) {
	v, err := parseValue(data)
	if err != nil {
		return nil, err
	}
	return &Row{root: v}, nil
}

// errInvalidJSON is returned for text that is not one valid JSON value.
var errInvalidJSON = errors.New("invalid JSON")

// parseValue validates data and builds its value tree.
func parseValue(data []byte) (value, error) {
	if !json.Valid(data) {
		return value{}, errInvalidJSON
	}
	return parseValid(data), nil
}

// NewRowValid is NewRow for data the caller knows to be valid JSON (a
// json.RawMessage that encoding/json produced, or text the server encoded
// itself): it skips the validation pass. Invalid data gives a wrong row.
func NewRowValid(data json.RawMessage) *Row {
	return &Row{root: parseValid(data)}
}

func parseValid(data []byte) value {
	var members [16]member
	var elems [16]value
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
	elems   []value  // stack of array elements under construction
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

func (p *parser) value() value {
	p.ws()
	switch c := p.data[p.i]; c {
	case '{':
		return p.object()
	case '[':
		return p.array()
	case '"':
		return value{kind: kindString, s: p.str()}
	case 't':
		p.i += 4
		return value{kind: kindBool, n: 1}
	case 'f':
		p.i += 5
		return value{kind: kindBool}
	case 'n':
		p.i += 4
		return value{kind: kindNull}
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
func numberValue(s string) value {
	v := value{kind: kindNumber, s: s}
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

func (p *parser) array() value {
	p.i++ // [
	mark := len(p.elems)
	p.ws()
	if p.data[p.i] == ']' {
		p.i++
		return value{kind: kindArray, c: &composite{}}
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
	return value{kind: kindArray, c: &composite{elems: elems}}
}

func (p *parser) object() value {
	p.i++ // {
	mark := len(p.members)
	p.ws()
	if p.data[p.i] == '}' {
		p.i++
		return value{kind: kindObject, c: &composite{}}
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
	return value{kind: kindObject, c: &composite{members: sortMembers(ms)}}
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

// parseNumber parses a number value exactly. Valid JSON numbers always
// parse; ok is false only for text that is not one.
func (v *value) parseNumber() (jsonval.Number, bool) {
	n, err := jsonval.ParseNumber(v.s)
	return n, err == nil
}

// compareNumbers orders two number values exactly. bn, when not nil, is b
// already parsed. ok is false if either text is not a number (unreachable
// for parsed JSON).
func compareNumbers(a, b *value, bn *jsonval.Number) (c int, ok bool) {
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
	na, ok := a.parseNumber()
	if !ok {
		return 0, false
	}
	if bn == nil {
		nb, ok := b.parseNumber()
		if !ok {
			return 0, false
		}
		bn = &nb
	}
	return na.Compare(*bn), true
}

// equal reports JSON equality (spec §1.8).
func equal(a, b *value) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case kindNull:
		return true
	case kindBool:
		return a.n == b.n
	case kindString:
		return a.s == b.s
	case kindNumber:
		c, ok := compareNumbers(a, b, nil)
		return ok && c == 0
	case kindArray:
		ae, be := a.c.elems, b.c.elems
		if len(ae) != len(be) {
			return false
		}
		for i := range ae {
			if !equal(&ae[i], &be[i]) {
				return false
			}
		}
		return true
	case kindObject:
		am, bm := a.c.members, b.c.members
		if len(am) != len(bm) {
			return false
		}
		for i := range am {
			if am[i].key != bm[i].key || !equal(&am[i].val, &bm[i].val) {
				return false
			}
		}
		return true
	}
	return false
}

// appendCanonical appends the canonical text of v: the same text that
// jsonval.Canonical returns for v's JSON, so equal values give equal keys.
func appendCanonical(dst []byte, v *value) []byte {
	switch v.kind {
	case kindNull:
		return append(dst, "null"...)
	case kindBool:
		if v.n != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case kindString:
		return appendCanonicalString(dst, v.s)
	case kindNumber:
		dst = append(dst, 'n')
		if v.small {
			return appendSmallNumber(dst, v.n)
		}
		n, ok := v.parseNumber()
		if !ok {
			return append(dst, v.s...)
		}
		return append(dst, n.String()...)
	case kindArray:
		dst = append(dst, '[')
		for i := range v.c.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendCanonical(dst, &v.c.elems[i])
		}
		return append(dst, ']')
	case kindObject:
		dst = append(dst, '{')
		for i := range v.c.members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendCanonicalString(dst, v.c.members[i].key)
			dst = append(dst, ':')
			dst = appendCanonical(dst, &v.c.members[i].val)
		}
		return append(dst, '}')
	}
	return dst
}

// appendSmallNumber writes n in jsonval.Number's normal form: "0", or
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

// appendCanonicalString quotes s exactly as jsonval does.
func appendCanonicalString(dst []byte, s string) []byte {
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

// canonical returns the canonical text of v as a string.
func canonical(v *value) string {
	return string(appendCanonical(nil, v))
}
