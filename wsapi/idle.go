package wsapi

import (
	"sync/atomic"
	"time"

	"github.com/snorkyhq/snorky/sync/rpc"
)

// connLimits is a connection's state for the idle and authentication
// deadlines.
type connLimits struct {
	opened time.Time
	// busy is when the connection last sent a message or was seen holding
	// something (UnixNano).
	busy    atomic.Int64
	closing atomic.Bool
}

func (l *connLimits) start(now time.Time) {
	l.opened = now
	l.busy.Store(now.UnixNano())
}

// touch records a message from the peer.
func (l *connLimits) touch(now time.Time) { l.busy.Store(now.UnixNano()) }

// closeGrace is how long a connection closed for idleness or a missed
// authentication deadline may take to answer the close frame before its
// socket is closed.
const closeGrace = 500 * time.Millisecond

// sweepInterval is the period of the idle sweep: a tenth of the shortest
// deadline, between 50 ms and 500 ms, so a connection is closed within that
// much of its deadline.
func (c Config) sweepInterval() time.Duration {
	d := time.Duration(0)
	if c.IdleTimeout > 0 {
		d = c.IdleTimeout
	}
	if c.RequireIdentity && (d == 0 || c.AuthTimeout < d) {
		d = c.AuthTimeout
	}
	if d == 0 {
		return 0
	}
	return min(max(d/10, 50*time.Millisecond), 500*time.Millisecond)
}

// idler is a connection the deadlines apply to: a WebSocket connection
// or a SockJS session.
type idler interface {
	rpc.Conn
	limits() *connLimits
	// closeIdle closes the connection for a missed deadline.
	closeIdle(code int, reason string)
}

func (c *conn) limits() *connLimits { return &c.lim }

// closeIdle closes c and cuts it after closeGrace if the peer does not
// answer the close frame.
func (c *conn) closeIdle(code int, reason string) { c.closeSoon(code, reason, closeGrace) }

// idleLoop closes idle and unauthenticated connections: one timer for all
// connections, like pingLoop. list returns them; it is called on the loop's
// goroutine.
func (h *Handler) idleLoop(every time.Duration, stop <-chan struct{}, list func([]idler) []idler) {
	t := time.NewTicker(every)
	defer t.Stop()
	var conns []idler
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		conns = list(conns[:0])
		now := time.Now()
		for _, c := range conns {
			h.sweep(c, now)
		}
		clear(conns)
	}
}

// webSockets lists the open WebSocket connections, for idleLoop.
func (h *Handler) webSockets(dst []idler) []idler {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		dst = append(dst, c)
	}
	return dst
}

// sweep applies the deadlines to one connection.
func (h *Handler) sweep(c idler, now time.Time) {
	lim := c.limits()
	if lim.closing.Load() {
		return
	}
	hasID := c.Identity() != nil
	if h.cfg.RequireIdentity && !hasID && now.Sub(lim.opened) >= h.cfg.AuthTimeout {
		lim.closing.Store(true)
		h.lim.idleCloses.WithLabelValues("auth").Inc()
		h.log.Info("closing connection: not authenticated in time", "conn", c.ID(), "auth_timeout", h.cfg.AuthTimeout)
		c.closeIdle(rpc.CloseIdle, rpc.ReasonAuthTimeout)
		return
	}
	if h.cfg.IdleTimeout <= 0 {
		return
	}
	if hasID || h.reg.Holds(c) {
		lim.busy.Store(now.UnixNano())
		return
	}
	if now.Sub(time.Unix(0, lim.busy.Load())) >= h.cfg.IdleTimeout {
		lim.closing.Store(true)
		h.lim.idleCloses.WithLabelValues("idle").Inc()
		h.log.Debug("closing idle connection", "conn", c.ID(), "idle_timeout", h.cfg.IdleTimeout)
		c.closeIdle(rpc.CloseIdle, rpc.ReasonIdle)
	}
}
