package dealers

import (
	"encoding/json"
	"testing"
)

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

func TestCanonicalMatchesJsonval(t *testing.T) {
	for _, s := range canonicalCases {
		t.Run(s, func(t *testing.T) {
			r, err := NewRow(json.RawMessage(s))
			if err != nil {
				t.Fatalf("NewRow: %v", err)
			}
			if got, want := canonical(&r.root), refCanonical(t, []byte(s)); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestEqualMatchesJsonval(t *testing.T) {
	for _, a := range canonicalCases {
		for _, b := range canonicalCases {
			va, vb := mustRow(t, a), mustRow(t, b)
			want := refCanonical(t, []byte(a)) == refCanonical(t, []byte(b))
			if got := equal(&va.root, &vb.root); got != want {
				t.Errorf("equal(%s, %s): got %v, want %v", a, b, got, want)
			}
		}
	}
}

func TestNewRowInvalid(t *testing.T) {
	for _, s := range []string{``, ` `, `{`, `[1,]`, `{"a" 1}`, `01`, `1 2`, `"\x"`, `nul`, `{"a":1}}`, "\"\x01\""} {
		if r, err := NewRow(json.RawMessage(s)); err == nil {
			t.Errorf("NewRow(%q): got %+v, want error", s, r.root)
		}
	}
}

func TestRowLookup(t *testing.T) {
	r := mustRow(t, `{"a": {"b": {"c": 7}}, "x": 1, "x": 2, "arr": [{"k": 1}]}`)
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
		if v := r.root.lookup(tt.path); v != nil {
			got = canonical(v)
		}
		if got != tt.want {
			t.Errorf("lookup(%q): got %q, want %q", tt.path, got, tt.want)
		}
	}
}
