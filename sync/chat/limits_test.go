package chat

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestMembersCapped: a join reply lists at most MaxMembers identities and
// says it was cut; Holds follows the memberships.
func TestMembersCapped(t *testing.T) {
	e := newEnv(t, Config{MaxMembers: 5})
	for i := range 8 {
		c := rpctest.NewConnAs(t, fmt.Sprintf(`"user%d"`, i))
		e.call(c, "join", `{"channel":"big"}`)
	}
	last := rpctest.NewConnAs(t, `"last"`)
	if e.svc.Holds(last) {
		t.Fatal("Holds before joining")
	}
	var got struct {
		Members   []json.RawMessage `json:"members"`
		Truncated bool              `json:"truncated"`
	}
	rpctest.JSONDecode(t, e.call(last, "join", `{"channel":"big"}`).Data(t), &got)
	if len(got.Members) != 5 || !got.Truncated {
		t.Fatalf("join reply: %d members, truncated %v; want 5 and true", len(got.Members), got.Truncated)
	}
	if !e.svc.Holds(last) {
		t.Fatal("Holds: got false after join")
	}
	small := rpctest.NewConnAs(t, `"solo"`)
	e.ok(small, "join", `{"channel":"small"}`, `{"members":["solo"]}`)
}
