package jsonval

import (
	"bytes"
	"encoding/json"
	"testing"
)

// refCanonical is the canonical text of s by the other way: decoded by
// encoding/json (UseNumber) and walked by CanonicalValue. It fails the test
// on invalid JSON.
func refCanonical(t testing.TB, s []byte) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
	c, err := CanonicalValue(v)
	if err != nil {
		t.Fatalf("CanonicalValue(%s): %v", s, err)
	}
	return c
}

func mustParse(t testing.TB, s string) Value {
	t.Helper()
	v, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%s): %v", s, err)
	}
	return v
}

var canonicalCases = []string{
	`null`, `true`, `false`, `0`, `-0`, `-0.0`, `0e10`, `1`, `-1`, `10`, `100`, `-120`, `1.0`, `1.50`, `1e2`, `1E+2`,
	`1e-2`, `0.001`, `123456789012345678`, `1234567890123456789`, `-999999999999999999`, `9223372036854775807`,
	`-9223372036854775808`, `9223372036854775808`, `100000000000000000000`, `1e400`, `-1.5e-400`,
	`""`, `"a"`, `"a\"b"`, `"a\\b"`, `"\u0000\u001f\n\t"`, `"\/"`, `"é"`, `"\u00e9"`, `"\ud83d\ude00"`,
	`"\ud800"`, `"\ufffd"`, "\"\xff\xfe\"", "\"a\xc3\"", `"\u2028"`,
	`[]`, `[1, "a", null, [true], {}]`, `{}`, `{"b": 1, "a": 2}`, `{"a": 1, "a": 2}`, `{"a": 1, "b": 2, "a": 3}`,
	`{"é": 1, "z": 2, "Z": 3, "": 4}`, `{"\u0061": 1}`,
	`{"m": 1, "l": 2, "k": 3, "j": 4, "i": 5, "h": 6, "g": 7, "f": 8, "e": 9, "d": 10, "c": 11, "b": 12, "a": 13, "b": 14, "n": 15}`,
	" \n {\"x\" : [ 1 , 2 ] } \t",
}

// TestValueCanonical: a parsed Value's canonical text, and Canonical's,
// equal the text of the decoded value.
func TestValueCanonical(t *testing.T) {
	for _, s := range canonicalCases {
		t.Run(s, func(t *testing.T) {
			v := mustParse(t, s)
			want := refCanonical(t, []byte(s))
			if got := v.Canonical(); got != want {
				t.Errorf("Value.Canonical: got %s, want %s", got, want)
			}
			if got, err := Canonical([]byte(s)); err != nil || got != want {
				t.Errorf("Canonical: got %s, %v; want %s", got, err, want)
			}
			if got := string(v.AppendCanonical([]byte("x"))); got != "x"+want {
				t.Errorf("AppendCanonical: got %s, want x%s", got, want)
			}
		})
	}
}

func TestValueEqual(t *testing.T) {
	for _, a := range canonicalCases {
		for _, b := range canonicalCases {
			va, vb := mustParse(t, a), mustParse(t, b)
			want := refCanonical(t, []byte(a)) == refCanonical(t, []byte(b))
			if got := va.Equal(&vb); got != want {
				t.Errorf("equal(%s, %s): got %v, want %v", a, b, got, want)
			}
		}
	}
}

func TestValueLookup(t *testing.T) {
	r := mustParse(t, `{"a": {"b": {"c": 7}}, "x": 1, "x": 2, "arr": [{"k": 1}]}`)
	tests := []struct {
		path []string
		want string // canonical, "" for absent
	}{
		{[]string{"a", "b", "c"}, "n7e0"},
		{[]string{"a", "b"}, `{"c":n7e0}`},
		{[]string{"x"}, "n2e0"},
		{[]string{"a", "z"}, ""},
		{[]string{"x", "y"}, ""},
		{[]string{"arr", "0"}, ""},
		{[]string{"arr", "k"}, ""},
	}
	for _, tt := range tests {
		got := ""
		if v := r.Lookup(tt.path); v != nil {
			got = v.Canonical()
		}
		if got != tt.want {
			t.Errorf("lookup(%q): got %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	for _, s := range []string{``, ` `, `{`, `[1,]`, `{"a" 1}`, `01`, `1 2`, `"\x"`, `nul`, `{"a":1}}`, "\"\x01\""} {
		if v, err := Parse([]byte(s)); err != ErrInvalidJSON {
			t.Errorf("Parse(%q): got %+v, %v; want ErrInvalidJSON", s, v, err)
		}
		if c, err := Canonical([]byte(s)); err == nil {
			t.Errorf("Canonical(%q): got %s, want an error", s, c)
		}
	}
}

func TestValueAccessors(t *testing.T) {
	v := mustParse(t, `[1, 12345678901234567890, "s", 1.5, null, true, {}]`)
	if v.Kind() != KindArray || len(v.Elems()) != 7 {
		t.Fatalf("got %s of %d elements, want an array of 7", v.Kind(), len(v.Elems()))
	}
	e := v.Elems()
	if n, ok := e[0].SmallInt(); !ok || n != 1 {
		t.Errorf("SmallInt of 1: got %d, %v", n, ok)
	}
	if _, ok := e[1].SmallInt(); ok {
		t.Error("SmallInt of a 20-digit number: got ok")
	}
	if n, ok := e[1].Number(); !ok || n.String() != "1234567890123456789e1" {
		t.Errorf("Number of a 20-digit number: got %s, %v", n, ok)
	}
	if e[2].Kind() != KindString || e[2].Text() != "s" || e[3].Text() != "1.5" {
		t.Errorf("Text: got %q and %q, want s and 1.5", e[2].Text(), e[3].Text())
	}
	if _, ok := e[2].Number(); ok {
		t.Error("Number of a string: got ok")
	}
	if c, ok := e[0].CompareNumber(&e[3], nil); !ok || c != -1 {
		t.Errorf("CompareNumber(1, 1.5): got %d, %v; want -1, true", c, ok)
	}
	if _, ok := e[0].CompareNumber(&e[2], nil); ok {
		t.Error("CompareNumber with a string: got ok")
	}
	if e[2].Elems() != nil || e[6].Get("x") != nil || e[4].Get("x") != nil {
		t.Error("Elems of a string or Get of an absent member: got a value")
	}
	var zero Value
	if zero.Kind() != KindNull || zero.Canonical() != "null" {
		t.Errorf("zero Value: got %s %s, want null", zero.Kind(), zero.Canonical())
	}
	for k, want := range map[Kind]string{KindNull: "null", KindBool: "boolean", KindNumber: "number", KindString: "string", KindArray: "array", KindObject: "object"} {
		if k.String() != want {
			t.Errorf("Kind %d: got %s, want %s", k, k, want)
		}
	}
}

// FuzzValue checks a parsed Value against encoding/json: Parse accepts
// exactly what json.Valid does, and the canonical text is the decoded
// value's.
func FuzzValue(f *testing.F) {
	for _, s := range canonicalCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse([]byte(s))
		if (err == nil) != json.Valid([]byte(s)) {
			t.Fatalf("Parse error %v, json.Valid %v", err, json.Valid([]byte(s)))
		}
		if err != nil {
			return
		}
		if got, want := v.Canonical(), refCanonical(t, []byte(s)); got != want {
			t.Fatalf("canonical: got %s, want %s", got, want)
		}
		if !v.Equal(&v) {
			t.Fatal("a value is not equal to itself")
		}
	})
}
