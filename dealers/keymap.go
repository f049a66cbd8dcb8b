package dealers

// keyMap maps canonical value texts to V. Short keys (most routing keys:
// integers, short strings) are stored inline in the map's slots as fixed-size
// arrays, so a lookup compares them without following a pointer to the key's
// bytes: at a million keys, every pointer followed is a likely cache miss.
type keyMap[V any] struct {
	small map[smallKey]V
	large map[string]V
}

// smallKey holds a key of up to len(smallKey)-1 bytes: its length, then the
// bytes, then zeros.
type smallKey [24]byte

func toSmallKey[S string | []byte](k S) (smallKey, bool) {
	var s smallKey
	if len(k) >= len(s) {
		return s, false
	}
	s[0] = byte(len(k))
	copy(s[1:], k)
	return s, true
}

func (m *keyMap[V]) len() int { return len(m.small) + len(m.large) }

// lookup returns the value of a key held in a scratch buffer (no allocation).
func (m *keyMap[V]) lookup(k []byte) (V, bool) {
	if s, ok := toSmallKey(k); ok {
		v, ok := m.small[s]
		return v, ok
	}
	v, ok := m.large[string(k)]
	return v, ok
}

func (m *keyMap[V]) get(k string) (V, bool) {
	if s, ok := toSmallKey(k); ok {
		v, ok := m.small[s]
		return v, ok
	}
	v, ok := m.large[k]
	return v, ok
}

func (m *keyMap[V]) set(k string, v V) {
	if s, ok := toSmallKey(k); ok {
		if m.small == nil {
			m.small = make(map[smallKey]V)
		}
		m.small[s] = v
		return
	}
	if m.large == nil {
		m.large = make(map[string]V)
	}
	m.large[k] = v
}

func (m *keyMap[V]) delete(k string) {
	if s, ok := toSmallKey(k); ok {
		delete(m.small, s)
		return
	}
	delete(m.large, k)
}
