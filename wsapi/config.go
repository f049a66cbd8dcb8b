package wsapi

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config configures the WebSocket endpoint. The zero value of a field means
// its default.
type Config struct {
	// AllowedOrigins lists exact "scheme://host[:port]" origins accepted
	// besides the same-host default; "*" accepts every origin.
	AllowedOrigins []string
	// MaxMessageBytes is the largest incoming message; a larger one closes
	// the connection with 1009. Default 65536.
	MaxMessageBytes int64
	// SendQueueBytes bounds the bytes waiting in a connection's send queue
	// behind what its writer is sending; past it the connection is a slow
	// consumer (4008). Streams (large transactions and replays, spec
	// §3.10) are not counted in bytes but in MaxLag. Default 1 MiB.
	SendQueueBytes int
	// MaxLag bounds how long anything may wait in a connection's queue
	// before its writer takes it; a connection further behind is a slow
	// consumer (4008). Default 30s.
	MaxLag time.Duration
	// PingInterval is the time between pings; a peer that answers no ping
	// (and sends nothing) for two intervals is dropped. Default 25s;
	// negative disables pings and the read deadline.
	PingInterval time.Duration
	// WriteTimeout bounds one write to the network. Default 10s.
	WriteTimeout time.Duration
	// CommandsPerSecond limits the messages one connection may send, as a
	// token bucket with a burst of twice the rate. 0 disables the limit.
	CommandsPerSecond float64
	// RateLimitGrace is how long a connection may keep exceeding the rate
	// (its excess messages answered "Rate limit exceeded") before it is
	// closed with 4029. Default 10s.
	RateLimitGrace time.Duration

	// IdleTimeout closes, with 4002 "idle timeout", a connection that has
	// held nothing (no subscription, channel, document, name or identity)
	// and sent no message for this long (limits.idle_timeout). Default
	// 60s; negative disables.
	IdleTimeout time.Duration
	// RequireIdentity closes, with 4002 "authentication timeout", a
	// connection without an identity after AuthTimeout
	// (frontend.require_identity), and answers its messages to services
	// other than IdentityService "Not authenticated" until it has one.
	RequireIdentity bool
	// AuthTimeout is the deadline to authenticate under RequireIdentity
	// (limits.auth_timeout). Default 10s.
	AuthTimeout time.Duration
	// IdentityService is the wire name of the frontend identity service,
	// reachable before authentication. Default "identity".
	IdentityService string
	// MaxConnections caps the open WebSocket connections; a handshake over
	// it is answered HTTP 503 before the upgrade (limits.max_connections).
	// 0 means no cap.
	MaxConnections int
	// ConnectionsPerIP caps the open connections of one client address; a
	// handshake over it is answered HTTP 429 (limits.connections_per_ip).
	// 0 means no cap. Loopback clients are not capped (a local reverse
	// proxy not listed in TrustedProxies would otherwise cap everyone).
	ConnectionsPerIP int
	// TrustedProxies lists the proxies (addresses or CIDR prefixes) whose
	// X-Forwarded-For header names the client (limits.trusted_proxies):
	// the client is the rightmost address of the header that is not a
	// trusted proxy. Requests from other peers are counted by peer address.
	TrustedProxies []string
}

// withDefaults returns c with each zero field that has a default set to
// it (the defaults are documented on the fields). NewHandler calls it after
// Validate.
func (c Config) withDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = 1 << 20
	}
	if c.MaxLag == 0 {
		c.MaxLag = 30 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.RateLimitGrace == 0 {
		c.RateLimitGrace = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.IdentityService == "" {
		c.IdentityService = "identity"
	}
	return c
}

// Validate reports the first invalid field. Errors name the field.
func (c Config) Validate() error {
	for i, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("AllowedOrigins[%d]: %q is not an origin; write scheme://host[:port], e.g. https://app.example.com, or \"*\" for every origin", i, o)
		}
	}
	if c.MaxMessageBytes < 0 {
		return errors.New("MaxMessageBytes: must be positive")
	}
	if c.SendQueueBytes < 0 {
		return errors.New("SendQueueBytes: must be positive")
	}
	if c.MaxLag < 0 {
		return errors.New("MaxLag: must be positive")
	}
	if c.WriteTimeout < 0 {
		return errors.New("WriteTimeout: must be positive")
	}
	if c.CommandsPerSecond < 0 {
		return errors.New("CommandsPerSecond: must be 0 (no limit) or positive")
	}
	if c.RateLimitGrace < 0 {
		return errors.New("RateLimitGrace: must be positive")
	}
	if c.AuthTimeout < 0 {
		return errors.New("AuthTimeout: must be positive")
	}
	if c.MaxConnections < 0 {
		return errors.New("MaxConnections: must be 0 (no cap) or positive")
	}
	if c.ConnectionsPerIP < 0 {
		return errors.New("ConnectionsPerIP: must be 0 (no cap) or positive")
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return err
	}
	return nil
}

// originAllowed implements the Origin policy of spec §1.1.
func (c Config) originAllowed(origin, host string) bool {
	if origin == "" {
		return true // not a browser
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, host)
}
