package identity_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/sync/identity"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
	"github.com/snorkyhq/snorky/sync/token"
)

// TestRemote: disconnectIdentity closes this node's connections, then asks
// the other nodes, and answers the sum.
func TestRemote(t *testing.T) {
	signer, err := token.New([]byte("remote-test-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := identity.New(signer, identity.Config{DefaultTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	d.SetRemote(func(id json.RawMessage) int {
		asked = append(asked, string(id))
		return 3
	})
	tok, err := d.Issue([]byte(`{"u":1}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	c := rpctest.NewConn()
	if err := d.AuthenticateToken(c, tok); err != nil {
		t.Fatal(err)
	}
	back := rpc.NewRegistry(nil)
	if err := back.Register("identity_backend", d.Backend()); err != nil {
		t.Fatal(err)
	}
	r := rpctest.Call(t, back, rpctest.NewConn(), "identity_backend", "disconnectIdentity", `{"identity":{"u":1}}`)
	rpctest.JSONEqual(t, "count", r.Data(t), `4`)
	if closed, _, _ := c.Closed(); !closed {
		t.Error("the local connection is open")
	}
	if len(asked) != 1 || asked[0] != `{"u":1}` {
		t.Errorf("remote asked %q, want once for {\"u\":1}", asked)
	}
}
