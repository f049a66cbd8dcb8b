package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
)

// This file holds what the DataSync scenarios (datasync, cdc) share: the
// backend client, authorising and acquiring subscriptions, the receiving
// side, and reading the server's Prometheus metrics.

// backendClient posts envelopes to the backend HTTP API (§4).
type backendClient struct {
	url    string
	key    string
	client *http.Client
}

func newBackendClient(srv *server, conns int) (*backendClient, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}
	return &backendClient{url: srv.BackendURL, key: srv.Key, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}},
		tr.CloseIdleConnections
}

// post sends body and returns the reply (appended to buf[:0]) when it is an
// RPC response; an RPC error reply or a non-200 status is an error.
func (b *backendClient) post(ctx context.Context, body, buf []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(body))
	if err != nil {
		return buf, err
	}
	req.Header.Set("X-Backend-Key", b.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return buf, err
	}
	defer resp.Body.Close()
	buf, err = readAll(buf[:0], io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return buf, fmt.Errorf("reading the reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return buf, fmt.Errorf("HTTP %s: %.200s", resp.Status, buf)
	}
	return buf, replyError(buf)
}

// authorize calls authorizeSubscription with one item and returns the token.
func (b *backendClient) authorize(ctx context.Context, service, dealer string, query any) (string, error) {
	body, err := json.Marshal(map[string]any{
		"service": service,
		"message": map[string]any{"command": "authorizeSubscription", "params": map[string]any{
			"items": []any{map[string]any{"dealer": dealer, "query": query}},
		}},
	})
	if err != nil {
		return "", err
	}
	reply, err := b.post(ctx, body, nil)
	if err != nil {
		return "", fmt.Errorf("authorizeSubscription: %w", err)
	}
	var r rpcReply
	if err := json.Unmarshal(reply, &r); err != nil {
		return "", fmt.Errorf("authorizeSubscription: %w: %.200s", err, reply)
	}
	var token string
	if err := json.Unmarshal(r.Message.Data, &token); err != nil || token == "" {
		return "", fmt.Errorf("authorizeSubscription: data is not a token: %.200s", reply)
	}
	return token, nil
}

// dsSub is one acquired subscription on its own WebSocket.
type dsSub struct {
	conn     *websocket.Conn
	received atomic.Uint64
	err      error // why the read loop ended; read after it has
}

// deltaReceiver is the receiving side: it counts deltas at the subscribers
// and records publish→receive (or commit→receive) latency from the "ts"
// member of the row, which the runner wrote on its own clock.
type deltaReceiver struct {
	base     time.Time                 // the bench clock: nanoseconds since base
	lat      atomic.Pointer[histogram] // swapped between phases
	received atomic.Uint64             // deltas at all subscribers
	last     atomic.Int64              // bench clock of the latest delivery
	gone     atomic.Int64              // subscriptions whose connection ended
	notify   chan struct{}             // signalled on every delivery (non-blocking)
	readers  sync.WaitGroup
}

func newDeltaReceiver() *deltaReceiver {
	r := &deltaReceiver{base: time.Now(), notify: make(chan struct{}, 1)}
	r.lat.Store(new(histogram))
	return r
}

func (r *deltaReceiver) clock() int64 { return int64(time.Since(r.base)) }

// readLoop reads deltas until the connection ends.
func (r *deltaReceiver) readLoop(s *dsSub) {
	defer r.readers.Done()
	buf := make([]byte, 0, 512)
	for {
		_, rd, err := s.conn.NextReader()
		if err == nil {
			buf, err = readAll(buf[:0], rd)
		}
		if err != nil {
			s.err = err
			r.gone.Add(1)
			r.signal()
			return
		}
		ts, ok := findInt(buf, keyTS)
		if !ok {
			continue
		}
		now := r.clock()
		r.lat.Load().Record(time.Duration(now - ts))
		s.received.Add(1)
		r.received.Add(1)
		r.last.Store(now)
		r.signal()
	}
}

func (r *deltaReceiver) signal() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// waitFor blocks until at least n deltas have arrived, timeout passes, or
// ctx ends; it reports whether n arrived.
func (r *deltaReceiver) waitFor(ctx context.Context, n uint64, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for r.received.Load() < n {
		select {
		case <-r.notify:
		case <-timer.C:
			return r.received.Load() >= n
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// closeAll closes every subscription's connection and waits for the read
// loops; it returns the close codes the server sent before that.
func (r *deltaReceiver) closeAll(subs []*dsSub) map[string]int {
	for _, s := range subs {
		if s != nil {
			s.conn.Close()
		}
	}
	r.readers.Wait()
	codes := map[string]int{}
	for _, s := range subs {
		if s == nil {
			continue
		}
		if c := closeCode(s.err); c != 0 {
			codes[strconv.Itoa(c)]++
		}
	}
	if len(codes) == 0 {
		return nil
	}
	return codes
}

// subscribeAll authorises n subscriptions (query(i) gives the dealer and
// query of the i-th) and acquires each on its own WebSocket; their read
// loops run until closeAll. On error the connections made so far are in
// the returned slice (nil entries for the others).
func subscribeAll(ctx context.Context, srv *server, d *wsDialer, be *backendClient, frontSvc, backSvc string,
	n, conc int, query func(i int) (string, any), recv *deltaReceiver, logf func(string, ...any),
) ([]*dsSub, error) {
	subs := make([]*dsSub, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	var done atomic.Int64
	for i := range subs {
		g.Go(func() error {
			dealer, q := query(i)
			token, err := be.authorize(gctx, backSvc, dealer, q)
			if err != nil {
				return fmt.Errorf("subscription %d: %w", i, err)
			}
			c, err := d.dial(gctx, i)
			if err != nil {
				return fmt.Errorf("subscription %d: %w", i, err)
			}
			if _, err := call(c, 10*time.Second, frontSvc, "acquireSubscription", map[string]any{"token": token}, 1); err != nil {
				c.Close()
				return fmt.Errorf("subscription %d: %w", i, err)
			}
			s := &dsSub{conn: c}
			subs[i] = s
			recv.readers.Add(1)
			go recv.readLoop(s)
			if k := done.Add(1); k%2000 == 0 {
				logf("%d subscriptions acquired", k)
			}
			return nil
		})
	}
	return subs, g.Wait()
}

// scrapeMetrics fetches the server's Prometheus text and returns the sum
// over label sets of each named metric that is present.
func scrapeMetrics(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body, names...)
}

// parseMetrics reads the Prometheus text exposition format and sums, per
// requested name, the samples of that metric (any labels). Names absent
// from the text are absent from the map.
func parseMetrics(rd io.Reader, names ...string) (map[string]float64, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !want[name] {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				return nil, fmt.Errorf("metric %s: unterminated labels in %q", name, line)
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metric %s: no value in %q", name, line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}

// metricDelta returns after[name]-before[name], or -1 when either lacks it.
func metricDelta(before, after map[string]float64, name string) float64 {
	b, ok1 := before[name]
	a, ok2 := after[name]
	if !ok1 || !ok2 {
		return -1
	}
	return a - b
}
