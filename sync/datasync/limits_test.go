package datasync

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestLimits: a connection may hold at most MaxSubscriptions; a token
// longer than MaxTokenBytes is refused by acquire and never issued by
// authorizeSubscription; Holds follows the subscriptions.
func TestLimits(t *testing.T) {
	e, _ := newTestEngine(t)
	front := e.Frontend()
	reg := rpc.NewRegistry(nil)
	reg.Register("datasync", front.Limited(Limits{MaxSubscriptions: 3, MaxTokenBytes: 400}))
	reg.Register("datasync_backend", e.Backend().Limited(400))
	be := rpctest.NewConn()
	authorize := func(items string) (string, string) {
		r := rpctest.Call(t, reg, be, "datasync_backend", "authorizeSubscription", `{"items":`+items+`}`)
		if r.Err() != "" {
			return "", r.Err()
		}
		var tok string
		rpctest.JSONDecode(t, r.Data(t), &tok)
		return tok, ""
	}
	c := rpctest.NewConn()
	if front.Holds(c) {
		t.Fatal("Holds before acquiring")
	}
	for i := range 4 {
		tok, err := authorize(`[{"dealer":"ByOwner","query":7}]`)
		if err != "" {
			t.Fatal(err)
		}
		q, _ := json.Marshal(tok)
		got := rpctest.Call(t, reg, c, "datasync", "acquireSubscription", `{"token":`+string(q)+`}`).Err()
		if want := map[bool]string{true: "", false: string(ErrTooManySubscriptions)}[i < 3]; got != want {
			t.Fatalf("acquire %d: got %q, want %q", i, got, want)
		}
	}
	if !front.Holds(c) {
		t.Fatal("Holds: got false with 3 subscriptions")
	}
	long := `[{"dealer":"ByOwner","query":"` + strings.Repeat("x", 400) + `"}]`
	if _, err := authorize(long); err != string(ErrTokenTooLarge) {
		t.Fatalf("authorize a long query: got %q, want %q", err, ErrTokenTooLarge)
	}
	if got := rpctest.Call(t, reg, c, "datasync", "acquireSubscription", `{"token":"`+strings.Repeat("A", 500)+`"}`).Err(); got != string(ErrTokenTooLarge) {
		t.Fatalf("acquire a 500-byte token: got %q, want %q", got, ErrTokenTooLarge)
	}
	front.Disconnected(c)
	if front.Holds(c) {
		t.Fatal("Holds after disconnect")
	}
}
