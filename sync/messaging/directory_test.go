package messaging_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/snorkyhq/snorky/sync/messaging"
	"github.com/snorkyhq/snorky/sync/rpc"
	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// fakeDirectory is a cluster where "Remote" lives on another node and
// "Taken" is held there too.
type fakeDirectory struct {
	mu       sync.Mutex
	claimed  []string
	released []string
	sent     []string
}

func (d *fakeDirectory) Claim(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if name == "Taken" || name == "Remote" {
		return messaging.ErrNameTaken
	}
	d.claimed = append(d.claimed, name)
	return nil
}

func (d *fakeDirectory) Release(names []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.released = append(d.released, names...)
}

func (d *fakeDirectory) Send(dest string, message []byte) error {
	if dest != "Remote" {
		return messaging.ErrUnknownDestination
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sent = append(d.sent, string(message))
	return nil
}

func (d *fakeDirectory) List() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(slices.Values(append([]string{"Remote", "Taken"}, d.claimed...))), nil
}

// TestDirectory: with a directory, names are claimed from it and given
// back, messages to other nodes' names go through it, listing merges it,
// and Deliver reaches this node's names.
func TestDirectory(t *testing.T) {
	svc := messaging.New("messaging", messaging.Config{MaxListed: 3})
	dir := &fakeDirectory{}
	svc.SetDirectory(dir)
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("messaging", svc); err != nil {
		t.Fatal(err)
	}
	alice := rpctest.NewConn()
	call := func(command, params string) rpctest.Reply {
		t.Helper()
		return rpctest.Call(t, reg, alice, "messaging", command, params)
	}
	fails := func(command, params, want string) {
		t.Helper()
		if got := call(command, params).Err(); got != want {
			t.Fatalf("%s %s: got error %q, want %q", command, params, got, want)
		}
	}
	fails("registerParticipant", `{"name":"Taken"}`, "Name already registered")
	if got := call("registerParticipant", `{"name":"Alice"}`).Err(); got != "" {
		t.Fatal(got)
	}
	fails("registerParticipant", `{"name":"Alice"}`, "Name already registered")
	if got := call("registerParticipant", `{"name":"Al"}`).Err(); got != "" {
		t.Fatal(got)
	}
	if !slices.Equal(dir.claimed, []string{"Alice", "Al"}) {
		t.Fatalf("claimed %q, want Alice, Al", dir.claimed)
	}
	rpctest.JSONEqual(t, "list", call("listParticipants", `{}`).Data(t), `["Al","Alice","Remote"]`)
	rpctest.JSONEqual(t, "list after Alice", call("listParticipants", `{"after":"Alice"}`).Data(t), `["Remote","Taken"]`)

	if got := call("send", `{"sender":"Alice","dest":"Remote","body":1}`).Err(); got != "" {
		t.Fatal(got)
	}
	if want := []string{`{"type":"message","sender":"Alice","dest":"Remote","body":1}`}; !slices.Equal(dir.sent, want) {
		t.Fatalf("sent %q, want %q", dir.sent, want)
	}
	fails("send", `{"sender":"Alice","dest":"Nobody","body":1}`, "Unknown destination")
	fails("send", `{"sender":"Remote","dest":"Alice","body":1}`, "Invalid sender")

	// A message from another node.
	if err := svc.Deliver("Al", []byte(`{"type":"message","sender":"Remote","dest":"Al","body":2}`)); err != nil {
		t.Fatal(err)
	}
	got := alice.Take()
	if len(got) != 1 {
		t.Fatalf("got %d frames, want the message", len(got))
	}
	rpctest.JSONEqual(t, "delivered", got[0], `{"service":"messaging","message":{"type":"message","sender":"Remote","dest":"Al","body":2}}`)
	if err := svc.Deliver("Nobody", []byte(`{}`)); err != messaging.ErrUnknownDestination {
		t.Fatalf("Deliver to Nobody: got %v, want %v", err, messaging.ErrUnknownDestination)
	}

	if got := call("unregisterParticipant", `{"name":"Al"}`).Err(); got != "" {
		t.Fatal(got)
	}
	reg.Disconnect(alice)
	if !slices.Equal(dir.released, []string{"Al", "Alice"}) {
		t.Fatalf("released %q, want Al, Alice", dir.released)
	}
}
