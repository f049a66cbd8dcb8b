package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
	"unicode"
)

// minSecretBytes is the shortest API key or token secret the server starts
// with; minSecretVariety the fewest distinct bytes it must contain.
const (
	minSecretBytes   = 32
	minSecretVariety = 8
)

const secretHint = "generate one with `openssl rand -base64 32`"

// checkSecret refuses an empty, short or low-variety secret. The error names
// the key, never the value.
func checkSecret(key, env, what, v string) error {
	if v == "" {
		return fmt.Errorf("%s: must be set: it %s; %s and set it in the file or with %s", key, what, secretHint, env)
	}
	if len(v) < minSecretBytes {
		return fmt.Errorf("%s: too short (%d bytes): use at least %d bytes of random text; %s", key, len(v), minSecretBytes, secretHint)
	}
	if strings.TrimFunc(v, unicode.IsSpace) == "" {
		return fmt.Errorf("%s: only whitespace: use random text; %s", key, secretHint)
	}
	distinct := map[byte]bool{}
	for i := 0; i < len(v); i++ {
		distinct[v[i]] = true
	}
	if len(distinct) < minSecretVariety {
		return fmt.Errorf("%s: too little variety (%d distinct characters): use random text with at least %d; %s", key, len(distinct), minSecretVariety, secretHint)
	}
	return nil
}

// validate checks the limits block.
func (l LimitsConfig) validate() error {
	for _, f := range []struct {
		key string
		v   int64
	}{
		{"limits.max_connections", int64(l.MaxConnections)},
		{"limits.connections_per_ip", int64(l.ConnectionsPerIP)},
		{"limits.channel_bytes", int64(l.ChannelBytes)},
		{"limits.document_bytes", int64(l.DocumentBytes)},
		{"limits.cursor_handle_bytes", int64(l.CursorHandleBytes)},
		{"limits.names_per_connection", int64(l.NamesPerConnection)},
		{"limits.name_bytes", int64(l.NameBytes)},
		{"limits.participants_per_reply", int64(l.ParticipantsPerReply)},
		{"limits.members_per_reply", int64(l.MembersPerReply)},
		{"limits.subscriptions_per_connection", int64(l.SubscriptionsPerConn)},
		{"limits.identity_bytes", int64(l.IdentityBytes)},
		{"limits.token_bytes", int64(l.TokenBytes)},
		{"limits.http_max_header_bytes", int64(l.HTTPMaxHeaderBytes)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative (got %d)", f.key, f.v)
		}
	}
	for _, f := range []struct {
		key string
		v   time.Duration
	}{
		{"limits.auth_timeout", l.AuthTimeout},
		{"limits.http_read_header_timeout", l.HTTPReadHeaderTimeout},
		{"limits.http_read_timeout", l.HTTPReadTimeout},
		{"limits.http_idle_timeout", l.HTTPIdleTimeout},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s: must not be negative (got %s)", f.key, f.v)
		}
	}
	return nil
}

// listenIsLoopback reports whether a listen address only accepts local
// connections. An empty host (":5002") listens on every interface.
func listenIsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// MetricsAuth resolves backend.metrics_auth: required unless set false, or
// absent with the backend on loopback.
func (c *Config) MetricsAuth() bool {
	if c.Backend.MetricsAuth != nil {
		return *c.Backend.MetricsAuth
	}
	return !listenIsLoopback(c.Backend.Listen)
}

// ExposureWarnings lists what `snorky check` and `serve` warn about: a
// backend listener (with its API and /metrics) reachable from other hosts
// without TLS.
func (c *Config) ExposureWarnings() []string {
	var out []string
	if !listenIsLoopback(c.Backend.Listen) && c.Backend.TLS.CertFile == "" {
		out = append(out, fmt.Sprintf("backend.listen: %q is reachable from other hosts without TLS: the API key and every token travel in clear; listen on 127.0.0.1 or a private network, or set backend.tls", c.Backend.Listen))
		if !c.MetricsAuth() {
			out = append(out, "backend.metrics_auth: false while the backend is reachable from other hosts: /metrics is open to anyone who can reach it; set it to true (the default off loopback)")
		} else {
			out = append(out, "backend.listen: /metrics requires the API key (backend.metrics_auth), but without TLS a scraper sends it in clear; set backend.tls")
		}
	}
	return out
}

// validateExtras checks the frontend keys of the JavaScript client's
// listener additions: frontend.sockjs_path and frontend.static_dir.
func (c FrontendConfig) validateExtras() error {
	if p := c.SockJSPath; p != "" {
		if p[0] != '/' || p == "/" {
			return fmt.Errorf("frontend.sockjs_path: %q must start with / and name a prefix, e.g. /sockjs (empty: no SockJS)", p)
		}
		if strings.TrimSuffix(p, "/") == strings.TrimSuffix(c.Path, "/") {
			return fmt.Errorf("frontend.sockjs_path: %q is frontend.path; choose another prefix", p)
		}
	}
	if d := c.StaticDir; d != "" {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("frontend.static_dir: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("frontend.static_dir: %s is not a directory", d)
		}
	}
	return nil
}
