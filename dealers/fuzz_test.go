package dealers

import (
	"encoding/json"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"testing"
)

var fuzzRows = []string{
	`{}`, `null`, `[1]`, `"a"`, `7`,
	`{"a": 1, "b": "x", "c": {"d": 2.5, "e": [1, {"f": null}]}, "": true}`,
	`{"a": 9007199254740993, "b": 1e400, "c": {"d": "é", "e": {"k": 1}}}`,
	`{"a": -0.0, "b": false, "c": null, "owner": {"team": "red"}, "id": 123456789012345678901234567890}`,
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		`["==", "a", 1]`, `["!=", "a", "x"]`, `["<", "a", 2.5]`, `["<=", "b", "x"]`, `[">", "a", 1e400]`,
		`[">=", "a", -1]`, `["in", "a", [1, "x", null, [1], {"k": 1}]]`, `["in", "a", []]`,
		`["and", [">=", "a", 3], ["<=", "a", 7], ["in", "owner.team", ["red", "blue"]]]`,
		`["or", ["==", "c.d", 2.5], ["==", "c.d", "é"]]`, `["not", ["==", "b", 2]]`, `["and"]`, `["or"]`,
		`["not", ["not", ["and", ["==", "", true]]]]`, `["==", "a.b.c", {"x": [1, 2]}]`,
		`[]`, `{}`, `null`, `["like", "a", 1]`, `["==", 1, 1]`, `["in", "a", 1]`, `["not"]`, `["and", 1]`,
		`["==", "a"`, `["\u0000"]`, "[\"\xff\"]",
	} {
		f.Add(s)
	}
	rows := make([]*Row, len(fuzzRows))
	for i, s := range fuzzRows {
		rows[i] = mustRow(f, s)
	}
	seed := maphash.MakeSeed()
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(json.RawMessage(s))
		d := mustDealer(t, Config{Model: "M", Kind: KindFilter})
		q, cerr := d.Compile(json.RawMessage(s))
		if (err == nil) != (cerr == nil) {
			t.Fatalf("ParseFilter error %v, Compile error %v: want both or neither", err, cerr)
		}
		if err != nil {
			if err.Error() == "" || err.Error() != cerr.Error() {
				t.Fatalf("got reasons %q and %q, want one non-empty reason", err, cerr)
			}
			return
		}
		d.Add(1, q)
		d.Add(2, q)
		// Random rows from the generator, seeded by the input.
		g := gen{rand.New(rand.NewPCG(maphash.String(seed, s), 1))}
		all := slices.Clone(rows)
		for range 8 {
			all = append(all, mustRow(t, g.row()))
		}
		for _, r := range all {
			want := flt.Match(r)
			got := matches(d, r)
			if (len(got) == 2) != want || (len(got) != 0 && len(got) != 2) {
				t.Fatalf("dealer matched %v, filter.Match %v", got, want)
			}
		}
		d.Remove(1, q)
		d.Remove(2, q)
		if d.Len() != 0 || len(d.filters) != 0 || len(d.fields) != 0 || len(d.linear) != 0 || len(d.paths) != 0 {
			t.Fatalf("dealer not empty after removing every item")
		}
	})
}

func FuzzNewRow(f *testing.F) {
	for _, s := range fuzzRows {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := NewRow(json.RawMessage(s))
		if (err == nil) != json.Valid([]byte(s)) {
			t.Fatalf("NewRow error %v, json.Valid %v", err, json.Valid([]byte(s)))
		}
		if err != nil {
			return
		}
		if got, want := r.root.Canonical(), refCanonical(t, []byte(s)); got != want {
			t.Fatalf("canonical: got %s, want %s", got, want)
		}
		if !r.root.Equal(&r.root) {
			t.Fatal("a value is not equal to itself")
		}
	})
}
