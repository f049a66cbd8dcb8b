package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// The delivery checker of the e2e tests (style.md §20): what a subscriber
// received, against what was written.

// deliveryProblems compares the deltas ds a subscriber received (across
// its connections, in the order received) with want, the values of field
// of the rows written for it, in commit order. It names, up to max each, a
// gap (a wanted row missing), a duplicate (a row twice), a row out of
// commit order, a row not wanted, and an offset that does not increase
// strictly (spec §3.6). Nil means the delivery was exact.
func deliveryProblems(ds []delta, field string, want []int64) []string {
	const max = 5
	var out []string
	counts := map[string]int{}
	report := func(kind, format string, args ...any) {
		if counts[kind]++; counts[kind] <= max {
			out = append(out, kind+": "+fmt.Sprintf(format, args...))
		}
	}
	pos := make(map[int64]int, len(want))
	for i, v := range want {
		pos[v] = i
	}
	seen := map[int64]bool{}
	next := 0 // the index in want of the row expected next
	prevOffset := ""
	for i := range ds {
		d := &ds[i]
		if d.Offset <= prevOffset {
			report("order", "delta %d: offset %s after %s, want strictly increasing", i, d.Offset, prevOffset)
		}
		prevOffset = d.Offset
		v := num(d.row(), field)
		p, wanted := pos[v]
		switch {
		case !wanted:
			report("unwanted", "delta %d: %s %d was not written for this subscriber", i, field, v)
		case seen[v]:
			report("duplicate", "delta %d: %s %d again", i, field, v)
		case p < next:
			report("order", "delta %d: %s %d after %s %d, want commit order", i, field, v, field, want[next-1])
		case p > next:
			report("gap", "delta %d: %s %d, but %s %v… before it never came", i, field, v, field, want[next:min(p, next+5)])
			next = p + 1
		default:
			next++
		}
		seen[v] = true
	}
	if next < len(want) {
		missing := 0
		for _, v := range want[next:] {
			if !seen[v] {
				missing++
			}
		}
		if missing > 0 {
			report("gap", "%d rows missing at the end, from %s %d", missing, field, want[next])
		}
	}
	for kind, n := range counts {
		if n > max {
			out = append(out, fmt.Sprintf("%s: %d more", kind, n-max))
		}
	}
	return out
}

// checkDelivery reports deliveryProblems with t.Errorf, naming who, and
// returns whether the delivery was exact.
func checkDelivery(t testing.TB, who string, ds []delta, field string, want []int64) bool {
	t.Helper()
	problems := deliveryProblems(ds, field, want)
	if len(problems) > 0 {
		t.Errorf("%s: got %d deltas, want %d rows once each in commit order (no gap, no duplicate):\n\t%s",
			who, len(ds), len(want), strings.Join(problems, "\n\t"))
	}
	return len(problems) == 0
}

// offsetProblems names, up to five, the deltas whose offset does not
// strictly increase: a duplicate or disorder, whatever the rows are.
func offsetProblems(ds []delta) []string {
	var out []string
	prev := ""
	for i := range ds {
		if ds[i].Offset <= prev && len(out) < 5 {
			out = append(out, fmt.Sprintf("delta %d: offset %s after %s", i, ds[i].Offset, prev))
		}
		prev = ds[i].Offset
	}
	return out
}

// checkOffsets reports offsetProblems with t.Errorf, naming who.
func checkOffsets(t testing.TB, who string, ds []delta) {
	t.Helper()
	if p := offsetProblems(ds); len(p) > 0 {
		t.Errorf("%s: offsets not strictly increasing (a duplicate or disorder):\n\t%s", who, strings.Join(p, "\n\t"))
	}
}

// seqRange returns from, from+1, …, to.
func seqRange(from, to int64) []int64 {
	var out []int64
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

// TestDeliveryChecker: the checker finds each kind of fault, and passes an
// exact delivery.
func TestDeliveryChecker(t *testing.T) {
	mk := func(seqs ...int64) []delta {
		out := make([]delta, len(seqs))
		for i, s := range seqs {
			out[i] = delta{Type: "insert", Data: map[string]any{"seq": json.Number(fmt.Sprint(s))}, Offset: fmt.Sprintf("%032X", i+1)}
		}
		return out
	}
	want := seqRange(1, 5)
	for _, tc := range []struct {
		name string
		ds   []delta
		kind string // the problem wanted, "" for none
	}{
		{"exact", mk(1, 2, 3, 4, 5), ""},
		{"gap in the middle", mk(1, 2, 4, 5), "gap"},
		{"gap at the end", mk(1, 2, 3), "gap"},
		{"nothing", nil, "gap"},
		{"duplicate", mk(1, 2, 2, 3, 4, 5), "duplicate"},
		{"out of order", mk(1, 3, 2, 4, 5), "order"},
		{"unwanted row", mk(1, 2, 3, 4, 5, 9), "unwanted"},
	} {
		got := deliveryProblems(tc.ds, "seq", want)
		found := false
		for _, p := range got {
			found = found || strings.HasPrefix(p, tc.kind+":")
		}
		switch {
		case tc.kind == "" && len(got) != 0:
			t.Errorf("%s: got %v, want no problem", tc.name, got)
		case tc.kind != "" && !found:
			t.Errorf("%s: got %v, want a %s", tc.name, got, tc.kind)
		}
	}
	// A redelivered delta (same offset) is caught by the offsets alone.
	ds := mk(1, 2, 3)
	ds = append(ds, ds[2])
	if p := offsetProblems(ds); len(p) != 1 {
		t.Errorf("offsets of a redelivered delta: got %v, want one problem", p)
	}
	if p := offsetProblems(mk(1, 2, 3)); len(p) != 0 {
		t.Errorf("increasing offsets: got %v, want none", p)
	}
}
