package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"
)

// pubsubConfig is the pubsub scenario: N subscribers of one channel, one
// stream of publishes at a fixed rate or as fast as delivery keeps up.
type pubsubConfig struct {
	Subscribers int           // WebSocket subscribers of the channel
	Rate        float64       // publishes per second; 0 with Saturate
	Saturate    bool          // publish as fast as delivery keeps up
	Duration    time.Duration // how long to publish
	Size        int           // bytes of each published message (its JSON text)
	Via         string        // "backend" (HTTP POST) or "ws" (a publishing WebSocket)
	Inflight    int           // concurrent publish calls (HTTP requests or publisher sockets)
	// Window bounds the publishes not yet delivered to every subscriber:
	// with Saturate (default 32), or alone, as the windowed mode (a
	// publisher that keeps at most Window messages in flight).
	Window     int
	Windowed   bool          // set by Validate: the windowed mode
	Drain      time.Duration // how long to wait for the last deliveries
	Channel    string
	Service    string // frontend PubSub service name
	BackendSvc string // backend PubSub service name
	DialConc   int    // concurrent dials while connecting subscribers
	PerAddr    int    // connections per loopback source address
}

func (c *pubsubConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.Subscribers, "subscribers", 1000, "WebSocket subscribers of the channel")
	fs.Float64Var(&c.Rate, "rate", 0, "publishes per second (or --saturate)")
	fs.BoolVar(&c.Saturate, "saturate", false, "publish as fast as the server delivers (bounded by --window)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "how long to publish")
	fs.IntVar(&c.Size, "size", 100, "bytes of each published message")
	fs.StringVar(&c.Via, "via", "backend", "publish through the backend HTTP API (backend) or a WebSocket (ws)")
	fs.IntVar(&c.Inflight, "inflight", 8, "concurrent publish calls")
	fs.IntVar(&c.Window, "window", 0, "publishes allowed ahead of full delivery: alone, the windowed mode (at most N messages in flight); with --saturate, its bound (default 32)")
	fs.DurationVar(&c.Drain, "drain", 5*time.Second, "how long to wait for outstanding deliveries after publishing")
	fs.StringVar(&c.Channel, "channel", "bench", "channel name")
	fs.StringVar(&c.Service, "service", "pubsub", "frontend PubSub service name")
	fs.StringVar(&c.BackendSvc, "backend-service", "pubsub_backend", "backend PubSub service name")
	fs.IntVar(&c.DialConc, "dial-concurrency", 64, "concurrent connection attempts")
	fs.IntVar(&c.PerAddr, "per-source-addr", 5000, "client connections per loopback source address")
}

// windowed reports the windowed mode: --window without --rate or
// --saturate.
func (c *pubsubConfig) windowed() bool { return c.Window > 0 && !c.Saturate && c.Rate == 0 }

// Validate checks the scenario's bounds and applies the windowed mode:
// it publishes as --saturate does, bounded by --window.
func (c *pubsubConfig) Validate() error {
	if c.windowed() {
		c.Saturate, c.Windowed = true, true
	} else if c.Window == 0 {
		c.Window = 32
	}
	switch {
	case c.Subscribers < 1 || c.Subscribers > 19000:
		return fmt.Errorf("--subscribers: got %d, want 1..19000 (one process, 20,000 descriptors)", c.Subscribers)
	case c.Saturate == (c.Rate > 0):
		return errors.New("give exactly one of --rate R (R > 0), --saturate and --window N")
	case c.Duration <= 0 || c.Duration > time.Hour:
		return fmt.Errorf("--duration: got %v, want (0, 1h]", c.Duration)
	case c.Size < 40 || c.Size > 1<<20:
		return fmt.Errorf("--size: got %d, want 40..1048576", c.Size)
	case c.Via != "backend" && c.Via != "ws":
		return fmt.Errorf("--via: got %q, want backend or ws", c.Via)
	case c.Inflight < 1 || c.Inflight > 1024:
		return fmt.Errorf("--inflight: got %d, want 1..1024", c.Inflight)
	case c.Window < 1 || c.Window > ringSize/2:
		return fmt.Errorf("--window: got %d, want 1..%d", c.Window, ringSize/2)
	case c.DialConc < 1 || c.PerAddr < 1:
		return errors.New("--dial-concurrency and --per-source-addr must be positive")
	}
	return nil
}

