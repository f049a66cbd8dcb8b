package chat

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestConcurrentConnections drives many connections from several
// goroutines (run it with -race) and checks what two observers, joined to
// every channel throughout, saw: per channel and identity, presence
// alternates joined/left, starting with joined and ending with left; every
// message comes from a present identity; and every accepted send arrived.
func TestConcurrentConnections(t *testing.T) {
	const (
		workers  = 6
		rounds   = 300
		channels = 4
	)
	e := newEnv(t, Config{})
	observers := []*rpctest.Conn{rpctest.NewConnAs(t, `"obs0"`), rpctest.NewConnAs(t, `"obs1"`)}
	for _, o := range observers {
		for ch := range channels {
			e.call(o, "join", fmt.Sprintf(`{"channel":"ch%d"}`, ch))
		}
	}
	// Observers joined before any worker; drop presence among themselves.
	for _, o := range observers {
		o.Take()
	}

	var sent [channels]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		// Two workers share each identity: devices of one user.
		c := rpctest.NewConnAs(t, fmt.Sprintf(`"u%d"`, w%3))
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			joined := map[int]bool{}
			requests := 0
			for i := range rounds {
				ch := rng.IntN(channels)
				var frame string
				switch op := rng.IntN(4); {
				case op == 0 && !joined[ch]:
					frame = fmt.Sprintf(`{"service":"chat","message":{"command":"join","params":{"channel":"ch%d"},"callId":%d}}`, ch, i)
					joined[ch] = true
				case op == 1 && joined[ch]:
					frame = fmt.Sprintf(`{"service":"chat","message":{"command":"leave","params":{"channel":"ch%d"},"callId":%d}}`, ch, i)
					joined[ch] = false
				case op == 2 && joined[ch]:
					frame = fmt.Sprintf(`{"service":"chat","message":{"command":"send","params":{"channel":"ch%d","body":%d},"callId":%d}}`, ch, i, i)
					sent[ch].Add(1)
				default:
					frame = fmt.Sprintf(`{"service":"chat","message":{"command":"read","params":{"channel":"ch%d"},"callId":%d}}`, ch, i)
				}
				e.reg.Dispatch(c, []byte(frame))
				requests++
			}
			e.reg.Disconnect(c)
			replies := 0
			for _, f := range c.Take() {
				var m struct {
					Message struct{ Type, Message string }
				}
				if err := json.Unmarshal(f, &m); err != nil {
					t.Errorf("worker %d: frame %s: %v", w, f, err)
					return
				}
				switch m.Message.Type {
				case "response":
					replies++
				case "error":
					t.Errorf("worker %d: unexpected error %q", w, m.Message.Message)
				}
			}
			if replies != requests {
				t.Errorf("worker %d: got %d responses, want %d", w, replies, requests)
			}
		}()
	}
	wg.Wait()

	for i, o := range observers {
		present := map[string]bool{} // channel + "/" + identity
		var got [channels]int64
		for _, m := range rpctest.Msgs(t, o) {
			var n struct {
				Type, Status string
				From         json.RawMessage
				Channel      string
			}
			if err := json.Unmarshal(m.Message["type"], &n.Type); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(m.Message["status"], &n.Status)
			_ = json.Unmarshal(m.Message["channel"], &n.Channel)
			k := n.Channel + "/" + string(m.Message["from"])
			switch n.Type + n.Status {
			case "presencejoined":
				if present[k] {
					t.Fatalf("observer %d: %s joined twice in a row", i, k)
				}
				present[k] = true
			case "presenceleft":
				if !present[k] {
					t.Fatalf("observer %d: %s left without having joined", i, k)
				}
				present[k] = false
			case "message":
				if !present[k] {
					t.Fatalf("observer %d: message from %s, who is not present", i, k)
				}
				var ch int
				fmt.Sscanf(n.Channel, "ch%d", &ch)
				got[ch]++
			default:
				t.Fatalf("observer %d: unexpected %s", i, m.Raw)
			}
		}
		for k, p := range present {
			if p {
				t.Errorf("observer %d: %s still present after every worker left", i, k)
			}
		}
		for ch := range channels {
			if want := sent[ch].Load(); got[ch] != want {
				t.Errorf("observer %d, ch%d: got %d messages, want %d", i, ch, got[ch], want)
			}
		}
	}
	for _, o := range observers {
		e.reg.Disconnect(o)
	}
	if rooms, conns := e.svc.set.Len(); rooms+conns != 0 {
		t.Fatalf("after all disconnected: got %d channels and %d members, want 0", rooms, conns)
	}
}
