package dealers

// subSet is a multiset of subscription IDs: each subscription once, with the
// number of items it added. Sets are small in the common case (one
// subscription per key), so the first element is stored inline (no pointer
// to follow when routing) and a position map is added only when the set
// grows past smallSet.
type subSet struct {
	first subCount   // element 0; n == 0 when the set is empty
	rest  []subCount // elements 1…
	pos   map[uint64]int32
}

type subCount struct {
	sub uint64
	n   uint32 // items; at least 1 for a member
}

const smallSet = 8

func (s *subSet) len() int {
	if s.first.n == 0 {
		return 0
	}
	return 1 + len(s.rest)
}

func (s *subSet) at(i int) *subCount {
	if i == 0 {
		return &s.first
	}
	return &s.rest[i-1]
}

func (s *subSet) find(sub uint64) int {
	if s.pos != nil {
		if i, ok := s.pos[sub]; ok {
			return int(i)
		}
		return -1
	}
	if s.first.n == 0 {
		return -1
	}
	if s.first.sub == sub {
		return 0
	}
	for i := range s.rest {
		if s.rest[i].sub == sub {
			return i + 1
		}
	}
	return -1
}

// add counts one more item of sub.
func (s *subSet) add(sub uint64) {
	if i := s.find(sub); i >= 0 {
		s.at(i).n++
		return
	}
	if s.first.n == 0 {
		s.first = subCount{sub: sub, n: 1}
		return
	}
	s.rest = append(s.rest, subCount{sub: sub, n: 1})
	switch n := s.len(); {
	case s.pos != nil:
		s.pos[sub] = int32(n - 1)
	case n > smallSet:
		s.pos = make(map[uint64]int32, n)
		for i := range n {
			s.pos[s.at(i).sub] = int32(i)
		}
	}
}

// remove counts one item of sub less. It reports whether sub had an item.
func (s *subSet) remove(sub uint64) bool {
	i := s.find(sub)
	if i < 0 {
		return false
	}
	if c := s.at(i); c.n > 1 {
		c.n--
		return true
	}
	last := s.len() - 1
	if i != last {
		*s.at(i) = *s.at(last)
		if s.pos != nil {
			s.pos[s.at(i).sub] = int32(i)
		}
	}
	if last == 0 {
		s.first = subCount{}
	} else {
		s.rest[last-1] = subCount{}
		s.rest = s.rest[:last-1]
	}
	if s.pos != nil {
		delete(s.pos, sub)
		if s.len() <= smallSet/2 {
			s.pos = nil
		}
	}
	if len(s.rest) == 0 {
		s.rest = nil
	} else if cap(s.rest) > 32 && len(s.rest) < cap(s.rest)/4 {
		s.rest = append([]subCount(nil), s.rest...)
	}
	return true
}

func (s *subSet) each(yield func(sub uint64)) {
	if s.first.n == 0 {
		return
	}
	yield(s.first.sub)
	for i := range s.rest {
		yield(s.rest[i].sub)
	}
}
