package dealers

// MatchQuery reports whether one compiled query of this dealer matches the
// row (the snapshot handoff evaluates a single subscription's items).
func (d *Dealer) MatchQuery(q Query, row *Row) bool {
	d.check(q)
	switch d.cfg.Kind {
	case KindBroadcast:
		return true
	case KindSimple:
		v := row.root.Lookup(d.path)
		if v == nil {
			return false
		}
		d.scratch = v.AppendCanonical(d.scratch[:0])
		return string(d.scratch) == q.key
	case KindFilter:
		return q.f.Match(row)
	}
	return false
}
