package dealers

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

// A reference implementation of spec §3.4, written for clarity rather than
// speed, on values decoded by encoding/json and compared with jsonval. The
// tests check the package against it.

func decodeAny(t testing.TB, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
	return v
}

func refMatch(t testing.TB, filter, row string) bool {
	t.Helper()
	return refEval(t, decodeAny(t, filter).([]any), decodeAny(t, row))
}

func refLookup(row any, field string) (any, bool) {
	v := row
	for _, k := range strings.Split(field, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func refEqual(t testing.TB, a, b any) bool {
	t.Helper()
	ca, err := jsonval.CanonicalValue(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := jsonval.CanonicalValue(b)
	if err != nil {
		t.Fatal(err)
	}
	return ca == cb
}

func refEval(t testing.TB, f []any, row any) bool {
	t.Helper()
	switch f[0].(string) {
	case "and":
		for _, e := range f[1:] {
			if !refEval(t, e.([]any), row) {
				return false
			}
		}
		return true
	case "or":
		for _, e := range f[1:] {
			if refEval(t, e.([]any), row) {
				return true
			}
		}
		return false
	case "not":
		return !refEval(t, f[1].([]any), row)
	}
	v, ok := refLookup(row, f[1].(string))
	if !ok {
		return false
	}
	switch f[0].(string) {
	case "==":
		return refEqual(t, v, f[2])
	case "!=":
		return !refEqual(t, v, f[2])
	case "in":
		for _, e := range f[2].([]any) {
			if refEqual(t, v, e) {
				return true
			}
		}
		return false
	}
	var c int
	switch a := v.(type) {
	case json.Number:
		b, ok := f[2].(json.Number)
		if !ok {
			return false
		}
		var err error
		if c, err = jsonval.CompareNumbers(string(a), string(b)); err != nil {
			t.Fatal(err)
		}
	case string:
		b, ok := f[2].(string)
		if !ok {
			return false
		}
		c = strings.Compare(a, b)
	default:
		return false
	}
	switch f[0].(string) {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	t.Fatalf("unknown operator %v", f[0])
	return false
}

// refCanonical is the canonical text of s decoded by encoding/json and
// walked by jsonval.CanonicalValue, not through the parsed jsonval.Value
// that Row holds; it fails the test on error.
func refCanonical(t testing.TB, s []byte) string {
	t.Helper()
	c, err := jsonval.CanonicalValue(decodeAny(t, string(s)))
	if err != nil {
		t.Fatalf("jsonval.CanonicalValue(%s): %v", s, err)
	}
	return c
}
