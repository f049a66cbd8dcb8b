package cursors

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/snorkyhq/snorky/sync/rpc/rpctest"
)

// TestConcurrentConnections drives many connections from several
// goroutines (run it with -race). Observers joined to every document
// throughout must see, per (document, public handle), a well-formed life:
// cursorAdded, then cursorUpdated for the same owner, then cursorRemoved,
// and nothing left after everyone has gone.
func TestConcurrentConnections(t *testing.T) {
	const (
		workers = 6
		rounds  = 400
		docs    = 3
	)
	e := newEnv(t, Config{})
	e.svc.randHandle = func() int { return rand.IntN(64) } // force collisions
	observers := []*rpctest.Conn{rpctest.NewConnAs(t, `"obs0"`), rpctest.NewConnAs(t, `"obs1"`)}
	for _, o := range observers {
		for d := range docs {
			e.ok(o, "join", fmt.Sprintf(`{"document":"D%d"}`, d), `{"cursors":[]}`)
		}
	}

	var wg sync.WaitGroup
	for w := range workers {
		c := rpctest.NewConnAs(t, fmt.Sprintf(`"u%d"`, w%3))
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			joined := map[int]bool{}
			cursors := map[int]int{} // private handle → document
			next, requests := 0, 0
			for i := range rounds {
				d := rng.IntN(docs)
				var cmd, params string
				switch op := rng.IntN(5); {
				case op == 0 && !joined[d]:
					cmd, params = "join", fmt.Sprintf(`{"document":"D%d"}`, d)
					joined[d] = true
				case op == 1 && joined[d] && rng.IntN(4) == 0:
					cmd, params = "leave", fmt.Sprintf(`{"document":"D%d"}`, d)
					joined[d] = false
					for p, pd := range cursors {
						if pd == d {
							delete(cursors, p)
						}
					}
				case op == 2 && joined[d] && len(cursors) < MaxCursorsPerConn:
					next++
					cmd, params = "createCursor", fmt.Sprintf(`{"privateHandle":%d,"document":"D%d","position":0,"status":"new"}`, next, d)
					cursors[next] = d
				case op == 3 && len(cursors) > 0:
					for p := range cursors {
						cmd, params = "removeCursor", fmt.Sprintf(`{"privateHandle":%d}`, p)
						delete(cursors, p)
						break
					}
				default:
					if len(cursors) == 0 {
						continue
					}
					for p := range cursors {
						cmd, params = "updateCursor", fmt.Sprintf(`{"privateHandle":%d,"newData":{"position":%d}}`, p, i)
						break
					}
				}
				frame := fmt.Sprintf(`{"service":"cursors","message":{"command":%q,"params":%s,"callId":%d}}`, cmd, params, i)
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
		live := map[string]string{} // document/handle → owner
		for _, m := range rpctest.Msgs(t, o) {
			var n struct {
				Type   string
				Cursor struct {
					PublicHandle int
					Document     string
					Owner        json.RawMessage
				}
			}
			if err := json.Unmarshal(m.Message["type"], &n.Type); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(m.Message["cursor"], &n.Cursor); err != nil {
				t.Fatalf("observer %d: %s: %v", i, m.Raw, err)
			}
			k := fmt.Sprintf("%s/%d", n.Cursor.Document, n.Cursor.PublicHandle)
			owner, ok := live[k]
			switch n.Type {
			case "cursorAdded":
				if ok {
					t.Fatalf("observer %d: %s added while live", i, k)
				}
				live[k] = string(n.Cursor.Owner)
			case "cursorUpdated":
				if !ok || owner != string(n.Cursor.Owner) {
					t.Fatalf("observer %d: update %s of a cursor not live (owner %q)", i, m.Raw, owner)
				}
			case "cursorRemoved":
				if !ok {
					t.Fatalf("observer %d: %s removed while not live", i, k)
				}
				delete(live, k)
			default:
				t.Fatalf("observer %d: unexpected %s", i, m.Raw)
			}
		}
		if len(live) != 0 {
			t.Errorf("observer %d: cursors %v still live after every worker left", i, live)
		}
	}
	for _, o := range observers {
		e.reg.Disconnect(o)
	}
	if rooms, conns := e.svc.set.Len(); rooms+conns != 0 {
		t.Fatalf("after all disconnected: got %d documents and %d members, want 0", rooms, conns)
	}
}
