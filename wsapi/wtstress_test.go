package wsapi

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// TestWriteThroughManyConns: several goroutines deliver frames to random
// connections among many (write-throughs racing with the writers, clients
// that read in spurts); every client gets exactly its frames.
func TestWriteThroughManyConns(t *testing.T) {
	h, err := NewHandler(Config{SendQueueBytes: 64 << 20}, rpc.NewRegistry(nil), nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	const nconns, senders, perSender = 50, 4, 3000
	conns := make(chan *conn, nconns)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := newConn(h, ws)
		c.wtIdle = time.Duration(len(conns)%3) * time.Millisecond // 0, 1 or 2 ms
		go c.writeLoop()
		conns <- c
	}))
	defer srv.Close()
	var got [nconns]atomic.Int64
	var wg sync.WaitGroup
	server := make([]*conn, nconns)
	for i := range nconns {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		server[i] = <-conns
		defer server[i].readerGone()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				if k%500 == 0 {
					time.Sleep(time.Duration(i%5) * time.Millisecond)
				}
				ws.SetReadDeadline(time.Now().Add(60 * time.Second))
				_, m, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if !strings.HasPrefix(string(m), fmt.Sprintf(`{"c":%d,`, i)) {
					t.Errorf("conn %d: got %.30q", i, m)
					return
				}
				got[i].Add(1)
			}
		}()
	}
	var want [nconns]atomic.Int64
	var sw sync.WaitGroup
	for s := range senders {
		sw.Add(1)
		go func() {
			defer sw.Done()
			r := rand.New(rand.NewPCG(uint64(s), 1))
			for k := range perSender {
				i := r.IntN(nconns)
				f := []byte(fmt.Sprintf(`{"c":%d,"k":%d,"pad":"%s"}`, i, k, strings.Repeat("y", r.IntN(3000))))
				want[i].Add(1)
				if k%7 == 0 {
					server[i].SendImmediate(f, f)
					want[i].Add(1)
				} else {
					server[i].SendImmediate(f)
				}
				if k%100 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	sw.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for i := range nconns {
		for got[i].Load() < want[i].Load() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if g, w := got[i].Load(), want[i].Load(); g != w {
			c := server[i]
			c.mu.Lock()
			t.Errorf("conn %d: got %d frames, want %d (queue %d, rest %d, writing %v)", i, g, w, len(c.queue), len(c.rest), c.writing)
			c.mu.Unlock()
		}
	}
}
