package cdc

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// appendValue appends the JSON rendering (as to_jsonb) of text, a value of
// type t in PostgreSQL's text output with the pinned display settings.
func appendValue(dst []byte, t *pgType, text []byte) ([]byte, error) {
	switch t.kind {
	case kindNumber:
		if isJSONNumber(text) {
			return append(dst, text...), nil
		}
		return appendString(dst, text), nil
	case kindBool:
		switch string(text) {
		case "t":
			return append(dst, "true"...), nil
		case "f":
			return append(dst, "false"...), nil
		}
		return dst, fmt.Errorf("bad boolean %q", truncate(text))
	case kindJSON:
		if len(text) == 0 {
			return dst, errors.New("empty json value")
		}
		return append(dst, text...), nil
	case kindTimestamp, kindTimestamptz:
		return appendTimestamp(dst, text, t.kind == kindTimestamptz), nil
	case kindArray:
		p := arrayParser{src: text, elem: t.elem, delim: t.delim}
		return p.parse(dst)
	case kindVector:
		return appendVector(dst, t.elem, text)
	case kindComposite:
		return appendRecord(dst, t, text)
	}
	return appendString(dst, text), nil
}

// appendTimestamp converts ISO output ("2024-01-01 12:00:00.5+05:30",
// "0044-03-15 12:00:00+00 BC", "infinity") to the XSD form to_jsonb uses
// ("2024-01-01T12:00:00.5+05:30", offsets always with minutes).
func appendTimestamp(dst, text []byte, tz bool) []byte {
	dst = append(dst, '"')
	sp := -1
	if len(text) > 0 && text[0] >= '0' && text[0] <= '9' {
		for i, c := range text {
			if c == ' ' {
				sp = i
				break
			}
		}
	}
	if sp < 0 {
		dst = appendStringBody(dst, text)
		return append(dst, '"')
	}
	dst = append(dst, text[:sp]...)
	dst = append(dst, 'T')
	rest := text[sp+1:]
	if tz {
		// The offset starts at the first sign after the time and ends at a
		// space (" BC") or the end.
		sign := -1
		for i, c := range rest {
			if c == '+' || c == '-' {
				sign = i
				break
			}
		}
		if sign >= 0 {
			end := len(rest)
			for i := sign; i < len(rest); i++ {
				if rest[i] == ' ' {
					end = i
					break
				}
			}
			dst = append(dst, rest[:end]...)
			if end-sign == 3 { // "+hh"
				dst = append(dst, ":00"...)
			}
			rest = rest[end:]
		}
	}
	dst = append(dst, rest...)
	return append(dst, '"')
}

// appendVector renders int2vector/oidvector ("1 2 3") as an array.
func appendVector(dst []byte, elem *pgType, text []byte) ([]byte, error) {
	dst = append(dst, '[')
	first := true
	for i := 0; i < len(text); {
		for i < len(text) && text[i] == ' ' {
			i++
		}
		j := i
		for j < len(text) && text[j] != ' ' {
			j++
		}
		if j > i {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			var err error
			if dst, err = appendValue(dst, elem, text[i:j]); err != nil {
				return dst, err
			}
		}
		i = j
	}
	return append(dst, ']'), nil
}

// arrayParser converts PostgreSQL array text output ("{1,NULL,3}",
// "{{a,\"b c\"},{d,e}}", "[2:3]={1,2}") to a JSON array.
type arrayParser struct {
	src   []byte
	pos   int
	elem  *pgType
	delim byte
	buf   []byte
}

func (p *arrayParser) parse(dst []byte) ([]byte, error) {
	if len(p.src) > 0 && p.src[0] == '[' {
		// Dimension decoration: skip to '='.
		for p.pos < len(p.src) && p.src[p.pos] != '=' {
			p.pos++
		}
		p.pos++
	}
	dst, err := p.array(dst, 0)
	if err != nil {
		return dst, err
	}
	p.space()
	if p.pos != len(p.src) {
		return dst, fmt.Errorf("bad array %q: trailing data", truncate(p.src))
	}
	return dst, nil
}

func (p *arrayParser) space() {
	for p.pos < len(p.src) && isSpace(p.src[p.pos]) {
		p.pos++
	}
}

func (p *arrayParser) array(dst []byte, depth int) ([]byte, error) {
	if depth > 6 {
		return dst, fmt.Errorf("bad array %q: too many dimensions", truncate(p.src))
	}
	p.space()
	if p.pos >= len(p.src) || p.src[p.pos] != '{' {
		return dst, fmt.Errorf("bad array %q: expected '{'", truncate(p.src))
	}
	p.pos++
	dst = append(dst, '[')
	p.space()
	if p.pos < len(p.src) && p.src[p.pos] == '}' {
		p.pos++
		return append(dst, ']'), nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			dst = append(dst, ',')
		}
		p.space()
		if p.pos >= len(p.src) {
			return dst, fmt.Errorf("bad array %q: unterminated", truncate(p.src))
		}
		var err error
		switch p.src[p.pos] {
		case '{':
			dst, err = p.array(dst, depth+1)
		case '"':
			dst, err = p.quoted(dst)
		default:
			dst, err = p.unquoted(dst)
		}
		if err != nil {
			return dst, err
		}
		p.space()
		if p.pos >= len(p.src) {
			return dst, fmt.Errorf("bad array %q: unterminated", truncate(p.src))
		}
		switch p.src[p.pos] {
		case '}':
			p.pos++
			return append(dst, ']'), nil
		case p.delim:
			p.pos++
		default:
			return dst, fmt.Errorf("bad array %q: unexpected %q", truncate(p.src), p.src[p.pos])
		}
	}
}

