package wsapi

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/igm/sockjs-go/v3/sockjs"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// SockJS serves the frontend services over SockJS (spec §7), under a path
// prefix, with github.com/igm/sockjs-go: every transport of the SockJS
// protocol (websocket, xhr, xhr_streaming, eventsource, htmlfile, jsonp)
// and the raw /websocket endpoint. Each SockJS message is one envelope;
// a session is one connection for the services.
//
// Goroutines: the library runs one per session (handle), which reads
// messages in order and dispatches them; sends go to the library's session
// buffer and never block.
type SockJS struct {
	h       *Handler
	handler *sockjs.Handler
	log     *slog.Logger

	mu       sync.Mutex
	sessions map[*sockConn]struct{}
	closing  bool
	wg       sync.WaitGroup
	stop     chan struct{} // ends the idle sweep (idle.go)
}

// NewSockJS returns the SockJS endpoint under prefix (e.g. "/sockjs"),
// with h's registry, Origin policy, identity tokens and limits.
func NewSockJS(h *Handler, prefix string) *SockJS {
	s := &SockJS{h: h, log: h.log.With("transport", "sockjs"), sessions: map[*sockConn]struct{}{}, stop: make(chan struct{})}
	opts := sockjs.DefaultOptions
	opts.RawWebsocket = true
	// The SockJS iframe transports load sockjs-client from a CDN by default;
	// browsers without WebSocket use xhr-streaming and friends instead.
	opts.SockJSURL = ""
	// CheckOrigin also decides CORS for the XHR transports: an allowed
	// Origin is echoed in Access-Control-Allow-Origin.
	opts.CheckOrigin = func(r *http.Request) bool {
		return h.cfg.originAllowed(r.Header.Get("Origin"), r.Host)
	}
	opts.WebsocketUpgrader = &websocket.Upgrader{
		ReadBufferSize:  512,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     opts.CheckOrigin,
	}
	opts.WebsocketWriteTimeout = h.cfg.WriteTimeout
	if h.cfg.PingInterval > 0 {
		opts.HeartbeatDelay = h.cfg.PingInterval
	}
	s.handler = sockjs.NewHandler(strings.TrimSuffix(prefix, "/"), opts, s.serve)
	if every := h.cfg.sweepInterval(); every > 0 {
		go h.idleLoop(every, s.stop, s.list) // idle.go: the same deadlines as WebSockets
	}
	return s
}

