package rpc

// Holder is implemented by services that keep per-connection state: it
// reports whether c holds anything there (a subscription, a channel, a
// document, a name). The WebSocket transport closes a connection that holds
// nothing anywhere, and has no identity, once it has been idle for
// limits.idle_timeout (close code 4002).
type Holder interface {
	Holds(c Conn) bool
}

// Holds reports whether any service holds state for c.
func (r *Registry) Holds(c Conn) bool {
	for _, e := range r.services {
		if h, ok := e.service.(Holder); ok && h.Holds(c) {
			return true
		}
	}
	return false
}

// CloseIdle is the close code of an idle connection (spec §1.9).
const (
	CloseIdle         = 4002
	ReasonIdle        = "idle timeout"
	ReasonAuthTimeout = "authentication timeout"
)
