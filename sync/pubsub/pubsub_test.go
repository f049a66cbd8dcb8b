package pubsub

import (
	"fmt"
	"strings"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestLimits (T18): subscriptions over the per-connection limit and channel
// names over the length limit (canonical JSON bytes) are refused with errors
// naming their limit; Holds follows the subscriptions.
func TestLimits(t *testing.T) {
	svc := New("pubsub", Config{Policy: DefaultPolicy, MaxChannelsPerConn: 128, MaxChannelBytes: 256})
	reg := rpc.NewRegistry(nil)
	reg.Register("pubsub", svc)
	c := rpctest.NewConn()
	if svc.Holds(c) {
		t.Fatal("Holds before subscribing")
	}
	refused := 0
	for i := range 200 {
		switch err := rpctest.Call(t, reg, c, "pubsub", "subscribe", fmt.Sprintf(`{"channel":"ch%d"}`, i)).Err(); {
		case i < 128 && err != "":
			t.Fatalf("subscription %d: %s", i, err)
		case i >= 128 && err != string(ErrTooManyChannels):
			t.Fatalf("subscription %d: got %q, want %q", i, err, ErrTooManyChannels)
		case i >= 128:
			refused++
		}
	}
	if refused != 72 || !svc.Holds(c) {
		t.Fatalf("refused %d of 200 (want 72); Holds %v", refused, svc.Holds(c))
	}
	long := strings.Repeat("x", 1000)
	other := rpctest.NewConn()
	for _, tc := range []struct{ command, params string }{
		{"subscribe", `{"channel":"` + long + `"}`},
		{"subscribe", `{"channel":{"room":"` + long + `"}}`},
		{"publish", `{"channel":"` + long + `","message":1}`},
	} {
		if got := rpctest.Call(t, reg, other, "pubsub", tc.command, tc.params).Err(); got != string(ErrChannelTooLong) {
			t.Errorf("%s with a 1,000-character channel: got %q, want %q", tc.command, got, ErrChannelTooLong)
		}
	}
	// 250 characters fit (252 bytes of JSON text with its quotes).
	if got := rpctest.Call(t, reg, other, "pubsub", "subscribe", `{"channel":"`+long[:250]+`"}`).Err(); got != "" {
		t.Fatalf("250-character channel: %s", got)
	}
	svc.Disconnected(c)
	if svc.Holds(c) {
		t.Fatal("Holds after disconnect")
	}
}
