package cursors

import (
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestHandleLength: a private handle longer than MaxHandleBytes (canonical
// JSON bytes) is refused with an error naming the limit; Holds follows the
// documents.
func TestHandleLength(t *testing.T) {
	e := newEnv(t, Config{MaxHandleBytes: 32})
	alice := rpctest.NewConnAs(t, `"alice"`)
	if e.svc.Holds(alice) {
		t.Fatal("Holds before joining")
	}
	e.call(alice, "join", `{"document":"D"}`)
	if !e.svc.Holds(alice) {
		t.Fatal("Holds: got false after join")
	}
	e.fails(alice, "createCursor", `{"privateHandle":"`+strings.Repeat("h", 40)+`","document":"D","position":0,"status":0}`, string(ErrHandleTooLong))
	if r := e.call(alice, "createCursor", `{"privateHandle":"short","document":"D","position":0,"status":0}`); r.Err() != "" {
		t.Fatalf("short handle: %s", r.Raw)
	}
}
