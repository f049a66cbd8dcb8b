package wsapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Authenticator verifies the identity token given as the `token` query
// parameter and sets the connection's identity. Its error text is the close
// reason sent with code 4001.
type Authenticator func(c rpc.Conn, token string) error

// Handler serves the WebSocket endpoint.
type Handler struct {
	cfg      Config
	reg      *rpc.Registry
	auth     Authenticator
	log      *slog.Logger
	metrics  *metrics
	lim      *limitMetrics // limits.go
	adm      *admission
	upgrader websocket.Upgrader

	mu       sync.Mutex
	conns    map[*conn]struct{}
	closing  bool
	wg       sync.WaitGroup
	stopPing chan struct{}
	pingOnce sync.Once
}

// NewHandler returns a handler that dispatches messages to reg. auth may be
// nil (no identity tokens in URLs). reg and log must not be nil; metrics are
// registered on mreg when it is not nil.
func NewHandler(cfg Config, reg *rpc.Registry, auth Authenticator, log *slog.Logger, mreg prometheus.Registerer) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg:      cfg,
		reg:      reg,
		auth:     auth,
		log:      log,
		conns:    map[*conn]struct{}{},
		stopPing: make(chan struct{}),
	}
	m, err := newMetrics(mreg, reg.Names(), h.queuedBytes)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	if h.lim, err = newLimitMetrics(mreg); err != nil {
		return nil, err
	}
	trusted, _ := parsePrefixes(cfg.TrustedProxies)
	h.adm = &admission{trusted: trusted, perIP: map[netip.Addr]int{}}
	h.upgrader = websocket.Upgrader{
		ReadBufferSize:  512,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin: func(r *http.Request) bool {
			ok := h.cfg.originAllowed(r.Header.Get("Origin"), r.Host)
			if !ok {
				h.metrics.rejectedOrigins.Inc()
				h.log.Info("refused WebSocket handshake: origin not allowed", "origin", r.Header.Get("Origin"), "host", r.Host)
			}
			return ok
		},
		Error: refuse,
	}
	if cfg.PingInterval > 0 {
		go h.pingLoop()
	}
	if every := cfg.sweepInterval(); every > 0 {
		go h.idleLoop(every, h.stopPing, h.webSockets) // idle.go
	}
	return h, nil
}

// pingLoop pings every connection once per interval: one timer for all
// connections. It writes the ping itself where the socket is free
// (pingNow), which spares waking each idle connection's writer; a busy
// connection's writer is asked to add the ping to what it writes.
func (h *Handler) pingLoop() {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-h.stopPing:
			return
		case <-t.C:
		}
		h.mu.Lock()
		for c := range h.conns {
			conns = append(conns, c)
		}
		h.mu.Unlock()
		for _, c := range conns {
			if !c.pingNow() {
				c.pingDue.Store(true)
				c.signal()
			}
		}
		clear(conns) // keep no closed connection alive until the next tick
		conns = conns[:0]
	}
}

func (h *Handler) queuedBytes() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for c := range h.conns {
		n += c.queuedBytes()
	}
	return float64(n)
}

// ServeHTTP upgrades the request and serves the connection until it ends.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()
	if closing {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	ip := h.adm.clientIP(r)
	if status, text := h.admit(ip); status != 0 {
		http.Error(w, text, status)
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.release(ip)
		return // the upgrader has answered
	}
	c := newConn(h, ws)
	c.lim.start(time.Now())
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		h.release(ip)
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(rpc.CloseGoingAway, rpc.ReasonShuttingDown), time.Now().Add(time.Second))
		ws.Close()
		return
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	h.metrics.open.Inc()

	go c.writeLoop()
	if tok := r.URL.Query().Get("token"); tok != "" && h.auth != nil {
		if err := h.auth(c, tok); err != nil {
			c.Close(rpc.CloseIdentity, err.Error())
		}
	}
	// The reader runs on a goroutine of its own so that net/http's
	// connection goroutine, its stack and its buffers are released now:
	// an idle connection holds only what it needs.
	go c.serve(ip)
}

// serve runs the reader until the connection ends, then releases it: its
// admission slot (ip's) first, so that once the connection has left
// h.conns a new one from the same address is admitted.
func (c *conn) serve(ip netip.Addr) {
	h := c.h
	c.readLoop()
	h.reg.Disconnect(c)
	c.readerGone()
	<-c.done
	c.ws.Close()
	h.release(ip)
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.metrics.open.Dec()
	h.wg.Done()
}

// readLoop reads messages until the connection fails or closes.
func (c *conn) readLoop() {
	h := c.h
	// No gorilla read limit and no gorilla close reply: both would write a
	// close frame straight to the socket, where a write-through may have
	// left a frame half-written. The limit is applied below, and the reply
	// goes through the writer (peerClosed).
	c.ws.SetPingHandler(func(data string) error { c.sendPong(data); return nil })
	c.ws.SetCloseHandler(func(code int, _ string) error { c.peerClosed(code); return nil })
	// renew is how far each message or pong moves the read deadline (0:
	// no deadline, without pings).
	var renew time.Duration
	if h.cfg.PingInterval > 0 {
		renew = 2*h.cfg.PingInterval + h.cfg.WriteTimeout
		c.ws.SetReadDeadline(time.Now().Add(renew))
		c.ws.SetPongHandler(func(string) error {
			c.stillOpen(renew)
			return nil
		})
	}
	var guard *rateGuard
	if h.cfg.CommandsPerSecond > 0 {
		guard = newRateGuard(h.cfg.CommandsPerSecond, h.cfg.RateLimitGrace)
	}
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		// Read one byte past the limit to tell a message at the limit from
		// one over it; the rest of an oversize message is discarded by the
		// next NextReader.
		msg, err := io.ReadAll(io.LimitReader(r, h.cfg.MaxMessageBytes+1))
		if err != nil {
			return
		}
		if !c.stillOpen(renew) {
			// Closed (revoked identity, bad token, shutdown): what the peer
			// sends while the close handshake runs is dropped, and it does
			// not hold the connection open past the writer's close deadline.
			continue
		}
		if int64(len(msg)) > h.cfg.MaxMessageBytes {
			h.log.Info("closing connection: message too big", "conn", c.id, "limit", h.cfg.MaxMessageBytes)
			c.Close(rpc.CloseMessageTooBig, rpc.ReasonMessageTooBig)
			continue
		}
		c.lim.touch(time.Now())
		if guard != nil && !guard.allow(h, c, msg) {
			continue
		}
		c.dispatch(msg)
	}
}

// dispatch handles one message on a short-lived goroutine and waits for it:
// messages are still handled one at a time and in order, but the stack that
// decoding and the services need is released afterwards instead of staying
// with the reader for the connection's life (4 KiB or more per connection
// that has sent anything).
func (c *conn) dispatch(msg []byte) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.handle(msg) // limits.go
	}()
	wg.Wait()
}

// Shutdown closes every connection with 1001 and waits until all have
// ended or ctx is done, then refuses new ones.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.pingOnce.Do(func() { close(h.stopPing) })
	h.mu.Lock()
	h.closing = true
	for c := range h.conns {
		c.Close(rpc.CloseGoingAway, rpc.ReasonShuttingDown)
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		h.mu.Lock()
		for c := range h.conns {
			c.ws.NetConn().Close()
		}
		h.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Len returns the number of open connections.
func (h *Handler) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// SlowConsumerCloses is the counter of connections closed with 4008.
func (h *Handler) SlowConsumerCloses() prometheus.Counter { return h.metrics.slowConsumers }
