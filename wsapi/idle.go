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

// idleLoop closes idle and unauthenticated connections: one timer for all
// connections, like pingLoop.
func (h *Handler) idleLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-h.stopPing:
			return
		case <-t.C:
		}
		h.mu.Lock()
		conns = conns[:0]
		for c := range h.conns {
			conns = append(conns, c)
		}
		h.mu.Unlock()
		now := time.Now()
		for _, c := range conns {
			h.sweep(c, now)
		}
		clear(conns)
	}
}

// sweep applies the deadlines to one connection.
func (h *Handler) sweep(c *conn, now time.Time) {
	if c.lim.closing.Load() {
		return
	}
	hasID := c.Identity() != nil
	if h.cfg.RequireIdentity && !hasID && now.Sub(c.lim.opened) >= h.cfg.AuthTimeout {
		c.lim.closing.Store(true)
		h.lim.idleCloses.WithLabelValues("auth").Inc()
		h.log.Info("closing connection: not authenticated in time", "conn", c.id, "auth_timeout", h.cfg.AuthTimeout)
		c.closeSoon(rpc.CloseIdle, rpc.ReasonAuthTimeout, closeGrace)
		return
	}
	if h.cfg.IdleTimeout <= 0 {
		return
	}
	if hasID || h.reg.Holds(c) {
		c.lim.busy.Store(now.UnixNano())
		return
	}
	if now.Sub(time.Unix(0, c.lim.busy.Load())) >= h.cfg.IdleTimeout {
		c.lim.closing.Store(true)
		h.lim.idleCloses.WithLabelValues("idle").Inc()
		h.log.Debug("closing idle connection", "conn", c.id, "idle_timeout", h.cfg.IdleTimeout)
		c.closeSoon(rpc.CloseIdle, rpc.ReasonIdle, closeGrace)
	}
}