// pubsubResult is the scenario's summary.
type pubsubResult struct {
	Scenario    string  `json:"scenario"`
	Subscribers int     `json:"subscribers"`
	Via         string  `json:"via"`
	Mode        string  `json:"mode"`
	TargetRate  float64 `json:"target_rate,omitempty"`
	DurationS   float64 `json:"duration_s"`
	SizeBytes   int     `json:"size_bytes"`
	ConnectS    float64 `json:"connect_s"`

	Published         uint64  `json:"published"`
	PublishErrors     uint64  `json:"publish_errors"`
	FirstPublishError string  `json:"first_publish_error,omitempty"`
	PublishRate       float64 `json:"publish_rate"`

	Expected        uint64  `json:"expected"`
	Received        uint64  `json:"received"`
	Lost            int64   `json:"lost"`
	LossPct         float64 `json:"loss_pct"`
	WindowS         float64 `json:"window_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`

	Latency     latencySummary `json:"latency"`
	PublishCall latencySummary `json:"publish_call"`

	ServerCPUS        float64 `json:"server_cpu_s"`
	ServerCPUPct      float64 `json:"server_cpu_pct"`
	ServerCPUPerMsgUS float64 `json:"server_cpu_us_per_msg"`
	ServerRSSStartKiB int64   `json:"server_rss_start_kib"`
	ServerRSSEndKiB   int64   `json:"server_rss_end_kib"`
	ServerHWMKiB      int64   `json:"server_rss_peak_kib"`
	ClientCPUS        float64 `json:"client_cpu_s"`
	// OtherCPUS is CPU time other processes on the machine took during the
	// window; well above zero, the latency and throughput figures are
	// disturbed (CPU µs per message much less so).
	OtherCPUS  float64 `json:"other_cpu_s"`
	HostCPUPct float64 `json:"host_cpu_pct"` // busy share of all CPUs during the window

	SubscribersClosed int            `json:"subscribers_closed"`
	CloseCodes        map[string]int `json:"close_codes,omitempty"`
}

// ringSize bounds how far apart the oldest undelivered and the newest
// publish may be before the delivery tracker's slots are reused.
const ringSize = 1 << 16

// deliveryTracker counts, per sequence number, how many subscribers got the
// message, so that --saturate can hold publishing at what the server
// delivers (no unbounded queues, no slow-consumer closes caused by the
// runner itself).
type deliveryTracker struct {
	counts [ringSize]atomic.Int32
	alive  atomic.Int32  // subscribers still connected
	notify chan struct{} // signalled when some message completes
}

func newDeliveryTracker(subscribers int) *deliveryTracker {
	t := &deliveryTracker{notify: make(chan struct{}, 1)}
	t.alive.Store(int32(subscribers))
	return t
}

func (t *deliveryTracker) reset(seq int64) { t.counts[seq%ringSize].Store(0) }

func (t *deliveryTracker) delivered(seq int64) {
	if t.counts[seq%ringSize].Add(1) >= t.alive.Load() {
		t.signal()
	}
}

func (t *deliveryTracker) subscriberGone() {
	t.alive.Add(-1)
	t.signal()
}

func (t *deliveryTracker) signal() {
	select {
	case t.notify <- struct{}{}:
	default:
	}
}

