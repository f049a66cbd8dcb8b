// Package jsonval implements JSON value equality and ordering as the Snorky
// protocol defines them (spec §1.8 and D3): numbers compare by exact numeric
// value (never through float64), strings by code point, booleans are not
// numbers, and objects compare by key set and values.
//
// Equality is exposed through Canonical, which maps equal JSON values to
// equal strings, so that any JSON value can be used as a map key (PubSub
// channels, Chat channels, simple-dealer keys, identities).
package jsonval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Canonical returns a string that is equal for two JSON texts exactly when
// their values are equal under the protocol's JSON equality. It fails on
// invalid JSON.
func Canonical(raw []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	if _, err := dec.Token(); err == nil {
		return "", errors.New("invalid JSON: trailing data after value")
	}
	var b strings.Builder
	if err := appendCanonical(&b, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// CanonicalValue is Canonical for a value decoded with json.Decoder.UseNumber
// (nil, bool, json.Number, string, []any, map[string]any).
func CanonicalValue(v any) (string, error) {
	var b strings.Builder
	if err := appendCanonical(&b, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

func appendCanonical(b *strings.Builder, v any) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case json.Number:
		n, err := ParseNumber(string(x))
		if err != nil {
			return err
		}
		b.WriteByte('n')
		b.WriteString(n.String())
	case string:
		appendString(b, x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := appendCanonical(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			appendString(b, k)
			b.WriteByte(':')
			if err := appendCanonical(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case float64:
		// Values decoded without UseNumber; exact for what float64 holds.
		n, err := ParseNumber(strconv.FormatFloat(x, 'g', -1, 64))
		if err != nil {
			return err
		}
		b.WriteByte('n')
		b.WriteString(n.String())
	default:
		return fmt.Errorf("jsonval: unsupported type %T", v)
	}
	return nil
}

// appendString writes s as a quoted string with a single escaping rule, so
// that equal code point sequences give equal text.
func appendString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// Number is a JSON number in normalised form: value = sign × digits × 10^exp,
// with digits free of leading and trailing zeros. Zero has empty digits.
type Number struct {
	Neg    bool
	Digits string
	Exp    *big.Int // nil means 0
}

// ParseNumber parses JSON number text (the grammar of RFC 8259) exactly.
func ParseNumber(s string) (Number, error) {
	var n Number
	i := 0
	if i < len(s) && s[i] == '-' {
		n.Neg = true
		i++
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart := s[start:i]
	if intPart == "" || (len(intPart) > 1 && intPart[0] == '0') {
		return Number{}, fmt.Errorf("invalid number %q", s)
	}
	frac := ""
	if i < len(s) && s[i] == '.' {
		i++
		fs := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		frac = s[fs:i]
		if frac == "" {
			return Number{}, fmt.Errorf("invalid number %q", s)
		}
	}
	exp := new(big.Int)
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		es := i
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		ds := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if ds == i {
			return Number{}, fmt.Errorf("invalid number %q", s)
		}
		if _, ok := exp.SetString(strings.TrimPrefix(s[es:i], "+"), 10); !ok {
			return Number{}, fmt.Errorf("invalid number %q", s)
		}
	}
	if i != len(s) {
		return Number{}, fmt.Errorf("invalid number %q", s)
	}
	digits := intPart + frac
	exp.Sub(exp, big.NewInt(int64(len(frac))))
	// Strip leading zeros.
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return Number{}, nil // zero, and -0 equals 0
	}
	// Move trailing zeros into the exponent.
	t := strings.TrimRight(digits, "0")
	exp.Add(exp, big.NewInt(int64(len(digits)-len(t))))
	n.Digits = t
	if exp.Sign() != 0 {
		n.Exp = exp
	}
	return n, nil
}

// String returns the normalised text: "0", or [-]digits"e"exp.
func (n Number) String() string {
	if n.Digits == "" {
		return "0"
	}
	e := "0"
	if n.Exp != nil {
		e = n.Exp.String()
	}
	if n.Neg {
		return "-" + n.Digits + "e" + e
	}
	return n.Digits + "e" + e
}

// magnitude returns the decimal position of the leading digit: the value's
// absolute value lies in [10^(m-1), 10^m).
func (n Number) magnitude() *big.Int {
	m := big.NewInt(int64(len(n.Digits)))
	if n.Exp != nil {
		m.Add(m, n.Exp)
	}
	return m
}

// Compare returns -1, 0 or +1 as a is less than, equal to or greater than b.
func (a Number) Compare(b Number) int {
	az, bz := a.Digits == "", b.Digits == ""
	switch {
	case az && bz:
		return 0
	case az:
		if b.Neg {
			return 1
		}
		return -1
	case bz:
		if a.Neg {
			return -1
		}
		return 1
	}
	if a.Neg != b.Neg {
		if a.Neg {
			return -1
		}
		return 1
	}
	c := a.magnitude().Cmp(b.magnitude())
	if c == 0 {
		// Same leading position: compare digit strings, shorter padded with zeros.
		c = strings.Compare(a.Digits, b.Digits)
	}
	if a.Neg {
		return -c
	}
	return c
}

// CompareNumbers compares two JSON number texts exactly. Both must be valid.
func CompareNumbers(a, b string) (int, error) {
	na, err := ParseNumber(a)
	if err != nil {
		return 0, err
	}
	nb, err := ParseNumber(b)
	if err != nil {
		return 0, err
	}
	return na.Compare(nb), nil
}

// Equal reports whether two JSON texts hold equal values. Invalid JSON is
// equal to nothing.
func Equal(a, b []byte) bool {
	ca, err := Canonical(a)
	if err != nil {
		return false
	}
	cb, err := Canonical(b)
	if err != nil {
		return false
	}
	return ca == cb
}
