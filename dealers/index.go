package dealers

import (
	"slices"

	"github.com/snorkyhq/snorky/sync/jsonval"
)

// The filter index. Each distinct filter (by canonical text) is one entry,
// shared by every subscription that uses it. An entry is listed under one
// indexed field and the canonical values that field must equal for the
// filter to be true: for ["==", f, v] that is v, for ["in", f, vs] the
// values vs, for ["or", …] of such conditions on one field their union, and
// for ["and", …] the cheapest of its operands' conditions. A filter with no
// such condition is in the linear list and evaluated for every row.
//
// To match a row, the dealer looks up, for each indexed field, the row's
// value, and evaluates only the entries listed under it: the cost per row
// grows with the number of indexed fields and of candidates, not with the
// number of subscriptions.

// filterEntry is one distinct filter and its subscriptions.
type filterEntry struct {
	// f is the filter, with paths shared through d.paths; nil when the
	// filter is exact: true exactly when its indexed field equals one of
	// its values (an ==, an in, or an or of them on one field), so finding
	// the entry is the match and nothing is evaluated.
	f    *Filter
	key  string // canonical filter text
	subs subSet
	// field is where the entry is listed; nil when it is in d.linear.
	field *fieldIndex
	// at lists the canonical values the entry is listed under and its
	// position in each of their buckets; or, for a linear entry, at[0].slot
	// is its position in d.linear.
	at []entrySlot
}

type entrySlot struct {
	val  string
	slot int32
}

// slotRef is an entry in a bucket: which entry, and which of its values the
// bucket is for (so a swap-remove can update the moved entry's slot).
type slotRef struct {
	e *filterEntry
	i int32
}

// fieldIndex lists entries by the canonical value of one field.
type fieldIndex struct {
	field   string
	path    []string
	buckets keyMap[[]slotRef]
	entries int
}

// sharedPath is a field split at dots, shared by every filter of the dealer
// that names it (less memory, and hot in the cache when routing).
type sharedPath struct {
	path []string
	refs int
}

// newEntry makes the entry of a new distinct filter and indexes it.
func (d *Dealer) newEntry(q Query) *filterEntry {
	e := &filterEntry{key: q.key}
	if !d.index(e, &q.f.root) {
		e.f = &Filter{root: d.copyNode(&q.f.root)}
	}
	return e
}

// dropEntry removes an entry from the index and releases its paths.
func (d *Dealer) dropEntry(e *filterEntry) {
	d.unindex(e)
	if e.f != nil {
		d.releasePaths(&e.f.root)
	}
}

// copyNode copies a filter tree, taking its paths from d.paths.
func (d *Dealer) copyNode(n *node) node {
	c := *n
	if n.path != nil {
		sp := d.paths[n.field]
		if sp == nil {
			sp = &sharedPath{path: n.path}
			d.paths[n.field] = sp
		}
		sp.refs++
		c.path = sp.path
	}
	if n.kids != nil {
		c.kids = make([]node, len(n.kids))
		for i := range n.kids {
			c.kids[i] = d.copyNode(&n.kids[i])
		}
	}
	return c
}

func (d *Dealer) releasePaths(n *node) {
	if n.path != nil {
		if sp := d.paths[n.field]; sp != nil {
			if sp.refs--; sp.refs == 0 {
				delete(d.paths, n.field)
			}
		}
	}
	for i := range n.kids {
		d.releasePaths(&n.kids[i])
	}
}

// condition is a way to index a filter: it can be true only when the field
// equals one of vals.
type condition struct {
	n    *node // the == or in node that names the field
	vals []*jsonval.Value
}

// conditions appends the indexable conditions of n: every one of them is
// necessary for n to be true.
func conditions(n *node, out []condition) []condition {
	switch n.op {
	case opEq:
		return append(out, condition{n: n, vals: []*jsonval.Value{&n.val}})
	case opIn:
		elems := n.val.Elems()
		c := condition{n: n, vals: make([]*jsonval.Value, len(elems))}
		for i := range elems {
			c.vals[i] = &elems[i]
		}
		return append(out, c)
	case opAnd:
		for i := range n.kids {
			out = conditions(&n.kids[i], out)
		}
		return out
	case opOr:
		// An or of ==/in (or such ors) on one field: the union.
		if len(n.kids) == 0 {
			return out
		}
		var u condition
		for i := range n.kids {
			k := &n.kids[i]
			if k.op != opEq && k.op != opIn && k.op != opOr {
				return out
			}
			cs := conditions(k, nil)
			if len(cs) != 1 {
				return out
			}
			if u.n == nil {
				u.n = cs[0].n
			} else if cs[0].n.field != u.n.field {
				return out
			}
			u.vals = append(u.vals, cs[0].vals...)
		}
		return append(out, u)
	}
	return out
}

