package wsapi

import (
	"time"

	"github.com/snorkyhq/snorky/sync/rpc"
	"golang.org/x/time/rate"
)

// repliesPerSecond is how many messages over the rate limit are answered
// "Rate limit exceeded" per second; the rest are dropped unanswered (and
// counted), so a flood does not cost a reply per message.
const repliesPerSecond = 5

// abuseSlots divides the grace period into slots: abuse is measured over a
// sliding window of the last RateLimitGrace.
const abuseSlots = 10

// rateGuard is a connection's command rate limit (limits.*): a token bucket
// with a burst of twice the rate. Rejected messages are counted in a sliding
// window of abuseSlots slots spanning RateLimitGrace, and the connection is
// closed with 4029 when either
//   - it has been rejecting for at least the grace period (an abuse episode
//     ends only after a pause of half the grace period, so pauses between
//     bursts do not reset it) with rejections in at least half the slots of
//     the last grace period; or
//   - its rejected messages in the last grace period number as many as the
//     limit allows in that period (a flood, however its arrival is spread).
type rateGuard struct {
	limiter *rate.Limiter
	grace   time.Duration
	slot    time.Duration
	volume  int // rejected messages in one grace period that close at once

	slots   [abuseSlots]abuseSlot // by slot number % abuseSlots
	since   time.Time             // start of the abuse episode
	last    time.Time             // last rejection
	replyAt time.Time             // start of the second replies are counted in
	replies int
	closed  bool
}

// abuseSlot counts the rejections of one slot of the sliding window.
type abuseSlot struct {
	n     int64 // slot number: UnixNano / slot
	count int
}

func newRateGuard(perSecond float64, grace time.Duration) *rateGuard {
	return &rateGuard{
		limiter: rate.NewLimiter(rate.Limit(perSecond), max(int(2*perSecond+0.5), 1)), // a burst of 0 would refuse every message
		grace:   grace,
		slot:    max(grace/abuseSlots, time.Millisecond),
		volume:  max(int(perSecond*grace.Seconds()), 1),
	}
}

// allow reports whether msg may be handled. A message over the rate is
// answered "Rate limit exceeded" (the first repliesPerSecond each second)
// or dropped.
func (g *rateGuard) allow(h *Handler, c rpc.Conn, msg []byte) bool {
	if g.closed {
		return false
	}
	now := time.Now()
	if g.limiter.AllowN(now, 1) {
		return true
	}
	if now.Sub(g.replyAt) >= time.Second {
		g.replyAt, g.replies = now, 0
	}
	if g.replies < repliesPerSecond {
		g.replies++
		h.rejectRateLimited(c, msg)
	} else {
		h.lim.suppressed.Inc()
	}
	// Errors are answered before the close (spec §1.9: 4029 comes after
	// errors were answered).
	if g.abusive(now) {
		g.closed = true
		h.metrics.rateLimitCloses.Inc()
		h.log.Warn("closing connection: sustained rate above limit", "conn", c.ID(), "limit", h.cfg.CommandsPerSecond, "grace", g.grace)
		c.Close(rpc.CloseRateLimited, rpc.ReasonRateLimited)
	}
	return false
}

// abusive records a rejection at now and reports whether the connection
// has now abused the limit enough to be closed.
func (g *rateGuard) abusive(now time.Time) bool {
	if g.last.IsZero() || now.Sub(g.last) > g.grace/2 {
		g.since = now
	}
	g.last = now
	n := now.UnixNano() / int64(g.slot)
	sl := &g.slots[n%abuseSlots]
	if sl.n != n {
		sl.n, sl.count = n, 0
	}
	sl.count++
	busy, rejected := 0, 0
	for _, s := range g.slots {
		if s.n > n-abuseSlots {
			busy++
			rejected += s.count
		}
	}
	return rejected >= g.volume || now.Sub(g.since) >= g.grace && busy >= abuseSlots/2
}

// rejectRateLimited answers a message over the rate limit with an error
// that carries its service and callId when they are readable.
func (h *Handler) rejectRateLimited(c rpc.Conn, msg []byte) {
	h.metrics.rateLimited.Inc()
	call, derr := h.reg.Decode(msg)
	if derr != nil {
		c.Send(rpc.AppendError(nil, derr.Service, derr.CallID, "Rate limit exceeded"))
		return
	}
	c.Send(rpc.AppendError(nil, rpc.QuoteName(call.Service()), call.Req.CallID, "Rate limit exceeded"))
}