func (p *arrayParser) quoted(dst []byte) ([]byte, error) {
	p.pos++ // opening quote
	p.buf = p.buf[:0]
	for {
		if p.pos >= len(p.src) {
			return dst, fmt.Errorf("bad array %q: unterminated quoted element", truncate(p.src))
		}
		c := p.src[p.pos]
		p.pos++
		switch c {
		case '"':
			return appendValue(dst, p.elem, p.buf)
		case '\\':
			if p.pos >= len(p.src) {
				return dst, fmt.Errorf("bad array %q: trailing backslash", truncate(p.src))
			}
			c = p.src[p.pos]
			p.pos++
		}
		p.buf = append(p.buf, c)
	}
}

func (p *arrayParser) unquoted(dst []byte) ([]byte, error) {
	p.buf = p.buf[:0]
	escaped := false
	lastNonSpace := 0
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c == p.delim || c == '}' {
			break
		}
		if c == '{' || c == '"' {
			return dst, fmt.Errorf("bad array %q: unexpected %q", truncate(p.src), c)
		}
		p.pos++
		if c == '\\' {
			if p.pos >= len(p.src) {
				return dst, fmt.Errorf("bad array %q: trailing backslash", truncate(p.src))
			}
			c = p.src[p.pos]
			p.pos++
			escaped = true
			p.buf = append(p.buf, c)
			lastNonSpace = len(p.buf)
			continue
		}
		p.buf = append(p.buf, c)
		if !isSpace(c) {
			lastNonSpace = len(p.buf)
		}
	}
	p.buf = p.buf[:lastNonSpace]
	if len(p.buf) == 0 {
		return dst, fmt.Errorf("bad array %q: empty element", truncate(p.src))
	}
	if !escaped && len(p.buf) == 4 && (p.buf[0]|0x20) == 'n' && (p.buf[1]|0x20) == 'u' && (p.buf[2]|0x20) == 'l' && (p.buf[3]|0x20) == 'l' {
		return append(dst, "null"...), nil
	}
	return appendValue(dst, p.elem, p.buf)
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// isJSONNumber reports whether s is a number in JSON's grammar.
func isJSONNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i >= len(s) {
		return false
	}
	if s[i] == '0' {
		i++
	} else if s[i] >= '1' && s[i] <= '9' {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	} else {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	dst = appendStringBody(dst, s)
	return append(dst, '"')
}

func appendStringBody(dst, s []byte) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// appendRecord converts a composite value's text, "(f1,f2,…)" as
// record_out writes it (a NULL field is empty; a field with special
// characters is double-quoted, with '"' and '\' doubled), to the JSON
// object to_jsonb renders.
func appendRecord(dst []byte, t *pgType, text []byte) ([]byte, error) {
	bad := func(why string) error { return fmt.Errorf("bad composite %q: %s", truncate(text), why) }
	if len(text) < 2 || text[0] != '(' || text[len(text)-1] != ')' {
		return dst, bad("expected (…)")
	}
	pos := 1
	dst = append(dst, '{')
	var buf []byte
	for i, f := range t.fields {
		if i > 0 {
			if pos >= len(text) || text[pos] != ',' {
				return dst, bad("too few fields")
			}
			pos++
			dst = append(dst, ',')
		}
		dst = append(dst, f.name...)
		dst = append(dst, ':')
		if pos < len(text) && (text[pos] == ',' || text[pos] == ')') {
			dst = append(dst, "null"...)
			continue
		}
		buf = buf[:0]
		quoted := false
		for pos < len(text) {
			c := text[pos]
			if !quoted && (c == ',' || c == ')') {
				break
			}
			pos++
			switch {
			case c == '"' && quoted && pos < len(text) && text[pos] == '"':
				buf = append(buf, '"') // "" inside quotes
				pos++
			case c == '"':
				quoted = !quoted
			case c == '\\':
				if pos >= len(text) {
					return dst, bad("trailing backslash")
				}
				buf = append(buf, text[pos])
				pos++
			default:
				buf = append(buf, c)
			}
		}
		if quoted {
			return dst, bad("unterminated quotes")
		}
		var err error
		if dst, err = appendValue(dst, f.typ, buf); err != nil {
			return dst, err
		}
	}
	if pos != len(text)-1 {
		return dst, bad("too many fields")
	}
	return append(dst, '}'), nil
}
