package messaging

import (
	"fmt"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

func newReg(t *testing.T, cfg Config) *rpc.Registry {
	t.Helper()
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("messaging", New("messaging", cfg)); err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestLimits: names per connection and name length are refused with errors
// naming their limit; freeing a name makes room again; Holds follows.
func TestLimits(t *testing.T) {
	svc := New("messaging", Config{MaxNamesPerConn: 3, MaxNameBytes: 10})
	reg := rpc.NewRegistry(nil)
	reg.Register("messaging", svc)
	c := rpctest.NewConn()
	if svc.Holds(c) {
		t.Fatal("Holds before any name")
	}
	for i := range 3 {
		if r := rpctest.Call(t, reg, c, "messaging", "registerParticipant", fmt.Sprintf(`{"name":"n%d"}`, i)); r.Err() != "" {
			t.Fatalf("name %d: %s", i, r.Raw)
		}
	}
	if !svc.Holds(c) {
		t.Fatal("Holds: got false with 3 names")
	}
	for _, tc := range []struct{ name, want string }{
		{"n3", string(ErrTooManyNames)},
		{strings.Repeat("x", 11), string(ErrNameTooLong)},
		{strings.Repeat("é", 6), string(ErrNameTooLong)}, // 12 bytes
	} {
		if got := rpctest.Call(t, reg, c, "messaging", "registerParticipant", fmt.Sprintf(`{"name":%q}`, tc.name)).Err(); got != tc.want {
			t.Errorf("register %q: got %q, want %q", tc.name, got, tc.want)
		}
	}
	rpctest.Call(t, reg, c, "messaging", "unregisterParticipant", `{"name":"n0"}`)
	if got := rpctest.Call(t, reg, c, "messaging", "registerParticipant", `{"name":"n3"}`).Err(); got != "" {
		t.Fatalf("after unregistering one: %s", got)
	}
	svc.Disconnected(c)
	if svc.Holds(c) {
		t.Fatal("Holds after disconnect")
	}
}

// TestListParticipantsPages: a reply holds at most MaxListed names, in
// ascending order; "after" pages through the rest.
func TestListParticipantsPages(t *testing.T) {
	reg := newReg(t, Config{MaxListed: 4})
	var want []string
	for i := range 10 {
		c := rpctest.NewConn()
		name := fmt.Sprintf("p%02d", i)
		rpctest.Call(t, reg, c, "messaging", "registerParticipant", fmt.Sprintf(`{"name":%q}`, name))
		want = append(want, name)
	}
	c := rpctest.NewConn()
	var got []string
	params := `{}`
	for range 5 {
		var page []string
		rpctest.JSONDecode(t, rpctest.Call(t, reg, c, "messaging", "listParticipants", params).Data(t), &page)
		if len(page) > 4 {
			t.Fatalf("page of %d names, want at most 4", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		params = fmt.Sprintf(`{"after":%q}`, page[len(page)-1])
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pages: got %v, want %v", got, want)
	}
	for _, p := range []string{`{"after":1}`, `{"page":2}`} {
		if r := rpctest.Call(t, reg, c, "messaging", "listParticipants", p); r.Err() != "Invalid params" {
			t.Errorf("listParticipants %s: got %s, want Invalid params", p, r.Raw)
		}
	}
}

// TestListParticipantsEmpty: no names is an empty list, not null.
func TestListParticipantsEmpty(t *testing.T) {
	reg := newReg(t, Config{MaxListed: 4})
	r := rpctest.Call(t, reg, rpctest.NewConn(), "messaging", "listParticipants", `{}`)
	rpctest.JSONEqual(t, "listParticipants", r.Data(t), `[]`)
}
