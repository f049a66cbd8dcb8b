package dealers

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// gen generates random filters and rows over a small universe of fields and
// values, so that random filters often match random rows.
type gen struct{ r *rand.Rand }

var (
	genFields = []string{"a", "b", "c.d", "c.e", "c", "zz"}
	genValues = []string{`0`, `1`, `1.0`, `2`, `-1`, `2.5`, `1e0`, `9007199254740993`, `9007199254740992`,
		`123456789012345678901`, `"x"`, `"y"`, `"1"`, `""`, `"é"`, `true`, `false`, `null`, `[1]`, `[1.0]`, `[]`,
		`{"k":1}`, `{"k":1.0}`, `{}`}
	genCompare = []string{"==", "!=", "<", "<=", ">", ">=", "in"}
)

func (g gen) value() string { return genValues[g.r.IntN(len(genValues))] }

func (g gen) field() string { return genFields[g.r.IntN(len(genFields))] }

func (g gen) filter(depth int) string {
	if depth <= 0 || g.r.IntN(3) > 0 {
		op := genCompare[g.r.IntN(len(genCompare))]
		if g.r.IntN(3) == 0 {
			op = "==" // favour the indexable operator
		}
		if op == "in" {
			vals := make([]string, g.r.IntN(4))
			for i := range vals {
				vals[i] = g.value()
			}
			return fmt.Sprintf(`["in", %q, [%s]]`, g.field(), strings.Join(vals, ","))
		}
		return fmt.Sprintf(`[%q, %q, %s]`, op, g.field(), g.value())
	}
	switch g.r.IntN(4) {
	case 0:
		return fmt.Sprintf(`["not", %s]`, g.filter(depth-1))
	case 1:
		// An or on one field, which the index can use.
		f := g.field()
		kids := make([]string, g.r.IntN(3)+1)
		for i := range kids {
			kids[i] = fmt.Sprintf(`["==", %q, %s]`, f, g.value())
		}
		return `["or", ` + strings.Join(kids, ",") + `]`
	}
	op := "and"
	if g.r.IntN(3) == 0 {
		op = "or"
	}
	kids := make([]string, g.r.IntN(4))
	for i := range kids {
		kids[i] = g.filter(depth - 1)
	}
	return `["` + op + `"` + joinPrefixed(kids) + `]`
}

func joinPrefixed(s []string) string {
	var b strings.Builder
	for _, e := range s {
		b.WriteString(", ")
		b.WriteString(e)
	}
	return b.String()
}

func (g gen) row() string {
	if g.r.IntN(20) == 0 {
		return g.value() // not an object: every field absent
	}
	var parts []string
	for _, k := range []string{"a", "b"} {
		if g.r.IntN(4) > 0 {
			parts = append(parts, fmt.Sprintf("%q: %s", k, g.value()))
		}
	}
	switch g.r.IntN(4) {
	case 0:
	case 1:
		parts = append(parts, `"c": `+g.value())
	default:
		var inner []string
		for _, k := range []string{"d", "e"} {
			if g.r.IntN(3) > 0 {
				inner = append(inner, fmt.Sprintf("%q: %s", k, g.value()))
			}
		}
		parts = append(parts, `"c": {`+strings.Join(inner, ", ")+`}`)
	}
	g.r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	return "{" + strings.Join(parts, ", ") + "}"
}

type item struct {
	sub uint64
	q   string
}

// checkDealer compares d.Match with brute force over items for every row,
// and d.All and d.Len with the items.
func checkDealer(t *testing.T, d *Dealer, items []item, rows []string, want func(q, row string) bool) (matched int) {
	t.Helper()
	for _, row := range rows {
		r := mustRow(t, row)
		var exp []uint64
		for _, it := range items {
			if want(it.q, row) {
				exp = append(exp, it.sub)
			}
		}
		slices.Sort(exp)
		exp = slices.Compact(exp)
		if got := matches(d, r); !slices.Equal(got, exp) {
			t.Fatalf("row %s: got %v, want %v", row, got, exp)
		}
		matched += len(exp)
	}
	var subs []uint64
	for _, it := range items {
		subs = append(subs, it.sub)
	}
	slices.Sort(subs)
	subs = slices.Compact(subs)
	if got := all(d); !slices.Equal(got, subs) {
		t.Fatalf("All: got %v, want %v", got, subs)
	}
	if got := d.Len(); got != len(items) {
		t.Fatalf("Len: got %d, want %d", got, len(items))
	}
	return matched
}

