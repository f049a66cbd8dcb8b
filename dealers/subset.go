package dealers

// subSet is a multiset of subscription IDs: each subscription once, with the
// number of items it added. Sets are small in the common case (one
// subscription per key), so a set keeps a plain slice and adds a position map
// only when it grows past smallSet.
type subSet struct {
	list []subCount
	pos  map[uint64]int32 // index into list; nil while the set is small
}

type subCount struct {
	sub uint64
	n   uint32
}

const smallSet = 8

func (s *subSet) len() int { return len(s.list) }

func (s *subSet) find(sub uint64) int {
	if s.pos != nil {
		if i, ok := s.pos[sub]; ok {
			return int(i)
		}
		return -1
	}
	for i := range s.list {
		if s.list[i].sub == sub {
			return i
		}
	}
	return -1
}

// add counts one more item of sub.
func (s *subSet) add(sub uint64) {
	if i := s.find(sub); i >= 0 {
		s.list[i].n++
		return
	}
	s.list = append(s.list, subCount{sub: sub, n: 1})
	switch {
	case s.pos != nil:
		s.pos[sub] = int32(len(s.list) - 1)
	case len(s.list) > smallSet:
		s.pos = make(map[uint64]int32, len(s.list))
		for i, e := range s.list {
			s.pos[e.sub] = int32(i)
		}
	}
}

// remove counts one item of sub less. It reports whether sub had an item.
func (s *subSet) remove(sub uint64) bool {
	i := s.find(sub)
	if i < 0 {
		return false
	}
	if s.list[i].n > 1 {
		s.list[i].n--
		return true
	}
	last := len(s.list) - 1
	if i != last {
		s.list[i] = s.list[last]
		if s.pos != nil {
			s.pos[s.list[i].sub] = int32(i)
		}
	}
	s.list[last] = subCount{}
	s.list = s.list[:last]
	if s.pos != nil {
		delete(s.pos, sub)
		if len(s.list) <= smallSet/2 {
			s.pos = nil
		}
	}
	if len(s.list) == 0 {
		s.list = nil
	} else if cap(s.list) > 32 && len(s.list) < cap(s.list)/4 {
		s.list = append([]subCount(nil), s.list...)
	}
	return true
}

func (s *subSet) each(yield func(sub uint64)) {
	for i := range s.list {
		yield(s.list[i].sub)
	}
}
