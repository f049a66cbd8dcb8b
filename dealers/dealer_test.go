package dealers

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{Model: "Task", Kind: KindBroadcast}, ""},
		{Config{Model: "Task", Kind: KindFilter}, ""},
		{Config{Model: "Task", Kind: KindSimple, Key: "owner_id"}, ""},
		{Config{Model: "Task", Kind: KindSimple, Key: "owner.team"}, ""},
		{Config{Kind: KindBroadcast}, "model: required"},
		{Config{Model: "Task"}, "kind: required (broadcast, simple or filter)"},
		{Config{Model: "Task", Kind: "fancy"}, `kind: unknown kind "fancy" (want broadcast, simple or filter)`},
		{Config{Model: "Task", Kind: KindSimple}, "key: required for a simple dealer (a column or a dotted path)"},
		{Config{Model: "Task", Kind: KindFilter, Key: "id"}, "key: only a simple dealer has a key (kind is filter)"},
	}
	for _, tt := range tests {
		t.Run(string(tt.cfg.Kind)+"/"+tt.want, func(t *testing.T) {
			err := tt.cfg.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewNamesKey(t *testing.T) {
	_, err := New("TasksByOwner", Config{Model: "Task", Kind: KindSimple})
	want := "dealers.TasksByOwner.key: required for a simple dealer (a column or a dotted path)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if _, err := New("", Config{Model: "Task", Kind: KindBroadcast}); err == nil {
		t.Error("got nil error for an empty name, want one")
	}
}

func mustDealer(t testing.TB, cfg Config) *Dealer {
	t.Helper()
	d, err := New("D", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustCompile(t testing.TB, d *Dealer, q string) Query {
	t.Helper()
	c, err := d.Compile(json.RawMessage(q))
	if err != nil {
		t.Fatalf("Compile(%s): %v", q, err)
	}
	return c
}

// matches returns the sorted, deduplicated subscriptions Match yields.
func matches(d *Dealer, r *Row) []uint64 {
	var got []uint64
	d.Match(r, func(sub uint64) { got = append(got, sub) })
	slices.Sort(got)
	return slices.Compact(got)
}

func all(d *Dealer) []uint64 {
	var got []uint64
	d.All(func(sub uint64) { got = append(got, sub) })
	slices.Sort(got)
	return got
}

func TestSimpleDealer(t *testing.T) {
	d := mustDealer(t, Config{Model: "Task", Kind: KindSimple, Key: "owner.id"})
	add := func(sub uint64, q string) { d.Add(sub, mustCompile(t, d, q)) }
	add(1, `7`)
	add(2, `7.0`)
	add(3, `"7"`)
	add(4, `9007199254740993`)
	add(5, `{"b": 1, "a": [null]}`)
	add(6, `true`)
	add(7, `null`)
	add(8, `1`)
	add(1, `8`) // a second item of sub 1
	tests := []struct {
		row  string
		want []uint64
	}{
		{`{"owner": {"id": 7}}`, []uint64{1, 2}},
		{`{"owner": {"id": 70e-1}}`, []uint64{1, 2}},
		{`{"owner": {"id": "7"}}`, []uint64{3}},
		{`{"owner": {"id": 8}}`, []uint64{1}},
		{`{"owner": {"id": 9007199254740993}}`, []uint64{4}},
		{`{"owner": {"id": 9007199254740992}}`, nil},
		{`{"owner": {"id": {"a": [null], "b": 1.0}}}`, []uint64{5}},
		{`{"owner": {"id": true}}`, []uint64{6}},
		{`{"owner": {"id": 1}}`, []uint64{8}},
		{`{"owner": {"id": null}}`, []uint64{7}},
		{`{"owner": {}}`, nil},
		{`{"owner": 7}`, nil},
		{`{"owner.id": 7}`, nil},
		{`[7]`, nil},
	}
	for _, tt := range tests {
		if got := matches(d, mustRow(t, tt.row)); !slices.Equal(got, tt.want) {
			t.Errorf("Match(%s): got %v, want %v", tt.row, got, tt.want)
		}
	}
	if got, want := d.Len(), 9; got != want {
		t.Errorf("Len: got %d, want %d", got, want)
	}
	if got, want := all(d), []uint64{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Errorf("All: got %v, want %v", got, want)
	}
	// Remove with an equal query compiled again.
	d.Remove(1, mustCompile(t, d, `7.00`))
	d.Remove(1, mustCompile(t, d, `7`)) // no such item any more: no-op
	d.Remove(9, mustCompile(t, d, `7`)) // unknown subscription: no-op
	if got, want := matches(d, mustRow(t, `{"owner": {"id": 7}}`)), []uint64{2}; !slices.Equal(got, want) {
		t.Errorf("after Remove: got %v, want %v", got, want)
	}
	if got, want := d.Len(), 8; got != want {
		t.Errorf("Len after Remove: got %d, want %d", got, want)
	}
	if got, want := all(d), []uint64{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Errorf("All after Remove: got %v, want %v (sub 1 still has an item)", got, want)
	}
	d.Remove(1, mustCompile(t, d, `8`))
	if got, want := all(d), []uint64{2, 3, 4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Errorf("All: got %v, want %v", got, want)
	}
	if _, err := d.Compile(json.RawMessage(`{`)); err == nil {
		t.Error("Compile of invalid JSON: got nil error")
	}
}

func TestSimpleDealerDuplicateItems(t *testing.T) {
	d := mustDealer(t, Config{Model: "Task", Kind: KindSimple, Key: "c"})
	q := mustCompile(t, d, `"red"`)
	d.Add(1, q)
	d.Add(1, q)
	row := mustRow(t, `{"c": "red"}`)
	var n int
	d.Match(row, func(uint64) { n++ })
	if n != 1 {
		t.Errorf("two equal items of one subscription: yielded %d times, want 1", n)
	}
	d.Remove(1, q)
	if got := matches(d, row); !slices.Equal(got, []uint64{1}) {
		t.Errorf("after removing one of two items: got %v, want [1]", got)
	}
	d.Remove(1, q)
	if got := matches(d, row); got != nil {
		t.Errorf("after removing both: got %v, want none", got)
	}
	if d.Len() != 0 || d.keys.len() != 0 || all(d) != nil {
		t.Errorf("got Len %d, %d keys, All %v; want an empty dealer", d.Len(), d.keys.len(), all(d))
	}
}

func TestBroadcastDealer(t *testing.T) {
	d := mustDealer(t, Config{Model: "Task", Kind: KindBroadcast})
	d.Add(1, mustCompile(t, d, `null`))
	d.Add(2, Query{})
	d.Add(2, mustCompile(t, d, `"anything"`))
	if _, err := d.Compile(json.RawMessage(`not json`)); err != nil {
		t.Errorf("broadcast Compile: got %v, want the query ignored", err)
	}
	if got, want := matches(d, mustRow(t, `42`)), []uint64{1, 2}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	d.Remove(2, Query{})
	d.Remove(3, Query{})
	if got, want := d.Len(), 2; got != want {
		t.Errorf("Len: got %d, want %d", got, want)
	}
	d.Remove(2, Query{})
	if got, want := all(d), []uint64{1}; !slices.Equal(got, want) {
		t.Errorf("All: got %v, want %v", got, want)
	}
}

func TestFilterDealer(t *testing.T) {
	d := mustDealer(t, Config{Model: "Task", Kind: KindFilter})
	add := func(sub uint64, q string) { d.Add(sub, mustCompile(t, d, q)) }
	add(1, `["==", "owner", 7]`)
	add(2, `["and", ["==", "owner", 7], [">", "prio", 2]]`)
	add(3, `["in", "owner", [7, 8]]`)
	add(4, `[">", "prio", 2]`) // linear
	add(5, `["or", ["==", "owner", 8], ["in", "owner", [9]]]`)
	add(6, `["and", ["==", "team", "red"], ["==", "owner", 7]]`)
	add(7, `["not", ["==", "owner", 7]]`) // linear
	add(8, `["==", "owner", 7.0]`)        // the same filter as sub 1's
	add(9, `["in", "owner", []]`)         // never true
	add(10, `["or"]`)
	tests := []struct {
		row  string
		want []uint64
	}{
		{`{"owner": 7, "prio": 1}`, []uint64{1, 3, 8}},
		{`{"owner": 7, "prio": 3}`, []uint64{1, 2, 3, 4, 8}},
		{`{"owner": 7, "team": "red"}`, []uint64{1, 3, 6, 8}},
		{`{"owner": 8}`, []uint64{3, 5, 7}},
		{`{"owner": 9, "prio": 2.5}`, []uint64{4, 5, 7}},
		{`{"prio": 5}`, []uint64{4, 7}},
		{`{"owner": "7"}`, []uint64{7}},
	}
	for _, tt := range tests {
		if got := matches(d, mustRow(t, tt.row)); !slices.Equal(got, tt.want) {
			t.Errorf("Match(%s): got %v, want %v", tt.row, got, tt.want)
		}
	}
	if got, want := d.Len(), 10; got != want {
		t.Errorf("Len: got %d, want %d", got, want)
	}
	if got, want := len(d.filters), 9; got != want {
		t.Errorf("distinct filters: got %d, want %d", got, want)
	}
	// Sub 6's filter is listed under one of its conditions only.
	if e := d.filters[mustCompile(t, d, `["and", ["==", "team", "red"], ["==", "owner", 7]]`).key]; e.field == nil || len(e.at) != 1 || e.f == nil {
		t.Errorf("and-filter: got field %v at %v, filter %v; want one indexed value and the filter", e.field, e.at, e.f)
	}
	// Pure equality filters are found by the index and never evaluated.
	for _, q := range []string{`["==", "owner", 7]`, `["in", "owner", [7, 8]]`, `["or", ["==", "owner", 8], ["in", "owner", [9]]]`} {
		if e := d.filters[mustCompile(t, d, q).key]; e.field == nil || e.f != nil {
			t.Errorf("%s: got field %v, filter %v; want indexed and exact", q, e.field, e.f)
		}
	}
	if _, err := d.Compile(json.RawMessage(`["like", "a", 1]`)); err == nil || err.Error() != `unknown operator "like"` {
		t.Errorf("Compile: got %v, want unknown operator", err)
	}
	for sub, q := range map[uint64]string{1: `["==", "owner", 7]`, 2: `["and", ["==", "owner", 7], [">", "prio", 2]]`,
		3: `["in", "owner", [7, 8]]`, 4: `[">", "prio", 2]`, 5: `["or", ["==", "owner", 8], ["in", "owner", [9]]]`,
		6: `["and", ["==", "team", "red"], ["==", "owner", 7]]`, 7: `["not", ["==", "owner", 7]]`,
		8: `["==", "owner", 7]`, 9: `["in", "owner", []]`, 10: `["or"]`} {
		d.Remove(sub, mustCompile(t, d, q))
	}
	if d.Len() != 0 || len(d.filters) != 0 || len(d.fields) != 0 || len(d.byField) != 0 || len(d.linear) != 0 || len(d.paths) != 0 || all(d) != nil {
		t.Errorf("after removing everything: Len %d, %d filters, %d fields, %d linear; want an empty dealer",
			d.Len(), len(d.filters), len(d.fields), len(d.linear))
	}
}

func TestQueryKindMismatchPanics(t *testing.T) {
	s := mustDealer(t, Config{Model: "Task", Kind: KindSimple, Key: "k"})
	f := mustDealer(t, Config{Model: "Task", Kind: KindFilter})
	q := mustCompile(t, s, `1`)
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(string), "simple query used on filter dealer") {
			t.Errorf("got panic %v, want a kind mismatch", r)
		}
	}()
	f.Add(1, q)
}

func TestMatchQuery(t *testing.T) {
	tests := []struct {
		cfg   Config
		query string
		row   string
		want  bool
	}{
		{Config{Model: "M", Kind: KindBroadcast}, `null`, `{}`, true},
		{Config{Model: "M", Kind: KindSimple, Key: "a.b"}, `1.0`, `{"a": {"b": 1}}`, true},
		{Config{Model: "M", Kind: KindSimple, Key: "a.b"}, `1`, `{"a": {"b": "1"}}`, false},
		{Config{Model: "M", Kind: KindSimple, Key: "a.b"}, `1`, `{"a": 1}`, false},
		{Config{Model: "M", Kind: KindFilter}, `["and", ["==", "a", 1], [">", "b", 2]]`, `{"a": 1, "b": 3}`, true},
		{Config{Model: "M", Kind: KindFilter}, `["and", ["==", "a", 1], [">", "b", 2]]`, `{"a": 1, "b": 2}`, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.cfg.Kind)+" "+tt.query+" "+tt.row, func(t *testing.T) {
			d := mustDealer(t, tt.cfg)
			q := mustCompile(t, d, tt.query)
			r := mustRow(t, tt.row)
			if got := d.MatchQuery(q, r); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			d.Add(1, q)
			if got := matches(d, r) != nil; got != tt.want {
				t.Errorf("Match: got %v, want %v", got, tt.want)
			}
		})
	}
}