// churn adds and removes random items, checking the dealer after each round.
func churn(t *testing.T, d *Dealer, g gen, newQuery func() string, want func(q, row string) bool) {
	var items []item
	for round := range 6 {
		// Remove about a third of the items, then add new ones.
		for i := 0; i < len(items); i++ {
			if g.r.IntN(3) == 0 {
				d.Remove(items[i].sub, mustCompile(t, d, items[i].q))
				items = slices.Delete(items, i, i+1)
				i--
			}
		}
		for range 150 {
			// Few subscriptions, so they hold several items; queries repeat.
			it := item{sub: uint64(g.r.IntN(120)), q: newQuery()}
			if g.r.IntN(4) == 0 && len(items) > 0 {
				it.q = items[g.r.IntN(len(items))].q
			}
			d.Add(it.sub, mustCompile(t, d, it.q))
			items = append(items, it)
		}
		rows := make([]string, 150)
		for i := range rows {
			rows[i] = g.row()
		}
		matched := checkDealer(t, d, items, rows, want)
		t.Logf("round %d: %d items, %d matches in %d rows%s", round, len(items), matched, len(rows), d.indexStats())
		if matched == 0 {
			t.Fatalf("round %d: no row matched anything: the test checks nothing", round)
		}
	}
	for _, it := range items {
		d.Remove(it.sub, mustCompile(t, d, it.q))
	}
	checkDealer(t, d, nil, []string{g.row()}, want)
}

func (d *Dealer) indexStats() string {
	if d.cfg.Kind != KindFilter {
		return ""
	}
	indexed := 0
	for _, e := range d.filters {
		if e.field != nil {
			indexed++
		}
	}
	return fmt.Sprintf("; %d distinct filters, %d indexed, %d linear, %d fields", len(d.filters), indexed, len(d.linear), len(d.fields))
}

func TestFilterDealerProperty(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	d := mustDealer(t, Config{Model: "M", Kind: KindFilter})
	filters := map[string]*Filter{}
	want := func(q, row string) bool {
		f := filters[q]
		if f == nil {
			var err error
			if f, err = ParseFilter(json.RawMessage(q)); err != nil {
				t.Fatalf("ParseFilter(%s): %v", q, err)
			}
			filters[q] = f
		}
		return f.Match(mustRow(t, row))
	}
	churn(t, d, g, func() string { return g.filter(3) }, want)
	if len(d.fields) != 0 || len(d.linear) != 0 || len(d.paths) != 0 {
		t.Errorf("empty dealer still has %d fields, %d linear entries", len(d.fields), len(d.linear))
	}
}

func TestSimpleDealerProperty(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 4))}
	d := mustDealer(t, Config{Model: "M", Kind: KindSimple, Key: "c.d"})
	want := func(q, row string) bool {
		return refMatch(t, `["==", "c.d", `+q+`]`, row)
	}
	churn(t, d, g, g.value, want)
}

// TestFilterSemanticsProperty checks Filter.Match against the reference
// evaluator on random filters and rows.
func TestFilterSemanticsProperty(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(5, 6))}
	n := 5000
	if testing.Short() {
		n = 500
	}
	for range n {
		fs, rs := g.filter(3), g.row()
		f, err := ParseFilter(json.RawMessage(fs))
		if err != nil {
			t.Fatalf("ParseFilter(%s): %v", fs, err)
		}
		if got, want := f.Match(mustRow(t, rs)), refMatch(t, fs, rs); got != want {
			t.Fatalf("filter %s, row %s: got %v, want %v", fs, rs, got, want)
		}
	}
}

// TestCanonicalProperty checks canonical texts and equality of random values
// against jsonval.
func TestCanonicalProperty(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(7, 8))}
	for range 3000 {
		a, b := g.row(), g.row()
		ra, rb := mustRow(t, a), mustRow(t, b)
		ca, cb := refCanonical(t, []byte(a)), refCanonical(t, []byte(b))
		if got := ra.root.Canonical(); got != ca {
			t.Fatalf("canonical(%s): got %s, want %s", a, got, ca)
		}
		if got, want := ra.root.Equal(&rb.root), ca == cb; got != want {
			t.Fatalf("equal(%s, %s): got %v, want %v", a, b, got, want)
		}
	}
}
