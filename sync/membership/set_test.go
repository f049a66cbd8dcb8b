package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// conn is a fake rpc.Conn that records what is sent to it.
type conn struct {
	id uint64

	mu     sync.Mutex
	frames []string
}

var lastID atomic.Uint64

func newConn() *conn { return &conn{id: lastID.Add(1)} }

func (c *conn) ID() uint64 { return c.id }
func (c *conn) Send(frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames = append(c.frames, string(frame))
}
func (c *conn) SendLatest(_ string, frame []byte) { c.Send(frame) }
func (c *conn) Identity() *rpc.Identity           { return nil }
func (c *conn) SetIdentity(*rpc.Identity) bool    { return false }
func (c *conn) Close(int, string)                 {}

func (c *conn) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.frames
	c.frames = nil
	return f
}

var (
	errAlready  = errors.New("already")
	errNot      = errors.New("not member")
	errTooMany  = errors.New("too many")
	errTooLong  = errors.New("too long")
	testErrors  = Errors{AlreadyMember: errAlready, NotMember: errNot, TooMany: errTooMany, KeyTooLong: errTooLong}
	noLimits    = Limits{}
	errFromHook = errors.New("from hook")
)

func key(t testing.TB, raw string) Key {
	t.Helper()
	k, err := ParseKey(json.RawMessage(raw))
	if err != nil {
		t.Fatalf("ParseKey(%s): %v", raw, err)
	}
	return k
}

// check verifies that rooms and members agree: every room is non-empty
// and lists each of its connections once, every member is in at least one
// room and no more than the limit, and each side names the other.
func check[R, M any](s *Set[R, M]) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.rooms {
		if r.Key != k {
			return fmt.Errorf("room %s: Key %s", k, r.Key)
		}
		if len(r.conns) == 0 || len(r.conns) != len(r.index) {
			return fmt.Errorf("room %s: %d conns, %d indexed", k, len(r.conns), len(r.index))
		}
		for i, c := range r.conns {
			if r.index[c.ID()] != i {
				return fmt.Errorf("room %s: conn %d at %d, indexed at %d", k, c.ID(), i, r.index[c.ID()])
			}
			m := s.members[c.ID()]
			if m == nil || !m.In(k) {
				return fmt.Errorf("room %s: conn %d has no membership of it", k, c.ID())
			}
		}
	}
	for id, m := range s.members {
		if m.Conn.ID() != id {
			return fmt.Errorf("member %d: conn %d", id, m.Conn.ID())
		}
		if len(m.keys) == 0 {
			return fmt.Errorf("member %d: in no room", id)
		}
		if s.limits.PerConn > 0 && len(m.keys) > s.limits.PerConn {
			return fmt.Errorf("member %d: in %d rooms, limit %d", id, len(m.keys), s.limits.PerConn)
		}
		for k := range m.keys {
			if r := s.rooms[k]; r == nil || !r.Has(id) {
				return fmt.Errorf("member %d: room %s does not list it", id, k)
			}
		}
	}
	return nil
}

