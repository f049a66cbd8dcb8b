package wsapi

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Errors of the transport's own limits.
const (
	errNotAuthenticated = "Not authenticated"
	errReplyTooLarge    = "Reply too large (frontend.send_queue_bytes)"
)

// admission counts the connections admitted, in total and per client
// address, from before the upgrade until the connection has ended.
type admission struct {
	trusted []netip.Prefix

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

// limitMetrics are the counters of the limits of this file, idle.go and
// ratelimit.go.
type limitMetrics struct {
	refused    *prometheus.CounterVec // handshakes refused, by reason
	idleCloses *prometheus.CounterVec // 4002 closes, by reason
	suppressed prometheus.Counter     // rate-limited messages not answered
	tooLarge   prometheus.Counter     // replies replaced by errReplyTooLarge
}

func newLimitMetrics(reg prometheus.Registerer) (*limitMetrics, error) {
	m := &limitMetrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "snorky_ws_refused_handshakes_total",
			Help: "WebSocket handshakes refused before the upgrade, by limit (max_connections, connections_per_ip).",
		}, []string{"limit"}),
		idleCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "snorky_ws_idle_closes_total",
			Help: "Connections closed with 4002, by reason (idle, auth).",
		}, []string{"reason"}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_ws_rate_limit_suppressed_replies_total",
			Help: "Messages over the rate limit dropped without an error reply (beyond the first few per second).",
		}),
		tooLarge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_ws_replies_too_large_total",
			Help: "Replies that would not fit in the connection's send queue, answered with an error instead.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.refused, m.idleCloses, m.suppressed, m.tooLarge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// parsePrefixes parses TrustedProxies: addresses or CIDR prefixes.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("TrustedProxies[%d]: %q is not an address or a CIDR prefix (e.g. 10.0.0.0/8)", i, s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (a *admission) isTrusted(ip netip.Addr) bool {
	for _, p := range a.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientIP is the address a connection is counted under: the peer, or,
// when the peer is a trusted proxy, the rightmost address of
// X-Forwarded-For that is not a trusted proxy (earlier entries can be
// forged by the client).
func (a *admission) clientIP(r *http.Request) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if !peer.IsValid() || !a.isTrusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		client = ip.Unmap()
		if !a.isTrusted(client) {
			break
		}
	}
	return client
}

func remoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// admit counts a new connection from ip, or returns the HTTP status and
// text of the refusal.
func (h *Handler) admit(ip netip.Addr) (status int, text string) {
	a := h.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if h.cfg.MaxConnections > 0 && a.total >= h.cfg.MaxConnections {
		h.lim.refused.WithLabelValues("max_connections").Inc()
		return http.StatusServiceUnavailable, "server at its connection limit (limits.max_connections); try again later"
	}
	if h.cfg.ConnectionsPerIP > 0 && !ip.IsLoopback() && a.perIP[ip] >= h.cfg.ConnectionsPerIP {
		h.lim.refused.WithLabelValues("connections_per_ip").Inc()
		return http.StatusTooManyRequests, "too many connections from this address (limits.connections_per_ip)"
	}
	a.total++
	a.perIP[ip]++
	return 0, ""
}

// release uncounts a connection admitted from ip.
func (h *Handler) release(ip netip.Addr) {
	a := h.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perIP[ip]--; a.perIP[ip] <= 0 {
		delete(a.perIP, ip)
	}
}

// handle decodes and runs one message for c and queues the reply. Under
// RequireIdentity, a connection without identity may only call the
// identity service. A reply that would not fit in the send queue is
// replaced by an error, so that asking for a large result never closes the
// connection as a slow consumer.
func (c *conn) handle(msg []byte) { c.h.handle(c, c.queuedBytes(), msg) }

// handle is conn.handle for any transport; queued is what c's send queue
// holds now.
func (h *Handler) handle(c rpc.Conn, queued int, msg []byte) {
	call, derr := h.reg.Decode(msg)
	if derr != nil {
		c.Send(rpc.AppendError(nil, derr.Service, derr.CallID, derr.Message))
		return
	}
	quoted := rpc.QuoteName(call.Service())
	if h.cfg.RequireIdentity && c.Identity() == nil && call.Service() != h.cfg.IdentityService {
		c.Send(rpc.AppendError(nil, quoted, call.Req.CallID, errNotAuthenticated))
		return
	}
	reply := h.reg.Run(c, call)
	if len(reply) > h.cfg.SendQueueBytes-queued {
		h.lim.tooLarge.Inc()
		h.log.Info("reply too large for the send queue; answered with an error", "conn", c.ID(), "service", call.Service(), "command", call.Req.Command, "bytes", len(reply))
		reply = rpc.AppendError(nil, quoted, call.Req.CallID, errReplyTooLarge)
	}
	c.Send(reply)
}

// closeSoon closes c with code and reason, and ends its reader after grace
// even if the peer never answers the close frame: an idle or stale peer may
// not be reading at all.
func (c *conn) closeSoon(code int, reason string, grace time.Duration) {
	c.Close(code, reason)
	time.AfterFunc(grace, func() { c.ws.NetConn().SetReadDeadline(time.Now()) })
}