// wait blocks until seq reached every live subscriber, the timeout passes
// (the message counts as lost) or ctx ends.
func (t *deliveryTracker) wait(ctx context.Context, seq int64, timeout time.Duration) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for t.counts[seq%ringSize].Load() < t.alive.Load() {
		select {
		case <-t.notify:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// subscriber is one measured WebSocket connection.
type subscriber struct {
	conn     *websocket.Conn
	received atomic.Uint64
	last     atomic.Int64 // bench clock of the latest delivery
	err      error        // why the read loop ended; read after done
}

// pubsubRun holds the shared state of one run.
type pubsubRun struct {
	cfg     pubsubConfig
	base    time.Time // the bench clock: nanoseconds since base (monotonic)
	lat     *histogram
	pubLat  *histogram
	tracker *deliveryTracker
	subs    []*subscriber
	readers sync.WaitGroup

	published atomic.Uint64
	pubErrs   atomic.Uint64
	firstErr  atomic.Pointer[string]
}

func (r *pubsubRun) clock() int64 { return int64(time.Since(r.base)) }

var (
	keySeq = []byte(`"seq"`)
	keyTS  = []byte(`"ts"`)
)

// readLoop is the subscriber's minimal client: read a frame into a reused
// buffer, pick out seq and ts, record.
func (r *pubsubRun) readLoop(s *subscriber) {
	defer r.readers.Done()
	buf := make([]byte, 0, 512)
	for {
		_, rd, err := s.conn.NextReader()
		if err != nil {
			s.err = err
			r.tracker.subscriberGone()
			return
		}
		buf, err = readAll(buf[:0], rd)
		if err != nil {
			s.err = err
			r.tracker.subscriberGone()
			return
		}
		seq, ok := findInt(buf, keySeq)
		if !ok {
			continue
		}
		ts, _ := findInt(buf, keyTS)
		now := r.clock()
		r.lat.Record(time.Duration(now - ts))
		s.received.Add(1)
		s.last.Store(now)
		r.tracker.delivered(seq)
	}
}

// readAll appends everything from rd to buf, growing it only when needed.
func readAll(buf []byte, rd io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// appendBenchMessage appends the published JSON value: sequence number, send
// time on the bench clock, and padding up to size bytes.
func appendBenchMessage(dst []byte, seq, ts int64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"pad":"`...)
	pad := size - (len(dst) - start) - 2
	for range max(pad, 0) {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// publisher sends one publish and waits for its reply.
type publisher interface {
	publish(ctx context.Context, seq int64) error
	close()
}

// backendPublisher publishes through the backend HTTP API (§4).
type backendPublisher struct {
	r      *pubsubRun
	url    string
	key    string
	client *http.Client
	prefix []byte
	body   []byte
	resp   []byte
}

func (p *backendPublisher) publish(ctx context.Context, seq int64) error {
	p.body = append(p.body[:0], p.prefix...)
	p.body = appendBenchMessage(p.body, seq, p.r.clock(), p.r.cfg.Size)
	p.body = append(p.body, "}}}"...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Backend-Key", p.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	p.resp, err = readAll(p.resp[:0], io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s: %.200s", resp.Status, p.resp)
	}
	return replyError(p.resp)
}

func (p *backendPublisher) close() {}

// replyError returns the error an RPC reply envelope carries, if any.
func replyError(b []byte) error {
	if bytes.Contains(b, []byte(`"response"`)) {
		return nil
	}
	return fmt.Errorf("not a response: %.200s", b)
}

// wsPublisher publishes over its own (unsubscribed) WebSocket.
type wsPublisher struct {
	r      *pubsubRun
	conn   *websocket.Conn
	prefix []byte
	body   []byte
	buf    []byte
	callID int64
}

func (p *wsPublisher) publish(ctx context.Context, seq int64) error {
	p.callID++
	p.body = append(p.body[:0], p.prefix...)
	p.body = appendBenchMessage(p.body, seq, p.r.clock(), p.r.cfg.Size)
	p.body = append(p.body, `},"callId":`...)
	p.body = strconv.AppendInt(p.body, p.callID, 10)
	p.body = append(p.body, "}}"...)
	if err := p.conn.WriteMessage(websocket.TextMessage, p.body); err != nil {
		return err
	}
	for {
		_, rd, err := p.conn.NextReader()
		if err != nil {
			return err
		}
		if p.buf, err = readAll(p.buf[:0], rd); err != nil {
			return err
		}
		if id, ok := findInt(p.buf, []byte(`"callId"`)); ok && id == p.callID {
			return replyError(p.buf)
		}
	}
}

func (p *wsPublisher) close() { p.conn.Close() }

// runPubsub runs the scenario against srv.
func runPubsub(ctx context.Context, cfg pubsubConfig, srv *server, logf func(string, ...any)) (*pubsubResult, error) {
	r := &pubsubRun{
		cfg:     cfg,
		base:    time.Now(),
		lat:     new(histogram),
		pubLat:  new(histogram),
		tracker: newDeliveryTracker(cfg.Subscribers),
	}
	d := &wsDialer{url: srv.WSURL, src: newSourceAddrs(0, cfg.PerAddr), readBuf: 4096, writeBuf: 1024, timeout: 10 * time.Second}

	// Connect and subscribe.
	connectStart := time.Now()
	r.subs = make([]*subscriber, cfg.Subscribers)
	defer func() {
		for _, s := range r.subs {
			if s != nil {
				s.conn.Close()
			}
		}
		r.readers.Wait()
	}()
	logf("pubsub: connecting %d subscribers from %v", cfg.Subscribers, d.src)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.DialConc)
	var connected atomic.Int64
	for i := range r.subs {
		g.Go(func() error {
			c, err := d.dial(gctx, i)
			if err != nil {
				return fmt.Errorf("subscriber %d: %w", i, err)
			}
			if _, err := call(c, 10*time.Second, cfg.Service, "subscribe", map[string]any{"channel": cfg.Channel}, 1); err != nil {
				c.Close()
				return fmt.Errorf("subscriber %d: %w", i, err)
			}
			s := &subscriber{conn: c}
			r.subs[i] = s
			r.readers.Add(1)
			go r.readLoop(s)
			if n := connected.Add(1); n%2000 == 0 {
				logf("pubsub: %d subscribed", n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	connectTime := time.Since(connectStart)
	logf("pubsub: %d subscribed in %.1fs", cfg.Subscribers, connectTime.Seconds())

	// Publishers.
	pubs := make([]publisher, cfg.Inflight)
	defer func() {
		for _, p := range pubs {
			if p != nil {
				p.close()
			}
		}
	}()
	channelJSON := strconv.Quote(cfg.Channel) // a Go-quoted ASCII name is valid JSON
	transport := &http.Transport{MaxIdleConnsPerHost: cfg.Inflight, DisableCompression: true}
	defer transport.CloseIdleConnections()
	for i := range pubs {
		switch cfg.Via {
		case "backend":
			pubs[i] = &backendPublisher{
				r: r, url: srv.BackendURL, key: srv.Key,
				client: &http.Client{Transport: transport, Timeout: 30 * time.Second},
				prefix: []byte(`{"service":` + strconv.Quote(cfg.BackendSvc) + `,"message":{"command":"publish","params":{"channel":` + channelJSON + `,"message":`),
			}
		case "ws":
			c, err := d.dial(ctx, cfg.Subscribers+i)
			if err != nil {
				return nil, fmt.Errorf("publisher %d: %w", i, err)
			}
			pubs[i] = &wsPublisher{
				r: r, conn: c,
				prefix: []byte(`{"service":` + strconv.Quote(cfg.Service) + `,"message":{"command":"publish","params":{"channel":` + channelJSON + `,"message":`),
			}
		}
	}

	res := &pubsubResult{
		Scenario: "pubsub", Subscribers: cfg.Subscribers, Via: cfg.Via, Mode: "rate", TargetRate: cfg.Rate,
		DurationS: cfg.Duration.Seconds(), SizeBytes: cfg.Size, ConnectS: connectTime.Seconds(),
	}
	if cfg.Saturate {
		res.Mode = "saturate"
		if cfg.Windowed {
			res.Mode = fmt.Sprintf("window %d", cfg.Window)
		}
	}
	u0, err := sampleUsage(srv)
	if err != nil {
		return nil, err
	}

	// Publish: a generator hands out sequence numbers (on schedule, or as
	// delivery completes), the publishers send them.
	t0 := r.clock()
	pubCtx, cancelPub := context.WithCancel(ctx)
	defer cancelPub()
	tickets := make(chan int64, cfg.Inflight)
	var pubWG sync.WaitGroup
	for _, p := range pubs {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			for seq := range tickets {
				start := time.Now()
				if err := p.publish(pubCtx, seq); err != nil {
					if r.pubErrs.Add(1) == 1 {
						msg := err.Error()
						r.firstErr.Store(&msg)
					}
					continue
				}
				r.pubLat.Record(time.Since(start))
				r.published.Add(1)
			}
		}()
	}
	var lastRecv, lastPub uint64
	stopProgress := everySecond(pubCtx, func(i int) {
		recv, pub := r.received(), r.published.Load()
		logf("pubsub: t=%ds published %d/s, delivered %d/s, subscribers alive %d",
			i, pub-lastPub, recv-lastRecv, r.tracker.alive.Load())
		lastRecv, lastPub = recv, pub
	})
	r.generate(pubCtx, tickets)
	pubWG.Wait()
	tPubEnd := r.clock()

	// Drain: wait until every subscriber has every published message.
	expected := r.published.Load() * uint64(cfg.Subscribers)
	drainCtx, cancelDrain := context.WithTimeout(ctx, cfg.Drain)
	_ = poll(drainCtx, 5*time.Millisecond, func() bool {
		return r.received() >= expected || r.tracker.alive.Load() == 0
	})
	cancelDrain()
	cancelPub()
	stopProgress()

	u1, err := sampleUsage(srv)
	if err != nil {
		return nil, fmt.Errorf("sampling the server after the run: %w", err)
	}
	spent := u0.until(u1)

	// Summarise.
	received := r.received()
	var tLast int64
	codes := map[string]int{}
	for _, s := range r.subs {
		tLast = max(tLast, s.last.Load())
	}
	res.Published = r.published.Load()
	res.PublishErrors = r.pubErrs.Load()
	if p := r.firstErr.Load(); p != nil {
		res.FirstPublishError = *p
	}
	res.PublishRate = float64(res.Published) / (float64(tPubEnd-t0) / 1e9)
	res.Expected, res.Received = expected, received
	res.Lost = int64(expected) - int64(received)
	if expected > 0 {
		res.LossPct = 100 * float64(res.Lost) / float64(expected)
	}
	window := time.Duration(max(tLast, tPubEnd) - t0)
	res.WindowS = window.Seconds()
	if window > 0 {
		res.DeliveredPerSec = float64(received) / window.Seconds()
	}
	res.Latency = r.lat.Summary()
	res.PublishCall = r.pubLat.Summary()
	cpu := spent.Server
	res.ServerCPUS = cpu.Seconds()
	if window > 0 {
		res.ServerCPUPct = 100 * cpu.Seconds() / window.Seconds()
	}
	if received > 0 {
		res.ServerCPUPerMsgUS = micros(cpu) / float64(received)
	}
	res.ServerRSSStartKiB, res.ServerRSSEndKiB, res.ServerHWMKiB = u0.server.RSSKiB, u1.server.RSSKiB, u1.server.HWMKiB
	res.ClientCPUS, res.HostCPUPct, res.OtherCPUS = spent.ClientS, spent.HostPct, spent.OtherS

	// Subscribers whose connection ended during the run (they are still
	// open unless the server closed them).
	for _, s := range r.subs {
		s.conn.Close()
	}
	r.readers.Wait()
	for _, s := range r.subs {
		if c := closeCode(s.err); c != 0 {
			res.SubscribersClosed++
			codes[strconv.Itoa(c)]++
		}
	}
	if len(codes) > 0 {
		res.CloseCodes = codes
	}
	return res, nil
}

func (r *pubsubRun) received() uint64 {
	var n uint64
	for _, s := range r.subs {
		n += s.received.Load()
	}
	return n
}

// generate hands out sequence numbers until the duration ends, then closes
// tickets.
func (r *pubsubRun) generate(ctx context.Context, tickets chan<- int64) {
	defer close(tickets)
	cfg := r.cfg
	start := time.Now()
	end := start.Add(cfg.Duration)
	emit := func(seq int64) bool {
		r.tracker.reset(seq)
		select {
		case tickets <- seq:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if cfg.Saturate {
		for seq := int64(1); time.Now().Before(end); seq++ {
			if seq > int64(cfg.Window) {
				r.tracker.wait(ctx, seq-int64(cfg.Window), cfg.Drain)
			}
			if !emit(seq) {
				return
			}
		}
		return
	}
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var seq int64
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		due := int64(now.Sub(start)/interval) + 1
		for seq < due {
			seq++
			if !emit(seq) {
				return
			}
		}
		timer.Reset(time.Until(start.Add(time.Duration(seq) * interval)))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// poll calls cond every interval until it is true (nil) or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