func mustCheck[R, M any](t *testing.T, s *Set[R, M]) {
	t.Helper()
	if err := check(s); err != nil {
		t.Fatal(err)
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		same       bool
		compact    string
	}{
		{"numbers by value", `1.0`, `1`, true, `1.0`},
		{"objects by members", `{"b": 2, "a": [1, 2]}`, `{"a":[1,2],"b":2}`, true, `{"b":2,"a":[1,2]}`},
		{"string escapes", `"\u0041"`, `"A"`, true, `"\u0041"`},
		{"a number is not a string", `1`, `"1"`, false, `1`},
		{"true is not 1", `true`, `1`, false, `true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka, kb := key(t, tc.a), key(t, tc.b)
			if got := ka.Canonical == kb.Canonical; got != tc.same {
				t.Fatalf("same key for %s and %s: got %v, want %v", tc.a, tc.b, got, tc.same)
			}
			if string(ka.JSON) != tc.compact {
				t.Fatalf("JSON of %s: got %s, want %s", tc.a, ka.JSON, tc.compact)
			}
		})
	}
	for _, bad := range []string{``, `{`, `1 2`, `nope`} {
		if _, err := ParseKey(json.RawMessage(bad)); err == nil {
			t.Errorf("ParseKey(%q): got no error, want one", bad)
		}
	}
	// The key keeps no memory of the caller's buffer.
	buf := []byte(`"abc"`)
	k := key(t, string(buf))
	raw := json.RawMessage(buf)
	k2, _ := ParseKey(raw)
	buf[1] = 'X'
	if string(k.JSON) != `"abc"` || string(k2.JSON) != `"abc"` {
		t.Fatalf("key JSON changed with the caller's buffer: %s", k2.JSON)
	}
}

func TestJoinRefusals(t *testing.T) {
	s := New[int, int](Limits{PerConn: 2, KeyBytes: 8}, testErrors)
	c := newConn()
	hooks := 0
	count := func(*Room[int], *Member[int]) { hooks++ }
	steps := []struct {
		key  string
		want error
	}{
		{`"a"`, nil},
		{`"a"`, errAlready},
		{`"a" `, errAlready}, // the same value
		{`"much too long"`, errTooLong},
		{`"b"`, nil},
		{`"c"`, errTooMany},
		{`"a much too long key"`, errTooLong}, // length is checked first
	}
	for i, st := range steps {
		if err := s.Join(c, key(t, st.key), count); err != st.want {
			t.Fatalf("step %d: Join(%s): got %v, want %v", i, st.key, err, st.want)
		}
		mustCheck(t, s)
	}
	if hooks != 2 {
		t.Fatalf("joined hook: got %d calls, want 2 (refusals call none)", hooks)
	}
	if rooms, conns := s.Len(); rooms != 2 || conns != 1 {
		t.Fatalf("Len: got %d rooms, %d conns; want 2, 1", rooms, conns)
	}
	// Leaving frees a place under the limit.
	if err := s.Leave(c, key(t, `"a"`), nil); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if err := s.Join(c, key(t, `"c"`), nil); err != nil {
		t.Fatalf("Join after Leave: %v", err)
	}
	mustCheck(t, s)
}

func TestNoLimits(t *testing.T) {
	s := New[struct{}, struct{}](noLimits, testErrors)
	c := newConn()
	long := fmt.Sprintf(`"%0500d"`, 0)
	for i := range 1000 {
		if err := s.Join(c, key(t, fmt.Sprint(i)), nil); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	if err := s.Join(c, key(t, long), nil); err != nil {
		t.Fatalf("join of a long key: %v", err)
	}
	if rooms, conns := s.Len(); rooms != 1001 || conns != 1 {
		t.Fatalf("Len: got %d rooms, %d conns; want 1001, 1", rooms, conns)
	}
	mustCheck(t, s)
}

func TestHooksSeeTheMembership(t *testing.T) {
	type room struct{ joins, leaves int }
	s := New[room, []string](noLimits, testErrors)
	a, b := newConn(), newConn()
	k := key(t, `{"doc": 1}`)
	join := func(c *conn) {
		t.Helper()
		err := s.Join(c, k, func(r *Room[room], m *Member[[]string]) {
			if !r.Has(c.ID()) || !m.In(k.Canonical) || m.Conn != rpc.Conn(c) {
				t.Errorf("joined hook: connection %d not yet in room", c.ID())
			}
			r.State.joins++
			m.State = append(m.State, "joined")
			r.Send([]byte(fmt.Sprintf("%d joined", c.ID())))
		})
		if err != nil {
			t.Fatalf("Join: %v", err)
		}
	}
	join(a)
	join(b)
	if got := a.take(); !slices.Equal(got, []string{fmt.Sprintf("%d joined", a.ID()), fmt.Sprintf("%d joined", b.ID())}) {
		t.Fatalf("a got %q", got)
	}
	if got := b.take(); len(got) != 1 {
		t.Fatalf("b got %q, want its own join only", got)
	}

	var leftKey Key
	err := s.Leave(a, key(t, `{ "doc" : 1.0 }`), func(r *Room[room], m *Member[[]string], k Key) {
		if r.Has(a.ID()) || m.In(k.Canonical) {
			t.Error("left hook: connection still in room")
		}
		if r.Len() != 1 || r.Conns()[0] != rpc.Conn(b) {
			t.Errorf("left hook: room holds %v, want b only", r.Conns())
		}
		if len(m.State) != 1 {
			t.Errorf("left hook: member state %q, want the state from its join", m.State)
		}
		r.State.leaves++
		leftKey = k
	})
	if err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if string(leftKey.JSON) != `{"doc":1.0}` {
		t.Fatalf("Leave passes the key as given to Leave: got %s", leftKey.JSON)
	}
	if s.Holds(a) || !s.Holds(b) {
		t.Fatalf("Holds after a left: a %v, b %v; want false, true", s.Holds(a), s.Holds(b))
	}
	ok := s.WithRoom(k.Canonical, func(r *Room[room]) {
		if r.State != (room{joins: 2, leaves: 1}) {
			t.Errorf("room state: got %+v, want 2 joins, 1 leave", r.State)
		}
	})
	if !ok {
		t.Fatal("WithRoom: room gone while b is in it")
	}
	// Disconnect passes the key as the connection joined it, and the last
	// one out takes the room with it: a new room starts from zero state.
	var disconnected []string
	s.Disconnect(b, func(r *Room[room], m *Member[[]string], k Key) {
		if r.Len() != 0 {
			t.Errorf("left hook on disconnect: %d still in room", r.Len())
		}
		disconnected = append(disconnected, string(k.JSON))
	})
	if !slices.Equal(disconnected, []string{`{"doc":1}`}) {
		t.Fatalf("Disconnect hook keys: got %q, want the key as joined", disconnected)
	}
	if rooms, conns := s.Len(); rooms != 0 || conns != 0 {
		t.Fatalf("Len after all left: got %d rooms, %d conns; want 0, 0", rooms, conns)
	}
	if s.WithRoom(k.Canonical, func(*Room[room]) { t.Error("WithRoom called f for a gone room") }) {
		t.Fatal("WithRoom: got true for a gone room")
	}
	join(a)
	s.WithRoom(k.Canonical, func(r *Room[room]) {
		if r.State.joins != 1 {
			t.Errorf("recreated room: got %d joins, want 1", r.State.joins)
		}
	})
	s.WithMember(a, func(m *Member[[]string]) error {
		if len(m.State) != 1 {
			t.Errorf("member state after rejoin: got %q, want one join", m.State)
		}
		return nil
	})
}

func TestLeaveAndInRefuseNonMembers(t *testing.T) {
	s := New[struct{}, struct{}](noLimits, testErrors)
	a, b := newConn(), newConn()
	if err := s.Leave(a, key(t, `"x"`), nil); err != errNot {
		t.Fatalf("Leave before any join: got %v, want %v", err, errNot)
	}
	if err := s.Join(a, key(t, `"x"`), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Leave(a, key(t, `"y"`), nil); err != errNot {
		t.Fatalf("Leave of another room: got %v, want %v", err, errNot)
	}
	if err := s.Leave(b, key(t, `"x"`), nil); err != errNot {
		t.Fatalf("Leave by a connection not in the room: got %v, want %v", err, errNot)
	}
	called := false
	in := func(*Room[struct{}], *Member[struct{}]) error { called = true; return errFromHook }
	if err := s.In(b, key(t, `"x"`).Canonical, in); err != errNot || called {
		t.Fatalf("In for a non-member: got %v (f called %v), want %v and no call", err, called, errNot)
	}
	if err := s.In(a, key(t, `"x"`).Canonical, in); err != errFromHook || !called {
		t.Fatalf("In for a member: got %v (f called %v), want f's error", err, called)
	}
	var got *Member[struct{}]
	s.WithMember(b, func(m *Member[struct{}]) error { got = m; return nil })
	if got != nil {
		t.Fatal("WithMember: got a record for a connection in no room")
	}
	if err := s.WithMember(a, func(m *Member[struct{}]) error {
		if m == nil || m.Len() != 1 {
			return errors.New("no record for a member")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.Disconnect(b, func(*Room[struct{}], *Member[struct{}], Key) { t.Error("hook for a connection in no room") })
	mustCheck(t, s)
}

func TestRoomFanOutAfterRemovals(t *testing.T) {
	s := New[struct{}, struct{}](noLimits, testErrors)
	k := key(t, `"room"`)
	conns := make([]*conn, 6)
	for i := range conns {
		conns[i] = newConn()
		if err := s.Join(conns[i], k, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Remove from the middle, the end and the start.
	for _, i := range []int{2, 5, 0} {
		if err := s.Leave(conns[i], k, nil); err != nil {
			t.Fatal(err)
		}
		mustCheck(t, s)
	}
	s.WithRoom(k.Canonical, func(r *Room[struct{}]) { r.Send([]byte("hi")) })
	for i, c := range conns {
		want := 1
		if i == 0 || i == 2 || i == 5 {
			want = 0
		}
		if got := len(c.take()); got != want {
			t.Errorf("conn %d: got %d frames, want %d", i, got, want)
		}
	}
	if n := s.Count(k.Canonical); n != 3 {
		t.Fatalf("Count: got %d, want 3", n)
	}
}

func TestRemove(t *testing.T) {
	s := New[struct{}, struct{}](Limits{PerConn: 2}, testErrors)
	a, b := newConn(), newConn()
	x, y := key(t, `"x"`), key(t, `"y"`)
	for _, j := range []struct {
		c *conn
		k Key
	}{{a, x}, {b, x}, {b, y}} {
		if err := s.Join(j.c, j.k, nil); err != nil {
			t.Fatal(err)
		}
	}
	got := s.Remove(x.Canonical)
	if len(got) != 2 {
		t.Fatalf("Remove: got %d connections, want 2", len(got))
	}
	mustCheck(t, s)
	if s.Holds(a) || !s.Holds(b) {
		t.Fatalf("Holds after Remove: a %v, b %v; want false, true", s.Holds(a), s.Holds(b))
	}
	if n := s.Count(x.Canonical); n != 0 {
		t.Fatalf("Count of a removed room: got %d", n)
	}
	if s.Remove(x.Canonical) != nil {
		t.Fatal("Remove of a gone room: got connections")
	}
	// The removed membership no longer counts against the limit.
	if err := s.Join(b, key(t, `"z"`), nil); err != nil {
		t.Fatalf("Join after Remove: %v", err)
	}
	s.Disconnect(b, nil)
	if rooms, conns := s.Len(); rooms != 0 || conns != 0 {
		t.Fatalf("Len: got %d rooms, %d conns; want 0, 0", rooms, conns)
	}
}

// TestConcurrentMemberships runs joins, leaves, fan-out, removals and
// disconnects from many goroutines (run it with -race). Hooks keep a count
// per room under the Set's mutex; at every check the counts equal the
// rooms' sizes, and at the end nothing is left.
func TestConcurrentMemberships(t *testing.T) {
	const (
		workers = 8
		rounds  = 400
		keys    = 5
	)
	type room struct{ n int }
	s := New[room, int](Limits{PerConn: 3}, testErrors)
	ks := make([]Key, keys)
	for i := range ks {
		ks[i] = key(t, fmt.Sprintf(`{"k":%d}`, i))
	}
	joined := func(r *Room[room], m *Member[int]) { r.State.n++; m.State++ }
	left := func(r *Room[room], m *Member[int], _ Key) { r.State.n--; m.State-- }

	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newConn()
			in := map[int]bool{}
			for i := range rounds {
				k := (w*7 + i*3) % keys
				switch i % 5 {
				case 0, 1:
					err := s.Join(c, ks[k], joined)
					switch {
					case in[k] && err != errAlready, !in[k] && len(in) >= 3 && err != errTooMany,
						!in[k] && len(in) < 3 && err != nil:
						t.Errorf("worker %d: Join %d (in %v): got %v", w, k, in, err)
						failed.Store(true)
						return
					}
					if err == nil {
						in[k] = true
					}
				case 2:
					err := s.Leave(c, ks[k], left)
					if (err == nil) != in[k] {
						t.Errorf("worker %d: Leave %d (in %v): got %v", w, k, in, err)
						failed.Store(true)
						return
					}
					delete(in, k)
				case 3:
					s.WithRoom(ks[k].Canonical, func(r *Room[room]) { r.Send([]byte("x")) })
				case 4:
					if err := check(s); err != nil {
						t.Error(err)
						failed.Store(true)
						return
					}
					s.WithRoom(ks[k].Canonical, func(r *Room[room]) {
						if r.State.n != r.Len() {
							t.Errorf("room %d: hooks counted %d members, room has %d", k, r.State.n, r.Len())
						}
					})
					s.WithMember(c, func(m *Member[int]) error {
						if got := memberCount(m); got != len(in) {
							t.Errorf("worker %d: member state %d, want %d", w, got, len(in))
						}
						return nil
					})
				}
				if i%97 == 0 {
					s.Disconnect(c, left)
					clear(in)
				}
			}
			s.Disconnect(c, left)
		}()
	}
	// Concurrent joins of one connection never pass its limit.
	shared := newConn()
	var ok atomic.Int32
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _ := ParseKey(json.RawMessage(fmt.Sprintf(`"shared%d"`, i)))
			if s.Join(shared, k, joined) == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		return
	}
	if got := ok.Load(); got != 3 {
		t.Fatalf("concurrent joins of one connection: %d accepted, want the limit 3", got)
	}
	mustCheck(t, s)
	s.Disconnect(shared, left)
	if rooms, conns := s.Len(); rooms != 0 || conns != 0 {
		t.Fatalf("after all disconnected: got %d rooms, %d conns; want 0, 0", rooms, conns)
	}
}

func memberCount(m *Member[int]) int {
	if m == nil {
		return 0
	}
	if m.State != m.Len() {
		return -1
	}
	return m.State
}
