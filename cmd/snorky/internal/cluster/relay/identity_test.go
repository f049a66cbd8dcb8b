package relay

import (
	"testing"
	"time"

	"github.com/snorkyhq/snorky/sync/identity"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
	"github.com/snorkyhq/snorky/sync/token"
)

// TestIdentityAcrossNodes: disconnectIdentity on A closes the identity's
// connections on A, B and C, answers their total, and leaves the other
// identities' connections open.
func TestIdentityAcrossNodes(t *testing.T) {
	signer, err := token.New([]byte("relay-test-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	name := clusterName(t)
	var dirs []*identity.Directory
	for i, id := range []string{"A", "B", "C"} {
		d, err := identity.New(signer, identity.Config{DefaultTTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		stop, err := Identity(d, newNode(t, name, i%2, id), Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		dirs = append(dirs, d)
	}
	// A and C subscribe on server 0, B on server 1: each server counts its
	// own and one routed subscription for the other's.
	subject := "snorky." + name + ".identity.revoke"
	eventually(t, 5*time.Second, "every node's subscription known to both servers", func() bool {
		return interest(0, subject) == 3 && interest(1, subject) == 2
	})
	connect := func(d *identity.Directory, ident string) *rpctest.Conn {
		t.Helper()
		tok, err := d.Issue([]byte(ident), 0)
		if err != nil {
			t.Fatal(err)
		}
		c := rpctest.NewConn()
		if err := d.AuthenticateToken(c, tok); err != nil {
			t.Fatal(err)
		}
		return c
	}
	revoked := []*rpctest.Conn{
		connect(dirs[0], `{"user":1}`),
		connect(dirs[1], `{"user":1}`), connect(dirs[1], `{"user": 1}`),
		connect(dirs[2], `{"user":1.0}`),
	}
	kept := []*rpctest.Conn{connect(dirs[1], `{"user":2}`), connect(dirs[0], `"user 1"`)}

	back := rpc.NewRegistry(nil)
	if err := back.Register("identity_backend", dirs[0].Backend()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := rpctest.Call(t, back, rpctest.NewConn(), "identity_backend", "disconnectIdentity", `{"identity":{"user":1}}`)
	rpctest.JSONEqual(t, "disconnectIdentity", r.Data(t), `4`)
	if d := time.Since(start); d >= 2*time.Second {
		t.Errorf("disconnectIdentity took %s, want less than the timeout (every node answered)", d)
	}
	// Each node closed its connections before answering.
	for i, c := range revoked {
		if closed, code, reason := c.Closed(); !closed || code != rpc.CloseIdentity || reason != rpc.ReasonIdentityRevoke {
			t.Errorf("connection %d: got closed=%v %d %q, want %d %q", i, closed, code, reason, rpc.CloseIdentity, rpc.ReasonIdentityRevoke)
		}
	}
	for i, c := range kept {
		if closed, _, _ := c.Closed(); closed {
			t.Errorf("kept connection %d was closed", i)
		}
	}
	// Nothing left: 0 everywhere.
	r = rpctest.Call(t, back, rpctest.NewConn(), "identity_backend", "disconnectIdentity", `{"identity":{"user":1}}`)
	rpctest.JSONEqual(t, "second disconnectIdentity", r.Data(t), `0`)
}
