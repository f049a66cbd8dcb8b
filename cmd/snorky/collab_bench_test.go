package main

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// benchClient is a minimal WebSocket client for benchmarks: it reads in a
// loop and hands each message to onMessage.
type benchClient struct {
	ws *websocket.Conn
	mu sync.Mutex // serialises writes
}

func benchDial(b *testing.B, s *server, identity string, onMessage func([]byte)) *benchClient {
	b.Helper()
	tok := identityToken(b, s, identity)
	ws, _, err := websocket.DefaultDialer.Dial(s.frontendURL()+"?token="+url.QueryEscape(tok), nil)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchClient{ws: ws}
	go func() {
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			onMessage(m)
		}
	}()
	b.Cleanup(func() { ws.Close() })
	return c
}

func (c *benchClient) send(b *testing.B, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		b.Error(err)
	}
}

// latencies collects samples safely.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		b.Fatal("no samples")
	}
	slices.Sort(l.d)
	q := func(p float64) float64 { return float64(l.d[int(p*float64(len(l.d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(l.d[len(l.d)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(l.d)), "samples")
}

// BenchmarkChatPresence: a room of 2,000 members (joined before the
// measurement); each iteration one more identity joins and then leaves, and
// the latency is measured from the join (leave) request to each member's
// presence notification. Target p99 ≤ 50 ms.
func BenchmarkChatPresence(b *testing.B) {
	const members = 2000
	s := startServer(b, "limits: {commands_per_second: 0, channels_per_connection: 4}\nlog: {level: error}")
	var (
		lat     latencies
		started sync.Map // "joined"/"left" → time.Time of the request
		pending sync.WaitGroup
	)
	onPresence := func(m []byte) {
		if !bytes.Contains(m, []byte(`"type":"presence"`)) {
			return
		}
		status := "left"
		if bytes.Contains(m, []byte(`"status":"joined"`)) {
			status = "joined"
		}
		if t0, ok := started.Load(status); ok {
			lat.add(time.Since(t0.(time.Time)))
			pending.Done()
		}
	}
	var joined sync.WaitGroup
	for i := range members {
		joined.Add(1)
		var once sync.Once
		c := benchDial(b, s, fmt.Sprintf(`"member-%d"`, i), func(m []byte) {
			if bytes.Contains(m, []byte(`"type":"response"`)) {
				once.Do(joined.Done)
				return
			}
			onPresence(m)
		})
		c.send(b, `{"service":"chat","message":{"command":"join","params":{"channel":"room"},"callId":1}}`)
		if i%200 == 199 {
			joined.Wait() // let presence of the joins so far settle
		}
	}
	joined.Wait()
	time.Sleep(500 * time.Millisecond) // the last joins' presence notifications
	b.ResetTimer()
	for i := range b.N {
		newcomer := benchDial(b, s, fmt.Sprintf(`"newcomer-%d"`, i), func([]byte) {})
		for _, step := range []string{"joined", "left"} {
			pending.Add(members)
			cmd := "join"
			if step == "left" {
				cmd = "leave"
			}
			started.Store(step, time.Now())
			newcomer.send(b, `{"service":"chat","message":{"command":"`+cmd+`","params":{"channel":"room"},"callId":1}}`)
			pending.Wait()
			started.Delete(step)
		}
		newcomer.ws.Close()
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkCursors: 100 users in one document, each sending 30 cursor
// updates per second for 5 s per iteration; the latency is measured from
// each update's send time (carried in its position) to its arrival at every
// other user. Target p99 ≤ 50 ms.
func BenchmarkCursors(b *testing.B) {
	const users, rate = 100, 30
	s := startServer(b, "limits: {commands_per_second: 0}\nlog: {level: error}")
	var lat latencies
	clients := make([]*benchClient, users)
	var ready sync.WaitGroup
	for i := range users {
		ready.Add(2)
		var n int
		var mu sync.Mutex
		clients[i] = benchDial(b, s, fmt.Sprintf(`"user-%d"`, i), func(m []byte) {
			if bytes.Contains(m, []byte(`"type":"response"`)) {
				mu.Lock()
				n++
				if n <= 2 {
					ready.Done()
				}
				mu.Unlock()
				return
			}
			if !bytes.Contains(m, []byte(`"type":"cursorUpdated"`)) {
				return
			}
			// position is the sender's clock in nanoseconds.
			i := bytes.Index(m, []byte(`"position":`))
			if i < 0 {
				return
			}
			rest := m[i+len(`"position":`):]
			j := bytes.IndexAny(rest, ",}")
			ns, err := strconv.ParseInt(string(rest[:j]), 10, 64)
			if err == nil {
				lat.add(time.Duration(time.Now().UnixNano() - ns))
			}
		})
		clients[i].send(b, `{"service":"cursors","message":{"command":"join","params":{"document":"doc"},"callId":1}}`)
		clients[i].send(b, `{"service":"cursors","message":{"command":"createCursor","params":{"privateHandle":1,"document":"doc","position":0,"status":"idle"},"callId":2}}`)
	}
	ready.Wait()
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		stop := time.Now().Add(5 * time.Second)
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTicker(time.Second / rate)
				defer t.Stop()
				for time.Now().Before(stop) {
					<-t.C
					c.send(b, fmt.Sprintf(`{"service":"cursors","message":{"command":"updateCursor","params":{"privateHandle":1,"newData":{"position":%d}},"callId":3}}`, time.Now().UnixNano()))
				}
			}()
		}
		wg.Wait()
		time.Sleep(200 * time.Millisecond)
	}
	b.StopTimer()
	lat.report(b)
}
