// Package jsonval implements JSON value equality and ordering as the Snorky
// protocol defines them (spec §1.8 and D3): numbers compare by exact numeric
// value (never through float64), strings by code point, booleans are not
// numbers, and objects compare by key set and values.
//
// Equality is exposed through Canonical, which maps equal JSON values to
// equal strings, so that any JSON value can be used as a map key (PubSub
// channels, Chat channels, simple-dealer keys, identities). A Value is a
// parsed JSON value, read many times without parsing again (the rows and
// filters of package dealers); Canonical is its canonical text.
package jsonval

import (
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// Canonical returns a string that is equal for two JSON texts exactly when
// their values are equal under the protocol's JSON equality. It fails on
// invalid JSON (ErrInvalidJSON).
func Canonical(raw []byte) (string, error) {
	v, err := Parse(raw)
	if err != nil {
		return "", err
	}
	return v.Canonical(), nil
}

// CanonicalValue is Canonical for a value decoded by encoding/json (nil,
// bool, json.Number, float64, string, []any, map[string]any): the same
// text that Canonical returns for the value's JSON.
func CanonicalValue(v any) (string, error) {
	b, err := appendCanonicalAny(nil, v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func appendCanonicalAny(b []byte, v any) ([]byte, error) {
	var err error
	switch x := v.(type) {
	case nil:
		b = append(b, "null"...)
	case bool:
		b = strconv.AppendBool(b, x)
	case json.Number:
		return appendNumberText(b, string(x))
	case float64:
		// Values decoded without UseNumber; exact for what float64 holds.
		return appendNumberText(b, strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		b = appendString(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendCanonicalAny(b, e); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			if b, err = appendCanonicalAny(b, x[k]); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
	default:
		return nil, fmt.Errorf("jsonval: unsupported type %T", v)
	}
	return b, nil
}

// appendNumberText appends the canonical text of the JSON number text s.
func appendNumberText(b []byte, s string) ([]byte, error) {
	n, err := ParseNumber(s)
	if err != nil {
		return nil, err
	}
	return n.appendText(append(b, 'n')), nil
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
func (n Number) String() string { return string(n.appendText(nil)) }

func (n Number) appendText(b []byte) []byte {
	if n.Digits == "" {
		return append(b, '0')
	}
	if n.Neg {
		b = append(b, '-')
	}
	b = append(b, n.Digits...)
	b = append(b, 'e')
	if n.Exp == nil {
		return append(b, '0')
	}
	return n.Exp.Append(b, 10)
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
