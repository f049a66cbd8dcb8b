package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestSizeLimits: an identity over MaxIdentityBytes is not issued; a token
// over MaxTokenBytes is refused by authenticate and in the URL, each with an
// error naming the limit.
func TestSizeLimits(t *testing.T) {
	e := newEnv(t, Config{MaxIdentityBytes: 64, MaxTokenBytes: 200})
	r := rpctest.Call(t, e.back, e.backendCn, "identity_backend", "authorizeIdentity", `{"identity":"`+strings.Repeat("x", 100)+`"}`)
	if r.Err() != string(ErrIdentityTooLarge) {
		t.Fatalf("100-byte identity: got %s, want %q", r.Raw, ErrIdentityTooLarge)
	}
	tok := e.authorize(`{"identity":"alice"}`)
	if r := e.authenticate(rpctest.NewConn(), tok); r.Err() != "" {
		t.Fatalf("a small token: %s", r.Raw)
	}
	long := strings.Repeat("A", 300)
	if r := e.authenticate(rpctest.NewConn(), long); r.Err() != string(ErrTokenTooLarge) {
		t.Fatalf("300-byte token: got %s, want %q", r.Raw, ErrTokenTooLarge)
	}
	if err := e.dir.AuthenticateToken(rpctest.NewConn(), long); !errors.Is(err, ErrURLTokenTooLong) {
		t.Fatalf("300-byte URL token: got %v, want %v", err, ErrURLTokenTooLong)
	}
}