// index lists a new entry with filter root: under the condition whose
// buckets currently hold the fewest entries (a cheap guess at the most
// selective one), or in the linear list. It reports whether the filter is
// exact (see filterEntry.f).
func (d *Dealer) index(e *filterEntry, root *node) (exact bool) {
	cs := conditions(root, nil)
	best, bestCost := -1, 0
	var bestVals []string
	for i, c := range cs {
		vals := uniqueCanonicals(c.vals)
		cost := 0
		if fi := d.byField[c.n.field]; fi != nil {
			for _, v := range vals {
				b, _ := fi.buckets.get(v)
				cost += len(b)
			}
		}
		if best < 0 || cost < bestCost || (cost == bestCost && len(vals) < len(bestVals)) {
			best, bestCost, bestVals = i, cost, vals
		}
	}
	if best < 0 {
		e.at = []entrySlot{{slot: int32(len(d.linear))}}
		d.linear = append(d.linear, e)
		return false
	}
	n := cs[best].n
	fi := d.byField[n.field]
	if fi == nil {
		fi = &fieldIndex{field: n.field, path: n.path}
		d.byField[n.field] = fi
		d.fields = append(d.fields, fi)
	}
	fi.entries++
	e.field = fi
	e.at = make([]entrySlot, len(bestVals))
	for i, v := range bestVals {
		b, _ := fi.buckets.get(v)
		e.at[i] = entrySlot{val: v, slot: int32(len(b))}
		fi.buckets.set(v, append(b, slotRef{e: e, i: int32(i)}))
	}
	// For these operators conditions returned one condition: the root's.
	return root.op == opEq || root.op == opIn || root.op == opOr
}

// uniqueCanonicals returns the canonical texts of vals, each once.
func uniqueCanonicals(vals []*jsonval.Value) []string {
	out := make([]string, 0, len(vals))
	seen := make(map[string]struct{}, len(vals))
	for _, v := range vals {
		c := v.Canonical()
		if _, dup := seen[c]; dup {
			continue
		}
		seen[c] = struct{}{}
		out = append(out, c)
	}
	return out
}

// unindex removes an entry from the index.
func (d *Dealer) unindex(e *filterEntry) {
	fi := e.field
	if fi == nil {
		p := e.at[0].slot
		last := len(d.linear) - 1
		if int(p) != last {
			m := d.linear[last]
			d.linear[p] = m
			m.at[0].slot = p
		}
		d.linear[last] = nil
		d.linear = d.linear[:last]
		return
	}
	for _, a := range e.at {
		b, _ := fi.buckets.get(a.val)
		p := a.slot
		last := len(b) - 1
		if int(p) != last {
			b[p] = b[last]
			b[p].e.at[b[p].i].slot = p
		}
		b[last] = slotRef{}
		b = b[:last]
		if len(b) == 0 {
			fi.buckets.delete(a.val)
		} else {
			fi.buckets.set(a.val, b)
		}
	}
	fi.entries--
	if fi.entries == 0 {
		delete(d.byField, fi.field)
		if i := slices.Index(d.fields, fi); i >= 0 {
			d.fields = slices.Delete(d.fields, i, i+1)
		}
	}
}

// matchFilters is Match for a filter dealer.
func (d *Dealer) matchFilters(row *Row, yield func(sub uint64)) {
	for _, fi := range d.fields {
		v := row.root.Lookup(fi.path)
		if v == nil {
			continue
		}
		d.scratch = v.AppendCanonical(d.scratch[:0])
		b, _ := fi.buckets.lookup(d.scratch)
		for _, ref := range b {
			if e := ref.e; e.f == nil || e.f.Match(row) {
				e.subs.each(yield)
			}
		}
	}
	for _, e := range d.linear {
		if e.f.Match(row) {
			e.subs.each(yield)
		}
	}
}