// ServeHTTP serves the SockJS endpoints; mount it at prefix and prefix/.
func (s *SockJS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	origin := r.Header.Get("Origin")
	if origin != "" && !s.h.cfg.originAllowed(origin, r.Host) {
		s.h.metrics.rejectedOrigins.Inc()
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	s.handler.ServeHTTP(w, r)
}

// serve runs one session until it ends.
func (s *SockJS) serve(sess sockjs.Session) {
	c := &sockConn{id: rpc.NewConnID(), sess: sess, s: s, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.lim.start(time.Now())
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		sess.Close(rpc.CloseGoingAway, rpc.ReasonShuttingDown)
		return
	}
	s.sessions[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.h.metrics.open.Inc()
	go c.writeLoop()
	defer func() {
		s.h.reg.Disconnect(c)
		c.end()
		<-c.done
		s.mu.Lock()
		delete(s.sessions, c)
		s.mu.Unlock()
		s.h.metrics.open.Dec()
		s.wg.Done()
	}()
	if req := sess.Request(); req != nil && s.h.auth != nil {
		if tok := req.URL.Query().Get("token"); tok != "" {
			if err := s.h.auth(c, tok); err != nil {
				c.Close(rpc.CloseIdentity, err.Error())
				return
			}
		}
	}
	var guard *rateGuard
	if s.h.cfg.CommandsPerSecond > 0 {
		guard = newRateGuard(s.h.cfg.CommandsPerSecond, s.h.cfg.RateLimitGrace) // ratelimit.go
	}
	for {
		msg, err := sess.RecvCtx(context.Background())
		if err != nil {
			return
		}
		if int64(len(msg)) > s.h.cfg.MaxMessageBytes {
			s.log.Info("closing SockJS session: message too big", "conn", c.id, "limit", s.h.cfg.MaxMessageBytes)
			c.Close(rpc.CloseMessageTooBig, rpc.ReasonMessageTooBig)
			return
		}
		if c.isClosing() {
			continue // as on a WebSocket: a closing session handles nothing more
		}
		c.lim.touch(time.Now())
		b := []byte(msg)
		if guard != nil && !guard.allow(s.h, c, b) {
			continue
		}
		s.h.handle(c, 0, b) // limits.go: frontend.require_identity, replies too large
	}
}

// Shutdown closes every session with 1001 and waits until all have ended
// or ctx is done; new sessions are refused.
func (s *SockJS) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.stop)
	}
	s.closing = true
	for c := range s.sessions {
		c.Close(rpc.CloseGoingAway, rpc.ReasonShuttingDown)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Len returns the number of open sessions.
func (s *SockJS) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// sockConn is one SockJS session; it implements rpc.Conn. The library
// writes to the network while it sends (a WebSocket write, or an HTTP
// response of a stream or poll), so frames go through a queue bounded in
// bytes, drained by the session's writer goroutine, exactly as for a
// WebSocket: Send never blocks, and a session whose queue overflows is
// closed with 4008.
type sockConn struct {
	id       uint64
	sess     sockjs.Session
	s        *SockJS
	identity atomic.Pointer[rpc.Identity]
	lim      connLimits // idle and authentication deadlines (idle.go)

	mu         sync.Mutex
	queue      [][]byte
	queued     int
	closing    closeStatus // set once closing
	overflowed bool        // closing because the queue overflowed
	ended      bool        // the session ended: the writer stops

	wake chan struct{}
	done chan struct{} // closed when the writer has ended
}

func (c *sockConn) ID() uint64 { return c.id }

// isClosing reports whether Close has begun closing the session.
func (c *sockConn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing.code != 0
}

func (c *sockConn) limits() *connLimits { return &c.lim }

func (c *sockConn) closeIdle(code int, reason string) { c.Close(code, reason) }

// list lists the open sessions, for the idle sweep.
func (s *SockJS) list(dst []idler) []idler {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.sessions {
		dst = append(dst, c)
	}
	return dst
}

func (c *sockConn) Identity() *rpc.Identity { return c.identity.Load() }

func (c *sockConn) SetIdentity(id *rpc.Identity) bool {
	return c.identity.CompareAndSwap(nil, id)
}

func (c *sockConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *sockConn) Send(frame []byte) { c.SendMany([][]byte{frame}) }

func (c *sockConn) SendLatest(_ string, frame []byte) { c.Send(frame) }

// SendMany queues frames with nothing between them.
func (c *sockConn) SendMany(frames [][]byte) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	c.mu.Lock()
	if c.closing.code != 0 || c.ended {
		c.mu.Unlock()
		return
	}
	if c.queued+n > c.s.h.cfg.SendQueueBytes {
		// Logged by the writer, off the broadcast path.
		c.closing, c.overflowed = slowConsumer, true
		c.queue, c.queued = nil, 0
		c.mu.Unlock()
		c.s.h.metrics.slowConsumers.Inc()
		c.signal()
		return
	}
	c.queue = append(c.queue, frames...)
	c.queued += n
	c.mu.Unlock()
	c.signal()
}

// Close sends what is queued, then closes the session with code.
func (c *sockConn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closing.code == 0 {
		c.closing = closeStatus{code, reason}
	}
	c.mu.Unlock()
	c.signal()
}

// end tells the writer that the session is over.
func (c *sockConn) end() {
	c.mu.Lock()
	c.ended = true
	c.queue, c.queued = nil, 0
	c.mu.Unlock()
	c.signal()
}

// writeLoop hands queued frames to the session until it closes.
func (c *sockConn) writeLoop() {
	defer close(c.done)
	for range c.wake {
		c.mu.Lock()
		q, closing, overflowed, ended := c.queue, c.closing, c.overflowed, c.ended
		c.queue, c.queued = nil, 0
		c.mu.Unlock()
		if !ended {
			for _, f := range q {
				if err := c.sess.Send(string(f)); err != nil {
					break
				}
			}
		}
		if closing.code != 0 {
			if overflowed {
				c.s.log.Warn("closing slow consumer", "conn", c.id, "send_queue_bytes", c.s.h.cfg.SendQueueBytes)
			}
			_ = c.sess.Close(uint32(closing.code), closing.reason)
			return
		}
		if ended {
			return
		}
	}
}
